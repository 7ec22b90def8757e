//! Fuzzing hooks (feature `fuzzing`, used by fuzz/ only; never part of a shipped build).
//!
//! A fuzz target must be deterministic and single-threaded, while devices normally serve their
//! queues on a worker thread. With [`set_inline_workers`] on, activating a device registers its
//! worker here instead of starting a thread, and [`run_inline_workers`] serves the notified
//! queues on the caller's thread, exactly as the worker loop would; [`run_inline_fd_events`]
//! serves the device's own host fds (a tap) that are ready. The queue helpers are re-exported so
//! a target can drive them directly.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use virtio_queue::{DescriptorChain, Queue};
use vm_memory::GuestAddress;
use vmm_sys_util::epoll::{Epoll, EpollEvent};
use vmm_sys_util::eventfd::EventFd;

use super::worker::{error_chain, Drain, Worker, FIRST_DEVICE_TOKEN, STOP_TOKEN};
use super::{queue, Interrupt};
use crate::memory::GuestMem;

pub use super::queue::{QueueConfigError, QueueError};

thread_local! {
    /// Per thread, so a test that turns it on cannot affect tests on other threads.
    static INLINE: Cell<bool> = const { Cell::new(false) };
}
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
static WORKERS: Mutex<Vec<InlineWorker>> = Mutex::new(Vec::new());

struct InlineWorker {
    id: u64,
    epoll: Epoll,
    queue_evts: Vec<EventFd>,
    interrupt: Interrupt,
    /// `None` once the worker failed (its thread would have ended).
    worker: Option<Box<dyn Worker>>,
    more: Vec<bool>,
}

fn workers() -> MutexGuard<'static, Vec<InlineWorker>> {
    WORKERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Makes device activations on this thread register inline workers (`true`) or start threads
/// (`false`).
pub fn set_inline_workers(on: bool) {
    INLINE.with(|i| i.set(on));
}

/// Whether device activations on this thread register inline workers.
pub(crate) fn inline_workers() -> bool {
    INLINE.with(Cell::get)
}

/// Registers a worker (called by `worker::spawn`); returns its id.
pub(crate) fn add_worker(
    epoll: Epoll,
    queue_evts: Vec<EventFd>,
    interrupt: Interrupt,
    mut worker: Box<dyn Worker>,
) -> u64 {
    let id = NEXT_ID.fetch_add(1, Ordering::AcqRel);
    let worker = match worker.init(&epoll) {
        Ok(()) => Some(worker),
        Err(e) => {
            log::error!("inline worker {id}: {}", error_chain(&e));
            interrupt.set_needs_reset();
            None
        }
    };
    let more = vec![false; queue_evts.len()];
    workers().push(InlineWorker {
        id,
        epoll,
        queue_evts,
        interrupt,
        worker,
        more,
    });
    id
}

/// Drops a worker (called when its handle stops).
pub(crate) fn remove_worker(id: u64) {
    workers().retain(|w| w.id != id);
}

/// Number of registered inline workers (a leak check for targets).
pub fn inline_worker_count() -> usize {
    workers().len()
}

/// Serves every notified queue (a readable queue EventFd, or work left by the previous drain) of
/// every inline worker, for at most `max_rounds` rounds. Returns the number of queue events
/// served. A failing worker marks its device `DEVICE_NEEDS_RESET` and stops serving, as its
/// thread would.
pub fn run_inline_workers(max_rounds: u32) -> u32 {
    let mut list = std::mem::take(&mut *workers());
    let mut served = 0;
    for w in &mut list {
        for _ in 0..max_rounds {
            let Some(worker) = w.worker.as_mut() else {
                break;
            };
            let mut any = false;
            let mut failed = false;
            for (queue, evt) in w.queue_evts.iter().enumerate() {
                let notified = evt.read().is_ok();
                let more = w.more.get(queue).copied().unwrap_or(false);
                if !notified && !more {
                    continue;
                }
                any = true;
                served += 1;
                match worker.queue_event(&w.epoll, queue) {
                    Ok(d) => {
                        if let Some(m) = w.more.get_mut(queue) {
                            *m = d == Drain::More;
                        }
                    }
                    Err(e) => {
                        log::error!("inline worker {}: {}", w.id, error_chain(&e));
                        w.interrupt.set_needs_reset();
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                w.worker = None;
            }
            if !any || failed {
                break;
            }
        }
    }
    // Workers registered meanwhile (none today) stay registered after these.
    let mut reg = workers();
    list.append(&mut reg);
    *reg = list;
    served
}

/// Serves the device fds (tokens from `FIRST_DEVICE_TOKEN` on, e.g. the net device's tap) of
/// every inline worker that are ready now (one `epoll_wait` with timeout 0 each), as the worker
/// loop does between queue events: each goes to the worker's `fd_event`, and a queue it reports
/// as having work left is served by the next [`run_inline_workers`]. Queue EventFds stay for
/// [`run_inline_workers`]. Returns the number of fd events served; a failing worker marks its
/// device `DEVICE_NEEDS_RESET` and stops serving, as its thread would.
pub fn run_inline_fd_events() -> u32 {
    let mut list = std::mem::take(&mut *workers());
    let mut served = 0;
    for w in &mut list {
        let Some(worker) = w.worker.as_mut() else {
            continue;
        };
        let mut events = [EpollEvent::default(); 16];
        let ready = match w.epoll.wait(0, &mut events) {
            Ok(n) => events.get(..n).unwrap_or_default(),
            Err(e) => {
                log::error!("inline worker {}: epoll: {e}", w.id);
                &[]
            }
        };
        for ev in ready {
            let token = ev.data();
            if token < FIRST_DEVICE_TOKEN || token == STOP_TOKEN {
                continue;
            }
            served += 1;
            match worker.fd_event(&w.epoll, token, ev.event_set()) {
                Ok(queue) => {
                    if let Some(m) = queue.and_then(|q| w.more.get_mut(q)) {
                        *m = true;
                    }
                }
                Err(e) => {
                    log::error!("inline worker {}: {}", w.id, error_chain(&e));
                    w.interrupt.set_needs_reset();
                    w.worker = None;
                    break;
                }
            }
        }
    }
    let mut reg = workers();
    list.append(&mut reg);
    *reg = list;
    served
}

/// Whether `interrupt` reports `DEVICE_NEEDS_RESET`.
pub fn needs_reset(interrupt: &Interrupt) -> bool {
    interrupt.needs_reset()
}

/// The devices' validated pop (see `queue::pop_chain`).
pub fn pop_chain<'m>(
    queue: &mut Queue,
    mem: &'m GuestMem,
) -> Result<Option<DescriptorChain<&'m GuestMem>>, QueueError> {
    queue::pop_chain(queue, mem)
}

