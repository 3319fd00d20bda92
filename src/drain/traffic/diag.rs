//! The kernel's socket diagnostics (sock_diag(7), `NETLINK_SOCK_DIAG`): one
//! dump request per address family lists every TCP socket of lastcall's
//! network namespace, with the extended attribute `INET_DIAG_INFO` (struct
//! tcp_info) when asked. This is what `ss -ti` reads.
//!
//! Connection dumps carry an in-kernel port filter ([`port_filter`]), so
//! only the watched ports' sockets are reported.
//!
//! The netlink messages are built and parsed by `netlink-packet-core` and
//! `netlink-packet-sock-diag`; only the payload of `INET_DIAG_INFO` is
//! decoded here (see [`TcpInfoPrefix`]), because the crate hands it over as
//! raw bytes unless its `rich_nlas` feature is on, and that feature rejects
//! a tcp_info shorter than the 232 bytes of Linux 5.4+, failing the whole
//! socket on older kernels.

use std::io;

use netlink_packet_core::{ErrorBuffer, NetlinkBuffer, NETLINK_HEADER_LEN, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, INET_DIAG_INFO, IPPROTO_TCP, SOCK_DIAG_BY_FAMILY};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequestBuffer, InetResponseBuffer, SocketIdBuffer, StateFlags, REQUEST_LEN};
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
    tcpi_segs_out: u32,
    tcpi_segs_in: u32,
    tcpi_notsent_bytes: u32,
    tcpi_min_rtt: u32,
    /// Segments that carried data, received and sent (Linux 4.6+; RFC 4898
    /// tcpEStatsDataSegsIn/Out): about one per request and one per answer.
    tcpi_data_segs_in: u32,
    tcpi_data_segs_out: u32,
    tcpi_delivery_rate: u64,
    tcpi_busy_time: u64,
    tcpi_rwnd_limited: u64,
    tcpi_sndbuf_limited: u64,
    tcpi_delivered: u32,
    tcpi_delivered_ce: u32,
    /// Payload bytes sent, ever (Linux 4.19; RFC 4898 tcpEStatsPerfHCDataOctetsOut).
    tcpi_bytes_sent: u64,
}

const LAST_DATA_RECV: usize = std::mem::offset_of!(TcpInfoPrefix, tcpi_last_data_recv);
/// Offsets for readers of a whole `struct tcp_info` (`getsockopt(TCP_INFO)`
/// in `close_idle`), taken from the same layout.
pub const TCPI_STATE: usize = std::mem::offset_of!(TcpInfoPrefix, tcpi_state);
pub const TCPI_LAST_DATA_SENT: usize = std::mem::offset_of!(TcpInfoPrefix, tcpi_last_data_sent);
pub const TCPI_LAST_DATA_RECV: usize = LAST_DATA_RECV;
pub const TCPI_LAST_ACK_RECV: usize = std::mem::offset_of!(TcpInfoPrefix, tcpi_last_ack_recv);
pub const TCPI_BYTES_ACKED: usize = std::mem::offset_of!(TcpInfoPrefix, tcpi_bytes_acked);
pub const TCPI_BYTES_RECEIVED: usize = BYTES_RECEIVED;
const BYTES_RECEIVED: usize = std::mem::offset_of!(TcpInfoPrefix, tcpi_bytes_received);
const DATA_SEGS_IN: usize = std::mem::offset_of!(TcpInfoPrefix, tcpi_data_segs_in);
pub const TCPI_DATA_SEGS_IN: usize = DATA_SEGS_IN;
pub const TCPI_BYTES_SENT: usize = std::mem::offset_of!(TcpInfoPrefix, tcpi_bytes_sent);
const DATA_SEGS_OUT: usize = std::mem::offset_of!(TcpInfoPrefix, tcpi_data_segs_out);
const _: () = assert!(LAST_DATA_RECV == 52 && BYTES_RECEIVED == 128 && DATA_SEGS_IN == 152 && DATA_SEGS_OUT == 156);
const _: () = assert!(TCPI_LAST_DATA_SENT == 44 && TCPI_LAST_ACK_RECV == 56 && TCPI_BYTES_ACKED == 120);
const _: () = assert!(TCPI_BYTES_SENT == 200);
const _: () = assert!(std::mem::size_of::<TcpInfoPrefix>() == 208);

