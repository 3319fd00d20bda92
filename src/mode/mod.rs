//! The ways to run lastcall besides the PID 1 entrypoint (`supervise.rs`).

pub mod drain;
pub mod explain;

#[cfg(feature = "sidecar")]
pub mod sidecar;

/// A lastcall built without the `sidecar` feature still parses `lastcall
/// sidecar` (the CLI is the same for every build) and refuses it here.
#[cfg(not(feature = "sidecar"))]
pub mod sidecar {
    use crate::config::{InitConfig, ShutdownConfig, SidecarConfig};

    pub fn run(_: &SidecarConfig, _: &InitConfig, _: &ShutdownConfig) -> Result<i32, crate::exit_status::Failure> {
        tracing::error!("sidecar mode is not built into this lastcall (rebuild with the cargo feature \"sidecar\")");
        Ok(crate::exit_status::EXIT_USAGE)
    }
}
