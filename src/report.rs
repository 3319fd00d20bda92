//! The termination report: a few lines about the shutdown, written at exit
//! to the container's termination message file, so that `kubectl describe
//! pod` shows them under "Last State" (the kubelet reads up to 4 KiB of
//! `terminationMessagePath`, by default /dev/termination-log, after the
//! container stopped; kubernetes.io, "Determine the Reason for Pod
//! Failure").
//!
//! It answers what an on-call engineer asks after a bad rollout: what
//! stopped the container, how the drain went (strategy, reason, how long),
//! when the app got the stop signal, how the app ended, and whether lastcall
//! had to SIGKILL. The last one tells a grace-period kill (lastcall sent
//! SIGKILL at its deadline) from an OOM kill (the app died of SIGKILL that
//! lastcall did not send).
//!
//! The report is built from what the supervisor already knows (the shutdown
//! machine's `Happened` notes and the actions it performed) and rendered
//! once, at exit. A missing or unwritable file is not an error: outside
//! Kubernetes there is usually none.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use crate::exit_status::ChildExit;
use crate::signals::Signal;

/// The kubelet reads at most this many bytes of the file.
pub const MAX_BYTES: usize = 4096;

/// What started the shutdown.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    StopSignal(Signal),
    /// `lastcall drain` (a preStop hook) asked to drain.
    DrainRequest,
}

/// How the app ended, and when (milliseconds after the shutdown began; None
/// when it ended before any).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AppEnd {
    pub exit: ChildExit,
    pub t_ms: Option<u128>,
    /// It ended while the drain was still running (before the stop signal).
    pub during_drain: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kill {
    Sent { t_ms: u128, processes: usize },
    Failed { t_ms: u128, error: String },
}

/// Everything the report says; filled in as the shutdown goes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    /// The mode writing it: "lastcall" or "lastcall drain (preStop hook)".
    pub who: &'static str,
    pub started: Option<(Cause, SystemTime)>,
    /// Milliseconds the drain took, why it ended, whether it was cut short.
    pub drain: Option<(u128, String, bool)>,
    /// The stop signal sent to the app, and when.
    pub stop_sent: Option<(Signal, u128)>,
    pub app: Option<AppEnd>,
    pub kill: Option<Kill>,
    pub exit_code: Option<i32>,
}

impl Report {
    pub fn new(who: &'static str) -> Report {
        Report { who, ..Report::default() }
    }

    /// The report as text, at most MAX_BYTES (long reasons are shortened).
    pub fn render(&self) -> String {
        let mut lines = Vec::new();
        match &self.started {
            Some((Cause::StopSignal(sig), at)) => lines.push(format!("{}: stopped by {sig} at {}", self.who, rfc3339(*at))),
            Some((Cause::DrainRequest, at)) => lines.push(format!("{}: preStop drain requested at {}", self.who, rfc3339(*at))),
            None => lines.push(format!("{}: no stop signal was received", self.who)),
        }
        if let Some((ms, why, cut)) = &self.drain {
            let how = if *cut { "cut short after" } else { "ended after" };
            lines.push(format!("drain: {how} {ms} ms: {}", shorten(why, 1500)));
        } else if self.started.is_some() {
            lines.push("drain: none".into());
        }
        match self.stop_sent {
            Some((sig, ms)) => lines.push(format!("stop signal: {sig} sent to the app at +{ms} ms")),
            None if self.started.is_some() && self.app.is_some_and(|a| a.during_drain) => {
                lines.push("stop signal: not sent (the app exited during the drain)".into())
            }
            None if self.started.is_some() => lines.push("stop signal: not sent".into()),
            None => {}
        }
        if let Some(app) = self.app {
            let status = match app.exit {
                ChildExit::Code(c) => format!("exited with code {c}"),
                ChildExit::Signaled(s) => format!("killed by {}", Signal(s)),
            };
            let when = app.t_ms.map_or(String::new(), |ms| format!(" at +{ms} ms"));
            let outside = match (app.exit, &self.kill) {
                (ChildExit::Signaled(9), None) => " (SIGKILL not sent by lastcall: an OOM kill or a kill from outside)",
                _ => "",
            };
            lines.push(format!("app: {status}{when}{outside}"));
        }
        lines.push(match &self.kill {
            None => "SIGKILL: not sent by lastcall".into(),
            Some(Kill::Sent { t_ms, processes }) => {
                format!("SIGKILL: sent by lastcall at +{t_ms} ms (grace deadline) to {processes} process(es)")
            }
            Some(Kill::Failed { t_ms, error }) => {
                format!("SIGKILL: failed at +{t_ms} ms ({error}): lastcall exited so the processes left die with it")
            }
        });
        if let Some(code) = self.exit_code {
            lines.push(format!("exit code: {code}"));
        }
        let mut text = lines.join("\n");
        text.push('\n');
        if text.len() > MAX_BYTES {
            let mut end = MAX_BYTES - 1;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('\n');
        }
        text
    }

