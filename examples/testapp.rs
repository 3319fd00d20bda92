//! testapp: the fixture that plays "the app" in lastcall's tests, docker images
//! and benchmarks. The contract is docs/testapp.md; keep the two in step.
//!
//! Every line goes to stdout with a single write(2) (so lines from several
//! processes sharing the pipe never interleave) and is therefore flushed at
//! once. Timestamps are CLOCK_MONOTONIC nanoseconds, comparable with the test
//! process's own clock.
//!
//! Signals are caught by a handler that only writes the signal number and a
//! timestamp into a self-pipe (write(2) and clock_gettime(2) are
//! async-signal-safe, signal-safety(7)); the main thread reads the pipe and
//! prints. No other thread exists in the modes that fork, so fork(2) is safe.
//!
//! `#![no_main]`: the Rust runtime's start-up sets SIGPIPE to SIG_IGN before
//! `main` (rust-lang/rust#62569). The `status` subcommand must report the
//! dispositions the process inherited, and an ignored SIGPIPE would also be
//! inherited by anything we exec, so we take over the C `main` symbol and keep
//! every disposition as the parent left it. `std::env::args` still works on
//! glibc (std captures argv from `.init_array`).

#![no_main]

use std::collections::HashMap;
use std::ffi::{c_char, c_int};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

const USAGE: &str = "usage: testapp signals [--ignore SIG,...] [--exit-on SIG,...|none] [--exit-code N] [--become-root]
       testapp status [--wait]
       testapp exit N
       testapp kill SIG
       testapp orphans N [--wait]
       testapp daemon [--ignore-term] [--exit-code N]
       testapp http --listen ADDR [--mode graceful|naive] [--delay-ms MS]
       testapp sleep
       testapp deny-syscall NR -- CMD [ARGS...]";

/// Entry point called by the C runtime (see the module doc for why not `fn main`).
#[no_mangle]
pub extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(msg) => {
            // stderr, so that it never mixes with the lines tests parse.
            eprintln!("testapp: {msg}\n{USAGE}");
            2
        }
    }
}

fn run(args: &[String]) -> Result<c_int, String> {
    let (cmd, rest) = args.split_first().ok_or("missing subcommand")?;
    match cmd.as_str() {
        "signals" => cmd_signals(rest),
        "status" => cmd_status(rest),
        "exit" => match rest {
            [n] => Ok(parse_num(n)?),
            _ => Err("exit takes one argument".into()),
        },
        "kill" => match rest {
            [sig] => cmd_kill(parse_signal(sig)?),
            _ => Err("kill takes one argument".into()),
        },
        "orphans" => cmd_orphans(rest),
        "daemon" => cmd_daemon(rest),
        "http" => cmd_http(rest),
        "sleep" => cmd_sleep(rest),
        "deny-syscall" => cmd_deny_syscall(rest),
        other => Err(format!("unknown subcommand {other:?}")),
    }
}

// ---------------------------------------------------------------------------
// Output, time, process ids
// ---------------------------------------------------------------------------

/// Prints one line with a single write(2); errors (EPIPE once the reader has
/// gone) are ignored: the fixture must never die of its own output.
fn say(line: &str) {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    let mut off = 0;
    while off < buf.len() {
        // SAFETY: the pointer and length describe the live buffer `buf[off..]`.
        let n = unsafe { libc::write(1, buf[off..].as_ptr().cast(), buf.len() - off) };
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return;
        }
        off += n as usize;
    }
}

fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// CLOCK_MONOTONIC in nanoseconds. Async-signal-safe (clock_gettime is in
/// signal-safety(7)), so the signal handler uses it too.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn ids() -> (i32, i32, i32) {
    // SAFETY: getpid/getpgrp/getsid(0) have no preconditions and cannot fail for the caller.
    unsafe { (libc::getpid(), libc::getpgrp(), libc::getsid(0)) }
}

fn ready_line() -> String {
    let (pid, pgid, sid) = ids();
    format!("ready pid={pid} pgid={pgid} sid={sid}")
}

fn parse_num(s: &str) -> Result<c_int, String> {
    s.parse().map_err(|_| format!("not a number: {s:?}"))
}

// ---------------------------------------------------------------------------
// Signal names
// ---------------------------------------------------------------------------

