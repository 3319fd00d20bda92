//! Logs go to stderr only (stdout belongs to the app), as text or JSON
//! lines. The level comes from `LASTCALL_LOG` (error, warn, info, debug,
//! trace, off) when set, else from -v/-q around the default `info`.

use std::str::FromStr;

use tracing::level_filters::LevelFilter;

use crate::config::LogConfig;

pub fn init(cfg: &LogConfig) {
    let level = std::env::var("LASTCALL_LOG")
        .ok()
        .and_then(|v| LevelFilter::from_str(v.trim()).ok())
        .unwrap_or(match cfg.verbosity {
            i8::MIN..=-3 => LevelFilter::OFF,
            -2 => LevelFilter::ERROR,
            -1 => LevelFilter::WARN,
            0 => LevelFilter::INFO,
            1 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        });
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(level);
    // The default subscriber may already be set only in unit tests.
    let _ = if cfg.json {
        builder.json().flatten_event(true).with_current_span(false).try_init()
    } else {
        builder.try_init()
    };
}
