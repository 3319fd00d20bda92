//! The kernel's TCP counters of lastcall's network namespace, from
//! /proc/net/snmp (the `Tcp:` lines, RFC 4022 names; what `netstat -s`
//! and `nstat` read). Every network namespace has its own set, starting
//! at zero when the namespace is created; they only grow.
//!
//! Two are used, and only one of them is inbound-only:
//! * `PassiveOpens`: connections accepted by a listening socket of the
//!   namespace (incremented when the handshake completes and the kernel
//!   creates the connection's socket, before the app's accept()). Inbound
//!   by definition, exact, and it sees a connection that opens and closes
//!   between two samples.
//! * `InSegs`: every TCP segment received, on inbound connections *and* on
//!   the app's outbound ones (answers from a database, an upstream, the
//!   Kubernetes API), ACKs included. It never counts as traffic by itself:
//!   it only tells that nothing at all arrived since the last look, so that
//!   the socket dump can be skipped.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;
use std::time::Instant;

/// The counters this strategy reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub passive_opens: u64,
    pub in_segs: u64,
}

/// /proc/net/snmp, kept open and re-read from offset 0 (a seq_file
/// regenerates its text on every read at offset 0).
pub struct Snmp {
    file: File,
    buf: Vec<u8>,
}

impl Snmp {
    pub fn open() -> io::Result<Snmp> {
        Ok(Snmp { file: File::open("/proc/net/snmp")?, buf: vec![0; 8192] })
    }

    pub fn read(&mut self) -> io::Result<Counters> {
        let mut len = 0;
        loop {
            if len == self.buf.len() {
                self.buf.resize(len * 2, 0);
            }
            let n = self.file.read_at(&mut self.buf[len..], len as u64)?;
            if n == 0 {
                break;
            }
            len += n;
        }
        let text = std::str::from_utf8(&self.buf[..len]).map_err(io::Error::other)?;
        parse(text).ok_or_else(|| io::Error::other("no Tcp PassiveOpens/InSegs in /proc/net/snmp"))
    }
}

/// The `Tcp:` header line names the columns of the `Tcp:` value line after it.
fn parse(text: &str) -> Option<Counters> {
    let mut tcp = text.lines().filter_map(|l| l.strip_prefix("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let mut out = (None, None);
    for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
        match name {
            "PassiveOpens" => out.0 = value.parse().ok(),
            "InSegs" => out.1 = value.parse().ok(),
            _ => {}
        }
    }
    Some(Counters { passive_opens: out.0?, in_segs: out.1? })
}

/// The counters when lastcall started, and when: the start of the pod's
/// own history (see `quiet.rs`).
static STARTUP: OnceLock<(Instant, Counters)> = OnceLock::new();

/// Reads the counters once at start-up; costs nothing afterwards.
pub fn note_startup() {
    if let Ok(c) = Snmp::open().and_then(|mut s| s.read()) {
        let _ = STARTUP.set((Instant::now(), c));
    }
}

pub fn startup() -> Option<(Instant, Counters)> {
    STARTUP.get().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Ip: Forwarding DefaultTTL InReceives\nIp: 1 64 2014\n\
        Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs\n\
        Tcp: 1 200 120000 -1 12 345 0 3 2 67890 70000\n\
        Udp: InDatagrams NoPorts\nUdp: 5 0\n";

    #[test]
    fn parses_by_column_name() {
        assert_eq!(parse(SAMPLE), Some(Counters { passive_opens: 345, in_segs: 67890 }));
        assert_eq!(parse("Tcp: A B\nTcp: 1 2\n"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn reads_this_namespace() {
        let mut s = Snmp::open().unwrap();
        let a = s.read().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _c = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _accepted = listener.accept().unwrap();
        let b = s.read().unwrap();
        // Other tests share the namespace: at least our own connection.
        assert!(b.passive_opens > a.passive_opens, "{a:?} -> {b:?}");
        assert!(b.in_segs > a.in_segs, "{a:?} -> {b:?}");
    }
}
