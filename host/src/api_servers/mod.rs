//! Where the node's Kubernetes API server answers, from every source the host can read
//! without trusting a container: `--api-server` flags (and the config file), the agent's
//! own pod environment, the server URL in the kubelet's kubeconfig and, in a cluster,
//! the `default/kubernetes` EndpointSlices (watched, `slices`). Rules read the
//! merged set through the world's `cluster` import, so a container that connects
//! straight to an endpoint (not through the ClusterIP its environment names, or with
//! no such environment at all) is still seen.

mod slices;

use slices::SliceWatch;

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The sources `run` was given.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// `--api-server ADDR:PORT` and the config file's `api_servers`.
    pub flags: Vec<SocketAddr>,
    /// The kubelet's kubeconfig (default `/etc/kubernetes/kubelet.conf`).
    pub kubeconfig: PathBuf,
    /// Credentials for watching the EndpointSlices (`--kubeconfig`); `None`: the pod's
    /// service account, if the agent runs in a cluster.
    pub cluster: Option<PathBuf>,
}

impl Sources {
    /// Every endpoint the sources name, merged and sorted; logged in one line.
    pub fn collect(&self) -> Vec<SocketAddr> {
        let mut all: BTreeSet<SocketAddr> = self.flags.iter().copied().collect();
        let own = own_pod_env(|name| std::env::var(name).ok());
        all.extend(own);
        let kubeconfig = match kubeconfig_servers(&self.kubeconfig) {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(path = %self.kubeconfig.display(), error = %error, "cannot read the kubelet's kubeconfig; its API server is not watched");
                Vec::new()
            }
        };
        all.extend(kubeconfig.iter().copied());
        let all: Vec<SocketAddr> = all.into_iter().collect();
        tracing::info!(
            endpoints = ?all,
            flags = self.flags.len(),
            own_env = own.is_some(),
            kubeconfig = kubeconfig.len(),
            "API server endpoints"
        );
        all
    }
}

/// Changes of the EndpointSlices, for the agent's loop to apply between two batches
/// (so the kernel's connect filter follows before the change is announced).
pub(crate) struct SliceUpdates {
    statics: Vec<SocketAddr>,
    updates: tokio::sync::mpsc::UnboundedReceiver<Vec<SocketAddr>>,
    _watch: SliceWatch,
}

impl SliceUpdates {
    /// The next change: every known endpoint (static sources and slices, merged) and
    /// the slices' own.
    pub(crate) async fn next(&mut self) -> Option<(Vec<SocketAddr>, Vec<SocketAddr>)> {
        let from_slices = self.updates.recv().await?;
        let mut all: BTreeSet<SocketAddr> = self.statics.iter().copied().collect();
        all.extend(from_slices.iter().copied());
        Some((all.into_iter().collect(), from_slices))
    }
}

/// Gives the rules the static endpoints now; where the cluster can be reached, the
/// EndpointSlices' changes come through the returned [`SliceUpdates`].
pub(crate) fn publish(
    sources: &Sources,
    engine: &Arc<crate::rules::RuleEngine>,
) -> anyhow::Result<Option<SliceUpdates>> {
    let statics = sources.collect();
    engine.set_api_servers(statics.clone());
    let (sender, updates) = tokio::sync::mpsc::unbounded_channel();
    let watch = slices::watch(sources.cluster.as_deref(), move |from_slices| {
        let _ = sender.send(from_slices);
    })?;
    Ok(watch.map(|watch| SliceUpdates {
        statics,
        updates,
        _watch: watch,
    }))
}

/// `KUBERNETES_SERVICE_HOST`/`_PORT` as a pod (the agent's own) sees them.
fn own_pod_env(var: impl Fn(&str) -> Option<String>) -> Option<SocketAddr> {
    let host = var("KUBERNETES_SERVICE_HOST")?;
    let port = var("KUBERNETES_SERVICE_PORT")?.parse().ok()?;
    let ip = host.trim_matches(['[', ']']).parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

/// The `server` of every cluster in a kubeconfig, resolved to addresses; none when the
/// file does not exist.
fn kubeconfig_servers(path: &Path) -> anyhow::Result<Vec<SocketAddr>> {
    #[derive(serde::Deserialize)]
    struct KubeConfig {
        #[serde(default)]
        clusters: Vec<Named>,
    }
    #[derive(serde::Deserialize)]
    struct Named {
        cluster: Cluster,
    }
    #[derive(serde::Deserialize)]
    struct Cluster {
        server: String,
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error.into()),
    };
    let config: KubeConfig = crate::config::parse_yaml(&text)?;
    let mut found = Vec::new();
    for named in config.clusters {
        let url = reqwest::Url::parse(&named.cluster.server)
            .map_err(|e| anyhow::anyhow!("server {:?}: {e}", named.cluster.server))?;
        let host = url
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("server {:?} names no host", named.cluster.server))?;
        let port = url.port_or_known_default().unwrap_or(443);
        let host = host.trim_matches(['[', ']']);
        let addresses = (host, port).to_socket_addrs().map_err(|e| {
            anyhow::anyhow!(
                "server {:?}: cannot resolve {host}: {e}",
                named.cluster.server
            )
        })?;
        found.extend(addresses);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_environment_names_an_endpoint_only_when_complete() {
        let env = |host: &'static str, port: &'static str| {
            move |name: &str| match name {
                "KUBERNETES_SERVICE_HOST" => Some(host.to_owned()),
                "KUBERNETES_SERVICE_PORT" => Some(port.to_owned()),
                _ => None,
            }
        };
        assert_eq!(
            own_pod_env(env("10.96.0.1", "443")),
            Some("10.96.0.1:443".parse().unwrap())
        );
        assert_eq!(
            own_pod_env(env("fd00::1", "6443")),
            Some("[fd00::1]:6443".parse().unwrap())
        );
        assert_eq!(own_pod_env(env("10.96.0.1", "https")), None);
        assert_eq!(own_pod_env(|_| None), None);
    }

    #[test]
    fn a_kubeconfig_names_its_servers() {
        let dir = std::env::temp_dir().join(format!("rulehost-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kubelet.conf");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: default\n  cluster:\n    certificate-authority-data: AAAA\n    server: https://192.0.2.10:6443\n- name: b\n  cluster:\n    server: https://[2001:db8::1]\n",
        )
        .unwrap();
        assert_eq!(
            kubeconfig_servers(&path).unwrap(),
            vec![
                "192.0.2.10:6443".parse().unwrap(),
                "[2001:db8::1]:443".parse().unwrap()
            ]
        );
        assert!(kubeconfig_servers(&dir.join("missing")).unwrap().is_empty());
        std::fs::write(&path, "clusters:\n- cluster:\n    server: not a url\n").unwrap();
        let error = kubeconfig_servers(&path).unwrap_err().to_string();
        assert!(error.contains("not a url"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
