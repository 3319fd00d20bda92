//! `--close-idle PORTS`: at the end of the drain, close the app's idle
//! inbound keep-alive connections the way a graceful HTTP/1.1 server does
//! when it shuts down (Go's `http.Server.Shutdown`, nginx on QUIT). A client
//! whose pooled connection is still pinned to this pod (conntrack keeps an
//! established flow on its old backend after the endpoint flip) sees the
//! server close it while idle, and opens a new one, which the Service sends
//! to a live pod. A naive app would drop that connection only when it exits,
//! failing whatever request is on it at that moment.
//!
//! How (measurements and the alternatives in docs/keepalive.md): sock_diag
//! lists the established connections on the named ports; `/proc/PID/fd` maps
//! each to a descriptor of the app or a descendant; `pidfd_getfd(2)` (Linux
//! 5.6) copies that descriptor into lastcall; `TCP_INFO`, `SIOCINQ` and
//! `SIOCOUTQNSD` on the copy tell whether the connection is idle ([`verdict`]);
//! `shutdown(SHUT_RDWR)` sends the FIN and wakes the app's reader with end of
//! file, so the app closes its side as it would for a client that left. The
//! copy is closed at once. Busy connections are looked at again every
//! [`PASS`], for at most [`WINDOW`], and never past the drain deadline.
//!
//! `pidfd_getfd` needs ptrace access to the app (PTRACE_MODE_ATTACH_REALCREDS):
//! the same user and a dumpable app, or CAP_SYS_PTRACE; Yama's ptrace_scope 1
//! allows it to an ancestor, which lastcall is. Docker's and containerd's
//! default seccomp profiles allow the call only with CAP_SYS_PTRACE
//! (moby profiles/seccomp/default.json, containerd contrib/seccomp): there the
//! first call fails with EPERM, and [`Unavailable`] says why.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use tracing::{debug, info, warn};

use super::traffic::diag::{self, Diag, Query, TCP_ESTABLISHED};
use super::traffic::procfs;

/// A connection is idle only once no segment went either way for this long
/// (and the server spoke last): a client that sends requests back to back
/// is not interrupted between two of them. tcp_info's times are jiffies
/// (4 ms steps at HZ=250), so this is a few steps.
pub const MIN_IDLE_MS: u32 = 10;
/// The longest the step waits for busy connections to go idle.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Pause between two passes over the connections still busy.
pub const PASS: Duration = Duration::from_millis(1);
/// When tcp_info cannot order the last request and response (same clock
/// tick, no later segment from the client), the connection counts as idle
/// only after this long without data (see [`verdict`]).
pub const TIE_QUIET_MS: u32 = 200;

/// What the step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Idle connections shut down.
    pub closed: usize,
    /// Connections still busy (a request or response under way, data too
    /// recent, not accepted yet) when the step ended: left to the app.
    pub busy: usize,
    pub passes: u32,
}

/// Why the step could not run; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("lastcall is not the app's parent here (a preStop hook without a lastcall PID 1)")]
    NoApp,
    #[error("cannot list TCP connections through sock_diag: {0}")]
    Diag(io::Error),
    #[error("cannot read the app's descriptors: {0}")]
    Proc(io::Error),
    #[error("{call}: {errno}: {hint}")]
    Denied { call: &'static str, errno: Errno, hint: &'static str },
}

/// The drain chain's last step: close what is idle on `ports`, log one line.
pub fn step(ports: &[u16], app: Option<i32>, until: Instant) {
    let start = Instant::now();
    let list = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    if until <= start {
        warn!(ports = %list, "no drain time left to close idle connections: leaving them to the app");
        return;
    }
    match close_idle(ports, app, until.min(start + WINDOW)) {
        Ok(r) => info!(
            ports = %list,
            closed = r.closed,
            busy = r.busy,
            passes = r.passes,
            took_ms = start.elapsed().as_millis() as u64,
            "closed idle inbound connections"
        ),
        Err(e) => warn!(ports = %list, reason = %e, "cannot close idle connections: leaving them to the app"),
    }
}

