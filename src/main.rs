//! lastcall: a PID 1 for containers that waits until the pod's endpoint is
//! gone before it stops the app. `main` parses, starts logging, and hands
//! the validated config to the mode that was asked for.

mod child;
mod cli;
mod config;
mod control;
mod deadline;
mod drain;
mod exit_status;
mod logging;
mod memory;
mod mode;
mod reaper;
mod shutdown;
mod signals;
mod supervise;

use crate::config::{Config, Mode};

/// Why lastcall could not run the app at all.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Spawn(#[from] child::SpawnError),
    #[error("setup failed: {0}")]
    Setup(String),
    /// `--strict` and a drain strategy cannot work here.
    #[error("{0} (exiting because of --strict)")]
    Preflight(String),
}

impl Failure {
    pub fn exit_code(&self) -> i32 {
        match self {
            Failure::Spawn(e) => e.exit_code(),
            Failure::Setup(_) => 125,
            Failure::Preflight(_) => EXIT_PREFLIGHT,
        }
    }
}

/// Exit status for bad usage (clap's convention).
pub const EXIT_USAGE: i32 = 2;
/// Exit status when `--strict` finds a drain strategy unusable (sysexits' EX_CONFIG).
pub const EXIT_PREFLIGHT: i32 = 78;

fn main() {
    std::process::exit(run());
}

fn run() -> i32 {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_USAGE } else { 0 };
        }
    };
    let cfg = match Config::from_cli(cli) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("lastcall: error: {e}");
            return EXIT_USAGE;
        }
    };
    logging::init(&cfg.log);
    let result = match &cfg.mode {
        Mode::Init(init) => supervise::run(init, &cfg.shutdown),
        Mode::Drain => Ok(mode::drain::run(&cfg.shutdown)),
        Mode::Sidecar(sidecar, init) => mode::sidecar::run(sidecar, init, &cfg.shutdown),
    };
    let code = result.unwrap_or_else(|failure| {
        tracing::error!("{failure}");
        failure.exit_code()
    });
    logging::flush_at_exit();
    code
}
