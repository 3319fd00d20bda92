//! Black-box tests of `lastcall sidecar` under hostile and broken peers
//! (issue 12) and of its start-up signal handling (issue 11): the real
//! binary, real sockets, real signals.
//!
//! - A drain that saw no real shutdown re-arms, so a stray `GET /drain` no
//!   longer answers the kubelet's real preStop at once.
//! - `--drain-token` and `--drain-from` refuse other clients (401/403) and
//!   never start a drain for them; `/healthz` stays open.
//! - Slow clients (a dripped body, a dripped head, idle connections) cannot
//!   take the capacity `/healthz` and the kubelet's `/drain` need, and every
//!   connection ends by its deadline.
//! - A stop signal that arrives anywhere in start-up is acted on (strace
//!   injects it at a chosen system call).
//!
//! The rules of tests/pid1.rs hold: wait for events (answers, exits, lines),
//! assert ordering and bounds, treat every time limit as an upper guard.

#![cfg(feature = "sidecar")]

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use libc::SIGTERM;
use support::sidecar::{count_stderr, get_async, listen_addr, request_with, Answer};
use support::{mono_ns, secs, Mode, Proc, Run, TempDir, GUARD, MS, SEC};

/// Timer slack for lower bounds: lastcall's timers fire at or after their
/// instant; a few milliseconds cover the clock reads around them.
const SLACK: u64 = 10 * MS;

/// A token as a deployment would generate it (`openssl rand -hex 16`).
const TOKEN: &str = "3f9c1e0b7a5d42e8b6c4a2f0e1d3c5b7";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `lastcall sidecar --listen 127.0.0.1:0 ARGS` with `env`; returns it and its address.
fn sidecar(args: &[&str], env: &[(&str, &str)]) -> (Proc, String) {
    let mut argv = vec!["sidecar", "--listen", "127.0.0.1:0"];
    argv.extend_from_slice(args);
    let mut run = Run::new(Mode::Subreaper).raw(argv);
    for (k, v) in env {
        run = run.env(k, v);
    }
    let mut p = run.spawn();
    let addr = listen_addr(&mut p);
    (p, addr)
}

fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    request_with(addr, "GET", path, headers)
}

// ---------------------------------------------------------------------------
// Re-arming: a drain that saw no real shutdown does not count
// ---------------------------------------------------------------------------

/// A stray `GET /drain` (anyone on the pod network, a curl to test the
/// hook) drains once. No stop signal follows within the grace period, so
/// that drain was no shutdown: the hub re-arms, and the kubelet's real
/// preStop later drains in full instead of being answered at once. After
/// that real drain the stop signal comes, and a repeated hook delivery is
/// answered at once again (hooks are delivered at least once).
#[test]
fn stray_drain_rearms_and_the_real_prestop_still_drains() {
    // Grace 3 s: the drain may last 2 s; the 1 s delay is never clamped.
    let opts = ["--drain-delay", "1s", "--grace-period", "3s", "--kill-margin", "500ms", "--stop-budget", "500ms"];
    let (mut p, addr) = sidecar(&opts, &[]);

    let t0 = mono_ns();
    let stray = get(&addr, "/drain", &[]);
    p.check(stray.status == 200, format!("stray /drain: {} {:?}", stray.status, stray.body));
    p.check(stray.at + SLACK >= t0 + SEC, "the stray /drain did not drain");

    // Re-arming is a state change only the log shows (module doc of support::sidecar).
    p.wait_stderr("re-armed");
    let rearmed = mono_ns();
    p.check(rearmed + SLACK >= t0 + 3 * SEC, format!("re-armed {} after the stray drain: within its grace period", secs(rearmed - t0)));

    let r0 = mono_ns();
    let real = get(&addr, "/drain", &[]);
    p.check(real.status == 200, format!("real /drain: {} {:?}", real.status, real.body));
    p.check(
        real.at + SLACK >= r0 + SEC,
        format!("the real preStop was answered {} after it was sent: the stray drain was counted", secs(real.at - r0)),
    );
    p.check(count_stderr(&p, "GET /drain: draining") == 2, "want two drains (stray, real)");

    // A repeated delivery of the real hook, within its grace period.
    let d0 = mono_ns();
    let again = get(&addr, "/drain", &[]);
    p.check(again.status == 200 && again.at - d0 < SEC, format!("repeated hook: {} after {}", again.status, secs(again.at - d0)));
    p.check(count_stderr(&p, "GET /drain: draining") == 2, "the repeated hook started a third drain");
    // The kubelet's stop signal follows the real drain, which counts: the
    // sidecar exits without waiting for another request.
    p.signal(SIGTERM);
    p.expect_exit_code(0);
}

