//! Placeholder until the Kubernetes strategy lands (issue 3).
use super::{Ctx, Outcome};
use crate::config::DrainConfig;
pub fn wait(_ctx: &Ctx) -> Outcome {
    Outcome::Fallback("the k8s strategy is not implemented yet".into())
}
pub fn preflight(_cfg: &DrainConfig) -> Result<(), String> {
    Ok(())
}
