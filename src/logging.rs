//! Logs go to stderr only (stdout belongs to the app), one line per event,
//! as text or as JSON lines, at the level `config.rs` settled (flags, then
//! `LASTCALL_LOG`, then info).
//!
//! A small `Layer` on tracing-subscriber's registry writes the lines
//! instead of its `fmt` layer: lastcall logs a few dozen flat events in its
//! life and uses no spans, and this layer is some 60 KB smaller than `fmt`
//! with its JSON support, which matters for a binary copied into every
//! image.
//!
//! Writing never blocks PID 1. A container's stderr is a pipe to a log shim
//! that may stop reading (the pipe fills) or go away (the pipe breaks), and
//! a blocked write in the supervisor's loop would stop forwarding, reaping
//! and the SIGKILL deadline. So lines go through [`Sink`]: a non-blocking
//! writer on the same pipe (a second open file description, so the app's
//! own descriptor 2 keeps its blocking mode), a bounded backlog when the
//! pipe is full (lines beyond it are dropped and counted, and the count is
//! logged once there is room), no more writes once the reader is gone, and
//! a bounded flush at exit. The supervisor polls [`backlog_fd`] so the
//! backlog also drains while nothing new is logged.

use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use crate::config::LogConfig;

pub fn init(cfg: &LogConfig, program: &'static str) {
    let layer = Lines { json: cfg.json, program }.with_filter(cfg.level);
    let _ = SINK.set(Sink::open());
    // Fails only if a subscriber is already set (unit tests).
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
}

