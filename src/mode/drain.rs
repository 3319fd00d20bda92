//! `lastcall drain`: the preStop exec hook, a replacement for `sleep 15`
//! that needs no shell.
//!
//! With a lastcall PID 1 in the container it asks that one to drain now over
//! the control socket, so the grace deadline counts from the hook's start (as
//! Kubernetes counts it) and the SIGTERM that follows the hook is forwarded
//! at once. Without one, it runs the configured strategies itself.
//! Exit status: 0 when the drain is over (or the app is already gone);
//! 1 when the control socket answered nonsense or broke; 2 when there is
//! nothing it could do (no PID 1 to ask, no strategy configured).

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Instant, SystemTime};

use tracing::{error, info, warn};

use crate::config::ShutdownConfig;
use crate::control::{self, ClientError, Reply};
use crate::deadline::Plan;
use crate::drain::{self, Notify};
use crate::logging;
use crate::report::{Cause, Report};

pub fn run(cfg: &ShutdownConfig) -> i32 {
    let start = Instant::now();
    logging::also_to_pid1();
    if let Some(path) = cfg.control_socket.as_deref() {
        match control::request_drain(path, cfg.budget.grace) {
            Ok(Reply::Done) => {
                info!(t_ms = start.elapsed().as_millis(), "preStop hook: drain done by the lastcall PID 1");
                return 0;
            }
            Ok(Reply::Exited) => {
                info!("preStop hook: the app has already exited: nothing to drain");
                return 0;
            }
            Err(ClientError::NotListening(_)) => {}
            Err(e) => {
                error!(error = %e, "preStop hook: cannot ask the lastcall PID 1 to drain");
                return 1;
            }
        }
    }
    if cfg.drain.strategies.is_empty() {
        error!(
            "nothing to do: no lastcall PID 1 listens on the control socket and no drain strategy is set (use --drain or --drain-delay)"
        );
        return crate::exit_status::EXIT_USAGE;
    }
    let plan = cfg.budget.plan(start);
    info!(drain_max_ms = (plan.drain_until - start).as_millis(), "preStop hook: draining (no lastcall PID 1 here)");
    let mut report = Report::new("lastcall drain (preStop hook)");
    report.started = Some((Cause::DrainRequest, SystemTime::now()));
    let t_ms = || start.elapsed().as_millis();
    match drain_within(cfg, start) {
        Some(why) => {
            info!(t_ms = t_ms(), reason = %why, "drain ended");
            report.drain = Some((t_ms(), why, false));
        }
        None => {
            warn!(t_ms = t_ms(), "the drain did not end by its deadline: ending the hook so the app keeps its stop budget");
            report.drain = Some((t_ms(), "it did not end by its deadline".into(), true));
        }
    }
    report.exit_code = Some(0);
    if let Some(log) = &cfg.termination_log {
        report.write(&log.path, log.create);
    }
    0
}

/// How long past its deadline a drain may take to report: the strategies
/// end at the deadline themselves, and this only covers their last steps.
const OVERRUN: std::time::Duration = std::time::Duration::from_millis(100);

/// The drain, on a thread of its own, waited for at most until its plan's
/// end (moved earlier when the pod's deletion deadline is learned): no
/// strategy, however stuck, keeps the hook past it. `None`: it did not end
/// in time (the thread is left behind; the process exits right after).
fn drain_within(cfg: &ShutdownConfig, start: Instant) -> Option<String> {
    let watch = Arc::new(Watch {
        #[cfg(feature = "k8s")]
        budget: cfg.budget,
        plan: Mutex::new(cfg.budget.plan(start)),
        ended: Mutex::new(None),
        changed: Condvar::new(),
    });
    let (drain_cfg, budget, w) = (cfg.drain.clone(), cfg.budget, Arc::clone(&watch));
    let until = watch.plan().drain_until;
    let spawned = std::thread::Builder::new().name("drain".into()).stack_size(512 * 1024).spawn(move || {
        let why = drain::run(&drain_cfg, start, until, Some(budget), None, Arc::clone(&w) as Arc<dyn Notify>).why;
        *w.ended.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        w.changed.notify_all();
    });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the drain thread: no drain");
        return Some(format!("no drain thread: {e}"));
    }
    let mut ended = watch.ended.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if let Some(why) = ended.take() {
            return Some(why);
        }
        let left = (watch.plan().drain_until + OVERRUN).saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        ended = watch.changed.wait_timeout(ended, left).unwrap_or_else(|p| p.into_inner()).0;
    }
}

/// What the waiting hook knows of the drain thread: its end, and its plan
/// as a learned deletion deadline tightens it.
struct Watch {
    /// To tighten the plan with (only the k8s strategy learns a deadline).
    #[cfg(feature = "k8s")]
    budget: crate::deadline::Budget,
    plan: Mutex<Plan>,
    ended: Mutex<Option<String>>,
    changed: Condvar,
}

impl Watch {
    fn plan(&self) -> Plan {
        *self.plan.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Notify for Watch {
    #[cfg(feature = "k8s")]
    fn hard_deadline(&self, at: Instant) {
        let mut plan = self.plan.lock().unwrap_or_else(|p| p.into_inner());
        *plan = self.budget.tighten(*plan, at);
        drop(plan);
        // Take the ended lock so the waiter is either before its check or
        // already waiting: the wake-up is never lost.
        let _ended = self.ended.lock().unwrap_or_else(|p| p.into_inner());
        self.changed.notify_all();
    }
}
