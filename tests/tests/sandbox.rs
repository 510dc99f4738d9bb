//! Containment of hostile rules beyond CPU and memory (those are in sandbox_limits.rs):
//! traps and panics (recreated, then disabled; state kept), garbage findings, what is
//! refused at load (imports, other worlds, failing init), and output bounds. Run by the
//! real host beside the k8s_api_connection rule, and through the `rulehost` binary for
//! what it refuses and logs.

use rulehost::dispatch::{FAULT_WINDOW, MAX_FAULTS};
use rulehost::rules::Limits;
use rulehost_tests::hostile::*;
use rulehost_tests::*;
use serde_json::json;
use std::time::{Duration, Instant};

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
fn an_import_no_rule_is_given_is_refused_at_load() {
    let error = load_error("http-import");
    assert!(
        error.contains("imports `wasi:http/outgoing-handler@0.2.0`, which rules are not given"),
        "{error}"
    );
    assert!(error.contains("http-import.wasm"), "{error}");

    let file = fixture("http-import");
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
            err.contains(file.to_str().unwrap())
                && err.contains("`wasi:http/outgoing-handler@0.2.0`"),
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
            .map(|f| f.data()["n"].as_u64().unwrap())
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
    let blob = findings[0]
        .data()
        .get("blob")
        .and_then(serde_json::Value::as_str)
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
    assert_eq!(findings[0].data()["mark"], json!("before"));
    assert_eq!(findings[0].data()["container_id"], json!(container_id(10)));

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
        .map(|f| f.data()["mark"].clone())
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
