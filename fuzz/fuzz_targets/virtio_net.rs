//! Frames through the virtio-net device (worker and tap events inline) over a `UnixDatagram`
//! pair standing in for the tap, with the offloads offered and the features the driver accepts
//! chosen by the input. Transmit chains come from the input (one to four descriptors, the header
//! split off or not, lengths from empty to past `MAX_FRAME`, a write-only descriptor, buffers at
//! region edges or outside memory, broken links, indirect flags) with header fields steered
//! (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset); receive frames of steered
//! lengths and headers are written to the tap end, and receive buffers of steered shapes posted.
//!
//! Guest memory starts as a pattern, mirrored in a shadow copy. After every flush (kick, serve
//! until idle) each outcome is predicted by a model of the device's documented rules and checked:
//! - TX: the tap end receives exactly the predicted frames, each whole (its length is what the
//!   chain held, at most `MAX_FRAME`) with a header asking for no offload that was not
//!   negotiated; every chain comes back in order with length 0.
//! - RX (kicked receive queue, or the tap's event for buffers already posted): frames pair with
//!   receive chains in order; a used length is the frame's length, never more than the chain's
//!   writable bytes, or 0 for a frame dropped; the delivered bytes are the frame's (a partial
//!   checksum completed for a driver without `GUEST_CSUM`) with a header the driver accepted (no
//!   segment without `GUEST_TSO4`, no flag but `NEEDS_CSUM` and `DATA_VALID`, those only with
//!   `GUEST_CSUM`, `num_buffers` 1); a dropped frame leaves its buffers untouched.
//! - A chain outside memory, with a broken link or an indirect table puts the device into
//!   `DEVICE_NEEDS_RESET` (then nothing after it is served); nothing else does.
//!
//! At the end all memory but the rings must equal the shadow, the counters the model's counts.
//!
//! Input: a byte of device options (bit 0: offloads offered, bit 1: an MTU), a byte of accepted
//! features (bits 0-3: CSUM, GUEST_CSUM, GUEST_TSO4, HOST_TSO4), then up to [`MAX_STEPS`] steps:
//! an op byte (bits 0-1: 0/1 a transmit chain, 2 a frame from the tap, 3 receive buffers; bits
//! 2-3: receive chains to post - 1; bit 7: flush after), then the step's fields (see `tx_step`,
//! `rx_frame_step`, `rx_buffers_step`).
#![no_main]

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rkt_fuzz::guest::{self, debug, Break, Chain, Desc, Shadow, A, B, RINGS_END};
use rkt_fuzz::Input;
use stage1_vmm::devices::virtio::fuzzing;
use stage1_vmm::devices::virtio::mmio::MmioTransport;
use stage1_vmm::devices::virtio::net::{
    Net, NetCounters, MAX_FRAME, QUEUE_SIZE, VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MTU,
    VNET_HDR_LEN,
};
use stage1_vmm::devices::virtio::test_utils::{
    activated_with_features, notify, GuestQueue, F_INDIRECT, F_NEXT, F_WRITE, RINGS_BASE,
};
use stage1_vmm::memory::GuestMem;
use vm_memory::{Bytes, GuestAddress};

/// Receive buffers in region A.
const RX_A: (u64, u64) = (RINGS_END, 0x18_0000);
/// Transmit buffers in region A, up to its end (a buffer at the edge reaches the hole).
const TX_A: (u64, u64) = (0x18_0000, A.1);
/// Transmit buffers in region B.
const TX_B: (u64, u64) = (B.0, B.0 + 0x2_0000);
/// Receive buffers in region B, up to its end.
const RX_B: (u64, u64) = (TX_B.1, B.1);
/// Steps per input (count).
const MAX_STEPS: usize = 48;
/// Descriptors the guest keeps in flight per queue (count, of `QUEUE_SIZE`).
const MAX_IN_FLIGHT: usize = 192;
/// Transmit bytes sent per flush: the socket pair's send buffer (212 992 bytes by default) must
/// hold all of them, or the "tap" refuses frames.
const TX_FLUSH_BYTES: usize = 0x2_0000;
/// Ethernet header (bytes): the device drops shorter frames.
const ETH_HLEN: usize = 14;
/// Header flags and gso types.
const NEEDS_CSUM: u8 = 1;
const DATA_VALID: u8 = 2;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
/// Receive buffer lengths the input picks from (bytes).
const RX_LENS: [u32; 15] = [
    0, 1, 11, 12, 13, 26, 60, 64, 100, 1526, 2048, 4096, 0x1_0000, 65562, 65563,
];

