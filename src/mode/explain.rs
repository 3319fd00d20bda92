//! `lastcall explain`: a dry run for the operator who wants to know, before
//! the next rollout, what lastcall would do here. It prints the settings and
//! where each came from (flag, environment, default), the deadlines they give
//! for this grace period, and with the k8s strategy what the API server says
//! about this pod (`k8s.rs`): who it is, which Services list it and how,
//! what its ServiceAccount may do. Then the warnings, the problems, and an
//! exit status: 0 when everything the configured drain needs works, 78
//! (EX_CONFIG, as `--strict` uses) with the list of problems otherwise.
//! Nothing is drained, signalled or stopped.
//!
//! The answer is written as it is found, through one small writer (`Out`)
//! that speaks JSON (`--format json`, for scripts) or indented text, so the
//! two forms never say different things and no formatting code is written
//! twice (the binary's size budget is tight: a tree built first and
//! rendered after cost twice as much code).

#[cfg(feature = "k8s")]
mod k8s;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::config::{ExplainConfig, ShutdownConfig, Strategy};
use crate::exit_status::EXIT_PREFLIGHT;

/// What is wrong (the drain cannot work as configured: exit 78) and what
/// is worth knowing (it works, but maybe not as intended).
#[derive(Default)]
pub struct Findings {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

pub fn run(cfg: &ExplainConfig, shutdown: &ShutdownConfig) -> i32 {
    let mut found = Findings::default();
    if let Some(opts) = pid1_options() {
        found.warnings.push(format!(
            "PID 1 is a lastcall started with options of its own ({opts}): explain sees only its own options and the environment, so give it the same ones"
        ));
    }
    let mut out = Out::new(cfg.json);
    out.list("settings");
    for s in &cfg.settings {
        out.row();
        out.str("option", &s.option);
        out.opt("value", s.value.as_deref());
        out.str("from", &s.from);
        out.end();
    }
    out.end();
    drain(shutdown, &mut found, &mut out);
    #[cfg(feature = "traffic")]
    if shutdown.drain.strategies.contains(&Strategy::Traffic) {
        out.obj("traffic");
        traffic(shutdown, &mut found, &mut out);
        out.end();
    }
    #[cfg(feature = "k8s")]
    if shutdown.drain.strategies.contains(&Strategy::K8s) || shutdown.drain.k8s.events {
        out.obj("kubernetes");
        k8s::check(shutdown, &mut found, &mut out);
        out.end();
    }
    for (key, list) in [("warnings", &found.warnings), ("problems", &found.problems)] {
        out.list(key);
        for item in list {
            out.item(item);
        }
        out.end();
    }
    let ok = found.problems.is_empty();
    out.bool("ok", ok);
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(out.finish().as_bytes()).and_then(|()| stdout.flush()).is_err() {
        return 1;
    }
    if ok {
        0
    } else {
        EXIT_PREFLIGHT
    }
}

/// The options before `--` of a lastcall that is PID 1 here, as under
/// `kubectl exec POD -- /lastcall explain` in a container whose entrypoint
/// is `lastcall [OPTIONS] -- APP`: those settings are not in this
/// process's environment, and the answer would be about other ones.
fn pid1_options() -> Option<String> {
    if std::process::id() == 1 {
        return None;
    }
    let raw = std::fs::read("/proc/1/cmdline").ok()?;
    let mut args = raw.split(|&b| b == 0).filter(|a| !a.is_empty());
    if !args.next()?.ends_with(b"lastcall") {
        return None;
    }
    let opts: Vec<String> = args.take_while(|a| *a != b"--").map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    (!opts.is_empty()).then(|| opts.join(" "))
}

/// The deadline arithmetic of `deadline.rs` for this grace period, as
/// offsets from the stop signal (from the start of the preStop hook when
/// one asks for the drain: the kubelet counts the grace period from there),
/// and the waits that cannot fit in it.
fn drain(cfg: &ShutdownConfig, found: &mut Findings, out: &mut Out) {
    let (b, d) = (&cfg.budget, &cfg.drain);
    let t0 = Instant::now();
    let plan = b.plan(t0);
    let window = plan.drain_until - t0;
    let observing = d.strategies.iter().any(|s| matches!(s, Strategy::K8s | Strategy::Traffic));
    // How long the drain can last: the delay strategy waits its delay, an
    // observing one at most --drain-timeout; the window bounds both.
    let ends_by = match (d.strategies.as_slice(), d.timeout) {
        ([], _) => Duration::ZERO,
        ([Strategy::Delay], _) => d.delay.min(window),
        (_, Some(t)) if observing => t.min(window),
        _ => window,
    };
    let grace = human(b.grace);
    if d.strategies.is_empty() {
        found.warnings.push("no drain strategy is set: the app gets the stop signal at once (use --drain k8s, or --drain-delay)".into());
    } else if window.is_zero() {
        found.problems.push(format!(
            "--grace-period {grace} leaves no time to drain: the kill margin ({}) and the stop budget ({}) take all of it",
            human(b.margin_for(b.grace)),
            human(b.stop_for(b.grace))
        ));
    } else {
        let mut wait = |what: &str, long: Duration, then: &str| {
            if long > window {
                found.warnings.push(format!(
                    "{what} ({}) does not fit in the drain window of {} (--grace-period {grace} less the kill margin and the stop budget): {then}",
                    human(long),
                    human(window)
                ));
            }
        };
        if d.strategies.contains(&Strategy::Delay) || observing {
            let then = if observing { "a drain that cannot observe is cut short at the deadline" } else { "the delay is cut short" };
            wait("--drain-delay", d.delay, then);
        }
        if d.strategies.contains(&Strategy::K8s) {
            wait("--propagation-delay", d.propagation_delay, "the app gets the stop signal before consumers have caught up");
        }
        // An automatic quiet period (1-4 s) is clamped to the drain budget.
        if let (true, Some(quiet)) = (d.strategies.contains(&Strategy::Traffic), d.quiet_period) {
            wait("--quiet-period", quiet, "traffic is never seen quiet for that long: the drain always ends at the deadline");
        }
    }
    out.obj("drain");
    let names: Vec<&str> = d.strategies.iter().map(|s| s.name()).collect();
    out.strs("strategies", &names);
    out.str("counted_from", "the stop signal (or the start of the preStop hook that asks for the drain)");
    for (key, at) in [
        ("grace_period", Some(b.grace)),
        ("kill_margin", Some(b.margin_for(b.grace))),
        ("stop_budget", Some(b.stop_for(b.grace))),
        ("drain_window", Some(window)),
        ("drain_ends_by", Some(ends_by)),
        ("fallback_ends", observing.then(|| d.delay.min(window))),
        ("app_stop_signal_by", Some(ends_by)),
        ("lastcall_sigkill", Some(plan.kill_at - t0)),
        ("kubelet_sigkill", Some(b.grace)),
    ] {
        out.ms(key, at);
    }
    out.end();
}

/// The traffic strategy's view from here: which ports of the app it would
/// watch, whether it counts every connection of the pod's network
/// namespace, and the quiet period it would choose now from the pod's
/// history (counted from PID 1's start). The app is PID 1's child when
/// PID 1 is a lastcall, else PID 1 itself (a preStop hook's pod).
#[cfg(feature = "traffic")]
fn traffic(cfg: &ShutdownConfig, found: &mut Findings, out: &mut Out) {
    let d = &cfg.drain;
    let pid1_is_lastcall = std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "lastcall");
    let app = if pid1_is_lastcall { crate::drain::traffic::procfs::process_tree(1).get(1).copied() } else { Some(1) };
    let plan = cfg.budget.plan(Instant::now());
    let budget = plan.drain_until - plan.start;
    match crate::drain::traffic::preview(&d.ports, app, d.quiet_period, budget) {
        Ok(p) => {
            let ports: Vec<String> = p.ports.iter().map(u16::to_string).collect();
            let ports: Vec<&str> = ports.iter().map(String::as_str).collect();
            out.strs("ports", &ports);
            out.str("ports_from", p.source);
            out.bool("counts_every_connection", p.counters);
            out.str("view", &p.view);
            out.ms("quiet_period", Some(p.quiet.quiet));
            out.str("quiet_period_from", p.quiet.source);
            out.str("quiet_period_why", &p.quiet.why);
        }
        Err(why) => {
            out.str("problem", &why);
            found.problems.push(format!("traffic: {why}"));
        }
    }
}

