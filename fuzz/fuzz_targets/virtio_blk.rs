//! Requests to the read-only virtio-blk device (worker inline) over a raw image of 256 sectors
//! and a partial one: request type steered (IN, OUT, FLUSH, GET_ID, unknown), start sector (0,
//! inside, at and near the end, past it, huge, wrapping when multiplied by 512), the header whole,
//! split, short or in a writable buffer, zero to three data buffers of lengths that are not all
//! multiples of 512 (one may point the wrong way), the status byte alone, missing, read-only or
//! in a longer buffer, and buffers at region edges, in the hole, past memory, or chains with a
//! broken link or an indirect flag. Requests are batched up to a flush (kick, serve until idle).
//!
//! Guest memory starts as a pattern, mirrored in a shadow copy, and every request is checked
//! against a model of the device (in order; the header read from what memory then holds):
//! - the used entry is the chain's head with the bytes written (data + 1 for the status), or 0
//!   when the chain has no writable byte;
//! - the status goes in the last writable byte: IN within the disk returns exactly the file's
//!   bytes with OK; a read reaching past the last whole sector (or overflowing) returns no data
//!   and IOERR; OUT always IOERR; FLUSH OK; GET_ID the 20-byte serial (IOERR if it does not fit,
//!   after what fits); anything else UNSUPP; a header shorter than 16 bytes IOERR;
//! - memory outside the writable buffers is untouched (all of it compared at the end);
//! - a chain outside memory, with a broken link or an indirect table puts the device into
//!   `DEVICE_NEEDS_RESET` (nothing after it is served); nothing else does;
//! - the image file is unchanged.
//!
//! Input: up to [`MAX_REQUESTS`] requests: a control byte (bits 0-2: type, bits 3-5: sector,
//! bit 6: flush after, bit 7: a raw `reserved` field follows), a shape byte (bits 0-1: header
//! whole, split, short, writable; bits 2-3: data buffers; bits 4-5: status byte alone, missing,
//! read-only, in a longer buffer; bit 6: the first data buffer points the wrong way; bit 7: a
//! place byte follows), the type's, sector's and reserved field's bytes where steered so, one
//! length selector per data buffer (`DATA_LENS`, `>= 0xf0`: a raw u16 follows), the header cut
//! or length, the status buffer's length, and the place byte (bits 0-1: which descriptor, bits
//! 2-4: region B, A's edge, B's edge, the hole, the top of the address space, broken link,
//! indirect flag, low memory below the ring).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rkt_fuzz::guest::{self, debug, in_memory, Break, Chain, Desc, Shadow, A, B, RINGS_END};
use rkt_fuzz::Input;
use stage1_vmm::devices::virtio::blk::{Block, QUEUE_SIZE, SECTOR_SIZE};
use stage1_vmm::devices::virtio::fuzzing;
use stage1_vmm::devices::virtio::mmio::MmioTransport;
use stage1_vmm::devices::virtio::test_utils::{
    activated, notify, GuestQueue, F_INDIRECT, F_NEXT, F_WRITE, RINGS_BASE,
};
use stage1_vmm::memory::GuestMem;

/// Whole sectors of the image (count); a partial one of [`TAIL`] bytes follows.
const SECTORS: u64 = 256;
/// Bytes after the last whole sector (never readable by the guest).
const TAIL: u64 = 100;
/// The device's serial.
const ID: &str = "fuzz-disk";
/// Requests per input (count).
const MAX_REQUESTS: usize = 32;
/// Descriptors in flight per flush (count, of `QUEUE_SIZE`).
const MAX_IN_FLIGHT: usize = 192;
/// Data buffer lengths the input picks from (bytes).
const DATA_LENS: [u32; 13] = [
    0, 1, 19, 20, 21, 511, 512, 513, 1024, 4096, 0x1_0000, 0x1_0001, 0x2_0000,
];
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
/// Request header (bytes).
const HDR: usize = 16;

/// This target's pattern salt (`rkt_fuzz::guest::pattern`).
const SALT: u8 = 0xa5;

