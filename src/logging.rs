//! Logs go to stderr only (stdout belongs to the app), one line per event,
//! as text or as JSON lines. The level comes from `LASTCALL_LOG` (error,
//! warn, info, debug, trace, off) when set, else from -v/-q around `info`.
//!
//! A small `Layer` on tracing-subscriber's registry writes the lines
//! instead of its `fmt` layer: lastcall logs a few dozen flat events in its
//! life and uses no spans, and this layer is some 60 KB smaller than `fmt`
//! with its JSON support, which matters for a binary copied into every
//! image. Each line is written with one write(2), so lines from several
//! threads never interleave.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use crate::config::LogConfig;

pub fn init(cfg: &LogConfig) {
    let level = std::env::var("LASTCALL_LOG").ok().and_then(|v| LevelFilter::from_str(v.trim()).ok()).unwrap_or(match cfg.verbosity {
        i8::MIN..=-3 => LevelFilter::OFF,
        -2 => LevelFilter::ERROR,
        -1 => LevelFilter::WARN,
        0 => LevelFilter::INFO,
        1 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    });
    let layer = Lines { json: cfg.json }.with_filter(level);
    // Fails only if a subscriber is already set (unit tests).
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
}

struct Lines {
    json: bool,
}

impl<S: Subscriber> Layer<S> for Lines {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let line = format_line(self.json, *event.metadata().level(), SystemTime::now(), |v| event.record(v));
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

/// One log line, newline included. `record` feeds the event's fields.
fn format_line(json: bool, level: Level, now: SystemTime, record: impl FnOnce(&mut dyn Visit)) -> String {
    let mut v = Fields { json, message: String::new(), fields: String::new() };
    record(&mut v);
    let ts = rfc3339_millis(now);
    if json {
        let mut line = format!("{{\"ts\":\"{ts}\",\"level\":\"{level}\",\"msg\":");
        json_string(&mut line, &v.message);
        line.push_str(&v.fields);
        line.push_str("}\n");
        line
    } else {
        format!("{ts} {level:<5} lastcall: {}{}\n", v.message, v.fields)
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
fn json_string(out: &mut String, s: &str) {
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

/// `2026-11-25T14:03:11.123Z` (UTC), from days-since-epoch to the civil
/// date (Howard Hinnant's algorithm, proleptic Gregorian calendar).
fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, d.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        let at = |s: u64, ms: u64| rfc3339_millis(UNIX_EPOCH + Duration::from_millis(s * 1000 + ms));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_795_618_991, 123), "2026-11-25T15:03:11.123Z");
        assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
    }

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
                let line = format_line(self.1, *event.metadata().level(), UNIX_EPOCH, |v| event.record(v));
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
