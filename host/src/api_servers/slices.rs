//! The `default/kubernetes` EndpointSlices: where a cluster publishes its API servers'
//! own addresses. Watched through the API server with kube-rs's watcher (list, then
//! watch; after any error it lists again, with backoff), so a changed control plane
//! reaches the rules without a restart. Credentials: `--kubeconfig`, else the pod's
//! service account; neither (not in a cluster): no watch.

use anyhow::{Context, Result};
use futures_util::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// The label the control plane puts on the `kubernetes` Service's slices.
const SELECTOR: &str = "kubernetes.io/service-name=kubernetes";

/// A running watch; stopped when dropped.
pub(crate) struct SliceWatch(tokio::task::JoinHandle<()>);

impl Drop for SliceWatch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the watch on the current runtime when credentials exist; `on_change` gets
/// every endpoint in the slices after the first list and after each change. An
/// unreadable `kubeconfig` is an error; no credentials at all is not.
pub(crate) fn watch(
    kubeconfig: Option<&Path>,
    on_change: impl FnMut(Vec<SocketAddr>) + Send + 'static,
) -> Result<Option<SliceWatch>> {
    let credentials = match kubeconfig {
        Some(path) => Credentials::File(Box::new(
            Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?,
        )),
        None => match Config::incluster() {
            Ok(config) => Credentials::InCluster(Box::new(config)),
            Err(why) => {
                tracing::info!(reason = %why, "not in a cluster: the API server's EndpointSlices are not watched");
                return Ok(None);
            }
        },
    };
    Ok(Some(SliceWatch(tokio::spawn(run(credentials, on_change)))))
}

enum Credentials {
    File(Box<Kubeconfig>),
    InCluster(Box<Config>),
}

async fn run(credentials: Credentials, mut on_change: impl FnMut(Vec<SocketAddr>)) {
    let client = match client(credentials).await {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!(error = %crate::logging::error_line(error.as_ref()), "cannot watch the API server's EndpointSlices");
            return;
        }
    };
    let api: kube::Api<EndpointSlice> = kube::Api::namespaced(client, "default");
    let events = watcher(api, watcher::Config::default().labels(SELECTOR)).default_backoff();
    let mut events = std::pin::pin!(events);
    let mut slices = Slices::default();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => {
                if slices.apply(event) {
                    on_change(slices.endpoints());
                }
            }
            Err(error) => {
                tracing::warn!(error = %crate::logging::error_line(&error), "EndpointSlices watch failed; listing again")
            }
        }
    }
}

async fn client(credentials: Credentials) -> Result<kube::Client> {
    let config = match credentials {
        Credentials::File(kubeconfig) => {
            Config::from_custom_kubeconfig(*kubeconfig, &KubeConfigOptions::default()).await?
        }
        Credentials::InCluster(config) => *config,
    };
    Ok(kube::Client::try_from(config)?)
}

/// The slices as last seen, by name, each as the endpoints it names; a relist builds
/// a fresh set and swaps it in whole when done.
#[derive(Default)]
struct Slices {
    current: BTreeMap<String, Vec<SocketAddr>>,
    relisting: Option<BTreeMap<String, Vec<SocketAddr>>>,
    /// Whether the first list has finished (nothing is reported before).
    listed: bool,
}

impl Slices {
    /// Applies one watcher event; whether the reported set may have changed.
    fn apply(&mut self, event: watcher::Event<EndpointSlice>) -> bool {
        match event {
            watcher::Event::Init => {
                self.relisting = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(slice) => {
                let relisting = self.relisting.get_or_insert_default();
                relisting.insert(name(&slice), endpoints(&slice));
                false
            }
            watcher::Event::InitDone => {
                self.current = self.relisting.take().unwrap_or_default();
                self.listed = true;
                true
            }
            watcher::Event::Apply(slice) => {
                self.current.insert(name(&slice), endpoints(&slice));
                self.listed
            }
            watcher::Event::Delete(slice) => {
                self.current.remove(&name(&slice));
                self.listed
            }
        }
    }

    /// Every endpoint of every slice, sorted, once each.
    fn endpoints(&self) -> Vec<SocketAddr> {
        let mut all: Vec<SocketAddr> = self.current.values().flatten().copied().collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

fn name(slice: &EndpointSlice) -> String {
    slice.metadata.name.clone().unwrap_or_default()
}

/// Every (address, TCP port) pair a slice names; FQDN slices and unparsable addresses
/// name none.
fn endpoints(slice: &EndpointSlice) -> Vec<SocketAddr> {
    let ports: Vec<u16> = slice
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
        .filter_map(|p| u16::try_from(p.port?).ok())
        .collect();
    let mut found = Vec::new();
    for endpoint in &slice.endpoints {
        for address in &endpoint.addresses {
            if let Ok(ip) = address.parse::<IpAddr>() {
                found.extend(ports.iter().map(|&port| SocketAddr::new(ip, port)));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(name: &str, addresses: &[&str], port: i32) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default"},
            "addressType": "IPv4",
            "endpoints": [{"addresses": addresses}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}],
        }))
        .unwrap()
    }

    #[test]
    fn a_relist_replaces_the_set_and_changes_apply_after_it() {
        let mut slices = Slices::default();
        assert!(!slices.apply(watcher::Event::Init));
        assert!(!slices.apply(watcher::Event::InitApply(slice(
            "kubernetes",
            &["192.0.2.10", "192.0.2.11", "not-an-ip"],
            6443
        ))));
        assert!(slices.apply(watcher::Event::InitDone));
        let ips: Vec<String> = slices.endpoints().iter().map(|e| e.to_string()).collect();
        assert_eq!(ips, ["192.0.2.10:6443", "192.0.2.11:6443"]);

        assert!(slices.apply(watcher::Event::Apply(slice(
            "kubernetes",
            &["192.0.2.12"],
            6443
        ))));
        assert_eq!(slices.endpoints(), vec!["192.0.2.12:6443".parse().unwrap()]);
        assert!(slices.apply(watcher::Event::Delete(slice("kubernetes", &[], 0))));
        assert!(slices.endpoints().is_empty());
    }
}