/// Closes the idle established connections on `ports` held by `app` or its
/// descendants, passing again over busy ones until none is left or `until`.
pub fn close_idle(ports: &[u16], app: Option<i32>, until: Instant) -> Result<Report, Unavailable> {
    let app = app.ok_or(Unavailable::NoApp)?;
    let diag = Diag::open().map_err(Unavailable::Diag)?;
    let mut s = Step { diag, app, pidfds: HashMap::new(), owners: HashMap::new(), scanned: None, seen: HashMap::new() };
    let mut report = Report::default();
    loop {
        report.passes += 1;
        let (closed, busy) = s.pass(ports, until)?;
        report.closed += closed;
        report.busy = busy;
        if busy == 0 || Instant::now() + PASS >= until {
            return Ok(report);
        }
        // Polling: nothing tells another process that a connection went
        // idle; a pass costs a few microseconds per connection.
        std::thread::sleep(PASS);
    }
}

/// What the step keeps between passes.
struct Step {
    diag: Diag,
    app: i32,
    pidfds: HashMap<i32, OwnedFd>,
    /// `inode -> (pid, fd)`, and when /proc was last read for it.
    owners: HashMap<u64, (i32, RawFd)>,
    scanned: Option<Instant>,
    /// The busy connections of the previous pass.
    seen: HashMap<u64, Track>,
}

/// How often /proc is read again for connections not mapped yet.
const RESCAN: Duration = Duration::from_millis(20);

impl Step {
    /// One look at every connection: (closed, still busy).
    fn pass(&mut self, ports: &[u16], until: Instant) -> Result<(usize, usize), Unavailable> {
        let mut inodes = Vec::new();
        let mut busy = 0;
        self.diag
            .dump(Query::Connections(ports), |s| {
                if s.state == TCP_ESTABLISHED && ports.contains(&s.local_port) {
                    // Inode 0: still in the accept queue, so the app has a
                    // request coming that it has not seen yet.
                    if s.inode == 0 {
                        busy += 1;
                    } else {
                        inodes.push(u64::from(s.inode));
                    }
                }
            })
            .map_err(Unavailable::Diag)?;
        let stale = self.scanned.map_or(true, |t| t.elapsed() >= RESCAN);
        if stale && inodes.iter().any(|i| !self.owners.contains_key(i)) {
            self.owners = socket_fds(&procfs::process_tree(self.app)).map_err(Unavailable::Proc)?;
            self.scanned = Some(Instant::now());
        }
        let mut closed = 0;
        let mut seen = HashMap::new();
        let count = inodes.len();
        for (i, inode) in inodes.into_iter().enumerate() {
            // About 70 µs per connection (measured: 5,000 in 365 ms on a
            // loaded 2-core VM): with tens of thousands, one pass alone
            // would outlast the window. What is left counts as busy.
            if i % 64 == 0 && Instant::now() >= until {
                busy += count - i;
                break;
            }
            // Held by no process of the app's tree: not ours to close.
            let Some(&(pid, fd)) = self.owners.get(&inode) else { continue };
            let Some(sock) = copy_fd(&mut self.pidfds, pid, fd)? else { continue };
            if !same_inode(&sock, inode) {
                self.owners.remove(&inode); // the descriptor was closed and reused meanwhile
                continue;
            }
            let Some(p) = probe(&sock) else { continue };
            let track = Track::observe(self.seen.get(&inode), &p);
            match verdict(&p, track.order, MIN_IDLE_MS) {
                Verdict::Idle => match nix::sys::socket::shutdown(sock.as_raw_fd(), nix::sys::socket::Shutdown::Both) {
                    Ok(()) => closed += 1,
                    Err(e) => debug!(pid, fd, error = %e, "shutdown of an idle connection failed"),
                },
                Verdict::Busy => {
                    tracing::trace!(inode, probe = ?p, order = ?track.order, "connection busy");
                    busy += 1;
                    seen.insert(inode, track);
                }
                Verdict::Gone => {}
            }
            // `sock` is closed here: the copy never outlives the look, so an
            // app that closes the connection meanwhile still sends its FIN.
        }
        self.seen = seen;
        Ok((closed, busy))
    }
}

/// What the passes saw happen on one connection, at their resolution (a
/// pass every [`PASS`], finer than tcp_info's clock ticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Track {
    received: Option<u64>,
    sent: Option<u64>,
    segs_in: Option<u32>,
    pub order: Order,
}

/// The order of the last request and response, as far as the passes know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Bytes came in and nothing went out since: a request in progress.
    Pending,
    /// Bytes went out and nothing came in since: the last request was answered.
    Answered,
    /// Not seen (first look, both moved between two looks, or an old kernel
    /// without the byte counters): tcp_info's clocks decide.
    Unknown,
}

