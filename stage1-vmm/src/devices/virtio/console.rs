//! virtio-console (device ID 3), one port, no multiport, no resize.
//!
//! Queue 0 (receiveq) carries host input (e.g. stdin) to the guest; queue 1 (transmitq) carries
//! guest output to a host fd. Two instances give the guest `hvc0` (app stdout) and `hvc1` (app
//! stderr).
//!
//! Output never loses bytes: the worker writes straight from the guest's buffers to the
//! non-blocking host fd. When the host side would block it remembers where it stopped (no host
//! buffer), stops draining the transmit queue and waits for the fd to become writable; the guest
//! waits for its buffers meanwhile. Input goes through a bounded buffer ([`RX_BUFFER_SIZE`]); when
//! it is full the worker stops reading the host fd until the guest supplies receive buffers.
//! When the worker stops (device reset or the transport is dropped), it first flushes what the
//! guest already queued, waiting at most [`FLUSH_TIMEOUT`] for a slow reader.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::queue::{add_used, has_pending, pop_chain, QueueError};
use super::worker::FIRST_DEVICE_TOKEN;
use super::worker::{self, add_fd, modify_fd, DeviceError, Drain, Worker, WorkerHandle};
use super::{ActivateArgs, ActivateError, Interrupt, VirtioDevice, TYPE_CONSOLE};
use crate::memory::GuestMem;

/// Queue size of both queues (entries).
pub const QUEUE_SIZE: u16 = 256;
/// Receive queue index.
const RX_QUEUE: usize = 0;
/// Transmit queue index.
const TX_QUEUE: usize = 1;
/// Bytes buffered from the host input before reading pauses.
pub const RX_BUFFER_SIZE: usize = 64 * 1024;
/// Bytes copied out of guest memory per write to the host (bytes).
const TX_CHUNK: usize = 64 * 1024;
/// Longest time the final flush waits for a slow reader of the output.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval while flushing or while a non-pollable fd would block (milliseconds).
const RETRY_MS: i32 = 10;
/// Size of the (unused) console configuration space: cols, rows, max_nr_ports, emerg_wr (bytes).
const CONFIG_SIZE: usize = 12;
/// Epoll token of the output fd.
const TOKEN_OUTPUT: u64 = FIRST_DEVICE_TOKEN;
/// Epoll token of the input fd.
const TOKEN_INPUT: u64 = FIRST_DEVICE_TOKEN + 1;

/// A single-port virtio console.
pub struct Console {
    output: Option<Arc<File>>,
    input: Option<Arc<File>>,
    worker: Option<WorkerHandle>,
}

impl Console {
    /// A console writing guest output to `output` and feeding `input` to the guest; either may be
    /// absent (output is then discarded, the guest sees no input). Both fds are used as they are:
    /// pass non-blocking ones, see [`nonblocking_fd`].
    pub fn new(output: Option<OwnedFd>, input: Option<OwnedFd>) -> Console {
        Console {
            output: output.map(|fd| Arc::new(File::from(fd))),
            input: input.map(|fd| Arc::new(File::from(fd))),
            worker: None,
        }
    }
}

/// Returns a non-blocking fd for the file behind `fd` without changing `fd`'s own flags where
/// possible: pipes, FIFOs and terminals are reopened through `/proc/self/fd` (a new open file
/// description), regular files are just duplicated (they never block, and reopening would lose
/// the offset), anything else (sockets) is duplicated and switched to non-blocking, which also
/// affects other holders of that description.
pub fn nonblocking_fd(fd: BorrowedFd<'_>, write: bool) -> io::Result<OwnedFd> {
    let file = File::from(fd.try_clone_to_owned()?);
    let meta = file.metadata()?;
    if meta.is_file() {
        return Ok(file.into());
    }
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    let mut opts = std::fs::OpenOptions::new();
    if write {
        opts.write(true);
    } else {
        opts.read(true);
    }
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC);
    }
    if let Ok(reopened) = opts.open(&path) {
        return Ok(reopened.into());
    }
    set_nonblocking(file.as_fd())?;
    Ok(file.into())
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL on a valid, borrowed fd; no memory is passed.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: F_SETFL with an integer argument on a valid, borrowed fd.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        TYPE_CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&[0u8; CONFIG_SIZE], offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        log::debug!("virtio-console: config write at {offset:#x} ignored");
    }

    fn activate(&mut self, args: ActivateArgs) -> Result<(), ActivateError> {
        let queues = self.queue_max_sizes().len();
        worker::activate(
            &mut self.worker,
            args,
            queues,
            "virtio-console",
            |mem, queues, interrupt| ConsoleWorker {
                mem,
                queues,
                interrupt,
                output: self.output.clone(),
                output_pollable: false,
                output_broken: false,
                pending_tx: None,
                input: self.input.clone(),
                input_state: InputState::Closed,
                rx_buf: VecDeque::with_capacity(RX_BUFFER_SIZE),
                scratch: vec![0u8; TX_CHUNK],
            },
        )
    }

    fn reset(&mut self) {
        // Dropping the handle stops the worker's loop and waits for it.
        self.worker = None;
    }
}

