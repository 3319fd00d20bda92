//! Black-box tests of the traffic drain strategy (issue 6, "Tests"): the
//! real binary, real loopback sockets, testapp's HTTP server as the app.
//!
//! The app's `signal TERM MONO_NS` line says when the stop signal reached it,
//! on the clock the test uses to time its own requests, so "the drain ended
//! one quiet period after the last request, not before" is asserted across
//! processes. Lower bounds are exact (the drain must never end early);
//! upper bounds carry [`SLACK`] for a loaded 2-core machine.
//!
//! The clients' sleeps are the load pattern (a request every 100 ms), not
//! synchronisation: every wait is for an event (a line, an exit).

#![cfg(feature = "traffic")]

#[macro_use]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use libc::SIGTERM;
use support::{mono_ns, secs, Mode, Proc, Run, MS, SEC};

/// KILL at 19 s, and the drain may use all but 1 s of that: no test here
/// gets near it unless it means to.
const GRACE: [&str; 6] = ["--grace-period", "20s", "--kill-margin", "1s", "--stop-budget", "1s"];

/// How late the drain may end, past the exact instant, on a loaded machine.
const SLACK: u64 = 600 * MS;

/// The default `--quiet-period`.
const DEFAULT_QUIET: u64 = SEC;

/// Client pacing: one request (or connection) this often.
const EVERY: Duration = Duration::from_millis(100);

/// `addr=` of the app's `ready` line.
fn app_addr(p: &mut Proc) -> String {
    let line = p.expect_prefix("ready");
    line.field("addr").unwrap_or_else(|| panic!("no addr= in {:?}", line.text)).to_string()
}

/// One kept-alive HTTP/1.1 connection to testapp.
struct KeepAlive {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl KeepAlive {
    fn connect(addr: &str) -> std::io::Result<KeepAlive> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(KeepAlive { reader: BufReader::new(stream.try_clone()?), stream })
    }

