//! Compiling is bounded like running: a component built to be costly to compile
//! (`rulehost_tests::slow_compile`) is refused at its CPU or memory bound in one line,
//! the same way by `replay`, `inspect` and `run --check`; and in a running agent it
//! compiles in a child process that holds back no other rule's reload and dies with
//! the agent.

use rulehost_tests::live::*;
use rulehost_tests::slow_compile::slow_to_compile;
use rulehost_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Needs about a minute of CPU to compile (four functions of 40,000 operations over
/// 2,000 live locals), and far more than 128 MiB: a few hundred KiB on disk.
fn slow_rule(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("slow.wasm");
    let temp = dir.join("slow.tmp");
    std::fs::write(&temp, slow_to_compile(4, 40_000)).unwrap();
    std::fs::rename(&temp, &path).unwrap();
    path
}

fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rulehost-compile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn rulehost(args: &[&str]) -> Output {
    Command::new(rulehost_bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("target/release/rulehost (run `make build`)")
}

/// The commands that load a rule, each of which must refuse it the same way.
fn each_loader(rule: &Path, bound: &[&str]) -> Vec<(&'static str, Output)> {
    let rule = rule.to_str().unwrap();
    let with = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(bound);
        rulehost(&all)
    };
    vec![
        ("replay", with(&["replay", "--rule", rule, "/dev/null"])),
        ("inspect", with(&["inspect", rule])),
        (
            "run --check",
            with(&["run", "--check", "--no-state-dir", "--rule", rule]),
        ),
    ]
}

fn assert_refused(rule: &Path, bound: &[&str], reason: &str) {
    for (command, out) in each_loader(rule, bound) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert!(!out.status.success(), "{command} accepted it");
        assert_eq!(lines.len(), 1, "{command}: {}", brief(&lines));
        assert!(
            lines[0].contains(&format!("cannot load rule {}: {reason}", rule.display())),
            "{command}: {}",
            lines[0]
        );
    }
}

#[test]
fn a_rule_slow_to_compile_is_refused_at_its_cpu_bound() {
    let dir = test_dir("cpu");
    let rule = slow_rule(&dir);
    assert_refused(
        &rule,
        &["--rule-compile-cpu-secs", "1"],
        "compiling took more than the 1 s of CPU a rule compile may use",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rule_hungry_to_compile_is_refused_at_its_memory_bound() {
    let dir = test_dir("memory");
    let rule = slow_rule(&dir);
    assert_refused(
        &rule,
        &["--rule-compile-memory-mib", "128"],
        "compiling needed more than the 128 MiB a rule compile may use",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The compile children of `parent` (processes running `rulehost compile-rule`).
fn compile_children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(parent) && String::from_utf8_lossy(&cmdline).contains("compile-rule")
        })
        .collect()
}

/// Whether `pid` is gone (or a zombie waiting to be reaped).
fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[test]
fn a_slow_compile_holds_back_no_other_reload_and_dies_with_the_agent() {
    let dir = test_dir("live");
    std::fs::create_dir_all(&dir).unwrap();
    let k8s = std::fs::read(k8s_rule_file()).unwrap();
    let rule = dir.join("k8s.wasm");
    std::fs::write(&rule, rule_variant(&k8s, "first")).unwrap();
    let mut agent = LiveAgent::start("compile", &["--rules", dir.to_str().unwrap()]);

    // A rule that compiles for about a minute: its compile child is frozen, so it
    // cannot finish (or be cut off) while the rest of the test runs.
    slow_rule(&dir);
    let mut children = Vec::new();
    wait_until(
        || {
            children = compile_children(agent.pid());
            !children.is_empty()
        },
        || "no compile child for slow.wasm".into(),
    );
    let slow = children[0];
    // SAFETY: signalling the agent's compile child, which this test watches.
    unsafe { libc::kill(slow as i32, libc::SIGSTOP) };

    // Another rule's new version loads meanwhile.
    let second = rule_variant(&k8s, "second");
    let temp = dir.join("k8s.tmp");
    std::fs::write(&temp, &second).unwrap();
    std::fs::rename(&temp, &rule).unwrap();
    agent.wait_for_log("k8s.wasm reloaded during the slow compile", |r| {
        r.is("rule reloaded", &[("sha256", &sha256_hex(&second))])
    });
    assert!(!is_gone(slow), "the slow compile ended early");

    // Stopping the agent ends the compile with it.
    let status = agent.stop();
    assert!(status.success(), "{status}");
    wait_until(
        || is_gone(slow),
        || format!("compile child {slow} outlived the agent"),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Precompiled code is trusted code: the compile cache is created 0700 with artifacts
/// 0600, and a cache directory or artifact another user could have written (group or
/// others may write it) is refused in one line naming it and its mode; the rule is
/// compiled afresh and still loads, and a refused artifact is replaced by the agent's own.
#[test]
fn a_cache_others_could_write_is_refused_and_rules_compile_afresh() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = test_dir("cache-trust");
    let cache = dir.join("cache");
    let check = || rulehost(&["run", "--check", "--cache-dir", cache.to_str().unwrap()]);
    let mode = |path: &Path| std::fs::metadata(path).unwrap().mode() & 0o777;
    let chmod = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&cache), 0o700);
    let artifacts: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    let artifact = &artifacts[0];
    assert_eq!(mode(artifact), 0o600);

    chmod(artifact, 0o666);
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not the agent's own") && stderr.contains("mode 0666"),
        "{stderr}"
    );
    assert_eq!(mode(artifact), 0o600, "the refused artifact is replaced");

    chmod(&cache, 0o777);
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no compile cache") && stderr.contains("mode 0777"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
