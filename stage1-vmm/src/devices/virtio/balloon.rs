//! virtio-balloon (device ID 5) with free page reporting only, as libkrun offers it: memory the
//! guest frees goes back to the host, and the host never asks the guest for memory.
//!
//! Features: `VIRTIO_BALLOON_F_REPORTING` (and `VIRTIO_F_VERSION_1`, added by the transport);
//! no statistics, no free page hints, no deflate-on-OOM. Queues in Linux's order for those
//! features: inflate (0), deflate (1), reporting (2). The configuration space is `num_pages`
//! (always 0: never inflate) and `actual` (le32 each, the driver writes `actual`).
//!
//! On the reporting queue each descriptor is a guest-physical range of free pages (Linux reports
//! blocks of `pageblock_order`, 2 MiB on x86, about 2 s after they were freed). The device checks
//! that the range is page-aligned, a power-of-two number of pages and inside one guest RAM
//! region, then drops the host pages behind it (`madvise(MADV_DONTNEED)` on the anonymous
//! private mapping, `MADV_REMOVE` where a region is file-backed), and returns the chain. A range
//! of another shape is skipped (logged, rate-limited); a buffer outside guest memory is a corrupt
//! queue (`DEVICE_NEEDS_RESET`, as for every device). Chains on the inflate and deflate queues
//! (a driver never sends them, as `num_pages` stays 0) are returned untouched.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::{Address, GuestAddress, GuestMemory, GuestMemoryRegion, MemoryRegionAddress};
use vmm_sys_util::epoll::Epoll;

use super::queue::{range_in_memory, QueueError};
use super::worker::{self, DeviceError, Drain, Worker, WorkerHandle};
use super::{ActivateArgs, ActivateError, Interrupt, LogLimiter, VirtioDevice, TYPE_BALLOON};
use crate::memory::GuestMem;

/// Size of each queue (entries); Linux needs at least 32 (`PAGE_REPORTING_CAPACITY`) on the
/// reporting queue.
pub const QUEUE_SIZE: u16 = 128;
/// Index of the inflate queue.
pub const INFLATE_QUEUE: usize = 0;
/// Index of the deflate queue.
pub const DEFLATE_QUEUE: usize = 1;
/// Index of the free page reporting queue (with only `VIRTIO_BALLOON_F_REPORTING` offered).
pub const REPORTING_QUEUE: usize = 2;
/// Feature bit: the device takes free page reports (bit number).
pub const VIRTIO_BALLOON_F_REPORTING: u32 = 5;
/// Guest page size the reports are measured in (bytes).
pub const PAGE_SIZE: u64 = 4096;
/// Config space: `num_pages` and `actual`, le32 each (bytes).
const CONFIG_LEN: usize = 8;
/// Reports logged at debug level per activation (count; the guest sends as many as it likes).
const DEBUG_REPORTS: u32 = 20;
/// Offset of `actual` in the config space (bytes).
const ACTUAL_OFFSET: u64 = 4;

/// Counters of the reporting queue, shared with the worker (for logs and tests).
#[derive(Debug, Default)]
pub struct ReportStats {
    /// Bytes handed back to the host.
    pub discarded_bytes: AtomicU64,
    /// Reported ranges skipped (bad shape, or `madvise` failed).
    pub skipped: AtomicU64,
}

/// The balloon device (free page reporting only).
pub struct Balloon {
    /// `actual`, as the driver last wrote it (pages).
    actual: u32,
    stats: Arc<ReportStats>,
    worker: Option<WorkerHandle>,
    log_limit: LogLimiter,
}

impl Default for Balloon {
    fn default() -> Self {
        Self::new()
    }
}

impl Balloon {
    /// A balloon that never inflates and takes free page reports.
    pub fn new() -> Balloon {
        Balloon {
            actual: 0,
            stats: Arc::default(),
            worker: None,
            log_limit: LogLimiter::default(),
        }
    }

