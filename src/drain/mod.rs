//! Drain strategies: ways to wait until the pod's endpoint is really gone.
//!
//! A strategy is a blocking `wait` that runs on its own thread while the
//! supervisor keeps forwarding signals and reaping. The supervisor never
//! waits for it past the drain deadline: it may abandon a strategy that is
//! stuck in a hanging request, so a strategy must not hold anything that
//! needs cleaning up. Strategies run in the order given (`k8s,traffic`: the
//! endpoint leaves the Service, then inbound traffic goes quiet). When one
//! cannot observe what it needs (API unreachable, no permission), the chain
//! goes on with the next strategy; when it was the last (or the pod is known
//! not to be deleted), the drain falls back to the fixed `--drain-delay`,
//! counted from the stop signal and bounded by the deadline.

#[cfg(feature = "traffic")]
pub mod close_idle;
pub mod delay;
#[cfg(feature = "k8s")]
pub mod k8s;
pub mod ports;
#[cfg(feature = "traffic")]
pub mod traffic;

use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use crate::config::{DrainConfig, Strategy};
use crate::deadline::Budget;

/// What a strategy saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It observed the end it waits for; the text says what it saw.
    Done(String),
    /// It could not observe (fault, no permission, nothing to watch); the
    /// text says why. The chain falls back to the fixed delay.
    Fallback(String),
}

/// How a drain ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    /// Why it ended, for the log and the `/drain` answer.
    pub why: String,
    /// A strategy saw that the pod is not being deleted (its Pod object has
    /// no deletionTimestamp): no endpoint will flip, and a drain asked for
    /// without a real shutdown must not count as done for the next one.
    pub not_deleting: bool,
}

/// Messages a strategy can send to the supervisor while it runs.
pub trait Notify: Send + Sync {
    /// The instant the kubelet will SIGKILL the pod, when it becomes known.
    fn hard_deadline(&self, at: Instant);
}

/// No-op notifier, for modes without a supervisor.
pub struct NoNotify;
impl Notify for NoNotify {
    fn hard_deadline(&self, _: Instant) {}
}

/// Everything a strategy gets to do its job.
pub struct Ctx<'a> {
    /// When the stop signal (or drain request) arrived.
    pub started: Instant,
    /// The drain must be over by then (the supervisor enforces it too);
    /// shared by the strategies of one chain, and moved earlier when the
    /// pod's deletion deadline turns out to be sooner.
    until: &'a Cell<Instant>,
    /// Set where the drain runs without a supervisor to tighten its plan.
    budget: Option<Budget>,
    pub cfg: &'a DrainConfig,
    /// The supervised app, whose sockets the traffic strategy watches.
    pub child_pid: Option<i32>,
    notify: Arc<dyn Notify>,
    /// Set by `not_deleting`.
    not_deleting: &'a Cell<bool>,
}

impl<'a> Ctx<'a> {
    #[cfg(test)]
    pub fn new(started: Instant, until: &'a Cell<Instant>, cfg: &'a DrainConfig, child_pid: Option<i32>, notify: Arc<dyn Notify>) -> Self {
        Ctx { started, until, budget: None, cfg, child_pid, notify, not_deleting: Box::leak(Box::default()) }
    }

    /// Record that the pod is known not to be being deleted (see `Ended`).
    pub fn not_deleting(&self) {
        self.not_deleting.set(true);
    }

    /// The drain must be over by then.
    pub fn until(&self) -> Instant {
        self.until.get()
    }

    /// `until`, further bounded by `--drain-timeout` (for observing strategies).
    pub fn bounded_until(&self) -> Instant {
        match self.cfg.timeout {
            Some(t) => self.until().min(crate::deadline::saturating_add(self.started, t)),
            None => self.until(),
        }
    }

    /// The kubelet's SIGKILL instant became known (the pod's
    /// deletionTimestamp): tell the supervisor, and, where this drain has a
    /// budget of its own (`lastcall drain` without a PID 1), end it early
    /// enough to leave the kill margin and the app's stop budget.
    pub fn hard_deadline(&self, at: Instant) {
        self.notify.hard_deadline(at);
        if let Some(b) = self.budget {
            let end = b.tighten(b.plan(self.started), at).drain_until;
            if end < self.until.get() {
                self.until.set(end);
            }
        }
    }
}

