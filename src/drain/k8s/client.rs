//! The Kubernetes API over HTTPS: in-cluster configuration the way client-go
//! does it (`rest.InClusterConfig`), bearer auth, and GET, watch and POST
//! (a create: `lastcall explain`'s SelfSubjectAccessReviews, `--events`)
//! requests that each carry a deadline.
//!
//! * API: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`,
//!   an IPv6 host in brackets (client-go uses `net.JoinHostPort`).
//! * Token: re-read from the file for every request, because projected
//!   service-account tokens rotate (client-go tracks it as BearerTokenFile).
//! * TLS: rustls, always verified, against the CA file only; no web PKI
//!   roots are built in. TLS 1.3 only: kube-apiserver is Go's crypto/tls,
//!   which has offered it by default since Go 1.13 (Kubernetes 1.16); see
//!   `tls.rs` for the algorithms.
//! * HTTP/1.1: ureq-proto (the sans-IO protocol crate under ureq) writes the
//!   request and parses the response, including chunked bodies; this file
//!   only moves bytes between it and the TLS stream. One connection per
//!   request: a drain makes three.
//! * Deadlines: every request has one absolute deadline for its head (and
//!   one for its body), and every socket operation under rustls is bounded
//!   by what is left of it (`Deadlined`), so a peer that drips bytes, each
//!   within any per-read timeout, still cannot stretch a request. A host
//!   name is resolved on a helper thread that is abandoned at the deadline
//!   (getaddrinfo has no timeout).
//! * Bodies are handed to the decoder as a stream, capped in size, never
//!   read whole into memory (see `slices.rs`).
//!
//! Why not ureq itself: its agent (pool, proxies, middleware, resolver
//! threads, TLS 1.2) cost ~240 KB of the static binary that this strategy
//! does not need; the size budget is 2.5 MiB for everything.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use ureq_proto::client::state::RecvBody;
use ureq_proto::client::{Call, RecvResponseResult, SendRequestResult};
use ureq_proto::http;

use super::slices::decode_status;
use crate::config::K8sConfig;

/// The largest watch event (one JSON line) accepted: slices hold at most
/// 1,000 endpoints, far below this.
const MAX_EVENT: usize = 16 << 20;
/// The largest response body read (a LIST page of 500 slices of up to
/// 1,000 endpoints each stays below it); it is decoded as it streams in.
const MAX_BODY: usize = 64 << 20;
/// Error bodies are short `metav1.Status` objects.
const MAX_ERROR_BODY: usize = 64 << 10;
/// Response headers larger than this are refused.
const MAX_HEADERS: usize = 64 << 10;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// Nothing was sent: configuration, CA or token problem.
    #[error("{0}")]
    Setup(String),
    /// Connection, TLS, timeout, reset, or a stream cut short.
    #[error("{0}")]
    Transport(String),
    /// The API server answered with an error status.
    #[error("{code} {reason}: {message}")]
    Status { code: u16, reason: String, message: String, retry_after: Option<Duration> },
    /// The answer was not what the API promises.
    #[error("{0}")]
    Decode(String),
}