/// `30s`, `1500ms`, `2m`.
pub fn human(d: Duration) -> String {
    // Durations are at most a year (config::MAX_DURATION): u64 milliseconds.
    match d.as_millis() as u64 {
        ms if ms % 60_000 == 0 && ms > 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 && ms > 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// The answer, written as it is found: JSON (RFC 8259, strings escaped as
/// the JSON log lines are), or text: `key: value` lines, nested objects
/// indented under a `key:` line, the objects of a list one line each (the
/// first value, then `key=value` as lastcall's log lines are written), the
/// strings of a list one `- ` line each, durations as `30s` (in JSON,
/// milliseconds under `KEY_ms`).
pub struct Out {
    json: bool,
    buf: String,
    /// Text: the nesting depth. JSON: unused.
    depth: usize,
    /// JSON: a value was written at this level (the next needs a comma).
    /// Text: the current list has an item.
    more: bool,
    /// Inside an object of a list (text: on its one line).
    row: bool,
    /// Text: the row has its first value.
    row_started: bool,
    /// Per open object or list: whether it is a list.
    open: Vec<bool>,
}

impl Out {
    pub fn new(json: bool) -> Out {
        let buf =
            if json { "{".to_string() } else { "lastcall explain: a dry run (nothing is drained, signalled or stopped)\n".to_string() };
        Out { json, buf, depth: 0, more: false, row: false, row_started: false, open: Vec::new() }
    }

    /// The key of the next value: JSON `,"key":`; text a new line, or
    /// ` key=` inside a row.
    fn key(&mut self, key: &str, suffix: &str) {
        if self.json {
            if self.more {
                self.buf.push(',');
            }
            self.buf.push('"');
            self.buf.push_str(key);
            self.buf.push_str(suffix);
            self.buf.push_str("\":");
        } else if self.row {
            if self.row_started {
                self.buf.push(' ');
                self.buf.push_str(key);
                self.buf.push('=');
            }
            self.row_started = true;
        } else {
            self.newline();
            self.buf.push_str(key);
            self.buf.push_str(": ");
        }
        self.more = true;
    }

    fn newline(&mut self) {
        if !self.buf.ends_with('\n') {
            self.buf.push('\n');
        }
        for _ in 0..self.depth {
            self.buf.push_str("  ");
        }
    }

    fn text(&mut self, v: &str) {
        if self.json {
            crate::logging::json_string(&mut self.buf, v);
        } else if self.row && (v.contains(' ') || v.is_empty()) {
            let _ = write!(self.buf, "{v:?}");
        } else {
            self.buf.push_str(v);
        }
    }

    pub fn str(&mut self, key: &str, v: &str) {
        self.key(key, "");
        self.text(v);
    }

    /// A value that may be absent: JSON `null`; left out of a text row.
    pub fn opt(&mut self, key: &str, v: Option<&str>) {
        match v {
            Some(v) => self.str(key, v),
            None => self.raw(key, "", "null", "-"),
        }
    }

    fn raw(&mut self, key: &str, suffix: &str, json: &str, text: &str) {
        if !self.json && self.row && self.row_started && json == "null" {
            return;
        }
        self.key(key, suffix);
        self.buf.push_str(if self.json { json } else { text });
    }

    pub fn bool(&mut self, key: &str, v: bool) {
        let v = if v { "true" } else { "false" };
        self.raw(key, "", v, v);
    }

    /// A boolean that may be absent (Go's nil).
    #[cfg_attr(not(feature = "k8s"), allow(dead_code))] // written by the k8s checks only
    pub fn flag(&mut self, key: &str, v: Option<bool>) {
        match v {
            Some(v) => self.bool(key, v),
            None => self.raw(key, "", "null", "-"),
        }
    }

    #[cfg_attr(not(feature = "k8s"), allow(dead_code))] // written by the k8s checks only
    pub fn int(&mut self, key: &str, v: Option<i64>) {
        match v {
            Some(n) => {
                let n = n.to_string();
                self.raw(key, "", &n, &n);
            }
            None => self.raw(key, "", "null", "-"),
        }
    }

    /// A duration: JSON `KEY_ms` in milliseconds, text `KEY: 30s`.
    pub fn ms(&mut self, key: &str, v: Option<Duration>) {
        match v {
            Some(d) => self.raw(key, "_ms", &d.as_millis().to_string(), &human(d)),
            None => self.raw(key, "_ms", "null", "-"),
        }
    }

    /// A list of short strings: JSON an array, text comma-separated.
    pub fn strs<S: AsRef<str>>(&mut self, key: &str, v: &[S]) {
        self.key(key, "");
        if self.json {
            self.buf.push('[');
        }
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                self.buf.push(',');
            }
            self.text(s.as_ref());
        }
        if self.json {
            self.buf.push(']');
        } else if v.is_empty() {
            self.buf.push_str("none");
        }
    }

    fn open(&mut self, key: &str, list: bool) {
        if self.json {
            self.key(key, "");
            self.buf.push(if list { '[' } else { '{' });
        } else {
            self.newline();
            self.buf.push_str(key);
            self.buf.push(':');
            self.depth += 1;
        }
        self.open.push(list);
        self.more = false;
    }

    pub fn obj(&mut self, key: &str) {
        self.open(key, false);
    }

    pub fn list(&mut self, key: &str) {
        self.open(key, true);
    }

    /// An object in a list.
    pub fn row(&mut self) {
        if self.json {
            if self.more {
                self.buf.push(',');
            }
            self.buf.push('{');
            self.more = false;
        } else {
            self.newline();
            self.more = true;
        }
        self.row = true;
        self.row_started = false;
        self.open.push(false);
    }

    /// A string in a list.
    pub fn item(&mut self, v: &str) {
        if self.json {
            if self.more {
                self.buf.push(',');
            }
        } else {
            self.newline();
            self.buf.push_str("- ");
        }
        self.more = true;
        self.text(v);
    }

    /// Closes the innermost object, list or row.
    pub fn end(&mut self) {
        let list = self.open.pop().unwrap_or(false);
        if self.json {
            self.buf.push(if list { ']' } else { '}' });
        } else if self.row {
            self.row = false;
        } else {
            if list && !self.more {
                self.buf.push_str(" none");
            }
            self.depth = self.depth.saturating_sub(1);
        }
        self.more = true;
    }

    pub fn finish(mut self) -> String {
        self.buf.push_str(if self.json { "}\n" } else { "\n" });
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(json: bool) -> String {
        let mut o = Out::new(json);
        o.list("settings");
        o.row();
        o.str("option", "--drain");
        o.str("value", "k8s");
        o.str("from", "env LASTCALL_DRAIN");
        o.end();
        o.row();
        o.str("option", "--drain-delay");
        o.opt("value", None);
        o.str("from", "unset");
        o.end();
        o.end();
        o.obj("drain");
        o.strs("strategies", &["k8s", "traffic"]);
        o.ms("grace_period", Some(Duration::from_secs(30)));
        o.ms("fallback_ends", None);
        o.flag("ready", None);
        o.int("n", Some(-3));
        o.end();
        o.list("warnings");
        o.end();
        o.list("problems");
        o.item("a \"quoted\" line");
        o.end();
        o.bool("ok", false);
        o.finish()
    }

    #[test]
    fn json_of_every_kind() {
        let out = sample(true);
        assert_eq!(
            out,
            "{\"settings\":[{\"option\":\"--drain\",\"value\":\"k8s\",\"from\":\"env LASTCALL_DRAIN\"},\
             {\"option\":\"--drain-delay\",\"value\":null,\"from\":\"unset\"}],\
             \"drain\":{\"strategies\":[\"k8s\",\"traffic\"],\"grace_period_ms\":30000,\"fallback_ends_ms\":null,\"ready\":null,\"n\":-3},\
             \"warnings\":[],\"problems\":[\"a \\\"quoted\\\" line\"],\"ok\":false}\n"
        );
        #[cfg(feature = "k8s")]
        serde_json::from_str::<serde_json::Value>(&out).expect("valid JSON");
    }

    #[test]
    fn text_reads_like_the_log() {
        assert_eq!(
            sample(false),
            "lastcall explain: a dry run (nothing is drained, signalled or stopped)\n\
             settings:\n  --drain value=k8s from=\"env LASTCALL_DRAIN\"\n  --drain-delay from=unset\n\
             drain:\n  strategies: k8s,traffic\n  grace_period: 30s\n  fallback_ends: -\n  ready: -\n  n: -3\n\
             warnings: none\nproblems:\n  - a \"quoted\" line\nok: false\n"
        );
    }

    #[test]
    fn human_durations() {
        for (d, s) in [
            (Duration::from_secs(30), "30s"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(120), "2m"),
            (Duration::ZERO, "0ms"),
        ] {
            assert_eq!(human(d), s);
        }
    }
}
