//! The packed batch encoding (world 0.1.3) end to end, natively: the host packs events,
//! the rule SDK decodes them and hands them to a rule, the rule's findings go back
//! through the SDK's encoder and the host's decoder. Every event body, address family
//! and value kind crosses, and what arrives is what the typed path would have carried.

use rulehost::events::{Body, Event, SocketAddress, SocketType};
use rulehost::rules::{
    FieldNames, Metadata as HostMetadata, PackedBatch, RuleFinding, WitIpAddress, WitValue,
    decode_findings,
};
use rulehost_sdk::{
    EventBody, EventKind, Finding, Findings, Metadata, Rule, RuleMetadata, SocketAddress as Sa,
    Value, field, on_packed_events,
};
use rulehost_tests::*;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Reports, for every event, what it received: each number, the container handle, the
/// env entries and the destination, as finding values.
struct Echo;

impl Rule for Echo {
    fn metadata() -> RuleMetadata {
        Metadata::new("ECHO", "0.1.0", "Echo", "echo")
            .selects(&[EventKind::ProcessExec, EventKind::SocketConnect])
            .build()
    }

    fn on_event(index: u32, event: &rulehost_sdk::Event, findings: &mut Findings) {
        let p = &event.process;
        let mut fields = vec![
            ("timestamp", Value::Unsigned(event.timestamp)),
            ("pid", Value::Unsigned(p.pid.into())),
            ("tid", Value::Unsigned(p.tid.into())),
            ("ppid", Value::Unsigned(p.ppid.into())),
            ("uid", Value::Unsigned(p.uid.into())),
            ("comm", Value::Comm(index)),
        ];
        fields.push(match event.container {
            Some(handle) => ("container", Value::ContainerId(handle)),
            None => ("host", Value::Boolean(true)),
        });
        match &event.body {
            EventBody::ProcessExec(exec) => {
                fields.push(("env", Value::Text(exec.env.join("\n"))));
                fields.push(("synthetic", Value::Boolean(exec.synthetic)));
            }
            EventBody::SocketConnect(connect) => {
                fields.push(("type", Value::Signed(connect.socket_type as i64)));
                match connect.address {
                    Sa::Ipv4(a) => {
                        fields.push(("ip", Value::Ip(rulehost_sdk::IpAddress::Ipv4(a.address))));
                        fields.push(("port", Value::Unsigned(a.port.into())));
                    }
                    Sa::Ipv6(a) => {
                        fields.push(("ip", Value::Ip(rulehost_sdk::IpAddress::Ipv6(a.address))));
                        fields.push(("port", Value::Unsigned(a.port.into())));
                        fields.push(("flow", Value::Unsigned(a.flow_info.into())));
                        fields.push(("scope", Value::Unsigned(a.scope_id.into())));
                    }
                    Sa::Unix => fields.push(("unix", Value::Boolean(true))),
                    Sa::Other(af) => fields.push(("af", Value::Signed(af.into()))),
                }
            }
        }
        findings.report(index, &fields);
        // The record path too, with a text that needs more than ASCII.
        findings.push(Finding {
            event: index,
            data: vec![field("record", Value::Text("κόσμε \"quoted\"".into()))],
        });
    }
}

fn value<'a>(finding: &'a RuleFinding, name: &str) -> Option<&'a WitValue> {
    finding.get(name)
}

fn unsigned(finding: &RuleFinding, name: &str) -> u64 {
    match value(finding, name) {
        Some(WitValue::Unsigned(n)) => *n,
        other => panic!("{name}: {other:?}"),
    }
}

fn events() -> Vec<Event> {
    let mut synthetic = exec(
        container(3),
        &["PATH=/bin", "KUBERNETES_SERVICE_HOST=10.96.0.1", "HOME=/"],
    );
    if let Body::ProcessExec { synthetic: s, .. } = &mut synthetic.body {
        *s = true;
    }
    synthetic.timestamp = u64::MAX;
    synthetic.process.uid = 1000;
    let mut ipv6 = connect_to(
        None,
        SocketAddress::Ipv6 {
            ip: Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0xbeef, 1),
            port: 6443,
            flow_info: 7,
            scope_id: 3,
        },
    );
    ipv6.process.ppid = 0;
    if let Body::SocketConnect { socket_type, .. } = &mut ipv6.body {
        *socket_type = SocketType::Datagram;
    }
    vec![
        synthetic,
        exec(None, &[]),
        connect_to(
            container(4),
            SocketAddress::Ipv4 {
                ip: Ipv4Addr::new(10, 96, 0, 1),
                port: 443,
            },
        ),
        ipv6,
        connect_to(container(4), SocketAddress::Unix),
        connect_to(container(5), SocketAddress::Other { af: 16 }),
    ]
}