    /// Write the report to `path` (truncating it). `create`: make the file
    /// when it does not exist (a path the user chose); the default path is
    /// only written when the kubelet provided it.
    pub fn write(&self, path: &Path, create: bool) {
        let file = std::fs::OpenOptions::new().write(true).truncate(true).create(create).open(path);
        match file {
            Ok(mut f) => {
                if let Err(e) = f.write_all(self.render().as_bytes()) {
                    tracing::debug!(path = %path.display(), error = %e, "cannot write the termination report");
                }
            }
            Err(e) => tracing::debug!(path = %path.display(), error = %e, "no termination report: the file cannot be opened"),
        }
    }
}

fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn rfc3339(t: SystemTime) -> String {
    crate::rfc3339::format_millis(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_618_991)
    }

    fn report() -> Report {
        Report::new("lastcall")
    }

    #[test]
    fn drained_then_exited() {
        let mut r = report();
        r.started = Some((Cause::StopSignal(Signal(libc::SIGTERM)), at()));
        r.drain = Some((2104, "k8s: endpoint out of service in 1 slice after 812ms".into(), false));
        r.stop_sent = Some((Signal(libc::SIGTERM), 2104));
        r.app = Some(AppEnd { exit: ChildExit::Code(0), t_ms: Some(2311), during_drain: false });
        r.exit_code = Some(0);
        assert_eq!(
            r.render(),
            "lastcall: stopped by SIGTERM at 2026-11-25T15:03:11.000Z\n\
             drain: ended after 2104 ms: k8s: endpoint out of service in 1 slice after 812ms\n\
             stop signal: SIGTERM sent to the app at +2104 ms\n\
             app: exited with code 0 at +2311 ms\n\
             SIGKILL: not sent by lastcall\n\
             exit code: 0\n"
        );
    }

    #[test]
    fn grace_kill_and_oom_kill_read_differently() {
        let mut r = report();
        r.started = Some((Cause::StopSignal(Signal(libc::SIGTERM)), at()));
        r.drain = Some((23000, "drain budget spent (the app's stop budget starts now)".into(), true));
        r.stop_sent = Some((Signal(libc::SIGTERM), 23000));
        r.app = Some(AppEnd { exit: ChildExit::Signaled(9), t_ms: Some(28001), during_drain: false });
        r.kill = Some(Kill::Sent { t_ms: 28000, processes: 1 });
        let grace = r.render();
        assert!(grace.contains("drain: cut short after 23000 ms"), "{grace}");
        assert!(grace.contains("SIGKILL: sent by lastcall at +28000 ms"), "{grace}");
        assert!(!grace.contains("OOM"), "{grace}");

        let mut oom = report();
        oom.app = Some(AppEnd { exit: ChildExit::Signaled(9), t_ms: None, during_drain: false });
        let oom = oom.render();
        assert!(oom.contains("no stop signal was received"), "{oom}");
        assert!(oom.contains("killed by SIGKILL (SIGKILL not sent by lastcall: an OOM kill"), "{oom}");
    }

    #[test]
    fn app_died_during_the_drain() {
        let mut r = report();
        r.started = Some((Cause::StopSignal(Signal(libc::SIGTERM)), at()));
        r.drain = Some((1000, "app exited".into(), false));
        r.app = Some(AppEnd { exit: ChildExit::Code(3), t_ms: Some(1000), during_drain: true });
        let text = r.render();
        assert!(text.contains("stop signal: not sent (the app exited during the drain)"), "{text}");
    }

    #[test]
    fn never_longer_than_the_kubelet_reads() {
        let mut r = report();
        r.started = Some((Cause::DrainRequest, at()));
        r.drain = Some((1, "é".repeat(10_000), false));
        let text = r.render();
        assert!(text.len() <= MAX_BYTES, "{}", text.len());
        assert!(text.contains("preStop drain requested"));
    }
}
