//! The `wait-port` strategy (`lastcall sidecar --wait-port P`): wait until
//! the app beside us no longer accepts connections on its ports.
//!
//! The containers of a pod share one network namespace, so the app's
//! listening sockets are reachable on localhost from the sidecar. Every
//! ~100 ms each port is probed with a TCP connect to `127.0.0.1:P` *and*
//! `[::1]:P`; the port counts as open while either address accepts. Both,
//! because an app bound to `0.0.0.0` is only reachable over IPv4, one bound
//! to `::1` (or to `[::]` with `IPV6_V6ONLY`) only over IPv6, and probing just
//! one family would see such a port as closed from the start.
//!
//! What each probe result means:
//! * connected: open (the connection is closed at once; the app sees an
//!   empty connection, about ten a second per port while the drain lasts);
//! * refused, or the address is unusable (no IPv6 in the pod, no route):
//!   not listening there;
//! * no answer within the probe timeout: open. On Linux a listener whose
//!   accept queue is full drops the SYN, so an overloaded app is alive.
//!
//! Limits: a port the app binds only on the pod IP (not on a wildcard
//! address or loopback) is invisible here and reads as closed at once; and
//! the port closing means the app stopped *accepting*, which a graceful app
//! does before it finishes its in-flight requests. The helper's own graceful
//! stop (e.g. cloud-sql-proxy's `--max-sigterm-delay`) covers that tail.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::{join, Ctx, Outcome, Strategy};

/// Time between two rounds of probes.
const POLL: Duration = Duration::from_millis(100);
/// Longest wait for one connect on loopback, where an answer takes
/// microseconds unless the listener's queue is full.
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// The strategy: the sidecar helper's drain, never a `--drain` choice.
pub struct WaitPort;

impl Strategy for WaitPort {
    fn name(&self) -> &'static str {
        "wait-port"
    }

    fn wait(&mut self, ctx: &Ctx) -> Outcome {
        let ports = &ctx.cfg.wait_ports;
        if ports.is_empty() {
            return Outcome::Fallback("no --wait-port given".into());
        }
        let until = ctx.bounded_until();
        let list = join(ports);
        loop {
            let open: Vec<u16> = ports.iter().copied().filter(|&p| port_open(p, until)).collect();
            let waited = ctx.started.elapsed().as_millis();
            if open.is_empty() {
                return Outcome::Done(format!("app ports {list} closed after {waited}ms"));
            }
            let now = Instant::now();
            if now >= until {
                let still = join(&open);
                warn!(ports = %still, waited_ms = waited, "app ports still accept connections at the drain deadline: going on");
                return Outcome::Done(format!("drain deadline reached after {waited}ms with app ports {still} still open"));
            }
            debug!(ports = %join(&open), "app ports still open");
            // Polling: a port closing sends no event to another process, so
            // the strategy samples it (connect is the only portable
            // observation).
            std::thread::sleep(POLL.min(until - now));
        }
    }
}

/// Whether `port` accepts connections on IPv4 or IPv6 loopback.
fn port_open(port: u16, until: Instant) -> bool {
    [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)].into_iter().any(|ip| probe(SocketAddr::new(ip, port), until))
}

fn probe(addr: SocketAddr, until: Instant) -> bool {
    // connect_timeout rejects a zero timeout; 1 ms is "no time left".
    let timeout = PROBE_TIMEOUT.min(until.saturating_duration_since(Instant::now())).max(Duration::from_millis(1));
    match TcpStream::connect_timeout(&addr, timeout) {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::TimedOut => true,
        Err(e) => {
            if e.kind() != io::ErrorKind::ConnectionRefused {
                debug!(%addr, error = %e, "probe: address unusable, counted as not listening");
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DrainConfig, K8sConfig};
    use std::net::TcpListener;

    fn cfg(wait_ports: Vec<u16>) -> DrainConfig {
        DrainConfig {
            strategies: vec![],
            delay: Duration::from_secs(15),
            timeout: None,
            propagation_delay: Duration::ZERO,
            poll_interval: Duration::from_secs(1),
            quiet_period: None,
            ports: vec![],
            wait_ports,
            close_idle: vec![],
            k8s: K8sConfig::default(),
        }
    }

    fn run_wait(cfg: &DrainConfig, until: Duration) -> Outcome {
        let started = Instant::now();
        WaitPort.wait(&Ctx::new(started, started + until, cfg))
    }

    /// A port nobody listens on: bind an ephemeral port, then free it.
    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    #[test]
    fn closed_port_is_done_at_once() {
        let c = cfg(vec![free_port()]);
        let t = Instant::now();
        let out = run_wait(&c, Duration::from_secs(10));
        assert!(matches!(&out, Outcome::Done(s) if s.contains("closed")), "{out:?}");
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn open_port_waits_until_the_deadline() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = cfg(vec![l.local_addr().unwrap().port()]);
        let t = Instant::now();
        let out = run_wait(&c, Duration::from_millis(400));
        assert!(matches!(&out, Outcome::Done(s) if s.contains("still open")), "{out:?}");
        assert!(t.elapsed() >= Duration::from_millis(400));
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn ipv6_only_listener_counts_as_open() {
        // The test machines have an IPv6 loopback; a machine without one
        // must fail here rather than pass without testing anything.
        let l = TcpListener::bind("[::1]:0").expect("an IPv6 loopback address to listen on");
        let c = cfg(vec![l.local_addr().unwrap().port()]);
        let out = run_wait(&c, Duration::from_millis(300));
        assert!(matches!(&out, Outcome::Done(s) if s.contains("still open")), "{out:?}");
    }

    #[test]
    fn no_ports_falls_back() {
        let c = cfg(vec![]);
        assert!(matches!(run_wait(&c, Duration::from_secs(1)), Outcome::Fallback(_)));
    }
}
