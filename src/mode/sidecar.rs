//! `lastcall sidecar`: a container beside the app, for pods whose app image
//! cannot get lastcall as its entrypoint.
//!
//! It does two independent jobs, each optional:
//!
//! * **HTTP on `--listen`** (default `0.0.0.0:9099`; `off` disables it):
//!   `GET /drain` runs the configured drain strategies and answers 200 when
//!   they are done, for the app container's `preStop: httpGet`. The grace
//!   period counts from the first request, as Kubernetes counts it from the
//!   hook's start, so the drain ends by `grace − kill margin − stop budget`
//!   after it. Concurrent and repeated requests join that one drain (hooks
//!   are delivered at least once); a request after it ended is answered at
//!   once. `GET /healthz` answers `ok` for the sidecar's own probes. One
//!   thread per connection (at most 64; more get 503), so a pending drain
//!   never holds up another request.
//! * **Wrapping a helper** (`lastcall sidecar -- cloud-sql-proxy ...`): the
//!   helper runs under the ordinary supervisor (`supervise.rs`) with one
//!   change: its drain is `wait-port` (`--wait-port P`: until the app's
//!   ports on localhost stop accepting connections, see `drain/ports.rs`),
//!   or nothing without `--wait-port`. So on the stop signal the helper keeps
//!   serving the app until the app is done, then gets the stop signal, then
//!   SIGKILL before the grace deadline. The sidecar serves no control socket.
//!
//! On its own stop signal the sidecar answers the `/drain` requests it has
//! before it exits: a drain under way is finished (bounded by its deadline),
//! and when no request came yet it keeps listening for up to
//! [`LATE_REQUEST_WINDOW`] after the signal. The kubelet stops the containers
//! of a pod in parallel, so in a classic sidecar the app's preStop request
//! can arrive just after the sidecar's own SIGTERM.
//!
//! Exit status: the helper's (as for `lastcall -- CMD`); without a helper 0
//! after SIGTERM/SIGINT/the stop signal; 2 for usage errors; 125 when the
//! address cannot be bound or the signal handlers cannot be set; 78 when
//! `--strict` and a drain strategy cannot work here.

/// How long after its stop signal a sidecar that has seen no `/drain` yet
/// keeps listening for one. The kubelet starts the app's preStop hook and
/// the sidecar's SIGTERM at the same moment (one goroutine per container in
/// `killContainersWithSyncResult`), so the request may trail the signal by
/// a few milliseconds on a busy node; 2 s covers that with room to spare.
#[cfg(feature = "sidecar")]
pub const LATE_REQUEST_WINDOW: std::time::Duration = std::time::Duration::from_secs(2);

#[cfg(not(feature = "sidecar"))]
pub fn run(
    _sidecar: &crate::config::SidecarConfig,
    _init: &crate::config::InitConfig,
    _shutdown: &crate::config::ShutdownConfig,
) -> Result<i32, crate::exit_status::Failure> {
    tracing::error!("sidecar mode is not built into this lastcall (rebuild with the cargo feature \"sidecar\")");
    Ok(crate::exit_status::EXIT_USAGE)
}

#[cfg(feature = "sidecar")]
pub use imp::run;

#[cfg(feature = "sidecar")]
mod imp {
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    use signal_hook::iterator::Signals;
    use tracing::{error, info, warn};

    use super::{http, Hub, LATE_REQUEST_WINDOW};
    use crate::config::{InitConfig, ShutdownConfig, SidecarConfig, Strategy};
    use crate::exit_status::{Failure, EXIT_USAGE};
    use crate::supervise;

