//! Black-box tests of the modes for pods that cannot change their
//! entrypoint (issue 4): `lastcall drain` as a preStop exec hook, alone and
//! talking to a lastcall PID 1 over the control socket, and `lastcall
//! sidecar` with its HTTP endpoints and a wrapped helper.
//!
//! The same rules as tests/pid1.rs: wait for events (testapp's lines, exits,
//! HTTP answers), assert ordering with CLOCK_MONOTONIC timestamps, and treat
//! every time limit as an upper guard, never as a synchronisation device.
//! lastcall's log lines go to stderr, for which the harness has no line
//! events; where a test must know that lastcall reached a state only its log
//! shows, it polls the captured stderr (`wait_stderr`, 10 ms, bounded).

#[macro_use]
mod support;

use std::path::Path;

use libc::{SIGTERM, SIGWINCH};
use support::{mono_ns, secs, Mode, Proc, Run, TempDir, GUARD, MS, SEC};

/// Timer slack for lower bounds: lastcall's timers fire at or after their
/// instant; a few milliseconds cover the clock reads around them.
const SLACK: u64 = 10 * MS;

/// KILL at 9 s, drain may use up to 8 s: a 2 s drain delay is never clamped.
const DRAIN_OPTS: [&str; 6] = ["--grace-period", "10s", "--kill-margin", "1s", "--stop-budget", "1s"];

/// Sends WINCH to lastcall and waits for the app to print it: every signal
/// sent to lastcall before has been processed by then (tests/pid1.rs).
fn barrier(p: &mut Proc) {
    p.signal(SIGWINCH);
    p.expect_signal(SIGWINCH);
}

/// The app's `ready` line (waits for it).
fn ready(p: &mut Proc) {
    p.expect_prefix("ready");
}

/// `lastcall drain ARGS` run directly by the test (no PID 1 of its own).
fn lastcall_drain(args: &[&str]) -> Proc {
    Run::new(Mode::Subreaper).raw(std::iter::once("drain").chain(args.iter().copied())).spawn()
}

fn sock_arg(p: &Path) -> String {
    p.to_str().expect("temp paths are UTF-8").to_string()
}

// ---------------------------------------------------------------------------
// `lastcall drain` and the control socket of a lastcall PID 1
// ---------------------------------------------------------------------------

/// A lastcall PID 1 (new PID namespace) with a control socket in `dir`.
fn pid1_with_socket(dir: &TempDir, opts: &[&str], app: &[&str]) -> (Proc, String) {
    let sock = sock_arg(&dir.join("ctl.sock"));
    let p = Run::new(Mode::Pid1).opts(["--control-socket", sock.as_str()]).opts(opts).app(app).spawn();
    (p, sock)
}

/// Two `lastcall drain` clients at once join one drain of the PID 1: both
/// return 0 after about the 2 s drain delay (not one after the other), the
/// app has not been sent TERM then, and the kubelet's TERM that follows is
/// forwarded at once (no second drain).
#[test]
fn control_socket_drain_is_joined_and_term_follows_at_once() {
    let dir = TempDir::new("ctl-join");
    let mut opts = DRAIN_OPTS.to_vec();
    opts.extend(["--drain-delay", "2s"]);
    let (mut p, sock) = pid1_with_socket(&dir, &opts, &["signals"]);
    ready(&mut p);

    let t0 = mono_ns();
    let mut a = lastcall_drain(&["--control-socket", &sock]);
    let mut b = lastcall_drain(&["--control-socket", &sock]);
    let ea = a.expect_exit_code(0);
    let eb = b.expect_exit_code(0);
    for (c, at) in [(&mut a, ea), (&mut b, eb)] {
        c.check(at + SLACK >= t0 + 2 * SEC, format!("drain client returned {} after start: before the 2s drain", secs(at - t0)));
        c.check(at - t0 < 8 * SEC, format!("drain client returned {} after start", secs(at - t0)));
        let err = c.stderr();
        c.check(err.contains("drain done by the lastcall PID 1"), "the client did not drain through the PID 1");
    }
    p.check(ea.abs_diff(eb) < SEC, format!("clients returned {} apart: two drains, not one", secs(ea.abs_diff(eb))));

    barrier(&mut p);
    let early = p.lines_starting("signal TERM");
    p.check(early.is_empty(), "the app got TERM during the preStop drain");

    let sent = p.signal(SIGTERM);
    let got = p.expect_signal(SIGTERM).mono();
    p.check(got >= sent, "TERM arrived before it was sent");
    p.check(got - sent < SEC, format!("TERM reached the app {} after the kubelet's TERM: drained twice", secs(got - sent)));
    p.expect_line("exiting");
    p.expect_exit_code(0);
    let err = p.stderr();
    p.check(err.contains("no second wait"), "PID 1 did not log the TERM after the preStop drain");
}