    /// The reporting counters (live while the device runs).
    pub fn stats(&self) -> Arc<ReportStats> {
        self.stats.clone()
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        TYPE_BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        1u64 << VIRTIO_BALLOON_F_REPORTING
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut space = [0u8; CONFIG_LEN];
        for (d, s) in space[4..].iter_mut().zip(self.actual.to_le_bytes()) {
            *d = s;
        }
        super::read_config_bytes(&space, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only a whole write of `actual` is meaningful; anything else is ignored.
        match (offset, <[u8; 4]>::try_from(data)) {
            (ACTUAL_OFFSET, Ok(v)) => self.actual = u32::from_le_bytes(v),
            _ => guest_warn!(
                self.log_limit,
                "virtio-balloon: config write of {} bytes at {offset:#x} ignored",
                data.len()
            ),
        }
    }

    fn activate(&mut self, args: ActivateArgs) -> Result<(), ActivateError> {
        let queues = self.queue_max_sizes().len();
        worker::activate(
            &mut self.worker,
            args,
            queues,
            "virtio-balloon",
            |mem, queues, interrupt| BalloonWorker {
                mem,
                queues,
                interrupt,
                stats: self.stats.clone(),
                log_limit: LogLimiter::default(),
                debug_reports: 0,
            },
        )
    }

    fn reset(&mut self) {
        // Dropping the handle stops the worker's loop and waits for it.
        self.worker = None;
        self.actual = 0;
    }
}

struct BalloonWorker {
    mem: GuestMem,
    queues: Vec<Queue>,
    interrupt: Interrupt,
    stats: Arc<ReportStats>,
    log_limit: LogLimiter,
    /// Reports logged at debug level so far (the first [`DEBUG_REPORTS`] are).
    debug_reports: u32,
}

/// Why a reported range was not discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DiscardError {
    /// Not page-aligned, empty, or not a power-of-two number of pages.
    #[error("range {addr:#x}+{len:#x} is not an aligned power-of-two number of pages")]
    Shape {
        /// Guest physical start.
        addr: u64,
        /// Length (bytes).
        len: u64,
    },
    /// Not inside one guest RAM region.
    #[error("range {addr:#x}+{len:#x} is not inside guest RAM")]
    Range {
        /// Guest physical start.
        addr: u64,
        /// Length (bytes).
        len: u64,
    },
    /// `madvise` refused it.
    #[error("madvise of {len:#x} bytes failed: errno {errno}")]
    Madvise {
        /// Length (bytes).
        len: u64,
        /// The error number.
        errno: i32,
    },
}

/// Drops the host pages behind the guest range `[addr, addr + len)` (free pages the guest
/// reported): checked to be an aligned power-of-two number of pages inside one RAM region first.
/// The next guest access of the range reads zeros (anonymous memory), or the file's bytes where
/// the boot loader mapped a file privately (as QEMU's discard does).
pub fn discard_range(mem: &GuestMem, addr: GuestAddress, len: u64) -> Result<(), DiscardError> {
    let shape = DiscardError::Shape {
        addr: addr.raw_value(),
        len,
    };
    if len == 0
        || !len.is_multiple_of(PAGE_SIZE)
        || !(len / PAGE_SIZE).is_power_of_two()
        || !addr.raw_value().is_multiple_of(PAGE_SIZE)
    {
        return Err(shape);
    }
    let outside = DiscardError::Range {
        addr: addr.raw_value(),
        len,
    };
    if !range_in_memory(mem, addr, len) {
        return Err(outside);
    }
    let region = mem.find_region(addr).ok_or(outside)?;
    let offset = MemoryRegionAddress(addr.raw_value() - region.start_addr().raw_value());
    let host = region.get_host_address(offset).map_err(|_| outside)?;
    let host_len = usize::try_from(len).map_err(|_| outside)?;
    if !(host as usize).is_multiple_of(PAGE_SIZE as usize) {
        return Err(shape);
    }
    // A shared file mapping keeps its pages in the file: punch them out. Anonymous memory and a
    // private file mapping (a restored snapshot's memory, `snapshot::memory::map_private`) drop
    // their private copies; the latter's pages then read back as the snapshot file's contents,
    // which hold nothing of any pod (and a guest with `init_on_free` turns reporting off, as
    // this device does not offer `VIRTIO_BALLOON_F_PAGE_POISON`).
    let advice = if region.file_offset().is_some() && region.flags() & libc::MAP_SHARED != 0 {
        libc::MADV_REMOVE
    } else {
        libc::MADV_DONTNEED
    };
    // SAFETY: `[host, host + len)` lies inside the mapping of one guest memory region (checked
    // above), which stays mapped while `mem` lives; the VMM holds no Rust reference into guest
    // RAM (all access is volatile, through vm-memory), and dropping the contents of free pages is
    // what the guest asked for.
    let rc = unsafe { libc::madvise(host.cast(), host_len, advice) };
    if rc != 0 {
        return Err(DiscardError::Madvise {
            len,
            errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        });
    }
    Ok(())
}

