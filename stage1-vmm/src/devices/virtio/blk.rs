//! virtio-blk (device ID 2), read-only, over a raw image file.
//!
//! The format is raw, stated by the caller, never sniffed. The device offers `VIRTIO_BLK_F_RO`;
//! writes are answered with `VIRTIO_BLK_S_IOERR`, reads past the end too. One request queue; each
//! drain serves at most one queue's worth of requests. A malformed request (no status byte, a
//! header too short) is answered per request; only queue corruption is device-fatal.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue};
use vmm_sys_util::epoll::Epoll;

use super::queue::QueueError;
use super::worker::{self, DeviceError, Drain, Worker, WorkerHandle};
use super::{ActivateArgs, ActivateError, Interrupt, LogLimiter, VirtioDevice, TYPE_BLOCK};
use crate::memory::GuestMem;

/// Sector size of the virtio-blk protocol (bytes).
pub const SECTOR_SIZE: u64 = 512;
/// Request queue size (entries).
pub const QUEUE_SIZE: u16 = 256;
/// Feature bit: maximum segments per request in `seg_max` (bit number).
const VIRTIO_BLK_F_SEG_MAX: u32 = 2;
/// Feature bit: the device is read-only (bit number).
const VIRTIO_BLK_F_RO: u32 = 5;
/// Request type: read.
const VIRTIO_BLK_T_IN: u32 = 0;
/// Request type: write.
const VIRTIO_BLK_T_OUT: u32 = 1;
/// Request type: flush.
const VIRTIO_BLK_T_FLUSH: u32 = 4;
/// Request type: get the device ID string.
const VIRTIO_BLK_T_GET_ID: u32 = 8;
/// Status: success.
const VIRTIO_BLK_S_OK: u8 = 0;
/// Status: I/O error.
const VIRTIO_BLK_S_IOERR: u8 = 1;
/// Status: unsupported request.
const VIRTIO_BLK_S_UNSUPP: u8 = 2;
/// Length of the device ID string (bytes).
const ID_BYTES: usize = 20;
/// Request header: type, reserved, sector (bytes).
const HEADER_LEN: usize = 16;
/// Bounce-buffer size for reads (bytes).
const CHUNK: usize = 64 * 1024;
/// Size of the config space we expose: capacity, size_max, seg_max (bytes).
const CONFIG_LEN: usize = 16;

