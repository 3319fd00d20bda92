//! The control socket: how `lastcall drain` (a preStop hook) reaches the
//! lastcall that runs as PID 1 in the same container.
//!
//! Protocol, one line each way: the client sends `drain\n`; the server
//! answers `done\n` when the drain is over, or `exited\n` when the app has
//! already exited (nothing to drain for). Every client that connects during
//! a drain joins it.
//!
//! Where: the socket file `--control-socket` (default /run/lastcall.sock),
//! created owner-only (0600). Images that run as a non-root user or with a
//! read-only root filesystem cannot create it; lastcall then listens on an
//! abstract unix socket instead (unix(7): no file, so any uid and any
//! filesystem will do). Abstract names belong to the network namespace,
//! which all containers of a pod share, so the name carries this
//! container's mount namespace (which `kubectl exec` joins), and both sides
//! check the other: the server accepts only clients of its own PID
//! namespace, the client only a server of its own mount namespace.
//!
//! Who: a peer whose uid is neither ours nor root is refused (SO_PEERCRED).
//!
//! Limits, so no client can hold PID 1's descriptors or time: at most
//! [`MAX_PENDING`] connected clients without a complete request (the oldest
//! is dropped for a new one, and each has [`REQUEST_TIMEOUT`] to send its
//! line) and [`MAX_WAITERS`] waiting for the answer (the oldest is dropped
//! for a new one: the real hook is never refused). When accept(2) fails
//! for lack of descriptors, the listener rests for [`ACCEPT_PAUSE`] instead
//! of waking the loop again at once.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

/// The server's answer to a drain request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Done,
    Exited,
}

impl Reply {
    pub fn line(self) -> &'static [u8] {
        match self {
            Reply::Done => b"done\n",
            Reply::Exited => b"exited\n",
        }
    }
}

/// Connected clients whose request line is not complete yet.
const MAX_PENDING: usize = 16;
/// Clients waiting for the answer to their drain request.
const MAX_WAITERS: usize = 32;
/// A client must send its request line within this time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the listener rests after accept(2) ran out of descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The abstract socket name for `path` in this container: its mount
/// namespace (`/proc/self/ns/mnt`, e.g. `mnt:[4026532301]`) and the path.
fn abstract_name(path: &Path) -> io::Result<Vec<u8>> {
    let ns = std::fs::read_link("/proc/self/ns/mnt")?;
    let mut name = b"lastcall/".to_vec();
    name.extend_from_slice(ns.as_os_str().as_encoded_bytes());
    name.extend_from_slice(path.as_os_str().as_encoded_bytes());
    Ok(name)
}

/// Where the server listens.
enum Place {
    File(PathBuf),
    Abstract,
}

/// Bind the socket file, replacing a stale one left by a previous run; when
/// the file cannot be made (non-root, read-only root filesystem), bind the
/// abstract name instead. An error only when neither works.
pub fn listen(path: &Path) -> io::Result<Server> {
    match listen_file(path) {
        Ok(l) => Ok(Server::new(l, Place::File(path.to_path_buf()))),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(e),
        Err(file_err) => {
            let addr = SocketAddr::from_abstract_name(abstract_name(path)?)?;
            let l = UnixListener::bind_addr(&addr).map_err(|e| io::Error::new(e.kind(), format!("{file_err}; abstract socket: {e}")))?;
            info!(path = %path.display(), reason = %file_err, "control socket file cannot be created: listening on an abstract socket instead");
            Ok(Server::new(l, Place::Abstract))
        }
    }
}

fn listen_file(path: &Path) -> io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(io::ErrorKind::AddrInUse, "another lastcall is listening there"));
            }
            std::fs::remove_file(path)?;
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // umask only swaps the process's file-creation mask. It is called
    // before any other thread exists, so nothing else creates files with
    // the temporary mask in between.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// A client between connecting and its request line.
struct Pending {
    conn: UnixStream,
    line: Vec<u8>,
    since: Instant,
}

/// The server side, driven by the supervisor's poll loop (no thread):
/// accepts clients, reads their one-line request without blocking, and
/// holds those that asked to drain until `answer`.
pub struct Server {
    listener: UnixListener,
    place: Place,
    pending: Vec<Pending>,
    waiters: Vec<UnixStream>,
    /// The listener is not polled before then (descriptors ran out).
    paused_until: Option<Instant>,
}

impl Server {
    fn new(listener: UnixListener, place: Place) -> Server {
        let _ = listener.set_nonblocking(true);
        Server { listener, place, pending: Vec::new(), waiters: Vec::new(), paused_until: None }
    }

