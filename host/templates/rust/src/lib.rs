//! {{NAME}}: a container connects to the cloud metadata service.

use rulehost_sdk::*;

struct {{TYPE}};

impl Rule for {{TYPE}} {
    fn metadata() -> RuleMetadata {
        Metadata::new("{{ID}}", "0.1.0", "Cloud metadata service contacted", "{{EVENT}}")
            .severity(2)
            .selects(&[EventKind::SocketConnect])
            .build()
    }

    fn on_event(index: u32, event: &Event, findings: &mut Findings) {
        let EventBody::SocketConnect(connect) = &event.body else {
            return;
        };
        if let Some((ip, port)) = socket_ip_port(&connect.address)
            && ip.to_canonical() == std::net::Ipv4Addr::new(169, 254, 169, 254)
        {
            findings.report(
                index,
                &[
                    ("ip", Value::Ip(from_std(ip))),
                    ("port", Value::Unsigned(port.into())),
                    ("comm", Value::Comm(index)),
                ],
            );
        }
    }
}

export_rule!({{TYPE}});