/// Errors opening a block device backend.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The image cannot be opened or measured.
    #[error("cannot open disk image {path:?}")]
    Open {
        /// The image path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A read-only virtio block device backed by a raw image.
pub struct Block {
    file: Arc<File>,
    config: [u8; CONFIG_LEN],
    id: [u8; ID_BYTES],
    capacity: u64,
    worker: Option<WorkerHandle>,
    log_limit: LogLimiter,
}

impl Block {
    /// Opens the raw image at `path` read-only; `id` is what the guest sees as the serial
    /// (truncated to 20 bytes). A trailing partial sector is not exposed.
    pub fn new(path: &Path, id: &str) -> Result<Block, BlockError> {
        let open_err = |source| BlockError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        let capacity = len / SECTOR_SIZE;
        let mut config = [0u8; CONFIG_LEN];
        let seg_max = u32::from(QUEUE_SIZE) - 2;
        for (dst, src) in config.iter_mut().zip(
            capacity
                .to_le_bytes()
                .into_iter()
                .chain(0u32.to_le_bytes())
                .chain(seg_max.to_le_bytes()),
        ) {
            *dst = src;
        }
        let mut id_bytes = [0u8; ID_BYTES];
        for (d, s) in id_bytes.iter_mut().zip(id.as_bytes()) {
            *d = *s;
        }
        Ok(Block {
            file: Arc::new(file),
            config,
            id: id_bytes,
            capacity,
            worker: None,
            log_limit: LogLimiter::default(),
        })
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        (1u64 << VIRTIO_BLK_F_RO) | (1u64 << VIRTIO_BLK_F_SEG_MAX)
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        guest_warn!(
            self.log_limit,
            "virtio-blk: write to read-only config space at {offset:#x} ignored"
        );
    }

    fn activate(&mut self, args: ActivateArgs) -> Result<(), ActivateError> {
        let queues = self.queue_max_sizes().len();
        worker::activate(
            &mut self.worker,
            args,
            queues,
            "virtio-blk",
            |mem, queues, interrupt| BlockWorker {
                mem,
                queues,
                interrupt,
                file: self.file.clone(),
                capacity: self.capacity,
                id: self.id,
                buf: vec![0u8; CHUNK],
                log_limit: LogLimiter::default(),
            },
        )
    }

    fn reset(&mut self) {
        // Dropping the handle stops the worker's loop and waits for it.
        self.worker = None;
    }
}

struct BlockWorker {
    mem: GuestMem,
    queues: Vec<Queue>,
    interrupt: Interrupt,
    file: Arc<File>,
    capacity: u64,
    id: [u8; ID_BYTES],
    buf: Vec<u8>,
    log_limit: LogLimiter,
}

impl BlockWorker {
    /// Serves one request; returns the number of bytes written to the guest.
    fn request(&mut self, chain: DescriptorChain<&GuestMem>) -> u32 {
        let mem = self.mem.clone();
        let (Ok(mut r), Ok(mut w)) = (chain.clone().reader(&mem), chain.writer(&mem)) else {
            guest_warn!(self.log_limit, "virtio-blk: bad request buffers");
            return 0;
        };
        // The status byte is the last writable byte.
        let Some(data_len) = w.available_bytes().checked_sub(1) else {
            guest_warn!(self.log_limit, "virtio-blk: request without a status byte");
            return 0;
        };
        let Ok(mut status_w) = w.split_at(data_len) else {
            return 0;
        };
        let mut hdr = [0u8; HEADER_LEN];
        let status = if r.read_exact(&mut hdr).is_err() {
            VIRTIO_BLK_S_IOERR
        } else {
            let (ty, sector) = parse_header(&hdr);
            match ty {
                VIRTIO_BLK_T_IN => self.read(sector, &mut w, data_len),
                VIRTIO_BLK_T_OUT => VIRTIO_BLK_S_IOERR,
                VIRTIO_BLK_T_FLUSH => VIRTIO_BLK_S_OK,
                VIRTIO_BLK_T_GET_ID => match w.write_all(&self.id) {
                    Ok(()) => VIRTIO_BLK_S_OK,
                    Err(_) => VIRTIO_BLK_S_IOERR,
                },
                _ => VIRTIO_BLK_S_UNSUPP,
            }
        };
        if status_w.write_all(&[status]).is_err() {
            return 0;
        }
        u32::try_from(w.bytes_written() + 1).unwrap_or(u32::MAX)
    }

    /// Reads `len` bytes from `sector` into the guest buffers.
    fn read(&mut self, sector: u64, w: &mut virtio_queue::Writer<'_>, len: usize) -> u8 {
        let end = sector
            .checked_mul(SECTOR_SIZE)
            .and_then(|start| start.checked_add(len as u64).map(|end| (start, end)));
        let Some((mut off, end)) = end.filter(|(_, end)| *end <= self.capacity * SECTOR_SIZE)
        else {
            log::debug!("virtio-blk: read beyond the end (sector {sector}, {len} bytes)");
            return VIRTIO_BLK_S_IOERR;
        };
        while off < end {
            let n = usize::try_from(end - off).unwrap_or(CHUNK).min(CHUNK);
            let Some(buf) = self.buf.get_mut(..n) else {
                return VIRTIO_BLK_S_IOERR;
            };
            if let Err(e) = self.file.read_exact_at(buf, off) {
                log::warn!("virtio-blk: read failed: {e}");
                return VIRTIO_BLK_S_IOERR;
            }
            if w.write_all(buf).is_err() {
                return VIRTIO_BLK_S_IOERR;
            }
            off += n as u64;
        }
        VIRTIO_BLK_S_OK
    }

    /// Serves up to one queue's worth of requests ([`worker::serve_queue`]; the queues are
    /// moved out meanwhile, as [`BlockWorker::request`] borrows the whole worker).
    fn drain(&mut self) -> Result<Drain, QueueError> {
        let mem = self.mem.clone();
        let interrupt = self.interrupt.clone();
        let mut queues = std::mem::take(&mut self.queues);
        let r = match queues.first_mut() {
            Some(q) => worker::serve_queue(q, &mem, &interrupt, |chain| Ok(self.request(chain))),
            None => Ok(Drain::Done),
        };
        self.queues = queues;
        r
    }
}

/// Request type and start sector from a request header.
fn parse_header(hdr: &[u8; HEADER_LEN]) -> (u32, u64) {
    let [t0, t1, t2, t3, _, _, _, _, s0, s1, s2, s3, s4, s5, s6, s7] = *hdr;
    (
        u32::from_le_bytes([t0, t1, t2, t3]),
        u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]),
    )
}

