//! The rule side of the world's `packed` interface (0.1.3): a batch's bytes into the
//! world's `Event`s, and findings into bytes, in the encoding `wit/rule.wit` documents.

use crate::{
    ContainerHandle, Event, EventBody, IpAddress, Ipv4SocketAddress, Ipv6SocketAddress, Process,
    ProcessExec, SocketAddress, SocketConnect, SocketType, Value,
};
use rulehost_wire::{EVENT_HEAD_BYTES, Malformed, Put, Reader, address, at, body, ip, value};
use std::cell::Cell;

/// Decodes a packed batch from the host, handing each event to `each` with its index as
/// it is read, so a batch never exists as a list of events.
pub fn decode_events(bytes: &[u8], mut each: impl FnMut(u32, Event)) -> Result<(), Malformed> {
    let mut reader = Reader::new(bytes);
    let count = reader.count(EVENT_HEAD_BYTES)?;
    for index in 0..count {
        each(index as u32, decode_event(&mut reader, &mut Vec::new())?);
    }
    reader.finish()
}

thread_local! {
    /// The last exec's env strings, kept from one batch to the next.
    static SPARE_ENV: Cell<Vec<String>> = const { Cell::new(Vec::new()) };
}

/// Like [`decode_events`], lending each event instead: an exec's env entries are read
/// into the previous exec's strings (across batches too), so a batch costs no
/// allocation per event.
pub fn for_each_event(bytes: &[u8], mut each: impl FnMut(u32, &Event)) -> Result<(), Malformed> {
    let mut reader = Reader::new(bytes);
    let count = reader.count(EVENT_HEAD_BYTES)?;
    let mut spare = SPARE_ENV.take();
    for index in 0..count {
        let event = decode_event(&mut reader, &mut spare)?;
        each(index as u32, &event);
        if let EventBody::ProcessExec(exec) = event.body {
            spare = exec.env;
        }
    }
    SPARE_ENV.set(spare);
    reader.finish()
}

/// Reads one event; an exec takes `spare` for its env entries, reusing its strings.
#[inline]
fn decode_event(reader: &mut Reader<'_>, spare: &mut Vec<String>) -> Result<Event, Malformed> {
    let head: &[u8; EVENT_HEAD_BYTES] = reader.array()?;
    let timestamp = at::u64(head, 0);
    let process = Process {
        pid: at::u32(head, 8),
        tid: at::u32(head, 12),
        ppid: at::u32(head, 16),
        uid: at::u32(head, 20),
    };
    let container: Option<ContainerHandle> = (head[24] != 0).then(|| at::u64(head, 25));
    let body = match head[EVENT_HEAD_BYTES - 1] {
        body::PROCESS_EXEC => {
            let synthetic = reader.bool()?;
            let count = reader.count(4)?;
            let mut env = std::mem::take(spare);
            env.truncate(count);
            for at in 0..count {
                let entry = reader.str()?;
                match env.get_mut(at) {
                    Some(reused) => {
                        reused.clear();
                        reused.push_str(entry);
                    }
                    None => env.push(entry.to_owned()),
                }
            }
            EventBody::ProcessExec(ProcessExec { env, synthetic })
        }
        body::SOCKET_CONNECT => {
            let &[socket_type_tag, family] = reader.array()?;
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
            let bytes: &[u8; 6] = reader.array()?;
            SocketAddress::Ipv4(Ipv4SocketAddress {
                address: (bytes[0], bytes[1], bytes[2], bytes[3]),
                port: at::u16(bytes, 4),
            })
        }
        address::IPV6 => {
            let bytes: &[u8; 26] = reader.array()?;
            let octets: [u8; 16] = std::array::from_fn(|i| bytes[i]);
            let [a, b, c, d, e, f, g, h] = std::net::Ipv6Addr::from(octets).segments();
            SocketAddress::Ipv6(Ipv6SocketAddress {
                address: (a, b, c, d, e, f, g, h),
                port: at::u16(bytes, 16),
                flow_info: at::u32(bytes, 18),
                scope_id: at::u32(bytes, 22),
            })
        }
        address::UNIX => SocketAddress::Unix,
        address::OTHER => SocketAddress::Other(reader.u16()?),
        _ => return Err(reader.error("an unknown socket address family")),
    })
}

/// Appends one finding to packed findings: its bytes are counted first and written into
/// space made for them at once, so no primitive checks the buffer's capacity or grows it.
#[inline]
pub(crate) fn put_finding<'a>(
    bytes: &mut Vec<u8>,
    event: u32,
    fields: impl ExactSizeIterator<Item = (&'a str, &'a Value)> + Clone,
) {
    let size = 8 + fields
        .clone()
        .map(|(name, field)| 4 + name.len() + value_size(field))
        .sum::<usize>();
    let start = bytes.len();
    bytes.resize(start + size, 0);
    let mut out = Slots {
        out: &mut bytes[start..],
        at: 0,
    };
    out.put_u32(event);
    out.put_u32(fields.len() as u32);
    for (name, field) in fields {
        out.put_str(name);
        put_value(&mut out, field);
    }
}

