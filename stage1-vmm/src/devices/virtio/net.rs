//! virtio-net (device ID 1): one receive/transmit queue pair over a tap, no control queue.
//!
//! Modelled on Firecracker's and cloud-hypervisor's net devices (rust-vmm has no net device
//! crate). The device offers `VIRTIO_NET_F_MAC` (the MAC the caller chose, normally the CNI
//! interface's) and, through the transport, `VIRTIO_F_VERSION_1`, so every frame carries the
//! 12-byte `virtio_net_hdr_v1`. Without [`Net::with_offloads`] no offloads are offered: the
//! guest sends and expects complete frames with computed checksums, and the tap (opened without
//! `TUNSETOFFLOAD`) gives us the same. With it (the tap got `TUN_F_CSUM | TUN_F_TSO4`) the
//! device offers `CSUM`, `GUEST_CSUM`, `HOST_TSO4` and `GUEST_TSO4`, and the header passes
//! through in both directions, checked against what the driver accepted (below).
//!
//! The tap is used as opened by [`crate::net`]: `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, a 12-byte
//! vnet header (`TUNSETVNETHDRSZ`), non-blocking. One `read` returns one header + frame, one
//! `write` takes one. Anything with those datagram semantics works in its place (the unit tests
//! use a Unix datagram socket pair).
//!
//! Hostile-guest bounds:
//! - TX: a chain is read into one buffer of at most [`MAX_FRAME`] bytes (header included) and
//!   written to the tap in one `write`; a chain that is longer, shorter than a header, or has a
//!   device-writable descriptor is dropped (returned with length 0, counted, logged rate-limited).
//!   Without negotiated offloads the guest's header is replaced by a zeroed one; with them it
//!   passes only if it asks for nothing more than was negotiated (`NEEDS_CSUM` with
//!   `csum_start + csum_offset + 2` inside the frame; `GSO_TCPV4` with `NEEDS_CSUM`, a non-zero
//!   `gso_size` and `hdr_len` inside the frame), else the frame is dropped; the host kernel
//!   checks the header again when the tap takes it.
//! - RX (offloads on the tap): a segment (`GSO_TCPV4`) goes only to a driver that accepted
//!   `GUEST_TSO4`, else it is dropped; a partial checksum is completed here for a driver without
//!   `GUEST_CSUM` (bounds checked as on TX), and `DATA_VALID` cleared for it. No other header
//!   flag reaches the driver.
//! - RX: a frame from the tap goes into one guest chain; a chain too small for it drops the frame
//!   and is returned with length 0 (Linux counts it as a length error). When the guest has no
//!   receive buffers the tap is left unread (removed from the epoll set) until the guest adds
//!   some; the kernel queues (and eventually drops) meanwhile.
//! - Each event moves at most one queue's worth of chains per direction (`Drain::More` for the
//!   rest); a corrupt queue (bad avail index, malformed chain, buffer outside guest memory) puts
//!   the device into `DEVICE_NEEDS_RESET`; nothing the guest sends panics or ends the VMM.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::queue::{add_used, has_pending, pop_chain, QueueError};
use super::worker::{self, add_fd, DeviceError, Drain, Worker, WorkerHandle, FIRST_DEVICE_TOKEN};
use super::{ActivateArgs, ActivateError, Interrupt, LogLimiter, VirtioDevice, TYPE_NET};
use crate::memory::GuestMem;

/// Size of both queues (entries).
pub const QUEUE_SIZE: u16 = 256;
/// Receive queue index.
const RX_QUEUE: usize = 0;
/// Transmit queue index.
const TX_QUEUE: usize = 1;
/// Feature bit: the device takes frames with a partial checksum (bit number).
pub const VIRTIO_NET_F_CSUM: u32 = 0;
/// Feature bit: the driver takes frames with a partial checksum (bit number).
pub const VIRTIO_NET_F_GUEST_CSUM: u32 = 1;
/// Feature bit: the driver takes TCPv4 segments up to 64 KiB (bit number).
pub const VIRTIO_NET_F_GUEST_TSO4: u32 = 7;
/// Feature bit: the device takes TCPv4 segments up to 64 KiB (bit number).
pub const VIRTIO_NET_F_HOST_TSO4: u32 = 11;
/// The offload features [`Net::with_offloads`] offers.
const OFFLOAD_FEATURES: u64 = (1 << VIRTIO_NET_F_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_TSO4)
    | (1 << VIRTIO_NET_F_HOST_TSO4);
/// Header flag: the checksum from `csum_start` is to be completed.
const HDR_F_NEEDS_CSUM: u8 = 1;
/// Header flag: the checksum was verified.
const HDR_F_DATA_VALID: u8 = 2;
/// Header `gso_type`: not a segment.
const GSO_NONE: u8 = 0;
/// Header `gso_type`: a TCPv4 segment.
const GSO_TCPV4: u8 = 1;
/// Feature bit: the device reports the link's MTU in its configuration space (bit number).
pub const VIRTIO_NET_F_MTU: u32 = 3;
/// Feature bit: the device has a MAC address in its configuration space (bit number).
pub const VIRTIO_NET_F_MAC: u32 = 5;
/// Length of `virtio_net_hdr_v1` (with `num_buffers`), used with `VIRTIO_F_VERSION_1` (bytes).
pub const VNET_HDR_LEN: usize = 12;
/// Largest Ethernet frame moved in either direction: 64 KiB IP packet + Ethernet header + VLAN
/// tag (bytes), as Firecracker's `MAX_BUFFER_SIZE` without the header.
pub const MAX_FRAME_NO_HDR: usize = 65550;
/// Largest header + frame moved in either direction (bytes).
pub const MAX_FRAME: usize = VNET_HDR_LEN + MAX_FRAME_NO_HDR;
/// Ethernet header (bytes): a shorter frame is dropped.
const ETH_HLEN: usize = 14;
/// Configuration space: `mac[6]`, `status`, `max_virtqueue_pairs`, `mtu` (bytes; `status` and
/// `max_virtqueue_pairs` need features we do not offer and read as zero).
const CONFIG_LEN: usize = 12;
/// Offset of `mtu` in the configuration space (bytes).
const CONFIG_MTU: usize = 10;
/// Smallest MTU offered (bytes): Linux refuses the feature below its 68-byte minimum.
const MIN_MTU: u16 = 68;
/// Epoll token of the tap.
const TOKEN_TAP: u64 = FIRST_DEVICE_TOKEN;

