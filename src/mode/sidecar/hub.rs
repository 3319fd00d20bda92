//! The drain hub: the one drain that every authorized `GET /drain` joins,
//! when it counts as the pod's real shutdown, and when the sidecar may exit.
//!
//! The first request starts a drain on its own thread (the strategies block:
//! TLS to the API server, netlink), with the grace period counted from that
//! request as Kubernetes counts it from the hook's start. Requests while it
//! runs join it; requests after it ended are answered at once, because hooks
//! are delivered at least once and a repeated delivery must not drain twice.
//!
//! **Re-arming.** A drain that saw no real shutdown must not answer the next
//! real preStop at once (anyone on the pod network can send `GET /drain`, and
//! so can a curl testing the hook). Such a drain stops counting, and the next
//! request starts a new one, when
//!
//! * the k8s strategy read the Pod and it had no deletionTimestamp
//!   (`Ended::not_deleting`): at once; a request that joined that drain after
//!   it began gets a drain of its own, counted from its arrival, because it
//!   may be the real hook of a deletion that happened meanwhile;
//! * otherwise, when no stop signal reached the sidecar within the grace
//!   period after the drain began, plus 2 s ([`REARM_SLACK`]). A real pod
//!   deletion always stops the sidecar within that window: a classic sidecar
//!   (`containers[]`) gets its SIGTERM at the moment the app's preStop starts
//!   (the kubelet stops a pod's containers in parallel); a native sidecar
//!   gets it once the app containers have exited, and when they have not by
//!   the end of the grace period the kubelet stops every remaining container
//!   then, with a short grace period of its own (kubernetes.io "Pod
//!   Lifecycle", "Pod shutdown and sidecar containers"). The slack covers
//!   the kubelet's 2 s minimum (kuberuntime `minimumGracePeriodInSeconds`).
//!   The delay and traffic strategies cannot tell a stray request from the
//!   real one, so this window is the rule for them. Re-arming too early
//!   (a `--grace-period` shorter than the pod's) costs one more drain for a
//!   repeated hook delivery; not re-arming would cost the real drain.
//!
//! After its own stop signal the sidecar calls [`Hub::settle`]: it answers the
//! `/drain` requests it holds (a drain under way is finished, bounded by its
//! plan) and waits briefly for one that trails the signal.
//!
//! The server thread (`http.rs`) holds one [`Ticket`] per waiting request and
//! asks [`Hub::poll`] when to answer it; the drain thread wakes the server
//! through a socket pair when it ends.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tracing::{debug, error, info};

use crate::config::DrainConfig;
use crate::deadline::Budget;

/// Added to the grace period before a drain that saw no stop signal stops
/// counting (module doc).
pub const REARM_SLACK: Duration = Duration::from_secs(2);

/// How long `settle` gives answers that are being written.
const ANSWER_TIME: Duration = Duration::from_secs(5);

pub struct Hub {
    drain: DrainConfig,
    budget: Budget,
    state: Mutex<State>,
    changed: Condvar,
    /// Written (one byte) when a drain ends, to wake the server's poll.
    wake: UnixStream,
    /// When the sidecar's stop signal first came; a function so tests (and
    /// the program) read the one clock `supervise` keeps.
    stopped_at: fn() -> Option<Instant>,
}

struct State {
    drain: Drain,
    /// `/drain` requests accepted and not yet closed (waiting, being
    /// answered, or closing).
    open: usize,
}

#[derive(Debug, Clone)]
enum Drain {
    /// No drain ran yet.
    Idle,
    Running {
        started: Instant,
        kill_at: Instant,
    },
    Done {
        started: Instant,
        why: String,
        not_deleting: bool,
        rearm_logged: bool,
    },
}

/// A `/drain` request the hub has counted; dropping it (the connection is
/// closed) releases it.
pub struct Ticket {
    hub: Arc<Hub>,
    /// When the request arrived: a drain started for it counts from then.
    joined: Instant,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = self.hub.lock();
        st.open -= 1;
        self.hub.changed.notify_all();
    }
}

