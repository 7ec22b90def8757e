//! Descriptor chains from the input, in a guest memory image with a hole: direct and indirect
//! descriptors, loops, bad `next` indices, overflowing lengths, buffers outside memory or
//! straddling a region end. Two phases over the same image:
//! 1. the devices' queue helpers (`pop_chain`, `add_used`): every chain they accept must end
//!    within its budget, lie in one memory region per buffer, and be returned in the used ring;
//!    never more chains than the queue holds;
//! 2. the virtio-blk device's worker (inline) serving the same queue: request header, data and
//!    status byte parsing over whatever the chains say.
//!
//! Input: size exponent, next_avail, avail idx mode, avail entries, descriptor table, indirect
//! table, then raw bytes for the data area (see `decode`).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rkt_fuzz::Input;
use stage1_vmm::devices::virtio::blk::Block;
use stage1_vmm::devices::virtio::fuzzing::{self, add_used, pop_chain};
use stage1_vmm::devices::virtio::test_utils::guest_memory_with;
use stage1_vmm::devices::virtio::{
    ActivateArgs, Interrupt, VirtioDevice, WorkerThread, TYPE_BLOCK, VIRTIO_F_VERSION_1,
};
use stage1_vmm::memory::GuestMem;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Region A: rings, tables and data (bytes).
const A: (u64, usize) = (0, 0x1_0000);
/// Region B, after a 64 KiB hole (bytes).
const B: (u64, usize) = (0x2_0000, 0x1_0000);
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;
/// An area for indirect descriptor tables (256 entries).
const IND: u64 = 0x3000;
/// Raw input data from here to the end of region A, then region B.
const DATA: u64 = 0x4000;
const MAX_QUEUE: u16 = 256;

struct Fixture {
    mem: GuestMem,
    disk: PathBuf,
    zeros: Vec<u8>,
    /// The block device's (idle) worker thread: inline workers never submit to it.
    thread: WorkerThread,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        fuzzing::set_inline_workers(true);
        let dir = rkt_fuzz::scratch_dir("virtio-queue");
        Fixture {
            mem: guest_memory_with(&[A, B]),
            disk: rkt_fuzz::disk_image(&dir, 8),
            zeros: vec![0u8; A.1.max(B.1)],
            thread: WorkerThread::start(TYPE_BLOCK).expect("worker thread"),
        }
    })
}

/// A descriptor: `(addr, len, flags, next)`, with addresses steered to interesting places.
fn descriptor(inp: &mut Input) -> (u64, u32, u16, u16) {
    let sel = inp.u8();
    let addr = match sel & 7 {
        0..=2 => u64::from(inp.u16()),
        3 => B.0 + u64::from(inp.u16()),
        4 => IND + 16 * u64::from(inp.u8()),
        5 => {
            let end = if inp.u8() & 1 == 0 {
                A.1 as u64
            } else {
                B.0 + B.1 as u64
            };
            end - u64::from(inp.u8())
        }
        6 => inp.u64(),
        _ => A.1 as u64 + u64::from(inp.u16()),
    };
    let len = match (sel >> 3) & 3 {
        0 => u32::from(inp.u16()),
        1 => u32::from(inp.u8()),
        2 => inp.u32(),
        _ => 16 * (u32::from(inp.u8()) + 1),
    };
    let flags = u16::from(inp.u8());
    let next = if sel & 0x20 != 0 {
        inp.u16()
    } else {
        u16::from(inp.u8())
    };
    (addr, len, flags, next)
}

fn write_desc(mem: &GuestMem, at: u64, d: (u64, u32, u16, u16)) {
    let mut raw = [0u8; 16];
    raw[0..8].copy_from_slice(&d.0.to_le_bytes());
    raw[8..12].copy_from_slice(&d.1.to_le_bytes());
    raw[12..14].copy_from_slice(&d.2.to_le_bytes());
    raw[14..16].copy_from_slice(&d.3.to_le_bytes());
    mem.write_slice(&raw, GuestAddress(at))
        .expect("table in memory");
}

/// Writes the image; returns `(size, next_avail)`.
fn decode(f: &Fixture, inp: &mut Input) -> (u16, u16) {
    let mem = &f.mem;
    mem.write_slice(&f.zeros[..A.1], GuestAddress(A.0))
        .expect("clear A");
    mem.write_slice(&f.zeros[..B.1], GuestAddress(B.0))
        .expect("clear B");
    let size = 1u16 << (inp.u8() % 9);
    let next_avail = inp.u16();
    let mode = inp.u8();
    let n_avail = inp.u8() % (size.min(255) as u8).saturating_add(1);
    for k in 0..u16::from(n_avail) {
        let raw = inp.u16();
        let head = if raw & 0x8000 == 0 { raw % size } else { raw };
        let slot = next_avail.wrapping_add(k) % size;
        mem.write_obj(head, GuestAddress(AVAIL + 4 + 2 * u64::from(slot)))
            .expect("avail");
    }
    let idx = if mode & 1 == 0 {
        next_avail.wrapping_add(u16::from(n_avail))
    } else {
        inp.u16()
    };
    mem.write_obj(u16::from(mode >> 1), GuestAddress(AVAIL))
        .expect("avail flags");
    mem.write_obj(idx, GuestAddress(AVAIL + 2))
        .expect("avail idx");
    let n_desc = u16::from(inp.u8()).min(size);
    for i in 0..n_desc {
        write_desc(mem, DESC + 16 * u64::from(i), descriptor(inp));
    }
    let n_ind = inp.u8();
    for i in 0..u64::from(n_ind) {
        write_desc(mem, IND + 16 * i, descriptor(inp));
    }
    let rest = inp.rest();
    let (in_a, in_b) = rest.split_at(rest.len().min(A.1 - DATA as usize));
    mem.write_slice(in_a, GuestAddress(DATA)).expect("data A");
    let in_b = &in_b[..in_b.len().min(B.1)];
    mem.write_slice(in_b, GuestAddress(B.0)).expect("data B");
    (size, next_avail)
}

