//! Small shared manifest pieces: labels, annotations, user annotations and labels,
//! environment variables, the `null`-tolerant list deserializer, the JSON reading and writing
//! of a manifest kind and the shared validation rules.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize};

use crate::types::{index, join, AcIdentifier, Invalid, ValidationError};

/// Deserialize `null` as the default value (Go writes empty lists as `null`).
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `from_json` (parse and validate), `to_json` and `to_json_pretty` for a manifest kind `$kind`
/// that has `fn validate(&self) -> Result<(), ValidationError>`.
macro_rules! manifest_json {
    ($kind:ty) => {
        impl $kind {
            /// Parse and validate.
            pub fn from_json(bytes: &[u8]) -> Result<Self, $crate::schema::ManifestError> {
                let m: Self =
                    serde_json::from_slice(bytes).map_err($crate::schema::ManifestError::Json)?;
                m.validate()?;
                Ok(m)
            }

            /// Serialize to compact JSON.
            pub fn to_json(&self) -> Vec<u8> {
                // Serializing plain data with string keys cannot fail.
                serde_json::to_vec(self).unwrap_or_default()
            }

            /// Serialize to indented JSON.
            pub fn to_json_pretty(&self) -> Vec<u8> {
                serde_json::to_vec_pretty(self).unwrap_or_default()
            }
        }
    };
}
pub(crate) use manifest_json;

/// Free-form user annotations and labels (`userAnnotations`, `userLabels`), which an app and a
/// pod both carry (flattened into them); `null` reads as empty, empty maps are not written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UserMeta {
    /// Free-form user annotations.
    #[serde(
        rename = "userAnnotations",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    /// Free-form user labels.
    #[serde(
        rename = "userLabels",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
}

/// A `{name, value}` label (`version`, `os`, `arch`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    /// Label name (ACIdentifier, never `name`).
    pub name: AcIdentifier,
    /// Label value.
    #[serde(default)]
    pub value: String,
}

/// A `{name, value}` annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotation {
    /// Annotation name (ACIdentifier).
    pub name: AcIdentifier,
    /// Annotation value.
    #[serde(default)]
    pub value: String,
}

/// An environment variable `{name, value}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    /// Variable name, `[A-Za-z0-9_.-]+`.
    pub name: String,
    /// Variable value.
    #[serde(default)]
    pub value: String,
}

