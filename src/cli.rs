//! Command-line surface: clap-derive structs only, no validation beyond
//! what clap does. `config.rs` turns these into a validated `Config`.
//!
//! Every option can also come from `LASTCALL_<NAME>`; a flag on the command
//! line wins over the environment (clap's `env` semantics).

use clap::{Args, Parser};

/// What the command line asked for, whichever mode it names.
#[derive(Debug)]
pub struct Cli {
    /// None: the PID 1 entrypoint.
    pub mode: Option<Mode>,
    pub init: InitArgs,
    pub common: CommonArgs,
    pub command: Vec<String>,
}

#[derive(Debug)]
pub enum Mode {
    Drain { common: CommonArgs },
    Sidecar { init: InitArgs, common: CommonArgs, sidecar: Box<SidecarArgs>, command: Vec<String> },
    Explain { common: CommonArgs, json: bool, settings: Vec<Setting> },
}

/// One option as `lastcall explain` shows it: its value and where the value
/// came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// `--grace-period`.
    pub option: String,
    /// The value as given (a list joined with commas); None when unset.
    pub value: Option<String>,
    /// `flag`, `env LASTCALL_…`, `default` or `unset`.
    pub from: String,
}

impl Cli {
    pub fn try_parse() -> Result<Cli, clap::Error> {
        drop_empty_env();
        Self::try_parse_from(std::env::args_os())
    }

    /// Each mode has its own parser, picked by the mode name, so a start
    /// builds only the one clap command it needs: building all three (each
    /// with the ~25 shared options) was most of lastcall's start-up.
    ///
    /// Options may come before the mode name too (`lastcall -q drain`): a
    /// command line whose program (the first word after the options, with
    /// no `--` before it) is `drain`, `sidecar` or `explain` is that mode, with those
    /// options moved after the name. `lastcall -- drain` runs a program
    /// named drain.
    pub fn try_parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString>,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        match args.get(1).and_then(|a| a.to_str()) {
            Some("drain") => Self::drain(&args[1..]),
            Some("sidecar") => Self::sidecar(&args[1..]),
            Some("explain") => Self::explain(&args[1..]),
            _ => {
                let i = InitCli::try_parse_from(&args)?;
                if let Some(mode_at) = mode_word(&args, &i.command) {
                    // The options before the name, then the rest after it.
                    let moved: Vec<_> = std::iter::once(args[mode_at].clone())
                        .chain(args[1..mode_at].iter().cloned())
                        .chain(args[mode_at + 1..].iter().cloned())
                        .collect();
                    return match i.command[0].as_str() {
                        "drain" => Self::drain(&moved),
                        "explain" => Self::explain(&moved),
                        _ => Self::sidecar(&moved),
                    };
                }
                Ok(Cli { mode: None, init: i.init, common: i.common, command: i.command })
            }
        }
    }

    fn drain(args: &[std::ffi::OsString]) -> Result<Cli, clap::Error> {
        let d = DrainCli::try_parse_from(args)?;
        Ok(Cli { mode: Some(Mode::Drain { common: d.common }), init: InitArgs::default(), common: CommonArgs::default(), command: vec![] })
    }

    fn sidecar(args: &[std::ffi::OsString]) -> Result<Cli, clap::Error> {
        let s = SidecarCli::try_parse_from(args)?;
        Ok(Cli {
            mode: Some(Mode::Sidecar { init: s.init, common: s.common, sidecar: Box::new(s.sidecar), command: s.command }),
            init: InitArgs::default(),
            common: CommonArgs::default(),
            command: vec![],
        })
    }

    /// `lastcall explain`: its own parser, kept with its matches, which say
    /// where each value came from (clap's `ValueSource`).
    fn explain(args: &[std::ffi::OsString]) -> Result<Cli, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let mut cmd = ExplainCli::command();
        let mut m = cmd.try_get_matches_from_mut(args)?;
        let settings: Vec<Setting> = cmd
            .get_arguments()
            .filter(|a| !matches!(a.get_id().as_str(), "help" | "version" | "format"))
            .filter_map(|a| {
                let id = a.get_id().as_str();
                let value = m.get_raw(id).map(|v| v.map(|s| s.to_string_lossy()).collect::<Vec<_>>().join(","));
                let from = match m.value_source(id) {
                    Some(clap::parser::ValueSource::CommandLine) => "flag".to_string(),
                    Some(clap::parser::ValueSource::EnvVariable) => format!("env {}", a.get_env().unwrap_or_default().to_string_lossy()),
                    Some(_) => "default".to_string(),
                    None => "unset".to_string(),
                };
                Some(Setting { option: format!("--{}", a.get_long()?), value: value.filter(|_| from != "unset"), from })
            })
            .collect();
        // After the settings: this takes the values out of the matches.
        let e = ExplainCli::from_arg_matches_mut(&mut m)?;
        Ok(Cli {
            mode: Some(Mode::Explain { common: e.common, json: e.format == "json", settings }),
            init: InitArgs::default(),
            common: CommonArgs::default(),
            command: vec![],
        })
    }
}