struct Fixture {
    mem: GuestMem,
    /// The pattern over `[0, B.1)` (the hole's bytes unused).
    image: Shadow,
    disk: PathBuf,
    /// The image's bytes.
    bytes: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        fuzzing::set_inline_workers(true);
        let dir = rkt_fuzz::scratch_dir("virtio-blk");
        let disk = dir.join("disk.raw");
        let bytes: Vec<u8> = (0..SECTORS * SECTOR_SIZE + TAIL)
            .map(|i| (i % 251) as u8 ^ (i / SECTOR_SIZE) as u8)
            .collect();
        std::fs::write(&disk, &bytes).expect("write the image");
        Fixture {
            mem: guest::memory(),
            image: Shadow::pattern(SALT),
            disk,
            bytes,
        }
    })
}

struct Run<'f> {
    f: &'f Fixture,
    t: MmioTransport,
    q: GuestQueue,
    /// What guest memory must hold (`[0, B.1)`, the ring excluded from comparisons).
    shadow: Shadow,
    /// Requests not yet flushed.
    pending: Vec<Chain>,
    /// Allocation cursors in A and B (reset per flush).
    cur_a: u64,
    cur_b: u64,
    /// The device needs a reset (expected, and checked).
    failed: bool,
}

impl Run<'_> {
    /// Writes `data` to guest memory and the shadow (skipping what is outside memory).
    fn put(&mut self, addr: u64, data: &[u8]) {
        self.shadow.put(&self.f.mem, addr, data);
    }

    /// Compares guest memory with the shadow over `[addr, addr + len)`.
    fn check_range(&self, addr: u64, len: u64, what: &str) {
        self.shadow.check(&self.f.mem, addr, len, what);
    }

    /// Writes `data` at offset `at` of the writable bytes of `descs` into the shadow.
    fn expect_write(&mut self, descs: &[Desc], mut at: u64, mut data: &[u8]) {
        for d in descs.iter().filter(|d| d.write) {
            let len = u64::from(d.len);
            if at >= len {
                at -= len;
                continue;
            }
            let n = data.len().min((len - at) as usize);
            let start = (d.addr + at) as usize;
            self.shadow[start..start + n].copy_from_slice(&data[..n]);
            data = &data[n..];
            at = 0;
            if data.is_empty() {
                break;
            }
        }
    }

    /// What the device must do with `c`: writes its data and status into the shadow, returns
    /// the used length and the status (None: no writable byte for it).
    fn model(&mut self, c: &Chain) -> (u32, Option<u8>) {
        let mut r = Vec::new();
        for d in c.descs.iter().filter(|d| !d.write) {
            let at = d.addr as usize;
            r.extend_from_slice(&self.shadow[at..at + d.len as usize]);
        }
        let wlen: u64 = c
            .descs
            .iter()
            .filter(|d| d.write)
            .map(|d| u64::from(d.len))
            .sum();
        let Some(data_len) = wlen.checked_sub(1) else {
            return (0, None);
        };
        let (status, data): (u8, Vec<u8>) = if r.len() < HDR {
            (S_IOERR, Vec::new())
        } else {
            let ty = u32::from_le_bytes(r[0..4].try_into().expect("4 bytes"));
            let sector = u64::from_le_bytes(r[8..16].try_into().expect("8 bytes"));
            match ty {
                T_IN => {
                    let end = sector
                        .checked_mul(SECTOR_SIZE)
                        .and_then(|s| Some((s, s.checked_add(data_len)?)))
                        .filter(|(_, e)| *e <= SECTORS * SECTOR_SIZE);
                    match end {
                        Some((s, e)) => (S_OK, self.f.bytes[s as usize..e as usize].to_vec()),
                        None => (S_IOERR, Vec::new()),
                    }
                }
                T_OUT => (S_IOERR, Vec::new()),
                T_FLUSH => (S_OK, Vec::new()),
                T_GET_ID => {
                    let mut id = [0u8; 20];
                    id[..ID.len()].copy_from_slice(ID.as_bytes());
                    let n = (data_len as usize).min(id.len());
                    let st = if n == id.len() { S_OK } else { S_IOERR };
                    (st, id[..n].to_vec())
                }
                _ => (S_UNSUPP, Vec::new()),
            }
        };
        self.expect_write(&c.descs, 0, &data);
        self.expect_write(&c.descs, data_len, &[status]);
        (data.len() as u32 + 1, Some(status))
    }

    /// Kicks the queue, serves until idle and checks every request. Returns false once the
    /// device needs a reset.
    fn flush(&mut self) -> bool {
        let chains = std::mem::take(&mut self.pending);
        if !chains.is_empty() {
            notify(&mut self.t, 0);
        }
        for _ in 0..64 {
            if fuzzing::run_inline_workers(8) == 0 {
                break;
            }
        }
        let mut broken = false;
        for c in &chains {
            if c.malformed() {
                if debug() {
                    eprintln!("virtio_blk: request {}: malformed", c.head);
                }
                broken = true;
                break;
            }
            let (used, status) = self.model(c);
            if debug() {
                eprintln!(
                    "virtio_blk: request {}: status {status:?}, used {used}",
                    c.head
                );
            }
            let got = self.q.pop_used(&self.f.mem);
            assert_eq!(got, Some((u32::from(c.head), used)), "used entry of {c:?}");
        }
        let extra = self.q.pop_used(&self.f.mem);
        assert!(extra.is_none(), "unexpected used entry {extra:?}");
        assert_eq!(self.t.needs_reset(), broken, "DEVICE_NEEDS_RESET");
        for c in &chains {
            for d in c.descs.iter().filter(|d| in_memory(d.addr, d.len)) {
                self.check_range(d.addr, u64::from(d.len), "request buffer");
            }
        }
        self.cur_a = RINGS_END;
        self.cur_b = B.0;
        self.failed = broken;
        !broken
    }

    /// Allocates `len` bytes in A (`b`: in B, or at A's end when B is full).
    fn alloc(&mut self, len: u32, b: bool) -> u64 {
        let len = u64::from(len);
        if b {
            if self.cur_b + len <= B.1 {
                let at = self.cur_b;
                self.cur_b += (len + 15) & !7;
                return at;
            }
            return A.1 - len;
        }
        let at = self.cur_a;
        self.cur_a += (len + 15) & !7;
        at
    }

    /// One request from the input (see the module docs).
    fn request(&mut self, inp: &mut Input) {
        let ctl = inp.u8();
        let shape = inp.u8();
        let ty = match ctl & 7 {
            0 | 5 | 6 => T_IN,
            1 => T_OUT,
            2 => T_FLUSH,
            3 => T_GET_ID,
            4 => inp.u32(),
            _ => u32::from(inp.u8()),
        };
        let sector = match (ctl >> 3) & 7 {
            0 => 0,
            1 => u64::from(inp.u8()) % SECTORS,
            2 => SECTORS - 1 - u64::from(inp.u8() % 8),
            3 => SECTORS - 2 + u64::from(inp.u8() % 4),
            4 => SECTORS + u64::from(inp.u8()),
            5 => inp.u64(),
            6 => (u64::MAX >> 9) - 2 + u64::from(inp.u8() % 5),
            _ => u64::MAX - u64::from(inp.u8()),
        };
        let reserved = if ctl & 0x80 != 0 { inp.u32() } else { 0 };
        let lens: Vec<u32> = (0..(shape >> 2) & 3)
            .map(|_| match inp.u8() {
                s @ 0..=0xef => DATA_LENS[usize::from(s) % DATA_LENS.len()],
                _ => u32::from(inp.u16()),
            })
            .collect();
        let mut hdr = [0u8; HDR];
        hdr[0..4].copy_from_slice(&ty.to_le_bytes());
        hdr[4..8].copy_from_slice(&reserved.to_le_bytes());
        hdr[8..16].copy_from_slice(&sector.to_le_bytes());
        // (bytes, device-writable) of each header descriptor.
        let hdr_parts: Vec<(Vec<u8>, bool)> = match shape & 3 {
            0 => vec![(hdr.to_vec(), false)],
            1 => {
                let cut = usize::from(inp.u8()) % (HDR + 1);
                vec![(hdr[..cut].to_vec(), false), (hdr[cut..].to_vec(), false)]
            }
            2 => vec![(hdr[..usize::from(inp.u8()) % HDR].to_vec(), false)],
            _ => vec![(hdr.to_vec(), true)],
        };
        let status_len = match (shape >> 4) & 3 {
            0 | 2 => Some(1),
            1 => None,
            _ => Some(u32::from(inp.u8())),
        };
        let place = if shape & 0x80 != 0 { inp.u8() } else { 0 };
        let n = hdr_parts.len() + lens.len() + usize::from(status_len.is_some());
        let need: u64 = lens.iter().map(|l| u64::from(*l) + 16).sum::<u64>() + 0x200;
        if self.pending.iter().map(|c| c.descs.len()).sum::<usize>() + n > MAX_IN_FLIGHT
            || self.cur_a + need > A.1 - 0x4_0000
        {
            if !self.flush() {
                return;
            }
        }
        let data_write = ty != T_OUT;
        let mut descs = Vec::new();
        for (bytes, write) in &hdr_parts {
            let at = self.alloc(bytes.len() as u32, false);
            self.put(at, bytes);
            descs.push(Desc {
                addr: at,
                len: bytes.len() as u32,
                write: *write,
            });
        }
        for (k, len) in lens.iter().enumerate() {
            let at = self.alloc(*len, false);
            let write = data_write != (k == 0 && shape & 0x40 != 0);
            if !write {
                // A write's payload: recognisable, and never to reach the image.
                let payload: Vec<u8> = (0..*len).map(|i| (i as u8) ^ 0xee).collect();
                self.put(at, &payload);
            }
            descs.push(Desc {
                addr: at,
                len: *len,
                write,
            });
        }
        if let Some(len) = status_len {
            let at = self.alloc(len, false);
            descs.push(Desc {
                addr: at,
                len,
                write: (shape >> 4) & 3 != 2,
            });
        }
        let mut brk = Break::None;
        if shape & 0x80 != 0 {
            let k = usize::from(place & 3) % descs.len();
            let len = descs[k].len;
            let addr = &mut descs[k].addr;
            match (place >> 2) & 7 {
                0 => *addr = self.alloc(len, true),
                // Ends up to 8 bytes before or after A's end.
                1 => *addr = (A.1 + u64::from(place >> 5) * 2).saturating_sub(u64::from(len) + 4),
                2 => *addr = (B.1 + u64::from(place >> 5) * 2).saturating_sub(u64::from(len) + 4),
                3 => *addr = A.1 + u64::from(place >> 5) * 0x1000,
                4 => *addr = u64::MAX - u64::from(place >> 5),
                5 => brk = Break::Link,
                6 => brk = Break::Indirect,
                _ if len <= 0x800 => *addr = 0x100,
                _ => {}
            }
            // Moved readable bytes go along (a header or payload at its new place).
            if (place >> 2) & 7 != 5 && (place >> 2) & 7 != 6 && !descs[k].write {
                let bytes = if k < hdr_parts.len() {
                    hdr_parts[k].0.clone()
                } else {
                    (0..len).map(|i| (i as u8) ^ 0xee).collect()
                };
                let at = descs[k].addr;
                self.put(at, &bytes);
            }
        }
        let bufs: Vec<(u64, u32, bool)> = descs.iter().map(|d| (d.addr, d.len, d.write)).collect();
        let head = self.q.add_chain(&self.f.mem, &bufs);
        let last = (head + bufs.len() as u16 - 1) % self.q.size;
        let d = descs[descs.len() - 1];
        let wflag = if d.write { F_WRITE } else { 0 };
        match brk {
            Break::None => {}
            Break::Link => self.q.write_desc(
                &self.f.mem,
                last,
                d.addr,
                d.len,
                wflag | F_NEXT,
                self.q.size + 3,
            ),
            Break::Indirect => {
                self.q
                    .write_desc(&self.f.mem, last, d.addr, d.len, wflag | F_INDIRECT, 0)
            }
        }
        self.pending.push(Chain { head, descs, brk });
        if ctl & 0x40 != 0 {
            self.flush();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mem = &f.mem;
    f.image.fill(mem);
    let dev = Block::new(&f.disk, ID).expect("block device");
    let (t, mut q, _irq) = activated(mem, Box::new(dev), &[QUEUE_SIZE]);
    let mut run = Run {
        f,
        t,
        q: q.remove(0),
        shadow: f.image.clone(),
        pending: Vec::new(),
        cur_a: RINGS_END,
        cur_b: B.0,
        failed: false,
    };
    let mut inp = Input::new(data);
    for _ in 0..MAX_REQUESTS {
        if inp.is_empty() || run.failed {
            break;
        }
        run.request(&mut inp);
    }
    if !run.failed {
        run.flush();
    }
    // Nothing outside the request buffers changed (the ring excluded).
    run.check_range(0, RINGS_BASE, "below the ring");
    run.check_range(RINGS_END, A.1 - RINGS_END, "region A");
    run.check_range(B.0, B.1 - B.0, "region B");
    drop(run);
    assert_eq!(fuzzing::inline_worker_count(), 0, "no worker left");
    let now = std::fs::read(&f.disk).expect("read the image");
    assert!(now == f.bytes, "the image changed");
});