#[test]
fn every_kind_of_event_and_value_crosses_both_ways() {
    let metadata = HostMetadata {
        env_vars: vec!["KUBERNETES_SERVICE_HOST".into()],
        ..HostMetadata::default()
    };
    let events = events();
    let mut batch = PackedBatch::default();
    for (index, event) in events.iter().enumerate() {
        let handle = event.container.as_ref().map(|_| 100 + index as u64);
        batch.push(event, handle, &metadata);
    }
    assert_eq!(batch.len(), events.len());
    let mut names = FieldNames::default();
    let returned = on_packed_events::<Echo>(batch.bytes());
    let findings = decode_findings(&returned, &mut names).expect("decodes");
    assert_eq!(findings.len(), 2 * events.len(), "{findings:?}");

    for (index, event) in events.iter().enumerate() {
        let echo = &findings[2 * index];
        assert_eq!(echo.event, index as u32);
        assert_eq!(unsigned(echo, "timestamp"), event.timestamp);
        assert_eq!(unsigned(echo, "pid"), u64::from(event.process.pid));
        assert_eq!(unsigned(echo, "tid"), u64::from(event.process.tid));
        assert_eq!(unsigned(echo, "ppid"), u64::from(event.process.ppid));
        assert_eq!(unsigned(echo, "uid"), u64::from(event.process.uid));
        assert!(matches!(value(echo, "comm"), Some(WitValue::Comm(i)) if *i == index as u32));
        match &event.container {
            Some(_) => assert!(
                matches!(value(echo, "container"), Some(WitValue::ContainerId(h)) if *h == 100 + index as u64),
                "{echo:?}"
            ),
            None => assert!(matches!(value(echo, "host"), Some(WitValue::Boolean(true)))),
        }
        match &event.body {
            Body::ProcessExec { synthetic, .. } => {
                let env = if index == 0 {
                    "KUBERNETES_SERVICE_HOST=10.96.0.1"
                } else {
                    ""
                };
                assert!(
                    matches!(value(echo, "env"), Some(WitValue::Text(t)) if t == env),
                    "{echo:?}"
                );
                assert!(
                    matches!(value(echo, "synthetic"), Some(WitValue::Boolean(s)) if s == synthetic)
                );
            }
            Body::SocketConnect { address, .. } => match address {
                SocketAddress::Ipv4 { port, .. } => {
                    assert!(matches!(
                        value(echo, "ip"),
                        Some(WitValue::Ip(WitIpAddress::Ipv4((10, 96, 0, 1))))
                    ));
                    assert_eq!(unsigned(echo, "port"), u64::from(*port));
                }
                SocketAddress::Ipv6 { .. } => {
                    assert!(matches!(
                        value(echo, "ip"),
                        Some(WitValue::Ip(WitIpAddress::Ipv6((
                            0xfd00, 0, 0, 0, 0, 0, 0xbeef, 1
                        ))))
                    ));
                    assert_eq!(unsigned(echo, "port"), 6443);
                    assert_eq!(unsigned(echo, "flow"), 7);
                    assert_eq!(unsigned(echo, "scope"), 3);
                    assert!(matches!(value(echo, "type"), Some(WitValue::Signed(1))));
                }
                SocketAddress::Unix => {
                    assert!(matches!(value(echo, "unix"), Some(WitValue::Boolean(true))))
                }
                SocketAddress::Other { af } => assert!(
                    matches!(value(echo, "af"), Some(WitValue::Signed(n)) if *n == i64::from(*af))
                ),
            },
        }
        // Every finding shares one copy of each name.
        assert!(std::sync::Arc::ptr_eq(
            &echo.shape.names[0],
            &findings[0].shape.names[0]
        ));
        let record = &findings[2 * index + 1];
        assert!(
            matches!(value(record, "record"), Some(WitValue::Text(t)) if t == "κόσμε \"quoted\""),
            "{record:?}"
        );
    }
}

#[test]
fn findings_that_are_not_the_encoding_are_refused_with_their_offset() {
    // Real findings bytes, then cut, then with a bad value tag, then trailing bytes.
    let metadata = HostMetadata::default();
    let mut batch = PackedBatch::default();
    batch.push(&connect(container(1), "10.0.0.1", 80), Some(1), &metadata);
    let good = on_packed_events::<Echo>(batch.bytes());
    let names = &mut FieldNames::default();
    assert!(decode_findings(&good, names).is_ok());
    for cut in [0, 3, 4, good.len() / 2, good.len() - 1] {
        let error = decode_findings(&good[..cut], names).unwrap_err();
        assert!(error.at <= cut, "cut at {cut}: {error}");
    }
    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        decode_findings(&trailing, names).unwrap_err().what,
        "bytes after the end"
    );
    // The first field's value tag: after the count, event, field count, name.
    let tag_at = 4 + 4 + 4 + 4 + "timestamp".len();
    let mut bad_tag = good;
    bad_tag[tag_at] = 99;
    let error = decode_findings(&bad_tag, names).unwrap_err();
    assert_eq!(
        (error.at, error.what),
        (tag_at + 1, "an unknown value kind")
    );
}
