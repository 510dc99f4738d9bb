//! Findings (and recorded events) as JSON lines on stdout or in a file.

use anyhow::{Context, Result};
use serde::Serialize;
use std::io::Write;
use std::path::Path;

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
