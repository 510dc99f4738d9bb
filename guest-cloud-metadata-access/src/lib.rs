//! `cloud_metadata_access`: a process inside a container connects to the cloud instance
//! metadata service, where node credentials live (the path of many container escapes
//! to cloud accounts).
//!
//! The smallest useful rule, to show authors the pattern: it selects one event kind,
//! keeps no state, and reads nothing but the event's typed fields.

use rulehost_sdk::{
    Event, EventBody, EventKind, Findings, Metadata, Rule, RuleMetadata, Value, export_rule,
    from_std, interest, socket_ip_port,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Metadata service addresses: AWS/GCP/Azure/OpenStack (169.254.169.254), AWS over
/// IPv6 (fd00:ec2::254), Alibaba Cloud (100.100.100.200). An IPv4-mapped IPv6 address
/// (`::ffff:169.254.169.254`) reaches the IPv4 service.
const SERVICES: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
];

fn is_metadata_service(ip: IpAddr) -> bool {
    SERVICES.contains(&ip.to_canonical())
}

struct CloudMetadataAccess;

impl Rule for CloudMetadataAccess {
    fn metadata() -> RuleMetadata {
        Metadata::new(
            "RH-1001",
            "0.1.0",
            "Cloud instance metadata service contacted from a container",
            "cloud_metadata_access",
        )
        .description(
            "A process inside a container connected to the cloud instance metadata service, \
             which hands out the node's cloud credentials.",
        )
        .tags(&["container", "cloud"])
        .severity(2)
        .mitre(
            "Credential Access",
            "Unsecured Credentials: Cloud Instance Metadata API",
            "T1552.005",
        )
        .selects(&[EventKind::SocketConnect])
        .build()
    }

    /// Only connects to the services matter: the host drops the rest in the kernel.
    fn init(_config: &str) -> Result<(), String> {
        interest::only_watched_connects();
        for service in SERVICES {
            interest::watch_address(from_std(service));
        }
        Ok(())
    }

    fn on_event(index: u32, event: &Event, findings: &mut Findings) {
        let Some(container) = event.container else {
            return;
        };
        let EventBody::SocketConnect(connect) = &event.body else {
            return;
        };
        let Some((ip, port)) = socket_ip_port(&connect.address) else {
            return;
        };
        if is_metadata_service(ip) {
            findings.report(
                index,
                &[
                    ("ip", Value::Ip(from_std(ip.to_canonical()))),
                    ("port", Value::Unsigned(port.into())),
                    ("container_id", Value::ContainerId(container)),
                    ("comm", Value::Comm(index)),
                ],
            );
        }
    }
}

export_rule!(CloudMetadataAccess);
