//! Turns the raw command line (`cli.rs`) into a validated `Config`.
//! No syscalls here: every check is a pure function with unit tests, and any
//! error becomes one line and exit status 2 before a child is started.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{Cli, CommonArgs, InitArgs, Mode as CliMode, Setting, SidecarArgs};
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
    /// Options that do not fit together.
    #[error("{0}")]
    Usage(&'static str),
}

/// A drain strategy `--drain` accepts (each is a `drain::Strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Delay,
    K8s,
    Traffic,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Delay => "delay",
            Strategy::K8s => "k8s",
            Strategy::Traffic => "traffic",
        }
    }
}

/// Everything the drain strategies need.
#[derive(Debug, Clone, PartialEq)]
pub struct DrainConfig {
    /// `--drain`: the strategies the user chose, in order.
    pub strategies: Vec<Strategy>,
    /// The fixed delay, and the fallback when a strategy cannot observe.
    pub delay: Duration,
    pub timeout: Option<Duration>,
    pub propagation_delay: Duration,
    pub poll_interval: Duration,
    /// None: chosen from the pod's history when the drain starts.
    pub quiet_period: Option<Duration>,
    /// `--port`: the ports the traffic strategy watches.
    pub ports: Vec<u16>,
    /// The sidecar helper's drain (`lastcall sidecar --wait-port`): after
    /// the chosen strategies (the helper has none), wait until these ports
    /// of the app stop accepting connections (`drain/ports.rs`). Never set
    /// by `--drain`.
    pub wait_ports: Vec<u16>,
    /// `--close-idle`: ports whose idle connections are closed after the drain.
    pub close_idle: Vec<u16>,
    pub k8s: K8sConfig,
}

impl DrainConfig {
    /// No strategy runs: the stop signal goes to the app at once.
    pub fn is_empty(&self) -> bool {
        self.strategies.is_empty() && self.wait_ports.is_empty()
    }
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
    /// Post Kubernetes Events about the shutdown (`--events`).
    pub events: bool,
}

/// The shutdown sequence's settings, shared by every mode.
#[derive(Debug, Clone, PartialEq)]
pub struct ShutdownConfig {
    pub stop_signal: Signal,
    pub budget: Budget,
    pub drain: DrainConfig,
    /// Where a PID 1 lastcall listens for `lastcall drain`.
    pub control_socket: Option<PathBuf>,
    /// Where the termination report goes (see `report.rs`).
    pub termination_log: Option<TerminationLog>,
}

/// The termination report's file.
#[derive(Debug, Clone, PartialEq)]
pub struct TerminationLog {
    pub path: PathBuf,
    /// Create the file when missing: only for a path the user chose. The
    /// default one is written only when the kubelet has mounted it.
    pub create: bool,
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
    /// Where the HTTP server listens; None for `--listen off`.
    pub listen: Option<SocketAddr>,
    pub wait_ports: Vec<u16>,
    /// The bearer token `GET /drain` must carry, if any.
    pub drain_token: Option<DrainToken>,
    /// The source networks `GET /drain` is accepted from; empty for any.
    pub drain_from: Vec<Cidr>,
}

/// Where the drain token comes from. A file is read when the sidecar
/// starts (`check_drain_token` then checks what it held).
#[derive(Clone, PartialEq)]
pub enum DrainToken {
    Value(String),
    File(PathBuf),
}

/// Never prints the token itself.
impl std::fmt::Debug for DrainToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DrainToken::Value(_) => f.write_str("Value(<redacted>)"),
            DrainToken::File(p) => write!(f, "File({})", p.display()),
        }
    }
}

