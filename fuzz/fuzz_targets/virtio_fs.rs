//! The virtio-fs request path: FUSE requests decoded from the input, placed in descriptor chains
//! (the request split over up to three readable buffers, zero to two writable reply buffers of
//! assorted sizes) on the request or the hiprio queue of an `Fs` device whose worker runs inline,
//! over a PassthroughFs of a small share recreated for every run. The share holds links that
//! point at a sibling directory with a sentinel file; nothing outside the share may change.
//! Every valid chain must come back in the used ring with at most its writable size, a reply
//! header matching the request, and the device never in `DEVICE_NEEDS_RESET`.
//!
//! Input: a control byte (bit 0: skip INIT; the INIT flags follow otherwise), then up to
//! [`MAX_REQUESTS`] requests: control (bits 0-1: readable split, bit 4: uid/gid follow, bit 5:
//! long body, bit 6: raw header length, bit 7: hiprio queue), opcode (`>= 0xf0`: raw u32
//! follows), node (`< 0x80`: small IDs, `< 0xf0`: small IDs
//! in the share's Vfs slot, else a raw u64 follows), reply buffer sizes, body length and body.
//! FALLOCATE is not sent (it would allocate real space). FIFOs are fair game: PassthroughFs
//! opens only regular files and directories, so an OPEN of a FIFO fails instead of blocking.
#![no_main]

use std::collections::BTreeSet;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rkt_fuzz::Input;
use stage1_vmm::devices::virtio::fs::{Fs, FsConfig, QUEUE_SIZE};
use stage1_vmm::devices::virtio::fuzzing;
use stage1_vmm::devices::virtio::test_utils::{activated, guest_memory_with, notify};
use stage1_vmm::memory::GuestMem;
use vm_memory::{Bytes, GuestAddress};

/// Guest RAM (bytes).
const MEM: usize = 2 << 20;
/// Where request buffers go (guest physical address).
const REQ: u64 = 0x10_0000;
/// Where reply buffers go (guest physical address).
const REPLY: u64 = 0x12_0000;
/// Requests per run (count).
const MAX_REQUESTS: usize = 32;
/// Reply buffer sizes the input picks from (bytes).
const REPLY_SIZES: [u32; 8] = [0, 8, 16, 40, 256, 4096, 0x1_0000, 0x4_0000];
const FUSE_INIT: u32 = 26;
const FUSE_FALLOCATE: u32 = 43;
/// FUSE in-header size (bytes).
const IN_HEADER: usize = 40;
/// FUSE out-header size (bytes).
const OUT_HEADER: u32 = 16;

/// `RKT_FUZZ_DEBUG=1`: print each request's outcome (for checking seeds).
fn debug() -> bool {
    static D: OnceLock<bool> = OnceLock::new();
    *D.get_or_init(|| std::env::var_os("RKT_FUZZ_DEBUG").is_some())
}

struct Fixture {
    mem: GuestMem,
    root: PathBuf,
    share: PathBuf,
    sentinel: PathBuf,
    before: Snapshot,
}

/// What must not change outside the share.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    root_entries: BTreeSet<String>,
    outside_entries: BTreeSet<String>,
    sentinel: (u64, u32, u32, u32, u64, i64, i64, i64, i64, u64),
    content: Vec<u8>,
}

fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

fn snapshot(root: &Path, sentinel: &Path) -> Snapshot {
    let m = std::fs::symlink_metadata(sentinel).expect("the sentinel exists");
    Snapshot {
        root_entries: entries(root),
        outside_entries: entries(&root.join("outside")),
        sentinel: (
            m.ino(),
            m.mode(),
            m.uid(),
            m.gid(),
            m.nlink(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
            m.len(),
        ),
        content: std::fs::read(sentinel).expect("read the sentinel"),
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        fuzzing::set_inline_workers(true);
        let root = rkt_fuzz::scratch_dir("virtio-fs");
        let share = root.join("share");
        let outside = root.join("outside");
        std::fs::create_dir_all(&outside).expect("outside");
        std::fs::create_dir_all(&share).expect("share");
        let sentinel = outside.join("sentinel");
        std::fs::write(&sentinel, b"host data: must not change\n").expect("sentinel");
        let before = snapshot(&root, &sentinel);
        Fixture {
            mem: guest_memory_with(&[(0, MEM)]),
            root,
            share,
            sentinel,
            before,
        }
    })
}

/// Recreates the share: files, a directory and links that point outside it.
fn populate(f: &Fixture) {
    let s = &f.share;
    if s.exists() {
        std::fs::remove_dir_all(s).expect("remove the share");
    }
    std::fs::create_dir_all(s.join("a")).expect("share/a");
    std::fs::write(s.join("hello.txt"), b"hello from the share\n").expect("hello");
    std::fs::write(s.join("a/b"), b"inner").expect("a/b");
    symlink("../outside", s.join("up-link")).expect("up-link");
    symlink(f.root.join("outside"), s.join("abs-link")).expect("abs-link");
    symlink(&f.sentinel, s.join("secret-link")).expect("secret-link");
}

fn in_header(len: u32, opcode: u32, unique: u64, nodeid: u64, uid: u32, gid: u32) -> [u8; 40] {
    let mut h = [0u8; IN_HEADER];
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[4..8].copy_from_slice(&opcode.to_le_bytes());
    h[8..16].copy_from_slice(&unique.to_le_bytes());
    h[16..24].copy_from_slice(&nodeid.to_le_bytes());
    h[24..28].copy_from_slice(&uid.to_le_bytes());
    h[28..32].copy_from_slice(&gid.to_le_bytes());
    h[32..36].copy_from_slice(&1u32.to_le_bytes());
    h
}

