//! A rule's findings into output records, every byte counted against the bounds.

use super::*;
use crate::rules::FieldShape;

/// The host side of a batch a rule was given.
pub(super) struct Delivered<'a> {
    pub events: &'a [Event],
    /// The events' container handles, by event.
    pub handles: &'a [Option<u64>],
    /// Which events the rule was given, by their index in `events`.
    pub selected: &'a [u32],
}

/// Turns a rule's findings into output records, enforcing the output bounds.
/// Returns (delivered, dropped).
pub(super) fn collect(
    slot: &Slot,
    runtime: &RuleEngine,
    containers: &Containers,
    Delivered {
        events,
        handles,
        selected,
    }: Delivered<'_>,
    findings: Vec<RuleFinding>,
    out: &mut Vec<Finding>,
) -> (u64, u64) {
    let limits = runtime.limits();
    let containers = containers.read().expect("container lock");
    let (mut delivered, mut dropped) = (0, 0);
    let mut per_event: Vec<u32> = vec![0; selected.len()];
    let mut names_size = NamesSize::default();
    for finding in findings {
        let index = finding.event as usize;
        let Some(&host_index) = selected.get(index) else {
            dropped += 1;
            continue;
        };
        per_event[index] += 1;
        if per_event[index] as usize > limits.max_findings_per_event {
            dropped += 1;
            continue;
        }
        if names_size.of(&finding.shape) + values_size(&finding.values) > limits.max_finding_bytes {
            dropped += 1;
            continue;
        }
        let event = &events[host_index as usize];
        let event_handle = handles.get(host_index as usize).copied().flatten();
        let data = to_data(finding, event, event_handle, &containers);
        out.push(Finding {
            node: None,
            data,
            timestamp: event.timestamp,
            event: EventRecord {
                name: event.kind().name(),
                event: event.clone(),
            },
        });
        delivered += 1;
    }
    if dropped > 0 {
        tracing::warn!(
            rule = %slot.rule.name,
            id = %slot.rule.metadata.id,
            dropped,
            max_per_event = limits.max_findings_per_event,
            max_bytes = limits.max_finding_bytes,
            "dropped findings over the output bounds"
        );
    }
    (delivered, dropped)
}

/// Bytes a field costs however empty it is: quotes, colon and comma as printed.
const FIELD_OVERHEAD: usize = 6;
/// Bytes a non-text value may take as printed (an IPv6 address, a container id).
const VALUE_BYTES: usize = 64;

/// Bytes a finding's field names take as printed in JSON (every field costs its
/// overhead), remembered for the last shape: a rule's findings repeat one or a few.
#[derive(Default)]
struct NamesSize {
    last: Option<(FieldShape, usize)>,
}

impl NamesSize {
    fn of(&mut self, shape: &FieldShape) -> usize {
        match &self.last {
            Some((last, size)) if Arc::ptr_eq(last, shape) => *size,
            _ => {
                let size = shape
                    .names
                    .iter()
                    .map(|name| FIELD_OVERHEAD + escaped_len(name))
                    .sum();
                self.last = Some((shape.clone(), size));
                size
            }
        }
    }
}

/// Bytes a finding's values take as printed in JSON: every character of a text its
/// escaped length, so no field counts as empty.
fn values_size(values: &[WitValue]) -> usize {
    values
        .iter()
        .map(|value| match value {
            WitValue::Text(text) => escaped_len(text),
            _ => VALUE_BYTES,
        })
        .sum()
}

/// Length of `text` as a JSON string body: control characters, quotes and backslashes
/// grow when escaped (`\u0001` is six bytes).
fn escaped_len(text: &str) -> usize {
    text.bytes()
        .map(|b| match b {
            b'"' | b'\\' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// Turns a rule's fields into finding data; host-filled values (container id, comm)
/// are resolved here, so no string crossed the wasm boundary for them. A container
/// value naming the event's own container (`event_handle`, interned from it, so present
/// only for an event in a container; the usual case) refers to the event's, with no
/// table lookup and no reference of its own.
pub(super) fn to_data(
    finding: RuleFinding,
    event: &Event,
    event_handle: Option<u64>,
    containers: &crate::state::ContainerTable,
) -> FindingData {
    let values = finding
        .values
        .into_iter()
        .map(|value| match value {
            WitValue::Text(text) => FieldValue::Text(text),
            WitValue::Signed(n) => FieldValue::Signed(n),
            WitValue::Unsigned(n) => FieldValue::Unsigned(n),
            WitValue::Boolean(b) => FieldValue::Boolean(b),
            WitValue::Ip(ip) => FieldValue::Ip(ip_from_wit(ip)),
            WitValue::ContainerId(handle) if event_handle == Some(handle) => {
                FieldValue::EventContainer
            }
            WitValue::ContainerId(handle) => FieldValue::Container(containers.get_shared(handle)),
            // A finding's fields describe its own event.
            WitValue::Comm(_) => FieldValue::Comm(event.process.comm),
        })
        .collect();
    FindingData::new(finding.shape, values)
}

pub(super) fn ip_from_wit(ip: WitIpAddress) -> IpAddr {
    match ip {
        WitIpAddress::Ipv4((a, b, c, d)) => [a, b, c, d].into(),
        WitIpAddress::Ipv6((a, b, c, d, e, f, g, h)) => [a, b, c, d, e, f, g, h].into(),
    }
}