/// What a waiting request gets.
#[derive(Debug, PartialEq)]
pub enum Answer {
    Wait,
    /// The drain ended; why.
    Drained(String),
    /// The drain is still running at the end of its own plan (only possible
    /// if the drain thread is stuck or died).
    Failed(&'static str),
}

/// Whether a drain that ended still answers the requests that come now
/// (false: re-arm). Pure; see the module doc for the rule.
pub fn still_counts(started: Instant, not_deleting: bool, stopped_at: Option<Instant>, now: Instant, window: Duration) -> bool {
    if not_deleting {
        return false;
    }
    let end = started.checked_add(window);
    match (stopped_at, end) {
        (_, None) => true,
        (Some(stop), Some(end)) => stop <= end,
        (None, Some(end)) => now < end,
    }
}

impl Hub {
    /// The hub and the read end of its wake-up socket (for the server's poll).
    pub fn new(drain: DrainConfig, budget: Budget, stopped_at: fn() -> Option<Instant>) -> std::io::Result<(Arc<Hub>, UnixStream)> {
        let (wake_read, wake) = UnixStream::pair()?;
        wake_read.set_nonblocking(true)?;
        wake.set_nonblocking(true)?;
        let state = Mutex::new(State { drain: Drain::Idle, open: 0 });
        Ok((Arc::new(Hub { drain, budget, state, changed: Condvar::new(), wake, stopped_at }), wake_read))
    }

    /// A poisoned lock only means a thread panicked; every change of the
    /// state is one assignment, so it is still consistent.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The window after a drain's start within which a stop signal makes
    /// it the real one.
    fn window(&self) -> Duration {
        self.budget.grace + REARM_SLACK
    }

    /// A `/drain` request arrived at `now`: count it, and start a drain
    /// unless one runs or the last one still counts.
    pub fn join(self: &Arc<Self>, now: Instant) -> Ticket {
        let mut st = self.lock();
        st.open += 1;
        let start = match &st.drain {
            Drain::Idle => true,
            Drain::Running { .. } => false,
            Drain::Done { started, not_deleting, why, .. } => {
                let counts = still_counts(*started, *not_deleting, (self.stopped_at)(), now, self.window());
                if !counts {
                    let last = if *not_deleting { "the pod was not being deleted" } else { "no stop signal within the grace period" };
                    info!(last, previous = %why, "the last drain saw no shutdown: draining again");
                }
                !counts
            }
        };
        if start {
            self.start(&mut st, now);
        }
        debug!(waiting = st.open, "GET /drain: joined the drain");
        Ticket { hub: Arc::clone(self), joined: now }
    }

    /// When the request of `ticket` can be answered, and with what.
    pub fn poll(self: &Arc<Self>, ticket: &Ticket, now: Instant) -> Answer {
        let mut st = self.lock();
        match &st.drain {
            Drain::Idle => return Answer::Failed("no drain was started"),
            Drain::Running { kill_at, .. } if now >= *kill_at => return Answer::Failed("the drain is still running at its deadline"),
            Drain::Running { .. } => return Answer::Wait,
            Drain::Done { started, not_deleting, why, .. } if !*not_deleting || ticket.joined <= *started => {
                return Answer::Drained(why.clone())
            }
            Drain::Done { .. } => {}
        }
        info!("a request joined a drain of a pod that was not being deleted: draining again for it");
        self.start(&mut st, ticket.joined);
        Answer::Wait
    }

    /// The next instant after `now` the server must look at the hub without
    /// being woken: a running drain's deadline (its waiting requests then get
    /// 503), or when a finished one re-arms.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let st = self.lock();
        match &st.drain {
            Drain::Running { kill_at, .. } => Some(*kill_at).filter(|&k| k > now),
            Drain::Done { started, rearm_logged: false, not_deleting: false, .. } if (self.stopped_at)().is_none() => {
                started.checked_add(self.window())
            }
            _ => None,
        }
    }