/// This target's pattern salt (`rkt_fuzz::guest::pattern`).
const SALT: u8 = 0x5a;

struct Fixture {
    mem: GuestMem,
    /// The pattern over `[0, B.1)` (the hole's bytes unused).
    image: Shadow,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        fuzzing::set_inline_workers(true);
        Fixture {
            mem: guest::memory(),
            image: Shadow::pattern(SALT),
        }
    })
}

/// The offloads the driver accepted (of those offered).
#[derive(Debug, Clone, Copy, Default)]
struct Offloads {
    tx_csum: bool,
    tx_tso4: bool,
    rx_csum: bool,
    rx_tso4: bool,
}

fn hdr_u16(f: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([f[at], f[at + 1]]))
}

/// Whether the checksum field of header `f` (`csum_start + csum_offset`, 2 bytes) lies inside
/// the Ethernet frame after it.
fn csum_inside(f: &[u8]) -> bool {
    hdr_u16(f, 6) + hdr_u16(f, 8) + 2 <= f.len() - VNET_HDR_LEN
}

/// What the tap must get for the transmitted header + frame `f`: None if it is dropped.
fn tx_expect(f: &[u8], o: Offloads) -> Option<Vec<u8>> {
    if !(VNET_HDR_LEN + ETH_HLEN..=MAX_FRAME).contains(&f.len()) {
        return None;
    }
    let mut f = f.to_vec();
    if !o.tx_csum && !o.tx_tso4 {
        f[..VNET_HDR_LEN].fill(0);
        return Some(f);
    }
    let needs = f[0] & NEEDS_CSUM != 0;
    if needs && !(o.tx_csum && csum_inside(&f)) {
        return None;
    }
    let len = f.len() - VNET_HDR_LEN;
    match f[1] {
        GSO_NONE => {}
        GSO_TCPV4 if o.tx_tso4 && needs && hdr_u16(&f, 4) > 0 && hdr_u16(&f, 2) <= len => {}
        _ => return None,
    }
    f[0] &= NEEDS_CSUM;
    f[10] = 0;
    f[11] = 0;
    Some(f)
}

/// Checks a frame the tap received: whole, and asking only for negotiated offloads.
fn assert_tx_negotiated(f: &[u8], o: Offloads) {
    assert!(
        (VNET_HDR_LEN + ETH_HLEN..=MAX_FRAME).contains(&f.len()),
        "tx length {}",
        f.len()
    );
    let h = &f[..VNET_HDR_LEN];
    if !o.tx_csum && !o.tx_tso4 {
        assert_eq!(h, &[0u8; VNET_HDR_LEN], "a header without offloads");
        return;
    }
    assert_eq!(h[0] & !NEEDS_CSUM, 0, "tx flags {:#x}", h[0]);
    if h[0] & NEEDS_CSUM != 0 {
        assert!(o.tx_csum && csum_inside(f), "tx NEEDS_CSUM {h:?} {o:?}");
    }
    match h[1] {
        GSO_NONE => {}
        GSO_TCPV4 => assert!(
            o.tx_tso4
                && h[0] & NEEDS_CSUM != 0
                && hdr_u16(h, 4) > 0
                && hdr_u16(h, 2) <= f.len() - VNET_HDR_LEN,
            "tx TSO4 {h:?} {o:?}"
        ),
        t => panic!("tx gso_type {t:#x}"),
    }
    assert_eq!(&h[10..12], &[0, 0], "tx num_buffers");
}