    /// Sends `GET /` and reads the whole response. Returns the
    /// CLOCK_MONOTONIC time just before the request was written (its bytes
    /// reach the app no earlier), or an error when the response is not a
    /// 200 on a connection that stays open.
    fn request(&mut self) -> std::io::Result<u64> {
        let at = mono_ns();
        self.stream.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")?;
        let mut status = String::new();
        self.reader.read_line(&mut status)?;
        let mut length = 0;
        let mut close = false;
        loop {
            let mut header = String::new();
            if self.reader.read_line(&mut header)? == 0 {
                return Err(std::io::Error::other("connection closed mid-response"));
            }
            let h = header.trim_end().to_ascii_lowercase();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("content-length:") {
                length = v.trim().parse().map_err(std::io::Error::other)?;
            }
            close |= h == "connection: close";
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        if !status.starts_with("HTTP/1.1 200") || close {
            return Err(std::io::Error::other(format!("response {:?}, connection close: {close}", status.trim_end())));
        }
        Ok(at)
    }
}

/// Requests on `conn` every [`EVERY`] until `until` (CLOCK_MONOTONIC);
/// returns when the last one was sent. Every request must succeed: the app
/// is still serving while the drain waits.
fn requests_until(p: &mut Proc, conn: &mut KeepAlive, until: u64) -> u64 {
    let mut last = 0;
    while mono_ns() < until {
        match conn.request() {
            Ok(at) => last = at,
            Err(e) => p.fail(format!("a request {} before the client's end failed: {e}", secs(until.saturating_sub(mono_ns())))),
        }
        std::thread::sleep(EVERY); // the load pattern
    }
    last
}

/// Asserts that the app got TERM one quiet period after `last` (within
/// SLACK), never before; returns when it got it.
fn expect_term_after(p: &mut Proc, last: u64, quiet: u64, what: &str) -> u64 {
    let term = p.expect_signal(SIGTERM).mono();
    eprintln!("TERM {} after {what} (quiet period {})", secs(term.saturating_sub(last)), secs(quiet));
    p.check(
        term >= last + quiet,
        format!("TERM came {} after {what}: less than the quiet period {}", secs(term.saturating_sub(last)), secs(quiet)),
    );
    p.check(
        term <= last + quiet + SLACK,
        format!("TERM came {} after {what}: more than the quiet period {} (+{})", secs(term - last), secs(quiet), secs(SLACK)),
    );
    term
}

/// The value of `key=` in lastcall's log line containing `message`.
fn log_field(stderr: &str, message: &str, key: &str) -> Option<String> {
    let line = stderr.lines().find(|l| l.contains(message))?;
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    Some(line[start..].split_whitespace().next()?.trim_matches('"').to_string())
}

both_modes! {
    /// The main case: a client sends on one kept-alive connection
    /// every 100 ms for 1.5 s after the stop signal, then stops (the
    /// connection stays open, idle). The drain, with the default 1 s quiet
    /// period, ends one quiet period after the last request, not before,
    /// although no new connection arrived during it.
    fn keep_alive_requests_hold_the_drain(mode) {
        let mut p = Run::new(mode).opts(GRACE).opts(["--drain", "traffic"]).app(&["http", "--listen", "127.0.0.1:0"]).spawn();
        let addr = app_addr(&mut p);
        let mut conn = KeepAlive::connect(&addr).expect("connect");
        conn.request().expect("request before the stop");
        let sent = p.signal(SIGTERM);
        let last = requests_until(&mut p, &mut conn, sent + 1500 * MS);
        expect_term_after(&mut p, last, DEFAULT_QUIET, "the last request");
        p.expect_exit_code(0);
        let stderr = p.stderr();
        p.check(stderr.contains("inbound traffic went quiet"), "no 'inbound traffic went quiet' log line");
        let open = log_field(&stderr, "inbound traffic went quiet", "open_connections");
        p.check(open.as_deref() == Some("1"), format!("open_connections={open:?}, want 1 (the idle keep-alive connection)"));
        let last_byte = log_field(&stderr, "inbound traffic went quiet", "last_byte_ms").and_then(|v| v.parse::<u64>().ok());
        p.check(last_byte.is_some_and(|ms| ms >= 1400), format!("last_byte_ms={last_byte:?}, want about 1500"));
    }
}

both_modes! {
    /// A silent app drains in one quiet period: the idle keep-alive
    /// connection opened before the stop is not traffic.
    fn silent_app_drains_in_one_quiet_period(mode) {
        let mut p = Run::new(mode)
            .opts(GRACE)
            .opts(["--drain", "traffic", "--quiet-period", "500ms"])
            .app(&["http", "--listen", "127.0.0.1:0"])
            .spawn();
        let addr = app_addr(&mut p);
        let mut conn = KeepAlive::connect(&addr).expect("connect");
        conn.request().expect("request before the stop");
        let sent = p.signal(SIGTERM);
        expect_term_after(&mut p, sent, 500 * MS, "the stop signal");
        p.expect_exit_code(0);
        let stderr = p.stderr();
        let new = log_field(&stderr, "inbound traffic went quiet", "new_connections");
        p.check(new.as_deref() == Some("0"), format!("new_connections={new:?}, want 0"));
    }
}

/// New connections that carry no data keep the drain open too: a client
/// opens one idle connection every 100 ms for 1.2 s after the stop.
#[test]
fn new_connections_hold_the_drain() {
    let mut p = Run::new(Mode::Pid1)
        .opts(GRACE)
        .opts(["--drain", "traffic", "--quiet-period", "500ms"])
        .app(&["http", "--listen", "127.0.0.1:0"])
        .spawn();
    let addr = app_addr(&mut p);
    let sent = p.signal(SIGTERM);
    let mut conns = Vec::new();
    let mut last = 0;
    while mono_ns() < sent + 1200 * MS {
        last = mono_ns();
        match TcpStream::connect(&addr) {
            Ok(c) => conns.push(c),
            Err(e) => p.fail(format!("connect during the drain: {e}")),
        }
        std::thread::sleep(EVERY); // the load pattern
    }
    expect_term_after(&mut p, last, 500 * MS, "the last new connection");
    p.expect_exit_code(0);
    let stderr = p.stderr();
    let new = log_field(&stderr, "inbound traffic went quiet", "new_connections").and_then(|v| v.parse::<usize>().ok());
    // The first connection may already be in the strategy's baseline sample.
    p.check(
        new.is_some_and(|n| n + 1 >= conns.len() && n <= conns.len()),
        format!("new_connections={new:?}, the client opened {}", conns.len()),
    );
    let bytes = log_field(&stderr, "inbound traffic went quiet", "last_byte_ms");
    p.check(bytes.is_none(), format!("last_byte_ms={bytes:?}: the connections carried no data"));
}

/// An IPv6 listener ([::1]) is watched like an IPv4 one.
#[test]
fn ipv6_listener() {
    if TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let mut p = Run::new(Mode::Subreaper)
        .opts(GRACE)
        .opts(["--drain", "traffic", "--quiet-period", "500ms"])
        .app(&["http", "--listen", "[::1]:0"])
        .spawn();
    let addr = app_addr(&mut p);
    p.check(addr.starts_with("[::1]:"), format!("the app listens on {addr}"));
    let mut conn = KeepAlive::connect(&addr).expect("connect");
    conn.request().expect("request before the stop");
    let sent = p.signal(SIGTERM);
    let last = requests_until(&mut p, &mut conn, sent + 1000 * MS);
    expect_term_after(&mut p, last, 500 * MS, "the last request");
    p.expect_exit_code(0);
}

/// A server the test runs itself: accepts connections and reads (discards)
/// what they send, until the test ends.
fn sink_server() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let accept = listener.try_clone().unwrap();
    std::thread::spawn(move || {
        for conn in accept.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    (listener, port)
}

/// `--port` watches the given port, whoever listens on it: here the test
/// itself, while the app (`testapp signals`) has no socket at all.
#[test]
fn explicit_port() {
    let (_listener, port) = sink_server();
    let mut p = Run::new(Mode::Subreaper)
        .opts(GRACE)
        .opts(["--drain", "traffic", "--quiet-period", "500ms", "--port", &port.to_string()])
        .app(&["signals"])
        .spawn();
    p.expect_prefix("ready");
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.write_all(b"hello").unwrap();
    let sent = p.signal(SIGTERM);
    let mut last = 0;
    while mono_ns() < sent + 1000 * MS {
        last = mono_ns();
        conn.write_all(b"more").unwrap();
        std::thread::sleep(EVERY); // the load pattern
    }
    expect_term_after(&mut p, last, 500 * MS, "the last write");
    p.expect_exit_code(0);
    let stderr = p.stderr();
    let ports = log_field(&stderr, "waiting for inbound traffic to go quiet", "ports");
    p.check(ports.as_deref() == Some(port.to_string().as_str()), format!("watched ports {ports:?}, want {port}"));
}

/// Nothing to watch (an app without a listening socket, no `--port`): one
/// warning, then the fixed `--drain-delay` from the stop signal.
#[test]
fn no_listener_falls_back_to_the_drain_delay() {
    let mut p = Run::new(Mode::Subreaper)
        .opts(GRACE)
        .opts(["--drain", "traffic", "--quiet-period", "200ms", "--drain-delay", "1500ms"])
        .app(&["signals"])
        .spawn();
    p.expect_prefix("ready");
    let sent = p.signal(SIGTERM);
    let term = p.expect_signal(SIGTERM).mono();
    p.check(term >= sent + 1500 * MS, format!("TERM {} after the stop signal: before the 1.5s fallback delay", secs(term - sent)));
    p.check(term <= sent + 1500 * MS + SLACK, format!("TERM {} after the stop signal: long after the fallback delay", secs(term - sent)));
    p.expect_exit_code(0);
    let stderr = p.stderr();
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    p.check(warnings.len() == 1, format!("want exactly one warning, got {warnings:#?}"));
    p.check(warnings[0].contains("no listening TCP socket"), format!("the warning does not say why: {}", warnings[0]));
}

/// Requests every 50 ms on one connection from a thread, until the app
/// closes the connection or `stop` is set; returns when each was sent.
fn endless_client(addr: String, stop: Arc<AtomicBool>) -> JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut conn = KeepAlive::connect(&addr).expect("connect");
        let mut sent = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            match conn.request() {
                Ok(at) => sent.push(at),
                Err(_) => break,
            }
            std::thread::sleep(Duration::from_millis(50)); // the load pattern
        }
        sent
    })
}

