//! Black-box tests of lastcall's PID 1 duties and shutdown sequence (issue 2,
//! "Tests"): the real binary, with testapp as the app.
//!
//! Most behaviours run twice (a module with `pid1` and `subreaper` tests):
//! as real PID 1 of a new PID namespace, and as a plain child of the test,
//! where lastcall is not PID 1 and must be a child subreaper.
//!
//! Rules: tests wait for events (lines from testapp, the exit, stdout EOF),
//! never for time to pass; time limits are generous upper guards for a loaded
//! CI machine; ordering is asserted with CLOCK_MONOTONIC timestamps (testapp's
//! MONO_NS against the harness's `mono_ns()`), never exact durations.
//!
//! Two signal-ordering facts several tests lean on:
//! - When several standard signals are pending, Linux delivers the lowest
//!   numbered first, and testapp blocks all signals in its handler, so its
//!   lines come out in delivery order.
//! - lastcall handles signals in the order it receives them (and the lowest
//!   first when they are pending together). So after sending it TERM and
//!   then WINCH (28 > 15), seeing the app print WINCH proves lastcall has
//!   already processed the TERM: the "barrier" below.

#[macro_use]
mod support;

use libc::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH};
use support::{secs, Mode, Proc, Run, TempDir, GUARD, MS, SEC};

/// Options for drain tests: KILL at 9 s, and the drain may use all but 1 s of
/// that, so a drain delay of a few seconds is never clamped.
const DRAIN_OPTS: [&str; 6] = ["--grace-period", "10s", "--kill-margin", "1s", "--stop-budget", "1s"];

/// Options for drains that must not end on their own during the test: 30 s
/// of drain inside a 60 s grace period. Tests using them assert that
/// something happens well before 30 s.
const LONG_DRAIN_OPTS: [&str; 8] = ["--grace-period", "60s", "--kill-margin", "1s", "--stop-budget", "1s", "--drain-delay", "30s"];

/// Sends WINCH to lastcall and waits for the app to print it. Every signal sent to lastcall before this call has been processed by
/// lastcall once it returns (see the module doc). The app must print WINCH.
fn barrier(p: &mut Proc) {
    p.signal(SIGWINCH);
    p.expect_signal(SIGWINCH);
}

/// The app's pid in the test's view, from its `ready pid=...` line.
fn ready(p: &mut Proc) -> i32 {
    let line = p.expect_prefix("ready");
    let pid = line.pid();
    p.host_pid(pid)
}

// ---------------------------------------------------------------------------
// Reaping
// ---------------------------------------------------------------------------

both_modes! {
    /// 1,000 orphans reparented to lastcall at once are all reaped: in the end
    /// lastcall's tree (the whole namespace in Pid1 mode) holds only lastcall
    /// and the app, and no process in `State: Z`. In Subreaper mode the
    /// orphans only reach lastcall because it is a child subreaper.
    fn reaps_orphans(mode) {
        let mut p = Run::new(mode).app(&["orphans", "1000", "--wait"]).spawn();
        p.expect_line_within("spawned 1000", 2 * GUARD);
        p.expect_line("ready");
        let tree = p.wait_tree_settles(2, 2 * GUARD);
        let lastcall = p.lastcall_pid();
        let app = &tree[1];
        p.check(app.ppid == lastcall, format!("the one process left should be the app, a child of lastcall: {app:?}"));
        p.signal(SIGTERM);
        p.expect_exit_code(0);
    }
}

// ---------------------------------------------------------------------------
// Forwarding
// ---------------------------------------------------------------------------

