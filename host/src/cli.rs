//! Command-line interface: `replay`, `inspect` (and, with live probes, `run`).

use crate::dispatch::Dispatcher;
use crate::logging::error_line;
use crate::output::JsonLines;
use crate::pipeline::Pipeline;
use crate::replay::{Line, parse_line};
use crate::rules::{Limits, RuleEngine, WORLD_PACKAGE, WORLD_VERSION};
pub use crate::run_args::RunArgs;
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;

/// Events handed to the rules per call when replaying.
const REPLAY_BATCH: usize = 256;

#[derive(Debug, Parser)]
#[command(
    name = "rulehost",
    version,
    about = "RuleEngine security with detection rules as sandboxed WebAssembly components"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log level (`error`, `warn`, `info`, `debug`, `trace`) or filter directives
    /// (`info,rule=warn`: rules' own log lines have the target `rule`).
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    pub log_level: String,
    /// How log lines are written to stderr.
    #[arg(long, global = true, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs rules over recorded events (rulehost or Tracee JSON lines); prints findings.
    Replay {
        /// A rule component; repeat for several. Default: the built-in k8s_api_connection.
        #[arg(long = "rule", value_name = "FILE.wasm")]
        rules: Vec<PathBuf>,
        /// JSON-lines events; `-` or nothing for stdin.
        #[arg(value_name = "EVENTS.jsonl")]
        events: Option<PathBuf>,
        #[command(flatten)]
        sandbox: SandboxArgs,
        /// The node findings name (default: $NODE_NAME, else the host name).
        #[arg(long, value_name = "NAME")]
        node_name: Option<String>,
    },
    /// Runs the node agent: attaches the eBPF probes, resolves containers, runs the rules
    /// on live kernel events and prints findings as JSON lines. Needs root (CAP_BPF,
    /// CAP_PERFMON, CAP_SYS_ADMIN for cgroup attachment). Every flag is also a key of
    /// the --config file; a flag on the command line wins.
    #[command(args_override_self = true)]
    Run(Box<RunArgs>),
    /// Proves the live pipeline end to end on this node: a throwaway container-like
    /// cgroup, a process in it with KUBERNETES_SERVICE_HOST set to a local listener,
    /// a connect, and the finding it produces.
    Trigger {
        #[arg(value_enum)]
        scenario: crate::trigger::Scenario,
        /// Watch this findings file of an already running `rulehost run --output FILE`
        /// instead of starting a private agent.
        #[arg(long, value_name = "FILE")]
        findings: Option<PathBuf>,
        /// Give up waiting for the finding after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout_secs: u64,
    },
    /// (internal) The process `trigger` runs inside the throwaway cgroup: connects to ADDR.
    #[command(hide = true)]
    TriggerConnect { address: std::net::SocketAddr },
    /// Shows a rule file's metadata, world version, imports, size, sha256 and, against
    /// the given keys, whether its signature (FILE.wasm.sig) verifies.
    Inspect {
        #[arg(value_name = "FILE.wasm")]
        rule: PathBuf,
        /// A trusted public key to check the rule's signature against; repeatable.
        #[arg(long = "trusted-key", value_name = "FILE.pub")]
        trusted_keys: Vec<PathBuf>,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Signs, ships and fetches rules: `keygen`, `sign`, `push`, `pull`.
    #[command(subcommand)]
    Rule(crate::rule_cli::RuleCommand),
    /// (internal) Compiles the rule component on stdin under the given bounds and writes
    /// the precompiled artifact on stdout: how the host compiles untrusted rules.
    #[command(hide = true)]
    CompileRule {
        #[arg(long)]
        cpu_secs: u64,
        #[arg(long)]
        memory_bytes: u64,
    },
}