const NAMES: [(c_int, &str); 31] = [
    (libc::SIGHUP, "HUP"),
    (libc::SIGINT, "INT"),
    (libc::SIGQUIT, "QUIT"),
    (libc::SIGILL, "ILL"),
    (libc::SIGTRAP, "TRAP"),
    (libc::SIGABRT, "ABRT"),
    (libc::SIGBUS, "BUS"),
    (libc::SIGFPE, "FPE"),
    (libc::SIGKILL, "KILL"),
    (libc::SIGUSR1, "USR1"),
    (libc::SIGSEGV, "SEGV"),
    (libc::SIGUSR2, "USR2"),
    (libc::SIGPIPE, "PIPE"),
    (libc::SIGALRM, "ALRM"),
    (libc::SIGTERM, "TERM"),
    (libc::SIGSTKFLT, "STKFLT"),
    (libc::SIGCHLD, "CHLD"),
    (libc::SIGCONT, "CONT"),
    (libc::SIGSTOP, "STOP"),
    (libc::SIGTSTP, "TSTP"),
    (libc::SIGTTIN, "TTIN"),
    (libc::SIGTTOU, "TTOU"),
    (libc::SIGURG, "URG"),
    (libc::SIGXCPU, "XCPU"),
    (libc::SIGXFSZ, "XFSZ"),
    (libc::SIGVTALRM, "VTALRM"),
    (libc::SIGPROF, "PROF"),
    (libc::SIGWINCH, "WINCH"),
    (libc::SIGIO, "IO"),
    (libc::SIGPWR, "PWR"),
    (libc::SIGSYS, "SYS"),
];

/// `TERM`, `USR1`, `RTMIN`, `RTMIN+3`; a number for anything else.
fn signal_name(sig: c_int) -> String {
    if let Some((_, name)) = NAMES.iter().find(|(n, _)| *n == sig) {
        return (*name).to_string();
    }
    let rtmin = libc::SIGRTMIN();
    match sig - rtmin {
        0 => "RTMIN".to_string(),
        d if d > 0 && sig <= libc::SIGRTMAX() => format!("RTMIN+{d}"),
        _ => sig.to_string(),
    }
}

/// Accepts `9`, `KILL`, `SIGKILL`, `kill`, `RTMIN+2`.
fn parse_signal(s: &str) -> Result<c_int, String> {
    if let Ok(n) = s.parse::<c_int>() {
        return Ok(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some((n, _)) = NAMES.iter().find(|(_, nm)| *nm == name) {
        return Ok(*n);
    }
    if name == "POLL" {
        return Ok(libc::SIGIO);
    }
    if name == "RTMIN" {
        return Ok(libc::SIGRTMIN());
    }
    if name == "RTMAX" {
        return Ok(libc::SIGRTMAX());
    }
    if let Some(d) = name.strip_prefix("RTMIN+").and_then(|d| d.parse::<c_int>().ok()) {
        return Ok(libc::SIGRTMIN() + d);
    }
    Err(format!("unknown signal {s:?}"))
}

fn parse_signal_list(s: &str) -> Result<Vec<c_int>, String> {
    if s.eq_ignore_ascii_case("none") || s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',').map(parse_signal).collect()
}

/// Every signal a process can catch: 1..=31 without KILL and STOP, then the
/// real-time signals glibc leaves to applications (SIGRTMIN..=SIGRTMAX).
fn catchable_signals() -> Vec<c_int> {
    (1..=31).filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP).chain(libc::SIGRTMIN()..=libc::SIGRTMAX()).collect()
}

// ---------------------------------------------------------------------------
// Self-pipe signal delivery
// ---------------------------------------------------------------------------

/// Write end of the self-pipe; -1 until a `SignalPipe` exists.
static PIPE_WR: AtomicI32 = AtomicI32::new(-1);

/// One record per delivered signal: signal number (4 bytes) + CLOCK_MONOTONIC
/// ns (8 bytes). 12 bytes < PIPE_BUF, so each write(2) is atomic.
const RECORD: usize = 12;

