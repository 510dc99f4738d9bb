//! Containment of hostile rules: the fixtures under `tests/fixtures/`, run by the real
//! host (runtime and dispatcher) beside the k8s_api_connection rule, and through the
//! `rulehost` binary for what it refuses and logs.

use rulehost::dispatch::{FAULT_WINDOW, MAX_FAULTS};
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
    assert_eq!(findings[0].data["allocated_mib"], json!(48));
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
            [f] => f.data["allocated_mib"].as_u64(),
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

#[test]
fn a_rule_that_traps_on_every_event_is_recreated_then_disabled() {
    let mut host = host_with(Limits::default(), &["trap-every-event"]);
    for n in 1..=MAX_FAULTS as u64 + 2 {
        let findings = run(&mut host, vec![connect(None, "192.0.2.1", 80)]);
        assert!(findings.is_empty());
        let faults = n.min(MAX_FAULTS as u64);
        assert_eq!(host.counters.rule_faults, faults, "after event {n}");
        assert_eq!(host.is_disabled("FIXTURE-TRAP"), n >= MAX_FAULTS as u64);
    }
    assert!(!host.is_disabled(K8S_ID));
    assert_eq!(by(&run(&mut host, k8s_scenario(7)), K8S_ID).len(), 1);
}

#[test]
fn packed_findings_that_do_not_decode_are_the_rules_fault() {
    // Its `packed.on-events` answers with a count of u32::MAX and three bytes: refused
    // before anything is reserved for the count, counted as its fault, one per batch.
    let mut host = host_with(Limits::default(), &["garbage-findings"]);
    for n in 1..=MAX_FAULTS as u64 {
        let findings = run(&mut host, vec![connect(None, "192.0.2.1", 80)]);
        assert!(findings.is_empty(), "{}", brief(&findings));
        assert_eq!(host.counters.rule_faults, n, "after batch {n}");
    }
    assert!(host.is_disabled("FIXTURE-GARBAGE"));
    assert!(!host.is_disabled(K8S_ID));
    assert_eq!(by(&run(&mut host, k8s_scenario(9)), K8S_ID).len(), 1);

    let out = replay(
        &["garbage-findings"],
        &[],
        &[connect(container(9), "192.0.2.1", 80)],
    );
    let logs = logs_of(&out);
    assert!(out.status.success(), "{}", brief(&logs));
    let faults = about(&logs, "rule faulted", "FIXTURE-GARBAGE");
    assert_eq!(faults.len(), 1, "{}", brief(&logs));
    assert!(
        faults[0].field("reason").contains(
            "findings from `packed.on-events`: malformed packed bytes at offset 0: a count larger than the bytes that follow"
        ),
        "{:?}",
        faults[0]
    );
}

#[test]
fn the_binary_logs_recreation_then_disabling() {
    // One batch: it fails whole, then each event is redone alone until the rule is
    // disabled; the k8s rule still reports the one API server connect.
    let mut events = k8s_scenario(8);
    events.extend((0..8).map(|i| connect(container(8), "192.0.2.1", 8000 + i)));
    let out = replay(&["trap-every-event"], &[], &events);
    let logs = logs_of(&out);
    assert!(out.status.success(), "{}", brief(&logs));
    let found = stdout_findings(&out);
    assert_eq!(found.len(), 1, "{}", brief(&found));
    assert_eq!(found[0]["signature"]["id"], K8S_ID);

    let id = "FIXTURE-TRAP";
    let batch = about(
        &logs,
        "rule faulted on a batch; redoing it one event at a time",
        id,
    );
    assert_eq!(batch.len(), 1, "{}", brief(&logs));
    assert_eq!(batch[0].field("events"), "10");
    assert!(
        batch[0].field("reason").contains("unreachable"),
        "{:?}",
        batch[0]
    );
    let faults = about(&logs, "rule faulted", id);
    assert_eq!(faults.len(), MAX_FAULTS, "{}", brief(&logs));
    assert!(
        faults
            .iter()
            .all(|r| r.field("reason").contains("unreachable")
                && r.field("sha256").len() == 64
                && !r.field("pid").is_empty()),
        "{}",
        brief(&faults)
    );
    assert_eq!(
        about(
            &logs,
            "rule instance recreated from its compiled component",
            id
        )
        .len(),
        MAX_FAULTS, // after the batch, then after each of the first MAX_FAULTS - 1 events
        "{}",
        brief(&logs)
    );
    let disabled = about(&logs, "rule disabled after repeated faults", id);
    assert_eq!(disabled.len(), 1, "{}", brief(&logs));
    assert_eq!(disabled[0].field("faults"), MAX_FAULTS.to_string());
    assert_eq!(
        disabled[0].field("window_secs"),
        FAULT_WINDOW.as_secs().to_string()
    );
    assert!(
        logs.iter()
            .filter(|r| r.field("id") == K8S_ID)
            .all(|r| !r.message().contains("fault")),
        "{}",
        brief(&logs)
    );
}