/// One decoded request: queue, bytes, reply buffer sizes.
struct Request {
    hiprio: bool,
    unique: u64,
    bytes: Vec<u8>,
    split: u8,
    replies: Vec<u32>,
}

fn decode(inp: &mut Input, unique: u64) -> Request {
    let ctl = inp.u8();
    let op = inp.u8();
    let mut opcode = if op >= 0xf0 {
        inp.u32()
    } else {
        u32::from(op % 52)
    };
    if opcode == FUSE_FALLOCATE {
        opcode = 0x7fff;
    }
    let node = inp.u8();
    let nodeid = match node {
        0..=0x7f => u64::from(node % 32),
        // The Vfs puts the file system's index (1 for the share) in the top byte of node IDs.
        0x80..=0xef => (1 << 56) | u64::from(node % 32),
        _ => inp.u64(),
    };
    let (uid, gid) = if ctl & 0x10 != 0 {
        (inp.u32(), inp.u32())
    } else {
        (0, 0)
    };
    let rsel = inp.u8();
    let mut replies = vec![REPLY_SIZES[usize::from(rsel & 7)]];
    if rsel & 0x40 != 0 {
        replies.push(REPLY_SIZES[usize::from((rsel >> 3) & 7)]);
    }
    if rsel & 0x80 != 0 {
        replies.clear();
    }
    let body_len = if ctl & 0x20 != 0 {
        usize::from(inp.u16() % 8192)
    } else {
        usize::from(inp.u8())
    };
    let body = inp.take(body_len).to_vec();
    let len = if ctl & 0x40 != 0 {
        inp.u32()
    } else {
        (IN_HEADER + body.len()) as u32
    };
    let mut bytes = in_header(len, opcode, unique, nodeid, uid, gid).to_vec();
    bytes.extend_from_slice(&body);
    Request {
        hiprio: ctl & 0x80 != 0,
        unique,
        bytes,
        split: ctl & 3,
        replies,
    }
}

/// Places `r` in guest memory as a chain: `(addr, len, writable)` buffers.
fn chain(mem: &GuestMem, r: &Request) -> Vec<(u64, u32, bool)> {
    let n = r.bytes.len();
    let cuts: Vec<usize> = match r.split {
        1 => vec![n.min(IN_HEADER)],
        2 => vec![n.min(7), n.min(IN_HEADER + 3)],
        _ => vec![],
    };
    let mut bufs = Vec::new();
    let mut at = REQ;
    let mut start = 0;
    for end in cuts.into_iter().chain([n]) {
        let piece = &r.bytes[start..end.max(start)];
        mem.write_slice(piece, GuestAddress(at))
            .expect("request in memory");
        bufs.push((at, piece.len() as u32, false));
        at += piece.len() as u64 + 0x100;
        start = end.max(start);
    }
    let mut at = REPLY;
    for len in &r.replies {
        bufs.push((at, *len, true));
        at += u64::from(*len) + 0x1000;
    }
    bufs
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mem = &f.mem;
    populate(f);
    let dev = Fs::new(FsConfig::new(&f.share)).expect("fs device");
    let (mut t, mut queues, _irq) = activated(mem, Box::new(dev), &[QUEUE_SIZE, QUEUE_SIZE]);
    let mut inp = Input::new(data);
    let ctl = inp.u8();
    let mut requests = Vec::new();
    if ctl & 1 == 0 {
        let mut init = Vec::from(in_header(56, FUSE_INIT, 1, 0, 0, 0));
        for v in [7u32, 31, 0x2_0000, inp.u32()] {
            init.extend_from_slice(&v.to_le_bytes());
        }
        requests.push(Request {
            hiprio: false,
            unique: 1,
            bytes: init,
            split: 0,
            replies: vec![0x1000],
        });
    }
    for k in 0..MAX_REQUESTS as u64 {
        if inp.is_empty() {
            break;
        }
        requests.push(decode(&mut inp, 2 + k));
    }
    for r in &requests {
        let bufs = chain(mem, r);
        let writable: u64 = r.replies.iter().map(|l| u64::from(*l)).sum();
        let qi = usize::from(!r.hiprio);
        let head = queues[qi].add_chain(mem, &bufs);
        notify(&mut t, qi as u32);
        fuzzing::run_inline_workers(4);
        assert!(!t.needs_reset(), "a well-formed chain made the device fail");
        let (id, used) = queues[qi]
            .pop_used(mem)
            .expect("every chain comes back in the used ring");
        assert_eq!(id, u32::from(head), "used id");
        assert!(
            u64::from(used) <= writable,
            "used {used} > writable {writable}"
        );
        if !r.hiprio && used > 0 && r.replies.first().is_some_and(|l| *l >= OUT_HEADER) {
            let len: u32 = mem.read_obj(GuestAddress(REPLY)).expect("reply");
            let error: i32 = mem.read_obj(GuestAddress(REPLY + 4)).expect("reply");
            let unique: u64 = mem.read_obj(GuestAddress(REPLY + 8)).expect("reply");
            assert_eq!(len, used, "reply length is the used length");
            assert_eq!(unique, r.unique, "reply to the request");
            assert!((-4095..=0).contains(&error), "reply error {error}");
        }
        if debug() {
            let op = u32::from_le_bytes(r.bytes[4..8].try_into().expect("opcode"));
            let error: i32 = mem.read_obj(GuestAddress(REPLY + 4)).expect("reply");
            eprintln!("virtio_fs: opcode {op}: used {used}, error {error}");
        }
    }
    drop(t);
    assert_eq!(fuzzing::inline_worker_count(), 0, "no worker left");
    assert_eq!(
        snapshot(&f.root, &f.sentinel),
        f.before,
        "something outside the share changed"
    );
});
