//! Turns the raw command line (`cli.rs`) into a validated `Config`.
//! No syscalls here: every check is a pure function with unit tests, and any
//! error becomes one line and exit status 2 before a child is started.

use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{Cli, CommonArgs, InitArgs, Mode as CliMode};
use crate::deadline::Budget;
use crate::exit_status::Remap;
use crate::signals::{Rewrites, Signal};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("invalid duration {value:?} for {flag}: use e.g. 500ms, 15s, 2m or 1m30s")]
    Duration { flag: &'static str, value: String },
    #[error("invalid value for {flag}: {msg}")]
    Invalid { flag: &'static str, msg: String },
    #[error("no command given: usage is lastcall [OPTIONS] -- CMD [ARGS]...")]
    NoCommand,
    #[error("drain strategy {0:?} is not built into this lastcall (rebuild with the cargo feature)")]
    NotBuiltIn(&'static str),
}

/// Which drain strategies run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Delay,
    K8s,
    Traffic,
    /// Sidecar only: until the app's `--wait-port`s stop accepting connections.
    PortsClosed,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Delay => "delay",
            Strategy::K8s => "k8s",
            Strategy::Traffic => "traffic",
            Strategy::PortsClosed => "wait-port",
        }
    }
}

/// Everything the drain strategies need.
#[derive(Debug, Clone, PartialEq)]
pub struct DrainConfig {
    pub strategies: Vec<Strategy>,
    /// The fixed delay, and the fallback when a strategy cannot observe.
    pub delay: Duration,
    pub timeout: Option<Duration>,
    pub propagation_delay: Duration,
    pub poll_interval: Duration,
    /// None: chosen from the pod's history when the drain starts.
    pub quiet_period: Option<Duration>,
    pub ports: Vec<u16>,
    pub k8s: K8sConfig,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct K8sConfig {
    pub api: Option<String>,
    pub token_file: PathBuf,
    pub ca_file: PathBuf,
    pub namespace: Option<String>,
    pub pod_name: Option<String>,
    pub pod_ips: Vec<String>,
    pub services: Vec<String>,
    pub strict: bool,
}

/// The shutdown sequence's settings, shared by every mode.
#[derive(Debug, Clone, PartialEq)]
pub struct ShutdownConfig {
    pub stop_signal: Signal,
    pub budget: Budget,
    pub drain: DrainConfig,
    /// Where a PID 1 lastcall listens for `lastcall drain`.
    pub control_socket: Option<PathBuf>,
}

/// Settings of a lastcall that supervises a child.
#[derive(Debug, Clone, PartialEq)]
pub struct InitConfig {
    pub command: Vec<String>,
    pub process_group: bool,
    pub rewrites: Rewrites,
    pub remap: Remap,
    pub pdeathsig: Option<Signal>,
    pub leftover_timeout: Duration,
    pub wait_descendants: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SidecarConfig {
    pub listen: String,
    pub wait_ports: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// PID 1 / entrypoint: supervise a child.
    Init(InitConfig),
    /// preStop hook.
    Drain,
    /// Beside the app; the child is optional.
    Sidecar(SidecarConfig, InitConfig),
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub verbosity: i8,
    pub json: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub mode: Mode,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
}

/// The log settings alone, so logging can start before full validation.
pub fn log_config(cli: &Cli) -> LogConfig {
    let log = match &cli.mode {
        None => &cli.common.log,
        Some(CliMode::Drain { common }) | Some(CliMode::Sidecar { common, .. }) => &common.log,
    };
    LogConfig { verbosity: log.verbose as i8 - log.quiet as i8, json: log.log_format == "json" }
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let log = log_config(&cli);
        let (mode, common) = match cli.mode {
            None => {
                if cli.command.is_empty() {
                    return Err(ConfigError::NoCommand);
                }
                (Mode::Init(init_config(&cli.init, cli.command)?), cli.common)
            }
            Some(CliMode::Drain { common }) => (Mode::Drain, common),
            Some(CliMode::Sidecar { init, common, sidecar, command }) => {
                let sc = SidecarConfig { listen: sidecar.listen, wait_ports: sidecar.wait_port };
                (Mode::Sidecar(sc, init_config(&init, command)?), common)
            }
        };
        Ok(Config { mode, shutdown: shutdown_config(&common)?, log })
    }
}

fn init_config(a: &InitArgs, command: Vec<String>) -> Result<InitConfig, ConfigError> {
    let invalid = |flag, e: &dyn std::fmt::Display| ConfigError::Invalid { flag, msg: e.to_string() };
    Ok(InitConfig {
        command,
        process_group: a.process_group,
        rewrites: Rewrites::parse(&a.rewrite).map_err(|e| invalid("--rewrite", &e))?,
        remap: Remap::parse(&a.remap_exit).map_err(|e| invalid("--remap-exit", &e))?,
        pdeathsig: a.pdeathsig.as_deref().map(str::parse).transpose().map_err(|e| invalid("--pdeathsig", &e))?,
        leftover_timeout: duration("--leftover-timeout", &a.leftover_timeout)?,
        wait_descendants: a.wait_descendants,
    })
}

fn shutdown_config(c: &CommonArgs) -> Result<ShutdownConfig, ConfigError> {
    let strategies = strategies(&c.drain, c.drain_delay.is_some())?;
    let budget = Budget {
        grace: duration("--grace-period", &c.grace_period)?,
        kill_margin: duration("--kill-margin", &c.kill_margin)?,
        stop_budget: duration("--stop-budget", &c.stop_budget)?,
    };
    let k = &c.k8s;
    Ok(ShutdownConfig {
        stop_signal: c
            .stop_signal
            .parse()
            .map_err(|e: crate::signals::BadSignal| ConfigError::Invalid { flag: "--stop-signal", msg: e.to_string() })?,
        budget,
        control_socket: match c.control_socket.as_str() {
            "" | "off" | "none" => None,
            p => Some(PathBuf::from(p)),
        },
        drain: DrainConfig {
            strategies,
            delay: c.drain_delay.as_deref().map(|d| duration("--drain-delay", d)).transpose()?.unwrap_or(Duration::from_secs(15)),
            timeout: c.drain_timeout.as_deref().map(|d| duration("--drain-timeout", d)).transpose()?,
            propagation_delay: duration("--propagation-delay", &c.propagation_delay)?,
            poll_interval: nonzero("--poll-interval", duration("--poll-interval", &k.poll_interval)?)?,
            quiet_period: match c.traffic.quiet_period.as_deref() {
                None | Some("auto") => None,
                Some(q) => Some(nonzero("--quiet-period", duration("--quiet-period", q)?)?),
            },
            ports: c.traffic.port.clone(),
            k8s: K8sConfig {
                api: k.k8s_api.clone(),
                token_file: PathBuf::from(&k.k8s_token_file),
                ca_file: PathBuf::from(&k.k8s_ca_file),
                namespace: k.namespace.clone(),
                pod_name: k.pod_name.clone(),
                pod_ips: k.pod_ip.clone(),
                services: k.service.clone(),
                strict: k.strict,
            },
        },
    })
}

fn nonzero(flag: &'static str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::Invalid { flag, msg: "must be greater than zero".into() });
    }
    Ok(d)
}

