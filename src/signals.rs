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
/// mask `child::spawn` empties before exec. (An earlier version used
/// signal-hook's handlers; its registry copies itself on every
/// registration, which made installing ~50 signals most of start-up.)
pub struct SignalSource {
    fd: std::os::fd::OwnedFd,
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
        // SAFETY: plain libc calls on a local, zero-initialised sigset_t and
        // sigaction; the signals are blocked before their dispositions change.
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
            Ok(SignalSource { fd: std::os::fd::OwnedFd::from_raw_fd(fd) })
        }
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }

    /// The signals queued now, in arrival order (several deliveries of one
    /// standard signal in between count once: the kernel coalesces them).
    pub fn pending(&self) -> Vec<Signal> {
        use std::os::fd::AsRawFd;
        let mut out = Vec::new();
        loop {
            // SAFETY: signalfd_siginfo is plain data; read(2) fills at most
            // the buffer's size in whole records.
            let mut infos: [libc::signalfd_siginfo; 8] = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            let n = unsafe { libc::read(self.fd.as_raw_fd(), infos.as_mut_ptr().cast(), size * infos.len()) };
            if n <= 0 {
                return out;
            }
            let records = n as usize / size;
            out.extend(infos[..records].iter().map(|i| Signal(i.ssi_signo as i32)));
            if records < infos.len() {
                return out;
            }
        }
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
    fn signal_source_reports_each_signal_once() {
        // Blocking is per thread: raise(3) targets this thread, which blocks them.
        let source = SignalSource::install([libc::SIGUSR1, libc::SIGUSR2]).unwrap();
        // SAFETY: raise(3) sends a signal to this thread, which has it blocked.
        unsafe {
            libc::raise(libc::SIGUSR2);
            libc::raise(libc::SIGUSR1);
            libc::raise(libc::SIGUSR1);
        }
        let mut got = source.pending();
        got.sort();
        assert_eq!(got, vec![Signal(libc::SIGUSR1), Signal(libc::SIGUSR2)]);
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