/// Where the mode name stands in `args`, when the parsed command is a mode
/// name that no `--` preceded.
fn mode_word(args: &[std::ffi::OsString], command: &[String]) -> Option<usize> {
    if !matches!(command.first().map(String::as_str), Some("drain" | "sidecar" | "explain")) {
        return None;
    }
    let at = args.len().checked_sub(command.len())?;
    (at >= 1 && args[at - 1] != "--").then_some(at)
}

/// An environment variable set to the empty string counts as unset: Helm
/// and other templates render a missing value as `NAME=""`, which would
/// otherwise, e.g., turn `LASTCALL_DRAIN=` into "no strategy". Removed
/// before clap reads the environment; at that point lastcall has no other
/// thread, and the app is not started yet (it does not see them either).
///
/// Except the sidecar's guards, which fail closed: an empty
/// `LASTCALL_DRAIN_TOKEN` or `LASTCALL_DRAIN_FROM` is an error (config.rs),
/// never an open `/drain`.
const FAIL_CLOSED: [&str; 2] = ["LASTCALL_DRAIN_TOKEN", "LASTCALL_DRAIN_FROM"];

fn drop_empty_env() {
    let empty: Vec<std::ffi::OsString> = std::env::vars_os()
        .filter(|(k, v)| v.is_empty() && k.to_string_lossy().starts_with("LASTCALL_") && !FAIL_CLOSED.contains(&&*k.to_string_lossy()))
        .map(|(k, _)| k)
        .collect();
    for key in empty {
        std::env::remove_var(key);
    }
}

/// `0.1.0 (commit <git commit>)`: the package version and the commit it was
/// built from (build.rs).
const VERSION: &str = env!("LASTCALL_VERSION");

/// A PID 1 for containers that waits until the pod's endpoint is gone
/// before it stops the app.
#[derive(Debug, Parser)]
#[command(
    name = "lastcall",
    version = VERSION,
    about,
    override_usage = "lastcall [OPTIONS] -- CMD [ARGS]...\n       lastcall drain [OPTIONS]\n       lastcall sidecar [OPTIONS] [-- CMD [ARGS]...]\n       lastcall explain [OPTIONS]",
    after_help = "Modes: `lastcall drain --help` (preStop hook), `lastcall sidecar --help` (beside the app), \
`lastcall explain --help` (check the settings and the cluster).\n\
Exit status: the child's; 128+N if it died of signal N; 2 bad usage; \
126 command not executable; 127 command not found; 125 lastcall failed before the child ran; 78 --strict check failed."
)]
struct InitCli {
    #[command(flatten)]
    init: InitArgs,

    #[command(flatten)]
    common: CommonArgs,

    /// The program to run and its arguments (put `--` before it).
    #[arg(trailing_var_arg = true, value_name = "CMD")]
    command: Vec<String>,
}

/// preStop hook: drain now (through a lastcall PID 1 when one runs here), then exit 0.
#[derive(Debug, Parser)]
#[command(name = "lastcall drain", bin_name = "lastcall drain", version = VERSION)]
struct DrainCli {
    #[command(flatten)]
    common: CommonArgs,
}

/// Dry run: show the settings and where each came from, the deadlines they give, and (with the k8s
/// strategy) what the API server says about this pod; nothing is drained or stopped.
#[derive(Debug, Parser)]
#[command(
    name = "lastcall explain",
    bin_name = "lastcall explain",
    version,
    after_help = "Exit status: 0 when everything the configured drain needs works (warnings may be listed); \
78 with the list of problems otherwise; 2 bad usage."
)]
struct ExplainCli {
    /// Output format: text for people, json for scripts.
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    format: String,
    #[command(flatten)]
    common: CommonArgs,
}

/// Run beside the app: serve GET /drain for preStop httpGet, optionally wrap a helper process.
#[derive(Debug, Parser)]
#[command(
    name = "lastcall sidecar",
    bin_name = "lastcall sidecar",
    version = VERSION,
    override_usage = "lastcall sidecar [OPTIONS] [-- CMD [ARGS]...]"
)]
struct SidecarCli {
    #[command(flatten)]
    init: InitArgs,
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    sidecar: SidecarArgs,
    /// Helper program to supervise (optional).
    #[arg(trailing_var_arg = true, value_name = "CMD")]
    command: Vec<String>,
}

