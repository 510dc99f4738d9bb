//! The command line: one file per command (`run`, `replay`, `inspect`, `trigger`,
//! `rule`), the flags every rule-running command shares, and the dispatch. The top of the
//! house: nothing below `cli/` imports from it.

mod inspect;
mod new;
mod replay;
mod rule;
mod run;
mod run_config;
mod trigger;

pub use run::RunArgs;
pub use run_config::with_config_flags;

use crate::rules::{Limits, RuleEngine};
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "rulehost",
    version,
    about = "Runtime security for Kubernetes nodes, with detection rules as sandboxed WebAssembly components"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log level (`error`, `warn`, `info`, `debug`, `trace`) or filter directives
    /// (`info,rule=warn`: rules' own log lines have the target `rule`).
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    pub log_level: String,
    /// How log lines are written to stderr.
    #[arg(long, global = true, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs rules over recorded events (rulehost or Tracee JSON lines); prints findings.
    Replay {
        /// A rule component; repeat for several. Default: the built-in k8s_api_connection.
        #[arg(long = "rule", value_name = "FILE.wasm")]
        rules: Vec<PathBuf>,
        /// JSON-lines events; `-` or nothing for stdin.
        #[arg(value_name = "EVENTS.jsonl")]
        events: Option<PathBuf>,
        #[command(flatten)]
        sandbox: SandboxArgs,
        /// The node findings name (default: $NODE_NAME, else the host name).
        #[arg(long, value_name = "NAME")]
        node_name: Option<String>,
    },
    /// Runs the node agent: attaches the eBPF probes, resolves containers, runs the rules
    /// on live kernel events and prints findings as JSON lines. Needs root (CAP_BPF,
    /// CAP_PERFMON, CAP_SYS_ADMIN for cgroup attachment). Every flag is also a key of
    /// the --config file; a flag on the command line wins.
    #[command(args_override_self = true)]
    Run(Box<RunArgs>),
    /// Proves the live pipeline end to end on this node: a throwaway container-like
    /// cgroup, a process in it with KUBERNETES_SERVICE_HOST set to a local listener,
    /// a connect, and the finding it produces.
    Trigger {
        #[arg(value_enum)]
        scenario: trigger::Scenario,
        /// Watch this findings file of an already running `rulehost run --output FILE`
        /// instead of starting a private agent.
        #[arg(long, value_name = "FILE")]
        findings: Option<PathBuf>,
        /// Give up waiting for the finding after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout_secs: u64,
    },
    /// (internal) The process `trigger` runs inside the throwaway cgroup: connects to ADDR.
    #[command(hide = true)]
    TriggerConnect { address: std::net::SocketAddr },
    /// Shows a rule file's metadata, world version, imports, size, sha256 and, against
    /// the given keys, whether its signature (FILE.wasm.sig) verifies.
    Inspect {
        #[arg(value_name = "FILE.wasm")]
        rule: PathBuf,
        /// A trusted public key to check the rule's signature against; repeatable.
        #[arg(long = "trusted-key", value_name = "FILE.pub")]
        trusted_keys: Vec<PathBuf>,
        #[command(flatten)]
        sandbox: SandboxArgs,
    },
    /// Writes a new rule project (Rust, JavaScript or Python) that builds and passes its
    /// replay test out of the box.
    New {
        /// The rule's language.
        #[arg(long = "lang", value_enum)]
        language: new::Language,
        /// The project's name (and directory).
        name: String,
        /// Where to create it.
        #[arg(long, default_value = ".", value_name = "DIR")]
        dir: PathBuf,
    },
    /// Signs, ships and fetches rules: `keygen`, `sign`, `push`, `pull`.
    #[command(subcommand)]
    Rule(rule::RuleCommand),
    /// (internal) Compiles the rule component on stdin under the given bounds and writes
    /// the precompiled artifact on stdout: how the host compiles untrusted rules.
    #[command(hide = true)]
    CompileRule {
        #[arg(long)]
        cpu_secs: u64,
        #[arg(long)]
        memory_bytes: u64,
    },
}

