//! A finding as every sink writes it: the rule, the event with its container and pod,
//! the rule's fields.

use crate::events::Event;
use crate::rules::{FieldShape, Metadata};
pub use crate::rules::{FindingSource, RuleRef};
use anyhow::Result;
use serde::Serialize;
use std::sync::Arc;

/// One finding, as printed: what fired (`signature`), what it found (`data`), which
/// exact rule bytes produced it (`rule`), and the triggering event.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The node that saw it (`--node-name`, `NODE_NAME`, or the host name).
    pub node: Option<Arc<str>>,
    /// Its fields, and through their shape the rule behind it.
    pub data: FindingData,
    /// Nanoseconds since the Unix epoch, of the triggering event.
    pub timestamp: u64,
    pub event: EventRecord,
}

impl Finding {
    /// What produced it: the rule's metadata and file.
    pub fn source(&self) -> &FindingSource {
        &self.data.shape.source
    }

    /// The rule's metadata: what fired.
    pub fn signature(&self) -> &Metadata {
        &self.source().signature
    }

    /// The rule file it came from.
    pub fn rule(&self) -> &RuleRef {
        &self.source().rule
    }
}

impl Serialize for Finding {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut record = serializer.serialize_struct("Finding", 6)?;
        match &self.node {
            Some(node) => record.serialize_field("node", node)?,
            None => record.skip_field("node")?,
        }
        record.serialize_field("signature", self.signature())?;
        record.serialize_field("data", &self.data)?;
        record.serialize_field("rule", self.rule())?;
        record.serialize_field("timestamp", &self.timestamp)?;
        record.serialize_field("event", &self.event)?;
        record.end()
    }
}

/// A finding's named values, in the order the rule gave them; printed as a JSON object.
/// Values stay typed until printed, so a finding costs no string formatting (IP text,
/// container id copy) before it is written.
#[derive(Debug, Clone, Default)]
pub struct FindingData {
    /// The rule behind it and the field names, shared with the rule's other findings of
    /// the same shape.
    shape: FieldShape,
    /// In the order of `names`.
    values: Vec<FieldValue>,
    /// The values as JSON, built only if someone indexes the data (tools, tests).
    json: std::sync::OnceLock<Vec<serde_json::Value>>,
}

/// One value of a finding's data.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Text(String),
    Signed(i64),
    Unsigned(u64),
    Boolean(bool),
    /// Printed canonically (IPv4-mapped IPv6 as IPv4, RFC 5952).
    Ip(std::net::IpAddr),
    /// A container's id; `None` when the host no longer knows the container.
    Container(Option<Arc<crate::events::Container>>),
    Comm(crate::events::Comm),
}

impl FieldValue {
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl Serialize for FieldValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FieldValue::Text(text) => serializer.serialize_str(text),
            FieldValue::Signed(n) => serializer.serialize_i64(*n),
            FieldValue::Unsigned(n) => serializer.serialize_u64(*n),
            FieldValue::Boolean(b) => serializer.serialize_bool(*b),
            FieldValue::Ip(ip) => serializer.collect_str(&ip.to_canonical()),
            FieldValue::Container(Some(container)) => serializer.serialize_str(&container.id),
            FieldValue::Container(None) => serializer.serialize_none(),
            FieldValue::Comm(comm) => serializer.serialize_str(comm.as_str()),
        }
    }
}

impl FindingData {
    /// Data whose `values` are named by `shape`, in order (extra values are not printed).
    pub fn new(shape: FieldShape, values: Vec<FieldValue>) -> FindingData {
        FindingData {
            shape,
            values,
            json: std::sync::OnceLock::new(),
        }
    }

    fn names(&self) -> &[Arc<str>] {
        &self.shape.names
    }

    /// The fields, typed, in order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &FieldValue)> {
        self.names().iter().map(|name| &**name).zip(&self.values)
    }

    /// The value of a field as JSON, if present.
    pub fn get(&self, name: &str) -> Option<&serde_json::Value> {
        let index = self.names().iter().position(|n| &**n == name)?;
        let json = self
            .json
            .get_or_init(|| self.values.iter().map(FieldValue::to_json).collect());
        json.get(index)
    }
}

impl PartialEq for FindingData {
    fn eq(&self, other: &FindingData) -> bool {
        self.fields().eq(other.fields())
    }
}

impl std::ops::Index<&str> for FindingData {
    type Output = serde_json::Value;

    fn index(&self, name: &str) -> &serde_json::Value {
        self.get(name).unwrap_or(&serde_json::Value::Null)
    }
}

impl Serialize for FindingData {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.names().len().min(self.values.len())))?;
        for (name, value) in self.fields() {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// The triggering event with its Tracee-style name.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub name: &'static str,
    #[serde(flatten)]
    pub event: Event,
}
