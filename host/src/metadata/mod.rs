//! Runtime metadata for containers (name, image, pod), from the runtimes' own APIs:
//! looked up off the event path when a container is first seen, cached per container
//! and evicted with it. Events never wait; a finding about a container whose lookup is
//! still in flight waits for it, at most [`FINDING_WAIT`], and is then written with
//! what is known, never dropped.

pub mod cri;
pub mod docker;

use crate::events::Container;
use crate::sinks::Finding;
use cri::Cri;
use docker::DockerEngine;
use rustc_hash::FxHashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// Longest a finding waits for its container's metadata, by default.
pub const FINDING_WAIT: Duration = Duration::from_millis(500);

/// A finished lookup: the container id, and what the runtime said (if anything).
pub type LookupResult = (String, Option<Container>);

/// A runtime that answers lookups.
#[derive(Clone)]
enum Runtime {
    Cri(Cri),
    Docker(DockerEngine),
}

impl Runtime {
    async fn lookup(&self, id: &str) -> anyhow::Result<Option<Container>> {
        match self {
            Runtime::Cri(cri) => cri.lookup(id).await,
            Runtime::Docker(docker) => docker.lookup(id).await,
        }
    }
}

/// Which runtime sockets to ask (empty: the usual ones that exist).
#[derive(Debug, Clone, Default)]
pub struct Sockets {
    pub cri: Vec<PathBuf>,
    pub docker: Vec<PathBuf>,
}

/// Lookups, their results and the findings waiting for them.
pub struct Metadata {
    runtimes: Vec<Runtime>,
    /// Longest a finding waits for its container's lookup.
    wait: Duration,
    /// Enriched containers by id (`None`: asked, no runtime knew it).
    known: FxHashMap<String, Option<Arc<Container>>>,
    /// Lookups in flight, by id, with when a finding stops waiting for them.
    pending: FxHashMap<String, Instant>,
    held: Vec<(Instant, Finding)>,
    /// Containers that went away while their lookup ran or findings waited for it
    /// (a container that connects and exits at once): forgotten once those are done.
    gone: Vec<String>,
    tx: UnboundedSender<LookupResult>,
    /// Finished lookups, for the agent loop to apply.
    pub results: UnboundedReceiver<LookupResult>,
}

impl Metadata {
    /// Connects to the runtimes at `sockets` (the usual sockets that exist, for a kind
    /// none is given for). A socket that does not answer is logged and skipped.
    pub async fn connect(sockets: &Sockets, wait: Duration) -> Metadata {
        let mut runtimes = Vec::new();
        for socket in or_defaults(&sockets.cri, cri::DEFAULT_SOCKETS) {
            match Cri::connect(&socket).await {
                Ok(client) => runtimes.push(Runtime::Cri(client)),
                Err(error) => unanswered(&socket, &error),
            }
        }
        for socket in or_defaults(&sockets.docker, &[docker::DEFAULT_SOCKET]) {
            match DockerEngine::connect(&socket).await {
                Ok(client) => runtimes.push(Runtime::Docker(client)),
                Err(error) => unanswered(&socket, &error),
            }
        }
        let (tx, results) = unbounded_channel();
        Metadata {
            runtimes,
            wait,
            known: FxHashMap::default(),
            pending: FxHashMap::default(),
            held: Vec::new(),
            gone: Vec::new(),
            tx,
            results,
        }
    }

    /// The enriched version of `container` if known; a first sight starts its lookup.
    pub fn observe(&mut self, container: &Arc<Container>) -> Option<Arc<Container>> {
        if let Some(known) = self.known.get(&container.id) {
            return known.clone();
        }
        if self.runtimes.is_empty() || self.pending.contains_key(&container.id) {
            return None;
        }
        self.pending
            .insert(container.id.clone(), Instant::now() + self.wait);
        let (runtimes, tx, base) = (self.runtimes.clone(), self.tx.clone(), container.clone());
        tokio::spawn(async move {
            let found = lookup(&runtimes, &base).await;
            let _ = tx.send((base.id.clone(), found));
        });
        None
    }

    /// Records a finished lookup.
    pub fn apply(&mut self, (id, found): LookupResult) {
        if self.pending.remove(&id).is_some() {
            self.known.insert(id, found.map(Arc::new));
        }
    }

    /// Forgets a container that went away, once nothing waits for its metadata.
    pub fn forget(&mut self, id: &str) {
        if self.pending.contains_key(id) || self.is_held(id) {
            self.gone.push(id.to_owned());
        } else {
            self.known.remove(id);
        }
    }

    fn is_held(&self, id: &str) -> bool {
        self.held
            .iter()
            .any(|(_, f)| f.event.event.container.as_ref().is_some_and(|c| c.id == id))
    }