both_modes! {
    /// Traffic that never stops: the drain ends at its budget (grace 6 s −
    /// margin 1 s − stop budget 2 s = 3 s after the stop signal), and the
    /// app still gets its stop budget and exits before the grace deadline.
    fn endless_traffic_is_bounded_by_the_deadline(mode) {
        let mut p = Run::new(mode)
            .opts(["--grace-period", "6s", "--kill-margin", "1s", "--stop-budget", "2s"])
            .opts(["--drain", "traffic", "--quiet-period", "1s"])
            .app(&["http", "--listen", "127.0.0.1:0"])
            .spawn();
        let addr = app_addr(&mut p);
        let stop = Arc::new(AtomicBool::new(false));
        let client = endless_client(addr, stop.clone());
        let sent = p.signal(SIGTERM);
        let term = p.expect_signal(SIGTERM).mono();
        let exited = p.expect_exit_code(0);
        stop.store(true, Ordering::SeqCst);
        let requests = client.join().unwrap();
        // A starved client (a machine overloaded by other tests) would make
        // the traffic really go quiet: say so when it happens.
        let pause = requests.windows(2).filter(|w| w[1] > sent && w[0] < term).map(|w| w[1] - w[0]).max().unwrap_or(0);
        // The strategy gives up 20 ms before the supervisor's deadline, to
        // log what it saw first (REPORT_MARGIN in src/drain/traffic/mod.rs).
        p.check(
            term + 20 * MS >= sent + 3 * SEC,
            format!("TERM {} after the stop signal: before the 3s budget (the client's longest pause: {})", secs(term - sent), secs(pause)),
        );
        p.check(term <= sent + 3 * SEC + SLACK, format!("TERM {} after the stop signal: past the 3s drain budget", secs(term - sent)));
        p.check(exited < sent + 5 * SEC, format!("lastcall exited {} after the stop signal: not before the kill at 5s", secs(exited - sent)));
        let during = requests.iter().filter(|&&t| t > sent && t < term).count();
        p.check(during >= 20, format!("the client got only {during} responses during the 3s drain"));
        let stderr = p.stderr();
        p.check(stderr.contains("inbound traffic never went quiet within the drain budget"), "no 'never went quiet' warning");
        p.check(!stderr.contains("drain budget spent"), "the supervisor cut the drain before the strategy reported");
    }
}

