//! Shared harness for the black-box tests: runs the real `lastcall` binary
//! with the `testapp` fixture (examples/testapp.rs, docs/testapp.md) as the
//! app, and turns what happens into events the tests can wait for.
//!
//! - [`Run`] builds one lastcall invocation, either as real PID 1 of a fresh
//!   PID namespace (`unshare --pid --fork --mount-proc --kill-child`) or
//!   directly as a child of the test (then lastcall is not PID 1 and must act
//!   as a child subreaper).
//! - [`Proc`] is the running invocation: stdout is read line by line by a
//!   thread (each line stamped with CLOCK_MONOTONIC when it arrived), stderr
//!   is captured, the exit is observed by a thread blocked in waitpid. Tests
//!   wait for *events* (a line, EOF, the exit) with generous upper bounds that
//!   only exist so a broken build fails instead of hanging.
//! - Any failure through a `Proc` method panics with a dump of the command
//!   line, exit status, stdout and stderr; a plain `assert!` failing while a
//!   `Proc` is alive prints the same dump from `Drop`.
//! - `Drop` kills everything the run started, so no process outlives a test.
//!
//! Two habits of this harness are worth keeping, and new tests should use
//! them:
//! - `both_modes!` turns one test body into a `pid1` and a `subreaper` test
//!   (dumb-init's test matrix): lastcall must behave the same as PID 1 of a
//!   namespace and as a child subreaper, and a behaviour written once is
//!   checked in both.
//! - Death is proven by end of file, not by waiting: the app and whatever it
//!   starts inherit lastcall's stdout, so [`Proc::expect_eof`] returns only
//!   once every process holding the pipe is gone (cargo's death tests do the
//!   same with a socket). No sleep can prove that a process is dead.
//!
//! Timestamps: testapp prints CLOCK_MONOTONIC nanoseconds (`MONO_NS`); the
//! harness uses the same clock ([`mono_ns`]) for "when we sent a signal" and
//! "when lastcall exited", so tests can assert ordering across processes.
//! `unshare` is run without a time namespace, so the clock is shared.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::ffi::{c_int, OsStr, OsString};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Upper bound for waiting on any single event (a line, an exit, EOF). It is
/// a failure guard for a loaded 2-core CI machine, never a synchronisation
/// device: tests proceed as soon as the event happens.
pub const GUARD: Duration = Duration::from_secs(30);

pub const SEC: u64 = 1_000_000_000;
pub const MS: u64 = 1_000_000;

// ---------------------------------------------------------------------------
// Binaries, clock, temp dirs
// ---------------------------------------------------------------------------

/// The lastcall binary cargo built for this test run.
pub fn lastcall() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lastcall"))
}

/// The testapp fixture, next to the lastcall binary under `examples/`.
/// `cargo test` builds examples; `cargo test --test NAME` does not, so a
/// missing or stale fixture is an explicit failure rather than a confusing one.
pub fn testapp() -> PathBuf {
    let bin = lastcall();
    let path = bin.parent().expect("lastcall has a parent dir").join("examples").join("testapp");
    let meta = std::fs::metadata(&path).unwrap_or_else(|e| {
        panic!("{}: {e}\nbuild the fixture first: cargo build --examples (plain `cargo test` does it)", path.display())
    });
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/testapp.rs");
    if let (Ok(bin_t), Ok(src_t)) = (meta.modified(), std::fs::metadata(&src).and_then(|m| m.modified())) {
        assert!(bin_t >= src_t, "{} is older than {}: run cargo build --examples", path.display(), src.display());
    }
    path
}

/// CLOCK_MONOTONIC in nanoseconds, the clock testapp's `MONO_NS` uses.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * SEC + ts.tv_nsec as u64
}

