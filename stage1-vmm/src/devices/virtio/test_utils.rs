//! Test helpers: guest memory, a guest-side split virtqueue driver, and the virtio-mmio driver
//! handshake, so devices are exercised through their queues exactly as a guest would. Also used
//! by the fuzz targets (feature `fuzzing`); the helpers panic on misuse, so callers pass them
//! valid layouts and keep hostile data in guest memory.

#![allow(clippy::unwrap_used)]

use std::thread;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::mmio::{
    MmioTransport, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK,
};
use super::VirtioDevice;
use crate::bus::MmioDevice;
use crate::memory::GuestMem;

/// Guest memory size used by the tests (bytes).
pub const MEM_SIZE: usize = 32 << 20;
/// Where the tests place queue rings (guest physical address).
pub const RINGS_BASE: u64 = 0x1000;
/// Where the tests place data buffers (guest physical address).
pub const DATA_BASE: u64 = 0x10_0000;

/// One region of `MEM_SIZE` bytes at guest address 0.
pub fn guest_memory() -> GuestMem {
    guest_memory_with(&[(0, MEM_SIZE)])
}

/// Guest memory of the given `(start, length)` regions (bytes; sorted, non-overlapping; gaps
/// between them are holes, as the MMIO gap is).
pub fn guest_memory_with(ranges: &[(u64, usize)]) -> GuestMem {
    let ranges: Vec<(GuestAddress, usize)> =
        ranges.iter().map(|(s, l)| (GuestAddress(*s), *l)).collect();
    GuestMem::from_ranges(&ranges).expect("guest memory")
}

/// Descriptor flag: continues in `next`.
pub const F_NEXT: u16 = 1;
/// Descriptor flag: device-writable.
pub const F_WRITE: u16 = 2;
/// Descriptor flag: the buffer is a table of descriptors.
pub const F_INDIRECT: u16 = 4;

/// The guest's view of one split virtqueue.
pub struct GuestQueue {
    /// Number of entries.
    pub size: u16,
    /// Guest address of the descriptor table.
    pub desc: u64,
    /// Guest address of the avail ring.
    pub avail: u64,
    /// Guest address of the used ring.
    pub used: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl GuestQueue {
    /// Lays out a queue of `size` entries at `base`.
    pub fn new(base: u64, size: u16) -> Self {
        let n = u64::from(size);
        let desc = base;
        let avail = desc + 16 * n;
        let used = (avail + 6 + 2 * n + 3) & !3;
        Self {
            size,
            desc,
            avail,
            used,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    /// Writes a raw descriptor.
    pub fn write_desc(&self, mem: &GuestMem, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(self.desc + 16 * u64::from(i));
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&addr.to_le_bytes());
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.to_le_bytes());
        mem.write_slice(&raw, at).expect("write desc");
    }

    /// Adds a chain of `(addr, len, device_writable)` buffers and publishes it; returns the head.
    pub fn add_chain(&mut self, mem: &GuestMem, bufs: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_desc;
        for (k, (addr, len, w)) in bufs.iter().enumerate() {
            let i = (self.next_desc + k as u16) % self.size;
            let last = k + 1 == bufs.len();
            let mut flags = if *w { F_WRITE } else { 0 };
            if !last {
                flags |= F_NEXT;
            }
            self.write_desc(mem, i, *addr, *len, flags, (i + 1) % self.size);
        }
        self.next_desc = (self.next_desc + bufs.len() as u16) % self.size;
        self.publish(mem, head);
        head
    }

    /// Puts `head` into the avail ring and bumps the avail index.
    pub fn publish(&mut self, mem: &GuestMem, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        mem.write_obj(head, GuestAddress(self.avail + 4 + 2 * slot))
            .expect("avail ring");
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(mem, self.avail_idx);
    }

    /// Writes the avail index directly (tests of corrupt indices).
    pub fn set_avail_idx(&self, mem: &GuestMem, idx: u16) {
        mem.write_obj(idx, GuestAddress(self.avail + 2))
            .expect("avail idx");
    }

    /// Next used element `(id, len)` if the device returned one.
    pub fn pop_used(&mut self, mem: &GuestMem) -> Option<(u32, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).expect("used idx");
        if idx == self.used_seen {
            return None;
        }
        let slot = u64::from(self.used_seen % self.size);
        let at = self.used + 4 + 8 * slot;
        let id: u32 = mem.read_obj(GuestAddress(at)).expect("used id");
        let len: u32 = mem.read_obj(GuestAddress(at + 4)).expect("used len");
        self.used_seen = self.used_seen.wrapping_add(1);
        Some((id, len))
    }

