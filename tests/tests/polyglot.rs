//! TRC-1013 written in JavaScript (componentize-js) and Python (componentize-py) beside
//! the Rust rule: the same findings on the recorded events through the binary, their
//! language shown by `inspect`, a hot reload from one language to another keeping the
//! rule's state, and the hostile cases written in each language (an infinite loop, a
//! memory bomb, a log flood, reaching for the environment, files and the network)
//! contained as the Rust fixtures are. The replay scenarios of `k8s_api_connection.rs`
//! run every language too.

use rulehost::rules::{Limits, RuleEngine};
use rulehost_tests::hostile::*;
use rulehost_tests::*;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;

/// The JavaScript and Python builds, by the name `hostile_fixture` takes.
const LANGUAGES: [&str; 2] = ["js", "python"];
/// Their hostile fixtures' rule ids.
fn hostile_id(language: &str) -> &'static str {
    match language {
        "js" => "FIXTURE-HOSTILE-JS",
        _ => "FIXTURE-HOSTILE-PY",
    }
}

/// Findings as JSON without the `rule` field (which names each file) and `node`.
fn comparable(out: &std::process::Output) -> Vec<Value> {
    stdout_findings(out)
        .into_iter()
        .map(|mut finding| {
            let object = finding.as_object_mut().expect("a finding is an object");
            object.remove("rule");
            object.remove("node");
            finding
        })
        .collect()
}

#[test]
fn every_language_gives_the_rust_rules_findings_on_the_recorded_events() {
    for events in ["tracee-v0.24.jsonl", "native.jsonl"] {
        let events = events_file(events);
        let mut rust: Option<Vec<Value>> = None;
        for (language, file) in k8s_rule_files() {
            let out = rulehost(&["replay", "--rule", file.to_str().unwrap(), &events], &[]);
            assert!(
                out.status.success(),
                "{language}: {}",
                brief(&stderr_lines(&out))
            );
            let findings = comparable(&out);
            match &rust {
                None => {
                    assert!(
                        !findings.is_empty(),
                        "{events}: the Rust rule finds something"
                    );
                    rust = Some(findings);
                }
                Some(rust) => assert_eq!(
                    rust,
                    &findings,
                    "{language} on {events}: {} findings against Rust's {}",
                    findings.len(),
                    rust.len()
                ),
            }
        }
    }
}

#[test]
fn inspect_shows_each_rules_language_runtime_and_wasi_needs() {
    for (language, file) in k8s_rule_files() {
        let out = rulehost(&["inspect", file.to_str().unwrap()], &[]);
        assert!(out.status.success(), "{}", brief(&stderr_lines(&out)));
        let report: Value = serde_json::from_slice(&out.stdout).expect("inspect prints JSON");
        let producers = &report["producers"];
        let has = |field: &str, prefix: &str| {
            producers[field].as_array().is_some_and(|values| {
                values
                    .iter()
                    .any(|v| v.as_str().unwrap().starts_with(prefix))
            })
        };
        let (name, runtime, wasi) = match language {
            "rust" => ("Rust", "rustc", json!([])),
            "javascript" => (
                "JavaScript",
                "ComponentizeJS 0.23.0",
                json!(["clocks", "random"]),
            ),
            _ => (
                "Python",
                "componentize-py 0.25.1",
                json!(["clocks", "random"]),
            ),
        };
        assert!(has("language", name), "{language}: {producers}");
        assert!(has("processed-by", runtime), "{language}: {producers}");
        assert_eq!(report["wasi"], wasi, "{language}");
        assert_eq!(report["world"], "rulehost:rule@0.1.3", "{language}");
        assert_eq!(report["metadata"]["id"], "TRC-1013", "{language}");
    }
}

#[test]
fn a_reload_into_another_language_keeps_the_rules_state() {
    let runtime = Arc::new(RuleEngine::new(Limits::default()).expect("runtime"));
    let mut host = rulehost::dispatch::Dispatcher::new(runtime.clone());
    let load = |file: &Path| rulehost::sources::load_file(&runtime, file).expect("rule loads");
    let files = k8s_rule_files();
    host.add_from("k8s", load(&files[0].1)).unwrap();
    let c = container(31);
    let declared = run(
        &mut host,
        vec![exec(c.clone(), &["KUBERNETES_SERVICE_HOST=10.96.0.1"])],
    );
    assert!(declared.is_empty());
    // Rust -> JavaScript -> Python -> Rust: each version finds the address the first
    // one learned, from the host-held state, in one shared encoding.
    for (language, file) in files[1..].iter().chain([&files[0]]) {
        host.replace("k8s", load(file)).unwrap();
        let findings = run(&mut host, vec![connect(c.clone(), "10.96.0.1", 443)]);
        assert_eq!(findings.len(), 1, "{language} after the reload");
        assert_eq!(
            &*findings[0].rule().name,
            file.file_stem().unwrap().to_str().unwrap()
        );
        assert_eq!(host.state_containers("TRC-1013"), 1, "{language}");
    }
}