    /// Descriptors to poll for readability at `now`.
    pub fn fds(&self, now: Instant) -> impl Iterator<Item = BorrowedFd<'_>> {
        let listening = !self.paused_until.is_some_and(|t| now < t);
        listening.then(|| self.listener.as_fd()).into_iter().chain(self.pending.iter().map(|p| p.conn.as_fd()))
    }

    /// When the server next needs a turn without any descriptor being ready.
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.since + REQUEST_TIMEOUT).chain(self.paused_until).min()
    }

    /// Accept new clients, read what pending ones sent and drop those that
    /// took too long; returns how many new drain requests came in (each is
    /// now waiting for `answer`).
    pub fn service(&mut self, now: Instant) -> usize {
        if self.paused_until.is_some_and(|t| now >= t) {
            self.paused_until = None;
        }
        if self.paused_until.is_none() {
            self.accept(now);
        }
        let mut requests = 0;
        for mut p in std::mem::take(&mut self.pending) {
            let mut buf = [0u8; 64];
            match p.conn.read(&mut buf) {
                Ok(0) => continue, // gone before asking
                Ok(n) => p.line.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => continue,
            }
            match p.line.iter().position(|&b| b == b'\n') {
                Some(end) if p.line[..end].trim_ascii() == b"drain" => {
                    if self.waiters.len() >= MAX_WAITERS {
                        debug!(max = MAX_WAITERS, "control socket: too many waiting clients: dropping the oldest");
                        self.waiters.remove(0);
                    }
                    self.waiters.push(p.conn);
                    requests += 1;
                }
                Some(_) => {
                    let _ = p.conn.write_all(b"error: unknown request (expected \"drain\")\n");
                }
                None if p.line.len() >= 64 => {
                    let _ = p.conn.write_all(b"error: request too long\n");
                }
                None if now >= p.since + REQUEST_TIMEOUT => debug!("control socket: a client sent no request in time: dropped"),
                None => self.pending.push(p),
            }
        }
        requests
    }

    fn accept(&mut self, now: Instant) {
        loop {
            let conn = match self.listener.accept() {
                Ok((conn, _)) => conn,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted || e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection stays
                    // queued and the listener readable. Free a descriptor
                    // if a pending client holds one, else rest a moment.
                    if !self.pending.is_empty() {
                        self.pending.remove(0);
                        continue;
                    }
                    warn!(error = %e, pause_ms = ACCEPT_PAUSE.as_millis() as u64, "control socket: cannot accept a client");
                    self.paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
            };
            if !self.admit(&conn) || conn.set_nonblocking(true).is_err() {
                continue;
            }
            if self.pending.len() >= MAX_PENDING {
                debug!(max = MAX_PENDING, "control socket: too many silent clients: dropping the oldest");
                self.pending.remove(0);
            }
            self.pending.push(Pending { conn, line: Vec::new(), since: now });
        }
    }

    /// Whether a client may talk to us (see the module doc).
    fn admit(&self, conn: &UnixStream) -> bool {
        let me = nix::unistd::getuid().as_raw();
        match nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::PeerCredentials) {
            Ok(cred) if cred.uid() != me && cred.uid() != 0 => {
                warn!(uid = cred.uid(), "control socket: refused a client of another user");
                false
            }
            Ok(cred) if matches!(self.place, Place::Abstract) && cred.pid() == 0 => {
                warn!("control socket: refused a client from outside this container's PID namespace");
                false
            }
            Ok(_) => true,
            Err(e) => {
                debug!(error = %e, "control socket: no peer credentials");
                false
            }
        }
    }

    /// Answer every waiting client, and let them go.
    pub fn answer(&mut self, reply: Reply) {
        for mut w in self.waiters.drain(..) {
            let _ = w.write_all(reply.line());
        }
    }
}

impl Drop for Server {
    /// A PID 1 that exits takes its socket file with it.
    fn drop(&mut self) {
        if let Place::File(path) = &self.place {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no lastcall is listening on {0}")]
    NotListening(String),
    #[error("control socket {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("control socket {path}: unexpected answer {answer:?}")]
    Protocol { path: String, answer: String },
}

/// Ask the lastcall listening on `path` (or on its abstract name) to drain,
/// and wait for its answer, at most `timeout` (a PID 1 that never answers
/// must not hold the preStop hook past the grace period).
pub fn request_drain(path: &Path, timeout: Duration) -> Result<Reply, ClientError> {
    let p = path.display().to_string();
    let io_err = |source| ClientError::Io { path: p.clone(), source };
    let mut conn = match connect(path) {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
            return Err(ClientError::NotListening(p));
        }
        Err(e) => return Err(io_err(e)),
    };
    conn.set_read_timeout(Some(timeout.max(Duration::from_millis(1)))).map_err(io_err)?;
    conn.write_all(b"drain\n").map_err(io_err)?;
    let mut answer = String::new();
    BufReader::new(conn).read_line(&mut answer).map_err(io_err)?;
    match answer.trim() {
        "done" => Ok(Reply::Done),
        "exited" => Ok(Reply::Exited),
        other => Err(ClientError::Protocol { path: p, answer: other.to_string() }),
    }
}

/// The socket file, else the abstract name, whose listener must be in our
/// own container (see the module doc): another process of the pod could
/// have taken the name first.
fn connect(path: &Path) -> io::Result<UnixStream> {
    let file_err = match UnixStream::connect(path) {
        Ok(c) => return Ok(c),
        Err(e) => e,
    };
    let Ok(conn) = abstract_name(path).and_then(SocketAddr::from_abstract_name).and_then(|a| UnixStream::connect_addr(&a)) else {
        return Err(file_err);
    };
    let cred = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials).map_err(io::Error::from)?;
    let same_container = cred.pid() != 0
        && match (std::fs::read_link(format!("/proc/{}/ns/mnt", cred.pid())), std::fs::read_link("/proc/self/ns/mnt")) {
            (Ok(theirs), Ok(ours)) => theirs == ours,
            // Another uid's /proc/PID/ns is unreadable: the pid being
            // visible at all puts it in our PID namespace (or below).
            _ => true,
        };
    if !same_container {
        warn!(pid = cred.pid(), "control socket: the abstract socket's listener is not in this container: ignoring it");
        return Err(io::Error::new(io::ErrorKind::NotFound, "listener outside this container"));
    }
    Ok(conn)
}