#[cfg(feature = "k8s")]
mod k8s {
    use super::*;
    use support::apiserver::{ApiServer, Flip};

    /// The drain may last 27 s; the fallback delay is 1 s.
    const OPTS: [&str; 10] =
        ["--grace-period", "30s", "--kill-margin", "1s", "--stop-budget", "2s", "--drain-delay", "1s", "--propagation-delay", "500ms"];
    const FLIP_MS: u64 = 1500;

    /// Pod web-1 in Service web, not being deleted.
    fn pod_in_service() -> ApiServer {
        let api = ApiServer::start();
        api.add_pod("web-1", "10.0.0.5", 30);
        api.add_service("web", 1, false, "IPv4");
        api.add_endpoint("web", 0, "web-1");
        api
    }

    /// `lastcall sidecar --drain k8s` as pod web-1, on an ephemeral port.
    fn k8s_sidecar(api: &ApiServer) -> (Proc, String) {
        let token = api.token_path().to_str().expect("UTF-8 path").to_string();
        let ca = api.ca_path().to_str().expect("UTF-8 path").to_string();
        let mut args = vec!["--drain", "k8s", "--k8s-token-file", token.as_str(), "--k8s-ca-file", ca.as_str()];
        args.extend(OPTS);
        let mut env: Vec<(String, String)> = api.env();
        env.push(("POD_NAME".into(), "web-1".into()));
        env.push(("POD_IP".into(), "10.0.0.5".into()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        sidecar(&args, &env)
    }

    /// A stray `/drain` while the pod is not being deleted: the k8s strategy
    /// reads the Pod, finds no deletionTimestamp and falls back to the 1 s
    /// delay. Such a drain never counts: the pod is deleted afterwards, and
    /// the real preStop waits for the endpoint to flip.
    #[test]
    fn stray_drain_of_a_pod_not_being_deleted_rearms_at_once() {
        let api = pod_in_service();
        let (mut p, addr) = k8s_sidecar(&api);
        let stray = get(&addr, "/drain", &[]);
        p.check(stray.status == 200, format!("stray /drain: {} {:?}", stray.status, stray.body));
        p.check(stray.body.contains("not being deleted"), format!("stray /drain body {:?}", stray.body));

        let deleted = mono_ns();
        api.delete_pod("web-1", None, Flip::AfterMs(FLIP_MS));
        let real = get(&addr, "/drain", &[]);
        p.check(real.status == 200, format!("real /drain: {} {:?}", real.status, real.body));
        p.check(
            real.at >= deleted + FLIP_MS * MS + 500 * MS,
            format!("the real /drain ended {} after the deletion: before the flip + propagation", secs(real.at - deleted)),
        );
        p.check(!real.body.contains("not being deleted"), format!("the real /drain got the stray's answer: {:?}", real.body));
        p.signal(SIGTERM);
        p.expect_exit_code(0);
    }

    /// The real preStop arrives while a stray drain of a pod that was not
    /// being deleted is still running: joining it would end the real hook
    /// with the stray's fallback. The joiner gets a drain of its own when
    /// the stray one ends, which sees the deletion.
    #[test]
    fn real_prestop_joining_a_stray_drain_gets_its_own() {
        let api = pod_in_service();
        let (mut p, addr) = k8s_sidecar(&api);
        let stray = get_async(&addr, "/drain", &[]);
        p.wait_stderr("GET /drain: draining");
        // The k8s strategy has read the Pod once the fallback is announced.
        p.wait_stderr("falling back to --drain-delay");
        // Before the command: the flip comes FLIP_MS after the server got it.
        let deleted = mono_ns();
        api.delete_pod("web-1", None, Flip::AfterMs(FLIP_MS));
        let real = get_async(&addr, "/drain", &[]);
        let stray = stray.join().expect("stray /drain");
        let real = real.join().expect("real /drain");
        p.check(stray.body.contains("not being deleted"), format!("stray /drain body {:?}", stray.body));
        p.check(real.status == 200, format!("real /drain: {} {:?}", real.status, real.body));
        p.check(!real.body.contains("not being deleted"), format!("the real /drain got the stray's answer: {:?}", real.body));
        p.check(
            real.at >= deleted + FLIP_MS * MS + 500 * MS,
            format!("the real /drain ended {} after the deletion: before the flip + propagation", secs(real.at - deleted)),
        );
        p.signal(SIGTERM);
        p.expect_exit_code(0);
    }
}

// ---------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------

/// With a token (from the environment, as the manifests set it), `/drain`
/// without `Authorization` is refused 401 with a Bearer challenge, with a
/// wrong token or scheme 401/403; none of them starts a drain, and the
/// right token then gets a full drain. `/healthz` needs no token.
#[test]
fn drain_token_is_required_and_refusals_never_drain() {
    let (mut p, addr) = sidecar(&["--drain-delay", "1s"], &[("LASTCALL_DRAIN_TOKEN", TOKEN)]);
    let health = get(&addr, "/healthz", &[]);
    p.check(health.status == 200, format!("/healthz without a token: {}", health.status));

    let none = get(&addr, "/drain", &[]);
    p.check(none.status == 401, format!("/drain without a token: {} (want 401)", none.status));
    p.check(none.header("WWW-Authenticate").is_some_and(|v| v.starts_with("Bearer")), "401 without a Bearer challenge");
    let basic = get(&addr, "/drain", &[("Authorization", "Basic bGFzdGNhbGw6eA==")]);
    p.check(basic.status == 401, format!("/drain with Basic: {} (want 401)", basic.status));
    let short = &TOKEN[..TOKEN.len() - 1];
    for wrong in [bearer("0000000000000000000000000000000"), bearer(short), bearer(&format!("{TOKEN}x"))] {
        let a = get(&addr, "/drain", &[("Authorization", wrong.as_str())]);
        p.check(a.status == 403, format!("/drain with {wrong:?}: {} (want 403)", a.status));
    }
    p.wait_stderr("GET /drain refused");
    p.check(count_stderr(&p, "GET /drain: draining") == 0, "a refused request started a drain");

    let t0 = mono_ns();
    let ok = get(&addr, "/drain", &[("Authorization", bearer(TOKEN).as_str())]);
    p.check(ok.status == 200, format!("/drain with the token: {} {:?}", ok.status, ok.body));
    p.check(ok.at + SLACK >= t0 + SEC, "the authorized /drain did not drain: an earlier request had used it up");
    p.signal(SIGTERM);
    p.expect_exit_code(0);
}

/// The token can come from a file (a mounted Secret); its trailing newline
/// is not part of it.
#[test]
fn drain_token_from_a_file() {
    let dir = TempDir::new("sidecar-token");
    let file = dir.join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).expect("write the token file");
    let path = file.to_str().expect("UTF-8 path").to_string();
    let (mut p, addr) = sidecar(&["--drain-token-file", path.as_str()], &[]);
    let none = get(&addr, "/drain", &[]);
    p.check(none.status == 401, format!("/drain without a token: {} (want 401)", none.status));
    let ok = get(&addr, "/drain", &[("Authorization", bearer(TOKEN).as_str())]);
    p.check(ok.status == 200, format!("/drain with the file's token: {} {:?}", ok.status, ok.body));
    p.signal(SIGTERM);
    p.expect_exit_code(0);
}

/// `--drain-from`: `/drain` from a source outside the list is refused 403
/// (here loopback, which is not listed) without a drain; `/healthz` stays
/// open; a listed source is served.
#[test]
fn drain_from_limits_the_source_addresses() {
    let (mut p, addr) = sidecar(&["--drain-from", "10.0.0.0/8,fd00::/8"], &[]);
    let refused = get(&addr, "/drain", &[]);
    p.check(refused.status == 403, format!("/drain from 127.0.0.1: {} (want 403)", refused.status));
    let health = get(&addr, "/healthz", &[]);
    p.check(health.status == 200, format!("/healthz from 127.0.0.1: {}", health.status));
    p.check(count_stderr(&p, "GET /drain: draining") == 0, "a refused request started a drain");
    p.signal(SIGTERM);
    p.expect_exit_code(0);

    let (mut p, addr) = sidecar(&["--drain-from", "10.0.0.0/8,127.0.0.1/32"], &[]);
    let ok = get(&addr, "/drain", &[]);
    p.check(ok.status == 200, format!("/drain from a listed source: {} {:?}", ok.status, ok.body));
    p.signal(SIGTERM);
    p.expect_exit_code(0);
}

/// Bad authentication settings exit 2 with one line, before listening: an
/// empty or short token (an unset Helm value must not turn the check off),
/// both token sources, an unreadable token file, a bad CIDR, and settings
/// for an HTTP server that is off.
#[test]
fn bad_auth_settings_exit_2_with_one_line() {
    let dir = TempDir::new("sidecar-badauth");
    let missing = dir.join("missing").to_str().expect("UTF-8 path").to_string();
    /// Arguments after `sidecar`, and the environment.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (vec![], vec![("LASTCALL_DRAIN_TOKEN", "")]),
        (vec!["--drain-token", "short"], vec![]),
        (vec!["--drain-token", "has a space in it, which no header keeps"], vec![]),
        (vec!["--drain-token", TOKEN, "--drain-token-file", missing.as_str()], vec![]),
        (vec!["--drain-token-file", missing.as_str()], vec![]),
        (vec!["--drain-from", "10.0.0.0/33"], vec![]),
        (vec!["--drain-from", "banana"], vec![]),
        (vec![], vec![("LASTCALL_DRAIN_FROM", "")]),
        (vec!["--listen", "off", "--drain-token", TOKEN, "--", "/bin/true"], vec![]),
        (vec!["--listen", "localhost"], vec![]),
    ];
    for (args, env) in cases {
        let mut argv = vec!["sidecar"];
        argv.extend_from_slice(&args);
        let mut run = Run::new(Mode::Subreaper).raw(&argv);
        for (k, v) in &env {
            run = run.env(k, v);
        }
        let mut p = run.spawn();
        p.expect_exit_code(2);
        let err = p.stderr();
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        p.check(lines.len() == 1, format!("{argv:?} {env:?}: want one stderr line, got {lines:?}"));
        p.check(!err.contains(TOKEN), format!("{argv:?}: the token is in the error line"));
    }
}