/// The one's complement sum of `data` as 16-bit big-endian words (an odd tail padded).
fn ones_sum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// What the driver must get for header + frame `f` from the tap, or None if it is dropped
/// (before the fit check).
fn rx_expect(f: &[u8], o: Offloads) -> Option<Vec<u8>> {
    let mut f = f.to_vec();
    match f[1] {
        GSO_NONE => {}
        GSO_TCPV4 if o.rx_tso4 => {}
        _ => return None,
    }
    if f[0] & NEEDS_CSUM != 0 && !o.rx_csum {
        if !csum_inside(&f) {
            return None;
        }
        let start = VNET_HDR_LEN + hdr_u16(&f, 6);
        let field = start + hdr_u16(&f, 8);
        let csum = !ones_sum(&f[start..]);
        f[field..field + 2].copy_from_slice(&csum.to_be_bytes());
        f[0] = 0;
    }
    f[0] &= if o.rx_csum {
        NEEDS_CSUM | DATA_VALID
    } else {
        0
    };
    f[10..12].copy_from_slice(&1u16.to_le_bytes());
    Some(f)
}

/// Checks a header delivered to the driver against what it accepted.
fn assert_rx_accepted(h: &[u8], o: Offloads) {
    match h[1] {
        GSO_NONE => {}
        GSO_TCPV4 => assert!(o.rx_tso4, "a TSO4 segment without GUEST_TSO4"),
        t => panic!("rx gso_type {t:#x}"),
    }
    let allowed = if o.rx_csum {
        NEEDS_CSUM | DATA_VALID
    } else {
        0
    };
    assert_eq!(h[0] & !allowed, 0, "rx flags {:#x} for {o:?}", h[0]);
    assert_eq!(&h[10..12], &1u16.to_le_bytes(), "rx num_buffers");
}

/// Everything one run tracks.
struct Run<'f> {
    f: &'f Fixture,
    t: MmioTransport,
    q: Vec<GuestQueue>,
    peer: UnixDatagram,
    counters: Arc<NetCounters>,
    o: Offloads,
    /// What guest memory must hold (`[0, B.1)`, rings excluded from comparisons).
    shadow: Shadow,
    /// Frames written to the tap end and not yet read by the device.
    rx_frames: VecDeque<Vec<u8>>,
    /// Receive chains not yet used.
    rx_chains: VecDeque<Chain>,
    /// New receive chains since the last flush (the driver kicks the queue for them).
    rx_kick: bool,
    /// Transmit chains not yet flushed.
    tx_chains: Vec<Chain>,
    /// Bytes of transmit frames the model expects in the current flush.
    tx_bytes: usize,
    /// Allocation cursors: transmit in A and B (reset per flush), receive in A and B (wrapping).
    tx_a: u64,
    tx_b: u64,
    rx_a: u64,
    rx_b: u64,
    /// Expected counters.
    tx_frames: u64,
    tx_dropped: u64,
    rx_delivered: u64,
    rx_dropped: u64,
    /// The device needs a reset (expected, and checked).
    failed: bool,
}