extern "C" fn on_signal(sig: c_int) {
    // Only async-signal-safe work here (signal-safety(7)): clock_gettime and
    // write. errno is saved and restored so the interrupted code never sees
    // it change.
    // SAFETY: __errno_location returns this thread's errno slot, always valid.
    let saved = unsafe { *libc::__errno_location() };
    let ts = mono_ns();
    let mut rec = [0u8; RECORD];
    rec[..4].copy_from_slice(&sig.to_ne_bytes());
    rec[4..].copy_from_slice(&ts.to_ne_bytes());
    let fd = PIPE_WR.load(Ordering::Relaxed);
    // SAFETY: `rec` is a live 12-byte buffer; a bad or full (O_NONBLOCK) fd
    // only makes write fail, which we accept (the record is dropped).
    unsafe { libc::write(fd, rec.as_ptr().cast(), RECORD) };
    // SAFETY: as above; restoring the value read on entry.
    unsafe { *libc::__errno_location() = saved };
}

struct SignalPipe {
    rd: c_int,
}

impl SignalPipe {
    /// Catches every signal in `catch` (printing happens in `next`) and sets
    /// SIG_IGN for every signal in `ignore`. Dispositions only: the signal
    /// mask is left as inherited (the `status` test checks what lastcall hands
    /// over, and this fixture must not paper over it).
    fn install(catch: &[c_int], ignore: &[c_int]) -> SignalPipe {
        let mut fds = [0 as c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            panic!("pipe2: {}", std::io::Error::last_os_error());
        }
        // The write end is non-blocking so a handler can never block; the
        // read end blocks so the main thread sleeps until a signal arrives.
        // SAFETY: fds[1] is the pipe's write end we just created.
        unsafe { libc::fcntl(fds[1], libc::F_SETFL, libc::O_NONBLOCK) };
        PIPE_WR.store(fds[1], Ordering::SeqCst);
        for &sig in catch {
            if ignore.contains(&sig) {
                continue;
            }
            set_disposition(sig, on_signal as extern "C" fn(c_int) as libc::sighandler_t);
        }
        for &sig in ignore {
            set_disposition(sig, libc::SIG_IGN);
        }
        SignalPipe { rd: fds[0] }
    }

    /// Blocks until the next caught signal; returns its number and the
    /// CLOCK_MONOTONIC time at which the handler ran.
    fn next(&self) -> (c_int, u64) {
        let mut rec = [0u8; RECORD];
        let mut off = 0;
        while off < RECORD {
            // SAFETY: reads into the live remainder of `rec`.
            let n = unsafe { libc::read(self.rd, rec[off..].as_mut_ptr().cast(), RECORD - off) };
            if n < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                panic!("read signal pipe: {}", std::io::Error::last_os_error());
            }
            if n == 0 {
                panic!("signal pipe closed");
            }
            off += n as usize;
        }
        let sig = c_int::from_ne_bytes(rec[..4].try_into().unwrap());
        let ts = u64::from_ne_bytes(rec[4..].try_into().unwrap());
        (sig, ts)
    }
}

fn set_disposition(sig: c_int, handler: libc::sighandler_t) {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler;
    sa.sa_flags = libc::SA_RESTART;
    // Block every signal while the handler runs. Otherwise the kernel stacks
    // one handler frame per pending signal before returning to user space and
    // the last one dequeued runs (and writes its record) first: the printed
    // order would be the reverse of the delivery order.
    // SAFETY: `sa.sa_mask` is a valid sigset_t to initialise.
    unsafe { libc::sigfillset(&mut sa.sa_mask) };
    // SAFETY: `sa` is fully initialised; the handler (if any) is
    // async-signal-safe; a null old-action pointer is allowed.
    if unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) } != 0 {
        panic!("sigaction({sig}): {}", std::io::Error::last_os_error());
    }
}

/// Blocks SIGTERM and waits for it with sigwait(3). Blocking first means a
/// TERM that arrives between the caller's `ready` line and this call is kept
/// pending rather than lost, and it works whatever the inherited disposition.
fn wait_for_term() {
    // SAFETY: a zeroed sigset_t is immediately initialised by sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; SIGTERM is a valid signal.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
    }
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    let mut sig: c_int = 0;
    // SAFETY: `set` and `sig` are valid for sigwait to read and write.
    while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
}

// ---------------------------------------------------------------------------
// Subcommands
// ---------------------------------------------------------------------------