/// Limits every rule runs under.
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Memory cap per rule instance, in MiB.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub rule_memory_mib: usize,
    /// CPU time a rule may spend per event, in milliseconds, before it is cut off.
    #[arg(long, default_value_t = 10, value_name = "MS")]
    pub rule_cpu_ms: u64,
    /// CPU time one delivery call to a rule may take however many events it carries,
    /// in milliseconds (at least --rule-cpu-ms).
    #[arg(long, default_value_t = 100, value_name = "MS")]
    pub rule_cpu_per_call_ms: u64,
    /// Findings a rule may return per event; more are dropped and counted.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub rule_findings_per_event: usize,
    /// Size of one finding's data as printed, in KiB; larger ones are dropped and counted.
    #[arg(long, default_value_t = 16, value_name = "KIB")]
    pub rule_finding_kib: usize,
    /// `context` calls a rule may make per delivered event; more answer empty.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub rule_context_calls: usize,
    /// Per-container state a rule may hold in all, in MiB.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub rule_state_mib: usize,
    /// CPU seconds compiling one rule may take (in its own process).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub rule_compile_cpu_secs: u64,
    /// Memory compiling one rule may take, in MiB.
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    pub rule_compile_memory_mib: u64,
    /// Grants a rule id a capability, beside the shipped defaults: `ID=env:NAME[,NAME]`
    /// lets the rule read those environment variables. Repeatable.
    #[arg(long = "grant", value_name = "ID=env:NAMES", value_parser = crate::rules::parse_grant)]
    pub grants: Vec<(String, crate::rules::Grant)>,
    /// Configuration file (YAML): `grants`, per rule id.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl SandboxArgs {
    pub fn limits(&self) -> Limits {
        use std::time::Duration;
        Limits {
            memory_bytes: self.rule_memory_mib << 20,
            cpu_per_event: Duration::from_millis(self.rule_cpu_ms.max(1)),
            cpu_per_call: Duration::from_millis(self.rule_cpu_per_call_ms.max(1)),
            max_findings_per_event: self.rule_findings_per_event,
            max_finding_bytes: self.rule_finding_kib << 10,
            max_context_calls_per_event: self.rule_context_calls,
            state: crate::state::StateLimits {
                max_total_bytes: self.rule_state_mib << 20,
                ..Default::default()
            },
            compile: crate::rules::CompileLimits {
                cpu_secs: self.rule_compile_cpu_secs.max(1),
                memory_bytes: self.rule_compile_memory_mib.max(1) << 20,
            },
        }
    }

    /// The config file's contents (empty without `--config`).
    pub fn config(&self) -> Result<crate::config::Config> {
        match &self.config {
            Some(path) => crate::config::Config::load(path),
            None => Ok(crate::config::Config::default()),
        }
    }

    /// What each rule id may use: the shipped defaults, the config file's, `--grant`s.
    pub fn grants(&self) -> Result<crate::rules::Grants> {
        Ok(self.config()?.grants(&self.grants))
    }

    /// An engine for untrusted rules under these limits and grants.
    fn engine(&self) -> Result<RuleEngine> {
        RuleEngine::isolated(self.limits(), self.grants()?, None)
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Replay {
            rules,
            events,
            sandbox,
            node_name,
        } => replay(&rules, events, &sandbox, node_name),
        Command::Inspect {
            rule,
            trusted_keys,
            sandbox,
        } => inspect(&rule, &trusted_keys, &sandbox),
        Command::Rule(command) => crate::rule_cli::run(command),
        Command::CompileRule {
            cpu_secs,
            memory_bytes,
        } => crate::rules::compile_rule_child(crate::rules::CompileLimits {
            cpu_secs,
            memory_bytes,
        }),
        Command::Run(args) => agent(args.options()?),
        Command::Trigger {
            scenario,
            findings,
            timeout_secs,
        } => crate::trigger::run(
            scenario,
            findings,
            std::time::Duration::from_secs(timeout_secs),
        ),
        Command::TriggerConnect { address } => crate::trigger::connect(address),
    }
}

/// Writes one line to stdout; an error (a closed pipe) is returned, never a panic.
pub fn say(line: std::fmt::Arguments<'_>) -> Result<()> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{line}").context("writing to stdout")
}

/// Whether `error` is a closed stdout pipe (`rulehost inspect x | head`): the reader
/// has all it wanted, so the command ends quietly.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn agent(options: crate::agent::RunOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(crate::agent::run(options));
    // A reload plan still compiling an (untrusted) rule must not hold the exit: it is
    // abandoned, not waited for.
    runtime.shutdown_background();
    result
}

/// Runs a command's async work (registry calls) on a private single-threaded runtime.
pub(crate) fn block_on<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(future)
}

