//! A guard in front of every `tar::Archive` that reads an image: the tar crate reads GNU
//! long-name (`L`) and long-link (`K`) entries and PAX headers (`x`) whole into memory before
//! the caller sees the entry they describe, whatever size their header claims. The guard
//! follows the stream's 512-byte blocks as the tar crate does (headers, data rounded up to a
//! block, GNU sparse extension blocks, the PAX `size` override) and fails the read that
//! brings the header of an `L`, `K`, `x` or `g` entry larger than
//! [`MAX_TAR_EXTENSION_BYTES`], so no more than that is ever buffered.

use std::io::{self, Read};

use tar::{EntryType, Header, PaxExtensions};
use thiserror::Error;

/// Largest GNU long-name/long-link entry or PAX header (`x`, `g`) accepted (bytes). A path is
/// at most 4096 bytes; a PAX header carries a few records and xattrs (one Linux xattr value
/// is at most 64 KiB).
pub const MAX_TAR_EXTENSION_BYTES: u64 = 1 << 20;

/// Tar block size (bytes).
const BLOCK: usize = 512;
/// Offset of the GNU header's `isextended` flag.
const GNU_ISEXTENDED: usize = 482;
/// Offset of a GNU sparse extension block's `isextended` flag.
const EXT_ISEXTENDED: usize = 504;

/// A tar extension entry over [`MAX_TAR_EXTENSION_BYTES`], carried inside the `io::Error`
/// the guarded read returns.
#[derive(Debug, Error)]
#[error("tar {what} of {size} bytes, more than the limit of {limit}")]
pub struct TarExtensionTooBig {
    /// Which kind of entry (`GNU long name`, `GNU long link`, `PAX header`).
    pub what: &'static str,
    /// Its size in bytes as the header says.
    pub size: u64,
    /// The limit in bytes.
    pub limit: u64,
}

impl TarExtensionTooBig {
    /// The error inside `e`, if `e` carries one.
    pub fn inside(e: &io::Error) -> Option<&TarExtensionTooBig> {
        e.get_ref().and_then(|r| r.downcast_ref())
    }
}

/// Where the guard is in the stream.
enum Phase {
    /// Collecting a header block.
    Header,
    /// Collecting a GNU sparse extension block; `data` bytes of entry data follow them.
    SparseExt { data: u64 },
    /// Passing `left` bytes of entry data, then `pad` bytes of padding; a PAX header's data
    /// is kept (it is at most the limit) for its `size` record.
    Data { left: u64, pad: u64, keep: bool },
    /// Past the end of the archive (or a header the tar crate will refuse): pass all.
    Done,
}

/// A `Read` over a tar stream that refuses oversized extension entries (see the module
/// documentation). Put it between the stream and `tar::Archive::new`.
pub struct TarGuard<R> {
    inner: R,
    phase: Phase,
    block: [u8; BLOCK],
    fill: usize,
    /// Data of the PAX header being read.
    pax: Vec<u8>,
    /// A PAX header was read and applies to the next entry.
    pax_pending: bool,
    /// Its `size` record, as the tar crate reads it.
    pax_size: Option<u64>,
    failed: bool,
}

impl<R: Read> TarGuard<R> {
    /// Guards `inner`, which must be at the start of a tar stream.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            phase: Phase::Header,
            block: [0; BLOCK],
            fill: 0,
            pax: Vec::new(),
            pax_pending: false,
            pax_size: None,
            failed: false,
        }
    }

    /// The guarded reader.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The guarded reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Follows `data`, the next bytes of the stream.
    fn observe(&mut self, mut data: &[u8]) -> Result<(), TarExtensionTooBig> {
        while !data.is_empty() {
            match &mut self.phase {
                Phase::Done => return Ok(()),
                Phase::Header | Phase::SparseExt { .. } => {
                    let k = (BLOCK - self.fill).min(data.len());
                    let (now, rest) = data.split_at(k);
                    if let Some(dst) = self.block.get_mut(self.fill..self.fill + k) {
                        dst.copy_from_slice(now);
                    }
                    self.fill += k;
                    data = rest;
                    if self.fill == BLOCK {
                        self.fill = 0;
                        self.phase = match self.phase {
                            Phase::SparseExt { data } => {
                                if self.block.get(EXT_ISEXTENDED) == Some(&1) {
                                    Phase::SparseExt { data }
                                } else {
                                    data_phase(data, false)
                                }
                            }
                            _ => self.header()?,
                        };
                    }
                }
                Phase::Data { left, pad, keep } => {
                    if *left > 0 {
                        let k = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                        let (now, rest) = data.split_at(k);
                        if *keep {
                            self.pax.extend_from_slice(now);
                        }
                        *left -= k as u64;
                        data = rest;
                        if *left == 0 && *keep {
                            self.pax_size = pax_size(&self.pax);
                            self.pax = Vec::new();
                        }
                    } else {
                        let k = usize::try_from(*pad).unwrap_or(usize::MAX).min(data.len());
                        *pad -= k as u64;
                        data = data.get(k..).unwrap_or_default();
                    }
                    if let Phase::Data {
                        left: 0, pad: 0, ..
                    } = self.phase
                    {
                        self.phase = Phase::Header;
                    }
                }
            }
        }
        Ok(())
    }

    /// The phase after the header in `self.block`, as the tar crate reads it.
    fn header(&mut self) -> Result<Phase, TarExtensionTooBig> {
        if self.block.iter().all(|&b| b == 0) {
            // The end of the archive for the tar crate (it never skips zero blocks here).
            return Ok(Phase::Done);
        }
        let h = Header::from_byte_slice(&self.block);
        let Ok(raw_size) = h.entry_size() else {
            // The tar crate fails on it too.
            return Ok(Phase::Done);
        };
        let t = h.entry_type();
        let recognized = h.as_gnu().is_some() || h.as_ustar().is_some();
        let what = match t {
            EntryType::GNULongName => Some("GNU long name"),
            EntryType::GNULongLink => Some("GNU long link"),
            EntryType::XHeader | EntryType::XGlobalHeader => Some("PAX header"),
            _ => None,
        };
        if let Some(what) = what {
            if raw_size > MAX_TAR_EXTENSION_BYTES {
                return Err(TarExtensionTooBig {
                    what,
                    size: raw_size,
                    limit: MAX_TAR_EXTENSION_BYTES,
                });
            }
        }
        // What the tar crate buffers and applies to the next entry.
        let describes_next = recognized
            && matches!(
                t,
                EntryType::GNULongName | EntryType::GNULongLink | EntryType::XHeader
            );
        let mut size = raw_size;
        let mut keep = false;
        if describes_next {
            if t == EntryType::XHeader {
                keep = true;
                self.pax_pending = true;
                self.pax_size = None;
            }
        } else {
            if what.is_none() && self.pax_pending {
                if let Some(s) = self.pax_size {
                    size = s;
                }
            }
            self.pax_pending = false;
            self.pax_size = None;
            if t == EntryType::GNUSparse
                && h.as_gnu().is_some()
                && self.block.get(GNU_ISEXTENDED) == Some(&1)
            {
                return Ok(Phase::SparseExt { data: size });
            }
        }
        Ok(data_phase(size, keep))
    }
}