/// Splits `--flag value` / `--flag=value` / `--switch` options.
struct Opts<'a> {
    args: std::slice::Iter<'a, String>,
}

impl<'a> Opts<'a> {
    fn new(args: &'a [String]) -> Self {
        Opts { args: args.iter() }
    }

    /// Next (flag, inline value) pair, or None at the end.
    fn next(&mut self) -> Option<(&'a str, Option<&'a str>)> {
        let arg = self.args.next()?;
        Some(match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value)),
            _ => (arg.as_str(), None),
        })
    }

    fn value(&mut self, flag: &str, inline: Option<&'a str>) -> Result<&'a str, String> {
        match inline {
            Some(v) => Ok(v),
            None => self.args.next().map(String::as_str).ok_or(format!("{flag} needs a value")),
        }
    }
}

fn cmd_signals(args: &[String]) -> Result<c_int, String> {
    let mut ignore = Vec::new();
    let mut exit_on = vec![libc::SIGTERM];
    let mut exit_code = 0;
    let mut become_root = false;
    let mut opts = Opts::new(args);
    while let Some((flag, inline)) = opts.next() {
        match flag {
            "--become-root" => become_root = true,
            "--ignore" => ignore = parse_signal_list(opts.value(flag, inline)?)?,
            "--exit-on" => exit_on = parse_signal_list(opts.value(flag, inline)?)?,
            "--exit-code" => exit_code = parse_num(opts.value(flag, inline)?)?,
            other => return Err(format!("signals: unknown option {other:?}")),
        }
    }
    if become_root {
        // From a set-user-ID-root copy of testapp: make every uid 0, so a
        // non-root parent may no longer signal it (kill(2) permission rules).
        // SAFETY: setresuid has no memory-safety preconditions.
        if unsafe { libc::setresuid(0, 0, 0) } != 0 {
            return Err(format!("setresuid(0): {}", std::io::Error::last_os_error()));
        }
    }
    let pipe = SignalPipe::install(&catchable_signals(), &ignore);
    say(&ready_line());
    loop {
        let (sig, ts) = pipe.next();
        say(&format!("signal {} {ts}", signal_name(sig)));
        if exit_on.contains(&sig) {
            say("exiting");
            return Ok(exit_code);
        }
    }
}

fn cmd_status(args: &[String]) -> Result<c_int, String> {
    let wait = match args {
        [] => false,
        [w] if w == "--wait" => true,
        _ => return Err("status takes only --wait".into()),
    };
    let status = std::fs::read_to_string("/proc/self/status").map_err(|e| format!("/proc/self/status: {e}"))?;
    for line in status.lines() {
        if line.starts_with("SigBlk:") || line.starts_with("SigIgn:") {
            say(line);
        }
    }
    let (_, pgid, sid) = ids();
    // SAFETY: tcgetpgrp only queries fd 0; it returns -1 when fd 0 is not a terminal.
    let tty_fg = unsafe { libc::tcgetpgrp(0) };
    say(&format!("pgid={pgid} sid={sid} tty_fg={tty_fg}"));
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    say(&format!("ppid={ppid}"));
    let cwd = |pid: &str| std::fs::read_link(format!("/proc/{pid}/cwd")).map_or_else(|e| format!("?{e}"), |p| p.display().to_string());
    say(&format!("cwd={} parent_cwd={}", cwd("self"), cwd(&ppid.to_string())));
    if wait {
        say("ready");
        wait_for_term();
    }
    Ok(0)
}

fn cmd_kill(sig: c_int) -> Result<c_int, String> {
    if sig != libc::SIGKILL && sig != libc::SIGSTOP {
        set_disposition(sig, libc::SIG_DFL);
    }
    // SAFETY: a zeroed sigset_t is immediately initialised by sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid; unblocking makes the raise take effect now even
    // if the signal was inherited blocked.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    // SAFETY: raise has no memory-safety preconditions.
    unsafe { libc::raise(sig) };
    // Still alive: the signal's default action is to ignore (CHLD, WINCH...).
    Ok(1)
}