both_modes! {
    /// Non-stop signals reach the app at once, one line each, in order.
    fn forwards_signals(mode) {
        let mut p = Run::new(mode).app(&["signals"]).spawn();
        ready(&mut p);
        for sig in [SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH, SIGQUIT] {
            let sent = p.signal(sig);
            let got = p.expect_signal(sig).mono();
            p.check(got >= sent, format!("{} seen at {got} before it was sent at {sent}", support::sig_name(sig)));
        }
        p.signal(SIGTERM);
        p.expect_signal(SIGTERM);
        p.expect_line("exiting");
        p.expect_exit_code(0);
        let stray = p.lines_starting("signal CHLD");
        p.check(stray.is_empty(), "SIGCHLD must never be forwarded");
    }
}

both_modes! {
    /// The stop signal (TERM) reaches the app only after the drain: no
    /// earlier than --drain-delay after lastcall got it.
    fn stop_signal_forwarded_after_drain_delay(mode) {
        let mut p = Run::new(mode).opts(DRAIN_OPTS).opts(["--drain-delay", "1s"]).app(&["signals"]).spawn();
        ready(&mut p);
        let sent = p.signal(SIGTERM);
        let got = p.expect_signal(SIGTERM).mono();
        // lastcall received TERM at or after `sent`, so a correct drain
        // forwards at >= sent + 1 s. 10 ms of slack for a millisecond timer.
        p.check(
            got + 10 * MS >= sent + SEC,
            format!("app saw TERM {} after it was sent: before the 1s drain delay", secs(got.saturating_sub(sent))),
        );
        p.expect_line("exiting");
        p.expect_exit_code(0);
    }
}

both_modes! {
    /// TERM is not the stop signal under `--stop-signal INT`: it is forwarded
    /// at once even though a 30 s drain would apply to the stop signal.
    fn non_stop_term_forwarded_at_once(mode) {
        let mut p = Run::new(mode)
            .opts(["--stop-signal", "INT"])
            .opts(LONG_DRAIN_OPTS)
            .app(&["signals", "--exit-on", "USR1"])
            .spawn();
        ready(&mut p);
        let sent = p.signal(SIGTERM);
        let got = p.expect_signal(SIGTERM).mono();
        p.check(got - sent < 10 * SEC, format!("TERM took {} to arrive: it was drained", secs(got - sent)));
        p.signal(SIGUSR1);
        p.expect_line("exiting");
        p.expect_exit_code(0);
    }
}

/// `sh -c 'APP signals --ignore USR2 & exec APP signals --ignore USR1' APP`:
/// the child (the exec'd app) prints USR2 but not USR1; the grandchild, in the
/// child's process group, prints USR1 but not USR2. Returns (child,
/// grandchild) in the test's pid view.
fn spawn_group(mode: Mode, group: bool) -> (Proc, i32, i32) {
    let app = support::testapp();
    let mut run = Run::new(mode).cmd([
        "sh".as_ref(),
        "-c".as_ref(),
        "\"$0\" signals --ignore USR2 & exec \"$0\" signals --ignore USR1".as_ref(),
        app.as_os_str(),
    ]);
    if group {
        run = run.opts(["-g"]);
    }
    let mut p = run.spawn();
    p.expect_prefix("ready");
    p.expect_prefix("ready");
    let lastcall = p.lastcall_pid();
    let kids = support::children_of(lastcall);
    p.check(kids.len() == 1, format!("lastcall should have one child, has {kids:?}"));
    let grandkids = support::children_of(kids[0]);
    p.check(grandkids.len() == 1, format!("the child should have one child, has {grandkids:?}"));
    let (child, grandchild) = (kids[0], grandkids[0]);
    // SAFETY: getpgid has no memory-safety preconditions.
    let pgid = |pid: i32| unsafe { libc::getpgid(pid) };
    let (a, b) = (pgid(child), pgid(grandchild));
    p.check(a > 0 && a == b, format!("child and grandchild should share a process group: {a} vs {b}"));
    p.adopt(grandchild);
    (p, child, grandchild)
}