impl ApiError {
    pub fn code(&self) -> Option<u16> {
        match self {
            ApiError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The API server URL: `--k8s-api`, else the in-cluster env variables.
pub fn api_base(flag: Option<&str>, host: Option<&str>, port: Option<&str>) -> Result<String, String> {
    if let Some(url) = flag.map(str::trim).filter(|u| !u.is_empty()) {
        if !url.starts_with("https://") {
            return Err(format!("--k8s-api {url:?} must be an https:// URL (TLS is always verified)"));
        }
        return Ok(url.trim_end_matches('/').to_string());
    }
    let host = host.map(str::trim).filter(|h| !h.is_empty());
    let port = port.map(str::trim).filter(|p| !p.is_empty());
    let (Some(host), Some(port)) = (host, port) else {
        return Err("not in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (use --k8s-api)".into());
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("KUBERNETES_SERVICE_PORT {port:?} is not a port number"));
    }
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
    Ok(format!("https://{host}:{port}"))
}

pub struct Client {
    base: String,
    /// For connecting and for the certificate check (SNI or IP SAN).
    host: String,
    port: u16,
    tls: Arc<ClientConfig>,
    token_file: PathBuf,
    /// The host name lookup in flight, if any (see `addresses`).
    lookup: Mutex<Option<Arc<Lookup>>>,
}

impl Client {
    /// Reads the CA file and prepares TLS; sends nothing.
    pub fn new(cfg: &K8sConfig) -> Result<Client, ApiError> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok();
        let port = std::env::var("KUBERNETES_SERVICE_PORT").ok();
        let base = api_base(cfg.api.as_deref(), host.as_deref(), port.as_deref()).map_err(ApiError::Setup)?;
        let (host, port) = split_authority(&base).ok_or_else(|| ApiError::Setup(format!("cannot use the API URL {base:?}")))?;
        let roots = read_ca(&cfg.ca_file)?;
        let tls = ClientConfig::builder_with_provider(Arc::new(super::tls::provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ApiError::Setup(format!("TLS set-up: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Client { base, host, port, tls: Arc::new(tls), token_file: cfg.token_file.clone(), lookup: Mutex::new(None) })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// Read fresh for every request: projected tokens rotate (about hourly).
    fn token(&self) -> Result<String, ApiError> {
        let raw = std::fs::read_to_string(&self.token_file)
            .map_err(|e| ApiError::Setup(format!("cannot read the token file {}: {e}", self.token_file.display())))?;
        let token = raw.trim();
        if token.is_empty() || token.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
            return Err(ApiError::Setup(format!("the token file {} holds no usable token", self.token_file.display())));
        }
        Ok(token.to_string())
    }

    /// GET `path` with `query` and hand the body of a 2xx answer to
    /// `decode` as it arrives; the whole exchange is over within `timeout`.
    /// A decoder that fails because reading failed (timeout, reset, size
    /// cap) reports that transport error, not a decoding one.
    pub fn get<T>(
        &self,
        path: &str,
        query: &[(&str, String)],
        timeout: Duration,
        decode: impl FnOnce(&mut dyn Read) -> Result<T, String>,
    ) -> Result<T, ApiError> {
        self.exchange(path, query, None, Instant::now() + timeout, decode)
    }

    /// POST the JSON `body` to `path` (a create: SelfSubjectAccessReview,
    /// Event) and decode the answer as `get` does; the whole exchange is
    /// over by the absolute `deadline`.
    pub fn post<T>(
        &self,
        path: &str,
        body: &[u8],
        deadline: Instant,
        decode: impl FnOnce(&mut dyn Read) -> Result<T, String>,
    ) -> Result<T, ApiError> {
        self.exchange(path, &[], Some(body), deadline, decode)
    }

    fn exchange<T>(
        &self,
        path: &str,
        query: &[(&str, String)],
        body: Option<&[u8]>,
        deadline: Instant,
        decode: impl FnOnce(&mut dyn Read) -> Result<T, String>,
    ) -> Result<T, ApiError> {
        // The generic part is only this adapter; the exchange is compiled once.
        let (mut decode, mut out) = (Some(decode), None);
        self.exchange_dyn(path, query, body, deadline, &mut |body| {
            out = decode.take().map(|d| d(body)).transpose()?;
            Ok(())
        })?;
        out.ok_or_else(|| ApiError::Decode("no body decoded".into()))
    }

    fn exchange_dyn(
        &self,
        path: &str,
        query: &[(&str, String)],
        sent: Option<&[u8]>,
        deadline: Instant,
        decode: &mut dyn FnMut(&mut dyn Read) -> Result<(), String>,
    ) -> Result<(), ApiError> {
        let mut body = self.request(path, query, sent, deadline, deadline)?;
        let mut src = Capped { inner: &mut body, left: MAX_BODY, failed: None };
        // serde_json reads a byte at a time: buffer in front of the TLS stream.
        let decoded = decode(&mut BufReader::with_capacity(16 << 10, &mut src));
        match (decoded, src.failed) {
            (Ok(()), _) => Ok(()),
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => Err(ApiError::Decode(e)),
        }
    }

    /// Starts a watch: the answer's headers must come within
    /// `header_timeout`, and the stream is cut at `until` at the latest.
    pub fn watch(&self, path: &str, query: &[(&str, String)], header_timeout: Duration, until: Instant) -> Result<WatchStream, ApiError> {
        let headers_by = (Instant::now() + header_timeout).min(until);
        let body = self.request(path, query, None, headers_by, until)?;
        Ok(WatchStream { reader: BufReader::new(body) })
    }

    /// One request on a new connection, a GET, or a POST of `sent` (JSON):
    /// connected, TLS done, request sent and response headers read by
    /// `headers_by`; the body must be read by `body_by`.
    fn request(
        &self,
        path: &str,
        query: &[(&str, String)],
        sent: Option<&[u8]>,
        headers_by: Instant,
        body_by: Instant,
    ) -> Result<Body, ApiError> {
        let token = self.token()?;
        let mut uri = format!("{}{path}", self.base);
        for (i, (k, v)) in query.iter().enumerate() {
            uri.push(if i == 0 { '?' } else { '&' });
            uri.push_str(k);
            uri.push('=');
            percent_encode(v, &mut uri);
        }
        let mut req = http::Request::builder().method(if sent.is_some() { http::Method::POST } else { http::Method::GET }).uri(uri);
        if let Some(b) = sent {
            req = req.header("content-type", "application/json").header("content-length", b.len().to_string());
        }
        let req = req
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "application/json")
            .header("user-agent", concat!("lastcall/", env!("CARGO_PKG_VERSION")))
            .body(())
            .map_err(|e| ApiError::Setup(format!("bad request: {e}")))?;
        let mut stream = self.connect(headers_by)?;

        // Send the request line and headers, then the body (sized by its
        // content-length, so ureq-proto passes it through unchanged).
        let mut call = Call::new(req).map_err(protocol)?.proceed();
        let mut out = vec![0u8; 16 << 10];
        let n = call.write(&mut out).map_err(protocol)?;
        stream.write_all(&out[..n]).map_err(|e| io_error(&e))?;
        let mut call = match (call.proceed().map_err(protocol)?, sent) {
            (Some(SendRequestResult::RecvResponse(c)), None) => c,
            (Some(SendRequestResult::SendBody(mut c)), Some(b)) => {
                stream.write_all(b).map_err(|e| io_error(&e))?;
                c.consume_direct_write(b.len()).map_err(protocol)?;
                c.proceed().ok_or_else(|| ApiError::Transport("the request body was not fully written".into()))?
            }
            _ => return Err(ApiError::Transport("the request was not fully written".into())),
        };
        stream.flush().map_err(|e| io_error(&e))?;

        // Read until the response headers are complete.
        let mut input = Vec::new();
        let mut chunk = vec![0u8; 16 << 10];
        let resp = loop {
            if !input.is_empty() {
                let (used, resp) = call.try_response(&input, false).map_err(protocol)?;
                input.drain(..used);
                if let Some(resp) = resp {
                    break resp;
                }
            }
            if input.len() > MAX_HEADERS {
                return Err(ApiError::Transport("response headers too large".into()));
            }
            let n = stream.read(&mut chunk).map_err(|e| io_error(&e))?;
            if n == 0 {
                return Err(ApiError::Transport("connection closed before the response".into()));
            }
            input.extend_from_slice(&chunk[..n]);
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let call = match call.proceed() {
            Some(RecvResponseResult::RecvBody(c)) => Some(c),
            Some(RecvResponseResult::Cleanup(_)) => None,
            Some(RecvResponseResult::Redirect(_)) => return Err(ApiError::Transport(format!("unexpected redirect ({status})"))),
            None => return Err(ApiError::Transport("incomplete response".into())),
        };
        stream.sock.by = body_by;
        let mut body = Body { stream, call, input, chunk };
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let mut bytes = Vec::new();
        let _ = (&mut body).take(MAX_ERROR_BODY as u64).read_to_end(&mut bytes);
        Err(status_error(status, retry_after, &bytes))
    }

    /// Where to connect: the host itself when it is an IP address (the
    /// in-cluster case), else what the system resolver says by `by`.
    /// getaddrinfo(3) cannot be given a timeout, so it runs on a helper
    /// thread that is abandoned at the deadline (it ends when the resolver
    /// gives up). A lookup still running when the next request comes is
    /// waited for again rather than repeated: a resolver that never answers
    /// costs one thread, not one per retry.
    fn addresses(&self, by: Instant) -> Result<Vec<SocketAddr>, ApiError> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        let lookup = {
            let mut slot = self.lookup.lock().unwrap_or_else(PoisonError::into_inner);
            match slot.as_ref() {
                Some(running) if running.answer.lock().unwrap_or_else(PoisonError::into_inner).is_none() => running.clone(),
                _ => {
                    let new = Arc::new(Lookup::default());
                    let (job, host, port) = (new.clone(), self.host.clone(), self.port);
                    std::thread::Builder::new()
                        .name("dns".into())
                        .stack_size(256 << 10)
                        .spawn(move || {
                            let answer = (host.as_str(), port).to_socket_addrs().map(Iterator::collect).map_err(|e| e.to_string());
                            *job.answer.lock().unwrap_or_else(PoisonError::into_inner) = Some(answer);
                            job.ready.notify_all();
                        })
                        .map_err(|e| ApiError::Transport(format!("cannot resolve {}: no thread for the lookup: {e}", self.host)))?;
                    *slot = Some(new.clone());
                    new
                }
            }
        };
        let mut answer = lookup.answer.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(done) = answer.as_ref() {
                return done.clone().map_err(|e| ApiError::Transport(format!("cannot resolve {}: {e}", self.host)));
            }
            let left = by.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ApiError::Transport(format!("timed out resolving {}", self.host)));
            }
            answer = lookup.ready.wait_timeout(answer, left).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    fn connect(&self, by: Instant) -> Result<StreamOwned<ClientConnection, Deadlined>, ApiError> {
        let addrs = self.addresses(by)?;
        let mut last = ApiError::Transport(format!("no address for {}", self.host));
        let mut sock = None;
        for addr in addrs {
            let left = by.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ApiError::Transport("timed out (connect)".into()));
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = io_error(&e),
            }
        }
        let sock = sock.ok_or(last)?;
        let _ = sock.set_nodelay(true);
        let name = ServerName::try_from(self.host.clone()).map_err(|e| ApiError::Setup(format!("bad host {:?}: {e}", self.host)))?;
        let conn = ClientConnection::new(self.tls.clone(), name).map_err(|e| ApiError::Setup(format!("TLS: {e}")))?;
        let mut stream = StreamOwned::new(conn, Deadlined { sock, by });
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).map_err(|e| io_error(&e))?;
        }
        Ok(stream)
    }
}

