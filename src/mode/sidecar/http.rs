//! The sidecar's HTTP server: one thread, one poll(2) loop over
//! non-blocking sockets. What a request means is decided by
//! `request::decide`; this file owns the connections, their deadlines and
//! the capacity rules that keep slow or hostile clients from taking what
//! `/healthz` and the kubelet's `/drain` need.
//!
//! * **One deadline per connection.** A connection has [`REQUEST_TIMEOUT`]
//!   from its accept for everything: its request head, its answer and the
//!   close. A `/drain` that waits for the drain has no deadline while it
//!   waits (the drain's own plan bounds that: the hub answers 503 at its
//!   kill instant), then the same timeout for its answer. A body is never
//!   read (both endpoints are GET): after the answer the server sends FIN and
//!   discards what still comes for at most [`LINGER`], then closes.
//! * **Capacity slow clients cannot take.** At most [`MAX_READING`]
//!   connections read their head within the full timeout. Beyond that a
//!   connection gets an overflow slot for [`OVERFLOW_WINDOW`]: a client that
//!   sends its request at once (the kubelet, a probe) is answered; one that
//!   does not gets 503. When the overflow is full too, the oldest overflow
//!   connection (the slowest) is answered 503 to make room. A legitimate
//!   request is read in the turn it arrives, so crowding it out takes
//!   [`MAX_OVERFLOW`] new connections in that instant, a flood no server
//!   survives, not a slow client.
//! * **Waiting `/drain` requests cost a socket, not a thread**: they are
//!   parked until the hub's drain ends (the drain thread wakes this loop).
//!   At most [`MAX_WAITING`] wait, [`MAX_WAITING_PER_PEER`] per source
//!   address, so one client cannot crowd out the kubelet's request.
//! * **Answered connections** closing down are capped at [`MAX_CLOSING`];
//!   beyond that the oldest is closed without waiting for its client.
//! * `accept` failing for lack of descriptors or memory pauses accepting for
//!   [`ACCEPT_BACKOFF`] instead of spinning on a listener that stays readable.
//!
//! Refusals and capacity events are logged at most once per [`LOG_EVERY`]
//! each, with the count of those not logged, so a flood cannot flood the log.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracing::{debug, warn};

use super::hub::{Answer, Hub, Ticket};
use super::request::{decide, Access, Decision, Reply, MAX_HEAD};
use crate::config::Cidr;

/// A connection's whole time: request head, answer and close.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections reading their request head within the full timeout.
pub const MAX_READING: usize = 64;
/// Connections beyond `MAX_READING` that get a short chance to send their request.
pub const MAX_OVERFLOW: usize = 64;
/// How long an overflow connection has for its request head.
pub const OVERFLOW_WINDOW: Duration = Duration::from_secs(1);
/// `/drain` requests waiting for the drain at once.
pub const MAX_WAITING: usize = 256;
/// ... of which from one source address.
pub const MAX_WAITING_PER_PEER: usize = 32;
/// Answered connections still closing.
pub const MAX_CLOSING: usize = 64;
/// How long an answered connection's input is discarded before closing.
pub const LINGER: Duration = Duration::from_millis(500);
/// How much of it.
const LINGER_BYTES: usize = 64 * 1024;
/// Connections accepted per turn of the loop; below `MAX_OVERFLOW`, so a
/// connection accepted in one burst cannot be evicted by the same burst.
const ACCEPT_BURST: usize = 32;
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Who may ask for a drain.
pub struct Policy {
    /// `--drain-token`.
    pub token: Option<Vec<u8>>,
    /// `--drain-from`; empty: any source.
    pub from: Vec<Cidr>,
}

impl Policy {
    fn source_allowed(&self, peer: IpAddr) -> bool {
        self.from.is_empty() || self.from.iter().any(|c| in_block(c, peer))
    }
}