/// Run the configured strategies in order; returns how the drain ended.
/// `budget` is given where no supervisor bounds the drain (see
/// `Ctx::hard_deadline`).
pub fn run(
    cfg: &DrainConfig,
    started: Instant,
    until: Instant,
    budget: Option<Budget>,
    child_pid: Option<i32>,
    notify: Arc<dyn Notify>,
) -> Ended {
    let not_deleting = Cell::new(false);
    let why = chain(cfg, started, until, budget, child_pid, notify, &not_deleting);
    // Last, before the stop signal, within the drain's time: see close_idle.rs.
    #[cfg(feature = "traffic")]
    if !cfg.close_idle.is_empty() {
        close_idle::step(&cfg.close_idle, child_pid, until);
    }
    Ended { why, not_deleting: not_deleting.get() }
}

fn chain(
    cfg: &DrainConfig,
    started: Instant,
    until: Instant,
    budget: Option<Budget>,
    child_pid: Option<i32>,
    notify: Arc<dyn Notify>,
    not_deleting: &Cell<bool>,
) -> String {
    let mut why = String::from("nothing to drain");
    let mut fell_back: Option<String> = None;
    // The traffic strategy's history ends at the stop signal, also when it
    // runs after another strategy.
    #[cfg(feature = "traffic")]
    let mut at_stop = match cfg.strategies.iter().position(|&s| s == Strategy::Traffic) {
        Some(i) if i > 0 => traffic::at_stop(&cfg.ports, child_pid),
        _ => None,
    };
    let until = Cell::new(until);
    for (i, &strategy) in cfg.strategies.iter().enumerate() {
        let ctx = Ctx { started, until: &until, budget, cfg, child_pid, notify: notify.clone(), not_deleting };
        let outcome = match strategy {
            Strategy::Delay => delay::wait(&ctx),
            #[cfg(feature = "k8s")]
            Strategy::K8s => k8s::wait(&ctx),
            #[cfg(feature = "traffic")]
            Strategy::Traffic => traffic::wait(&ctx, at_stop.take()),
            Strategy::PortsClosed => ports::wait(&ctx),
            #[allow(unreachable_patterns)]
            other => Outcome::Fallback(format!("strategy {} is not built in", other.name())),
        };
        match outcome {
            Outcome::Done(seen) => {
                if i + 1 < cfg.strategies.len() {
                    info!(strategy = strategy.name(), seen = %seen, "drain step done");
                }
                why = match fell_back.take() {
                    Some(earlier) => format!("{earlier}; {}: {seen}", strategy.name()),
                    None => format!("{}: {seen}", strategy.name()),
                };
            }
            // A later strategy that observes is better than the fixed
            // delay (`k8s,traffic` with the API down or forbidden: the
            // traffic still shows when the load balancers let go). Not when
            // the pod is known not to be deleted: no endpoint will change.
            Outcome::Fallback(reason) if i + 1 < cfg.strategies.len() && !not_deleting.get() => {
                warn!(strategy = strategy.name(), reason = %reason, "cannot observe the endpoint: going on with the next strategy");
                fell_back = Some(format!("{}: cannot observe: {reason}", strategy.name()));
            }
            Outcome::Fallback(reason) => {
                let fallback_end = crate::deadline::saturating_add(started, cfg.delay).min(until.get());
                warn!(
                    strategy = strategy.name(),
                    reason = %reason,
                    wait_ms = fallback_end.saturating_duration_since(Instant::now()).as_millis(),
                    "cannot observe the endpoint: falling back to --drain-delay"
                );
                delay::sleep_until(fallback_end);
                let earlier = fell_back.map(|e| e + "; ").unwrap_or_default();
                return format!("{earlier}{}: fallback delay after: {reason}", strategy.name());
            }
        }
    }
    why
}

/// Startup self-checks of the configured strategies (e.g. can the k8s
/// strategy list EndpointSlices?). Each problem is one line saying what to do.
pub fn preflight(cfg: &DrainConfig) -> Result<(), String> {
    // The traffic strategy's history starts here (one read of the kernel's
    // counters, nothing more until the stop signal).
    #[cfg(feature = "traffic")]
    if cfg.strategies.contains(&Strategy::Traffic) {
        traffic::note_startup();
    }
    #[cfg(feature = "k8s")]
    if cfg.strategies.contains(&Strategy::K8s) {
        k8s::preflight(cfg)?;
    }
    let _ = cfg;
    Ok(())
}
