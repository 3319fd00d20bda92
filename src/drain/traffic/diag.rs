//! The kernel's socket diagnostics (sock_diag(7), `NETLINK_SOCK_DIAG`): one
//! dump request per address family lists every TCP socket of lastcall's
//! network namespace, with the extended attribute `INET_DIAG_INFO` (struct
//! tcp_info) when asked. This is what `ss -ti` reads.
//!
//! The netlink messages are built and parsed by `netlink-packet-core` and
//! `netlink-packet-sock-diag`; only the payload of `INET_DIAG_INFO` is
//! decoded here (see [`TcpInfoPrefix`]), because the crate hands it over as
//! raw bytes unless its `rich_nlas` feature is on, and that feature rejects
//! a tcp_info shorter than the 232 bytes of Linux 5.4+, failing the whole
//! socket on older kernels.

use std::io;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::nlas::Nla;
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::protocols::NETLINK_SOCK_DIAG;
use netlink_sys::{Socket, SocketAddr};

pub use netlink_packet_sock_diag::constants::TCP_ESTABLISHED;

/// The start of `struct tcp_info` from `include/uapi/linux/tcp.h`, up to the
/// last field this strategy reads. Never instantiated: it documents the
/// layout, and `offset_of!` on it gives the offsets the decoder uses, so a
/// typo cannot shift a field silently (the const assertions below pin the
/// offsets to the ones the kernel header and `ss` use).
///
/// The kernel copies `min(sizeof(struct tcp_info), what it knows)` bytes:
/// newer kernels append fields (the struct is 232+ bytes on 5.4+), older
/// ones send less. `tcpi_last_data_recv` exists since 2.6;
/// `tcpi_bytes_received` since Linux 4.1 (RFC 4898
/// tcpEStatsAppHCThruOctetsReceived). Fields are native-endian.
#[allow(dead_code)]
#[repr(C)]
pub struct TcpInfoPrefix {
    tcpi_state: u8,
    tcpi_ca_state: u8,
    tcpi_retransmits: u8,
    tcpi_probes: u8,
    tcpi_backoff: u8,
    tcpi_options: u8,
    /// `tcpi_snd_wscale : 4, tcpi_rcv_wscale : 4`
    tcpi_wscale: u8,
    /// `tcpi_delivery_rate_app_limited : 1, tcpi_fastopen_client_fail : 2`
    tcpi_flags: u8,
    tcpi_rto: u32,
    tcpi_ato: u32,
    tcpi_snd_mss: u32,
    tcpi_rcv_mss: u32,
    tcpi_unacked: u32,
    tcpi_sacked: u32,
    tcpi_lost: u32,
    tcpi_retrans: u32,
    tcpi_fackets: u32,
    tcpi_last_data_sent: u32,
    tcpi_last_ack_sent: u32,
    /// Milliseconds since the last data segment arrived (jiffies-based:
    /// `jiffies_to_msecs(now - icsk_ack.lrcvtime)`; the connection's
    /// establishment counts as the first "arrival").
    tcpi_last_data_recv: u32,
    tcpi_last_ack_recv: u32,
    tcpi_pmtu: u32,
    tcpi_rcv_ssthresh: u32,
    tcpi_rtt: u32,
    tcpi_rttvar: u32,
    tcpi_snd_ssthresh: u32,
    tcpi_snd_cwnd: u32,
    tcpi_advmss: u32,
    tcpi_reordering: u32,
    tcpi_rcv_rtt: u32,
    tcpi_rcv_space: u32,
    tcpi_total_retrans: u32,
    tcpi_pacing_rate: u64,
    tcpi_max_pacing_rate: u64,
    tcpi_bytes_acked: u64,
    /// Payload bytes received and acknowledged, ever, on this connection.
    tcpi_bytes_received: u64,
}