impl Run<'_> {
    /// Writes `data` to guest memory and the shadow (skipping what is outside memory).
    fn put(&mut self, addr: u64, data: &[u8]) {
        self.shadow.put(&self.f.mem, addr, data);
    }

    /// The readable bytes of `descs` as the shadow holds them.
    fn gather(&self, descs: &[Desc]) -> Vec<u8> {
        let mut out = Vec::new();
        for d in descs.iter().filter(|d| !d.write) {
            let at = d.addr as usize;
            out.extend_from_slice(&self.shadow[at..at + d.len as usize]);
        }
        out
    }

    /// Compares guest memory with the shadow over `[addr, addr + len)`.
    fn check_range(&self, addr: u64, len: u64, what: &str) {
        self.shadow.check(&self.f.mem, addr, len, what);
    }

    /// Publishes `descs` on queue `qi` (breaking it as `brk` says); returns the chain.
    fn publish(&mut self, qi: usize, descs: Vec<Desc>, brk: Break) -> Chain {
        let mem = &self.f.mem;
        let bufs: Vec<(u64, u32, bool)> = descs.iter().map(|d| (d.addr, d.len, d.write)).collect();
        let q = &mut self.q[qi];
        let head = q.add_chain(mem, &bufs);
        let last = (head + bufs.len() as u16 - 1) % q.size;
        let d = descs[descs.len() - 1];
        let wflag = if d.write { F_WRITE } else { 0 };
        match brk {
            Break::None => {}
            Break::Link => q.write_desc(mem, last, d.addr, d.len, wflag | F_NEXT, q.size + 3),
            Break::Indirect => q.write_desc(mem, last, d.addr, d.len, wflag | F_INDIRECT, 0),
        }
        Chain { head, descs, brk }
    }

    /// Kicks the queues that have news and serves until the device is idle, then checks every
    /// outcome against the model. Returns false once the device needs a reset.
    fn flush(&mut self) -> bool {
        let rx_first = self.rx_kick;
        if self.rx_kick {
            notify(&mut self.t, 0);
            self.rx_kick = false;
        }
        let tx_chains = std::mem::take(&mut self.tx_chains);
        if !tx_chains.is_empty() {
            notify(&mut self.t, 1);
        }
        for _ in 0..64 {
            if fuzzing::run_inline_workers(8) + fuzzing::run_inline_fd_events() == 0 {
                break;
            }
        }
        // A kicked receive queue is served before the transmit queue; frames that arrive for
        // posted buffers without a kick are served from the tap's event, after it.
        let mut broken = rx_first && self.model_rx();
        if broken {
            // The worker stopped before the transmit queue.
            let mut buf = [0u8; 64];
            assert!(
                self.peer.recv(&mut buf).is_err(),
                "a frame sent after a failure"
            );
        } else {
            broken = self.model_tx(tx_chains);
        }
        if !rx_first && !broken {
            broken = self.model_rx();
        }
        for (qi, name) in [(0, "rx"), (1, "tx")] {
            let extra = self.q[qi].pop_used(&self.f.mem);
            assert!(extra.is_none(), "{name}: unexpected used entry {extra:?}");
        }
        assert_eq!(self.t.needs_reset(), broken, "DEVICE_NEEDS_RESET");
        self.tx_a = TX_A.0;
        self.tx_b = TX_B.0;
        self.tx_bytes = 0;
        self.failed = broken;
        !broken
    }

    /// Pairs waiting frames with receive chains as the device must have; checks the used
    /// entries and the buffers. Returns whether it met a malformed chain.
    fn model_rx(&mut self) -> bool {
        while !self.rx_chains.is_empty() {
            let Some(frame) = self.rx_frames.pop_front() else {
                break;
            };
            if frame.len() < VNET_HDR_LEN + ETH_HLEN {
                self.rx_dropped += 1;
                continue;
            }
            let Some(chain) = self.rx_chains.pop_front() else {
                break;
            };
            if chain.malformed() {
                if debug() {
                    eprintln!("virtio_net: rx chain {}: malformed", chain.head);
                }
                return true;
            }
            let room: u64 = chain
                .descs
                .iter()
                .filter(|d| d.write)
                .map(|d| u64::from(d.len))
                .sum();
            let out = rx_expect(&frame, self.o).filter(|f| f.len() as u64 <= room);
            let used = out.as_ref().map_or(0, |f| f.len() as u32);
            assert!(u64::from(used) <= room, "used {used} > writable {room}");
            if debug() {
                eprintln!("virtio_net: rx chain {}: used {used}", chain.head);
            }
            let got = self.q[0].pop_used(&self.f.mem);
            assert_eq!(got, Some((u32::from(chain.head), used)), "rx used entry");
            if let Some(f) = &out {
                // Into the writable buffers in order.
                let mut rest = &f[..];
                let mut read_back = Vec::new();
                for d in chain.descs.iter().filter(|d| d.write) {
                    let n = rest.len().min(d.len as usize);
                    let (now, later) = rest.split_at(n);
                    let at = d.addr as usize;
                    self.shadow[at..at + n].copy_from_slice(now);
                    let mut b = vec![0u8; n];
                    self.f
                        .mem
                        .read_slice(&mut b, GuestAddress(d.addr))
                        .expect("read");
                    read_back.extend_from_slice(&b);
                    rest = later;
                }
                assert_rx_accepted(&read_back[..VNET_HDR_LEN], self.o);
                self.rx_delivered += 1;
            } else {
                self.rx_dropped += 1;
            }
            for d in &chain.descs {
                self.check_range(d.addr, u64::from(d.len), "rx buffer");
            }
        }
        false
    }

    /// Checks the frames the tap end received and the used entries against `chains`. Returns
    /// whether it met a malformed chain.
    fn model_tx(&mut self, chains: Vec<Chain>) -> bool {
        let mut want = Vec::new();
        let mut broken = false;
        for c in &chains {
            if c.malformed() {
                if debug() {
                    eprintln!("virtio_net: tx chain {}: malformed", c.head);
                }
                broken = true;
                break;
            }
            let out = if c.descs.iter().any(|d| d.write) {
                None
            } else {
                tx_expect(&self.gather(&c.descs), self.o)
            };
            if debug() {
                match &out {
                    Some(f) => eprintln!("virtio_net: tx chain {}: sent {} bytes", c.head, f.len()),
                    None => eprintln!("virtio_net: tx chain {}: dropped", c.head),
                }
            }
            match out {
                Some(f) => {
                    self.tx_frames += 1;
                    want.push(f);
                }
                None => self.tx_dropped += 1,
            }
            let got = self.q[1].pop_used(&self.f.mem);
            assert_eq!(got, Some((u32::from(c.head), 0)), "tx used entry");
        }
        let mut got = Vec::new();
        let mut buf = vec![0u8; MAX_FRAME + 64];
        while let Ok(n) = self.peer.recv(&mut buf) {
            assert_tx_negotiated(&buf[..n], self.o);
            got.push(buf[..n].to_vec());
        }
        assert_eq!(got.len(), want.len(), "frames sent");
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g == w,
                "frame {k}: {} bytes sent, {} expected",
                g.len(),
                w.len()
            );
        }
        broken
    }

    /// A transmit chain: a shape byte (bits 0-1: descriptors - 1; bit 2: the header in its own
    /// descriptor; bit 3: one descriptor, picked by bits 6-7, write-only; bits 4-5: buffers in
    /// A, in B, the last one ending by A's end (bits 6-7: 4 bytes before it to 8 after), special),
    /// the frame (see `frame`), the cut points (u16 each), and when special a byte: bits 0-1 the
    /// last buffer in the hole, across B's end, at the top of the address space, or left in
    /// place with (bit 2) an indirect flag or else a broken link.
    fn tx_step(&mut self, inp: &mut Input) {
        let shape = inp.u8();
        let bytes = frame(inp, true);
        let n = 1 + usize::from(shape & 3);
        let mut cuts: Vec<usize> = (1..n)
            .map(|_| usize::from(inp.u16()) % (bytes.len() + 1))
            .collect();
        if shape & 4 != 0 && n > 1 {
            cuts[0] = bytes.len().min(VNET_HDR_LEN);
        }
        cuts.sort_unstable();
        let place = (shape >> 4) & 3;
        let special = if place == 3 { inp.u8() } else { 0 };
        let total = bytes.len();
        if self.tx_chains.len() * 4 + n > MAX_IN_FLIGHT
            || self.tx_bytes + total > TX_FLUSH_BYTES
            || self.tx_a + total as u64 + 64 > TX_A.1 - 0x2_0000
        {
            if !self.flush() {
                return;
            }
        }
        let mut descs = Vec::new();
        let mut start = 0;
        for (k, end) in cuts.into_iter().chain([total]).enumerate() {
            let piece = &bytes[start..end];
            let len = piece.len() as u32;
            let addr = match place {
                1 => &mut self.tx_b,
                _ => &mut self.tx_a,
            };
            let mut at = *addr;
            *addr += u64::from(len) + 8;
            if place == 1 && *addr > TX_B.1 {
                // Past B's transmit half: at A's edge instead.
                at = A.1 - u64::from(len);
            }
            if k + 1 == n {
                match (place, special % 4) {
                    // The last buffer ends up to 8 bytes before or after A's end.
                    (2, _) => {
                        at = (A.1 + u64::from(shape >> 6) * 4).saturating_sub(u64::from(len) + 4)
                    }
                    (3, 0) => at = A.1 + u64::from(special),
                    (3, 1) => at = B.1 - u64::from(len) + 1 + u64::from(special >> 2),
                    (3, 2) => at = u64::MAX - u64::from(special),
                    _ => {}
                }
            }
            self.put(at, piece);
            descs.push(Desc {
                addr: at,
                len,
                write: false,
            });
            start = end;
        }
        if shape & 8 != 0 {
            let k = usize::from(shape >> 6) % descs.len();
            descs[k].write = true;
        }
        let brk = match (place, special % 8) {
            (3, 3) => Break::Link,
            (3, 7) => Break::Indirect,
            _ => Break::None,
        };
        if !descs.iter().any(|d| d.write) && tx_expect(&bytes, self.o).is_some() {
            self.tx_bytes += total;
        }
        let c = self.publish(1, descs, brk);
        self.tx_chains.push(c);
    }

    /// A frame written to the tap end (see `frame`); one the socket refuses is not sent.
    fn rx_frame_step(&mut self, inp: &mut Input) {
        let mut bytes = frame(inp, false);
        if bytes.is_empty() {
            // A zero-length datagram would read as the tap's end of file.
            bytes.push(0);
        }
        if debug() {
            let h = &bytes[..bytes.len().min(VNET_HDR_LEN)];
            eprintln!(
                "virtio_net: tap frame of {} bytes, header {h:?}",
                bytes.len()
            );
        }
        if let Ok(n) = self.peer.send(&bytes) {
            assert_eq!(n, bytes.len(), "datagram sent whole");
            self.rx_frames.push_back(bytes);
        }
    }

    /// `count` receive chains: per chain a shape byte (bits 0-1: descriptors - 1, up to 3; bits
    /// 2-3: buffers in A, in B, the last one ending by B's end (bits 5-7: 4 bytes before it to 3
    /// after), special; bit 4: one descriptor, picked by bits 5-7, device-readable), a length
    /// selector per descriptor (`RX_LENS`, `>= 0xf0`: a raw u16 follows), and when special a
    /// byte as for transmit chains (the hole, past B, the top of the address space, an indirect
    /// flag or a broken link). Chains whose buffers overlap (each other or buffers still
    /// posted), or that exceed [`MAX_IN_FLIGHT`] descriptors, are not posted.
    fn rx_buffers_step(&mut self, inp: &mut Input, count: usize) {
        for _ in 0..count {
            let shape = inp.u8();
            let n = 1 + usize::from(shape & 3) % 3;
            let place = (shape >> 2) & 3;
            let lens: Vec<u32> = (0..n)
                .map(|_| match inp.u8() {
                    s @ 0..=0xef => RX_LENS[usize::from(s) % RX_LENS.len()],
                    _ => u32::from(inp.u16()),
                })
                .collect();
            let special = if place == 3 { inp.u8() } else { 0 };
            let mut descs = Vec::new();
            for (k, len) in lens.into_iter().enumerate() {
                let (cur, area) = match place {
                    1 => (&mut self.rx_b, RX_B),
                    _ => (&mut self.rx_a, RX_A),
                };
                if *cur + u64::from(len) > area.1 {
                    *cur = area.0;
                }
                let mut at = *cur;
                *cur += (u64::from(len) + 15) & !7;
                if k + 1 == n {
                    match (place, special % 4) {
                        // Ends up to 8 bytes before or after B's end.
                        (2, _) => {
                            at = (B.1 + u64::from(shape >> 5)).saturating_sub(u64::from(len) + 4)
                        }
                        (3, 0) => at = A.1 + u64::from(special) * 16,
                        (3, 1) => at = B.1 + u64::from(special),
                        (3, 2) => at = u64::MAX - u64::from(special),
                        _ => {}
                    }
                }
                descs.push(Desc {
                    addr: at,
                    len,
                    write: true,
                });
            }
            if shape & 0x10 != 0 {
                let k = usize::from(shape >> 5) % descs.len();
                descs[k].write = false;
            }
            let brk = match (place, special % 8) {
                (3, 3) => Break::Link,
                (3, 7) => Break::Indirect,
                _ => Break::None,
            };
            let in_flight: usize = self.rx_chains.iter().map(|c| c.descs.len()).sum();
            // Each delivered header is read back from its buffers: none may be overwritten by a
            // later write, of this chain or of another.
            let meet = |d: &Desc, o: &Desc| {
                d.addr < o.addr.saturating_add(u64::from(o.len))
                    && o.addr < d.addr.saturating_add(u64::from(d.len))
            };
            let overlaps = descs.iter().enumerate().any(|(k, d)| {
                descs[..k].iter().any(|o| meet(d, o))
                    || self
                        .rx_chains
                        .iter()
                        .flat_map(|c| &c.descs)
                        .any(|o| meet(d, o))
            });
            if overlaps || in_flight + descs.len() > MAX_IN_FLIGHT {
                continue;
            }
            let c = self.publish(0, descs, brk);
            self.rx_chains.push_back(c);
            self.rx_kick = true;
        }
    }
}

