//! TRC-1013 through the real wasm component, via the host's dispatcher.

use rulehost::events::SocketAddress;
use rulehost::rules::Limits;
use rulehost_tests::*;
use serde_json::json;

const KSH: &str = "KUBERNETES_SERVICE_HOST";

fn env(value: &str) -> String {
    format!("{KSH}={value}")
}

/// Both delivery paths (batched and single) must agree, and the rule in every language
/// it ships in (Rust, JavaScript, Python) must give the same findings; returns the Rust
/// rule's.
fn both_ways(events: Vec<rulehost::events::Event>) -> Vec<rulehost::sinks::Finding> {
    let data = |f: &Vec<rulehost::sinks::Finding>| {
        f.iter()
            .map(|f| {
                (
                    serde_json::to_value(f.data()).unwrap(),
                    f.signature().clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    let mut rust: Option<Vec<rulehost::sinks::Finding>> = None;
    for (language, file) in k8s_rule_files() {
        let batched = run(&mut host_of(Limits::default(), &file), events.clone());
        let single = run_one_by_one(&mut host_of(Limits::default(), &file), events.clone());
        assert_eq!(
            data(&batched),
            data(&single),
            "{language}: batched and single delivery differ"
        );
        match &rust {
            None => rust = Some(batched),
            Some(rust) => assert_eq!(
                data(rust),
                data(&batched),
                "{language} differs from the Rust rule"
            ),
        }
    }
    rust.expect("the Rust rule ran")
}

#[test]
fn tracee_test_case_match_then_metadata_address() {
    let c = container(1);
    let findings = both_ways(vec![
        exec(c.clone(), &[&env("1.1.1.1")]),
        connect(c.clone(), "1.1.1.1", 80),
        connect(c, "169.254.169.254", 80),
    ]);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].data()["ip"], json!("1.1.1.1"));
    assert_eq!(findings[0].data()["port"], json!(80));
}

#[test]
fn tracee_detector_case() {
    let c = container(2);
    let findings = both_ways(vec![
        exec(c.clone(), &["PATH=/bin", &env("10.96.0.1")]),
        connect(c.clone(), "10.96.0.1", 443),
        connect(c, "8.8.8.8", 80),
    ]);
    assert_eq!(findings.len(), 1);
    let f = &findings[0];
    assert_eq!(
        serde_json::to_value(f.data()).unwrap(),
        json!({"ip": "10.96.0.1", "port": 443, "container_id": container_id(2), "comm": "curl"})
    );
    assert_eq!(f.signature().id, "TRC-1013");
    assert_eq!(f.signature().version, "0.3.0");
    assert_eq!(
        f.signature().name,
        "Kubernetes API server connection detected"
    );
    assert_eq!(f.signature().event_name, "k8s_api_connection");
    assert_eq!(f.signature().severity, 1);
    assert_eq!(f.signature().tags, vec!["container"]);
    let mitre = f.signature().mitre.as_ref().unwrap();
    assert_eq!(
        (
            mitre.tactic.as_str(),
            mitre.technique.as_str(),
            mitre.technique_id.as_str()
        ),
        ("Discovery", "Cloud Service Discovery", "T1526")
    );
    assert_eq!(f.event.name, "security_socket_connect");
    assert_eq!(f.timestamp, 2);
}

#[test]
fn host_processes_are_ignored() {
    let findings = both_ways(vec![
        exec(None, &[&env("10.96.0.1")]),
        connect(None, "10.96.0.1", 443),
    ]);
    assert!(findings.is_empty());
}

#[test]
fn a_later_exec_cannot_erase_the_real_address() {
    let c = container(3);
    let findings = both_ways(vec![
        exec(c.clone(), &[&env("10.96.0.1")]),
        exec(c.clone(), &[&env("192.0.2.1")]), // env KUBERNETES_SERVICE_HOST=x curl ...
        connect(c.clone(), "10.96.0.1", 443),
        connect(c, "192.0.2.1", 443),
    ]);
    let ips: Vec<_> = findings.iter().map(|f| f.data()["ip"].clone()).collect();
    assert_eq!(ips, vec![json!("10.96.0.1"), json!("192.0.2.1")]);
}

#[test]
fn addresses_are_bounded_per_container() {
    let c = container(4);
    let mut events: Vec<_> = (0..20)
        .map(|i| exec(c.clone(), &[&env(&format!("10.0.0.{i}"))]))
        .collect();
    events.push(connect(c.clone(), "10.0.0.0", 443));
    events.push(connect(c.clone(), "10.0.0.7", 443));
    events.push(connect(c, "10.0.0.8", 443)); // the 9th address was not kept
    let findings = both_ways(events);
    assert_eq!(findings.len(), 2);
}

#[test]
fn ipv4_mapped_ipv6_and_canonical_ipv6_match() {
    let c = container(5);
    let findings = both_ways(vec![
        exec(c.clone(), &[&env("10.96.0.1")]),
        connect(c.clone(), "::ffff:10.96.0.1", 443),
        exec(c.clone(), &[&env("fd00:0:0:0:0:0:0:1")]),
        connect(c.clone(), "fd00::1", 6443),
        connect(c, "fd00::2", 6443),
    ]);
    let ips: Vec<_> = findings
        .iter()
        .map(|f| (f.data()["ip"].clone(), f.data()["port"].clone()))
        .collect();
    assert_eq!(
        ips,
        vec![
            (json!("10.96.0.1"), json!(443)),
            (json!("fd00::1"), json!(6443))
        ]
    );
}

#[test]
fn value_is_trimmed_and_prefix_must_be_exact() {
    let c = container(6);
    let findings = both_ways(vec![
        exec(c.clone(), &[&env("  10.96.0.1 ")]),
        exec(
            c.clone(),
            &[
                "KUBERNETES_SERVICE_HOSTX=192.0.2.9",
                "MY_KUBERNETES_SERVICE_HOST=192.0.2.8",
            ],
        ),
        connect(c.clone(), "10.96.0.1", 443),
        connect(c.clone(), "192.0.2.9", 443),
        connect(c, "192.0.2.8", 443),
    ]);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].data()["ip"], json!("10.96.0.1"));
}

