//! Hostile environments (issue 11): lastcall as PID 1 must never hurt the app
//! because of its own surroundings. A log pipe whose reader went away or
//! stopped reading, descriptor exhaustion with clients flooding the control
//! socket, durations that overflow the clock, and images that run as a
//! non-root user on a read-only root filesystem.
//!
//! The same rules as tests/pid1.rs: the real binary, events (testapp's
//! lines, exits, EOF) rather than sleeps, bounds rather than exact times.

#[macro_use]
mod support;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use libc::{SIGTERM, SIGUSR1, SIGWINCH};
use support::{mono_ns, secs, Mode, Proc, Run, Stderr, TempDir, GUARD, MS, SEC};

/// Timer slack for lower bounds (timers fire at or after their instant).
const SLACK: u64 = 10 * MS;

/// A 1 s drain, the app's SIGKILL 2 s after the stop signal reached it at
/// the latest: `kill_at` = 4 s, `drain_until` = 3 s, drain delay 1 s.
const SHORT: [&str; 8] = ["--grace-period", "5s", "--kill-margin", "1s", "--stop-budget", "1s", "--drain-delay", "1s"];

fn barrier(p: &mut Proc) {
    p.signal(SIGWINCH);
    p.expect_signal(SIGWINCH);
}

/// CPU time (user + system) of a process so far, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let rest = &stat[stat.rfind(')').expect("stat has a comm") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // Fields 14 and 15 (utime, stime) of proc(5); `rest` starts at field 3.
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

// ---------------------------------------------------------------------------
// The log pipe
// ---------------------------------------------------------------------------

both_modes! {
    /// lastcall's stderr is a pipe whose reader is gone. Its own log writes
    /// raise SIGPIPE in lastcall; that signal is lastcall's, not one sent to
    /// it, and must never reach the app. The app gets exactly what was sent:
    /// USR1 at once, TERM after the 1 s drain, and never PIPE. With -v every
    /// forwarded signal is a log line, so forwarding a self-raised PIPE
    /// would feed itself.
    fn broken_stderr_never_signals_the_app(mode) {
        let mut p = Run::new(mode).stderr(Stderr::Broken).opts(["-v"]).opts(SHORT).app(&["signals"]).spawn();
        p.expect_prefix("ready");
        for _ in 0..3 {
            p.signal(SIGUSR1);
            p.expect_signal(SIGUSR1);
        }
        let sent = p.signal(SIGTERM);
        let got = p.expect_signal(SIGTERM).mono();
        p.check(got + SLACK >= sent + SEC, format!("TERM reached the app {} after the stop signal: no drain", secs(got - sent)));
        p.expect_line("exiting");
        p.expect_exit_code(0);
        let pipes = p.lines_starting("signal PIPE");
        p.check(pipes.is_empty(), format!("the app got {} SIGPIPE(s) lastcall raised itself", pipes.len()));
    }
}

both_modes! {
    /// lastcall's stderr is a full pipe nobody reads. Logging must not stall
    /// PID 1: signals are still forwarded (-v logs each one), the stop
    /// signal goes out after the drain, and the SIGKILL deadline holds for
    /// an app that does not exit on TERM.
    fn full_stderr_never_stalls_pid1(mode) {
        let mut p = Run::new(mode).stderr(Stderr::Full).opts(["-v"]).opts(SHORT).app(&["signals", "--exit-on", "none"]).spawn();
        p.expect_prefix("ready");
        for _ in 0..50 {
            p.signal(SIGUSR1);
            p.expect_signal(SIGUSR1);
        }
        let sent = p.signal(SIGTERM);
        let got = p.expect_signal(SIGTERM).mono();
        p.check(got + SLACK >= sent + SEC, format!("TERM reached the app {} after the stop signal: no drain", secs(got - sent)));
        let exited = p.expect_exit_code(128 + libc::SIGKILL);
        p.check(exited - sent < 5 * SEC, format!("lastcall exited {} after the stop signal: past the 5 s grace", secs(exited - sent)));
    }
}

// ---------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------

