//! The one parser of Go-style boolean flag values (`strconv.ParseBool`, what rkt's flags
//! accepted): `--flag`, `--flag=true`, `--flag=0`, `--flag=F` ...

use crate::error::UsageError;

/// The values Go's `strconv.ParseBool` takes, true ones first.
pub const TRUE_VALUES: [&str; 6] = ["1", "t", "T", "TRUE", "true", "True"];
/// The values Go's `strconv.ParseBool` takes as false.
pub const FALSE_VALUES: [&str; 6] = ["0", "f", "F", "FALSE", "false", "False"];

/// Parses `v` as Go's `strconv.ParseBool` does; anything else is refused (no `yes`/`no`,
/// no surrounding spaces).
pub fn parse(v: &str) -> Option<bool> {
    if TRUE_VALUES.contains(&v) {
        Some(true)
    } else if FALSE_VALUES.contains(&v) {
        Some(false)
    } else {
        None
    }
}

/// [`parse`] for the value of `--<flag>`, with a usage error that names the flag and the
/// accepted values.
pub fn parse_flag(flag: &str, v: &str) -> Result<bool, UsageError> {
    parse(v).ok_or_else(|| {
        UsageError(format!(
            "invalid boolean {v:?} for --{flag} (want true, false, 1, 0, t, f, TRUE, FALSE, True or False)"
        ))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn go_parse_bool_set() {
        for v in TRUE_VALUES {
            assert_eq!(parse(v), Some(true), "{v}");
        }
        for v in FALSE_VALUES {
            assert_eq!(parse(v), Some(false), "{v}");
        }
        for v in ["", "yes", "no", "on", "tRUE", " true", "2", "-1"] {
            assert_eq!(parse(v), None, "{v:?}");
        }
        let e = parse_flag("debug", "yes").unwrap_err();
        assert!(e.0.contains("--debug") && e.0.contains("\"yes\""), "{e}");
    }
}
