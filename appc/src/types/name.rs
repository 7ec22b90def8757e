//! `ACName` and `ACIdentifier`: the two name grammars of the spec.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Invalid, ValidationError};

/// An appc ACName: `^[a-z0-9]+([-][a-z0-9]+)*$` (app, volume, port, mount point names).
///
/// `AcName::new` validates. Deserialization does not (so a manifest can report every bad
/// field with its path); manifests validate all their names in `validate()`, and
/// `from_json` always validates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AcName(String);

/// An appc ACIdentifier: `^[a-z0-9]+([-._~/][a-z0-9]+)*$` (image names, label and
/// annotation names). Same validation contract as [`AcName`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AcIdentifier(String);

/// Longest accepted ACName or ACIdentifier, in bytes. The spec sets no limit, but names
/// become file names (app directories, default app names derived from image names), so a
/// longer one could only fail later, at render or run time: Linux NAME_MAX.
pub const MAX_NAME_BYTES: usize = 255;

/// The error for an invalid name: too long, or not matching the grammar (`bad`).
fn name_error(s: String, bad: fn(String) -> Invalid) -> ValidationError {
    let kind = if s.len() > MAX_NAME_BYTES {
        Invalid::NameTooLong(s.len())
    } else {
        bad(s)
    };
    ValidationError::new("", kind)
}

/// Check the common grammar: runs of `[a-z0-9]` separated by single separator chars, at most
/// [`MAX_NAME_BYTES`] long.
fn valid_grammar(s: &str, is_sep: impl Fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > MAX_NAME_BYTES {
        return false;
    }
    let mut prev_sep = true; // start behaves like after a separator: must see alnum
    for &c in b {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            prev_sep = false;
        } else if is_sep(c) {
            if prev_sep {
                return false;
            }
            prev_sep = true;
        } else {
            return false;
        }
    }
    !prev_sep
}

impl AcName {
    /// Validate and wrap `s`.
    pub fn new(s: impl Into<String>) -> Result<Self, ValidationError> {
        let s = s.into();
        if Self::is_valid(&s) {
            Ok(Self(s))
        } else {
            Err(name_error(s, Invalid::AcName))
        }
    }

    /// Whether `s` matches the ACName grammar.
    pub fn is_valid(s: &str) -> bool {
        valid_grammar(s, |c| c == b'-')
    }

    /// Derive a valid ACName from arbitrary text (like appc's `SanitizeACName`): lower-case,
    /// every run of other characters becomes one `-`, leading/trailing `-` dropped.
    /// Returns `app` if nothing usable remains; cut to [`MAX_NAME_BYTES`].
    pub fn sanitize(s: &str) -> AcName {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            if out.len() >= MAX_NAME_BYTES {
                break;
            }
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                out.push(c);
            } else if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        }
        while out.ends_with('-') {
            out.pop();
        }
        if out.is_empty() {
            out.push_str("app");
        }
        AcName(out)
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Validation error (at an empty path) if this value came from unvalidated input.
    pub fn check(&self) -> Result<(), ValidationError> {
        if Self::is_valid(&self.0) {
            Ok(())
        } else {
            Err(name_error(self.0.clone(), Invalid::AcName))
        }
    }
}

impl AcIdentifier {
    /// Validate and wrap `s`.
    pub fn new(s: impl Into<String>) -> Result<Self, ValidationError> {
        let s = s.into();
        if Self::is_valid(&s) {
            Ok(Self(s))
        } else {
            Err(name_error(s, Invalid::AcIdentifier))
        }
    }

    /// Whether `s` matches the ACIdentifier grammar.
    pub fn is_valid(s: &str) -> bool {
        valid_grammar(s, |c| matches!(c, b'-' | b'.' | b'_' | b'~' | b'/'))
    }

    /// The identifier as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Validation error (at an empty path) if this value came from unvalidated input.
    pub fn check(&self) -> Result<(), ValidationError> {
        if Self::is_valid(&self.0) {
            Ok(())
        } else {
            Err(name_error(self.0.clone(), Invalid::AcIdentifier))
        }
    }
}

macro_rules! str_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl std::str::FromStr for $t {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}
str_impls!(AcName);
str_impls!(AcIdentifier);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn acname_grammar() {
        for ok in ["a", "a-b", "abc123", "0", "a-1-b"] {
            assert!(AcName::is_valid(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a--b", "A", "a_b", "a.b", "a/b", "a b"] {
            assert!(!AcName::is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn acidentifier_grammar() {
        for ok in [
            "example.com/reduce-worker",
            "a~b",
            "a_b",
            "coreos.com/etcd",
            "x",
        ] {
            assert!(AcIdentifier::is_valid(ok), "{ok}");
        }
        for bad in ["", "/a", "a/", "a//b", "Example.com", "a b", "a:b", "a._b"] {
            assert!(!AcIdentifier::is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn sanitize() {
        assert_eq!(AcName::sanitize("reduce-worker").as_str(), "reduce-worker");
        assert_eq!(AcName::sanitize("Foo_Bar..baz-").as_str(), "foo-bar-baz");
        assert_eq!(AcName::sanitize("--X--").as_str(), "x");
        assert_eq!(AcName::sanitize("___").as_str(), "app");
        assert!(AcName::is_valid(AcName::sanitize("a/b.c~d").as_str()));
        assert!(AcName::is_valid(
            AcName::sanitize(&"a".repeat(300)).as_str()
        ));
    }

    #[test]
    fn names_longer_than_name_max_are_refused() {
        let ok = "a".repeat(MAX_NAME_BYTES);
        assert!(AcName::is_valid(&ok) && AcIdentifier::is_valid(&ok));
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        assert!(!AcName::is_valid(&long) && !AcIdentifier::is_valid(&long));
        let e = AcIdentifier::new(long.clone()).unwrap_err();
        assert_eq!(e.kind, Invalid::NameTooLong(256));
        assert!(e.to_string().contains("256 bytes"), "{e}");
        assert_eq!(
            AcName::new(long).unwrap_err().kind,
            Invalid::NameTooLong(256)
        );
    }
}
