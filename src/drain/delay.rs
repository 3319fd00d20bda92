//! The fixed delay: the classic `preStop: sleep 15`, counted from the stop
//! signal and never past the drain deadline.

use std::time::Instant;

use super::{Ctx, Outcome};

pub fn wait(ctx: &Ctx) -> Outcome {
    let end = (ctx.started + ctx.cfg.delay).min(ctx.until());
    sleep_until(end);
    Outcome::Done(format!("fixed delay of {}ms", ctx.cfg.delay.as_millis()))
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
