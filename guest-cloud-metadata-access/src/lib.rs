//! `cloud_metadata_access`: a process inside a container connects to the cloud instance
//! metadata service, where node credentials live (the path of many container escapes
//! to cloud accounts).
//!
//! The smallest useful rule, to show authors the pattern: it selects one event kind,
//! keeps no state, and reads nothing but the event's typed fields.

wit_bindgen::generate!({
    world: "rule",
    path: "../wit",
});

use exports::rulehost::rule::detector::Guest;
use rulehost::rule::types::{
    Event, EventBody, EventKind, Field, Finding, IpAddress, Mitre, Origin, RuleMetadata,
    SocketAddress, Value,
};

/// Metadata service addresses: AWS/GCP/Azure/OpenStack (169.254.169.254), AWS over
/// IPv6 (fd00:ec2::254), Alibaba Cloud (100.100.100.200).
fn is_metadata_service(address: &IpAddress) -> bool {
    match *address {
        IpAddress::Ipv4(ip) => ip == (169, 254, 169, 254) || ip == (100, 100, 100, 200),
        IpAddress::Ipv6((0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)) => true,
        // IPv4-mapped IPv6 (::ffff:a.b.c.d) reaches the IPv4 service.
        IpAddress::Ipv6((0, 0, 0, 0, 0, 0xffff, high, low)) => is_metadata_service(
            &IpAddress::Ipv4(((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8)),
        ),
        IpAddress::Ipv6(_) => false,
    }
}

struct CloudMetadataAccess;

impl Guest for CloudMetadataAccess {
    fn metadata() -> RuleMetadata {
        RuleMetadata {
            id: "RH-1001".into(),
            version: "0.1.0".into(),
            name: "Cloud instance metadata service contacted from a container".into(),
            event_name: "cloud_metadata_access".into(),
            description: "A process inside a container connected to the cloud instance \
                          metadata service, which hands out the node's cloud credentials."
                .into(),
            tags: vec!["container".into(), "cloud".into()],
            severity: 2,
            mitre: Some(Mitre {
                tactic: "Credential Access".into(),
                technique: "Unsecured Credentials: Cloud Instance Metadata API".into(),
                technique_id: "T1552.005".into(),
            }),
            selects: vec![EventKind::SocketConnect],
            origin: Origin::Container,
            env_vars: vec![],
        }
    }

    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn on_event(event: Event) -> Vec<Finding> {
        finding(0, &event).into_iter().collect()
    }

    fn on_events(events: Vec<Event>) -> Vec<Finding> {
        let found = events.iter().enumerate();
        found
            .filter_map(|(index, event)| finding(index as u32, event))
            .collect()
    }
}

fn finding(index: u32, event: &Event) -> Option<Finding> {
    let container = event.container?;
    let EventBody::SocketConnect(connect) = &event.body else {
        return None;
    };
    let (address, port) = match connect.address {
        SocketAddress::Ipv4(a) => (IpAddress::Ipv4(a.address), a.port),
        SocketAddress::Ipv6(a) => (IpAddress::Ipv6(a.address), a.port),
        _ => return None,
    };
    if !is_metadata_service(&address) {
        return None;
    }
    let field = |name: &str, value| Field {
        name: name.into(),
        value,
    };
    Some(Finding {
        event: index,
        data: vec![
            field("ip", Value::Ip(address)),
            field("port", Value::Unsigned(port.into())),
            field("container_id", Value::ContainerId(container)),
            field("comm", Value::Comm(index)),
        ],
    })
}

export!(CloudMetadataAccess);
