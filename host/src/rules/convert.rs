//! Host events into the world's types: typed scalars, and only the env entries a rule
//! asked for.

use super::*;

/// Converts a host event for a rule: only the env entries it asked for cross over.
pub fn to_wit(event: &Event, container: Option<u64>, metadata: &Metadata) -> wit::Event {
    use crate::events::{Body, SocketAddress, SocketType};
    let body = match &event.body {
        Body::ProcessExec { env, synthetic, .. } => wit::EventBody::ProcessExec(wit::ProcessExec {
            env: env
                .iter()
                .filter(|entry| metadata.wants_env(entry))
                .cloned()
                .collect(),
            synthetic: *synthetic,
        }),
        Body::SocketConnect {
            address,
            socket_type,
        } => wit::EventBody::SocketConnect(wit::SocketConnect {
            address: match *address {
                SocketAddress::Ipv4 { ip, port } => {
                    wit::SocketAddress::Ipv4(wit::Ipv4SocketAddress {
                        address: ipv4(ip),
                        port,
                    })
                }
                SocketAddress::Ipv6 {
                    ip,
                    port,
                    flow_info,
                    scope_id,
                } => wit::SocketAddress::Ipv6(wit::Ipv6SocketAddress {
                    address: ipv6(ip),
                    port,
                    flow_info,
                    scope_id,
                }),
                SocketAddress::Unix => wit::SocketAddress::Unix,
                SocketAddress::Other { af } => wit::SocketAddress::Other(af),
            },
            socket_type: match socket_type {
                SocketType::Stream => wit::SocketType::Stream,
                SocketType::Datagram => wit::SocketType::Datagram,
                SocketType::Seqpacket => wit::SocketType::Seqpacket,
                SocketType::Raw => wit::SocketType::Raw,
                SocketType::Other => wit::SocketType::Other,
            },
        }),
    };
    wit::Event {
        timestamp: event.timestamp,
        process: wit::Process {
            pid: event.process.pid,
            tid: event.process.tid,
            ppid: event.process.ppid,
            uid: event.process.uid,
        },
        container,
        body,
    }
}

fn ipv4(ip: std::net::Ipv4Addr) -> wit::Ipv4Address {
    let [a, b, c, d] = ip.octets();
    (a, b, c, d)
}

fn ipv6(ip: std::net::Ipv6Addr) -> wit::Ipv6Address {
    let [a, b, c, d, e, f, g, h] = ip.segments();
    (a, b, c, d, e, f, g, h)
}

/// An IP address the world carries, as std's.
pub(super) fn ip_from_wit(ip: wit::IpAddress) -> std::net::IpAddr {
    match ip {
        wit::IpAddress::Ipv4((a, b, c, d)) => std::net::Ipv4Addr::new(a, b, c, d).into(),
        wit::IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
            std::net::Ipv6Addr::new(a, b, c, d, e, f, g, h).into()
        }
    }
}

/// An IP address as the world carries it.
pub(super) fn ip_to_wit(ip: std::net::IpAddr) -> wit::IpAddress {
    match ip {
        std::net::IpAddr::V4(v4) => wit::IpAddress::Ipv4(ipv4(v4)),
        std::net::IpAddr::V6(v6) => wit::IpAddress::Ipv6(ipv6(v6)),
    }
}

pub use wit::{
    Event as WitEvent, Field as WitField, Finding as WitFinding, IpAddress as WitIpAddress,
    Value as WitValue,
};
