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
use std::fmt::{Display, Write as _};
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use crate::config::{self, DrainConfig};
use crate::deadline::Budget;

/// A drain strategy. Each lives in a file of its own and is chosen by
/// `strategies`; `chain` runs them in order and `preflight` checks them at
/// startup.
pub trait Strategy {
    /// Its name in `--drain`, in the log and in the drain's reason.
    fn name(&self) -> &'static str;

    /// When lastcall starts, before any check: note what the strategy needs
    /// to know from then on (the traffic strategy: the pod's counters).
    /// Quick, and never fails.
    fn at_start(&self) {}

    /// The startup self-check: can the strategy observe here? A problem is
    /// one line saying what to do.
    fn preflight(&self, _cfg: &DrainConfig) -> Result<(), Problem> {
        Ok(())
    }

    /// At the stop signal, when another strategy runs before this one:
    /// note what it must know of that moment (the traffic strategy: what
    /// the pod had received so far).
    fn at_stop(&mut self, _ctx: &Ctx) {}

    /// Wait until the end the strategy observes, within `ctx.until()`.
    fn wait(&mut self, ctx: &Ctx) -> Outcome;
}

/// What a strategy's startup check found wrong, in its own error type.
pub type Problem = Box<dyn std::error::Error + Send + Sync>;

/// A strategy's startup check failed.
#[derive(Debug, thiserror::Error)]
#[error("{strategy} drain: {problem}")]
pub struct PreflightError {
    pub strategy: &'static str,
    pub problem: Problem,
}

/// The strategies of a drain, in order: those `--drain` named, then the
/// sidecar helper's wait for the app's ports (never a `--drain` choice).
fn strategies(cfg: &DrainConfig) -> Vec<Box<dyn Strategy>> {
    let mut chain: Vec<Box<dyn Strategy>> = cfg.strategies.iter().map(|&s| chosen(s)).collect();
    if !cfg.wait_ports.is_empty() {
        chain.push(Box::new(ports::WaitPort));
    }
    chain
}

fn chosen(strategy: config::Strategy) -> Box<dyn Strategy> {
    match strategy {
        config::Strategy::Delay => Box::new(delay::Delay),
        #[cfg(feature = "k8s")]
        config::Strategy::K8s => Box::new(k8s::K8s),
        #[cfg(feature = "traffic")]
        config::Strategy::Traffic => Box::<traffic::Traffic>::default(),
        // config.rs refuses a strategy that is not built in.
        #[allow(unreachable_patterns)]
        other => Box::new(NotBuiltIn(other.name())),
    }
}

struct NotBuiltIn(&'static str);

impl Strategy for NotBuiltIn {
    fn name(&self) -> &'static str {
        self.0
    }

    fn wait(&mut self, _: &Ctx) -> Outcome {
        Outcome::Fallback(format!("strategy {} is not built in", self.0))
    }
}

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
    /// The instant the kubelet will SIGKILL the pod, when it becomes known
    /// (only the k8s strategy reads it, from the pod's deletionTimestamp).
    #[cfg(feature = "k8s")]
    fn hard_deadline(&self, at: Instant);
}

/// No-op notifier, for modes without a supervisor (the sidecar's hub) and
/// for tests.
#[cfg(any(feature = "sidecar", all(test, feature = "k8s")))]
pub struct NoNotify;
#[cfg(any(feature = "sidecar", all(test, feature = "k8s")))]
impl Notify for NoNotify {
    #[cfg(feature = "k8s")]
    fn hard_deadline(&self, _: Instant) {}
}

/// Everything a strategy gets to do its job.
pub struct Ctx<'a> {
    /// When the stop signal (or drain request) arrived.
    pub started: Instant,
    /// The drain must be over by then (the supervisor enforces it too);
    /// shared by the strategies of one chain, and moved earlier when the
    /// pod's deletion deadline turns out to be sooner.
    until: Cell<Instant>,
    pub cfg: &'a DrainConfig,
    /// The supervised app, whose sockets the traffic strategy watches.
    #[cfg(feature = "traffic")]
    pub child_pid: Option<i32>,
    /// Set by `not_deleting`.
    not_deleting: Cell<bool>,
    /// Where a learned hard deadline goes (see `hard_deadline`).
    #[cfg(feature = "k8s")]
    notify: Arc<dyn Notify>,
    /// Set where the drain runs without a supervisor to tighten its plan.
    #[cfg(feature = "k8s")]
    budget: Option<Budget>,
}

