//! virtio devices over the virtio-mmio transport (virtio 1.x, "modern" only).
//!
//! Layout:
//! - [`mmio`]: the transport ([`mmio::MmioTransport`]), which the VMM puts on its MMIO bus. It
//!   owns the register file, the device-status state machine, feature negotiation and queue
//!   configuration, and hands the queues to the device when the driver sets `DRIVER_OK`.
//! - [`VirtioDevice`]: what a device model implements (type, queues, features, config space,
//!   activate/reset). Devices run their queues on their own worker thread (see `worker`), never on
//!   the vCPU thread.
//! - [`fs`]: virtio-fs over fuse-backend-rs (in process); [`console`]: a single-port console;
//!   [`blk`]: a read-only raw-image block device; [`net`]: a network card over a tap;
//!   [`vsock`]: host<->guest sockets over unix sockets in the pod directory; [`balloon`]: free
//!   page reporting; [`rng`]: the entropy device (the host's `getrandom`).
//!
//! Guest input is hostile: a corrupt queue (bad avail index, malformed or looping descriptor
//! chain, buffers outside guest memory) puts the device into `DEVICE_NEEDS_RESET` and raises a
//! configuration interrupt; the VMM keeps running. Errors in one request are answered to the guest
//! and logged, never fatal.

/// Logs a warning the guest can trigger at will, through a [`LogLimiter`].
macro_rules! guest_warn {
    ($limiter:expr, $($arg:tt)*) => {
        if $limiter.allow() {
            log::warn!($($arg)*);
        }
    };
}

pub mod balloon;
pub mod blk;
pub mod console;
pub mod fs;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod mmio;
pub mod net;
mod queue;
pub mod rng;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod test_utils;
pub mod vsock;
mod worker;

pub use worker::{thread_name, WorkerThread};

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use crate::memory::GuestMem;

/// virtio device ID of a network card (virtio 1.2, 5.1).
pub const TYPE_NET: u32 = 1;
/// virtio device ID of a console (virtio 1.2, 5.3).
pub const TYPE_CONSOLE: u32 = 3;
/// virtio device ID of a block device (virtio 1.2, 5.2).
pub const TYPE_BLOCK: u32 = 2;
/// virtio device ID of an entropy source (virtio 1.2, 5.4).
pub const TYPE_RNG: u32 = 4;
/// virtio device ID of a memory balloon (virtio 1.2, 5.5).
pub const TYPE_BALLOON: u32 = 5;
/// virtio device ID of a socket device (virtio 1.2, 5.10).
pub const TYPE_VSOCK: u32 = 19;
/// virtio device ID of a file-system device (virtio 1.2, 5.11).
pub const TYPE_FS: u32 = 26;

/// Feature bit: the device complies with virtio 1.x (bit number).
pub const VIRTIO_F_VERSION_1: u32 = 32;

/// Interrupt-status bit: a used buffer was added to a queue.
pub const INTERRUPT_VRING: u32 = 0x1;
/// Interrupt-status bit: the configuration (or the device status) changed.
pub const INTERRUPT_CONFIG: u32 = 0x2;

/// Everything a device needs to start working, handed over by the transport at `DRIVER_OK`.
pub struct ActivateArgs {
    /// Guest memory.
    pub mem: GuestMem,
    /// One validated, ready queue per entry of [`VirtioDevice::queue_max_sizes`].
    pub queues: Vec<Queue>,
    /// The notification EventFd of each queue (same order as `queues`); the device owns these
    /// duplicates.
    pub queue_evts: Vec<EventFd>,
    /// Raises interrupts and reports `DEVICE_NEEDS_RESET`.
    pub interrupt: Interrupt,
    /// Features the driver accepted (including `VIRTIO_F_VERSION_1`).
    pub acked_features: u64,
    /// The device's worker thread (started with the transport), which runs the activation.
    pub thread: WorkerThread,
}

impl ActivateArgs {
    /// The checks every device makes before it starts: it is not `active` already, and the
    /// transport handed over exactly `expected` queues and as many EventFds.
    pub fn check(&self, active: bool, expected: usize) -> Result<(), ActivateError> {
        if active {
            return Err(ActivateError::AlreadyActive);
        }
        if self.queues.len() != expected || self.queue_evts.len() != expected {
            return Err(ActivateError::QueueCount {
                expected,
                got: self.queues.len(),
            });
        }
        Ok(())
    }
}

