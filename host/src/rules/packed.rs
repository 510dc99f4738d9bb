//! The host side of the world's `packed` interface (0.1.3): events into one byte string
//! per batch, and a rule's findings back out of one, in the encoding `wit/rule.wit`
//! documents. A rule's bytes are untrusted: decoding checks every length and tag.

use super::*;
use crate::events::{Body, SocketAddress, SocketType};
use rulehost_wire::{Malformed, Put, Reader, address, body, ip, value};

/// A batch packed for a rule that exports `packed`; the buffer is reused across batches.
pub struct PackedBatch {
    bytes: Vec<u8>,
    count: u32,
}

impl Default for PackedBatch {
    fn default() -> PackedBatch {
        PackedBatch {
            bytes: 0u32.to_le_bytes().to_vec(),
            count: 0,
        }
    }
}

impl PackedBatch {
    /// Empties the batch, keeping its buffer.
    pub fn clear(&mut self) {
        self.bytes.truncate(4);
        self.count = 0;
        self.bytes[..4].copy_from_slice(&0u32.to_le_bytes());
    }

    /// Events in the batch.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded batch, as the rule receives it.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Appends an event for a rule: only the env entries it asked for cross over.
    pub fn push(&mut self, event: &Event, container: Option<u64>, metadata: &Metadata) {
        let bytes = &mut self.bytes;
        bytes.put_u64(event.timestamp);
        bytes.put_u32(event.process.pid);
        bytes.put_u32(event.process.tid);
        bytes.put_u32(event.process.ppid);
        bytes.put_u32(event.process.uid);
        bytes.put_u8(u8::from(container.is_some()));
        bytes.put_u64(container.unwrap_or(0));
        match &event.body {
            Body::ProcessExec { env, synthetic, .. } => {
                bytes.put_u8(body::PROCESS_EXEC);
                bytes.put_u8(u8::from(*synthetic));
                let count_at = bytes.len();
                bytes.put_u32(0);
                let mut count = 0u32;
                for entry in env.iter().filter(|entry| metadata.wants_env(entry)) {
                    bytes.put_str(entry);
                    count += 1;
                }
                bytes[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
            }
            Body::SocketConnect {
                address,
                socket_type,
            } => {
                bytes.put_u8(body::SOCKET_CONNECT);
                bytes.put_u8(socket_type_tag(*socket_type));
                put_address(bytes, address);
            }
        }
        self.count += 1;
        self.bytes[..4].copy_from_slice(&self.count.to_le_bytes());
    }
}

fn socket_type_tag(socket_type: SocketType) -> u8 {
    match socket_type {
        SocketType::Stream => 0,
        SocketType::Datagram => 1,
        SocketType::Seqpacket => 2,
        SocketType::Raw => 3,
        SocketType::Other => 4,
    }
}

fn put_address(bytes: &mut Vec<u8>, socket: &SocketAddress) {
    match *socket {
        SocketAddress::Ipv4 { ip, port } => {
            bytes.put_u8(address::IPV4);
            bytes.extend_from_slice(&ip.octets());
            bytes.put_u16(port);
        }
        SocketAddress::Ipv6 {
            ip,
            port,
            flow_info,
            scope_id,
        } => {
            bytes.put_u8(address::IPV6);
            bytes.extend_from_slice(&ip.octets());
            bytes.put_u16(port);
            bytes.put_u32(flow_info);
            bytes.put_u32(scope_id);
        }
        SocketAddress::Unix => bytes.put_u8(address::UNIX),
        SocketAddress::Other { af } => {
            bytes.put_u8(address::OTHER);
            bytes.put_u16(af);
        }
    }
}

/// A finding as the host takes it from a rule, whichever way it crossed.
#[derive(Debug, Clone)]
pub struct RuleFinding {
    /// The event it is about, by its index in the delivered batch.
    pub event: u32,
    /// Its named values; the names are the rule's, interned ([`FieldNames`]).
    pub data: Vec<(Arc<str>, wit::Value)>,
}

impl RuleFinding {
    /// A finding that crossed as the world's record.
    pub fn from_record(finding: wit::Finding, names: &mut FieldNames) -> RuleFinding {
        RuleFinding {
            event: finding.event,
            data: finding
                .data
                .into_iter()
                .enumerate()
                .map(|(at, field)| (names.get(at, &field.name), field.value))
                .collect(),
        }
    }
}

/// Most distinct names a rule's findings keep shared; names past it are allocated
/// each time, so a rule inventing names cannot grow this.
const MAX_NAMES: usize = 64;

/// A rule's field names, allocated once and shared by every finding that uses them:
/// a rule repeats the same few names in every finding.
#[derive(Debug, Default)]
pub struct FieldNames(Vec<Arc<str>>);

impl FieldNames {
    /// The shared copy of `name`, looked for first at `hint`: a rule's findings
    /// usually repeat one shape, so the `n`-th field's name was seen `n`-th.
    pub fn get(&mut self, hint: usize, name: &str) -> Arc<str> {
        if let Some(known) = self.0.get(hint).filter(|known| ***known == *name) {
            return known.clone();
        }
        if let Some(known) = self.0.iter().find(|known| ***known == *name) {
            return known.clone();
        }
        let name: Arc<str> = name.into();
        if self.0.len() < MAX_NAMES {
            self.0.push(name.clone());
        }
        name
    }
}

/// Bytes a finding takes at least: its event index and field count.
const MIN_FINDING_BYTES: usize = 8;
/// Bytes a field takes at least: an empty name and a boolean.
const MIN_FIELD_BYTES: usize = 4 + 2;

/// Decodes the findings a rule returned for a packed batch, its field names shared
/// through `names`.
pub fn decode_findings(
    bytes: &[u8],
    names: &mut FieldNames,
) -> Result<Vec<RuleFinding>, Malformed> {
    let mut reader = Reader::new(bytes);
    let count = reader.count(MIN_FINDING_BYTES)?;
    let mut findings = Vec::with_capacity(count);
    for _ in 0..count {
        let event = reader.u32()?;
        let fields = reader.count(MIN_FIELD_BYTES)?;
        let mut data = Vec::with_capacity(fields);
        for at in 0..fields {
            let name = names.get(at, reader.str()?);
            data.push((name, decode_value(&mut reader)?));
        }
        findings.push(RuleFinding { event, data });
    }
    reader.finish()?;
    Ok(findings)
}

fn decode_value(reader: &mut Reader<'_>) -> Result<wit::Value, Malformed> {
    Ok(match reader.u8()? {
        value::TEXT => wit::Value::Text(reader.str()?.to_owned()),
        value::SIGNED => wit::Value::Signed(reader.u64()? as i64),
        value::UNSIGNED => wit::Value::Unsigned(reader.u64()?),
        value::BOOLEAN => wit::Value::Boolean(reader.bool()?),
        value::IP => wit::Value::Ip(ip_to_wit(match reader.u8()? {
            ip::IPV4 => std::net::Ipv4Addr::from(reader.array::<4>()?).into(),
            ip::IPV6 => std::net::Ipv6Addr::from(reader.array::<16>()?).into(),
            _ => return Err(reader.error("an unknown IP address family")),
        })),
        value::CONTAINER_ID => wit::Value::ContainerId(reader.u64()?),
        value::COMM => wit::Value::Comm(reader.u32()?),
        _ => return Err(reader.error("an unknown value kind")),
    })
}
