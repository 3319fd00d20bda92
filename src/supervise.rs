//! The supervisor: one loop that blocks in one place, feeds the shutdown
//! state machine, and carries out its actions.
//!
//! Everything that can happen arrives as readable bytes on a descriptor,
//! and the loop sleeps in poll(2) on all of them with a timeout set to the
//! machine's next deadline:
//! * a signalfd with every forwarded signal and SIGCHLD (see
//!   `signals::SignalSource` for why signalfd),
//! * the inbox's wake-up pipe, written by the drain thread after it queues
//!   an `Input`, and
//! * the control socket and its connected clients (`control::Server`).
//!
//! In the steady state (the app running) lastcall has no other thread: a
//! drain thread exists only during a drain.
//!
//! Once the child exists lastcall never bails out: an error is logged and
//! the loop goes on, since PID 1 exiting would SIGKILL the whole container
//! (catatonit's rule). The only ways out are the child's exit and the kill
//! deadline.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::getpid;
use tracing::{debug, error, info, warn};

use crate::child::{self, Child};
use crate::config::{InitConfig, ShutdownConfig};
use crate::control::{self, Reply};
use crate::exit_status::ChildExit;
use crate::reaper::{self, Remaining};
use crate::shutdown::{Action, Event, Phase, Settings, Shutdown};
use crate::signals::{self, Signal, SIGCHLD, SIGKILL};
use crate::{drain, Failure};

/// The loop's inbox, for the events the drain thread sends: a queue plus a
/// wake-up pipe; cheap to clone into threads. (A Mutex<Vec> rather than std's mpsc channel: a handful of
/// messages per shutdown, and some 15 KB less binary.)
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
pub fn install_signal_source() -> Result<signals::SignalSource, Failure> {
    signals::SignalSource::install(signals::forwarded().chain([SIGCHLD.0])).map_err(|e| Failure::Setup(format!("signal handling: {e}")))
}

