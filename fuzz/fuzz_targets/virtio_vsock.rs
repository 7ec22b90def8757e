//! Guest packets for the virtio-vsock device (worker inline): a sequence of transmit chains
//! whose headers (CIDs, ports, type, op, flags, credit fields, lengths) and chain shapes (one or
//! two descriptors, lengths shorter or longer than the header says, write-only buffers, buffers
//! outside memory) come from the input, with receive buffers posted in between. A host
//! listener on `vsock.sock_7` accepts the guest's connections, so REQUEST/RW/SHUTDOWN reach
//! live connections. The device must never panic, never hold more than its connection limit,
//! and keep the used rings consistent (or report `DEVICE_NEEDS_RESET`).
//!
//! Input: per packet, a selector byte, the 44-byte header (fields steered), a data length,
//! then the data; the rest of the input is ignored.
#![no_main]

use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rkt_fuzz::Input;
use stage1_vmm::devices::virtio::fuzzing;
use stage1_vmm::devices::virtio::test_utils::guest_memory_with;
use stage1_vmm::devices::virtio::vsock::{Vsock, VsockConfig, QUEUE_SIZE};
use stage1_vmm::devices::virtio::{
    ActivateArgs, Interrupt, VirtioDevice, WorkerThread, TYPE_VSOCK, VIRTIO_F_VERSION_1,
};
use stage1_vmm::memory::GuestMem;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Guest memory (bytes): rings, then buffers.
const MEM: usize = 0x40_0000;
/// Queue sizes used here (entries).
const QSIZE: u16 = 64;
/// Rings of queue `i` at `i * RING_STRIDE`.
const RING_STRIDE: u64 = 0x1000;
/// Receive buffers (4 KiB each).
const RX_AREA: u64 = 0x1_0000;
/// Transmit buffers (68 KiB each).
const TX_AREA: u64 = 0x10_0000;
const TX_SLOT: u64 = 0x1_1000;
/// Packets per input (count).
const MAX_PACKETS: usize = 32;

struct Fixture {
    mem: GuestMem,
    dir: PathBuf,
    zeros: Vec<u8>,
    thread: WorkerThread,
    listener: UnixListener,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        fuzzing::set_inline_workers(true);
        let dir = rkt_fuzz::scratch_dir("virtio-vsock");
        let listener = UnixListener::bind(dir.join(pod_abi_listener(7))).expect("listener");
        listener.set_nonblocking(true).expect("nonblocking");
        Fixture {
            mem: guest_memory_with(&[(0, MEM)]),
            dir,
            zeros: vec![0u8; MEM],
            thread: WorkerThread::start(TYPE_VSOCK).expect("worker thread"),
            listener,
        }
    })
}

/// `vsock.sock_<port>` (pod_abi's `listener_name`; spelled out to keep the fuzz crate's
/// dependencies as they are).
fn pod_abi_listener(port: u32) -> String {
    format!("vsock.sock_{port}")
}

/// The guest's view of one queue: rings at `base`, descriptors handed out in order.
struct GQueue {
    base: u64,
    next_desc: u16,
    avail_idx: u16,
}

