//! One-pass import: sniff and decompress the input, write the uncompressed tar to `out`,
//! hash it (sha256 + sha512) and check the ACI layout, all while streaming.
//!
//! Pipeline (2 threads): the calling thread reads, decompresses, enforces size limits and
//! writes `out`; a worker thread hashes each chunk and walks the tar. Chunks are handed
//! over through a bounded channel and recycled, so memory stays at
//! `CHUNK_BYTES * (QUEUE_CHUNKS + 2)`.

use std::cell::Cell;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread;

use sha2::{Digest, Sha256, Sha512};

use super::layout::LayoutChecker;
use super::{sniff, AciError, Compression, SNIFF_LEN};
use crate::id::ImageDigest;
use crate::schema::ImageManifest;

/// Size of one uncompressed chunk handed to the worker (bytes).
const CHUNK_BYTES: usize = 1 << 20;
/// Chunks in flight between the threads (count).
const QUEUE_CHUNKS: usize = 4;
/// Read buffer for the compressed input (bytes).
const INPUT_BUF_BYTES: usize = 256 << 10;
/// Size of a tar block (bytes).
const TAR_BLOCK: u64 = 512;

/// Resource limits of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest uncompressed tar accepted (bytes; default 16 GiB).
    pub max_uncompressed_bytes: u64,
    /// Largest uncompressed/compressed ratio (default 200), enforced once more than
    /// `ratio_grace_bytes` are uncompressed.
    pub max_ratio: u64,
    /// Uncompressed bytes before the ratio limit applies (bytes; default 64 MiB).
    pub ratio_grace_bytes: u64,
    /// Most tar entries accepted (count; default 1 000 000).
    pub max_entries: u64,
    /// Largest manifest accepted (bytes; default 1 MiB).
    pub max_manifest_bytes: u64,
    /// Accept character/block devices and fifos in rootfs/ (default false).
    pub allow_devices: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_uncompressed_bytes: 16 << 30,
            max_ratio: 200,
            ratio_grace_bytes: 64 << 20,
            max_entries: 1_000_000,
            max_manifest_bytes: 1 << 20,
            allow_devices: false,
        }
    }
}

/// Result of a successful import.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The validated manifest.
    pub manifest: ImageManifest,
    /// The manifest exactly as stored in the image.
    pub manifest_json: Vec<u8>,
    /// sha256 and sha512 of the uncompressed tar.
    pub digest: ImageDigest,
    /// Bytes of uncompressed tar (as written to `out`).
    pub uncompressed_size: u64,
    /// Bytes of input consumed.
    pub compressed_size: u64,
    /// The input's compression.
    pub compression: Compression,
}

/// Counts bytes read through it into a shared cell.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// Read until `buf` is full or EOF; returns the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(buf.get_mut(n..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The worker's view of the stream: a reader over the chunks that hashes each chunk as it
/// arrives and remembers how the stream ended.
struct ChunkReader {
    rx: Receiver<Vec<u8>>,
    recycle: SyncSender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    sha256: Sha256,
    sha512: Sha512,
    total: u64,
    /// Zero bytes at the end of what the tar reader consumed (count).
    trailing_zeros: u64,
    eof: bool,
}

impl ChunkReader {
    fn next_chunk(&mut self) -> bool {
        let old = std::mem::take(&mut self.cur);
        if old.capacity() > 0 {
            let _ = self.recycle.try_send(old);
        }
        match self.rx.recv() {
            Ok(c) => {
                self.sha256.update(&c);
                self.sha512.update(&c);
                self.total += c.len() as u64;
                self.cur = c;
                self.pos = 0;
                true
            }
            Err(_) => {
                self.eof = true;
                false
            }
        }
    }

