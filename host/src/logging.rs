//! Every message rulehost prints about itself goes through `tracing`: levels, fields
//! (rule, sha256, container, path) instead of formatted sentences, one line per message in
//! text form, or one JSON object per line for machines (`--log-format json`).

use anyhow::{Context, Result, anyhow};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per message: time, level, message, fields.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with `message`).
    Json,
}

/// Installs the process-wide subscriber. `level` is a level (`info`) or a filter
/// directive list (`warn,rulehost=debug`), as `RUST_LOG` takes.
pub fn init(level: &str, format: LogFormat) -> Result<()> {
    let filter = EnvFilter::builder()
        .parse(level)
        .map_err(|error| anyhow!("--log-level {level:?}: {error}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .with_target(true)
            .json()
            .flatten_event(false)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    installed.map_err(|error| anyhow!("cannot install the logger: {error}"))
}

/// Text from a rule (or another untrusted source) made safe to log: one line, control
/// characters escaped, at most `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if text.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// An error and its causes on one line (`a: b: c`), each cause cut to its first line (a
/// wasm backtrace, a multi-line parser report), for log fields and error messages.
pub fn error_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        let text = cause.to_string();
        let first = text
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .trim_end_matches(':');
        // A cause its parent already quoted (`map error: failed to create map X` over
        // `failed to create map X`) is said once.
        if !first.is_empty() && !parts.last().is_some_and(|p: &String| p.contains(first)) {
            parts.push(first.to_owned());
        }
        next = cause.source();
    }
    parts.join(": ")
}

/// Writes one line to stdout; an error (a closed pipe) is returned, never a panic.
pub fn say(line: std::fmt::Arguments<'_>) -> Result<()> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{line}").context("writing to stdout")
}

/// Whether `error` is a closed stdout pipe (`rulehost inspect x | head`): the reader
/// has all it wanted, so the command ends quietly.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
