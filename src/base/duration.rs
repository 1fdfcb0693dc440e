//! Durations (`90s`, `15m`, `1h30m`) and UTC wall-clock formatting, without a date crate.

/// The longest duration accepted anywhere: a year. Keeps deadline arithmetic far from overflow.
pub const MAX_SECS: u64 = 366 * 86_400;

/// Seconds to one decimal, `0.4`, `12.0`: what `{:.1}` of `as_secs_f64` would print, rounded
/// half up, without the float formatter (a few kB of a static binary).
pub fn tenths(d: std::time::Duration) -> String {
    let t = (d.as_millis() + 50) / 100;
    format!("{}.{}", t / 10, t % 10)
}

/// Parses decimal seconds (`0.3`, `2`, `1.25`) into milliseconds, at most three decimals.
/// Written out rather than through `f64`: the float parser is 14 kB of a static binary.
pub fn parse_decimal_millis(text: &str) -> Result<u64, String> {
    let bad = || format!("'{text}' is not a number of seconds (e.g. 0.3 or 2)");
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
        return Err(bad());
    }
    if frac.len() > 3 {
        return Err(format!("'{text}': at most three decimals (milliseconds)"));
    }
    let secs: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac_ms = format!("{frac:0<3}").parse::<u64>().map_err(|_| bad())?;
    secs.checked_mul(1000)
        .and_then(|ms| ms.checked_add(frac_ms))
        .ok_or_else(bad)
}

/// Parses `90s`, `15m`, `2h`, `1d`, `1h30m`, `0`. A bare number is an error unless
/// `bare_unit` (seconds per unit) is given, as in chat where a bare number means minutes.
pub fn parse(text: &str, bare_unit: Option<u64>) -> Result<u64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t == "0" {
        return Ok(0);
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        let Some(unit) = bare_unit else {
            return Err(format!("duration '{t}' needs a unit, e.g. {t}m or {t}s"));
        };
        let n: u64 = t
            .parse()
            .map_err(|_| format!("duration '{t}' is too long"))?;
        return n
            .checked_mul(unit)
            .filter(|s| *s <= MAX_SECS)
            .ok_or_else(|| format!("duration '{t}' is too long (at most 366d)"));
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    let mut last_rank = usize::MAX;
    for ch in t.chars() {
        if let Some(d) = ch.to_digit(10) {
            let n = number.unwrap_or(0);
            number = Some(
                n.checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d)))
                    .ok_or_else(|| format!("duration '{t}' is too long (at most 366d)"))?,
            );
            continue;
        }
        let (rank, unit) = match ch.to_ascii_lowercase() {
            'd' => (3, 86_400),
            'h' => (2, 3_600),
            'm' => (1, 60),
            's' => (0, 1),
            _ => {
                return Err(format!(
                    "'{t}' is not a duration (use e.g. 90s, 15m, 2h, 1d, 1h30m)"
                ));
            }
        };
        let Some(n) = number.take() else {
            return Err(format!(
                "'{t}' is not a duration (a number must come before '{ch}')"
            ));
        };
        if rank >= last_rank {
            return Err(format!(
                "'{t}' is not a duration (units must go from days down to seconds)"
            ));
        }
        last_rank = rank;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| format!("duration '{t}' is too long (at most 366d)"))?;
    }
    if number.is_some() {
        return Err(format!("duration '{t}' ends in a number without a unit"));
    }
    if total > MAX_SECS {
        return Err(format!("duration '{t}' is too long (at most 366d)"));
    }
    Ok(total)
}

/// The config-file form of a duration: `15m`, `1h30m`, `0`.
pub fn to_config(secs: u64) -> String {
    if secs == 0 {
        return "0".into();
    }
    let mut out = String::new();
    let mut rest = secs;
    for (unit, name) in [(86_400, 'd'), (3_600, 'h'), (60, 'm'), (1, 's')] {
        if rest >= unit {
            out.push_str(&format!("{}{name}", rest / unit));
            rest %= unit;
        }
    }
    out
}

