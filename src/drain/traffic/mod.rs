//! The traffic strategy (issue 6): the drain ends when inbound traffic to
//! the app has actually stopped, measured from inside the pod.
//!
//! Which sockets: the TCP ports the app listens on (the listening sockets
//! held by the child and its descendants, matched by inode between
//! /proc/PID/fd and the kernel's socket list), or the `--port`s given. A
//! connection whose local port is one of them is inbound.
//!
//! What counts as traffic, sampled every [`sample_interval`] through netlink
//! sock_diag (the `ss -ti` mechanism; /proc/net/tcp cannot see data on a
//! kept-alive connection):
//! * a new inbound connection: a socket cookie not seen before, in any state
//!   but LISTEN (a short connection the app closed first still shows as
//!   TIME_WAIT);
//! * data on an inbound connection: `tcpi_bytes_received` changed. Load
//!   balancers and ingress controllers reuse pooled keep-alive connections,
//!   so counting connections alone would end the drain too early.
//!
//! The drain ends when neither happened for `--quiet-period`, counted from
//! when this strategy started (after any strategy before it) or from the
//! last traffic, whichever is later. When the data arrived is taken from
//! `tcpi_last_data_recv`, so the end does not drift by a sample interval;
//! the final sample is taken exactly one quiet period after the last
//! traffic. A pod that gets no traffic drains in one quiet period.
//!
//! Bounded by `--drain-timeout` and the grace deadline: at the bound the
//! strategy returns `Done` saying traffic never went quiet (not `Fallback`:
//! the fallback delay would only wait longer, and the observation — the app
//! is still busy — is real), and the supervisor stops the app.
//!
//! Not observable (no netlink socket under a strict seccomp profile, /proc
//! of the app unreadable, no listening socket found): `Fallback`, which the
//! chain logs once as a warning before waiting `--drain-delay`.
//!
//! Blind spot: a connection that opens and closes completely between two
//! samples, closed by the client first (the server side leaves no
//! TIME_WAIT), is not seen. Pooled connections and any steady request rate
//! are.

#[cfg(test)]
mod bench;
pub(crate) mod diag;
pub(crate) mod procfs;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use self::diag::{Diag, Query, Sock, TcpInfo, TCP_ESTABLISHED};
use super::delay::sleep_until;
use super::{Ctx, Outcome};

/// How often the socket table is read: a quarter of the quiet period,
/// clamped to 10..=100 ms (the default 1 s quiet period samples every
/// 100 ms). The interval only bounds how long a connection can live unseen
/// between two samples; the end itself is scheduled from the traffic's
/// timestamps.
fn sample_interval(quiet: Duration) -> Duration {
    (quiet / 4).clamp(Duration::from_millis(10), Duration::from_millis(100))
}

/// Sampling may use at most 1/MAX_DUTY (5 %) of one core: with many
/// connections (the kernel takes ~0.5 µs to describe each one) the pause
/// between samples grows to 20 times the last sample's duration.
const MAX_DUTY: u32 = 20;

/// Coarsest kernel clock tick (HZ=100). `tcpi_last_data_recv` is counted in
/// jiffies, so "N ms ago" may be up to one tick too long; the arrival time
/// is moved this much later so the drain never ends early.
const JIFFY: Duration = Duration::from_millis(10);

/// Consecutive failed samples after which the strategy gives up.
const MAX_FAILURES: u32 = 3;

/// When the bound is the supervisor's own drain deadline, the strategy
/// gives up this much earlier, so that its summary (what it saw, in the
/// "never went quiet" warning) reaches the log before the supervisor ends
/// the drain by itself and the app, stopping, takes lastcall down with it.
const REPORT_MARGIN: Duration = Duration::from_millis(20);

