//! The fixed delay: the classic `preStop: sleep 15`, counted from the stop
//! signal and never past the drain deadline.

use std::time::Instant;

use super::{Ctx, Outcome, Strategy};
use crate::deadline::saturating_add;

/// The strategy (`--drain delay`, or `--drain-delay` alone).
pub struct Delay;

impl Strategy for Delay {
    fn name(&self) -> &'static str {
        crate::config::Strategy::Delay.name()
    }

    fn wait(&mut self, ctx: &Ctx) -> Outcome {
        let full = saturating_add(ctx.started, ctx.cfg.delay);
        let end = full.min(ctx.until());
        sleep_until(end);
        if end < full {
            let waited = end.saturating_duration_since(ctx.started).as_millis();
            return Outcome::Done(format!("fixed delay of {}ms cut to {waited}ms by the drain deadline", ctx.cfg.delay.as_millis()));
        }
        Outcome::Done(format!("fixed delay of {}ms", ctx.cfg.delay.as_millis()))
    }
}

/// Sleep until `t` (std's sleep may return early on EINTR-less platforms;
/// loop to be exact).
pub fn sleep_until(t: Instant) {
    loop {
        let now = Instant::now();
        if now >= t {
            return;
        }
        std::thread::sleep(t - now);
    }
}
