//! The virtio-mmio register interface, driven by a sequence of operations decoded from the input
//! against a virtio-blk device (a small raw image) whose worker runs inline: register reads and
//! writes of any width and alignment (configuration space included), guest memory writes, a
//! driver handshake with queue rings anywhere, descriptor chains, and queue notifications that
//! make the device serve whatever the rings say. The transport must never panic or hang, keep
//! its identity registers, keep its status register consistent with its state machine, and come
//! back to the power-on state on a reset with no device worker left.
//!
//! Operations (first byte `op`, `op % 8`):
//! 0, 1: 32-bit register write at `4 * u8` (value u32); 2: 32-bit register read at `4 * u8`;
//! 3: access of width 1/2/4/8 (`op >> 3 & 3`) at `u16 % 0x1000`, a write if `op & 0x20`;
//! 4: guest memory write of up to 64 bytes; 5: driver handshake to DRIVER_OK (queue size
//! `1 << (op >> 3) % 9`, rings at a page from `u8`); 6: QueueNotify then serve; 7: add a chain of
//! 1 to 4 buffers to the queue of the last handshake.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rkt_fuzz::Input;
use stage1_vmm::bus::MmioDevice;
use stage1_vmm::devices::virtio::blk::Block;
use stage1_vmm::devices::virtio::fuzzing;
use stage1_vmm::devices::virtio::mmio::{
    DeviceStatus, MmioTransport, STATUS_ACKNOWLEDGE, STATUS_DEVICE_NEEDS_RESET, STATUS_DRIVER,
    STATUS_DRIVER_OK, STATUS_FEATURES_OK,
};
use stage1_vmm::devices::virtio::test_utils::{guest_memory_with, rd, setup_queue, wr, GuestQueue};
use stage1_vmm::devices::virtio::TYPE_BLOCK;
use stage1_vmm::memory::GuestMem;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Low RAM (bytes).
const A: (u64, usize) = (0, 0x8_0000);
/// A second region after a 64 KiB hole (bytes).
const B: (u64, usize) = (0x9_0000, 0x1_0000);
/// Most operations a run executes (count).
const MAX_OPS: usize = 256;
/// Rounds of queue service per notification (count).
const ROUNDS: u32 = 4;

/// `RKT_FUZZ_DEBUG=1`: print the end state of each run (for checking seeds).
fn debug() -> bool {
    static D: OnceLock<bool> = OnceLock::new();
    *D.get_or_init(|| std::env::var_os("RKT_FUZZ_DEBUG").is_some())
}

struct Fixture {
    mem: GuestMem,
    disk: PathBuf,
    zeros: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        fuzzing::set_inline_workers(true);
        let dir = rkt_fuzz::scratch_dir("virtio-mmio");
        Fixture {
            mem: guest_memory_with(&[A, B]),
            disk: rkt_fuzz::disk_image(&dir, 16),
            zeros: vec![0u8; A.1],
        }
    })
}

/// A guest address: mostly in low RAM, sometimes in the second region, the hole or anywhere.
fn address(inp: &mut Input) -> u64 {
    let sel = inp.u8();
    match sel & 3 {
        0 | 1 => u64::from(inp.u16()) * 8,
        2 => B.0 + u64::from(inp.u16()),
        _ => {
            if sel & 4 == 0 {
                A.1 as u64 + u64::from(inp.u16())
            } else {
                inp.u64()
            }
        }
    }
}

fn status_bits(s: DeviceStatus) -> Option<u32> {
    let a = STATUS_ACKNOWLEDGE;
    match s {
        DeviceStatus::Init => Some(0),
        DeviceStatus::Acknowledge => Some(a),
        DeviceStatus::Driver => Some(a | STATUS_DRIVER),
        DeviceStatus::FeaturesOk => Some(a | STATUS_DRIVER | STATUS_FEATURES_OK),
        DeviceStatus::DriverOk => Some(a | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK),
        DeviceStatus::Failed => None,
    }
}

