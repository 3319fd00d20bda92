//! The sidecar's HTTP request handling as one pure function over bytes:
//! `decide(what the client sent so far, access rules)` says whether to read
//! more, answer, or join the drain. No sockets, no clock and nothing from
//! the rest of lastcall (std and httparse only), so the server (`http.rs`)
//! and a fuzz target (which can include this file with `#[path]`) run the
//! same code.
//!
//! HTTP/1.1, one request per connection: the head is parsed by httparse, a
//! body is never read (both endpoints are GET; what a client sends after the
//! head is discarded when the connection closes), and every answer says
//! `Connection: close`.
//!
//! `GET /drain` may require a bearer token (`Authorization: Bearer TOKEN`,
//! RFC 6750 §2.1; the kubelet sends it from `preStop.httpGet.httpHeaders`)
//! and a permitted source address (decided by the server, passed in as a
//! bool). No credentials or another scheme: 401 with a `Bearer` challenge;
//! a wrong token or source: 403. The token is compared in time that depends
//! only on the length of what the client sent.

use std::borrow::Cow;

/// Longest request head accepted (431 beyond).
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header lines accepted (431 beyond); the kubelet sends about six.
const MAX_HEADERS: usize = 32;

/// What `GET /drain` needs besides a well-formed request.
pub struct Access<'a> {
    /// The token `Authorization: Bearer` must carry; None: no token needed.
    pub token: Option<&'a [u8]>,
    /// Whether the client's address may ask for a drain (`--drain-from`).
    pub source_allowed: bool,
}

/// What to do with a connection after what it sent so far.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The head is not complete yet: read more.
    Incomplete,
    /// Answer this and close.
    Reply(Reply),
    /// `GET /drain` that may not drain: answer this and close; the text says
    /// why, for the log.
    Refused(Reply, &'static str),
    /// A `GET /drain` that may drain: join the drain, answer when it ends.
    Drain,
}

/// One short `text/plain` answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Cow<'static, str>,
    /// Send `Allow: GET` (405).
    pub allow_get: bool,
    /// Send `WWW-Authenticate: Bearer` (401).
    pub challenge: bool,
}

impl Reply {
    pub fn text(status: u16, body: impl Into<Cow<'static, str>>) -> Reply {
        Reply { status, body: body.into(), allow_get: false, challenge: false }
    }

    /// The whole answer, head and body.
    pub fn render(&self) -> Vec<u8> {
        let allow = if self.allow_get { "Allow: GET\r\n" } else { "" };
        let challenge = if self.challenge { "WWW-Authenticate: Bearer realm=\"lastcall\"\r\n" } else { "" };
        format!(
            "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{allow}{challenge}\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n{}",
            self.status,
            reason(self.status),
            self.body.len(),
            self.body
        )
        .into_bytes()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Decide what to do with `buf`, everything the client sent so far.
pub fn decide(buf: &[u8], access: &Access) -> Decision {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Decision::Reply(Reply::text(431, "request head too large\n")),
        Ok(httparse::Status::Partial) => return Decision::Incomplete,
        Err(httparse::Error::TooManyHeaders) => return Decision::Reply(Reply::text(431, "too many header fields\n")),
        Err(_) => return Decision::Reply(Reply::text(400, "bad request\n")),
    }
    let method = req.method.unwrap_or_default();
    let path = req.path.unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    match (path, method) {
        ("/healthz", "GET") => Decision::Reply(Reply::text(200, "ok\n")),
        ("/drain", "GET") => {
            if !access.source_allowed {
                return Decision::Refused(Reply::text(403, "forbidden: this address may not drain\n"), "source not allowed");
            }
            let Some(token) = access.token else { return Decision::Drain };
            match credentials(req.headers, token) {
                Credentials::Valid => Decision::Drain,
                Credentials::Missing => Decision::Refused(
                    Reply { challenge: true, ..Reply::text(401, "unauthorized: send Authorization: Bearer <token>\n") },
                    "no bearer token",
                ),
                Credentials::Wrong => Decision::Refused(Reply::text(403, "forbidden: wrong token\n"), "wrong token"),
                Credentials::Ambiguous => Decision::Reply(Reply::text(400, "bad request: more than one Authorization header\n")),
            }
        }
        ("/healthz" | "/drain", _) => Decision::Reply(Reply { allow_get: true, ..Reply::text(405, "method not allowed: use GET\n") }),
        _ => Decision::Reply(Reply::text(404, "not found: use GET /drain or GET /healthz\n")),
    }
}

#[derive(Debug, PartialEq)]
enum Credentials {
    Valid,
    /// No Authorization header, or not a Bearer one.
    Missing,
    Wrong,
    /// Two Authorization headers: which one counts is not for us to guess.
    Ambiguous,
}

fn credentials(headers: &[httparse::Header], token: &[u8]) -> Credentials {
    let mut auth = headers.iter().filter(|h| h.name.eq_ignore_ascii_case("authorization"));
    let value = match (auth.next(), auth.next()) {
        (None, _) => return Credentials::Missing,
        (Some(_), Some(_)) => return Credentials::Ambiguous,
        (Some(h), None) => h.value.trim_ascii(),
    };
    // `Bearer` 1*SP token; the scheme is case-insensitive (RFC 7235 §2.1).
    let Some(split) = value.iter().position(|&b| b == b' ' || b == b'\t') else { return Credentials::Missing };
    let (scheme, presented) = value.split_at(split);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Credentials::Missing;
    }
    if same_secret(presented.trim_ascii(), token) {
        Credentials::Valid
    } else {
        Credentials::Wrong
    }
}