/// The control socket is created owner-only (0600), and is a socket.
#[test]
fn control_socket_is_owner_only() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = TempDir::new("ctl-mode");
    let (mut p, sock) = pid1_with_socket(&dir, &[], &["signals"]);
    ready(&mut p); // the socket is bound before the app is spawned
    let meta = std::fs::symlink_metadata(&sock).unwrap_or_else(|e| p.fail(format!("{sock}: {e}")));
    p.check(meta.file_type().is_socket(), format!("{sock} is not a socket"));
    let mode = meta.permissions().mode() & 0o777;
    p.check(mode == 0o600, format!("{sock} has mode {mode:o}, want 600"));
    p.signal(SIGTERM);
    p.expect_exit_code(0);
}

/// `lastcall drain` after the app exited returns 0 at once (`exited`),
/// although a 30 s drain delay is configured: nothing to drain for. The PID
/// 1 is still up, waiting for a daemon the app left (--wait-descendants).
#[test]
fn drain_after_the_app_exited_returns_at_once() {
    let dir = TempDir::new("ctl-exited");
    let opts = ["--wait-descendants", "--grace-period", "60s", "--kill-margin", "1s", "--stop-budget", "1s", "--drain-delay", "30s"];
    let (mut p, sock) = pid1_with_socket(&dir, &opts, &["daemon"]);
    p.expect_prefix("daemon pid=");
    p.expect_line("main exiting");

    let t0 = mono_ns();
    let mut c = lastcall_drain(&["--control-socket", &sock]);
    let done = c.expect_exit_code(0);
    c.check(done - t0 < 5 * SEC, format!("drain took {} although the app had exited", secs(done - t0)));
    let err = c.stderr();
    c.check(err.contains("already exited"), "the client did not report that the app had exited");

    // The daemon is still there; the kubelet's TERM ends it and lastcall.
    p.signal(SIGTERM);
    p.expect_line("daemon signal TERM");
    p.expect_exit_code(0);
}

/// The grace deadline counts from the preStop request, as Kubernetes counts
/// it: grace 4 s, margin 1 s, stop budget 1 s. The request's drain is cut to
/// 2 s (not the 30 s delay); the TERM after it reaches an app that ignores
/// it, and the SIGKILL comes 3 s after the *request*, not 3 s after TERM.
#[test]
fn deadline_counts_from_the_drain_request() {
    let dir = TempDir::new("ctl-deadline");
    let opts = ["--grace-period", "4s", "--kill-margin", "1s", "--stop-budget", "1s", "--drain-delay", "30s"];
    let (mut p, sock) = pid1_with_socket(&dir, &opts, &["signals", "--ignore", "TERM", "--exit-on", "none"]);
    ready(&mut p);

    let t0 = mono_ns();
    let mut c = lastcall_drain(&["--control-socket", &sock]);
    let done = c.expect_exit_code(0);
    c.check(done + SLACK >= t0 + 2 * SEC, format!("drain returned {} after the request: before its 2s budget", secs(done - t0)));
    c.check(done - t0 < 3 * SEC, format!("drain returned {} after the request: past its 2s budget", secs(done - t0)));

    let sent = p.signal(SIGTERM);
    let exited = p.expect_exit_code(137);
    p.check(exited + SLACK >= t0 + 3 * SEC, format!("killed {} after the request: before grace - margin", secs(exited - t0)));
    p.check(exited < t0 + 4 * SEC, format!("killed {} after the request: not before the grace deadline", secs(exited - t0)));
    p.check(exited - sent < 2 * SEC, format!("killed {} after TERM: the deadline was counted from TERM", secs(exited - sent)));
    let err = p.stderr();
    p.check(err.contains("SIGKILL"), "stderr does not mention the SIGKILL");
}

