//! The host side of the world's `packed` interface (0.1.3): events into one byte string
//! per batch, and a rule's findings back out of one, in the encoding `wit/rule.wit`
//! documents. A rule's bytes are untrusted: decoding checks every length and tag.

use super::*;
use crate::events::{Body, SocketAddress, SocketType};
use rulehost_wire::{EVENT_HEAD_BYTES, Malformed, Put, Reader, Text, address, body, ip, value};

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
        let tag = match &event.body {
            Body::ProcessExec { .. } => body::PROCESS_EXEC,
            Body::SocketConnect { .. } => body::SOCKET_CONNECT,
        };
        bytes.extend_from_slice(&head(event, container, tag));
        match &event.body {
            Body::ProcessExec { env, synthetic, .. } => {
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
                bytes.put_u8(socket_type_tag(*socket_type));
                put_address(bytes, address);
            }
        }
        self.count += 1;
        self.bytes[..4].copy_from_slice(&self.count.to_le_bytes());
    }
}

/// An event's fixed-size head, built whole so the buffer grows once for it.
fn head(event: &Event, container: Option<u64>, body_tag: u8) -> [u8; EVENT_HEAD_BYTES] {
    let mut head = [0u8; EVENT_HEAD_BYTES];
    let process = &event.process;
    head[0..8].copy_from_slice(&event.timestamp.to_le_bytes());
    head[8..12].copy_from_slice(&process.pid.to_le_bytes());
    head[12..16].copy_from_slice(&process.tid.to_le_bytes());
    head[16..20].copy_from_slice(&process.ppid.to_le_bytes());
    head[20..24].copy_from_slice(&process.uid.to_le_bytes());
    head[24] = u8::from(container.is_some());
    head[25..33].copy_from_slice(&container.unwrap_or(0).to_le_bytes());
    head[EVENT_HEAD_BYTES - 1] = body_tag;
    head
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

/// A finding's shape, shared by every finding of the same rule instance and field names:
/// a rule repeats one or a few, so a finding costs one reference count for what produced
/// it and what its fields are called.
pub type FieldShape = Arc<FindingShape>;

/// What a [`FieldShape`] holds.
#[derive(Debug, Default)]
pub struct FindingShape {
    /// The rule that produced the finding.
    pub source: Arc<FindingSource>,
    /// Its field names, in order.
    pub names: Box<[Arc<str>]>,
}

/// A finding as the host takes it from a rule, whichever way it crossed.
#[derive(Debug, Clone)]
pub struct RuleFinding {
    /// The event it is about, by its index in the delivered batch.
    pub event: u32,
    /// The rule behind it and its field names ([`FieldNames`]).
    pub shape: FieldShape,
    /// Its values, in the order of its names.
    pub values: Vec<wit::Value>,
}

impl RuleFinding {
    /// A finding that crossed as the world's record.
    pub fn from_record(finding: wit::Finding, names: &mut FieldNames) -> RuleFinding {
        let shape = names.shape(finding.data.iter().map(|field| field.name.as_str()));
        RuleFinding {
            event: finding.event,
            shape,
            values: finding.data.into_iter().map(|field| field.value).collect(),
        }
    }

    /// The value of the field called `name`, if the finding has one.
    pub fn get(&self, name: &str) -> Option<&wit::Value> {
        let at = self.shape.names.iter().position(|known| **known == *name)?;
        self.values.get(at)
    }
}

/// Most distinct names and shapes a rule's findings keep shared; past them, names and
/// shapes are allocated each time, so a rule inventing names cannot grow this.
const MAX_NAMES: usize = 64;
const MAX_SHAPES: usize = 16;

/// A rule instance's field names and finding shapes, allocated once and shared by every
/// finding that uses them.
#[derive(Debug, Default)]
pub struct FieldNames {
    /// What the instance's findings say produced them.
    source: Arc<FindingSource>,
    names: Vec<Arc<str>>,
    shapes: Vec<FieldShape>,
    /// The shape found last: the one the next finding most likely has.
    last: usize,
}

impl FieldNames {
    /// Names for the findings of an instance of the rule `source` describes.
    pub fn new(source: Arc<FindingSource>) -> FieldNames {
        FieldNames {
            source,
            ..FieldNames::default()
        }
    }

    /// The shared shape of a finding whose fields are called `names`, in order.
    pub fn shape<'a>(
        &mut self,
        names: impl ExactSizeIterator<Item = &'a str> + Clone,
    ) -> FieldShape {
        let same = |shape: &FieldShape| {
            shape.names.len() == names.len()
                && shape
                    .names
                    .iter()
                    .zip(names.clone())
                    .all(|(a, b)| **a == *b)
        };
        if let Some(shape) = self.shapes.get(self.last).filter(|shape| same(shape)) {
            return shape.clone();
        }
        if let Some(at) = self.shapes.iter().position(same) {
            self.last = at;
            return self.shapes[at].clone();
        }
        let shape = Arc::new(FindingShape {
            source: self.source.clone(),
            names: names.map(|name| self.name(name)).collect(),
        });
        if self.shapes.len() < MAX_SHAPES {
            self.last = self.shapes.len();
            self.shapes.push(shape.clone());
        }
        shape
    }

    /// The shared shape of a finding whose field names were read as `names`, not
    /// checked yet: names equal to the last shape's are valid by that equality, so the
    /// usual finding costs no UTF-8 check; other names are checked, then shared.
    pub fn shape_of_read(&mut self, names: &[Text<'_>]) -> Result<FieldShape, Malformed> {
        if let Some(shape) = self.shapes.get(self.last)
            && shape.names.len() == names.len()
            && shape
                .names
                .iter()
                .zip(names)
                .all(|(a, b)| a.as_bytes() == b.bytes)
        {
            return Ok(shape.clone());
        }
        let mut checked = Vec::with_capacity(names.len());
        for name in names {
            checked.push(name.to_str()?);
        }
        Ok(self.shape(checked.iter().copied()))
    }

    /// The shared copy of `name`.
    fn name(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.names.iter().find(|known| ***known == *name) {
            return known.clone();
        }
        let name: Arc<str> = name.into();
        if self.names.len() < MAX_NAMES {
            self.names.push(name.clone());
        }
        name
    }
}

/// Bytes a finding takes at least: its event index and field count.
const MIN_FINDING_BYTES: usize = 8;
/// Bytes a field takes at least: an empty name and a boolean.
const MIN_FIELD_BYTES: usize = 4 + 2;

/// Decodes the findings a rule returned for a packed batch, their shapes shared through
/// `names`.
pub fn decode_findings(
    bytes: &[u8],
    names: &mut FieldNames,
) -> Result<Vec<RuleFinding>, Malformed> {
    let mut reader = Reader::new(bytes);
    let count = reader.count(MIN_FINDING_BYTES)?;
    let mut findings = Vec::with_capacity(count);
    // The names of the finding being read, borrowed from `bytes`; reused per finding.
    let mut fields_names: Vec<Text<'_>> = Vec::new();
    for _ in 0..count {
        let event = reader.u32()?;
        let fields = reader.count(MIN_FIELD_BYTES)?;
        fields_names.clear();
        let mut values = Vec::with_capacity(fields);
        for _ in 0..fields {
            fields_names.push(reader.text()?);
            values.push(decode_value(&mut reader)?);
        }
        findings.push(RuleFinding {
            event,
            shape: names.shape_of_read(&fields_names)?,
            values,
        });
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
            ip::IPV4 => std::net::Ipv4Addr::from(*reader.array::<4>()?).into(),
            ip::IPV6 => std::net::Ipv6Addr::from(*reader.array::<16>()?).into(),
            _ => return Err(reader.error("an unknown IP address family")),
        })),
        value::CONTAINER_ID => wit::Value::ContainerId(reader.u64()?),
        value::COMM => wit::Value::Comm(reader.u32()?),
        _ => return Err(reader.error("an unknown value kind")),
    })
}