/// The part of a transmit chain not yet written to the host.
struct PendingTx {
    head: u16,
    /// Readable buffers of the chain (validated to be in guest memory).
    bufs: Vec<(GuestAddress, u32)>,
    /// Current buffer.
    idx: usize,
    /// Bytes of the current buffer already written.
    off: u32,
}

/// What happened to the host input fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputState {
    /// No input, end of file, or an error: nothing more to read.
    Closed,
    /// Registered with epoll, waiting for data.
    Watching,
    /// Removed from epoll because the buffer is full.
    Paused,
    /// Not pollable (e.g. a regular file): read whenever the buffer has room.
    Direct,
}

/// Result of writing a pending chain.
enum TxProgress {
    Complete,
    Blocked,
}

struct ConsoleWorker {
    mem: GuestMem,
    queues: Vec<Queue>,
    interrupt: Interrupt,
    output: Option<Arc<File>>,
    output_pollable: bool,
    /// The output failed (e.g. the reader went away): further output is discarded.
    output_broken: bool,
    pending_tx: Option<PendingTx>,
    input: Option<Arc<File>>,
    input_state: InputState,
    rx_buf: VecDeque<u8>,
    scratch: Vec<u8>,
}

fn is_eperm(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EPERM)
}

impl ConsoleWorker {
    fn queue_err(queue: usize) -> impl FnOnce(QueueError) -> DeviceError {
        move |source| DeviceError::Queue { queue, source }
    }