/// An address block, `10.0.0.0/8` or `fd00::/8`; a bare address is a /32
/// (/128). Host bits may be set (`10.1.2.3/8` is `10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let bad = || format!("{s:?} is not an address or CIDR (e.g. 10.0.0.1/32, fd00::/8)");
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|&p| p <= max).ok_or_else(bad)?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// What a drain token must look like: it travels as an HTTP header value,
/// so visible ASCII only, and long enough that guessing it over the pod
/// network is hopeless. The message never contains the token.
pub fn check_drain_token(token: &str) -> Result<(), &'static str> {
    if token.is_empty() {
        return Err("is empty (an unset template value would turn the check off: leave the variable out instead)");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("may only contain visible ASCII characters (no spaces)");
    }
    if token.len() < 16 {
        return Err("must be at least 16 characters (e.g. openssl rand -hex 16)");
    }
    if token.len() > 1024 {
        return Err("must be at most 1024 characters");
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// PID 1 / entrypoint: supervise a child.
    Init(InitConfig),
    /// preStop hook.
    Drain,
    /// Beside the app; the child is optional.
    Sidecar(SidecarConfig, InitConfig),
    /// `lastcall explain`: a dry run.
    Explain(ExplainConfig),
}

/// What `lastcall explain` shows besides the validated settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainConfig {
    pub json: bool,
    /// Every option, its value and where that came from.
    pub settings: Vec<Setting>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub level: tracing::level_filters::LevelFilter,
    pub json: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub mode: Mode,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
}

/// `-v`/`-q` on the command line win; else `--log-level`/`LASTCALL_LOG`;
/// else info.
fn log_config(log: &crate::cli::LogArgs) -> Result<LogConfig, ConfigError> {
    let level = match (log.verbose, log.quiet, log.log_level.as_deref()) {
        (0, 0, Some(name)) => name.trim().parse().map_err(|_| ConfigError::Invalid {
            flag: "--log-level (LASTCALL_LOG)",
            msg: format!("{name:?}: use off, error, warn, info, debug or trace"),
        })?,
        (v, q, _) => crate::logging::level_from_counts(v.min(100) as i8 - q.min(100) as i8),
    };
    Ok(LogConfig { level, json: log.log_format == "json" })
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let (mode, common) = match cli.mode {
            None => {
                if cli.command.is_empty() {
                    return Err(ConfigError::NoCommand);
                }
                (Mode::Init(init_config(&cli.init, cli.command)?), cli.common)
            }
            Some(CliMode::Drain { common }) => (Mode::Drain, common),
            Some(CliMode::Sidecar { init, common, sidecar, command }) => {
                let sc = sidecar_config(&sidecar, !command.is_empty())?;
                (Mode::Sidecar(sc, init_config(&init, command)?), common)
            }
            Some(CliMode::Explain { common, json, settings }) => (Mode::Explain(ExplainConfig { json, settings }), common),
        };
        let log = log_config(&common.log)?;
        let shutdown = shutdown_config(&common)?;
        close_idle_fits(&mode, &shutdown.drain)?;
        Ok(Config { mode, shutdown, log })
    }
}

fn init_config(a: &InitArgs, command: Vec<String>) -> Result<InitConfig, ConfigError> {
    let invalid = |flag, e: &dyn std::fmt::Display| ConfigError::Invalid { flag, msg: e.to_string() };
    Ok(InitConfig {
        command,
        process_group: a.process_group,
        rewrites: rewrites(&a.rewrite)?,
        remap: Remap::parse(&a.remap_exit).map_err(|e| invalid("--remap-exit", &e))?,
        pdeathsig: a.pdeathsig.as_deref().map(str::parse).transpose().map_err(|e| invalid("--pdeathsig", &e))?,
        leftover_timeout: duration("--leftover-timeout", &a.leftover_timeout)?,
        wait_descendants: a.wait_descendants,
    })
}

/// `--namespace`, `--pod-name`: a Kubernetes object name (RFC 1123
/// subdomain), which also keeps it safe in the API URL's path.
fn object_name(flag: &'static str, value: Option<&str>) -> Result<Option<String>, ConfigError> {
    let Some(name) = value.map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    let ok = name.len() <= 253 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !ok {
        return Err(ConfigError::Invalid { flag, msg: format!("{name:?} is not a Kubernetes name (lowercase letters, digits, '-', '.')") });
    }
    Ok(Some(name.to_string()))
}

