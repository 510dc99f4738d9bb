//! The rule's read-through cache of containers' address sets. Pure code, unit-tested
//! natively.

use crate::AddressSet;
use rulehost_sdk::ContainerHandle;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Most containers a cache holds before it starts over.
pub(crate) const CACHE_CAPACITY: usize = 4096;

/// The containers' address sets by handle, and the last one used: a container's events
/// come in runs, so most events find their set without hashing.
#[derive(Default)]
pub(crate) struct Cache {
    at: HashMap<ContainerHandle, usize, BuildHasherDefault<HandleHasher>>,
    sets: Vec<AddressSet>,
    last: Option<(ContainerHandle, usize)>,
}

impl Cache {
    /// The container's set, if this instance has it.
    pub(crate) fn get(&mut self, container: ContainerHandle) -> Option<&mut AddressSet> {
        let at = match self.last {
            Some((last, at)) if last == container => at,
            _ => {
                let at = *self.at.get(&container)?;
                self.last = Some((container, at));
                at
            }
        };
        self.sets.get_mut(at)
    }

    /// Keeps `set` as the container's, starting over when full.
    pub(crate) fn insert(
        &mut self,
        container: ContainerHandle,
        set: AddressSet,
    ) -> &mut AddressSet {
        if self.sets.len() >= CACHE_CAPACITY {
            self.at.clear();
            self.sets.clear();
        }
        let at = self.sets.len();
        self.at.insert(container, at);
        self.sets.push(set);
        self.last = Some((container, at));
        &mut self.sets[at]
    }
}

/// Container handles are small host-assigned integers, not attacker-chosen keys: a
/// multiplicative hash is enough and far cheaper than SipHash inside wasm.
#[derive(Default)]
struct HandleHasher(u64);

impl Hasher for HandleHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 =
                (self.0.rotate_left(5) ^ u64::from(byte)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn set_of(last_octet: u8) -> AddressSet {
        let mut set = AddressSet::default();
        set.insert(IpAddr::V4(Ipv4Addr::new(10, 96, 0, last_octet)));
        set
    }

    #[test]
    fn each_container_finds_its_own_set_whichever_was_used_last() {
        let mut cache = Cache::default();
        cache.insert(7, set_of(1));
        cache.insert(9, set_of(2));
        assert_eq!(cache.get(9), Some(&mut set_of(2)), "the last one used");
        assert_eq!(cache.get(7), Some(&mut set_of(1)), "found by hashing");
        assert_eq!(
            cache.get(7),
            Some(&mut set_of(1)),
            "the last one used again"
        );
        assert_eq!(cache.get(8), None, "never inserted");
        assert_eq!(cache.get(9), Some(&mut set_of(2)));
    }

    #[test]
    fn a_full_cache_starts_over_and_forgets_the_last_one_too() {
        let mut cache = Cache::default();
        for handle in 0..CACHE_CAPACITY as u64 {
            cache.insert(handle, set_of(1));
        }
        assert!(cache.get(0).is_some());
        cache.insert(CACHE_CAPACITY as u64, set_of(2));
        assert_eq!(cache.get(0), None, "forgotten when the cache started over");
        assert_eq!(cache.get(CACHE_CAPACITY as u64), Some(&mut set_of(2)));
    }
}
