//! Per-container key/value state that the host keeps for each rule.
//!
//! It lives outside any wasm instance so a reload or a fault recovery loses nothing, is
//! scoped to a container handle so it can be dropped when the container goes away, and is
//! bounded so a rule cannot grow the host without limit.

use rustc_hash::FxHashMap;

/// Bounds on one rule's state.
#[derive(Debug, Clone, Copy)]
pub struct StateLimits {
    pub max_containers: usize,
    pub max_keys_per_container: usize,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits {
            max_containers: 65_536,
            max_keys_per_container: 64,
            max_key_bytes: 256,
            max_value_bytes: 16 * 1024,
        }
    }
}

/// Why a write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateRefusal {
    TooManyKeys,
    TooLarge,
    TooManyContainers,
}

/// One rule's state: container handle -> key -> value.
#[derive(Debug, Default)]
pub struct RuleState {
    limits: StateLimits,
    containers: FxHashMap<u64, FxHashMap<String, Vec<u8>>>,
    /// How many writes a bound refused; reported in the host's counters.
    pub refused_writes: u64,
}

impl RuleState {
    pub fn new(limits: StateLimits) -> RuleState {
        RuleState {
            limits,
            ..RuleState::default()
        }
    }

    pub fn get(&self, container: u64, key: &str) -> Option<&[u8]> {
        self.containers.get(&container)?.get(key).map(Vec::as_slice)
    }

    pub fn set(&mut self, container: u64, key: &str, value: Vec<u8>) -> Result<(), StateRefusal> {
        let result = self.try_set(container, key, value);
        if result.is_err() {
            self.refused_writes += 1;
        }
        result
    }

    fn try_set(&mut self, container: u64, key: &str, value: Vec<u8>) -> Result<(), StateRefusal> {
        if key.len() > self.limits.max_key_bytes || value.len() > self.limits.max_value_bytes {
            return Err(StateRefusal::TooLarge);
        }
        if !self.containers.contains_key(&container)
            && self.containers.len() >= self.limits.max_containers
        {
            return Err(StateRefusal::TooManyContainers);
        }
        let entries = self.containers.entry(container).or_default();
        if let Some(slot) = entries.get_mut(key) {
            *slot = value;
            return Ok(());
        }
        if entries.len() >= self.limits.max_keys_per_container {
            return Err(StateRefusal::TooManyKeys);
        }
        entries.insert(key.to_owned(), value);
        Ok(())
    }

    pub fn remove(&mut self, container: u64, key: &str) {
        if let Some(entries) = self.containers.get_mut(&container) {
            entries.remove(key);
            if entries.is_empty() {
                self.containers.remove(&container);
            }
        }
    }

    /// Drops everything kept for a container that went away.
    pub fn evict(&mut self, container: u64) {
        self.containers.remove(&container);
    }

    /// Number of containers with state.
    pub fn containers(&self) -> usize {
        self.containers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> RuleState {
        RuleState::new(StateLimits {
            max_containers: 2,
            max_keys_per_container: 2,
            max_key_bytes: 8,
            max_value_bytes: 4,
        })
    }

    #[test]
    fn scoped_per_container_and_evicted() {
        let mut state = small();
        state.set(1, "k", vec![1]).unwrap();
        state.set(2, "k", vec![2]).unwrap();
        assert_eq!(state.get(1, "k"), Some(&[1u8][..]));
        assert_eq!(state.get(2, "k"), Some(&[2u8][..]));
        state.evict(1);
        assert_eq!(state.get(1, "k"), None);
        assert_eq!(state.get(2, "k"), Some(&[2u8][..]));
    }

    #[test]
    fn bounds_are_enforced_and_counted() {
        let mut state = small();
        assert_eq!(state.set(1, "k", vec![0; 5]), Err(StateRefusal::TooLarge));
        assert_eq!(
            state.set(1, "much-too-long", vec![]),
            Err(StateRefusal::TooLarge)
        );
        state.set(1, "a", vec![]).unwrap();
        state.set(1, "b", vec![]).unwrap();
        assert_eq!(state.set(1, "c", vec![]), Err(StateRefusal::TooManyKeys));
        state.set(1, "a", vec![9]).unwrap(); // replacing never counts as a new key
        state.set(2, "a", vec![]).unwrap();
        assert_eq!(
            state.set(3, "a", vec![]),
            Err(StateRefusal::TooManyContainers)
        );
        assert_eq!(state.refused_writes, 4);
        state.remove(2, "a");
        state.set(3, "a", vec![]).unwrap();
    }
}
