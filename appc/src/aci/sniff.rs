//! Detect an ACI's compression from its first bytes.

use super::AciError;

/// Bytes needed to recognize every format (the ustar magic ends at offset 262).
pub const SNIFF_LEN: usize = 262;

/// Offset of the `ustar` magic in a tar header (bytes).
const USTAR_OFFSET: usize = 257;

/// How an ACI is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// bzip2 (`BZh`).
    Bzip2,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
}

impl Compression {
    /// Lower-case name (`none`, `gzip`, `bzip2`, `xz`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
        }
    }
}

/// Identify the format from the first [`SNIFF_LEN`] bytes (fewer is fine for the
/// compressed formats).
pub fn sniff(header: &[u8]) -> Result<Compression, AciError> {
    if header.starts_with(&[0x1f, 0x8b]) {
        Ok(Compression::Gzip)
    } else if header.starts_with(b"BZh") {
        Ok(Compression::Bzip2)
    } else if header.starts_with(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) {
        Ok(Compression::Xz)
    } else if header.get(USTAR_OFFSET..USTAR_OFFSET + 5) == Some(b"ustar") {
        Ok(Compression::None)
    } else {
        Err(AciError::UnknownFormat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_bytes() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]).ok(), Some(Compression::Gzip));
        assert_eq!(sniff(b"BZh91AY").ok(), Some(Compression::Bzip2));
        assert_eq!(
            sniff(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0]).ok(),
            Some(Compression::Xz)
        );
        let mut tar = vec![0u8; 512];
        tar[257..263].copy_from_slice(b"ustar\0");
        assert_eq!(sniff(&tar).ok(), Some(Compression::None));
        assert!(matches!(sniff(&tar[..200]), Err(AciError::UnknownFormat)));
        assert!(matches!(sniff(b""), Err(AciError::UnknownFormat)));
        assert!(matches!(
            sniff(b"PK\x03\x04 zip file"),
            Err(AciError::UnknownFormat)
        ));
    }
}