    /// Waits (up to 10 s) for the next used element.
    pub fn wait_used(&mut self, mem: &GuestMem) -> (u32, u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(u) = self.pop_used(mem) {
                return u;
            }
            assert!(Instant::now() < deadline, "device did not return a buffer");
            thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Reads a 32-bit register.
pub fn rd(t: &mut MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

/// Writes a 32-bit register.
pub fn wr(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

/// Configures queue `i` through the registers and sets it ready.
pub fn setup_queue(t: &mut MmioTransport, i: u32, q: &GuestQueue) {
    wr(t, 0x30, i);
    wr(t, 0x38, u32::from(q.size));
    wr(t, 0x80, q.desc as u32);
    wr(t, 0x84, (q.desc >> 32) as u32);
    wr(t, 0x90, q.avail as u32);
    wr(t, 0x94, (q.avail >> 32) as u32);
    wr(t, 0xa0, q.used as u32);
    wr(t, 0xa4, (q.used >> 32) as u32);
    wr(t, 0x44, 1);
}

/// A transport over `dev`, brought to DRIVER_OK with queues of `sizes` entries placed one after
/// another from `RINGS_BASE`. Returns the transport, the guest queues and the irq EventFd.
pub fn activated(
    mem: &GuestMem,
    dev: Box<dyn VirtioDevice>,
    sizes: &[u16],
) -> (MmioTransport, Vec<GuestQueue>, EventFd) {
    activated_with_features(mem, dev, sizes, VERSION_1)
}

/// Like [`activated`], with the driver writing `features` (both words; the transport keeps only
/// those offered) instead of just `VIRTIO_F_VERSION_1`, which activation needs.
pub fn activated_with_features(
    mem: &GuestMem,
    dev: Box<dyn VirtioDevice>,
    sizes: &[u16],
    features: u64,
) -> (MmioTransport, Vec<GuestQueue>, EventFd) {
    let irq = EventFd::new(EFD_NONBLOCK).expect("eventfd");
    let mut t =
        MmioTransport::new(mem.clone(), dev, irq.try_clone().expect("dup")).expect("transport");
    let queues = handshake_with_features(mem, &mut t, sizes, features);
    (t, queues, irq)
}

/// `VIRTIO_F_VERSION_1` as a feature mask.
const VERSION_1: u64 = 1 << 32;

/// Runs the driver handshake on a transport in its reset state, with fresh (zeroed) rings.
pub fn handshake(mem: &GuestMem, t: &mut MmioTransport, sizes: &[u16]) -> Vec<GuestQueue> {
    handshake_with_features(mem, t, sizes, VERSION_1)
}

/// Like [`handshake`], with the driver writing `features` (both words).
pub fn handshake_with_features(
    mem: &GuestMem,
    t: &mut MmioTransport,
    sizes: &[u16],
    features: u64,
) -> Vec<GuestQueue> {
    wr(t, 0x70, STATUS_ACKNOWLEDGE);
    wr(t, 0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    wr(t, 0x24, 0);
    wr(t, 0x20, features as u32);
    wr(t, 0x24, 1);
    wr(t, 0x20, (features >> 32) as u32);
    wr(
        t,
        0x70,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    let mut queues = Vec::new();
    let mut base = RINGS_BASE;
    for (i, s) in sizes.iter().enumerate() {
        let q = GuestQueue::new(base, *s);
        let end = (q.used + 6 + 8 * u64::from(*s) + 0xfff) & !0xfff;
        mem.write_slice(&vec![0u8; (end - base) as usize], GuestAddress(base))
            .expect("clear rings");
        base = end;
        setup_queue(t, i as u32, &q);
        queues.push(q);
    }
    wr(
        t,
        0x70,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
    );
    queues
}

/// Notifies queue `i` through the QueueNotify register.
pub fn notify(t: &mut MmioTransport, i: u32) {
    wr(t, 0x50, i);
}