fn cmd_orphans(args: &[String]) -> Result<c_int, String> {
    let (n, wait) = match args {
        [n] => (parse_num(n)?, false),
        [n, w] if w == "--wait" => (parse_num(n)?, true),
        _ => return Err("orphans N [--wait]".into()),
    };
    // SAFETY: single-threaded process, so the child may run any code; it only
    // calls fork and _exit.
    let intermediate = unsafe { libc::fork() };
    match intermediate {
        -1 => return Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            // Intermediate: fork N grandchildren that exit at once, then exit
            // so that they (alive or zombie) are reparented to the init.
            for _ in 0..n {
                // SAFETY: as above; the grandchild only calls _exit.
                match unsafe { libc::fork() } {
                    // SAFETY: _exit is always safe to call.
                    0 => unsafe { libc::_exit(0) },
                    // SAFETY: as above; exit 1 reports the failed fork.
                    -1 => unsafe { libc::_exit(1) },
                    _ => {}
                }
            }
            // SAFETY: as above.
            unsafe { libc::_exit(0) }
        }
        _ => {}
    }
    // Reaping the intermediate here means that, once `spawned` is printed,
    // every grandchild exists and has been (or is being) handed to the init.
    let status = wait_pid(intermediate)?;
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        say("spawn failed");
        return Ok(1);
    }
    say(&format!("spawned {n}"));
    if wait {
        say("ready");
        wait_for_term();
    }
    Ok(0)
}

fn wait_pid(pid: libc::pid_t) -> Result<c_int, String> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; `pid` is our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        if r < 0 && errno() != libc::EINTR {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
    }
}