/// Data of `size` bytes, padded to a block (the end, if that overflows: the tar crate fails).
fn data_phase(size: u64, keep: bool) -> Phase {
    match size.checked_add(BLOCK as u64 - 1) {
        Some(s) => Phase::Data {
            left: size,
            pad: (s & !(BLOCK as u64 - 1)) - size,
            keep,
        },
        None => Phase::Done,
    }
}

/// A PAX header's `size` record as the tar crate reads it: the first `size` key, unless a
/// malformed record or value comes first.
fn pax_size(data: &[u8]) -> Option<u64> {
    for ext in PaxExtensions::new(data) {
        let ext = ext.ok()?;
        if ext.key() != Ok("size") {
            continue;
        }
        return ext.value().ok()?.parse::<u64>().ok();
    }
    None
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other("tar stream refused earlier"));
        }
        let n = self.inner.read(buf)?;
        if let Err(e) = self.observe(buf.get(..n).unwrap_or_default()) {
            self.failed = true;
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A tar of `entries` (type, path, data) through `tar::Builder` (long paths become GNU
    /// long-name entries), PAX headers added with `append_pax_extensions`.
    fn sample() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("size", &b"1000"[..]), ("path", &b"p/x"[..])])
            .unwrap();
        let mut h = Header::new_ustar();
        h.set_size(1000);
        h.set_mode(0o644);
        b.append_data(&mut h, "p/x", &[7u8; 1000][..]).unwrap();
        let mut h = Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "l/".repeat(300), &b"abc"[..])
            .unwrap();
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "s", "t/".repeat(300)).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn guarded_archives_read_as_unguarded_ones() {
        let tar = sample();
        let list = |r: &mut dyn Read| {
            let mut a = tar::Archive::new(r);
            let mut v = Vec::new();
            for e in a.entries().unwrap() {
                let mut e = e.unwrap();
                let mut d = Vec::new();
                e.read_to_end(&mut d).unwrap();
                v.push((e.path_bytes().into_owned(), d));
            }
            v
        };
        let plain = list(&mut &tar[..]);
        assert_eq!(plain.len(), 3);
        // Read in odd pieces, so headers and data straddle reads.
        struct Dribble<'a>(&'a [u8]);
        impl Read for Dribble<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let k = buf.len().min(self.0.len()).min(37);
                buf[..k].copy_from_slice(&self.0[..k]);
                self.0 = &self.0[k..];
                Ok(k)
            }
        }
        let mut g = TarGuard::new(Dribble(&tar));
        assert_eq!(list(&mut g), plain);
        assert!(matches!(g.phase, Phase::Done | Phase::Header));
    }

    #[test]
    fn a_pax_size_record_moves_the_next_header_as_for_the_tar_crate() {
        // The header says 0 bytes, the PAX record 600: the next header is 1024 bytes on, and
        // an oversized long name hidden in the "data" is data, not a header.
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("size", &b"600"[..])]).unwrap();
        let mut data = vec![0u8; 600];
        let mut fake = Header::new_gnu();
        fake.set_entry_type(EntryType::GNULongName);
        fake.set_size(1 << 40);
        fake.set_cksum();
        data[..512].copy_from_slice(fake.as_bytes());
        let mut h = Header::new_ustar();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_path("f").unwrap();
        h.set_cksum();
        // `append` copies all the data whatever the header says, padded to a block.
        b.append(&h, &data[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let mut a = tar::Archive::new(TarGuard::new(&tar[..]));
        let sizes: Vec<u64> = a.entries().unwrap().map(|e| e.unwrap().size()).collect();
        assert_eq!(sizes, [600]);
    }
}
