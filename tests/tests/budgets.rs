//! Host resources charged to a rule: the `hoarder` fixture reaches for each of them
//! past its bound (state under handles it was never handed, its own state budget,
//! `context` calls, empty finding fields, log lines), run by the real host and binary.

use rulehost::rules::Limits;
use rulehost::state::StateLimits;
use rulehost_tests::hostile::*;
use rulehost_tests::*;
use std::time::Duration;

const ID: &str = "FIXTURE-HOARDER";
/// Bytes of each value the fixture writes, see the fixture.
const VALUE_BYTES: usize = 16 * 1024;

/// The fixture reads `HOARD` from exec events: granted by the operator, or refused.
const GRANT: &str = "FIXTURE-HOARDER=env:HOARD";

/// Roomy CPU: the fixture makes 100,000 host calls in one event on purpose.
fn limits() -> Limits {
    Limits {
        cpu_per_event: Duration::from_secs(5),
        cpu_per_call: Duration::from_secs(5),
        ..Limits::default()
    }
}

/// The one finding of the hoarder for `events`.
fn hoarded(limits: Limits, events: Vec<rulehost::events::Event>) -> serde_json::Value {
    let mut host = host_with(limits, &["hoarder"]);
    let findings = run(&mut host, events);
    let found = by(&findings, ID);
    assert_eq!(found.len(), 1, "{}", brief(&found));
    serde_json::to_value(found[0].data()).unwrap()
}

#[test]
fn state_goes_only_under_handles_the_host_handed_over_and_within_its_budget() {
    let budget = 256 * 1024;
    let limits = Limits {
        state: StateLimits {
            max_total_bytes: budget,
            ..StateLimits::default()
        },
        ..limits()
    };
    let mut host = host_with(limits, &["hoarder"]);
    let findings = run(&mut host, vec![exec(container(20), &["HOARD=state"])]);
    let found = by(&findings, ID);
    assert_eq!(found.len(), 1, "{}", brief(&found));
    let data = found[0].data();
    assert_eq!(data["init_accepted"], 0, "init is handed no handle");
    assert_eq!(data["invented_accepted"], 0, "handles it invented");
    // Keys k0..k14 with 16 KiB values fit in 256 KiB; the 16th does not.
    assert_eq!(
        data["own_accepted"], 15,
        "its own container, until the budget"
    );
    assert_eq!(host.state_containers(ID), 1);
    let held = host.state_bytes(ID);
    assert!(
        held <= budget,
        "{held} bytes held over a {budget} byte budget"
    );
    assert_eq!(held, 15 * VALUE_BYTES + 10 * 2 + 5 * 3);
}

#[test]
fn context_calls_over_the_bound_answer_empty() {
    let data = hoarded(limits(), vec![exec(container(21), &["HOARD=context"])]);
    let bound = Limits::default().max_context_calls_per_event;
    assert_eq!(data["answered"], bound as u64);

    let few = Limits {
        max_context_calls_per_event: 5,
        ..limits()
    };
    let data = hoarded(few, vec![exec(container(21), &["HOARD=context"])]);
    assert_eq!(data["answered"], 5);
}

#[test]
fn every_field_is_charged_however_empty() {
    let mut host = host_with(limits(), &["hoarder"]);
    let findings = run(&mut host, vec![exec(container(22), &["HOARD=empty"])]);
    assert!(by(&findings, ID).is_empty(), "100,000 empty fields pass");
    assert_eq!(host.counters.findings_dropped, 1);
}

#[test]
fn the_binary_reports_dropped_log_lines_once_per_delivery() {
    let out = replay(
        &["hoarder"],
        &[
            "--rule-cpu-ms",
            "5000",
            "--rule-cpu-per-call-ms",
            "10000",
            "--grant",
            GRANT,
        ],
        &[exec(container(23), &["HOARD=log"])],
    );
    let logs = logs_of(&out);
    assert!(out.status.success(), "{}", brief(&logs));
    let lines = logs
        .iter()
        .filter(|r| r.message().starts_with("hoarding the log"))
        .count();
    assert_eq!(lines, 20, "the burst only");
    let refused: Vec<_> = about(&logs, "rule went over its log or context bounds", ID);
    assert_eq!(refused.len(), 1, "{}", brief(&logs));
    assert_eq!(refused[0].field("log_lines_dropped"), "9980");
    assert_eq!(refused[0].field("context_calls_refused"), "0");
}

#[test]
fn an_env_name_is_read_only_when_granted_and_every_loader_agrees() {
    let rule = fixture("hoarder");
    let rule = rule.to_str().unwrap();
    let refusal = "cannot load rule";
    let how = "rule FIXTURE-HOARDER asks for env HOARD, not granted to it: grant it with `--grant FIXTURE-HOARDER=env:HOARD`";
    let dir = std::env::temp_dir().join(format!("rulehost-grants-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, "grants:\n  FIXTURE-HOARDER:\n    env: [HOARD]\n").unwrap();
    let other = dir.join("other.yaml");
    std::fs::write(&other, "grants:\n  TRC-1013:\n    env: [HOARD]\n").unwrap();
    let config = config.to_str().unwrap();
    let other = other.to_str().unwrap();
    for (command, base) in [
        ("replay", vec!["replay", "--rule", rule, "/dev/null"]),
        ("inspect", vec!["inspect", rule]),
        (
            "run --check",
            vec!["run", "--check", "--no-state-dir", "--rule", rule],
        ),
    ] {
        for (grant, loads) in [
            (vec![], false),
            (vec!["--config", other], false),
            (vec!["--grant", "FIXTURE-HOARDER=env:OTHER"], false),
            (vec!["--grant", GRANT], true),
            (vec!["--config", config], true),
        ] {
            let mut args = base.clone();
            args.extend(&grant);
            let out = rulehost(&args, &[]);
            let stderr = stderr_lines(&out);
            assert_eq!(
                out.status.success(),
                loads,
                "{command} {grant:?}: {}",
                brief(&stderr)
            );
            if !loads {
                assert_eq!(stderr.len(), 1, "{command} {grant:?}: {}", brief(&stderr));
                assert!(
                    stderr[0].contains(refusal) && stderr[0].contains(how),
                    "{command} {grant:?}: {}",
                    stderr[0]
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_config_is_one_line_naming_file_line_and_column() {
    let dir = std::env::temp_dir().join(format!("rulehost-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, "grants:\n  X:\n    envs: [A]\n").unwrap();
    let out = rulehost(
        &[
            "inspect",
            k8s_rule_file().to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        &[],
    );
    let stderr = stderr_lines(&out);
    assert!(!out.status.success());
    assert_eq!(stderr.len(), 1, "{}", brief(&stderr));
    assert!(
        stderr[0].contains(&format!(
            "config {}: line 3 column 5: unknown field `envs`",
            config.display()
        )),
        "{}",
        stderr[0]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