both_modes! {
    /// With -g, a forwarded signal reaches the whole process group of the
    /// child: the grandchild sees USR1.
    fn process_group_forwarding(mode) {
        let (mut p, _child, _grandchild) = spawn_group(mode, true);
        p.signal(SIGUSR1);
        p.expect_signal(SIGUSR1); // only the grandchild prints USR1
        p.signal(SIGUSR2);
        p.expect_signal(SIGUSR2); // the child
        p.signal(SIGTERM);
        p.expect_line("exiting");
        p.expect_exit_code(0);
    }
}

both_modes! {
    /// Without -g, only the child is signalled: the grandchild in its group
    /// never sees USR1.
    fn no_process_group_forwarding_without_g(mode) {
        let (mut p, _child, grandchild) = spawn_group(mode, false);
        p.signal(SIGUSR1);
        // Sent after USR1, so once the child prints USR2, lastcall has
        // already forwarded USR1 (to the child, or wrongly to the group).
        p.signal(SIGUSR2);
        p.expect_signal(SIGUSR2);
        // Had the group got USR1, the grandchild would have it pending or
        // printed by now, and (lower number, delivered first) would print it
        // before this TERM.
        p.kill_direct(grandchild, SIGTERM);
        p.expect_signal(SIGTERM);
        p.expect_line("exiting");
        let leaked = p.lines_starting("signal USR1");
        p.check(leaked.is_empty(), "the grandchild got USR1 although -g was not given");
        p.signal(SIGTERM);
        p.expect_exit_code(0);
    }
}

// ---------------------------------------------------------------------------
// Rewriting
// ---------------------------------------------------------------------------

both_modes! {
    /// `-r TERM:QUIT`: the stop signal reaches the app as QUIT, never as TERM.
    fn rewrite_term_to_quit(mode) {
        let mut p = Run::new(mode).opts(["-r", "TERM:QUIT"]).app(&["signals", "--exit-on", "QUIT"]).spawn();
        ready(&mut p);
        p.signal(SIGTERM);
        p.expect_signal(SIGQUIT);
        p.expect_line("exiting");
        p.expect_exit_code(0);
        let term = p.lines_starting("signal TERM");
        p.check(term.is_empty(), "TERM was forwarded although rewritten to QUIT");
    }
}

both_modes! {
    /// `-r HUP:0` drops HUP: USR1 sent after it arrives, HUP never does.
    fn rewrite_to_zero_drops(mode) {
        let mut p = Run::new(mode).opts(["-r", "HUP:0"]).app(&["signals"]).spawn();
        ready(&mut p);
        p.signal(SIGHUP);
        p.signal(SIGUSR1);
        p.expect_signal(SIGUSR1);
        p.signal(SIGTERM);
        p.expect_line("exiting");
        p.expect_exit_code(0);
        let hup = p.lines_starting("signal HUP");
        p.check(hup.is_empty(), "HUP was forwarded although rewritten to 0");
    }
}

// ---------------------------------------------------------------------------
// Exit codes
// ---------------------------------------------------------------------------

fn exit_case(mode: Mode, opts: &[&str], app: &[&str], code: i32) {
    let mut p = Run::new(mode).opts(opts).app(app).spawn();
    p.expect_exit_code(code);
}

both_modes! {
    fn exit_code_0(mode) { exit_case(mode, &[], &["exit", "0"], 0) }
}
both_modes! {
    fn exit_code_3(mode) { exit_case(mode, &[], &["exit", "3"], 3) }
}
both_modes! {
    /// A child killed by TERM: 128 + 15.
    fn exit_code_143_for_term_death(mode) { exit_case(mode, &[], &["kill", "TERM"], 143) }
}
both_modes! {
    /// A child killed by KILL: 128 + 9.
    fn exit_code_137_for_kill_death(mode) { exit_case(mode, &[], &["kill", "KILL"], 137) }
}
both_modes! {
    /// `-e 143` maps a TERM death to success.
    fn remap_143_to_0(mode) { exit_case(mode, &["-e", "143"], &["kill", "TERM"], 0) }
}
both_modes! {
    /// `-e 143` leaves other codes alone.
    fn remap_leaves_other_codes(mode) { exit_case(mode, &["-e", "143"], &["exit", "3"], 3) }
}