/// `--pod-ip` values: each an IPv4 or IPv6 address.
fn pod_ips(values: &[String]) -> Result<Vec<String>, ConfigError> {
    let ips: Vec<String> = values.iter().map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
    match ips.iter().find(|ip| ip.parse::<std::net::IpAddr>().is_err()) {
        Some(bad) => Err(ConfigError::Invalid { flag: "--pod-ip", msg: format!("{bad:?} is not an IP address") }),
        None => Ok(ips),
    }
}

/// `--service` values: Service names (RFC 1035 labels, as Kubernetes
/// requires of them), which also keeps the label selector built from them
/// well-formed.
fn services(values: &[String]) -> Result<Vec<String>, ConfigError> {
    let label = |s: &str| {
        s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase())
            && !s.ends_with('-')
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    let names: Vec<String> = values.iter().map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
    match names.iter().find(|n| !label(n)) {
        Some(bad) => {
            Err(ConfigError::Invalid { flag: "--service", msg: format!("{bad:?} is not a Service name (lowercase letters, digits, '-')") })
        }
        None => Ok(names),
    }
}

/// `--rewrite` rules, each of whose FROM signal lastcall catches (a rule
/// for a signal it never receives would never fire).
fn rewrites(specs: &[String]) -> Result<Rewrites, ConfigError> {
    let invalid = |msg: String| ConfigError::Invalid { flag: "--rewrite", msg };
    let rules = Rewrites::parse(specs).map_err(|e| invalid(e.to_string()))?;
    for (spec, from) in specs.iter().zip(rules.sources()) {
        if !crate::signals::is_forwarded(from) {
            return Err(invalid(format!("{spec:?}: {from} cannot be caught by lastcall: {}", crate::signals::NOT_CAUGHT)));
        }
    }
    Ok(rules)
}

/// The sidecar's options, checked together: what the HTTP server and the
/// wrapped helper need, and what makes no sense without them.
fn sidecar_config(a: &SidecarArgs, has_command: bool) -> Result<SidecarConfig, ConfigError> {
    let listen = match a.listen.trim() {
        "" | "off" | "none" => None,
        addr => Some(addr.parse::<SocketAddr>().map_err(|_| ConfigError::Invalid {
            flag: "--listen",
            msg: format!("{addr:?}: use IP:PORT (0.0.0.0:9099, [::]:9099) or off"),
        })?),
    };
    if !has_command && listen.is_none() {
        return Err(ConfigError::Usage("nothing to do: --listen is off and no command is given (lastcall sidecar [OPTIONS] [-- CMD])"));
    }
    if !has_command && !a.wait_port.is_empty() {
        return Err(ConfigError::Usage("--wait-port needs a command to keep running (lastcall sidecar --wait-port P -- CMD)"));
    }
    if a.wait_port.contains(&0) {
        return Err(ConfigError::Invalid { flag: "--wait-port", msg: "0 is not a port".into() });
    }
    let drain_token = match (&a.drain_token, &a.drain_token_file) {
        (Some(_), Some(_)) => return Err(ConfigError::Usage("--drain-token and --drain-token-file exclude each other: give one")),
        (Some(t), None) => {
            check_drain_token(t).map_err(|msg| ConfigError::Invalid { flag: "--drain-token", msg: msg.into() })?;
            Some(DrainToken::Value(t.clone()))
        }
        (None, Some(p)) if p.trim().is_empty() => {
            return Err(ConfigError::Invalid { flag: "--drain-token-file", msg: "is empty: give a path".into() })
        }
        (None, Some(p)) => Some(DrainToken::File(PathBuf::from(p))),
        (None, None) => None,
    };
    let drain_from = a
        .drain_from
        .iter()
        .map(|c| c.parse::<Cidr>().map_err(|msg| ConfigError::Invalid { flag: "--drain-from", msg }))
        .collect::<Result<Vec<_>, _>>()?;
    if listen.is_none() && (drain_token.is_some() || !drain_from.is_empty()) {
        return Err(ConfigError::Usage(
            "--drain-token, --drain-token-file and --drain-from guard the HTTP server, which --listen off turns off",
        ));
    }
    Ok(SidecarConfig { listen, wait_ports: a.wait_port.clone(), drain_token, drain_from })
}