const LAST_DATA_RECV: usize = std::mem::offset_of!(TcpInfoPrefix, tcpi_last_data_recv);
const BYTES_RECEIVED: usize = std::mem::offset_of!(TcpInfoPrefix, tcpi_bytes_received);
const _: () = assert!(LAST_DATA_RECV == 52 && BYTES_RECEIVED == 128);
const _: () = assert!(std::mem::size_of::<TcpInfoPrefix>() == 136);

/// What this strategy needs from a tcp_info.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    pub last_data_recv_ms: u32,
    /// None on kernels older than 4.1.
    pub bytes_received: Option<u64>,
}

impl TcpInfo {
    /// Decodes the raw `INET_DIAG_INFO` payload; None when it is too short
    /// to hold even `tcpi_last_data_recv` (unexpected kernel data).
    pub fn decode(raw: &[u8]) -> Option<TcpInfo> {
        let field = |off: usize, len: usize| raw.get(off..off + len);
        let last = field(LAST_DATA_RECV, 4)?;
        Some(TcpInfo {
            last_data_recv_ms: u32::from_ne_bytes(last.try_into().ok()?),
            bytes_received: field(BYTES_RECEIVED, 8).and_then(|b| Some(u64::from_ne_bytes(b.try_into().ok()?))),
        })
    }
}

/// One socket of a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sock {
    /// TCP_* state (`TCP_ESTABLISHED`, `TCP_TIME_WAIT`, ...).
    pub state: u8,
    pub local_port: u16,
    /// The socket's inode: 0 until the app has accepted the connection, and
    /// for TIME_WAIT and request sockets.
    pub inode: u32,
    /// The kernel's socket cookie: unique for the namespace's lifetime, kept
    /// when a connection moves to TIME_WAIT (once it has been generated,
    /// i.e. once a dump has shown the socket).
    pub cookie: u64,
    pub info: Option<TcpInfo>,
}

/// Which sockets a dump asks for.
#[derive(Debug, Clone, Copy)]
pub enum Query {
    /// Listening sockets, no extension: to find the app's ports.
    Listening,
    /// Every connection that may be inbound (all states but LISTEN,
    /// SYN_SENT and CLOSE), with tcp_info.
    Connections,
}

/// Receive buffer size. The kernel fills one dump datagram up to
/// `min(the reader's largest buffer, 32 KiB)` (netlink_recvmsg's
/// max_recvmsg_len), so 64 KiB never truncates; truncation is still checked.
const RECV_BUF: usize = 64 * 1024;

/// A netlink sock_diag socket and its receive buffer, reused across dumps.
pub struct Diag {
    socket: Socket,
    buf: Vec<u8>,
    seq: u32,
}