#[test]
fn a_filesystem_import_is_refused_at_load() {
    let error = load_error("fs-import");
    assert!(
        error.contains(
            "imports `wasi:filesystem/types@0.2.0`, which the rulehost:rule world does not grant"
        ),
        "{error}"
    );
    assert!(error.contains("fs-import.wasm"), "{error}");

    let file = fixture("fs-import");
    for args in [
        vec!["replay", "--rule", file.to_str().unwrap(), "-"],
        vec!["inspect", file.to_str().unwrap()],
    ] {
        let out = rulehost(&args, &[]);
        assert!(!out.status.success());
        assert!(out.stdout.is_empty());
        let err = stderr(&out);
        assert_eq!(
            err.lines().count(),
            1,
            "one line: {}",
            brief(&stderr_lines(&out))
        );
        assert!(
            err.contains(file.to_str().unwrap()) && err.contains("`wasi:filesystem/types@0.2.0`"),
            "{err}"
        );
    }
}

#[test]
fn a_component_of_another_world_is_refused_at_load() {
    let error = load_error("wrong-world");
    assert!(
        error.contains(&format!(
            "does not export `rulehost:rule/detector`: not a rule of the rulehost:rule@{} world",
            rulehost::rules::WORLD_VERSION
        )),
        "{error}"
    );
    let file = fixture("wrong-world");
    let out = rulehost(&["replay", "--rule", file.to_str().unwrap(), "-"], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(
        err.lines().count(),
        1,
        "one line: {}",
        brief(&stderr_lines(&out))
    );
    assert!(
        err.contains(file.to_str().unwrap())
            && err.contains("does not export `rulehost:rule/detector`"),
        "{err}"
    );
}

#[test]
fn a_rule_whose_init_fails_is_refused_at_load() {
    let error = load_error("init-error");
    assert!(
        error.contains("init() refused: fixture refuses to start: no configuration"),
        "{error}"
    );
    let file = fixture("init-error");
    let out = rulehost(&["replay", "--rule", file.to_str().unwrap(), "-"], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(
        err.lines().count(),
        1,
        "one line: {}",
        brief(&stderr_lines(&out))
    );
    assert!(
        err.contains(file.to_str().unwrap()) && err.contains("init() refused"),
        "{err}"
    );
}

#[test]
fn thousands_of_findings_are_capped_per_event_and_counted() {
    const FLOOD: u64 = 5000; // findings per connect, see the fixture
    let limits = generous_cpu(); // default output bounds
    let (cap, max_bytes) = (limits.max_findings_per_event, limits.max_finding_bytes);
    let mut host = host_with(limits, &["finding-flood"]);
    let batch = vec![
        exec(container(9), &[KSH]),
        connect(container(9), API, 443),
        connect(None, "192.0.2.1", 80),
    ];
    let (first, second) = (batch[1].clone(), batch[2].clone());
    let start = Instant::now();
    let findings = run(&mut host, batch);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );

    assert_eq!(by(&findings, K8S_ID).len(), 1);
    let flood = by(&findings, "FIXTURE-FLOOD");
    for connect in [&first, &second] {
        let kept: Vec<_> = flood
            .iter()
            .filter(|f| f.event.event == *connect)
            .map(|f| f.data["n"].as_u64().unwrap())
            .collect();
        assert_eq!(
            kept,
            (0..cap as u64).collect::<Vec<_>>(),
            "the first {cap} are kept"
        );
    }
    assert_eq!(
        flood.len(),
        2 * cap,
        "the exec's {max_bytes}+ byte finding is dropped"
    );
    assert_eq!(host.counters.findings, 2 * cap as u64 + 1);
    assert_eq!(host.counters.findings_dropped, 1 + 2 * (FLOOD - cap as u64));
    assert_eq!(host.counters.rule_faults, 0);
}

#[test]
fn the_output_bounds_are_configurable() {
    let mut host = host_with(
        Limits {
            max_findings_per_event: 100,
            max_finding_bytes: 128 * 1024,
            ..generous_cpu()
        },
        &["finding-flood"],
    );
    let findings = run(
        &mut host,
        vec![exec(None, &[]), connect(None, "192.0.2.1", 80)],
    );
    let blob = findings[0].data["blob"]
        .as_str()
        .expect("the 64 KiB finding fits");
    assert_eq!(blob.len(), 64 * 1024);
    assert_eq!(findings.len(), 1 + 100);
    assert_eq!(host.counters.findings_dropped, 5000 - 100);
}

#[test]
fn the_binary_logs_dropped_findings() {
    let out = replay(
        &["finding-flood"],
        &["--rule-cpu-ms", "1000"],
        &[connect(None, "192.0.2.1", 80)],
    );
    let logs = logs_of(&out);
    assert!(out.status.success(), "{}", brief(&logs));
    assert_eq!(
        stdout_findings(&out).len(),
        Limits::default().max_findings_per_event
    );
    let dropped: Vec<_> = logs
        .iter()
        .filter(|r| {
            r.is(
                "dropped findings over the output bounds",
                &[("rule", "finding-flood"), ("dropped", "4984")],
            )
        })
        .collect();
    assert_eq!(dropped.len(), 1, "{}", brief(&logs));
}

#[test]
fn a_panicking_rule_is_isolated_and_keeps_its_state() {
    const ID: &str = "FIXTURE-STATEFUL-PANIC";
    let mut host = host_with(Limits::default(), &["stateful-panic"]);
    let c = container(10);
    assert!(run(&mut host, vec![exec(c.clone(), &["MARK=before"])]).is_empty());
    assert_eq!(host.state_containers(ID), 1);

    // A panic (a wasm trap) on its own: one fault, the instance is recreated.
    assert!(run(&mut host, vec![exec(c.clone(), &["TRAP=1"])]).is_empty());
    assert_eq!(host.counters.rule_faults, 1);
    assert!(!host.is_disabled(ID));
    // The new instance sees the state written before the fault.
    let findings = run(&mut host, vec![connect(c.clone(), API, 443)]);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].data["mark"], json!("before"));
    assert_eq!(findings[0].data["container_id"], json!(container_id(10)));

    // Within a batch: only the panicking event is lost; the events around it, and the
    // k8s rule, are unaffected.
    let d = container(11);
    let findings = run(
        &mut host,
        vec![
            exec(d.clone(), &["MARK=batched", KSH]),
            exec(d.clone(), &["TRAP=1"]),
            connect(d.clone(), API, 443),
            connect(c, API, 443),
        ],
    );
    let marks: Vec<_> = by(&findings, ID)
        .iter()
        .map(|f| f.data["mark"].clone())
        .collect();
    assert_eq!(marks, vec![json!("batched"), json!("before")]);
    assert_eq!(by(&findings, K8S_ID).len(), 1);
    assert_eq!(host.counters.rule_faults, 2);
    assert_eq!(host.state_containers(ID), 2);
    assert!(!host.is_disabled(ID));
}