    /// Writes as much of the pending chain as the host takes.
    fn write_pending(&mut self) -> TxProgress {
        let Some(p) = self.pending_tx.as_mut() else {
            return TxProgress::Complete;
        };
        let Some(out) = self.output.as_ref().filter(|_| !self.output_broken) else {
            return TxProgress::Complete;
        };
        while let Some(&(addr, len)) = p.bufs.get(p.idx) {
            let remaining = len.saturating_sub(p.off);
            if remaining == 0 {
                p.idx += 1;
                p.off = 0;
                continue;
            }
            let n = usize::try_from(remaining).unwrap_or(TX_CHUNK).min(TX_CHUNK);
            let Some(buf) = self.scratch.get_mut(..n) else {
                return TxProgress::Complete;
            };
            let src = addr.checked_add(u64::from(p.off));
            if let Err(e) = src
                .ok_or(vm_memory::GuestMemoryError::InvalidGuestAddress(addr))
                .and_then(|a| self.mem.read_slice(buf, a))
            {
                log::warn!("virtio-console: cannot read guest buffer: {e}");
                return TxProgress::Complete;
            }
            match (&**out).write(buf) {
                Ok(0) => return TxProgress::Blocked,
                Ok(w) => p.off = p.off.saturating_add(u32::try_from(w).unwrap_or(u32::MAX)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return TxProgress::Blocked,
                Err(e) => {
                    log::warn!("virtio-console: output failed, discarding further output: {e}");
                    self.output_broken = true;
                    return TxProgress::Complete;
                }
            }
        }
        TxProgress::Complete
    }

    /// Moves guest output to the host until the queue is empty, the budget is spent or the host
    /// would block.
    fn process_tx(&mut self, epoll: Option<&Epoll>) -> Result<Drain, QueueError> {
        let mut budget = self.queues.get(TX_QUEUE).map_or(0, |q| q.size());
        let mut used = false;
        let result = loop {
            if self.pending_tx.is_some() {
                match self.write_pending() {
                    TxProgress::Blocked => {
                        self.wait_writable(epoll);
                        break Drain::Done;
                    }
                    TxProgress::Complete => {
                        if let (Some(p), Some(q)) =
                            (self.pending_tx.take(), self.queues.get_mut(TX_QUEUE))
                        {
                            add_used(q, &self.mem, p.head, 0)?;
                            log::trace!("virtio-console: tx head {} written", p.head);
                            used = true;
                        }
                    }
                }
            }
            let Some(q) = self.queues.get_mut(TX_QUEUE) else {
                break Drain::Done;
            };
            if budget == 0 {
                break if has_pending(q, &self.mem)? {
                    Drain::More
                } else {
                    Drain::Done
                };
            }
            let Some(chain) = pop_chain(q, &self.mem)? else {
                break Drain::Done;
            };
            budget -= 1;
            self.pending_tx = Some(pending_from_chain(chain));
        };
        if used {
            self.interrupt.signal_used_queue();
        }
        Ok(result)
    }

    /// Arranges to be woken when the output fd is writable again.
    fn wait_writable(&mut self, epoll: Option<&Epoll>) {
        let (Some(epoll), Some(out)) = (epoll, self.output.as_ref()) else {
            return;
        };
        if self.output_pollable {
            if let Err(e) = modify_fd(epoll, out.as_raw_fd(), EventSet::OUT, TOKEN_OUTPUT) {
                log::warn!("virtio-console: cannot watch the output: {e}");
            }
        } else {
            // Not pollable yet would block: retry shortly by polling with a timeout.
            poll_fd(out.as_fd(), libc::POLLOUT, RETRY_MS);
        }
    }

    /// Moves buffered input into the guest's receive buffers.
    fn fill_rx(&mut self) -> Result<(), QueueError> {
        let mut used = false;
        let mut budget = self.queues.get(RX_QUEUE).map_or(0, |q| q.size());
        loop {
            if self.input_state == InputState::Direct {
                self.read_input();
            }
            if self.rx_buf.is_empty() || budget == 0 {
                break;
            }
            let Some(q) = self.queues.get_mut(RX_QUEUE) else {
                break;
            };
            let Some(chain) = pop_chain(q, &self.mem)? else {
                break;
            };
            budget -= 1;
            let head = chain.head_index();
            let mut written: u32 = 0;
            for desc in chain.writable() {
                if self.rx_buf.is_empty() {
                    break;
                }
                let want = usize::try_from(desc.len())
                    .unwrap_or(usize::MAX)
                    .min(self.rx_buf.len());
                let bytes: Vec<u8> = self.rx_buf.drain(..want).collect();
                if let Err(e) = self.mem.write_slice(&bytes, desc.addr()) {
                    log::warn!("virtio-console: cannot write guest buffer: {e}");
                    break;
                }
                written = written.saturating_add(u32::try_from(want).unwrap_or(u32::MAX));
            }
            add_used(q, &self.mem, head, written)?;
            used = true;
        }
        if used {
            self.interrupt.signal_used_queue();
        }
        Ok(())
    }

    /// Reads host input into the bounded buffer.
    fn read_input(&mut self) {
        let Some(input) = self.input.as_ref() else {
            self.input_state = InputState::Closed;
            return;
        };
        let room = RX_BUFFER_SIZE.saturating_sub(self.rx_buf.len());
        if room == 0 {
            return;
        }
        let mut buf = vec![0u8; room];
        match (&**input).read(&mut buf) {
            Ok(0) => self.input_state = InputState::Closed,
            Ok(n) => self.rx_buf.extend(buf.iter().take(n)),
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("virtio-console: input failed: {e}");
                self.input_state = InputState::Closed;
            }
        }
    }

    /// Stops or restarts watching the input depending on buffer room.
    fn update_input_watch(&mut self, epoll: &Epoll) {
        let Some(input) = self.input.as_ref() else {
            return;
        };
        let fd = input.as_raw_fd();
        let full = self.rx_buf.len() >= RX_BUFFER_SIZE;
        let op = match (self.input_state, full) {
            (InputState::Watching, true) => Some((ControlOperation::Delete, InputState::Paused)),
            (InputState::Paused, false) => Some((ControlOperation::Add, InputState::Watching)),
            _ => None,
        };
        if let Some((op, next)) = op {
            match epoll.ctl(op, fd, EpollEvent::new(EventSet::IN, TOKEN_INPUT)) {
                Ok(()) => self.input_state = next,
                Err(e) => {
                    log::warn!("virtio-console: cannot watch the input: {e}");
                    self.input_state = InputState::Closed;
                }
            }
        }
    }