/// A host with the hostile fixture of `language` and then the Rust TRC-1013 rule.
fn hostile_host(language: &str, limits: Limits) -> rulehost::dispatch::Dispatcher {
    let runtime = Arc::new(RuleEngine::new(limits).expect("runtime"));
    let mut host = rulehost::dispatch::Dispatcher::new(runtime.clone());
    for file in [hostile_fixture(language), k8s_rule_file()] {
        let rule = rulehost::sources::load_file(&runtime, &file).expect("rule loads");
        host.add(rule).unwrap();
    }
    host
}

fn hostile(mode: &str) -> rulehost::events::Event {
    exec(None, &[&format!("HOSTILE={mode}")])
}

/// Runs `mode` of each language's hostile fixture in a batch with a TRC-1013 scenario:
/// the fixture faults once, the Rust rule still reports, and the fixture answers again.
fn contained(mode: &str, limits: Limits, tag: u8) {
    for language in LANGUAGES {
        let mut host = hostile_host(language, limits.clone());
        let mut batch = vec![hostile(mode)];
        batch.extend(k8s_scenario(tag));
        let findings = run(&mut host, batch);
        assert_eq!(by(&findings, K8S_ID).len(), 1, "{language} {mode}");
        assert_eq!(findings.len(), 1, "{language} {mode}");
        assert_eq!(host.counters.rule_faults, 1, "{language} {mode}");
        let alive = run(&mut host, vec![hostile("ok")]);
        assert_eq!(
            by(&alive, hostile_id(language)).len(),
            1,
            "{language} recovers from {mode}"
        );
    }
}

#[test]
fn an_infinite_loop_in_each_language_is_cut_off_and_the_other_rule_still_reports() {
    contained("loop", Limits::default(), 7);
}

#[test]
fn a_memory_bomb_in_each_language_hits_the_cap_and_the_host_carries_on() {
    // A roomy CPU budget, so the memory cap is what stops it.
    contained("bomb", generous_cpu(), 8);
}

#[test]
fn a_log_flood_in_each_language_is_held_to_the_rate_limit_stdout_included() {
    for language in LANGUAGES {
        let file = hostile_fixture(language);
        let grant = format!("{}=env:HOSTILE", hostile_id(language));
        let wasi = format!("{}=wasi:clocks,random", hostile_id(language));
        let started = std::time::Instant::now();
        let out = rulehost(
            &[
                "replay",
                "--rule",
                file.to_str().unwrap(),
                "--rule-cpu-ms",
                "5000",
                "--rule-cpu-per-call-ms",
                "10000",
                "--grant",
                &grant,
                "--grant",
                &wasi,
                "--log-format",
                "json",
                "-",
            ],
            &[hostile("log")],
        );
        let logs = logs_of(&out);
        assert!(out.status.success(), "{language}: {}", brief(&logs));
        assert_eq!(
            stdout_findings(&out).len(),
            1,
            "{language}: the rule finished"
        );
        let lines = logs
            .iter()
            .filter(|r| r.message().starts_with("flooding"))
            .count() as u64;
        let refused = about(
            &logs,
            "rule went over its log or context bounds",
            hostile_id(language),
        );
        assert_eq!(refused.len(), 1, "{language}: {}", brief(&logs));
        let dropped: u64 = refused[0].field("log_lines_dropped").parse().unwrap();
        // 10,000 log calls and 10,000 printed lines: each one written or counted.
        assert_eq!(
            lines + dropped,
            20_000,
            "{language}: {lines} written, {dropped} dropped"
        );
        // The burst of 20, and 10 a second while the call ran (the run's wall time
        // bounds it).
        let bound = 20 + 10 * (started.elapsed().as_secs() + 1);
        assert!(
            (20..=bound).contains(&lines),
            "{language}: {lines} lines written, bound {bound}"
        );
    }
}

