//! What one rule instance may allocate, counted over everything it has: the memory cap
//! covers all its linear memories together (a component can declare several), table
//! elements likewise, and the counts of instances, memories and tables are bounded.
//! Reaching a bound traps (a fault the host reports), never a failed allocation the rule
//! might misreport or spin on.

use wasmtime::{Result, bail};

/// Most core instances, memories and tables one rule instance may create.
const MAX_INSTANCES: usize = 16;
const MAX_MEMORIES: usize = 4;
const MAX_TABLES: usize = 16;
/// Table elements over all tables.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// A store's resource limiter for one rule instance.
#[derive(Debug)]
pub(crate) struct RuleLimiter {
    memory_cap: usize,
    memory_bytes: usize,
    table_elements: usize,
}

impl RuleLimiter {
    pub(crate) fn new(memory_cap: usize) -> RuleLimiter {
        RuleLimiter {
            memory_cap,
            memory_bytes: 0,
            table_elements: 0,
        }
    }
}

impl RuleLimiter {
    /// Linear memory the instance holds now, in bytes.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }
}

impl wasmtime::ResourceLimiter for RuleLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> Result<bool> {
        let total = self.memory_bytes - current.min(self.memory_bytes) + desired;
        if total > self.memory_cap {
            bail!(
                "growing memory to {} MiB in all, over the rule's cap of {} MiB",
                total >> 20,
                self.memory_cap >> 20
            );
        }
        self.memory_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> Result<bool> {
        let total = self.table_elements - current.min(self.table_elements) + desired;
        if total > MAX_TABLE_ELEMENTS {
            bail!(
                "growing tables to {total} elements in all, over the cap of {MAX_TABLE_ELEMENTS}"
            );
        }
        self.table_elements = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn the_cap_covers_every_memory_together() {
        let mut limiter = RuleLimiter::new(64 << 20);
        // Two memories of 40 MiB each: the second goes over 64 MiB in all.
        assert!(limiter.memory_growing(0, 40 << 20, None).unwrap());
        let error = limiter.memory_growing(0, 40 << 20, None).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("growing memory to 80 MiB in all"),
            "{error}"
        );
        // Growing the first within the cap still works; it is charged the difference.
        assert!(limiter.memory_growing(40 << 20, 60 << 20, None).unwrap());
        assert!(limiter.memory_growing(60 << 20, 65 << 20, None).is_err());
    }
}