// ---------------------------------------------------------------------------
// Slow clients
// ---------------------------------------------------------------------------

/// What a flood connection saw.
struct Flood {
    stop: Arc<AtomicBool>,
    /// Connections the server closed on the flood (a write or read failed).
    closed: Arc<AtomicUsize>,
    /// Longest time one flood connection stayed open, in ns.
    longest: Arc<std::sync::atomic::AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Flood {
    /// `n` connections that each send `head` at once, then one byte of
    /// `drip` every 150 ms for as long as the server keeps them; each
    /// reconnects when the server closed it (an attacker keeps the
    /// pressure up). Returns once every connection is established.
    fn start(addr: &str, n: usize, head: &'static str, drip: &'static [u8]) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicUsize::new(0));
        let longest = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        let threads = (0..n)
            .map(|_| {
                let (addr, stop, closed, longest, tx) = (addr.to_string(), stop.clone(), closed.clone(), longest.clone(), tx.clone());
                std::thread::spawn(move || {
                    let mut first = true;
                    while !stop.load(Ordering::SeqCst) {
                        let Ok(mut s) = TcpStream::connect(&addr) else { return };
                        let opened = mono_ns();
                        let _ = s.write_all(head.as_bytes());
                        if first {
                            let _ = tx.send(());
                            first = false;
                        }
                        let mut i = 0;
                        loop {
                            // The drip is the attack: one byte per 150 ms.
                            std::thread::sleep(Duration::from_millis(150));
                            if stop.load(Ordering::SeqCst) {
                                return;
                            }
                            if s.write_all(&drip[i % drip.len()..][..1]).is_err() {
                                break;
                            }
                            i += 1;
                        }
                        closed.fetch_add(1, Ordering::SeqCst);
                        longest.fetch_max(mono_ns() - opened, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for _ in 0..n {
            rx.recv_timeout(GUARD).expect("flood connection");
        }
        Flood { stop, closed, longest, threads }
    }

    fn stop(self) -> (usize, u64) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        (self.closed.load(Ordering::SeqCst), self.longest.load(Ordering::SeqCst))
    }
}

/// Issue 12's flood: 64 connections send a complete head announcing a
/// 100 000-byte body, then drip it at one byte per 150 ms. No body is read
/// for GET, so they are answered and closed at once; `/healthz` and the
/// kubelet's `/drain` keep working during the flood, and no flood
/// connection outlives the per-connection deadline (5 s).
#[test]
fn body_drip_flood_keeps_healthz_and_drain_working() {
    let (mut p, addr) = sidecar(&["--drain-delay", "1s"], &[("LASTCALL_DRAIN_TOKEN", TOKEN)]);
    let flood = Flood::start(&addr, 64, "POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", b"x");
    let h0 = mono_ns();
    let health = get(&addr, "/healthz", &[]);
    p.check(health.status == 200, format!("/healthz during the flood: {} {:?}", health.status, health.body));
    p.check(health.at - h0 < 2 * SEC, format!("/healthz took {} during the flood", secs(health.at - h0)));
    let d0 = mono_ns();
    let drain = get(&addr, "/drain", &[("Authorization", bearer(TOKEN).as_str())]);
    p.check(drain.status == 200, format!("/drain during the flood: {} {:?}", drain.status, drain.body));
    p.check(drain.at + SLACK >= d0 + SEC, "the kubelet's /drain did not drain");
    // Let the flood run past one deadline, so a connection held beyond it
    // would show (the flood's own clock; no event marks "nothing happened").
    std::thread::sleep(Duration::from_millis(5500));
    let health = get(&addr, "/healthz", &[]);
    p.check(health.status == 200, format!("/healthz late in the flood: {}", health.status));
    let (closed, longest) = flood.stop();
    p.check(closed >= 64, format!("only {closed} flood connections were closed by the server"));
    p.check(longest < 6 * SEC, format!("a flood connection stayed open {}: beyond the 5 s deadline", secs(longest)));
    p.signal(SIGTERM);
    p.expect_exit_code(0);
}

/// Classic slowloris: 128 connections drip their request head (never
/// complete) and 64 more stay idle. They hold the connection slots for
/// slow clients and its overflow, but a client that sends its request at
/// once (the kubelet, a probe) still gets `/healthz` and `/drain` answered.
#[test]
fn head_drip_flood_keeps_healthz_and_drain_working() {
    let (mut p, addr) = sidecar(&["--drain-delay", "1s"], &[("LASTCALL_DRAIN_TOKEN", TOKEN)]);
    let drip = Flood::start(&addr, 128, "GET /healthz HTTP/1.1\r\n", b"X-Slow: yes\r\n");
    let idle: Vec<TcpStream> = (0..64).map(|_| TcpStream::connect(&addr).expect("connect")).collect();
    let h0 = mono_ns();
    let health = get(&addr, "/healthz", &[]);
    p.check(health.status == 200, format!("/healthz during slowloris: {} {:?}", health.status, health.body));
    p.check(health.at - h0 < 2 * SEC, format!("/healthz took {} during slowloris", secs(health.at - h0)));
    let d0 = mono_ns();
    let drain = get(&addr, "/drain", &[("Authorization", bearer(TOKEN).as_str())]);
    p.check(drain.status == 200, format!("/drain during slowloris: {} {:?}", drain.status, drain.body));
    p.check(drain.at + SLACK >= d0 + SEC, "the kubelet's /drain did not drain");
    let (_, longest) = drip.stop();
    drop(idle);
    p.check(longest < 6 * SEC, format!("a dripping connection stayed open {}: beyond the 5 s deadline", secs(longest)));
    p.signal(SIGTERM);
    p.expect_exit_code(0);
}

/// Waiting `/drain` requests hold no thread each: 32 concurrent requests
/// join one drain and are all answered 200, while the sidecar runs a
/// handful of threads.
#[test]
fn waiting_drains_hold_no_thread_each() {
    let (mut p, addr) = sidecar(&["-v", "--drain-delay", "2s"], &[]);
    let t0 = mono_ns();
    let waiting: Vec<_> = (0..32).map(|_| get_async(&addr, "/drain", &[])).collect();
    p.wait_stderr("GET /drain: draining");
    let pid = p.lastcall_pid();
    // The requests reach the server in any order after the drain started:
    // wait until the server holds all 32 (its log says how many wait).
    p.wait_stderr("waiting=32");
    let threads: usize = support::status_field(pid, "Threads").and_then(|t| t.trim().parse().ok()).unwrap_or(0);
    p.check((1..=6).contains(&threads), format!("{threads} threads while 32 /drain requests wait"));
    for w in waiting {
        let a = w.join().expect("/drain");
        p.check(a.status == 200, format!("/drain: {} {:?}", a.status, a.body));
        p.check(a.at + SLACK >= t0 + 2 * SEC, "a /drain was answered before the drain ended");
    }
    p.check(count_stderr(&p, "GET /drain: draining") == 1, "concurrent requests started more than one drain");
    p.signal(SIGTERM);
    p.expect_exit_code(0);
}

// ---------------------------------------------------------------------------
// A stop signal during start-up
// ---------------------------------------------------------------------------

/// What a run under strace ended with.
#[derive(Debug)]
enum Ended {
    /// lastcall died of the signal: it came before lastcall took charge of it.
    Killed,
    /// lastcall exited with this code after acting on the signal.
    Code(i32),
    /// Still running after the guard: the signal was lost.
    Hung,
}

/// `strace STRACE_ARGS -- lastcall ARGS` in the harness's clean environment,
/// stdout and stderr piped. strace follows lastcall's main thread only (no
/// `-f`): every system call of interest here happens there, before any
/// other thread exists.
fn strace(strace_args: &[String], args: &[&str]) -> std::process::Child {
    let mut cmd = Command::new("strace");
    cmd.args(strace_args).arg("--").arg(support::lastcall()).args(args);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("LASTCALL_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("LASTCALL_CONTROL_SOCKET", "off");
    cmd.spawn().expect("strace (apt-get install strace)")
}

/// stdout and stderr of `child`, line by line, as they come.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out: Vec<Box<dyn Read + Send>> =
        vec![Box::new(child.stdout.take().expect("stdout")), Box::new(child.stderr.take().expect("stderr"))];
    for r in out {
        let tx = tx.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    rx
}

/// Kills what is left of a run: a killed strace detaches from lastcall,
/// which would run on, so the whole tree goes (strace, lastcall, helper).
fn kill_tree(child: &mut std::process::Child) {
    for e in support::process_tree(child.id() as i32) {
        // SAFETY: kill(2) has no memory-safety preconditions; a pid that is
        // already gone only makes it fail.
        unsafe { libc::kill(e.pid, libc::SIGKILL) };
    }
    let _ = child.wait();
}

/// How many times lastcall's main thread calls `syscall` in a whole run of
/// `lastcall ARGS` that is stopped with TERM once it logged `ready_line`
/// (a run with a helper that exits at once needs no TERM: None).
fn count_calls(syscall: &str, args: &[&str], ready_line: Option<&str>) -> u32 {
    let dir = TempDir::new("strace");
    let trace = dir.join("trace");
    let mut child = strace(&["-o".into(), trace.to_str().expect("UTF-8 path").into(), "-e".into(), format!("trace={syscall}")], args);
    let lines = lines_of(&mut child);
    if let Some(ready) = ready_line {
        let deadline = mono_ns() + GUARD.as_nanos() as u64;
        loop {
            let left = Duration::from_nanos(deadline.saturating_sub(mono_ns()));
            match lines.recv_timeout(left) {
                Ok(l) if l.contains(ready) => break,
                Ok(_) => {}
                Err(_) => {
                    kill_tree(&mut child);
                    panic!("the dry run never logged {ready:?}");
                }
            }
        }
        let lastcall = support::children_of(child.id() as i32);
        assert_eq!(lastcall.len(), 1, "strace's children: {lastcall:?}");
        support::kill(lastcall[0], SIGTERM);
    }
    // EOF on both pipes: lastcall and anything it started are gone.
    let deadline = mono_ns() + GUARD.as_nanos() as u64;
    while lines.recv_timeout(Duration::from_nanos(deadline.saturating_sub(mono_ns()))).is_ok() {}
    let _ = child.wait();
    let text = std::fs::read_to_string(&trace).expect("strace output");
    text.lines().filter(|l| l.starts_with(&format!("{syscall}("))).count() as u32
}

/// Runs `lastcall ARGS` under strace, which sends `sig` to lastcall when
/// the `k`-th call of `syscall` returns (`-e inject=SYSCALL:signal=SIG:when=K`;
/// the call itself completes), and reports how it ended and what it printed.
fn run_with_signal_at(syscall: &str, k: u32, sig: &str, args: &[&str]) -> (Ended, String) {
    let opts = ["-o".into(), "/dev/null".into(), "-e".into(), format!("inject={syscall}:signal={sig}:when={k}")];
    let mut child = strace(&opts, args);
    let lines = lines_of(&mut child);
    let mut out = String::new();
    // A run that acts on the signal ends within a second; the guard only
    // tells a lost signal from a slow machine.
    let deadline = mono_ns() + 10 * SEC;
    loop {
        match lines.recv_timeout(Duration::from_nanos(deadline.saturating_sub(mono_ns()))) {
            Ok(l) => {
                out.push_str(&l);
                out.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                kill_tree(&mut child);
                return (Ended::Hung, out);
            }
        }
    }
    use std::os::unix::process::ExitStatusExt;
    let status = child.wait().expect("wait");
    // strace ends the way its tracee did (it re-raises a fatal signal).
    let ended = match (status.code(), status.signal()) {
        (_, Some(_)) => Ended::Killed,
        (Some(c), None) => Ended::Code(c),
        (None, None) => Ended::Hung,
    };
    (ended, out)
}

/// What lastcall logs when it sends the stop signal to its helper.
const STOP_SENT: &str = "stop signal sent to the app";

/// A stop signal may come at any moment of start-up, e.g. when the kubelet
/// deletes a pod that is still starting. Sent after each signal-handling
/// system call of `lastcall sidecar -- helper` in turn (each one a moment
/// where a disposition changes, and where a signal that is neither blocked
/// nor handled would be lost), it either kills lastcall before it took
/// charge of the signal (default disposition: nothing started yet), or is
/// sent on to the helper and lastcall exits. It is never lost. (Whether the helper, just
/// started, has its own handler yet is the helper's race: the test reads
/// lastcall's log, not the helper's.)
#[test]
fn stop_signal_during_start_up_reaches_the_helper() {
    let app = support::testapp();
    let app = app.to_str().expect("UTF-8 path");
    let n = count_calls("rt_sigaction", &["sidecar", "--listen", "off", "--", app, "exit", "0"], None);
    assert!(n >= 5, "only {n} rt_sigaction calls: is this the sidecar?");
    for k in 1..=n {
        let (ended, out) = run_with_signal_at("rt_sigaction", k, "TERM", &["sidecar", "--listen", "off", "--", app, "signals"]);
        match ended {
            Ended::Killed => assert!(!out.contains(STOP_SENT), "k={k}: lastcall died of TERM after starting the helper:\n{out}"),
            Ended::Code(_) => assert!(out.contains(STOP_SENT), "k={k}: lastcall exited, the helper never got TERM:\n{out}"),
            Ended::Hung => panic!("k={k}: TERM after the {k}th of {n} rt_sigaction calls was lost: the helper still runs\n{out}"),
        }
    }
}

/// The same without a helper: the sidecar either dies of the early TERM or
/// exits 0 on it; it never keeps running. (Grace 1 s, margin 500 ms: the
/// wait for a late `/drain` after the signal is cut to 500 ms.)
#[test]
fn stop_signal_during_start_up_ends_the_sidecar() {
    let args = ["sidecar", "--listen", "127.0.0.1:0", "--grace-period", "1s", "--kill-margin", "500ms", "--stop-budget", "500ms"];
    let n = count_calls("rt_sigaction", &args, Some("listening for GET /drain"));
    assert!(n >= 5, "only {n} rt_sigaction calls: is this the sidecar?");
    for k in 1..=n {
        let (ended, out) = run_with_signal_at("rt_sigaction", k, "TERM", &args);
        match ended {
            Ended::Killed => {}
            Ended::Code(c) => assert_eq!(c, 0, "k={k}: exit {c}:\n{out}"),
            Ended::Hung => panic!("k={k}: TERM after the {k}th of {n} rt_sigaction calls was lost: the sidecar keeps running\n{out}"),
        }
    }
}

/// A stop signal whose default action is to ignore it (httpd's STOPSIGNAL
/// is SIGWINCH) that arrives while the sidecar starts its HTTP server is
/// pending until the supervisor reads it; opening the supervisor's signal
/// source must not discard it.
#[test]
fn pending_winch_stop_signal_survives_the_supervisor_start() {
    let app = support::testapp();
    let app = app.to_str().expect("UTF-8 path");
    // Grace 2 s, margin 1 s: lastcall ends a helper that missed the early WINCH.
    let mut args = vec!["sidecar", "-s", "WINCH", "--listen", "127.0.0.1:0"];
    args.extend(["--grace-period", "2s", "--kill-margin", "1s", "--stop-budget", "500ms"]);
    args.extend(["--", app, "signals", "--exit-on", "WINCH"]);
    let (ended, out) = run_with_signal_at("bind", 1, "WINCH", &args);
    match ended {
        Ended::Code(_) => assert!(out.contains(STOP_SENT) && out.contains("signal=SIGWINCH"), "WINCH was not sent on:\n{out}"),
        other => panic!("{other:?}: the WINCH that came during start-up was lost:\n{out}"),
    }
}