    /// Logs the moment a finished drain stops counting (the next request
    /// would start a new one), once.
    pub fn tick(&self, now: Instant) {
        let window = self.window();
        let mut st = self.lock();
        if let Drain::Done { started, not_deleting, rearm_logged, .. } = &mut st.drain {
            if !*rearm_logged && !still_counts(*started, *not_deleting, (self.stopped_at)(), now, window) {
                *rearm_logged = true;
                let why = if *not_deleting { "the pod is not being deleted" } else { "no stop signal within the grace period" };
                info!(why, "the drain did not see a shutdown: re-armed for the next GET /drain");
            }
        }
    }

    fn start(self: &Arc<Self>, st: &mut State, started: Instant) {
        let plan = self.budget.plan(started);
        st.drain = Drain::Running { started, kill_at: plan.kill_at };
        self.changed.notify_all();
        info!(
            drain_max_ms = plan.drain_until.saturating_duration_since(started).as_millis(),
            kill_in_ms = plan.kill_at.saturating_duration_since(started).as_millis(),
            "GET /drain: draining"
        );
        let hub = Arc::clone(self);
        // The supervisor's drain-thread stack: the strategies need more than a small thread.
        let spawned = std::thread::Builder::new().name("drain".into()).stack_size(512 * 1024).spawn(move || {
            let ended = crate::drain::run(&hub.drain, started, plan.drain_until, Some(hub.budget), None, Arc::new(crate::drain::NoNotify));
            hub.finish(started, ended.why, ended.not_deleting);
        });
        if let Err(e) = spawned {
            error!(error = %e, "cannot start the drain thread: answering /drain without a drain");
            Self::set_done(st, started, format!("no drain thread: {e}"), false);
            self.wake();
        }
    }

    fn finish(&self, started: Instant, why: String, not_deleting: bool) {
        let t_ms = started.elapsed().as_millis();
        info!(t_ms, reason = %why, not_deleting, "drain ended: answering /drain");
        let mut st = self.lock();
        // A request that re-drained meanwhile owns the state now (only one
        // drain runs at a time, so this can only be that same drain).
        if matches!(&st.drain, Drain::Running { started: s, .. } if *s == started) {
            Self::set_done(&mut st, started, format!("{why} (after {t_ms}ms)"), not_deleting);
        }
        self.changed.notify_all();
        drop(st);
        self.wake();
    }

    fn set_done(st: &mut State, started: Instant, why: String, not_deleting: bool) {
        st.drain = Drain::Done { started, why, not_deleting, rearm_logged: false };
    }

    fn wake(&self) {
        // A full socket already means "wake up".
        let _ = (&self.wake).write(&[1]);
    }