impl Track {
    pub fn observe(prev: Option<&Track>, p: &Probe) -> Track {
        let order = match prev {
            None => Order::Unknown,
            Some(t) => match (p.bytes_received.zip(t.received), p.bytes_sent.zip(t.sent)) {
                (Some((r, r0)), Some((s, s0))) => match (r > r0, s > s0) {
                    (true, false) => Order::Pending,
                    (false, true) => Order::Answered,
                    // Nothing was pending, then one segment came in and an
                    // answer went out: the answer is that request's (an
                    // HTTP/1.1 client sends its next request only after
                    // reading the answer; a pipelining client could have
                    // put two requests into the segment).
                    (true, true) if t.order == Order::Answered && p.data_segs_in.zip(t.segs_in).is_some_and(|(n, n0)| n == n0 + 1) => {
                        Order::Answered
                    }
                    (true, true) => Order::Unknown,
                    (false, false) => t.order,
                },
                _ => Order::Unknown,
            },
        };
        Track { received: p.bytes_received, sent: p.bytes_sent, segs_in: p.data_segs_in, order }
    }
}

/// `inode -> (pid, fd)` for every socket descriptor of `pids` (the first
/// holder found, which is enough to reach the socket).
fn socket_fds(pids: &[i32]) -> io::Result<HashMap<u64, (i32, RawFd)>> {
    let mut out = HashMap::new();
    for (i, pid) in pids.iter().enumerate() {
        let dir = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(d) => d,
            Err(e) if i == 0 => return Err(io::Error::new(e.kind(), format!("/proc/{pid}/fd: {e}"))),
            Err(_) => continue, // a descendant that exited meanwhile
        };
        for entry in dir.flatten() {
            let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<RawFd>().ok()) else { continue };
            let link = std::fs::read_link(entry.path()).ok();
            if let Some(inode) = link.as_ref().and_then(|l| l.to_str()).and_then(procfs::socket_inode) {
                out.entry(inode).or_insert((*pid, fd));
            }
        }
    }
    Ok(out)
}

/// The app's descriptor `fd` of process `pid`, copied into lastcall; None
/// when the process or the descriptor is gone.
fn copy_fd(pidfds: &mut HashMap<i32, OwnedFd>, pid: i32, fd: RawFd) -> Result<Option<OwnedFd>, Unavailable> {
    let pidfd = match pidfds.entry(pid) {
        std::collections::hash_map::Entry::Occupied(e) => e.get().as_raw_fd(),
        std::collections::hash_map::Entry::Vacant(e) => {
            // Raw syscall: neither std (PidFd is unstable) nor nix wraps
            // pidfd_open(2) or pidfd_getfd(2).
            // SAFETY: pidfd_open(2) takes two integers and returns a new descriptor or -1.
            let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
            if r < 0 {
                return match Errno::last() {
                    Errno::ESRCH => Ok(None),
                    errno => Err(denied("pidfd_open", errno)),
                };
            }
            // SAFETY: a successful pidfd_open returned this new descriptor, owned by nobody else.
            e.insert(unsafe { OwnedFd::from_raw_fd(r as RawFd) }).as_raw_fd()
        }
    };
    // SAFETY: pidfd_getfd(2) takes three integers and returns a new descriptor or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) };
    if r < 0 {
        return match Errno::last() {
            // The descriptor was closed, or the process exited.
            Errno::EBADF | Errno::ESRCH => Ok(None),
            errno => Err(denied("pidfd_getfd", errno)),
        };
    }
    // SAFETY: a successful pidfd_getfd returned this new descriptor, owned by nobody else.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(r as RawFd) }))
}

fn denied(call: &'static str, errno: Errno) -> Unavailable {
    let hint = match errno {
        Errno::ENOSYS if call == "pidfd_open" => "the kernel is older than Linux 5.3, or a seccomp profile answers ENOSYS",
        Errno::ENOSYS => "the kernel is older than Linux 5.6, or a seccomp profile answers ENOSYS",
        Errno::EPERM if seccomp_filtered() => {
            "the seccomp profile denies it (Docker's and containerd's default profiles allow pidfd_getfd only with \
             CAP_SYS_PTRACE: add that capability, or run with a profile that allows the call)"
        }
        Errno::EPERM => {
            "no ptrace access to the app (it runs as another user or is not dumpable: lastcall needs CAP_SYS_PTRACE; \
             or Yama's kernel.yama.ptrace_scope is 2 or 3)"
        }
        _ => "unexpected error",
    };
    Unavailable::Denied { call, errno, hint }
}

