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
//! `step` takes an event and the current time and returns what happened
//! and what to do, both as data. It makes no syscalls, sleeps, threads or
//! log writes, so every (phase, event) pair has a row in the table test
//! below. The supervisor (`supervise.rs`) feeds it events, writes one log
//! line for what happened and performs the actions; it wakes up at
//! `next_wakeup()` to deliver `Tick`. Deadlines come from `deadline.rs` and
//! only ever move earlier.

use std::time::{Duration, Instant};

use crate::deadline::{saturating_add, Budget, Plan};
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
    /// The instant the kubelet will SIGKILL the pod (its deletionTimestamp,
    /// which only the k8s strategy reads).
    #[cfg(any(feature = "k8s", test))]
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

/// What a step did, for the log (one line each, written by the supervisor).
#[derive(Debug, Clone, PartialEq)]
pub enum Happened {
    /// A stop signal (or, `requested`, a preStop drain request) began the
    /// shutdown and a drain of at most `drain_max`.
    Draining { requested: bool, drain_max: Duration, kill_in: Duration },
    /// A drain request with no strategy configured: done at once.
    NothingToDrain { kill_in: Duration },
    /// The stop budget leaves no time to drain.
    NoTimeToDrain { requested: bool, kill_in: Duration },
    /// The drain is over; `cut_short`: by its deadline, not by its strategies.
    DrainEnded { why: String, cut_short: bool },
    /// A second stop signal ends the drain at once.
    SecondStopSignal,
    /// The kubelet's stop signal came while the preStop drain still ran.
    StopDuringRequestedDrain,
    /// The stop signal that follows a preStop drain: no second wait.
    StopAfterRequestedDrain,
    /// Another stop signal while stopping: sent to the app again.
    StopSignalAgain,
    /// A requested drain was followed by no stop signal within its plan.
    NoStopSignalAfterDrain,
    /// The kill deadline came with the app still running.
    GraceDeadline,
    /// The pod's deletion deadline moved the plan earlier.
    #[cfg(any(feature = "k8s", test))]
    DeadlineAdopted { kill_in: Duration },
    /// The main child exited, in `phase`.
    AppExited { exit: ChildExit, phase: Phase },
    /// A stop signal after the app exited, with other processes left.
    StoppingLeftovers,
    /// The processes left after the app did not exit in time.
    LeftoverDeadline,
}

/// The result of one step: what happened (in order, for the log), then
/// what to do.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Step {
    pub happened: Vec<Happened>,
    pub actions: Vec<Action>,
}

impl Step {
    fn act(actions: Vec<Action>) -> Step {
        Step { happened: Vec::new(), actions }
    }

