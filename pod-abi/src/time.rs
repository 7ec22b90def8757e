//! Calendar times in UTC for what stage0 prints and what guest-init logs.

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A Unix time split into its UTC calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    /// Year.
    pub year: i64,
    /// Month, 1-12.
    pub month: i64,
    /// Day of the month, 1-31.
    pub day: i64,
    /// Hour, 0-23.
    pub hour: i64,
    /// Minute, 0-59.
    pub minute: i64,
    /// Second, 0-59.
    pub second: i64,
    /// Nanoseconds, 0-999,999,999.
    pub nanos: i64,
}

impl Utc {
    /// The fields of `t_ns` Unix nanoseconds.
    pub fn from_unix_nanos(t_ns: i64) -> Utc {
        let secs = t_ns.div_euclid(1_000_000_000);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        Utc {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: (rem % 3600) / 60,
            second: rem % 60,
            nanos: t_ns.rem_euclid(1_000_000_000),
        }
    }
}

/// A Unix time in nanoseconds as Go's `time.RFC3339Nano` in UTC:
/// `2006-01-02T15:04:05.999999999Z`, trailing zeros of the fraction dropped (and the dot with
/// them).
pub fn rfc3339_nanos(t_ns: i64) -> String {
    let u = Utc::from_unix_nanos(t_ns);
    let frac = if u.nanos == 0 {
        String::new()
    } else {
        format!(".{:09}", u.nanos).trim_end_matches('0').to_string()
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{frac}Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second
    )
}

/// `t` in Unix nanoseconds (0 before the epoch, `i64::MAX` past 2262).
pub fn unix_nanos(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Now, in Unix nanoseconds ([`unix_nanos`]).
pub fn now_nanos() -> i64 {
    unix_nanos(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_nanos_is_gos_layout() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_nanos(1_764_892_800_123_450_000),
            "2025-12-05T00:00:00.12345Z"
        );
        assert_eq!(
            rfc3339_nanos(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
        assert_eq!(rfc3339_nanos(-1_000_000_000), "1969-12-31T23:59:59Z");
    }
}
