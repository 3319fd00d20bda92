//! The sock_diag dump parser (`parse_datagram`) on arbitrary bytes, taking
//! the sequence number from the first message's header so that the
//! messages count as the current dump's; the tcp_info decoder on the same
//! bytes; and the port filter for ports read from them. None may panic;
//! what each decodes must fit the bytes it was given, and the filter must
//! accept exactly its ports.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../src/drain/traffic/diag.rs"]
#[allow(dead_code, unused_imports)]
mod diag;

/// The netlink header: every message, socket or not, takes at least this.
const HEADER: usize = 16;

fuzz_target!(|data: &[u8]| {
    let seq = data.get(8..12).map_or(0, |b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    let mut socks = 0;
    let skipped = match diag::parse_datagram(data, seq, &mut |_| socks += 1) {
        Ok(diag::Progress::More { skipped } | diag::Progress::Done { skipped }) => skipped,
        Err(_) => 0,
    };
    assert!((socks + skipped) * HEADER <= data.len(), "{socks} sockets and {skipped} skipped from {} bytes", data.len());

    // tcp_info: each field present exactly when the bytes reach its end.
    match diag::TcpInfo::decode(data) {
        None => assert!(data.len() < 56),
        Some(info) => {
            assert!(data.len() >= 56);
            assert_eq!(info.bytes_received.is_some(), data.len() >= 136);
            assert_eq!(info.data_segs.is_some(), data.len() >= 160);
        }
    }

    // The port filter: up to 1000 ports; checked by running the program for
    // the first few (each run walks the whole program).
    let ports: Vec<u16> = data.chunks_exact(2).map(|p| u16::from_ne_bytes([p[0], p[1]])).collect();
    let filter = diag::port_filter(&ports);
    assert_eq!(filter.is_some(), (1..=1000).contains(&ports.len()));
    let few = &ports[..ports.len().min(24)];
    if let Some(attr) = diag::port_filter(few) {
        assert_eq!(usize::from(u16::from_ne_bytes([attr[0], attr[1]])), attr.len());
        for &p in few {
            for q in [p.wrapping_sub(1), p, p.wrapping_add(1)] {
                assert_eq!(accepts(&attr[4..], q), few.contains(&q), "ports {few:?}, local port {q}");
            }
        }
    }
});

/// inet_diag_bc_run() for the three ops the filter uses (S_GE 2, S_LE 3,
/// JMP 1): true when the program accepts a socket with local port `sport`.
/// Each op is `{code: u8, yes: u8, no: u16}`; a port test's port is in the
/// `no` of the op after it. Landing exactly at the end accepts.
fn accepts(bc: &[u8], sport: u16) -> bool {
    let mut pc = 0;
    while pc < bc.len() {
        let op = &bc[pc..pc + 4];
        let (code, yes, no) = (op[0], usize::from(op[1]), usize::from(u16::from_ne_bytes([op[2], op[3]])));
        let arg = || u16::from_ne_bytes([bc[pc + 6], bc[pc + 7]]);
        let hit = match code {
            2 => sport >= arg(),
            3 => sport <= arg(),
            1 => false,
            _ => panic!("unexpected op {code} at {pc}"),
        };
        let step = if hit { yes } else { no };
        assert!(step > 0 && step % 4 == 0, "step {step} at {pc}");
        pc += step;
    }
    pc == bc.len()
}