/// The level `-v`/`-q` ask for around info.
pub fn level_from_counts(verbosity: i8) -> LevelFilter {
    match verbosity {
        i8::MIN..=-3 => LevelFilter::OFF,
        -2 => LevelFilter::ERROR,
        -1 => LevelFilter::WARN,
        0 => LevelFilter::INFO,
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

struct Lines {
    json: bool,
    /// The name at the start of a text line: `lastcall`, or `lastcall drain`
    /// for the preStop hook, whose lines may land in the PID 1's log.
    program: &'static str,
}

impl<S: Subscriber> Layer<S> for Lines {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if MUTED.with(|m| m.get().is_some_and(|flag| flag.load(Ordering::Relaxed))) {
            return;
        }
        let line = format_line(self.json, self.program, *event.metadata().level(), SystemTime::now(), |v| event.record(v));
        match SINK.get() {
            Some(sink) => sink.write(line.as_bytes()),
            None => {
                let _ = io::stderr().lock().write_all(line.as_bytes());
            }
        }
        if let Some(also) = ALSO.get() {
            // Best effort, never blocking: a full pipe drops the line.
            let _ = (&*also).write(line.as_bytes());
        }
    }
}

thread_local! {
    /// Set on a drain thread: once the flag is raised its drain is no
    /// longer wanted, and what it would still log contradicts the story.
    static MUTED: std::cell::OnceCell<Arc<AtomicBool>> = const { std::cell::OnceCell::new() };
}

/// Silence this thread's log lines once `flag` is raised.
pub fn mute_this_thread_when(flag: Arc<AtomicBool>) {
    MUTED.with(|m| {
        let _ = m.set(flag);
    });
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// A second destination for every line (see `also_to_pid1`).
static ALSO: OnceLock<File> = OnceLock::new();

/// Also write every line to PID 1's stderr, which is the container's log.
/// For the preStop hook: the kubelet discards a hook's output unless the
/// hook fails (kubernetes/kubernetes#25766), so without this its lines are
/// seen nowhere. Skipped when PID 1's stderr is our own stderr already, or
/// cannot be opened (another user's PID 1, no /proc).
pub fn also_to_pid1() {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    if std::process::id() == 1 {
        return;
    }
    let Ok(file) = std::fs::OpenOptions::new().append(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open("/proc/1/fd/2") else {
        return;
    };
    let Ok(theirs) = file.metadata() else { return };
    // A container's PID 1 logs to a pipe (containerd, Docker), a socket or
    // a file, or to a pseudo-terminal (`docker run -t`). Anything else is a
    // machine's own init writing to its console or /dev/null: not a log.
    use std::os::unix::fs::FileTypeExt;
    let pty = |rdev: u64| (136..=143).contains(&nix::sys::stat::major(rdev));
    if theirs.file_type().is_char_device() && !pty(theirs.rdev()) {
        return;
    }
    if let Ok(ours) = nix::sys::stat::fstat(io::stderr().as_fd()) {
        if theirs.dev() == ours.st_dev && theirs.ino() == ours.st_ino {
            return;
        }
    }
    let _ = ALSO.set(file);
}

/// Most bytes held back while stderr is full (a few hundred lines).
const BACKLOG_MAX: usize = 64 << 10;
/// How long lastcall may wait at exit for a full stderr to take the backlog.
const EXIT_FLUSH: Duration = Duration::from_millis(250);

/// Where the lines go: stderr, written without ever blocking.
struct Sink {
    out: Out,
    state: Mutex<Backlog>,
}

enum Out {
    /// A pipe, FIFO or terminal, reopened non-blocking through /proc.
    Nonblocking(File),
    /// A socket (journald's stream socket): send with MSG_DONTWAIT.
    Socket,
    /// A regular file or anything else where a write does not wait for a
    /// reader: written as is.
    Plain,
}

#[derive(Default)]
struct Backlog {
    bytes: Vec<u8>,
    /// Lines dropped because the backlog was full.
    dropped: u64,
    /// The reader is gone (EPIPE): nothing is written any more.
    dead: bool,
}

enum Wrote {
    All,
    /// This many bytes went out before the descriptor was full.
    Part(usize),
    Dead,
}

impl Sink {
    fn open() -> Sink {
        Sink { out: Out::for_stderr(), state: Mutex::new(Backlog::default()) }
    }

    fn write(&self, line: &[u8]) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.dead {
            return;
        }
        self.flush_locked(&mut st);
        if st.bytes.is_empty() && !st.dead {
            match self.out.write(line) {
                Wrote::All => {}
                Wrote::Part(n) => st.bytes.extend_from_slice(&line[n..]),
                Wrote::Dead => st.dead = true,
            }
        } else if st.bytes.len() + line.len() <= BACKLOG_MAX {
            st.bytes.extend_from_slice(line);
        } else {
            st.dropped += 1;
        }
    }

    /// Write as much of the backlog as fits now; then the dropped count.
    fn flush_locked(&self, st: &mut Backlog) {
        while !st.bytes.is_empty() && !st.dead {
            match self.out.write(&st.bytes) {
                Wrote::All => st.bytes.clear(),
                Wrote::Part(n) => {
                    st.bytes.drain(..n);
                    return;
                }
                Wrote::Dead => st.dead = true,
            }
        }
        if st.dropped > 0 && st.bytes.is_empty() && !st.dead {
            let note = format!("lastcall: {} log line(s) dropped: stderr was not read\n", st.dropped);
            st.dropped = 0;
            if let Wrote::Part(n) = self.out.write(note.as_bytes()) {
                st.bytes.extend_from_slice(&note.as_bytes()[n..]);
            }
        }
    }
}

impl Out {
    fn for_stderr() -> Out {
        let stderr = io::stderr();
        let Ok(stat) = nix::sys::stat::fstat(stderr.as_fd()) else { return Out::Plain };
        let kind = nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode) & nix::sys::stat::SFlag::S_IFMT;
        use nix::sys::stat::SFlag;
        if kind == SFlag::S_IFSOCK {
            return Out::Socket;
        }
        if kind == SFlag::S_IFIFO || kind == SFlag::S_IFCHR {
            // Opening /proc/self/fd/2 makes a new open file description of
            // the same pipe, whose O_NONBLOCK is ours alone. It fails when
            // the pipe has no reader (ENXIO): then stderr is dead anyway,
            // and plain writes fail at once with EPIPE.
            use std::os::unix::fs::OpenOptionsExt;
            if let Ok(f) = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(format!("/proc/self/fd/{}", stderr.as_raw_fd()))
            {
                return Out::Nonblocking(f);
            }
        }
        Out::Plain
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Out::Nonblocking(f) => f.as_fd(),
            // SAFETY: descriptor 2 stays open for the life of the process.
            // (std's `Stderr::as_fd` borrows only for the handle's lifetime,
            // and the poll in `flush_at_exit` needs a 'static borrow.)
            Out::Socket | Out::Plain => unsafe { BorrowedFd::borrow_raw(libc::STDERR_FILENO) },
        }
    }

    fn write(&self, buf: &[u8]) -> Wrote {
        let mut done = 0;
        while done < buf.len() {
            let rest = &buf[done..];
            let r = match self {
                Out::Nonblocking(f) => (&*f).write(rest),
                Out::Socket => {
                    let flags = nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL;
                    nix::sys::socket::send(libc::STDERR_FILENO, rest, flags).map_err(io::Error::from)
                }
                Out::Plain => io::stderr().write(rest),
            };
            match r {
                Ok(0) => return Wrote::Dead,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Wrote::Part(done),
                // EPIPE and the rest: the reader is gone or stderr is broken.
                Err(_) => return Wrote::Dead,
            }
        }
        Wrote::All
    }
}