/// Run `init.command` under lastcall and return the exit code for lastcall.
pub fn run(init: &InitConfig, shutdown: &ShutdownConfig) -> Result<i32, Failure> {
    let is_pid1 = getpid().as_raw() == 1;
    if !is_pid1 {
        if let Err(e) = reaper::become_subreaper() {
            warn!(error = %e, "not PID 1 and cannot become a child subreaper: orphans of the app will not be reaped by lastcall");
        }
    }
    if let Some(sig) = init.pdeathsig {
        // SAFETY: prctl with PR_SET_PDEATHSIG takes plain integers.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig.0 as libc::c_ulong, 0, 0, 0) };
    }
    for &sig in signals::IGNORED {
        // SAFETY: setting SIG_IGN installs no Rust code as a handler.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }

    // Signals are blocked and queued before the child starts, so none sent
    // to lastcall in between is lost; the child unblocks them before exec.
    let signal_source = install_signal_source()?;

    let (wake_read, wake_write) = UnixStream::pair().map_err(|e| Failure::Setup(format!("wake pipe: {e}")))?;
    wake_read.set_nonblocking(true).map_err(|e| Failure::Setup(format!("wake pipe: {e}")))?;
    wake_write.set_nonblocking(true).map_err(|e| Failure::Setup(format!("wake pipe: {e}")))?;
    let inbox = Inbox { queue: Arc::default(), wake: Arc::new(wake_write) };

    // Bind before spawning: umask is process-wide and must not race a thread.
    let listener = shutdown.control_socket.as_deref().and_then(|path| match control::listen(path) {
        Ok(l) => Some(l),
        Err(e) => {
            debug!(path = %path.display(), error = %e, "control socket unavailable: `lastcall drain` will drain on its own");
            None
        }
    });

    // Fail fast, before the first rollout: can the strategies observe at all?
    if shutdown.drain.k8s.strict {
        drain::preflight(&shutdown.drain).map_err(Failure::Preflight)?;
    } else if !shutdown.drain.strategies.is_empty() {
        let cfg = shutdown.drain.clone();
        let _ = std::thread::Builder::new().name("preflight".into()).stack_size(512 * 1024).spawn(move || {
            if let Err(problem) = drain::preflight(&cfg) {
                warn!("{problem}");
            }
        });
    }

    let child = child::spawn(&init.command).map_err(Failure::Spawn)?;
    debug!(pid = child.pid.as_raw(), command = ?init.command, "app started");

    let mut control = listener.map(control::Server::new);
    // Like catatonit: hold no directory, so no mount stays pinned by PID 1.
    let _ = std::env::set_current_dir("/");
    crate::memory::release_startup_pages();

    let mut sup = Supervisor {
        init,
        shutdown,
        is_pid1,
        child,
        machine: Shutdown::new(Settings {
            budget: shutdown.budget,
            drain: !shutdown.drain.strategies.is_empty(),
            stop_signal: shutdown.stop_signal,
            leftover_timeout: init.leftover_timeout,
            wait_descendants: init.wait_descendants,
        }),
        inbox,
        waiters: Vec::new(),
        remaining: Remaining::Some,
    };

    // Reap at the first turn too: a child may have exited before the loop.
    let mut reap_due = true;
    loop {
        let timeout = match sup.machine.next_wakeup() {
            None => PollTimeout::NONE,
            Some(t) => {
                // Round up so a wake-up never comes just before the deadline.
                let ms = t.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000);
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let (signals_ready, wake_ready, control_ready) = {
            let mut fds = vec![PollFd::new(signal_source.fd(), PollFlags::POLLIN), PollFd::new(wake_read.as_fd(), PollFlags::POLLIN)];
            if let Some(server) = &control {
                fds.extend(server.fds().map(|fd| PollFd::new(fd, PollFlags::POLLIN)));
            }
            let _ = poll(&mut fds, timeout); // EINTR is a wake-up like any other
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]), fds[2..].iter().any(ready))
        };
        let now = Instant::now();
        let mut events = Vec::new();

        // Signals first: forwarding is the latency that matters.
        if signals_ready {
            for sig in signal_source.pending() {
                if sig == SIGCHLD {
                    reap_due = true;
                } else if sig == shutdown.stop_signal {
                    note_stop(now);
                    events.push(Event::StopSignal);
                } else {
                    sup.forward(sig);
                }
            }
        }

        if wake_ready {
            let mut drained = [0u8; 64];
            while matches!((&wake_read).read(&mut drained), Ok(n) if n > 0) {}
            events.extend(sup.inbox.take());
        }
        if control_ready {
            if let Some(server) = &mut control {
                for conn in server.service() {
                    sup.waiters.push(conn);
                    events.push(Event::DrainRequest);
                }
            }
        }

        if reap_due {
            reap_due = false;
            let main_pid = child.pid;
            sup.remaining = reaper::reap(|pid, status| {
                if pid == main_pid {
                    events.push(Event::ChildExited(ChildExit::from_wait(status)));
                } else {
                    debug!(pid = pid.as_raw(), "reaped an orphan");
                }
            });
        }
        events.push(Event::Tick);

        for event in events {
            for action in sup.machine.step(event, now) {
                sup.perform(action, now);
            }
        }

        match (sup.machine.phase(), sup.remaining) {
            (Phase::Leftovers { .. } | Phase::Killed, Remaining::None) => {
                for action in sup.machine.step(Event::ChildrenGone, now) {
                    if let Action::Exit(exit) = action {
                        let code = init.remap.exit_code(exit);
                        if sup.machine.shutting_down() {
                            info!(t_ms = sup.machine.elapsed_ms(now), code, "exiting");
                        } else {
                            debug!(code, "exiting");
                        }
                        return Ok(code);
                    }
                }
            }
            // Orphans keep being reparented to us while their parents die;
            // outside PID 1 they are not covered by one kill(-1).
            (Phase::Killed, Remaining::Some) if !is_pid1 => {
                reaper::signal_all(SIGKILL, false, child.pid);
            }
            _ => {}
        }
    }
}