#[test]
fn a_rule_reaching_for_env_files_or_the_network_gets_nothing() {
    // What is denied is the point here, not CPU: a budget no escape attempt comes near,
    // so the outcome never depends on how fast this machine runs the interpreter.
    let roomy = Limits {
        cpu_per_event: std::time::Duration::from_secs(2),
        cpu_per_call: std::time::Duration::from_secs(2),
        ..Limits::default()
    };
    let mut host = hostile_host("python", roomy.clone());
    let findings = run(&mut host, vec![hostile("escape")]);
    let found = by(&findings, "FIXTURE-HOSTILE-PY");
    assert_eq!(found.len(), 1);
    assert_eq!(
        serde_json::to_value(found[0].data()).unwrap(),
        json!({"mode": "escape", "env": 0, "read": false, "connected": false})
    );

    let mut host = hostile_host("js", roomy);
    let findings = run(&mut host, vec![hostile("escape")]);
    let found = by(&findings, "FIXTURE-HOSTILE-JS");
    assert_eq!(found.len(), 1);
    assert_eq!(
        serde_json::to_value(found[0].data()).unwrap(),
        json!({"mode": "escape", "env": 0})
    );
    // fetch is left out of the build: calling it traps, the host recreates the rule.
    let findings = run(&mut host, vec![hostile("fetch")]);
    assert!(findings.is_empty());
    assert_eq!(host.counters.rule_faults, 1);
}

#[test]
fn clocks_and_random_are_refused_unless_granted_naming_the_import() {
    for language in LANGUAGES {
        let file = hostile_fixture(language);
        let id = hostile_id(language);
        let env = format!("{id}=env:HOSTILE");
        let out = rulehost(&["inspect", file.to_str().unwrap(), "--grant", &env], &[]);
        assert!(!out.status.success(), "{language} loaded without the grant");
        let err = stderr(&out);
        assert_eq!(
            err.lines().count(),
            1,
            "one line: {}",
            brief(&stderr_lines(&out))
        );
        assert!(
            err.contains(&format!("rule {id} imports `wasi:"))
                && err.contains(&format!("--grant {id}=wasi:")),
            "{language}: {err}"
        );
        let wasi = format!("{id}=wasi:clocks,random");
        let out = rulehost(
            &[
                "inspect",
                file.to_str().unwrap(),
                "--grant",
                &env,
                "--grant",
                &wasi,
            ],
            &[],
        );
        assert!(out.status.success(), "{}", brief(&stderr_lines(&out)));
    }
}

#[test]
fn a_rules_budget_raises_its_own_bounds_and_no_other_rules() {
    let files = k8s_rule_files();
    let (js, python) = (files[1].1.to_str().unwrap(), files[2].1.to_str().unwrap());
    let dir = std::env::temp_dir().join(format!("rulehost-budgets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "budgets:\n  k8s_api_connection_python: {max_mib: 24, memory_mib: 32}\n",
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let inspect = |file: &str, extra: &[&str]| {
        let mut args = vec!["inspect", file];
        args.extend(extra);
        rulehost(&args, &[])
    };
    let one_line = |out: &std::process::Output| {
        assert!(!out.status.success());
        let err = stderr(out);
        assert_eq!(err.lines().count(), 1, "{}", brief(&stderr_lines(out)));
        err
    };

    // Under a 16 MiB size bound and an 8 MiB memory cap neither runtime fits...
    let tight = ["--rule-max-mib", "16", "--rule-memory-mib", "8"];
    let err = one_line(&inspect(python, &tight));
    assert!(
        err.contains("larger than the 16 MiB a rule may be")
            && err.contains("budgets: {k8s_api_connection_python: {max_mib: N}}"),
        "{err}"
    );
    let err = one_line(&inspect(js, &tight));
    assert!(err.contains("over the rule's cap of 8 MiB"), "{err}");
    // ...and the Python rule's budget lets it load, while the JavaScript one still
    // gets the defaults.
    let with_budget = [&tight[..], &["--config", config]].concat();
    let out = inspect(python, &with_budget);
    assert!(out.status.success(), "{}", brief(&stderr_lines(&out)));
    let err = one_line(&inspect(js, &with_budget));
    assert!(err.contains("over the rule's cap of 8 MiB"), "{err}");

    // A compile budget holds too: one CPU second is not enough for a Python runtime.
    std::fs::write(
        dir.join("slow.yaml"),
        "budgets:\n  k8s_api_connection_python: {compile_cpu_secs: 1}\n",
    )
    .unwrap();
    let slow = dir.join("slow.yaml");
    let err = one_line(&inspect(python, &["--config", slow.to_str().unwrap()]));
    assert!(
        err.contains("compiling took more than the 1 s of CPU a rule compile may use"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