/// A duration that overflows the monotonic clock when added to it is refused
/// at start-up (exit 2, one line naming the option), before the app starts.
#[test]
fn huge_durations_are_refused_before_the_app_starts() {
    for opt in
        ["--drain-delay", "--grace-period", "--kill-margin", "--stop-budget", "--leftover-timeout", "--quiet-period", "--drain-timeout"]
    {
        let mut p = Run::new(Mode::Subreaper).opts([opt, "5000000000000000h"]).app(&["signals"]).spawn();
        p.expect_exit_code(2);
        let err = p.stderr();
        let lines: Vec<&str> = err.lines().collect();
        p.check(lines.len() == 1 && lines[0].contains(opt), format!("want one line naming {opt}"));
        let ran = !p.lines().is_empty();
        p.check(!ran, "the app ran although the configuration was refused");
    }
}

/// The longest accepted durations never overflow a deadline: a stop signal
/// with a year-long grace period starts a drain that a second stop signal
/// ends, and lastcall does not abort.
#[test]
fn longest_durations_do_not_overflow() {
    let opts = ["--grace-period", "8760h", "--drain-delay", "8700h", "--leftover-timeout", "8760h", "--drain-timeout", "8760h"];
    let mut p = Run::new(Mode::Pid1).opts(opts).app(&["signals"]).spawn();
    p.expect_prefix("ready");
    p.signal(SIGTERM);
    barrier(&mut p);
    let early = !p.lines_starting("signal TERM").is_empty();
    p.check(!early, "TERM reached the app during an 8700 h drain");
    p.signal(SIGTERM);
    p.expect_signal(SIGTERM);
    p.expect_exit_code(0);
}

// ---------------------------------------------------------------------------
// The control socket under pressure
// ---------------------------------------------------------------------------

/// Clients that connect to the control socket and send "drain\n", each on
/// its own thread (a unix connect blocks while the listen backlog is full).
fn flood(sock: &str, n: usize, send: bool) -> Vec<std::thread::JoinHandle<Option<UnixStream>>> {
    (0..n)
        .map(|_| {
            let sock = sock.to_string();
            std::thread::spawn(move || {
                let mut c = UnixStream::connect(&sock).ok()?;
                if send {
                    c.write_all(b"drain\n").ok()?;
                }
                Some(c)
            })
        })
        .collect()
}

/// `lastcall drain` through the PID 1's control socket, from inside its
/// namespaces (as `kubectl exec` runs a preStop hook): returns the run.
fn exec_drain(p: &mut Proc, sock: &str) -> Proc {
    let pid = p.lastcall_pid().to_string();
    let bin = support::lastcall();
    let bin = bin.to_str().unwrap();
    Run::new(Mode::Subreaper)
        .raw_cmd(["nsenter", "--target", &pid, "--mount", "--pid", "--", bin, "drain", "--control-socket", sock])
        .spawn()
}

/// With RLIMIT_NOFILE at 64, 100 clients asking to drain at once exhaust
/// lastcall's descriptors. lastcall must not spin on a listener that stays
/// readable (accept failing with EMFILE), and the real hook that comes next
/// still gets its answer.
#[test]
fn control_socket_flood_under_fd_exhaustion() {
    let dir = TempDir::new("ctl-flood");
    let sock = dir.join("ctl.sock").to_str().unwrap().to_string();
    let opts = ["--control-socket", sock.as_str(), "--grace-period", "60s", "--drain-delay", "2s"];
    let mut p = Run::new(Mode::Pid1).nofile(64).opts(opts).app(&["signals"]).spawn();
    p.expect_prefix("ready");
    let clients = flood(&sock, 100, true);
    let pid = p.lastcall_pid();
    let before = cpu_ticks(pid);
    // Measuring CPU use needs time to pass: 1 s, during which a spinning
    // loop burns ~100 ticks and a waiting one almost none.
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    p.check(used < 30, format!("lastcall used {used} ticks of CPU in 1 s with its descriptors exhausted: spinning"));
    let mut hook = exec_drain(&mut p, &sock);
    hook.expect_exit_code(0);
    let err = hook.stderr();
    hook.check(err.contains("drain done by the lastcall PID 1"), "the hook did not drain through the PID 1");
    drop(clients);
    p.signal(SIGTERM);
    p.expect_signal(SIGTERM);
    p.expect_exit_code(0);
}