/// Formats a nanosecond span as seconds with milliseconds.
pub fn secs(ns: u64) -> String {
    format!("{:.3}s", ns as f64 / SEC as f64)
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!("lastcall-test-{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst)));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pipe, both ends close-on-exec (Command dup2s the one it hands over).
fn pipe_cloexec() -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as c_int; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        panic!("pipe2: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nothing else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Writes into the pipe until it is full (EAGAIN on a non-blocking write
/// through a second open file description, so `w` itself stays blocking,
/// as a log pipe is).
fn fill_pipe(w: &OwnedFd) {
    let path = format!("/proc/self/fd/{}", w.as_raw_fd());
    let f =
        std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&path).unwrap_or_else(|e| panic!("reopen {path}: {e}"));
    let chunk = [b'x'; 4096];
    loop {
        match std::io::Write::write(&mut &f, &chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("filling the stderr pipe: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------

/// The name testapp prints for `sig` (no SIG prefix).
pub fn sig_name(sig: c_int) -> &'static str {
    match sig {
        libc::SIGHUP => "HUP",
        libc::SIGINT => "INT",
        libc::SIGQUIT => "QUIT",
        libc::SIGKILL => "KILL",
        libc::SIGUSR1 => "USR1",
        libc::SIGUSR2 => "USR2",
        libc::SIGPIPE => "PIPE",
        libc::SIGALRM => "ALRM",
        libc::SIGTERM => "TERM",
        libc::SIGCHLD => "CHLD",
        libc::SIGCONT => "CONT",
        libc::SIGTSTP => "TSTP",
        libc::SIGTTIN => "TTIN",
        libc::SIGTTOU => "TTOU",
        libc::SIGURG => "URG",
        libc::SIGWINCH => "WINCH",
        libc::SIGPWR => "PWR",
        _ => panic!("sig_name: add signal {sig}"),
    }
}

/// Sends `sig` to `pid`; panics (with errno) when the process is gone.
pub fn kill(pid: i32, sig: c_int) {
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } != 0 {
        panic!("kill({pid}, {}): {}", sig_name(sig), std::io::Error::last_os_error());
    }
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as c_int) })
}

/// Signals the process behind a pidfd: unlike kill(2) this can never hit a
/// recycled pid, so it is what Drop uses.
fn pidfd_kill(fd: &OwnedFd, sig: c_int) -> std::io::Result<()> {
    // SAFETY: pidfd_send_signal(2) with a valid pidfd, no siginfo, no flags.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd.as_raw_fd(), sig, std::ptr::null::<libc::siginfo_t>(), 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel's `struct sigaction` for rt_sigaction(2) on x86_64.
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Sets a disposition with the raw rt_sigaction(2) syscall. glibc's
/// sigaction() refuses signals 32 and 33 (its internal SIGCANCEL and
/// SIGSETXID: EINVAL), and the tests need to set those too. Only SIG_DFL and
/// SIG_IGN are used, which need no restorer. Async-signal-safe.
///
/// # Safety
/// `handler` must be SIG_DFL or SIG_IGN.
unsafe fn raw_set_disposition(sig: c_int, handler: libc::sighandler_t) -> std::io::Result<()> {
    let sa = KernelSigaction { handler, flags: 0, restorer: 0, mask: 0 };
    // SAFETY: `sa` is a valid kernel sigaction; no old action is requested;
    // 8 is the kernel's sigset size on x86_64.
    let r =
        unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, &sa as *const KernelSigaction, std::ptr::null_mut::<KernelSigaction>(), 8) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The bit mask /proc/PID/status uses for a set of signals (`SigBlk:` ...).
pub fn sig_mask(sigs: &[c_int]) -> String {
    format!("{:016x}", sigs.iter().fold(0u64, |m, &s| m | 1 << (s - 1)))
}

/// Prepares the signal state of the process about to exec (lastcall, or
/// unshare, which passes it on through fork and exec):
/// - a known baseline first: default disposition for every signal. The test
///   binary itself does not start clean (observed: signal 32 is SIG_IGN in
///   it, and std's Command only resets SIGPIPE and the mask), and an ignored
///   disposition survives exec;
/// - then `block` is added to the mask and `ignore` set to SIG_IGN, with raw
///   syscalls so glibc's internal signals 32/33 can be used too (glibc's
///   sigprocmask silently drops them from a set).
///
/// Also ties the process to the test thread with PR_SET_PDEATHSIG, so an
/// aborted test run (no Drop) still takes lastcall (and, through unshare's
/// --kill-child, the whole namespace) down.
fn configure_pre_exec(cmd: &mut Command, block: Vec<c_int>, ignore: Vec<c_int>) {
    let max = libc::SIGRTMAX();
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls (rt_sigaction, rt_sigprocmask, prctl) on
    // data captured by value; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for sig in 1..=max {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    raw_set_disposition(sig, libc::SIG_DFL)?;
                }
            }
            for &sig in &ignore {
                raw_set_disposition(sig, libc::SIG_IGN)?;
            }
            let set: u64 = block.iter().fold(0u64, |m, &s| m | 1 << (s - 1));
            let r = libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_BLOCK, &set as *const u64, std::ptr::null_mut::<u64>(), 8);
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `argv` directly (no lastcall) with the given signals blocked and
/// ignored, and returns its stdout: the control experiment showing that the
/// pre-exec set-up really reaches an exec'd program.
pub fn run_direct_with_signals(argv: &[&OsStr], block: &[c_int], ignore: &[c_int]) -> String {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null()).stderr(Stdio::inherit());
    configure_pre_exec(&mut cmd, block.to_vec(), ignore.to_vec());
    let out = cmd.output().expect("spawn direct");
    assert!(out.status.success(), "{argv:?} failed: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------
// /proc
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct ProcEntry {
    pub pid: i32,
    pub ppid: i32,
    /// One-letter state from /proc/PID/stat: R, S, D, Z, T...
    pub state: char,
    pub comm: String,
}

/// Every process visible in /proc, from /proc/PID/stat. (This kernel may lack
/// CONFIG_PROC_CHILDREN, so /proc/PID/task/TID/children is not used.)
pub fn proc_table() -> Vec<ProcEntry> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        // The process may vanish between readdir and read: skip it then.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "PID (COMM) S PPID ..."; COMM may contain spaces and parentheses,
        // so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = stat[open + 1..close].to_string();
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = rest.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        out.push(ProcEntry { pid, ppid, state, comm });
    }
    out
}

