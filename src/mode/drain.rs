//! `lastcall drain`: the preStop exec hook, a replacement for `sleep 15`
//! that needs no shell.
//!
//! With a lastcall PID 1 in the container it asks that one to drain now over
//! the control socket, so the grace deadline counts from the hook's start (as
//! Kubernetes counts it) and the SIGTERM that follows the hook is forwarded
//! at once. Without one, it runs the configured strategies itself.
//! Exit status: 0 when the drain is over (or the app is already gone);
//! 1 when the control socket answered nonsense or broke; 2 when there is
//! nothing it could do (no PID 1 to ask, no strategy configured).

use std::sync::Arc;
use std::time::Instant;

use tracing::{error, info};

use crate::config::ShutdownConfig;
use crate::control::{self, ClientError, Reply};
use crate::drain;

pub fn run(cfg: &ShutdownConfig) -> i32 {
    let start = Instant::now();
    if let Some(path) = cfg.control_socket.as_deref() {
        match control::request_drain(path, cfg.budget.grace) {
            Ok(Reply::Done) => {
                info!(t_ms = start.elapsed().as_millis(), "drain done by the lastcall PID 1");
                return 0;
            }
            Ok(Reply::Exited) => {
                info!("the app has already exited: nothing to drain");
                return 0;
            }
            Err(ClientError::NotListening(_)) => {}
            Err(e) => {
                error!("{e}");
                return 1;
            }
        }
    }
    if cfg.drain.strategies.is_empty() {
        error!(
            "nothing to do: no lastcall PID 1 listens on the control socket and no drain strategy is set (use --drain or --drain-delay)"
        );
        return crate::EXIT_USAGE;
    }
    let plan = cfg.budget.plan(start);
    info!(drain_max_ms = (plan.drain_until - start).as_millis(), "draining (no lastcall PID 1 here)");
    let why = drain::run(&cfg.drain, start, plan.drain_until, Some(cfg.budget), None, Arc::new(drain::NoNotify)).why;
    info!(t_ms = start.elapsed().as_millis(), reason = %why, "drain ended");
    0
}