impl BalloonWorker {
    /// Serves up to one queue's worth of chains of queue `qi`.
    fn drain(&mut self, qi: usize) -> Result<Drain, QueueError> {
        let BalloonWorker {
            mem,
            queues,
            interrupt,
            stats,
            log_limit,
            debug_reports,
        } = self;
        let Some(q) = queues.get_mut(qi) else {
            return Ok(Drain::Done);
        };
        worker::serve_queue(q, mem, interrupt, |chain| {
            if qi != REPORTING_QUEUE {
                guest_warn!(
                    log_limit,
                    "virtio-balloon: chain on queue {qi} returned untouched (never inflated)"
                );
                return Ok(0);
            }
            let mut ranges = 0u32;
            for desc in chain {
                report(mem, stats, log_limit, desc.addr(), u64::from(desc.len()));
                ranges += 1;
            }
            if *debug_reports < DEBUG_REPORTS {
                *debug_reports += 1;
                log::debug!(
                    "virtio-balloon: report of {ranges} ranges; {} bytes discarded so far",
                    stats.discarded_bytes.load(Ordering::Relaxed)
                );
            }
            Ok(0)
        })
    }
}

/// Discards one reported range and counts it; a range that is not discarded is counted as
/// skipped and logged (rate-limited).
fn report(
    mem: &GuestMem,
    stats: &ReportStats,
    log_limit: &mut LogLimiter,
    addr: GuestAddress,
    len: u64,
) {
    match discard_range(mem, addr, len) {
        Ok(()) => {
            stats.discarded_bytes.fetch_add(len, Ordering::Relaxed);
            log::trace!("virtio-balloon: discarded {:#x}+{len:#x}", addr.raw_value());
        }
        Err(e) => {
            stats.skipped.fetch_add(1, Ordering::Relaxed);
            guest_warn!(log_limit, "virtio-balloon: report skipped: {e}");
        }
    }
}