/// One host name lookup: its answer, once there.
#[derive(Default)]
struct Lookup {
    answer: Mutex<Option<Result<Vec<SocketAddr>, String>>>,
    ready: Condvar,
}

/// The API server's socket, under rustls: every read and write ends by
/// `by`. The receive and send timeouts are set to what is left before each
/// call, so the deadline holds however the bytes trickle in (rustls reads a
/// TLS record with as many calls as it takes).
struct Deadlined {
    sock: TcpStream,
    by: Instant,
}

impl Deadlined {
    fn left(&self) -> io::Result<Duration> {
        let left = self.by.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        Ok(left)
    }
}

/// A blocking call ended by its socket timeout reports WouldBlock (EAGAIN).
fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::ErrorKind::TimedOut.into()
    } else {
        e
    }
}

impl Read for Deadlined {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.sock.set_read_timeout(Some(self.left()?))?;
            match self.sock.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other.map_err(timed_out),
            }
        }
    }
}

impl Write for Deadlined {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            self.sock.set_write_timeout(Some(self.left()?))?;
            match self.sock.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other.map_err(timed_out),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A body as the decoder sees it: at most `left` more bytes, and the
/// transport error that ended reading remembered, so that it is reported
/// as what it is (the decoder only sees that reading failed).
struct Capped<'a> {
    inner: &'a mut Body,
    left: usize,
    failed: Option<ApiError>,
}

