//! The shutdown sequence, as one pure state machine.
//!
//! ```text
//!  Running ──stop signal──▶ Draining ──drain done / budget spent──▶ Stopping ──deadline──▶ Killed
//!     │                        │  └──second stop signal──────────────▲   │                    │
//!     └──preStop request──▶ Draining(requested) ──done──▶ Drained ──stop signal──┘            │
//!     ▲                                                      │ no stop signal until the kill time  │
//!     └──────────────────────────────────────────────────────┘                                     │
//!  any phase ──main child exited──▶ Leftovers ──all gone / bound──▶ (Killed) ──all gone──▶ Exit
//! ```
//!
//! `step` takes an event and the current time and returns what to do, as
//! data. It makes no syscalls, sleeps or threads, so every transition has a
//! table test below. The supervisor (`supervise.rs`) feeds it events and
//! performs its actions; it wakes up at `next_wakeup()` to deliver `Tick`.
//! The log lines of the sequence are written here so that the whole story of
//! a shutdown reads top to bottom in one file.

use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::deadline::{Budget, Plan};
use crate::exit_status::ChildExit;
use crate::signals::Signal;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The configured stop signal reached lastcall.
    StopSignal,
    /// `lastcall drain` (a preStop hook) asked to drain now.
    DrainRequest,
    /// The drain strategies finished; the text says why.
    DrainDone(String),
    /// The instant the kubelet will SIGKILL the pod (its deletionTimestamp).
    HardDeadline(Instant),
    /// The main child exited.
    ChildExited(ChildExit),
    /// No process is left to wait for (only sent after the main child exited).
    ChildrenGone,
    /// Time passed; deadlines may have been reached.
    Tick,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Begin the drain strategies; they must be done by `until`.
    StartDrain { until: Instant },
    /// Tell `lastcall drain` clients that the drain is over.
    DrainFinished,
    /// Tell `lastcall drain` clients that the app is gone (nothing to drain for).
    AppExited,
    /// Send the stop signal (after rewriting) to the child.
    Stop,
    /// Send this signal to every process left after the main child exited.
    SignalLeftovers(Signal),
    /// SIGKILL the child's process group and, as PID 1, every process left.
    KillAll,
    /// Exit with the main child's status.
    Exit(ChildExit),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    Running,
    /// `requested`: started by a preStop request, so no STOP at its end.
    Draining {
        requested: bool,
    },
    /// A requested drain is over; waiting for the stop signal.
    Drained,
    Stopping,
    /// The main child is gone; other processes may remain until `until`.
    Leftovers {
        until: Option<Instant>,
    },
    Killed,
    Done,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub budget: Budget,
    /// Whether any drain strategy is configured.
    pub drain: bool,
    pub stop_signal: Signal,
    pub leftover_timeout: Duration,
    pub wait_descendants: bool,
}

#[derive(Debug)]
pub struct Shutdown {
    settings: Settings,
    phase: Phase,
    plan: Option<Plan>,
    child: Option<ChildExit>,
}

/// Milliseconds since the shutdown began, for log lines.
fn ms(plan: Option<Plan>, now: Instant) -> u128 {
    plan.map_or(0, |p| now.saturating_duration_since(p.start).as_millis())
}

