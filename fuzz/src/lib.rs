//! Helpers shared by the fuzz targets: a byte cursor that never fails (reads past the end give
//! zeros) and per-process scratch directories removed at exit.

pub mod guest;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Reads little-endian values from fuzz input; past the end every read yields zeros.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// Whether all input was consumed.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Bytes left.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }

    /// Exactly `N` bytes, zero-padded at the end of the input.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let src = self.take(N);
        out[..src.len()].copy_from_slice(src);
        out
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// A little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }
}

static SCRATCH: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

extern "C" fn remove_scratch() {
    if let Ok(dirs) = SCRATCH.lock() {
        for d in dirs.iter() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A fresh directory `<base>/rkt-fuzz-<name>-<pid>`, removed when the process exits normally
/// (a crashing run leaves it behind for inspection). The base is `$RKT_FUZZ_TMPDIR`, else
/// `/dev/shm` (tmpfs: file-system targets run about 20 times faster than on a disk), else the
/// temporary directory.
pub fn scratch_dir(name: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = match std::env::var_os("RKT_FUZZ_TMPDIR") {
        Some(d) => PathBuf::from(d),
        None if shm.is_dir() => shm.to_path_buf(),
        None => std::env::temp_dir(),
    };
    let dir = base.join(format!("rkt-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    let mut dirs = SCRATCH.lock().expect("scratch list");
    if dirs.is_empty() {
        // SAFETY: `remove_scratch` is an `extern "C" fn()` that stays valid for the whole process.
        unsafe { libc::atexit(remove_scratch) };
    }
    dirs.push(dir.clone());
    dir
}

/// Writes a raw disk image of `sectors` 512-byte sectors with a recognisable pattern.
pub fn disk_image(dir: &Path, sectors: u64) -> PathBuf {
    let path = dir.join("disk.raw");
    let bytes: Vec<u8> = (0..sectors * 512).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, bytes).expect("write the disk image");
    path
}