    /// Hash everything after the tar's end marker.
    fn drain(&mut self) {
        while self.next_chunk() {}
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            if self.eof || !self.next_chunk() {
                return Ok(0);
            }
        }
        let avail = self.cur.get(self.pos..).unwrap_or_default();
        let n = avail.len().min(buf.len());
        let (src, dst) = (
            avail.get(..n).unwrap_or_default(),
            buf.get_mut(..n).unwrap_or_default(),
        );
        dst.copy_from_slice(src);
        self.pos += n;
        match src.iter().rposition(|&b| b != 0) {
            Some(i) => self.trailing_zeros = (n - 1 - i) as u64,
            None => self.trailing_zeros += n as u64,
        }
        Ok(n)
    }
}

/// What the worker found.
struct Walked {
    manifest: ImageManifest,
    manifest_json: Vec<u8>,
    digest: ImageDigest,
    total: u64,
}

fn walk(mut reader: ChunkReader, limits: &Limits) -> Result<Walked, AciError> {
    let mut checker = LayoutChecker::new(limits);
    {
        let mut archive = tar::Archive::new(&mut reader);
        let entries = archive.entries().map_err(AciError::CorruptTar)?;
        for entry in entries {
            let mut entry = entry.map_err(AciError::CorruptTar)?;
            checker.check(&mut entry)?;
        }
    }
    // The tar reader stops at the first zero block (or at EOF without one).
    if reader.eof && reader.trailing_zeros < TAR_BLOCK {
        return Err(AciError::Truncated);
    }
    reader.drain();
    let (manifest, manifest_json) = checker.finish()?;
    let mut digest = ImageDigest {
        sha256: [0; 32],
        sha512: [0; 64],
    };
    digest.sha256.copy_from_slice(&reader.sha256.finalize());
    digest.sha512.copy_from_slice(&reader.sha512.finalize());
    Ok(Walked {
        manifest,
        manifest_json,
        digest,
        total: reader.total,
    })
}

/// A decompressor over the (buffered, counted) input.
fn decoder<'a, R: BufRead + 'a>(c: Compression, input: R) -> Box<dyn Read + 'a> {
    match c {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(input)),
        Compression::Xz => Box::new(xz2::bufread::XzDecoder::new_multi_decoder(input)),
    }
}

/// Import an ACI in ONE pass: sniff and decompress `input`, write the uncompressed tar
/// bytes to `out`, hash them with sha256 and sha512, and walk the tar checking every entry
/// (exactly `manifest` + `rootfs/...` at top; no `..`, no absolute paths, no duplicates,
/// symlink targets inside rootfs/, nothing below a symlink, hardlinks to earlier entries,
/// no devices unless allowed, `limits`). `progress` gets the number of compressed bytes
/// consumed so far.
///
/// On error `out` holds a partial tar; the caller discards it.
pub fn import<R: Read, W: Write>(
    input: R,
    mut out: W,
    limits: &Limits,
    progress: &mut dyn FnMut(u64),
) -> Result<Imported, AciError> {
    let count = Rc::new(Cell::new(0u64));
    let mut counted = Counting {
        inner: input,
        count: Rc::clone(&count),
    };
    let mut head = vec![0u8; SNIFF_LEN];
    let n = read_full(&mut counted, &mut head).map_err(AciError::Read)?;
    head.truncate(n);
    let compression = sniff(&head)?;
    let buffered = BufReader::with_capacity(INPUT_BUF_BYTES, io::Cursor::new(head).chain(counted));
    let mut dec = decoder(compression, buffered);

    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(QUEUE_CHUNKS);
    let (recycle_tx, recycle_rx) = mpsc::sync_channel::<Vec<u8>>(QUEUE_CHUNKS + 2);
    let reader = ChunkReader {
        rx,
        recycle: recycle_tx,
        cur: Vec::new(),
        pos: 0,
        sha256: Sha256::new(),
        sha512: Sha512::new(),
        total: 0,
        trailing_zeros: 0,
        eof: false,
    };

    thread::scope(|s| {
        let worker = s.spawn(move || walk(reader, limits));
        let fed = feed(
            &mut *dec,
            &mut out,
            &tx,
            &recycle_rx,
            limits,
            &count,
            compression,
            progress,
        );
        drop(tx);
        let walked = worker.join().map_err(|_| AciError::WorkerPanicked);
        // Reading/limit errors explain a worker failure (e.g. "truncated"), so they win;
        // a closed channel means the worker stopped first with its own error.
        let uncompressed = match fed {
            Ok(n) => n,
            Err(Feed::WorkerGone) => {
                return Err(walked?.err().unwrap_or(AciError::WorkerPanicked));
            }
            Err(Feed::Err(e)) => return Err(e),
        };
        let w = walked??;
        debug_assert_eq!(w.total, uncompressed);
        out.flush().map_err(AciError::Write)?;
        Ok(Imported {
            manifest: w.manifest,
            manifest_json: w.manifest_json,
            digest: w.digest,
            uncompressed_size: w.total,
            compressed_size: count.get(),
            compression,
        })
    })
}

