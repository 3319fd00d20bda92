//! The time budget of one shutdown, as pure arithmetic.
//!
//! Kubernetes starts the grace period when it decides to stop the pod:
//! before the preStop hook, and so before the SIGTERM that follows it
//! (kubernetes.io, "Container Lifecycle Hooks": the hook's time counts against
//! the grace period). lastcall counts from the moment the stop signal (or a
//! preStop drain request) arrived, and plans three instants:
//!
//! ```text
//! start ──drain──▶ drain_until ──app stops──▶ kill_at ──margin──▶ start + grace
//!                               (≥ stop_budget)          (kubelet's SIGKILL)
//! ```
//!
//! * `kill_at    = start + grace − kill_margin` (never before `start`)
//! * `drain_until = kill_at − stop_budget`       (never before `start`)
//!
//! A shorter deadline learned later (the pod's `deletionTimestamp`) only
//! ever moves both instants earlier.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub grace: Duration,
    pub kill_margin: Duration,
    pub stop_budget: Duration,
}

/// The planned instants of one shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub start: Instant,
    pub drain_until: Instant,
    pub kill_at: Instant,
}

impl Budget {
    pub fn plan(&self, start: Instant) -> Plan {
        let kill_at = start + self.grace.saturating_sub(self.kill_margin);
        Plan { start, kill_at, drain_until: Self::drain_end(start, kill_at, self.stop_budget) }
    }

    fn drain_end(start: Instant, kill_at: Instant, stop_budget: Duration) -> Instant {
        kill_at.checked_sub(stop_budget).map_or(start, |t| t.max(start))
    }

    /// Adopt an externally known hard deadline (the kubelet's SIGKILL time):
    /// act `kill_margin` before it, and keep the stop budget before that.
    pub fn tighten(&self, plan: Plan, hard_deadline: Instant) -> Plan {
        let kill_at = hard_deadline.checked_sub(self.kill_margin).unwrap_or(plan.start).max(plan.start).min(plan.kill_at);
        Plan { kill_at, drain_until: Self::drain_end(plan.start, kill_at, self.stop_budget).min(plan.drain_until), ..plan }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn budget(grace: u64, margin: u64, stop: u64) -> Budget {
        Budget { grace: s(grace), kill_margin: s(margin), stop_budget: s(stop) }
    }

    #[test]
    fn table() {
        let t0 = Instant::now();
        // (grace, margin, stop_budget) -> (drain_until, kill_at) in seconds after t0
        let cases = [
            ((30, 2, 5), (23, 28)), // the README's worked example
            ((0, 2, 5), (0, 0)),    // zero grace: kill at once, no drain
            ((3, 2, 5), (0, 1)),    // stop budget larger than what's left: no drain
            ((10, 0, 0), (10, 10)), // no margin, no budget
            ((1, 5, 0), (0, 0)),    // margin larger than grace
        ];
        for ((g, m, b), (d, k)) in cases {
            let p = budget(g, m, b).plan(t0);
            assert_eq!((p.drain_until - t0, p.kill_at - t0), (s(d), s(k)), "grace {g} margin {m} budget {b}");
        }
    }

    #[test]
    fn tighten_only_moves_earlier() {
        let t0 = Instant::now();
        let b = budget(30, 2, 5);
        let p = b.plan(t0);
        let earlier = b.tighten(p, t0 + s(10));
        assert_eq!((earlier.drain_until - t0, earlier.kill_at - t0), (s(3), s(8)));
        let later = b.tighten(p, t0 + s(100));
        assert_eq!(later, p);
        // A deadline already past: everything collapses to the start.
        let past = b.tighten(p, t0);
        assert_eq!((past.drain_until, past.kill_at), (t0, t0));
    }
}