    /// Final flush on stop: writes everything the guest queued, waiting for a slow reader up
    /// to [`FLUSH_TIMEOUT`].
    fn flush(&mut self) {
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        loop {
            match self.process_tx(None) {
                Ok(Drain::More) => continue,
                Ok(Drain::Done) => {}
                Err(e) => {
                    log::warn!("virtio-console: flush stopped: {e}");
                    return;
                }
            }
            if self.pending_tx.is_none() || self.output_broken {
                return;
            }
            if Instant::now() >= deadline {
                log::warn!("virtio-console: output reader too slow, dropping unflushed output");
                return;
            }
            if let Some(out) = self.output.as_ref() {
                poll_fd(out.as_fd(), libc::POLLOUT, RETRY_MS);
            }
        }
    }
}

/// Waits up to `timeout_ms` for `events` on `fd` (errors are treated as "ready").
fn poll_fd(fd: BorrowedFd<'_>, events: libc::c_short, timeout_ms: i32) {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: `pfd` is a valid pollfd for the duration of the call and nfds is 1.
    let _ = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
}

fn pending_from_chain(chain: DescriptorChain<&GuestMem>) -> PendingTx {
    let head = chain.head_index();
    let bufs = chain.readable().map(|d| (d.addr(), d.len())).collect();
    PendingTx {
        head,
        bufs,
        idx: 0,
        off: 0,
    }
}

impl Worker for ConsoleWorker {
    fn init(&mut self, epoll: &Epoll) -> Result<(), DeviceError> {
        if let Some(out) = self.output.as_ref() {
            match add_fd(epoll, out.as_raw_fd(), EventSet::empty(), TOKEN_OUTPUT) {
                Ok(()) => self.output_pollable = true,
                Err(e) if is_eperm(&e) => self.output_pollable = false,
                Err(e) => return Err(DeviceError::Epoll(e)),
            }
        }
        if let Some(input) = self.input.as_ref() {
            self.input_state = match add_fd(epoll, input.as_raw_fd(), EventSet::IN, TOKEN_INPUT) {
                Ok(()) => InputState::Watching,
                Err(e) if is_eperm(&e) => InputState::Direct,
                Err(e) => return Err(DeviceError::Epoll(e)),
            };
        }
        Ok(())
    }

    fn queue_event(&mut self, epoll: &Epoll, queue: usize) -> Result<Drain, DeviceError> {
        match queue {
            TX_QUEUE => {
                if self.pending_tx.is_some() && self.output_pollable {
                    // Still waiting for the host to drain; the writable event resumes.
                    return Ok(Drain::Done);
                }
                self.process_tx(Some(epoll))
                    .map_err(Self::queue_err(TX_QUEUE))
            }
            RX_QUEUE => {
                self.fill_rx().map_err(Self::queue_err(RX_QUEUE))?;
                self.update_input_watch(epoll);
                Ok(Drain::Done)
            }
            _ => Ok(Drain::Done),
        }
    }

