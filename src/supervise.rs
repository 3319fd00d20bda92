//! The supervisor: the PID 1 checklist (prepare, spawn, loop), and the one
//! loop that blocks in one place, feeds the shutdown state machine and
//! carries out what it decides.
//!
//! Everything that can happen arrives as readable bytes on a descriptor,
//! and the loop sleeps in poll(2) on all of them with a timeout set to the
//! next deadline:
//! * a signalfd with every forwarded signal and SIGCHLD (see
//!   `signals::SignalSource` for why signalfd),
//! * the inbox's wake-up pipe, written by the drain thread after it queues
//!   an `Event`,
//! * the control socket and its connected clients (`control::Server`),
//! * stderr, while log lines wait for room in a full pipe (`logging`).
//!
//! In the steady state (the app running) lastcall has no other thread: a
//! drain thread exists only during a drain.
//!
//! Once the child exists lastcall never bails out: an error is logged and
//! the loop goes on, since PID 1 exiting would SIGKILL the whole container
//! (catatonit's rule). The only ways out are the child's exit, the kill
//! deadline, and a SIGKILL that the kernel refused (then exiting is what
//! kills the rest).

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::getpid;
use tracing::{debug, error, info, warn};

use crate::child::{self, Child};
use crate::config::{InitConfig, ShutdownConfig};
use crate::control::{self, Reply};
use crate::exit_status::{ChildExit, Failure};
use crate::reaper::{self, Remaining};
use crate::report::{AppEnd, Cause, Kill, Report};
use crate::shutdown::{Action, Event, Happened, Phase, Settings, Shutdown};
use crate::signals::{self, Signal, SignalSource, SIGCHLD, SIGKILL};
use crate::{drain, logging};

/// The loop's inbox, for the events the drain thread sends: a queue plus a
/// wake-up pipe; cheap to clone into threads. (A Mutex<Vec> rather than
/// std's mpsc channel: a handful of messages per shutdown, and some 15 KB
/// less binary.)
#[derive(Clone)]
pub struct Inbox {
    queue: Arc<Mutex<Vec<Event>>>,
    wake: Arc<UnixStream>,
}

impl Inbox {
    pub fn send(&self, event: Event) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).push(event);
        // A full pipe already means "wake up"; nothing else to do.
        let _ = (&*self.wake).write(&[1]);
    }

    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl drain::Notify for Inbox {
    #[cfg(feature = "k8s")]
    fn hard_deadline(&self, at: Instant) {
        self.send(Event::HardDeadline(at));
    }
}

/// When the stop signal first reached lastcall: the program's one clock
/// for it (the sidecar reads it for its late-request window and to tell a
/// real shutdown from a stray drain request).
static STOPPED_AT: OnceLock<Instant> = OnceLock::new();

#[cfg_attr(not(feature = "sidecar"), allow(dead_code))] // read by the sidecar only
pub fn stopped_at() -> Option<Instant> {
    STOPPED_AT.get().copied()
}

/// Records the stop signal's arrival; only the first one counts. The
/// supervisor's loop calls it, and the sidecar without a helper, which has
/// no supervisor.
pub fn note_stop(at: Instant) {
    STOPPED_AT.get_or_init(|| at);
}

/// Block the signals the supervisor handles and open their signalfd. The
/// blocked mask is inherited by threads started afterwards, so call it
/// before starting any (the sidecar calls it early for that reason).
pub fn install_signal_source() -> Result<SignalSource, Failure> {
    SignalSource::install(signals::forwarded().chain([SIGCHLD.0])).map_err(|e| Failure::Setup { what: "signal handling", source: e })
}

