//! Readers that check what flows through them: a blob against its sha256 digest and size
//! (while streaming, failing on the first byte past the size), decompressed bytes against
//! the limits.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::{Limits, OciError};

/// The hex of a `sha256:<64 hex>` digest.
pub(crate) fn sha256_hex(digest: &str) -> Result<&str, OciError> {
    match digest.strip_prefix("sha256:") {
        Some(h)
            if h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(h)
        }
        _ => Err(OciError::BadDigest(digest.to_string())),
    }
}

/// Checks `inner` against a sha256 digest and (when known) a size, at EOF. Errors are
/// [`OciError`]s inside `io::Error` (see [`crate::lift`]).
pub(crate) struct Verified<R> {
    inner: R,
    what: String,
    want_hex: String,
    want_size: Option<u64>,
    seen: u64,
    hasher: Sha256,
    /// Set once EOF was reached and everything matched.
    ok: Rc<Cell<bool>>,
}

impl<R: Read> Verified<R> {
    pub(crate) fn new(
        inner: R,
        what: String,
        digest: &str,
        want_size: Option<u64>,
    ) -> Result<Self, OciError> {
        let want_hex = sha256_hex(digest)?.to_string();
        Ok(Self {
            inner,
            what,
            want_hex,
            want_size,
            seen: 0,
            hasher: Sha256::new(),
            ok: Rc::new(Cell::new(false)),
        })
    }

    /// A flag set when the whole blob was read and matched.
    pub(crate) fn ok_flag(&self) -> Rc<Cell<bool>> {
        self.ok.clone()
    }

    fn fail(e: OciError) -> io::Error {
        io::Error::other(e)
    }
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen += n as u64;
        if let Some(want) = self.want_size {
            if self.seen > want {
                return Err(Self::fail(OciError::SizeMismatch {
                    what: self.what.clone(),
                    want,
                    got: self.seen,
                }));
            }
        }
        self.hasher.update(buf.get(..n).unwrap_or_default());
        if n == 0 && !buf.is_empty() && !self.ok.get() {
            if let Some(want) = self.want_size.filter(|w| *w != self.seen) {
                return Err(Self::fail(OciError::SizeMismatch {
                    what: self.what.clone(),
                    want,
                    got: self.seen,
                }));
            }
            let got = hex::encode(std::mem::take(&mut self.hasher).finalize());
            if got != self.want_hex {
                return Err(Self::fail(OciError::DigestMismatch {
                    what: self.what.clone(),
                    want: format!("sha256:{}", self.want_hex),
                    got: format!("sha256:{got}"),
                }));
            }
            self.ok.set(true);
        }
        Ok(n)
    }
}

/// Counts decompressed bytes of all layers against [`Limits`]: the total, and the ratio to
/// the compressed bytes read (`compressed` plus `base_compressed` of earlier layers).
pub(crate) struct Bounded<R> {
    pub(crate) inner: R,
    pub(crate) total: Rc<Cell<u64>>,
    pub(crate) compressed: Rc<Cell<u64>>,
    pub(crate) base_compressed: u64,
    pub(crate) limits: Limits,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.total.get() + n as u64;
        self.total.set(total);
        if total > self.limits.max_uncompressed_bytes {
            return Err(io::Error::other(OciError::TooBig {
                what: "total size",
                limit: format!("{} bytes", self.limits.max_uncompressed_bytes),
            }));
        }
        let compressed = self.base_compressed + self.compressed.get();
        if total > self.limits.ratio_grace_bytes
            && total / compressed.max(1) > self.limits.max_ratio
        {
            return Err(io::Error::other(OciError::TooBig {
                what: "compression ratio",
                limit: format!("{}:1", self.limits.max_ratio),
            }));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(b: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(b)))
    }

    #[test]
    fn verified_reader() {
        let data = b"hello world".to_vec();
        let d = digest_of(&data);
        let mut v = Verified::new(&data[..], "x".into(), &d, Some(11)).expect("digest");
        let ok = v.ok_flag();
        io::copy(&mut v, &mut io::sink()).expect("matches");
        assert!(ok.get());
        let mut v = Verified::new(&data[..], "x".into(), &d, Some(5)).expect("digest");
        let e = io::copy(&mut v, &mut io::sink()).expect_err("too long");
        assert!(crate::lift(e, OciError::Write)
            .to_string()
            .contains("size mismatch"));
        let mut v = Verified::new(&b"hello worle"[..], "x".into(), &d, Some(11)).expect("digest");
        let e = io::copy(&mut v, &mut io::sink()).expect_err("bad digest");
        assert!(crate::lift(e, OciError::Write)
            .to_string()
            .contains("digest mismatch"));
        assert!(sha256_hex("sha512:00").is_err());
        assert!(sha256_hex("sha256:../../etc/passwd").is_err());
    }
}
