//! The Kubernetes API over HTTPS: in-cluster configuration the way client-go
//! does it (`rest.InClusterConfig`), bearer auth, and GET / watch requests
//! that each carry a timeout.
//!
//! * API: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`,
//!   an IPv6 host in brackets (client-go uses `net.JoinHostPort`).
//! * Token: re-read from the file for every request, because projected
//!   service-account tokens rotate (client-go tracks it as BearerTokenFile).
//! * TLS: always verified, against the CA file only; no web PKI roots are
//!   built in.
//!
//! HTTP, TLS and JSON are ureq, rustls and serde_json: nothing hand-rolled.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ureq::tls::{PemItem, RootCerts, TlsConfig, TlsProvider};
use ureq::{Agent, BodyReader};

use super::slices::decode_status;
use crate::config::K8sConfig;

/// The largest watch event (one JSON line) accepted: slices hold at most
/// 1,000 endpoints, far below this.
const MAX_EVENT: usize = 16 << 20;
/// The largest list response read.
const MAX_BODY: u64 = 64 << 20;
/// Error bodies are short `metav1.Status` objects.
const MAX_ERROR_BODY: u64 = 64 << 10;

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

/// The TLS a Kubernetes API server needs, and no more (binary size): the
/// API server is Go's crypto/tls, which always offers the AES-GCM suites
/// and the P-256 key exchange, with RSA or ECDSA certificates (kubeadm and
/// most distributions sign with RSA 2048, k3s with ECDSA P-256).
mod tls {
    use rustls::crypto::ring::{cipher_suite as cs, kx_group};
    use rustls::crypto::{CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom, WebPkiSupportedAlgorithms};
    use rustls::pki_types::PrivateKeyDer;
    use rustls::sign::SigningKey;
    use rustls::SignatureScheme as S;
    use webpki::ring as alg;

    /// Certificate and handshake signatures: ECDSA P-256/P-384, RSA.
    static SIG_ALGS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
            all: &[
                alg::ECDSA_P256_SHA256,
                alg::ECDSA_P256_SHA384,
                alg::ECDSA_P384_SHA256,
                alg::ECDSA_P384_SHA384,
                alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
                alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
                alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
                alg::RSA_PKCS1_2048_8192_SHA256,
                alg::RSA_PKCS1_2048_8192_SHA384,
                alg::RSA_PKCS1_2048_8192_SHA512,
            ],
            mapping: &[
                (S::ECDSA_NISTP384_SHA384, &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384]),
                (S::ECDSA_NISTP256_SHA256, &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256]),
                (S::RSA_PSS_SHA512, &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY]),
                (S::RSA_PSS_SHA384, &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY]),
                (S::RSA_PSS_SHA256, &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY]),
                (S::RSA_PKCS1_SHA512, &[alg::RSA_PKCS1_2048_8192_SHA512]),
                (S::RSA_PKCS1_SHA384, &[alg::RSA_PKCS1_2048_8192_SHA384]),
                (S::RSA_PKCS1_SHA256, &[alg::RSA_PKCS1_2048_8192_SHA256]),
            ],
        };

    pub fn provider() -> CryptoProvider {
        CryptoProvider {
            cipher_suites: vec![
                cs::TLS13_AES_128_GCM_SHA256,
                cs::TLS13_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            ],
            kx_groups: vec![kx_group::SECP256R1],
            signature_verification_algorithms: SIG_ALGS,
            secure_random: &Random,
            key_provider: &NoKeys,
        }
    }

    /// getrandom(2), the kernel's CSPRNG.
    #[derive(Debug)]
    struct Random;

    impl SecureRandom for Random {
        fn fill(&self, mut buf: &mut [u8]) -> Result<(), GetRandomFailed> {
            while !buf.is_empty() {
                // SAFETY: the pointer and length describe `buf`, which is writable.
                let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(GetRandomFailed);
                }
                buf = &mut buf[n as usize..];
            }
            Ok(())
        }
    }

    /// No client certificates: lastcall authenticates with the bearer token.
    #[derive(Debug)]
    struct NoKeys;

    impl KeyProvider for NoKeys {
        fn load_private_key(&self, _: PrivateKeyDer<'static>) -> Result<std::sync::Arc<dyn SigningKey>, rustls::Error> {
            Err(rustls::Error::General("client certificates are not supported".into()))
        }
    }
}

pub struct Client {
    agent: Agent,
    base: String,
    token_file: PathBuf,
}

