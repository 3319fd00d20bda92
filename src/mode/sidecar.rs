//! `lastcall sidecar`: being written; see issue 4.

use crate::config::{InitConfig, ShutdownConfig, SidecarConfig};
use crate::Failure;

pub fn run(_sidecar: &SidecarConfig, _init: &InitConfig, _shutdown: &ShutdownConfig) -> Result<i32, Failure> {
    Err(Failure::Setup("sidecar mode is not built yet".into()))
}