// ---------------------------------------------------------------------------
// Exec errors and usage errors
// ---------------------------------------------------------------------------

/// Runs `cmd`, expects `code` and exactly one stderr line naming `name`.
fn exec_error(mode: Mode, cmd: &[&str], name: &str, code: i32) {
    let mut p = Run::new(mode).cmd(cmd).spawn();
    p.expect_exit_code(code);
    let stderr = p.stderr();
    let naming = stderr.lines().filter(|l| l.contains(name)).count();
    p.check(naming == 1, format!("want exactly one stderr line naming {name:?}, got {naming}"));
}

both_modes! {
    fn exec_nonexistent_path_is_127(mode) {
        exec_error(mode, &["/nonexistent/lastcall-no-such-cmd", "x"], "/nonexistent/lastcall-no-such-cmd", 127)
    }
}
both_modes! {
    fn exec_not_on_path_is_127(mode) {
        exec_error(mode, &["lastcall-no-such-cmd-on-path"], "lastcall-no-such-cmd-on-path", 127)
    }
}
both_modes! {
    fn exec_not_executable_is_126(mode) {
        let dir = TempDir::new("noexec");
        let file = dir.join("not-executable");
        std::fs::write(&file, "#!/bin/sh\nexit 0\n").unwrap();
        // 0644: found, but not executable.
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let path = file.to_str().unwrap();
        exec_error(mode, &[path], path, 126)
    }
}

/// lastcall with `opts` and a command that creates `marker` if it ever runs.
fn marker_run(mode: Mode, opts: &[&str], marker: &std::path::Path) -> Proc {
    Run::new(mode).opts(opts).cmd(["sh".as_ref(), "-c".as_ref(), ": > \"$0\"".as_ref(), marker.as_os_str()]).spawn()
}

both_modes! {
    /// Bad options exit 2 and start no child. The control run first proves
    /// that the marker command does create the marker when it runs.
    fn bad_options_exit_2_without_child(mode) {
        let dir = TempDir::new("usage");
        let control = dir.join("control");
        let mut p = marker_run(mode, &[], &control);
        p.expect_exit_code(0);
        p.check(control.exists(), "control: the marker command did not create its marker");
        drop(p);

        let cases: [&[&str]; 3] = [&["--bogus"], &["--grace-period", "banana"], &["--rewrite", "X:Y"]];
        for (i, opts) in cases.into_iter().enumerate() {
            let marker = dir.join(&format!("marker{i}")[..]);
            let mut p = marker_run(mode, opts, &marker);
            p.expect_exit_code(2);
            let stderr = p.stderr();
            p.check(!stderr.trim().is_empty(), format!("{opts:?}: no message on stderr"));
            p.check(!marker.exists(), format!("{opts:?}: the child ran (marker exists)"));
        }
    }
}

#[test]
fn version_exits_0() {
    let mut p = Run::new(Mode::Subreaper).raw(["--version"]).spawn();
    p.expect_exit_code(0);
    p.expect_line("lastcall");
}

#[test]
fn help_exits_0() {
    let mut p = Run::new(Mode::Subreaper).raw(["--help"]).spawn();
    p.expect_exit_code(0);
    p.expect_line("Usage");
}

// ---------------------------------------------------------------------------
// The shutdown sequence
// ---------------------------------------------------------------------------

