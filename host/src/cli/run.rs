//! `rulehost run`'s flags, and the agent options they make. Every flag is also a key
//! of the `--config` file ([`crate::cli`]).

use super::SandboxArgs;
use crate::config::RuleEntry;
use crate::metadata::node_name_or_default;
use crate::oci::follow::OciRule;
use crate::sources::reload::RuleSources;
use crate::trust::{PublicKey, Trust};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// The flags of `rulehost run` (its help text is on [`crate::cli::Command::Run`]).
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A rule component; repeat for several. Watched: a changed file is hot-reloaded.
    /// `oci://REGISTRY/REPO:TAG` (or `@sha256:...`) pulls one from a registry.
    /// Default (with no --rule nor --rules): the built-in k8s_api_connection.
    #[arg(long = "rule", value_name = "FILE.wasm")]
    pub rules: Vec<PathBuf>,
    /// A directory of `*.wasm` rules (a ConfigMap volume works); files added, changed
    /// or removed are loaded, reloaded or unloaded. Repeatable.
    #[arg(long = "rules", value_name = "DIR")]
    pub rule_dirs: Vec<PathBuf>,
    /// A public key rules must be signed by (PEM, ECDSA P-256: `cosign.pub`, or
    /// `rulehost rule keygen`'s); repeatable (config key `trusted_keys`). With any, a
    /// rule file loads only if `<rule>.wasm.sig` beside it verifies against one, and
    /// a registry rule only if its cosign signature does.
    #[arg(
        long = "trusted-key",
        visible_alias = "trusted-keys",
        value_name = "FILE.pub"
    )]
    pub trusted_keys: Vec<PathBuf>,
    /// How often a registry rule named by tag is re-resolved; a new digest is pulled,
    /// verified and hot-reloaded. 0 never re-resolves.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub oci_follow: std::time::Duration,
    /// Docker's config.json with registry logins for `oci://` rules (a Kubernetes
    /// dockerconfigjson Secret's file). Default: $DOCKER_CONFIG/config.json, else
    /// ~/.docker/config.json, if present.
    #[arg(long, value_name = "FILE")]
    pub registry_config: Option<PathBuf>,
    /// Where compiled rules are cached, so restarts and reloads to a version seen
    /// before skip compilation.
    #[arg(long, value_name = "DIR", default_value = "/var/cache/rulehost")]
    pub cache_dir: PathBuf,
    /// Where per-container rule state is persisted (crash-safe), so a restart, even
    /// after kill -9, forgets nothing about containers still running.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/rulehost")]
    pub state_dir: PathBuf,
    /// Keep rule state in memory only.
    #[arg(long, conflicts_with = "state_dir")]
    pub no_state_dir: bool,
    /// Write findings to this file (appending) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write every decoded event to this file in rulehost's event format
    /// (replayable with `rulehost replay`).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Once the probes are attached, the start-up sweep is done and state is
    /// restored, write a JSON summary to this file (atomically); removed on a clean
    /// exit. For scripts, tests and exec readiness probes.
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
    /// Validate the rules and the kernel's support, print what was checked, and exit
    /// without attaching anything (for readiness probes and CI).
    #[arg(long)]
    pub check: bool,
    /// Kernel ring buffer size in KiB (a power of two); larger absorbs longer bursts.
    #[arg(long, value_name = "KIB")]
    pub ring_buffer_kib: Option<u32>,
    /// The node findings name (default: $NODE_NAME, as a DaemonSet's downward API
    /// sets it, else the host name).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// A CRI runtime socket to ask for container and pod metadata; repeatable.
    /// Default: whichever of containerd's, CRI-O's and k3s's usual sockets exist.
    #[arg(long = "cri-socket", value_name = "PATH")]
    pub cri_sockets: Vec<PathBuf>,
    /// A Docker Engine socket to ask for container metadata; repeatable. Default:
    /// /var/run/docker.sock if it exists.
    #[arg(long = "docker-socket", value_name = "PATH")]
    pub docker_sockets: Vec<PathBuf>,
    /// Longest a finding waits for its container's metadata lookup, in
    /// milliseconds; past it the finding is written with what is known.
    #[arg(long, default_value_t = crate::metadata::FINDING_WAIT.as_millis() as u64, value_name = "MS")]
    pub metadata_wait_ms: u64,
    /// Serve GET /healthz, /readyz and /metrics (Prometheus) on this address, such
    /// as 0.0.0.0:9090. Off by default.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<std::net::SocketAddr>,
    /// Also POST every finding as JSON to this http:// URL (bounded queue, retried
    /// while the receiver is down). Repeatable; per-sink options in the config
    /// file's `webhooks`.
    #[arg(long = "webhook", value_name = "URL")]
    pub webhooks: Vec<String>,
    /// The JSON the --webhook sinks post: rulehost's finding, or Falco's event as
    /// falcosidekick accepts it.
    #[arg(long, value_enum, default_value = "rulehost")]
    pub webhook_format: crate::sinks::WebhookFormat,
    /// An API server endpoint (ADDR:PORT) connects to which are TRC-1013 findings,
    /// whatever the container's environment declares. Repeatable (config key
    /// `api_servers`); merged with the agent's own pod environment and the kubelet's
    /// kubeconfig.
    #[arg(
        long = "api-server",
        visible_alias = "api-servers",
        value_name = "ADDR:PORT"
    )]
    pub api_servers: Vec<std::net::SocketAddr>,
    /// The kubelet's kubeconfig, whose cluster server URL names an API server
    /// endpoint (ignored when the file does not exist).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/kubernetes/kubelet.conf"
    )]
    pub kubelet_kubeconfig: PathBuf,
    /// Credentials for watching the API server's `default/kubernetes`
    /// EndpointSlices, whose endpoints are added to the known ones as they change.
    /// Default: the pod's service account when the agent runs in a cluster.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

