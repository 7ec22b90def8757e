//! One-pass import: sniff and decompress the input, write the uncompressed tar to `out`,
//! hash it (sha256 + sha512) and check the ACI layout, all while streaming.
//!
//! Pipeline (3 threads, neither `input` nor `out` has to be `Send`):
//!
//! ```text
//! caller thread: read input ──compressed chunks──> decoder thread: decompress, limits
//!      ^                                              │ uncompressed chunks (Arc, shared)
//!      └──────────── write `out` <────────────────────┤
//!                                                     └──> walker thread: sha256, sha512, tar walk
//! ```
//!
//! All channels are bounded, so memory stays below
//! `INPUT_CHUNK_BYTES * INPUT_QUEUE + CHUNK_BYTES * 2 * QUEUE_CHUNKS` plus the chunks in use.

use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use sha2::{Digest, Sha256, Sha512};

use super::layout::LayoutChecker;
use super::{sniff, AciError, Compression, TarGuard, SNIFF_LEN};
use crate::id::ImageDigest;
use crate::schema::ImageManifest;

/// Size of one uncompressed chunk (bytes).
const CHUNK_BYTES: usize = 1 << 20;
/// Uncompressed chunks in flight per consumer (count).
const QUEUE_CHUNKS: usize = 4;
/// Size of one read from the input (bytes).
const INPUT_CHUNK_BYTES: usize = 256 << 10;
/// Compressed chunks in flight to the decoder (count).
const INPUT_QUEUE: usize = 8;
/// How long the caller thread waits for output before retrying a full input queue.
const POLL: Duration = Duration::from_millis(1);
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
    /// Most memory the layout check spends remembering paths: one tree node per path
    /// component (its name plus a fixed 96 per node) (bytes; default 512 MiB, room for
    /// 1 000 000 entries of ordinary paths).
    pub max_path_tree_bytes: u64,
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
            max_path_tree_bytes: 512 << 20,
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

/// The decoder's input: compressed chunks from the caller thread, as a `BufRead`.
struct InputChunks {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    /// Compressed bytes received so far.
    count: u64,
}

impl Read for InputChunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        if let (Some(src), Some(dst)) = (avail.get(..n), buf.get_mut(..n)) {
            dst.copy_from_slice(src);
        }
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for InputChunks {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos >= self.cur.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.count += c.len() as u64;
                    self.cur = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(&[]),
            }
        }
        Ok(self.cur.get(self.pos..).unwrap_or_default())
    }

    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.cur.len());
    }
}

