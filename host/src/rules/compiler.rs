//! Compiling a rule runs untrusted input through Cranelift, so it happens in a child
//! process (`rulehost compile-rule`, hidden) under its own CPU-time and memory rlimits:
//! a component built to take minutes or gigabytes to compile costs the host at most
//! those bounds, and a host that stops kills its compiles with it (parent-death signal).
//! The child hands back wasmtime's precompiled artifact, which the host also keeps in
//! its compile cache (keyed by the rule's sha256 and the engine's compatibility hash).

use super::*;
use engine::engine_config;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What compiling one rule may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    /// CPU seconds (all compiler threads together).
    pub cpu_secs: u64,
    /// Bytes of data (heap and stacks) the compiler may map.
    pub memory_bytes: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            cpu_secs: 30,
            memory_bytes: 1 << 30,
        }
    }
}

/// Compiles rules in child processes of `exe`.
#[derive(Debug, Clone)]
pub(super) struct Compiler {
    pub(super) exe: PathBuf,
    /// Where precompiled artifacts are kept across restarts; `None`: nowhere.
    pub(super) cache_dir: Option<PathBuf>,
}

impl Compiler {
    /// The compiled component, from the cache or a bounded child process.
    pub(super) fn compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        sha256: &str,
        limits: CompileLimits,
    ) -> Result<Component> {
        let cached = self.cache_path(engine, sha256);
        if let Some(path) = cached.as_ref().filter(|path| path.exists())
            && self.trusted(path)
            // SAFETY: the file is the agent's own (owned by its user, writable by no one
            // else: `cache_trust`), written by this host from a child's precompile output
            // for this engine's configuration; wasmtime checks the artifact's version and
            // settings and refuses a mismatch.
            && let Ok(component) = unsafe { Component::deserialize_file(engine, path) }
        {
            return Ok(component);
        }
        let artifact = self.run_child(bytes, limits)?;
        // SAFETY: the bytes are `Engine::precompile_component` output of a child running
        // this very binary with the same engine configuration.
        let component = unsafe { Component::deserialize(engine, &artifact) }
            .map_err(|e| anyhow!("loading the compiled rule: {}", error_line(e.as_ref())))?;
        if let Some(path) = cached {
            keep_in_cache(&path, &artifact);
        }
        Ok(component)
    }

    /// Whether a cached artifact may be loaded; if not, says why and the rule is compiled
    /// afresh (its artifact then replaced by the agent's own).
    fn trusted(&self, path: &Path) -> bool {
        let Some(why) = super::cache_trust::refusal(path, false) else {
            return true;
        };
        tracing::warn!(
            reason = %why,
            "a compiled rule in the cache is not the agent's own: compiled afresh"
        );
        false
    }

    fn cache_path(&self, engine: &Engine, sha256: &str) -> Option<PathBuf> {
        use std::hash::{Hash, Hasher};
        let dir = self.cache_dir.as_ref()?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Some(dir.join(format!("{sha256}-{:016x}.cwasm", hasher.finish())))
    }

    /// Runs `exe compile-rule` over `bytes`; its stdout is the precompiled artifact.
    fn run_child(&self, bytes: &[u8], limits: CompileLimits) -> Result<Vec<u8>> {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(&self.exe);
        let host = std::process::id() as libc::pid_t;
        // SAFETY: between fork and exec the closure makes only async-signal-safe
        // syscalls (prctl, getppid) and allocates nothing.
        unsafe {
            command.pre_exec(move || die_with_parent(host));
        }
        let mut child = command
            // mimalloc otherwise reserves a GiB of address space up front, which the
            // data limit would count.
            .env("MIMALLOC_ARENA_RESERVE", "0")
            .args(["--log-format", "json", "compile-rule", "--cpu-secs"])
            .arg(limits.cpu_secs.to_string())
            .arg("--memory-bytes")
            .arg(limits.memory_bytes.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start the rule compiler {}", self.exe.display()))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        // The child reads all of its input before it writes anything.
        let written = stdin.write_all(bytes);
        drop(stdin);
        let output = child
            .wait_with_output()
            .context("waiting for the rule compiler")?;
        if output.status.success() && written.is_ok() {
            return Ok(output.stdout);
        }
        Err(failure(&output, limits))
    }
}