pub fn wait(ctx: &Ctx) -> Outcome {
    let begin = Instant::now();
    let bound = match ctx.bounded_until() {
        b if b >= ctx.until() => ctx.until().checked_sub(REPORT_MARGIN).unwrap_or(ctx.until()),
        b => b,
    };
    let quiet = ctx.cfg.quiet_period;
    let interval = sample_interval(quiet);
    if begin >= bound {
        return Outcome::Done("no drain budget left to watch inbound traffic".into());
    }

    let mut diag = match Diag::open() {
        Ok(d) => d,
        Err(e) => return Outcome::Fallback(format!("cannot open a NETLINK_SOCK_DIAG socket: {e}")),
    };
    let (ports, source) = match watched_ports(ctx, &mut diag) {
        Ok(p) => p,
        Err(reason) => return Outcome::Fallback(reason),
    };
    let mut sampler = Sampler { diag, ports, socks: Vec::new(), last_cost: Duration::ZERO, max_cost: Duration::ZERO, samples: 0 };
    if let Err(e) = sampler.sample() {
        return Outcome::Fallback(format!("cannot list TCP sockets through sock_diag: {e}"));
    }
    let mut tracker = Tracker::new(begin, quiet, &sampler.socks);
    let ports_text = join(&sampler.ports);
    info!(
        ports = %ports_text,
        source,
        quiet_ms = quiet.as_millis() as u64,
        sample_ms = interval.as_millis() as u64,
        open_connections = tracker.open,
        "waiting for inbound traffic to go quiet"
    );

    let mut failures = 0;
    loop {
        let now = Instant::now();
        let quiet_at = tracker.quiet_at();
        let quiet_seen = tracker.quiet_seen();
        if quiet_seen || now >= bound {
            let since_stop = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(ctx.started).as_millis() as u64);
            let (last_conn, last_byte) = (since_stop(tracker.last_conn), since_stop(tracker.last_byte));
            let seen = format!(
                "last new connection {}, last byte {}, {} inbound connection(s) still open",
                after_stop(last_conn),
                after_stop(last_byte),
                tracker.open
            );
            macro_rules! report {
                ($level:ident, $msg:literal) => {
                    $level!(
                        ports = %ports_text,
                        last_connection_ms = last_conn,
                        last_byte_ms = last_byte,
                        open_connections = tracker.open,
                        new_connections = tracker.new_conns,
                        samples = sampler.samples,
                        max_sample_us = sampler.max_cost.as_micros() as u64,
                        $msg
                    )
                };
            }
            return if quiet_seen {
                report!(info, "inbound traffic went quiet");
                Outcome::Done(format!("no inbound traffic on port {ports_text} for {}ms: {seen}", quiet.as_millis()))
            } else {
                report!(warn, "inbound traffic never went quiet within the drain budget: stopping the app anyway");
                Outcome::Done(format!("inbound traffic on port {ports_text} never went quiet within the drain budget: {seen}"))
            };
        }
        let pause = interval.max(sampler.last_cost * MAX_DUTY);
        sleep_until((now + pause).min(quiet_at).min(bound));
        match sampler.sample() {
            Ok(()) => {
                failures = 0;
                tracker.observe(Instant::now(), &sampler.socks);
            }
            Err(e) => {
                failures += 1;
                debug!(error = %e, failures, "sock_diag sample failed");
                if failures >= MAX_FAILURES {
                    return Outcome::Fallback(format!("sock_diag failed {failures} times in a row: {e}"));
                }
                // A broken dump may leave messages queued: start afresh.
                match Diag::open() {
                    Ok(d) => sampler.diag = d,
                    Err(e) => return Outcome::Fallback(format!("cannot reopen the NETLINK_SOCK_DIAG socket: {e}")),
                }
            }
        }
    }
}

fn after_stop(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => format!("{ms}ms after the stop signal"),
        None => "none since the stop signal".into(),
    }
}

fn join(ports: &[u16]) -> String {
    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

/// The ports to watch and where they came from, or why there are none.
fn watched_ports(ctx: &Ctx, diag: &mut Diag) -> Result<(Vec<u16>, &'static str), String> {
    if !ctx.cfg.ports.is_empty() {
        let mut ports = ctx.cfg.ports.clone();
        ports.sort_unstable();
        ports.dedup();
        return Ok((ports, "--port"));
    }
    let Some(pid) = ctx.child_pid else {
        return Err("no app process to take listening ports from: set --port".into());
    };
    let tree = procfs::process_tree(pid);
    let inodes = procfs::socket_inodes(&tree).map_err(|e| format!("cannot read the app's sockets: {e}; set --port"))?;
    let mut ports = Vec::new();
    diag.dump(Query::Listening, |s| {
        if inodes.contains(&u64::from(s.inode)) {
            ports.push(s.local_port);
        }
    })
    .map_err(|e| format!("cannot list listening TCP sockets through sock_diag: {e}"))?;
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() {
        return Err(format!("the app (pid {pid} and {} descendant(s)) has no listening TCP socket: set --port", tree.len() - 1));
    }
    Ok((ports, "the app's listening sockets"))
}

/// Takes samples: the inbound sockets of the watched ports.
struct Sampler {
    diag: Diag,
    ports: Vec<u16>,
    socks: Vec<Seen>,
    last_cost: Duration,
    max_cost: Duration,
    samples: u64,
}

impl Sampler {
    fn sample(&mut self) -> std::io::Result<()> {
        let t = Instant::now();
        let (ports, socks) = (&self.ports, &mut self.socks);
        socks.clear();
        let skipped = self.diag.dump(Query::Connections(ports), |s: Sock| {
            if ports.contains(&s.local_port) {
                socks.push(Seen { cookie: s.cookie, established: s.state == TCP_ESTABLISHED, info: s.info });
            }
        })?;
        if skipped > 0 {
            debug!(skipped, "sock_diag messages that did not parse");
        }
        self.last_cost = t.elapsed();
        self.max_cost = self.max_cost.max(self.last_cost);
        self.samples += 1;
        Ok(())
    }
}

/// One inbound socket as a sample saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seen {
    cookie: u64,
    established: bool,
    info: Option<TcpInfo>,
}