/// Whether `ip` lies in `block` (same address family only).
fn in_block(block: &Cidr, ip: IpAddr) -> bool {
    let (net, addr, bits) = match (block.addr, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => (u128::from(u32::from(n)), u128::from(u32::from(a)), 32),
        (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
        _ => return false,
    };
    let prefix = u32::from(block.prefix).min(bits);
    prefix == 0 || net >> (bits - prefix) == addr >> (bits - prefix)
}

/// An IPv4 client of a dual-stack (`[::]`) listener shows as
/// `::ffff:a.b.c.d`; match it as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

struct Conn {
    stream: TcpStream,
    peer: IpAddr,
    /// When it entered its current pool; eviction takes the oldest.
    since: Instant,
    /// When it is closed whatever it is doing; None while a `/drain` waits.
    deadline: Option<Instant>,
    state: State,
}

enum State {
    /// Reading the request head; `overflow`: beyond `MAX_READING`.
    Head {
        buf: Vec<u8>,
        overflow: bool,
    },
    /// A `GET /drain` waiting for the drain.
    Waiting(Ticket),
    Writing {
        out: Vec<u8>,
        sent: usize,
        ticket: Option<Ticket>,
    },
    /// Answered, FIN sent: discarding what the client still sends until it
    /// closes too, so that closing with unread input does not reset the
    /// connection before the client has read the answer. A `/drain` keeps
    /// its ticket until then: the hub counts it open, so the sidecar does
    /// not exit under it.
    Closing {
        left: usize,
        _ticket: Option<Ticket>,
    },
    Closed,
}

/// At most one log line per `LOG_EVERY`, counting the ones left out.
#[derive(Default)]
struct Throttle {
    next: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(lines left out since the last one)` when a line may be logged now.
    fn ready(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|n| now < n) {
            self.suppressed += 1;
            return None;
        }
        self.next = now.checked_add(LOG_EVERY);
        Some(std::mem::take(&mut self.suppressed))
    }
}

pub struct Server {
    listener: TcpListener,
    hub: Arc<Hub>,
    wake: UnixStream,
    policy: Policy,
    conns: Vec<Conn>,
    accept_paused_until: Option<Instant>,
    refusals: Throttle,
    capacity: Throttle,
}

impl Server {
    /// `listener` is made non-blocking here.
    pub fn new(listener: TcpListener, hub: Arc<Hub>, wake: UnixStream, policy: Policy) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        Ok(Server {
            listener,
            hub,
            wake,
            policy,
            conns: Vec::new(),
            accept_paused_until: None,
            refusals: Throttle::default(),
            capacity: Throttle::default(),
        })
    }

    /// Serves until the process exits.
    pub fn serve(mut self) {
        loop {
            self.turn();
        }
    }

    fn turn(&mut self) {
        let now = Instant::now();
        self.hub.tick(now);
        if self.accept_paused_until.is_some_and(|t| now >= t) {
            self.accept_paused_until = None;
        }
        let (accept_ready, revents) = self.wait(now);
        let now = Instant::now();

        // Connections first, then new ones (see `accept`); then answers for
        // whatever waits, including requests parked in this turn.
        for (i, &events) in revents.iter().enumerate() {
            if !events.is_empty() {
                self.on_event(i, events, now);
            }
        }
        if accept_ready {
            self.accept(now);
        }
        self.answer_waiting(now);
        self.expire(now);
        self.cap_closing();
        self.conns.retain(|c| !matches!(c.state, State::Closed));
    }

    /// Sleeps in poll(2) until something is ready or the next deadline;
    /// returns whether the listener is readable and each connection's events.
    fn wait(&mut self, now: Instant) -> (bool, Vec<PollFlags>) {
        let next = self.conns.iter().filter_map(|c| c.deadline).chain(self.accept_paused_until).chain(self.hub.next_deadline(now)).min();
        let timeout = match next {
            None => PollTimeout::NONE,
            Some(t) => {
                // Round up so a wake-up never comes just before the deadline.
                let ms = t.saturating_duration_since(now).as_micros().div_ceil(1000);
                PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let accepting = self.accept_paused_until.is_none();
        let mut fds = Vec::with_capacity(self.conns.len() + 2);
        fds.push(PollFd::new(self.wake.as_fd(), PollFlags::POLLIN));
        fds.push(PollFd::new(self.listener.as_fd(), if accepting { PollFlags::POLLIN } else { PollFlags::empty() }));
        for c in &self.conns {
            let events = match c.state {
                State::Head { .. } | State::Closing { .. } => PollFlags::POLLIN,
                State::Writing { .. } => PollFlags::POLLOUT,
                // Only errors and hang-ups, which poll reports unasked.
                State::Waiting(_) | State::Closed => PollFlags::empty(),
            };
            fds.push(PollFd::new(c.stream.as_fd(), events));
        }
        if poll(&mut fds, timeout).is_err() {
            // EINTR (or ENOMEM): a wake-up like any other; nothing is ready.
            return (false, vec![PollFlags::empty(); self.conns.len()]);
        }
        let flags: Vec<PollFlags> = fds.iter().map(|f| f.revents().unwrap_or(PollFlags::empty())).collect();
        if !flags[0].is_empty() {
            let mut sink = [0u8; 64];
            while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
        }
        (accepting && flags[1].contains(PollFlags::POLLIN), flags[2..].to_vec())
    }

    fn on_event(&mut self, i: usize, revents: PollFlags, now: Instant) {
        let failed = revents.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL);
        match self.conns[i].state {
            State::Head { .. } => self.read_head(i, now),
            State::Waiting(_) if failed => {
                debug!(peer = %self.conns[i].peer, "a waiting /drain client went away");
                self.conns[i].state = State::Closed;
            }
            State::Writing { .. } => self.write(i, now),
            State::Closing { .. } => self.discard(i),
            State::Waiting(_) | State::Closed => {}
        }
    }

    /// Reads what the client sent and acts once the head is complete.
    fn read_head(&mut self, i: usize, now: Instant) {
        let conn = &mut self.conns[i];
        let State::Head { buf, .. } = &mut conn.state else { return };
        let mut eof = false;
        let mut chunk = [0u8; 2048];
        while buf.len() < MAX_HEAD {
            let room = (MAX_HEAD - buf.len()).min(chunk.len());
            match conn.stream.read(&mut chunk[..room]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    conn.state = State::Closed;
                    return;
                }
            }
        }
        let access = Access { token: self.policy.token.as_deref(), source_allowed: self.policy.source_allowed(conn.peer) };
        match decide(buf, &access) {
            // A client that half-closed after a complete request is still answered.
            Decision::Incomplete if eof => conn.state = State::Closed,
            Decision::Incomplete => {}
            Decision::Reply(reply) => {
                debug!(peer = %conn.peer, status = reply.status, "answered");
                self.answer(i, &reply, None, now);
            }
            Decision::Refused(reply, reason) => {
                if let Some(suppressed) = self.refusals.ready(now) {
                    warn!(peer = %conn.peer, status = reply.status, reason, suppressed, "GET /drain refused");
                }
                self.answer(i, &reply, None, now);
            }
            Decision::Drain => self.park(i, now),
        }
    }

    /// A `/drain` that may drain: join the drain (answered by `answer_waiting`).
    fn park(&mut self, i: usize, now: Instant) {
        let peer = self.conns[i].peer;
        let waiting = self.conns.iter().filter(|c| matches!(c.state, State::Waiting(_)));
        let (total, same_peer) = waiting.fold((0, 0), |(t, p), c| (t + 1, p + usize::from(c.peer == peer)));
        if total >= MAX_WAITING || same_peer >= MAX_WAITING_PER_PEER {
            if let Some(suppressed) = self.capacity.ready(now) {
                warn!(peer = %peer, total, same_peer, suppressed, "too many waiting GET /drain requests: answering 503");
            }
            self.answer(i, &Reply::text(503, "busy: too many waiting /drain requests\n"), None, now);
            return;
        }
        let conn = &mut self.conns[i];
        conn.state = State::Waiting(self.hub.join(now));
        conn.deadline = None;
    }

    /// Answers every waiting `/drain` whose drain is over.
    fn answer_waiting(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            let State::Waiting(ticket) = &self.conns[i].state else { continue };
            let reply = match self.hub.poll(ticket, now) {
                Answer::Wait => continue,
                Answer::Drained(why) => Reply::text(200, format!("drained: {why}\n")),
                Answer::Failed(why) => Reply::text(503, format!("{why}\n")),
            };
            let State::Waiting(ticket) = std::mem::replace(&mut self.conns[i].state, State::Closed) else { unreachable!() };
            debug!(peer = %self.conns[i].peer, status = reply.status, "answered /drain");
            self.conns[i].deadline = now.checked_add(REQUEST_TIMEOUT);
            self.answer(i, &reply, Some(ticket), now);
        }
    }

    /// Starts writing `reply` (keeping the connection's deadline), and
    /// writes at once what the socket takes.
    fn answer(&mut self, i: usize, reply: &Reply, ticket: Option<Ticket>, now: Instant) {
        let conn = &mut self.conns[i];
        conn.state = State::Writing { out: reply.render(), sent: 0, ticket };
        conn.since = now;
        self.write(i, now);
    }

    fn write(&mut self, i: usize, now: Instant) {
        let conn = &mut self.conns[i];
        let State::Writing { out, sent, .. } = &mut conn.state else { return };
        while *sent < out.len() {
            match conn.stream.write(&out[*sent..]) {
                Ok(0) => break,
                Ok(n) => *sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        if *sent < out.len() {
            conn.state = State::Closed; // the client reset or closed
            return;
        }
        let State::Writing { ticket, .. } = std::mem::replace(&mut conn.state, State::Closed) else { unreachable!() };
        let _ = conn.stream.shutdown(Shutdown::Write);
        conn.state = State::Closing { left: LINGER_BYTES, _ticket: ticket };
        conn.since = now;
        conn.deadline = conn.deadline.into_iter().chain(now.checked_add(LINGER)).min();
    }

    /// Discards what an answered client still sends; closes at its EOF.
    fn discard(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        let State::Closing { left, .. } = &mut conn.state else { return };
        let mut sink = [0u8; 4096];
        loop {
            match conn.stream.read(&mut sink) {
                Ok(n) if n > 0 && n < *left => *left -= n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // EOF, an error, or more than a well-meaning client sends.
                _ => {
                    conn.state = State::Closed;
                    return;
                }
            }
        }
    }

    /// Ends every connection past its deadline: a request head that did not
    /// arrive in time gets 408 (503 for an overflow slot).
    fn expire(&mut self, now: Instant) {
        for conn in &mut self.conns {
            if conn.deadline.map_or(true, |d| now < d) {
                continue;
            }
            match conn.state {
                State::Head { overflow: false, .. } => shed(conn, &Reply::text(408, "request timeout\n")),
                State::Head { overflow: true, .. } => shed(conn, &busy()),
                _ => conn.state = State::Closed,
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BURST {
            let (stream, addr) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => continue,
                Err(e) => {
                    // Out of descriptors or memory: the listener stays
                    // readable until something is freed.
                    self.accept_paused_until = now.checked_add(ACCEPT_BACKOFF);
                    if let Some(suppressed) = self.capacity.ready(now) {
                        warn!(error = %e, suppressed, "accept failed: pausing accepting briefly");
                    }
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let reading = self.conns.iter().filter(|c| matches!(c.state, State::Head { overflow: false, .. })).count();
            let overflow = reading >= MAX_READING;
            if overflow {
                self.evict_overflow(now);
            }
            let timeout = if overflow { OVERFLOW_WINDOW } else { REQUEST_TIMEOUT };
            self.conns.push(Conn {
                stream,
                peer: canonical(addr.ip()),
                since: now,
                deadline: now.checked_add(timeout),
                state: State::Head { buf: Vec::new(), overflow },
            });
            // Read at once: a request that came with the connection is
            // answered before a later burst could evict it.
            self.read_head(self.conns.len() - 1, now);
        }
    }

    /// Makes room in a full overflow: its oldest connection gets 503.
    fn evict_overflow(&mut self, now: Instant) {
        let overflow = self.conns.iter().enumerate().filter(|(_, c)| matches!(c.state, State::Head { overflow: true, .. }));
        let (count, oldest) = overflow.fold((0, None::<(usize, Instant)>), |(n, old), (i, c)| {
            (n + 1, if old.is_some_and(|(_, t)| t <= c.since) { old } else { Some((i, c.since)) })
        });
        if count < MAX_OVERFLOW {
            return;
        }
        if let Some((i, _)) = oldest {
            shed(&mut self.conns[i], &busy());
            if let Some(suppressed) = self.capacity.ready(now) {
                warn!(
                    reading = MAX_READING,
                    overflow = MAX_OVERFLOW,
                    suppressed,
                    "connection slots full of slow clients: answering the oldest 503"
                );
            }
        }
    }

    /// Keeps at most `MAX_CLOSING` answered connections: the oldest go first.
    fn cap_closing(&mut self) {
        let mut closing: Vec<(bool, Instant, usize)> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c.state {
                State::Closing { .. } => Some((false, c.since, i)),
                State::Writing { .. } => Some((true, c.since, i)),
                _ => None,
            })
            .collect();
        if closing.len() <= MAX_CLOSING {
            return;
        }
        // Closing before writing (their answer is out), oldest first.
        closing.sort_unstable();
        let excess = closing.len() - MAX_CLOSING;
        for &(_, _, i) in &closing[..excess] {
            self.conns[i].state = State::Closed;
        }
    }
}

fn busy() -> Reply {
    Reply::text(503, "busy\n")
}

/// Answers and closes at once, without waiting for the client: for slow
/// clients the server gives up on. The answer is tiny and the socket's
/// send buffer empty, so the one non-blocking write takes it.
fn shed(conn: &mut Conn, reply: &Reply) {
    let _ = conn.stream.write(&reply.render());
    let _ = conn.stream.shutdown(Shutdown::Write);
    conn.state = State::Closed;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_match_by_prefix_and_family() {
        let cases = [
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.1.2.3/8", "10.9.9.9", true),
            ("192.0.2.7", "192.0.2.7", true),
            ("192.0.2.7", "192.0.2.8", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("0.0.0.0/0", "::1", false),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("::1", "::1", true),
            ("::/0", "10.0.0.1", false),
            ("127.0.0.1/32", "127.0.0.2", false),
        ];
        for (block, addr, want) in cases {
            assert_eq!(in_block(&cidr(block), ip(addr)), want, "{addr} in {block}");
        }
    }

    #[test]
    fn dual_stack_clients_match_as_ipv4() {
        let p = Policy { token: None, from: vec![cidr("127.0.0.1/32")] };
        assert!(p.source_allowed(canonical(ip("::ffff:127.0.0.1"))));
        assert!(!p.source_allowed(canonical(ip("::ffff:10.0.0.1"))));
        assert!(!p.source_allowed(canonical(ip("::1"))));
        assert!(Policy { token: None, from: vec![] }.source_allowed(ip("203.0.113.9")));
    }

    #[test]
    fn throttle_logs_once_per_period_and_counts_the_rest() {
        let mut t = Throttle::default();
        let t0 = Instant::now();
        assert_eq!(t.ready(t0), Some(0));
        assert_eq!(t.ready(t0 + Duration::from_secs(1)), None);
        assert_eq!(t.ready(t0 + Duration::from_secs(9)), None);
        assert_eq!(t.ready(t0 + LOG_EVERY), Some(2));
        assert_eq!(t.ready(t0 + LOG_EVERY), None);
    }
}