impl Read for Capped<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 && !buf.is_empty() {
            // One byte more tells a body of exactly the cap from a larger one.
            if self.inner.read(&mut [0u8])? == 0 {
                return Ok(0);
            }
            self.failed = Some(ApiError::Decode(format!("response larger than {} MiB", MAX_BODY >> 20)));
            return Err(io::Error::other("response too large"));
        }
        let n = buf.len().min(self.left);
        match self.inner.read(&mut buf[..n]) {
            Ok(got) => {
                self.left -= got;
                Ok(got)
            }
            Err(e) => {
                self.failed = Some(io_error(&e));
                Err(e)
            }
        }
    }
}

/// A response body, decoded by ureq-proto (chunked or sized), read by the
/// socket's deadline. Reads return 0 at its end.
pub struct Body {
    stream: StreamOwned<ClientConnection, Deadlined>,
    call: Option<Call<RecvBody>>,
    input: Vec<u8>,
    chunk: Vec<u8>,
}

impl Read for Body {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(call) = self.call.as_mut() else { return Ok(0) };
            if !self.input.is_empty() {
                let (used, produced) =
                    call.read(&self.input, out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                self.input.drain(..used);
                if produced > 0 {
                    return Ok(produced);
                }
            }
            if call.can_proceed() {
                self.call = None;
                return Ok(0);
            }
            // Bytes the decoder keeps without producing anything are framing
            // (a chunk header): a peer cannot make that grow without bound.
            if self.input.len() > MAX_HEADERS {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed chunked body"));
            }
            let n = self.stream.read(&mut self.chunk)?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            self.input.extend_from_slice(&self.chunk[..n]);
        }
    }
}