/// What the previous sample knew about a connection.
#[derive(Debug, Clone, Copy)]
struct Known {
    bytes: Option<u64>,
    /// `now - tcpi_last_data_recv` at that sample (uncorrected).
    recv_at: Option<Instant>,
}

/// The quiet-period bookkeeping, pure: samples in, "quiet since" out.
#[derive(Debug)]
struct Tracker {
    quiet: Duration,
    begin: Instant,
    /// When the previous sample was taken.
    prev: Instant,
    known: HashMap<u64, Known>,
    last_conn: Option<Instant>,
    last_byte: Option<Instant>,
    /// Established inbound connections in the latest sample.
    open: usize,
    /// New inbound connections seen since `begin`.
    new_conns: u64,
}

impl Tracker {
    /// Starts from the baseline sample taken at `begin`: the connections in
    /// it are not new, their later data is traffic.
    fn new(begin: Instant, quiet: Duration, baseline: &[Seen]) -> Tracker {
        let mut t = Tracker {
            quiet,
            begin,
            prev: begin,
            known: HashMap::with_capacity(baseline.len()),
            last_conn: None,
            last_byte: None,
            open: 0,
            new_conns: 0,
        };
        t.remember(begin, baseline);
        t
    }

    fn remember(&mut self, now: Instant, socks: &[Seen]) {
        self.known.clear();
        for s in socks {
            let known = Known { bytes: s.info.and_then(|i| i.bytes_received), recv_at: s.info.map(|i| ago(now, i)) };
            self.known.insert(s.cookie, known);
        }
        self.open = socks.iter().filter(|s| s.established).count();
        self.prev = now;
    }

    /// Folds in a sample taken at `now` (after the dump returned).
    fn observe(&mut self, now: Instant, socks: &[Seen]) {
        let prev = self.prev;
        // When data seen in this sample arrived: `tcpi_last_data_recv` ago,
        // one tick later for rounding, and within (prev, now].
        let arrival = |info: Option<TcpInfo>| match info {
            Some(i) => (ago(now, i) + JIFFY).max(prev).min(now),
            None => now,
        };
        for s in socks {
            match self.known.get(&s.cookie) {
                None => {
                    let at = arrival(s.info);
                    self.new_conns += 1;
                    self.last_conn = self.last_conn.max(Some(at));
                    if s.info.and_then(|i| i.bytes_received).is_some_and(|b| b > 0) {
                        self.last_byte = self.last_byte.max(Some(at));
                    }
                }
                Some(k) => {
                    let data = match (k.bytes, s.info) {
                        (Some(before), Some(TcpInfo { bytes_received: Some(after), .. })) => after != before,
                        // Kernels before 4.1: no byte counter, so the
                        // last-receive time moving on (by more than the
                        // jiffies rounding) is the sign of new data.
                        (_, Some(i)) => k.recv_at.is_some_and(|before| ago(now, i) > before + 2 * JIFFY),
                        // TIME_WAIT: the connection is over.
                        (_, None) => false,
                    };
                    if data {
                        self.last_byte = self.last_byte.max(Some(arrival(s.info)));
                    }
                }
            }
        }
        self.remember(now, socks);
    }

    /// Traffic-free since then.
    fn quiet_since(&self) -> Instant {
        self.begin.max(self.last_conn.unwrap_or(self.begin)).max(self.last_byte.unwrap_or(self.begin))
    }

    /// The drain is over once a sample at or after this instant saw nothing new.
    fn quiet_at(&self) -> Instant {
        self.quiet_since() + self.quiet
    }

    /// Has a successful sample confirmed a full quiet period? (A failed
    /// sample at `quiet_at` proves nothing.)
    fn quiet_seen(&self) -> bool {
        self.prev >= self.quiet_at()
    }
}