/// With no lastcall PID 1 listening, `lastcall drain` runs the delay itself.
#[test]
fn drain_without_pid1_runs_the_delay_itself() {
    let dir = TempDir::new("no-pid1");
    let sock = sock_arg(&dir.join("nobody.sock"));
    let t0 = mono_ns();
    let mut c = lastcall_drain(&["--control-socket", &sock, "--drain-delay", "1s"]);
    let done = c.expect_exit_code(0);
    c.check(done + SLACK >= t0 + SEC, format!("returned {} after start: before the 1s delay", secs(done - t0)));
    c.check(done - t0 < 5 * SEC, format!("returned {} after start", secs(done - t0)));
    let err = c.stderr();
    c.check(err.contains("no lastcall PID 1"), "did not say it drained on its own");
}

/// `lastcall drain` never runs past its drain budget: a 30 s delay in a 4 s
/// grace period (1 s margin, 1 s stop budget) ends after 2 s.
#[test]
fn drain_without_pid1_never_exceeds_the_drain_budget() {
    let t0 = mono_ns();
    let mut c = lastcall_drain(&[
        "--control-socket",
        "off",
        "--drain-delay",
        "30s",
        "--grace-period",
        "4s",
        "--kill-margin",
        "1s",
        "--stop-budget",
        "1s",
    ]);
    let done = c.expect_exit_code(0);
    c.check(done + SLACK >= t0 + 2 * SEC, format!("returned {} after start: before the 2s budget", secs(done - t0)));
    c.check(done - t0 < 3 * SEC, format!("returned {} after start: past the 2s drain budget", secs(done - t0)));
}

/// Nothing to ask and nothing configured: exit 2 and exactly one line on
/// stderr (the kubelet shows it in the FailedPreStopHook event).
#[test]
fn drain_with_nothing_configured_exits_2_with_one_line() {
    let mut c = lastcall_drain(&["--control-socket", "off"]);
    c.expect_exit_code(2);
    let err = c.stderr();
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    c.check(lines.len() == 1, format!("want one stderr line, got {}", lines.len()));
    c.check(lines[0].contains("nothing to do"), "the line does not say what is wrong");
}

// ---------------------------------------------------------------------------
// `lastcall sidecar`
// ---------------------------------------------------------------------------

#[cfg(feature = "sidecar")]
mod sidecar {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    use support::sidecar::{listen_addr, read_answer, request_with, Answer};

    /// `METHOD PATH` on a new connection; waits for the answer.
    pub fn request(addr: &str, method: &str, path: &str) -> Answer {
        request_with(addr, method, path, &[])
    }

    /// `GET PATH` on its own thread.
    fn get_async(addr: &str, path: &str) -> std::thread::JoinHandle<Answer> {
        support::sidecar::get_async(addr, path, &[])
    }

    /// A sidecar without helper, on an ephemeral port, with a 2 s drain delay.
    fn http_sidecar() -> (Proc, String) {
        let mut args = vec!["sidecar", "--listen", "127.0.0.1:0", "--drain-delay", "2s"];
        args.extend(DRAIN_OPTS);
        let mut p = Run::new(Mode::Subreaper).raw(args).spawn();
        let addr = listen_addr(&mut p);
        (p, addr)
    }

    /// `/healthz` answers `ok`; unknown paths 404; a known path with another
    /// method 405 with `Allow: GET`. SIGTERM (no drain requested, no helper)
    /// ends the sidecar with 0.
    #[test]
    fn endpoints_and_errors() {
        let (mut p, addr) = http_sidecar();
        let ok = request(&addr, "GET", "/healthz");
        p.check(ok.status == 200 && ok.body == "ok\n", format!("/healthz: {} {:?}", ok.status, ok.body));
        let ok = request(&addr, "GET", "/healthz?verbose=1");
        p.check(ok.status == 200, format!("/healthz with a query: {}", ok.status));
        for path in ["/", "/nope", "/drainx", "/healthz/"] {
            let a = request(&addr, "GET", path);
            p.check(a.status == 404, format!("GET {path}: {} (want 404)", a.status));
        }
        for (method, path) in [("POST", "/drain"), ("PUT", "/healthz"), ("HEAD", "/drain"), ("DELETE", "/drain")] {
            let a = request(&addr, method, path);
            p.check(a.status == 405, format!("{method} {path}: {} (want 405)", a.status));
            p.check(a.header("allow") == Some("GET"), format!("{method} {path}: Allow {:?}", a.header("allow")));
        }
        // Not HTTP at all.
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.write_all(b"\x00\x01 hello\r\n\r\n").expect("send");
        let bad = read_answer(s);
        p.check(bad.status == 400, format!("garbage: {} (want 400)", bad.status));

        p.signal(SIGTERM);
        p.expect_exit_code(0);
    }