/// `root` and all its descendants (by parent pid), root first.
pub fn process_tree(root: i32) -> Vec<ProcEntry> {
    let table = proc_table();
    let mut by_parent: HashMap<i32, Vec<&ProcEntry>> = HashMap::new();
    for e in &table {
        by_parent.entry(e.ppid).or_default().push(e);
    }
    let mut out: Vec<ProcEntry> = table.iter().filter(|e| e.pid == root).cloned().collect();
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = by_parent.get(&out[i].pid) {
            out.extend(kids.iter().map(|e| (*e).clone()));
        }
        i += 1;
    }
    out
}

pub fn children_of(pid: i32) -> Vec<i32> {
    proc_table().into_iter().filter(|e| e.ppid == pid).map(|e| e.pid).collect()
}

/// The value of one `Key:` line of /proc/PID/status.
pub fn status_field(pid: i32, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':'))).map(|v| v.trim().to_string())
}

fn format_tree(tree: &[ProcEntry]) -> String {
    tree.iter().map(|e| format!("{} (ppid {}) {} {}", e.pid, e.ppid, e.state, e.comm)).collect::<Vec<_>>().join("\n")
}

// ---------------------------------------------------------------------------
// Run: the builder
// ---------------------------------------------------------------------------

/// How lastcall is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Real PID 1 of a new PID namespace, as in a container.
    Pid1,
    /// A plain child of the test: not PID 1, so a child subreaper.
    Subreaper,
}

/// Where lastcall's stderr goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stderr {
    /// A pipe the harness reads (the default): `stderr()` returns it.
    Captured,
    /// A pipe whose read end is closed before lastcall starts: every write
    /// fails with EPIPE (a container log pipe whose reader went away).
    Broken,
    /// A pipe that is already full and that nobody reads: every blocking
    /// write would wait forever (a log shim that stopped reading).
    Full,
}

pub struct Run {
    mode: Mode,
    stderr: Stderr,
    uid: Option<u32>,
    nofile: Option<u64>,
    /// Run this instead of lastcall (`raw_cmd`).
    program: Option<OsString>,
    cwd: Option<PathBuf>,
    opts: Vec<OsString>,
    cmd: Vec<OsString>,
    raw: Option<Vec<OsString>>,
    env: Vec<(OsString, OsString)>,
    block: Vec<c_int>,
    ignore: Vec<c_int>,
}

impl Run {
    pub fn new(mode: Mode) -> Run {
        Run {
            mode,
            stderr: Stderr::Captured,
            uid: None,
            nofile: None,
            program: None,
            cwd: None,
            opts: Vec::new(),
            cmd: Vec::new(),
            raw: None,
            env: Vec::new(),
            block: Vec::new(),
            ignore: Vec::new(),
        }
    }

