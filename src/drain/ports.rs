//! Placeholder until the sidecar wait-port strategy lands (issue 4).
use super::{Ctx, Outcome};
pub fn wait(_ctx: &Ctx) -> Outcome {
    Outcome::Fallback("the wait-port strategy is not implemented yet".into())
}