impl Shutdown {
    pub fn new(settings: Settings) -> Self {
        Shutdown { settings, phase: Phase::Running, plan: None, child: None }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// When the next deadline falls, if any.
    pub fn next_wakeup(&self) -> Option<Instant> {
        match (self.phase, self.plan) {
            // Leftovers has a bound even when no stop signal ever came.
            (Phase::Leftovers { until }, _) => until,
            (Phase::Draining { .. }, Some(plan)) => Some(plan.drain_until.min(plan.kill_at)),
            (Phase::Drained | Phase::Stopping, Some(plan)) => Some(plan.kill_at),
            _ => None,
        }
    }

    /// Whether the main child has exited.
    pub fn app_exited(&self) -> bool {
        self.child.is_some()
    }

    /// Whether a stop signal or drain request has started the sequence.
    pub fn shutting_down(&self) -> bool {
        self.plan.is_some()
    }

    /// Milliseconds until the planned SIGKILL (0 before the shutdown began).
    pub fn kill_in_ms(&self, now: Instant) -> u128 {
        self.plan.map_or(0, |p| p.kill_at.saturating_duration_since(now).as_millis())
    }

    /// Milliseconds since the shutdown began (0 before it began).
    pub fn elapsed_ms(&self, now: Instant) -> u128 {
        ms(self.plan, now)
    }

    pub fn step(&mut self, event: Event, now: Instant) -> Vec<Action> {
        use Event as E;
        use Phase as P;
        match (self.phase, event) {
            (P::Running, E::StopSignal) => self.begin(now, false),
            (P::Running, E::DrainRequest) => self.begin(now, true),

            (P::Draining { requested }, E::StopSignal) => {
                let t_ms = ms(self.plan, now);
                if requested {
                    info!(t_ms, "stop signal during the preStop drain: stopping now");
                } else {
                    info!(t_ms, "second stop signal: skipping the rest of the drain");
                }
                self.stop()
            }
            (P::Draining { requested }, E::DrainDone(why)) => self.drain_over(now, requested, &why, false),
            (P::Draining { requested }, E::Tick) if self.plan.is_some_and(|p| now >= p.drain_until) => {
                self.drain_over(now, requested, "drain budget spent (the app's stop budget starts now)", true)
            }
            (P::Draining { .. }, E::DrainRequest) => vec![], // joins the drain under way

            (P::Drained, E::StopSignal) => {
                info!(t_ms = ms(self.plan, now), "stop signal after the preStop drain: no second wait");
                self.stop()
            }
            (P::Drained | P::Stopping, E::DrainRequest) => vec![Action::DrainFinished],
            (P::Stopping, E::StopSignal) => {
                debug!(t_ms = ms(self.plan, now), "stop signal again: forwarding it again");
                vec![Action::Stop]
            }

            (P::Drained, E::Tick) if self.plan.is_some_and(|p| now >= p.kill_at) => {
                // A drain was asked for (a hook run by hand, a test of the
                // preStop path) and no stop signal followed within the whole
                // plan. The app was never sent the stop signal, so it must
                // not be killed: the shutdown is called off.
                warn!(t_ms = ms(self.plan, now), "no stop signal followed the drain request: back to running (the app was not stopped)");
                self.phase = P::Running;
                self.plan = None;
                vec![]
            }
            (P::Stopping, E::Tick) if self.plan.is_some_and(|p| now >= p.kill_at) => {
                warn!(t_ms = ms(self.plan, now), "grace deadline reached: sending SIGKILL to the app and every process left");
                self.phase = P::Killed;
                vec![Action::KillAll]
            }

            (_, E::HardDeadline(at)) => {
                if let Some(plan) = self.plan {
                    let tightened = self.settings.budget.tighten(plan, at);
                    if tightened != plan {
                        info!(
                            t_ms = ms(self.plan, now),
                            kill_in_ms = tightened.kill_at.saturating_duration_since(now).as_millis(),
                            "pod deletion deadline is sooner than --grace-period: adopting it"
                        );
                    }
                    self.plan = Some(tightened);
                }
                vec![]
            }

            (P::Leftovers { .. } | P::Done, E::ChildExited(_)) => vec![],
            (phase, E::ChildExited(exit)) => self.child_exited(phase, exit, now),

            (P::Leftovers { until }, E::StopSignal) => {
                // Only with --wait-descendants: the main child is gone, others remain.
                let mut actions = Vec::new();
                if self.plan.is_none() {
                    self.plan = Some(self.settings.budget.plan(now));
                    info!("stop signal received: stopping the processes left");
                }
                let kill_at = self.plan.map(|p| p.kill_at);
                self.phase = P::Leftovers { until: [until, kill_at].into_iter().flatten().min() };
                actions.push(Action::SignalLeftovers(self.settings.stop_signal));
                actions
            }
            (P::Leftovers { until: Some(until) }, E::Tick) if now >= until => {
                warn!(t_ms = ms(self.plan, now), "processes left after the app exited: sending SIGKILL");
                self.phase = P::Killed;
                vec![Action::KillAll]
            }
            (P::Leftovers { .. } | P::Killed, E::ChildrenGone) => {
                self.phase = P::Done;
                match self.child {
                    Some(exit) => vec![Action::Exit(exit)],
                    None => vec![],
                }
            }
            (P::Leftovers { .. } | P::Killed, E::DrainRequest) => {
                vec![if self.child.is_some() { Action::AppExited } else { Action::DrainFinished }]
            }

            _ => vec![],
        }
    }

    fn begin(&mut self, now: Instant, requested: bool) -> Vec<Action> {
        let plan = self.settings.budget.plan(now);
        self.plan = Some(plan);
        let drain_ms = (plan.drain_until - now).as_millis();
        let kill_ms = (plan.kill_at - now).as_millis();
        let what = if requested { "preStop drain requested" } else { "stop signal received" };
        if !self.settings.drain {
            if !requested {
                // Nothing to wait for: forward at once and log afterwards
                // (the supervisor's "stop signal sent" line), so no log
                // formatting delays the signal.
                return self.stop();
            }
            info!(drain = "none", kill_in_ms = kill_ms, "{what}");
            self.phase = Phase::Drained;
            return vec![Action::DrainFinished];
        }
        if plan.drain_until <= now {
            warn!(kill_in_ms = kill_ms, "{what}, but the grace period leaves no time to drain (see --stop-budget)");
            return self.drain_over(now, requested, "no time to drain", false);
        }
        info!(drain_max_ms = drain_ms, kill_in_ms = kill_ms, "{what}: draining");
        self.phase = Phase::Draining { requested };
        vec![Action::StartDrain { until: plan.drain_until }]
    }

    fn drain_over(&mut self, now: Instant, requested: bool, why: &str, cut_short: bool) -> Vec<Action> {
        let t_ms = ms(self.plan, now);
        if cut_short {
            warn!(t_ms, reason = why, "drain ended");
        } else {
            info!(t_ms, reason = why, "drain ended");
        }
        if requested {
            self.phase = Phase::Drained;
            vec![Action::DrainFinished]
        } else {
            self.stop()
        }
    }

    /// STOP: the supervisor sends the signal first, then logs it.
    fn stop(&mut self) -> Vec<Action> {
        self.phase = Phase::Stopping;
        vec![Action::Stop, Action::DrainFinished]
    }

    fn child_exited(&mut self, phase: Phase, exit: ChildExit, now: Instant) -> Vec<Action> {
        self.child = Some(exit);
        let status = match exit {
            ChildExit::Code(c) => format!("exit code {c}"),
            ChildExit::Signaled(s) => format!("killed by {}", Signal(s)),
        };
        match phase {
            Phase::Running => debug!(%status, "app exited"),
            Phase::Draining { .. } => info!(t_ms = ms(self.plan, now), %status, "app exited during the drain: ending now"),
            _ => info!(t_ms = ms(self.plan, now), %status, "app exited"),
        }
        let mut actions = vec![Action::AppExited];
        if phase == Phase::Killed {
            return actions; // everything left was SIGKILLed already
        }
        let kill_at = self.plan.map(|p| p.kill_at);
        let until = if self.settings.wait_descendants {
            kill_at
        } else {
            actions.push(Action::SignalLeftovers(self.settings.stop_signal));
            Some(kill_at.map_or(now + self.settings.leftover_timeout, |k| k.min(now + self.settings.leftover_timeout)))
        };
        self.phase = Phase::Leftovers { until };
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Signal = crate::signals::SIGTERM;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn machine(drain: bool, wait_descendants: bool) -> Shutdown {
        Shutdown::new(Settings {
            budget: Budget { grace: s(30), kill_margin: Some(s(2)), stop_budget: Some(s(5)) },
            drain,
            stop_signal: T,
            leftover_timeout: s(2),
            wait_descendants,
        })
    }

    #[test]
    fn no_drain_stops_at_once_then_kills_at_deadline() {
        let t0 = Instant::now();
        let mut m = machine(false, false);
        assert_eq!(m.step(Event::StopSignal, t0), vec![Action::Stop, Action::DrainFinished]);
        assert_eq!(m.next_wakeup(), Some(t0 + s(28)));
        assert_eq!(m.step(Event::Tick, t0 + s(27)), vec![]);
        assert_eq!(m.step(Event::Tick, t0 + s(28)), vec![Action::KillAll]);
        assert_eq!(m.phase(), Phase::Killed);
        assert_eq!(m.step(Event::ChildExited(ChildExit::Signaled(9)), t0 + s(28)), vec![Action::AppExited]);
        assert_eq!(m.step(Event::ChildrenGone, t0 + s(28)), vec![Action::Exit(ChildExit::Signaled(9))]);
    }

    #[test]
    fn drain_then_stop_when_done() {
        let t0 = Instant::now();
        let mut m = machine(true, false);
        assert_eq!(m.step(Event::StopSignal, t0), vec![Action::StartDrain { until: t0 + s(23) }]);
        assert_eq!(m.next_wakeup(), Some(t0 + s(23)));
        assert_eq!(m.step(Event::DrainDone("gone".into()), t0 + s(4)), vec![Action::Stop, Action::DrainFinished]);
        assert_eq!(m.phase(), Phase::Stopping);
    }

    #[test]
    fn drain_cut_short_by_budget() {
        let t0 = Instant::now();
        let mut m = machine(true, false);
        m.step(Event::StopSignal, t0);
        assert_eq!(m.step(Event::Tick, t0 + s(22)), vec![]);
        assert_eq!(m.step(Event::Tick, t0 + s(23)), vec![Action::Stop, Action::DrainFinished]);
        // A late DrainDone changes nothing.
        assert_eq!(m.step(Event::DrainDone("late".into()), t0 + s(24)), vec![]);
    }

    #[test]
    fn second_stop_signal_skips_drain() {
        let t0 = Instant::now();
        let mut m = machine(true, false);
        m.step(Event::StopSignal, t0);
        assert_eq!(m.step(Event::StopSignal, t0 + s(1)), vec![Action::Stop, Action::DrainFinished]);
        assert_eq!(m.step(Event::StopSignal, t0 + s(2)), vec![Action::Stop]);
    }

    #[test]
    fn child_exit_during_drain_ends_at_once() {
        let t0 = Instant::now();
        let mut m = machine(true, false);
        m.step(Event::StopSignal, t0);
        let a = m.step(Event::ChildExited(ChildExit::Code(3)), t0 + s(1));
        assert_eq!(a, vec![Action::AppExited, Action::SignalLeftovers(T)]);
        assert_eq!(m.next_wakeup(), Some(t0 + s(3)));
        assert_eq!(m.step(Event::ChildrenGone, t0 + s(1)), vec![Action::Exit(ChildExit::Code(3))]);
    }

    #[test]
    fn leftovers_killed_after_bound() {
        let t0 = Instant::now();
        let mut m = machine(false, false);
        m.step(Event::ChildExited(ChildExit::Code(0)), t0);
        assert_eq!(m.next_wakeup(), Some(t0 + s(2)), "bounded even without a stop signal");
        assert_eq!(m.step(Event::Tick, t0 + s(1)), vec![]);
        assert_eq!(m.step(Event::Tick, t0 + s(2)), vec![Action::KillAll]);
        assert_eq!(m.step(Event::ChildrenGone, t0 + s(2)), vec![Action::Exit(ChildExit::Code(0))]);
    }

    #[test]
    fn leftover_bound_never_passes_the_kill_deadline() {
        let t0 = Instant::now();
        let mut m = machine(false, false);
        m.step(Event::StopSignal, t0);
        m.step(Event::ChildExited(ChildExit::Code(0)), t0 + s(27));
        assert_eq!(m.next_wakeup(), Some(t0 + s(28)));
    }

    #[test]
    fn wait_descendants_waits_unbounded_until_stop_signal() {
        let t0 = Instant::now();
        let mut m = machine(false, true);
        assert_eq!(m.step(Event::ChildExited(ChildExit::Code(5)), t0), vec![Action::AppExited]);
        assert_eq!(m.next_wakeup(), None);
        assert_eq!(m.step(Event::StopSignal, t0 + s(100)), vec![Action::SignalLeftovers(T)]);
        assert_eq!(m.next_wakeup(), Some(t0 + s(128)));
        assert_eq!(m.step(Event::Tick, t0 + s(128)), vec![Action::KillAll]);
        assert_eq!(m.step(Event::ChildrenGone, t0 + s(128)), vec![Action::Exit(ChildExit::Code(5))]);
    }

    #[test]
    fn prestop_request_drains_then_waits_for_signal() {
        let t0 = Instant::now();
        let mut m = machine(true, false);
        assert_eq!(m.step(Event::DrainRequest, t0), vec![Action::StartDrain { until: t0 + s(23) }]);
        assert_eq!(m.step(Event::DrainRequest, t0 + s(1)), vec![]);
        assert_eq!(m.step(Event::DrainDone("gone".into()), t0 + s(5)), vec![Action::DrainFinished]);
        assert_eq!(m.phase(), Phase::Drained);
        assert_eq!(m.step(Event::DrainRequest, t0 + s(6)), vec![Action::DrainFinished]);
        // The kubelet's SIGTERM follows: no second wait, and the deadline still counts from t0.
        assert_eq!(m.step(Event::StopSignal, t0 + s(6)), vec![Action::Stop, Action::DrainFinished]);
        assert_eq!(m.next_wakeup(), Some(t0 + s(28)));
    }

    #[test]
    fn drain_request_without_a_stop_signal_never_kills() {
        let t0 = Instant::now();
        let mut m = machine(true, false);
        m.step(Event::DrainRequest, t0);
        assert_eq!(m.step(Event::DrainDone("gone".into()), t0 + s(5)), vec![Action::DrainFinished]);
        assert_eq!(m.next_wakeup(), Some(t0 + s(28)));
        assert_eq!(m.step(Event::Tick, t0 + s(28)), vec![], "no SIGKILL for an app never sent the stop signal");
        assert_eq!(m.phase(), Phase::Running);
        assert_eq!(m.next_wakeup(), None);
        // A stop signal later is a new shutdown, with a drain of its own.
        assert_eq!(m.step(Event::StopSignal, t0 + s(100)), vec![Action::StartDrain { until: t0 + s(123) }]);
    }

    #[test]
    fn prestop_request_without_strategy_is_done_at_once() {
        let t0 = Instant::now();
        let mut m = machine(false, false);
        assert_eq!(m.step(Event::DrainRequest, t0), vec![Action::DrainFinished]);
        assert_eq!(m.phase(), Phase::Drained);
    }

    #[test]
    fn drain_request_after_app_exit_reports_exit() {
        let t0 = Instant::now();
        let mut m = machine(true, true);
        m.step(Event::ChildExited(ChildExit::Code(0)), t0);
        assert_eq!(m.step(Event::DrainRequest, t0), vec![Action::AppExited]);
    }

    #[test]
    fn hard_deadline_moves_kill_earlier() {
        let t0 = Instant::now();
        let mut m = machine(true, false);
        m.step(Event::StopSignal, t0);
        m.step(Event::HardDeadline(t0 + s(10)), t0 + s(1));
        assert_eq!(m.next_wakeup(), Some(t0 + s(3)));
        assert_eq!(m.step(Event::Tick, t0 + s(3)), vec![Action::Stop, Action::DrainFinished]);
        assert_eq!(m.next_wakeup(), Some(t0 + s(8)));
    }

    #[test]
    fn no_time_to_drain_stops_at_once() {
        let t0 = Instant::now();
        let mut m = Shutdown::new(Settings {
            budget: Budget { grace: s(5), kill_margin: Some(s(2)), stop_budget: Some(s(5)) },
            drain: true,
            stop_signal: T,
            leftover_timeout: s(2),
            wait_descendants: false,
        });
        assert_eq!(m.step(Event::StopSignal, t0), vec![Action::Stop, Action::DrainFinished]);
    }
}