    fn with(mut self, happened: Happened) -> Step {
        self.happened.push(happened);
        self
    }
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
        self.plan.map_or(0, |p| now.saturating_duration_since(p.start).as_millis())
    }

    pub fn step(&mut self, event: Event, now: Instant) -> Step {
        use Event as E;
        use Phase as P;
        match (self.phase, event) {
            (P::Running, E::StopSignal) => self.begin(now, false),
            (P::Running, E::DrainRequest) => self.begin(now, true),

            (P::Draining { requested }, E::StopSignal) => {
                self.stop().with(if requested { Happened::StopDuringRequestedDrain } else { Happened::SecondStopSignal })
            }
            (P::Draining { requested }, E::DrainDone(why)) => self.drain_over(requested, why, false),
            (P::Draining { requested }, E::Tick) if self.plan.is_some_and(|p| now >= p.drain_until) => {
                self.drain_over(requested, "drain budget spent (the app's stop budget starts now)".into(), true)
            }
            (P::Draining { .. }, E::DrainRequest) => Step::default(), // joins the drain under way

            (P::Drained, E::StopSignal) => self.stop().with(Happened::StopAfterRequestedDrain),
            (P::Drained | P::Stopping, E::DrainRequest) => Step::act(vec![Action::DrainFinished]),
            (P::Stopping, E::StopSignal) => Step::act(vec![Action::Stop]).with(Happened::StopSignalAgain),

            (P::Drained, E::Tick) if self.plan.is_some_and(|p| now >= p.kill_at) => {
                // A drain was asked for (a hook run by hand, a test of the
                // preStop path) and no stop signal followed within the whole
                // plan. The app was never sent the stop signal, so it must
                // not be killed: the shutdown is called off.
                self.phase = P::Running;
                self.plan = None;
                Step::default().with(Happened::NoStopSignalAfterDrain)
            }
            (P::Stopping, E::Tick) if self.plan.is_some_and(|p| now >= p.kill_at) => {
                self.phase = P::Killed;
                Step::act(vec![Action::KillAll]).with(Happened::GraceDeadline)
            }

            #[cfg(any(feature = "k8s", test))]
            (_, E::HardDeadline(at)) => {
                let Some(plan) = self.plan else { return Step::default() };
                let tightened = self.settings.budget.tighten(plan, at);
                self.plan = Some(tightened);
                if tightened == plan {
                    return Step::default();
                }
                // Leftovers already waiting for the old kill time wait for the new one.
                if let P::Leftovers { until: Some(until) } = self.phase {
                    self.phase = P::Leftovers { until: Some(until.min(tightened.kill_at)) };
                }
                Step::default().with(Happened::DeadlineAdopted { kill_in: tightened.kill_at.saturating_duration_since(now) })
            }

            (P::Leftovers { .. } | P::Done, E::ChildExited(_)) => Step::default(),
            (phase, E::ChildExited(exit)) => self.child_exited(phase, exit, now),

            (P::Leftovers { until }, E::StopSignal) => {
                // Only with --wait-descendants: the main child is gone, others remain.
                let first = self.plan.is_none();
                let plan = *self.plan.get_or_insert_with(|| self.settings.budget.plan(now));
                self.phase = P::Leftovers { until: Some(until.map_or(plan.kill_at, |u| u.min(plan.kill_at))) };
                let step = Step::act(vec![Action::SignalLeftovers(self.settings.stop_signal)]);
                if first {
                    step.with(Happened::StoppingLeftovers)
                } else {
                    step
                }
            }
            (P::Leftovers { until: Some(until) }, E::Tick) if now >= until => {
                self.phase = P::Killed;
                Step::act(vec![Action::KillAll]).with(Happened::LeftoverDeadline)
            }
            (P::Leftovers { .. } | P::Killed, E::ChildrenGone) => {
                self.phase = P::Done;
                Step::act(self.child.map(Action::Exit).into_iter().collect())
            }
            (P::Leftovers { .. } | P::Killed, E::DrainRequest) => {
                Step::act(vec![if self.child.is_some() { Action::AppExited } else { Action::DrainFinished }])
            }

            _ => Step::default(),
        }
    }

    fn begin(&mut self, now: Instant, requested: bool) -> Step {
        let plan = self.settings.budget.plan(now);
        self.plan = Some(plan);
        let kill_in = plan.kill_at - now;
        if !self.settings.drain {
            if !requested {
                // Nothing to wait for: forward at once. The supervisor logs
                // after sending ("stop signal sent"), so no log line delays
                // the signal.
                return self.stop();
            }
            self.phase = Phase::Drained;
            return Step::act(vec![Action::DrainFinished]).with(Happened::NothingToDrain { kill_in });
        }
        if plan.drain_until <= now {
            let mut step = self.drain_over(requested, "no time to drain".into(), false);
            step.happened.insert(0, Happened::NoTimeToDrain { requested, kill_in });
            return step;
        }
        self.phase = Phase::Draining { requested };
        Step::act(vec![Action::StartDrain { until: plan.drain_until }]).with(Happened::Draining {
            requested,
            drain_max: plan.drain_until - now,
            kill_in,
        })
    }

    fn drain_over(&mut self, requested: bool, why: String, cut_short: bool) -> Step {
        let step = if requested {
            self.phase = Phase::Drained;
            Step::act(vec![Action::DrainFinished])
        } else {
            self.stop()
        };
        step.with(Happened::DrainEnded { why, cut_short })
    }

    /// STOP: the supervisor sends the signal first, then logs it.
    fn stop(&mut self) -> Step {
        self.phase = Phase::Stopping;
        Step::act(vec![Action::Stop, Action::DrainFinished])
    }

    fn child_exited(&mut self, phase: Phase, exit: ChildExit, now: Instant) -> Step {
        self.child = Some(exit);
        let happened = Happened::AppExited { exit, phase };
        let mut actions = vec![Action::AppExited];
        if phase == Phase::Killed {
            return Step::act(actions).with(happened); // everything left was SIGKILLed already
        }
        let kill_at = self.plan.map(|p| p.kill_at);
        let until = if self.settings.wait_descendants {
            kill_at
        } else {
            actions.push(Action::SignalLeftovers(self.settings.stop_signal));
            let bound = saturating_add(now, self.settings.leftover_timeout);
            Some(kill_at.map_or(bound, |k| k.min(bound)))
        };
        self.phase = Phase::Leftovers { until };
        Step::act(actions).with(happened)
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
        assert_eq!(m.step(Event::StopSignal, t0).actions, vec![Action::Stop, Action::DrainFinished]);
        assert_eq!(m.next_wakeup(), Some(t0 + s(28)));
        assert_eq!(m.step(Event::Tick, t0 + s(27)).actions, vec![]);
        assert_eq!(m.step(Event::Tick, t0 + s(28)).actions, vec![Action::KillAll]);
        assert_eq!(m.phase(), Phase::Killed);
        assert_eq!(m.step(Event::ChildExited(ChildExit::Signaled(9)), t0 + s(28)).actions, vec![Action::AppExited]);
        assert_eq!(m.step(Event::ChildrenGone, t0 + s(28)).actions, vec![Action::Exit(ChildExit::Signaled(9))]);
    }

    #[test]
    fn drain_then_stop_when_done() {
        let t0 = Instant::now();
        let mut m = machine(true, false);
        assert_eq!(m.step(Event::StopSignal, t0).actions, vec![Action::StartDrain { until: t0 + s(23) }]);
        assert_eq!(m.next_wakeup(), Some(t0 + s(23)));
        assert_eq!(m.step(Event::DrainDone("gone".into()), t0 + s(4)).actions, vec![Action::Stop, Action::DrainFinished]);
        assert_eq!(m.phase(), Phase::Stopping);
    }

    #[test]
    fn drain_cut_short_by_budget() {
        let t0 = Instant::now();
        let mut m = machine(true, false);
        m.step(Event::StopSignal, t0);
        assert_eq!(m.step(Event::Tick, t0 + s(22)).actions, vec![]);
        assert_eq!(m.step(Event::Tick, t0 + s(23)).actions, vec![Action::Stop, Action::DrainFinished]);
        // A late DrainDone changes nothing.
        assert_eq!(m.step(Event::DrainDone("late".into()), t0 + s(24)).actions, vec![]);
    }

    #[test]
    fn second_stop_signal_skips_drain() {
        let t0 = Instant::now();
        let mut m = machine(true, false);
        m.step(Event::StopSignal, t0);
        assert_eq!(m.step(Event::StopSignal, t0 + s(1)).actions, vec![Action::Stop, Action::DrainFinished]);
        assert_eq!(m.step(Event::StopSignal, t0 + s(2)).actions, vec![Action::Stop]);
    }

    #[test]
    fn child_exit_during_drain_ends_at_once() {
        let t0 = Instant::now();
        let mut m = machine(true, false);
        m.step(Event::StopSignal, t0);
        let a = m.step(Event::ChildExited(ChildExit::Code(3)), t0 + s(1)).actions;
        assert_eq!(a, vec![Action::AppExited, Action::SignalLeftovers(T)]);
        assert_eq!(m.next_wakeup(), Some(t0 + s(3)));
        assert_eq!(m.step(Event::ChildrenGone, t0 + s(1)).actions, vec![Action::Exit(ChildExit::Code(3))]);
    }

    #[test]
    fn leftovers_killed_after_bound() {
        let t0 = Instant::now();
        let mut m = machine(false, false);
        m.step(Event::ChildExited(ChildExit::Code(0)), t0);
        assert_eq!(m.next_wakeup(), Some(t0 + s(2)), "bounded even without a stop signal");
        assert_eq!(m.step(Event::Tick, t0 + s(1)).actions, vec![]);
        assert_eq!(m.step(Event::Tick, t0 + s(2)).actions, vec![Action::KillAll]);
        assert_eq!(m.step(Event::ChildrenGone, t0 + s(2)).actions, vec![Action::Exit(ChildExit::Code(0))]);
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
        assert_eq!(m.step(Event::ChildExited(ChildExit::Code(5)), t0).actions, vec![Action::AppExited]);
        assert_eq!(m.next_wakeup(), None);
        assert_eq!(m.step(Event::StopSignal, t0 + s(100)).actions, vec![Action::SignalLeftovers(T)]);
        assert_eq!(m.next_wakeup(), Some(t0 + s(128)));
        assert_eq!(m.step(Event::Tick, t0 + s(128)).actions, vec![Action::KillAll]);
        assert_eq!(m.step(Event::ChildrenGone, t0 + s(128)).actions, vec![Action::Exit(ChildExit::Code(5))]);
    }

    #[test]
    fn prestop_request_drains_then_waits_for_signal() {
        let t0 = Instant::now();
        let mut m = machine(true, false);
        assert_eq!(m.step(Event::DrainRequest, t0).actions, vec![Action::StartDrain { until: t0 + s(23) }]);
        assert_eq!(m.step(Event::DrainRequest, t0 + s(1)).actions, vec![]);
        assert_eq!(m.step(Event::DrainDone("gone".into()), t0 + s(5)).actions, vec![Action::DrainFinished]);
        assert_eq!(m.phase(), Phase::Drained);
        assert_eq!(m.step(Event::DrainRequest, t0 + s(6)).actions, vec![Action::DrainFinished]);
        // The kubelet's SIGTERM follows: no second wait, and the deadline still counts from t0.
        assert_eq!(m.step(Event::StopSignal, t0 + s(6)).actions, vec![Action::Stop, Action::DrainFinished]);
        assert_eq!(m.next_wakeup(), Some(t0 + s(28)));
    }

    #[test]
    fn drain_request_without_a_stop_signal_never_kills() {
        let t0 = Instant::now();
        let mut m = machine(true, false);
        m.step(Event::DrainRequest, t0);
        assert_eq!(m.step(Event::DrainDone("gone".into()), t0 + s(5)).actions, vec![Action::DrainFinished]);
        assert_eq!(m.next_wakeup(), Some(t0 + s(28)));
        assert_eq!(m.step(Event::Tick, t0 + s(28)).actions, vec![], "no SIGKILL for an app never sent the stop signal");
        assert_eq!(m.phase(), Phase::Running);
        assert_eq!(m.next_wakeup(), None);
        // A stop signal later is a new shutdown, with a drain of its own.
        assert_eq!(m.step(Event::StopSignal, t0 + s(100)).actions, vec![Action::StartDrain { until: t0 + s(123) }]);
    }

    #[test]
    fn prestop_request_without_strategy_is_done_at_once() {
        let t0 = Instant::now();
        let mut m = machine(false, false);
        assert_eq!(m.step(Event::DrainRequest, t0).actions, vec![Action::DrainFinished]);
        assert_eq!(m.phase(), Phase::Drained);
    }

    #[test]
    fn drain_request_after_app_exit_reports_exit() {
        let t0 = Instant::now();
        let mut m = machine(true, true);
        m.step(Event::ChildExited(ChildExit::Code(0)), t0);
        assert_eq!(m.step(Event::DrainRequest, t0).actions, vec![Action::AppExited]);
    }

    #[test]
    fn hard_deadline_moves_kill_earlier() {
        let t0 = Instant::now();
        let mut m = machine(true, false);
        m.step(Event::StopSignal, t0);
        m.step(Event::HardDeadline(t0 + s(10)), t0 + s(1));
        assert_eq!(m.next_wakeup(), Some(t0 + s(3)));
        assert_eq!(m.step(Event::Tick, t0 + s(3)).actions, vec![Action::Stop, Action::DrainFinished]);
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
        assert_eq!(m.step(Event::StopSignal, t0).actions, vec![Action::Stop, Action::DrainFinished]);
    }

    /// A machine (drain configured, grace 30 s, margin 2 s, stop budget 5 s)
    /// brought into `phase`, with its shutdown (if any) begun at `t0`.
    fn in_phase(phase: &str, t0: Instant) -> Shutdown {
        let mut m = machine(true, false);
        let code0 = Event::ChildExited(ChildExit::Code(0));
        let steps: Vec<(Event, Duration)> = match phase {
            "Running" => vec![],
            "Draining" => vec![(Event::StopSignal, s(0))],
            "Draining(requested)" => vec![(Event::DrainRequest, s(0))],
            "Drained" => vec![(Event::DrainRequest, s(0)), (Event::DrainDone("x".into()), s(1))],
            "Stopping" => vec![(Event::StopSignal, s(0)), (Event::StopSignal, s(0))],
            "Leftovers" => vec![(Event::StopSignal, s(0)), (Event::StopSignal, s(0)), (code0, s(1))],
            "Killed" => vec![(Event::StopSignal, s(0)), (Event::StopSignal, s(0)), (Event::Tick, s(28))],
            "Done" => vec![
                (Event::StopSignal, s(0)),
                (Event::StopSignal, s(0)),
                (Event::Tick, s(28)),
                (code0, s(28)),
                (Event::ChildrenGone, s(28)),
            ],
            other => panic!("no phase {other}"),
        };
        for (e, at) in steps {
            m.step(e, t0 + at);
        }
        m
    }

    /// The actions of a step and the phase after it.
    type Outcome = (Vec<Action>, Phase);

    /// Every (phase, event) pair: the actions and the phase after it. Events
    /// come at t0 + 2 s, except the late tick at t0 + 29 s (past the drain
    /// deadline at 23 s and the kill time at 28 s); the deletion deadline
    /// learned is t0 + 10 s.
    #[test]
    fn every_phase_and_event() {
        use Action as A;
        use Phase as P;
        let t0 = Instant::now();
        let leftovers = |secs: u64| P::Leftovers { until: Some(t0 + s(secs)) };
        let events: Vec<(&str, Event, Duration)> = vec![
            ("stop", Event::StopSignal, s(2)),
            ("request", Event::DrainRequest, s(2)),
            ("done", Event::DrainDone("seen".into()), s(2)),
            ("deadline", Event::HardDeadline(t0 + s(10)), s(2)),
            ("exit", Event::ChildExited(ChildExit::Code(0)), s(2)),
            ("gone", Event::ChildrenGone, s(2)),
            ("tick", Event::Tick, s(2)),
            ("late tick", Event::Tick, s(29)),
        ];
        let drain = |from: u64| A::StartDrain { until: t0 + s(from + 23) };
        let stop = vec![A::Stop, A::DrainFinished];
        let exited = vec![A::AppExited, A::SignalLeftovers(T)];
        #[rustfmt::skip]
        let table: Vec<(&str, [Outcome; 8])> = vec![
            ("Running", [
                (vec![drain(2)], P::Draining { requested: false }),
                (vec![drain(2)], P::Draining { requested: true }),
                (vec![], P::Running),
                (vec![], P::Running), // no plan to tighten yet
                (exited.clone(), leftovers(4)),
                (vec![], P::Running),
                (vec![], P::Running),
                (vec![], P::Running),
            ]),
            ("Draining", [
                (stop.clone(), P::Stopping),
                (vec![], P::Draining { requested: false }), // joins the drain
                (stop.clone(), P::Stopping),
                (vec![], P::Draining { requested: false }),
                (exited.clone(), leftovers(4)),
                (vec![], P::Draining { requested: false }),
                (vec![], P::Draining { requested: false }),
                (stop.clone(), P::Stopping), // budget spent
            ]),
            ("Draining(requested)", [
                (stop.clone(), P::Stopping),
                (vec![], P::Draining { requested: true }),
                (vec![A::DrainFinished], P::Drained),
                (vec![], P::Draining { requested: true }),
                (exited.clone(), leftovers(4)),
                (vec![], P::Draining { requested: true }),
                (vec![], P::Draining { requested: true }),
                (vec![A::DrainFinished], P::Drained), // budget spent: no STOP without a signal
            ]),
            ("Drained", [
                (stop.clone(), P::Stopping),
                (vec![A::DrainFinished], P::Drained),
                (vec![], P::Drained),
                (vec![], P::Drained),
                (exited.clone(), leftovers(4)),
                (vec![], P::Drained),
                (vec![], P::Drained),
                (vec![], P::Running), // no stop signal came: never SIGKILL
            ]),
            ("Stopping", [
                (vec![A::Stop], P::Stopping),
                (vec![A::DrainFinished], P::Stopping),
                (vec![], P::Stopping),
                (vec![], P::Stopping),
                (exited.clone(), leftovers(4)),
                (vec![], P::Stopping),
                (vec![], P::Stopping),
                (vec![A::KillAll], P::Killed),
            ]),
            ("Leftovers", [
                (vec![A::SignalLeftovers(T)], leftovers(3)),
                (vec![A::AppExited], leftovers(3)),
                (vec![], leftovers(3)),
                (vec![], leftovers(3)), // the new kill time (8 s) is later than the bound
                (vec![], leftovers(3)),
                (vec![A::Exit(ChildExit::Code(0))], P::Done),
                (vec![], leftovers(3)),
                (vec![A::KillAll], P::Killed),
            ]),
            ("Killed", [
                (vec![], P::Killed),
                (vec![A::DrainFinished], P::Killed),
                (vec![], P::Killed),
                (vec![], P::Killed),
                (vec![A::AppExited], P::Killed),
                (vec![], P::Done),
                (vec![], P::Killed),
                (vec![], P::Killed),
            ]),
            ("Done", [
                (vec![], P::Done),
                (vec![], P::Done),
                (vec![], P::Done),
                (vec![], P::Done),
                (vec![], P::Done),
                (vec![], P::Done),
                (vec![], P::Done),
                (vec![], P::Done),
            ]),
        ];
        for (phase, row) in table {
            for ((name, event, at), (actions, next)) in events.iter().zip(row) {
                let mut m = in_phase(phase, t0);
                let got = m.step(event.clone(), t0 + *at);
                assert_eq!((got.actions, m.phase()), (actions, next), "{phase} + {name}");
            }
        }
    }

    #[test]
    fn a_sooner_deadline_moves_the_leftover_bound() {
        let t0 = Instant::now();
        let mut m = machine(false, true);
        m.step(Event::StopSignal, t0);
        m.step(Event::ChildExited(ChildExit::Code(0)), t0 + s(1));
        assert_eq!(m.phase(), Phase::Leftovers { until: Some(t0 + s(28)) });
        let step = m.step(Event::HardDeadline(t0 + s(10)), t0 + s(2));
        assert_eq!(m.phase(), Phase::Leftovers { until: Some(t0 + s(8)) });
        assert_eq!(step.happened, vec![Happened::DeadlineAdopted { kill_in: s(6) }]);
    }

    #[test]
    fn what_happened_is_reported_in_order() {
        let t0 = Instant::now();
        let mut m = Shutdown::new(Settings {
            budget: Budget { grace: s(5), kill_margin: Some(s(2)), stop_budget: Some(s(5)) },
            drain: true,
            stop_signal: T,
            leftover_timeout: s(2),
            wait_descendants: false,
        });
        let step = m.step(Event::StopSignal, t0);
        assert_eq!(
            step.happened,
            vec![
                Happened::NoTimeToDrain { requested: false, kill_in: s(3) },
                Happened::DrainEnded { why: "no time to drain".into(), cut_short: false }
            ]
        );
        let mut m = machine(true, false);
        assert_eq!(m.step(Event::StopSignal, t0).happened, vec![Happened::Draining { requested: false, drain_max: s(23), kill_in: s(28) }]);
        assert_eq!(m.step(Event::StopSignal, t0 + s(1)).happened, vec![Happened::SecondStopSignal]);
        assert_eq!(m.step(Event::Tick, t0 + s(28)).happened, vec![Happened::GraceDeadline]);
    }
}