/// Whether a seccomp filter confines lastcall (`Seccomp: 2` in
/// /proc/self/status, proc(5)).
fn seccomp_filtered() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().any(|l| l.strip_prefix("Seccomp:").is_some_and(|v| v.trim() == "2"))
}

fn same_inode(fd: &OwnedFd, inode: u64) -> bool {
    nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_ino == inode)
}

/// What the step needs to know about one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub established: bool,
    /// Received, not yet read by the app (`SIOCINQ`).
    pub unread: u32,
    /// Written by the app, not yet sent (`SIOCOUTQNSD`): an answer still
    /// going out. (Sent but unacknowledged bytes do not count: a client in
    /// delayed-ACK mode acknowledges an answer only with its next request
    /// or after 40 ms, and a FIN queued behind them is delivered after them.)
    pub unsent: u32,
    /// tcp_info: milliseconds since the last data segment sent, the last
    /// data segment received, and the last ACK received (every segment
    /// from the client carries one).
    pub last_sent_ms: u32,
    pub last_recv_ms: u32,
    pub last_ack_ms: u32,
    /// Payload bytes ever received, and ever sent and acknowledged; None
    /// before Linux 4.1.
    pub bytes_received: Option<u64>,
    pub bytes_acked: Option<u64>,
    /// Payload bytes ever sent (acknowledged or not); None before Linux 4.19.
    pub bytes_sent: Option<u64>,
    /// Segments with data ever received; None before Linux 4.6.
    pub data_segs_in: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Idle,
    Busy,
    /// Not established any more: someone is closing it already.
    Gone,
}

/// Whether a connection is idle between two HTTP/1.1 exchanges: nothing
/// unread, nothing unsent, no segment either way for `min_idle_ms`,
/// and the server spoke last.
///
/// The order comes from tcp_info's clocks, which tick in jiffies (1-4 ms):
/// - the last data sent is later than the last data received: answered;
/// - the last data received is later: a request in progress (busy, however
///   long it takes);
/// - same tick (a fast answer on a fast network): a client segment after
///   its last data shows the order, as only the response gave it something
///   to acknowledge (a client that sends its next request within 40 ms is
///   in delayed-ACK "pingpong" mode and acknowledges an answer it has no
///   request to piggyback on 40 ms later). A client that acknowledged in the
///   same tick leaves no trace of the order: such a connection counts as
///   idle after [`TIE_QUIET_MS`] without data, the one guess this makes
///   (docs/keepalive.md, "What counts as idle").
pub fn verdict(p: &Probe, order: Order, min_idle_ms: u32) -> Verdict {
    if !p.established {
        return Verdict::Gone;
    }
    let quiet = p.last_sent_ms.min(p.last_recv_ms).min(p.last_ack_ms);
    if p.unread > 0 || p.unsent > 0 || quiet < min_idle_ms {
        return Verdict::Busy;
    }
    if p.bytes_received == Some(0) {
        return Verdict::Idle; // connected, never asked anything
    }
    if p.bytes_acked == Some(0) {
        // Asked and never answered: the first request is in progress. (Its
        // arrival often shares a tick with the handshake, which starts the
        // "last data sent" clock.)
        return Verdict::Busy;
    }
    match order {
        Order::Pending => return Verdict::Busy,
        Order::Answered => return Verdict::Idle,
        Order::Unknown => {}
    }
    let answered = p.last_sent_ms < p.last_recv_ms || p.last_ack_ms < p.last_recv_ms;
    let tie = p.last_sent_ms == p.last_recv_ms && p.last_recv_ms >= TIE_QUIET_MS;
    if answered || tie {
        Verdict::Idle
    } else {
        Verdict::Busy
    }
}

