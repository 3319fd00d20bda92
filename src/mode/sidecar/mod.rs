//! `lastcall sidecar`: a container beside the app, for pods whose app image
//! cannot get lastcall as its entrypoint. This file wires the mode together
//! and owns its signals; `hub.rs` is the one drain every `GET /drain` joins,
//! `http.rs` the server, `request.rs` the request handling as a pure
//! function.
//!
//! It does two independent jobs, each optional:
//!
//! * **HTTP on `--listen`** (default `0.0.0.0:9099`; `off` disables it):
//!   `GET /drain` runs the configured drain strategies and answers 200 when
//!   they are done, for the app container's `preStop: httpGet`. The grace
//!   period counts from the first request, as Kubernetes counts it from the
//!   hook's start, so the drain ends by `grace − kill margin − stop budget`
//!   after it. Concurrent and repeated requests join that one drain (hooks
//!   are delivered at least once), unless it saw no real shutdown (`hub.rs`).
//!   `--drain-token` and `--drain-from` restrict who may drain. `GET
//!   /healthz` answers `ok` to anyone, for the sidecar's own probes.
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
//! and when no drain counts yet it keeps listening for up to
//! [`LATE_REQUEST_WINDOW`] after the signal. The kubelet stops the containers
//! of a pod in parallel, so in a classic sidecar the app's preStop request
//! can arrive just after the sidecar's own SIGTERM.
//!
//! ## Signals: why the sidecar receives them differently from the PID 1
//!
//! The PID 1 forwards every catchable signal (about 50) and reads them from a
//! signalfd with all of them blocked (`signals::SignalSource`): signal-hook's
//! registry copies itself on each registration, and registering 50 signals
//! that way was most of lastcall's start-up. A sidecar that wraps a helper
//! is that same supervisor and does the same, but blocks the set first
//! thing, before any thread exists: threads inherit the blocked mask, so none
//! of them takes a signal meant for the supervisor, and a signal that comes
//! while the HTTP server starts stays pending until the supervisor reads it.
//!
//! A sidecar without a helper forwards nothing and waits for three signals
//! (the stop signal, TERM and INT). That costs signal-hook three
//! registrations, an acceptable cost, so there it keeps the design card's
//! signal-hook, with the mask discipline that makes it safe here: the three
//! signals are blocked first thing, then signal-hook's handlers are installed
//! (replacing an inherited SIG_IGN; signal-hook publishes a handler's action
//! only after its sigaction call, so a signal unblocked in between would be
//! dropped), the other threads start with the signals blocked (so no handler
//! interrupts a drain strategy's system call with EINTR), and this thread
//! unblocks them afterwards, which delivers one that came meanwhile or was
//! blocked when lastcall started.
//!
//! Either way no stop signal is consumed without effect: before lastcall
//! takes charge of it, its default action ends lastcall (nothing has started
//! yet); afterwards it is pending or recorded until read. Both paths note
//! its arrival on the program's one clock, `supervise::stopped_at`.
//!
//! Exit status: the helper's (as for `lastcall -- CMD`); without a helper 0
//! after SIGTERM/SIGINT/the stop signal; 2 for usage errors (checked in
//! `config.rs`) and an unreadable or invalid `--drain-token-file`; 125 when
//! the address cannot be bound or the signal handlers cannot be set; 78 when
//! `--strict` and a drain strategy cannot work here.

mod http;
mod hub;
mod request;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::iterator::Signals;
use tracing::{error, info, warn};

use crate::config::{check_drain_token, DrainToken, InitConfig, ShutdownConfig, SidecarConfig};
use crate::exit_status::{Failure, EXIT_USAGE};
use crate::supervise;
use hub::Hub;

/// How long after its stop signal a sidecar in which no drain counts yet
/// keeps listening for a `/drain`. The kubelet starts the app's preStop hook
/// and the sidecar's SIGTERM at the same moment (one goroutine per container
/// in `killContainersWithSyncResult`), so the request may trail the signal
/// by a few milliseconds on a busy node; 2 s covers that with room to spare.
pub const LATE_REQUEST_WINDOW: Duration = Duration::from_secs(2);