    pub fn run(sc: &SidecarConfig, init: &InitConfig, shutdown: &ShutdownConfig) -> Result<i32, Failure> {
        // First, so a stop signal that comes during set-up is not lost.
        let clock = StopClock::install(shutdown.stop_signal.0)?;
        if !init.command.is_empty() {
            // The supervisor reads its signals from a signalfd with the
            // signals blocked; block them before the HTTP and preflight
            // threads start, so they inherit the mask and no signal is ever
            // delivered to them (the supervisor installs its own source).
            drop(supervise::install_signal_source()?);
        }
        let without_helper = if init.command.is_empty() {
            let mut sigs = vec![shutdown.stop_signal.0, libc::SIGTERM, libc::SIGINT];
            sigs.dedup();
            Some(Signals::new(&sigs).map_err(|e| Failure::Setup { what: "signal handlers", source: e })?)
        } else {
            None
        };

        if let Some(problem) = usage_problem(sc, init) {
            error!("{problem}");
            return Ok(EXIT_USAGE);
        }

        let hub = Arc::new(Hub::new(shutdown.drain.clone(), shutdown.budget));
        let listening = listen_addr(&sc.listen).is_some();
        if let Some(addr) = listen_addr(&sc.listen) {
            let listener = TcpListener::bind(addr).map_err(|e| Failure::Listen { addr: addr.to_string(), source: e })?;
            let local = listener.local_addr().map_or_else(|_| addr.to_string(), |a| a.to_string());
            info!(addr = %local, "listening for GET /drain and GET /healthz");
            if shutdown.drain.strategies.is_empty() {
                warn!("no drain strategy is set (--drain, --drain-delay): GET /drain answers at once");
            } else if shutdown.drain.k8s.strict {
                // As the PID 1 does: fail before the first rollout, not during it.
                crate::drain::preflight(&shutdown.drain).map_err(Failure::Preflight)?;
            } else {
                let cfg = shutdown.drain.clone();
                let _ = std::thread::Builder::new().name("preflight".into()).stack_size(512 * 1024).spawn(move || {
                    if let Err(problem) = crate::drain::preflight(&cfg) {
                        warn!("{problem}");
                    }
                });
            }
            let server_hub = Arc::clone(&hub);
            std::thread::Builder::new()
                .name("http".into())
                .stack_size(128 * 1024)
                .spawn(move || http::serve(listener, server_hub))
                .map_err(|e| Failure::Setup { what: "cannot start the HTTP thread", source: e })?;
        }

        let code = match without_helper {
            Some(mut signals) => {
                let sig = signals.forever().next();
                let name = sig.map_or_else(|| "?".to_string(), |s| crate::signals::Signal(s).name());
                info!(signal = %name, "signal received: answering pending /drain requests, then exiting");
                0
            }
            None => supervise::run(init, &helper_shutdown(sc, shutdown))?,
        };
        if let Some(at) = clock.stopped_at().or(supervise::stopped_at()).or(without_helper_stop(init)).filter(|_| listening) {
            // The late-request window never reaches past our own kill deadline.
            hub.settle((at + LATE_REQUEST_WINDOW).min(shutdown.budget.plan(at).kill_at));
        }
        Ok(code)
    }

    /// Without a helper, any exit of the wait above is a stop.
    fn without_helper_stop(init: &InitConfig) -> Option<Instant> {
        init.command.is_empty().then(Instant::now)
    }

    /// The helper's shutdown settings: the user's budget and stop signal, but
    /// the drain is the wait for the app's ports (or none), and no control
    /// socket: the drain entry point of a sidecar is `GET /drain`.
    pub(super) fn helper_shutdown(sc: &SidecarConfig, shutdown: &ShutdownConfig) -> ShutdownConfig {
        let mut s = shutdown.clone();
        s.drain.strategies = if sc.wait_ports.is_empty() { vec![] } else { vec![Strategy::PortsClosed] };
        s.drain.ports = sc.wait_ports.clone();
        s.control_socket = None;
        s
    }

    pub(super) fn usage_problem(sc: &SidecarConfig, init: &InitConfig) -> Option<String> {
        if init.command.is_empty() && listen_addr(&sc.listen).is_none() {
            return Some("nothing to do: --listen is off and no command is given (lastcall sidecar [OPTIONS] [-- CMD])".into());
        }
        if init.command.is_empty() && !sc.wait_ports.is_empty() {
            return Some("--wait-port needs a command to keep running (lastcall sidecar --wait-port P -- CMD)".into());
        }
        if sc.wait_ports.contains(&0) {
            return Some("invalid value for --wait-port: 0 is not a port".into());
        }
        None
    }

    /// `None` for "off" (no HTTP server).
    pub(super) fn listen_addr(listen: &str) -> Option<&str> {
        match listen.trim() {
            "" | "off" | "none" => None,
            addr => Some(addr),
        }
    }

