//! Container handles: the small integers rules see instead of container ids, assigned by
//! the dispatcher and resolved by rule instances (`context.container`); persisted state
//! is keyed by the containers behind them.

use crate::events::Container;
use rustc_hash::FxHashMap;
use std::sync::{Arc, RwLock};

/// Container handles shared by the dispatcher (which assigns them) and rule instances
/// (which resolve them through `context.container`).
#[derive(Debug, Default)]
pub struct ContainerTable {
    by_id: FxHashMap<String, u64>,
    by_handle: FxHashMap<u64, Arc<Container>>,
    next: u64,
}

impl ContainerTable {
    /// The handle for a container, assigning a new one on first sight.
    pub fn intern(&mut self, container: &Container) -> u64 {
        if let Some(&handle) = self.by_id.get(&container.id) {
            return handle;
        }
        self.next += 1;
        self.by_id.insert(container.id.clone(), self.next);
        self.by_handle
            .insert(self.next, Arc::new(container.clone()));
        self.next
    }

    /// The handle already assigned to a container id.
    pub fn handle_of(&self, id: &str) -> Option<u64> {
        self.by_id.get(id).copied()
    }

    pub fn get(&self, handle: u64) -> Option<&Container> {
        self.by_handle.get(&handle).map(|c| &**c)
    }

    /// The container behind a handle, shared (no copy).
    pub fn get_shared(&self, handle: u64) -> Option<Arc<Container>> {
        self.by_handle.get(&handle).cloned()
    }

    /// Forgets a container that went away; returns its handle.
    pub fn remove(&mut self, id: &str) -> Option<u64> {
        let handle = self.by_id.remove(id)?;
        self.by_handle.remove(&handle);
        Some(handle)
    }
}

/// Shared container handle table.
pub type Containers = Arc<RwLock<ContainerTable>>;
