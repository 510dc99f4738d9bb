//! CPU and memory bounds on hostile rules: an infinite loop cut off at its deadline
//! (per event, per call, as configured), a declared or grown memory over the cap, run by
//! the real host beside the k8s_api_connection rule and through the `rulehost` binary.

use rulehost::dispatch::MAX_FAULTS;
use rulehost::rules::Limits;
use rulehost_tests::hostile::*;
use rulehost_tests::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[test]
fn an_infinite_loop_is_cut_off_and_the_other_rule_still_reports() {
    let mut host = host_with(Limits::default(), &["infinite-loop"]);
    let mut batch = k8s_scenario(1);
    batch.push(connect(None, "192.0.2.1", 80));

    let start = Instant::now();
    let findings = run(&mut host, batch);
    let elapsed = start.elapsed();
    // 10 ms per event for the batch, then 10 ms for each event redone alone: about
    // 60 ms; the bound only says "not stuck", with room for a busy 2-core machine.
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert_eq!(
        by(&findings, K8S_ID).len(),
        1,
        "the k8s rule ran on the same batch"
    );
    assert_eq!(findings.len(), 1);
    assert_eq!(
        host.counters.rule_faults, 3,
        "each of its 3 events is one fault"
    );
    assert!(!host.is_disabled("FIXTURE-LOOP"));
    assert!(!host.is_disabled(K8S_ID));

    // Two more faults reach MAX_FAULTS: the loop is disabled, the host goes on.
    let findings = run(&mut host, k8s_scenario(2));
    assert_eq!(by(&findings, K8S_ID).len(), 1);
    assert_eq!(host.counters.rule_faults, MAX_FAULTS as u64);
    assert!(host.is_disabled("FIXTURE-LOOP"));
    let delivered = host.delivered("FIXTURE-LOOP");
    let findings = run(&mut host, k8s_scenario(3));
    assert_eq!(
        host.delivered("FIXTURE-LOOP"),
        delivered,
        "a disabled rule is not called"
    );
    assert_eq!(by(&findings, K8S_ID).len(), 1);
    assert_eq!(host.counters.rule_faults, MAX_FAULTS as u64);
}

/// A full drain's worth of events costs a stuck rule one call's budget (100 ms of CPU by
/// default, plus the redo's), not 10 ms per event: 2,000 events would be 20 s.
#[test]
fn a_stuck_rule_holds_the_loop_for_one_call_budget_however_large_the_batch() {
    let mut host = host_with(Limits::default(), &["infinite-loop"]);
    let batch: Vec<_> = (0..2000)
        .map(|i| connect(None, "192.0.2.1", 1 + (i % 60_000) as u16))
        .collect();
    let start = Instant::now();
    assert!(run(&mut host, batch).is_empty());
    let elapsed = start.elapsed();
    // About 0.2 s of CPU; the bound only says "not 20 s", with room for a busy machine.
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    let skipped = host.counters.events_skipped;
    let faults = host.counters.rule_faults;
    assert!(
        skipped > 0 || host.is_disabled("FIXTURE-LOOP"),
        "the redo stopped: {skipped} skipped, {faults} faults"
    );
}

#[test]
fn the_cpu_deadline_follows_the_configured_budget() {
    let budget = Duration::from_millis(80);
    let mut host = host_with(
        Limits {
            cpu_per_event: budget,
            ..Limits::default()
        },
        &["infinite-loop"],
    );
    let start = Instant::now();
    let findings = run(&mut host, vec![connect(None, "192.0.2.1", 80)]);
    let elapsed = start.elapsed();
    assert!(findings.is_empty());
    assert!(
        elapsed >= budget,
        "cut off after {elapsed:?}, before its budget"
    );
    assert!(
        elapsed < budget + Duration::from_secs(10),
        "not cut off: took {elapsed:?}"
    );
    assert_eq!(host.counters.rule_faults, 1, "one event, one fault");
}

#[test]
fn the_binary_reports_a_looping_rule_and_goes_on() {
    let mut events = k8s_scenario(4);
    events.push(connect(None, "192.0.2.1", 80));
    let start = Instant::now();
    let out = replay(&["infinite-loop"], &["--rule-cpu-ms", "20"], &events);
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "a looping rule stalled replay"
    );
    let logs = logs_of(&out);
    assert!(out.status.success(), "{}", brief(&logs));
    let found = stdout_findings(&out);
    assert_eq!(found.len(), 1, "{}", brief(&found));
    assert_eq!(found[0]["signature"]["id"], K8S_ID);
    let faults: Vec<_> = about(&logs, "rule faulted", "FIXTURE-LOOP")
        .into_iter()
        .filter(|r| r.field("rule") == "infinite-loop" && r.field("reason").contains("interrupt"))
        .collect();
    assert_eq!(faults.len(), 3, "{}", brief(&logs));
    assert_eq!(
        faults[0].field("event"),
        "sched_process_exec",
        "{:?}",
        faults[0]
    );
    assert_eq!(faults[0].field("pid"), "100", "{:?}", faults[0]);
    assert_eq!(faults[0].field("sha256").len(), 64, "{:?}", faults[0]);
}