fn shutdown_config(c: &CommonArgs) -> Result<ShutdownConfig, ConfigError> {
    let strategies = strategies(&c.drain, c.drain_delay.is_some())?;
    if c.k8s.events && !cfg!(feature = "k8s") {
        return Err(ConfigError::Usage("--events is not built into this lastcall (rebuild with the cargo feature \"k8s\")"));
    }
    let budget = budget(
        duration("--grace-period", &c.grace_period)?,
        c.kill_margin.as_deref().map(|d| duration("--kill-margin", d)).transpose()?,
        c.stop_budget.as_deref().map(|d| duration("--stop-budget", d)).transpose()?,
    )?;
    let k = &c.k8s;
    let stop_signal: Signal =
        c.stop_signal.parse().map_err(|e: crate::signals::BadSignal| ConfigError::Invalid { flag: "--stop-signal", msg: e.to_string() })?;
    if !crate::signals::is_forwarded(stop_signal) {
        return Err(ConfigError::Invalid {
            flag: "--stop-signal",
            msg: format!("{stop_signal} cannot be caught by lastcall: {}", crate::signals::NOT_CAUGHT),
        });
    }
    Ok(ShutdownConfig {
        stop_signal,
        budget,
        control_socket: match c.control_socket.as_str() {
            "" | "off" | "none" => None,
            p => Some(PathBuf::from(p)),
        },
        termination_log: match c.termination_log.as_str() {
            "" | "off" | "none" => None,
            p => Some(TerminationLog { path: PathBuf::from(p), create: p != DEFAULT_TERMINATION_LOG }),
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
            wait_ports: vec![],
            close_idle: close_idle(&c.traffic.close_idle)?,
            k8s: K8sConfig {
                api: k.k8s_api.clone(),
                token_file: PathBuf::from(&k.k8s_token_file),
                ca_file: PathBuf::from(&k.k8s_ca_file),
                namespace: object_name("--namespace", k.namespace.as_deref())?,
                pod_name: object_name("--pod-name", k.pod_name.as_deref())?,
                pod_ips: pod_ips(&k.pod_ip)?,
                services: services(&k.service)?,
                strict: k.strict,
                events: k.events,
            },
        },
    })
}

/// The grace period and what is kept of it, checked so that the app always
/// gets time between the stop signal and SIGKILL. A margin or stop budget
/// left to its default scales with the grace period (see `deadline.rs`);
/// one that was given must fit.
fn budget(grace: Duration, kill_margin: Option<Duration>, stop_budget: Option<Duration>) -> Result<Budget, ConfigError> {
    let grace = nonzero("--grace-period", grace)?;
    let b = Budget { grace, kill_margin, stop_budget };
    if kill_margin.is_some_and(|m| m >= grace) {
        return Err(ConfigError::Invalid {
            flag: "--kill-margin",
            msg: format!("{} leaves nothing of --grace-period {}", ms_text(b.margin_for(grace)), ms_text(grace)),
        });
    }
    if let Some(stop) = stop_budget {
        if stop + b.margin_for(grace) > grace {
            return Err(ConfigError::Invalid {
                flag: "--stop-budget",
                msg: format!(
                    "{} and a kill margin of {} do not fit in --grace-period {}",
                    ms_text(stop),
                    ms_text(b.margin_for(grace)),
                    ms_text(grace)
                ),
            });
        }
    }
    Ok(b)
}