/// Run `init.command` under lastcall and return the exit code for lastcall:
/// tini's checklist.
pub fn run(init: &InitConfig, shutdown: &ShutdownConfig) -> Result<i32, Failure> {
    let is_pid1 = getpid().as_raw() == 1;
    configure_process(init, is_pid1);
    // Signals are blocked and queued before the child starts, so none sent
    // to lastcall in between is lost; the child unblocks them before exec.
    let signals = install_signal_source()?;
    let (inbox, wake) = inbox()?;
    let control = listen_for_hooks(init, shutdown);
    preflight(shutdown)?;
    // The app starts in lastcall's working directory; lastcall itself moves
    // to / before the app exists (see child::spawn).
    let child = child::spawn(&init.command)?;
    debug!(pid = child.pid.as_raw(), command = ?init.command, "app started");
    Supervisor::new(init, shutdown, is_pid1, child, signals, inbox, wake, control).run()
}

/// Subreaper (when not PID 1), parent-death signal, ignored signals.
fn configure_process(init: &InitConfig, is_pid1: bool) {
    if !is_pid1 {
        if let Err(e) = reaper::become_subreaper() {
            warn!(error = %e, "not PID 1 and cannot become a child subreaper: orphans of the app will not be reaped by lastcall");
        }
    }
    if let Some(sig) = init.pdeathsig {
        if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::try_from(sig.0).ok()) {
            warn!(signal = %sig, error = %e, "cannot set the parent-death signal");
        }
    }
    for &sig in signals::IGNORED {
        if let Ok(sig) = nix::sys::signal::Signal::try_from(sig) {
            // SAFETY: nix marks signal() unsafe for the handler code it may
            // install; SIG_IGN installs none.
            let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) };
        }
    }
}

/// The drain thread's inbox and the loop's end of its wake-up pipe.
fn inbox() -> Result<(Inbox, UnixStream), Failure> {
    let setup = |source| Failure::Setup { what: "wake pipe", source };
    let (wake_read, wake_write) = UnixStream::pair().map_err(setup)?;
    wake_read.set_nonblocking(true).map_err(setup)?;
    wake_write.set_nonblocking(true).map_err(setup)?;
    Ok((Inbox { queue: Arc::default(), wake: Arc::new(wake_write) }, wake_read))
}

/// The control socket for `lastcall drain` hooks. Bound before spawning:
/// umask is process-wide and must not race a thread.
fn listen_for_hooks(init: &InitConfig, shutdown: &ShutdownConfig) -> Option<control::Server> {
    if init.rewrites.apply(shutdown.stop_signal).is_none() {
        warn!(signal = %shutdown.stop_signal, "--rewrite drops the stop signal: the app will get no signal to stop on");
    }
    let path = shutdown.control_socket.as_deref()?;
    match control::listen(path) {
        Ok(server) => Some(server),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "no control socket: a `lastcall drain` hook cannot reach this PID 1 and will drain on its own");
            None
        }
    }
}

/// Fail fast, before the first rollout: can the strategies observe at all?
/// With `--strict` a problem stops lastcall (exit 78); otherwise it is
/// checked on a thread and logged as a warning.
fn preflight(shutdown: &ShutdownConfig) -> Result<(), Failure> {
    if shutdown.drain.k8s.strict {
        return Ok(drain::preflight(&shutdown.drain)?);
    }
    if !shutdown.drain.is_empty() {
        let cfg = shutdown.drain.clone();
        let _ = std::thread::Builder::new().name("preflight".into()).stack_size(512 * 1024).spawn(move || {
            if let Err(problem) = drain::preflight(&cfg) {
                warn!(%problem, "drain strategy check failed");
            }
        });
    }
    Ok(())
}

/// What poll(2) found ready.
struct Ready {
    signals: bool,
    wake: bool,
    log: bool,
    control: bool,
}

struct Supervisor<'a> {
    init: &'a InitConfig,
    shutdown: &'a ShutdownConfig,
    is_pid1: bool,
    child: Child,
    machine: Shutdown,
    signals: SignalSource,
    inbox: Inbox,
    wake: UnixStream,
    control: Option<control::Server>,
    /// Raised when the drain under way is no longer wanted.
    drain_cancel: Option<Arc<AtomicBool>>,
    /// Whether lastcall had children left at the last reap.
    remaining: Remaining,
    /// A SIGCHLD came (or the loop just started): reap before anything else.
    reap_due: bool,
    /// Start-up's pages were given back (see `wait`).
    released: bool,
    /// The termination report, filled in as the shutdown goes.
    report: Report,
}

