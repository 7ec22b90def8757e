//! virtio-vsock (device ID 19), "hybrid" as Firecracker and cloud-hypervisor build it: the
//! guest's vsock connections end in unix sockets on the host, no host kernel module, no
//! host-global CID. The contract with host clients is `pod_abi::vsock`.
//!
//! - The guest has CID [`pod_abi::vsock::GUEST_CID`] (configuration space); three queues: rx,
//!   tx, event (the event queue is never used: no transport resets are sent).
//! - Host -> guest: the device listens on `<socket_dir>/vsock.sock` (mode 0600, made when the
//!   device is created and removed when it is dropped). A client writes `CONNECT <port>\n`
//!   (at most `MAX_HANDSHAKE` bytes, within [`muxer::HANDSHAKE_TIMEOUT`]); the device sends a
//!   REQUEST to the guest and answers `OK <host port>\n` on its RESPONSE, or closes the client
//!   on RST or after [`muxer::CONNECT_TIMEOUT`].
//! - Guest -> host: a REQUEST to host port `P` connects to `<socket_dir>/vsock.sock_P` if that
//!   is a unix socket (a symlink or anything else is refused), else the guest gets an RST.
//! - Flow control per virtio 1.2, 5.10.6.3 ([`conn::Credit`]): the guest gets
//!   [`muxer::CONN_BUF`] bytes of credit per connection, which bounds what the device buffers;
//!   the host stream is read only while the guest has credit and receive buffers.
//!
//! Layout: [`packet`] (headers, with the `virtio-vsock` crate), [`conn`] (the state machine and
//! credit, plain data), [`muxer`] (ports to connections, the epoll interest of each host
//! stream), [`backend`] (the unix sockets). The worker runs on the device's thread
//! (`ThreadKind::DeviceWorker(TYPE_VSOCK)`, its own seccomp profile).
//!
//! Hostile-guest bounds: malformed chains on tx are dropped (counted); packets with a wrong CID
//! are dropped; a bad type or op, data beyond the credit, or an out-of-turn operation resets
//! the connection; a receive chain the device cannot use, or a corrupt queue, puts the device
//! into `DEVICE_NEEDS_RESET`. Connections, handshakes and queued resets are bounded
//! ([`muxer::MAX_CONNS`], [`muxer::MAX_HANDSHAKES`], [`muxer::MAX_ORPHAN_RSTS`]).

pub mod backend;
pub mod conn;
pub mod muxer;
pub mod packet;
#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::{Epoll, EventSet};
use vmm_sys_util::timerfd::TimerFd;

use self::backend::Listener;
use self::muxer::{Muxer, VsockCounters, TOKEN_TIMER};
use self::packet::{read_tx, RxPacket, MAX_DATA};
use super::queue::{add_used, pop_chain, QueueError};
use super::worker::{self, add_fd, DeviceError, Drain, Worker, WorkerHandle};
use super::{ActivateArgs, ActivateError, Interrupt, LogLimiter, VirtioDevice, TYPE_VSOCK};
use crate::memory::GuestMem;

/// Size of each queue (entries).
pub const QUEUE_SIZE: u16 = 256;
/// Receive queue index.
const RX_QUEUE: usize = 0;
/// Transmit queue index.
const TX_QUEUE: usize = 1;
/// Event queue index.
const EVENT_QUEUE: usize = 2;
/// How often the worker checks deadlines while any runs.
const TICK: Duration = Duration::from_millis(250);

/// Where the device's sockets live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// The directory of `vsock.sock` and the `vsock.sock_<port>` listeners (the pod directory;
    /// `/pod` in the VMM's jail).
    pub socket_dir: PathBuf,
}

/// A virtio-vsock device.
pub struct Vsock {
    config: [u8; 8],
    dir: PathBuf,
    listener: Arc<Listener>,
    counters: Arc<VsockCounters>,
    worker: Option<WorkerHandle>,
    log_limit: LogLimiter,
}

impl Vsock {
    /// A device for guest CID [`pod_abi::vsock::GUEST_CID`], listening on
    /// `<cfg.socket_dir>/vsock.sock` from now on (clients wait in the backlog until the guest
    /// driver starts the device).
    pub fn new(cfg: &VsockConfig) -> io::Result<Vsock> {
        let listener = Listener::bind(&cfg.socket_dir)?;
        Ok(Vsock {
            config: pod_abi::vsock::GUEST_CID.to_le_bytes(),
            dir: cfg.socket_dir.clone(),
            listener: Arc::new(listener),
            counters: Arc::new(VsockCounters::default()),
            worker: None,
            log_limit: LogLimiter::default(),
        })
    }