pub fn run(sc: &SidecarConfig, init: &InitConfig, shutdown: &ShutdownConfig) -> Result<i32, Failure> {
    // First, before any thread exists and before anything takes time.
    let stops = Stops::take(init, shutdown)?;
    let token = match drain_token(sc.drain_token.as_ref()) {
        Ok(t) => t,
        Err(TokenFileError::Read(path, e)) => {
            error!(path = %path.display(), error = %e, "cannot read --drain-token-file");
            return Ok(EXIT_USAGE);
        }
        Err(TokenFileError::Invalid(path, problem)) => {
            error!(path = %path.display(), problem, "invalid token in --drain-token-file");
            return Ok(EXIT_USAGE);
        }
    };
    let hub = match sc.listen {
        Some(addr) => Some(start_http(addr, sc, shutdown, token)?),
        None => None,
    };

    let code = match stops {
        Stops::Supervisor => supervise::run(init, &helper_shutdown(sc, shutdown))?,
        Stops::Own(signals, sigs) => wait_for_stop(signals, &sigs),
    };
    // After a stop, answer the `/drain` requests in hand and wait briefly for
    // a late one. A helper that exited on its own (no stop) is a crash to
    // restart from, not a shutdown: exit at once.
    if let (Some(hub), Some(at)) = (hub, supervise::stopped_at()) {
        // The late-request window never reaches past our own kill deadline.
        hub.settle((at + LATE_REQUEST_WINDOW).min(shutdown.budget.plan(at).kill_at));
    }
    Ok(code)
}

/// How the sidecar learns of its stop (module doc, "Signals").
enum Stops {
    /// The helper's supervisor reads them from its signalfd; they are blocked.
    Supervisor,
    /// No helper: signal-hook's handlers for these signals, blocked in this
    /// thread until the other threads have started.
    Own(Signals, Vec<i32>),
}

impl Stops {
    fn take(init: &InitConfig, shutdown: &ShutdownConfig) -> Result<Stops, Failure> {
        if !init.command.is_empty() {
            // Blocks the supervisor's signals; the mask outlives the source,
            // and the supervisor opens its own.
            drop(supervise::install_signal_source()?);
            return Ok(Stops::Supervisor);
        }
        let mut sigs = vec![shutdown.stop_signal.0, libc::SIGTERM, libc::SIGINT];
        sigs.sort_unstable();
        sigs.dedup();
        // Blocked before the handlers are installed: signal-hook publishes a
        // handler's action only after its sigaction call, and a signal in
        // between finds no action and is dropped.
        set_mask(libc::SIG_BLOCK, &sigs).map_err(|e| Failure::Setup { what: "signal mask", source: e })?;
        let signals = Signals::new(&sigs).map_err(|e| Failure::Setup { what: "signal handlers", source: e })?;
        Ok(Stops::Own(signals, sigs))
    }
}

/// Without a helper: every thread has started; take the signals on this
/// thread and wait for one. Any way out of the wait is a stop.
fn wait_for_stop(mut signals: Signals, sigs: &[i32]) -> i32 {
    if let Err(e) = set_mask(libc::SIG_UNBLOCK, sigs) {
        // Cannot happen for valid signals; the handlers still run on
        // whichever thread does not block them.
        warn!(error = %e, "cannot unblock the stop signals on the main thread");
    }
    let sig = signals.forever().next();
    supervise::note_stop(Instant::now());
    let signal = sig.map_or_else(|| "?".to_string(), |s| crate::signals::Signal(s).name());
    info!(signal = %signal, "signal received: answering pending /drain requests, then exiting");
    0
}