fn queue(size: u16, next_avail: u16) -> Queue {
    let mut q = Queue::new(MAX_QUEUE).expect("queue");
    q.try_set_size(size).expect("size");
    q.try_set_desc_table_address(GuestAddress(DESC))
        .expect("desc");
    q.try_set_avail_ring_address(GuestAddress(AVAIL))
        .expect("avail");
    q.try_set_used_ring_address(GuestAddress(USED))
        .expect("used");
    q.set_next_avail(next_avail);
    q.set_ready(true);
    q
}

/// What the first pop saw: nothing, a chain, or a corrupt queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum First {
    Empty,
    Chain,
    Corrupt,
}

/// Phase 1: the queue helpers and their guarantees.
fn helpers(mem: &GuestMem, size: u16, next_avail: u16) -> First {
    let mut q = queue(size, next_avail);
    let mut popped: u16 = 0;
    let mut first = None;
    for _ in 0..=u32::from(size) {
        let res = pop_chain(&mut q, mem);
        first.get_or_insert(match &res {
            Ok(None) => First::Empty,
            Ok(Some(_)) => First::Chain,
            Err(_) => First::Corrupt,
        });
        let chain = match res {
            Ok(Some(c)) => c,
            Ok(None) | Err(_) => break,
        };
        let head = chain.head_index();
        assert!(head < size, "head {head} outside a queue of {size}");
        let mut count = 0u32;
        let mut last_next = true;
        for d in chain.clone() {
            count += 1;
            // Bounded by the queue size, or by an indirect table's entries (at most 2^28).
            assert!(count <= 1 << 16, "chain at head {head} does not end");
            let inside = if d.len() == 0 {
                mem.address_in_range(d.addr())
            } else {
                mem.get_slice(d.addr(), d.len() as usize).is_ok()
            };
            assert!(
                inside,
                "accepted buffer {:#x}+{} not in one region",
                d.addr().0,
                d.len()
            );
            last_next = d.has_next();
        }
        assert!(
            count > 0 && !last_next,
            "accepted chain at head {head} does not end"
        );
        if let Ok(mut r) = chain.clone().reader(mem) {
            let mut hdr = [0u8; 16];
            let _ = std::io::Read::read(&mut r, &mut hdr);
        }
        let writable = chain
            .clone()
            .writer(mem)
            .map(|w| w.available_bytes())
            .unwrap_or(0);
        let len = u32::try_from(writable).unwrap_or(u32::MAX);
        if add_used(&mut q, mem, head, len).is_err() {
            break;
        }
        popped += 1;
        let used_idx: u16 = mem.read_obj(GuestAddress(USED + 2)).expect("used idx");
        assert_eq!(used_idx, popped, "used index after {popped} chains");
        let slot = USED + 4 + 8 * u64::from((popped - 1) % size);
        let id: u32 = mem.read_obj(GuestAddress(slot)).expect("used id");
        let ulen: u32 = mem.read_obj(GuestAddress(slot + 4)).expect("used len");
        assert_eq!((id, ulen), (u32::from(head), len), "used element");
    }
    assert!(
        popped <= size,
        "{popped} chains popped from a queue of {size}"
    );
    // A chain refused as malformed was still taken off the avail ring (the device is dead then).
    let consumed = q.next_avail().wrapping_sub(next_avail);
    assert!(
        consumed == popped || consumed == popped + 1,
        "{consumed} taken, {popped} used"
    );
    first.unwrap_or(First::Empty)
}

/// Phase 2: the virtio-blk worker over the same queue. Its first pop sees the same memory as
/// phase 1's: a corrupt queue must put the device into `DEVICE_NEEDS_RESET`, an empty one not.
fn block(f: &Fixture, size: u16, next_avail: u16, first: First) {
    let mem = &f.mem;
    let mut dev = Block::new(&f.disk, "fuzz").expect("block device");
    let evt = EventFd::new(EFD_NONBLOCK).expect("eventfd");
    let interrupt = Interrupt::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"));
    dev.activate(ActivateArgs {
        mem: mem.clone(),
        queues: vec![queue(size, next_avail)],
        queue_evts: vec![evt.try_clone().expect("dup")],
        interrupt: interrupt.clone(),
        acked_features: 1 << VIRTIO_F_VERSION_1,
        thread: f.thread.clone(),
    })
    .expect("activate");
    evt.write(1).expect("notify");
    fuzzing::run_inline_workers(4);
    dev.reset();
    assert_eq!(fuzzing::inline_worker_count(), 0, "reset leaves no worker");
    let needs_reset = fuzzing::needs_reset(&interrupt);
    match first {
        First::Corrupt => assert!(needs_reset, "corrupt queue not reported"),
        First::Empty => assert!(!needs_reset, "empty queue reported corrupt"),
        First::Chain => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mut inp = Input::new(data);
    let (size, next_avail) = decode(f, &mut inp);
    let used_ring = vec![0u8; 0x1000];
    let first = helpers(&f.mem, size, next_avail);
    // Phase 1 wrote only the used ring: clear it for phase 2.
    f.mem
        .write_slice(&used_ring, GuestAddress(USED))
        .expect("clear used");
    block(f, size, next_avail, first);
});
