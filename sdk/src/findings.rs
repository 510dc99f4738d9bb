//! Where a rule puts what it found: the world's finding records for a typed batch, or
//! the packed encoding for a packed one, written as the rule reports.

use crate::packed::put_finding;
use crate::{Field, Finding, Value};
use rulehost_wire::Put;
use std::cell::Cell;

thread_local! {
    /// Bytes the previous batch's packed findings took: the next batch's buffer starts
    /// that big, so a rule that finds a lot does not grow it again every batch.
    static LAST_PACKED_BYTES: Cell<usize> = const { Cell::new(0) };
}

/// What a rule found in the batch being delivered. [`Findings::push`] takes the world's
/// record; [`Findings::report`] takes borrowed names, so on a packed batch (what the
/// host uses for SDK rules) a finding costs no allocation at all.
pub struct Findings {
    sink: Sink,
}

enum Sink {
    /// For `detector.on-events`.
    Records(Vec<Finding>),
    /// For `packed.on-events`: the encoding, its count patched in at the end.
    Packed { bytes: Vec<u8>, count: u32 },
}

impl Findings {
    pub(crate) fn records() -> Findings {
        Findings {
            sink: Sink::Records(Vec::new()),
        }
    }

    pub(crate) fn packed() -> Findings {
        let mut bytes = Vec::with_capacity(LAST_PACKED_BYTES.get().max(1024));
        bytes.put_u32(0);
        Findings {
            sink: Sink::Packed { bytes, count: 0 },
        }
    }

    /// Adds a finding about the `finding.event`-th event of the batch.
    pub fn push(&mut self, finding: Finding) {
        match &mut self.sink {
            Sink::Records(records) => records.push(finding),
            Sink::Packed { bytes, count } => {
                let fields = finding.data.iter().map(|f| (f.name.as_str(), &f.value));
                put_finding(bytes, finding.event, fields);
                *count += 1;
            }
        }
    }

    /// Adds a finding about the `event`-th event of the batch, from named values.
    #[inline]
    pub fn report(&mut self, event: u32, fields: &[(&str, Value)]) {
        match &mut self.sink {
            Sink::Records(records) => records.push(Finding {
                event,
                data: fields
                    .iter()
                    .map(|(name, value)| Field {
                        name: (*name).to_owned(),
                        value: value.clone(),
                    })
                    .collect(),
            }),
            Sink::Packed { bytes, count } => {
                let fields = fields.iter().map(|(name, value)| (*name, value));
                put_finding(bytes, event, fields);
                *count += 1;
            }
        }
    }

    /// Findings added so far in this batch.
    pub fn len(&self) -> usize {
        match &self.sink {
            Sink::Records(records) => records.len(),
            Sink::Packed { count, .. } => *count as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The findings as `detector.on-events` returns them.
    pub(crate) fn into_records(self) -> Vec<Finding> {
        match self.sink {
            Sink::Records(records) => records,
            Sink::Packed { .. } => unreachable!("a packed sink is never turned into records"),
        }
    }

    /// The findings as `packed.on-events` returns them.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        match self.sink {
            Sink::Packed { mut bytes, count } => {
                bytes[..4].copy_from_slice(&count.to_le_bytes());
                LAST_PACKED_BYTES.set(bytes.len());
                bytes
            }
            Sink::Records(_) => unreachable!("a record sink is never turned into bytes"),
        }
    }
}

impl Extend<Finding> for Findings {
    fn extend<I: IntoIterator<Item = Finding>>(&mut self, findings: I) {
        for finding in findings {
            self.push(finding);
        }
    }
}
