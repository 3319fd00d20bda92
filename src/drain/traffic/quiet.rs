//! The default quiet period, from the pod's own history (pure arithmetic;
//! docs/traffic.md has the same with numbers).
//!
//! The quiet period must be longer than the gaps this pod sees while it is
//! still in rotation, or the drain ends between two requests. The history
//! is what the pod received between lastcall's start and the moment the
//! strategy starts (`arrivals` over `span`, read from the kernel at those
//! two instants: nothing runs in between). With arrivals at rate λ
//! (Poisson), a gap longer than `q` has probability e^(−λq), and a drain
//! that watches for up to B seconds sees about λB gaps. The quiet period is
//! the gap that any of them exceeds with probability ε = 1 %:
//!
//! ```text
//! λB · e^(−λq) = ε   ⇒   q = ln(λB / ε) / λ
//! ```
//!
//! i.e. the 1 − ε/(λB) quantile of one gap. λ is not the mean rate but its
//! 95 % lower confidence bound, so a young pod with a short history (few
//! arrivals) gets a longer quiet period rather than a shorter one. The
//! result is clamped to [1 s, 4 s] and to B:
//! * 1 s: below it, the end would rest on a few sample intervals;
//! * 4 s: kubelet probes count as traffic (lastcall cannot tell them from
//!   requests), and a readiness plus a liveness probe at the default 10 s
//!   period leave a gap of at least 5 s in every period; a quiet period
//!   longer than the largest gap between probes would hold the drain to
//!   the deadline. Pods below ~2 requests/s get these 4 s; `--quiet-period`
//!   or `k8s,traffic` is the way to wait longer;
//! * B: a quiet period longer than the drain budget could never be seen.

use std::time::Duration;

pub const FLOOR: Duration = Duration::from_secs(1);
pub const CAP: Duration = Duration::from_secs(4);
/// The chance that a normal gap ends the drain (Poisson arrivals).
const EPSILON: f64 = 0.01;
/// One-sided 95 % normal quantile, for the rate's lower bound.
const Z95: f64 = 1.645;

/// What the pod received before the strategy started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct History {
    /// Arrivals: connections accepted, and requests on the connections
    /// still open (see `mod.rs`, `history`).
    pub arrivals: u64,
    pub span: Duration,
    /// Where the span starts: "since lastcall started", ...
    pub since: &'static str,
}

/// The quiet period and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub quiet: Duration,
    /// "--quiet-period" or "adaptive".
    pub source: &'static str,
    /// Arrivals per second: the mean and its 95 % lower bound.
    pub rate: Option<(f64, f64)>,
    pub why: String,
}

/// The 95 % lower confidence bound of a Poisson mean, given `k` events:
/// χ²(0.05; 2k)/2, by the Wilson–Hilferty approximation (within 3 % of
/// the exact value for k ≥ 5, below it for fewer: the safe side).
fn lower_bound(k: u64) -> f64 {
    if k == 0 {
        return 0.0;
    }
    let k = k as f64;
    let t = 1.0 - 1.0 / (9.0 * k) - Z95 / (3.0 * k.sqrt());
    if t <= 0.0 {
        0.0
    } else {
        k * t * t * t
    }
}

/// `ln(λB/ε)/λ` in seconds; infinite where λB/ε ≤ e (so few arrivals in
/// the whole budget that no gap tells anything; the formula's maximum).
fn gap(rate: f64, budget_s: f64) -> f64 {
    let x = rate * budget_s / EPSILON;
    if rate <= 0.0 || x <= std::f64::consts::E || !x.is_finite() {
        f64::INFINITY
    } else {
        ln(x) / rate
    }
}

/// The natural logarithm of a positive, finite, normal `x`, to ~1e-15:
/// x = m·2^e with m in [√½, √2), ln x = e·ln 2 + 2·atanh(s) where
/// s = (m−1)/(m+1), |s| < 0.172, and atanh(s) = s + s³/3 + s⁵/5 + ... (13
/// terms: s²⁷/27 < 1e-21). `f64::ln` would link glibc's `log` and its 4 KB
/// table into the static binary, for one call per drain.
fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let (s2, mut term, mut sum) = (s * s, s, 0.0);
    for k in 0..13 {
        sum += term / f64::from(2 * k + 1);
        term *= s2;
    }
    e as f64 * std::f64::consts::LN_2 + 2.0 * sum
}