impl<'a> Ctx<'a> {
    #[cfg(test)]
    pub fn new(started: Instant, until: Instant, cfg: &'a DrainConfig) -> Self {
        Ctx {
            started,
            until: Cell::new(until),
            cfg,
            #[cfg(feature = "traffic")]
            child_pid: None,
            not_deleting: Cell::new(false),
            #[cfg(feature = "k8s")]
            notify: Arc::new(NoNotify),
            #[cfg(feature = "k8s")]
            budget: None,
        }
    }

    /// Record that the pod is known not to be being deleted (see `Ended`).
    #[cfg(feature = "k8s")]
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
    #[cfg(feature = "k8s")]
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
    // Only the k8s strategy learns a hard deadline, and only the traffic
    // strategy and close_idle look at the app's sockets.
    #[cfg(not(feature = "k8s"))]
    let _ = (budget, notify);
    #[cfg(not(feature = "traffic"))]
    let _ = child_pid;
    let ctx = Ctx {
        started,
        until: Cell::new(until),
        cfg,
        #[cfg(feature = "traffic")]
        child_pid,
        not_deleting: Cell::new(false),
        #[cfg(feature = "k8s")]
        notify,
        #[cfg(feature = "k8s")]
        budget,
    };
    let why = chain(&ctx);
    // Last, before the stop signal, within the drain's time: see close_idle.rs.
    #[cfg(feature = "traffic")]
    if !cfg.close_idle.is_empty() {
        close_idle::step(&cfg.close_idle, child_pid, until);
    }
    Ended { why, not_deleting: ctx.not_deleting.get() }
}

/// The strategies, one after the other, until one observes the end or the
/// last cannot observe; returns why the drain ended.
fn chain(ctx: &Ctx) -> String {
    let mut strategies = strategies(ctx.cfg);
    // The first strategy starts at the stop signal; the ones after it take
    // what they need of that moment now (the traffic strategy's history
    // ends at the stop signal, also when it runs after another strategy).
    for later in strategies.iter_mut().skip(1) {
        later.at_stop(ctx);
    }
    let count = strategies.len();
    let mut why = String::from("nothing to drain");
    let mut fell_back: Option<String> = None;
    for (i, strategy) in strategies.iter_mut().enumerate() {
        let (name, is_last) = (strategy.name(), i + 1 == count);
        match strategy.wait(ctx) {
            Outcome::Done(seen) => {
                if !is_last {
                    info!(strategy = name, seen = %seen, "drain step done");
                }
                why = match fell_back.take() {
                    Some(earlier) => format!("{earlier}; {name}: {seen}"),
                    None => format!("{name}: {seen}"),
                };
            }
            // A later strategy that observes is better than the fixed
            // delay (`k8s,traffic` with the API down or forbidden: the
            // traffic still shows when the load balancers let go). Not when
            // the pod is known not to be deleted: no endpoint will change.
            Outcome::Fallback(reason) if !is_last && !ctx.not_deleting.get() => {
                warn!(strategy = name, reason = %reason, "cannot observe the endpoint: going on with the next strategy");
                fell_back = Some(format!("{name}: cannot observe: {reason}"));
            }
            Outcome::Fallback(reason) => {
                let fallback_end = crate::deadline::saturating_add(ctx.started, ctx.cfg.delay).min(ctx.until());
                warn!(
                    strategy = name,
                    reason = %reason,
                    wait_ms = fallback_end.saturating_duration_since(Instant::now()).as_millis(),
                    "cannot observe the endpoint: falling back to --drain-delay"
                );
                delay::sleep_until(fallback_end);
                let earlier = fell_back.map(|e| e + "; ").unwrap_or_default();
                return format!("{earlier}{name}: fallback delay after: {reason}");
            }
        }
    }
    why
}

/// Startup self-checks of the configured strategies (e.g. can the k8s
/// strategy list EndpointSlices?). Each problem is one line saying what to do.
pub fn preflight(cfg: &DrainConfig) -> Result<(), PreflightError> {
    let strategies = strategies(cfg);
    for s in &strategies {
        s.at_start();
    }
    strategies.iter().try_for_each(|s| s.preflight(cfg).map_err(|problem| PreflightError { strategy: s.name(), problem }))
}

/// `items` separated by commas, for the log (ports, addresses).
pub fn join<T: Display>(items: &[T]) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{item}");
    }
    out
}