impl Diag {
    /// Opens the socket. Fails under a seccomp profile or LSM that forbids
    /// netlink sockets.
    pub fn open() -> io::Result<Diag> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Diag { socket, buf: vec![0; RECV_BUF], seq: 0 })
    }

    /// Dumps the TCP sockets of both address families that `query` selects,
    /// calling `each` for every one. A socket whose message does not parse
    /// is skipped and counted in the returned number; an error means the
    /// dump is incomplete and this `Diag` should be replaced (messages of
    /// the broken dump may still be queued).
    pub fn dump(&mut self, query: Query, mut each: impl FnMut(Sock)) -> io::Result<usize> {
        let mut skipped = 0;
        for family in [AF_INET, AF_INET6] {
            skipped += self.dump_family(family, query, &mut each)?;
        }
        Ok(skipped)
    }

    fn dump_family(&mut self, family: u8, query: Query, each: &mut impl FnMut(Sock)) -> io::Result<usize> {
        let (states, extensions) = match query {
            Query::Listening => (StateFlags::LISTEN, ExtensionFlags::empty()),
            Query::Connections => (
                StateFlags::all() - StateFlags::LISTEN - StateFlags::SYN_SENT - StateFlags::CLOSE,
                ExtensionFlags::INFO,
            ),
        };
        let socket_id = if family == AF_INET { SocketId::new_v4() } else { SocketId::new_v6() };
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = self.seq;
        let request = SockDiagMessage::InetRequest(InetRequest { family, protocol: IPPROTO_TCP, extensions, states, socket_id });
        let mut packet = NetlinkMessage::new(header, request.into());
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out); // cannot panic: the buffer has buffer_len()
        self.socket.send(&out, 0)?;

        let mut skipped = 0;
        loop {
            let n = loop {
                match self.socket.recv(&mut &mut self.buf[..], libc::MSG_TRUNC) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            if n > self.buf.len() {
                return Err(io::Error::other(format!("sock_diag datagram of {n} bytes truncated")));
            }
            let mut off = 0;
            while off < n {
                let msg = match NetlinkMessage::<SockDiagMessage>::deserialize(&self.buf[off..n]) {
                    Ok(msg) => msg,
                    Err(e) => {
                        // The header itself is unreadable: the rest of the
                        // datagram cannot be walked.
                        if off + 16 > n || netlink_len(&self.buf[off..n]) < 16 {
                            return Err(io::Error::other(format!("malformed sock_diag message: {e}")));
                        }
                        skipped += 1;
                        off += align4(netlink_len(&self.buf[off..n]));
                        continue;
                    }
                };
                off += align4(msg.header.length as usize);
                if msg.header.sequence_number != self.seq {
                    continue; // left over from an earlier, abandoned dump
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(skipped),
                    NetlinkPayload::Error(e) => return Err(e.to_io()),
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        let h = &r.header;
                        let info = r.nlas.iter().find_map(|nla| match nla {
                            Nla::TcpInfo(raw) => TcpInfo::decode(raw),
                            _ => None,
                        });
                        let cookie = u64::from_ne_bytes(h.socket_id.cookie);
                        each(Sock { state: h.state, local_port: h.socket_id.source_port, inode: h.inode, cookie, info });
                    }
                    _ => {}
                }
            }
        }
    }
}

/// nlmsg_len of the message at the start of `b` (native-endian u32).
fn netlink_len(b: &[u8]) -> usize {
    b.get(..4).and_then(|l| l.try_into().ok()).map(u32::from_ne_bytes).unwrap_or(0) as usize
}

/// NLMSG_ALIGN: messages in a datagram start on 4-byte boundaries.
fn align4(len: usize) -> usize {
    (len + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        b[LAST_DATA_RECV..LAST_DATA_RECV + 4].copy_from_slice(&1234u32.to_ne_bytes());
        if len >= BYTES_RECEIVED + 8 {
            b[BYTES_RECEIVED..BYTES_RECEIVED + 8].copy_from_slice(&(1u64 << 40 | 7).to_ne_bytes());
        }
        b
    }

    #[test]
    fn decodes_a_modern_tcp_info() {
        assert_eq!(TcpInfo::decode(&raw(280)), Some(TcpInfo { last_data_recv_ms: 1234, bytes_received: Some(1 << 40 | 7) }));
    }

    #[test]
    fn old_kernels_lack_bytes_received() {
        // Linux 3.x sends 104 bytes: up to tcpi_total_retrans.
        assert_eq!(TcpInfo::decode(&raw(104)), Some(TcpInfo { last_data_recv_ms: 1234, bytes_received: None }));
        assert_eq!(TcpInfo::decode(&raw(135)).unwrap().bytes_received, None);
        assert!(TcpInfo::decode(&raw(136)).unwrap().bytes_received.is_some());
    }

    #[test]
    fn garbage_is_not_a_tcp_info() {
        assert_eq!(TcpInfo::decode(&[]), None);
        assert_eq!(TcpInfo::decode(&[0; 55]), None);
    }

    #[test]
    fn align() {
        assert_eq!((align4(0), align4(1), align4(4), align4(5)), (0, 4, 4, 8));
    }
}
