//! Kubernetes-style resource quantities (`250m`, `1G`, `512Mi`, `1.5`, `2e3`).

use std::fmt;

use thiserror::Error;

/// Why a quantity string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantityError {
    /// Empty string.
    #[error("empty quantity")]
    Empty,
    /// Not `<number><suffix>`.
    #[error("malformed quantity")]
    Malformed,
    /// Unknown suffix.
    #[error("unknown suffix {0:?}")]
    Suffix(String),
    /// Negative quantities are meaningless for resources.
    #[error("negative quantity")]
    Negative,
    /// Does not fit in 128 bits of milli-units.
    #[error("quantity too large")]
    TooLarge,
}

/// A non-negative resource quantity, stored exactly in milli-units (rounded up).
///
/// For `resource/cpu` a unit is one core (`250m` = 250 millicores); for `resource/memory`
/// a unit is one byte (`1G` = 10^9 bytes, `512Mi` = 512 * 2^20 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Quantity {
    millis: u128,
}

/// Maximum number of significant digits accepted (count); keeps the arithmetic in u128.
const MAX_DIGITS: usize = 30;

impl Quantity {
    /// A quantity of exactly `millis` milli-units.
    pub fn from_millis(millis: u128) -> Self {
        Self { millis }
    }

    /// Milli-units (e.g. millicores), saturating at `u64::MAX`.
    pub fn as_millis(&self) -> u64 {
        u64::try_from(self.millis).unwrap_or(u64::MAX)
    }

    /// Whole units rounded up (e.g. bytes, cores), saturating at `u64::MAX`.
    pub fn as_units(&self) -> u64 {
        u64::try_from(self.millis.div_ceil(1000)).unwrap_or(u64::MAX)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis.is_multiple_of(1000) {
            write!(f, "{}", self.millis / 1000)
        } else {
            write!(f, "{}m", self.millis)
        }
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_quantity(s)
    }
}

/// Parse a quantity: `[+]<digits>[.<digits>]<suffix>` where the suffix is a binary SI
/// (`Ki Mi Gi Ti Pi Ei`), decimal SI (`n u m "" k K M G T P E`) or exponent (`e3`, `E-2`).
pub fn parse_quantity(s: &str) -> Result<Quantity, QuantityError> {
    if s.is_empty() {
        return Err(QuantityError::Empty);
    }
    let rest = match s.as_bytes().first() {
        Some(b'-') => {
            // "-0" is still zero, everything else negative.
            let q = parse_quantity(s.get(1..).unwrap_or(""))?;
            return if q.millis == 0 {
                Ok(q)
            } else {
                Err(QuantityError::Negative)
            };
        }
        Some(b'+') => s.get(1..).unwrap_or(""),
        _ => s,
    };
    let num_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(num_end);
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return Err(QuantityError::Malformed);
    }
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > MAX_DIGITS {
        return Err(QuantityError::TooLarge);
    }
    let mantissa: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| QuantityError::Malformed)?
    };
    // value = mantissa * 2^bin * 10^dec / 10^frac_len ; millis = value * 10^3
    let (bin, dec): (u32, i64) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" | "K" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        other => {
            let exp = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))
                .ok_or_else(|| QuantityError::Suffix(other.to_string()))?;
            let e: i64 = exp
                .parse()
                .map_err(|_| QuantityError::Suffix(other.to_string()))?;
            if !(-40..=40).contains(&e) {
                return Err(QuantityError::TooLarge);
            }
            (0, e)
        }
    };
    let frac_len = i64::try_from(frac_part.len()).map_err(|_| QuantityError::TooLarge)?;
    let mut num = mantissa
        .checked_mul(1u128 << bin)
        .ok_or(QuantityError::TooLarge)?;
    let exp10 = dec + 3 - frac_len;
    if mantissa == 0 {
        return Ok(Quantity { millis: 0 });
    }
    if exp10 >= 0 {
        let p = 10u128
            .checked_pow(u32::try_from(exp10).map_err(|_| QuantityError::TooLarge)?)
            .ok_or(QuantityError::TooLarge)?;
        num = num.checked_mul(p).ok_or(QuantityError::TooLarge)?;
    } else {
        let e = u32::try_from(-exp10).map_err(|_| QuantityError::TooLarge)?;
        num = match 10u128.checked_pow(e) {
            Some(p) => num.div_ceil(p),
            None => 1, // smaller than one milli-unit: round up
        };
    }
    Ok(Quantity { millis: num })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let cases: &[(&str, u128)] = &[
            ("250m", 250),
            ("1", 1000),
            ("1.5", 1500),
            ("20m", 20),
            ("1G", 1_000_000_000_000),
            ("1k", 1_000_000),
            ("1K", 1_000_000),
            ("512Mi", 512 * (1 << 20) * 1000),
            ("1Gi", (1 << 30) * 1000),
            ("2e3", 2_000_000),
            ("0.5Gi", (1 << 29) * 1000),
            ("+4", 4000),
            (".5", 500),
            ("1n", 1),
            ("0", 0),
            ("-0", 0),
            ("1E", 1_000_000_000_000_000_000_000),
        ];
        for (s, millis) in cases {
            assert_eq!(parse_quantity(s), Ok(Quantity::from_millis(*millis)), "{s}");
        }
        assert_eq!(
            parse_quantity("1G").map(|q| q.as_units()),
            Ok(1_000_000_000)
        );
        assert_eq!(parse_quantity("250m").map(|q| q.as_millis()), Ok(250));
        assert_eq!(parse_quantity("1500m").map(|q| q.as_units()), Ok(2));
    }

    #[test]
    fn rejects() {
        let cases: &[(&str, QuantityError)] = &[
            ("", QuantityError::Empty),
            ("12Q", QuantityError::Suffix("Q".into())),
            ("G", QuantityError::Malformed),
            ("1.2.3", QuantityError::Malformed),
            ("-1", QuantityError::Negative),
            ("1 G", QuantityError::Suffix(" G".into())),
            ("1Gib", QuantityError::Suffix("Gib".into())),
            ("9999999999999999999999999999999", QuantityError::TooLarge),
            ("1e99", QuantityError::TooLarge),
        ];
        for (s, err) in cases {
            assert_eq!(parse_quantity(s).as_ref(), Err(err), "{s}");
        }
    }
}
