//! The on-disk encoding of a snapshot's state file: a magic, a version, the body
//! length, the body, and an FNV-1a 64 checksum of the body. The body is a sequence of fixed-size
//! integers (little endian) and length-prefixed byte strings; KVM's structures go in as their raw
//! bytes with their exact size checked on the way back. [`Reader`] checks every length against
//! what is left and returns [`FormatError`]s: a truncated, corrupt or foreign file never panics.

use thiserror::Error;

/// The first 8 bytes of a state file.
pub const MAGIC: [u8; 8] = *b"RKTSNAP\0";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Largest state file we read (bytes): the state of one VM is a few tens of KiB.
pub const MAX_STATE_LEN: usize = 16 << 20;
/// Header: magic, version (u32), body length (u64).
const HEADER_LEN: usize = 8 + 4 + 8;
/// Trailer: the checksum (u64).
const TRAILER_LEN: usize = 8;

/// Why a state file cannot be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FormatError {
    /// Not a snapshot state file.
    #[error("not a snapshot state file (bad magic)")]
    BadMagic,
    /// Written by another format version.
    #[error("snapshot format version {0} (this build reads {VERSION})")]
    Version(u32),
    /// Shorter than its header says, or a field runs past the end.
    #[error("snapshot state truncated at {0}")]
    Truncated(&'static str),
    /// The checksum does not match the body.
    #[error("snapshot state checksum mismatch (corrupt file)")]
    Checksum,
    /// Bytes left over after the last field, or after the trailer.
    #[error("snapshot state has {0} unexpected trailing bytes")]
    Trailing(usize),
    /// A field has an impossible value.
    #[error("bad snapshot field {0}")]
    BadField(&'static str),
    /// The file is larger than [`MAX_STATE_LEN`].
    #[error("snapshot state too large ({0} bytes)")]
    TooLarge(usize),
}

/// FNV-1a, 64 bits.
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Plain-old-data: a `repr(C)` type made only of integers and arrays of them (KVM's structures),
/// so that its bytes can be written out and any byte string of its size read back.
///
/// # Safety
/// Implement only for types for which every bit pattern is a valid value and that have no
/// implicit padding.
pub unsafe trait Pod: Default {}

/// The bytes of `v`.
pub fn pod_bytes<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: `T: Pod` has no implicit padding, so all `size_of::<T>()` bytes are initialized;
    // the slice borrows `v`.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
}

/// A `T` from exactly `size_of::<T>()` bytes.
pub fn pod_from<T: Pod>(b: &[u8], what: &'static str) -> Result<T, FormatError> {
    if b.len() != std::mem::size_of::<T>() {
        return Err(FormatError::BadField(what));
    }
    let mut v = T::default();
    // SAFETY: `T: Pod` accepts any bit pattern; `b` has exactly `size_of::<T>()` bytes and
    // cannot overlap the local `v`.
    unsafe {
        std::ptr::copy_nonoverlapping(
            b.as_ptr(),
            (&mut v as *mut T).cast::<u8>(),
            std::mem::size_of::<T>(),
        );
    }
    Ok(v)
}

/// Builds a body.
#[derive(Default)]
pub struct Writer {
    body: Vec<u8>,
}

impl Writer {
    /// An empty body.
    pub fn new() -> Self {
        Self::default()
    }
    /// Appends a byte.
    pub fn u8(&mut self, v: u8) {
        self.body.push(v);
    }
    /// Appends a u32 (LE).
    pub fn u32(&mut self, v: u32) {
        self.body.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends a u64 (LE).
    pub fn u64(&mut self, v: u64) {
        self.body.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends a length-prefixed (u32) byte string.
    pub fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.body.extend_from_slice(b);
    }
    /// Appends a [`Pod`]'s raw bytes, length-prefixed.
    pub fn pod<T: Pod>(&mut self, v: &T) {
        self.bytes(pod_bytes(v));
    }
    /// The whole file: header, body, checksum.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.body.len() + TRAILER_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(self.body.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.body);
        out.extend_from_slice(&fnv1a64(&self.body).to_le_bytes());
        out
    }
}

/// Reads a body, checking every length.
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Checks the header, the length and the checksum of `file`; returns a reader of its body.
    pub fn open(file: &'a [u8]) -> Result<Reader<'a>, FormatError> {
        if file.len() > MAX_STATE_LEN {
            return Err(FormatError::TooLarge(file.len()));
        }
        let magic = file.get(..8).ok_or(FormatError::Truncated("magic"))?;
        if magic != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let mut r = Reader {
            rest: file.get(8..).unwrap_or_default(),
        };
        let version = r.u32("version")?;
        if version != VERSION {
            return Err(FormatError::Version(version));
        }
        let len = usize::try_from(r.u64("body length")?)
            .map_err(|_| FormatError::BadField("body length"))?;
        let body = r.take(len, "body")?;
        let sum = r.u64("checksum")?;
        if !r.rest.is_empty() {
            return Err(FormatError::Trailing(r.rest.len()));
        }
        if fnv1a64(body) != sum {
            return Err(FormatError::Checksum);
        }
        Ok(Reader { rest: body })
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
        if n > self.rest.len() {
            return Err(FormatError::Truncated(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// A byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, FormatError> {
        Ok(self.take(1, what)?.first().copied().unwrap_or_default())
    }
    /// A u32 (LE).
    pub fn u32(&mut self, what: &'static str) -> Result<u32, FormatError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4, what)?);
        Ok(u32::from_le_bytes(b))
    }
    /// A u64 (LE).
    pub fn u64(&mut self, what: &'static str) -> Result<u64, FormatError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_le_bytes(b))
    }
    /// A length-prefixed byte string.
    pub fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], FormatError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    /// A [`Pod`] written by [`Writer::pod`] (its size must match exactly).
    pub fn pod<T: Pod>(&mut self, what: &'static str) -> Result<T, FormatError> {
        pod_from(self.bytes(what)?, what)
    }
    /// A count for a list of items, each at least `min_item` bytes: refuses counts the rest of
    /// the body cannot hold (so a corrupt count never makes a huge allocation).
    pub fn count(&mut self, what: &'static str, min_item: usize) -> Result<usize, FormatError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_item.max(1)) > self.rest.len() {
            return Err(FormatError::Truncated(what));
        }
        Ok(n)
    }
    /// Fails when bytes are left (call after the last field).
    pub fn end(self) -> Result<(), FormatError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(FormatError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Default, Debug, PartialEq)]
    #[repr(C)]
    struct P {
        a: u64,
        b: u32,
        c: u32,
    }
    // SAFETY: integers only, no padding (8 + 4 + 4).
    unsafe impl Pod for P {}

    fn sample() -> Vec<u8> {
        let mut w = Writer::new();
        w.u8(7);
        w.u32(0xdead_beef);
        w.u64(u64::MAX - 1);
        w.bytes(b"hello");
        w.pod(&P { a: 1, b: 2, c: 3 });
        w.finish()
    }

    #[test]
    fn round_trip() {
        let f = sample();
        let mut r = Reader::open(&f).expect("opens");
        assert_eq!(r.u8("a"), Ok(7));
        assert_eq!(r.u32("b"), Ok(0xdead_beef));
        assert_eq!(r.u64("c"), Ok(u64::MAX - 1));
        assert_eq!(r.bytes("d"), Ok(&b"hello"[..]));
        assert_eq!(r.pod::<P>("e"), Ok(P { a: 1, b: 2, c: 3 }));
        assert_eq!(r.end(), Ok(()));
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_an_error() {
        let f = sample();
        for n in 0..f.len() {
            assert!(Reader::open(&f[..n]).is_err(), "truncated to {n} opened");
        }
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x41;
            assert!(Reader::open(&g).is_err(), "byte {i} flipped opened");
        }
        let mut long = f.clone();
        long.push(0);
        assert_eq!(Reader::open(&long).err(), Some(FormatError::Trailing(1)));
    }

    #[test]
    fn foreign_and_future_files_are_named() {
        assert_eq!(
            Reader::open(b"ELF\x7f....").err(),
            Some(FormatError::BadMagic)
        );
        let mut f = sample();
        f[8] = 9;
        assert_eq!(Reader::open(&f).err(), Some(FormatError::Version(9)));
    }

    #[test]
    fn fields_past_the_end_and_wrong_sizes_are_errors() {
        let mut w = Writer::new();
        w.u32(1_000_000); // a count no body can hold
        w.bytes(&[1, 2, 3]);
        let f = w.finish();
        let mut r = Reader::open(&f).expect("opens");
        assert_eq!(r.count("n", 8), Err(FormatError::Truncated("n")));
        let mut r = Reader::open(&f).expect("opens");
        assert_eq!(r.u32("n"), Ok(1_000_000));
        assert_eq!(r.pod::<P>("p"), Err(FormatError::BadField("p")));
        let mut r = Reader::open(&f).expect("opens");
        let _ = r.u32("n");
        let _ = r.bytes("b");
        assert_eq!(r.u64("x"), Err(FormatError::Truncated("x")));
    }
}