fn ms_text(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn nonzero(flag: &'static str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::Invalid { flag, msg: "must be greater than zero".into() });
    }
    Ok(d)
}

/// `--close-idle` ports: named explicitly (the protocol on a port is the
/// user's to know), never 0, and only where the mechanism is built in.
fn close_idle(ports: &[u16]) -> Result<Vec<u16>, ConfigError> {
    let invalid = |msg: &str| ConfigError::Invalid { flag: "--close-idle", msg: msg.into() };
    if ports.is_empty() {
        return Ok(vec![]);
    }
    if !cfg!(feature = "traffic") {
        return Err(invalid("needs sock_diag, which this lastcall is built without (cargo feature traffic)"));
    }
    if ports.contains(&0) {
        return Err(invalid("0 is not a port"));
    }
    let mut ports = ports.to_vec();
    ports.sort_unstable();
    ports.dedup();
    Ok(ports)
}

/// `--close-idle` runs at the end of the drain, on the connections of the
/// app lastcall started: it needs a drain, and a sidecar's helper is not
/// the app.
fn close_idle_fits(mode: &Mode, drain: &DrainConfig) -> Result<(), ConfigError> {
    if drain.close_idle.is_empty() {
        return Ok(());
    }
    match mode {
        Mode::Sidecar(..) => Err(ConfigError::Usage("--close-idle needs lastcall as the app's parent (PID 1 mode), not in sidecar mode")),
        Mode::Init(_) if drain.strategies.is_empty() => {
            Err(ConfigError::Usage("--close-idle runs at the end of the drain: set --drain (e.g. delay, k8s or traffic)"))
        }
        _ => Ok(()),
    }
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

/// The kubelet's default terminationMessagePath.
const DEFAULT_TERMINATION_LOG: &str = "/dev/termination-log";

/// The longest duration lastcall accepts anywhere: a year is longer than
/// any grace period a cluster uses, and every deadline (an instant plus a
/// few of these) stays far from the end of the monotonic clock.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

fn duration(flag: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(value).ok_or_else(|| ConfigError::Duration { flag, value: value.to_string() })?;
    if d > MAX_DURATION {
        return Err(ConfigError::Invalid { flag, msg: format!("{value} is longer than the longest accepted, 8760h (a year)") });
    }
    Ok(d)
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
        assert_eq!(c.shutdown.budget, Budget { grace: ms(30_000), kill_margin: None, stop_budget: None });
        let plan = c.shutdown.budget.plan(std::time::Instant::now());
        assert_eq!(plan.kill_at - plan.start, ms(28_000));
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
            &["--drain-delay", "5000000000000000h", "--", "/app"],
            &["--grace-period", "0", "--", "/app"],
            &["--grace-period", "1s", "--kill-margin", "5s", "--", "/app"],
            &["--grace-period", "5s", "--stop-budget", "10s", "--", "/app"],
            &["-r", "SEGV:TERM", "--", "/app"],
            &["--stop-signal", "KILL", "--", "/app"],
            &["--log-level", "loud", "--", "/app"],
            &["--pod-ip", "10.0.0.300", "--", "/app"],
            &["--service", "web,Bad_Name", "--", "/app"],
            &["--service", "a,b)", "--", "/app"],
            &["--pod-name", "web/../x", "--", "/app"],
            &["--namespace", "Default", "--", "/app"],
            &[],
        ];
        for args in cases {
            let e = parse(args).unwrap_err().to_string();
            assert!(!e.contains('\n') && !e.is_empty(), "{args:?}: {e}");
        }
    }

    #[test]
    fn budgets_that_fit_are_accepted() {
        for args in [
            &["--grace-period", "5s", "--", "/app"][..],
            &["--grace-period", "5s", "--stop-budget", "3s", "--", "/app"],
            &["--grace-period", "1s", "--kill-margin", "500ms", "--", "/app"],
            &["--grace-period", "8760h", "--", "/app"],
        ] {
            assert!(parse(args).is_ok(), "{args:?}");
        }
    }

    #[test]
    fn close_idle_ports() {
        if !cfg!(feature = "traffic") {
            let e = parse(&["--drain", "delay", "--close-idle", "8080", "--", "/app"]).unwrap_err().to_string();
            assert!(e.contains("--close-idle") && e.contains("traffic"), "{e}");
            return;
        }
        let c = parse(&["--drain", "delay", "--close-idle", "8080,80,8080", "--", "/app"]).unwrap();
        assert_eq!(c.shutdown.drain.close_idle, vec![80, 8080]);
        assert!(parse(&["--drain", "delay", "--", "/app"]).unwrap().shutdown.drain.close_idle.is_empty());
        assert_eq!(parse(&["--close-idle", "8080", "drain"]).unwrap().shutdown.drain.close_idle, vec![8080]);
        let bad: &[&[&str]] = &[
            &["--drain", "delay", "--close-idle", "0", "--", "/app"],
            &["--drain", "delay", "--close-idle", "http", "--", "/app"],
            &["--close-idle", "8080", "--", "/app"],
            &["--drain", "none", "--close-idle", "8080", "--", "/app"],
            &["sidecar", "--close-idle", "8080", "--", "proxy"],
        ];
        for args in bad {
            let cli = Cli::try_parse_from(std::iter::once("lastcall").chain(args.iter().copied()));
            let Ok(cli) = cli else { continue }; // clap refuses a port that is not a number
            let e = Config::from_cli(cli).expect_err(&format!("{args:?} accepted")).to_string();
            assert!(!e.contains('\n') && e.contains("--close-idle"), "{args:?}: {e}");
        }
    }

    #[test]
    fn log_level_flags_win_over_the_level_option() {
        use tracing::level_filters::LevelFilter;
        assert_eq!(parse(&["--", "/app"]).unwrap().log.level, LevelFilter::INFO);
        assert_eq!(parse(&["--log-level", "debug", "--", "/app"]).unwrap().log.level, LevelFilter::DEBUG);
        assert_eq!(parse(&["--log-level", "debug", "-q", "--", "/app"]).unwrap().log.level, LevelFilter::WARN);
        assert_eq!(parse(&["-vv", "--", "/app"]).unwrap().log.level, LevelFilter::TRACE);
    }

    #[test]
    fn options_before_the_mode_name() {
        assert_eq!(parse(&["-q", "drain"]).unwrap().mode, Mode::Drain);
        assert_eq!(parse(&["--grace-period", "9s", "drain"]).unwrap().shutdown.budget.grace, ms(9000));
        let Mode::Init(init) = parse(&["--", "drain"]).unwrap().mode else { panic!("`-- drain` is a command") };
        assert_eq!(init.command, vec!["drain"]);
        let cli = Cli::try_parse_from(["lastcall", "-g", "drain"]);
        assert!(cli.is_err(), "-g is not an option of the drain mode");
    }

    #[test]
    fn modes() {
        assert_eq!(parse(&["drain", "--drain-delay", "1s"]).unwrap().mode, Mode::Drain);
        let c = parse(&["sidecar", "--wait-port", "8080", "--", "proxy"]).unwrap();
        let Mode::Sidecar(sc, init) = c.mode else { panic!() };
        assert_eq!(sc.wait_ports, vec![8080]);
        assert_eq!(init.command, vec!["proxy"]);
    }

    #[test]
    fn explain_mode_and_where_settings_came_from() {
        let c = parse(&["-q", "explain", "--format", "json", "--grace-period", "9s"]).unwrap();
        let Mode::Explain(e) = c.mode else { panic!("not explain") };
        assert!(e.json);
        assert_eq!(c.shutdown.budget.grace, ms(9000));
        let from = |o: &str| e.settings.iter().find(|s| s.option == o).map(|s| (s.value.clone(), s.from.clone()));
        assert_eq!(from("--grace-period"), Some((Some("9s".into()), "flag".into())));
        assert_eq!(from("--stop-signal"), Some((Some("TERM".into()), "default".into())));
        assert_eq!(from("--drain-delay"), Some((None, "unset".into())));
        assert_eq!(from("--quiet"), Some((Some("1".into()), "flag".into())));
        assert_eq!(from("--format"), None, "explain's own option is not a setting");
        assert!(Cli::try_parse_from(["lastcall", "explain", "--format", "yaml"]).is_err());
        let events = parse(&["explain", "--events"]);
        assert_eq!(events.is_ok(), cfg!(feature = "k8s"), "{events:?}");
    }

    fn sidecar(args: &[&str]) -> Result<SidecarConfig, ConfigError> {
        let c = parse(&std::iter::once("sidecar").chain(args.iter().copied()).collect::<Vec<_>>())?;
        let Mode::Sidecar(sc, _) = c.mode else { panic!("not sidecar") };
        Ok(sc)
    }

    #[test]
    fn sidecar_defaults_and_listen() {
        let sc = sidecar(&[]).unwrap();
        assert_eq!(sc.listen, Some("0.0.0.0:9099".parse().unwrap()));
        assert_eq!((sc.drain_token, sc.drain_from), (None, vec![]));
        assert_eq!(sidecar(&["--listen", " off ", "--", "p"]).unwrap().listen, None);
        assert_eq!(sidecar(&["--listen", "[::]:9099"]).unwrap().listen, Some("[::]:9099".parse().unwrap()));
    }

    #[test]
    fn sidecar_usage_problems_are_one_line() {
        let token = "0123456789abcdef";
        let bad: &[&[&str]] = &[
            &["--listen", "off"],
            &["--listen", "localhost:9099"],
            &["--wait-port", "8080"],
            &["--wait-port", "0", "--", "p"],
            &["--drain-token", ""],
            &["--drain-token", "0123456789abcde"],
            &["--drain-token", "0123456789 abcdef"],
            &["--drain-token", token, "--drain-token-file", "/t"],
            &["--drain-token-file", " "],
            &["--drain-from", "10.0.0.0/33"],
            &["--drain-from", "::1/129"],
            &["--drain-from", "10.0.0.0/x"],
            &["--drain-from", ""],
            &["--listen", "off", "--drain-from", "10.0.0.0/8", "--", "p"],
            &["--listen", "off", "--drain-token", token, "--", "p"],
        ];
        for args in bad {
            let e = sidecar(args).expect_err(&format!("{args:?} accepted")).to_string();
            assert!(!e.contains('\n') && !e.is_empty(), "{args:?}: {e}");
            assert!(!e.contains(token), "{args:?}: the token is in {e:?}");
        }
        let ok: &[&[&str]] = &[&["--", "p"], &["--listen", "off", "--", "p"], &["--drain-token", token]];
        for args in ok {
            assert!(sidecar(args).is_ok(), "{args:?}");
        }
    }

    #[test]
    fn sidecar_auth_settings() {
        let sc = sidecar(&["--drain-token-file", "/run/secrets/t", "--drain-from", "10.1.2.3/8, fd00::/8,192.0.2.7"]).unwrap();
        assert_eq!(sc.drain_token, Some(DrainToken::File(PathBuf::from("/run/secrets/t"))));
        let from: Vec<String> = sc.drain_from.iter().map(|c| c.to_string()).collect();
        assert_eq!(from, ["10.1.2.3/8", "fd00::/8", "192.0.2.7/32"]);
        let sc = sidecar(&["--drain-token", "0123456789abcdef"]).unwrap();
        assert_eq!(format!("{:?}", sc.drain_token), "Some(Value(<redacted>))");
    }
}
