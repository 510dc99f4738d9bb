//! Per-container key/value state that the host keeps for each rule.
//!
//! It lives outside any wasm instance so a reload or a fault recovery loses nothing, is
//! scoped to a container handle so it can be dropped when the container goes away, and is
//! bounded so a rule cannot grow the host without limit.
//!
//! When the dispatcher persists state (`Dispatcher::persist_to`), a `RuleState` also
//! records which (container, key) entries changed since the last write to disk; the
//! dispatcher takes those [`Changes`] after each batch and writes them in one
//! transaction. Without persistence nothing is recorded (one branch per write).

mod handles;
pub mod store;

pub use handles::{ContainerTable, Containers};

/// An IP address as the kernel filter keys it: IPv4 as its IPv4-mapped IPv6 form, so
/// `10.96.0.1` and `::ffff:10.96.0.1` are one destination.
pub type DestinationKey = [u8; 16];

use rustc_hash::{FxHashMap, FxHashSet};

/// Bounds on one rule's state.
#[derive(Debug, Clone, Copy)]
pub struct StateLimits {
    pub max_containers: usize,
    pub max_keys_per_container: usize,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// Key and value bytes one rule may hold in all, over every container: the
    /// per-container bounds alone would multiply to tens of GiB.
    pub max_total_bytes: usize,
}

impl Default for StateLimits {
    fn default() -> Self {
        StateLimits {
            max_containers: 65_536,
            max_keys_per_container: 64,
            max_key_bytes: 256,
            max_value_bytes: 16 * 1024,
            max_total_bytes: 64 << 20,
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
    /// Key and value bytes held, charged against `limits.max_total_bytes`.
    bytes: usize,
    /// How many writes a bound refused; reported in the host's counters.
    pub refused_writes: u64,
    /// Entries changed since the changes were last taken; `None` while not recording.
    changes: Option<Changes>,
}

/// The (container handle, key) entries of a [`RuleState`] that were set or removed since
/// the last time they were taken. Their current value (or absence) is read from the
/// state when they are written out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    keys: FxHashMap<u64, FxHashSet<String>>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Changed entries, grouped by container handle.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &FxHashSet<String>)> {
        self.keys.iter().map(|(&container, keys)| (container, keys))
    }

    fn note(&mut self, container: u64, key: &str) {
        let keys = self.keys.entry(container).or_default();
        if !keys.contains(key) {
            keys.insert(key.to_owned());
        }
    }

    /// Adds `other`'s entries (changes taken earlier and not written after all).
    fn merge(&mut self, other: Changes) {
        if self.keys.is_empty() {
            self.keys = other.keys;
            return;
        }
        for (container, keys) in other.keys {
            self.keys.entry(container).or_default().extend(keys);
        }
    }
}

impl RuleState {
    pub fn new(limits: StateLimits) -> RuleState {
        RuleState {
            limits,
            ..RuleState::default()
        }
    }

    /// Whether the rule holds any state for `container`.
    pub fn holds(&self, container: u64) -> bool {
        self.containers.contains_key(&container)
    }

    pub fn get(&self, container: u64, key: &str) -> Option<&[u8]> {
        self.containers.get(&container)?.get(key).map(Vec::as_slice)
    }

    pub fn set(&mut self, container: u64, key: &str, value: Vec<u8>) -> Result<(), StateRefusal> {
        let result = self.try_set(container, key, value);
        match (&result, &mut self.changes) {
            (Err(_), _) => self.refused_writes += 1,
            (Ok(()), Some(changes)) => changes.note(container, key),
            (Ok(()), None) => {}
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
        let held = self
            .get(container, key)
            .map_or(0, |old| key.len() + old.len());
        let bytes = self.bytes - held + key.len() + value.len();
        if bytes > self.limits.max_total_bytes {
            return Err(StateRefusal::TooLarge);
        }
        let entries = self.containers.entry(container).or_default();
        if let Some(slot) = entries.get_mut(key) {
            *slot = value;
            self.bytes = bytes;
            return Ok(());
        }
        if entries.len() >= self.limits.max_keys_per_container {
            if entries.is_empty() {
                self.containers.remove(&container);
            }
            return Err(StateRefusal::TooManyKeys);
        }
        entries.insert(key.to_owned(), value);
        self.bytes = bytes;
        Ok(())
    }

    /// Key and value bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn remove(&mut self, container: u64, key: &str) {
        if let Some(entries) = self.containers.get_mut(&container) {
            let removed = entries.remove(key);
            if entries.is_empty() {
                self.containers.remove(&container);
            }
            if let Some(value) = removed {
                self.bytes -= key.len() + value.len();
                if let Some(changes) = &mut self.changes {
                    changes.note(container, key);
                }
            }
        }
    }