/// `--drain-timeout` bounds the strategy too: with endless traffic the app
/// gets TERM 1.5 s after the stop signal, long before the grace period's
/// drain budget (18 s) would end it.
#[test]
fn endless_traffic_is_bounded_by_the_drain_timeout() {
    let mut p = Run::new(Mode::Subreaper)
        .opts(GRACE)
        .opts(["--drain", "traffic", "--quiet-period", "1s", "--drain-timeout", "1500ms"])
        .app(&["http", "--listen", "127.0.0.1:0"])
        .spawn();
    let addr = app_addr(&mut p);
    let stop = Arc::new(AtomicBool::new(false));
    let client = endless_client(addr, stop.clone());
    let sent = p.signal(SIGTERM);
    let term = p.expect_signal(SIGTERM).mono();
    p.expect_exit_code(0);
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();
    p.check(term >= sent + 1500 * MS, format!("TERM {} after the stop signal: before the 1.5s drain timeout", secs(term - sent)));
    p.check(term <= sent + 1500 * MS + SLACK, format!("TERM {} after the stop signal: past the 1.5s drain timeout", secs(term - sent)));
    let stderr = p.stderr();
    p.check(stderr.contains("inbound traffic never went quiet within the drain budget"), "no 'never went quiet' warning");
}

/// `k8s,traffic`: first the endpoint leaves the Service, then traffic goes
/// quiet. Against the API server double (tests/support/apiserver.rs):
/// 1. the pod is deleted (deletionTimestamp set), the stop signal follows;
///    the endpoint stays in service and the client is
///    silent for 1.2 s, longer than the quiet period: the drain holds (the
///    k8s strategy runs first, the traffic strategy has not started);
/// 2. the endpoint turns terminating, but requests keep coming for 800 ms
///    (a lagging load balancer): the drain still holds;
/// 3. the app gets TERM one quiet period after the last request, and no
///    sooner than `--propagation-delay` after the flip: the delay stays a
///    minimum (a lull at low traffic must not end the drain early).
#[cfg(feature = "k8s")]
#[test]
fn k8s_then_traffic() {
    use support::apiserver::{ApiServer, Conditions, Flip};

    let api = ApiServer::start();
    api.add_pod("web-1", "10.0.0.5", 30);
    api.add_service("web", 1, false, "IPv4");
    api.add_endpoint("web", 0, "web-1");
    let mut p = Run::new(Mode::Subreaper)
        .opts(GRACE)
        .opts(["--drain", "k8s,traffic", "--quiet-period", "500ms", "--propagation-delay", "1s"])
        .opts(["--k8s-api", &api.url(), "--namespace", &api.namespace(), "--pod-name", "web-1", "--pod-ip", "10.0.0.5"])
        .opts(["--k8s-token-file".as_ref(), api.token_path().as_os_str()])
        .opts(["--k8s-ca-file".as_ref(), api.ca_path().as_os_str()])
        .app(&["http", "--listen", "127.0.0.1:0"])
        .spawn();
    let addr = app_addr(&mut p);
    let mut conn = KeepAlive::connect(&addr).expect("connect");
    conn.request().expect("request before the stop");
    // As in a real deletion: the API server marks the pod first, the
    // kubelet then sends the stop signal; the endpoint flips later.
    api.delete_pod("web-1", Some(20), Flip::Never);
    p.signal(SIGTERM);
    if !api.wait_watches(1, Duration::from_secs(20)) {
        p.fail("the k8s strategy never watched the EndpointSlices");
    }
    // Silence longer than the quiet period is the load pattern here.
    std::thread::sleep(Duration::from_millis(1200));
    let early = p.lines_starting("signal TERM");
    p.check(early.is_empty(), "the app got TERM while its endpoint was still in service");
    let flipped = mono_ns();
    api.set_conditions("web", "web-1", Conditions::TERMINATING);
    let last = requests_until(&mut p, &mut conn, flipped + 800 * MS);
    let term = expect_term_after(&mut p, last, 500 * MS, "the last request");
    p.check(term >= flipped + SEC, format!("TERM {} after the flip: before the 1s propagation delay", secs(term - flipped)));
    p.expect_exit_code(0);
    let stderr = p.stderr();
    let at = |needle: &str| stderr.find(needle);
    let (gone, delay, watching, quiet) = (
        at("endpoint out of service in every slice"),
        at("waiting --propagation-delay"),
        at("waiting for inbound traffic to go quiet"),
        at("inbound traffic went quiet"),
    );
    p.check(
        matches!((gone, delay, watching, quiet), (Some(g), Some(d), Some(w), Some(q)) if g < d && d < w && w < q),
        format!(
            "log order: endpoint gone at {gone:?}, propagation delay at {delay:?}, traffic watched at {watching:?}, quiet at {quiet:?}"
        ),
    );
}