/// The walker's view of the stream: a reader over the chunks that hashes each chunk as it
/// arrives and remembers how the stream ended.
struct ChunkReader {
    rx: Receiver<Arc<Vec<u8>>>,
    cur: Arc<Vec<u8>>,
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
        match self.rx.recv() {
            Ok(c) => {
                self.sha256.update(&c[..]);
                self.sha512.update(&c[..]);
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

/// What the walker found.
struct Walked {
    manifest: ImageManifest,
    manifest_json: Vec<u8>,
    digest: ImageDigest,
    total: u64,
}

fn walk(mut reader: ChunkReader, limits: &Limits) -> Result<Walked, AciError> {
    let mut checker = LayoutChecker::new(limits);
    {
        let mut archive = tar::Archive::new(TarGuard::new(&mut reader));
        let entries = archive.entries().map_err(AciError::tar)?;
        for entry in entries {
            let mut entry = entry.map_err(AciError::tar)?;
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

/// A decompressor over the input chunks.
fn decoder(c: Compression, input: InputChunks) -> Box<dyn DecodeRead> {
    match c {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(input)),
        Compression::Xz => Box::new(lzma_rust2::XzReader::new(input, true)),
    }
}

/// A decoder that can report how many compressed bytes it has pulled in.
trait DecodeRead: Read {
    fn compressed(&self) -> u64;
}

impl DecodeRead for InputChunks {
    fn compressed(&self) -> u64 {
        self.count
    }
}

impl DecodeRead for flate2::bufread::MultiGzDecoder<InputChunks> {
    fn compressed(&self) -> u64 {
        self.get_ref().count
    }
}

impl DecodeRead for bzip2::bufread::MultiBzDecoder<InputChunks> {
    fn compressed(&self) -> u64 {
        self.get_ref().count
    }
}

impl DecodeRead for lzma_rust2::XzReader<InputChunks> {
    fn compressed(&self) -> u64 {
        self.inner().count
    }
}

/// Why the decoder thread stopped early.
enum Decode {
    /// A consumer (walker or caller thread) hung up; it has the real error.
    ConsumerGone,
    /// Decompression failed or a limit was hit.
    Err(AciError),
}

/// Decoder thread: decompress, enforce size limits, fan chunks out to the caller thread
/// (for `out`) and the walker.
fn decode(
    mut dec: Box<dyn DecodeRead>,
    compression: Compression,
    limits: &Limits,
    to_out: SyncSender<Arc<Vec<u8>>>,
    to_walk: SyncSender<Arc<Vec<u8>>>,
) -> Result<u64, Decode> {
    let mut total: u64 = 0;
    loop {
        let mut buf = vec![0u8; CHUNK_BYTES];
        let n = read_full(&mut *dec, &mut buf).map_err(|e| {
            Decode::Err(match compression {
                Compression::None => AciError::Read(e),
                c => AciError::Corrupt(c.name(), e),
            })
        })?;
        if n == 0 {
            return Ok(total);
        }
        buf.truncate(n);
        total += n as u64;
        if total > limits.max_uncompressed_bytes {
            return Err(Decode::Err(AciError::TooBig {
                limit: limits.max_uncompressed_bytes,
            }));
        }
        if total > limits.ratio_grace_bytes && total / dec.compressed().max(1) > limits.max_ratio {
            return Err(Decode::Err(AciError::Ratio {
                limit: limits.max_ratio,
            }));
        }
        let chunk = Arc::new(buf);
        if to_walk.send(Arc::clone(&chunk)).is_err() || to_out.send(chunk).is_err() {
            return Err(Decode::ConsumerGone);
        }
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
    mut input: R,
    mut out: W,
    limits: &Limits,
    progress: &mut dyn FnMut(u64),
) -> Result<Imported, AciError> {
    let mut head = vec![0u8; SNIFF_LEN];
    let n = read_full(&mut input, &mut head).map_err(AciError::Read)?;
    head.truncate(n);
    let compression = sniff(&head)?;
    let mut consumed = n as u64;

    let (in_tx, in_rx) = mpsc::sync_channel::<Vec<u8>>(INPUT_QUEUE);
    let (out_tx, out_rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(QUEUE_CHUNKS);
    let (walk_tx, walk_rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(QUEUE_CHUNKS);
    let chunks = InputChunks {
        rx: in_rx,
        cur: head,
        pos: 0,
        count: n as u64,
    };
    let reader = ChunkReader {
        rx: walk_rx,
        cur: Arc::new(Vec::new()),
        pos: 0,
        sha256: Sha256::new(),
        sha512: Sha512::new(),
        total: 0,
        trailing_zeros: 0,
        eof: false,
    };

    thread::scope(|s| {
        let walker = s.spawn(move || walk(reader, limits));
        let decoder = s.spawn(move || {
            decode(
                decoder(compression, chunks),
                compression,
                limits,
                out_tx,
                walk_tx,
            )
        });
        progress(consumed);
        let pumped = pump(
            &mut input,
            &mut out,
            in_tx,
            &out_rx,
            &mut consumed,
            progress,
        );
        drop(out_rx);
        let decoded = decoder.join().map_err(|_| AciError::WorkerPanicked)?;
        let walked = walker.join().map_err(|_| AciError::WorkerPanicked)?;
        // The caller thread's own I/O errors first, then the decoder's (a corrupt stream
        // also makes the walker fail, less precisely), then the walker's.
        let written = pumped?;
        let uncompressed = match decoded {
            Ok(n) => n,
            Err(Decode::Err(e)) => return Err(e),
            Err(Decode::ConsumerGone) => {
                return Err(walked.err().unwrap_or(AciError::WorkerPanicked));
            }
        };
        let w = walked?;
        if written != uncompressed || w.total != uncompressed {
            return Err(AciError::WorkerPanicked);
        }
        out.flush().map_err(AciError::Write)?;
        Ok(Imported {
            manifest: w.manifest,
            manifest_json: w.manifest_json,
            digest: w.digest,
            uncompressed_size: w.total,
            compressed_size: consumed,
            compression,
        })
    })
}

/// Caller thread: feed input chunks to the decoder and write decoded chunks to `out`,
/// never blocking on one while the other could make progress. Returns bytes written.
fn pump(
    input: &mut dyn Read,
    out: &mut dyn Write,
    in_tx: SyncSender<Vec<u8>>,
    out_rx: &Receiver<Arc<Vec<u8>>>,
    consumed: &mut u64,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, AciError> {
    let mut written: u64 = 0;
    let mut write = |chunk: Arc<Vec<u8>>, written: &mut u64| -> Result<(), AciError> {
        out.write_all(&chunk[..]).map_err(AciError::Write)?;
        *written += chunk.len() as u64;
        Ok(())
    };
    let mut in_tx = Some(in_tx);
    loop {
        // Write whatever is ready.
        loop {
            match out_rx.try_recv() {
                Ok(c) => write(c, &mut written)?,
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return Ok(written),
            }
        }
        let Some(tx) = &in_tx else {
            // Input finished: only output is left.
            match out_rx.recv() {
                Ok(c) => write(c, &mut written)?,
                Err(_) => return Ok(written),
            }
            continue;
        };
        let mut buf = vec![0u8; INPUT_CHUNK_BYTES];
        let n = loop {
            match input.read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(AciError::Read(e)),
            }
        };
        if n == 0 {
            in_tx = None;
            continue;
        }
        buf.truncate(n);
        *consumed += n as u64;
        progress(*consumed);
        let mut pending = buf;
        loop {
            match tx.try_send(pending) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    pending = back;
                    match out_rx.recv_timeout(POLL) {
                        Ok(c) => write(c, &mut written)?,
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return Ok(written),
                    }
                }
                // The decoder stopped; its result says why.
                Err(TrySendError::Disconnected(_)) => return Ok(written),
            }
        }
    }
}

/// Read and validate the manifest of an uncompressed ACI tar (stops after it).
pub fn read_manifest_from_tar<R: Read>(tar: R) -> Result<(ImageManifest, Vec<u8>), AciError> {
    let limits = Limits::default();
    let mut archive = tar::Archive::new(TarGuard::new(tar));
    for entry in archive.entries().map_err(AciError::tar)? {
        let entry = entry.map_err(AciError::tar)?;
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

/// Read and validate the manifest of an ACI in any supported compression (stops after it;
/// nothing is hashed or checked beyond the manifest).
pub fn read_manifest<R: Read>(mut input: R) -> Result<(ImageManifest, Vec<u8>), AciError> {
    let mut head = vec![0u8; SNIFF_LEN];
    let n = read_full(&mut input, &mut head).map_err(AciError::Read)?;
    head.truncate(n);
    let c = sniff(&head)?;
    let buffered = io::BufReader::new(io::Cursor::new(head).chain(input));
    let tar: Box<dyn Read> = match c {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(buffered)),
        Compression::Xz => Box::new(lzma_rust2::XzReader::new(buffered, true)),
    };
    read_manifest_from_tar(tar)
}
