//! The API server's timestamps as lastcall's deadlines: conversion of a
//! wall-clock time (parsed by `crate::rfc3339`) to a monotonic `Instant`,
//! and the kubelet's SIGKILL time from a pod's deletionTimestamp.

use std::time::{Duration, Instant, SystemTime};

pub use crate::rfc3339::parse;

/// The monotonic instant matching wall-clock `at`: now plus how far `at`
/// lies ahead (an instant in the past maps to now: the deadline is due).
pub fn to_instant(at: SystemTime, now_wall: SystemTime, now: Instant) -> Instant {
    match at.duration_since(now_wall) {
        Ok(ahead) => now.checked_add(ahead).unwrap_or(now),
        Err(_) => now,
    }
}

/// How long after the deletion the kubelet starts stopping the pod (it
/// learns of it by a watch, then its pod worker acts): about this at most,
/// in a healthy node.
pub const KUBELET_LAG: Duration = Duration::from_secs(1);

/// When the kubelet will SIGKILL the pod, as a monotonic instant, from the
/// pod's `deletionTimestamp` `ts` and `deletionGracePeriodSeconds`
/// `grace_s`; `started` is when lastcall's stop signal (or drain request)
/// came, `now_wall`/`now` the same moment on both clocks.
///
/// The kubelet counts the grace period from when it begins to stop the
/// container, right before the stop signal (or the preStop hook): the kill
/// comes `grace_s` after `started`, just as lastcall's own plan counts
/// `--grace-period`. The deletionTimestamp is the delete's time plus the
/// grace period, rounded down to the second (RFC 3339, metav1.Time): the
/// deletion instant lies anywhere in the second it names, and taking the
/// timestamp as is would cut up to a second off every drain. It bounds the
/// kill from above only: the deadline is `started + grace_s`, but never
/// later than the end of that second plus KUBELET_LAG, which matters only
/// when the stop signal came late (say, after another preStop hook).
/// Without `grace_s`, the timestamp itself, the earliest the kill can be.
pub fn kill_deadline(ts: &str, grace_s: Option<i64>, started: Instant, now_wall: SystemTime, now: Instant) -> Option<Instant> {
    let at = parse(ts)?;
    let Some(grace) = grace_s.and_then(|g| u64::try_from(g).ok()) else {
        return Some(to_instant(at, now_wall, now));
    };
    let coarse = if ts.as_bytes().get(19) == Some(&b'.') { Duration::ZERO } else { Duration::from_secs(1) };
    let latest = to_instant(at.checked_add(coarse + KUBELET_LAG)?, now_wall, now);
    Some(started.checked_add(Duration::from_secs(grace)).map_or(latest, |own| own.min(latest)))
}

/// Signed milliseconds from `earlier` to `later` (negative when the clocks
/// disagree), for log lines about the API's timestamps.
pub fn millis_between(earlier: SystemTime, later: SystemTime) -> i64 {
    match later.duration_since(earlier) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn instant_conversion() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(to_instant(wall + Duration::from_secs(5), wall, now), now + Duration::from_secs(5));
        assert_eq!(to_instant(wall - Duration::from_secs(5), wall, now), now);
        assert_eq!(millis_between(wall, wall + Duration::from_millis(1500)), 1500);
        assert_eq!(millis_between(wall, wall - Duration::from_millis(250)), -250);
    }

    #[test]
    fn kill_deadline_counts_the_grace_from_the_stop_signal() {
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1000);
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // deletionTimestamp 1010 s: deleted with a 10 s grace between 1000 s
        // and 1001 s of the wall clock.
        let ts = "1970-01-01T00:16:50Z";
        // An ordinary delete: the stop signal came 300 ms after a delete at
        // 999.9 s. The kill is 10 s after the stop signal, later than the
        // rounded-down timestamp (now + 10 s).
        let started = now - ms(300) + ms(400);
        assert_eq!(kill_deadline(ts, Some(10), started, wall, now), Some(started + s(10)));
        // The stop signal came 3 s late (another preStop hook first): bounded
        // by the timestamp's second plus the kubelet's lag.
        let late = now + s(3);
        assert_eq!(kill_deadline(ts, Some(10), late, wall, now), Some(now + s(12)));
        // A timestamp with a fraction is exact: only the lag is added.
        assert_eq!(kill_deadline("1970-01-01T00:16:50.250Z", Some(10), late, wall, now), Some(now + s(11) + ms(250)));
        // No (or a nonsensical) grace period: the timestamp itself.
        assert_eq!(kill_deadline(ts, None, started, wall, now), Some(now + s(10)));
        assert_eq!(kill_deadline(ts, Some(-1), started, wall, now), Some(now + s(10)));
        // A shorter grace than the plan's: counted from the stop signal.
        assert_eq!(kill_deadline("1970-01-01T00:16:44Z", Some(4), started, wall, now), Some(started + s(4)));
        assert_eq!(kill_deadline("not a time", Some(4), started, wall, now), None);
    }
}