/// An app that ignores TERM under `opts` (grace 3 s, margin 1 s): lastcall
/// SIGKILLs it at grace - margin (2 s), before the grace deadline (3 s):
/// exit 137 and a log line about the kill.
fn killed_before_the_deadline(mode: Mode, opts: &[&str], app: &[&str]) {
    let mut p = Run::new(mode).opts(["--grace-period", "3s", "--kill-margin", "1s", "--stop-budget", "1s"]).opts(opts).app(app).spawn();
    ready(&mut p);
    let sent = p.signal(SIGTERM);
    let exited = p.expect_exit_code(137);
    p.check(exited - sent < 3 * SEC, format!("lastcall exited {} after TERM: not before the 3s grace deadline", secs(exited - sent)));
    p.check(
        exited + 10 * MS >= sent + 2 * SEC,
        format!("lastcall exited {} after TERM: killed before grace - margin", secs(exited - sent)),
    );
    let stderr = p.stderr();
    p.check(stderr.contains("SIGKILL"), "stderr does not mention the SIGKILL");
}

both_modes! {
    /// A child that ignores TERM is SIGKILLed before the deadline.
    fn child_ignoring_term_is_killed_before_deadline(mode) {
        killed_before_the_deadline(mode, &[], &["signals", "--ignore", "TERM"])
    }
}

both_modes! {
    /// Drain, then STOP, then KILL: a 1 s drain in the same 3 s grace period
    /// still leaves the kill before the deadline.
    fn drain_then_kill_before_grace_deadline(mode) {
        killed_before_the_deadline(mode, &["--drain-delay", "1s"], &["signals", "--ignore", "TERM", "--exit-on", "none"])
    }
}

both_modes! {
    /// The child exits during the drain: lastcall exits at once with the
    /// child's status, long before the 30 s drain would end, and the child
    /// never got the stop signal.
    fn child_exit_during_drain_ends_at_once(mode) {
        let mut p = Run::new(mode).opts(LONG_DRAIN_OPTS).app(&["signals", "--exit-on", "USR1", "--exit-code", "7"]).spawn();
        let app = ready(&mut p);
        let sent = p.signal(SIGTERM);
        barrier(&mut p); // lastcall is draining now
        p.kill_direct(app, SIGUSR1);
        p.expect_line("exiting");
        let exited = p.expect_exit_code(7);
        p.check(exited - sent < 15 * SEC, format!("lastcall exited {} after TERM: it kept draining after the child died", secs(exited - sent)));
        let term = p.lines_starting("signal TERM");
        p.check(term.is_empty(), "the child got TERM although it exited during the drain");
    }
}

both_modes! {
    /// A second stop signal during the drain skips to STOP: the app gets TERM
    /// after the second signal, long before the 30 s drain would end.
    fn second_stop_signal_skips_drain(mode) {
        let mut p = Run::new(mode).opts(LONG_DRAIN_OPTS).app(&["signals"]).spawn();
        ready(&mut p);
        let first = p.signal(SIGTERM);
        barrier(&mut p); // lastcall is draining now
        let early = p.lines_starting("signal TERM");
        p.check(early.is_empty(), "the app got TERM before the drain ended");
        let second = p.signal(SIGTERM);
        let got = p.expect_signal(SIGTERM).mono();
        p.check(got >= second, "TERM arrived before the second stop signal");
        p.check(got - first < 15 * SEC, format!("TERM arrived {} after the first stop signal: the drain was not skipped", secs(got - first)));
        p.expect_line("exiting");
        p.expect_exit_code(0);
    }
}

// ---------------------------------------------------------------------------
// Leftover descendants
// ---------------------------------------------------------------------------

/// Waits for testapp daemon's `daemon pid=` and `main exiting` lines; returns
/// the daemon's pid in its own namespace's view and when `main exiting` was
/// read. The daemon is registered with Drop (it could escape lastcall's tree
/// in Subreaper mode) if it is still there to register.
fn daemon_started(p: &mut Proc) -> (i32, u64) {
    let daemon = p.expect_prefix("daemon pid=").pid();
    if let Some(host) = p.try_host_pid(daemon) {
        p.adopt(host);
    }
    let main_exiting = p.expect_line("main exiting").at;
    (daemon, main_exiting)
}