/// A header + frame from the input: a length selector (bits 0-1: 0 a short total of bits 2-7
/// bytes, 1 an Ethernet length of 60 + u16 % 1459, 2 a raw u16, 3 within 8 bytes of the
/// largest), a field selector (bits 0-1: checksum fields canonical, at the frame's end, raw,
/// huge; bits 2-3: segment fields canonical, at the frame's end, raw, zero; bit 4: raw
/// num_buffers), the flags and gso_type bytes (`< 0xc0`: the defined values), the fields' bytes,
/// and a seed for the Ethernet bytes. `tx`: the limits of a transmitted frame, else of one read
/// from the tap (at most `MAX_FRAME`).
fn frame(inp: &mut Input, tx: bool) -> Vec<u8> {
    let lsel = inp.u8();
    let fsel = inp.u8();
    let max = if tx { MAX_FRAME + 8 } else { MAX_FRAME };
    let total = match lsel & 3 {
        0 => usize::from(lsel >> 2),
        1 => VNET_HDR_LEN + 60 + usize::from(inp.u16()) % 1459,
        2 => VNET_HDR_LEN + usize::from(inp.u16()),
        _ => MAX_FRAME - 8 + usize::from(lsel >> 2) % 16,
    }
    .min(max);
    let eth_len = total.saturating_sub(VNET_HDR_LEN);
    // For the fields at the frame's end (wrapping past 64 KiB as a u16 field would).
    let eth = eth_len as u16;
    let flags = match inp.u8() {
        f @ 0..=0xbf => f % 4,
        f => f,
    };
    let gso = match inp.u8() {
        g @ 0..=0xbf => g % 2,
        g => g,
    };
    let (start, off) = match fsel & 3 {
        0 => (34, 16),
        1 => {
            let off = u16::from(inp.u8() % 32);
            let d = u16::from(inp.u8() % 3);
            (
                eth.wrapping_sub(off + 1).wrapping_add(d).wrapping_sub(2),
                off,
            )
        }
        2 => (inp.u16(), inp.u16()),
        _ => (0xffff - u16::from(inp.u8()), 0xffff),
    };
    let (hdr_len, gso_size) = match (fsel >> 2) & 3 {
        0 => (54, 1448),
        1 => (
            eth.wrapping_add(u16::from(inp.u8() % 3)).wrapping_sub(1),
            u16::from(inp.u8()),
        ),
        2 => (inp.u16(), inp.u16()),
        _ => (0, 0),
    };
    let num_buffers = if fsel & 0x10 != 0 { inp.u16() } else { 0 };
    let seed = inp.u8();
    let mut h = [0u8; VNET_HDR_LEN];
    h[0] = flags;
    h[1] = gso;
    h[2..4].copy_from_slice(&hdr_len.to_le_bytes());
    h[4..6].copy_from_slice(&gso_size.to_le_bytes());
    h[6..8].copy_from_slice(&start.to_le_bytes());
    h[8..10].copy_from_slice(&off.to_le_bytes());
    h[10..12].copy_from_slice(&num_buffers.to_le_bytes());
    let mut out = h[..total.min(VNET_HDR_LEN)].to_vec();
    out.extend((0..eth_len).map(|i| (i as u8).wrapping_mul(31) ^ seed));
    out
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let mem = &f.mem;
    f.image.fill(mem);
    let mut inp = Input::new(data);
    let opts = inp.u8();
    let acked = inp.u8();
    let (dev_end, peer) = UnixDatagram::pair().expect("socket pair");
    dev_end.set_nonblocking(true).expect("nonblocking");
    peer.set_nonblocking(true).expect("nonblocking");
    let mut net = Net::new(OwnedFd::from(dev_end), [2, 0, 0, 0, 0, 1]);
    if opts & 1 != 0 {
        net = net.with_offloads();
    }
    if opts & 2 != 0 {
        net = net.with_mtu(1500);
    }
    let offered = opts & 1 != 0;
    let has = |bit: u8| offered && acked & (1 << bit) != 0;
    let o = Offloads {
        tx_csum: has(0),
        rx_csum: has(1),
        rx_tso4: has(2),
        tx_tso4: has(3),
    };
    let mut features = (1u64 << 32) | (1 << VIRTIO_NET_F_MAC) | (1 << VIRTIO_NET_F_MTU);
    for (k, bit) in [
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_HOST_TSO4,
    ]
    .into_iter()
    .enumerate()
    {
        if acked & (1 << k) != 0 {
            features |= 1 << bit;
        }
    }
    let counters = net.counters();
    let (t, q, _irq) = activated_with_features(mem, Box::new(net), &[QUEUE_SIZE; 2], features);
    let mut run = Run {
        f,
        t,
        q,
        peer,
        counters,
        o,
        shadow: f.image.clone(),
        rx_frames: VecDeque::new(),
        rx_chains: VecDeque::new(),
        rx_kick: false,
        tx_chains: Vec::new(),
        tx_bytes: 0,
        tx_a: TX_A.0,
        tx_b: TX_B.0,
        rx_a: RX_A.0,
        rx_b: RX_B.0,
        tx_frames: 0,
        tx_dropped: 0,
        rx_delivered: 0,
        rx_dropped: 0,
        failed: false,
    };
    for _ in 0..MAX_STEPS {
        if inp.is_empty() || run.failed {
            break;
        }
        let op = inp.u8();
        match op & 3 {
            0 | 1 => run.tx_step(&mut inp),
            2 => run.rx_frame_step(&mut inp),
            _ => run.rx_buffers_step(&mut inp, 1 + usize::from((op >> 2) & 3)),
        }
        if op & 0x80 != 0 && !run.failed {
            run.flush();
        }
    }
    if !run.failed {
        run.flush();
    }
    // Nothing outside the buffers changed (the rings excluded).
    run.check_range(0, RINGS_BASE, "below the rings");
    run.check_range(RINGS_END, A.1 - RINGS_END, "region A");
    run.check_range(B.0, B.1 - B.0, "region B");
    if !run.failed {
        let c = &run.counters;
        let n = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
        assert_eq!(n(&c.tx_frames), run.tx_frames, "tx_frames");
        assert_eq!(n(&c.tx_dropped), run.tx_dropped, "tx_dropped");
        assert_eq!(n(&c.rx_frames), run.rx_delivered, "rx_frames");
        assert_eq!(n(&c.rx_dropped), run.rx_dropped, "rx_dropped");
    }
    drop(run);
    assert_eq!(fuzzing::inline_worker_count(), 0, "no worker left");
});