/// The devices' used-ring update (see `queue::add_used`).
pub fn add_used(queue: &mut Queue, mem: &GuestMem, head: u16, len: u32) -> Result<(), QueueError> {
    queue::add_used(queue, mem, head, len)
}

/// Whether `[addr, addr + len)` lies inside one guest memory region (see
/// `queue::range_in_memory`).
pub fn range_in_memory(mem: &GuestMem, addr: GuestAddress, len: u64) -> bool {
    queue::range_in_memory(mem, addr, len)
}

/// The transport's queue layout check (see `queue::validate_layout`).
pub fn validate_layout(
    mem: &GuestMem,
    size: u16,
    max: u16,
    desc: u64,
    avail: u64,
    used: u64,
) -> Result<(), QueueConfigError> {
    queue::validate_layout(mem, size, max, desc, avail, used)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::devices::virtio::blk::Block;
    use crate::devices::virtio::test_utils::*;

    /// The inline workers are global: one test at a time registers and serves them.
    static SERIAL: Mutex<()> = Mutex::new(());

    /// An inline virtio-blk worker serves a notified request on the caller's thread, and a
    /// driver reset unregisters it.
    #[test]
    fn inline_worker_serves_and_reset_removes_it() {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.raw");
        std::fs::write(&disk, vec![7u8; 1024]).unwrap();
        let mem = guest_memory();
        set_inline_workers(true);
        let before = inline_worker_count();
        let dev = Block::new(&disk, "x").unwrap();
        let (mut t, mut q, _irq) = activated(&mem, Box::new(dev), &[8]);
        set_inline_workers(false);
        assert_eq!(inline_worker_count(), before + 1);
        let mut hdr = [0u8; 16];
        hdr[8..].copy_from_slice(&1u64.to_le_bytes());
        mem.write_slice(&hdr, GuestAddress(DATA_BASE)).unwrap();
        let bufs = [
            (DATA_BASE, 16, false),
            (DATA_BASE + 0x1000, 512, true),
            (DATA_BASE + 0x2000, 1, true),
        ];
        q[0].add_chain(&mem, &bufs);
        notify(&mut t, 0);
        assert!(
            q[0].pop_used(&mem).is_none(),
            "nothing runs before the caller serves"
        );
        assert_eq!(run_inline_workers(4), 1);
        assert_eq!(q[0].pop_used(&mem), Some((0, 513)));
        let status: u8 = mem.read_obj(GuestAddress(DATA_BASE + 0x2000)).unwrap();
        assert_eq!(status, 0);
        wr(&mut t, 0x70, 0);
        assert_eq!(inline_worker_count(), before);
    }

    /// A frame reaching an inline virtio-net worker's tap while the guest has receive buffers
    /// is delivered by the fd events, not by the queue events.
    #[test]
    fn inline_fd_events_serve_the_tap() {
        use std::os::fd::OwnedFd;
        use std::os::unix::net::UnixDatagram;

        use crate::devices::virtio::net::{Net, QUEUE_SIZE, VNET_HDR_LEN};

        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let (dev_end, peer) = UnixDatagram::pair().unwrap();
        dev_end.set_nonblocking(true).unwrap();
        let mem = guest_memory();
        set_inline_workers(true);
        let dev = Net::new(OwnedFd::from(dev_end), [2, 0, 0, 0, 0, 1]);
        let (mut t, mut q, _irq) = activated(&mem, Box::new(dev), &[QUEUE_SIZE, QUEUE_SIZE]);
        set_inline_workers(false);
        q[0].add_chain(&mem, &[(DATA_BASE, 2048, true)]);
        notify(&mut t, 0);
        assert_eq!(
            run_inline_workers(4),
            1,
            "the buffer is seen, the tap is empty"
        );
        let frame = vec![0u8; VNET_HDR_LEN + 60];
        peer.send(&frame).unwrap();
        assert_eq!(run_inline_workers(4), 0, "no queue was notified");
        assert!(q[0].pop_used(&mem).is_none());
        assert_eq!(run_inline_fd_events(), 1);
        assert_eq!(q[0].pop_used(&mem), Some((0, frame.len() as u32)));
        assert_eq!(run_inline_fd_events(), 0, "nothing left to read");
        assert!(!t.needs_reset());
    }
}
