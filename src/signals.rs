//! Signal policy as data: which signals lastcall forwards, which it keeps,
//! how a signal is named, and how a rewrite table applies.
//!
//! The policy is a few constant tables and pure functions of signal
//! numbers, not code spread over the places that install handlers: config
//! validation (which signals a rewrite or `--stop-signal` may name), the
//! supervisor (which signals it catches and ignores) and the error messages
//! read the same sets, and unit tests check them without sending a signal. A signal
//! is a plain number ([`Signal`]), because the real-time signals that apps
//! use for their own protocols have no name in `nix::Signal`.
//!
//! Like tini, lastcall forwards every catchable signal except SIGCHLD and the
//! synchronous fault signals (a SIGSEGV sent with kill(2) to an init is a
//! mistake, not a request for the app). SIGTTIN/SIGTTOU are ignored so a
//! lastcall in a background process group is never stopped by the terminal.

use std::fmt;
use std::str::FromStr;

use nix::sys::signal::Signal as NixSignal;

/// A signal number, including real-time signals (which `nix::Signal` lacks).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signal(pub i32);

#[cfg(test)]
pub const SIGTERM: Signal = Signal(libc::SIGTERM);
pub const SIGKILL: Signal = Signal(libc::SIGKILL);
pub const SIGCHLD: Signal = Signal(libc::SIGCHLD);

/// Signals lastcall never installs a handler for: uncatchable ones, and the
/// synchronous faults, which describe lastcall's own state if they occur.
const NOT_FORWARDED: &[i32] = &[
    libc::SIGKILL,
    libc::SIGSTOP,
    libc::SIGCHLD,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGABRT,
    libc::SIGTRAP,
    libc::SIGSYS,
    libc::SIGTTIN,
    libc::SIGTTOU,
];

/// Why a signal is not in the forwarded set, for error messages.
pub const NOT_CAUGHT: &str = "KILL and STOP cannot be caught, CHLD is lastcall's own, TTIN and TTOU are ignored, \
and the fault signals (SEGV, BUS, FPE, ILL, ABRT, TRAP, SYS) describe lastcall itself";

/// Whether lastcall catches `sig` and so can forward, rewrite or stop on it.
pub fn is_forwarded(sig: Signal) -> bool {
    forwarded().any(|s| s == sig.0)
}

/// Signals lastcall ignores for itself (see the module doc).
pub const IGNORED: &[i32] = &[libc::SIGTTIN, libc::SIGTTOU];

/// Every signal lastcall catches and forwards (1..=31 less NOT_FORWARDED,
/// and the real-time range glibc leaves to applications).
pub fn forwarded() -> impl Iterator<Item = i32> {
    (1..32).filter(|s| !NOT_FORWARDED.contains(s)).chain(libc::SIGRTMIN()..=libc::SIGRTMAX())
}

impl Signal {
    pub fn name(self) -> String {
        if let Ok(s) = NixSignal::try_from(self.0) {
            return s.as_str().to_string();
        }
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        if (min..=max).contains(&self.0) {
            return format!("SIGRTMIN+{}", self.0 - min);
        }
        format!("signal {}", self.0)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl fmt::Debug for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid signal {0:?}: use a number (15), a name (TERM) or SIGTERM")]
pub struct BadSignal(pub String);

impl FromStr for Signal {
    type Err = BadSignal;

    /// Accepts `15`, `TERM`, `SIGTERM`, `sigterm`, `RTMIN+3`, `SIGRTMIN+3`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadSignal(s.to_string());
        let t = s.trim();
        if let Ok(n) = t.parse::<i32>() {
            return if (1..=libc::SIGRTMAX()).contains(&n) { Ok(Signal(n)) } else { Err(bad()) };
        }
        let up = t.to_ascii_uppercase();
        let name = up.strip_prefix("SIG").unwrap_or(&up);
        if let Some(rest) = name.strip_prefix("RTMIN") {
            let off: i32 = if rest.is_empty() { 0 } else { rest.strip_prefix('+').and_then(|r| r.parse().ok()).ok_or_else(bad)? };
            let n = libc::SIGRTMIN() + off;
            return if n <= libc::SIGRTMAX() { Ok(Signal(n)) } else { Err(bad()) };
        }
        NixSignal::from_str(&format!("SIG{name}")).map(|s| Signal(s as i32)).map_err(|_| bad())
    }
}

/// `FROM:TO` pairs; TO = None drops the signal (dumb-init's `--rewrite N:0`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rewrites(Vec<(Signal, Option<Signal>)>);

impl Rewrites {
    pub fn parse(specs: &[String]) -> Result<Self, BadRewrite> {
        let mut out = Vec::new();
        for spec in specs {
            let (from, to) = spec.split_once(':').ok_or_else(|| BadRewrite(spec.clone()))?;
            let from: Signal = from.parse().map_err(|_| BadRewrite(spec.clone()))?;
            let to = if to.trim() == "0" { None } else { Some(to.parse().map_err(|_| BadRewrite(spec.clone()))?) };
            out.push((from, to));
        }
        Ok(Rewrites(out))
    }