impl<'a> Supervisor<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        init: &'a InitConfig,
        shutdown: &'a ShutdownConfig,
        is_pid1: bool,
        child: Child,
        signals: SignalSource,
        inbox: Inbox,
        wake: UnixStream,
        control: Option<control::Server>,
    ) -> Self {
        let machine = Shutdown::new(Settings {
            budget: shutdown.budget,
            drain: !shutdown.drain.is_empty(),
            stop_signal: shutdown.stop_signal,
            leftover_timeout: init.leftover_timeout,
            wait_descendants: init.wait_descendants,
        });
        // Reap at the first turn too: a child may have exited before the loop.
        Supervisor {
            init,
            shutdown,
            is_pid1,
            child,
            machine,
            signals,
            inbox,
            wake,
            control,
            drain_cancel: None,
            remaining: Remaining::Some,
            reap_due: true,
            released: false,
            report: Report::new("lastcall"),
        }
    }

    /// Run until exit, then write the termination report.
    fn run(mut self) -> Result<i32, Failure> {
        let code = self.run_loop();
        self.report.exit_code = Some(code);
        if let Some(log) = &self.shutdown.termination_log {
            self.report.write(&log.path, log.create);
        }
        // Events still being posted get a moment (the app is gone already).
        #[cfg(feature = "k8s")]
        drain::k8s::events::flush(std::time::Duration::from_secs(1));
        Ok(code)
    }

    /// Gather events, step the machine, perform its actions; until exit.
    fn run_loop(&mut self) -> i32 {
        loop {
            let ready = self.wait();
            let now = Instant::now();
            for event in self.gather(ready, now) {
                let t_ms = self.machine.elapsed_ms(now);
                let step = self.machine.step(event, now);
                for happened in &step.happened {
                    self.log(happened, t_ms, now);
                    self.note(happened, t_ms);
                }
                for action in step.actions {
                    if let Some(code) = self.perform(action, now) {
                        return code;
                    }
                }
            }
            self.silence_abandoned_drain();
            if let Some(code) = self.settle(now) {
                return code;
            }
        }
    }

    /// Sleep in poll(2) until a descriptor is ready or the next deadline.
    fn wait(&mut self) -> Ready {
        let wakeup = [self.machine.next_wakeup(), self.control.as_ref().and_then(control::Server::next_wakeup)].into_iter().flatten().min();
        let timeout = match wakeup {
            None => PollTimeout::NONE,
            Some(t) => {
                // Round up so a wake-up never comes just before the deadline.
                let ms = t.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000);
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = vec![PollFd::new(self.signals.fd(), PollFlags::POLLIN), PollFd::new(self.wake.as_fd(), PollFlags::POLLIN)];
        // Log lines held back while stderr was full go out when it has room.
        let log_fd = logging::backlog_fd();
        fds.extend(log_fd.map(|fd| PollFd::new(fd, PollFlags::POLLOUT)));
        let first_control = fds.len();
        if let Some(server) = &self.control {
            fds.extend(server.fds(Instant::now()).map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
        }
        if !self.released {
            // The first time the loop is about to sleep, the app runs and
            // everything that only start-up needed (and the loop's first
            // turn) is done: give its pages back right before blocking, so
            // that only the few pages poll(2) itself returns through are
            // mapped again while the app runs (memory.rs).
            crate::memory::release_startup_pages();
            self.released = true;
        }
        let _ = poll(&mut fds, timeout); // EINTR is a wake-up like any other
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        Ready {
            signals: ready(&fds[0]),
            wake: ready(&fds[1]),
            log: log_fd.is_some() && ready(&fds[2]),
            control: fds[first_control..].iter().any(ready),
        }
    }

    /// The events of this turn, in order; signals other than the stop
    /// signal are forwarded right here, before anything else is done.
    fn gather(&mut self, ready: Ready, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        if ready.signals {
            for sig in self.signals.pending() {
                if sig == SIGCHLD {
                    self.reap_due = true;
                } else if sig == self.shutdown.stop_signal {
                    note_stop(now);
                    events.push(Event::StopSignal);
                } else {
                    self.forward(sig);
                }
            }
        }
        if ready.wake {
            let mut sink = [0u8; 64];
            while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
            events.extend(self.inbox.take());
        }
        if ready.log {
            logging::flush();
        }
        if let Some(server) = &mut self.control {
            // Also without a ready descriptor: silent clients time out.
            let due = ready.control || server.next_wakeup().is_some_and(|t| now >= t);
            if due && server.service(now) > 0 {
                events.push(Event::DrainRequest);
            }
        }
        if std::mem::take(&mut self.reap_due) {
            let main_pid = self.child.pid;
            self.remaining = reaper::reap(|pid, status| {
                if pid == main_pid {
                    events.push(Event::ChildExited(ChildExit::from_wait(status)));
                } else {
                    debug!(pid = pid.as_raw(), "reaped an orphan");
                }
            });
        }
        events.push(Event::Tick);
        events
    }

    /// Forward a signal that is not the stop signal, at once.
    fn forward(&self, sig: Signal) {
        if self.machine.app_exited() {
            debug!(signal = %sig, "signal received after the app exited: not forwarded");
            return;
        }
        match self.init.rewrites.apply(sig) {
            None => debug!(signal = %sig, "signal dropped by --rewrite"),
            Some(to) => match child::signal(self.child, to, self.init.process_group) {
                Ok(()) => debug!(received = %sig, sent = %to, "signal forwarded"),
                Err(e) => debug!(signal = %to, error = %e, "forwarding failed"),
            },
        }
    }

    /// Keep for the termination report what the machine says happened.
    fn note(&mut self, happened: &Happened, t_ms: u128) {
        let r = &mut self.report;
        let cause = |requested: bool| if requested { Cause::DrainRequest } else { Cause::StopSignal(self.shutdown.stop_signal) };
        match happened {
            Happened::Draining { requested, .. } | Happened::NoTimeToDrain { requested, .. } => {
                r.started = Some((cause(*requested), SystemTime::now()));
            }
            Happened::NothingToDrain { .. } => r.started = Some((Cause::DrainRequest, SystemTime::now())),
            Happened::DrainEnded { why, cut_short } => r.drain = Some((t_ms, why.clone(), *cut_short)),
            Happened::NoStopSignalAfterDrain => self.report = Report::new("lastcall"),
            Happened::AppExited { exit, phase } => {
                let during_drain = matches!(phase, Phase::Draining { .. });
                if during_drain {
                    r.drain = Some((t_ms, "the app exited during the drain".into(), false));
                }
                r.app = Some(AppEnd { exit: *exit, t_ms: r.started.is_some().then_some(t_ms), during_drain });
            }
            _ => {}
        }
    }

    /// One log line for what the machine says happened.
    fn log(&self, happened: &Happened, t_ms: u128, now: Instant) {
        let ms = |d: std::time::Duration| d.as_millis();
        match happened {
            Happened::Draining { requested: false, drain_max, kill_in } => {
                info!(drain_max_ms = ms(*drain_max), kill_in_ms = ms(*kill_in), "stop signal received: draining")
            }
            Happened::Draining { requested: true, drain_max, kill_in } => {
                info!(drain_max_ms = ms(*drain_max), kill_in_ms = ms(*kill_in), "preStop drain requested: draining")
            }
            Happened::NothingToDrain { kill_in } => info!(drain = "none", kill_in_ms = ms(*kill_in), "preStop drain requested"),
            Happened::NoTimeToDrain { requested, kill_in } => {
                let signal = if *requested { "preStop drain request" } else { "stop signal" };
                warn!(received = signal, kill_in_ms = ms(*kill_in), "the grace period leaves no time to drain (see --stop-budget)")
            }
            Happened::DrainEnded { why, cut_short: true } => warn!(t_ms, reason = %why, "drain ended"),
            Happened::DrainEnded { why, cut_short: false } => info!(t_ms, reason = %why, "drain ended"),
            Happened::SecondStopSignal => info!(t_ms, "second stop signal: skipping the rest of the drain"),
            Happened::StopDuringRequestedDrain => info!(t_ms, "stop signal during the preStop drain: stopping now"),
            Happened::StopAfterRequestedDrain => info!(t_ms, "stop signal after the preStop drain: no second wait"),
            Happened::StopSignalAgain => debug!(t_ms, "stop signal again: forwarding it again"),
            Happened::NoStopSignalAfterDrain => {
                warn!(t_ms, "no stop signal followed the drain request: back to running (the app was not stopped)")
            }
            Happened::GraceDeadline => warn!(t_ms, "grace deadline reached: sending SIGKILL to the app and every process left"),
            #[cfg(any(feature = "k8s", test))]
            Happened::DeadlineAdopted { kill_in } => {
                info!(t_ms, kill_in_ms = ms(*kill_in), "pod deletion deadline is sooner than --grace-period: adopting it")
            }
            Happened::AppExited { exit, phase } => {
                let status = match *exit {
                    ChildExit::Code(c) => format!("exit code {c}"),
                    ChildExit::Signaled(s) => format!("killed by {}", Signal(s)),
                };
                match phase {
                    Phase::Running => debug!(%status, "app exited"),
                    Phase::Draining { .. } => info!(t_ms, %status, "app exited during the drain: ending now"),
                    _ => info!(t_ms, %status, "app exited"),
                }
            }
            Happened::StoppingLeftovers => info!("stop signal received: stopping the processes left"),
            Happened::LeftoverDeadline => {
                warn!(t_ms = self.machine.elapsed_ms(now), "processes left after the app exited: sending SIGKILL")
            }
        }
    }

    /// Carry out one action; `Some(code)` when lastcall must exit now.
    fn perform(&mut self, action: Action, now: Instant) -> Option<i32> {
        let t_ms = self.machine.elapsed_ms(now);
        match action {
            Action::StartDrain { until } => self.start_drain(now, until),
            Action::DrainFinished => self.answer(Reply::Done),
            Action::AppExited => self.answer(Reply::Exited),
            Action::Stop => self.stop(t_ms, now),
            Action::SignalLeftovers(sig) => {
                if self.remaining == Remaining::None {
                    return None; // the usual case: the app left nothing behind
                }
                let left = leftovers(self.is_pid1);
                if !left.is_empty() {
                    warn!(t_ms, signal = %sig, count = left.len(), processes = %left.join(" "), "processes left after the app exited: signalling them");
                    let _ = reaper::signal_all(sig, self.is_pid1, self.child.pid);
                }
            }
            Action::KillAll => {
                let killed = reaper::signal_all(SIGKILL, self.is_pid1, self.child.pid);
                // Listed after the kill (the dead stay in /proc until reaped),
                // so no /proc walk delays it.
                let left = leftovers(self.is_pid1);
                if let Err(e) = killed {
                    // Typically EPERM: the app made itself another user
                    // (set-user-ID) and a non-root lastcall may not signal
                    // it. Staying would only overrun the grace period; as
                    // PID 1, exiting makes the kernel kill every process in
                    // the namespace.
                    error!(t_ms, error = %e, count = left.len(), processes = %left.join(" "), "SIGKILL failed: exiting so that the processes left die with the container");
                    self.report.kill = Some(Kill::Failed { t_ms, error: e.to_string() });
                    return Some(128 + SIGKILL.0);
                }
                warn!(t_ms, count = left.len(), processes = %left.join(" "), "SIGKILL sent");
                self.report.kill = Some(Kill::Sent { t_ms, processes: left.len() });
                #[cfg(feature = "k8s")]
                drain::k8s::events::killed(&self.shutdown.drain.k8s, t_ms, left.len());
            }
            Action::Exit(exit) => {
                let code = self.init.remap.exit_code(exit);
                if self.machine.shutting_down() {
                    info!(t_ms, code, "exiting");
                } else {
                    debug!(code, "exiting");
                }
                return Some(code);
            }
        }
        None
    }

    /// Run the drain strategies on a thread of their own; they report back
    /// through the inbox.
    fn start_drain(&mut self, now: Instant, until: Instant) {
        let cfg = self.shutdown.drain.clone();
        let inbox = self.inbox.clone();
        let pid = self.child.pid.as_raw();
        let cancel = Arc::new(AtomicBool::new(false));
        self.drain_cancel = Some(Arc::clone(&cancel));
        let spawned = std::thread::Builder::new().name("drain".into()).stack_size(512 * 1024).spawn(move || {
            logging::mute_this_thread_when(cancel);
            let why = drain::run(&cfg, now, until, None, Some(pid), Arc::new(inbox.clone())).why;
            inbox.send(Event::DrainDone(why));
        });
        if let Err(e) = spawned {
            error!(error = %e, "cannot start the drain thread: stopping without a drain");
            self.inbox.send(Event::DrainDone(format!("no drain thread: {e}")));
        }
    }

    /// Send the (possibly rewritten) stop signal, then log it.
    fn stop(&mut self, t_ms: u128, now: Instant) {
        let sig = self.shutdown.stop_signal;
        // Without a drain, the machine reports nothing before the signal goes.
        self.report.started.get_or_insert_with(|| (Cause::StopSignal(sig), SystemTime::now()));
        let Some(to) = self.init.rewrites.apply(sig) else {
            debug!(t_ms, signal = %sig, "stop signal dropped by --rewrite");
            return;
        };
        let sent = child::signal(self.child, to, self.init.process_group);
        // Let the app run first: on a single CPU it would otherwise wait
        // for the log line below (whose code pages may have to be mapped
        // back in, see memory.rs).
        std::thread::yield_now();
        let target = if self.init.process_group { "process group" } else { "process" };
        let kill_in_ms = self.machine.kill_in_ms(now);
        if sent.is_ok() && self.report.stop_sent.is_none() {
            self.report.stop_sent = Some((to, t_ms));
            // The drain's story as an event, once the signal is on its way.
            #[cfg(feature = "k8s")]
            if let Some((ms, why, cut_short)) = &self.report.drain {
                drain::k8s::events::drain_ended(&self.shutdown.drain.k8s, *ms, why, *cut_short);
            }
        }
        match sent {
            Ok(()) => info!(t_ms, signal = %to, pid = self.child.pid.as_raw(), target, kill_in_ms, "stop signal sent to the app"),
            Err(e) => warn!(t_ms, signal = %to, error = %e, "could not send the stop signal"),
        }
    }

    fn answer(&mut self, reply: Reply) {
        if let Some(server) = &mut self.control {
            server.answer(reply);
        }
    }

    /// A drain the machine no longer waits for (a second stop signal, the
    /// app's exit, the budget spent) may still be running: silence it.
    fn silence_abandoned_drain(&mut self) {
        if !matches!(self.machine.phase(), Phase::Draining { .. }) {
            if let Some(cancel) = self.drain_cancel.take() {
                cancel.store(true, Ordering::Relaxed);
            }
        }
    }

    /// After the app exited: exit once nothing is left; keep killing
    /// orphans that arrive late.
    fn settle(&mut self, now: Instant) -> Option<i32> {
        match (self.machine.phase(), self.remaining) {
            (Phase::Leftovers { .. } | Phase::Killed, Remaining::None) => {
                let step = self.machine.step(Event::ChildrenGone, now);
                step.actions.into_iter().find_map(|action| self.perform(action, now))
            }
            // Orphans keep being reparented to us while their parents die;
            // outside PID 1 they are not covered by one kill(-1).
            (Phase::Killed, Remaining::Some) if !self.is_pid1 => {
                let _ = reaper::signal_all(SIGKILL, false, self.child.pid);
                None
            }
            _ => None,
        }
    }
}

/// `pid(name)` of every process lastcall would still have to wait for.
fn leftovers(is_pid1: bool) -> Vec<String> {
    reaper::leftovers(is_pid1)
        .iter()
        .map(|p| {
            let name = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            format!("{p}({})", name.trim())
        })
        .collect()
}