/// The driver handshake through the registers, queue 0 at `base`.
fn handshake(mem: &GuestMem, t: &mut MmioTransport, base: u64, size: u16) -> GuestQueue {
    wr(t, 0x70, 0);
    wr(t, 0x70, STATUS_ACKNOWLEDGE);
    wr(t, 0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    wr(t, 0x24, 1);
    wr(t, 0x20, 1);
    wr(
        t,
        0x70,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    let q = GuestQueue::new(base, size);
    let end = q.used + 6 + 8 * u64::from(size);
    let clear = vec![0u8; (end - base) as usize];
    mem.write_slice(&clear, GuestAddress(base))
        .expect("rings in memory");
    setup_queue(t, 0, &q);
    wr(
        t,
        0x70,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
    );
    q
}

fn check_invariants(t: &mut MmioTransport) {
    assert_eq!(rd(t, 0x000), 0x7472_6976, "magic");
    assert_eq!(rd(t, 0x004), 2, "version");
    assert_eq!(rd(t, 0x008), TYPE_BLOCK, "device id");
    let reg = rd(t, 0x070) & !STATUS_DEVICE_NEEDS_RESET;
    match status_bits(t.status()) {
        Some(bits) => assert_eq!(reg, bits, "status register vs state {:?}", t.status()),
        None => assert_ne!(reg & 0x80, 0, "failed state without FAILED"),
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mem = &f.mem;
    mem.write_slice(&f.zeros[..A.1], GuestAddress(A.0))
        .expect("clear A");
    mem.write_slice(&f.zeros[..B.1], GuestAddress(B.0))
        .expect("clear B");
    let dev = Block::new(&f.disk, "fuzz").expect("block device");
    let irq = EventFd::new(EFD_NONBLOCK).expect("eventfd");
    let mut t = MmioTransport::new(mem.clone(), Box::new(dev), irq).expect("transport");
    let mut gq: Option<GuestQueue> = None;
    let mut inp = Input::new(data);
    for _ in 0..MAX_OPS {
        if inp.is_empty() {
            break;
        }
        let op = inp.u8();
        match op % 8 {
            0 | 1 => {
                let off = u64::from(inp.u8()) * 4;
                let v = inp.u32();
                t.write(off, &v.to_le_bytes());
            }
            2 => {
                let off = u64::from(inp.u8()) * 4;
                let mut b = [0u8; 4];
                t.read(off, &mut b);
            }
            3 => {
                let width = [1usize, 2, 4, 8][usize::from((op >> 3) & 3)];
                let off = u64::from(inp.u16()) % 0x1000;
                let bytes = inp.array::<8>();
                if op & 0x20 != 0 {
                    t.write(off, &bytes[..width]);
                } else {
                    let mut b = [0u8; 8];
                    t.read(off, &mut b[..width]);
                }
            }
            4 => {
                let addr = address(&mut inp);
                let n = usize::from(inp.u8() % 65);
                let bytes = inp.take(n);
                // Outside guest memory is the guest's problem, not ours.
                let _ = mem.write_slice(bytes, GuestAddress(addr));
            }
            5 => {
                let size = 1u16 << ((op >> 3) % 9);
                let base = 0x1000 * (u64::from(inp.u8()) % 0x70 + 1);
                gq = Some(handshake(mem, &mut t, base, size));
            }
            6 => {
                let q = if op & 0x80 != 0 {
                    inp.u32()
                } else {
                    u32::from((op >> 3) & 1)
                };
                wr(&mut t, 0x50, q);
                fuzzing::run_inline_workers(ROUNDS);
            }
            _ => {
                let Some(q) = gq.as_mut() else { continue };
                let n = usize::from((op >> 3) & 3) + 1;
                if n > usize::from(q.size) {
                    continue;
                }
                let bufs: Vec<(u64, u32, bool)> = (0..n)
                    .map(|_| {
                        let addr = address(&mut inp);
                        let len = u32::from(inp.u16());
                        let writable = inp.u8() & 1 != 0;
                        (addr, len, writable)
                    })
                    .collect();
                q.add_chain(mem, &bufs);
            }
        }
    }
    fuzzing::run_inline_workers(ROUNDS);
    if debug() {
        let used = gq.as_ref().map(|q| {
            let idx: u16 = mem.read_obj(GuestAddress(q.used + 2)).unwrap_or(0);
            let status: u8 = mem.read_obj(GuestAddress(0xA000)).unwrap_or(0xee);
            (idx, status)
        });
        eprintln!(
            "virtio_mmio: state {:?}, needs_reset {}, (used idx, byte at 0xa000) {used:?}",
            t.status(),
            t.needs_reset()
        );
    }
    check_invariants(&mut t);
    // A reset brings everything back and stops the device.
    wr(&mut t, 0x70, 0);
    assert_eq!(t.status(), DeviceStatus::Init);
    assert_eq!(rd(&mut t, 0x070), 0, "status after reset");
    assert_eq!(rd(&mut t, 0x060), 0, "interrupt status after reset");
    assert_eq!(fuzzing::inline_worker_count(), 0, "reset leaves no worker");
    check_invariants(&mut t);
});
