//! The termination report (issue 14): what lastcall writes to the
//! container's termination message file at exit, for each way a shutdown
//! can end, and the preStop hook's lines in the container's log.
//!
//! Each test points `--termination-log` at a file of its own and reads it
//! after lastcall exited; the same rules as tests/pid1.rs apply (events,
//! not sleeps).

#[macro_use]
mod support;

use libc::{SIGTERM, SIGUSR1};
use support::{Mode, Proc, Run, TempDir};

/// KILL at 3 s; a 1 s drain.
const OPTS: [&str; 8] = ["--grace-period", "4s", "--kill-margin", "1s", "--stop-budget", "1s", "--drain-delay", "1s"];

/// Runs lastcall with the report going to a temp file; returns the run and the file.
fn with_report(mode: Mode, opts: &[&str], app: &[&str]) -> (Proc, TempDir, std::path::PathBuf) {
    let dir = TempDir::new("report");
    let file = dir.join("termination-log");
    let p = Run::new(mode).opts(["--termination-log", file.to_str().unwrap()]).opts(opts).app(app).spawn();
    (p, dir, file)
}

#[track_caller]
fn read_report(p: &mut Proc, file: &std::path::Path) -> String {
    std::fs::read_to_string(file).unwrap_or_else(|e| p.fail(format!("no report at {}: {e}", file.display())))
}

#[track_caller]
fn has(p: &mut Proc, report: &str, lines: &[&str]) {
    for want in lines {
        p.check(report.lines().any(|l| l.contains(want)), format!("the report has no line with {want:?}:\n{report}"));
    }
    p.check(report.len() <= 4096, "the report is longer than the 4 KiB the kubelet reads");
}

both_modes! {
    /// Drained, stopped, exited: the whole story, and no SIGKILL.
    fn drained_and_exited(mode) {
        let (mut p, _dir, file) = with_report(mode, &OPTS, &["signals", "--exit-code", "3"]);
        p.expect_prefix("ready");
        p.signal(SIGTERM);
        p.expect_exit_code(3);
        let r = read_report(&mut p, &file);
        has(&mut p, &r, &[
            "lastcall: stopped by SIGTERM at ",
            "drain: ended after ",
            "delay: fixed delay of 1000ms",
            "stop signal: SIGTERM sent to the app at +",
            "app: exited with code 3 at +",
            "SIGKILL: not sent by lastcall",
            "exit code: 3",
        ]);
    }
}

/// The app ignores TERM: lastcall's SIGKILL at the deadline is in the report
/// (what tells a grace-period kill from an OOM kill).
#[test]
fn killed_at_the_deadline() {
    let (mut p, _dir, file) = with_report(Mode::Pid1, &OPTS, &["signals", "--ignore", "TERM"]);
    p.expect_prefix("ready");
    p.signal(SIGTERM);
    p.expect_exit_code(137);
    let r = read_report(&mut p, &file);
    has(&mut p, &r, &["stop signal: SIGTERM sent", "app: killed by SIGKILL at +", "SIGKILL: sent by lastcall at +", "exit code: 137"]);
    p.check(!r.contains("OOM"), format!("a grace-period kill reads as an outside kill:\n{r}"));
}

/// The app dies of a SIGKILL lastcall did not send (as in an OOM kill).
#[test]
fn killed_from_outside() {
    let (mut p, _dir, file) = with_report(Mode::Subreaper, &OPTS, &["signals"]);
    let pid = p.expect_prefix("ready").pid();
    p.kill_direct(pid, libc::SIGKILL);
    p.expect_exit_code(137);
    let r = read_report(&mut p, &file);
    has(
        &mut p,
        &r,
        &["no stop signal was received", "app: killed by SIGKILL (SIGKILL not sent by lastcall", "SIGKILL: not sent by lastcall"],
    );
}

