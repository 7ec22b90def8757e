//! Image IDs: the sha256 and sha512 digests of an image's uncompressed tar and
//! references to them by (prefix of) ID.

use std::fmt;

/// Both digests of an image's uncompressed tar. The appc image ID is the sha512 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageDigest {
    /// SHA-256 of the uncompressed tar (rkt's short ids).
    pub sha256: [u8; 32],
    /// SHA-512 of the uncompressed tar (the appc image ID).
    pub sha512: [u8; 64],
}

impl ImageDigest {
    /// `sha256-<64 hex>`.
    pub fn sha256_id(&self) -> String {
        format!("sha256-{}", hex::encode(self.sha256))
    }

    /// `sha512-<128 hex>`, the appc image ID.
    pub fn sha512_id(&self) -> String {
        format!("sha512-{}", hex::encode(self.sha512))
    }
}

impl fmt::Display for ImageDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sha512_id())
    }
}

/// Minimum number of hex digits in an ID prefix (rkt's minimum, count of hex chars).
pub const MIN_ID_PREFIX_HEX: usize = 12;

/// A reference to an image by full or abbreviated ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdRef {
    /// `sha256-<hex prefix>`, lower-case.
    Sha256(String),
    /// `sha512-<hex prefix>`, lower-case.
    Sha512(String),
}

impl IdRef {
    /// The hex prefix.
    pub fn hex(&self) -> &str {
        match self {
            IdRef::Sha256(h) | IdRef::Sha512(h) => h,
        }
    }

    /// Whether `digest` matches this (possibly abbreviated) reference.
    pub fn matches(&self, digest: &ImageDigest) -> bool {
        match self {
            IdRef::Sha256(h) => hex::encode(digest.sha256).starts_with(h.as_str()),
            IdRef::Sha512(h) => hex::encode(digest.sha512).starts_with(h.as_str()),
        }
    }

    /// Whether this is a full-length ID.
    pub fn is_full(&self) -> bool {
        match self {
            IdRef::Sha256(h) => h.len() == 64,
            IdRef::Sha512(h) => h.len() == 128,
        }
    }
}

impl fmt::Display for IdRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdRef::Sha256(h) => write!(f, "sha256-{h}"),
            IdRef::Sha512(h) => write!(f, "sha512-{h}"),
        }
    }
}

/// Parse `sha256-<hex>` / `sha512-<hex>` with at least [`MIN_ID_PREFIX_HEX`] hex digits
/// and at most the full length. Hex is case-insensitive and normalized to lower case.
pub fn parse_id_ref(s: &str) -> Option<IdRef> {
    let (algo, hex) = s.split_once('-')?;
    let max = match algo {
        "sha256" => 64,
        "sha512" => 128,
        _ => return None,
    };
    if hex.len() < MIN_ID_PREFIX_HEX
        || hex.len() > max
        || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some(if algo == "sha256" {
        IdRef::Sha256(hex)
    } else {
        IdRef::Sha512(hex)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_refs() {
        let d = ImageDigest {
            sha256: [0xab; 32],
            sha512: [0x01; 64],
        };
        assert_eq!(d.sha256_id(), format!("sha256-{}", "ab".repeat(32)));
        assert_eq!(d.sha512_id(), format!("sha512-{}", "01".repeat(64)));
        let r = parse_id_ref("sha512-0101010101AB").map(|r| r.to_string());
        assert_eq!(r.as_deref(), Some("sha512-0101010101ab"));
        assert!(parse_id_ref("sha512-010101010101").is_some_and(|r| r.matches(&d)));
        assert!(parse_id_ref("sha256-abababababab").is_some_and(|r| r.matches(&d)));
        assert!(parse_id_ref(&d.sha512_id()).is_some_and(|r| r.is_full()));
        for bad in [
            "sha512-0101",
            "md5-010101010101",
            "sha512-01010101010g",
            "sha512",
            &format!("sha256-{}", "a".repeat(65)),
        ] {
            assert!(parse_id_ref(bad).is_none(), "{bad}");
        }
    }
}