    /// When the stop signal first arrived, recorded by a signal handler, so
    /// the time is known exactly even though the supervisor consumes the
    /// signal itself.
    struct StopClock {
        base: Instant,
        /// Nanoseconds after `base` plus one; 0 = not yet.
        ns: AtomicU64,
    }

    impl StopClock {
        fn install(sig: i32) -> Result<Arc<StopClock>, Failure> {
            let clock = Arc::new(StopClock { base: Instant::now(), ns: AtomicU64::new(0) });
            let c = Arc::clone(&clock);
            // SAFETY: the action runs in a signal handler. It only reads the
            // monotonic clock (clock_gettime, async-signal-safe per
            // signal-safety(7)) and does one atomic compare-exchange: no
            // allocation, no lock, no panic path.
            let registered = unsafe {
                signal_hook::low_level::register(sig, move || {
                    let ns = u64::try_from(c.base.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1;
                    let _ = c.ns.compare_exchange(0, ns, Ordering::SeqCst, Ordering::SeqCst);
                })
            };
            registered.map_err(|e| Failure::Setup { what: "signal handlers", source: e })?;
            Ok(clock)
        }

        fn stopped_at(&self) -> Option<Instant> {
            match self.ns.load(Ordering::SeqCst) {
                0 => None,
                ns => Some(self.base + std::time::Duration::from_nanos(ns - 1)),
            }
        }
    }
}

/// The one drain that every `GET /drain` joins, and the count of requests
/// still to be answered.
#[cfg(feature = "sidecar")]
pub(crate) struct Hub {
    drain: crate::config::DrainConfig,
    budget: crate::deadline::Budget,
    state: std::sync::Mutex<HubState>,
    changed: std::sync::Condvar,
}

#[cfg(feature = "sidecar")]
struct HubState {
    drain: DrainState,
    /// `/drain` requests between arrival and their answer being written.
    answering: usize,
}

#[cfg(feature = "sidecar")]
#[derive(Clone)]
enum DrainState {
    Idle,
    /// `kill_at`: when the drain's own plan ends; no one waits past it.
    Running {
        kill_at: std::time::Instant,
    },
    Done(String),
}

/// Held by a `/drain` request until its answer is written.
#[cfg(feature = "sidecar")]
pub(crate) struct Ticket<'a>(&'a Hub);

#[cfg(feature = "sidecar")]
impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.answering -= 1;
        self.0.changed.notify_all();
    }
}

#[cfg(feature = "sidecar")]
impl Hub {
    pub(crate) fn new(drain: crate::config::DrainConfig, budget: crate::deadline::Budget) -> Hub {
        Hub {
            drain,
            budget,
            state: std::sync::Mutex::new(HubState { drain: DrainState::Idle, answering: 0 }),
            changed: std::sync::Condvar::new(),
        }
    }