    /// A slow `/drain` (2 s delay) does not hold up other requests: `/healthz`
    /// is answered at once meanwhile. Two concurrent `/drain` requests join
    /// one drain (both 200 about 2 s after the first, not 4 s), and one after
    /// the drain ended is answered at once.
    #[test]
    fn slow_drain_is_joined_and_blocks_nothing_else() {
        let (mut p, addr) = http_sidecar();
        let t0 = mono_ns();
        let first = get_async(&addr, "/drain");
        p.wait_stderr("GET /drain: draining");
        let second = get_async(&addr, "/drain");

        let h0 = mono_ns();
        let health = request(&addr, "GET", "/healthz");
        p.check(health.status == 200, format!("/healthz during the drain: {}", health.status));
        p.check(health.at - h0 < SEC, format!("/healthz took {} during the drain", secs(health.at - h0)));

        let a = first.join().expect("first /drain");
        let b = second.join().expect("second /drain");
        for x in [&a, &b] {
            p.check(x.status == 200, format!("/drain: {} {:?}", x.status, x.body));
            p.check(x.body.starts_with("drained: "), format!("/drain body {:?}", x.body));
            p.check(
                x.at + SLACK >= t0 + 2 * SEC,
                format!("/drain answered {} after the first request: before the 2s drain", secs(x.at - t0)),
            );
        }
        p.check(a.at.abs_diff(b.at) < SEC, format!("/drain answers {} apart: two drains, not one", secs(a.at.abs_diff(b.at))));
        p.check(health.at < a.at.min(b.at), "/healthz was answered only after the drain");

        let l0 = mono_ns();
        let later = request(&addr, "GET", "/drain");
        p.check(later.status == 200, format!("/drain after the drain: {}", later.status));
        p.check(later.at - l0 < SEC, format!("/drain after the drain took {}", secs(later.at - l0)));

        p.signal(SIGTERM);
        p.expect_exit_code(0);
    }

    /// The sidecar's own SIGTERM (the kubelet sends it while the app's
    /// preStop request is pending) does not cut the pending `/drain`: the
    /// sidecar answers it 200 after the drain, then exits 0.
    #[test]
    fn sigterm_during_a_drain_still_answers_it() {
        let (mut p, addr) = http_sidecar();
        let t0 = mono_ns();
        let pending = get_async(&addr, "/drain");
        p.wait_stderr("GET /drain: draining");
        p.signal(SIGTERM);
        let a = pending.join().expect("/drain");
        p.check(a.status == 200, format!("/drain: {} {:?}", a.status, a.body));
        p.check(a.at + SLACK >= t0 + 2 * SEC, "/drain answered before the drain ended");
        let exited = p.expect_exit_code(0);
        p.check(exited + SLACK >= t0 + 2 * SEC, "the sidecar exited before the pending drain ended");
    }

    /// A `/drain` request that arrives just after the sidecar's SIGTERM (the
    /// kubelet starts both at the same moment) is still served.
    #[test]
    fn drain_request_just_after_sigterm_is_served() {
        let (mut p, addr) = http_sidecar();
        p.signal(SIGTERM);
        p.wait_stderr("signal received");
        let a = request(&addr, "GET", "/drain");
        p.check(a.status == 200, format!("/drain after SIGTERM: {} {:?}", a.status, a.body));
        p.expect_exit_code(0);
    }