both_modes! {
    /// The main child exits (3) leaving a daemon: lastcall sends the daemon
    /// the stop signal, the daemon exits on it, lastcall exits 3 without
    /// waiting out the 20 s leftover timeout.
    fn leftover_daemon_gets_stop_signal(mode) {
        let mut p = Run::new(mode).opts(["--leftover-timeout", "20s"]).app(&["daemon", "--exit-code", "3"]).spawn();
        daemon_started(&mut p);
        let term = p.expect_prefix("daemon signal TERM").mono();
        let exited = p.expect_exit_code(3);
        p.check(term <= exited, "lastcall exited before the daemon got TERM");
        p.check(exited - term < 10 * SEC, format!("lastcall exited {} after the daemon got TERM and died", secs(exited - term)));
        p.expect_eof(GUARD); // nothing holding stdout survives
    }
}

both_modes! {
    /// A leftover daemon that ignores TERM is SIGKILLed after
    /// --leftover-timeout (2 s); lastcall exits with the main child's 3.
    fn leftover_daemon_ignoring_term_is_killed(mode) {
        let mut p = Run::new(mode)
            .opts(["--leftover-timeout", "2s"])
            .app(&["daemon", "--ignore-term", "--exit-code", "3"])
            .spawn();
        let (_daemon, main_exiting) = daemon_started(&mut p);
        let exited = p.expect_exit_code(3);
        // `main exiting` was read a little after the main child printed it,
        // so only half the timeout is asserted as the lower bound.
        p.check(
            exited - main_exiting >= SEC,
            format!("lastcall exited {} after the main child: the leftover got no time", secs(exited - main_exiting)),
        );
        // The daemon holds stdout: EOF proves it is dead (in Subreaper mode
        // nothing else would kill it once lastcall is gone).
        p.expect_eof(GUARD);
        let stderr = p.stderr();
        p.check(stderr.contains("SIGKILL"), "stderr does not mention the SIGKILL of the leftover");
    }
}

both_modes! {
    /// --wait-descendants: after the main child exits (3), lastcall keeps
    /// running until the daemon (adopted by lastcall) exits on its own; it
    /// does not signal it.
    fn wait_descendants_waits_for_daemon(mode) {
        let mut p = Run::new(mode).opts(["--wait-descendants"]).app(&["daemon", "--exit-code", "3"]).spawn();
        let (daemon, _) = daemon_started(&mut p);
        // lastcall is still running here (that is the behaviour under test),
        // so the namespace pid can be translated.
        let daemon = p.host_pid(daemon);
        let lastcall = p.lastcall_pid();
        let ppid = support::status_field(daemon, "PPid");
        p.check(
            ppid.as_deref() == Some(lastcall.to_string().as_str()),
            format!("the daemon should be adopted by lastcall {lastcall}, PPid is {ppid:?}"),
        );
        let sent = p.kill_direct(daemon, SIGTERM);
        let term = p.expect_prefix("daemon signal TERM").mono();
        p.check(term >= sent, "the daemon got TERM before the test sent it: lastcall signalled it");
        let exited = p.expect_exit_code(3);
        p.check(exited >= term, "lastcall exited before the daemon did");
    }
}

// ---------------------------------------------------------------------------
// Signal state handed to the child
// ---------------------------------------------------------------------------

/// Blocked when lastcall starts: standard signals and a real-time one.
fn blocked() -> Vec<libc::c_int> {
    vec![SIGUSR1, SIGUSR2, SIGINT, libc::SIGRTMIN() + 1]
}

/// Ignored when lastcall starts: standard signals and a real-time one.
fn ignored() -> Vec<libc::c_int> {
    vec![SIGHUP, SIGQUIT, libc::SIGPIPE, libc::SIGTTOU, libc::SIGRTMIN()]
}

/// glibc's internal signals (SIGCANCEL, SIGSETXID): glibc's sigaction()
/// refuses them, so resetting them needs the raw syscall.
const GLIBC_INTERNAL: [libc::c_int; 2] = [32, 33];

