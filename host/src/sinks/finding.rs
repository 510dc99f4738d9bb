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
    /// Its fields, and through their shape the rule behind it; read through
    /// [`Finding::data`], which resolves the values that name the event's container.
    pub(crate) data: FindingData,
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

    /// What it found, as printed.
    pub fn data(&self) -> Data<'_> {
        Data {
            data: &self.data,
            event_container: self.event.event.container.as_ref(),
        }
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
        record.serialize_field("data", &self.data())?;
        record.serialize_field("rule", self.rule())?;
        record.serialize_field("timestamp", &self.timestamp)?;
        record.serialize_field("event", &self.event)?;
        record.end()
    }
}

/// A finding's named values, in the order the rule gave them. Values stay typed until
/// printed, so a finding costs no string formatting (IP text, container id copy) before
/// it is written; a value naming the event's own container is not even a reference of
/// its own (one atomic count fewer per finding).
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
    /// The id of the finding's own event's container (the usual container value).
    EventContainer,
    Comm(crate::events::Comm),
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
}

/// A finding's data with what its values refer to: its event's container. What sinks
/// print and tools index.
#[derive(Debug, Clone, Copy)]
pub struct Data<'a> {
    data: &'a FindingData,
    event_container: Option<&'a Arc<crate::events::Container>>,
}

impl<'a> Data<'a> {
    /// The fields, in order, each value with what it refers to.
    fn fields(self) -> impl Iterator<Item = (&'a str, Printed<'a>)> {
        let container = self.event_container;
        self.data.shape.names.iter().map(|name| &**name).zip(
            self.data
                .values
                .iter()
                .map(move |value| Printed(value, container)),
        )
    }

    /// The value of a field as JSON, if present.
    pub fn get(self, name: &str) -> Option<&'a serde_json::Value> {
        let index = self.data.shape.names.iter().position(|n| &**n == name)?;
        let container = self.event_container;
        let json = self.data.json.get_or_init(|| {
            self.data
                .values
                .iter()
                .map(|value| serde_json::to_value(Printed(value, container)))
                .map(|json| json.unwrap_or(serde_json::Value::Null))
                .collect()
        });
        json.get(index)
    }
}

impl std::ops::Index<&str> for Data<'_> {
    type Output = serde_json::Value;

    fn index(&self, name: &str) -> &serde_json::Value {
        self.get(name).unwrap_or(&serde_json::Value::Null)
    }
}

impl Serialize for Data<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let data = self.data;
        let mut map =
            serializer.serialize_map(Some(data.shape.names.len().min(data.values.len())))?;
        for (name, value) in self.fields() {
            map.serialize_entry(name, &value)?;
        }
        map.end()
    }
}

/// A value as printed: with the container its event's container values name.
#[derive(Clone, Copy)]
struct Printed<'a>(&'a FieldValue, Option<&'a Arc<crate::events::Container>>);

impl Serialize for Printed<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let container = match self.0 {
            FieldValue::Text(text) => return serializer.serialize_str(text),
            FieldValue::Signed(n) => return serializer.serialize_i64(*n),
            FieldValue::Unsigned(n) => return serializer.serialize_u64(*n),
            FieldValue::Boolean(b) => return serializer.serialize_bool(*b),
            FieldValue::Ip(ip) => return serializer.collect_str(&ip.to_canonical()),
            FieldValue::Comm(comm) => return serializer.serialize_str(comm.as_str()),
            FieldValue::Container(container) => container.as_ref(),
            FieldValue::EventContainer => self.1,
        };
        match container {
            Some(container) => serializer.serialize_str(&container.id),
            None => serializer.serialize_none(),
        }
    }
}

/// The triggering event with its Tracee-style name.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub name: &'static str,
    #[serde(flatten)]
    pub event: Event,
}

/// A finding about a unix-socket connect from `container`, for unit tests.
#[cfg(test)]
impl Finding {
    pub(crate) fn about_a_connect(
        data: FindingData,
        container: &Arc<crate::events::Container>,
        timestamp: u64,
    ) -> Finding {
        use crate::events::{Body, Process, SocketAddress, SocketType};
        Finding {
            node: None,
            data,
            timestamp,
            event: EventRecord {
                name: "security_socket_connect",
                event: Event {
                    timestamp,
                    process: Process::default(),
                    cgroup_id: 0,
                    container: Some(container.clone()),
                    body: Body::SocketConnect {
                        address: SocketAddress::Unix,
                        socket_type: SocketType::Stream,
                    },
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Container, ContainerRuntime};
    use crate::rules::FindingShape;

    fn finding(values: Vec<FieldValue>, container: &Arc<Container>) -> Finding {
        let names = ["own", "other", "gone"].map(Arc::<str>::from);
        let shape = Arc::new(FindingShape {
            source: Default::default(),
            names: Box::new(names),
        });
        Finding::about_a_connect(FindingData::new(shape, values), container, 1)
    }

    #[test]
    fn a_value_naming_the_event_s_container_prints_that_container_s_id() {
        let own = Arc::new(Container::new("a".repeat(64), ContainerRuntime::Docker));
        let other = Arc::new(Container::new("b".repeat(64), ContainerRuntime::Docker));
        let mut found = finding(
            vec![
                FieldValue::EventContainer,
                FieldValue::Container(Some(other.clone())),
                FieldValue::Container(None),
            ],
            &own,
        );
        let expected = serde_json::json!({"own": own.id, "other": other.id, "gone": null});
        assert_eq!(serde_json::to_value(found.data()).unwrap(), expected);
        assert_eq!(found.data()["own"], own.id.as_str());
        // Enrichment swaps the event's container for a richer copy of it: the value
        // follows the event.
        found.event.event.container = Some(Arc::new(Container::new(
            "a".repeat(64),
            ContainerRuntime::Containerd,
        )));
        let printed = serde_json::to_value(&found).unwrap();
        assert_eq!(printed["data"], expected, "{}", printed["data"]);
    }
}