/// Why feeding stopped early.
enum Feed {
    /// The worker dropped its receiver (it has an error to report).
    WorkerGone,
    /// Reading, decompressing, writing or a limit failed.
    Err(AciError),
}

#[allow(clippy::too_many_arguments)]
fn feed(
    dec: &mut dyn Read,
    out: &mut dyn Write,
    tx: &SyncSender<Vec<u8>>,
    recycled: &Receiver<Vec<u8>>,
    limits: &Limits,
    count: &Cell<u64>,
    compression: Compression,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, Feed> {
    let mut total: u64 = 0;
    loop {
        let mut buf = recycled.try_recv().unwrap_or_default();
        buf.resize(CHUNK_BYTES, 0);
        let n = read_full(dec, &mut buf).map_err(|e| {
            Feed::Err(match compression {
                Compression::None => AciError::Read(e),
                // A read error of the underlying input surfaces as a decoder error too;
                // both mean the stream cannot be trusted.
                c => AciError::Corrupt(c.name(), e),
            })
        })?;
        if n == 0 {
            progress(count.get());
            return Ok(total);
        }
        buf.truncate(n);
        total += n as u64;
        if total > limits.max_uncompressed_bytes {
            return Err(Feed::Err(AciError::TooBig {
                limit: limits.max_uncompressed_bytes,
            }));
        }
        if total > limits.ratio_grace_bytes && total / count.get().max(1) > limits.max_ratio {
            return Err(Feed::Err(AciError::Ratio {
                limit: limits.max_ratio,
            }));
        }
        out.write_all(&buf)
            .map_err(|e| Feed::Err(AciError::Write(e)))?;
        progress(count.get());
        if tx.send(buf).is_err() {
            return Err(Feed::WorkerGone);
        }
    }
}

/// Read and validate the manifest of an uncompressed ACI tar (stops after it).
pub fn read_manifest_from_tar<R: Read>(tar: R) -> Result<(ImageManifest, Vec<u8>), AciError> {
    let limits = Limits::default();
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(AciError::CorruptTar)? {
        let entry = entry.map_err(AciError::CorruptTar)?;
        let path = super::layout::clean_path(&entry.path_bytes()).unwrap_or_default();
        if path != b"manifest" {
            continue;
        }
        let size = entry.header().size().map_err(AciError::CorruptTar)?;
        if size > limits.max_manifest_bytes {
            return Err(AciError::ManifestTooBig {
                size,
                limit: limits.max_manifest_bytes,
            });
        }
        let mut buf = Vec::new();
        entry
            .take(limits.max_manifest_bytes)
            .read_to_end(&mut buf)
            .map_err(AciError::CorruptTar)?;
        let m = ImageManifest::from_json(&buf).map_err(AciError::Manifest)?;
        return Ok((m, buf));
    }
    Err(AciError::MissingManifest)
}