/// Blocks or unblocks `sigs` in the calling thread (threads started later
/// inherit the mask). Raw libc: the stop signal may be a real-time signal,
/// which nix's `SigSet` cannot hold.
fn set_mask(how: libc::c_int, sigs: &[i32]) -> std::io::Result<()> {
    // SAFETY: a zeroed sigset_t is initialised by sigemptyset before use;
    // sigaddset fails only for an invalid number (checked by config.rs);
    // pthread_sigmask reads the set and changes only this thread's mask.
    let rc = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in sigs {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(how, &set, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

enum TokenFileError {
    Read(std::path::PathBuf, std::io::Error),
    Invalid(std::path::PathBuf, &'static str),
}

/// The token `GET /drain` must carry, read from its file if it has one.
fn drain_token(t: Option<&DrainToken>) -> Result<Option<Vec<u8>>, TokenFileError> {
    match t {
        None => Ok(None),
        Some(DrainToken::Value(v)) => Ok(Some(v.as_bytes().to_vec())),
        Some(DrainToken::File(path)) => {
            let raw = std::fs::read_to_string(path).map_err(|e| TokenFileError::Read(path.clone(), e))?;
            let token = raw.strip_suffix('\n').map_or(raw.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
            check_drain_token(token).map_err(|problem| TokenFileError::Invalid(path.clone(), problem))?;
            Ok(Some(token.as_bytes().to_vec()))
        }
    }
}

/// Binds `--listen`, checks the strategies and starts the server thread.
fn start_http(addr: SocketAddr, sc: &SidecarConfig, shutdown: &ShutdownConfig, token: Option<Vec<u8>>) -> Result<Arc<Hub>, Failure> {
    let listener = TcpListener::bind(addr).map_err(|e| Failure::Listen { addr: addr.to_string(), source: e })?;
    let local = listener.local_addr().unwrap_or(addr);
    info!(addr = %local, token = token.is_some(), from = sc.drain_from.len(), "listening for GET /drain and GET /healthz");
    if token.is_none() && sc.drain_from.is_empty() && !addr.ip().is_loopback() {
        warn!("GET /drain is open to every client on the pod network: set --drain-token (docs/modes.md, \"Who may drain\")");
    }
    if shutdown.drain.strategies.is_empty() {
        warn!("no drain strategy is set (--drain, --drain-delay): GET /drain answers at once");
    } else if shutdown.drain.k8s.strict {
        // As the PID 1 does: fail before the first rollout, not during it.
        crate::drain::preflight(&shutdown.drain)?;
    } else {
        let cfg = shutdown.drain.clone();
        let _ = std::thread::Builder::new().name("preflight".into()).stack_size(512 * 1024).spawn(move || {
            if let Err(problem) = crate::drain::preflight(&cfg) {
                warn!(%problem, "drain strategy check failed");
            }
        });
    }
    let (hub, wake) = Hub::new(shutdown.drain.clone(), shutdown.budget, supervise::stopped_at)
        .map_err(|e| Failure::Setup { what: "drain hub", source: e })?;
    let policy = http::Policy { token, from: sc.drain_from.clone() };
    let server =
        http::Server::new(listener, Arc::clone(&hub), wake, policy).map_err(|e| Failure::Setup { what: "HTTP server", source: e })?;
    std::thread::Builder::new()
        .name("http".into())
        .stack_size(128 * 1024)
        .spawn(move || server.serve())
        .map_err(|e| Failure::Setup { what: "cannot start the HTTP thread", source: e })?;
    Ok(hub)
}

/// The helper's shutdown settings: the user's budget and stop signal, but
/// the drain is the wait for the app's ports (or none) instead of the
/// strategies `--drain` chose, and no control socket: the drain entry point
/// of a sidecar is `GET /drain`.
fn helper_shutdown(sc: &SidecarConfig, shutdown: &ShutdownConfig) -> ShutdownConfig {
    let mut s = shutdown.clone();
    s.drain.strategies = vec![];
    s.drain.wait_ports = sc.wait_ports.clone();
    s.control_socket = None;
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Mode, Strategy};

    fn sidecar(args: &[&str]) -> (SidecarConfig, InitConfig, ShutdownConfig) {
        let cli = crate::cli::Cli::try_parse_from(std::iter::once("lastcall").chain(args.iter().copied())).expect("clap");
        let c = Config::from_cli(cli).expect("config");
        let Mode::Sidecar(sc, init) = c.mode else { panic!("not sidecar") };
        (sc, init, c.shutdown)
    }

    #[test]
    fn helper_drains_on_wait_ports_only() {
        let (sc, _, sh) = sidecar(&["sidecar", "--drain", "delay", "--port", "1", "--wait-port", "8080,8443", "--", "proxy"]);
        let h = helper_shutdown(&sc, &sh);
        assert!(h.drain.strategies.is_empty() && !h.drain.is_empty());
        assert_eq!(h.drain.wait_ports, vec![8080, 8443]);
        assert_eq!(h.control_socket, None);
        assert_eq!(h.budget, sh.budget);
        // The HTTP drain keeps the user's strategies.
        assert_eq!(sh.drain.strategies, vec![Strategy::Delay]);

        let (sc, _, sh) = sidecar(&["sidecar", "--drain-delay", "3s", "--", "proxy"]);
        assert!(helper_shutdown(&sc, &sh).drain.is_empty());
    }

    #[test]
    fn token_file_contents() {
        let dir = std::env::temp_dir().join(format!("lastcall-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, body: &str| {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap();
            DrainToken::File(p)
        };
        let token = b"0123456789abcdef".to_vec();
        for body in ["0123456789abcdef", "0123456789abcdef\n", "0123456789abcdef\r\n"] {
            assert_eq!(drain_token(Some(&file("ok", body))).ok(), Some(Some(token.clone())), "{body:?}");
        }
        for body in ["", "\n", "0123456789abcdef\n\n", "short\n", "0123456789 abcdef"] {
            assert!(matches!(drain_token(Some(&file("bad", body))), Err(TokenFileError::Invalid(..))), "{body:?}");
        }
        assert!(matches!(drain_token(Some(&DrainToken::File(dir.join("missing")))), Err(TokenFileError::Read(..))));
        assert_eq!(drain_token(None).ok(), Some(None));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