    /// A poisoned lock only means a request thread panicked; the state is
    /// still consistent (every change is one assignment), so go on with it.
    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn enter(&self) -> Ticket<'_> {
        self.lock().answering += 1;
        Ticket(self)
    }

    /// Join the drain, starting it when none ran yet, and wait until it is
    /// over. `Ok(why it ended)`, or `Err` if it is still running at the end
    /// of its own plan (only possible if the drain thread died).
    pub(crate) fn drain(self: &std::sync::Arc<Self>) -> Result<String, String> {
        use std::time::Instant;
        let mut st = self.lock();
        if matches!(st.drain, DrainState::Idle) {
            let start = Instant::now();
            let plan = self.budget.plan(start);
            st.drain = DrainState::Running { kill_at: plan.kill_at };
            self.changed.notify_all();
            drop(st);
            tracing::info!(
                drain_max_ms = (plan.drain_until - start).as_millis(),
                kill_in_ms = (plan.kill_at - start).as_millis(),
                "GET /drain: draining"
            );
            // Its own thread with the supervisor's drain-thread stack: the
            // strategies (TLS to the API server, netlink) need more stack than
            // a connection thread has.
            let hub = std::sync::Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("drain".into())
                .stack_size(512 * 1024)
                .spawn(move || hub.run_drain(start, plan.drain_until));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the drain thread: answering /drain without a drain");
                self.finish(start, format!("no drain thread: {e}"));
            }
            st = self.lock();
        }
        loop {
            let kill_at = match &st.drain {
                DrainState::Done(why) => return Ok(why.clone()),
                DrainState::Running { kill_at } => *kill_at,
                DrainState::Idle => return Err("the drain was reset".into()),
            };
            let now = Instant::now();
            if now >= kill_at {
                return Err("the drain is still running at its deadline".into());
            }
            st = self.changed.wait_timeout(st, kill_at - now).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
    }

    fn run_drain(&self, start: std::time::Instant, until: std::time::Instant) {
        let why = crate::drain::run(&self.drain, start, until, Some(self.budget), None, std::sync::Arc::new(crate::drain::NoNotify)).why;
        self.finish(start, why);
    }

    fn finish(&self, start: std::time::Instant, why: String) {
        tracing::info!(t_ms = start.elapsed().as_millis(), reason = %why, "drain ended: answering /drain");
        let mut st = self.lock();
        st.drain = DrainState::Done(format!("{why} (after {}ms)", start.elapsed().as_millis()));
        self.changed.notify_all();
    }

    /// Before exiting: wait until every `/drain` request has its answer. A
    /// drain under way is waited for (bounded by its plan); with none
    /// requested yet, wait for one until `idle_until`.
    pub(crate) fn settle(&self, idle_until: std::time::Instant) {
        use std::time::{Duration, Instant};
        let start = Instant::now();
        let mut st = self.lock();
        let mut logged = false;
        loop {
            let deadline = match (&st.drain, st.answering) {
                (DrainState::Running { kill_at }, _) => {
                    if !logged {
                        tracing::info!("a drain is under way: answering its /drain requests before exiting");
                        logged = true;
                    }
                    *kill_at
                }
                (DrainState::Done(_), 0) => return,
                // The answers are being written, each bounded by the write timeout.
                (DrainState::Done(_), _) => start + http::WRITE_TIMEOUT + Duration::from_secs(1),
                (DrainState::Idle, _) => idle_until,
            };
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            st = self.changed.wait_timeout(st, deadline - now).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
    }
}

