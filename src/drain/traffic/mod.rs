//! The traffic strategy (issues 6 and 10): the drain ends when inbound
//! traffic to the app has actually stopped, measured from inside the pod.
//!
//! Which sockets: the TCP ports the app listens on (the listening sockets
//! held by the child and its descendants, matched by inode between
//! /proc/PID/fd and the kernel's socket list), or the `--port`s given. A
//! connection whose local port is one of them is inbound.
//!
//! Two views of the traffic, sampled every [`sample_interval`]:
//! * the per-socket view, always: netlink sock_diag (the `ss -ti`
//!   mechanism) lists the connections on the watched ports with their
//!   tcp_info. Traffic is a new connection (a socket cookie not seen
//!   before, in any state but LISTEN), data on a known one
//!   (`tcpi_bytes_received` moved: load balancers reuse pooled keep-alive
//!   connections), and a known connection that is gone or in TIME_WAIT
//!   (data may have arrived after the previous sample and before the
//!   close: the close counts as traffic at the sample that notices it);
//! * the namespace's counters ([`snmp`]), in a network namespace of the
//!   pod's own: `PassiveOpens` counts every connection accepted in it, so a
//!   connection that opens and closes between two samples (the client
//!   closing first leaves nothing on the app's side) is traffic at the
//!   sample that finds the count ahead of the sockets it saw. `InSegs`
//!   unchanged means nothing arrived at all, and the socket dump is
//!   skipped. In a shared namespace (the host's, or one where another
//!   process lastcall can see listens) other services' connections would
//!   count, so the per-socket view is used alone; the start line says
//!   which view (`view=`) and why.
//!
//! When each traffic event happened: from `tcpi_last_data_recv` for data
//! and new connections seen by a sample (so the end does not drift by a
//! sample interval), at the noticing sample for closes and for connections
//! seen only in the count (later, never earlier: the drain never ends too
//! soon because of the rounding).
//!
//! The drain ends when no traffic arrived for the quiet period, counted
//! from when this strategy started (after any strategy before it) or from
//! the last traffic, whichever is later. The quiet period is
//! `--quiet-period` when given, else chosen from the pod's own history
//! ([`quiet`]). A pod that gets no traffic drains in one quiet period.
//!
//! Bounded by `--drain-timeout` and the grace deadline: at the bound the
//! strategy returns `Done` saying traffic never went quiet (not `Fallback`:
//! the fallback delay would only wait longer, and the observation — the app
//! is still busy — is real), and the supervisor stops the app.
//!
//! Not observable (no netlink socket under a strict seccomp profile, /proc
//! of the app unreadable, no listening socket found): `Fallback`, which the
//! chain logs once as a warning.

#[cfg(test)]
mod bench;
pub(crate) mod diag;
pub(crate) mod procfs;
pub mod quiet;
mod snmp;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use self::diag::{Diag, Query, Sock, TcpInfo, TCP_ESTABLISHED};
use self::quiet::History;
use self::snmp::{Counters, Snmp};
use super::delay::sleep_until;
use super::{join, Ctx, Outcome, Strategy};

use self::snmp::note_startup;

/// How often the connections are sampled: a quarter of the quiet period,
/// clamped to 10..=100 ms (every quiet period of 400 ms or more samples
/// every 100 ms). With the counters, the interval only bounds how late a
/// close or an unseen connection is noticed; without them, also how long a
/// connection can live unseen between two samples.
fn sample_interval(quiet: Duration) -> Duration {
    (quiet / 4).clamp(Duration::from_millis(10), Duration::from_millis(100))
}

/// Sampling may use at most 1/MAX_DUTY (5 %) of one core: with many
/// connections (the kernel takes ~0.5 µs to describe each one) the pause
/// between samples grows to 20 times the CPU time the last sample took.
/// CPU time, not wall time: on a throttled or loaded machine a sample's wall
/// time stretches by the time lastcall waits for a CPU, and pausing 20 times
/// that would sample least when the pod is busiest.
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

/// `TCP_SYN_RECV`: a request socket, whose handshake is not complete; the
/// connection's socket, when it comes, inherits its cookie.
const TCP_SYN_RECV: u8 = 3;
const TCP_TIME_WAIT: u8 = 6;

/// The strategy (`--drain traffic`).
#[derive(Default)]
pub struct Traffic {
    /// What the pod had received at the stop signal, when another strategy
    /// runs first.
    at_stop: Option<Snapshot>,
}

impl Strategy for Traffic {
    fn name(&self) -> &'static str {
        crate::config::Strategy::Traffic.name()
    }

    /// The history starts here: one read of the kernel's counters, nothing
    /// more until the stop signal.
    fn at_start(&self) {
        note_startup();
    }

    fn at_stop(&mut self, ctx: &Ctx) {
        self.at_stop = at_stop(&ctx.cfg.ports, ctx.child_pid);
    }

    fn wait(&mut self, ctx: &Ctx) -> Outcome {
        wait(ctx, self.at_stop.take())
    }
}