/// The quiet period: `fixed` when `--quiet-period` was given, else from
/// the history. `budget` is how long the strategy may watch.
pub fn choose(fixed: Option<Duration>, history: Option<History>, budget: Duration) -> Choice {
    if let Some(q) = fixed {
        return Choice { quiet: q, source: "--quiet-period", rate: None, why: "given".into() };
    }
    let bounded = |q: Duration| q.clamp(FLOOR, CAP).min(budget.max(Duration::from_millis(1)));
    let Some(h) = history.filter(|h| !h.span.is_zero()) else {
        return Choice {
            quiet: bounded(CAP),
            source: "adaptive",
            rate: None,
            why: format!("no history of this pod's traffic: {}s", CAP.as_secs()),
        };
    };
    let span = h.span.as_secs_f64();
    let (rate, low) = (h.arrivals as f64 / span, lower_bound(h.arrivals) / span);
    let g = gap(low, budget.as_secs_f64());
    let quiet = if g.is_finite() { bounded(Duration::from_secs_f64(g)) } else { bounded(CAP) };
    let why = format!(
        "{} arrivals in {:.1}s {}: {rate:.2}/s (95% lower bound {low:.2}/s); a gap of {} happens with 1% chance in a {:.1}s drain; \
         clamped to {}s..{}s and the budget",
        h.arrivals,
        span,
        h.since,
        if g.is_finite() { format!("{g:.2}s") } else { "any length".into() },
        budget.as_secs_f64(),
        FLOOR.as_secs(),
        CAP.as_secs(),
    );
    Choice { quiet, source: "adaptive", rate: Some((rate, low)), why }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    fn adaptive(arrivals: u64, span: f64, budget: f64) -> Duration {
        choose(None, Some(History { arrivals, span: s(span), since: "test" }), s(budget)).quiet
    }

    #[test]
    fn lower_bound_is_close_to_the_exact_chi_square() {
        // Exact 5 % lower limits of a Poisson mean: chi2(0.05; 2k) / 2.
        for (k, exact) in [(5, 1.970), (10, 5.425), (100, 84.14), (1000, 948.6)] {
            let lb = lower_bound(k);
            assert!(lb <= exact * 1.001 && lb >= exact * 0.97, "k={k}: {lb} vs {exact}");
        }
        // Below 5 events the approximation is lower still: the safe side.
        assert!(lower_bound(1) < 0.0513 && lower_bound(1) > 0.03);
        assert_eq!(lower_bound(0), 0.0);
    }

    #[test]
    fn natural_logarithm() {
        for x in [std::f64::consts::E, 1.0, 2.0, 3.0, 10.0, 11_500.0, 1.5e-3, 7.7e9, 1.0e300, 0.999_999, 1.4] {
            assert!((ln(x) - x.ln()).abs() <= 1e-13 * x.ln().abs().max(1.0), "ln({x}) = {} vs {}", ln(x), x.ln());
        }
    }

    #[test]
    fn the_formula() {
        // 5 arrivals/s, 23 s budget: ln(5*23/0.01)/5 = ln(11500)/5.
        assert!((gap(5.0, 23.0) - 11500f64.ln() / 5.0).abs() < 1e-9);
        assert!(gap(0.0, 23.0).is_infinite());
        assert!(gap(0.001, 23.0).is_infinite());
    }

    #[test]
    fn table() {
        // A long history (one hour) at the issue's rates, default budget 23 s.
        let hour = 3600.0;
        // 100 req/s over 3 pods: 33/s per pod -> 0.34 s -> the 1 s floor.
        assert_eq!(adaptive((33.3 * hour) as u64, hour, 23.0), FLOOR);
        // 15 req/s over 3 pods: 5/s -> ln(11500)/5 = 1.87 s.
        let q = adaptive((5.0 * hour) as u64, hour, 23.0);
        assert!(q > s(1.80) && q < s(1.95), "{q:?}");
        // 2 req/s over 3 pods: 0.67/s -> 11 s -> the 4 s cap.
        assert_eq!(adaptive((0.667 * hour) as u64, hour, 23.0), CAP);
        // A young pod: 10 arrivals in 2 s (5/s, lower bound 2.7/s) waits longer than an old one.
        let young = adaptive(10, 2.0, 23.0);
        assert!(young > s(2.5) && young <= CAP, "{young:?}");
    }

    #[test]
    fn bounds() {
        assert_eq!(adaptive(0, 100.0, 23.0), CAP);
        assert_eq!(choose(None, None, s(23.0)).quiet, CAP);
        // Never longer than the budget, even below the floor.
        assert_eq!(adaptive(0, 100.0, 2.5), s(2.5));
        assert_eq!(adaptive(1_000_000, 10.0, 0.5), s(0.5));
        // A fixed value is kept as given.
        let c = choose(Some(Duration::from_millis(300)), None, s(23.0));
        assert_eq!((c.quiet, c.source), (Duration::from_millis(300), "--quiet-period"));
    }
}
