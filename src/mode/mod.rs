//! The ways to run lastcall besides the PID 1 entrypoint (`supervise.rs`).

pub mod drain;
pub mod sidecar;
