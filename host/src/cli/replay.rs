//! `rulehost replay`: the pipeline with recorded JSON lines (rulehost's or Tracee's) as
//! its source.

use super::SandboxArgs;
use crate::dispatch::Dispatcher;
use crate::events::parse::{Line, parse_line};
use crate::logging::error_line;
use crate::metadata::node_name_or_default;
use crate::pipeline::Pipeline;
use crate::sinks::JsonLines;
use anyhow::{Context, Result};
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;

/// Events handed to the rules per call when replaying.
const REPLAY_BATCH: usize = 256;

/// `replay`: the pipeline with recorded JSON lines as its source.
pub(super) fn replay(
    rule_paths: &[PathBuf],
    events: Option<PathBuf>,
    sandbox: &SandboxArgs,
    node_name: Option<String>,
) -> Result<()> {
    let runtime = Arc::new(sandbox.engine()?);
    let mut dispatcher = Dispatcher::new(runtime.clone());
    for rule in crate::sources::load_all(&runtime, rule_paths)? {
        dispatcher.add(rule)?;
    }
    let (reader, source): (Box<dyn BufRead>, String) = match &events {
        Some(path) if path.as_os_str() != "-" => (
            Box::new(std::io::BufReader::new(
                std::fs::File::open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?,
            )),
            path.display().to_string(),
        ),
        _ => (Box::new(std::io::stdin().lock()), "stdin".into()),
    };
    let exceptions = crate::exceptions::Exceptions::new(&sandbox.config()?.exceptions);
    let mut pipeline = Pipeline::new(dispatcher, JsonLines::stdout(), None)
        .with_node(node_name_or_default(node_name))
        .with_exceptions(exceptions);
    let mut malformed = 0u64;
    for (number, line) in reader.split(b'\n').enumerate() {
        let line = line.with_context(|| format!("reading {source}"))?;
        let parsed = std::str::from_utf8(&line)
            .map_err(|_| anyhow::anyhow!("not UTF-8"))
            .and_then(parse_line);
        match parsed {
            Ok(Line::Event(event)) => pipeline.push(*event)?,
            Ok(Line::Ignored(_) | Line::Blank) => {}
            Err(error) => {
                malformed += 1;
                tracing::warn!(
                    source = %source,
                    line = number + 1,
                    error = %error_line(error.as_ref()),
                    "skipped malformed event"
                );
            }
        }
        if pipeline.pending() == REPLAY_BATCH {
            pipeline.deliver()?;
        }
    }
    pipeline.finish()?;
    crate::agent::report_suppressed(&pipeline.exceptions);
    if malformed > 0 {
        tracing::warn!(source = %source, malformed, "malformed lines skipped");
    }
    Ok(())
}
