//! The CPU deadline of a rule call, counted in CPU time of the calling thread. wasmtime's
//! epoch ticks (wall time) only say when to look: once a call's wall deadline passes, the
//! thread's CPU clock decides whether the rule really spent its budget, or the host was
//! merely preempted (a busy node), in which case the call goes on for what is left.

use std::time::Duration;

/// Granularity of the deadline: one epoch tick.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The budget of the call in flight on a store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallBudget {
    /// The thread's CPU time when the call started.
    started: Duration,
    budget: Duration,
}

impl CallBudget {
    /// Starts a call that may use `budget` of CPU time.
    pub(crate) fn start(budget: Duration) -> CallBudget {
        CallBudget {
            started: thread_cpu_time(),
            budget,
        }
    }

    /// Epoch ticks until the call's wall deadline (CPU time never runs faster).
    pub(crate) fn ticks(&self) -> u64 {
        ticks_for(self.budget)
    }

    /// At a passed wall deadline: the ticks to go on for, or `None` when the CPU budget
    /// is spent.
    pub(crate) fn remaining_ticks(&self) -> Option<u64> {
        let used = thread_cpu_time().saturating_sub(self.started);
        (used < self.budget).then(|| ticks_for(self.budget - used))
    }
}

fn ticks_for(budget: Duration) -> u64 {
    (budget.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1
}

/// CPU time this thread has used.
pub(crate) fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own; this clock always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preempted_call_keeps_its_budget_and_a_busy_one_spends_it() {
        let call = CallBudget::start(Duration::from_millis(20));
        // Sleeping is wall time without CPU time: nothing spent.
        std::thread::sleep(Duration::from_millis(30));
        assert!(call.remaining_ticks().is_some(), "sleep counted as CPU");
        // Spinning spends it: until this thread's own CPU clock moved 40 ms (however
        // long that takes in wall time on a busy machine).
        let spin_from = thread_cpu_time();
        while thread_cpu_time() - spin_from < Duration::from_millis(40) {
            std::hint::black_box(0u64);
        }
        assert_eq!(call.remaining_ticks(), None, "40 ms of CPU left budget");
    }
}