impl GQueue {
    fn desc(&self) -> u64 {
        self.base
    }
    fn avail(&self) -> u64 {
        self.base + 16 * u64::from(QSIZE)
    }
    fn used(&self) -> u64 {
        (self.avail() + 6 + 2 * u64::from(QSIZE) + 3) & !3
    }
    fn queue(&self) -> Queue {
        let mut q = Queue::new(QUEUE_SIZE).expect("queue");
        q.try_set_size(QSIZE).expect("size");
        q.try_set_desc_table_address(GuestAddress(self.desc()))
            .expect("desc");
        q.try_set_avail_ring_address(GuestAddress(self.avail()))
            .expect("avail");
        q.try_set_used_ring_address(GuestAddress(self.used()))
            .expect("used");
        q.set_ready(true);
        q
    }
    /// Adds a chain of `(addr, len, flags)` (NEXT is set here) and publishes it.
    fn add(&mut self, mem: &GuestMem, bufs: &[(u64, u32, u16)]) {
        let head = self.next_desc;
        for (k, (addr, len, flags)) in bufs.iter().enumerate() {
            let i = (self.next_desc + k as u16) % QSIZE;
            let mut f = *flags & !1;
            if k + 1 < bufs.len() {
                f |= 1;
            }
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&addr.to_le_bytes());
            raw[8..12].copy_from_slice(&len.to_le_bytes());
            raw[12..14].copy_from_slice(&f.to_le_bytes());
            raw[14..16].copy_from_slice(&((i + 1) % QSIZE).to_le_bytes());
            mem.write_slice(&raw, GuestAddress(self.desc() + 16 * u64::from(i)))
                .expect("desc");
        }
        self.next_desc = (self.next_desc + bufs.len() as u16) % QSIZE;
        let slot = u64::from(self.avail_idx % QSIZE);
        mem.write_obj(head, GuestAddress(self.avail() + 4 + 2 * slot))
            .expect("avail");
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail() + 2))
            .expect("avail idx");
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mem = &f.mem;
    mem.write_slice(&f.zeros, GuestAddress(0)).expect("clear");
    let mut inp = Input::new(data);
    let mut qs: Vec<GQueue> = (0..3u64)
        .map(|i| GQueue {
            base: i * RING_STRIDE,
            next_desc: 0,
            avail_idx: 0,
        })
        .collect();
    let mut dev = Vsock::new(&VsockConfig {
        socket_dir: f.dir.clone(),
    })
    .expect("device");
    let counters = dev.counters();
    let evts: Vec<EventFd> = (0..3)
        .map(|_| EventFd::new(EFD_NONBLOCK).expect("eventfd"))
        .collect();
    let interrupt = Interrupt::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"));
    dev.activate(ActivateArgs {
        mem: mem.clone(),
        queues: qs.iter().map(GQueue::queue).collect(),
        queue_evts: evts.iter().map(|e| e.try_clone().expect("dup")).collect(),
        interrupt: interrupt.clone(),
        acked_features: 1 << VIRTIO_F_VERSION_1,
        thread: f.thread.clone(),
    })
    .expect("activate");
    let mut rx_slot = 0u64;
    for n in 0..MAX_PACKETS {
        if inp.is_empty() {
            break;
        }
        let sel = inp.u8();
        // Receive buffers now and then (4 KiB, or odd shapes).
        if sel & 1 != 0 && n % 2 == 0 {
            for _ in 0..4 {
                let addr = RX_AREA + (rx_slot % 32) * 0x1000;
                rx_slot += 1;
                let q0 = &mut qs[0];
                if sel & 0x80 != 0 {
                    q0.add(
                        mem,
                        &[(addr, 44, 2), (addr + 0x100, u32::from(inp.u8()), 2)],
                    );
                } else {
                    q0.add(mem, &[(addr, 0x1000, 2)]);
                }
            }
            evts[0].write(1).expect("notify rx");
        }
        let mut hdr: [u8; 44] = inp.array();
        // Mostly well-addressed packets, so they reach the muxer's connections.
        if sel & 2 == 0 {
            hdr[0..8].copy_from_slice(&3u64.to_le_bytes());
            hdr[8..16].copy_from_slice(&2u64.to_le_bytes());
            let dst = u32::from(hdr[20] % 2) * 7;
            hdr[20..24].copy_from_slice(&dst.to_le_bytes());
            let src = u32::from(hdr[16] % 4);
            hdr[16..20].copy_from_slice(&src.to_le_bytes());
            hdr[28..30].copy_from_slice(&1u16.to_le_bytes());
            let op = u16::from(hdr[30] % 8);
            hdr[30..32].copy_from_slice(&op.to_le_bytes());
        }
        let dlen = u32::from(inp.u16());
        if sel & 4 == 0 {
            hdr[24..28].copy_from_slice(&dlen.to_le_bytes());
        }
        let payload = inp.take(dlen as usize);
        let addr = TX_AREA + (n as u64 % 16) * TX_SLOT;
        mem.write_slice(&hdr, GuestAddress(addr)).expect("hdr");
        mem.write_slice(payload, GuestAddress(addr + 0x100))
            .expect("data");
        let wflag = if sel & 8 != 0 { 2 } else { 0 };
        match (sel >> 4) & 3 {
            0 => qs[1].add(mem, &[(addr, 44, 0)]),
            1 => qs[1].add(mem, &[(addr, 44, 0), (addr + 0x100, dlen, wflag)]),
            2 => qs[1].add(mem, &[(addr, 44 + dlen, wflag)]),
            _ => qs[1].add(
                mem,
                &[(addr, u32::from(sel) % 44, 0), (MEM as u64 - 8, dlen, 0)],
            ),
        }
        evts[1].write(1).expect("notify tx");
        fuzzing::run_inline_workers(4);
    }
    fuzzing::run_inline_workers(8);
    // The guest's connections to port 7 are not served: drop them (the backlog stays small).
    while f.listener.accept().is_ok() {}
    let open = counters.open.load(std::sync::atomic::Ordering::Relaxed);
    assert!(open <= 64, "{open} connections open");
    dev.reset();
    assert_eq!(fuzzing::inline_worker_count(), 0, "reset leaves no worker");
    let _ = fuzzing::needs_reset(&interrupt);
});