/// Control experiment: the same set-up without lastcall in between shows up
/// exactly in testapp's status, so a clean state through lastcall is
/// lastcall's doing and not an artefact of the harness.
fn check_direct(block: &[libc::c_int], ignore: &[libc::c_int]) {
    let app = support::testapp();
    let out = support::run_direct_with_signals(&[app.as_os_str(), "status".as_ref()], block, ignore);
    let want_blk = format!("SigBlk:\t{}", support::sig_mask(block));
    let want_ign = format!("SigIgn:\t{}", support::sig_mask(ignore));
    assert!(out.contains(&want_blk), "control: want {want_blk:?} in\n{out}");
    assert!(out.contains(&want_ign), "control: want {want_ign:?} in\n{out}");
}

#[test]
fn control_pre_exec_signal_setup_reaches_the_app() {
    check_direct(&blocked(), &ignored());
    check_direct(&GLIBC_INTERNAL, &GLIBC_INTERNAL);
}

/// Runs `testapp status` under lastcall started with `block`/`ignore`, and
/// checks the app's mask and ignored set are empty.
fn clean_state(mode: Mode, block: &[libc::c_int], ignore: &[libc::c_int]) {
    let mut p = Run::new(mode).block_signals(block).ignore_signals(ignore).app(&["status"]).spawn();
    let blk = p.expect_prefix("SigBlk:");
    let ign = p.expect_prefix("SigIgn:");
    p.expect_exit_code(0);
    let value = |l: &support::Line| l.text.split_whitespace().nth(1).unwrap_or("").to_string();
    p.check(value(&blk) == "0000000000000000", format!("child's signal mask is not empty: {}", blk.text));
    p.check(value(&ign) == "0000000000000000", format!("child ignores signals: {}", ign.text));
}

both_modes! {
    /// lastcall started with signals blocked and ignored still starts the
    /// child with an empty mask and default dispositions.
    fn child_starts_with_clean_signal_state(mode) {
        clean_state(mode, &blocked(), &ignored())
    }
}

both_modes! {
    /// The same for glibc's internal signals 32 and 33, which a static-glibc
    /// parent (like this test binary) can hand down ignored.
    fn child_clean_state_includes_glibc_internal_signals(mode) {
        clean_state(mode, &GLIBC_INTERNAL, &GLIBC_INTERNAL)
    }
}

// ---------------------------------------------------------------------------
// Settings that cannot work are refused (issue 11)
// ---------------------------------------------------------------------------

/// Runs lastcall with `opts`; expects exit 2, one stderr line naming every
/// string in `names`, and no child.
fn refused(opts: &[&str], names: &[&str]) {
    let dir = TempDir::new("refused");
    let marker = dir.join("marker");
    let mut p = marker_run(Mode::Subreaper, opts, &marker);
    p.expect_exit_code(2);
    let stderr = p.stderr();
    let lines: Vec<&str> = stderr.lines().collect();
    p.check(lines.len() == 1, format!("{opts:?}: want one stderr line"));
    for name in names {
        p.check(lines[0].contains(name), format!("{opts:?}: the line does not name {name}"));
    }
    p.check(!marker.exists(), format!("{opts:?}: the child ran"));
}

/// A rewrite rule whose FROM signal lastcall never catches would never fire
/// (and SIGSYS would kill a non-PID-1 lastcall and orphan the app).
#[test]
fn rewrite_of_a_signal_lastcall_cannot_catch_is_refused() {
    for spec in ["SEGV:TERM", "9:15", "TTIN:TERM", "31:1", "STOP:TERM", "CHLD:TERM"] {
        refused(&["-r", spec], &["--rewrite", spec]);
    }
}

/// The stop signal must be one lastcall can catch.
#[test]
fn uncatchable_stop_signal_is_refused() {
    for sig in ["KILL", "STOP", "CHLD", "SEGV"] {
        refused(&["--stop-signal", sig], &["--stop-signal"]);
    }
}

