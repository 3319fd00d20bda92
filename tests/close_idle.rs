//! Black-box tests of `--close-idle` (issue 16): the real binary as PID 1 of
//! a PID namespace, testapp's naive HTTP server as the app (it exits at once
//! on SIGTERM, dropping whatever connection it holds), real loopback
//! keep-alive connections.
//!
//! Ordering is asserted across processes on one clock: the app's
//! `signal TERM MONO_NS` line says when the stop signal reached it, and a
//! watcher thread per connection records when the connection ended (read
//! returned end of file or an error). A connection lastcall closed as idle
//! ends before the app's TERM; one it left alone ends only after it. Every
//! wait is for an event (a line, end of file, an exit); the sleeps are the
//! idle time a connection needs to count as idle, said where they are.

#![cfg(feature = "traffic")]

#[macro_use]
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use libc::SIGTERM;
use support::{mono_ns, Mode, Proc, Run};

const GRACE: [&str; 6] = ["--grace-period", "20s", "--kill-margin", "1s", "--stop-budget", "2s"];

/// A loopback port nobody listens on (bound, then freed): `--close-idle`
/// takes the port by name, so the app cannot pick its own.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// lastcall + naive testapp on `port`, draining 300 ms with `extra` options.
fn start(port: u16, extra: &[&str]) -> Proc {
    let listen = format!("127.0.0.1:{port}");
    let mut p = Run::new(Mode::Pid1)
        .opts(GRACE)
        .opts(["--drain", "delay", "--drain-delay", "300ms"])
        .opts(extra)
        .app(&["http", "--listen", &listen, "--mode", "naive"])
        .spawn();
    p.expect_prefix("ready");
    p
}

/// A keep-alive connection that has had one full exchange and is idle.
fn idle_connection(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    (&stream).write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line:?}");
    // The rest of the response: headers up to the blank line, then the body.
    let mut length = 0;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if h.trim().is_empty() {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    stream
}

/// A connection whose request the app has read but cannot answer yet (the
/// header block is not finished): a request in progress, as the app sees it.
fn busy_connection(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    (&stream).write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    stream
}

/// A kept-alive connection with one answered request, then a second one
/// in progress (read, not answered).
fn busy_again_connection(port: u16) -> TcpStream {
    let stream = idle_connection(port);
    // Not synchronisation: the second request must come some clock ticks
    // after the first answer, as on a connection reused a while later.
    std::thread::sleep(Duration::from_millis(30));
    (&stream).write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
    stream
}

/// When `stream` ends (read gives end of file or an error), on the test's
/// clock; data before that fails the test (nothing is owed on it).
fn watch_end(stream: TcpStream) -> Receiver<(u64, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let how = match (&stream).read(&mut buf) {
            Ok(0) => "end of file".to_string(),
            Ok(n) => format!("unexpected data: {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(e) => format!("error: {e}"),
        };
        let _ = tx.send((mono_ns(), how));
    });
    rx
}

fn ended(p: &mut Proc, rx: &Receiver<(u64, String)>, what: &str) -> (u64, String) {
    match rx.recv_timeout(support::GUARD) {
        Ok(end) => end,
        Err(_) => p.fail(format!("{what}: the connection did not end")),
    }
}

/// Stop lastcall and return the app's TERM time and lastcall's stderr.
fn stop(p: &mut Proc) -> (u64, String) {
    p.signal(SIGTERM);
    let term = p.expect_signal(SIGTERM).mono();
    p.expect_line("exiting");
    let status = p.wait();
    p.check(status.code() == Some(0), format!("lastcall exited {status:?}"));
    (term, p.stderr())
}