    /// At most 64 connections are served at once; the 65th gets 503 at once
    /// (the 64 idle ones hold their threads until the read timeout). Once
    /// they are gone, requests are served again.
    #[test]
    fn connections_beyond_the_limit_get_503() {
        let (mut p, addr) = http_sidecar();
        let idle: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(&addr).expect("connect")).collect();
        // Accepted in order, so the 65th is accepted after the 64 hold their slots.
        let extra = TcpStream::connect(&addr).expect("connect");
        let busy = read_answer(extra);
        p.check(busy.status == 503, format!("65th connection: {} (want 503)", busy.status));
        drop(idle);
        // Slots are freed as the server threads see EOF, which sends the test
        // no event: retry (10 ms apart, bounded).
        let deadline = mono_ns() + GUARD.as_nanos() as u64;
        loop {
            let a = request(&addr, "GET", "/healthz");
            if a.status == 200 {
                break;
            }
            if mono_ns() > deadline {
                p.fail(format!("still {} after the idle connections closed", a.status));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        p.signal(SIGTERM);
        p.expect_exit_code(0);
    }

    /// Misuse exits 2 with one line: no HTTP and no command; `--wait-port`
    /// without a command to keep running.
    #[test]
    fn usage_errors_exit_2_with_one_line() {
        for args in [&["sidecar", "--listen", "off"][..], &["sidecar", "--listen", "127.0.0.1:0", "--wait-port", "8080"][..]] {
            let mut p = Run::new(Mode::Subreaper).raw(args).spawn();
            p.expect_exit_code(2);
            let err = p.stderr();
            let n = err.lines().filter(|l| !l.trim().is_empty()).count();
            p.check(n == 1, format!("{args:?}: want one stderr line, got {n}"));
        }
    }

    /// A port that is in use (here: bound by the test) cannot be listened on:
    /// exit 125 with one line.
    #[test]
    fn address_in_use_exits_125() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr").to_string();
        let mut p = Run::new(Mode::Subreaper).raw(["sidecar", "--listen", addr.as_str()]).spawn();
        p.expect_exit_code(125);
        let err = p.stderr();
        p.check(err.contains("cannot listen on"), "stderr does not say why");
    }

    /// `lastcall sidecar [--listen ...] --wait-port P ... -- testapp ARGS`.
    fn helper(mode: Mode, port: u16, listen: &str, opts: &[&str], app: &[&str]) -> Proc {
        let port = port.to_string();
        let app_path = support::testapp();
        let mut args: Vec<String> = ["sidecar", "--listen", listen, "--wait-port", port.as_str()].map(String::from).to_vec();
        args.extend(opts.iter().map(|s| s.to_string()));
        args.push("--".into());
        args.push(app_path.to_str().expect("UTF-8 path").to_string());
        args.extend(app.iter().map(|s| s.to_string()));
        Run::new(mode).raw(args).spawn()
    }