/// Space made for one finding, filled front to back.
struct Slots<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Put for Slots<'_> {
    #[inline]
    fn put_bytes(&mut self, bytes: &[u8]) {
        self.out[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
}

/// Bytes [`put_value`] writes for `field`.
#[inline]
fn value_size(field: &Value) -> usize {
    1 + match field {
        Value::Text(text) => 4 + text.len(),
        Value::Signed(_) | Value::Unsigned(_) | Value::ContainerId(_) => 8,
        Value::Boolean(_) => 1,
        Value::Ip(IpAddress::Ipv4(_)) => 5,
        Value::Ip(IpAddress::Ipv6(_)) => 17,
        Value::Comm(_) => 4,
    }
}

#[inline]
fn put_value(out: &mut impl Put, field: &Value) {
    match field {
        Value::Text(text) => {
            out.put_u8(value::TEXT);
            out.put_str(text);
        }
        Value::Signed(n) => {
            out.put_u8(value::SIGNED);
            out.put_u64(*n as u64);
        }
        Value::Unsigned(n) => {
            out.put_u8(value::UNSIGNED);
            out.put_u64(*n);
        }
        Value::Boolean(b) => out.put_bytes(&[value::BOOLEAN, u8::from(*b)]),
        Value::Ip(IpAddress::Ipv4((a, b, c, d))) => {
            out.put_bytes(&[value::IP, ip::IPV4, *a, *b, *c, *d])
        }
        Value::Ip(IpAddress::Ipv6((a, b, c, d, e, f, g, h))) => {
            out.put_bytes(&[value::IP, ip::IPV6]);
            out.put_bytes(&std::net::Ipv6Addr::new(*a, *b, *c, *d, *e, *f, *g, *h).octets());
        }
        Value::ContainerId(handle) => {
            out.put_u8(value::CONTAINER_ID);
            out.put_u64(*handle);
        }
        Value::Comm(event) => {
            out.put_u8(value::COMM);
            out.put_u32(*event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends an exec with `env` to a packed batch.
    fn exec(bytes: &mut Vec<u8>, env: &[&str]) {
        let mut head = [0u8; EVENT_HEAD_BYTES];
        head[EVENT_HEAD_BYTES - 1] = body::PROCESS_EXEC;
        bytes.extend_from_slice(&head);
        bytes.put_u8(0);
        bytes.put_u32(env.len() as u32);
        env.iter().for_each(|entry| bytes.put_str(entry));
    }

    /// A batch of execs with 3, 1, 0 and 2 env entries, a connect between them.
    fn batch() -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.put_u32(5);
        exec(&mut bytes, &["A=first-and-long", "B=2", "C=3"]);
        exec(&mut bytes, &["D=4"]);
        let mut head = [0u8; EVENT_HEAD_BYTES];
        head[EVENT_HEAD_BYTES - 1] = body::SOCKET_CONNECT;
        bytes.extend_from_slice(&head);
        bytes.extend_from_slice(&[0, address::IPV4, 10, 96, 0, 1, 0xbb, 0x01]);
        exec(&mut bytes, &[]);
        exec(&mut bytes, &["E=5", "F=6"]);
        bytes
    }

    #[test]
    fn lent_events_equal_owned_ones() {
        let bytes = batch();
        let mut owned = Vec::new();
        decode_events(&bytes, |index, event| owned.push((index, event))).unwrap();
        let mut lent = Vec::new();
        for_each_event(&bytes, |index, event| lent.push((index, event.clone()))).unwrap();
        assert_eq!(owned.len(), 5);
        assert_eq!(format!("{lent:?}"), format!("{owned:?}"));
        let EventBody::ProcessExec(last) = &lent[4].1.body else {
            panic!("event 4 is not an exec: {:?}", lent[4].1.body);
        };
        assert_eq!(last.env, ["E=5", "F=6"]);
    }

    #[test]
    fn env_strings_kept_from_the_last_batch_never_show_in_the_next() {
        for_each_event(&batch(), |_, _| ()).unwrap();
        let mut next = Vec::new();
        next.put_u32(1);
        exec(&mut next, &["Z=9"]);
        let mut envs = Vec::new();
        for_each_event(&next, |_, event| {
            if let EventBody::ProcessExec(exec) = &event.body {
                envs.push(exec.env.clone());
            }
        })
        .unwrap();
        assert_eq!(envs, [["Z=9"]]);
    }

    #[test]
    fn value_sizes_are_what_is_written() {
        let values = [
            Value::Text("héllo".into()),
            Value::Signed(-1),
            Value::Unsigned(2),
            Value::Boolean(true),
            Value::Ip(IpAddress::Ipv4((10, 96, 0, 1))),
            Value::Ip(IpAddress::Ipv6((1, 2, 3, 4, 5, 6, 7, 8))),
            Value::ContainerId(3),
            Value::Comm(4),
        ];
        for value in &values {
            let mut bytes = vec![0; value_size(value)];
            let mut out = Slots {
                out: &mut bytes,
                at: 0,
            };
            put_value(&mut out, value);
            assert_eq!(out.at, value_size(value), "{value:?}");
        }
    }

    #[test]
    fn a_cut_batch_is_malformed() {
        let bytes = batch();
        let cut = &bytes[..bytes.len() - 2];
        assert!(for_each_event(cut, |_, _| ()).is_err());
    }
}
