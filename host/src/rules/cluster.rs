//! The host side of the world's `cluster` import (0.1.1): facts about the cluster that
//! every rule instance shares, replaced as a whole when they change.

use super::*;
use std::net::SocketAddr;

/// The API server endpoints the node knows, and a number that moves with them.
#[derive(Debug, Default)]
pub struct ApiServers {
    endpoints: Vec<SocketAddr>,
    generation: u64,
}

impl ApiServers {
    /// The endpoints' addresses as the connect filter keys them.
    pub fn keys(&self) -> impl Iterator<Item = DestinationKey> + '_ {
        self.endpoints.iter().map(|e| destination_key(e.ip()))
    }
}

/// Shared by the engine (which the agent updates) and every instance (which reads).
pub type ClusterFacts = Arc<RwLock<ApiServers>>;

use bindings::rulehost::rule::cluster as wit_cluster;

/// Replaces the endpoints; false (and the generation unmoved) when nothing changed.
pub(super) fn set_api_servers(facts: &ClusterFacts, endpoints: &[SocketAddr]) -> bool {
    let mut facts = facts.write().expect("cluster facts lock");
    if facts.endpoints == endpoints {
        return false;
    }
    facts.endpoints = endpoints.to_vec();
    facts.generation += 1;
    true
}

/// Both are charged to the call's `context` bound, as any call a rule can repeat.
impl wit_cluster::Host for InstanceState {
    fn api_servers(&mut self) -> Vec<wit_cluster::Endpoint> {
        if !self.charge_context_call() {
            return Vec::new();
        }
        let facts = self.cluster.read().expect("cluster facts lock");
        facts
            .endpoints
            .iter()
            .map(|a| wit_cluster::Endpoint {
                address: convert::ip_to_wit(a.ip()),
                port: a.port(),
            })
            .collect()
    }

    fn api_servers_generation(&mut self) -> u64 {
        self.cluster.read().expect("cluster facts lock").generation
    }
}
