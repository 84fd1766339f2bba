//! Duration strings: `"500ms"`, `"5s"`, `"30m"`, `"2h"`, `"1h30m"`, `"0s"`.
//!
//! Grammar: one or more `<digits><unit>` parts, units from `h`, `m`, `s`, `ms`, `us`, `ns`, each
//! at most once and largest first. No spaces, signs or fractions: `"1.5s"` is written `"1s500ms"`.

use std::time::Duration;

const UNITS: &[(&str, u128)] = &[
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Parses a duration string.
///
/// # Errors
/// A message (without key or position) saying what is wrong and how to write it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("empty duration; write e.g. \"5s\"".to_owned());
    }
    let mut rest = text;
    let mut total: u128 = 0;
    // Index into UNITS of the last unit seen; the next must be strictly smaller.
    let mut last_unit: Option<usize> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad(text));
        }
        let number: u128 = rest[..digits].parse().map_err(|_| bad(text))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        if unit.is_empty() {
            return Err(if rest.is_empty() && total == 0 {
                format!("duration {text:?} has no unit; write \"{text}s\" for seconds")
            } else {
                bad(text)
            });
        }
        let Some(index) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(format!(
                "unknown unit `{unit}` in duration {text:?}; units are h, m, s, ms, us, ns"
            ));
        };
        if last_unit.is_some_and(|last| index <= last) {
            return Err(format!(
                "units in duration {text:?} must appear once each, largest first (\"1h30m\")"
            ));
        }
        last_unit = Some(index);
        total = number
            .checked_mul(UNITS[index].1)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| format!("duration {text:?} is too large"))?;
        rest = &rest[unit_len..];
    }
    let secs = u64::try_from(total / 1_000_000_000)
        .map_err(|_| format!("duration {text:?} is too large"))?;
    // The remainder is below 1e9 and fits.
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

fn bad(text: &str) -> String {
    format!("invalid duration {text:?}; write e.g. \"500ms\", \"5s\", \"30m\", \"1h30m\"")
}

/// Formats a duration the way [`parse_duration`] reads it: `"0s"`, `"5s"`, `"1h30m"`,
/// `"1s500ms"`. `parse_duration(&format_duration(d)) == Ok(d)` for every `d`.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    let mut rest = d.as_nanos();
    let mut out = String::new();
    for (unit, nanos) in UNITS {
        let n = rest / nanos;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
            rest %= nanos;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_duration_accepts_every_documented_form() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("5s", Duration::from_secs(5)),
            ("30m", Duration::from_secs(1800)),
            ("2h", Duration::from_secs(7200)),
            ("1h30m", Duration::from_secs(5400)),
            ("0s", Duration::ZERO),
            ("1s500ms", Duration::from_millis(1500)),
            ("1h2m3s4ms5us6ns", Duration::new(3723, 4_005_006)),
            ("90s", Duration::from_secs(90)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn parse_duration_rejects_malformed_strings_with_a_hint() {
        for text in [
            "", "5", "s", "1.5s", "-5s", "5 s", "5sec", "30m1h", "1s1s", "5d",
        ] {
            let err = parse_duration(text).expect_err(text);
            assert!(!err.is_empty(), "{text}");
        }
        assert!(parse_duration("5").unwrap_err().contains("\"5s\""));
        assert!(
            parse_duration("5d")
                .unwrap_err()
                .contains("unknown unit `d`")
        );
        assert!(
            parse_duration("30m1h")
                .unwrap_err()
                .contains("largest first")
        );
    }

    #[test]
    fn parse_duration_rejects_overflow() {
        assert!(parse_duration("99999999999999999999999999999h").is_err());
        assert!(
            parse_duration("999999999999999999h")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn format_duration_prints_compound_units_and_round_trips() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
        for d in [
            Duration::new(3723, 4_005_006),
            Duration::from_nanos(1),
            Duration::from_secs(86_400 * 365),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
