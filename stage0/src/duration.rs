//! Go durations (`30m0s`, `24h`, `1h30m`, `1.5s`, `500ms`, `0`) as rkt's flags take them
//! (`--grace-period`, `--expire-prepared`, `status --wait`).

use std::time::Duration;

use crate::error::UsageError;

/// Largest duration Go can represent (`math.MaxInt64` nanoseconds, about 292 years).
pub const MAX_NANOS: u128 = i64::MAX as u128;

/// Parses a Go duration without a sign. Unknown units, malformed numbers and values above
/// [`MAX_NANOS`] are usage errors.
pub fn parse_go_duration(s: &str) -> Result<Duration, UsageError> {
    let bad = |why: &str| UsageError(format!("invalid duration {s:?}{why}"));
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad(""));
    }
    let mut total: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int, tail) = rest.split_at(int_len);
        let (frac, tail) = match tail.strip_prefix('.') {
            Some(t) => t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len())),
            None => ("", tail),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(bad(""));
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad("")),
        };
        let overflow = || bad(": too large");
        // Digits beyond what can matter are dropped before they can overflow u128.
        let int_val = if int.is_empty() {
            0
        } else if int.trim_start_matches('0').len() > 20 {
            return Err(overflow());
        } else {
            int.parse::<u128>().map_err(|_| overflow())?
        };
        let mut nanos = int_val.checked_mul(per).ok_or_else(overflow)?;
        let mut scale = per;
        for d in frac.bytes().take(30) {
            scale /= 10;
            nanos += u128::from(d - b'0') * scale;
        }
        total = total.checked_add(nanos).ok_or_else(overflow)?;
        if total > MAX_NANOS {
            return Err(overflow());
        }
        rest = tail;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| bad(": too large"))?;
    // Below one billion, so it fits.
    let sub = u32::try_from(total % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, sub))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let p = |s| parse_go_duration(s);
        assert_eq!(p("30m0s").unwrap(), Duration::from_secs(1800));
        assert_eq!(p("24h0m0s").unwrap(), Duration::from_secs(86_400));
        assert_eq!(p("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(p("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(p("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(p("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(p(".5s").unwrap(), Duration::from_millis(500));
        assert_eq!(p("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(p("3µs").unwrap(), Duration::from_micros(3));
        assert_eq!(p("7ns").unwrap(), Duration::from_nanos(7));
        assert_eq!(p("0").unwrap(), Duration::ZERO);
        assert_eq!(p("0s").unwrap(), Duration::ZERO);
        for bad in ["", "10x", "s", ".s", "1", "-1s", "1..5s", "1e3s"] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn overflow_is_a_usage_error() {
        assert_eq!(
            parse_go_duration("2562047h47m16.854775807s").unwrap(),
            Duration::new(9_223_372_036, 854_775_807)
        );
        for big in [
            "18446744073709551615s",
            "2562048h",
            "2562047h47m16.854775808s",
            "99999999999999999999999999999999999999999h",
            "9223372036854775807ns1ns",
        ] {
            let e = parse_go_duration(big).unwrap_err();
            assert!(e.0.contains("too large"), "{big}: {e}");
        }
    }
}
