//! Helpers for the hostile-rule tests (`sandbox.rs`, `budgets.rs`): the fixtures run by
//! the real host (runtime and dispatcher) beside the k8s_api_connection rule, and
//! through the `rulehost` binary for what it refuses and logs.

use crate::*;
use rulehost::events::Event;
use rulehost::rules::{Limits, RuleEngine};
use rulehost::sinks::Finding;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub const KSH: &str = "KUBERNETES_SERVICE_HOST=10.96.0.1";
pub const API: &str = "10.96.0.1";
pub const K8S_ID: &str = "TRC-1013";

/// A container declaring the API server and connecting to it: one TRC-1013 finding.
pub fn k8s_scenario(tag: u8) -> Vec<Event> {
    vec![
        exec(container(tag), &[KSH]),
        connect(container(tag), API, 443),
    ]
}

/// The findings of the rule with metadata id `id`.
pub fn by<'a>(findings: &'a [Finding], id: &str) -> Vec<&'a Finding> {
    findings.iter().filter(|f| f.signature().id == id).collect()
}

/// Default limits but a roomy CPU budget, for tests about something else than CPU (a
/// loaded CI machine can take more than the default 10 ms to build 5,000 findings).
pub fn generous_cpu() -> Limits {
    Limits {
        cpu_per_event: Duration::from_secs(1),
        ..Limits::default()
    }
}

/// Why loading a fixture fails (it must fail).
pub fn load_error(name: &str) -> String {
    let runtime = RuleEngine::new(Limits::default()).expect("runtime");
    match rulehost::sources::load_file(&runtime, &fixture(name)) {
        Ok(rule) => panic!("{name} loaded as rule {}", rule.metadata.id),
        Err(error) => format!("{error:#}"),
    }
}

/// Runs `rulehost <args>` with `events` as rulehost JSON lines on stdin.
pub fn rulehost(args: &[&str], events: &[Event]) -> Output {
    let mut child = Command::new(rulehost_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("target/release/rulehost (run `make build`)");
    let mut input = child.stdin.take().unwrap();
    for event in events {
        writeln!(input, "{}", serde_json::to_string(event).unwrap()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// `rulehost replay` with the given fixtures (then the k8s rule file) over `events`.
pub fn replay(fixtures: &[&str], extra: &[&str], events: &[Event]) -> Output {
    let paths: Vec<String> = fixtures
        .iter()
        .map(|name| fixture(name))
        .chain([k8s_rule_file()])
        .map(|p| p.to_str().unwrap().to_owned())
        .collect();
    let mut args = vec!["replay"];
    for path in &paths {
        args.extend(["--rule", path]);
    }
    args.extend(extra);
    args.extend(["--log-format", "json", "-"]);
    rulehost(&args, events)
}

pub fn stdout_findings(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each stdout line is one JSON finding"))
        .collect()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// stderr's lines, for bounded assertion messages.
pub fn stderr_lines(out: &Output) -> Vec<String> {
    stderr(out).lines().map(str::to_owned).collect()
}

/// The log records of a `replay` run (which logs as JSON).
pub fn logs_of(out: &Output) -> Vec<LogRecord> {
    log_records(&stderr(out))
}

/// The records with `message` about the rule with metadata id `id`.
pub fn about<'a>(logs: &'a [LogRecord], message: &str, id: &str) -> Vec<&'a LogRecord> {
    logs.iter()
        .filter(|r| r.is(message, &[("id", id)]))
        .collect()
}
