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
//! The answer is built once as a small tree (`Doc`) and written either as
//! JSON (`--format json`, for scripts) or as indented text: one renderer
//! each, so the two never say different things, and no formatting code per
//! line (the binary's size budget is tight).

#[cfg(feature = "k8s")]
mod k8s;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::config::{ExplainConfig, ShutdownConfig, Strategy};
use crate::exit_status::EXIT_PREFLIGHT;

/// What `explain` found: a JSON-shaped tree.
pub enum Doc {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<Doc>),
    Obj(Vec<(&'static str, Doc)>),
}

impl From<&str> for Doc {
    fn from(s: &str) -> Doc {
        Doc::Str(s.to_string())
    }
}

impl From<String> for Doc {
    fn from(s: String) -> Doc {
        Doc::Str(s)
    }
}

impl From<bool> for Doc {
    fn from(b: bool) -> Doc {
        Doc::Bool(b)
    }
}

impl<T: Into<Doc>> From<Option<T>> for Doc {
    fn from(v: Option<T>) -> Doc {
        v.map_or(Doc::Null, Into::into)
    }
}

/// A duration as whole milliseconds (the `_ms` fields).
pub fn ms(d: Duration) -> Doc {
    Doc::Int(d.as_millis().min(i64::MAX as u128) as i64)
}

/// What is wrong (the drain cannot work as configured: exit 78) and what
/// is worth knowing (it works, but maybe not as intended).
#[derive(Default)]
pub struct Findings {
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

pub fn run(cfg: &ExplainConfig, shutdown: &ShutdownConfig) -> i32 {
    let mut found = Findings::default();
    let settings = cfg
        .settings
        .iter()
        .map(|s| Doc::Obj(vec![("option", s.option.as_str().into()), ("value", s.value.clone().into()), ("from", s.from.as_str().into())]))
        .collect();
    let mut doc = vec![("settings", Doc::List(settings)), ("drain", drain(shutdown, &mut found))];
    #[cfg(feature = "k8s")]
    if shutdown.drain.strategies.contains(&Strategy::K8s) || shutdown.drain.k8s.events {
        doc.push(("kubernetes", k8s::check(shutdown, &mut found)));
    }
    let ok = found.problems.is_empty();
    let strings = |v: Vec<String>| Doc::List(v.into_iter().map(Doc::Str).collect());
    doc.extend([("warnings", strings(found.warnings)), ("problems", strings(found.problems)), ("ok", ok.into())]);
    let doc = Doc::Obj(doc);
    let mut out = String::new();
    if cfg.json {
        json(&doc, &mut out);
        out.push('\n');
    } else {
        out.push_str("lastcall explain: a dry run (nothing is drained, signalled or stopped)\n");
        text(&doc, 0, &mut out);
    }
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    if stdout.write_all(out.as_bytes()).and_then(|()| stdout.flush()).is_err() {
        return 1;
    }
    if ok {
        0
    } else {
        EXIT_PREFLIGHT
    }
}

/// The deadline arithmetic of `deadline.rs` for this grace period, as
/// offsets from the stop signal (from the start of the preStop hook when
/// one asks for the drain: the kubelet counts the grace period from there),
/// and the waits that cannot fit in it.
fn drain(cfg: &ShutdownConfig, found: &mut Findings) -> Doc {
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
        if d.strategies.contains(&Strategy::Traffic) {
            wait("--quiet-period", d.quiet_period, "traffic is never seen quiet for that long: the drain always ends at the deadline");
        }
    }
    let names = d.strategies.iter().map(|s| Doc::from(s.name())).collect();
    Doc::Obj(vec![
        ("strategies", Doc::List(names)),
        ("counted_from", "the stop signal (or the start of the preStop hook that asks for the drain)".into()),
        ("grace_period_ms", ms(b.grace)),
        ("kill_margin_ms", ms(b.margin_for(b.grace))),
        ("stop_budget_ms", ms(b.stop_for(b.grace))),
        ("drain_window_ms", ms(window)),
        ("drain_ends_by_ms", ms(ends_by)),
        ("fallback_ends_ms", observing.then(|| ms(d.delay.min(window))).into()),
        ("app_stop_signal_by_ms", ms(ends_by)),
        ("lastcall_sigkill_ms", ms(plan.kill_at - t0)),
        ("kubelet_sigkill_ms", ms(b.grace)),
    ])
}

/// `30s`, `1500ms`, `2m`.
pub fn human(d: Duration) -> String {
    match (d.as_millis(), d.as_secs()) {
        (ms, s) if ms % 60_000 == 0 && s >= 60 => format!("{}m", s / 60),
        (ms, s) if ms % 1000 == 0 && s > 0 => format!("{s}s"),
        (ms, _) => format!("{ms}ms"),
    }
}

/// JSON (RFC 8259), strings escaped as the log lines are.
fn json(doc: &Doc, out: &mut String) {
    match doc {
        Doc::Null => out.push_str("null"),
        Doc::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Doc::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Doc::Str(s) => crate::logging::json_string(out, s),
        Doc::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json(item, out);
            }
            out.push(']');
        }
        Doc::Obj(fields) => {
            out.push('{');
            for (i, (key, value)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                crate::logging::json_string(out, key);
                out.push(':');
                json(value, out);
            }
            out.push('}');
        }
    }
}