#[test]
fn state_is_kept_when_the_instance_cannot_be_recreated() {
    const ID: &str = "FIXTURE-STATEFUL-PANIC";
    let mut host = host_with(Limits::default(), &["stateful-panic"]);
    let c = container(12);
    run(&mut host, vec![exec(c.clone(), &["MARK=kept"])]);
    // Panics after setting a flag that makes every later init refuse.
    run(&mut host, vec![exec(c.clone(), &["TRAP=refuse-init"])]);
    assert_eq!(host.counters.rule_faults, 1);
    assert!(host.is_disabled(ID), "no instance could be recreated");
    // The container's mark and the flag, both under its handle, are held.
    assert_eq!(host.state_containers(ID), 1);
    host.container_removed(&container_id(12));
    assert_eq!(host.state_containers(ID), 0);
    assert_eq!(by(&run(&mut host, k8s_scenario(13)), K8S_ID).len(), 1);

    let out = replay(
        &["stateful-panic"],
        &["--grant", "FIXTURE-STATEFUL-PANIC=env:MARK,TRAP"],
        &[exec(container(12), &["TRAP=refuse-init"])],
    );
    let logs = logs_of(&out);
    assert!(out.status.success(), "{}", brief(&logs));
    let disabled = about(
        &logs,
        "rule disabled: cannot recreate its instance",
        "FIXTURE-STATEFUL-PANIC",
    );
    assert_eq!(disabled.len(), 1, "{}", brief(&logs));
    assert!(
        disabled[0]
            .field("error")
            .contains("init() refused: refusing to start: asked to by TRAP=refuse-init"),
        "{:?}",
        disabled[0]
    );
}
