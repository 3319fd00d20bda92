//! RFC 3339 timestamps (section 5.6, `date-time`): parsing what the
//! Kubernetes API writes (`metav1.Time`: `2026-11-25T14:03:11Z`;
//! `RFC3339Nano`: `2026-11-25T14:03:11.5Z`) and writing lastcall's own (log
//! lines, the termination report: UTC, milliseconds).
//!
//! Tiny code instead of a date crate: the format is fixed, and only the
//! moment matters, not calendars. Both directions of the calendar
//! arithmetic (Howard Hinnant's `days_from_civil` and `civil_from_days`)
//! live here, once. std and nothing else, so a fuzz target can include the
//! file.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[cfg_attr(not(feature = "k8s"), allow(dead_code))] // the k8s strategy reads timestamps
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

/// `2026-11-25T14:03:11.123Z` (UTC), from days-since-epoch to the civil
/// date (Howard Hinnant's algorithm, proleptic Gregorian calendar).
pub fn format_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, d.subsec_millis())
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

/// (year, month, day) of the day `z` days after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, the inverse of `days_from_civil`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
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
    fn timestamps() {
        let at = |s: u64, ms: u64| format_millis(UNIX_EPOCH + Duration::from_millis(s * 1000 + ms));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_795_618_991, 123), "2026-11-25T15:03:11.123Z");
        assert_eq!(at(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn what_is_written_parses_back() {
        let now = SystemTime::now();
        let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis();
        assert_eq!(parse(&format_millis(now)).map(ms), Some(ms(now)));
    }

    #[test]
    fn calendar_round_trip() {
        for days in (-800_000..800_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m as u32, d as u32), days, "{y}-{m}-{d}");
        }
    }
}