fn cmd_daemon(args: &[String]) -> Result<c_int, String> {
    let mut ignore_term = false;
    let mut exit_code = 0;
    let mut opts = Opts::new(args);
    while let Some((flag, inline)) = opts.next() {
        match flag {
            "--ignore-term" => ignore_term = true,
            "--exit-code" => exit_code = parse_num(opts.value(flag, inline)?)?,
            other => return Err(format!("daemon: unknown option {other:?}")),
        }
    }
    // The daemon writes one byte here once its handlers are in place and its
    // pid line is out; EOF instead means it died first.
    let mut sync = [0 as c_int; 2];
    // SAFETY: `sync` has room for the two descriptors.
    if unsafe { libc::pipe2(sync.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: single-threaded process: the children may run any code.
    let intermediate = unsafe { libc::fork() };
    match intermediate {
        -1 => return Err(format!("fork: {}", std::io::Error::last_os_error())),
        0 => {
            // Intermediate: new session, fork the daemon, exit so the daemon
            // is orphaned and adopted by the init (or subreaper).
            // SAFETY: setsid and fork have no memory-safety preconditions.
            unsafe { libc::setsid() };
            // SAFETY: as above.
            match unsafe { libc::fork() } {
                0 => daemon_main(ignore_term, sync),
                // SAFETY: _exit is always safe to call.
                -1 => unsafe { libc::_exit(1) },
                // SAFETY: as above.
                _ => unsafe { libc::_exit(0) },
            }
        }
        _ => {}
    }
    // SAFETY: closing our copy of the write end, so a dead daemon gives EOF.
    unsafe { libc::close(sync[1]) };
    wait_pid(intermediate)?;
    let mut byte = [0u8; 1];
    let n = loop {
        // SAFETY: reads one byte into `byte`.
        let n = unsafe { libc::read(sync[0], byte.as_mut_ptr().cast(), 1) };
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        break n;
    };
    if n != 1 {
        return Err("daemon died before it was ready".into());
    }
    say("main exiting");
    Ok(exit_code)
}

fn daemon_main(ignore_term: bool, sync: [c_int; 2]) -> ! {
    // SAFETY: closing the read end this process does not use.
    unsafe { libc::close(sync[0]) };
    let ignore = if ignore_term { vec![libc::SIGTERM] } else { Vec::new() };
    let pipe = SignalPipe::install(&catchable_signals(), &ignore);
    // SAFETY: getpid has no preconditions.
    say(&format!("daemon pid={}", unsafe { libc::getpid() }));
    // SAFETY: writes one byte from a live buffer, then closes our write end.
    unsafe {
        libc::write(sync[1], b"x".as_ptr().cast(), 1);
        libc::close(sync[1]);
    }
    loop {
        let (sig, ts) = pipe.next();
        say(&format!("daemon signal {} {ts}", signal_name(sig)));
        if sig == libc::SIGTERM {
            // SAFETY: _exit is always safe to call; nothing is buffered (say
            // writes straight to fd 1).
            unsafe { libc::_exit(0) };
        }
    }
}

fn cmd_sleep(args: &[String]) -> Result<c_int, String> {
    if !args.is_empty() {
        return Err("sleep takes no arguments".into());
    }
    say("ready");
    loop {
        // SAFETY: pause has no preconditions; it returns only after a caught
        // signal, and this mode catches none (default dispositions).
        unsafe { libc::pause() };
    }
}

// ---------------------------------------------------------------------------
// http
// ---------------------------------------------------------------------------

struct Server {
    conns: Mutex<Conns>,
    /// Signalled whenever a connection goes away.
    gone: Condvar,
    shutting_down: AtomicBool,
    delay: Duration,
    pid: u32,
}

#[derive(Default)]
struct Conns {
    next_id: u64,
    /// Open connections: a clone of the socket (to close it when idle) and
    /// whether a request is in flight on it.
    open: HashMap<u64, (TcpStream, bool)>,
}

fn cmd_http(args: &[String]) -> Result<c_int, String> {
    let mut listen = None;
    let mut graceful = true;
    let mut delay_ms = 0u64;
    let mut busy = 0u32;
    let mut opts = Opts::new(args);
    while let Some((flag, inline)) = opts.next() {
        match flag {
            "--listen" => listen = Some(opts.value(flag, inline)?.to_string()),
            "--mode" => {
                graceful = match opts.value(flag, inline)? {
                    "graceful" => true,
                    "naive" => false,
                    other => return Err(format!("unknown mode {other:?}")),
                }
            }
            "--delay-ms" => {
                let v = opts.value(flag, inline)?;
                delay_ms = v.parse().map_err(|_| format!("not a number: {v:?}"))?;
            }
            "--busy" => {
                let v = opts.value(flag, inline)?;
                busy = v.parse().map_err(|_| format!("not a number: {v:?}"))?;
            }
            other => return Err(format!("http: unknown option {other:?}")),
        }
    }
    let listen = listen.ok_or("http needs --listen ADDR")?;
    let listener = TcpListener::bind(&listen).map_err(|e| format!("bind {listen}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let pipe = SignalPipe::install(&[libc::SIGTERM], &[]);
    let server = Arc::new(Server {
        conns: Mutex::new(Conns::default()),
        gone: Condvar::new(),
        shutting_down: AtomicBool::new(false),
        delay: Duration::from_millis(delay_ms),
        pid: std::process::id(),
    });
    // An app that uses all the CPU it gets (for benchmarks that put the pod
    // in a CPU-limited cgroup): threads that never sleep.
    for _ in 0..busy {
        std::thread::spawn(|| {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        });
    }
    say(&format!("ready pid={} addr={addr}", server.pid));

    loop {
        let mut fds = [
            libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: pipe.rd, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: `fds` is a live array of two pollfd structs.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return Err(format!("poll: {}", std::io::Error::last_os_error()));
        }
        if fds[1].revents != 0 {
            let (sig, at) = pipe.next();
            if sig == libc::SIGTERM {
                // When the stop signal arrived, for tests that time a drain.
                say(&format!("signal TERM {at}"));
                break;
            }
        }
        if fds[0].revents != 0 {
            accept_all(&listener, &server);
        }
    }

    if !graceful {
        say("exiting");
        return Ok(0);
    }
    // Graceful: stop accepting, close idle keep-alive connections, let
    // in-flight requests finish (their responses carry `Connection: close`).
    drop(listener);
    let mut conns = server.conns.lock().unwrap();
    server.shutting_down.store(true, Ordering::SeqCst);
    for (stream, busy) in conns.open.values() {
        if !*busy {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
    while !conns.open.is_empty() {
        conns = server.gone.wait(conns).unwrap();
    }
    say("exiting");
    Ok(0)
}

fn accept_all(listener: &TcpListener, server: &Arc<Server>) {
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(_) => return,
        };
        let _ = stream.set_nonblocking(false);
        let Ok(clone) = stream.try_clone() else { continue };
        let id = {
            let mut conns = server.conns.lock().unwrap();
            conns.next_id += 1;
            let id = conns.next_id;
            conns.open.insert(id, (clone, false));
            id
        };
        let server = Arc::clone(server);
        std::thread::spawn(move || {
            serve_conn(&server, id, stream);
            server.conns.lock().unwrap().open.remove(&id);
            server.gone.notify_all();
        });
    }
}

/// Marks the connection busy or idle. Returns false when it went idle during
/// a graceful shutdown, i.e. the connection must close now.
fn set_busy(server: &Server, id: u64, busy: bool) -> bool {
    let mut conns = server.conns.lock().unwrap();
    if let Some(entry) = conns.open.get_mut(&id) {
        entry.1 = busy;
    }
    busy || !server.shutting_down.load(Ordering::SeqCst)
}

fn serve_conn(server: &Server, id: u64, mut stream: TcpStream) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // Answer every complete request already buffered (pipelining).
        loop {
            let parsed = {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&buf) {
                    Ok(httparse::Status::Complete(head_len)) => {
                        let header = |name: &str| {
                            req.headers
                                .iter()
                                .find(|h| h.name.eq_ignore_ascii_case(name))
                                .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
                        };
                        let body_len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                        let conn = header("connection");
                        let keep_alive = match req.version {
                            Some(1) => conn.as_deref() != Some("close"),
                            _ => conn.as_deref() == Some("keep-alive"),
                        };
                        let ok = req.method == Some("GET") && req.path == Some("/");
                        Some(Ok((head_len + body_len, keep_alive, ok)))
                    }
                    Ok(httparse::Status::Partial) => None,
                    Err(_) => Some(Err(())),
                }
            };
            let (len, keep_alive, ok) = match parsed {
                None => break,
                Some(Err(())) => {
                    let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    return;
                }
                Some(Ok(v)) => v,
            };
            if buf.len() < len {
                break; // the body is not all here yet
            }
            buf.drain(..len);
            if !server.delay.is_zero() {
                // The app's simulated work time, not synchronisation.
                std::thread::sleep(server.delay);
            }
            let close = !keep_alive || server.shutting_down.load(Ordering::SeqCst);
            let (status, body) = if ok { ("200 OK", format!("ok {}\n", server.pid)) } else { ("404 Not Found", "not found\n".to_string()) };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
                body.len(),
                if close { "Connection: close\r\n" } else { "" },
            );
            if stream.write_all(response.as_bytes()).is_err() || close {
                let _ = stream.shutdown(Shutdown::Write);
                return;
            }
            if buf.is_empty() && !set_busy(server, id, false) {
                return;
            }
        }
        let n = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        set_busy(server, id, true);
    }
}