/// The descriptor to poll for POLLOUT while lines are held back.
pub fn backlog_fd() -> Option<BorrowedFd<'static>> {
    let sink = SINK.get()?;
    let st = sink.state.lock().unwrap_or_else(|p| p.into_inner());
    (!st.dead && (!st.bytes.is_empty() || st.dropped > 0)).then(|| sink.out.fd())
}

/// Write what the backlog holds, as far as stderr takes it now.
pub fn flush() {
    if let Some(sink) = SINK.get() {
        let mut st = sink.state.lock().unwrap_or_else(|p| p.into_inner());
        sink.flush_locked(&mut st);
    }
}

/// Before exiting: give a full stderr a short, bounded time to take the
/// backlog.
pub fn flush_at_exit() {
    let until = Instant::now() + EXIT_FLUSH;
    while let Some(fd) = backlog_fd() {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLOUT)];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        if !matches!(nix::poll::poll(&mut fds, ms), Ok(n) if n > 0) {
            return;
        }
        flush();
    }
}

/// One log line, newline included. `record` feeds the event's fields.
fn format_line(json: bool, program: &str, level: Level, now: SystemTime, record: impl FnOnce(&mut dyn Visit)) -> String {
    let mut v = Fields { json, message: String::new(), fields: String::new() };
    record(&mut v);
    let ts = crate::rfc3339::format_millis(now);
    if json {
        let mut line = format!("{{\"ts\":\"{ts}\",\"level\":\"{level}\",\"msg\":");
        json_string(&mut line, &v.message);
        line.push_str(&v.fields);
        line.push_str("}\n");
        line
    } else {
        format!("{ts} {level:<5} {program}: {}{}\n", v.message, v.fields)
    }
}

/// Collects `message` and the other fields, already rendered.
struct Fields {
    json: bool,
    message: String,
    fields: String,
}

impl Fields {
    fn push(&mut self, field: &Field, raw: Option<fmt::Arguments<'_>>, text: &str) {
        if field.name() == "message" {
            self.message.push_str(text);
            return;
        }
        if self.json {
            self.fields.push(',');
            json_string(&mut self.fields, field.name());
            self.fields.push(':');
            match raw {
                Some(number) => {
                    let _ = self.fields.write_fmt(number);
                }
                None => json_string(&mut self.fields, text),
            }
        } else if raw.is_some() || (!text.is_empty() && !text.contains([' ', '"', '='])) {
            let _ = write!(self.fields, " {}={text}", field.name());
        } else {
            let _ = write!(self.fields, " {}={text:?}", field.name());
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, None, value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.push(field, None, &format!("{value:?}"));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Some(format_args!("{value}")), &value.to_string());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Some(format_args!("{value}")), &value.to_string());
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.push(field, Some(format_args!("{value}")), &value.to_string());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Some(format_args!("{value}")), if value { "true" } else { "false" });
    }
}

/// A JSON string literal (RFC 8259 §7): quote, backslash and control
/// characters escaped; everything else is valid UTF-8 already.
pub fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn json_escaping() {
        let mut s = String::new();
        json_string(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
    }

    /// Lines through a real subscriber: the JSON one must parse as JSON
    /// (checked with serde_json where the build has it).
    #[test]
    fn lines_from_real_events() {
        use std::sync::{Arc, Mutex};
        struct Capture(Arc<Mutex<Vec<String>>>, bool);
        impl<S: Subscriber> Layer<S> for Capture {
            fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
                let line = format_line(self.1, "lastcall", *event.metadata().level(), UNIX_EPOCH, |v| event.record(v));
                self.0.lock().unwrap().push(line);
            }
        }
        for json in [false, true] {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sub = tracing_subscriber::registry().with(Capture(lines.clone(), json));
            tracing::subscriber::with_default(sub, || {
                tracing::warn!(t_ms = 12u64, signal = %"SIGTERM", processes = %"1(a b) 2(c)", ok = true, "SIGKILL sent");
            });
            let line = lines.lock().unwrap()[0].clone();
            if json {
                assert_eq!(
                    line,
                    "{\"ts\":\"1970-01-01T00:00:00.000Z\",\"level\":\"WARN\",\"msg\":\"SIGKILL sent\",\"t_ms\":12,\"signal\":\"SIGTERM\",\"processes\":\"1(a b) 2(c)\",\"ok\":true}\n"
                );
                #[cfg(feature = "k8s")]
                serde_json::from_str::<serde_json::Value>(&line).expect("valid JSON");
            } else {
                assert_eq!(
                    line,
                    "1970-01-01T00:00:00.000Z WARN  lastcall: SIGKILL sent t_ms=12 signal=SIGTERM processes=\"1(a b) 2(c)\" ok=true\n"
                );
            }
        }
    }
}