/// Every device's `read_config`: copies `data.len()` bytes of the config space `space` from
/// `offset`; bytes outside `space` read as zero.
pub(crate) fn read_config_bytes(space: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = space.get(start..) {
        for (d, s) in data.iter_mut().zip(src) {
            *d = *s;
        }
    }
}

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The transport handed over a different number of queues than the device uses.
    #[error("expected {expected} queues, got {got}")]
    QueueCount {
        /// Queues the device uses.
        expected: usize,
        /// Queues handed over.
        got: usize,
    },
    /// The device is already running.
    #[error("device already active")]
    AlreadyActive,
    /// Creating the worker's epoll instance or stop EventFd, or the thread, failed.
    #[error("cannot start the device worker")]
    Worker(#[source] io::Error),
    /// A host resource the device needs could not be set up.
    #[error("cannot set up the device backend")]
    Backend(#[source] io::Error),
}

/// A virtio device model behind the MMIO transport.
pub trait VirtioDevice: Send {
    /// The virtio device ID (`TYPE_*`).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue (number of entries, powers of two); its length is the number of
    /// queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Device feature bits offered to the driver (the transport adds `VIRTIO_F_VERSION_1`).
    fn features(&self) -> u64;
    /// Reads `data.len()` bytes of the device configuration space at `offset`; bytes beyond the
    /// configuration space read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes `data` into the device configuration space at `offset` (ignored where read-only).
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device: takes the queues and starts the worker thread.
    fn activate(&mut self, args: ActivateArgs) -> Result<(), ActivateError>;
    /// Stops the worker thread (joins it) and drops the queues; the device can be activated again.
    fn reset(&mut self);
}

/// Shared interrupt state of one transport: the interrupt-status register, the
/// `DEVICE_NEEDS_RESET` flag, the configuration generation and the irq EventFd.
#[derive(Clone)]
pub struct Interrupt {
    inner: Arc<InterruptInner>,
}

struct InterruptInner {
    status: AtomicU32,
    needs_reset: AtomicBool,
    config_generation: AtomicU32,
    evt: EventFd,
}

impl Interrupt {
    /// Wraps the irq EventFd (registered by the VMM as an irqfd for the device's GSI).
    pub fn new(evt: EventFd) -> Self {
        Self {
            inner: Arc::new(InterruptInner {
                status: AtomicU32::new(0),
                needs_reset: AtomicBool::new(false),
                config_generation: AtomicU32::new(0),
                evt,
            }),
        }
    }

    /// Tells the driver that used buffers were added to a queue.
    pub fn signal_used_queue(&self) {
        self.raise(INTERRUPT_VRING);
    }

    /// Tells the driver that the configuration space changed.
    pub fn signal_config_change(&self) {
        self.inner.config_generation.fetch_add(1, Ordering::AcqRel);
        self.raise(INTERRUPT_CONFIG);
    }

    /// Marks the device as needing a reset (status bit `DEVICE_NEEDS_RESET`) and raises a
    /// configuration interrupt. Used when the driver corrupted a queue.
    pub fn set_needs_reset(&self) {
        self.inner.needs_reset.store(true, Ordering::Release);
        self.raise(INTERRUPT_CONFIG);
    }

    fn raise(&self, bit: u32) {
        log::trace!("virtio: interrupt {bit:#x}");
        self.inner.status.fetch_or(bit, Ordering::AcqRel);
        if let Err(e) = self.inner.evt.write(1) {
            log::warn!("virtio: cannot signal the irq eventfd: {e}");
        }
    }

    /// Current interrupt-status register.
    pub(crate) fn status(&self) -> u32 {
        self.inner.status.load(Ordering::Acquire)
    }

    /// Clears the acknowledged bits.
    pub(crate) fn ack(&self, bits: u32) {
        self.inner.status.fetch_and(!bits, Ordering::AcqRel);
    }

    /// Whether the device reported `DEVICE_NEEDS_RESET`.
    pub(crate) fn needs_reset(&self) -> bool {
        self.inner.needs_reset.load(Ordering::Acquire)
    }

    /// Configuration generation counter.
    pub(crate) fn config_generation(&self) -> u32 {
        self.inner.config_generation.load(Ordering::Acquire)
    }

    /// Sets the interrupt status and configuration generation from a snapshot; a pending
    /// status raises the interrupt line again (the irqfd is edge-triggered: a fresh one never
    /// saw the snapshot's edge).
    pub(crate) fn restore(&self, status: u32, config_generation: u32) {
        self.inner
            .config_generation
            .store(config_generation, Ordering::Release);
        self.inner.status.store(0, Ordering::Release);
        if status != 0 {
            self.raise(status);
        }
    }

    /// Back to the power-on state (after a device reset).
    pub(crate) fn clear(&self) {
        self.inner.status.store(0, Ordering::Release);
        self.inner.needs_reset.store(false, Ordering::Release);
    }
}

/// Rate limit for log lines a guest can trigger (a hostile guest must not flood the VMM's log):
/// the first [`LogLimiter::BURST`] pass, then one in [`LogLimiter::EVERY`].
#[derive(Debug, Default)]
pub(crate) struct LogLimiter {
    count: u64,
}

impl LogLimiter {
    /// Messages logged before limiting starts (count).
    pub(crate) const BURST: u64 = 20;
    /// After the burst, one message in this many is logged (count).
    pub(crate) const EVERY: u64 = 1000;

    /// Whether to log this occurrence.
    pub(crate) fn allow(&mut self) -> bool {
        self.count = self.count.saturating_add(1);
        if self.count == Self::BURST {
            log::warn!("virtio: further guest-triggered warnings are rate-limited");
        }
        self.count <= Self::BURST || self.count.is_multiple_of(Self::EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::LogLimiter;

    #[test]
    fn guest_warnings_are_rate_limited() {
        let mut l = LogLimiter::default();
        let allowed = (0..10_000).filter(|_| l.allow()).count() as u64;
        assert_eq!(allowed, LogLimiter::BURST + 10_000 / LogLimiter::EVERY);
    }
}
