//! What the sensor tells its users about the kernel it runs on: which mechanism each
//! hook got, how each program fared in the verifier, how the environment is captured,
//! and which mechanisms a test forbade so a fallback runs on a kernel with better.

use serde::Serialize;
use std::time::{Duration, Instant};

/// The environment variable that forbids mechanisms, for tests only: a comma-separated
/// list of [`Mechanism`] names (`tp_btf`, `bpf_loop`, `env_walk`, `lsm`, `fentry`).
/// Each forbidden mechanism is passed over as if the kernel had refused it.
pub const FORBID_HOOKS_ENV: &str = "RULEHOST_TEST_FORBID_HOOKS";

/// A kernel mechanism a hook can use, by the name tests forbid it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mechanism {
    /// BTF-enabled raw tracepoints for exec.
    TpBtf,
    /// The environment walk driven by `bpf_loop` (5.17+).
    BpfLoop,
    /// Any in-kernel environment walk (the bounded one too).
    EnvWalk,
    /// The BPF LSM connect hook.
    Lsm,
    /// The fentry connect hook.
    Fentry,
}

impl Mechanism {
    const ALL: [(Mechanism, &'static str); 5] = [
        (Mechanism::TpBtf, "tp_btf"),
        (Mechanism::BpfLoop, "bpf_loop"),
        (Mechanism::EnvWalk, "env_walk"),
        (Mechanism::Lsm, "lsm"),
        (Mechanism::Fentry, "fentry"),
    ];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(m, _)| *m == self)
            .map_or("?", |(_, name)| name)
    }
}

/// The mechanisms forbidden for this start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forbidden(Vec<Mechanism>);

impl Forbidden {
    /// Parses a comma-separated list of mechanism names.
    pub fn parse(list: &str) -> anyhow::Result<Forbidden> {
        let mut forbidden = Vec::new();
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let Some((mechanism, _)) = Mechanism::ALL.iter().find(|(_, name)| *name == word) else {
                let known: Vec<&str> = Mechanism::ALL.iter().map(|(_, n)| *n).collect();
                anyhow::bail!(
                    "{FORBID_HOOKS_ENV}: unknown mechanism {word:?} (known: {})",
                    known.join(", ")
                );
            };
            forbidden.push(*mechanism);
        }
        Ok(Forbidden(forbidden))
    }

    /// What [`FORBID_HOOKS_ENV`] forbids (nothing when unset).
    pub(super) fn from_env() -> anyhow::Result<Forbidden> {
        match std::env::var(FORBID_HOOKS_ENV) {
            Ok(list) => Self::parse(&list),
            Err(_) => Ok(Forbidden::default()),
        }
    }

    /// Adds another set's mechanisms.
    pub(super) fn extend(&mut self, other: &Forbidden) {
        self.0.extend(other.0.iter().copied());
    }

    /// An error when `mechanism` is forbidden, naming it and where.
    pub(super) fn check(&self, mechanism: Mechanism, program: &str) -> anyhow::Result<()> {
        if self.0.contains(&mechanism) {
            anyhow::bail!(
                "{program}: {} forbidden by {FORBID_HOOKS_ENV}",
                mechanism.name()
            );
        }
        Ok(())
    }
}

/// How exec events get the environment entries rules asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvCapture {
    /// In the kernel, with `bpf_loop` (up to 512 reads).
    BpfLoop,
    /// In the kernel, with a bounded loop (the first entries; the rest from `/proc`).
    Bounded,
    /// Only from `/proc/<pid>/environ` once the exec is drained: a process that exits
    /// at once is missed.
    Proc,
}

impl EnvCapture {
    /// A short description for logs and `--check`.
    pub fn describe(self) -> &'static str {
        match self {
            EnvCapture::BpfLoop => "in the kernel (bpf_loop)",
            EnvCapture::Bounded => {
                "in the kernel (bounded walk; longer environments completed from /proc)"
            }
            EnvCapture::Proc => {
                "from /proc/<pid>/environ only (racy: misses processes that exit at once)"
            }
        }
    }
}

/// One program the kernel verified and loaded: its verifier figure and load time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgramLoad {
    /// The program's name in the eBPF object.
    pub program: &'static str,
    /// Instructions the verifier processed (`None` before Linux 5.16, which does not
    /// report it).
    pub verified_insns: Option<u32>,
    /// Wall time of the load (mostly verification), in microseconds.
    pub load_us: u64,
}

impl ProgramLoad {
    /// One line for logs and `--check`.
    pub fn describe(&self) -> String {
        let insns = match self.verified_insns {
            Some(n) => format!("{n} instructions verified"),
            None => "verifier count not reported by this kernel (5.16+)".to_owned(),
        };
        format!(
            "program {}: {insns}, loaded in {:.1} ms",
            self.program,
            self.load_us as f64 / 1000.0
        )
    }
}

/// Times a program load; the caller adds the verifier figure once it is loaded.
pub(super) fn timed<T>(load: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let result = load();
    (result, started.elapsed())
}

/// One need of one rule the kernel does not meet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Unmet {
    /// The rule's id.
    pub rule: String,
    /// What it needs, in a few words (also the metric's `need` label).
    pub need: &'static str,
    /// Why the kernel cannot give it, and what stands in for it.
    pub reason: String,
}