impl RunArgs {
    /// The agent's options: these flags, with the config file's own keys.
    pub(crate) fn options(self) -> Result<crate::agent::RunOptions> {
        let config = self.sandbox.config()?;
        let format = self.webhook_format;
        let (sources, oci) = self.rule_sources(&config.rules)?;
        // Read only when a registry rule needs it: a bad file fails the start, naming it.
        let registry_credentials = match oci.is_empty() {
            true => crate::oci::Credentials::default(),
            false => crate::oci::Credentials::load(self.registry_config.as_deref())?,
        };
        Ok(crate::agent::RunOptions {
            api_servers: crate::api_servers::Sources {
                flags: self.api_servers,
                kubeconfig: self.kubelet_kubeconfig,
                cluster: self.kubeconfig,
            },
            listen: self.listen,
            webhooks: self
                .webhooks
                .into_iter()
                .map(|url| crate::sinks::WebhookSpec::new(url, format))
                .chain(config.webhooks)
                .collect(),
            check: self.check,
            ring_buffer_kib: self.ring_buffer_kib,
            sources,
            oci,
            oci_follow: self.oci_follow,
            registry_credentials,
            cache_dir: Some(self.cache_dir),
            state_dir: (!self.no_state_dir).then_some(self.state_dir),
            output: self.output,
            record: self.record,
            ready_file: self.ready_file,
            limits: self.sandbox.limits()?,
            grants: self.sandbox.grants()?,
            exceptions: config.exceptions,
            config: self.sandbox.config.clone().map(|path| {
                (
                    path,
                    super::run_config::check_flags as crate::config::FlagCheck,
                )
            }),
            node: node_name_or_default(self.node_name),
            sockets: crate::metadata::Sockets {
                cri: self.cri_sockets,
                docker: self.docker_sockets,
            },
            metadata_wait: std::time::Duration::from_millis(self.metadata_wait_ms),
        })
    }

    /// The rule files, directories and registry rules of the flags and the config
    /// file's `rules`, with the pins and trusted keys they are checked against.
    fn rule_sources(&self, entries: &[RuleEntry]) -> Result<(RuleSources, Vec<OciRule>)> {
        let (mut files, mut dirs, mut oci) = (Vec::new(), self.rule_dirs.clone(), Vec::new());
        let mut pins = BTreeMap::new();
        let given = self.rules.iter().map(|path| match path.to_str() {
            Some(text) if text.starts_with(crate::oci::SCHEME) => RuleEntry::Oci {
                reference: text.to_owned(),
                sha256: None,
            },
            _ => RuleEntry::File {
                path: path.clone(),
                sha256: None,
            },
        });
        for entry in given.chain(entries.iter().cloned()) {
            match entry {
                RuleEntry::Dir(dir) => dirs.push(dir),
                RuleEntry::File { path, sha256 } => {
                    if let Some(sha256) = sha256 {
                        pins.insert(path.clone(), sha256);
                    }
                    files.push(path);
                }
                RuleEntry::Oci { reference, sha256 } => {
                    let rule = OciRule::new(&reference, &self.cache_dir, sha256)?;
                    files.push(rule.path.clone());
                    oci.push(rule);
                }
            }
        }
        let keys = PublicKey::load_all(&self.trusted_keys)?;
        let trust = Arc::new(Trust::new(keys, pins));
        Ok((RuleSources { files, dirs, trust }, oci))
    }
}

/// Runs the agent on a single-threaded runtime until it stops.
pub(super) fn run(options: crate::agent::RunOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(crate::agent::run(options));
    // A reload plan still compiling an (untrusted) rule must not hold the exit: it is
    // abandoned, not waited for.
    runtime.shutdown_background();
    result
}