/// Limits every rule runs under.
#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Memory cap per rule instance, in MiB.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub rule_memory_mib: usize,
    /// CPU time a rule may spend per event, in milliseconds, before it is cut off.
    #[arg(long, default_value_t = 10, value_name = "MS")]
    pub rule_cpu_ms: u64,
    /// CPU time one delivery call to a rule may take however many events it carries,
    /// in milliseconds (at least --rule-cpu-ms).
    #[arg(long, default_value_t = 100, value_name = "MS")]
    pub rule_cpu_per_call_ms: u64,
    /// Findings a rule may return per event; more are dropped and counted.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub rule_findings_per_event: usize,
    /// Size of one finding's data as printed, in KiB; larger ones are dropped and counted.
    #[arg(long, default_value_t = 16, value_name = "KIB")]
    pub rule_finding_kib: usize,
    /// `context` calls a rule may make per delivered event; more answer empty.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub rule_context_calls: usize,
    /// Per-container state a rule may hold in all, in MiB.
    #[arg(long, default_value_t = 64, value_name = "MIB")]
    pub rule_state_mib: usize,
    /// CPU seconds compiling one rule may take (in its own process).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub rule_compile_cpu_secs: u64,
    /// Largest rule file, in MiB (at most 256); `budgets:` in --config raises it for
    /// one rule.
    #[arg(long, default_value_t = 32, value_name = "MIB")]
    pub rule_max_mib: usize,
    /// Memory compiling one rule may take, in MiB.
    #[arg(long, default_value_t = 1024, value_name = "MIB")]
    pub rule_compile_memory_mib: u64,
    /// Grants a rule id a capability, beside the shipped defaults: `ID=env:NAME[,NAME]`
    /// lets the rule read those environment variables, `ID=wasi:clocks,random` lets a
    /// JavaScript or Python rule's runtime read the clocks and random numbers. Repeatable.
    #[arg(long = "grant", value_name = "ID=env:NAMES|ID=wasi:CAPS", value_parser = crate::rules::parse_grant)]
    pub grants: Vec<(String, crate::rules::Grant)>,
    /// Configuration file (YAML): `grants`, per rule id.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl SandboxArgs {
    pub fn limits(&self) -> Result<Limits> {
        use std::time::Duration;
        Ok(Limits {
            memory_bytes: self.rule_memory_mib << 20,
            cpu_per_event: Duration::from_millis(self.rule_cpu_ms.max(1)),
            cpu_per_call: Duration::from_millis(self.rule_cpu_per_call_ms.max(1)),
            max_findings_per_event: self.rule_findings_per_event,
            max_finding_bytes: self.rule_finding_kib << 10,
            max_context_calls_per_event: self.rule_context_calls,
            state: crate::state::StateLimits {
                max_total_bytes: self.rule_state_mib << 20,
                ..Default::default()
            },
            compile: crate::rules::CompileLimits {
                cpu_secs: self.rule_compile_cpu_secs.max(1),
                memory_bytes: self.rule_compile_memory_mib.max(1) << 20,
            },
            max_rule_bytes: (self.rule_max_mib.max(1) << 20).min(crate::rules::MAX_BUDGET_BYTES),
            budgets: self.config()?.budgets,
        })
    }

    /// The config file's contents (empty without `--config`).
    pub fn config(&self) -> Result<crate::config::Config> {
        match &self.config {
            Some(path) => crate::config::Config::load(path, run_config::check_flags),
            None => Ok(crate::config::Config::default()),
        }
    }

    /// What each rule id may use: the shipped defaults, the config file's, `--grant`s.
    pub fn grants(&self) -> Result<crate::rules::Grants> {
        Ok(self.config()?.grants(&self.grants))
    }

    /// An engine for untrusted rules under these limits and grants.
    pub(crate) fn engine(&self) -> Result<RuleEngine> {
        RuleEngine::isolated(self.limits()?, self.grants()?, None)
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Replay {
            rules,
            events,
            sandbox,
            node_name,
        } => replay::replay(&rules, events, &sandbox, node_name),
        Command::Inspect {
            rule,
            trusted_keys,
            sandbox,
        } => inspect::inspect(&rule, &trusted_keys, &sandbox),
        Command::New {
            language,
            name,
            dir,
        } => new::new(language, &name, &dir),
        Command::Rule(command) => rule::run(command),
        Command::CompileRule {
            cpu_secs,
            memory_bytes,
        } => crate::rules::compile_rule_child(crate::rules::CompileLimits {
            cpu_secs,
            memory_bytes,
        }),
        Command::Run(args) => run::run(args.options()?),
        Command::Trigger {
            scenario,
            findings,
            timeout_secs,
        } => trigger::run(
            scenario,
            findings,
            std::time::Duration::from_secs(timeout_secs),
        ),
        Command::TriggerConnect { address } => trigger::connect(address),
    }
}