/// Frame counters of one device (read by tests and debugging; monotonic).
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Frames written to the tap.
    pub tx_frames: AtomicU64,
    /// Guest frames dropped (malformed, oversized, or the tap refused them).
    pub tx_dropped: AtomicU64,
    /// Frames delivered to the guest.
    pub rx_frames: AtomicU64,
    /// Tap frames dropped (the guest's buffer was too small, or the frame too short).
    pub rx_dropped: AtomicU64,
}

/// A virtio-net device over a tap.
pub struct Net {
    tap: Arc<File>,
    config: [u8; CONFIG_LEN],
    features: u64,
    counters: Arc<NetCounters>,
    worker: Option<WorkerHandle>,
    log_limit: LogLimiter,
}

impl Net {
    /// A device over `tap` (see the module docs for what it must be; it is used as it is, so it
    /// must be non-blocking) whose guest interface gets `mac`.
    pub fn new(tap: OwnedFd, mac: [u8; 6]) -> Net {
        let mut config = [0u8; CONFIG_LEN];
        for (d, s) in config.iter_mut().zip(mac) {
            *d = s;
        }
        Net {
            tap: Arc::new(File::from(tap)),
            config,
            features: 1u64 << VIRTIO_NET_F_MAC,
            counters: Arc::new(NetCounters::default()),
            worker: None,
            log_limit: LogLimiter::default(),
        }
    }

    /// Also offers the link's MTU (`VIRTIO_NET_F_MTU`, bytes; the CNI interface's): Linux then
    /// sizes its receive buffers for it (above 1500 it posts big buffers) and caps the
    /// interface's MTU there. Values below 68 are ignored.
    pub fn with_mtu(mut self, mtu: u16) -> Net {
        if mtu >= MIN_MTU {
            for (d, s) in self
                .config
                .iter_mut()
                .skip(CONFIG_MTU)
                .zip(mtu.to_le_bytes())
            {
                *d = s;
            }
            self.features |= 1u64 << VIRTIO_NET_F_MTU;
        }
        self
    }

    /// Also offers the checksum and TCPv4 segmentation offloads (`CSUM`, `GUEST_CSUM`,
    /// `HOST_TSO4`, `GUEST_TSO4`); only for a tap given `TUN_F_CSUM | TUN_F_TSO4`
    /// ([`crate::net::enable_offloads`]).
    pub fn with_offloads(mut self) -> Net {
        self.features |= OFFLOAD_FEATURES;
        self
    }

    /// The device's frame counters (shared with its worker).
    pub fn counters(&self) -> Arc<NetCounters> {
        self.counters.clone()
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        // The MAC is writable only with VIRTIO_NET_F_CTRL_MAC_ADDR (legacy drivers wrote it);
        // we offer neither.
        guest_warn!(
            self.log_limit,
            "virtio-net: write to read-only config space at {offset:#x} ignored"
        );
    }

    fn activate(&mut self, args: ActivateArgs) -> Result<(), ActivateError> {
        let queues = self.queue_max_sizes().len();
        let offloads = Offloads::accepted(args.acked_features & self.features);
        worker::activate(
            &mut self.worker,
            args,
            queues,
            "virtio-net",
            |mem, queues, interrupt| NetWorker {
                mem,
                queues,
                interrupt,
                tap: self.tap.clone(),
                tap_state: TapState::Idle,
                rx_frame: vec![0u8; MAX_FRAME],
                rx_len: None,
                tx_frame: vec![0u8; MAX_FRAME],
                offloads,
                counters: self.counters.clone(),
                log_limit: LogLimiter::default(),
            },
        )
    }

    fn reset(&mut self) {
        // Dropping the handle stops the worker's loop and waits for it.
        self.worker = None;
    }
}

/// Whether the worker watches the tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TapState {
    /// Not in the epoll set: the guest has no receive buffers (or before `init`).
    Idle,
    /// In the epoll set for readability.
    Watching,
    /// End of file or a read error: never read again in this activation.
    Broken,
}

struct NetWorker {
    mem: GuestMem,
    queues: Vec<Queue>,
    interrupt: Interrupt,
    tap: Arc<File>,
    tap_state: TapState,
    /// One frame read from the tap (header included), waiting for a receive buffer.
    rx_frame: Vec<u8>,
    /// Length of the frame in `rx_frame`, if one is waiting.
    rx_len: Option<usize>,
    /// Bounce buffer for one transmitted frame (header included).
    tx_frame: Vec<u8>,
    /// The offloads the driver accepted.
    offloads: Offloads,
    counters: Arc<NetCounters>,
    log_limit: LogLimiter,
}

/// The offloads the driver accepted (of those offered).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Offloads {
    /// `CSUM`: the guest may send partial checksums.
    tx_csum: bool,
    /// `HOST_TSO4`: the guest may send TCPv4 segments.
    tx_tso4: bool,
    /// `GUEST_CSUM`: the guest takes partial checksums.
    rx_csum: bool,
    /// `GUEST_TSO4`: the guest takes TCPv4 segments.
    rx_tso4: bool,
}

impl Offloads {
    fn accepted(acked: u64) -> Offloads {
        let has = |bit: u32| acked & (1u64 << bit) != 0;
        Offloads {
            tx_csum: has(VIRTIO_NET_F_CSUM),
            tx_tso4: has(VIRTIO_NET_F_HOST_TSO4),
            rx_csum: has(VIRTIO_NET_F_GUEST_CSUM),
            rx_tso4: has(VIRTIO_NET_F_GUEST_TSO4),
        }
    }
}

/// The `u16` at `at` of a header (little endian; 0 if out of range).
fn hdr_u16(hdr: &[u8], at: usize) -> usize {
    hdr.get(at..at + 2)
        .map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])))
}

/// Where a partial checksum goes in the Ethernet frame `len` bytes long: `(csum_start,
/// position of the checksum field)`, or None when the header's fields point outside it.
fn csum_span(hdr: &[u8], len: usize) -> Option<(usize, usize)> {
    let start = hdr_u16(hdr, 6);
    let field = start.checked_add(hdr_u16(hdr, 8))?;
    (field.checked_add(2)? <= len).then_some((start, field))
}