/// `--drain` list: explicit strategies in order; "none" alone means none.
/// Without `--drain`, a given `--drain-delay` selects the delay strategy.
fn strategies(names: &[String], delay_given: bool) -> Result<Vec<Strategy>, ConfigError> {
    if names.is_empty() {
        return Ok(if delay_given { vec![Strategy::Delay] } else { vec![] });
    }
    let mut out = Vec::new();
    for name in names {
        let s = match name.trim().to_ascii_lowercase().as_str() {
            "none" | "" => continue,
            "delay" => Strategy::Delay,
            "k8s" | "kubernetes" => Strategy::K8s,
            "traffic" => Strategy::Traffic,
            other => {
                return Err(ConfigError::Invalid {
                    flag: "--drain",
                    msg: format!("unknown strategy {other:?} (expected none, delay, k8s or traffic)"),
                })
            }
        };
        if (s == Strategy::K8s && !cfg!(feature = "k8s")) || (s == Strategy::Traffic && !cfg!(feature = "traffic")) {
            return Err(ConfigError::NotBuiltIn(s.name()));
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// Parses Go-style durations: `1h`, `2m`, `15s`, `500ms`, `250us`, `1m30s`,
/// `1.5s`; a bare number means seconds. Integer arithmetic in nanoseconds
/// (no float parsing: exact, and smaller).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let unit_len = rest[num_len..].find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len() - num_len);
        let (num, unit) = (&rest[..num_len], &rest[num_len..num_len + unit_len]);
        let unit_ns: u128 = match unit {
            "h" => 3_600_000_000_000,
            "m" => 60_000_000_000,
            "s" => 1_000_000_000,
            "" if num_len == s.len() => 1_000_000_000, // a bare number: seconds
            "ms" => 1_000_000,
            "us" | "µs" => 1_000,
            "ns" => 1,
            _ => return None,
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() || frac.contains('.') || frac.len() > 9 {
            return None;
        }
        let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let frac_ns: u128 = if frac.is_empty() { 0 } else { frac.parse::<u128>().ok()? * 10u128.pow(9 - frac.len() as u32) };
        total = total.checked_add(int.checked_mul(unit_ns)?.checked_add(frac_ns * unit_ns / 1_000_000_000)?)?;
        rest = &rest[num_len + unit_len..];
    }
    if s.is_empty() {
        return None;
    }
    let secs = u64::try_from(total / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (total % 1_000_000_000) as u32))
}

fn duration(flag: &'static str, value: &str) -> Result<Duration, ConfigError> {
    parse_duration(value).ok_or_else(|| ConfigError::Duration { flag, value: value.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn durations() {
        let ok = [
            ("15s", ms(15_000)),
            ("500ms", ms(500)),
            ("2m", ms(120_000)),
            ("1m30s", ms(90_000)),
            ("1.5s", ms(1500)),
            ("10", ms(10_000)),
            ("0", ms(0)),
            ("0s", ms(0)),
            ("1h", ms(3_600_000)),
            ("250us", Duration::from_micros(250)),
        ];
        for (s, d) in ok {
            assert_eq!(parse_duration(s), Some(d), "{s}");
        }
        assert_eq!(parse_duration("1.25m"), Some(ms(75_000)));
        assert_eq!(parse_duration("0.5"), Some(ms(500)));
        for s in ["", "banana", "5x", "-1s", "s", "1.2.3s", "-3", "5s3", ".s", "1.0000000001s"] {
            assert_eq!(parse_duration(s), None, "{s}");
        }
    }

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from(std::iter::once("lastcall").chain(args.iter().copied())).expect("clap");
        Config::from_cli(cli)
    }

    #[test]
    fn defaults() {
        let c = parse(&["--", "/app"]).unwrap();
        assert_eq!(c.shutdown.budget, Budget { grace: ms(30_000), kill_margin: ms(2000), stop_budget: ms(5000) });
        assert!(c.shutdown.drain.strategies.is_empty());
        assert_eq!(c.shutdown.drain.delay, ms(15_000));
        assert_eq!(c.shutdown.stop_signal, crate::signals::SIGTERM);
        assert_eq!(c.shutdown.control_socket, Some(PathBuf::from("/run/lastcall.sock")));
        let Mode::Init(init) = c.mode else { panic!() };
        assert_eq!(init.command, vec!["/app"]);
    }

    #[test]
    fn drain_delay_alone_selects_delay() {
        let c = parse(&["--drain-delay", "3s", "--", "/app"]).unwrap();
        assert_eq!(c.shutdown.drain.strategies, vec![Strategy::Delay]);
        assert_eq!(c.shutdown.drain.delay, ms(3000));
        let c = parse(&["--drain", "none", "--drain-delay", "3s", "--", "/app"]).unwrap();
        assert!(c.shutdown.drain.strategies.is_empty());
    }

    #[test]
    fn quiet_period_is_adaptive_unless_given() {
        assert_eq!(parse(&["--", "/app"]).unwrap().shutdown.drain.quiet_period, None);
        assert_eq!(parse(&["--quiet-period", "auto", "--", "/app"]).unwrap().shutdown.drain.quiet_period, None);
        assert_eq!(parse(&["--quiet-period", "2500ms", "--", "/app"]).unwrap().shutdown.drain.quiet_period, Some(ms(2500)));
    }

    #[test]
    fn errors_are_one_line() {
        let cases: &[&[&str]] = &[
            &["--grace-period", "banana", "--", "/app"],
            &["--rewrite", "X:Y", "--", "/app"],
            &["--remap-exit", "300", "--", "/app"],
            &["--stop-signal", "NOPE", "--", "/app"],
            &["--drain", "magic", "--", "/app"],
            &["--quiet-period", "0", "--", "/app"],
            &[],
        ];
        for args in cases {
            let e = parse(args).unwrap_err().to_string();
            assert!(!e.contains('\n') && !e.is_empty(), "{args:?}: {e}");
        }
    }

    #[test]
    fn modes() {
        assert_eq!(parse(&["drain", "--drain-delay", "1s"]).unwrap().mode, Mode::Drain);
        let c = parse(&["sidecar", "--wait-port", "8080", "--", "proxy"]).unwrap();
        let Mode::Sidecar(sc, init) = c.mode else { panic!() };
        assert_eq!(sc.wait_ports, vec![8080]);
        assert_eq!(init.command, vec!["proxy"]);
    }
}
