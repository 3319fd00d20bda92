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
mod report;
mod rfc3339;
mod shutdown;
mod signals;
mod supervise;

use crate::config::{Config, Mode};
use crate::exit_status::EXIT_USAGE;

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
    let program = match cfg.mode {
        Mode::Drain => "lastcall drain",
        Mode::Explain(_) => "lastcall explain",
        _ => "lastcall",
    };
    logging::init(&cfg.log, program);
    let result = match &cfg.mode {
        Mode::Init(init) => supervise::run(init, &cfg.shutdown),
        Mode::Drain => Ok(mode::drain::run(&cfg.shutdown)),
        Mode::Sidecar(sidecar, init) => mode::sidecar::run(sidecar, init, &cfg.shutdown),
        Mode::Explain(explain) => Ok(mode::explain::run(explain, &cfg.shutdown)),
    };
    let code = result.unwrap_or_else(|failure| {
        tracing::error!("{failure}");
        failure.exit_code()
    });
    logging::flush_at_exit();
    code
}
