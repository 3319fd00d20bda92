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
//! The kill margin and the stop budget default to 2 s and 5 s, made for the
//! usual 30 s grace period; a short grace period would have nothing left to
//! drain with them (5 s − 2 s − 5 s). Left to their default they scale:
//! the margin is a tenth of the grace period and the stop budget 30 % of
//! it, each at most its default. So 30 s keeps 2 s and 5 s (23 s to drain),
//! 10 s gives 1 s and 3 s (6 s to drain), 5 s gives 0.5 s and 1.5 s (3 s to
//! drain). Values given on the command line are used as given (`config.rs`
//! checks that they fit the grace period).
//!
//! A shorter deadline learned later (the pod's `deletionTimestamp`) only
//! ever moves both instants earlier; the scaled defaults are then taken
//! from the time actually left. Instants never overflow: every addition
//! saturates (durations are at most a year, `config::MAX_DURATION`).

use std::time::{Duration, Instant};

/// Default kill margin, for grace periods of 20 s and more.
const KILL_MARGIN: Duration = Duration::from_secs(2);
/// Default stop budget, for grace periods of 16.7 s and more.
const STOP_BUDGET: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub grace: Duration,
    /// None: scaled with the grace period (see the module doc).
    pub kill_margin: Option<Duration>,
    /// None: scaled with the grace period (see the module doc).
    pub stop_budget: Option<Duration>,
}

/// The planned instants of one shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub start: Instant,
    pub drain_until: Instant,
    pub kill_at: Instant,
}

/// `t + d`, or the latest instant this clock can represent past `t`.
pub fn saturating_add(t: Instant, d: Duration) -> Instant {
    let mut d = d;
    loop {
        if let Some(later) = t.checked_add(d) {
            return later;
        }
        d /= 2;
    }
}

impl Budget {
    /// The kill margin for a grace period of `grace`.
    pub fn margin_for(&self, grace: Duration) -> Duration {
        self.kill_margin.unwrap_or_else(|| KILL_MARGIN.min(grace / 10))
    }

    /// The stop budget for a grace period of `grace`.
    pub fn stop_for(&self, grace: Duration) -> Duration {
        self.stop_budget.unwrap_or_else(|| STOP_BUDGET.min(grace / 10 * 3))
    }

    pub fn plan(&self, start: Instant) -> Plan {
        let kill_at = saturating_add(start, self.grace.saturating_sub(self.margin_for(self.grace)));
        Plan { start, kill_at, drain_until: Self::drain_end(start, kill_at, self.stop_for(self.grace)) }
    }

    fn drain_end(start: Instant, kill_at: Instant, stop_budget: Duration) -> Instant {
        kill_at.checked_sub(stop_budget).map_or(start, |t| t.max(start))
    }

    /// Adopt an externally known hard deadline (the kubelet's SIGKILL time):
    /// act the kill margin before it, and keep the stop budget before that,
    /// both for the grace period that is really left.
    #[cfg(any(feature = "k8s", test))]
    pub fn tighten(&self, plan: Plan, hard_deadline: Instant) -> Plan {
        // The grace period really left: never more than the configured one,
        // whose plan a later deadline does not change.
        let left = hard_deadline.saturating_duration_since(plan.start).min(self.grace);
        let kill_at = hard_deadline.checked_sub(self.margin_for(left)).unwrap_or(plan.start).max(plan.start).min(plan.kill_at);
        Plan { kill_at, drain_until: Self::drain_end(plan.start, kill_at, self.stop_for(left)).min(plan.drain_until), ..plan }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn budget(grace: u64, margin: u64, stop: u64) -> Budget {
        Budget { grace: s(grace), kill_margin: Some(s(margin)), stop_budget: Some(s(stop)) }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
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

    #[test]
    fn defaults_scale_with_short_grace_periods() {
        let t0 = Instant::now();
        let auto = |g: u64| Budget { grace: ms(g), kill_margin: None, stop_budget: None };
        // grace (ms) -> (drain_until, kill_at) in ms after t0
        for (g, (d, k)) in [(30_000, (23_000, 28_000)), (10_000, (6_000, 9_000)), (5_000, (3_000, 4_500)), (1_000, (600, 900))] {
            let p = auto(g).plan(t0);
            assert_eq!((p.drain_until - t0, p.kill_at - t0), (ms(d), ms(k)), "grace {g}ms");
        }
        // `kubectl delete --grace-period=5` seen through the deletionTimestamp:
        // the scaled values follow the time really left.
        let p = auto(30_000).tighten(auto(30_000).plan(t0), t0 + ms(5_000));
        assert_eq!((p.drain_until - t0, p.kill_at - t0), (ms(3_000), ms(4_500)));
        // One given, one scaled.
        let b = Budget { grace: s(10), kill_margin: Some(s(2)), stop_budget: None };
        let p = b.plan(t0);
        assert_eq!((p.drain_until - t0, p.kill_at - t0), (s(5), s(8)));
    }

    #[test]
    fn a_later_deletion_deadline_changes_nothing_for_scaled_defaults() {
        // --grace-period 10s (scaled: margin 1 s, stop budget 3 s) and a pod
        // whose deletion deadline is 30 s away: the plan must not move.
        let t0 = Instant::now();
        let b = Budget { grace: s(10), kill_margin: None, stop_budget: None };
        let p = b.plan(t0);
        assert_eq!(b.tighten(p, t0 + s(30)), p);
    }

    #[test]
    fn instants_never_overflow() {
        let t0 = Instant::now();
        let far = saturating_add(t0, Duration::MAX);
        assert!(far > t0);
        let b = Budget { grace: Duration::MAX, kill_margin: None, stop_budget: None };
        let p = b.plan(t0);
        assert!(p.kill_at > t0 && p.drain_until <= p.kill_at);
    }
}