/// One OS and its valid architectures.
pub type ValidOsArch = (&'static str, &'static [&'static str]);

/// The spec's ValidOSArch table (`os` label → allowed `arch` labels).
pub const VALID_OS_ARCH: [ValidOsArch; 3] = [
    (
        "linux",
        &[
            "amd64",
            "i386",
            "aarch64",
            "aarch64_be",
            "armv6l",
            "armv7l",
            "armv7b",
            "ppc64",
            "ppc64le",
            "s390x",
        ],
    ),
    ("freebsd", &["amd64", "i386", "arm"]),
    ("darwin", &["x86_64", "i386"]),
];

/// Validate a label list at `path`: names, no `name`, no duplicates, os/arch pairs.
pub(crate) fn validate_labels(labels: &[Label], path: &str) -> Result<(), ValidationError> {
    let mut seen = BTreeSet::new();
    for (i, l) in labels.iter().enumerate() {
        let np = join(&index(path, i), "name");
        l.name.check().map_err(|e| e.under(&np))?;
        if l.name == "name" {
            return Err(ValidationError::new(np, Invalid::ForbiddenLabel));
        }
        if !seen.insert(l.name.as_str()) {
            return Err(ValidationError::new(
                np,
                Invalid::Duplicate(l.name.to_string()),
            ));
        }
    }
    let find = |n: &str| labels.iter().position(|l| l.name == n);
    if let Some(oi) = find("os") {
        let os = labels.get(oi).map(|l| l.value.as_str()).unwrap_or_default();
        let vp = join(&index(path, oi), "value");
        let Some((_, archs)) = VALID_OS_ARCH.iter().find(|(o, _)| *o == os) else {
            return Err(ValidationError::new(vp, Invalid::BadOs(os.to_string())));
        };
        if let Some(ai) = find("arch") {
            let arch = labels.get(ai).map(|l| l.value.as_str()).unwrap_or_default();
            if !archs.contains(&arch) {
                return Err(ValidationError::new(
                    join(&index(path, ai), "value"),
                    Invalid::BadArch {
                        arch: arch.to_string(),
                        os: os.to_string(),
                    },
                ));
            }
        }
    }
    Ok(())
}

/// Validate an annotation list at `path`: names, no duplicates, well-known value formats.
pub(crate) fn validate_annotations(list: &[Annotation], path: &str) -> Result<(), ValidationError> {
    let mut seen = BTreeSet::new();
    for (i, a) in list.iter().enumerate() {
        let ip = index(path, i);
        let np = join(&ip, "name");
        a.name.check().map_err(|e| e.under(&np))?;
        if !seen.insert(a.name.as_str()) {
            return Err(ValidationError::new(
                np,
                Invalid::Duplicate(a.name.to_string()),
            ));
        }
        let vp = join(&ip, "value");
        match a.name.as_str() {
            "created" if !is_rfc3339(&a.value) => {
                return Err(ValidationError::new(vp, Invalid::Date(a.value.clone())));
            }
            "homepage" | "documentation" if !is_http_url(&a.value) => {
                return Err(ValidationError::new(vp, Invalid::Url(a.value.clone())));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `acKind` must be `expected`, and `acVersion` a semantic version.
pub(crate) fn validate_kind_and_version(
    kind: &str,
    expected: &'static str,
    version: &str,
) -> Result<(), ValidationError> {
    if kind != expected {
        return Err(ValidationError::new(
            "acKind",
            Invalid::WrongKind {
                expected,
                found: kind.to_string(),
            },
        ));
    }
    if version.is_empty() {
        return Err(ValidationError::new("acVersion", Invalid::Missing));
    }
    semver::Version::parse(version)
        .map(|_| ())
        .map_err(|_| ValidationError::new("acVersion", Invalid::SemVer(version.to_string())))
}

/// Validate environment variables at `path`: name charset, no duplicates.
pub(crate) fn validate_env(list: &[EnvVar], path: &str) -> Result<(), ValidationError> {
    let mut seen = BTreeSet::new();
    for (i, e) in list.iter().enumerate() {
        let np = join(&index(path, i), "name");
        let ok = !e.name.is_empty()
            && e.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(ValidationError::new(np, Invalid::EnvName(e.name.clone())));
        }
        if !seen.insert(e.name.as_str()) {
            return Err(ValidationError::new(np, Invalid::Duplicate(e.name.clone())));
        }
    }
    Ok(())
}

/// An image hash reference as used in manifests: `sha512-<hex>` (appc), `sha256-<hex>`
/// (rkt-era), with the value possibly a truncated prefix or the spec's `...` placeholder.
pub(crate) fn is_hash(s: &str) -> bool {
    match s.split_once('-') {
        Some(("sha512" | "sha256", v)) => {
            !v.is_empty() && (v.bytes().all(|b| b.is_ascii_hexdigit()) || v == "...")
        }
        _ => false,
    }
}

/// Absolute path (starts with `/`) without NUL bytes.
pub(crate) fn is_abs(p: &str) -> bool {
    p.starts_with('/') && !p.contains('\0')
}

fn digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

/// RFC 3339 date-time (`2014-10-27T19:32:27.67021798Z`, `...+02:00`).
pub(crate) fn is_rfc3339(s: &str) -> bool {
    // Shape of `YYYY-MM-DDThh:mm:ss`: 'd' = digit, other bytes literal ('T' also 't').
    const SHAPE: &[u8; 19] = b"dddd-dd-ddTdd:dd:dd";
    let b = s.as_bytes();
    let (Some(head), Some(mut tz)) = (b.get(..SHAPE.len()), b.get(SHAPE.len()..)) else {
        return false;
    };
    let head_ok = head.iter().zip(SHAPE).all(|(c, p)| match p {
        b'd' => c.is_ascii_digit(),
        b'T' => *c == b'T' || *c == b't',
        _ => c == p,
    });
    if !head_ok {
        return false;
    }
    if let Some(frac) = tz.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        tz = frac.get(n..).unwrap_or_default();
    }
    match tz {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => digits(&[*h1, *h2, *m1, *m2]),
        _ => false,
    }
}

/// `http://host...` or `https://host...`.
pub(crate) fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(r) => {
            let host = r.split(['/', '?', '#']).next().unwrap_or_default();
            !host.is_empty()
                && !s
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        for ok in [
            "2014-10-27T19:32:27.67021798Z",
            "2014-10-27T19:32:27Z",
            "2014-10-27T19:32:27+02:00",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "2014-10-27 19:32:27Z",
            "2014-10-27",
            "yesterday",
            "2014-10-27T19:32:27",
            "2014-10-27T19:32:27.Z",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn urls_and_hashes() {
        assert!(is_http_url("https://example.com/docs"));
        assert!(!is_http_url("ftp://example.com"));
        assert!(!is_http_url("https://"));
        assert!(is_hash("sha512-..."));
        assert!(is_hash("sha512-8d3fffddf79e"));
        assert!(!is_hash("md5-abc"));
        assert!(!is_hash("sha512-xyz"));
    }
}