/// The HTTP/1.1 server: one request per connection (`Connection: close`),
/// parsed with httparse; every response is a short `text/plain` body.
#[cfg(feature = "sidecar")]
mod http {
    use std::io::{self, Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tracing::{debug, warn};

    use super::Hub;

    /// Connections served at once; one more is answered 503 and closed.
    pub const MAX_CONNECTIONS: usize = 64;
    /// The whole request head must arrive within this time (slowloris guard).
    pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
    pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
    /// Longest request head accepted (431 beyond).
    const MAX_HEAD: usize = 8 * 1024;
    const MAX_HEADERS: usize = 32;

    struct Reply {
        status: u16,
        body: String,
        allow_get: bool,
    }

    impl Reply {
        fn text(status: u16, body: impl Into<String>) -> Reply {
            Reply { status, body: body.into(), allow_get: false }
        }
    }

    fn reason(status: u16) -> &'static str {
        match status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Error",
        }
    }

    /// Frees a connection slot when the connection's thread ends.
    struct Slot(Arc<AtomicUsize>);
    impl Drop for Slot {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    pub fn serve(listener: TcpListener, hub: Arc<Hub>) {
        let active = Arc::new(AtomicUsize::new(0));
        for conn in listener.incoming() {
            let stream = match conn {
                Ok(s) => s,
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    // Out of descriptors or memory: accept fails at once
                    // again until something is freed, so back off briefly
                    // instead of spinning.
                    if !matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    continue;
                }
            };
            if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                warn!(max = MAX_CONNECTIONS, "too many connections: answering 503");
                reject_busy(stream);
                continue;
            }
            active.fetch_add(1, Ordering::SeqCst);
            let slot = Slot(Arc::clone(&active));
            let hub = Arc::clone(&hub);
            let spawned = std::thread::Builder::new().name("http-conn".into()).stack_size(128 * 1024).spawn(move || {
                let _slot = slot;
                handle(stream, &hub);
            });
            if let Err(e) = spawned {
                // The closure, and with it the connection and the slot, is dropped.
                warn!(error = %e, "cannot start a connection thread: connection closed");
            }
        }
    }

    /// Answer 503 from the accept loop without blocking it: the response is
    /// tiny and the socket's send buffer empty, so the write completes at once.
    fn reject_busy(mut stream: TcpStream) {
        let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
        let _ = write_reply(&mut stream, &Reply::text(503, "busy\n"));
        let _ = stream.shutdown(Shutdown::Write);
        // Read what the client already sent, so closing does not turn into
        // a reset that could destroy the response before it is read.
        if stream.set_nonblocking(true).is_ok() {
            let mut sink = [0u8; 1024];
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        }
    }

    fn handle(mut stream: TcpStream, hub: &Arc<Hub>) {
        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
        let (method, path) = match read_head(&mut stream) {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(status) => {
                debug!(status, "bad request");
                let _ = write_reply(&mut stream, &Reply::text(status, format!("{}\n", reason(status).to_lowercase())));
                close(stream);
                return;
            }
        };
        let path_only = path.split('?').next().unwrap_or("");
        let reply = match (path_only, method.as_str()) {
            ("/healthz", "GET") => Reply::text(200, "ok\n"),
            ("/drain", "GET") => {
                let _ticket = hub.enter();
                let reply = match hub.drain() {
                    Ok(why) => Reply::text(200, format!("drained: {why}\n")),
                    Err(why) => Reply::text(503, format!("{why}\n")),
                };
                let _ = write_reply(&mut stream, &reply);
                debug!(method, path, status = reply.status, "request");
                close(stream);
                return; // the ticket is released only after the answer is written
            }
            ("/healthz" | "/drain", _) => Reply { status: 405, body: "method not allowed: use GET\n".into(), allow_get: true },
            _ => Reply::text(404, "not found: use GET /drain or GET /healthz\n"),
        };
        let _ = write_reply(&mut stream, &reply);
        debug!(method, path, status = reply.status, "request");
        close(stream);
    }

    /// Reads one request head. `Ok(None)`: the client went away first.
    /// `Err(status)`: answer with that status and close.
    fn read_head(stream: &mut TcpStream) -> Result<Option<(String, String)>, u16> {
        let deadline = Instant::now() + READ_TIMEOUT;
        let mut buf = vec![0u8; MAX_HEAD];
        let mut len = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                return Err(408);
            }
            match stream.read(&mut buf[len..]) {
                Ok(0) => return Ok(None),
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return Err(408),
                Err(_) => return Ok(None),
            }
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf[..len]) {
                Ok(httparse::Status::Complete(_)) => {
                    let method = req.method.unwrap_or_default().to_string();
                    let path = req.path.unwrap_or_default().to_string();
                    return Ok(Some((method, path)));
                }
                Ok(httparse::Status::Partial) if len == buf.len() => return Err(431),
                Ok(httparse::Status::Partial) => continue,
                Err(httparse::Error::TooManyHeaders) => return Err(431),
                Err(_) => return Err(400),
            }
        }
    }

    fn write_reply(stream: &mut TcpStream, reply: &Reply) -> io::Result<()> {
        let allow = if reply.allow_get { "Allow: GET\r\n" } else { "" };
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            reply.status,
            reason(reply.status),
            reply.body.len()
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(reply.body.as_bytes());
        stream.write_all(&out)
    }

    /// Close after the answer: send FIN, then read (briefly, bounded) what
    /// the client may still send (a body we ignored), so that the close does
    /// not reset the connection before the client has read the answer.
    fn close(mut stream: TcpStream) {
        let _ = stream.shutdown(Shutdown::Write);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut sink = [0u8; 1024];
        let mut budget: usize = 64 * 1024;
        while budget > 0 {
            match stream.read(&mut sink) {
                Ok(n) if n > 0 => budget = budget.saturating_sub(n),
                _ => break,
            }
        }
    }
}

#[cfg(all(test, feature = "sidecar"))]
mod tests {
    use super::imp::{helper_shutdown, listen_addr, usage_problem};
    use super::*;
    use crate::config::{Config, InitConfig, Mode, ShutdownConfig, SidecarConfig, Strategy};
    use std::time::{Duration, Instant};

    fn parse(args: &[&str]) -> Config {
        let cli = crate::cli::Cli::try_parse_from(std::iter::once("lastcall").chain(args.iter().copied())).expect("clap");
        Config::from_cli(cli).expect("config")
    }