/// 40 clients that connect and never send anything must not take the place
/// of the real hook: it still drains through the PID 1 (today's limit of
/// 32 pending clients reset it).
#[test]
fn idle_control_clients_never_refuse_the_hook() {
    let dir = TempDir::new("ctl-idle");
    let sock = dir.join("ctl.sock").to_str().unwrap().to_string();
    let opts = ["--control-socket", sock.as_str(), "--grace-period", "60s", "--drain-delay", "1s"];
    let mut p = Run::new(Mode::Pid1).opts(opts).app(&["signals"]).spawn();
    p.expect_prefix("ready");
    let idle: Vec<UnixStream> = flood(&sock, 40, false).into_iter().filter_map(|h| h.join().ok().flatten()).collect();
    p.check(idle.len() == 40, format!("only {} idle clients connected", idle.len()));
    let mut hook = exec_drain(&mut p, &sock);
    hook.expect_exit_code(0);
    let err = hook.stderr();
    hook.check(err.contains("drain done by the lastcall PID 1"), "the hook did not drain through the PID 1");
    drop(idle);
    p.signal(SIGTERM);
    p.expect_signal(SIGTERM);
    p.expect_exit_code(0);
}

/// A client that sends half a request and then nothing is dropped after a
/// while: it holds no descriptor of PID 1 for ever.
#[test]
fn silent_control_clients_are_dropped() {
    let dir = TempDir::new("ctl-silent");
    let sock = dir.join("ctl.sock").to_str().unwrap().to_string();
    let mut p = Run::new(Mode::Pid1).opts(["--control-socket", sock.as_str()]).app(&["signals"]).spawn();
    p.expect_prefix("ready");
    let mut c = UnixStream::connect(&sock).expect("connect");
    c.write_all(b"dr").expect("write");
    c.set_read_timeout(Some(GUARD)).unwrap();
    let t0 = mono_ns();
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf); // EOF (or a reset) when lastcall drops it
    let waited = mono_ns() - t0;
    p.check(waited < GUARD.as_nanos() as u64 - SEC, "a silent client was kept for the whole guard time");
    p.signal(SIGTERM);
    p.expect_signal(SIGTERM);
    p.expect_exit_code(0);
}

// ---------------------------------------------------------------------------
// Non-root, read-only root filesystem
// ---------------------------------------------------------------------------

/// distroless `:nonroot` runs as uid 65532, often with a read-only root
/// filesystem: the default control socket path cannot be created. The
/// preStop hook must still reach the PID 1 (and drain once), and the stop
/// signal that follows must not start a second drain.
#[test]
fn nonroot_readonly_prestop_drains_once() {
    let dir = TempDir::new("ctl-nonroot");
    // A directory uid 65532 cannot write: the socket cannot be created there.
    let sock = dir.join("ctl.sock").to_str().unwrap().to_string();
    let opts =
        ["--control-socket", sock.as_str(), "--grace-period", "30s", "--kill-margin", "1s", "--stop-budget", "1s", "--drain-delay", "2s"];
    let mut p = Run::new(Mode::Pid1).user(65532).opts(opts).app(&["signals"]).spawn();
    p.expect_prefix("ready");
    p.check(!std::path::Path::new(&sock).exists(), "the socket was created in a directory uid 65532 cannot write");
    let pid = p.lastcall_pid().to_string();
    let bin = support::lastcall();
    let t0 = mono_ns();
    let mut hook = Run::new(Mode::Subreaper)
        .raw_cmd([
            "nsenter",
            "--target",
            &pid,
            "--mount",
            "--pid",
            "--",
            "setpriv",
            "--reuid=65532",
            "--regid=65532",
            "--clear-groups",
            "--",
            bin.to_str().unwrap(),
            "drain",
            "--control-socket",
            &sock,
            "--drain-delay",
            "2s",
        ])
        .spawn();
    let done = hook.expect_exit_code(0);
    let herr = hook.stderr();
    hook.check(herr.contains("drain done by the lastcall PID 1"), "the hook did not reach the PID 1");
    hook.check(done + SLACK >= t0 + 2 * SEC, "the hook returned before the 2 s drain");
    let sent = p.signal(SIGTERM);
    let got = p.expect_signal(SIGTERM).mono();
    p.check(got - sent < SEC, format!("TERM reached the app {} after the kubelet's TERM: drained twice", secs(got - sent)));
    p.expect_exit_code(0);
}