struct Supervisor<'a> {
    init: &'a InitConfig,
    shutdown: &'a ShutdownConfig,
    is_pid1: bool,
    child: Child,
    machine: Shutdown,
    inbox: Inbox,
    waiters: Vec<UnixStream>,
    /// Whether lastcall had children left at the last reap.
    remaining: Remaining,
}

impl Supervisor<'_> {
    /// Forward a signal that is not the stop signal, at once.
    fn forward(&self, sig: Signal) {
        if self.machine.app_exited() {
            debug!(signal = %sig, "signal received after the app exited: not forwarded");
            return;
        }
        match self.init.rewrites.apply(sig) {
            None => debug!(signal = %sig, "signal dropped by --rewrite"),
            Some(to) => {
                if let Err(e) = child::signal(self.child, to, self.init.process_group) {
                    debug!(signal = %to, error = %e, "forwarding failed");
                } else {
                    debug!(received = %sig, sent = %to, "signal forwarded");
                }
            }
        }
    }

    fn perform(&mut self, action: Action, now: Instant) {
        let t_ms = self.machine.elapsed_ms(now);
        match action {
            Action::StartDrain { until } => {
                let cfg = self.shutdown.drain.clone();
                let inbox = self.inbox.clone();
                let pid = self.child.pid.as_raw();
                let spawned = std::thread::Builder::new().name("drain".into()).stack_size(512 * 1024).spawn(move || {
                    let why = drain::run(&cfg, now, until, None, Some(pid), Arc::new(inbox.clone())).why;
                    inbox.send(Event::DrainDone(why));
                });
                if let Err(e) = spawned {
                    error!(error = %e, "cannot start the drain thread: stopping without a drain");
                    self.inbox.send(Event::DrainDone(format!("no drain thread: {e}")));
                }
            }
            Action::DrainFinished => self.answer(Reply::Done),
            Action::AppExited => self.answer(Reply::Exited),
            Action::Stop => {
                let sig = self.shutdown.stop_signal;
                let kill_in_ms = self.machine.kill_in_ms(now);
                match self.init.rewrites.apply(sig) {
                    None => warn!(t_ms, signal = %sig, "the stop signal is dropped by --rewrite: the app gets nothing"),
                    Some(to) => {
                        let sent = child::signal(self.child, to, self.init.process_group);
                        // Let the app run first: on a single CPU it would
                        // otherwise wait for the log lines below (whose code
                        // start-up pages may have to be mapped back in).
                        // SAFETY: sched_yield(2) has no preconditions.
                        unsafe { libc::sched_yield() };
                        let target = if self.init.process_group { "process group" } else { "process" };
                        match sent {
                            Ok(()) => {
                                info!(t_ms, signal = %to, pid = self.child.pid.as_raw(), target, kill_in_ms, "stop signal sent to the app")
                            }
                            Err(e) => warn!(t_ms, signal = %to, error = %e, "could not send the stop signal"),
                        }
                    }
                }
            }
            Action::SignalLeftovers(sig) => {
                if self.remaining == Remaining::None {
                    return; // the usual case: the app left nothing behind
                }
                let left = leftovers(self.is_pid1);
                if !left.is_empty() {
                    warn!(t_ms, signal = %sig, count = left.len(), processes = %left.join(" "), "processes left after the app exited: signalling them");
                    reaper::signal_all(sig, self.is_pid1, self.child.pid);
                }
            }
            Action::KillAll => {
                reaper::signal_all(SIGKILL, self.is_pid1, self.child.pid);
                // Listed after the kill (the dead stay in /proc until reaped),
                // so no /proc walk delays it.
                let left = leftovers(self.is_pid1);
                warn!(t_ms, count = left.len(), processes = %left.join(" "), "SIGKILL sent");
            }
            Action::Exit(_) => {} // handled by the loop, which owns the return
        }
    }

    fn answer(&mut self, reply: Reply) {
        for mut w in self.waiters.drain(..) {
            let _ = w.write_all(reply.line());
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
