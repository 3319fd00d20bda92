//! The control socket: how `lastcall drain` (a preStop hook) reaches the
//! lastcall that runs as PID 1 in the same container.
//!
//! Protocol, one line each way: the client sends `drain\n`; the server
//! answers `done\n` when the drain is over, or `exited\n` when the app has
//! already exited (nothing to drain for). Every client that connects during
//! a drain joins it. The socket is created owner-only (mode 0600) and a peer
//! whose uid is neither ours nor root is refused (SO_PEERCRED).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use tracing::{debug, warn};

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

/// Bind the socket, replacing a stale one left by a previous run.
pub fn listen(path: &Path) -> io::Result<UnixListener> {
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
    // SAFETY: umask(2) only swaps the process's file-creation mask. It is
    // called before any other thread exists, so nothing else creates files
    // with the temporary mask in between.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// The server side, driven by the supervisor's poll loop (no thread):
/// accepts clients and reads their one-line request without blocking.
pub struct Server {
    listener: UnixListener,
    /// Connected clients whose request line is not complete yet.
    pending: Vec<(UnixStream, Vec<u8>)>,
}

/// At most this many clients may be connected without a complete request.
const MAX_PENDING: usize = 32;

impl Server {
    pub fn new(listener: UnixListener) -> Server {
        let _ = listener.set_nonblocking(true);
        Server { listener, pending: Vec::new() }
    }

    /// Descriptors to poll for readability.
    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        std::iter::once(self.listener.as_fd()).chain(self.pending.iter().map(|(c, _)| c.as_fd()))
    }

    /// Accept new clients and read what pending ones sent; returns the
    /// clients that asked to drain (each waits for a `Reply`).
    pub fn service(&mut self) -> Vec<UnixStream> {
        let me = nix::unistd::getuid().as_raw();
        while let Ok((conn, _)) = self.listener.accept() {
            match nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials) {
                Ok(cred) if cred.uid() == me || cred.uid() == 0 => {}
                Ok(cred) => {
                    warn!(uid = cred.uid(), "control socket: refused a client of another user");
                    continue;
                }
                Err(e) => {
                    debug!(error = %e, "control socket: no peer credentials");
                    continue;
                }
            }
            if self.pending.len() >= MAX_PENDING || conn.set_nonblocking(true).is_err() {
                continue;
            }
            self.pending.push((conn, Vec::new()));
        }
        let mut requests = Vec::new();
        for (mut conn, mut line) in std::mem::take(&mut self.pending) {
            let mut buf = [0u8; 64];
            match conn.read(&mut buf) {
                Ok(0) => continue, // gone before asking
                Ok(n) => line.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => continue,
            }
            match line.iter().position(|&b| b == b'\n') {
                Some(end) if line[..end].trim_ascii() == b"drain" => requests.push(conn),
                Some(_) => {
                    let _ = conn.write_all(b"error: unknown request (expected \"drain\")\n");
                }
                None if line.len() < 64 => self.pending.push((conn, line)),
                None => {
                    let _ = conn.write_all(b"error: request too long\n");
                }
            }
        }
        requests
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

/// Ask the lastcall listening on `path` to drain, and wait for its answer,
/// at most `timeout` (a PID 1 that never answers must not hold the preStop
/// hook past the grace period).
pub fn request_drain(path: &Path, timeout: Duration) -> Result<Reply, ClientError> {
    let p = path.display().to_string();
    let io_err = |source| ClientError::Io { path: p.clone(), source };
    let mut conn = match UnixStream::connect(path) {
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
