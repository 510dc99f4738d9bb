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
                    let [a, b, c, d] = ip.octets();
                    wit::SocketAddress::Ipv4(wit::Ipv4SocketAddress {
                        address: (a, b, c, d),
                        port,
                    })
                }
                SocketAddress::Ipv6 {
                    ip,
                    port,
                    flow_info,
                    scope_id,
                } => {
                    let [a, b, c, d, e, f, g, h] = ip.segments();
                    wit::SocketAddress::Ipv6(wit::Ipv6SocketAddress {
                        address: (a, b, c, d, e, f, g, h),
                        port,
                        flow_info,
                        scope_id,
                    })
                }
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

pub use wit::{
    Event as WitEvent, Field as WitField, Finding as WitFinding, IpAddress as WitIpAddress,
    Value as WitValue,
};
