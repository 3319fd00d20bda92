//! RFC 3339 timestamps as the API server writes them (`metav1.Time`:
//! `2026-11-25T14:03:11Z`; `RFC3339Nano` in annotations:
//! `2026-11-25T14:03:11.5Z`), and their conversion to a monotonic `Instant`.
//!
//! A tiny parser instead of a date crate: the format is fixed (RFC 3339
//! section 5.6, `date-time`), and only the moment matters, not calendars.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` into a `SystemTime`.
/// `t`/`z` may be lowercase (RFC 3339 allows it). Leap second 60 is taken
/// as 59.999…; years before 1970 are refused (no such deadline exists).
pub fn parse(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        let part = s.get(from..to)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos = 0u32;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        for (i, c) in frac.bytes().take(digits).enumerate() {
            if i < 9 {
                nanos += u32::from(c - b'0') * 10u32.pow(8 - i as u32);
            }
        }
        rest = &frac[digits..];
    }
    let offset_secs: i64 = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let h = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let m = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 3600 + m * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let (second, nanos) = if second == 60 { (59, 999_999_999) } else { (second, nanos) };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second) - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

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

fn is_leap(y: u32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> Option<(u64, u32)> {
        parse(s).map(|t| {
            let d = t.duration_since(UNIX_EPOCH).unwrap();
            (d.as_secs(), d.subsec_nanos())
        })
    }

    #[test]
    fn valid() {
        let cases = [
            ("1970-01-01T00:00:00Z", (0, 0)),
            ("2026-11-25T14:03:11Z", (1_795_615_391, 0)),
            ("2026-11-25T14:03:11.5Z", (1_795_615_391, 500_000_000)),
            ("2026-11-25T14:03:11.123456789Z", (1_795_615_391, 123_456_789)),
            ("2026-11-25T14:03:11.1234567891Z", (1_795_615_391, 123_456_789)), // extra digits ignored
            ("2026-11-25T15:03:11+01:00", (1_795_615_391, 0)),
            ("2026-11-25T13:33:11-00:30", (1_795_615_391, 0)),
            ("2026-11-25t14:03:11z", (1_795_615_391, 0)),
            ("2000-02-29T00:00:00Z", (951_782_400, 0)),
            ("2024-12-31T23:59:60Z", (1_735_689_599, 999_999_999)),
            ("2038-01-19T03:14:08Z", (2_147_483_648, 0)),
        ];
        for (s, want) in cases {
            assert_eq!(secs(s), Some(want), "{s}");
        }
    }

    #[test]
    fn invalid() {
        for s in [
            "",
            "2026-11-25",
            "2026-11-25T14:03:11",
            "2026-11-25T14:03:11ZZ",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-00-10T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:60:00Z",
            "2026-01-01T00:00:61Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+1:00",
            "2026-01-01T00:00:00+24:00",
            "+026-01-01T00:00:00Z",
            "2026-1-01T00:00:00Z ",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00+00:01",
            "２026-01-01T00:00:00Z",
            "2026-01-01T00:00:00+0a:00",
        ] {
            assert_eq!(parse(s), None, "{s}");
        }
    }

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

    #[test]
    fn matches_the_system_clock_format() {
        // Round trip through the current time, formatted the way the API does.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let days = now / 86_400;
        let rem = now % 86_400;
        // civil_from_days, to build the string independently of `parse`.
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        let s = format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60);
        assert_eq!(secs(&s), Some((now, 0)), "{s}");
    }
}
