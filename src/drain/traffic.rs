//! Placeholder until the traffic strategy lands (issue 6).
use super::{Ctx, Outcome};
pub fn wait(_ctx: &Ctx) -> Outcome {
    Outcome::Fallback("the traffic strategy is not implemented yet".into())
}