    /// lastcall options (before the `--`).
    pub fn opts<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, opts: I) -> Run {
        self.opts.extend(opts.into_iter().map(|s| s.as_ref().to_owned()));
        self
    }

    /// The child is testapp with these arguments.
    pub fn app(mut self, args: &[&str]) -> Run {
        self.cmd = std::iter::once(testapp().into_os_string()).chain(args.iter().map(OsString::from)).collect();
        self
    }

    /// The child is an arbitrary command.
    pub fn cmd<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, argv: I) -> Run {
        self.cmd = argv.into_iter().map(|s| s.as_ref().to_owned()).collect();
        self
    }

    /// lastcall's whole argv, verbatim (no `--` is added): for usage tests.
    pub fn raw<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, argv: I) -> Run {
        self.raw = Some(argv.into_iter().map(|s| s.as_ref().to_owned()).collect());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Run {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Run this whole command line instead of lastcall (e.g. `nsenter ...
    /// lastcall drain`), with the harness's environment and capture.
    pub fn raw_cmd<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, argv: I) -> Run {
        let mut argv: Vec<OsString> = argv.into_iter().map(|s| s.as_ref().to_owned()).collect();
        self.program = Some(argv.remove(0));
        self.raw = Some(argv);
        self
    }

    /// Start lastcall in this working directory.
    pub fn cwd(mut self, dir: &Path) -> Run {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// Where lastcall's stderr goes (see [`Stderr`]).
    pub fn stderr(mut self, kind: Stderr) -> Run {
        self.stderr = kind;
        self
    }

    /// Run lastcall as this uid and gid (through setpriv, after unshare in
    /// Pid1 mode, so the PID namespace is still made by root).
    pub fn user(mut self, uid: u32) -> Run {
        self.uid = Some(uid);
        self
    }

    /// Start lastcall with RLIMIT_NOFILE set to `n` (soft and hard).
    pub fn nofile(mut self, n: u64) -> Run {
        self.nofile = Some(n);
        self
    }

    /// Start lastcall with these signals blocked (inherited through exec).
    pub fn block_signals(mut self, sigs: &[c_int]) -> Run {
        self.block.extend_from_slice(sigs);
        self
    }

    /// Start lastcall with these signals set to SIG_IGN (inherited through exec).
    pub fn ignore_signals(mut self, sigs: &[c_int]) -> Run {
        self.ignore.extend_from_slice(sigs);
        self
    }

    pub fn spawn(self) -> Proc {
        let mut argv: Vec<OsString> = Vec::new();
        if self.mode == Mode::Pid1 {
            // --fork: the namespace's PID 1 must be a new process.
            // --mount-proc: /proc inside shows the namespace (lastcall may read it).
            // --kill-child: if unshare dies (test killed, Drop), its child,
            //   lastcall = PID 1, gets SIGKILL, and with it the whole namespace.
            argv.extend(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"].map(OsString::from));
        }
        if let Some(uid) = self.uid {
            argv.extend(["setpriv", &format!("--reuid={uid}"), &format!("--regid={uid}"), "--clear-groups", "--"].map(OsString::from));
        }
        if let Some(n) = self.nofile {
            argv.extend(["prlimit", &format!("--nofile={n}:{n}"), "--"].map(OsString::from));
        }
        match &self.program {
            Some(program) => argv.push(program.clone()),
            None => argv.extend(under_test::argv()),
        }
        match &self.raw {
            Some(raw) => argv.extend(raw.iter().cloned()),
            None => {
                argv.extend(self.opts.iter().cloned());
                argv.push("--".into());
                argv.extend(self.cmd.iter().cloned());
            }
        }
        let cmdline = argv.iter().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ");

        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::piped());
        // The read end of an uncaptured stderr pipe, held (never read) for Full.
        let mut held_stderr: Option<OwnedFd> = None;
        match self.stderr {
            Stderr::Captured => {
                cmd.stderr(Stdio::piped());
            }
            Stderr::Broken | Stderr::Full => {
                let (read, write) = pipe_cloexec();
                if self.stderr == Stderr::Full {
                    fill_pipe(&write);
                    held_stderr = Some(read);
                } // Broken: `read` is dropped here, before lastcall starts.
                cmd.stderr(Stdio::from(write));
            }
        }
        // A clean, known environment: no LASTCALL_* from the developer's
        // shell. The control socket is off because parallel tests would all
        // bind the same default path; tests may override it.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("LASTCALL_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("LASTCALL_CONTROL_SOCKET", "off");
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        configure_pre_exec(&mut cmd, self.block.clone(), self.ignore.clone());

        let started = mono_ns();
        let mut child: Child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmdline}: {e}"));
        let pid = child.id() as i32;
        // Opened before anything can reap the child (the waiter thread starts
        // below), so it refers to exactly this process.
        let pidfd = pidfd_open(pid).expect("pidfd_open");

        let (line_tx, line_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let at = mono_ns();
                        let text = String::from_utf8_lossy(&buf).trim_end_matches('\n').to_string();
                        if line_tx.send(Some(Line { text, at })).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = line_tx.send(None);
        });

        let stderr_buf = Arc::new(Mutex::new(Vec::new()));
        let (stderr_tx, stderr_rx) = mpsc::channel();
        match child.stderr.take() {
            Some(mut stderr) => {
                let sink = Arc::clone(&stderr_buf);
                std::thread::spawn(move || {
                    let mut chunk = [0u8; 4096];
                    loop {
                        match stderr.read(&mut chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => sink.lock().unwrap().extend_from_slice(&chunk[..n]),
                        }
                    }
                    let _ = stderr_tx.send(());
                });
            }
            None => {
                let _ = stderr_tx.send(()); // not captured: nothing to wait for
            }
        }

        let (exit_tx, exit_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let status = child.wait();
            let _ = exit_tx.send(status.map(|s| (s, mono_ns())));
        });

        let mut proc = Proc {
            mode: self.mode,
            cmdline,
            started,
            pid,
            pidfd,
            lastcall: None,
            lines: line_rx,
            seen: Vec::new(),
            cursor: 0,
            eof: None,
            stderr: stderr_buf,
            stderr_done: stderr_rx,
            stderr_eof: false,
            exit_rx,
            exit: None,
            adopted: Vec::new(),
            held_stderr,
            dumped: false,
        };
        if self.mode == Mode::Subreaper {
            // A duplicate of the pidfd opened above: a second pidfd_open
            // would race the waiter thread, which may already have reaped a
            // lastcall that exits at once (ESRCH).
            let fd = proc.pidfd.try_clone().expect("dup pidfd");
            proc.lastcall = Some((pid, fd));
        }
        proc
    }
}

