//! Client side of the sidecar's black-box tests: HTTP requests on real
//! sockets (one request per connection, as the sidecar closes after each
//! answer), answers parsed with httparse, and the few waits on lastcall's
//! stderr the sidecar's tests need.
//!
//! lastcall's log lines go to stderr, for which the harness has no line
//! events: where a test must know that lastcall reached a state only its log
//! shows, `wait_stderr` polls the captured stderr (10 ms, bounded by GUARD).

use std::io::{Read, Write};
use std::net::TcpStream;

use super::{mono_ns, Proc, GUARD};

/// One parsed HTTP answer.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// When the whole answer had been read (CLOCK_MONOTONIC).
    pub at: u64,
}

impl Answer {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Reads an answer to EOF (the server closes after each one).
pub fn read_answer(mut s: TcpStream) -> Answer {
    s.set_read_timeout(Some(GUARD)).expect("read timeout");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap_or_else(|e| panic!("reading the answer: {e} (got {:?})", String::from_utf8_lossy(&buf)));
    let at = mono_ns();
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut r = httparse::Response::new(&mut headers);
    let n = match r.parse(&buf) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("not an HTTP answer ({other:?}): {:?}", String::from_utf8_lossy(&buf)),
    };
    let headers = r.headers.iter().map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned())).collect();
    Answer { status: r.code.unwrap_or(0), headers, body: String::from_utf8_lossy(&buf[n..]).into_owned(), at }
}

/// `METHOD PATH` with extra header lines on a new connection; waits for the answer.
pub fn request_with(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: lastcall\r\nUser-Agent: kube-lifecycle/1.33\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).expect("send request");
    read_answer(s)
}

/// `GET PATH` with extra header lines, on its own thread.
pub fn get_async(addr: &str, path: &str, headers: &[(&str, &str)]) -> std::thread::JoinHandle<Answer> {
    let (addr, path) = (addr.to_string(), path.to_string());
    let headers: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    std::thread::spawn(move || {
        let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        request_with(&addr, "GET", &path, &h)
    })
}

/// How many stderr lines so far contain `needle`.
pub fn count_stderr(p: &Proc, needle: &str) -> usize {
    p.stderr_snapshot().lines().filter(|l| l.contains(needle)).count()
}

/// The address a sidecar started with `--listen IP:0` listens on.
#[track_caller]
pub fn listen_addr(p: &mut Proc) -> String {
    let line = p.wait_stderr("listening for GET /drain");
    match line.split_whitespace().find_map(|w| w.strip_prefix("addr=")) {
        Some(addr) => addr.to_string(),
        None => p.fail(format!("no addr= in {line:?}")),
    }
}
