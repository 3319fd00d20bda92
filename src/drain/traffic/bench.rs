//! The cost of one sample with 10,000 open inbound connections (issue 6:
//! "the cost must stay negligible for an app with 10,000 open
//! connections"). Ignored by default; run it with bench/traffic/run or
//!
//!     cargo test --release --bin lastcall sample_cost -- --ignored --nocapture
//!
//! The 10,000 client ends live in a second process (this test binary run
//! again as [`connect_helper`]): both ends in one process would need 20,000+
//! descriptors, more than a common hard RLIMIT_NOFILE.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::diag::Diag;
use super::Sampler;

const CONNS: usize = 10_000;
const ENV: &str = "LASTCALL_BENCH_CONNECT";

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft one.
fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    hard
}

/// Client side, in its own process: opens `CONNS` connections to the
/// address in `$LASTCALL_BENCH_CONNECT`, sends a few bytes on each, prints
/// `connected`, and holds them until stdin closes.
#[test]
#[ignore]
fn connect_helper() {
    let Ok(addr) = std::env::var(ENV) else { return };
    let limit = raise_nofile();
    assert!(limit as usize > CONNS + 16, "RLIMIT_NOFILE hard limit {limit} is too low for {CONNS} connections");
    let mut conns = Vec::with_capacity(CONNS);
    for _ in 0..CONNS {
        let mut c = TcpStream::connect(&addr).expect("connect");
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
        conns.push(c);
    }
    println!("connected");
    let _ = std::io::stdout().flush();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

#[test]
#[ignore]
fn sample_cost_with_10k_connections() {
    let limit = raise_nofile();
    assert!(limit as usize > CONNS + 16, "RLIMIT_NOFILE hard limit {limit} is too low for {CONNS} connections");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = std::thread::spawn(move || {
        let mut accepted = Vec::with_capacity(CONNS);
        while accepted.len() < CONNS {
            let (s, _) = listener.accept().expect("accept");
            accepted.push(s);
        }
        (listener, accepted)
    });
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "drain::traffic::bench::connect_helper", "--nocapture", "--test-threads=1"])
        .env(ENV, addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the client helper");
    let mut out = BufReader::new(helper.stdout.take().unwrap());
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 && !line.contains("connected") {
        line.clear();
    }
    assert!(line.contains("connected"), "the helper did not connect");
    let (_listener, accepted) = acceptor.join().unwrap();
    assert_eq!(accepted.len(), CONNS);

    let mut sampler = Sampler::new(Diag::open().unwrap(), vec![addr.port()], Vec::new(), None);
    sampler.sample(true).unwrap(); // warm-up: cookies get generated, buffers grow
    assert_eq!(sampler.socks.len(), CONNS, "one inbound socket per connection");
    assert!(sampler.diag.kernel_filter(), "the kernel refused the port filter");
    let mut costs: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            sampler.sample(true).unwrap();
            t.elapsed()
        })
        .collect();
    costs.sort();
    let cpu0 = super::thread_cpu();
    for _ in 0..20 {
        sampler.sample(true).unwrap();
    }
    let cpu = (super::thread_cpu() - cpu0) / 20;
    println!(
        "one sample with {CONNS} inbound connections: median {:?}, min {:?}, max {:?}; thread CPU per sample {:?} \
         (at the 100 ms default interval: {:.1}% of one core)",
        costs[costs.len() / 2],
        costs[0],
        costs[costs.len() - 1],
        cpu,
        cpu.as_secs_f64() * 1000.0,
    );
    // A sample that finds the namespace's counters unchanged reads only them.
    let mut snmp = super::snmp::Snmp::open().unwrap();
    let cpu0 = super::thread_cpu();
    for _ in 0..200 {
        snmp.read().unwrap();
    }
    println!("one read of /proc/net/snmp (a sample with the counters unchanged): thread CPU {:?}", (super::thread_cpu() - cpu0) / 200);
    drop(helper.stdin.take());
    let _ = helper.wait();
}