/// What this strategy needs from a tcp_info.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpInfo {
    pub last_data_recv_ms: u32,
    /// None on kernels older than 4.1.
    pub bytes_received: Option<u64>,
    /// Data segments received and sent; None on kernels older than 4.6.
    pub data_segs: Option<(u32, u32)>,
}

impl TcpInfo {
    /// Decodes the raw `INET_DIAG_INFO` payload; None when it is too short
    /// to hold even `tcpi_last_data_recv` (unexpected kernel data).
    pub fn decode(raw: &[u8]) -> Option<TcpInfo> {
        let field = |off: usize, len: usize| raw.get(off..off + len);
        let u32_at = |off: usize| field(off, 4).and_then(|b| Some(u32::from_ne_bytes(b.try_into().ok()?)));
        Some(TcpInfo {
            last_data_recv_ms: u32_at(LAST_DATA_RECV)?,
            bytes_received: field(BYTES_RECEIVED, 8).and_then(|b| Some(u64::from_ne_bytes(b.try_into().ok()?))),
            data_segs: u32_at(DATA_SEGS_IN).zip(u32_at(DATA_SEGS_OUT)),
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
pub enum Query<'a> {
    /// Listening sockets, no extension: to find the app's ports.
    Listening,
    /// Every connection on these local ports (all states but LISTEN,
    /// SYN_SENT and CLOSE), with tcp_info. The kernel filters by port
    /// (see [`port_filter`]) before it builds a message, so the app's
    /// outbound connections (to databases, upstreams) cost almost nothing.
    Connections(&'a [u16]),
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
    /// Cleared when the kernel rejects the port filter (EINVAL): then
    /// every connection is dumped and filtered here.
    kernel_filter: bool,
}

impl Diag {
    /// Opens the socket. Fails under a seccomp profile or LSM that forbids
    /// netlink sockets.
    pub fn open() -> io::Result<Diag> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Diag { socket, buf: vec![0; RECV_BUF], seq: 0, kernel_filter: true })
    }

    /// False once the kernel refused the port filter.
    #[cfg(test)]
    pub fn kernel_filter(&self) -> bool {
        self.kernel_filter
    }

    /// Dumps the TCP sockets of both address families that `query` selects,
    /// calling `each` for every one. A socket whose message does not parse
    /// is skipped and counted in the returned number; an error means the
    /// dump is incomplete and this `Diag` should be replaced (messages of
    /// the broken dump may still be queued).
    pub fn dump(&mut self, query: Query, mut each: impl FnMut(Sock)) -> io::Result<usize> {
        let mut skipped = 0;
        for family in [AF_INET, AF_INET6] {
            skipped += match self.dump_family(family, query, &mut each) {
                // The filter is checked before any socket is dumped, so
                // nothing was reported yet: retry without it.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) && self.kernel_filter && matches!(query, Query::Connections(_)) => {
                    self.kernel_filter = false;
                    tracing::debug!("the kernel refused the sock_diag port filter: filtering in lastcall");
                    self.dump_family(family, query, &mut each)?
                }
                other => other?,
            };
        }
        Ok(skipped)
    }

    fn dump_family(&mut self, family: u8, query: Query, each: &mut impl FnMut(Sock)) -> io::Result<usize> {
        let (states, extensions, filter) = match query {
            Query::Listening => (StateFlags::LISTEN, ExtensionFlags::empty(), None),
            Query::Connections(ports) => (
                StateFlags::all() - StateFlags::LISTEN - StateFlags::SYN_SENT - StateFlags::CLOSE,
                ExtensionFlags::INFO,
                if self.kernel_filter { port_filter(ports) } else { None },
            ),
        };
        self.seq = self.seq.wrapping_add(1);
        // The request, written through the crates' buffer views (a
        // `NetlinkMessage<SockDiagMessage>` would do the same but links the
        // emitters of every sock_diag message type: 9 KB of binary).
        // The socket id stays zero: a dump ignores it.
        let attr = filter.unwrap_or_default();
        let mut out = vec![0; NETLINK_HEADER_LEN + REQUEST_LEN + attr.len()];
        let len = u32::try_from(out.len()).map_err(io::Error::other)?;
        let mut msg = NetlinkBuffer::new(&mut out[..]);
        msg.set_length(len);
        msg.set_message_type(SOCK_DIAG_BY_FAMILY);
        msg.set_flags(NLM_F_REQUEST | NLM_F_DUMP);
        msg.set_sequence_number(self.seq);
        let mut req = InetRequestBuffer::new(&mut out[NETLINK_HEADER_LEN..NETLINK_HEADER_LEN + REQUEST_LEN]);
        req.set_family(family);
        req.set_protocol(IPPROTO_TCP);
        req.set_extensions(extensions.bits());
        req.set_states(states.bits());
        // The crate's request has no attributes: the port filter follows.
        out[NETLINK_HEADER_LEN + REQUEST_LEN..].copy_from_slice(&attr);
        self.socket.send(&out, 0)?;

        let mut skipped = 0;
        loop {
            let n = loop {
                match self.socket.recv(&mut &mut self.buf[..], libc::MSG_TRUNC) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            };
            let Some(datagram) = self.buf.get(..n) else {
                return Err(io::Error::other(format!("sock_diag datagram of {n} bytes truncated")));
            };
            match parse_datagram(datagram, self.seq, each)? {
                Progress::More { skipped: s } => skipped += s,
                Progress::Done { skipped: s } => return Ok(skipped + s),
            }
        }
    }
}

/// Where a dump stands after one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// More datagrams follow. `skipped` sockets of this one did not parse.
    More { skipped: usize },
    /// NLMSG_DONE: the dump is complete.
    Done { skipped: usize },
}