/// `now - tcpi_last_data_recv`, saturating at process start-up instants.
fn ago(now: Instant, info: TcpInfo) -> Instant {
    let d = Duration::from_millis(info.last_data_recv_ms.into());
    now.checked_sub(d).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn conn(cookie: u64, bytes: u64, last_recv_ms: u32) -> Seen {
        Seen { cookie, established: true, info: Some(TcpInfo { last_data_recv_ms: last_recv_ms, bytes_received: Some(bytes) }) }
    }

    fn time_wait(cookie: u64) -> Seen {
        Seen { cookie, established: false, info: None }
    }

    #[test]
    fn no_traffic_drains_in_one_quiet_period() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, Q, &[conn(1, 100, 5000)]);
        assert_eq!(t.quiet_at(), t0 + Q);
        t.observe(t0 + ms(100), &[conn(1, 100, 5100)]);
        assert_eq!(t.quiet_at(), t0 + Q);
        assert_eq!((t.last_conn, t.last_byte, t.open), (None, None, 1));
    }

    #[test]
    fn data_on_a_kept_alive_connection_is_traffic() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, Q, &[conn(1, 100, 0)]);
        // Data arrived 30 ms before the sample at +100 ms.
        t.observe(t0 + ms(100), &[conn(1, 180, 30)]);
        assert_eq!(t.last_byte, Some(t0 + ms(70) + JIFFY));
        assert_eq!(t.quiet_at(), t0 + ms(80) + Q);
        // Then nothing: bytes unchanged, last receive ages.
        t.observe(t0 + ms(200), &[conn(1, 180, 130)]);
        assert_eq!(t.quiet_at(), t0 + ms(80) + Q);
        assert_eq!(t.last_conn, None);
    }

    #[test]
    fn arrival_stays_within_the_sample_window() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, Q, &[conn(1, 100, 0)]);
        // last_data_recv claims long ago, but the counter moved since the
        // previous sample: it arrived after that sample.
        t.observe(t0 + ms(100), &[conn(1, 150, 5000)]);
        assert_eq!(t.last_byte, Some(t0));
        // A fresh arrival is not placed after the sample itself.
        t.observe(t0 + ms(200), &[conn(1, 160, 0)]);
        assert_eq!(t.last_byte, Some(t0 + ms(200)));
    }

    #[test]
    fn a_new_connection_is_traffic_even_without_data() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, Q, &[]);
        t.observe(t0 + ms(100), &[conn(7, 0, 40)]);
        assert_eq!(t.last_conn, Some(t0 + ms(60) + JIFFY));
        assert_eq!(t.last_byte, None);
        assert_eq!(t.new_conns, 1);
        // Seen again later: not new any more.
        t.observe(t0 + ms(200), &[conn(7, 0, 140)]);
        assert_eq!(t.new_conns, 1);
        assert_eq!(t.quiet_at(), t0 + ms(70) + Q);
    }

    #[test]
    fn a_short_connection_seen_only_in_time_wait_is_new() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, Q, &[time_wait(3)]);
        t.observe(t0 + ms(100), &[time_wait(3), time_wait(4)]);
        assert_eq!(t.last_conn, Some(t0 + ms(100)));
        assert_eq!(t.new_conns, 1);
    }

    #[test]
    fn a_known_connection_moving_to_time_wait_is_not_new() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, Q, &[conn(5, 10, 0)]);
        t.observe(t0 + ms(100), &[time_wait(5)]);
        assert_eq!((t.last_conn, t.last_byte, t.open), (None, None, 0));
    }

    #[test]
    fn closed_connections_are_forgotten_and_counted_out() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, Q, &[conn(1, 0, 0), conn(2, 0, 0)]);
        assert_eq!(t.open, 2);
        t.observe(t0 + ms(100), &[conn(2, 0, 100)]);
        assert_eq!(t.open, 1);
        assert!(!t.known.contains_key(&1));
    }

    #[test]
    fn old_kernels_use_the_last_receive_time() {
        let t0 = Instant::now();
        let old = |last: u32| Seen { cookie: 1, established: true, info: Some(TcpInfo { last_data_recv_ms: last, bytes_received: None }) };
        let mut t = Tracker::new(t0, Q, &[old(500)]);
        // Same arrival instant, seen 100 ms later (+4 ms rounding): no data.
        t.observe(t0 + ms(100), &[old(604)]);
        assert_eq!(t.last_byte, None);
        // The arrival moved to 10 ms before this sample: data.
        t.observe(t0 + ms(200), &[old(10)]);
        assert_eq!(t.last_byte, Some(t0 + ms(190) + JIFFY));
    }

    #[test]
    fn only_a_sample_confirms_the_quiet_period() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, Q, &[]);
        assert!(!t.quiet_seen());
        t.observe(t0 + ms(900), &[]);
        assert!(!t.quiet_seen());
        t.observe(t0 + Q, &[]);
        assert!(t.quiet_seen());
        // Traffic seen by that same sample postpones the end.
        let mut t = Tracker::new(t0, Q, &[]);
        t.observe(t0 + Q, &[conn(1, 10, 0)]);
        assert!(!t.quiet_seen());
        assert_eq!(t.quiet_at(), t0 + Q + Q);
    }

    #[test]
    fn interval() {
        assert_eq!(sample_interval(Q), ms(100));
        assert_eq!(sample_interval(ms(200)), ms(50));
        assert_eq!(sample_interval(ms(1)), ms(10));
        assert_eq!(sample_interval(Duration::from_secs(30)), ms(100));
    }
}
