//! Signal policy as data: which signals lastcall forwards, which it keeps,
//! how a signal is named, and how a rewrite table applies.
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

/// Signals lastcall ignores for itself (see the module doc).
pub const IGNORED: &[i32] = &[libc::SIGTTIN, libc::SIGTTOU];

/// Every signal lastcall catches and forwards (1..=31 less NOT_FORWARDED,
/// and the real-time range glibc leaves to applications).
pub fn forwarded() -> impl Iterator<Item = i32> {
    (1..32)
        .filter(|s| !NOT_FORWARDED.contains(s))
        .chain(libc::SIGRTMIN()..=libc::SIGRTMAX())
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

/// The signal source of the supervisor: a handler on every forwarded
/// signal that records which signal arrived and writes one byte to a
/// non-blocking self-pipe, which the loop polls.
///
/// This is signal-hook's iterator design (atomic flags + self-pipe) without
/// its registry: the registry copies all its entries on every
/// registration, so installing the ~50 signals an init forwards cost about
/// 2 million instructions (and as many again to unregister at exit) —
/// most of lastcall's start-up. An init installs its handlers once and
/// never removes them, so it needs none of the registry's bookkeeping.
pub struct SignalPipe {
    read: std::os::unix::net::UnixStream,
}

const MAX_SIGNAL: usize = 65;
static PENDING: [std::sync::atomic::AtomicBool; MAX_SIGNAL] = [const { std::sync::atomic::AtomicBool::new(false) }; MAX_SIGNAL];
static WAKE_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    use std::sync::atomic::Ordering;
    // SAFETY: only async-signal-safe work: atomics, write(2), and errno
    // saved and restored so the interrupted code never sees ours.
    unsafe {
        let errno = *libc::__errno_location();
        if let Some(flag) = PENDING.get(sig as usize) {
            flag.store(true, Ordering::SeqCst);
        }
        let fd = WAKE_FD.load(Ordering::SeqCst);
        if fd >= 0 {
            libc::write(fd, b"s".as_ptr().cast(), 1);
        }
        *libc::__errno_location() = errno;
    }
}

impl SignalPipe {
    /// Install the handler for `signals`. Once per process.
    pub fn install(signals: impl IntoIterator<Item = i32>) -> std::io::Result<SignalPipe> {
        use std::os::fd::IntoRawFd;
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        // The write end lives as long as the process: handlers may run any time.
        WAKE_FD.store(write.into_raw_fd(), std::sync::atomic::Ordering::SeqCst);
        for sig in signals {
            // SAFETY: a zeroed sigaction is valid; the handler is
            // async-signal-safe (see on_signal). SA_RESTART keeps other
            // threads' blocking calls from failing with EINTR.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART;
                libc::sigfillset(&mut action.sa_mask);
                if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(SignalPipe { read })
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.read.as_fd()
    }

    /// The signals that arrived since the last call, lowest number first
    /// (several deliveries of one signal in between count once, as the
    /// kernel coalesces them too).
    pub fn pending(&self) -> Vec<Signal> {
        use std::io::Read;
        let mut buf = [0u8; 64];
        while matches!((&self.read).read(&mut buf), Ok(n) if n > 0) {}
        (1..MAX_SIGNAL)
            .filter(|&s| PENDING[s].swap(false, std::sync::atomic::Ordering::SeqCst))
            .map(|s| Signal(s as i32))
            .collect()
    }
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
    fn signal_pipe_reports_each_signal_once() {
        let pipe = SignalPipe::install([libc::SIGUSR1, libc::SIGUSR2]).unwrap();
        // SAFETY: raise(3) sends a signal to this process; the handlers are ours.
        unsafe {
            libc::raise(libc::SIGUSR2);
            libc::raise(libc::SIGUSR1);
            libc::raise(libc::SIGUSR1);
        }
        assert_eq!(pipe.pending(), vec![Signal(libc::SIGUSR1), Signal(libc::SIGUSR2)]);
        assert_eq!(pipe.pending(), vec![]);
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
