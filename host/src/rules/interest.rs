//! The host side of the world's `interest` import (0.1.2): which connects a rule wants,
//! so the host (and the kernel, when every rule that selects connects says) drops
//! the rest before they cost anything. Held by the host per rule, like state: it
//! survives reloads and faults of the rule.

use super::*;
use std::net::IpAddr;

/// Most addresses one rule may watch; past it the rule gets every connect again.
pub const WATCH_MAX: usize = 1024;

pub use crate::state::DestinationKey;

/// The key of `ip`.
pub fn destination_key(ip: IpAddr) -> DestinationKey {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// What one rule asked for.
#[derive(Debug, Default)]
pub struct Interest {
    /// The rule called `only-watched-connects` (since its current version started).
    only_watched: bool,
    /// The rule reached [`WATCH_MAX`]: it gets every connect.
    overflowed: bool,
    /// The rule watches the API server endpoints the node knows, as they change.
    api_servers: bool,
    watched: rustc_hash::FxHashSet<DestinationKey>,
    /// Watched destinations were added since [`Interest::take_unsaved`].
    unsaved: bool,
}

/// Shared by a rule's slot (which filters its events) and its instance (which adds).
pub type SharedInterest = Arc<Mutex<Interest>>;

impl Interest {
    /// Whether this rule is given a connect to `ip` (`None`: not an IP destination),
    /// with `api_servers` the endpoints the node knows now.
    pub fn admits(&self, ip: Option<IpAddr>, api_servers: &ApiServers) -> bool {
        if !self.filters() {
            return true;
        }
        ip.is_some_and(|ip| {
            let key = destination_key(ip);
            self.watched.contains(&key)
                || (self.api_servers && api_servers.keys().any(|k| k == key))
        })
    }

    /// Every destination this rule watches, the API servers' included.
    pub fn destinations<'a>(
        &'a self,
        api_servers: &'a ApiServers,
    ) -> impl Iterator<Item = DestinationKey> + 'a {
        let servers = self
            .api_servers
            .then(|| api_servers.keys())
            .into_iter()
            .flatten();
        self.watched.iter().copied().chain(servers)
    }

    /// Whether connects to unwatched destinations are dropped for this rule.
    pub fn filters(&self) -> bool {
        self.only_watched && !self.overflowed
    }

    /// A new version of the rule starts: it says again what it wants (its `init`);
    /// the addresses stay (they were learnt from events it will not see again).
    /// Returns what it had said, for [`Interest::resume`] if the new version fails.
    pub fn restart(&mut self) -> (bool, bool) {
        let said = (self.only_watched, self.api_servers);
        self.only_watched = false;
        self.api_servers = false;
        said
    }

    /// Destinations watched before a restart (from the state store), within the bound.
    pub fn restore(&mut self, keys: impl IntoIterator<Item = DestinationKey>) {
        for key in keys {
            if self.watched.len() >= WATCH_MAX {
                break;
            }
            self.watched.insert(key);
        }
    }

    /// Every watched destination, if some were added since the last call (to persist).
    pub fn take_unsaved(&mut self) -> Option<Vec<DestinationKey>> {
        if !std::mem::take(&mut self.unsaved) {
            return None;
        }
        Some(self.watched.iter().copied().collect())
    }

    /// Marks the watched set as not persisted (a write failed).
    pub fn mark_unsaved(&mut self) {
        self.unsaved = true;
    }

    /// Puts back what [`Interest::restart`] returned.
    pub fn resume(&mut self, (only_watched, api_servers): (bool, bool)) {
        self.only_watched = only_watched;
        self.api_servers = api_servers;
    }
}

use bindings::rulehost::rule::interest as wit_interest;

impl wit_interest::Host for InstanceState {
    fn only_watched_connects(&mut self) {
        let mut interest = self.interest.lock().expect("interest lock");
        if !interest.only_watched {
            interest.only_watched = true;
            self.interest_changes.fetch_add(1, Ordering::Release);
        }
    }

    /// Charged to the call's `context` bound, as any call a rule can repeat.
    fn watch_address(&mut self, address: wit::IpAddress) -> bool {
        if !self.charge_context_call() {
            return false;
        }
        let key = destination_key(convert::ip_from_wit(address));
        let mut interest = self.interest.lock().expect("interest lock");
        if interest.watched.contains(&key) {
            return true;
        }
        if interest.watched.len() >= WATCH_MAX {
            if !interest.overflowed {
                interest.overflowed = true;
                self.interest_changes.fetch_add(1, Ordering::Release);
                tracing::warn!(rule = %self.rule_name, max = WATCH_MAX, "rule watches too many addresses: it gets every connect again");
            }
            return false;
        }
        interest.watched.insert(key);
        interest.unsaved = true;
        self.interest_changes.fetch_add(1, Ordering::Release);
        true
    }

    fn watch_api_servers(&mut self) {
        let mut interest = self.interest.lock().expect("interest lock");
        if !interest.api_servers {
            interest.api_servers = true;
            self.interest_changes.fetch_add(1, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_and_its_mapped_form_are_one_destination() {
        let v4: IpAddr = "10.96.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.96.0.1".parse().unwrap();
        assert_eq!(destination_key(v4), destination_key(mapped));
        let servers = ApiServers::default();
        let mut interest = Interest::default();
        assert!(interest.admits(None, &servers), "no filter yet");
        interest.only_watched = true;
        interest.watched.insert(destination_key(v4));
        assert!(interest.admits(Some(mapped), &servers));
        assert!(!interest.admits(Some("10.96.0.2".parse().unwrap()), &servers));
        assert!(!interest.admits(None, &servers));
        interest.overflowed = true;
        assert!(interest.admits(None, &servers));
        interest.overflowed = false;
        let said = interest.restart();
        assert!(interest.admits(Some("10.96.0.2".parse().unwrap()), &servers));
        interest.resume(said);
        assert!(!interest.admits(Some("10.96.0.2".parse().unwrap()), &servers));
    }
}