/// Budgets that leave the app no time between TERM and KILL are refused,
/// naming the options involved.
#[test]
fn impossible_budgets_are_refused() {
    refused(&["--grace-period", "1s", "--kill-margin", "5s"], &["--kill-margin", "--grace-period"]);
    refused(&["--grace-period", "0"], &["--grace-period"]);
    refused(&["--grace-period", "5s", "--stop-budget", "10s"], &["--stop-budget", "--grace-period"]);
}

both_modes! {
    /// `kubectl delete --grace-period=5`: with the default kill margin and
    /// stop budget (2 s and 5 s, made for 30 s) nothing would be left to
    /// drain. Scaled down for a short grace period, the drain still runs
    /// (TERM reaches the app 2 s or more after the stop signal) and the
    /// app still gets time before SIGKILL.
    fn short_grace_period_still_drains(mode) {
        let mut p = Run::new(mode).opts(["--grace-period", "5s", "--drain-delay", "10s"]).app(&["signals", "--exit-on", "none"]).spawn();
        ready(&mut p);
        let sent = p.signal(SIGTERM);
        let got = p.expect_signal(SIGTERM).mono();
        p.check(got + 10 * MS >= sent + 2 * SEC, format!("TERM reached the app {} after the stop signal: no drain", secs(got - sent)));
        let exited = p.expect_exit_code(137);
        p.check(exited >= got + SEC, format!("SIGKILL {} after TERM: the app got less than 1 s", secs(exited - got)));
        p.check(exited - sent < 5 * SEC, format!("lastcall exited {} after the stop signal: past the grace period", secs(exited - sent)));
    }
}

/// A non-root lastcall whose app made itself root (a set-user-ID binary)
/// cannot SIGKILL it. The log must say the kill failed, not that it was
/// sent, and lastcall, as PID 1, exits at once: the kernel then kills
/// everything left in its PID namespace, before the grace period ends.
#[test]
fn failed_sigkill_is_reported_and_pid1_exits() {
    let dir = TempDir::new("suid");
    let app = dir.join("testapp-suid");
    std::fs::copy(support::testapp(), &app).expect("copy testapp");
    std::os::unix::fs::chown(&app, Some(0), Some(0)).expect("chown");
    std::fs::set_permissions(&app, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).expect("chmod u+s");
    let mut p = Run::new(Mode::Pid1)
        .user(65534)
        .opts(["--grace-period", "4s", "--kill-margin", "1s", "--stop-budget", "1s"])
        .cmd([app.to_str().unwrap(), "signals", "--become-root", "--ignore", "TERM"])
        .spawn();
    ready(&mut p);
    let sent = p.signal(SIGTERM);
    p.expect_exit_code(137);
    let eof = p.expect_eof(GUARD);
    p.check(eof - sent < 4 * SEC, format!("the app outlived the 4 s grace period ({})", secs(eof - sent)));
    let err = p.stderr();
    p.check(!err.contains("SIGKILL sent"), "a failed SIGKILL was logged as sent");
    p.check(err.contains("SIGKILL failed"), "the failed SIGKILL was not reported");
}

/// lastcall gives up its working directory (so it pins no mount) before
/// the app can see it, while the app keeps the directory it was started in.
#[test]
fn lastcall_holds_no_directory_once_the_app_runs() {
    let dir = TempDir::new("cwd");
    for _ in 0..100 {
        let mut cmd = Run::new(Mode::Subreaper).app(&["status"]);
        cmd = cmd.cwd(dir.path());
        let mut p = cmd.spawn();
        let line = p.expect_prefix("cwd=");
        let (cwd, parent) = (line.field("cwd").unwrap_or("").to_string(), line.field("parent_cwd").unwrap_or("").to_string());
        p.check(cwd == dir.path().to_str().unwrap(), format!("the app runs in {cwd}, not where lastcall was started"));
        p.check(parent == "/", format!("lastcall's directory was {parent} while the app ran"));
        p.expect_exit_code(0);
    }
}
