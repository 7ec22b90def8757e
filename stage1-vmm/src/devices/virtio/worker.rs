//! Device worker threads: one named thread per device, started with its transport, that runs an
//! epoll loop over the queue EventFds, a stop EventFd and any host fds the device registers
//! itself, once per activation.
//!
//! The thread is started when the transport is created ([`WorkerThread::start`], on the thread
//! that builds the VM), not when the driver activates the device (on a vCPU thread): a thread
//! inherits its creator's seccomp filter and capabilities, so a worker started by a confined
//! vCPU could never hold what its own kind needs (docs/vmm.md, "Confinement").
//!
//! A handler error (a corrupt queue, a broken event loop) ends the activation and marks the
//! device `DEVICE_NEEDS_RESET` with a configuration interrupt; the VMM and the other devices keep
//! running. A panic is a VMM bug, not guest input: it aborts the whole process (the panic policy,
//! see [`crate::threads`] and docs/vmm.md). A driver reset stops the activation through the stop
//! EventFd and waits for it to end; the thread stays, idle, for the next activation.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use virtio_queue::{DescriptorChain, Queue, QueueT};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::queue::{add_used, has_pending, pop_chain, QueueError};
use super::{
    ActivateArgs, ActivateError, Interrupt, TYPE_BALLOON, TYPE_BLOCK, TYPE_CONSOLE, TYPE_FS,
    TYPE_NET, TYPE_RNG, TYPE_VSOCK,
};
use crate::memory::GuestMem;
use crate::threads::{self, ThreadKind};

/// Epoll token of the stop EventFd.
pub(crate) const STOP_TOKEN: u64 = u64::MAX;
/// First epoll token a device may use for its own fds (queue `i` uses token `i`).
pub(crate) const FIRST_DEVICE_TOKEN: u64 = 1 << 32;
/// Epoll events fetched per wait (count).
const EVENTS_PER_WAIT: usize = 16;

/// One activation's event loop, run on the device's [`WorkerThread`].
type Job = Box<dyn FnOnce() + Send>;

/// The name of the worker thread of a device of virtio type `device_type` (`ps -L`).
pub fn thread_name(device_type: u32) -> &'static str {
    match device_type {
        TYPE_FS => "virtio-fs",
        TYPE_CONSOLE => "virtio-console",
        TYPE_BLOCK => "virtio-blk",
        TYPE_NET => "virtio-net",
        TYPE_VSOCK => "virtio-vsock",
        TYPE_BALLOON => "virtio-balloon",
        TYPE_RNG => "virtio-rng",
        _ => "virtio-dev",
    }
}

/// A device's worker thread (cheap to clone: a handle). The thread ends, and is joined, when the
/// last handle is dropped.
#[derive(Clone)]
pub struct WorkerThread {
    inner: Arc<ThreadInner>,
}