    /// Before exiting: wait until every `/drain` request has its answer. A
    /// drain under way is waited for (bounded by its plan); when no drain
    /// counts, wait for a request until `idle_until`.
    pub fn settle(&self, idle_until: Instant) {
        let begun = Instant::now();
        let mut st = self.lock();
        let mut logged = false;
        loop {
            let now = Instant::now();
            let deadline = match &st.drain {
                Drain::Running { kill_at, .. } => {
                    if !logged {
                        info!("a drain is under way: answering its /drain requests before exiting");
                        logged = true;
                    }
                    *kill_at + Duration::from_secs(1)
                }
                _ if st.open > 0 => begun + ANSWER_TIME,
                Drain::Done { started, not_deleting, .. }
                    if still_counts(*started, *not_deleting, (self.stopped_at)(), now, self.window()) =>
                {
                    return
                }
                Drain::Idle | Drain::Done { .. } => idle_until,
            };
            if now >= deadline {
                return;
            }
            st = self.changed.wait_timeout(st, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn still_counts_table() {
        let t0 = Instant::now();
        let w = s(32); // grace 30 s + slack
                       // (not_deleting, stop signal after t0, now after t0) -> counts
        let cases: &[(bool, Option<u64>, u64, bool)] = &[
            (false, None, 0, true),       // just ended, nothing known yet
            (false, None, 31, true),      // a native sidecar's stop may still come
            (false, None, 32, false),     // window over, no stop: a stray drain
            (false, Some(1), 100, true),  // classic sidecar: stop with the hook
            (false, Some(32), 100, true), // at the edge of the window
            (false, Some(33), 33, false), // a later, unrelated stop
            (true, None, 0, false),       // the pod was not being deleted
            (true, Some(1), 1, false),    // ... whatever came after
        ];
        for &(not_deleting, stop, now, want) in cases {
            let stop = stop.map(|n| t0 + s(n));
            assert_eq!(still_counts(t0, not_deleting, stop, t0 + s(now), w), want, "{not_deleting} {stop:?} {now}");
        }
        // A stop signal before the drain (the kubelet's SIGTERM, then the hook).
        assert!(still_counts(t0 + s(1), false, Some(t0), t0 + s(100), w));
    }

    fn never_stopped() -> Option<Instant> {
        None
    }

    /// A hub whose drain is the delay strategy (`Some(ms)`) or nothing.
    fn hub(delay_ms: Option<u64>) -> (Arc<Hub>, UnixStream) {
        let cli = crate::cli::Cli::try_parse_from(["lastcall", "sidecar", "--drain-delay", "1s"]).expect("clap");
        let mut sh = crate::config::Config::from_cli(cli).expect("config").shutdown;
        match delay_ms {
            Some(ms) => sh.drain.delay = Duration::from_millis(ms),
            None => sh.drain.strategies.clear(),
        }
        Hub::new(sh.drain, sh.budget, never_stopped).expect("hub")
    }

    /// Waits (bounded) until the drain thread woke the server side.
    fn wait_wake(wake: &UnixStream) {
        use std::io::Read;
        wake.set_nonblocking(false).unwrap();
        wake.set_read_timeout(Some(s(30))).unwrap();
        let mut b = [0u8; 1];
        assert_eq!((&*wake).read(&mut b).expect("the drain ended"), 1);
    }

    #[test]
    fn requests_join_one_drain_and_later_ones_are_answered_at_once() {
        let (h, wake) = hub(Some(50));
        let t0 = Instant::now();
        let a = h.join(t0);
        let b = h.join(Instant::now());
        assert_eq!(h.poll(&a, Instant::now()), Answer::Wait);
        wait_wake(&wake);
        let Answer::Drained(why) = h.poll(&a, Instant::now()) else { panic!("not drained") };
        assert!(why.starts_with("delay: "), "{why}");
        assert!(matches!(h.poll(&b, Instant::now()), Answer::Drained(_)));
        // Within the grace period a repeated hook is answered from the same drain.
        let c = h.join(Instant::now());
        assert!(matches!(h.poll(&c, Instant::now()), Answer::Drained(_)));
        assert_eq!(h.lock().open, 3);
        drop((a, b, c));
        assert_eq!(h.lock().open, 0);
        // Done, nothing open, the drain counts (no stop known, within the window): at once.
        h.settle(Instant::now() + s(30));
    }

    #[test]
    fn a_drain_past_its_window_rearms() {
        // No strategy: each drain ends at once ("nothing to drain"), so the
        // request at a future `now` leaves no thread behind.
        let (h, wake) = hub(None);
        let t0 = Instant::now();
        let first = h.join(t0);
        wait_wake(&wake);
        assert!(matches!(h.poll(&first, t0), Answer::Drained(_)));
        assert_eq!(h.next_deadline(t0), Some(t0 + h.window()));
        // A request after the window starts a new drain.
        let late = h.join(t0 + h.window());
        assert_eq!(h.poll(&late, t0 + h.window()), Answer::Wait);
        wait_wake(&wake);
        assert!(matches!(h.poll(&late, t0 + h.window()), Answer::Drained(_)));
    }
}