/// Why a datagram ends a dump without NLMSG_DONE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DumpError {
    /// NLMSG_ERROR: the kernel refused the request with this errno
    /// (positive; 0 when the message carries none).
    #[error("the kernel answered errno {0}")]
    Kernel(i32),
    /// A netlink header that does not fit the datagram: the rest of the
    /// datagram cannot be framed.
    #[error("malformed sock_diag message: {0}")]
    Malformed(String),
}

impl From<DumpError> for io::Error {
    fn from(e: DumpError) -> io::Error {
        match e {
            DumpError::Kernel(errno) => io::Error::from_raw_os_error(errno),
            DumpError::Malformed(_) => io::Error::other(e.to_string()),
        }
    }
}

/// Parses one datagram of the dump whose requests carried sequence number
/// `seq`, calling `each` for every socket in it. A pure function of the
/// bytes, fuzzed (fuzz/fuzz_targets/sock_diag.rs): any input gives a result,
/// never a panic.
pub fn parse_datagram(datagram: &[u8], seq: u32, each: &mut impl FnMut(Sock)) -> Result<Progress, DumpError> {
    let mut skipped = 0;
    let mut rest = datagram;
    while !rest.is_empty() {
        // The crates' zero-copy views: checked lengths, no allocation per
        // socket (a full parse into `SockDiagMessage` allocates several
        // times per socket and cost ~0.5 µs per socket, as much as the
        // kernel's dump).
        let msg = NetlinkBuffer::new_checked(rest).map_err(|e| DumpError::Malformed(e.to_string()))?;
        // new_checked: 16 <= length <= rest.len(), so align4 cannot overflow;
        // the padding after the last message may be missing.
        rest = rest.get(align4(msg.length() as usize)..).unwrap_or_default();
        if msg.sequence_number() != seq {
            continue; // left over from an earlier, abandoned dump
        }
        match msg.message_type() {
            NLMSG_DONE => return Ok(Progress::Done { skipped }),
            NLMSG_ERROR => {
                let code = ErrorBuffer::new_checked(msg.payload()).ok().and_then(|e| e.code()).map_or(0, |c| c.get());
                // Kernel errnos are small negative numbers; saturating
                // keeps a forged i32::MIN from overflowing.
                return Err(DumpError::Kernel(code.saturating_abs()));
            }
            SOCK_DIAG_BY_FAMILY => match parse_inet(msg.payload()) {
                Some(sock) => each(sock),
                None => skipped += 1,
            },
            _ => {}
        }
    }
    Ok(Progress::More { skipped })
}