struct ThreadInner {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl WorkerThread {
    /// Starts the idle worker thread of a device of virtio type `device_type`
    /// ([`ThreadKind::DeviceWorker`]: its confinement is installed before it runs anything).
    pub fn start(device_type: u32) -> io::Result<WorkerThread> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = threads::spawn(
            ThreadKind::DeviceWorker(device_type),
            thread_name(device_type),
            move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            },
        )?;
        Ok(WorkerThread {
            inner: Arc::new(ThreadInner {
                jobs: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    fn submit(&self, job: Job) -> io::Result<()> {
        let jobs = self.inner.jobs.lock().unwrap_or_else(|p| p.into_inner());
        match jobs.as_ref() {
            Some(tx) => tx
                .send(job)
                .map_err(|_| io::Error::other("the device worker thread has ended")),
            None => Err(io::Error::other("the device worker thread has ended")),
        }
    }
}

impl Drop for ThreadInner {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop once its current job (if any) returns.
        drop(self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            if t.thread().id() != std::thread::current().id() {
                // A panicking worker aborts the process, so the join cannot report one.
                let _ = t.join();
            }
        }
    }
}

/// A device-fatal error in a worker.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeviceError {
    /// The driver corrupted a queue.
    #[error("corrupt queue {queue}")]
    Queue {
        /// Queue index.
        queue: usize,
        /// What was wrong.
        #[source]
        source: QueueError,
    },
    /// The event loop itself failed.
    #[error("event loop failed")]
    Epoll(#[source] io::Error),
}

/// Whether a drain left work behind (it stopped at its per-drain budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drain {
    /// Nothing left to do until the next event.
    Done,
    /// More chains are available; run again after other events were served.
    More,
}

/// The request loop of a device that answers each chain on its own (block, balloon, entropy):
/// serves up to one queue's worth of the chains available on `queue` (the per-drain budget that
/// lets the worker's other events run between drains). `serve` gets each validated chain and
/// returns the bytes it wrote into it (the used length); then one interrupt if any chain was
/// used. [`Drain::More`] when chains are still pending. An error from `serve` or the queue ends
/// the drain at once (the activation ends with it: [`DeviceError::Queue`]).
pub(crate) fn serve_queue<F>(
    queue: &mut Queue,
    mem: &GuestMem,
    interrupt: &Interrupt,
    mut serve: F,
) -> Result<Drain, QueueError>
where
    F: FnMut(DescriptorChain<&GuestMem>) -> Result<u32, QueueError>,
{
    let mut used = false;
    for _ in 0..queue.size() {
        let Some(chain) = pop_chain(queue, mem)? else {
            break;
        };
        let head = chain.head_index();
        let len = serve(chain)?;
        add_used(queue, mem, head, len)?;
        used = true;
    }
    let more = has_pending(queue, mem)?;
    if used {
        interrupt.signal_used_queue();
    }
    Ok(if more { Drain::More } else { Drain::Done })
}

/// The device side of a worker thread.
pub(crate) trait Worker: Send + 'static {
    /// Registers the device's own fds with tokens from [`FIRST_DEVICE_TOKEN`] on.
    fn init(&mut self, _epoll: &Epoll) -> Result<(), DeviceError> {
        Ok(())
    }
    /// Queue `queue` was notified (or has work left from a previous drain).
    fn queue_event(&mut self, epoll: &Epoll, queue: usize) -> Result<Drain, DeviceError>;
    /// A device fd registered in `init` (or later) is ready. Returns a queue that has work left
    /// (it is then served like a [`Drain::More`]).
    fn fd_event(
        &mut self,
        _epoll: &Epoll,
        _token: u64,
        _events: EventSet,
    ) -> Result<Option<usize>, DeviceError> {
        Ok(None)
    }
}

/// A running activation; dropping it stops the event loop and waits for it to end.
pub(crate) struct WorkerHandle {
    stop: EventFd,
    done: Option<mpsc::Receiver<()>>,
    /// The worker's id when it runs inline (fuzzing builds only, see `super::fuzzing`).
    #[cfg(feature = "fuzzing")]
    inline: Option<u64>,
}

impl WorkerHandle {
    /// Stops the event loop and waits for it to end (the thread stays for the next activation).
    pub(crate) fn stop(&mut self) {
        #[cfg(feature = "fuzzing")]
        if let Some(id) = self.inline.take() {
            super::fuzzing::remove_worker(id);
        }
        if let Some(done) = self.done.take() {
            if let Err(e) = self.stop.write(1) {
                log::error!("virtio: cannot signal the worker to stop: {e}");
                return;
            }
            // Returns when the job drops its sender, i.e. when the loop has ended.
            let _ = done.recv();
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every device's `activate`: checks the activation ([`ActivateArgs::check`]: nothing in
/// `slot`, `queues` queues), builds the worker with `make` from the guest memory, the queues and
/// the interrupt, and runs it on the device's worker thread as `name` ([`spawn`]). The handle
/// goes in `slot`; dropping it (a device's `reset`) stops the loop and waits for it.
pub(crate) fn activate<W: Worker>(
    slot: &mut Option<WorkerHandle>,
    args: ActivateArgs,
    queues: usize,
    name: &str,
    make: impl FnOnce(GuestMem, Vec<Queue>, Interrupt) -> W,
) -> Result<(), ActivateError> {
    args.check(slot.is_some(), queues)?;
    let ActivateArgs {
        mem,
        queues,
        queue_evts,
        interrupt,
        thread,
        ..
    } = args;
    let worker = make(mem, queues, interrupt.clone());
    *slot = Some(spawn(&thread, name, queue_evts, interrupt, worker)?);
    Ok(())
}

/// Runs `worker` on `thread` (the device's worker thread) for a device activation, watching
/// `queue_evts` (queue `i` = token `i`); `name` prefixes its log lines.
pub(crate) fn spawn<W: Worker>(
    thread: &WorkerThread,
    name: &str,
    queue_evts: Vec<EventFd>,
    interrupt: Interrupt,
    worker: W,
) -> Result<WorkerHandle, ActivateError> {
    let stop = EventFd::new(EFD_NONBLOCK).map_err(ActivateError::Worker)?;
    let stop_worker = stop.try_clone().map_err(ActivateError::Worker)?;
    let epoll = Epoll::new().map_err(ActivateError::Worker)?;
    add_fd(&epoll, stop_worker.as_raw_fd(), EventSet::IN, STOP_TOKEN)
        .map_err(ActivateError::Worker)?;
    for (i, evt) in queue_evts.iter().enumerate() {
        add_fd(&epoll, evt.as_raw_fd(), EventSet::IN, i as u64).map_err(ActivateError::Worker)?;
    }
    log::debug!("{name}: worker starting with {} queues", queue_evts.len());
    #[cfg(feature = "fuzzing")]
    if super::fuzzing::inline_workers() {
        let id = super::fuzzing::add_worker(epoll, queue_evts, interrupt, Box::new(worker));
        return Ok(WorkerHandle {
            stop,
            done: None,
            inline: Some(id),
        });
    }
    let log_name = name.to_string();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    thread
        .submit(Box::new(move || {
            let done = done_tx;
            let mut worker = worker;
            if let Err(e) = run(&epoll, &stop_worker, &queue_evts, &mut worker) {
                log::error!("{log_name}: {}", error_chain(&e));
                interrupt.set_needs_reset();
            }
            // The worker's own drop (the console flushes what it holds, which may take more
            // chains from the queue) belongs to the loop: it runs before the stopper learns
            // that the loop has ended, so nothing touches the queues after `stop` returns.
            drop(worker);
            drop(done);
        }))
        .map_err(ActivateError::Worker)?;
    Ok(WorkerHandle {
        stop,
        done: Some(done_rx),
        #[cfg(feature = "fuzzing")]
        inline: None,
    })
}

/// Adds `fd` to `epoll` for `events` with `token`.
pub(crate) fn add_fd(epoll: &Epoll, fd: i32, events: EventSet, token: u64) -> io::Result<()> {
    epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
}

/// Changes the events watched on `fd`.
pub(crate) fn modify_fd(epoll: &Epoll, fd: i32, events: EventSet, token: u64) -> io::Result<()> {
    epoll.ctl(ControlOperation::Modify, fd, EpollEvent::new(events, token))
}

/// Formats an error and its sources on one line (the one helper, in stage1-common).
pub(crate) use stage1_common::error::chain as error_chain;

fn run<W: Worker>(
    epoll: &Epoll,
    stop: &EventFd,
    queue_evts: &[EventFd],
    worker: &mut W,
) -> Result<(), DeviceError> {
    worker.init(epoll)?;
    let mut more = vec![false; queue_evts.len()];
    let mut events = [EpollEvent::default(); EVENTS_PER_WAIT];
    loop {
        let timeout = if more.iter().any(|m| *m) { 0 } else { -1 };
        let n = match epoll.wait(timeout, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DeviceError::Epoll(e)),
        };
        for ev in events.iter().take(n) {
            let token = ev.data();
            if token == STOP_TOKEN {
                // Drain the counter; the thread ends either way.
                let _ = stop.read();
                return Ok(());
            }
            if let Some(evt) = usize::try_from(token).ok().and_then(|i| queue_evts.get(i)) {
                // The counter only says "notified"; reading it re-arms the eventfd.
                let _ = evt.read();
                let queue = token as usize;
                let drained = worker.queue_event(epoll, queue)?;
                if let Some(m) = more.get_mut(queue) {
                    *m = drained == Drain::More;
                }
            } else {
                if let Some(m) = worker
                    .fd_event(epoll, token, ev.event_set())?
                    .and_then(|q| more.get_mut(q))
                {
                    *m = true;
                }
            }
        }
        for queue in 0..more.len() {
            if more.get(queue).copied().unwrap_or(false) {
                let drained = worker.queue_event(epoll, queue)?;
                if let Some(m) = more.get_mut(queue) {
                    *m = drained == Drain::More;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::devices::virtio::TYPE_CONSOLE;
    use crate::threads::{assert_aborted, run_test_in_child};

    /// Set in the child process of [`a_panicking_device_worker_aborts_the_vmm`].
    const CHILD_ENV: &str = "RKT_VMM_TEST_WORKER_PANIC_CHILD";

    /// A device whose queue handler panics (a VMM bug) or fails (a corrupt queue).
    struct Faulty {
        panic: bool,
    }

    impl Worker for Faulty {
        fn queue_event(&mut self, _epoll: &Epoll, queue: usize) -> Result<Drain, DeviceError> {
            if self.panic {
                panic!("device bug on queue {queue}");
            }
            Err(DeviceError::Epoll(io::Error::other("corrupt")))
        }
    }

    fn evt() -> EventFd {
        EventFd::new(EFD_NONBLOCK).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a [`Faulty`] worker, kicks its queue and waits up to 10 s for `DEVICE_NEEDS_RESET`.
    fn kick_faulty(panic: bool) -> (WorkerThread, WorkerHandle, bool) {
        let queue = evt();
        let notify = queue.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let interrupt = Interrupt::new(evt());
        let thread = WorkerThread::start(TYPE_CONSOLE).unwrap_or_else(|e| panic!("{e}"));
        let handle = spawn(
            &thread,
            "virtio-test",
            vec![queue],
            interrupt.clone(),
            Faulty { panic },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        notify.write(1).unwrap_or_else(|e| panic!("{e}"));
        let start = Instant::now();
        while !interrupt.needs_reset() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        (thread, handle, interrupt.needs_reset())
    }

    #[test]
    fn a_failing_device_worker_only_needs_a_reset() {
        let (_thread, mut handle, needs_reset) = kick_faulty(false);
        assert!(needs_reset, "a device error must set DEVICE_NEEDS_RESET");
        handle.stop();
    }

    /// The child: the worker panics while the "VMM" (this test's thread) waits for the device.
    #[test]
    fn panicking_worker_child() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let (_thread, _handle, needs_reset) = kick_faulty(true);
        println!("VMM SURVIVED (needs_reset = {needs_reset})");
    }

    #[test]
    fn a_panicking_device_worker_aborts_the_vmm() {
        let out = run_test_in_child(
            "devices::virtio::worker::tests::panicking_worker_child",
            CHILD_ENV,
        );
        assert_aborted(&out, "device bug on queue 0", "VMM SURVIVED");
    }
}