// ---------------------------------------------------------------------------
// deny-syscall
// ---------------------------------------------------------------------------

/// `deny-syscall NR -- CMD...`: exec CMD under a seccomp filter that fails
/// system call NR with EPERM, as a container runtime's profile does (Docker's
/// and containerd's default profiles answer EPERM for pidfd_getfd without
/// CAP_SYS_PTRACE). The filter is inherited by everything CMD starts.
/// The filter checks the number only (the test machines are x86_64).
fn cmd_deny_syscall(args: &[String]) -> Result<c_int, String> {
    let (nr, cmd) = match args {
        [nr, dash, cmd @ ..] if dash == "--" && !cmd.is_empty() => (nr.parse::<u32>().map_err(|_| format!("not a number: {nr:?}"))?, cmd),
        _ => return Err("deny-syscall takes NR -- CMD [ARGS...]".into()),
    };
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let filter = [
        // A = seccomp_data.nr (offset 0)
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        // if A == nr: fall through to the EPERM return, else skip it
        libc::sock_filter { code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16, jt: 0, jf: 1, k: nr },
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr() as *mut libc::sock_filter };
    // SAFETY: prctl with integer arguments; no_new_privs lets an unprivileged process install a filter.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!("PR_SET_NO_NEW_PRIVS: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `prog` points to `filter`, both alive for the call; the kernel copies the program.
    if unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog) } != 0 {
        return Err(format!("PR_SET_SECCOMP: {}", std::io::Error::last_os_error()));
    }
    use std::os::unix::process::CommandExt;
    let e = std::process::Command::new(&cmd[0]).args(&cmd[1..]).exec();
    Err(format!("exec {}: {e}", cmd[0]))
}