/// `at_stop`: what the pod had received at the stop signal, taken by
/// [`at_stop`] when another strategy runs first.
fn wait(ctx: &Ctx, at_stop: Option<Snapshot>) -> Outcome {
    let begin = Instant::now();
    let bound = match ctx.bounded_until() {
        b if b >= ctx.until() => ctx.until().checked_sub(REPORT_MARGIN).unwrap_or(ctx.until()),
        b => b,
    };
    if begin >= bound {
        return Outcome::Done("no drain budget left to watch inbound traffic".into());
    }

    let mut diag = match Diag::open() {
        Ok(d) => d,
        Err(e) => return Outcome::Fallback(format!("cannot open a NETLINK_SOCK_DIAG socket: {e}")),
    };
    let mut listening = Vec::new();
    if let Err(e) = diag.dump(Query::Listening, |s| listening.push(s)) {
        return Outcome::Fallback(format!("cannot list listening TCP sockets through sock_diag: {e}"));
    }
    let watch = match watched_ports(&ctx.cfg.ports, ctx.child_pid, &listening) {
        Ok(w) => w,
        Err(reason) => return Outcome::Fallback(reason),
    };
    let (snmp, view_why) = choose_view(&listening, &watch);
    let view = if snmp.is_some() { "counters" } else { "sockets" };
    // With the counters, the connections of every other listening port are
    // dumped too, so that the count of accepted connections is matched.
    let others = if snmp.is_some() { other_ports(&listening, &watch.ports) } else { Vec::new() };
    let mut filter = watch.ports.clone();
    filter.extend(&others);
    let mut sampler = Sampler::new(diag, filter, others, snmp);
    if let Err(e) = sampler.sample(true) {
        return Outcome::Fallback(format!("cannot list TCP sockets through sock_diag: {e}"));
    }
    let budget = bound - begin;
    // The history ends at the stop signal: by the time a strategy before
    // this one is done, the load balancers may have let go already, and
    // their pooled connections, with the requests they carried, be gone.
    let snapshot = at_stop.unwrap_or_else(|| Snapshot::of(begin, sampler.counters, &sampler.socks));
    let choice = quiet::choose(ctx.cfg.quiet_period, history(&snapshot, sampler.snmp.is_some()), budget);
    let quiet = choice.quiet;
    let interval = sample_interval(quiet);
    info!(
        quiet_ms = quiet.as_millis() as u64,
        source = choice.source,
        rate_per_s = choice.rate.map(|r| (r.0 * 100.0).round() / 100.0),
        rate_low_per_s = choice.rate.map(|r| (r.1 * 100.0).round() / 100.0),
        why = %choice.why,
        "quiet period chosen"
    );
    let mut tracker = Tracker::new(begin, quiet, &sampler.socks);
    let ports_text = join(&watch.ports);
    info!(
        ports = %ports_text,
        source = watch.source,
        view,
        why = %view_why,
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
            let (last_conn, last_byte, last_close) =
                (since_stop(tracker.last_conn), since_stop(tracker.last_byte), since_stop(tracker.last_close));
            let (p50, max) = sampler.intervals();
            let seen = format!(
                "last new connection {}, last byte {}, last close {}, {} inbound connection(s) still open; \
                 sample interval p50 {}ms, max {}ms ({view} view)",
                after_stop(last_conn),
                after_stop(last_byte),
                after_stop(last_close),
                tracker.open,
                p50.as_millis(),
                max.as_millis(),
            );
            macro_rules! report {
                ($level:ident, $msg:literal) => {
                    $level!(
                        ports = %ports_text,
                        last_connection_ms = last_conn,
                        last_byte_ms = last_byte,
                        last_close_ms = last_close,
                        open_connections = tracker.open,
                        new_connections = tracker.new_conns,
                        unseen_connections = tracker.unseen_conns,
                        closed_connections = tracker.closed_conns,
                        samples = sampler.samples,
                        dumps = sampler.dumps,
                        sample_p50_ms = p50.as_millis() as u64,
                        sample_max_ms = max.as_millis() as u64,
                        max_sample_us = sampler.max_wall.as_micros() as u64,
                        max_sample_cpu_us = sampler.max_cpu.as_micros() as u64,
                        $msg
                    )
                };
            }
            return if quiet_seen {
                report!(info, "inbound traffic went quiet");
                Outcome::Done(format!("no inbound traffic on port {ports_text} for {}ms ({}): {seen}", quiet.as_millis(), choice.source))
            } else {
                report!(warn, "inbound traffic never went quiet within the drain budget: stopping the app anyway");
                Outcome::Done(format!("inbound traffic on port {ports_text} never went quiet within the drain budget: {seen}"))
            };
        }
        // The next sample is due one pause after the previous one started,
        // however long that one took to get a CPU.
        let pause = interval.max(sampler.last_cpu * MAX_DUTY);
        sleep_until((sampler.last_start + pause).min(quiet_at).min(bound));
        match sampler.sample(tracker.unconfirmed()) {
            Ok(Sampled::Unchanged) => {
                failures = 0;
                tracker.unchanged(sampler.last_start);
            }
            Ok(Sampled::Dumped { opened }) => {
                failures = 0;
                tracker.observe(Instant::now(), &sampler.socks, opened);
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

/// The watched ports, where they came from, and the processes that make up
/// the app.
struct Watch {
    ports: Vec<u16>,
    source: &'static str,
    /// The app's processes: the child's tree, or (without a child, e.g.
    /// `lastcall drain`) the processes that hold a watched listening socket.
    app: Vec<i32>,
}

/// The ports to watch, or why there are none.
fn watched_ports(given: &[u16], child_pid: Option<i32>, listening: &[Sock]) -> Result<Watch, String> {
    let tree = child_pid.map(procfs::process_tree);
    if !given.is_empty() {
        let mut ports = given.to_vec();
        ports.sort_unstable();
        ports.dedup();
        let app = match tree {
            Some(t) => t,
            None => {
                let inodes: HashSet<u64> = listening.iter().filter(|s| ports.contains(&s.local_port)).map(|s| u64::from(s.inode)).collect();
                procfs::listener_holders(&inodes)
            }
        };
        return Ok(Watch { ports, source: "--port", app });
    }
    let (Some(pid), Some(tree)) = (child_pid, tree) else {
        return Err("no app process to take listening ports from: set --port".into());
    };
    let inodes = procfs::socket_inodes(&tree).map_err(|e| format!("cannot read the app's sockets: {e}; set --port"))?;
    let mut ports: Vec<u16> = listening.iter().filter(|s| inodes.contains(&u64::from(s.inode))).map(|s| s.local_port).collect();
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() {
        return Err(format!("the app (pid {pid} and {} descendant(s)) has no listening TCP socket: set --port", tree.len() - 1));
    }
    Ok(Watch { ports, source: "the app's listening sockets", app: tree })
}

/// The namespace's other listening ports: lastcall's own (`lastcall
/// sidecar`'s HTTP endpoint), a sidecar's (a service mesh proxy's, whose
/// outbound listener also accepts the app's own intercepted outbound
/// connections), a metrics or probe port left out of `--port`. Connections
/// to them are not traffic: what reaches the app shows on its own ports.
/// But they are accepted in the namespace like the app's, so the samples
/// see them too, to match the count of accepted connections.
fn other_ports(listening: &[Sock], watched: &[u16]) -> Vec<u16> {
    let mut ports: Vec<u16> = listening.iter().map(|s| s.local_port).filter(|p| !watched.contains(p)).collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The counters when the network namespace is the pod's own, and why (or
/// why not). The namespace is shared when it is the host's, or when a
/// process lastcall can see, other than lastcall and the app, listens in
/// it (a test runner, another service): their connections would count.
/// Processes lastcall cannot see (other containers of the pod: sidecars)
/// are part of the pod, and their inbound connections are the pod's.
fn choose_view(listening: &[Sock], watch: &Watch) -> (Option<Snmp>, String) {
    if procfs::in_host_netns() {
        return (None, "the host's network namespace: other services' connections would count".into());
    }
    let inodes: HashSet<u64> = listening.iter().map(|s| u64::from(s.inode)).filter(|&i| i != 0).collect();
    let me = std::process::id() as i32;
    let others: Vec<i32> = procfs::listener_holders(&inodes).into_iter().filter(|p| *p != me && !watch.app.contains(p)).collect();
    if !others.is_empty() {
        let names: Vec<String> = others.iter().take(3).map(|&p| format!("{p} ({})", procfs::comm(p))).collect();
        return (None, format!("shared network namespace: other processes listen in it: {}", names.join(", ")));
    }
    match Snmp::open().and_then(|mut s| s.read().map(|_| s)) {
        Ok(s) => (Some(s), "a network namespace of its own: every accepted connection is counted".into()),
        Err(e) => (None, format!("cannot read /proc/net/snmp: {e}")),
    }
}

/// What the pod had received by some instant: the namespace's counters and
/// the inbound connections still open, for the quiet period's history.
pub struct Snapshot {
    at: Instant,
    counters: Option<Counters>,
    /// Open inbound connections on the watched ports, the requests they
    /// carried (see `history`), and the short ones still in TIME_WAIT.
    live: u64,
    requests: u64,
    time_wait: u64,
}

impl Snapshot {
    fn of(at: Instant, counters: Option<Counters>, socks: &[Seen]) -> Snapshot {
        let mine = || socks.iter().filter(|s| !s.other);
        let live = || mine().filter_map(|s| s.info);
        Snapshot {
            at,
            counters,
            live: live().count() as u64,
            requests: live().map(|i| i.data_segs.map_or(1, |(din, dout)| u64::from(din.min(dout)).max(1))).sum(),
            time_wait: mine().filter(|s| s.state == TCP_TIME_WAIT).count() as u64,
        }
    }
}

/// The snapshot at the stop signal, for a traffic strategy that runs after
/// another one (`k8s,traffic`): one listing of the app's connections and
/// one read of the counters. None when they cannot be read (the strategy
/// then says why when it starts, and uses what it sees then).
pub fn at_stop(given_ports: &[u16], child_pid: Option<i32>) -> Option<Snapshot> {
    let at = Instant::now();
    let mut diag = Diag::open().ok()?;
    let mut listening = Vec::new();
    diag.dump(Query::Listening, |s| listening.push(s)).ok()?;
    let watch = watched_ports(given_ports, child_pid, &listening).ok()?;
    let mut socks = Vec::new();
    diag.dump(Query::Connections(&watch.ports), |s| {
        if watch.ports.contains(&s.local_port) {
            socks.push(Seen { cookie: s.cookie, state: s.state, other: false, info: s.info });
        }
    })
    .ok()?;
    let counters = Snmp::open().and_then(|mut s| s.read()).ok();
    Some(Snapshot::of(at, counters, &socks))
}

/// The pod's history up to the snapshot (see `quiet.rs`): arrivals are the
/// connections accepted since lastcall started (with the counters) or the
/// short connections still in TIME_WAIT (without), plus the requests on the
/// connections still open, each counted as min(data segments in, data
/// segments out): about one per request and answer, also when a large
/// upload or download spans many segments.
fn history(snap: &Snapshot, counters_view: bool) -> Option<History> {
    let (start, start_counters, since) = match snmp::startup() {
        Some((at, c)) => (at, c, "since lastcall started"),
        None => (snap.at.checked_sub(procfs::pid1_age()?)?, Counters::default(), "since PID 1 started"),
    };
    let arrivals = match snap.counters.filter(|_| counters_view) {
        Some(now) => now.passive_opens.saturating_sub(start_counters.passive_opens).saturating_sub(snap.live) + snap.requests,
        None => snap.requests + snap.time_wait,
    };
    Some(History { arrivals, span: snap.at.saturating_duration_since(start), since })
}

/// What the strategy would watch and wait for, were the stop signal now:
/// for `lastcall explain`, from another process than the PID 1, so the
/// history is counted from PID 1's start.
pub struct Preview {
    pub ports: Vec<u16>,
    /// Where the ports come from: `--port` or the app's listening sockets.
    pub source: &'static str,
    /// Whether the namespace's counters are used, and why (or why not).
    pub counters: bool,
    pub view: String,
    pub quiet: quiet::Choice,
}

/// See `Preview`. `app` is the app's pid (its process tree is watched).
pub fn preview(given_ports: &[u16], app: Option<i32>, fixed: Option<Duration>, budget: Duration) -> Result<Preview, String> {
    let mut diag = Diag::open().map_err(|e| format!("cannot open a NETLINK_SOCK_DIAG socket: {e}"))?;
    let mut listening = Vec::new();
    diag.dump(Query::Listening, |s| listening.push(s)).map_err(|e| format!("cannot list listening TCP sockets: {e}"))?;
    let watch = watched_ports(given_ports, app, &listening)?;
    let (snmp, view) = choose_view(&listening, &watch);
    let history = at_stop(given_ports, app).and_then(|snap| history(&snap, snmp.is_some()));
    Ok(Preview { ports: watch.ports, source: watch.source, counters: snmp.is_some(), view, quiet: quiet::choose(fixed, history, budget) })
}

/// What a sample found.
enum Sampled {
    /// The counters say nothing arrived in the namespace since the last
    /// sample: no dump.
    Unchanged,
    /// The sockets were dumped into `socks`; `opened` is how many
    /// connections the namespace accepted since the last dump (with the
    /// counters).
    Dumped { opened: Option<u64> },
}

/// Takes samples: the counters, and the inbound sockets of the watched
/// ports (and, with the counters, of the other listening ports).
struct Sampler {
    diag: Diag,
    /// The dump's port filter: the watched ports and `others`.
    ports: Vec<u16>,
    others: Vec<u16>,
    snmp: Option<Snmp>,
    /// The counters at the last dump.
    counters: Option<Counters>,
    socks: Vec<Seen>,
    last_start: Instant,
    last_cpu: Duration,
    max_cpu: Duration,
    max_wall: Duration,
    samples: u64,
    dumps: u64,
    /// Milliseconds between the starts of consecutive samples (saturating
    /// at 65 s), for the real intervals.
    gaps_ms: Vec<u16>,
}

impl Sampler {
    fn new(diag: Diag, ports: Vec<u16>, others: Vec<u16>, snmp: Option<Snmp>) -> Sampler {
        Sampler {
            diag,
            ports,
            others,
            snmp,
            counters: None,
            socks: Vec::new(),
            last_start: Instant::now(),
            last_cpu: Duration::ZERO,
            max_cpu: Duration::ZERO,
            max_wall: Duration::ZERO,
            samples: 0,
            dumps: 0,
            gaps_ms: Vec::with_capacity(256),
        }
    }

    /// One sample; `force` dumps even when the counters did not move. The
    /// counters are read before the dump: a connection accepted between
    /// the two is seen now and counted next time (see `Tracker::observe`).
    fn sample(&mut self, force: bool) -> std::io::Result<Sampled> {
        let (t, cpu) = (Instant::now(), thread_cpu());
        if self.samples > 0 {
            self.gaps_ms.push(u16::try_from((t - self.last_start).as_millis()).unwrap_or(u16::MAX));
        }
        self.last_start = t;
        self.samples += 1;
        let result = self.take(force);
        let (wall, cpu) = (t.elapsed(), thread_cpu().saturating_sub(cpu));
        self.last_cpu = cpu;
        self.max_cpu = self.max_cpu.max(cpu);
        self.max_wall = self.max_wall.max(wall);
        result
    }

    fn take(&mut self, force: bool) -> std::io::Result<Sampled> {
        let read = match &mut self.snmp {
            Some(s) => Some(s.read()?),
            None => None,
        };
        if !force && read.is_some() && read == self.counters {
            return Ok(Sampled::Unchanged);
        }
        let (ports, others, socks) = (&self.ports, &self.others, &mut self.socks);
        socks.clear();
        let skipped = self.diag.dump(Query::Connections(ports), |s: Sock| {
            if ports.contains(&s.local_port) {
                socks.push(Seen { cookie: s.cookie, state: s.state, other: others.contains(&s.local_port), info: s.info });
            }
        })?;
        if skipped > 0 {
            debug!(skipped, "sock_diag messages that did not parse");
        }
        self.dumps += 1;
        let opened = match (read, self.counters) {
            (Some(now), Some(before)) => Some(now.passive_opens.saturating_sub(before.passive_opens)),
            _ => None,
        };
        // Committed only with a complete dump: a failed one leaves the
        // connections it missed to the next sample's count.
        if read.is_some() {
            self.counters = read;
        }
        Ok(Sampled::Dumped { opened })
    }

    /// The real intervals between sample starts: median and maximum.
    fn intervals(&self) -> (Duration, Duration) {
        let mut gaps = self.gaps_ms.clone();
        gaps.sort_unstable();
        let ms = |i: usize| gaps.get(i).map_or(Duration::ZERO, |&g| Duration::from_millis(g.into()));
        (ms(gaps.len() / 2), ms(gaps.len().wrapping_sub(1)))
    }
}

/// CPU time (user + system) of the calling thread: CLOCK_THREAD_CPUTIME_ID.
fn thread_cpu() -> Duration {
    // Cannot fail: the calling thread's CPU clock always exists (Linux 2.6.12+).
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// One inbound socket as a sample saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seen {
    cookie: u64,
    state: u8,
    /// On a listening port that is not watched: counted, never traffic.
    other: bool,
    info: Option<TcpInfo>,
}

/// What the previous sample knew about a connection.
#[derive(Debug, Clone, Copy)]
struct Known {
    bytes: Option<u64>,
    /// `now - tcpi_last_data_recv` at that sample (uncorrected).
    recv_at: Option<Instant>,
    /// A full socket with a tcp_info (not TIME_WAIT, not a request).
    live: bool,
    /// Not a request socket (see `observe`).
    complete: bool,
    other: bool,
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
    last_close: Option<Instant>,
    /// Established inbound connections in the latest sample.
    open: usize,
    /// New inbound connections seen by a sample, since `begin`.
    new_conns: u64,
    /// Connections only the namespace's count saw.
    unseen_conns: u64,
    /// Known inbound connections that closed.
    closed_conns: u64,
    /// Accepted connections counted but not seen, since `begin` (can be
    /// below zero for a moment: see `observe`).
    deficit: i64,
    /// The deficit at the previous dump, and the part of it already taken
    /// as unseen connections.
    prev_deficit: i64,
    confirmed: i64,
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
            last_close: None,
            open: 0,
            new_conns: 0,
            unseen_conns: 0,
            closed_conns: 0,
            deficit: 0,
            prev_deficit: 0,
            confirmed: 0,
        };
        t.known = t.remember(begin, baseline);
        t.open = count_open(baseline);
        t
    }

    fn remember(&self, now: Instant, socks: &[Seen]) -> HashMap<u64, Known> {
        socks
            .iter()
            .map(|s| {
                let known = Known {
                    bytes: s.info.and_then(|i| i.bytes_received),
                    recv_at: s.info.map(|i| ago(now, i)),
                    live: s.info.is_some(),
                    complete: s.state != TCP_SYN_RECV,
                    other: s.other,
                };
                (s.cookie, known)
            })
            .collect()
    }

    /// A sample at `now` found the counters unchanged: nothing arrived.
    fn unchanged(&mut self, now: Instant) {
        self.prev = self.prev.max(now);
    }

    /// Folds in a sample taken at `now` (after the dump returned);
    /// `opened` is the namespace's count of accepted connections since the
    /// previous dump, with the counters.
    fn observe(&mut self, now: Instant, socks: &[Seen], opened: Option<u64>) {
        let prev = self.prev;
        // When data seen in this sample arrived: `tcpi_last_data_recv` ago,
        // one tick later for rounding, and within (prev, now].
        let arrival = |info: Option<TcpInfo>| match info {
            Some(i) => (ago(now, i) + JIFFY).max(prev).min(now),
            None => now,
        };
        let mut seen_new = 0;
        for s in socks {
            let complete = s.state != TCP_SYN_RECV;
            match self.known.get(&s.cookie) {
                // New, or a request socket (handshake in progress) that
                // became its connection: the connection's socket inherits
                // the request's cookie (inet_csk_clone_lock), and the count
                // includes it only now. Only complete connections match
                // the count.
                None => {
                    seen_new += u64::from(complete);
                    if s.other {
                        continue;
                    }
                    let at = arrival(s.info);
                    self.new_conns += u64::from(complete);
                    self.last_conn = self.last_conn.max(Some(at));
                    if s.info.and_then(|i| i.bytes_received).is_some_and(|b| b > 0) {
                        self.last_byte = self.last_byte.max(Some(at));
                    }
                }
                Some(k) if !k.complete && complete => {
                    seen_new += 1;
                    if !s.other {
                        self.new_conns += 1;
                        self.last_conn = self.last_conn.max(Some(arrival(s.info)));
                        if s.info.and_then(|i| i.bytes_received).is_some_and(|b| b > 0) {
                            self.last_byte = self.last_byte.max(Some(arrival(s.info)));
                        }
                    }
                }
                Some(k) if !k.other => {
                    let data = match (k.bytes, s.info) {
                        (Some(before), Some(TcpInfo { bytes_received: Some(after), .. })) => after != before,
                        // Kernels before 4.1: no byte counter, so the
                        // last-receive time moving on (by more than the
                        // jiffies rounding) is the sign of new data.
                        (_, Some(i)) => k.recv_at.is_some_and(|before| ago(now, i) > before + 2 * JIFFY),
                        // TIME_WAIT: the connection is over (a close,
                        // counted below when it was open before).
                        (_, None) => false,
                    };
                    if data {
                        self.last_byte = self.last_byte.max(Some(arrival(s.info)));
                    }
                }
                Some(_) => {}
            }
        }
        let next = self.remember(now, socks);
        // A connection that was open and is now gone (or in TIME_WAIT) may
        // have received data after the previous sample: its close is
        // traffic, at this sample.
        let closed = self.known.iter().filter(|(c, k)| k.live && !k.other && !next.get(c).is_some_and(|n| n.live)).count() as u64;
        if closed > 0 {
            self.closed_conns += closed;
            self.last_close = Some(now);
        }
        // The count is read just before the dump, and the kernel counts a
        // connection a moment before it can be listed: one accepted in
        // between is counted by one sample and seen by the next (or, the
        // other way round, seen first and counted next). So a deficit is
        // taken as unseen connections only once two dumps in a row show it,
        // placed at the first of them (the connection came before it).
        if let Some(opened) = opened {
            self.deficit += opened as i64 - seen_new as i64;
            let persisted = self.deficit.min(self.prev_deficit);
            if persisted > self.confirmed {
                self.unseen_conns += (persisted - self.confirmed) as u64;
                self.confirmed = persisted;
                self.last_conn = self.last_conn.max(Some(prev));
            }
            self.prev_deficit = self.deficit;
        }
        self.known = next;
        self.open = count_open(socks);
        self.prev = now;
    }

    /// Traffic-free since then.
    fn quiet_since(&self) -> Instant {
        [self.last_conn, self.last_byte, self.last_close].into_iter().flatten().fold(self.begin, Instant::max)
    }

    /// The drain is over once a sample at or after this instant saw nothing new.
    fn quiet_at(&self) -> Instant {
        self.quiet_since() + self.quiet
    }

    /// Does the count show connections the dumps have not accounted for
    /// yet? Then the next sample must dump, and the quiet period is not
    /// over before it has.
    fn unconfirmed(&self) -> bool {
        self.deficit > self.confirmed
    }

    /// Has a successful sample confirmed a full quiet period? (A failed
    /// sample at `quiet_at` proves nothing.)
    fn quiet_seen(&self) -> bool {
        self.prev >= self.quiet_at() && !self.unconfirmed()
    }
}

/// Established inbound connections on the watched ports.
fn count_open(socks: &[Seen]) -> usize {
    socks.iter().filter(|s| !s.other && s.state == TCP_ESTABLISHED).count()
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

    fn info(bytes: u64, last_recv_ms: u32) -> Option<TcpInfo> {
        Some(TcpInfo { last_data_recv_ms: last_recv_ms, bytes_received: Some(bytes), data_segs: None })
    }

    fn conn(cookie: u64, bytes: u64, last_recv_ms: u32) -> Seen {
        Seen { cookie, state: TCP_ESTABLISHED, other: false, info: info(bytes, last_recv_ms) }
    }

    fn time_wait(cookie: u64) -> Seen {
        Seen { cookie, state: TCP_TIME_WAIT, other: false, info: None }
    }

    #[test]
    fn no_traffic_drains_in_one_quiet_period() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, Q, &[conn(1, 100, 5000)]);
        assert_eq!(t.quiet_at(), t0 + Q);
        t.observe(t0 + ms(100), &[conn(1, 100, 5100)], None);
        assert_eq!(t.quiet_at(), t0 + Q);
        assert_eq!((t.last_conn, t.last_byte, t.last_close, t.open), (None, None, None, 1));
    }

    #[test]
    fn data_on_a_kept_alive_connection_is_traffic() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, Q, &[conn(1, 100, 0)]);
        // Data arrived 30 ms before the sample at +100 ms.
        t.observe(t0 + ms(100), &[conn(1, 180, 30)], None);
        assert_eq!(t.last_byte, Some(t0 + ms(70) + JIFFY));
        assert_eq!(t.quiet_at(), t0 + ms(80) + Q);
        // Then nothing: bytes unchanged, last receive ages.
        t.observe(t0 + ms(200), &[conn(1, 180, 130)], None);
        assert_eq!(t.quiet_at(), t0 + ms(80) + Q);
        assert_eq!(t.last_conn, None);
    }

    #[test]
    fn arrival_stays_within_the_sample_window() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, Q, &[conn(1, 100, 0)]);
        // last_data_recv claims long ago, but the counter moved since the
        // previous sample: it arrived after that sample.
        t.observe(t0 + ms(100), &[conn(1, 150, 5000)], None);
        assert_eq!(t.last_byte, Some(t0));
        // A fresh arrival is not placed after the sample itself.
        t.observe(t0 + ms(200), &[conn(1, 160, 0)], None);
        assert_eq!(t.last_byte, Some(t0 + ms(200)));
    }

    #[test]
    fn a_new_connection_is_traffic_even_without_data() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, Q, &[]);
        t.observe(t0 + ms(100), &[conn(7, 0, 40)], None);
        assert_eq!(t.last_conn, Some(t0 + ms(60) + JIFFY));
        assert_eq!(t.last_byte, None);
        assert_eq!(t.new_conns, 1);
        // Seen again later: not new any more.
        t.observe(t0 + ms(200), &[conn(7, 0, 140)], None);
        assert_eq!(t.new_conns, 1);
        assert_eq!(t.quiet_at(), t0 + ms(70) + Q);
    }

    #[test]
    fn a_short_connection_seen_only_in_time_wait_is_new() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, Q, &[time_wait(3)]);
        t.observe(t0 + ms(100), &[time_wait(3), time_wait(4)], None);
        assert_eq!(t.last_conn, Some(t0 + ms(100)));
        assert_eq!(t.new_conns, 1);
        // A TIME_WAIT that expires is no close: it was over already.
        t.observe(t0 + ms(200), &[], None);
        assert_eq!((t.closed_conns, t.last_close), (0, None));
    }

    #[test]
    fn a_known_connection_that_closes_is_traffic_at_the_noticing_sample() {
        let t0 = Instant::now();
        // To TIME_WAIT (the app closed it) ...
        let mut t = Tracker::new(t0, Q, &[conn(5, 10, 0), conn(6, 10, 0)]);
        t.observe(t0 + ms(100), &[time_wait(5), conn(6, 10, 100)], None);
        assert_eq!((t.last_conn, t.last_byte, t.last_close, t.closed_conns, t.open), (None, None, Some(t0 + ms(100)), 1, 1));
        // ... or gone (the client closed it first): bytes that came before
        // the close were never seen; the close is placed at the sample.
        t.observe(t0 + ms(200), &[time_wait(5)], None);
        assert_eq!((t.last_close, t.closed_conns, t.open), (Some(t0 + ms(200)), 2, 0));
        assert_eq!(t.quiet_at(), t0 + ms(200) + Q);
        assert!(!t.known.contains_key(&6));
    }

    #[test]
    fn connections_only_the_count_saw_are_traffic() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, Q, &[]);
        // Three accepted, one still there: two came and went unseen ...
        t.observe(t0 + ms(100), &[conn(1, 10, 50)], Some(3));
        assert_eq!((t.new_conns, t.unseen_conns), (1, 0));
        assert!(t.unconfirmed());
        // ... which the next dump confirms, placing them at the first.
        t.observe(t0 + ms(200), &[conn(1, 10, 150)], Some(0));
        assert_eq!((t.unseen_conns, t.last_conn), (2, Some(t0 + ms(100))));
        assert!(!t.unconfirmed());
        // Nothing accepted, nothing new: no traffic.
        t.observe(t0 + ms(300), &[conn(1, 10, 250)], Some(0));
        assert_eq!((t.unseen_conns, t.last_conn), (2, Some(t0 + ms(100))));
    }

    #[test]
    fn a_connection_counted_and_seen_in_different_samples_is_no_unseen_one() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, Q, &[]);
        // Accepted between the counter read and the dump: seen, not counted yet.
        t.observe(t0 + ms(100), &[conn(1, 0, 0)], Some(0));
        assert_eq!((t.new_conns, t.unseen_conns, t.deficit), (1, 0, -1));
        // Counted by the next read.
        t.observe(t0 + ms(200), &[conn(1, 0, 100)], Some(1));
        assert_eq!((t.unseen_conns, t.deficit), (0, 0));
        // Counted, but not yet listed by the dump right after the read ...
        t.observe(t0 + ms(300), &[conn(1, 0, 200)], Some(1));
        assert!(t.unconfirmed());
        let quiet_at = t.quiet_at();
        t.prev = quiet_at;
        assert!(!t.quiet_seen(), "an unconfirmed count must not end the drain");
        // ... and listed by the next: nothing was unseen.
        t.observe(quiet_at + ms(1), &[conn(1, 0, 300), conn(2, 0, 0)], Some(0));
        assert_eq!((t.unseen_conns, t.new_conns, t.unconfirmed()), (0, 2, false));
        // A real unseen one is still found.
        t.observe(quiet_at + ms(100), &[conn(1, 0, 300), conn(2, 0, 0)], Some(1));
        t.observe(quiet_at + ms(200), &[conn(1, 0, 300), conn(2, 0, 0)], Some(0));
        assert_eq!((t.unseen_conns, t.last_conn), (1, Some(quiet_at + ms(100))));
    }

    #[test]
    fn request_sockets_and_other_listening_ports() {
        let t0 = Instant::now();
        let syn = Seen { cookie: 9, state: TCP_SYN_RECV, other: false, info: None };
        let own = Seen { cookie: 10, state: TCP_ESTABLISHED, other: true, info: info(5, 0) };
        let mut t = Tracker::new(t0, Q, &[]);
        t.observe(t0 + ms(100), &[syn, own], Some(2));
        // The handshake in progress is traffic (now); the connection to
        // another listening port (lastcall's own, a sidecar's) is not, but
        // it is one of the two the count saw: one is left unexplained.
        assert_eq!((t.new_conns, t.open, t.last_conn, t.last_byte), (0, 0, Some(t0 + ms(100)), None));
        assert!(t.unconfirmed());
        // The request socket's connection closed before the next dump (the
        // client gave up): the count keeps it unexplained, so it was
        // unseen. The other port's connection closing is no traffic.
        t.observe(t0 + ms(200), &[], Some(0));
        assert_eq!((t.unseen_conns, t.closed_conns, t.last_close, t.last_conn), (1, 0, None, Some(t0 + ms(100))));
    }

    #[test]
    fn a_request_socket_that_becomes_its_connection_keeps_its_cookie() {
        let t0 = Instant::now();
        let syn = Seen { cookie: 9, state: TCP_SYN_RECV, other: false, info: None };
        let mut t = Tracker::new(t0, Q, &[]);
        // The handshake in progress, not counted yet.
        t.observe(t0 + ms(100), &[syn], Some(0));
        assert_eq!((t.new_conns, t.deficit, t.last_conn), (0, 0, Some(t0 + ms(100))));
        // Complete, counted, same cookie, with a request already received.
        t.observe(t0 + ms(200), &[conn(9, 80, 20)], Some(1));
        assert_eq!((t.new_conns, t.deficit, t.unseen_conns), (1, 0, 0));
        assert_eq!(t.last_byte, Some(t0 + ms(180) + JIFFY));
        t.observe(t0 + ms(300), &[conn(9, 80, 120)], Some(0));
        assert_eq!((t.new_conns, t.unseen_conns, t.unconfirmed()), (1, 0, false));
    }

    #[test]
    fn unchanged_counters_confirm_the_quiet_period() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, Q, &[conn(1, 10, 0)]);
        t.unchanged(t0 + ms(900));
        assert!(!t.quiet_seen());
        t.unchanged(t0 + Q);
        assert!(t.quiet_seen());
    }

    #[test]
    fn old_kernels_use_the_last_receive_time() {
        let t0 = Instant::now();
        let old = |last: u32| Seen {
            cookie: 1,
            state: TCP_ESTABLISHED,
            other: false,
            info: Some(TcpInfo { last_data_recv_ms: last, bytes_received: None, data_segs: None }),
        };
        let mut t = Tracker::new(t0, Q, &[old(500)]);
        // Same arrival instant, seen 100 ms later (+4 ms rounding): no data.
        t.observe(t0 + ms(100), &[old(604)], None);
        assert_eq!(t.last_byte, None);
        // The arrival moved to 10 ms before this sample: data.
        t.observe(t0 + ms(200), &[old(10)], None);
        assert_eq!(t.last_byte, Some(t0 + ms(190) + JIFFY));
    }

    #[test]
    fn only_a_sample_confirms_the_quiet_period() {
        let t0 = Instant::now();
        let mut t = Tracker::new(t0, Q, &[]);
        assert!(!t.quiet_seen());
        t.observe(t0 + ms(900), &[], None);
        assert!(!t.quiet_seen());
        t.observe(t0 + Q, &[], None);
        assert!(t.quiet_seen());
        // Traffic seen by that same sample postpones the end.
        let mut t = Tracker::new(t0, Q, &[]);
        t.observe(t0 + Q, &[conn(1, 10, 0)], None);
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
