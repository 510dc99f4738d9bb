//! A rule's log lines are charged to it: a token bucket per instance (a burst, then a
//! steady rate), with the lines it had to drop counted and reported once per delivery,
//! so a rule cannot flood the host's log or its disk.

use std::time::Instant;

/// Lines a rule may log at once, and per second after that.
pub(crate) const LOG_BURST: f64 = 20.0;
pub(crate) const LOG_PER_SEC: f64 = 10.0;

/// One instance's log budget.
#[derive(Debug)]
pub(crate) struct LogBudget {
    tokens: f64,
    refilled: Instant,
    /// Lines dropped since last taken.
    suppressed: u64,
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget {
            tokens: LOG_BURST,
            refilled: Instant::now(),
            suppressed: 0,
        }
    }
}

impl LogBudget {
    /// Whether a line may be logged at `now`; a dropped line is counted.
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * LOG_PER_SEC).min(LOG_BURST);
        self.refilled = now;
        if self.tokens < 1.0 {
            self.suppressed += 1;
            return false;
        }
        self.tokens -= 1.0;
        true
    }

    /// Lines dropped since last asked.
    /// Counts `lines` dropped before they reached the budget (a rule's output over its
    /// buffer), so they are reported with the rest.
    pub(crate) fn suppress(&mut self, lines: u64) {
        self.suppressed += lines;
    }

    pub(crate) fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_steady_rate_with_drops_counted() {
        let start = Instant::now();
        let mut budget = LogBudget::default();
        let allowed = (0..100).filter(|_| budget.take(start)).count();
        assert_eq!(allowed, LOG_BURST as usize, "the burst, then nothing");
        assert_eq!(budget.take_suppressed(), 100 - LOG_BURST as u64);
        assert_eq!(budget.take_suppressed(), 0, "counted once");
        // A second later, LOG_PER_SEC more.
        let later = start + Duration::from_secs(1);
        let more = (0..100).filter(|_| budget.take(later)).count();
        assert_eq!(more, LOG_PER_SEC as usize);
        assert_eq!(budget.take_suppressed(), 100 - LOG_PER_SEC as u64);
    }
}