// ---------------------------------------------------------------------------
// Proc: the running invocation
// ---------------------------------------------------------------------------

/// One stdout line and the CLOCK_MONOTONIC time the harness read it.
#[derive(Clone, Debug)]
pub struct Line {
    pub text: String,
    pub at: u64,
}

impl Line {
    /// The value of a `key=value` word, e.g. `field("pid")`.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.text.split_whitespace().find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }

    pub fn pid(&self) -> i32 {
        self.field("pid").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no pid= in {:?}", self.text))
    }

    /// The MONO_NS timestamp of a `[daemon ]signal NAME MONO_NS` line.
    pub fn mono(&self) -> u64 {
        self.text.rsplit(' ').next().and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("no timestamp in {:?}", self.text))
    }
}

pub struct Proc {
    pub mode: Mode,
    cmdline: String,
    started: u64,
    /// The process we spawned: unshare (Pid1) or lastcall (Subreaper).
    pid: i32,
    pidfd: OwnedFd,
    /// lastcall's pid as seen by the test, and a pidfd for it.
    lastcall: Option<(i32, OwnedFd)>,
    lines: Receiver<Option<Line>>,
    seen: Vec<Line>,
    /// Index into `seen` of the first line `expect_*` has not consumed.
    cursor: usize,
    /// When stdout reached EOF (every writer gone).
    eof: Option<u64>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_done: Receiver<()>,
    stderr_eof: bool,
    exit_rx: Receiver<std::io::Result<(ExitStatus, u64)>>,
    exit: Option<(ExitStatus, u64)>,
    /// Other processes this run created that Drop must kill too (e.g. a
    /// daemon that escapes lastcall's process tree if lastcall misbehaves).
    adopted: Vec<OwnedFd>,
    /// The never-read end of a `Stderr::Full` pipe, kept open for the run.
    held_stderr: Option<OwnedFd>,
    dumped: bool,
}

impl Proc {
    // ----- failure reporting -------------------------------------------

    /// Panics with `msg` and everything known about the run.
    #[track_caller]
    pub fn fail(&mut self, msg: impl AsRef<str>) -> ! {
        self.dumped = true;
        let dump = self.dump();
        panic!("{}\n{dump}", msg.as_ref());
    }

    /// `assert!` that dumps the run on failure.
    #[track_caller]
    pub fn check(&mut self, cond: bool, msg: impl AsRef<str>) {
        if !cond {
            self.fail(msg);
        }
    }

    fn dump(&mut self) -> String {
        self.pump_lines();
        let mut s = String::new();
        let _ = writeln!(s, "=== command ({:?}): {}", self.mode, self.cmdline);
        let _ = writeln!(s, "=== spawned pid {}, lastcall pid {:?}", self.pid, self.lastcall.as_ref().map(|l| l.0));
        match &self.exit {
            Some((st, at)) => {
                let _ = writeln!(s, "=== exit: {st:?} at +{}", secs(at - self.started));
            }
            None => {
                let _ = writeln!(s, "=== exit: still running (or not yet observed)");
                let _ = writeln!(s, "=== process tree:\n{}", format_tree(&process_tree(self.pid)));
            }
        }
        let _ = writeln!(s, "=== stdout ({} lines, consumed {}):", self.seen.len(), self.cursor);
        for l in &self.seen {
            let _ = writeln!(s, "  +{} | {}", secs(l.at.saturating_sub(self.started)), l.text);
        }
        if let Some(at) = self.eof {
            let _ = writeln!(s, "  +{} | <EOF>", secs(at - self.started));
        }
        let _ = writeln!(s, "=== stderr:\n{}=== end", self.stderr_snapshot());
        s
    }

    // ----- stdout ------------------------------------------------------

    /// Moves every line already read into `seen`, without blocking.
    fn pump_lines(&mut self) {
        while self.eof.is_none() {
            match self.lines.try_recv() {
                Ok(Some(line)) => self.seen.push(line),
                Ok(None) => self.eof = Some(mono_ns()),
                Err(_) => break,
            }
        }
    }

    /// Waits (up to `limit`) for one more line; false on EOF or timeout.
    fn recv_line(&mut self, deadline: u64) -> bool {
        if self.eof.is_some() {
            return false;
        }
        let left = deadline.saturating_sub(mono_ns());
        match self.lines.recv_timeout(Duration::from_nanos(left)) {
            Ok(Some(line)) => {
                self.seen.push(line);
                true
            }
            Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                self.eof = Some(mono_ns());
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
        }
    }