/// The app exits on its own during the drain: no stop signal was sent.
#[test]
fn app_died_during_the_drain() {
    let opts = ["--grace-period", "30s", "--drain-delay", "20s"];
    let (mut p, _dir, file) = with_report(Mode::Pid1, &opts, &["signals", "--exit-on", "USR1"]);
    p.expect_prefix("ready");
    p.signal(SIGTERM);
    p.signal(SIGUSR1);
    p.expect_exit_code(0);
    let r = read_report(&mut p, &file);
    has(
        &mut p,
        &r,
        &[
            "stopped by SIGTERM",
            "the app exited during the drain",
            "stop signal: not sent (the app exited during the drain)",
            "app: exited with code 0",
        ],
    );
}

/// A k8s drain that cannot observe falls back to the fixed delay: the
/// report says why.
#[cfg(feature = "k8s")]
#[test]
fn fallback_says_why() {
    let opts = [
        "--drain",
        "k8s",
        "--k8s-api",
        "https://127.0.0.1:1",
        "--namespace",
        "default",
        "--pod-name",
        "web-0",
        "--pod-ip",
        "10.0.0.1",
        "--k8s-token-file",
        "/dev/null",
        "--k8s-ca-file",
        "/dev/null",
        "--grace-period",
        "10s",
        "--drain-delay",
        "1s",
    ];
    let (mut p, _dir, file) = with_report(Mode::Pid1, &opts, &["signals"]);
    p.expect_prefix("ready");
    p.signal(SIGTERM);
    p.expect_exit_code(0);
    let r = read_report(&mut p, &file);
    has(&mut p, &r, &["drain: ended after ", "k8s: fallback delay after: ", "stop signal: SIGTERM sent"]);
}

/// `lastcall drain` that drains on its own (no lastcall PID 1) reports too.
#[test]
fn prestop_hook_on_its_own_reports() {
    let dir = TempDir::new("report-hook");
    let file = dir.join("termination-log");
    let mut p = Run::new(Mode::Subreaper).raw(["drain", "--drain-delay", "200ms", "--termination-log", file.to_str().unwrap()]).spawn();
    p.expect_exit_code(0);
    let r = read_report(&mut p, &file);
    has(&mut p, &r, &["lastcall drain (preStop hook): preStop drain requested at ", "drain: ended after ", "delay: fixed delay of 200ms"]);
}

/// The default file (/dev/termination-log) is written only where the
/// kubelet provides it: lastcall never creates it.
#[test]
fn default_file_is_never_created() {
    let existed = std::path::Path::new("/dev/termination-log").exists();
    let mut p = Run::new(Mode::Subreaper).opts(["--drain-delay", "100ms"]).app(&["signals"]).spawn();
    p.expect_prefix("ready");
    p.signal(SIGTERM);
    p.expect_exit_code(0);
    let exists = std::path::Path::new("/dev/termination-log").exists();
    p.check(existed || !exists, "lastcall created /dev/termination-log");
}

/// Without a lastcall PID 1 (here testapp is PID 1 of its namespace), the
/// preStop hook's lines also go to PID 1's stderr, the container's log: the
/// kubelet throws away a hook's own output unless it fails.
#[test]
fn prestop_lines_reach_the_container_log() {
    let app = support::testapp();
    let mut pid1 = Run::new(Mode::Subreaper)
        .raw_cmd(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", app.to_str().unwrap(), "signals"])
        .spawn();
    pid1.expect_prefix("ready");
    let target = support::children_of(pid1.lastcall_pid()).first().copied().unwrap_or_else(|| pid1.fail("no PID 1 under unshare"));
    let bin = support::lastcall();
    let mut hook = Run::new(Mode::Subreaper)
        .raw_cmd([
            "nsenter",
            "--target",
            &target.to_string(),
            "--mount",
            "--pid",
            "--",
            bin.to_str().unwrap(),
            "drain",
            "--drain-delay",
            "100ms",
        ])
        .spawn();
    hook.expect_exit_code(0);
    pid1.wait_stderr("lastcall drain: drain ended");
}