/// Reads tcp_info and the two queues of a connection; None when a call
/// fails (the socket is not TCP, or is going away).
fn probe(sock: &OwnedFd) -> Option<Probe> {
    let fd = sock.as_raw_fd();
    let mut info = [0u8; 232];
    let mut len = info.len() as libc::socklen_t;
    // Raw libc: nix has no TCP_INFO option; the fields are read from the
    // bytes at the offsets `diag::TcpInfoPrefix` pins.
    // SAFETY: `info` is writable for `len` bytes and `len` points to its size.
    let r = unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, info.as_mut_ptr().cast(), &mut len) };
    if r != 0 || (len as usize) < diag::TCPI_LAST_ACK_RECV + 4 {
        return None;
    }
    let info = &info[..len as usize];
    let u32_at = |off: usize| u32::from_ne_bytes(info[off..off + 4].try_into().unwrap_or_default());
    let u64_at = |off: usize| info.get(off..off + 8).map(|b| u64::from_ne_bytes(b.try_into().unwrap_or_default()));
    let queue = |req| {
        let mut n: libc::c_int = 0;
        // nix's ioctl macros generate unsafe functions too.
        // SAFETY: SIOCINQ/SIOCOUTQNSD write one int through the pointer, which points to `n`.
        (unsafe { libc::ioctl(fd, req, &mut n) } == 0).then_some(n.max(0) as u32)
    };
    Some(Probe {
        established: info[diag::TCPI_STATE] == TCP_ESTABLISHED,
        // tcp(7): SIOCINQ is FIONREAD's number.
        unread: queue(libc::FIONREAD)?,
        unsent: queue(libc::SIOCOUTQNSD)?,
        last_sent_ms: u32_at(diag::TCPI_LAST_DATA_SENT),
        last_recv_ms: u32_at(diag::TCPI_LAST_DATA_RECV),
        last_ack_ms: u32_at(diag::TCPI_LAST_ACK_RECV),
        bytes_received: u64_at(diag::TCPI_BYTES_RECEIVED),
        bytes_acked: u64_at(diag::TCPI_BYTES_ACKED),
        bytes_sent: u64_at(diag::TCPI_BYTES_SENT),
        data_segs_in: info.get(diag::TCPI_DATA_SEGS_IN..diag::TCPI_DATA_SEGS_IN + 4).map(|_| u32_at(diag::TCPI_DATA_SEGS_IN)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    fn idle() -> Probe {
        Probe {
            established: true,
            unread: 0,
            unsent: 0,
            last_sent_ms: 400,
            last_recv_ms: 404,
            last_ack_ms: 404,
            bytes_received: Some(80),
            bytes_acked: Some(300),
            bytes_sent: Some(300),
            data_segs_in: Some(1),
        }
    }

    #[test]
    fn answered_and_quiet_is_idle() {
        assert_eq!(verdict(&idle(), Order::Unknown, 10), Verdict::Idle);
        // Request and response in the same tick, the client's ACK later.
        assert_eq!(verdict(&Probe { last_sent_ms: 404, last_ack_ms: 360, ..idle() }, Order::Unknown, 10), Verdict::Idle);
        // Connected and never used.
        assert_eq!(verdict(&Probe { last_sent_ms: u32::MAX, bytes_received: Some(0), ..idle() }, Order::Unknown, 10), Verdict::Idle);
        // Same tick, no later ACK, but quiet for long enough.
        let t = TIE_QUIET_MS;
        assert_eq!(verdict(&Probe { last_sent_ms: t, last_recv_ms: t, last_ack_ms: t, ..idle() }, Order::Unknown, 10), Verdict::Idle);
    }

    #[test]
    fn anything_under_way_is_busy() {
        let busy = [
            Probe { unread: 1, ..idle() },
            Probe { unsent: 17, ..idle() },
            Probe { last_recv_ms: 4, last_sent_ms: 0, last_ack_ms: 0, ..idle() },
            // The client spoke last: a request whose answer is being computed.
            Probe { last_sent_ms: 500, ..idle() },
            // Same tick, and no later segment from the client: order
            // unknown until TIE_QUIET_MS.
            Probe { last_sent_ms: 104, last_recv_ms: 104, last_ack_ms: 104, ..idle() },
            // Answered, but the answer (or its ACK) is too recent.
            Probe { last_sent_ms: 4, ..idle() },
            Probe { last_ack_ms: 4, ..idle() },
            // The client spoke last, long ago: still a request in progress.
            Probe { last_sent_ms: 5000, last_recv_ms: 4000, last_ack_ms: 4000, ..idle() },
            // A first request, in the handshake's tick, never answered.
            Probe { last_sent_ms: 4000, last_recv_ms: 4000, last_ack_ms: 4000, bytes_acked: Some(0), ..idle() },
        ];
        for p in busy {
            assert_eq!(verdict(&p, Order::Unknown, 10), Verdict::Busy, "{p:?}");
        }
        assert_eq!(verdict(&Probe { established: false, ..idle() }, Order::Unknown, 10), Verdict::Gone);
    }

    #[test]
    fn passes_order_what_the_clock_cannot() {
        // Request and answer in one tick: the clock cannot tell.
        let tie = Probe { last_sent_ms: 40, last_recv_ms: 40, last_ack_ms: 40, ..idle() };
        assert_eq!(verdict(&tie, Order::Unknown, 10), Verdict::Busy);
        let t0 = Track::observe(None, &tie);
        assert_eq!(t0.order, Order::Unknown);
        // A request came in, nothing went out: in progress, whatever the clock says.
        let asked = Probe { bytes_received: Some(160), ..tie };
        let t1 = Track::observe(Some(&t0), &asked);
        assert_eq!(t1.order, Order::Pending);
        assert_eq!(verdict(&Probe { last_recv_ms: 5000, last_sent_ms: 5000, last_ack_ms: 5000, ..asked }, t1.order, 10), Verdict::Busy);
        // Then the answer went out, nothing came in: answered.
        let answered = Probe { bytes_sent: Some(600), ..asked };
        let t2 = Track::observe(Some(&t1), &answered);
        assert_eq!(t2.order, Order::Answered);
        assert_eq!(verdict(&answered, t2.order, 10), Verdict::Idle);
        // Quiet passes keep what was seen.
        assert_eq!(Track::observe(Some(&t2), &answered).order, Order::Answered);
        // From answered, one request segment and an answer between two
        // looks: answered; two segments (or from pending, or unknown): unknown.
        let one = Probe { bytes_received: Some(240), bytes_sent: Some(900), data_segs_in: Some(2), ..answered };
        assert_eq!(Track::observe(Some(&t2), &one).order, Order::Answered);
        let both = Probe { data_segs_in: Some(3), ..one };
        assert_eq!(Track::observe(Some(&t2), &both).order, Order::Unknown);
        assert_eq!(Track::observe(Some(&t1), &one).order, Order::Unknown);
        assert_eq!(Track::observe(Some(&t0), &one).order, Order::Unknown);
        // Old kernels without the counters: the clock decides.
        let old = Probe { bytes_sent: None, ..both };
        assert_eq!(Track::observe(Some(&t2), &old).order, Order::Unknown);
        // Queues and the quiet time still come first.
        assert_eq!(verdict(&Probe { last_ack_ms: 2, ..answered }, Order::Answered, 10), Verdict::Busy);
        assert_eq!(verdict(&Probe { unsent: 1, ..answered }, Order::Answered, 10), Verdict::Busy);
    }

    /// The probe on real sockets: a request without an answer is busy, and
    /// the same connection once answered is idle (after the quiet time).
    #[test]
    fn probe_follows_a_real_exchange() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let server_fd = OwnedFd::from(server.try_clone().unwrap());
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut buf = [0u8; 64];
        let n = server.read(&mut buf).unwrap();
        assert!(n > 0);
        // Waits out MIN_IDLE so that only the order decides (tcp_info's clock).
        std::thread::sleep(Duration::from_millis(30));
        let p = probe(&server_fd).unwrap();
        assert_eq!((p.unread, p.unsent), (0, 0), "{p:?}");
        assert_eq!(verdict(&p, Order::Unknown, MIN_IDLE_MS), Verdict::Busy, "read, not answered: {p:?}");
        server.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").unwrap();
        let _ = client.read(&mut buf).unwrap();
        // Waits out MIN_IDLE again: the answer is the last data now.
        std::thread::sleep(Duration::from_millis(30));
        let p = probe(&server_fd).unwrap();
        assert_eq!(verdict(&p, Order::Unknown, MIN_IDLE_MS), Verdict::Idle, "answered: {p:?}");
        client.write_all(b"GET").unwrap();
        // The event itself: the request has arrived once the server's socket is readable.
        let mut fds = [PollFd::new(server_fd.as_fd(), PollFlags::POLLIN)];
        assert_eq!(poll(&mut fds, PollTimeout::from(10_000u16)), Ok(1), "the request never arrived");
        assert_eq!(verdict(&probe(&server_fd).unwrap(), Order::Unknown, MIN_IDLE_MS), Verdict::Busy, "unread request");
    }
}