/// Text: `key: value` lines, nested objects indented; a top-level list of
/// strings (the warnings, the problems) one `- ` line each; a list of
/// objects one line per object, its first value then `key=value` for the
/// rest, as lastcall's log lines are written; `_ms` fields as durations.
fn text(doc: &Doc, indent: usize, out: &mut String) {
    let Doc::Obj(fields) = doc else { return };
    for (key, value) in fields {
        let pad = " ".repeat(indent);
        let duration;
        let (key, value) = match (key.strip_suffix("_ms"), value) {
            (Some(short), Doc::Int(n)) => {
                duration = Doc::Str(human(Duration::from_millis(*n as u64)));
                (short, &duration)
            }
            (Some(short), Doc::Null) => (short, value),
            _ => (*key, value),
        };
        match value {
            Doc::Obj(_) => {
                let _ = writeln!(out, "{pad}{key}:");
                text(value, indent + 2, out);
            }
            Doc::List(items) if indent == 0 || items.iter().any(|i| matches!(i, Doc::Obj(_))) => {
                let _ = writeln!(out, "{pad}{key}:{}", if items.is_empty() { " none" } else { "" });
                for item in items {
                    let _ = match item {
                        Doc::Obj(_) => writeln!(out, "{pad}  {}", line(item)),
                        _ => writeln!(out, "{pad}  - {}", scalar(item)),
                    };
                }
            }
            _ => {
                let _ = writeln!(out, "{pad}{key}: {}", scalar(value));
            }
        }
    }
}

/// One object on one line: the first value, then `key=value` (nulls left out).
fn line(doc: &Doc) -> String {
    let Doc::Obj(fields) = doc else { return scalar(doc) };
    let mut s = String::new();
    for (i, (key, value)) in fields.iter().enumerate() {
        let v = scalar(value);
        match (i, value) {
            (_, Doc::Null) => {}
            (0, _) => s.push_str(&v),
            _ if v.contains(' ') || v.is_empty() => {
                let _ = write!(s, " {key}={v:?}");
            }
            _ => {
                let _ = write!(s, " {key}={v}");
            }
        }
    }
    s
}

fn scalar(doc: &Doc) -> String {
    match doc {
        Doc::Null => "-".into(),
        Doc::Bool(b) => b.to_string(),
        Doc::Int(n) => n.to_string(),
        Doc::Str(s) => s.clone(),
        Doc::List(items) if items.is_empty() => "none".into(),
        Doc::List(items) => items.iter().map(scalar).collect::<Vec<_>>().join(","),
        Doc::Obj(_) => line(doc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Doc {
        Doc::Obj(vec![
            (
                "settings",
                Doc::List(vec![Doc::Obj(vec![
                    ("option", "--drain".into()),
                    ("value", "k8s".into()),
                    ("from", "env LASTCALL_DRAIN".into()),
                ])]),
            ),
            (
                "drain",
                Doc::Obj(vec![
                    ("strategies", Doc::List(vec!["k8s".into(), "traffic".into()])),
                    ("grace_period_ms", ms(Duration::from_secs(30))),
                ]),
            ),
            ("warnings", Doc::List(vec![])),
            ("problems", Doc::List(vec!["a \"quoted\"\nline".into()])),
            ("ok", false.into()),
        ])
    }

    #[test]
    fn json_of_every_kind() {
        let mut out = String::new();
        json(&sample(), &mut out);
        assert_eq!(
            out,
            r#"{"settings":[{"option":"--drain","value":"k8s","from":"env LASTCALL_DRAIN"}],"drain":{"strategies":["k8s","traffic"],"grace_period_ms":30000},"warnings":[],"problems":["a \"quoted\"\nline"],"ok":false}"#
        );
        #[cfg(feature = "k8s")]
        serde_json::from_str::<serde_json::Value>(&out).expect("valid JSON");
    }

    #[test]
    fn text_reads_like_the_log() {
        let mut out = String::new();
        text(&sample(), 0, &mut out);
        assert_eq!(
            out,
            "settings:\n  --drain value=k8s from=\"env LASTCALL_DRAIN\"\ndrain:\n  strategies: k8s,traffic\n  grace_period: 30s\n\
             warnings: none\nproblems:\n  - a \"quoted\"\nline\nok: false\n"
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