/// One `inet_diag_msg` and its attributes; None when it does not parse.
fn parse_inet(payload: &[u8]) -> Option<Sock> {
    let msg = InetResponseBuffer::new_checked(payload).ok()?;
    let id = SocketIdBuffer::new_checked(msg.socket_id()).ok()?;
    let mut info = None;
    for nla in msg.nlas() {
        let nla = nla.ok()?;
        if nla.kind() == INET_DIAG_INFO {
            info = TcpInfo::decode(nla.value());
        }
    }
    Some(Sock {
        state: msg.state(),
        // inet_diag_sockid: ports in network byte order, the cookie as two
        // native u32 (an opaque identifier: any fixed byte order will do).
        local_port: u16::from_be_bytes(id.source_port().try_into().ok()?),
        inode: msg.inode(),
        cookie: u64::from_ne_bytes(id.cookie().try_into().ok()?),
        info,
    })
}

/// `INET_DIAG_REQ_BYTECODE`, the request attribute that holds a filter.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// Bytecode operations (linux/inet_diag.h): local port >= and <=, and an
/// unconditional jump. These exist since Linux 2.6 (S_EQ is newer).
const INET_DIAG_BC_JMP: u8 = 1;
const INET_DIAG_BC_S_GE: u8 = 2;
const INET_DIAG_BC_S_LE: u8 = 3;