/// `presented == token`, in time that depends only on `presented.len()`:
/// every byte of it is compared (against the token repeated), with no early
/// exit at the first difference and no loop over the token's length.
fn same_secret(presented: &[u8], token: &[u8]) -> bool {
    if token.is_empty() {
        return false;
    }
    let mut diff = u8::from(presented.len() != token.len());
    for (i, &b) in presented.iter().enumerate() {
        diff |= b ^ token[i % token.len()];
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &[u8] = b"0123456789abcdef";

    fn open() -> Access<'static> {
        Access { token: None, source_allowed: true }
    }

    fn guarded() -> Access<'static> {
        Access { token: Some(TOKEN), source_allowed: true }
    }

    fn get(path: &str, extra: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: 10.0.0.5:9099\r\nUser-Agent: kube-lifecycle/1.33\r\n{extra}\r\n").into_bytes()
    }

    fn status(d: &Decision) -> u16 {
        match d {
            Decision::Reply(r) | Decision::Refused(r, _) => r.status,
            Decision::Drain => 0,
            Decision::Incomplete => 1,
        }
    }

    #[test]
    fn routes() {
        let cases: &[(&[u8], u16)] = &[
            (b"GET /healthz HTTP/1.1\r\n\r\n", 200),
            (b"GET /healthz?verbose=1 HTTP/1.1\r\n\r\n", 200),
            (b"GET /drain HTTP/1.0\r\n\r\n", 0),
            (b"GET /drain?x HTTP/1.1\r\n\r\n", 0),
            (b"HEAD /drain HTTP/1.1\r\n\r\n", 405),
            (b"POST /healthz HTTP/1.1\r\nContent-Length: 100000\r\n\r\n", 405),
            (b"GET / HTTP/1.1\r\n\r\n", 404),
            (b"GET /healthz/ HTTP/1.1\r\n\r\n", 404),
            (b"GET /drainx HTTP/1.1\r\n\r\n", 404),
            (b"\x00\x01 hello\r\n\r\n", 400),
            (b"GET /healthz HTTP/1.1\r\n", 1),
            (b"GET /heal", 1),
            (b"", 1),
        ];
        for (req, want) in cases {
            assert_eq!(status(&decide(req, &open())), *want, "{:?}", String::from_utf8_lossy(req));
        }
        let Decision::Reply(r) = decide(b"PUT /drain HTTP/1.1\r\n\r\n", &open()) else { panic!() };
        assert!(r.allow_get && !r.challenge);
    }

    #[test]
    fn head_limits() {
        let mut big = b"GET /healthz HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD, b'a');
        assert_eq!(status(&decide(&big, &open())), 431);
        big.truncate(MAX_HEAD - 1);
        assert_eq!(status(&decide(&big, &open())), 1);
        let many = get("/healthz", &"X-A: b\r\n".repeat(MAX_HEADERS));
        assert_eq!(status(&decide(&many, &open())), 431);
    }

    #[test]
    fn drain_needs_the_token_and_a_permitted_source() {
        let bearer = |t: &str| get("/drain", &format!("Authorization: {t}\r\n"));
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (get("/drain", ""), 401),
            (bearer("Bearer 0123456789abcdef"), 0),
            (bearer("bearer   0123456789abcdef  "), 0),
            (get("/drain", "authorization: BEARER 0123456789abcdef\r\n"), 0),
            (bearer("Bearer 0123456789abcdeF"), 403),
            (bearer("Bearer 0123456789abcde"), 403),
            (bearer("Bearer 0123456789abcdef0"), 403),
            (bearer("Bearer 0123456789abcdef0123456789abcdef"), 403),
            (bearer("Bearer"), 401),
            (bearer("Bearer "), 401),
            (bearer("Basic MDEyMzQ1Njc4OWFiY2RlZg=="), 401),
            (bearer("0123456789abcdef"), 401),
            (get("/drain", "Authorization: Bearer 0123456789abcdef\r\nAuthorization: Bearer x\r\n"), 400),
            (get("/healthz", ""), 200),
        ];
        for (req, want) in &cases {
            assert_eq!(status(&decide(req, &guarded())), *want, "{:?}", String::from_utf8_lossy(req));
        }
        let Decision::Refused(r, _) = decide(&get("/drain", ""), &guarded()) else { panic!() };
        assert!(r.challenge && r.render().windows(27).any(|w| w == b"WWW-Authenticate: Bearer re"));

        // A refused source is refused before its credentials are looked at.
        let outside = Access { source_allowed: false, ..guarded() };
        assert_eq!(status(&decide(&bearer("Bearer 0123456789abcdef"), &outside)), 403);
        assert_eq!(status(&decide(&get("/healthz", ""), &outside)), 200);
        assert_eq!(status(&decide(&get("/drain", ""), &Access { source_allowed: false, token: None })), 403);
    }

    #[test]
    fn same_secret_compares_every_byte() {
        assert!(same_secret(TOKEN, TOKEN));
        for other in [&b""[..], b"0", b"0123456789abcde", b"0123456789abcdef0", b"x123456789abcdef", b"0123456789abcdeg"] {
            assert!(!same_secret(other, TOKEN), "{other:?}");
        }
        assert!(!same_secret(b"", b""));
    }

    #[test]
    fn render_is_a_complete_answer() {
        let out = Reply { allow_get: true, ..Reply::text(405, "method not allowed: use GET\n") }.render();
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut resp = httparse::Response::new(&mut headers);
        let n = match resp.parse(&out) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!("{other:?}"),
        };
        assert_eq!(resp.code, Some(405));
        assert!(resp.headers.iter().any(|h| h.name == "Allow" && h.value == b"GET"));
        assert_eq!(&out[n..], b"method not allowed: use GET\n");
    }

    proptest::proptest! {
        /// No input may panic, whatever the access rules (a release build
        /// aborts on a panic), and a decision never asks for more input once
        /// the head limit is reached.
        #[test]
        fn decide_never_panics(buf in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..(MAX_HEAD + 64)), token in proptest::option::of(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)), allowed in proptest::prelude::any::<bool>()) {
            let d = decide(&buf, &Access { token: token.as_deref(), source_allowed: allowed });
            if buf.len() >= MAX_HEAD {
                proptest::prop_assert_ne!(d, Decision::Incomplete);
            }
        }

        /// Well-formed requests with arbitrary paths and header values.
        #[test]
        fn decide_handles_any_path_and_header(path in "/[ -~]{0,64}", value in "[ -~]{0,80}") {
            let req = format!("GET {path} HTTP/1.1\r\nAuthorization: {value}\r\n\r\n");
            let _ = decide(req.as_bytes(), &guarded());
        }
    }
}