impl Worker for BlockWorker {
    fn queue_event(&mut self, _epoll: &Epoll, queue: usize) -> Result<Drain, DeviceError> {
        self.drain()
            .map_err(|source| DeviceError::Queue { queue, source })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::bus::MmioDevice;
    use crate::devices::virtio::mmio::MmioTransport;
    use crate::devices::virtio::test_utils::*;

    const HDR: u64 = DATA_BASE;
    const DATA: u64 = DATA_BASE + 0x1000;
    const STATUS: u64 = DATA_BASE + 0x800;

    fn image(sectors: u64) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.raw");
        let bytes: Vec<u8> = (0..sectors * SECTOR_SIZE)
            .map(|i| (i % 253) as u8 ^ (i / SECTOR_SIZE) as u8)
            .collect();
        std::fs::write(&path, &bytes).unwrap();
        (dir, path, bytes)
    }

    fn device(path: &Path) -> (GuestMem, MmioTransport, GuestQueue) {
        let mem = guest_memory();
        let (t, mut q, _irq) =
            activated(&mem, Box::new(Block::new(path, "disk0").unwrap()), &[256]);
        (mem, t, q.remove(0))
    }

    /// Sends one request; returns (status, used length).
    fn request(
        mem: &GuestMem,
        t: &mut MmioTransport,
        q: &mut GuestQueue,
        ty: u32,
        sector: u64,
        data_len: u32,
    ) -> (u8, u32) {
        let mut hdr = [0u8; 16];
        hdr[..4].copy_from_slice(&ty.to_le_bytes());
        hdr[8..].copy_from_slice(&sector.to_le_bytes());
        mem.write_slice(&hdr, GuestAddress(HDR)).unwrap();
        mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let data_writable = ty != VIRTIO_BLK_T_OUT;
        let mut bufs = vec![(HDR, 16, false)];
        if data_len > 0 {
            bufs.push((DATA, data_len, data_writable));
        }
        bufs.push((STATUS, 1, true));
        q.add_chain(mem, &bufs);
        notify(t, 0);
        let (_, len) = q.wait_used(mem);
        (mem.read_obj(GuestAddress(STATUS)).unwrap(), len)
    }

    #[test]
    fn reads_sectors_and_refuses_writes() {
        let (_dir, path, bytes) = image(64);
        let (mem, mut t, mut q) = device(&path);
        let mut cap = [0u8; 8];
        t.read(0x100, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 64);

        let (status, len) = request(&mem, &mut t, &mut q, VIRTIO_BLK_T_IN, 3, 4096);
        assert_eq!(status, VIRTIO_BLK_S_OK);
        assert_eq!(len, 4097);
        let mut got = vec![0u8; 4096];
        mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got, bytes[3 * 512..3 * 512 + 4096]);

        // Past the end, overflowing sector numbers, writes, unknown requests.
        let (status, _) = request(&mem, &mut t, &mut q, VIRTIO_BLK_T_IN, 60, 4096);
        assert_eq!(status, VIRTIO_BLK_S_IOERR);
        let (status, _) = request(&mem, &mut t, &mut q, VIRTIO_BLK_T_IN, u64::MAX / 2, 512);
        assert_eq!(status, VIRTIO_BLK_S_IOERR);
        let (status, _) = request(&mem, &mut t, &mut q, VIRTIO_BLK_T_OUT, 0, 512);
        assert_eq!(status, VIRTIO_BLK_S_IOERR);
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "image unchanged");
        let (status, _) = request(&mem, &mut t, &mut q, 99, 0, 0);
        assert_eq!(status, VIRTIO_BLK_S_UNSUPP);
        let (status, _) = request(&mem, &mut t, &mut q, VIRTIO_BLK_T_FLUSH, 0, 0);
        assert_eq!(status, VIRTIO_BLK_S_OK);

        let (status, len) = request(&mem, &mut t, &mut q, VIRTIO_BLK_T_GET_ID, 0, 20);
        assert_eq!(status, VIRTIO_BLK_S_OK);
        assert_eq!(len, 21);
        let mut id = [0u8; 20];
        mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id[..5], b"disk0");
        assert!(!t.needs_reset());
    }

    #[test]
    fn request_without_status_byte_fails_alone() {
        let (_dir, path, _) = image(8);
        let (mem, mut t, mut q) = device(&path);
        q.add_chain(&mem, &[(HDR, 16, false)]);
        notify(&mut t, 0);
        assert_eq!(q.wait_used(&mem).1, 0);
        let (status, _) = request(&mem, &mut t, &mut q, VIRTIO_BLK_T_IN, 0, 512);
        assert_eq!(status, VIRTIO_BLK_S_OK);
        assert!(!t.needs_reset());
    }

    #[test]
    fn features_say_read_only() {
        let (_dir, path, _) = image(1);
        let b = Block::new(&path, "x").unwrap();
        assert_ne!(b.features() & (1 << VIRTIO_BLK_F_RO), 0);
        assert!(Block::new(Path::new("/nonexistent/disk"), "x").is_err());
    }
}