    /// The host socket clients connect to.
    pub fn socket_path(&self) -> &Path {
        self.listener.path()
    }

    /// The device's counters (shared with its worker).
    pub fn counters(&self) -> Arc<VsockCounters> {
        self.counters.clone()
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        self.reset();
        self.listener.remove();
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        // Stream sockets only: with no feature bit negotiated, the device acts as if
        // VIRTIO_VSOCK_F_STREAM was (virtio 1.2, 5.10.3).
        0
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        guest_warn!(
            self.log_limit,
            "virtio-vsock: write to read-only config space at {offset:#x} ignored"
        );
    }

    fn activate(&mut self, args: ActivateArgs) -> Result<(), ActivateError> {
        let queues = self.queue_max_sizes().len();
        worker::activate(
            &mut self.worker,
            args,
            queues,
            "virtio-vsock",
            |mem, queues, interrupt| VsockWorker {
                mem,
                queues,
                interrupt,
                muxer: Muxer::new(
                    self.dir.clone(),
                    self.listener.clone(),
                    self.counters.clone(),
                ),
                timer: None,
                timer_armed: false,
                tx_data: vec![0u8; MAX_DATA],
                rx_data: vec![0u8; MAX_DATA],
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

struct VsockWorker {
    mem: GuestMem,
    queues: Vec<Queue>,
    interrupt: Interrupt,
    muxer: Muxer,
    /// Ticks while a deadline runs (created in `init`, on the worker thread).
    timer: Option<TimerFd>,
    timer_armed: bool,
    /// One transmitted packet's data.
    tx_data: Vec<u8>,
    /// One received packet's data.
    rx_data: Vec<u8>,
    counters: Arc<VsockCounters>,
    log_limit: LogLimiter,
}

fn epoll_err(e: io::Error) -> DeviceError {
    DeviceError::Epoll(e)
}

impl VsockWorker {
    fn queue_err(queue: usize) -> impl FnOnce(QueueError) -> DeviceError {
        move |source| DeviceError::Queue { queue, source }
    }

    /// Packets from the guest: at most one queue's worth per call.
    fn process_tx(&mut self, epoll: &Epoll) -> Result<Drain, DeviceError> {
        let mem = self.mem.clone();
        let mut budget = self.queues.get(TX_QUEUE).map_or(0, |q| q.size());
        let mut used = false;
        let result = loop {
            let Some(q) = self.queues.get_mut(TX_QUEUE) else {
                break Drain::Done;
            };
            if budget == 0 {
                break Drain::More;
            }
            let Some(mut chain) = pop_chain(q, &mem).map_err(Self::queue_err(TX_QUEUE))? else {
                break Drain::Done;
            };
            budget -= 1;
            let head = chain.head_index();
            match read_tx(&mem, &mut chain, &mut self.tx_data) {
                Ok((h, n)) => {
                    let data = self.tx_data.get(..n).unwrap_or_default();
                    self.muxer
                        .guest_packet(epoll, &h, data)
                        .map_err(epoll_err)?
                }
                Err(e) => {
                    self.counters.bad_packets.fetch_add(1, Ordering::Relaxed);
                    guest_warn!(self.log_limit, "virtio-vsock: dropped a tx chain: {e}");
                }
            }
            if let Some(q) = self.queues.get_mut(TX_QUEUE) {
                add_used(q, &mem, head, 0).map_err(Self::queue_err(TX_QUEUE))?;
                used = true;
            }
        };
        if used {
            self.interrupt.signal_used_queue();
        }
        Ok(result)
    }

    /// Packets for the guest, while it has receive buffers: at most one queue's worth.
    fn process_rx(&mut self, epoll: &Epoll) -> Result<Drain, DeviceError> {
        let mem = self.mem.clone();
        let mut budget = self.queues.get(RX_QUEUE).map_or(0, |q| q.size());
        let mut used = false;
        let result = loop {
            if !self.muxer.has_rx() {
                break Drain::Done;
            }
            if budget == 0 {
                break Drain::More;
            }
            let Some(q) = self.queues.get_mut(RX_QUEUE) else {
                break Drain::Done;
            };
            let before = q.next_avail();
            let Some(mut chain) = pop_chain(q, &mem).map_err(Self::queue_err(RX_QUEUE))? else {
                break Drain::Done;
            };
            let head = chain.head_index();
            let pkt = RxPacket::parse(&mem, &mut chain).map_err(|e| {
                log::warn!("virtio-vsock: unusable receive chain: {e}");
                DeviceError::Queue {
                    queue: RX_QUEUE,
                    source: QueueError::MalformedChain(head),
                }
            })?;
            let cap = pkt.capacity();
            let Some((h, n)) = self
                .muxer
                .next_rx(epoll, &mut self.rx_data, cap)
                .map_err(epoll_err)?
            else {
                // Nothing after all (a stream had no data): the chain stays the guest's.
                if let Some(q) = self.queues.get_mut(RX_QUEUE) {
                    q.set_next_avail(before);
                }
                break Drain::Done;
            };
            budget -= 1;
            let data = self.rx_data.get(..n).unwrap_or_default();
            let len = pkt.fill(&h, data).map_err(|e| {
                log::warn!("virtio-vsock: cannot fill a receive chain: {e}");
                DeviceError::Queue {
                    queue: RX_QUEUE,
                    source: QueueError::MalformedChain(head),
                }
            })?;
            if let Some(q) = self.queues.get_mut(RX_QUEUE) {
                add_used(q, &mem, head, len).map_err(Self::queue_err(RX_QUEUE))?;
                used = true;
            }
        };
        if used {
            self.interrupt.signal_used_queue();
        }
        Ok(result)
    }

    /// Arms the timer while a deadline runs, disarms it otherwise.
    fn sync_timer(&mut self) -> Result<(), DeviceError> {
        let want = self.muxer.has_deadlines();
        if want == self.timer_armed {
            return Ok(());
        }
        if let Some(t) = self.timer.as_mut() {
            let r = if want {
                t.reset(TICK, Some(TICK))
            } else {
                t.clear()
            };
            r.map_err(|e| DeviceError::Epoll(io::Error::from(e)))?;
            self.timer_armed = want;
        }
        Ok(())
    }

    fn after_event(&mut self, epoll: &Epoll) -> Result<Option<usize>, DeviceError> {
        let more = self.process_rx(epoll)?;
        self.sync_timer()?;
        Ok((more == Drain::More).then_some(RX_QUEUE))
    }
}

impl Worker for VsockWorker {
    fn init(&mut self, epoll: &Epoll) -> Result<(), DeviceError> {
        self.muxer.init(epoll).map_err(epoll_err)?;
        let timer = TimerFd::new().map_err(|e| DeviceError::Epoll(io::Error::from(e)))?;
        add_fd(epoll, timer.as_raw_fd(), EventSet::IN, TOKEN_TIMER).map_err(epoll_err)?;
        self.timer = Some(timer);
        // Clients may have connected before the driver started the device.
        self.muxer
            .fd_event(epoll, muxer::TOKEN_LISTENER, EventSet::IN)
            .map_err(epoll_err)?;
        self.sync_timer()
    }

    fn queue_event(&mut self, epoll: &Epoll, queue: usize) -> Result<Drain, DeviceError> {
        match queue {
            RX_QUEUE => {
                let d = self.process_rx(epoll)?;
                self.sync_timer()?;
                Ok(d)
            }
            TX_QUEUE => {
                let d = self.process_tx(epoll)?;
                let rx = self.after_event(epoll)?;
                // Either queue having work left keeps this one scheduled.
                Ok(if rx.is_some() { Drain::More } else { d })
            }
            // The event queue only holds buffers for events the device never sends.
            EVENT_QUEUE => Ok(Drain::Done),
            _ => Ok(Drain::Done),
        }
    }

    fn fd_event(
        &mut self,
        epoll: &Epoll,
        token: u64,
        events: EventSet,
    ) -> Result<Option<usize>, DeviceError> {
        if token == TOKEN_TIMER {
            if let Some(t) = self.timer.as_mut() {
                let _ = t.wait();
            }
            self.muxer.tick(epoll, Instant::now()).map_err(epoll_err)?;
        } else {
            self.muxer
                .fd_event(epoll, token, events)
                .map_err(epoll_err)?;
        }
        self.after_event(epoll)
    }
}