    fn sidecar(args: &[&str]) -> (SidecarConfig, InitConfig, ShutdownConfig) {
        let c = parse(args);
        let Mode::Sidecar(sc, init) = c.mode else { panic!("not sidecar") };
        (sc, init, c.shutdown)
    }

    #[test]
    fn helper_drains_on_wait_ports_only() {
        let (sc, _, sh) = sidecar(&["sidecar", "--drain", "delay", "--port", "1", "--wait-port", "8080,8443", "--", "proxy"]);
        let h = helper_shutdown(&sc, &sh);
        assert_eq!(h.drain.strategies, vec![Strategy::PortsClosed]);
        assert_eq!(h.drain.ports, vec![8080, 8443]);
        assert_eq!(h.control_socket, None);
        assert_eq!(h.budget, sh.budget);
        // The HTTP drain keeps the user's strategies.
        assert_eq!(sh.drain.strategies, vec![Strategy::Delay]);

        let (sc, _, sh) = sidecar(&["sidecar", "--drain-delay", "3s", "--", "proxy"]);
        assert!(helper_shutdown(&sc, &sh).drain.strategies.is_empty());
    }

    #[test]
    fn usage_problems() {
        let ok: &[&[&str]] = &[&["sidecar"], &["sidecar", "--", "p"], &["sidecar", "--listen", "off", "--", "p"]];
        for args in ok {
            let (sc, init, _) = sidecar(args);
            assert_eq!(usage_problem(&sc, &init), None, "{args:?}");
        }
        let bad: &[&[&str]] =
            &[&["sidecar", "--listen", "off"], &["sidecar", "--wait-port", "8080"], &["sidecar", "--wait-port", "0", "--", "p"]];
        for args in bad {
            let (sc, init, _) = sidecar(args);
            let p = usage_problem(&sc, &init).unwrap_or_else(|| panic!("{args:?} accepted"));
            assert!(!p.contains('\n'));
        }
        assert_eq!(listen_addr(" off "), None);
        assert_eq!(listen_addr("0.0.0.0:9099"), Some("0.0.0.0:9099"));
    }

    fn hub(delay_ms: u64) -> std::sync::Arc<Hub> {
        let (_, _, mut sh) = sidecar(&["sidecar", "--drain-delay", "1s"]);
        sh.drain.delay = Duration::from_millis(delay_ms);
        std::sync::Arc::new(Hub::new(sh.drain, sh.budget))
    }

    #[test]
    fn concurrent_drains_join_one_and_later_ones_answer_at_once() {
        let h = hub(300);
        let t = Instant::now();
        let joins: Vec<_> = (0..3)
            .map(|_| {
                let h = std::sync::Arc::clone(&h);
                std::thread::spawn(move || {
                    let _t = h.enter();
                    (h.drain(), t.elapsed())
                })
            })
            .collect();
        for j in joins {
            let (why, took) = j.join().unwrap();
            assert!(why.unwrap().contains("delay"));
            assert!(took >= Duration::from_millis(290) && took < Duration::from_millis(900), "{took:?}");
        }
        let t2 = Instant::now();
        assert!(h.drain().is_ok());
        assert!(t2.elapsed() < Duration::from_millis(50));
        h.settle(Instant::now() + Duration::from_secs(10)); // done, nothing pending: at once
        assert!(t2.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn settle_waits_for_a_running_drain_but_not_long_when_idle() {
        let h = hub(300);
        let t = Instant::now();
        h.settle(t + Duration::from_millis(100));
        let idle = t.elapsed();
        assert!(idle >= Duration::from_millis(100) && idle < Duration::from_millis(500), "{idle:?}");

        let h2 = std::sync::Arc::clone(&h);
        let t = Instant::now();
        let j = std::thread::spawn(move || {
            let _t = h2.enter();
            h2.drain()
        });
        // The request may start just after settle begins: settle sees the
        // drain start within its idle window and waits for it.
        h.settle(Instant::now() + Duration::from_secs(2));
        assert!(t.elapsed() >= Duration::from_millis(290), "{:?}", t.elapsed());
        assert!(j.join().unwrap().is_ok());
    }
}
