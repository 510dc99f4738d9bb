//! The WASI 0.2 a rule written in JavaScript or Python runs on. Their language runtimes
//! (componentize-js, componentize-py) import a whole command world: streams, clocks,
//! random, environment, filesystem, sockets. Every one is linked, so such a component
//! instantiates, and every one reaches nothing: no preopened directory, no environment,
//! no arguments, no stdin, no socket or name lookup. stdout and stderr are kept per
//! instance (bounded) and written to the rule's rate-limited log after each call.
//! Clocks and random are capabilities a rule id is granted ([`Grant::wasi`]); any other
//! WASI interface (http, ...) is refused at load, naming it.

use super::*;
use std::sync::Mutex;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// The package WASI interfaces come from.
pub(super) const WASI_PACKAGE: &str = "wasi";

/// WASI interfaces that reach nothing in the context every rule gets.
const INERT: &[&str] = &[
    "io/error",
    "io/poll",
    "io/streams",
    "cli/stdout",
    "cli/stderr",
    "cli/stdin",
    "cli/environment",
    "cli/exit",
    "cli/terminal-input",
    "cli/terminal-output",
    "cli/terminal-stdin",
    "cli/terminal-stdout",
    "cli/terminal-stderr",
    "filesystem/types",
    "filesystem/preopens",
    "sockets/network",
    "sockets/instance-network",
    "sockets/udp",
    "sockets/udp-create-socket",
    "sockets/tcp",
    "sockets/tcp-create-socket",
    "sockets/ip-name-lookup",
];

/// WASI interfaces a rule id must be granted, by the capability that grants them.
const GRANTED: &[(&str, &str)] = &[
    ("clocks/wall-clock", "clocks"),
    ("clocks/monotonic-clock", "clocks"),
    ("random/random", "random"),
    ("random/insecure", "random"),
    ("random/insecure-seed", "random"),
];

/// The capabilities a grant may name.
pub const CAPABILITIES: &[&str] = &["clocks", "random"];

/// How a WASI interface (`io/streams`) may be imported: `Some(None)` for an inert one,
/// `Some(Some(capability))` for one a grant gives, `None` for one never linked.
pub(super) fn access(interface: &str) -> Option<Option<&'static str>> {
    if INERT.contains(&interface) {
        return Some(None);
    }
    GRANTED
        .iter()
        .find(|(name, _)| *name == interface)
        .map(|(_, capability)| Some(*capability))
}

/// Links WASI 0.2 (synchronous) into the rule linker.
pub(super) fn add_to_linker(linker: &mut Linker<InstanceState>) -> Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker).map_err(anyhow::Error::from)
}

/// Most bytes of stdout or stderr kept between two calls; the rest is dropped.
const MAX_OUTPUT_BYTES: usize = 16 << 10;

/// A rule's WASI context and what it wrote.
pub(super) struct RuleWasi {
    ctx: WasiCtx,
    table: ResourceTable,
    stdout: RuleOutput,
    stderr: RuleOutput,
}

impl RuleWasi {
    /// A context that grants nothing: empty stdin, no environment, arguments,
    /// directories or network; stdout and stderr captured.
    pub(super) fn deny_all() -> RuleWasi {
        let (stdout, stderr) = (RuleOutput::default(), RuleOutput::default());
        let ctx = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        RuleWasi {
            ctx,
            table: ResourceTable::new(),
            stdout,
            stderr,
        }
    }

    /// What the rule wrote to stdout and stderr since last asked, as lines, and how
    /// many lines did not fit the buffers.
    pub(super) fn take_lines(&self) -> (Vec<String>, Vec<String>, u64) {
        let (stdout, lost_out) = self.stdout.take_lines();
        let (stderr, lost_err) = self.stderr.take_lines();
        (stdout, stderr, lost_out + lost_err)
    }
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.wasi.table,
        }
    }
}

/// One of a rule's output streams: bytes kept up to [`MAX_OUTPUT_BYTES`] between two
/// calls, the rest dropped and its lines counted as dropped log lines (never an error
/// the rule could trip over).
#[derive(Clone, Default)]
struct RuleOutput(Arc<Mutex<Output>>);

#[derive(Default)]
struct Output {
    kept: Vec<u8>,
    /// Newlines written, kept or not.
    newlines: u64,
    /// Whether any byte did not fit.
    overflowed: bool,
}

impl RuleOutput {
    /// The complete lines kept (and a last unterminated one, when nothing was lost),
    /// and how many lines were written but not kept.
    fn take_lines(&self) -> (Vec<String>, u64) {
        let output = {
            let mut output = self.0.lock().expect("rule output lock");
            if output.kept.is_empty() && output.newlines == 0 && !output.overflowed {
                // The usual call: the rule wrote nothing, so nothing is split or copied.
                return (Vec::new(), 0);
            }
            std::mem::take(&mut *output)
        };
        let text = String::from_utf8_lossy(&output.kept);
        let mut pieces: Vec<&str> = text.split('\n').collect();
        let last = pieces.pop().unwrap_or_default();
        let complete = pieces.len() as u64;
        if !output.overflowed && !last.is_empty() {
            pieces.push(last);
        }
        let lines = pieces
            .into_iter()
            .filter(|line| !line.trim().is_empty())
            .map(str::to_owned)
            .collect();
        (lines, output.newlines - complete)
    }
}

impl IsTerminal for RuleOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for RuleOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASI 0.3 asks for it, and it is not linked.
        Box::new(tokio::io::sink())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for RuleOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for RuleOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        let mut output = self.0.lock().expect("rule output lock");
        let room = MAX_OUTPUT_BYTES.saturating_sub(output.kept.len());
        let fits = &bytes[..bytes.len().min(room)];
        output.kept.extend_from_slice(fits);
        output.overflowed |= fits.len() < bytes.len();
        output.newlines += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_OUTPUT_BYTES)
    }
}