/// `host` and `port` of `https://host:port`, brackets removed.
fn split_authority(base: &str) -> Option<(String, u16)> {
    let auth = base.strip_prefix("https://")?.split('/').next()?;
    let (host, port) = match auth.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p.parse().ok()?),
        _ => (auth, 443),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// Query-string encoding: everything but RFC 3986 unreserved characters.
fn percent_encode(v: &str, out: &mut String) {
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn protocol(e: ureq_proto::Error) -> ApiError {
    ApiError::Transport(format!("HTTP: {e}"))
}

/// A watch response body: one JSON event per line (the API server's JSON
/// stream framing; kube-rs splits watch streams on newlines too).
pub struct WatchStream {
    reader: BufReader<Body>,
}

impl WatchStream {
    /// The next event line; `None` at a clean end of stream (the server's
    /// timeoutSeconds, a restart). A stream cut inside an event is an error.
    pub fn next_line(&mut self) -> Result<Option<Vec<u8>>, ApiError> {
        loop {
            let mut line = Vec::new();
            let n = (&mut self.reader).take(MAX_EVENT as u64 + 1).read_until(b'\n', &mut line).map_err(|e| io_error(&e))?;
            if n == 0 {
                return Ok(None);
            }
            if line.last() != Some(&b'\n') {
                if line.len() > MAX_EVENT {
                    return Err(ApiError::Decode(format!("watch event larger than {} MiB", MAX_EVENT >> 20)));
                }
                return Err(ApiError::Transport("the watch stream ended in the middle of an event".into()));
            }
            if line.iter().any(|b| !b.is_ascii_whitespace()) {
                return Ok(Some(line));
            }
        }
    }
}

fn read_ca(path: &Path) -> Result<RootCertStore, ApiError> {
    let pem = std::fs::read(path).map_err(|e| ApiError::Setup(format!("cannot read the CA file {}: {e}", path.display())))?;
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok));
    if added == 0 {
        return Err(ApiError::Setup(format!("no usable PEM certificate in the CA file {}", path.display())));
    }
    Ok(roots)
}