/// The request attribute (nlattr header + inet_diag bytecode) that makes the
/// kernel report only sockets whose local port is in `ports`: what `ss`
/// builds for `sport = :A or sport = :B` (misc/ss.c, ssfilter_bytecode).
/// None when there is nothing to filter or too many ports for one attribute.
///
/// The program is run by inet_diag_bc_run(): each 4-byte op
/// `{code: u8, yes: u8, no: u16}` (native-endian) jumps `yes` bytes ahead
/// when its test holds, `no` bytes when not; a port test is followed by a
/// second op whose `no` holds the port. Landing exactly at the end accepts
/// the socket, jumping 4 bytes past it rejects. inet_diag_bc_audit() wants
/// every `no` target on the chain of `yes` jumps, hence this layout, for
/// each port but the last:
///
/// ```text
/// +0  S_GE yes=8  no=20 (next block)   +4  port
/// +8  S_LE yes=8  no=12 (next block)   +12 port
/// +16 JMP  yes=4  no=(to the end: accept)
/// ```
///
/// and the last block without the JMP, its `no` jumps landing 4 bytes past
/// the end (reject).
pub fn port_filter(ports: &[u16]) -> Option<Vec<u8>> {
    if ports.is_empty() || ports.len() > 1000 {
        return None;
    }
    let total = ports.len() * 20 - 4;
    let mut bc = Vec::with_capacity(4 + total);
    bc.extend_from_slice(&u16::try_from(4 + total).ok()?.to_ne_bytes());
    bc.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
    let mut op = |code: u8, yes: u8, no: u16| {
        bc.push(code);
        bc.push(yes);
        bc.extend_from_slice(&no.to_ne_bytes());
    };
    for (i, &port) in ports.iter().enumerate() {
        op(INET_DIAG_BC_S_GE, 8, 20);
        op(0, 0, port);
        op(INET_DIAG_BC_S_LE, 8, 12);
        op(0, 0, port);
        if i + 1 < ports.len() {
            let jmp_at = i * 20 + 16;
            op(INET_DIAG_BC_JMP, 4, u16::try_from(total - jmp_at).ok()?);
        }
    }
    Some(bc)
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
        if len >= DATA_SEGS_OUT + 4 {
            b[DATA_SEGS_IN..DATA_SEGS_IN + 4].copy_from_slice(&21u32.to_ne_bytes());
            b[DATA_SEGS_OUT..DATA_SEGS_OUT + 4].copy_from_slice(&20u32.to_ne_bytes());
        }
        b
    }

    #[test]
    fn decodes_a_modern_tcp_info() {
        assert_eq!(
            TcpInfo::decode(&raw(280)),
            Some(TcpInfo { last_data_recv_ms: 1234, bytes_received: Some(1 << 40 | 7), data_segs: Some((21, 20)) })
        );
    }

    #[test]
    fn old_kernels_lack_the_newer_fields() {
        // Linux 3.x sends 104 bytes: up to tcpi_total_retrans.
        assert_eq!(TcpInfo::decode(&raw(104)), Some(TcpInfo { last_data_recv_ms: 1234, bytes_received: None, data_segs: None }));
        assert_eq!(TcpInfo::decode(&raw(135)).unwrap().bytes_received, None);
        assert!(TcpInfo::decode(&raw(136)).unwrap().bytes_received.is_some());
        // 4.1 to 4.5: bytes_received, no data segment counts.
        assert_eq!(TcpInfo::decode(&raw(152)).unwrap().data_segs, None);
        assert_eq!(TcpInfo::decode(&raw(160)).unwrap().data_segs, Some((21, 20)));
    }

    #[test]
    fn garbage_is_not_a_tcp_info() {
        assert_eq!(TcpInfo::decode(&[]), None);
        assert_eq!(TcpInfo::decode(&[0; 55]), None);
    }

    /// inet_diag_bc_run(), transcribed for the three ops used: true when the
    /// program accepts a socket with local port `sport`.
    fn run(bc: &[u8], sport: u16) -> bool {
        let (mut pc, len) = (0usize, bc.len() as isize);
        let mut left = len;
        while left > 0 {
            let op = &bc[pc..];
            let (code, yes, no) = (op[0], op[1] as isize, u16::from_ne_bytes([op[2], op[3]]) as isize);
            let arg = || u16::from_ne_bytes([op[6], op[7]]);
            let hit = match code {
                INET_DIAG_BC_S_GE => sport >= arg(),
                INET_DIAG_BC_S_LE => sport <= arg(),
                INET_DIAG_BC_JMP => false,
                _ => panic!("unexpected op {code}"),
            };
            let step = if hit { yes } else { no };
            left -= step;
            if left < 0 {
                return false;
            }
            pc += step as usize;
        }
        left == 0
    }

    #[test]
    fn port_filter_accepts_exactly_the_ports() {
        for ports in [&[8080u16][..], &[80, 443], &[1, 8080, 9090, 65535]] {
            let attr = port_filter(ports).unwrap();
            assert_eq!(u16::from_ne_bytes([attr[0], attr[1]]) as usize, attr.len());
            assert_eq!(u16::from_ne_bytes([attr[2], attr[3]]), INET_DIAG_REQ_BYTECODE);
            let bc = &attr[4..];
            assert_eq!(bc.len() % 4, 0);
            for p in [0u16, 1, 2, 79, 80, 81, 443, 8079, 8080, 8081, 9090, 65534, 65535] {
                assert_eq!(run(bc, p), ports.contains(&p), "ports {ports:?}, sport {p}");
            }
        }
        assert_eq!(port_filter(&[]), None);
    }

    /// Datagrams of real dumps (fuzz/seeds/sock_diag, captured from Linux
    /// 6.x on x86_64, so native-endian fields are little-endian): in a
    /// fresh network namespace, listeners on 127.0.0.1 and [::1], 14
    /// answered connections on each (two closed by the server: TIME_WAIT)
    /// and four left in the accept queue. Sequence numbers 1 to 4 are the
    /// four dumps of one `Diag`.
    #[cfg(target_endian = "little")]
    mod captured {
        pub const LISTENING_V4: &[u8] = include_bytes!("../../../fuzz/seeds/sock_diag/listening-v4");
        pub const CONNECTIONS_V4: &[u8] = include_bytes!("../../../fuzz/seeds/sock_diag/connections-v4");
        /// The NLMSG_DONE that ended a dump with sequence number 1.
        pub const DONE: &[u8] = include_bytes!("../../../fuzz/seeds/sock_diag/done");
        /// The kernel's answer (sequence number 1) to a port filter that
        /// inet_diag_bc_audit() refuses.
        pub const EINVAL: &[u8] = include_bytes!("../../../fuzz/seeds/sock_diag/error-einval");
    }

    fn parse(datagram: &[u8], seq: u32) -> (Result<Progress, DumpError>, Vec<Sock>) {
        let mut socks = Vec::new();
        let result = parse_datagram(datagram, seq, &mut |s| socks.push(s));
        (result, socks)
    }

    /// A netlink message: header, payload, padding to 4 bytes.
    fn message(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut m = vec![0; NETLINK_HEADER_LEN];
        let mut header = NetlinkBuffer::new(&mut m[..]);
        header.set_length((NETLINK_HEADER_LEN + payload.len()) as u32);
        header.set_message_type(kind);
        header.set_sequence_number(seq);
        m.extend_from_slice(payload);
        m.resize(align4(m.len()), 0);
        m
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn a_captured_listening_dump_decodes() {
        let listener = |local_port, inode, cookie| Sock { state: 10, local_port, inode, cookie, info: None };
        assert_eq!(
            parse(captured::LISTENING_V4, 1),
            (Ok(Progress::More { skipped: 0 }), vec![listener(33011, 98334, 4114), listener(38745, 98400, 4115)])
        );
        assert_eq!(parse(captured::DONE, 1), (Ok(Progress::Done { skipped: 0 }), vec![]));
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn a_captured_connection_dump_decodes() {
        let (result, socks) = parse(captured::CONNECTIONS_V4, 3);
        assert_eq!(result, Ok(Progress::More { skipped: 0 }));
        assert_eq!(socks.len(), 18);
        let info = |segs_out| Some(TcpInfo { last_data_recv_ms: 0, bytes_received: Some(18), data_segs: Some((1, segs_out)) });
        assert_eq!(socks[0], Sock { state: TCP_ESTABLISHED, local_port: 33011, inode: 98362, cookie: 4117, info: info(1) });
        // Unanswered, in the accept queue: no inode, nothing sent yet.
        assert_eq!(socks[11], Sock { state: TCP_ESTABLISHED, local_port: 33011, inode: 0, cookie: 4128, info: info(0) });
        // TIME_WAIT: a minisock, no tcp_info.
        assert_eq!(socks[1], Sock { state: 6, local_port: 33011, inode: 0, cookie: 4118, info: None });
        assert!(socks.iter().all(|s| s.local_port == 33011));
        assert_eq!(socks.iter().filter(|s| s.state == 6).count(), 3);
        assert_eq!(socks.iter().filter(|s| s.state == TCP_ESTABLISHED && s.inode == 0).count(), 4);
        assert_eq!(socks.iter().map(|s| s.cookie).collect::<Vec<_>>(), (4117..=4134).collect::<Vec<_>>());
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn messages_of_another_dump_are_ignored() {
        assert_eq!(parse(captured::LISTENING_V4, 2), (Ok(Progress::More { skipped: 0 }), vec![]));
        assert_eq!(parse(captured::DONE, 2), (Ok(Progress::More { skipped: 0 }), vec![]));
        assert_eq!(parse(captured::EINVAL, 2), (Ok(Progress::More { skipped: 0 }), vec![]));
    }

    #[test]
    fn nlmsg_error_ends_the_dump_with_its_errno() {
        #[cfg(target_endian = "little")]
        {
            assert_eq!(parse(captured::EINVAL, 1), (Err(DumpError::Kernel(libc::EINVAL)), vec![]));
            // What `dump` looks for before it retries without the filter.
            assert_eq!(io::Error::from(DumpError::Kernel(libc::EINVAL)).raw_os_error(), Some(libc::EINVAL));
        }
        let error = |code: i32| message(NLMSG_ERROR, 7, &[&code.to_ne_bytes()[..], &[0; 16]].concat());
        assert_eq!(parse(&error(-libc::ENOENT), 7).0, Err(DumpError::Kernel(libc::ENOENT)));
        assert_eq!(parse(&error(i32::MIN), 7).0, Err(DumpError::Kernel(i32::MAX)));
        // Too short to hold a code.
        assert_eq!(parse(&message(NLMSG_ERROR, 7, &[0xff; 3]), 7).0, Err(DumpError::Kernel(0)));
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn every_truncation_of_a_datagram_is_malformed_or_ends_between_messages() {
        let data = captured::CONNECTIONS_V4;
        // Where each message starts, and the end.
        let mut bounds = vec![0];
        while let Some(&at) = bounds.last().filter(|&&at| at < data.len()) {
            bounds.push(at + align4(u32::from_ne_bytes(data[at..at + 4].try_into().unwrap()) as usize));
        }
        assert_eq!((bounds.len(), bounds.last()), (19, Some(&data.len())));
        for len in 0..data.len() {
            let (result, socks) = parse(&data[..len], 3);
            let whole = bounds.iter().take_while(|&&b| b <= len).count() - 1;
            assert_eq!(socks.len(), whole, "cut at {len}");
            if bounds.contains(&len) {
                assert_eq!(result, Ok(Progress::More { skipped: 0 }), "cut at {len}");
            } else {
                assert!(matches!(result, Err(DumpError::Malformed(_))), "cut at {len}: {result:?}");
            }
        }
    }

    #[test]
    fn a_length_field_outside_the_datagram_is_malformed() {
        let mut data = [message(SOCK_DIAG_BY_FAMILY, 1, &[0; 100]), message(NLMSG_DONE, 1, &[0; 4])].concat();
        for length in [0, 1, 15, 121, u32::MAX] {
            data[..4].copy_from_slice(&length.to_ne_bytes());
            let (result, socks) = parse(&data, 1);
            assert!(matches!(result, Err(DumpError::Malformed(_))), "length {length}: {result:?}");
            assert_eq!(socks, vec![]);
        }
        // Shorter than a header.
        assert!(matches!(parse(&[0; 15], 1).0, Err(DumpError::Malformed(_))));
    }

    #[test]
    fn several_messages_in_one_datagram() {
        let bad_socket = message(SOCK_DIAG_BY_FAMILY, 1, &[0; 10]);
        let unknown = message(0x99, 1, &[1, 2, 3]);
        let done = message(NLMSG_DONE, 1, &[0; 4]);
        let other_dump = message(NLMSG_DONE, 9, &[0; 4]);
        // An inet_diag_msg too short to parse is skipped and counted; the
        // unknown type and the other dump's DONE are passed over.
        assert_eq!(parse(&[&bad_socket[..], &unknown, &other_dump, &bad_socket].concat(), 1), (Ok(Progress::More { skipped: 2 }), vec![]));
        assert_eq!(parse(&[&bad_socket[..], &done, &bad_socket].concat(), 1), (Ok(Progress::Done { skipped: 1 }), vec![]));
        // The last message's padding may be missing.
        let unpadded = &bad_socket[..NETLINK_HEADER_LEN + 10];
        assert_eq!(parse(&[&unknown[..], unpadded].concat(), 1), (Ok(Progress::More { skipped: 1 }), vec![]));
        assert_eq!(parse(&[], 1), (Ok(Progress::More { skipped: 0 }), vec![]));
        #[cfg(target_endian = "little")]
        {
            let (result, socks) = parse(&[captured::LISTENING_V4, captured::DONE, captured::LISTENING_V4].concat(), 1);
            assert_eq!((result, socks.len()), (Ok(Progress::Done { skipped: 0 }), 2));
            let (result, socks) = parse(&[captured::LISTENING_V4, &bad_socket, captured::LISTENING_V4, captured::EINVAL].concat(), 1);
            assert_eq!((result, socks.len()), (Err(DumpError::Kernel(libc::EINVAL)), 4));
        }
    }

    #[test]
    fn align() {
        assert_eq!((align4(0), align4(1), align4(4), align4(5)), (0, 4, 4, 8));
    }
}