/// A span for people: `45 s`, `15 min`, `1 h 30 min`, `2 d 3 h`. Rounds to the two largest units.
pub fn human(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    let parts: Vec<String> = [(d, "d"), (h, "h"), (m, "min"), (s, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .take(2)
        .map(|(n, u)| format!("{n} {u}"))
        .collect();
    if parts.is_empty() {
        "0 s".into()
    } else {
        parts.join(" ")
    }
}

/// The board's clock against Telegram's, from their difference (board minus Telegram, in
/// seconds): `3 s ahead`, `2 h behind`, `in step` (within a second, the `Date` header's
/// resolution).
pub fn skew_text(skew: i64) -> String {
    // Two clocks read a second apart at whole seconds: beyond two minutes, to the minute.
    let size = match skew.unsigned_abs() {
        s if s < 120 => s,
        s => (s + 30) / 60 * 60,
    };
    match skew {
        -1..=1 => "in step with Telegram's clock".into(),
        s if s > 0 => format!("{} ahead of Telegram's clock", human(size)),
        _ => format!("{} behind Telegram's clock", human(size)),
    }
}

/// (year, month, day, hour, minute, second) of a Unix time, in UTC.
pub fn civil(unix: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (unix / 86_400) as i64;
    let rem = unix % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3_600) as u32,
        (rem % 3_600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// Unix time of a UTC civil date (inverse of [`civil`] for dates after 1970).
pub fn from_civil(y: i64, m: u32, d: u32, hh: u32, mm: u32, ss: u32) -> Option<u64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + i64::from(hh) * 3_600 + i64::from(mm) * 60 + i64::from(ss);
    u64::try_from(secs).ok()
}

/// `2026-11-26 14:35:07 UTC`
pub fn utc_full(unix: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// `14:35 UTC` when `unix` is on the same UTC day as `now`, else `2026-11-27 14:35 UTC`.
pub fn utc_short(unix: u64, now: u64) -> String {
    let (y, mo, d, h, mi, _) = civil(unix);
    if unix / 86_400 == now / 86_400 {
        format!("{h:02}:{mi:02} UTC")
    } else {
        format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC")
    }
}

/// Parses an HTTP `Date` header (`Thu, 26 Nov 2026 03:11:36 GMT`).
pub fn parse_http_date(text: &str) -> Option<u64> {
    let mut it = text.split_whitespace();
    let _weekday = it.next()?;
    let d: u32 = it.next()?.parse().ok()?;
    let mon = it.next()?;
    let y: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':');
    let hh = hms.next()?.parse().ok()?;
    let mm = hms.next()?.parse().ok()?;
    let ss = hms.next()?.parse().ok()?;
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| x.eq_ignore_ascii_case(mon))? as u32 + 1;
    from_civil(y, m, d, hh, mm, ss)
}

/// How long an opening should last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// The default, `TGKNOCK_OPEN_FOR`.
    Default,
    /// This many seconds.
    Secs(u64),
    /// `0`: until closed.
    UntilClosed,
}

#[cfg(test)]
mod tests {
    #[test]
    fn tenths_round_like_one_decimal() {
        use std::time::Duration;
        for (ms, text) in [
            (0, "0.0"),
            (49, "0.0"),
            (50, "0.1"),
            (400, "0.4"),
            (12_000, "12.0"),
            (59_960, "60.0"),
            (1_234, "1.2"),
        ] {
            assert_eq!(super::tenths(Duration::from_millis(ms)), text, "{ms} ms");
        }
    }

    #[test]
    fn decimal_seconds_read_as_milliseconds() {
        use super::parse_decimal_millis as ms;
        assert_eq!(ms("0.3"), Ok(300));
        assert_eq!(ms("2"), Ok(2000));
        assert_eq!(ms("1.25"), Ok(1250));
        assert_eq!(ms(".5"), Ok(500));
        assert_eq!(ms("3."), Ok(3000));
        assert_eq!(ms("0"), Ok(0));
        for bad in [
            "", ".", "-1", "nan", "inf", "1e3", "1.2.3", " 1", "0x10", "1,5",
        ] {
            assert!(ms(bad).is_err(), "{bad:?}");
        }
        assert!(ms("0.0001").unwrap_err().contains("three decimals"));
        assert!(ms("99999999999999999999").is_err());
        assert!(
            ms("18446744073709552").is_err(),
            "overflows when made milliseconds"
        );
    }