    /// Accepts `n` of lastcall's probe connections on the app's listener
    /// (on a thread, so a lastcall that never probes fails the test after
    /// GUARD instead of hanging it); returns the listener, still open.
    fn accept_probes(p: &mut Proc, app: TcpListener, n: usize) -> TcpListener {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..n {
                if app.accept().is_err() {
                    return;
                }
            }
            let _ = tx.send(app);
        });
        match rx.recv_timeout(GUARD) {
            Ok(app) => app,
            Err(_) => p.fail(format!("lastcall did not probe the app port {n} times")),
        }
    }

    both_modes! {
        /// The wrapped helper outlives the app: on SIGTERM it keeps running
        /// while the test's "app" port accepts connections, and gets its TERM
        /// only after the port closes (within a few 100 ms polls).
        fn helper_gets_term_only_after_the_app_port_closes(mode) {
            let app = TcpListener::bind("127.0.0.1:0").expect("bind the app port");
            let port = app.local_addr().expect("addr").port();
            let mut p = helper(mode, port, "127.0.0.1:0", &DRAIN_OPTS, &["signals"]);
            ready(&mut p);
            let sent = p.signal(SIGTERM);
            barrier(&mut p); // lastcall has the TERM and is waiting for the port
            // Three probes reach the open port, ~200 ms of waiting: each one
            // is an event (an accepted connection), not a sleep.
            let app = accept_probes(&mut p, app, 3);
            let early = p.lines_starting("signal TERM");
            p.check(early.is_empty(), "the helper got TERM while the app port was still open");

            let closed = mono_ns();
            drop(app);
            let got = p.expect_signal(SIGTERM).mono();
            p.check(got >= closed, format!("the helper got TERM {} before the app port closed", secs(closed.saturating_sub(got))));
            p.check(got - closed < 2 * SEC, format!("the helper got TERM {} after the app port closed", secs(got - closed)));
            p.check(got > sent, "TERM before it was sent");
            p.expect_line("exiting");
            p.expect_exit_code(0);
            let err = p.stderr();
            p.check(err.contains(&format!("app ports {port} closed")), "stderr does not say the app port closed");
        }
    }

    both_modes! {
        /// Deadline escalation in sidecar mode: the app port never closes and
        /// the helper ignores TERM. The wait ends at the drain budget (1 s),
        /// TERM is sent, and SIGKILL follows at grace - margin (2 s), before
        /// the 3 s grace deadline.
        fn helper_ignoring_term_is_killed_before_the_deadline(mode) {
            let app = TcpListener::bind("127.0.0.1:0").expect("bind the app port");
            let port = app.local_addr().expect("addr").port();
            let opts = ["--grace-period", "3s", "--kill-margin", "1s", "--stop-budget", "1s"];
            let mut p = helper(mode, port, "off", &opts, &["signals", "--ignore", "TERM", "--exit-on", "none"]);
            ready(&mut p);
            let sent = p.signal(SIGTERM);
            let exited = p.expect_exit_code(137);
            p.check(exited - sent < 3 * SEC, format!("exited {} after TERM: not before the 3s grace deadline", secs(exited - sent)));
            p.check(exited + SLACK >= sent + 2 * SEC, format!("exited {} after TERM: killed before grace - margin", secs(exited - sent)));
            let err = p.stderr();
            p.check(err.contains("still accept connections"), "stderr does not say the app port stayed open");
            p.check(err.contains("SIGKILL"), "stderr does not mention the SIGKILL");
            drop(app);
        }
    }
}

// ---------------------------------------------------------------------------
// The k8s strategy in the hook and sidecar modes
// ---------------------------------------------------------------------------

/// Every strategy works in every mode: the EndpointSlice wait of the k8s
/// strategy through `lastcall drain` (no PID 1) and through the sidecar's
/// `GET /drain`, against the API server double (tests/k8s/apiserver.py).
/// The scenario of tests/k8s.rs: pod web-1 in Service web is deleted and
/// its endpoint flips to terminating 1.5 s later; the drain must end no
/// earlier than the flip plus the 1 s propagation delay, and long before
/// the 20 s fallback delay.
#[cfg(all(feature = "k8s", feature = "sidecar"))]
mod k8s {
    use super::*;
    use support::apiserver::{ApiServer, Flip};

    /// The drain may last 27 s; the fallback (20 s) would be obvious.
    const OBSERVE: [&str; 10] =
        ["--grace-period", "30s", "--kill-margin", "1s", "--stop-budget", "2s", "--drain-delay", "20s", "--propagation-delay", "1s"];
    const FLIP_MS: u64 = 1500;

    /// `lastcall MODE_ARGS --drain k8s ...` the in-cluster way, as pod web-1.
    fn run(api: &ApiServer, mode_args: &[&str]) -> Run {
        let mut args: Vec<String> = mode_args.iter().map(|s| s.to_string()).collect();
        args.extend(["--drain", "k8s", "--k8s-token-file"].map(String::from));
        args.push(api.token_path().to_str().expect("UTF-8 path").to_string());
        args.push("--k8s-ca-file".into());
        args.push(api.ca_path().to_str().expect("UTF-8 path").to_string());
        args.extend(OBSERVE.map(String::from));
        let mut run = Run::new(Mode::Subreaper).raw(args).env("POD_NAME", "web-1").env("POD_IP", "10.0.0.5");
        for (k, v) in api.env() {
            run = run.env(&k, &v);
        }
        run
    }

