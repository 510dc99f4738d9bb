//! The `rulehost` binary: replay of both input formats, malformed lines, bad rule files,
//! and inspect.

use rulehost_tests::*;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn rulehost(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(rulehost_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("target/release/rulehost (run `make build`)");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn findings(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each stdout line is one JSON finding"))
        .collect()
}

#[test]
fn replays_tracee_output_with_the_builtin_rule() {
    let out = rulehost(&["replay", &events_file("tracee-v0.24.jsonl")], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found = findings(&out);
    assert_eq!(found.len(), 1);
    let f = &found[0];
    assert_eq!(f["signature"]["id"], "TRC-1013");
    assert_eq!(f["data"]["ip"], "10.96.0.1");
    assert_eq!(f["data"]["port"], 443);
    assert_eq!(f["data"]["comm"], "curl");
    assert_eq!(
        f["data"]["container_id"],
        "7f3a9c2e5b1d4f6a8c0e2b4d6f8a1c3e5b7d9f0a2c4e6b8d1f3a5c7e9b0d2f4a"
    );
    assert_eq!(f["rule"]["name"], "k8s_api_connection");
    assert_eq!(f["rule"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(f["event"]["name"], "security_socket_connect");
    assert_eq!(f["event"]["process"]["pid"], 418223);
    assert_eq!(f["timestamp"], 1732099421601234567u64);
}

#[test]
fn replays_native_format_from_stdin_with_a_rule_file() {
    let input = std::fs::read_to_string(events_file("native.jsonl")).unwrap();
    let rule = k8s_rule_file();
    let out = rulehost(
        &["replay", "--rule", rule.to_str().unwrap(), "-"],
        Some(&input),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found = findings(&out);
    assert_eq!(
        found.len(),
        1,
        "only the mapped-IPv6 connect to 10.96.0.1 matches"
    );
    assert_eq!(found[0]["data"]["ip"], "10.96.0.1");
    assert_eq!(found[0]["data"]["comm"], "curl");
}

#[test]
fn malformed_lines_are_reported_and_skipped() {
    let mut lines: Vec<String> = std::fs::read_to_string(events_file("native.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.insert(0, "{not json".into());
    lines.insert(2, r#"{"type":"socket_connect","timestamp":"soon"}"#.into());
    lines.push(r#"{"hello":"world"}"#.into());
    let input = lines.join("\n") + "\n";
    let out = rulehost(&["replay", "--log-format", "json"], Some(&input));
    assert!(out.status.success());
    let logs = log_records(&String::from_utf8_lossy(&out.stderr));
    let skipped = |line: &str| {
        logs.iter()
            .find(|r| {
                r.is(
                    "skipped malformed event",
                    &[("source", "stdin"), ("line", line)],
                )
            })
            .map(|r| r.field("error"))
    };
    assert!(
        skipped("1").is_some_and(|e| e.starts_with("invalid JSON")),
        "{}",
        brief(&logs)
    );
    assert!(
        skipped("3").is_some_and(|e| e.starts_with("not a rulehost event")),
        "{}",
        brief(&logs)
    );
    assert!(skipped("7").is_some(), "{}", brief(&logs));
    assert!(
        logs.iter().any(|r| r.is(
            "malformed lines skipped",
            &[("source", "stdin"), ("malformed", "3")]
        )),
        "{}",
        brief(&logs)
    );
    assert_eq!(
        findings(&out).len(),
        1,
        "lines after the bad ones still count"
    );
}

#[test]
fn a_file_that_is_not_a_rule_component_is_refused_clearly() {
    let dir = std::env::temp_dir().join(format!("rulehost-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("notes.wasm");
    std::fs::write(&text, "hello").unwrap();
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let component = dir.join("empty-component.wasm");
    std::fs::write(&component, b"\0asm\x0d\0\x01\0").unwrap();
    for (file, why) in [
        (&text, "not a WebAssembly file"),
        (&core, "a core WebAssembly module, not a component"),
        (&component, "does not export `rulehost:rule/detector`"),
    ] {
        for args in [
            vec!["replay", "--rule", file.to_str().unwrap(), "-"],
            vec!["inspect", file.to_str().unwrap()],
        ] {
            let out = rulehost(&args, Some(""));
            assert!(!out.status.success());
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
            assert!(
                stderr.contains(file.to_str().unwrap()) && stderr.contains(why),
                "{stderr}"
            );
        }
    }
    let out = rulehost(
        &["replay", "--rule", "/nonexistent/rule.wasm", "-"],
        Some(""),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot load rule /nonexistent/rule.wasm")
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn inspect_shows_metadata_world_imports_size_and_sha256() {
    let rule = k8s_rule_file();
    let out = rulehost(&["inspect", rule.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bytes = std::fs::read(&rule).unwrap();
    assert_eq!(report["size"], bytes.len());
    assert_eq!(
        report["world"],
        format!("rulehost:rule@{}", rulehost::rules::WORLD_VERSION)
    );
    assert_eq!(report["metadata"]["id"], "TRC-1013");
    assert_eq!(report["batches"], "packed");
    assert_eq!(report["env_vars"][0], "KUBERNETES_SERVICE_HOST");
    let imports: Vec<&str> = report["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        imports.iter().all(|i| i.starts_with("rulehost:rule/")),
        "{}",
        brief(&imports)
    );
}

#[test]
fn an_oversized_rule_file_is_refused_without_compiling_it() {
    let dir = std::env::temp_dir().join(format!("rulehost-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.wasm");
    // A component header, then more bytes than a rule may have.
    let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
    bytes.resize(rulehost::rules::MAX_RULE_BYTES + 1, 0);
    std::fs::write(&big, &bytes).unwrap();
    for args in [
        vec!["inspect", big.to_str().unwrap()],
        vec!["replay", "--rule", big.to_str().unwrap(), "-"],
        vec!["run", "--check", "--rule", big.to_str().unwrap()],
    ] {
        let out = rulehost(&args, Some(""));
        assert!(!out.status.success(), "{args:?} accepted it");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", brief(&lines));
        assert!(
            lines[0].contains(big.to_str().unwrap())
                && lines[0].contains(&format!(
                    "larger than the {} MiB",
                    rulehost::rules::MAX_RULE_BYTES >> 20
                )),
            "{args:?}: {}",
            lines[0]
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
