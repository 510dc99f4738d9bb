//! Per-rule budgets: a rule written in JavaScript or Python carries its language runtime
//! (10 to 20 MiB, seconds to compile, a bigger heap), so the bounds a Rust rule never
//! nears can be raised for one rule, by its name (the file's stem), from the config file,
//! without raising them for every rule:
//!
//! ```yaml
//! budgets:
//!   my_python_rule: {max_mib: 48, memory_mib: 128, compile_cpu_secs: 60, compile_memory_mib: 2048}
//! ```

use super::*;

/// The largest a budget may raise a rule file's size to, and so the most any rule file
/// is read or fetched before it is refused.
pub const MAX_BUDGET_BYTES: usize = 256 << 20;

/// One rule's bounds over the defaults; a field left out keeps the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleBudget {
    /// Largest rule file, in MiB (default 32, at most 256).
    pub max_mib: Option<usize>,
    /// Linear memory an instance may grow to, in MiB.
    pub memory_mib: Option<usize>,
    /// CPU seconds compiling it may take.
    pub compile_cpu_secs: Option<u64>,
    /// Memory compiling it may take, in MiB.
    pub compile_memory_mib: Option<u64>,
}

impl RuleBudget {
    /// Refuses a budget over what any rule may have.
    pub fn check(&self) -> Result<()> {
        if let Some(max) = self.max_mib
            && !(1..=MAX_BUDGET_BYTES >> 20).contains(&max)
        {
            bail!(
                "max_mib {max} is outside 1..={} MiB",
                MAX_BUDGET_BYTES >> 20
            );
        }
        Ok(())
    }
}

/// The bounds one rule is loaded and run under: the defaults with its budget applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleBounds {
    pub max_bytes: usize,
    pub memory_bytes: usize,
    pub compile: CompileLimits,
}

impl Limits {
    /// The bounds of the rule called `name`.
    pub fn bounds_of(&self, name: &str) -> RuleBounds {
        let budget = self.budgets.get(name).copied().unwrap_or_default();
        RuleBounds {
            max_bytes: budget
                .max_mib
                .map_or(self.max_rule_bytes, |mib| mib << 20)
                .min(MAX_BUDGET_BYTES),
            memory_bytes: budget.memory_mib.map_or(self.memory_bytes, |mib| mib << 20),
            compile: CompileLimits {
                cpu_secs: budget.compile_cpu_secs.unwrap_or(self.compile.cpu_secs),
                memory_bytes: budget
                    .compile_memory_mib
                    .map_or(self.compile.memory_bytes, |mib| mib << 20),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_raises_only_its_own_rules_bounds() {
        let mut limits = Limits::default();
        limits.budgets.insert(
            "py".into(),
            RuleBudget {
                max_mib: Some(48),
                memory_mib: Some(128),
                ..RuleBudget::default()
            },
        );
        let py = limits.bounds_of("py");
        assert_eq!((py.max_bytes, py.memory_bytes), (48 << 20, 128 << 20));
        assert_eq!(py.compile, limits.compile);
        let other = limits.bounds_of("other");
        assert_eq!(
            (other.max_bytes, other.memory_bytes),
            (MAX_RULE_BYTES, 64 << 20)
        );
        assert!(
            RuleBudget {
                max_mib: Some(1024),
                ..RuleBudget::default()
            }
            .check()
            .is_err()
        );
    }
}