/// Why a compile child failed, in one line.
fn failure(output: &std::process::Output, limits: CompileLimits) -> anyhow::Error {
    use std::os::unix::process::ExitStatusExt;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said = last_message(&stderr);
    let out_of_memory =
        stderr.contains("memory allocation") || stderr.contains("unable to allocate");
    match output.status.signal() {
        Some(libc::SIGXCPU | libc::SIGKILL) => anyhow!(
            "compiling took more than the {} s of CPU a rule compile may use",
            limits.cpu_secs
        ),
        _ if out_of_memory => {
            anyhow!(
                "compiling needed more than the {} MiB a rule compile may use",
                limits.memory_bytes >> 20
            )
        }
        Some(signal) => anyhow!("the rule compiler died of signal {signal}: {said}"),
        None if said.is_empty() => anyhow!("the rule compiler failed ({})", output.status),
        None => anyhow!("{said}"),
    }
}

/// The child's last word: the message of its last JSON log line, or the raw line (an
/// allocation failure or a panic is printed before any logging).
fn last_message(stderr: &str) -> String {
    let line = stderr.lines().rev().find(|l| !l.trim().is_empty());
    let line = line.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v["fields"]["message"].as_str().map(str::to_owned));
    one_line(message.as_deref().unwrap_or(line), 512)
}

/// Writes an artifact into the cache atomically; a cache that cannot be written only
/// costs a compile next time.
fn keep_in_cache(path: &Path, artifact: &[u8]) {
    let temp = path.with_extension("tmp");
    let written = super::cache_trust::write_private(&temp, artifact)
        .and_then(|()| std::fs::rename(&temp, path));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temp);
        tracing::debug!(path = %path.display(), %error, "cannot cache a compiled rule");
    }
}

/// The child side (`rulehost compile-rule`): bound itself, read a component on stdin,
/// write wasmtime's precompiled artifact on stdout. (The host armed its death signal.)
pub fn compile_rule_child(limits: CompileLimits) -> Result<()> {
    set_limit(libc::RLIMIT_CORE, 0, 0)?;
    set_limit(libc::RLIMIT_CPU, limits.cpu_secs, limits.cpu_secs + 1)?;
    set_limit(libc::RLIMIT_DATA, limits.memory_bytes, limits.memory_bytes)?;
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_BUDGET_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .context("reading the rule")?;
    if bytes.len() > MAX_BUDGET_BYTES {
        bail!(
            "larger than the {} MiB any rule may be",
            MAX_BUDGET_BYTES >> 20
        );
    }
    let engine = Engine::new(&engine_config())
        .map_err(anyhow::Error::from)
        .context("creating the wasmtime engine")?;
    let artifact = engine.precompile_component(&bytes).map_err(|e| {
        anyhow!(
            "invalid component: {}",
            error_line(anyhow::Error::from(e).as_ref())
        )
    })?;
    std::io::stdout()
        .lock()
        .write_all(&artifact)
        .context("writing the compiled rule")
}

/// In the forked child, before exec: SIGKILL when the host exits, so no compile
/// outlives a stopped host (set before the child runs any code of its own).
fn die_with_parent(host: libc::pid_t) -> std::io::Result<()> {
    // SAFETY: prctl and getppid with plain integer arguments.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() != host {
            // The host exited before the signal was armed.
            libc::_exit(1);
        }
    }
    Ok(())
}

/// glibc types setrlimit's resource as its own enum; musl (the image's libc) as an int.
#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

fn set_limit(resource: Resource, soft: u64, hard: u64) -> Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit");
    }
    Ok(())
}