    /// Takes the findings whose container's lookup is in flight, to wait for it.
    pub fn hold(&mut self, findings: &mut Vec<Finding>) {
        if self.pending.is_empty() {
            return;
        }
        let (pending, held) = (&self.pending, &mut self.held);
        findings.retain(|finding| {
            let deadline = finding
                .event
                .event
                .container
                .as_ref()
                .and_then(|c| pending.get(&c.id));
            match deadline {
                Some(&deadline) => {
                    held.push((deadline, finding.clone()));
                    false
                }
                None => true,
            }
        });
    }

    /// Findings that waited long enough (their lookup ended, or its time is up), with
    /// the metadata known by now, in the order they were held, put before the findings
    /// already in `out`: those came from later events (a container's findings keep
    /// their events' order even when its lookup ends between two batches).
    pub fn release(&mut self, now: Instant, out: &mut Vec<Finding>) {
        if self.held.is_empty() && self.gone.is_empty() {
            return;
        }
        let (known, pending) = (&self.known, &self.pending);
        let mut released = Vec::new();
        self.held.retain(|(deadline, finding)| {
            let id = finding
                .event
                .event
                .container
                .as_ref()
                .map(|c| c.id.as_str());
            let waiting = id.is_some_and(|id| pending.contains_key(id)) && now < *deadline;
            if !waiting {
                let mut finding = finding.clone();
                if let Some(Some(enriched)) = id.and_then(|id| known.get(id)) {
                    finding.event.event.container = Some(enriched.clone());
                }
                released.push(finding);
            }
            waiting
        });
        out.splice(0..0, released);
        let gone = std::mem::take(&mut self.gone);
        for id in gone {
            self.forget(&id);
        }
    }

    /// Whether findings wait for a lookup (released on a later turn of the loop).
    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Longest a finding waits.
    pub fn wait(&self) -> Duration {
        self.wait
    }
}

/// Asks each runtime in turn; the first that knows the container wins. What the cgroup
/// path told (runtime, pod uid) is kept where the runtime says nothing.
async fn lookup(runtimes: &[Runtime], base: &Container) -> Option<Container> {
    for runtime in runtimes {
        match runtime.lookup(&base.id).await {
            Ok(Some(mut found)) => {
                if base.runtime != crate::events::ContainerRuntime::Unknown {
                    found.runtime = base.runtime;
                }
                if let (Some(pod), Some(base_pod)) = (found.pod.as_mut(), base.pod.as_ref())
                    && pod.uid.is_empty()
                {
                    pod.uid.clone_from(&base_pod.uid);
                }
                return Some(found);
            }
            Ok(None) => {}
            Err(error) => tracing::debug!(
                container = %base.id,
                error = %crate::logging::error_line(error.as_ref()),
                "metadata lookup failed"
            ),
        }
    }
    None
}

/// The sockets given, or those of `defaults` that exist.
fn or_defaults(given: &[PathBuf], defaults: &[&str]) -> Vec<PathBuf> {
    match given.is_empty() {
        true => defaults
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect(),
        false => given.to_vec(),
    }
}

fn unanswered(socket: &std::path::Path, error: &anyhow::Error) {
    tracing::warn!(
        socket = %socket.display(),
        error = %crate::logging::error_line(error.as_ref()),
        "no container metadata from this runtime"
    );
}

/// The node to name in findings: the flag, else `$NODE_NAME`, else the host name.
pub(crate) fn node_name_or_default(flag: Option<String>) -> Option<String> {
    flag.or_else(|| std::env::var("NODE_NAME").ok())
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::ContainerRuntime;
    use crate::rules::FindingShape;
    use crate::sinks::{FindingData, FindingSource, RuleRef};

    fn finding(container: &Arc<Container>, timestamp: u64) -> Finding {
        let shape = Arc::new(FindingShape {
            source: Arc::new(FindingSource {
                signature: Default::default(),
                rule: RuleRef {
                    name: "r".into(),
                    sha256: "s".into(),
                },
            }),
            names: Box::new([]),
        });
        Finding::about_a_connect(FindingData::new(shape, Vec::new()), container, timestamp)
    }

    #[tokio::test]
    async fn a_finding_held_for_a_lookup_stays_before_the_containers_later_ones() {
        let none = Sockets {
            cri: vec!["/nonexistent/cri.sock".into()],
            docker: vec!["/nonexistent/docker.sock".into()],
        };
        let mut metadata = Metadata::connect(&none, Duration::from_secs(30)).await;
        let container = Arc::new(Container::new("c1", ContainerRuntime::Docker));
        metadata
            .pending
            .insert("c1".into(), Instant::now() + Duration::from_secs(30));
        // Batch 1: the first finding waits for the lookup.
        let mut out = vec![finding(&container, 1)];
        metadata.hold(&mut out);
        metadata.release(Instant::now(), &mut out);
        assert!(out.is_empty());
        // The lookup ends; batch 2's finding is not held, and the first goes first.
        metadata.apply(("c1".into(), None));
        let mut out = vec![finding(&container, 2)];
        metadata.hold(&mut out);
        metadata.release(Instant::now(), &mut out);
        let order: Vec<u64> = out.iter().map(|f| f.timestamp).collect();
        assert_eq!(order, vec![1, 2]);
    }
}