    /// Drops everything kept for a container that went away, including its recorded
    /// changes (the dispatcher deletes the container's rows on disk as a whole).
    pub fn evict(&mut self, container: u64) {
        if let Some(entries) = self.containers.remove(&container) {
            self.bytes -= entries
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        }
        if let Some(changes) = &mut self.changes {
            changes.keys.remove(&container);
        }
    }

    /// Restores an entry read back from disk: kept within the bounds, never replacing a
    /// value already held, and not recorded as a change. Returns whether it was taken.
    pub fn restore(&mut self, container: u64, key: &str, value: &[u8]) -> bool {
        if self.get(container, key).is_some() {
            return false;
        }
        self.try_set(container, key, value.to_vec()).is_ok()
    }

    /// Starts recording changes (a no-op if already recording).
    pub fn record_changes(&mut self) {
        self.changes.get_or_insert_default();
    }

    /// Stops recording changes, dropping those recorded.
    pub fn stop_recording_changes(&mut self) {
        self.changes = None;
    }

    /// Whether changes are being recorded.
    pub fn records_changes(&self) -> bool {
        self.changes.is_some()
    }

    /// Whether some change was recorded and not taken yet.
    pub fn has_changes(&self) -> bool {
        self.changes.as_ref().is_some_and(|c| !c.is_empty())
    }

    /// Takes the changes recorded so far, leaving recording on; `None` if not recording.
    pub fn take_changes(&mut self) -> Option<Changes> {
        self.changes.as_mut().map(std::mem::take)
    }

    /// Gives back changes taken by [`RuleState::take_changes`] (their write failed, or
    /// the state moved to a new instance): recording is on afterwards if `changes` is
    /// `Some`, and they are merged with any recorded since.
    pub fn resume_changes(&mut self, changes: Option<Changes>) {
        if let Some(changes) = changes {
            self.changes.get_or_insert_default().merge(changes);
        }
    }

    /// Records every entry held as changed (so all of it is written out next time).
    pub fn mark_all_changed(&mut self) {
        let changes = self.changes.get_or_insert_default();
        for (&container, entries) in &self.containers {
            for key in entries.keys() {
                changes.note(container, key);
            }
        }
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
            max_total_bytes: 1 << 20,
        })
    }

    #[test]
    fn every_byte_is_charged_to_the_rule_budget() {
        let mut state = RuleState::new(StateLimits {
            max_total_bytes: 10,
            ..StateLimits::default()
        });
        state.set(1, "ab", vec![0; 4]).unwrap(); // 6 bytes
        assert_eq!(state.set(2, "cd", vec![0; 3]), Err(StateRefusal::TooLarge));
        assert_eq!(
            state.containers(),
            1,
            "a refused write leaves no container behind"
        );
        state.set(2, "cd", vec![0; 2]).unwrap(); // 10 bytes: at the budget
        assert_eq!(state.bytes(), 10);
        // Replacing a value is charged the difference only.
        state.set(1, "ab", vec![0; 3]).unwrap();
        assert_eq!(state.bytes(), 9);
        state.remove(2, "cd");
        assert_eq!(state.bytes(), 5);
        state.evict(1);
        assert_eq!(state.bytes(), 0);
        assert_eq!(state.refused_writes, 1);
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
    fn changes_are_recorded_only_when_asked() {
        let mut state = small();
        state.set(1, "a", vec![1]).unwrap();
        assert!(!state.records_changes());
        assert_eq!(state.take_changes(), None);

        state.record_changes();
        assert!(!state.has_changes());
        state.set(1, "b", vec![2]).unwrap();
        state.remove(1, "missing"); // nothing changed
        assert_eq!(state.set(1, "c", vec![]), Err(StateRefusal::TooManyKeys));
        state.set(2, "a", vec![3]).unwrap();
        state.remove(2, "a");
        let changes = state.take_changes().unwrap();
        let mut seen: Vec<(u64, String)> = changes
            .iter()
            .flat_map(|(c, keys)| keys.iter().map(move |k| (c, k.clone())))
            .collect();
        seen.sort();
        assert_eq!(seen, [(1, "b".to_owned()), (2, "a".to_owned())]);
        assert!(!state.has_changes() && state.records_changes());

        // Given back (a failed write), merged with later ones; eviction drops a container's.
        state.set(1, "b", vec![4]).unwrap();
        state.resume_changes(Some(changes));
        state.evict(2);
        let changes = state.take_changes().unwrap();
        assert_eq!(changes.iter().count(), 1);

        // Restored entries are not changes, never replace a value, and obey the bounds.
        assert!(!state.restore(1, "b", &[9]));
        assert_eq!(state.get(1, "b"), Some(&[4u8][..]));
        assert!(state.restore(3, "x", &[1]));
        assert!(!state.restore(3, "y", &[0; 5]));
        assert!(!state.has_changes());

        state.mark_all_changed();
        assert_eq!(state.take_changes().unwrap().iter().count(), 2);
        state.stop_recording_changes();
        state.set(1, "a", vec![]).unwrap();
        assert_eq!(state.take_changes(), None);
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
