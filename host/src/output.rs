//! Findings as JSON lines, and where they are written.

use crate::events::Event;
use crate::runtime::Metadata;
use anyhow::{Context, Result};
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// One finding, as printed: what fired (`signature`), what it found (`data`), which
/// exact rule bytes produced it (`rule`), and the triggering event.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub signature: Arc<Metadata>,
    pub data: FindingData,
    pub rule: RuleRef,
    /// Nanoseconds since the Unix epoch, of the triggering event.
    pub timestamp: u64,
    pub event: EventRecord,
}

/// A finding's named values, in the order the rule gave them; printed as a JSON object.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FindingData(pub Vec<(String, serde_json::Value)>);

impl FindingData {
    /// The value of a field, if present.
    pub fn get(&self, name: &str) -> Option<&serde_json::Value> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
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
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// Names the rule file a finding came from.
#[derive(Debug, Clone, Serialize)]
pub struct RuleRef {
    pub name: Arc<str>,
    pub sha256: Arc<str>,
}

/// The triggering event with its Tracee-style name.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub name: &'static str,
    #[serde(flatten)]
    pub event: Event,
}

/// A JSON-lines sink: stdout or a file, buffered, flushed after each batch.
pub struct JsonLines {
    out: Box<dyn Write + Send>,
    what: String,
}

impl JsonLines {
    pub fn stdout() -> JsonLines {
        JsonLines {
            out: Box::new(std::io::BufWriter::new(std::io::stdout())),
            what: "stdout".into(),
        }
    }

    /// Appends to `path`, creating it.
    pub fn file(path: &Path) -> Result<JsonLines> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {} for writing", path.display()))?;
        Ok(JsonLines {
            out: Box::new(std::io::BufWriter::new(file)),
            what: path.display().to_string(),
        })
    }

    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<()> {
        serde_json::to_writer(&mut self.out, record)
            .with_context(|| format!("writing to {}", self.what))?;
        self.out
            .write_all(b"\n")
            .with_context(|| format!("writing to {}", self.what))
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .with_context(|| format!("flushing {}", self.what))
    }
}