    #[track_caller]
    fn check_ended(p: &mut Proc, deleted: u64, ended: u64) {
        let earliest = deleted + FLIP_MS * MS + SEC;
        p.check(ended >= earliest, format!("the drain ended {} before flip + propagation", secs(earliest.saturating_sub(ended))));
        p.check(
            ended - deleted < 10 * SEC,
            format!("the drain ended {} after the deletion: the fallback, not the endpoint", secs(ended - deleted)),
        );
    }

    /// `lastcall drain` as the hook of an image without lastcall PID 1.
    #[test]
    fn drain_hook_waits_for_the_endpoint() {
        let api = ApiServer::web1();
        let deleted = mono_ns();
        api.delete_pod("web-1", None, Flip::AfterMs(FLIP_MS));
        // The kubelet runs the hook after the deletion.
        let mut p = run(&api, &["drain", "--control-socket", "off"]).spawn();
        let done = p.expect_exit_code(0);
        check_ended(&mut p, deleted, done);
        let err = p.stderr();
        p.check(err.contains("endpoint out of service"), "the drain did not observe the endpoint");
    }

    /// The sidecar's `/drain` for the app's `preStop: httpGet`.
    #[test]
    fn sidecar_drain_waits_for_the_endpoint() {
        let api = ApiServer::web1();
        let mut p = run(&api, &["sidecar", "--listen", "127.0.0.1:0"]).spawn();
        let line = p.wait_stderr("listening for GET /drain");
        let addr = line.split_whitespace().find_map(|w| w.strip_prefix("addr=")).unwrap_or_default().to_string();
        let deleted = mono_ns();
        api.delete_pod("web-1", None, Flip::AfterMs(FLIP_MS));
        let a = sidecar::request(&addr, "GET", "/drain");
        p.check(a.status == 200, format!("/drain: {} {:?}", a.status, a.body));
        p.check(a.body.contains("k8s"), format!("/drain body {:?} does not name the strategy", a.body));
        check_ended(&mut p, deleted, a.at);
        p.signal(SIGTERM);
        p.expect_exit_code(0);
    }
}

// ---------------------------------------------------------------------------
// Edges of the preStop path (issue 11)
// ---------------------------------------------------------------------------

/// A `lastcall drain` run by hand (`kubectl exec ... lastcall drain` to
/// try the hook) and no stop signal after it: the app must never get
/// SIGKILL without having been sent the stop signal. When the drain's
/// plan runs out with no stop signal, lastcall goes back to running; a
/// later stop signal then starts a whole new shutdown (a drain again).
#[test]
fn drain_request_without_stop_signal_never_kills() {
    let dir = TempDir::new("ctl-nostop");
    let opts = ["--grace-period", "4s", "--kill-margin", "1s", "--stop-budget", "1s", "--drain-delay", "1s"];
    let (mut p, sock) = pid1_with_socket(&dir, &opts, &["signals"]);
    ready(&mut p);
    let mut hook = lastcall_drain(&["--control-socket", &sock]);
    hook.expect_exit_code(0);
    // The plan's SIGKILL time (3 s after the request) passes without a stop signal.
    p.wait_stderr("no stop signal followed the drain");
    barrier(&mut p);
    let killed = p.has_exited();
    p.check(!killed, "lastcall (and the app) ended without a stop signal");
    let sent = p.signal(SIGTERM);
    let got = p.expect_signal(SIGTERM).mono();
    p.check(got + SLACK >= sent + SEC, format!("TERM reached the app {} after the stop signal: no new drain", secs(got - sent)));
    p.expect_exit_code(0);
}

/// Options before the mode name work as after it (`lastcall -q drain`):
/// it is the drain mode, not a program named "drain". An option the mode
/// does not take is a usage error (2), and `lastcall -- drain` runs a
/// program named drain (127 here: none exists).
#[test]
fn options_before_the_mode_name() {
    let mut p = Run::new(Mode::Subreaper).raw(["-q", "drain", "--drain-delay", "100ms"]).spawn();
    p.expect_exit_code(0);
    let err = p.stderr();
    p.check(!err.contains("INFO"), "-q before drain was not applied");
    let mut p = Run::new(Mode::Subreaper).raw(["--grace-period", "10s", "drain", "--drain-delay", "100ms"]).spawn();
    p.expect_exit_code(0);
    let err = p.stderr();
    p.check(err.contains("drain ended"), "the drain mode did not run");
    let mut p = Run::new(Mode::Subreaper).raw(["-g", "drain"]).spawn();
    p.expect_exit_code(2);
    let mut p = Run::new(Mode::Subreaper).raw(["--", "drain"]).spawn();
    p.expect_exit_code(127);
}