#[test]
fn idle_connections_close_before_the_stop_signal_busy_ones_stay() {
    let port = free_port();
    let mut p = start(port, &["--close-idle", &port.to_string()]);
    let idle = watch_end(idle_connection(port));
    let busy = watch_end(busy_connection(port));
    let busy_again = watch_end(busy_again_connection(port));
    // Both must be older than the idle threshold (tcp_info counts in
    // milliseconds) when the drain ends: the drain itself lasts 300 ms.
    let (term, stderr) = stop(&mut p);

    let (idle_end, how) = ended(&mut p, &idle, "idle connection");
    p.check(how == "end of file", format!("idle connection: {how} (a FIN, not a reset)"));
    p.check(idle_end < term, format!("the idle connection ended {} ms after the app's TERM", (idle_end.saturating_sub(term)) / 1_000_000));
    let (busy_end, how) = ended(&mut p, &busy, "busy connection");
    p.check(busy_end > term, format!("the busy connection ended before the app's TERM ({how}): lastcall closed a request in progress"));
    let (busy_end, how) = ended(&mut p, &busy_again, "reused busy connection");
    p.check(busy_end > term, format!("the reused busy connection ended before the app's TERM ({how})"));

    let closed: Vec<&str> = stderr.lines().filter(|l| l.contains("closed idle inbound connections")).collect();
    p.check(closed.len() == 1, format!("one summary line: {closed:?}"));
    let line = closed[0];
    p.check(line.contains("closed=1") && line.contains("busy=2") && line.contains(&format!("ports={port}")), format!("summary: {line}"));
    // The summary comes before the drain's end and the stop signal.
    let at = |needle: &str| stderr.find(needle).unwrap_or(usize::MAX);
    p.check(at("closed idle inbound connections") < at("drain ended"), "the step ends the drain");
    p.check(at("drain ended") < at("stop signal sent to the app"), "then the stop signal");
}

#[test]
fn without_the_option_idle_connections_last_until_the_app_exits() {
    let port = free_port();
    let mut p = start(port, &[]);
    let idle = watch_end(idle_connection(port));
    let (term, stderr) = stop(&mut p);
    let (idle_end, _) = ended(&mut p, &idle, "idle connection");
    p.check(idle_end > term, "without --close-idle the idle connection ended before the app's TERM");
    p.check(!stderr.contains("idle"), format!("no close-idle line without the option:\n{stderr}"));
}

#[test]
fn other_ports_are_left_alone() {
    let (port, other) = (free_port(), free_port());
    let mut p = start(port, &["--close-idle", &other.to_string()]);
    let idle = watch_end(idle_connection(port));
    let (term, stderr) = stop(&mut p);
    let (idle_end, _) = ended(&mut p, &idle, "idle connection");
    p.check(idle_end > term, "a connection on a port not named was closed");
    p.check(stderr.contains("closed=0") && stderr.contains("busy=0"), format!("summary:\n{stderr}"));
}

/// A seccomp profile that denies pidfd_getfd (Docker's default does, without
/// CAP_SYS_PTRACE): one line says why, and the shutdown is what it would be
/// without the option.
#[test]
fn denied_pidfd_getfd_is_one_line_and_nothing_else_changes() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (testapp, lastcall) = (support::testapp(), support::lastcall());
    let mut argv: Vec<String> = vec![testapp.display().to_string(), "deny-syscall".into(), "438".into(), "--".into()];
    argv.push(lastcall.display().to_string());
    argv.extend(GRACE.iter().map(|s| s.to_string()));
    argv.extend(["--drain", "delay", "--drain-delay", "300ms", "--close-idle", &port.to_string(), "--"].map(String::from));
    argv.extend([testapp.display().to_string(), "http".into(), "--listen".into(), listen, "--mode".into(), "naive".into()]);
    let mut p = Run::new(Mode::Pid1).raw_cmd(&argv).spawn();
    p.expect_prefix("ready");
    let idle = watch_end(idle_connection(port));
    let (term, stderr) = stop(&mut p);
    let (idle_end, _) = ended(&mut p, &idle, "idle connection");
    p.check(idle_end > term, "the connection was closed although pidfd_getfd is denied");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("idle")).collect();
    p.check(lines.len() == 1, format!("exactly one line about it: {lines:?}"));
    p.check(
        lines[0].contains("WARN") && lines[0].contains("cannot close idle connections") && lines[0].contains("seccomp"),
        format!("the line says why: {}", lines[0]),
    );
    p.check(stderr.contains("drain ended") && stderr.contains("stop signal sent to the app"), format!("the shutdown went on:\n{stderr}"));
}