#[test]
fn other_families_are_ignored() {
    let c = container(7);
    let findings = both_ways(vec![
        exec(c.clone(), &[&env("10.96.0.1")]),
        connect_to(c.clone(), SocketAddress::Unix),
        connect_to(c, SocketAddress::Other { af: 16 }),
    ]);
    assert!(findings.is_empty());
}

#[test]
fn containers_do_not_share_state() {
    let findings = both_ways(vec![
        exec(container(8), &[&env("10.96.0.1")]),
        connect(container(9), "10.96.0.1", 443),
    ]);
    assert!(findings.is_empty());
}

#[test]
fn one_finding_per_connect() {
    let c = container(10);
    let findings = both_ways(vec![
        exec(c.clone(), &[&env("10.96.0.1")]),
        exec(c.clone(), &[&env("10.96.0.1")]),
        connect(c.clone(), "10.96.0.1", 443),
        connect(c, "10.96.0.1", 443),
    ]);
    assert_eq!(findings.len(), 2);
}

#[test]
fn state_survives_across_batches_and_is_evicted_with_the_container() {
    let mut host = k8s_host();
    let c = container(11);
    assert!(run(&mut host, vec![exec(c.clone(), &[&env("10.96.0.1")])]).is_empty());
    assert_eq!(host.state_containers("TRC-1013"), 1);
    assert_eq!(
        run(&mut host, vec![connect(c.clone(), "10.96.0.1", 443)]).len(),
        1
    );
    host.container_removed(&container_id(11));
    assert_eq!(host.state_containers("TRC-1013"), 0);
    assert!(run(&mut host, vec![connect(c, "10.96.0.1", 443)]).is_empty());
}

#[test]
fn findings_name_the_exact_rule_bytes() {
    let mut host = k8s_host();
    let c = container(12);
    let findings = run(
        &mut host,
        vec![
            exec(c.clone(), &[&env("10.96.0.1")]),
            connect(c, "10.96.0.1", 443),
        ],
    );
    let bytes = std::fs::read(k8s_rule_file()).expect("make build leaves the rule file");
    assert_eq!(&*findings[0].rule().sha256, sha256_hex(&bytes));
    assert_eq!(&*findings[0].rule().name, "k8s_api_connection");
}