/// Helm templates render unset values as empty strings: an empty
/// LASTCALL_DRAIN is unset, so LASTCALL_DRAIN_DELAY still selects the delay.
#[test]
fn empty_env_values_count_as_unset() {
    let mut p = Run::new(Mode::Pid1).env("LASTCALL_DRAIN", "").env("LASTCALL_DRAIN_DELAY", "1s").app(&["signals"]).spawn();
    ready(&mut p);
    let sent = p.signal(SIGTERM);
    let got = p.expect_signal(SIGTERM).mono();
    p.check(got + SLACK >= sent + SEC, format!("TERM reached the app {} after the stop signal: no drain", secs(got - sent)));
    p.expect_exit_code(0);
}

/// A flag on the command line wins over the environment: -q over
/// LASTCALL_LOG. A bogus LASTCALL_LOG is a usage error, and --help names it.
#[test]
fn log_level_flags_and_environment() {
    let mut p = Run::new(Mode::Subreaper).env("LASTCALL_LOG", "debug").raw(["-q", "drain", "--drain-delay", "100ms"]).spawn();
    p.expect_exit_code(0);
    let err = p.stderr();
    p.check(!err.contains("INFO") && !err.contains("DEBUG"), "LASTCALL_LOG won over -q");
    let mut p = Run::new(Mode::Subreaper).env("LASTCALL_LOG", "loud").opts(["--drain-delay", "1s"]).app(&["exit", "0"]).spawn();
    p.expect_exit_code(2);
    let err = p.stderr();
    p.check(err.lines().count() == 1 && err.contains("LASTCALL_LOG"), "want one line naming LASTCALL_LOG");
    let mut p = Run::new(Mode::Subreaper).raw(["--help"]).spawn();
    p.expect_exit_code(0);
    p.expect_eof(GUARD);
    let help = p.lines().iter().map(|l| l.text.clone()).collect::<Vec<_>>().join("\n");
    p.check(help.contains("LASTCALL_LOG"), "--help does not mention LASTCALL_LOG");
}

/// A fixed delay cut short by the drain deadline says so: the reason must
/// not claim a 20 s delay after 3 s.
#[test]
fn cut_delay_says_it_was_cut() {
    let opts = ["drain", "--drain-delay", "20s", "--grace-period", "5s", "--kill-margin", "1s", "--stop-budget", "1s"];
    let mut p = Run::new(Mode::Subreaper).raw(opts).spawn();
    p.expect_exit_code(0);
    let line = p.wait_stderr("drain ended");
    p.check(line.contains("cut"), "the drain ended early but its reason does not say so");
}

/// After the stop signal went out, a drain strategy that is still running
/// (abandoned: a second stop signal skipped the rest of the drain) must
/// not log about the drain any more: its lines would contradict the story
/// the log tells.
#[test]
fn abandoned_drain_stays_silent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port().to_string();
    let opts = [
        "--drain",
        "traffic",
        "--port",
        &port,
        "--quiet-period",
        "2s",
        "--grace-period",
        "6s",
        "--kill-margin",
        "1s",
        "--stop-budget",
        "1s",
    ];
    let mut p = Run::new(Mode::Pid1).opts(opts).app(&["signals", "--exit-on", "none"]).spawn();
    ready(&mut p);
    p.signal(SIGTERM);
    p.wait_stderr("waiting for inbound traffic");
    p.signal(SIGTERM);
    p.expect_signal(SIGTERM);
    p.expect_exit_code(137);
    let err = p.stderr();
    let stop = err.find("stop signal sent").unwrap_or_else(|| p.fail("no stop signal logged"));
    let late: Vec<&str> = err[stop..].lines().filter(|l| l.contains("traffic") || l.contains("quiet")).collect();
    p.check(late.is_empty(), format!("the abandoned drain logged after the stop signal: {late:?}"));
}
