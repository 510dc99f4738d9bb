//! The rule side of the world's `packed` interface (0.1.3): a batch's bytes into the
//! world's `Event`s, and findings into bytes, in the encoding `wit/rule.wit` documents.

use crate::{
    ContainerHandle, Event, EventBody, IpAddress, Ipv4SocketAddress, Ipv6SocketAddress, Process,
    ProcessExec, SocketAddress, SocketConnect, SocketType, Value,
};
use rulehost_wire::{EVENT_HEAD_BYTES, Malformed, Put, Reader, address, at, body, ip, value};

/// Decodes a packed batch from the host, handing each event to `each` with its index as
/// it is read, so a batch never exists as a list of events.
pub fn decode_events(bytes: &[u8], mut each: impl FnMut(u32, Event)) -> Result<(), Malformed> {
    let mut reader = Reader::new(bytes);
    let count = reader.count(EVENT_HEAD_BYTES)?;
    for index in 0..count {
        each(index as u32, decode_event(&mut reader)?);
    }
    reader.finish()
}

#[inline]
fn decode_event(reader: &mut Reader<'_>) -> Result<Event, Malformed> {
    let head: [u8; EVENT_HEAD_BYTES] = reader.array()?;
    let timestamp = at::u64(&head, 0);
    let process = Process {
        pid: at::u32(&head, 8),
        tid: at::u32(&head, 12),
        ppid: at::u32(&head, 16),
        uid: at::u32(&head, 20),
    };
    let container: Option<ContainerHandle> = (head[24] != 0).then(|| at::u64(&head, 25));
    let body = match head[EVENT_HEAD_BYTES - 1] {
        body::PROCESS_EXEC => {
            let synthetic = reader.bool()?;
            let count = reader.count(4)?;
            let mut env = Vec::with_capacity(count);
            for _ in 0..count {
                env.push(reader.str()?.to_owned());
            }
            EventBody::ProcessExec(ProcessExec { env, synthetic })
        }
        body::SOCKET_CONNECT => {
            let [socket_type_tag, family] = reader.array()?;
            EventBody::SocketConnect(SocketConnect {
                socket_type: socket_type(socket_type_tag),
                address: socket_address(family, reader)?,
            })
        }
        _ => return Err(reader.error("an unknown event body")),
    };
    Ok(Event {
        timestamp,
        process,
        container,
        body,
    })
}

fn socket_type(tag: u8) -> SocketType {
    match tag {
        0 => SocketType::Stream,
        1 => SocketType::Datagram,
        2 => SocketType::Seqpacket,
        3 => SocketType::Raw,
        _ => SocketType::Other,
    }
}

#[inline]
fn socket_address(family: u8, reader: &mut Reader<'_>) -> Result<SocketAddress, Malformed> {
    Ok(match family {
        address::IPV4 => {
            let bytes: [u8; 6] = reader.array()?;
            SocketAddress::Ipv4(Ipv4SocketAddress {
                address: (bytes[0], bytes[1], bytes[2], bytes[3]),
                port: at::u16(&bytes, 4),
            })
        }
        address::IPV6 => {
            let bytes: [u8; 26] = reader.array()?;
            let octets: [u8; 16] = std::array::from_fn(|i| bytes[i]);
            let [a, b, c, d, e, f, g, h] = std::net::Ipv6Addr::from(octets).segments();
            SocketAddress::Ipv6(Ipv6SocketAddress {
                address: (a, b, c, d, e, f, g, h),
                port: at::u16(&bytes, 16),
                flow_info: at::u32(&bytes, 18),
                scope_id: at::u32(&bytes, 22),
            })
        }
        address::UNIX => SocketAddress::Unix,
        address::OTHER => SocketAddress::Other(reader.u16()?),
        _ => return Err(reader.error("an unknown socket address family")),
    })
}

/// Appends one finding to packed findings.
#[inline]
pub(crate) fn put_finding<'a>(
    bytes: &mut Vec<u8>,
    event: u32,
    fields: impl ExactSizeIterator<Item = (&'a str, &'a Value)>,
) {
    bytes.put_u32(event);
    bytes.put_u32(fields.len() as u32);
    for (name, field) in fields {
        bytes.put_str(name);
        put_value(bytes, field);
    }
}

#[inline]
fn put_value(bytes: &mut Vec<u8>, field: &Value) {
    match field {
        Value::Text(text) => {
            bytes.put_u8(value::TEXT);
            bytes.put_str(text);
        }
        Value::Signed(n) => {
            bytes.put_u8(value::SIGNED);
            bytes.put_u64(*n as u64);
        }
        Value::Unsigned(n) => {
            bytes.put_u8(value::UNSIGNED);
            bytes.put_u64(*n);
        }
        Value::Boolean(b) => {
            bytes.put_u8(value::BOOLEAN);
            bytes.put_u8(u8::from(*b));
        }
        Value::Ip(address) => {
            bytes.put_u8(value::IP);
            match *address {
                IpAddress::Ipv4((a, b, c, d)) => {
                    bytes.put_u8(ip::IPV4);
                    bytes.extend_from_slice(&[a, b, c, d]);
                }
                IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
                    bytes.put_u8(ip::IPV6);
                    bytes.extend_from_slice(
                        &std::net::Ipv6Addr::new(a, b, c, d, e, f, g, h).octets(),
                    );
                }
            }
        }
        Value::ContainerId(handle) => {
            bytes.put_u8(value::CONTAINER_ID);
            bytes.put_u64(*handle);
        }
        Value::Comm(event) => {
            bytes.put_u8(value::COMM);
            bytes.put_u32(*event);
        }
    }
}