    /// Waits for the next not-yet-consumed line for which `pred` holds,
    /// consuming it and every line before it. Fails on EOF or after `limit`.
    #[track_caller]
    pub fn expect_where(&mut self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> Line {
        let deadline = mono_ns() + limit.as_nanos() as u64;
        loop {
            if let Some(i) = (self.cursor..self.seen.len()).find(|&i| pred(&self.seen[i].text)) {
                self.cursor = i + 1;
                return self.seen[i].clone();
            }
            self.cursor = self.seen.len();
            if !self.recv_line(deadline) {
                let why = if self.eof.is_some() { "stdout reached EOF" } else { "timed out" };
                self.fail(format!("waiting for a stdout line {what}: {why} after {limit:?}"));
            }
        }
    }

    /// Waits for the next line containing `needle` (lines before it are
    /// skipped but kept for `lines()` and the dump).
    #[track_caller]
    pub fn expect_line(&mut self, needle: &str) -> Line {
        self.expect_line_within(needle, GUARD)
    }

    #[track_caller]
    pub fn expect_line_within(&mut self, needle: &str, limit: Duration) -> Line {
        self.expect_where(&format!("containing {needle:?}"), limit, |t| t.contains(needle))
    }

    /// Waits for the next line that starts with `prefix`.
    #[track_caller]
    pub fn expect_prefix(&mut self, prefix: &str) -> Line {
        self.expect_where(&format!("starting with {prefix:?}"), GUARD, |t| t.starts_with(prefix))
    }

    /// testapp's `signal NAME MONO_NS` line for `sig` (not the daemon's).
    #[track_caller]
    pub fn expect_signal(&mut self, sig: c_int) -> Line {
        self.expect_prefix(&format!("signal {} ", sig_name(sig)))
    }

    /// Every line read so far (consumed or not).
    pub fn lines(&mut self) -> Vec<Line> {
        self.pump_lines();
        self.seen.clone()
    }

    /// Lines read so far that start with `prefix`.
    pub fn lines_starting(&mut self, prefix: &str) -> Vec<Line> {
        self.lines().into_iter().filter(|l| l.text.starts_with(prefix)).collect()
    }

    /// Waits until every writer of stdout is gone (lastcall, the app and
    /// anything they left behind): the cargo death-test way of proving that
    /// no process holding the pipe survives. Returns when EOF was seen.
    #[track_caller]
    pub fn expect_eof(&mut self, limit: Duration) -> u64 {
        let deadline = mono_ns() + limit.as_nanos() as u64;
        while self.eof.is_none() {
            if !self.recv_line(deadline) && self.eof.is_none() {
                self.fail(format!("stdout not closed after {limit:?}: some process still holds it"));
            }
        }
        self.eof.unwrap()
    }

    // ----- stderr ------------------------------------------------------

    pub fn stderr_snapshot(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// All of stderr: waits (bounded) until every writer closed it.
    #[track_caller]
    pub fn stderr(&mut self) -> String {
        if !self.stderr_eof {
            match self.stderr_done.recv_timeout(GUARD) {
                Ok(()) | Err(RecvTimeoutError::Disconnected) => self.stderr_eof = true,
                Err(RecvTimeoutError::Timeout) => self.fail("stderr not closed: some process still holds it"),
            }
        }
        self.stderr_snapshot()
    }

    /// The stderr line containing `needle`, once lastcall has logged it.
    /// stderr is not read as lines (only stdout is), so it is polled every
    /// 10 ms, bounded by GUARD.
    #[track_caller]
    pub fn wait_stderr(&mut self, needle: &str) -> String {
        let deadline = mono_ns() + GUARD.as_nanos() as u64;
        loop {
            if let Some(line) = self.stderr_snapshot().lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            if mono_ns() > deadline {
                self.fail(format!("stderr never showed {needle:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    // ----- processes and signals --------------------------------------

    /// lastcall's pid in the test's PID namespace.
    ///
    /// Subreaper: the process we spawned. Pid1: we spawned `unshare`, whose
    /// forked child exec'd lastcall and is PID 1 of the new namespace; signals
    /// must go to that process, not to unshare (which would not forward
    /// them). It is found as the only child of unshare and confirmed by its
    /// NSpid (`... 1`) in /proc/PID/status. This is only asked after an event
    /// that proves lastcall already runs (a line from the app it spawned), so
    /// there is no window in which unshare has not forked yet. A pidfd is
    /// kept so later signals can never hit a recycled pid.
    #[track_caller]
    pub fn lastcall_pid(&mut self) -> i32 {
        match self.try_lastcall_pid() {
            Some(pid) => pid,
            None => {
                let kids = children_of(self.pid);
                self.fail(format!(
                    "cannot find lastcall as PID 1 under unshare {} (children {kids:?}); \
                     ask only after lastcall has run the app, and before it exits",
                    self.pid
                ))
            }
        }
    }

    /// `lastcall_pid`, or None when it cannot be found (not forked yet, or
    /// already gone: in Pid1 mode lastcall can exit before the test asks).
    pub fn try_lastcall_pid(&mut self) -> Option<i32> {
        if let Some((pid, _)) = &self.lastcall {
            return Some(*pid);
        }
        let found: Vec<i32> = children_of(self.pid)
            .into_iter()
            .filter(|&k| status_field(k, "NSpid").is_some_and(|ns| ns.split_whitespace().last() == Some("1")))
            .collect();
        if found.len() != 1 {
            return None;
        }
        let fd = pidfd_open(found[0]).ok()?;
        self.lastcall = Some((found[0], fd));
        Some(found[0])
    }

    /// Sends `sig` to lastcall itself; returns the CLOCK_MONOTONIC time just
    /// before sending (lastcall receives it no earlier than that).
    #[track_caller]
    pub fn signal(&mut self, sig: c_int) -> u64 {
        self.lastcall_pid();
        let at = mono_ns();
        let res = pidfd_kill(&self.lastcall.as_ref().unwrap().1, sig);
        if let Err(e) = res {
            self.fail(format!("sending {} to lastcall: {e}", sig_name(sig)));
        }
        at
    }

    /// Translates a pid printed by a process of this run (its own namespace's
    /// view) into the test's view. In Pid1 mode the match is by the last
    /// NSpid field among lastcall's descendants.
    #[track_caller]
    pub fn host_pid(&mut self, pid: i32) -> i32 {
        match self.try_host_pid(pid) {
            Some(host) => host,
            None => self.fail(format!("no process with namespace pid {pid} under lastcall")),
        }
    }

    /// `host_pid`, or None when the process (or the namespace) is gone.
    pub fn try_host_pid(&mut self, pid: i32) -> Option<i32> {
        if self.mode == Mode::Subreaper {
            return Some(pid);
        }
        let root = self.try_lastcall_pid()?;
        let want = pid.to_string();
        process_tree(root)
            .into_iter()
            .find(|e| status_field(e.pid, "NSpid").is_some_and(|ns| ns.split_whitespace().last() == Some(want.as_str())))
            .map(|e| e.pid)
    }

    /// Registers a process (test's pid view) for Drop to kill as well.
    pub fn adopt(&mut self, host_pid: i32) {
        if let Ok(fd) = pidfd_open(host_pid) {
            self.adopted.push(fd);
        }
    }

    /// Sends `sig` straight to one process (test's pid view), bypassing
    /// lastcall; returns the time just before sending.
    #[track_caller]
    pub fn kill_direct(&mut self, host_pid: i32, sig: c_int) -> u64 {
        let at = mono_ns();
        // SAFETY: kill has no memory-safety preconditions.
        if unsafe { libc::kill(host_pid, sig) } != 0 {
            let e = std::io::Error::last_os_error();
            self.fail(format!("kill({host_pid}, {}): {e}", sig_name(sig)));
        }
        at
    }

    /// lastcall and all its descendants. In Pid1 mode this is exactly the
    /// PID namespace: every process in it descends from its PID 1 (orphans
    /// are reparented to it), and nothing here setns'es into it.
    pub fn tree(&mut self) -> Vec<ProcEntry> {
        let root = self.lastcall_pid();
        process_tree(root)
    }

    /// Waits until lastcall's tree holds exactly `expected` processes and no
    /// zombie. The kernel sends no event when another process reaps its
    /// child, so /proc is the event source here and is polled every 10 ms,
    /// bounded by `limit`.
    #[track_caller]
    pub fn wait_tree_settles(&mut self, expected: usize, limit: Duration) -> Vec<ProcEntry> {
        let deadline = mono_ns() + limit.as_nanos() as u64;
        loop {
            let tree = self.tree();
            let zombies = tree.iter().filter(|e| e.state == 'Z').count();
            if zombies == 0 && tree.len() == expected {
                return tree;
            }
            if mono_ns() > deadline {
                let head: Vec<ProcEntry> = tree.iter().take(40).cloned().collect();
                self.fail(format!(
                    "after {limit:?}: {} processes under lastcall ({zombies} zombies), want {expected} and none; first ones:\n{}",
                    tree.len(),
                    format_tree(&head)
                ));
            }
            // Polling /proc (see above): the only sleep the harness has.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    // ----- exit --------------------------------------------------------

    /// Waits (up to GUARD) for lastcall to exit.
    #[track_caller]
    pub fn wait(&mut self) -> ExitStatus {
        self.wait_within(GUARD)
    }

    #[track_caller]
    pub fn wait_within(&mut self, limit: Duration) -> ExitStatus {
        if let Some((st, _)) = self.exit {
            return st;
        }
        match self.exit_rx.recv_timeout(limit) {
            Ok(Ok(exit)) => {
                self.exit = Some(exit);
                exit.0
            }
            Ok(Err(e)) => self.fail(format!("waitpid failed: {e}")),
            Err(_) => self.fail(format!("lastcall did not exit within {limit:?}")),
        }
    }

    /// When the exit was observed (CLOCK_MONOTONIC), after `wait`.
    pub fn exited_at(&self) -> u64 {
        self.exit.expect("exited_at before wait").1
    }

    /// Non-blocking: has lastcall exited already?
    pub fn has_exited(&mut self) -> bool {
        if self.exit.is_none() {
            if let Ok(Ok(exit)) = self.exit_rx.try_recv() {
                self.exit = Some(exit);
            }
        }
        self.exit.is_some()
    }

    /// Waits for the exit and checks the exit code; returns the exit time.
    #[track_caller]
    pub fn expect_exit_code(&mut self, code: i32) -> u64 {
        let st = self.wait();
        if st.code() != Some(code) {
            self.fail(format!("expected exit code {code}, got {st:?} (signal {:?})", st.signal()));
        }
        self.exited_at()
    }

    // ----- teardown ----------------------------------------------------

    fn kill_everything(&mut self) {
        if !self.has_exited() {
            match self.mode {
                Mode::Pid1 => {
                    // SIGKILL to PID 1 takes the whole namespace with it, and
                    // unshare then reaps it and exits. SIGKILL to unshare
                    // does the same through --kill-child but leaves lastcall's
                    // zombie to the system's init: only the fallback.
                    let _ = self.try_lastcall_pid();
                    let killed = match &self.lastcall {
                        Some((_, fd)) => pidfd_kill(fd, libc::SIGKILL).is_ok(),
                        None => false,
                    };
                    let reaped = killed && self.wait_exit(Duration::from_secs(5));
                    if !reaped {
                        let _ = pidfd_kill(&self.pidfd, libc::SIGKILL);
                    }
                }
                Mode::Subreaper => {
                    // Stop lastcall first: a stopped process cannot reap, so
                    // the pids of its (zombie or live) children stay valid
                    // while we walk and kill the tree; stopping each level
                    // keeps it from forking more. Then SIGKILL everything.
                    let _ = pidfd_kill(&self.pidfd, libc::SIGSTOP);
                    let mut stopped: HashSet<i32> = HashSet::new();
                    loop {
                        let tree = process_tree(self.pid);
                        let fresh: Vec<i32> = tree.iter().map(|e| e.pid).filter(|p| !stopped.contains(p)).collect();
                        if fresh.is_empty() {
                            break;
                        }
                        for p in fresh {
                            // SAFETY: kill has no memory-safety preconditions.
                            unsafe { libc::kill(p, libc::SIGSTOP) };
                            stopped.insert(p);
                        }
                    }
                    for &p in &stopped {
                        if p != self.pid {
                            // SAFETY: as above; p cannot have been recycled
                            // (its parent is stopped and cannot reap it).
                            unsafe { libc::kill(p, libc::SIGKILL) };
                        }
                    }
                    // Let lastcall reap what we killed before it dies too;
                    // otherwise the zombies go to the system's init, which
                    // in some sandboxes never reaps. Reaping sends us no
                    // event, so /proc is polled (10 ms, bounded at 2 s).
                    let _ = pidfd_kill(&self.pidfd, libc::SIGCONT);
                    let until = mono_ns() + 2 * SEC;
                    while !children_of(self.pid).is_empty() && mono_ns() < until {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let _ = pidfd_kill(&self.pidfd, libc::SIGKILL);
                }
            }
        }
        for fd in &self.adopted {
            let _ = pidfd_kill(fd, libc::SIGKILL);
        }
        self.wait_exit(GUARD);
    }

    /// Waits up to `limit` for the spawned process to be reaped; true if it was.
    fn wait_exit(&mut self, limit: Duration) -> bool {
        if self.exit.is_none() {
            if let Ok(Ok(exit)) = self.exit_rx.recv_timeout(limit) {
                self.exit = Some(exit);
            }
        }
        self.exit.is_some()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_everything();
        if std::thread::panicking() && !self.dumped {
            // Give the reader threads a moment to collect what the killed
            // processes wrote, bounded (an escaped writer must not hang us).
            let _ = self.stderr_done.recv_timeout(Duration::from_secs(2));
            let deadline = mono_ns() + 2 * SEC;
            while self.recv_line(deadline) {}
            eprintln!("{}", self.dump());
        }
    }
}
#[cfg(feature = "k8s")]
pub mod apiserver;

/// Generates (in the test file that uses it) `mod $name { fn pid1(); fn subreaper(); }` from one body.
#[allow(unused_macros)] // not every test file runs in both modes
macro_rules! both_modes {
    ($(#[doc = $doc:expr])* fn $name:ident($mode:ident) $body:block) => {
        $(#[doc = $doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn body($mode: Mode) $body
            #[test]
            fn pid1() {
                body(Mode::Pid1)
            }
            #[test]
            fn subreaper() {
                body(Mode::Subreaper)
            }
        }
    };
}
#[cfg(feature = "traffic")]
pub mod netns;
#[cfg(feature = "sidecar")]
pub mod sidecar;
pub mod under_test;