#[test]
fn a_rule_whose_declared_memory_is_over_the_cap_is_refused_at_load() {
    let error = load_error("big-minimum");
    assert!(
        error.contains("growing memory to 192 MiB in all, over the rule's cap of 64 MiB"),
        "{error}"
    );
    let roomy = Limits {
        memory_bytes: 256 << 20,
        ..Limits::default()
    };
    let runtime = rulehost::rules::RuleEngine::new(roomy).expect("runtime");
    rulehost::sources::load_file(&runtime, &fixture("big-minimum"))
        .expect("loads under a 256 MiB cap");
}

#[test]
fn a_memory_bomb_hits_the_cap_and_the_host_carries_on() {
    let mut host = host_with(generous_cpu(), &["memory-bomb"]);
    // Its exec asks for nothing; both connects allocate without bound.
    let mut batch = k8s_scenario(5);
    batch.push(connect(None, "192.0.2.1", 80));
    let findings = run(&mut host, batch);
    assert_eq!(by(&findings, K8S_ID).len(), 1);
    assert_eq!(findings.len(), 1);
    assert_eq!(host.counters.rule_faults, 2);
    assert!(!host.is_disabled("FIXTURE-MEMORY-BOMB"));

    // The recreated instance starts from fresh memory: 48 of the 64 MiB fit again.
    let findings = run(&mut host, vec![exec(None, &["BOMB_MIB=48"])]);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].data()["allocated_mib"], json!(48));
    assert_eq!(host.counters.rule_faults, 2);
}

#[test]
fn the_memory_cap_is_configurable() {
    let allocated = |cap_mib: usize, mib: u32| -> Option<u64> {
        let mut host = host_with(
            Limits {
                memory_bytes: cap_mib << 20,
                ..generous_cpu()
            },
            &["memory-bomb"],
        );
        let findings = run(&mut host, vec![exec(None, &[&format!("BOMB_MIB={mib}")])]);
        match findings.as_slice() {
            [] => {
                assert_eq!(host.counters.rule_faults, 1);
                None
            }
            [f] => f.data()["allocated_mib"].as_u64(),
            more => panic!("{}", brief(more)),
        }
    };
    assert_eq!(allocated(32, 16), Some(16));
    assert_eq!(allocated(32, 48), None, "48 MiB is over a 32 MiB cap");
    assert_eq!(allocated(64, 48), Some(48));
    assert_eq!(allocated(128, 96), Some(96));
    assert_eq!(allocated(128, 160), None);
}

#[test]
fn the_binary_honours_rule_memory_mib() {
    let events = [
        exec(None, &["BOMB_MIB=16"]),
        exec(None, &["BOMB_MIB=40"]),
        connect(None, "192.0.2.1", 80), // allocates without bound
    ];
    let over_the_cap = |logs: &[LogRecord]| {
        about(logs, "rule faulted", "FIXTURE-MEMORY-BOMB")
            .iter()
            .filter(|r| r.field("reason").contains("growing memory"))
            .count()
    };
    let cpu = [
        "--rule-cpu-ms",
        "2000",
        "--grant",
        "FIXTURE-MEMORY-BOMB=env:BOMB_MIB",
    ];
    let out = replay(
        &["memory-bomb"],
        &[&cpu[..], &["--rule-memory-mib", "32"]].concat(),
        &events,
    );
    let logs = logs_of(&out);
    assert!(out.status.success(), "{}", brief(&logs));
    let found = stdout_findings(&out);
    assert_eq!(found.len(), 1, "{}", brief(&found));
    assert_eq!(found[0]["data"]["allocated_mib"], 16);
    assert_eq!(
        over_the_cap(&logs),
        2,
        "40 MiB and unbounded are over 32 MiB: {}",
        brief(&logs)
    );

    let out = replay(
        &["memory-bomb"],
        &[&cpu[..], &["--rule-memory-mib", "64"]].concat(),
        &events,
    );
    let logs = logs_of(&out);
    assert!(out.status.success(), "{}", brief(&logs));
    let found: Vec<_> = stdout_findings(&out)
        .iter()
        .map(|f| f["data"]["allocated_mib"].clone())
        .collect();
    assert_eq!(found, vec![json!(16), json!(40)], "{}", brief(&logs));
    assert_eq!(
        over_the_cap(&logs),
        1,
        "only the unbounded one is over 64 MiB: {}",
        brief(&logs)
    );
}