impl Worker for BalloonWorker {
    fn queue_event(&mut self, _epoll: &Epoll, queue: usize) -> Result<Drain, DeviceError> {
        if self.debug_reports < DEBUG_REPORTS {
            log::debug!("virtio-balloon: queue {queue} notified");
        }
        self.drain(queue)
            .map_err(|source| DeviceError::Queue { queue, source })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use vm_memory::Bytes;

    use super::*;
    use crate::devices::virtio::mmio::MmioTransport;
    use crate::devices::virtio::test_utils::*;

    /// Second RAM region, after a hole (as the MMIO gap is).
    const HIGH: u64 = 0x400_0000;
    const HIGH_LEN: usize = 0x40_0000;

    fn device() -> (GuestMem, MmioTransport, Vec<GuestQueue>, Arc<ReportStats>) {
        let mem = guest_memory_with(&[(0, MEM_SIZE), (HIGH, HIGH_LEN)]);
        let dev = Balloon::new();
        let stats = dev.stats();
        let (t, q, _irq) = activated(&mem, Box::new(dev), &[QUEUE_SIZE; 3]);
        (mem, t, q, stats)
    }

    fn fill(mem: &GuestMem, addr: u64, len: usize, byte: u8) {
        mem.write_slice(&vec![byte; len], GuestAddress(addr))
            .unwrap();
    }

    fn all(mem: &GuestMem, addr: u64, len: usize, byte: u8) -> bool {
        let mut got = vec![0u8; len];
        mem.read_slice(&mut got, GuestAddress(addr)).unwrap();
        got.iter().all(|b| *b == byte)
    }

    /// Reports `ranges` as one chain on the reporting queue and waits for it to come back.
    fn report(mem: &GuestMem, t: &mut MmioTransport, q: &mut [GuestQueue], ranges: &[(u64, u32)]) {
        let bufs: Vec<(u64, u32, bool)> = ranges.iter().map(|(a, l)| (*a, *l, true)).collect();
        let head = q[REPORTING_QUEUE].add_chain(mem, &bufs);
        notify(t, REPORTING_QUEUE as u32);
        assert_eq!(q[REPORTING_QUEUE].wait_used(mem), (u32::from(head), 0));
    }

    #[test]
    fn offers_reporting_only_and_never_asks_to_inflate() {
        let b = Balloon::new();
        assert_eq!(b.features(), 1 << VIRTIO_BALLOON_F_REPORTING);
        assert_eq!(b.queue_max_sizes().len(), 3);
        let (_mem, mut t, _q, _) = device();
        assert_eq!(rd(&mut t, 0x08), TYPE_BALLOON);
        assert_eq!(rd(&mut t, 0x100), 0, "num_pages");
        wr(&mut t, 0x104, 77);
        assert_eq!(rd(&mut t, 0x104), 77, "actual");
        assert_eq!(rd(&mut t, 0x100), 0, "num_pages stays 0");
    }

    #[test]
    fn reported_pages_are_dropped_and_read_as_zero() {
        let (mem, mut t, mut q, stats) = device();
        let base = DATA_BASE + 0x20_0000;
        fill(&mem, base, 0x40_0000, 0xaa);
        fill(&mem, HIGH, 0x1000, 0xbb);
        // 2 MiB (the kernel's usual block), one page in the second region.
        report(&mem, &mut t, &mut q, &[(base, 0x20_0000), (HIGH, 0x1000)]);
        assert!(all(&mem, base, 0x20_0000, 0), "reported range reads zero");
        assert!(
            all(&mem, base + 0x20_0000, 0x20_0000, 0xaa),
            "neighbour kept"
        );
        assert!(all(&mem, HIGH, 0x1000, 0));
        assert_eq!(stats.discarded_bytes.load(Ordering::Relaxed), 0x20_1000);
        assert_eq!(stats.skipped.load(Ordering::Relaxed), 0);
        assert!(!t.needs_reset());
    }

    #[test]
    fn badly_shaped_ranges_are_skipped() {
        let (mem, mut t, mut q, stats) = device();
        let base = DATA_BASE;
        fill(&mem, base, 0x10_0000, 0x5a);
        // Misaligned, three pages (not a power of two), a partial page, empty.
        report(
            &mem,
            &mut t,
            &mut q,
            &[
                (base + 0x800, 0x1000),
                (base, 0x3000),
                (base, 0x800),
                (base, 0),
            ],
        );
        assert!(all(&mem, base, 0x10_0000, 0x5a), "nothing dropped");
        assert_eq!(stats.skipped.load(Ordering::Relaxed), 4);
        assert_eq!(stats.discarded_bytes.load(Ordering::Relaxed), 0);
        assert!(!t.needs_reset());
        // The device keeps working.
        report(&mem, &mut t, &mut q, &[(base, 0x1000)]);
        assert!(all(&mem, base, 0x1000, 0));
    }

    /// A restored pod's memory is its snapshot file mapped private: a report drops the guest's
    /// private copies (the host's RSS falls), the pages read back as the file's contents, and
    /// the file is never written.
    #[test]
    fn reported_pages_of_a_private_file_mapping_are_dropped() {
        let size = 16 << 20;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory");
        std::fs::write(&path, vec![0x33u8; size as usize]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let mem = crate::snapshot::memory::map_private(file, size).unwrap();
        let base = 0x20_0000;
        fill(&mem, base, 0x20_0000, 0xaa);
        discard_range(&mem, GuestAddress(base), 0x20_0000).unwrap();
        assert!(all(&mem, base, 0x20_0000, 0x33), "reads the file again");
        assert!(std::fs::read(&path).unwrap().iter().all(|b| *b == 0x33));
    }

    #[test]
    fn discard_refuses_ranges_outside_one_region() {
        let mem = guest_memory_with(&[(0, MEM_SIZE), (HIGH, HIGH_LEN)]);
        let end = MEM_SIZE as u64;
        for (addr, len) in [
            (end - 0x1000, 0x2000),                    // runs past the first region
            (end, 0x1000),                             // in the hole
            (HIGH + HIGH_LEN as u64 - 0x1000, 0x2000), // past the end of RAM
            (!0xfff, 0x1000),                          // wraps
        ] {
            assert!(
                matches!(
                    discard_range(&mem, GuestAddress(addr), len),
                    Err(DiscardError::Range { .. })
                ),
                "{addr:#x}+{len:#x}"
            );
        }
    }

    #[test]
    fn a_buffer_outside_guest_memory_needs_a_reset() {
        let (mem, mut t, mut q, stats) = device();
        fill(&mem, MEM_SIZE as u64 - 0x1000, 0x1000, 0x11);
        q[REPORTING_QUEUE].add_chain(&mem, &[(MEM_SIZE as u64 - 0x1000, 0x2000, true)]);
        notify(&mut t, REPORTING_QUEUE as u32);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !t.needs_reset() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(t.needs_reset());
        assert!(all(&mem, MEM_SIZE as u64 - 0x1000, 0x1000, 0x11));
        assert_eq!(stats.discarded_bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn inflate_and_deflate_chains_come_back_untouched() {
        let (mem, mut t, mut q, stats) = device();
        fill(&mem, DATA_BASE, 0x1000, 0x77);
        for qi in [INFLATE_QUEUE, DEFLATE_QUEUE] {
            let head = q[qi].add_chain(&mem, &[(DATA_BASE, 0x1000, false)]);
            notify(&mut t, qi as u32);
            assert_eq!(q[qi].wait_used(&mem), (u32::from(head), 0));
        }
        assert!(all(&mem, DATA_BASE, 0x1000, 0x77));
        assert_eq!(stats.discarded_bytes.load(Ordering::Relaxed), 0);
        // A reset stops the worker; the device can be activated again.
        wr(&mut t, 0x70, 0);
        let mut q = handshake(&mem, &mut t, &[QUEUE_SIZE; 3]);
        report(&mem, &mut t, &mut q, &[(DATA_BASE, 0x1000)]);
        assert!(all(&mem, DATA_BASE, 0x1000, 0));
    }
}