/// Options of a lastcall that supervises a child (entrypoint and sidecar).
#[derive(Debug, Args, Default)]
pub struct InitArgs {
    /// Signal the child's whole process group instead of the child alone.
    #[arg(short = 'g', long, env = "LASTCALL_PROCESS_GROUP")]
    pub process_group: bool,

    /// Rewrite a signal before forwarding it, FROM:TO (e.g. TERM:QUIT); TO 0 drops it. Repeatable.
    #[arg(short = 'r', long = "rewrite", value_name = "FROM:TO", env = "LASTCALL_REWRITE", value_delimiter = ',')]
    pub rewrite: Vec<String>,

    /// Map this child exit code to 0 (e.g. 143). Repeatable.
    #[arg(short = 'e', long = "remap-exit", value_name = "CODE", env = "LASTCALL_REMAP_EXIT", value_delimiter = ',')]
    pub remap_exit: Vec<String>,

    /// Signal sent to lastcall when its parent dies (PR_SET_PDEATHSIG), for use outside containers.
    #[arg(short = 'p', long, value_name = "SIGNAL", env = "LASTCALL_PDEATHSIG")]
    pub pdeathsig: Option<String>,

    /// After the main child exits, how long leftover processes get between the stop signal and SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "2s", env = "LASTCALL_LEFTOVER_TIMEOUT")]
    pub leftover_timeout: String,

    /// After the main child exits, wait for every other descendant to exit on its own
    /// (bounded by the grace deadline once shutdown has begun).
    #[arg(long, env = "LASTCALL_WAIT_DESCENDANTS")]
    pub wait_descendants: bool,
}

/// Options shared by every mode: the shutdown sequence and the drain strategies.
#[derive(Debug, Args, Default)]
pub struct CommonArgs {
    /// The signal that starts the shutdown sequence (match the image's STOPSIGNAL).
    #[arg(short = 's', long, value_name = "SIGNAL", default_value = "TERM", env = "LASTCALL_STOP_SIGNAL")]
    pub stop_signal: String,

    /// Unix socket on which `lastcall drain` reaches the lastcall PID 1; "off" disables it.
    #[arg(long, value_name = "PATH", default_value = "/run/lastcall.sock", env = "LASTCALL_CONTROL_SOCKET")]
    pub control_socket: String,

    /// File for the shutdown report that `kubectl describe pod` shows (terminationMessagePath); "off" disables.
    #[arg(long, value_name = "PATH", default_value = "/dev/termination-log", env = "LASTCALL_TERMINATION_LOG")]
    pub termination_log: String,

    /// Drain strategies, run in order: none, delay, k8s, traffic (e.g. "k8s,traffic").
    /// Default: delay when --drain-delay is set, else none.
    #[arg(long, value_name = "STRATEGY", env = "LASTCALL_DRAIN", value_delimiter = ',')]
    pub drain: Vec<String>,

    /// Fixed drain for the delay strategy, and the fallback when another strategy cannot observe
    /// [default: 15s].
    #[arg(long, value_name = "DURATION", env = "LASTCALL_DRAIN_DELAY")]
    pub drain_delay: Option<String>,

    /// Upper bound for the k8s and traffic strategies (the grace deadline bounds them anyway).
    #[arg(long, value_name = "DURATION", env = "LASTCALL_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<String>,

    /// Time between the stop signal and the kubelet's SIGKILL (terminationGracePeriodSeconds).
    #[arg(long, value_name = "DURATION", default_value = "30s", env = "LASTCALL_GRACE_PERIOD")]
    pub grace_period: String,

    /// lastcall sends SIGKILL itself this long before the grace period ends
    /// [default: 2s, or a tenth of a grace period shorter than 20s].
    #[arg(long, value_name = "DURATION", env = "LASTCALL_KILL_MARGIN")]
    pub kill_margin: Option<String>,

    /// The least time the app gets between the forwarded stop signal and SIGKILL; the drain is cut short to keep it
    /// [default: 5s, or 30% of a grace period shorter than 16.7s].
    #[arg(long, value_name = "DURATION", env = "LASTCALL_STOP_BUDGET")]
    pub stop_budget: Option<String>,

    /// k8s strategy: wait this long after the endpoint is gone, for consumers that lag the API.
    #[arg(long, value_name = "DURATION", default_value = "2s", env = "LASTCALL_PROPAGATION_DELAY")]
    pub propagation_delay: String,

    #[command(flatten)]
    pub k8s: K8sArgs,

    #[command(flatten)]
    pub traffic: TrafficArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Kubernetes strategy")]
pub struct K8sArgs {
    /// API server URL [default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT].
    #[arg(long, value_name = "URL", env = "LASTCALL_K8S_API")]
    pub k8s_api: Option<String>,