/// Checks a transmitted header + frame against the accepted offloads and clears what the
/// tap must not see; false: drop the frame.
fn check_tx(frame: &mut [u8], o: Offloads) -> bool {
    let len = frame.len().saturating_sub(VNET_HDR_LEN);
    let Some(hdr) = frame.get_mut(..VNET_HDR_LEN) else {
        return false;
    };
    if !o.tx_csum && !o.tx_tso4 {
        hdr.fill(0);
        return true;
    }
    let needs_csum = hdr[0] & HDR_F_NEEDS_CSUM != 0;
    if needs_csum && (!o.tx_csum || csum_span(hdr, len).is_none()) {
        return false;
    }
    match hdr[1] {
        GSO_NONE => {}
        GSO_TCPV4 if o.tx_tso4 && needs_csum && hdr_u16(hdr, 4) > 0 && hdr_u16(hdr, 2) <= len => {}
        _ => return false,
    }
    hdr[0] &= HDR_F_NEEDS_CSUM;
    hdr[10] = 0;
    hdr[11] = 0;
    true
}

/// Adapts a header + frame from the tap to the accepted offloads: completes a partial checksum
/// for a driver without `GUEST_CSUM`; false: drop it (a segment the driver does not take, or
/// a header pointing outside the frame).
fn check_rx(frame: &mut [u8], o: Offloads) -> bool {
    let len = frame.len().saturating_sub(VNET_HDR_LEN);
    if frame.len() < VNET_HDR_LEN {
        return false;
    }
    let (hdr, eth) = frame.split_at_mut(VNET_HDR_LEN);
    match hdr[1] {
        GSO_NONE => {}
        GSO_TCPV4 if o.rx_tso4 => {}
        _ => return false,
    }
    if hdr[0] & HDR_F_NEEDS_CSUM != 0 && !o.rx_csum {
        let Some((start, field)) = csum_span(hdr, len) else {
            return false;
        };
        // The field holds the pseudo-header sum: the one's complement sum from csum_start to
        // the end, complemented, is the checksum.
        let mut sum: u32 = 0;
        let data = eth.get(start..).unwrap_or_default();
        for c in data.chunks(2) {
            let w = u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]);
            sum += u32::from(w);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let csum = !(sum as u16);
        if let Some(f) = eth.get_mut(field..field + 2) {
            f.copy_from_slice(&csum.to_be_bytes());
        }
        hdr[0] = 0;
    }
    // Only the flags defined here, and only to a driver that takes them: a tap sets no others,
    // but nothing else may reach the driver (bit 2, RSC_INFO, would have a driver read
    // csum_start and csum_offset as coalescing counts).
    hdr[0] &= if o.rx_csum {
        HDR_F_NEEDS_CSUM | HDR_F_DATA_VALID
    } else {
        0
    };
    true
}

/// What reading the tap gave.
enum TapRead {
    Frame,
    Empty,
}

impl NetWorker {
    fn queue_err(queue: usize) -> impl FnOnce(QueueError) -> DeviceError {
        move |source| DeviceError::Queue { queue, source }
    }

    /// Watches (`true`) or stops watching the tap for readability.
    fn watch_tap(&mut self, epoll: &Epoll, watch: bool) -> Result<(), DeviceError> {
        let fd = self.tap.as_raw_fd();
        match (self.tap_state, watch) {
            (TapState::Idle, true) => {
                add_fd(epoll, fd, EventSet::IN, TOKEN_TAP).map_err(DeviceError::Epoll)?;
                self.tap_state = TapState::Watching;
            }
            (TapState::Watching, false) => {
                epoll
                    .ctl(ControlOperation::Delete, fd, EpollEvent::default())
                    .map_err(DeviceError::Epoll)?;
                self.tap_state = TapState::Idle;
            }
            _ => {}
        }
        Ok(())
    }

    fn stop_tap(&mut self, epoll: &Epoll) -> Result<(), DeviceError> {
        self.watch_tap(epoll, false)?;
        self.tap_state = TapState::Broken;
        Ok(())
    }