    fn fd_event(
        &mut self,
        epoll: &Epoll,
        token: u64,
        events: EventSet,
    ) -> Result<Option<usize>, DeviceError> {
        match token {
            TOKEN_OUTPUT => {
                if let Some(out) = self.output.as_ref() {
                    modify_fd(epoll, out.as_raw_fd(), EventSet::empty(), TOKEN_OUTPUT)
                        .map_err(DeviceError::Epoll)?;
                }
                if events.contains(EventSet::ERROR) && self.pending_tx.is_some() {
                    log::warn!("virtio-console: output closed, discarding further output");
                    self.output_broken = true;
                }
                match self
                    .process_tx(Some(epoll))
                    .map_err(Self::queue_err(TX_QUEUE))?
                {
                    Drain::More => Ok(Some(TX_QUEUE)),
                    Drain::Done => Ok(None),
                }
            }
            TOKEN_INPUT => {
                if events.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::ERROR) {
                    self.read_input();
                }
                if self.input_state == InputState::Closed {
                    if let Some(input) = self.input.as_ref() {
                        let _ = epoll.ctl(
                            ControlOperation::Delete,
                            input.as_raw_fd(),
                            EpollEvent::default(),
                        );
                    }
                }
                self.fill_rx().map_err(Self::queue_err(RX_QUEUE))?;
                self.update_input_watch(epoll);
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}

impl Drop for ConsoleWorker {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::OwnedFd;
    use std::thread;
    use std::time::{Duration, Instant};

    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::devices::virtio::mmio::MmioTransport;
    use crate::devices::virtio::test_utils::*;

    /// Test stream size (bytes).
    const STREAM_LEN: usize = 10 << 20;

    fn pipe() -> (File, File) {
        let (r, w) = std::io::pipe().unwrap();
        (File::from(OwnedFd::from(r)), File::from(OwnedFd::from(w)))
    }

    fn nonblocking(f: &File, write: bool) -> OwnedFd {
        nonblocking_fd(f.as_fd(), write).unwrap()
    }

    fn pattern(i: usize) -> u8 {
        ((i % 251) as u8) ^ ((i / 4096) as u8)
    }

    fn console(
        mem: &GuestMem,
        out: Option<OwnedFd>,
        input: Option<OwnedFd>,
    ) -> (MmioTransport, Vec<GuestQueue>) {
        let (t, q, _irq) = activated(mem, Box::new(Console::new(out, input)), &[256, 256]);
        (t, q)
    }

    #[test]
    fn tx_bytes_arrive_in_order() {
        let mem = guest_memory();
        let (r, w) = pipe();
        let (mut t, mut q) = console(&mem, Some(nonblocking(&w, true)), None);
        drop(w);
        let tx = &mut q[1];
        mem.write_slice(b"first ", GuestAddress(DATA_BASE)).unwrap();
        mem.write_slice(b"sec", GuestAddress(DATA_BASE + 0x100))
            .unwrap();
        mem.write_slice(b"o", GuestAddress(DATA_BASE + 0x200))
            .unwrap();
        mem.write_slice(b"nd ", GuestAddress(DATA_BASE + 0x300))
            .unwrap();
        mem.write_slice(b"third\n", GuestAddress(DATA_BASE + 0x400))
            .unwrap();
        tx.add_chain(&mem, &[(DATA_BASE, 6, false)]);
        tx.add_chain(
            &mem,
            &[
                (DATA_BASE + 0x100, 3, false),
                (DATA_BASE + 0x200, 1, false),
                (DATA_BASE + 0x300, 3, false),
            ],
        );
        tx.add_chain(&mem, &[(DATA_BASE + 0x400, 6, false)]);
        notify(&mut t, 1);
        for _ in 0..3 {
            tx.wait_used(&mem);
        }
        drop(t);
        let mut got = String::new();
        (&r).read_to_string(&mut got).unwrap();
        assert_eq!(got, "first second third\n");
    }

    #[test]
    fn tx_10mib_through_slow_pipe_loses_nothing() {
        let mem = guest_memory();
        let (r, w) = pipe();
        let (mut t, mut q) = console(&mem, Some(nonblocking(&w, true)), None);
        drop(w);
        let reader = thread::spawn(move || {
            // Let the pipe fill up so the device has to stop and wait.
            thread::sleep(Duration::from_millis(200));
            let mut got = Vec::with_capacity(STREAM_LEN);
            let mut buf = [0u8; 4096];
            let mut reads = 0u32;
            loop {
                let n = (&r).read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                reads += 1;
                if reads.is_multiple_of(64) {
                    thread::sleep(Duration::from_millis(1));
                }
            }
            got
        });

        let tx = &mut q[1];
        let size = usize::from(tx.size);
        let mut sent = 0usize;
        let mut in_flight = 0usize;
        let mut k = 0usize;
        while sent < STREAM_LEN {
            while in_flight >= size {
                tx.wait_used(&mem);
                in_flight -= 1;
                while tx.pop_used(&mem).is_some() {
                    in_flight -= 1;
                }
            }
            let slot = (k % size) as u64;
            let len = (4096 - (k % 7) * 100).min(STREAM_LEN - sent);
            let data: Vec<u8> = (sent..sent + len).map(pattern).collect();
            let addr = DATA_BASE + slot * 4096;
            mem.write_slice(&data, GuestAddress(addr)).unwrap();
            tx.add_chain(&mem, &[(addr, len as u32, false)]);
            notify(&mut t, 1);
            sent += len;
            in_flight += 1;
            k += 1;
        }
        while in_flight > 0 {
            tx.wait_used(&mem);
            in_flight -= 1;
        }
        assert!(!t.needs_reset());
        drop(t); // closes the write end
        let got = reader.join().unwrap();
        assert_eq!(got.len(), STREAM_LEN, "every byte arrived");
        if let Some(i) = (0..STREAM_LEN).find(|i| got[*i] != pattern(*i)) {
            panic!("byte {i} differs: got {} want {}", got[i], pattern(i));
        }
    }

    #[test]
    fn reset_flushes_output_already_queued() {
        let mem = guest_memory();
        let (r, w) = pipe();
        let (mut t, mut q) = console(&mem, Some(nonblocking(&w, true)), None);
        drop(w);
        let tx = &mut q[1];
        // 1 MiB in 16 chains of 64 KiB: more than the pipe holds.
        let total = 16 * 0x1_0000usize;
        let data: Vec<u8> = (0..total).map(pattern).collect();
        mem.write_slice(&data, GuestAddress(DATA_BASE)).unwrap();
        for c in 0..16u64 {
            tx.add_chain(&mem, &[(DATA_BASE + c * 0x1_0000, 0x1_0000, false)]);
        }
        notify(&mut t, 1);
        let reader = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            let mut got = Vec::new();
            (&r).read_to_end(&mut got).unwrap();
            got
        });
        thread::sleep(Duration::from_millis(50));
        // The pipe (64 KiB) is full and nobody reads: the device waits instead of dropping.
        let mut done = 0;
        while tx.pop_used(&mem).is_some() {
            done += 1;
        }
        assert!(
            done < 16,
            "device returned {done} chains it cannot have written"
        );
        // Driver reset while output is still queued: the worker flushes before it stops.
        wr(&mut t, 0x70, 0);
        drop(t);
        assert_eq!(reader.join().unwrap(), data);
    }