impl Client {
    /// Reads the CA file and prepares the agent; sends nothing.
    pub fn new(cfg: &K8sConfig) -> Result<Client, ApiError> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok();
        let port = std::env::var("KUBERNETES_SERVICE_PORT").ok();
        let base = api_base(cfg.api.as_deref(), host.as_deref(), port.as_deref()).map_err(ApiError::Setup)?;
        let roots = read_ca(&cfg.ca_file)?;
        // Process-wide, and ureq takes it from there; a second install is a
        // harmless error.
        let _ = tls::provider().install_default();
        let tls = TlsConfig::builder().provider(TlsProvider::Rustls).root_certs(roots).build();
        let agent = Agent::config_builder()
            .tls_config(tls)
            .https_only(true)
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("lastcall/", env!("CARGO_PKG_VERSION")))
            .accept("application/json")
            .build()
            .new_agent();
        Ok(Client { agent, base, token_file: cfg.token_file.clone() })
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

    /// GET `path` with `query`; the whole exchange is over within `timeout`.
    /// Returns the body of a 2xx answer.
    pub fn get(&self, path: &str, query: &[(&str, String)], timeout: Duration) -> Result<Vec<u8>, ApiError> {
        let token = self.token()?;
        let mut req = self.agent.get(format!("{}{path}", self.base));
        for (k, v) in query {
            req = req.query(*k, v);
        }
        let req = req.header("Authorization", format!("Bearer {token}")).config().timeout_global(Some(timeout)).build();
        let resp = req.call().map_err(transport)?;
        let (parts, mut body) = resp.into_parts();
        if !parts.status.is_success() {
            return Err(status_error(parts.status.as_u16(), &parts.headers, &mut body));
        }
        body.with_config().limit(MAX_BODY).read_to_vec().map_err(transport)
    }

    /// Starts a watch: the answer's headers must come within
    /// `header_timeout`, and the stream is cut at `until` at the latest.
    pub fn watch(&self, path: &str, query: &[(&str, String)], header_timeout: Duration, until: Instant) -> Result<WatchStream, ApiError> {
        let token = self.token()?;
        let total = until.saturating_duration_since(Instant::now());
        let mut req = self.agent.get(format!("{}{path}", self.base));
        for (k, v) in query {
            req = req.query(*k, v);
        }
        let req = req
            .header("Authorization", format!("Bearer {token}"))
            .config()
            .timeout_global(Some(total))
            .timeout_connect(Some(header_timeout))
            .timeout_recv_response(Some(header_timeout))
            .build();
        let resp = req.call().map_err(transport)?;
        let (parts, mut body) = resp.into_parts();
        if !parts.status.is_success() {
            return Err(status_error(parts.status.as_u16(), &parts.headers, &mut body));
        }
        Ok(WatchStream { reader: BufReader::new(body.into_reader()) })
    }
}

/// A watch response body: one JSON event per line (the API server's JSON
/// stream framing; kube-rs splits watch streams on newlines too).
pub struct WatchStream {
    reader: BufReader<BodyReader<'static>>,
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

fn read_ca(path: &Path) -> Result<RootCerts, ApiError> {
    let pem = std::fs::read(path).map_err(|e| ApiError::Setup(format!("cannot read the CA file {}: {e}", path.display())))?;
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(ApiError::Setup(format!("no PEM certificate in the CA file {}", path.display())));
    }
    Ok(RootCerts::Specific(Arc::new(certs)))
}

fn status_error(code: u16, headers: &ureq::http::HeaderMap, body: &mut ureq::Body) -> ApiError {
    let bytes = body.with_config().limit(MAX_ERROR_BODY).read_to_vec().unwrap_or_default();
    let st = decode_status(&bytes).unwrap_or_default();
    let reason = if st.reason.is_empty() { canonical_reason(code).to_string() } else { st.reason };
    let reason = match (code, reason.as_str()) {
        // "Forbidden"/"Unauthorized" already say what the code says.
        (401, "Unauthorized") | (403, "Forbidden") | (404, "NotFound") => canonical_reason(code).to_string(),
        _ => reason,
    };
    let retry_after = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
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

fn transport(e: ureq::Error) -> ApiError {
    match e {
        ureq::Error::Timeout(t) => ApiError::Transport(format!("timed out ({t})")),
        ureq::Error::Io(io) => io_error(&io),
        ureq::Error::Rustls(tls) => ApiError::Transport(format!("TLS: {tls}")),
        ureq::Error::HostNotFound => ApiError::Transport("host not found".into()),
        ureq::Error::ConnectionFailed => ApiError::Transport("connection failed".into()),
        other => ApiError::Transport(other.to_string()),
    }
}

fn io_error(e: &std::io::Error) -> ApiError {
    use std::io::ErrorKind as K;
    let what = match e.kind() {
        K::ConnectionRefused => "connection refused".to_string(),
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => "connection reset".to_string(),
        K::TimedOut | K::WouldBlock => "timed out".to_string(),
        K::UnexpectedEof => "connection closed early".to_string(),
        K::InvalidData => format!("TLS or protocol error: {e}"),
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
    fn ca_file_errors_are_one_line() {
        let missing = read_ca(Path::new("/nonexistent/ca.crt")).unwrap_err().to_string();
        assert!(missing.contains("/nonexistent/ca.crt") && !missing.contains('\n'));
        let dir = std::env::temp_dir().join(format!("lastcall-ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("ca.crt");
        std::fs::write(&f, "not a certificate\n").unwrap();
        assert!(read_ca(&f).unwrap_err().to_string().contains("no PEM certificate"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