    /// The FROM signal of each rule, in order.
    pub fn sources(&self) -> impl Iterator<Item = Signal> + '_ {
        self.0.iter().map(|(from, _)| *from)
    }

    /// The signal to send for an incoming one; None means drop it.
    pub fn apply(&self, sig: Signal) -> Option<Signal> {
        match self.0.iter().find(|(from, _)| *from == sig) {
            Some((_, to)) => *to,
            None => Some(sig),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid rewrite {0:?}: expected FROM:TO, e.g. TERM:QUIT or HUP:0")]
pub struct BadRewrite(pub String);

/// The signal source of the supervisor: every forwarded signal (and
/// SIGCHLD) is blocked and read from a signalfd(2), which the loop polls
/// beside its other descriptors.
///
/// Why signalfd: a signal costs one read(2) before it is forwarded — no
/// handler, no self-pipe write and read — which keeps forwarding as fast as
/// tini's sigtimedwait. Its catch is that a blocked mask is inherited: by
/// the threads lastcall starts (all after `install`, so they block the same
/// set and never take a signal meant for the loop) and by the app, whose
/// mask `child::spawn` empties before exec.
///
/// Why not signal-hook here, as the sidecar uses it (it handles three
/// signals, where its cost does not matter): the PID 1 catches ~50, and
/// signal-hook's registry copies itself on every registration, which would
/// make installing them most of lastcall's start-up.
pub struct SignalSource {
    fd: std::os::fd::OwnedFd,
    /// lastcall's own pid, to tell signals it raised itself (see `pending`).
    me: u32,
}

impl SignalSource {
    /// Block `signals`, reset their dispositions to default (an inherited
    /// SIG_IGN would discard them, and an ignored SIGCHLD would auto-reap the
    /// app), and open the signalfd. Call before any thread exists.
    ///
    /// A disposition that already is the default is left alone: setting it
    /// again would discard a pending signal whose default is to be ignored
    /// (SIGWINCH, SIGURG, SIGCHLD; sigaction(2), POSIX 2.4.3), and the
    /// sidecar blocks these signals once before its supervisor calls this
    /// again. Checking costs what resetting did: one sigaction per signal.
    pub fn install(signals: impl IntoIterator<Item = i32>) -> std::io::Result<SignalSource> {
        use std::os::fd::FromRawFd;
        // Raw libc: the set includes the real-time signals, which nix's
        // `SigSet` and `sigaction` cannot name.
        // SAFETY: plain libc calls on a local, zero-initialised sigset_t and
        // sigaction; the signals are blocked before their dispositions change,
        // and the only disposition installed is SIG_DFL (no handler code).
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            let signals: Vec<i32> = signals.into_iter().collect();
            for &sig in &signals {
                libc::sigaddset(&mut set, sig);
            }
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            for &sig in &signals {
                let mut current: libc::sigaction = std::mem::zeroed();
                let known = libc::sigaction(sig, std::ptr::null(), &mut current) == 0;
                if !known || current.sa_sigaction != libc::SIG_DFL {
                    libc::sigaction(sig, &default, std::ptr::null_mut());
                }
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(SignalSource { fd: std::os::fd::OwnedFd::from_raw_fd(fd), me: std::process::id() })
        }
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// The signals queued now, in arrival order (several deliveries of one
    /// standard signal in between count once: the kernel coalesces them).
    ///
    /// Signals lastcall raised itself are left out: a write to a broken log
    /// pipe raises SIGPIPE in the writer, and the kernel records the writer
    /// as the sender (`si_pid` is the current process for a signal sent
    /// without siginfo, kernel/signal.c). They describe lastcall's own
    /// state and must never be forwarded to the app. Nothing else has
    /// lastcall's pid: kill(-1) and kill(-pgid) never signal the caller's
    /// own process here, and a sender outside the namespace shows as pid 0.
    pub fn pending(&self) -> Vec<Signal> {
        const RECORDS: usize = 8;
        let mut buf = [0u8; RECORDS * SIGINFO_SIZE];
        let mut out = Vec::new();
        loop {
            // EAGAIN (nothing queued) and any other error end the batch.
            let Ok(n @ 1..) = nix::unistd::read(&self.fd, &mut buf) else { return out };
            let records = buf[..n].chunks_exact(SIGINFO_SIZE);
            out.extend(records.filter(|r| field(r, SSI_PID) != self.me).map(|r| Signal(field(r, SSI_SIGNO) as i32)));
            if n < buf.len() {
                return out;
            }
        }
    }
}

/// signalfd(2) returns whole `struct signalfd_siginfo` records; they are
/// read as bytes, and the two fields used are taken at the offsets libc's
/// definition of the struct gives, so no `unsafe` reinterprets the buffer.
const SIGINFO_SIZE: usize = std::mem::size_of::<libc::signalfd_siginfo>();
const SSI_SIGNO: usize = std::mem::offset_of!(libc::signalfd_siginfo, ssi_signo);
const SSI_PID: usize = std::mem::offset_of!(libc::signalfd_siginfo, ssi_pid);

/// The u32 field at `at` of one signalfd_siginfo record.
fn field(record: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([record[at], record[at + 1], record[at + 2], record[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_names_and_prefixes() {
        for s in ["15", "TERM", "SIGTERM", "sigterm", " term "] {
            assert_eq!(s.parse::<Signal>(), Ok(SIGTERM), "{s}");
        }
        assert_eq!("9".parse::<Signal>(), Ok(SIGKILL));
        assert_eq!("RTMIN+2".parse::<Signal>(), Ok(Signal(libc::SIGRTMIN() + 2)));
        assert_eq!("SIGRTMIN".parse::<Signal>(), Ok(Signal(libc::SIGRTMIN())));
        for s in ["0", "65", "-1", "BANANA", "", "RTMIN+99", "RTMINx"] {
            assert!(s.parse::<Signal>().is_err(), "{s}");
        }
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(SIGTERM.name(), "SIGTERM");
        assert_eq!(Signal(libc::SIGRTMIN() + 1).name(), "SIGRTMIN+1");
        for s in forwarded() {
            assert_eq!(Signal(s).name().parse::<Signal>(), Ok(Signal(s)));
        }
    }

    #[test]
    fn forwarded_set_excludes_chld_and_faults() {
        let f: Vec<i32> = forwarded().collect();
        for s in [libc::SIGCHLD, libc::SIGKILL, libc::SIGSTOP, libc::SIGSEGV] {
            assert!(!f.contains(&s));
        }
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1, libc::SIGWINCH, libc::SIGQUIT, libc::SIGTSTP] {
            assert!(f.contains(&s));
        }
    }

    #[test]
    fn signal_source_reports_each_signal_once() {
        // Blocking is per thread: the signals target this thread, which blocks them.
        let source = SignalSource::install([libc::SIGUSR1, libc::SIGUSR2]).unwrap();
        from_outside(libc::SIGUSR2);
        from_outside(libc::SIGUSR1);
        from_outside(libc::SIGUSR1);
        let mut got = source.pending();
        got.sort();
        assert_eq!(got, vec![Signal(libc::SIGUSR1), Signal(libc::SIGUSR2)]);
        assert_eq!(source.pending(), vec![]);
    }

    /// Queues `sig` to this thread as if a process outside lastcall's PID
    /// namespace had sent it (si_pid 0). rt_tgsigqueueinfo(2) lets a
    /// process give its own signals any sender.
    fn from_outside(sig: i32) {
        // SAFETY: a zeroed siginfo_t is valid; the fields set below are the
        // sender's pid and uid at their kernel offsets (after signo, errno,
        // code: three ints, then a 4-byte pad on 64-bit).
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            info.si_signo = sig;
            info.si_code = libc::SI_QUEUE;
            let fields = (&mut info as *mut libc::siginfo_t).cast::<u8>().add(16).cast::<u32>();
            fields.write(0); // si_pid
            fields.add(1).write(0); // si_uid
            let r = libc::syscall(libc::SYS_rt_tgsigqueueinfo, libc::getpid(), libc::gettid(), sig, &info);
            assert_eq!(r, 0, "rt_tgsigqueueinfo: {}", std::io::Error::last_os_error());
        }
    }

    #[test]
    fn signals_raised_by_lastcall_itself_are_left_out() {
        let source = SignalSource::install([libc::SIGPIPE]).unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(r);
        // A write to a pipe without readers raises SIGPIPE in the writer.
        assert_eq!(nix::unistd::write(&w, b"x"), Err(nix::errno::Errno::EPIPE));
        assert_eq!(source.pending(), vec![]);
    }

    #[test]
    fn rewrites_map_and_drop() {
        let r = Rewrites::parse(&["TERM:QUIT".into(), "1:0".into()]).unwrap();
        assert_eq!(r.apply(SIGTERM), Some(Signal(libc::SIGQUIT)));
        assert_eq!(r.apply(Signal(libc::SIGHUP)), None);
        assert_eq!(r.apply(Signal(libc::SIGUSR1)), Some(Signal(libc::SIGUSR1)));
        for bad in ["TERM", "X:Y", "TERM:", ":QUIT"] {
            assert!(Rewrites::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