    /// Bearer token file, re-read for every request.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token",
        env = "LASTCALL_K8S_TOKEN_FILE"
    )]
    pub k8s_token_file: String,

    /// CA bundle that signs the API server's certificate.
    #[arg(long, value_name = "PATH", default_value = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt", env = "LASTCALL_K8S_CA_FILE")]
    pub k8s_ca_file: String,

    /// Namespace [default: the service account's namespace file].
    #[arg(long, value_name = "NAME", env = "LASTCALL_NAMESPACE")]
    pub namespace: Option<String>,

    /// This pod's name [default: $POD_NAME, else the hostname].
    #[arg(long, value_name = "NAME", env = "LASTCALL_POD_NAME")]
    pub pod_name: Option<String>,

    /// This pod's IPs [default: $POD_IPS / $POD_IP, else the interface addresses].
    #[arg(long = "pod-ip", value_name = "IP", env = "LASTCALL_POD_IP", value_delimiter = ',')]
    pub pod_ip: Vec<String>,

    /// Only consider the EndpointSlices of these Services. Repeatable.
    #[arg(long, value_name = "NAME", env = "LASTCALL_SERVICE", value_delimiter = ',')]
    pub service: Vec<String>,

    /// Poll interval when watching is not possible.
    #[arg(long, value_name = "DURATION", default_value = "1s", env = "LASTCALL_POLL_INTERVAL")]
    pub poll_interval: String,

    /// Exit with status 78 at startup when the Kubernetes API cannot be used, instead of warning.
    #[arg(long, env = "LASTCALL_STRICT")]
    pub strict: bool,

    /// Post Kubernetes Events on the pod: how the drain ended, a fallback, a SIGKILL (needs create on
    /// events.events.k8s.io).
    #[arg(long, env = "LASTCALL_EVENTS")]
    pub events: bool,
}

#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Traffic strategy")]
pub struct TrafficArgs {
    /// The drain ends after this long without a new connection, inbound byte or close
    /// [default: auto, from the pod's own traffic: 1s to 4s].
    #[arg(long, value_name = "DURATION", env = "LASTCALL_QUIET_PERIOD")]
    pub quiet_period: Option<String>,

    /// Watch these local TCP ports [default: the child's listening sockets]. Repeatable.
    #[arg(long = "port", value_name = "PORT", env = "LASTCALL_PORT", value_delimiter = ',')]
    pub port: Vec<u16>,

    /// After the drain, close the app's idle keep-alive connections on these ports (HTTP/1.1 only), so
    /// that pooled clients reconnect to another pod. Repeatable.
    #[arg(long = "close-idle", value_name = "PORT", env = "LASTCALL_CLOSE_IDLE", value_delimiter = ',')]
    pub close_idle: Vec<u16>,
}

#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Sidecar")]
pub struct SidecarArgs {
    /// Address for the HTTP endpoints GET /drain and GET /healthz.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9099", env = "LASTCALL_LISTEN")]
    pub listen: String,

    /// Keep the wrapped helper running until these localhost ports stop accepting connections. Repeatable.
    #[arg(long, value_name = "PORT", env = "LASTCALL_WAIT_PORT", value_delimiter = ',')]
    pub wait_port: Vec<u16>,

    /// GET /drain requires `Authorization: Bearer TOKEN` (preStop.httpGet.httpHeaders); at least 16
    /// characters. Prefer the env or --drain-token-file: a flag shows in ps.
    #[arg(long, value_name = "TOKEN", env = "LASTCALL_DRAIN_TOKEN", hide_env_values = true)]
    pub drain_token: Option<String>,

    /// Read the --drain-token from this file (e.g. a mounted Secret); one trailing newline is ignored.
    #[arg(long, value_name = "PATH", env = "LASTCALL_DRAIN_TOKEN_FILE")]
    pub drain_token_file: Option<String>,

    /// GET /drain only from these source networks (e.g. 127.0.0.1/32,$(HOST_IP)/32); /healthz stays
    /// open. Repeatable.
    #[arg(long, value_name = "CIDR", env = "LASTCALL_DRAIN_FROM", value_delimiter = ',')]
    pub drain_from: Vec<String>,
}

#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// More log output (-v debug, -vv trace).
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Less log output (-q warnings only, -qq errors only).
    #[arg(short = 'q', long = "quiet", action = clap::ArgAction::Count)]
    pub quiet: u8,

    /// Log level: off, error, warn, info, debug or trace [default: info]. -v and -q win over it.
    #[arg(long, value_name = "LEVEL", env = "LASTCALL_LOG")]
    pub log_level: Option<String>,

    /// Log format on stderr.
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"], env = "LASTCALL_LOG_FORMAT")]
    pub log_format: String,
}