    use super::*;

    #[test]
    fn skews_read_plainly() {
        assert_eq!(skew_text(0), "in step with Telegram's clock");
        assert_eq!(skew_text(-1), "in step with Telegram's clock");
        assert_eq!(skew_text(5), "5 s ahead of Telegram's clock");
        assert_eq!(skew_text(-10_799), "3 h behind Telegram's clock");
        assert_eq!(skew_text(10_801), "3 h ahead of Telegram's clock");
        assert_eq!(skew_text(93_601), "1 d 2 h ahead of Telegram's clock");
    }

    #[test]
    fn parses_every_contract_form() {
        assert_eq!(parse("90s", None), Ok(90));
        assert_eq!(parse("15m", None), Ok(900));
        assert_eq!(parse("2h", None), Ok(7200));
        assert_eq!(parse("1d", None), Ok(86_400));
        assert_eq!(parse("1h30m", None), Ok(5400));
        assert_eq!(parse("1d2h3m4s", None), Ok(93_784));
        assert_eq!(parse("0", None), Ok(0));
        assert_eq!(parse("15M", None), Ok(900));
    }

    #[test]
    fn bare_numbers_need_a_unit_unless_given() {
        assert!(parse("15", None).unwrap_err().contains("needs a unit"));
        assert_eq!(parse("15", Some(60)), Ok(900));
        assert_eq!(parse("0", Some(60)), Ok(0));
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "",
            "m",
            "1x",
            "-5m",
            "1.5h",
            "30m1h",
            "1h1h",
            "5m3",
            "99999999999999999999999s",
            "400d",
            "18446744073709551615",
            "1h 30m",
            " ",
            "+5m",
            "5mm",
        ] {
            assert!(parse(bad, Some(60)).is_err(), "{bad:?} should be rejected");
        }
        assert!(
            parse("527041", Some(60)).is_err(),
            "a year and a bit in minutes"
        );
    }

    #[test]
    fn formats() {
        assert_eq!(to_config(5400), "1h30m");
        assert_eq!(to_config(0), "0");
        assert_eq!(to_config(86_401), "1d1s");
        assert_eq!(human(900), "15 min");
        assert_eq!(human(5400), "1 h 30 min");
        assert_eq!(human(45), "45 s");
        assert_eq!(human(93_784), "1 d 2 h");
        assert_eq!(human(0), "0 s");
    }

    #[test]
    fn civil_round_trip() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(1_795_662_696), (2026, 11, 26, 3, 11, 36));
        assert_eq!(from_civil(2026, 11, 26, 3, 11, 36), Some(1_795_662_696));
        assert_eq!(
            from_civil(2024, 2, 29, 0, 0, 0).map(civil),
            Some((2024, 2, 29, 0, 0, 0))
        );
        for t in (0..4_000_000_000u64).step_by(86_399 * 37) {
            let (y, m, d, h, mi, s) = civil(t);
            assert_eq!(from_civil(y, m, d, h, mi, s), Some(t));
        }
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Thu, 26 Nov 2026 03:11:36 GMT"),
            Some(1_795_662_696)
        );
        assert_eq!(parse_http_date("garbage"), None);
        assert_eq!(parse_http_date("Thu, 26 Foo 2026 03:11:36 GMT"), None);
    }

    #[test]
    fn utc_formats() {
        let t = 1_795_662_696;
        assert_eq!(utc_full(t), "2026-11-26 03:11:36 UTC");
        assert_eq!(utc_short(t, t), "03:11 UTC");
        assert_eq!(utc_short(t + 86_400, t), "2026-11-27 03:11 UTC");
    }
}