    #[test]
    fn tx_to_regular_file() {
        let mem = guest_memory();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let f = File::create(&path).unwrap();
        let (mut t, mut q) = console(&mem, Some(nonblocking(&f, true)), None);
        let tx = &mut q[1];
        mem.write_slice(b"to a file", GuestAddress(DATA_BASE))
            .unwrap();
        tx.add_chain(&mem, &[(DATA_BASE, 9, false)]);
        notify(&mut t, 1);
        tx.wait_used(&mem);
        drop(t);
        assert_eq!(std::fs::read(&path).unwrap(), b"to a file");
    }

    #[test]
    fn tx_after_reader_closed_keeps_consuming() {
        let mem = guest_memory();
        let (r, w) = pipe();
        let (mut t, mut q) = console(&mem, Some(nonblocking(&w, true)), None);
        drop(w);
        drop(r);
        let tx = &mut q[1];
        for _ in 0..3 {
            tx.add_chain(&mem, &[(DATA_BASE, 100, false)]);
            notify(&mut t, 1);
            assert_eq!(tx.wait_used(&mem).1, 0);
        }
        assert!(!t.needs_reset());
    }

    #[test]
    fn rx_delivers_host_input() {
        let mem = guest_memory();
        let (r, w) = pipe();
        let (mut t, mut q) = console(&mem, None, Some(nonblocking(&r, false)));
        drop(r);
        let rx = &mut q[0];
        let buf = DATA_BASE + 0x8_0000;
        rx.add_chain(&mem, &[(buf, 64, true)]);
        notify(&mut t, 0);
        (&w).write_all(b"hello guest").unwrap();
        let (_, len) = rx.wait_used(&mem);
        let mut got = vec![0u8; len as usize];
        mem.read_slice(&mut got, GuestAddress(buf)).unwrap();
        assert_eq!(got, b"hello guest");

        // Input that arrives before the guest posts buffers is kept, in order.
        (&w).write_all(b"0123456789").unwrap();
        thread::sleep(Duration::from_millis(50));
        rx.add_chain(&mem, &[(buf, 4, true)]);
        rx.add_chain(&mem, &[(buf + 0x100, 64, true)]);
        notify(&mut t, 0);
        let (_, a) = rx.wait_used(&mem);
        let deadline = Instant::now() + Duration::from_secs(5);
        let (_, b) = loop {
            if let Some(u) = rx.pop_used(&mem) {
                break u;
            }
            assert!(Instant::now() < deadline);
            thread::sleep(Duration::from_millis(1));
        };
        let mut first = vec![0u8; a as usize];
        let mut second = vec![0u8; b as usize];
        mem.read_slice(&mut first, GuestAddress(buf)).unwrap();
        mem.read_slice(&mut second, GuestAddress(buf + 0x100))
            .unwrap();
        assert_eq!([first, second].concat(), b"0123456789");
    }

    #[test]
    fn nonblocking_fd_leaves_the_original_blocking() {
        let (r, w) = pipe();
        let nb = nonblocking(&w, true);
        // SAFETY: F_GETFL on valid fds owned by this test.
        let (orig, new) = unsafe {
            (
                libc::fcntl(w.as_raw_fd(), libc::F_GETFL),
                libc::fcntl(nb.as_raw_fd(), libc::F_GETFL),
            )
        };
        assert_eq!(orig & libc::O_NONBLOCK, 0);
        assert_ne!(new & libc::O_NONBLOCK, 0);
        drop(r);
    }
}