/// `replay`: the pipeline with recorded JSON lines as its source.
fn replay(
    rule_paths: &[PathBuf],
    events: Option<PathBuf>,
    sandbox: &SandboxArgs,
    node_name: Option<String>,
) -> Result<()> {
    let runtime = Arc::new(sandbox.engine()?);
    let mut dispatcher = Dispatcher::new(runtime.clone());
    for rule in crate::rules::load_all(&runtime, rule_paths)? {
        dispatcher.add(rule)?;
    }
    let (reader, source): (Box<dyn BufRead>, String) = match &events {
        Some(path) if path.as_os_str() != "-" => (
            Box::new(std::io::BufReader::new(
                std::fs::File::open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?,
            )),
            path.display().to_string(),
        ),
        _ => (Box::new(std::io::stdin().lock()), "stdin".into()),
    };
    let exceptions = crate::exceptions::Exceptions::new(&sandbox.config()?.exceptions);
    let mut pipeline = Pipeline::new(dispatcher, JsonLines::stdout(), None)
        .with_node(node_name_or_default(node_name))
        .with_exceptions(exceptions);
    let mut malformed = 0u64;
    for (number, line) in reader.split(b'\n').enumerate() {
        let line = line.with_context(|| format!("reading {source}"))?;
        let parsed = std::str::from_utf8(&line)
            .map_err(|_| anyhow::anyhow!("not UTF-8"))
            .and_then(parse_line);
        match parsed {
            Ok(Line::Event(event)) => pipeline.push(*event)?,
            Ok(Line::Ignored(_) | Line::Blank) => {}
            Err(error) => {
                malformed += 1;
                tracing::warn!(
                    source = %source,
                    line = number + 1,
                    error = %error_line(error.as_ref()),
                    "skipped malformed event"
                );
            }
        }
        if pipeline.pending() == REPLAY_BATCH {
            pipeline.deliver()?;
        }
    }
    pipeline.finish()?;
    crate::agent::report_suppressed(&pipeline.exceptions);
    if malformed > 0 {
        tracing::warn!(source = %source, malformed, "malformed lines skipped");
    }
    Ok(())
}

fn inspect(path: &std::path::Path, keys: &[PathBuf], sandbox: &SandboxArgs) -> Result<()> {
    let keys = crate::trust::PublicKey::load_all(keys)?;
    let trust = crate::trust::Trust::new(keys, Default::default());
    let runtime = sandbox.engine()?;
    let (bytes, signature) = match crate::rules::oci_source(path) {
        Some(source) => {
            let pulled = crate::oci::fetch_blocking(source, &trust)
                .with_context(|| format!("cannot load rule {source}"))?;
            let status = registry_signature(&pulled);
            (pulled.bytes, status)
        }
        None => {
            let bytes = crate::rules::read_rule_file(path)
                .with_context(|| format!("cannot load rule {}", path.display()))?;
            let status = file_signature(path, &bytes, &trust);
            (bytes, status)
        }
    };
    let rule = crate::rules::load_bytes(&runtime, path, &bytes)?;
    let m = &rule.metadata;
    let report = serde_json::json!({
        "file": path.display().to_string(),
        "size": rule.size,
        "sha256": rule.sha256,
        "world": format!("{WORLD_PACKAGE}@{}", world_version_of(&rule.imports).unwrap_or(WORLD_VERSION.into())),
        "host_world": format!("{WORLD_PACKAGE}@{WORLD_VERSION}"),
        "imports": rule.imports,
        // How batches cross: `packed` (0.1.3) where the rule exports it.
        "batches": if rule.packed.is_some() { "packed" } else { "typed" },
        "metadata": m,
        "selects": m.selects.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "origin": m.origin,
        "env_vars": m.env_vars,
        "signature": signature,
    });
    say(format_args!("{}", serde_json::to_string_pretty(&report)?))
}

/// Whether a rule file's `.sig` verifies against the trusted keys (not checked without).
fn file_signature(
    path: &std::path::Path,
    bytes: &[u8],
    trust: &crate::trust::Trust,
) -> serde_json::Value {
    let file = crate::trust::signature_path(path);
    let (status, detail) = match crate::trust::read_signature(path) {
        None => ("unsigned", None),
        Some(_) if !trust.requires_signatures() => ("not checked (no --trusted-key)", None),
        Some(signature) => match trust.verify(bytes, &signature) {
            Ok(key) => ("verified", Some(key)),
            Err(reason) => ("invalid", Some(reason)),
        },
    };
    serde_json::json!({"file": file.display().to_string(), "status": status, "detail": detail})
}

/// A pulled rule's registry signature (a pull with keys fails unless one verifies).
fn registry_signature(pulled: &crate::oci::Pulled) -> serde_json::Value {
    let (status, detail) = match &pulled.verified_by {
        Some(key) => ("verified", Some(key.as_str())),
        None => ("not checked (no --trusted-key)", None),
    };
    serde_json::json!({"digest": pulled.digest, "status": status, "detail": detail})
}

/// The node to name in findings: the flag, else `$NODE_NAME`, else the host name.
pub(crate) fn node_name_or_default(flag: Option<String>) -> Option<String> {
    flag.or_else(|| std::env::var("NODE_NAME").ok())
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
        })
}

/// The world version a rule was built for, from the version its imports name.
fn world_version_of(imports: &[String]) -> Option<String> {
    imports
        .iter()
        .find_map(|name| name.split_once('@').map(|(_, v)| v.to_owned()))
}