    /// Reads one frame from the tap into `rx_frame`.
    fn read_tap(&mut self, epoll: &Epoll) -> Result<TapRead, DeviceError> {
        loop {
            match (&*self.tap).read(&mut self.rx_frame) {
                Ok(0) => {
                    log::warn!("virtio-net: the tap reached end of file; receiving stops");
                    self.stop_tap(epoll)?;
                    return Ok(TapRead::Empty);
                }
                Ok(n) if n < VNET_HDR_LEN + ETH_HLEN => {
                    self.counters.rx_dropped.fetch_add(1, Ordering::Relaxed);
                    guest_warn!(self.log_limit, "virtio-net: dropped a {n}-byte tap frame");
                }
                // A tap returns a frame's whole length even when it copied only what fits.
                Ok(n) if n > self.rx_frame.len() => {
                    self.counters.rx_dropped.fetch_add(1, Ordering::Relaxed);
                    guest_warn!(
                        self.log_limit,
                        "virtio-net: dropped a {n}-byte tap frame, larger than any receive buffer"
                    );
                }
                Ok(n) => {
                    self.rx_len = Some(n);
                    return Ok(TapRead::Frame);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(TapRead::Empty),
                Err(e) => {
                    log::warn!("virtio-net: reading the tap failed, receiving stops: {e}");
                    self.stop_tap(epoll)?;
                    return Ok(TapRead::Empty);
                }
            }
        }
    }

    /// Copies the waiting frame into `chain`; returns the used length (0: it did not fit).
    fn deliver(&mut self, chain: DescriptorChain<&GuestMem>, len: usize) -> u32 {
        let Some(frame) = self.rx_frame.get_mut(..len) else {
            return 0;
        };
        if !check_rx(frame, self.offloads) {
            self.counters.rx_dropped.fetch_add(1, Ordering::Relaxed);
            guest_warn!(
                self.log_limit,
                "virtio-net: dropped a tap frame the driver's offloads cannot take"
            );
            return 0;
        }
        // virtio 1.x: num_buffers is 1 without VIRTIO_NET_F_MRG_RXBUF (the tap leaves it 0).
        if let Some(nb) = frame.get_mut(VNET_HDR_LEN - 2..VNET_HDR_LEN) {
            nb.copy_from_slice(&1u16.to_le_bytes());
        }
        let mem = self.mem.clone();
        let Ok(mut w) = chain.writer(&mem) else {
            guest_warn!(self.log_limit, "virtio-net: bad receive buffers");
            self.counters.rx_dropped.fetch_add(1, Ordering::Relaxed);
            return 0;
        };
        if w.available_bytes() < len {
            guest_warn!(
                self.log_limit,
                "virtio-net: a {len}-byte frame does not fit a {}-byte receive buffer; dropped",
                w.available_bytes()
            );
            self.counters.rx_dropped.fetch_add(1, Ordering::Relaxed);
            return 0;
        }
        if let Err(e) = w.write_all(frame) {
            guest_warn!(
                self.log_limit,
                "virtio-net: cannot write a receive buffer: {e}"
            );
            self.counters.rx_dropped.fetch_add(1, Ordering::Relaxed);
            return 0;
        }
        self.counters.rx_frames.fetch_add(1, Ordering::Relaxed);
        u32::try_from(len).unwrap_or(0)
    }

    /// Moves frames from the tap into receive buffers: at most one queue's worth, and only while
    /// the guest has buffers (otherwise the tap is left unread until it adds some).
    fn process_rx(&mut self, epoll: &Epoll) -> Result<Drain, QueueError> {
        let mem = self.mem.clone();
        let mut budget = self.queues.get(RX_QUEUE).map_or(0, |q| q.size());
        let mut used = false;
        let result = loop {
            let Some(q) = self.queues.get_mut(RX_QUEUE) else {
                break Drain::Done;
            };
            if !has_pending(q, &mem)? {
                // No buffers: stop reading the tap until the guest notifies the queue.
                if self.tap_state == TapState::Watching && self.watch_tap(epoll, false).is_err() {
                    log::warn!("virtio-net: cannot pause the tap");
                }
                break Drain::Done;
            }
            if budget == 0 {
                break Drain::More;
            }
            if self.rx_len.is_none() {
                if self.tap_state == TapState::Broken {
                    break Drain::Done;
                }
                match self.read_tap(epoll) {
                    Ok(TapRead::Frame) => {}
                    Ok(TapRead::Empty) | Err(_) => {
                        if self.tap_state == TapState::Idle && self.watch_tap(epoll, true).is_err()
                        {
                            log::warn!("virtio-net: cannot watch the tap");
                        }
                        break Drain::Done;
                    }
                }
            }
            let Some(len) = self.rx_len.take() else {
                break Drain::Done;
            };
            let Some(q) = self.queues.get_mut(RX_QUEUE) else {
                break Drain::Done;
            };
            let Some(chain) = pop_chain(q, &mem)? else {
                self.rx_len = Some(len);
                break Drain::Done;
            };
            budget -= 1;
            let head = chain.head_index();
            let written = self.deliver(chain, len);
            if let Some(q) = self.queues.get_mut(RX_QUEUE) {
                add_used(q, &mem, head, written)?;
                used = true;
            }
        };
        if used {
            self.interrupt.signal_used_queue();
        }
        Ok(result)
    }

    /// Reads one transmit chain into `tx_frame`; returns its length if it is a frame to send.
    fn gather(&mut self, chain: DescriptorChain<&GuestMem>) -> Option<usize> {
        if chain.clone().any(|d| d.is_write_only()) {
            guest_warn!(
                self.log_limit,
                "virtio-net: transmit chain with a writable buffer"
            );
            return None;
        }
        let mem = self.mem.clone();
        let Ok(mut r) = chain.reader(&mem) else {
            guest_warn!(self.log_limit, "virtio-net: bad transmit buffers");
            return None;
        };
        let len = r.available_bytes();
        if !(VNET_HDR_LEN + ETH_HLEN..=MAX_FRAME).contains(&len) {
            guest_warn!(
                self.log_limit,
                "virtio-net: dropped a {len}-byte transmit chain (bounds {}..={MAX_FRAME})",
                VNET_HDR_LEN + ETH_HLEN
            );
            return None;
        }
        let buf = self.tx_frame.get_mut(..len)?;
        if let Err(e) = r.read_exact(buf) {
            guest_warn!(
                self.log_limit,
                "virtio-net: cannot read a transmit chain: {e}"
            );
            return None;
        }
        if !check_tx(buf, self.offloads) {
            guest_warn!(
                self.log_limit,
                "virtio-net: dropped a transmit frame whose header asks for more than was negotiated"
            );
            return None;
        }
        Some(len)
    }

    /// Sends the guest's frames to the tap, one `write` each: at most one queue's worth.
    fn process_tx(&mut self) -> Result<Drain, QueueError> {
        let mem = self.mem.clone();
        let mut budget = self.queues.get(TX_QUEUE).map_or(0, |q| q.size());
        let mut used = false;
        let result = loop {
            let Some(q) = self.queues.get_mut(TX_QUEUE) else {
                break Drain::Done;
            };
            if budget == 0 {
                break if has_pending(q, &mem)? {
                    Drain::More
                } else {
                    Drain::Done
                };
            }
            let Some(chain) = pop_chain(q, &mem)? else {
                break Drain::Done;
            };
            budget -= 1;
            let head = chain.head_index();
            match self.gather(chain) {
                Some(len) => self.send(len),
                None => {
                    self.counters.tx_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some(q) = self.queues.get_mut(TX_QUEUE) {
                add_used(q, &mem, head, 0)?;
                used = true;
            }
        };
        if used {
            self.interrupt.signal_used_queue();
        }
        Ok(result)
    }

    /// Writes `tx_frame[..len]` to the tap; a frame the tap refuses is dropped, as a NIC would.
    fn send(&mut self, len: usize) {
        let Some(frame) = self.tx_frame.get(..len) else {
            return;
        };
        loop {
            match (&*self.tap).write(frame) {
                Ok(n) if n == len => {
                    self.counters.tx_frames.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => {
                    self.counters.tx_dropped.fetch_add(1, Ordering::Relaxed);
                    guest_warn!(
                        self.log_limit,
                        "virtio-net: the tap refused a frame: {other:?}"
                    );
                    return;
                }
            }
        }
    }
}

impl Worker for NetWorker {
    fn init(&mut self, epoll: &Epoll) -> Result<(), DeviceError> {
        self.watch_tap(epoll, true)
    }

    fn queue_event(&mut self, epoll: &Epoll, queue: usize) -> Result<Drain, DeviceError> {
        match queue {
            RX_QUEUE => self.process_rx(epoll).map_err(Self::queue_err(queue)),
            TX_QUEUE => self.process_tx().map_err(Self::queue_err(queue)),
            _ => Ok(Drain::Done),
        }
    }

    fn fd_event(
        &mut self,
        epoll: &Epoll,
        token: u64,
        _events: EventSet,
    ) -> Result<Option<usize>, DeviceError> {
        if token != TOKEN_TAP {
            return Ok(None);
        }
        match self.process_rx(epoll).map_err(Self::queue_err(RX_QUEUE))? {
            Drain::More => Ok(Some(RX_QUEUE)),
            Drain::Done => Ok(None),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};

    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::devices::virtio::mmio::MmioTransport;
    use crate::devices::virtio::test_utils::*;

    const MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x10, 0x1c, 0x05];

    /// A device whose "tap" is one end of a datagram socket pair; returns the other end.
    fn device() -> (
        GuestMem,
        MmioTransport,
        Vec<GuestQueue>,
        UnixDatagram,
        Arc<NetCounters>,
    ) {
        let (dev_end, test_end) = UnixDatagram::pair().unwrap();
        dev_end.set_nonblocking(true).unwrap();
        test_end
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let net = Net::new(OwnedFd::from(dev_end), MAC);
        let counters = net.counters();
        let mem = guest_memory();
        let (t, q, _irq) = activated(&mem, Box::new(net), &[QUEUE_SIZE, QUEUE_SIZE]);
        (mem, t, q, test_end, counters)
    }

    fn frame(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
    }

    fn wait_for(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn config_space_holds_the_mac_and_features_offer_it() {
        let (dev_end, _other) = UnixDatagram::pair().unwrap();
        let net = Net::new(OwnedFd::from(dev_end), MAC);
        let mut got = [0u8; 6];
        net.read_config(0, &mut got);
        assert_eq!(got, MAC);
        assert_eq!(net.features(), 1 << VIRTIO_NET_F_MAC, "no offloads");
        assert_eq!(net.device_type(), 1);
        let net = net.with_mtu(9000);
        assert_eq!(
            net.features(),
            (1 << VIRTIO_NET_F_MAC) | (1 << VIRTIO_NET_F_MTU)
        );
        let mut mtu = [0u8; 2];
        net.read_config(10, &mut mtu);
        assert_eq!(u16::from_le_bytes(mtu), 9000);
        let (dev_end, _other) = UnixDatagram::pair().unwrap();
        let tiny = Net::new(OwnedFd::from(dev_end), MAC).with_mtu(20);
        assert_eq!(tiny.features(), 1 << VIRTIO_NET_F_MAC);
    }

    #[test]
    fn offloads_are_offered_only_for_a_tap_that_takes_them() {
        let (dev_end, _other) = UnixDatagram::pair().unwrap();
        let net = Net::new(OwnedFd::from(dev_end), MAC).with_offloads();
        assert_eq!(
            net.features(),
            (1 << VIRTIO_NET_F_MAC) | (1 << 0) | (1 << 1) | (1 << 7) | (1 << 11)
        );
        let all = Offloads::accepted(net.features());
        assert!(all.tx_csum && all.tx_tso4 && all.rx_csum && all.rx_tso4);
        assert_eq!(
            Offloads::accepted(1 << VIRTIO_NET_F_MAC),
            Offloads::default()
        );
    }

    /// A header + `len`-byte frame with the given header fields.
    fn with_hdr(flags: u8, gso: u8, hdr_len: u16, gso_size: u16, start: u16, off: u16) -> Vec<u8> {
        let mut f = vec![0u8; VNET_HDR_LEN];
        f[0] = flags;
        f[1] = gso;
        f[2..4].copy_from_slice(&hdr_len.to_le_bytes());
        f[4..6].copy_from_slice(&gso_size.to_le_bytes());
        f[6..8].copy_from_slice(&start.to_le_bytes());
        f[8..10].copy_from_slice(&off.to_le_bytes());
        f[10..12].copy_from_slice(&7u16.to_le_bytes());
        f.extend_from_slice(&frame(1514, 5));
        f
    }

    #[test]
    fn transmit_headers_ask_for_no_more_than_was_negotiated() {
        let all = Offloads::accepted(OFFLOAD_FEATURES);
        let csum_only = Offloads {
            tx_csum: true,
            ..Offloads::default()
        };
        // Without offloads any header is replaced by a zeroed one and the frame goes.
        let mut f = with_hdr(1, GSO_TCPV4, 54, 1448, 34, 16);
        assert!(check_tx(&mut f, Offloads::default()));
        assert_eq!(&f[..VNET_HDR_LEN], &[0u8; VNET_HDR_LEN]);
        // A partial checksum inside the frame passes (flags kept, num_buffers cleared).
        let mut f = with_hdr(1 | 4, GSO_NONE, 0, 0, 34, 16);
        assert!(check_tx(&mut f, csum_only));
        assert_eq!((f[0], &f[10..12]), (1, &[0u8, 0][..]));
        // A TSO segment passes with everything accepted.
        assert!(check_tx(&mut with_hdr(1, GSO_TCPV4, 54, 1448, 34, 16), all));
        for (what, mut f, o) in [
            (
                "checksum field past the end",
                with_hdr(1, 0, 0, 0, 1500, 13),
                all,
            ),
            (
                "checksum offset overflowing",
                with_hdr(1, 0, 0, 0, 0xffff, 0xffff),
                all,
            ),
            (
                "checksum not negotiated",
                with_hdr(1, 0, 0, 0, 34, 16),
                Offloads::accepted(1 << 11),
            ),
            (
                "TSO not negotiated",
                with_hdr(1, GSO_TCPV4, 54, 1448, 34, 16),
                csum_only,
            ),
            (
                "TSO without NEEDS_CSUM",
                with_hdr(0, GSO_TCPV4, 54, 1448, 34, 16),
                all,
            ),
            (
                "TSO with gso_size 0",
                with_hdr(1, GSO_TCPV4, 54, 0, 34, 16),
                all,
            ),
            (
                "hdr_len past the end",
                with_hdr(1, GSO_TCPV4, 1515, 1448, 34, 16),
                all,
            ),
            ("UDP segment", with_hdr(1, 3, 42, 1448, 34, 6), all),
            ("TCPv6 segment", with_hdr(1, 4, 74, 1428, 54, 16), all),
            ("ECN", with_hdr(1, 0x80 | GSO_TCPV4, 54, 1448, 34, 16), all),
        ] {
            assert!(!check_tx(&mut f, o), "{what}");
        }
        assert!(!check_tx(&mut [0u8; 4], all), "shorter than a header");
    }

    #[test]
    fn received_headers_fit_what_the_driver_accepted() {
        let all = Offloads::accepted(OFFLOAD_FEATURES);
        // A segment only for a driver with GUEST_TSO4.
        assert!(check_rx(&mut with_hdr(1, GSO_TCPV4, 54, 1448, 34, 16), all));
        assert!(!check_rx(
            &mut with_hdr(1, GSO_TCPV4, 54, 1448, 34, 16),
            Offloads::default()
        ));
        assert!(
            !check_rx(&mut with_hdr(0, 3, 0, 0, 0, 0), all),
            "UDP segment"
        );
        // A partial checksum is completed for a driver without GUEST_CSUM: the field held the
        // pseudo-header sum; that plus the one's complement sum from csum_start over the result
        // is 0xffff, as a receiver checks it.
        let mut f = with_hdr(1 | HDR_F_DATA_VALID, GSO_NONE, 0, 0, 34, 16);
        let field = VNET_HDR_LEN + 34 + 16;
        let pseudo = u16::from_be_bytes([f[field], f[field + 1]]);
        assert!(check_rx(&mut f, Offloads::default()));
        assert_eq!(f[0], 0, "no NEEDS_CSUM or DATA_VALID left");
        let mut sum = u32::from(pseudo);
        for c in f[VNET_HDR_LEN + 34..].chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
        // ... and passed through to one with it.
        let mut f = with_hdr(1, GSO_NONE, 0, 0, 34, 16);
        let before = f.clone();
        assert!(check_rx(&mut f, all));
        assert_eq!(f, before);
        assert!(!check_rx(
            &mut with_hdr(1, GSO_NONE, 0, 0, 1513, 0),
            Offloads::default()
        ));
    }

    /// Found by the virtio_net fuzz target: flags the tap end set beyond `NEEDS_CSUM` and
    /// `DATA_VALID` (here `RSC_INFO` and undefined bits) passed through to the driver.
    #[test]
    fn received_headers_carry_only_the_flags_the_driver_accepted() {
        let all = Offloads::accepted(OFFLOAD_FEATURES);
        let mut f = with_hdr(0xff, GSO_NONE, 0, 0, 34, 16);
        assert!(check_rx(&mut f, all));
        assert_eq!(f[0], HDR_F_NEEDS_CSUM | HDR_F_DATA_VALID);
        for o in [all, Offloads::default()] {
            let mut f = with_hdr(0xfc, GSO_NONE, 0, 0, 34, 16);
            assert!(check_rx(&mut f, o));
            assert_eq!(f[0], 0, "{o:?}");
        }
        let mut f = with_hdr(0xfe, GSO_NONE, 0, 0, 34, 16);
        assert!(check_rx(&mut f, Offloads::default()));
        assert_eq!(f[0], 0, "no DATA_VALID without GUEST_CSUM");
    }

    /// Like [`device`], with the offloads offered and accepted by the driver (`features` low
    /// word) in the handshake.
    fn offload_device(features: u32) -> (GuestMem, MmioTransport, Vec<GuestQueue>, UnixDatagram) {
        use crate::devices::virtio::mmio::{
            STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK, STATUS_FEATURES_OK,
        };
        let (dev_end, test_end) = UnixDatagram::pair().unwrap();
        dev_end.set_nonblocking(true).unwrap();
        test_end
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let net = Net::new(OwnedFd::from(dev_end), MAC).with_offloads();
        let mem = guest_memory();
        let irq = vmm_sys_util::eventfd::EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let mut t = MmioTransport::new(mem.clone(), Box::new(net), irq).unwrap();
        wr(&mut t, 0x70, STATUS_ACKNOWLEDGE);
        wr(&mut t, 0x70, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        wr(&mut t, 0x24, 0);
        wr(&mut t, 0x20, features);
        wr(&mut t, 0x24, 1);
        wr(&mut t, 0x20, 1); // VIRTIO_F_VERSION_1
        let ok = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
        wr(&mut t, 0x70, ok);
        let mut queues = Vec::new();
        let mut base = RINGS_BASE;
        for i in 0..2u32 {
            let q = GuestQueue::new(base, QUEUE_SIZE);
            base = (q.used + 6 + 8 * u64::from(QUEUE_SIZE) + 0xfff) & !0xfff;
            setup_queue(&mut t, i, &q);
            queues.push(q);
        }
        wr(&mut t, 0x70, ok | STATUS_DRIVER_OK);
        (mem, t, queues, test_end)
    }

    #[test]
    fn with_offloads_a_tso_segment_passes_whole_and_a_hostile_header_is_dropped() {
        let (mem, mut t, mut q, peer) = offload_device(OFFLOAD_FEATURES as u32);
        // A 30000-byte TSO segment: header passed through (num_buffers cleared).
        let mut seg = with_hdr(1, GSO_TCPV4, 54, 1448, 34, 16);
        seg.resize(VNET_HDR_LEN + 30000, 0xab);
        mem.write_slice(&seg, GuestAddress(DATA_BASE)).unwrap();
        let head = q[1].add_chain(&mem, &[(DATA_BASE, seg.len() as u32, false)]);
        notify(&mut t, 1);
        let mut got = vec![0u8; MAX_FRAME + 100];
        let n = peer.recv(&mut got).unwrap();
        assert_eq!(n, seg.len());
        seg[10] = 0;
        assert_eq!(&got[..n], &seg[..]);
        assert_eq!(q[1].wait_used(&mem), (u32::from(head), 0));
        // A checksum field past the end: dropped, the chain returned, the device fine.
        let bad = with_hdr(1, GSO_NONE, 0, 0, 1500, 100);
        mem.write_slice(&bad, GuestAddress(DATA_BASE + 0x10000))
            .unwrap();
        let head = q[1].add_chain(&mem, &[(DATA_BASE + 0x10000, bad.len() as u32, false)]);
        notify(&mut t, 1);
        assert_eq!(q[1].wait_used(&mem), (u32::from(head), 0));
        peer.set_nonblocking(true).unwrap();
        assert!(peer.recv(&mut got).is_err(), "nothing reached the tap");
        assert!(!t.needs_reset());
    }

    #[test]
    fn a_driver_without_guest_tso4_gets_no_segments() {
        // The driver accepted the checksum offloads only.
        let (mem, mut t, mut q, peer) =
            offload_device((1 << VIRTIO_NET_F_CSUM) | (1 << VIRTIO_NET_F_GUEST_CSUM));
        let head = q[0].add_chain(&mem, &[(DATA_BASE, 65562, true)]);
        notify(&mut t, 0);
        peer.send(&with_hdr(1, GSO_TCPV4, 54, 1448, 34, 16))
            .unwrap();
        assert_eq!(q[0].wait_used(&mem), (u32::from(head), 0), "dropped");
        let head = q[0].add_chain(&mem, &[(DATA_BASE, 65562, true)]);
        notify(&mut t, 0);
        let f = with_hdr(1, GSO_NONE, 0, 0, 34, 16);
        peer.send(&f).unwrap();
        assert_eq!(q[0].wait_used(&mem), (u32::from(head), f.len() as u32));
        assert!(!t.needs_reset());
    }

    #[test]
    fn transmitted_frame_arrives_whole_with_a_plain_header() {
        let (mem, mut t, mut q, peer, counters) = device();
        let payload = frame(1500, 3);
        // Header (with junk the guest may not set without offloads) split from the frame, and
        // the frame itself split over two descriptors.
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr[0] = 1; // NEEDS_CSUM
        hdr[1] = 1; // GSO_TCPV4
        mem.write_slice(&hdr, GuestAddress(DATA_BASE)).unwrap();
        mem.write_slice(&payload[..100], GuestAddress(DATA_BASE + 0x1000))
            .unwrap();
        mem.write_slice(&payload[100..], GuestAddress(DATA_BASE + 0x2000))
            .unwrap();
        let head = q[1].add_chain(
            &mem,
            &[
                (DATA_BASE, VNET_HDR_LEN as u32, false),
                (DATA_BASE + 0x1000, 100, false),
                (DATA_BASE + 0x2000, 1400, false),
            ],
        );
        notify(&mut t, 1);
        let mut got = vec![0u8; MAX_FRAME + 100];
        let n = peer.recv(&mut got).unwrap();
        assert_eq!(n, VNET_HDR_LEN + payload.len());
        assert_eq!(&got[..VNET_HDR_LEN], &[0u8; VNET_HDR_LEN]);
        assert_eq!(&got[VNET_HDR_LEN..n], &payload[..]);
        assert_eq!(q[1].wait_used(&mem), (u32::from(head), 0));
        assert_eq!(counters.tx_frames.load(Ordering::Relaxed), 1);
        assert!(!t.needs_reset());
    }

    #[test]
    fn received_frame_lands_with_a_header() {
        let (mem, mut t, mut q, peer, counters) = device();
        // The frame arrives before the guest has buffers: it waits in the tap.
        let mut msg = vec![0u8; VNET_HDR_LEN];
        let payload = frame(600, 9);
        msg.extend_from_slice(&payload);
        peer.send(&msg).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(q[0].pop_used(&mem).is_none());
        // Header and frame split over two writable descriptors.
        let head = q[0].add_chain(
            &mem,
            &[(DATA_BASE, 8, true), (DATA_BASE + 0x1000, 2048, true)],
        );
        notify(&mut t, 0);
        let (id, len) = q[0].wait_used(&mem);
        assert_eq!((id, len as usize), (u32::from(head), msg.len()));
        let mut hdr = [0u8; VNET_HDR_LEN];
        mem.read_slice(&mut hdr[..8], GuestAddress(DATA_BASE))
            .unwrap();
        mem.read_slice(&mut hdr[8..], GuestAddress(DATA_BASE + 0x1000))
            .unwrap();
        assert_eq!(&hdr[10..12], &1u16.to_le_bytes(), "num_buffers");
        let mut got = vec![0u8; payload.len()];
        mem.read_slice(&mut got, GuestAddress(DATA_BASE + 0x1000 + 4))
            .unwrap();
        assert_eq!(got, payload);

        // With buffers available, later frames are delivered as they arrive.
        for k in 0..4u64 {
            q[0].add_chain(&mem, &[(DATA_BASE + 0x4000 + k * 0x1000, 2048, true)]);
        }
        notify(&mut t, 0);
        for k in 0..4u8 {
            let mut m = vec![0u8; VNET_HDR_LEN];
            m.extend_from_slice(&frame(60 + usize::from(k), k));
            peer.send(&m).unwrap();
            let (_, len) = q[0].wait_used(&mem);
            assert_eq!(len as usize, m.len());
        }
        assert_eq!(counters.rx_frames.load(Ordering::Relaxed), 5);
        assert!(!t.needs_reset());
    }

    #[test]
    fn frames_that_do_not_fit_are_dropped_not_fatal() {
        let (mem, mut t, mut q, peer, counters) = device();
        // RX: a 1000-byte frame into a 100-byte buffer: dropped, buffer returned empty.
        let mut m = vec![0u8; VNET_HDR_LEN];
        m.extend_from_slice(&frame(1000, 1));
        peer.send(&m).unwrap();
        q[0].add_chain(&mem, &[(DATA_BASE, 100, true)]);
        notify(&mut t, 0);
        assert_eq!(q[0].wait_used(&mem).1, 0);
        wait_for("rx drop", || {
            counters.rx_dropped.load(Ordering::Relaxed) == 1
        });

        // TX: longer than MAX_FRAME (over several descriptors), too short, and with a writable
        // buffer: each dropped and returned; nothing reaches the tap.
        q[1].add_chain(
            &mem,
            &[
                (DATA_BASE, 0x8000, false),
                (DATA_BASE + 0x8000, 0x8000, false),
                (DATA_BASE + 0x10000, 0x100, false),
            ],
        );
        q[1].add_chain(&mem, &[(DATA_BASE, 20, false)]);
        q[1].add_chain(
            &mem,
            &[(DATA_BASE, 12, false), (DATA_BASE + 0x1000, 100, true)],
        );
        notify(&mut t, 1);
        for _ in 0..3 {
            assert_eq!(q[1].wait_used(&mem).1, 0);
        }
        wait_for("tx drops", || {
            counters.tx_dropped.load(Ordering::Relaxed) == 3
        });
        peer.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        assert!(peer.recv(&mut buf).is_err(), "nothing was sent");
        assert_eq!(counters.tx_frames.load(Ordering::Relaxed), 0);

        // A frame of exactly MAX_FRAME bytes passes.
        q[1].add_chain(
            &mem,
            &[
                (DATA_BASE, 0x8000, false),
                (DATA_BASE + 0x8000, (MAX_FRAME - 0x8000) as u32, false),
            ],
        );
        notify(&mut t, 1);
        q[1].wait_used(&mem);
        peer.set_nonblocking(false).unwrap();
        let mut big = vec![0u8; MAX_FRAME + 1];
        assert_eq!(peer.recv(&mut big).unwrap(), MAX_FRAME);
        assert!(!t.needs_reset());
    }

    #[test]
    fn malformed_chains_need_a_reset() {
        // A looping chain on TX.
        let (mem, mut t, mut q, _peer, _) = device();
        q[1].write_desc(&mem, 0, DATA_BASE, 64, F_NEXT, 1);
        q[1].write_desc(&mem, 1, DATA_BASE, 64, F_NEXT, 0);
        q[1].publish(&mem, 0);
        notify(&mut t, 1);
        wait_for("needs reset (loop)", || t.needs_reset());

        // A receive buffer outside guest memory, with a frame waiting.
        let (mem, mut t, mut q, peer, _) = device();
        let mut m = vec![0u8; VNET_HDR_LEN];
        m.extend_from_slice(&frame(100, 0));
        peer.send(&m).unwrap();
        q[0].add_chain(&mem, &[(MEM_SIZE as u64 - 16, 4096, true)]);
        notify(&mut t, 0);
        wait_for("needs reset (range)", || t.needs_reset());

        // An avail index far ahead of the queue size.
        let (mem, mut t, q, _peer, _) = device();
        q[1].set_avail_idx(&mem, QUEUE_SIZE * 3);
        notify(&mut t, 1);
        wait_for("needs reset (avail)", || t.needs_reset());
    }

    /// Random descriptor tables, heads and avail indices on both queues, with frames waiting:
    /// the device serves, drops or needs a reset, and never panics (which would abort this test
    /// binary) or stalls the caller.
    #[test]
    fn random_chains_never_panic() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..200 {
            let (mem, mut t, q, peer, _) = device();
            peer.set_nonblocking(true).unwrap();
            let mut m = vec![0u8; VNET_HDR_LEN];
            m.extend_from_slice(&frame(64 + (round % 1400), round as u8));
            let _ = peer.send(&m);
            for (qi, gq) in q.iter().enumerate() {
                let n = rnd() % 8 + 1;
                for i in 0..n as u16 {
                    let r = rnd();
                    let addr = match r % 4 {
                        0 => DATA_BASE + (r >> 8) % 0x10_0000,
                        1 => (MEM_SIZE as u64).wrapping_sub((r >> 8) % 64),
                        2 => r >> 4,
                        _ => DATA_BASE,
                    };
                    let len = match (r >> 2) % 4 {
                        0 => (r >> 16) as u32 % 2048,
                        1 => u32::MAX - (r >> 40) as u32 % 16,
                        2 => 70_000,
                        _ => 12,
                    };
                    let flags = (r >> 24) as u16 & (F_NEXT | F_WRITE | F_INDIRECT);
                    let next = (r >> 32) as u16 % (QUEUE_SIZE + 4);
                    gq.write_desc(&mem, i, addr, len, flags, next);
                }
                let k = rnd() % 4 + 1;
                for j in 0..k {
                    let slot = GuestAddress(gq.avail + 4 + 2 * j);
                    mem.write_obj((rnd() % 10) as u16, slot).unwrap();
                }
                let idx = if rnd() % 5 == 0 {
                    rnd() as u16
                } else {
                    k as u16
                };
                gq.set_avail_idx(&mem, idx);
                notify(&mut t, qi as u32);
            }
            // Either the queues drain or the device gives up; both within the deadline.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !t.needs_reset() && Instant::now() < deadline {
                let used: u16 = mem.read_obj(GuestAddress(q[1].used + 2)).unwrap();
                if used != 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    #[test]
    fn a_flood_of_frames_is_served_in_bounded_batches() {
        let (mem, mut t, mut q, peer, counters) = device();
        let q0 = &mut q[0];
        for k in 0..QUEUE_SIZE as u64 {
            q0.add_chain(&mem, &[(DATA_BASE + k * 0x800, 0x800, true)]);
        }
        notify(&mut t, 0);
        let mut m = vec![0u8; VNET_HDR_LEN];
        m.extend_from_slice(&frame(200, 5));
        // More frames than buffers: the rest stay in the socket (the sender blocks), nothing is
        // lost or fatal.
        let sender = std::thread::spawn(move || {
            for _ in 0..300 {
                peer.send(&m).unwrap();
            }
        });
        wait_for("all buffers used", || {
            counters.rx_frames.load(Ordering::Relaxed) == u64::from(QUEUE_SIZE)
        });
        for _ in 0..QUEUE_SIZE {
            q0.wait_used(&mem);
        }
        // Buffers again: the remaining frames follow.
        for k in 0..64u64 {
            q0.add_chain(&mem, &[(DATA_BASE + k * 0x800, 0x800, true)]);
        }
        notify(&mut t, 0);
        wait_for("the rest", || {
            counters.rx_frames.load(Ordering::Relaxed) == u64::from(QUEUE_SIZE) + 44
        });
        sender.join().unwrap();
        assert!(!t.needs_reset());
    }
}