fn status_error(code: u16, retry_after: Option<Duration>, bytes: &[u8]) -> ApiError {
    let st = decode_status(bytes).unwrap_or_default();
    let reason = if st.reason.is_empty() { canonical_reason(code).to_string() } else { st.reason };
    let reason = match (code, reason.as_str()) {
        // "Forbidden"/"Unauthorized" already say what the code says.
        (401, "Unauthorized") | (403, "Forbidden") | (404, "NotFound") => canonical_reason(code).to_string(),
        _ => reason,
    };
    let message = if st.message.is_empty() {
        // Not a Status (a proxy's HTML page?): show its start.
        String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        st.message
    };
    ApiError::Status { code, reason, message, retry_after }
}

fn canonical_reason(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "error",
    }
}

fn io_error(e: &std::io::Error) -> ApiError {
    use std::io::ErrorKind as K;
    let what = match e.kind() {
        K::ConnectionRefused => "connection refused".to_string(),
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => "connection reset".to_string(),
        K::TimedOut | K::WouldBlock => "timed out".to_string(),
        K::UnexpectedEof => "connection closed early".to_string(),
        K::InvalidData => format!("TLS or HTTP error: {e}"),
        _ => e.to_string(),
    };
    ApiError::Transport(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_base_like_client_go() {
        assert_eq!(api_base(None, Some("10.96.0.1"), Some("443")).unwrap(), "https://10.96.0.1:443");
        assert_eq!(api_base(None, Some("fd00::1"), Some("6443")).unwrap(), "https://[fd00::1]:6443");
        assert_eq!(api_base(None, Some("[fd00::1]"), Some("6443")).unwrap(), "https://[fd00::1]:6443");
        assert_eq!(api_base(Some("https://api.example:6443/"), None, None).unwrap(), "https://api.example:6443");
        assert!(api_base(Some("http://127.0.0.1:8001"), None, None).unwrap_err().contains("https"));
        assert!(api_base(None, None, Some("443")).unwrap_err().contains("KUBERNETES_SERVICE_HOST"));
        assert!(api_base(None, Some("10.96.0.1"), None).unwrap_err().contains("not in a cluster"));
        assert!(api_base(None, Some("10.96.0.1"), Some("https")).is_err());
    }

    #[test]
    fn authority_and_query_encoding() {
        assert_eq!(split_authority("https://10.96.0.1:443"), Some(("10.96.0.1".into(), 443)));
        assert_eq!(split_authority("https://[fd00::1]:6443"), Some(("fd00::1".into(), 6443)));
        assert_eq!(split_authority("https://[fd00::1]"), Some(("fd00::1".into(), 443)));
        assert_eq!(split_authority("https://api.example/prefix"), Some(("api.example".into(), 443)));
        assert_eq!(split_authority("https://:443"), None);
        assert_eq!(split_authority("https://h:notaport"), None);
        let mut q = String::new();
        percent_encode("kubernetes.io/service-name in (a,b)", &mut q);
        assert_eq!(q, "kubernetes.io%2Fservice-name%20in%20%28a%2Cb%29");
    }

    #[test]
    fn ca_file_errors_are_one_line() {
        let missing = read_ca(Path::new("/nonexistent/ca.crt")).unwrap_err().to_string();
        assert!(missing.contains("/nonexistent/ca.crt") && !missing.contains('\n'));
        let dir = std::env::temp_dir().join(format!("lastcall-ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("ca.crt");
        std::fs::write(&f, "not a certificate\n").unwrap();
        assert!(read_ca(&f).unwrap_err().to_string().contains("no usable PEM certificate"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
