//! The virtio-mmio transport (virtio 1.2, 4.2.2), modern interface only (version register 2).
//!
//! The VMM puts one [`MmioTransport`] per device on its MMIO bus (4 KiB window), registers each of
//! [`MmioTransport::queue_evts`] as an ioeventfd at `base + 0x50` with `datamatch` = queue index,
//! registers the irq EventFd as an irqfd for the device's GSI, and adds
//! `virtio_mmio.device=4K@0x<base>:<gsi>` to the kernel command line.
//!
//! The device status is a state machine written as data ([`DeviceStatus`] and
//! [`STATUS_TRANSITIONS`]); writes outside the table are ignored. Queue layouts are validated
//! when the driver sets a queue ready and again at activation (`DRIVER_OK`).

use std::io;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

#[path = "mmio_snapshot.rs"]
pub mod snapshot;

use super::queue::validate_layout;
use super::worker::error_chain;
use super::{ActivateArgs, Interrupt, LogLimiter, VirtioDevice, WorkerThread, VIRTIO_F_VERSION_1};
use crate::bus::MmioDevice;
use crate::memory::GuestMem;

/// "virt" in little endian.
const MMIO_MAGIC: u32 = 0x7472_6976;
/// Modern virtio-mmio.
const MMIO_VERSION: u32 = 2;
/// Vendor ID reported to the guest ("rkt" in little endian).
const VENDOR_ID: u32 = 0x0074_6b72;

// Register offsets (bytes from the window base).
const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
const REG_QUEUE_NOTIFY: u64 = 0x050;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_AVAIL_LOW: u64 = 0x090;
const REG_QUEUE_AVAIL_HIGH: u64 = 0x094;
const REG_QUEUE_USED_LOW: u64 = 0x0a0;
const REG_QUEUE_USED_HIGH: u64 = 0x0a4;
const REG_SHM_SEL: u64 = 0x0ac;
const REG_SHM_LEN_LOW: u64 = 0x0b0;
const REG_SHM_LEN_HIGH: u64 = 0x0b4;
const REG_SHM_BASE_LOW: u64 = 0x0b8;
const REG_SHM_BASE_HIGH: u64 = 0x0bc;
const REG_CONFIG_GENERATION: u64 = 0x0fc;
/// Start of the device configuration space.
const REG_CONFIG: u64 = 0x100;
/// Offset of the QueueNotify register, where the VMM registers the ioeventfds.
pub const QUEUE_NOTIFY_OFFSET: u64 = REG_QUEUE_NOTIFY;
/// Size of one virtio-mmio window (bytes).
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;

/// Device status bit: the guest noticed the device.
pub const STATUS_ACKNOWLEDGE: u32 = 1;
/// Device status bit: the guest has a driver.
pub const STATUS_DRIVER: u32 = 2;
/// Device status bit: the driver is ready.
pub const STATUS_DRIVER_OK: u32 = 4;
/// Device status bit: feature negotiation is complete.
pub const STATUS_FEATURES_OK: u32 = 8;
/// Device status bit: the device hit an error and needs a reset.
pub const STATUS_DEVICE_NEEDS_RESET: u32 = 0x40;
/// Device status bit: the driver gave up on the device.
pub const STATUS_FAILED: u32 = 0x80;

/// The device-status state machine (virtio 1.2, 3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceStatus {
    /// After power-on or reset (status 0).
    Init,
    /// `ACKNOWLEDGE`.
    Acknowledge,
    /// `ACKNOWLEDGE | DRIVER`.
    Driver,
    /// `ACKNOWLEDGE | DRIVER | FEATURES_OK`.
    FeaturesOk,
    /// `ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK`: the device is live.
    DriverOk,
    /// The driver set `FAILED`.
    Failed,
}

impl DeviceStatus {
    /// The status register value of each non-failed state.
    const fn bits(self) -> Option<u32> {
        match self {
            DeviceStatus::Init => Some(0),
            DeviceStatus::Acknowledge => Some(STATUS_ACKNOWLEDGE),
            DeviceStatus::Driver => Some(STATUS_ACKNOWLEDGE | STATUS_DRIVER),
            DeviceStatus::FeaturesOk => {
                Some(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK)
            }
            DeviceStatus::DriverOk => {
                Some(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK)
            }
            DeviceStatus::Failed => None,
        }
    }

    /// The state a driver write of `value` asks for, if it names one.
    fn from_write(value: u32) -> Option<DeviceStatus> {
        if value & STATUS_FAILED != 0 {
            return Some(DeviceStatus::Failed);
        }
        [
            DeviceStatus::Init,
            DeviceStatus::Acknowledge,
            DeviceStatus::Driver,
            DeviceStatus::FeaturesOk,
            DeviceStatus::DriverOk,
        ]
        .into_iter()
        .find(|s| s.bits() == Some(value))
    }
}

/// Every allowed status change (besides writing 0, which always resets). Anything else written
/// by the driver is ignored and logged.
pub const STATUS_TRANSITIONS: &[(DeviceStatus, DeviceStatus)] = &[
    (DeviceStatus::Init, DeviceStatus::Acknowledge),
    (DeviceStatus::Acknowledge, DeviceStatus::Driver),
    (DeviceStatus::Driver, DeviceStatus::FeaturesOk),
    (DeviceStatus::FeaturesOk, DeviceStatus::DriverOk),
    (DeviceStatus::Acknowledge, DeviceStatus::Failed),
    (DeviceStatus::Driver, DeviceStatus::Failed),
    (DeviceStatus::FeaturesOk, DeviceStatus::Failed),
    (DeviceStatus::DriverOk, DeviceStatus::Failed),
];

/// Whether `from -> to` is in [`STATUS_TRANSITIONS`].
pub fn transition_allowed(from: DeviceStatus, to: DeviceStatus) -> bool {
    STATUS_TRANSITIONS.contains(&(from, to))
}

/// Errors creating a transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Creating a queue notification EventFd failed.
    #[error("cannot create a queue eventfd")]
    EventFd(#[source] io::Error),
    /// Starting the device's worker thread failed.
    #[error("cannot start the device worker thread")]
    Worker(#[source] io::Error),
}

/// What the driver configured for one queue (raw register values).
#[derive(Debug, Clone, Copy)]
struct QueueConfig {
    max_size: u16,
    size: u16,
    ready: bool,
    desc: u64,
    avail: u64,
    used: u64,
}

impl QueueConfig {
    fn new(max_size: u16) -> Self {
        Self {
            max_size,
            size: max_size,
            ready: false,
            desc: 0,
            avail: 0,
            used: 0,
        }
    }
}

/// A virtio device behind a virtio-mmio register window.
pub struct MmioTransport {
    mem: GuestMem,
    device: Box<dyn VirtioDevice>,
    interrupt: Interrupt,
    queue_evts: Vec<EventFd>,
    queues: Vec<QueueConfig>,
    status: DeviceStatus,
    /// Status register value as last accepted (differs from `status.bits()` only when failed).
    status_reg: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    active: bool,
    log_limit: LogLimiter,
    /// The device's worker thread (see [`WorkerThread`]: started here, never on a vCPU).
    thread: WorkerThread,
}

impl MmioTransport {
    /// Wraps `device`; creates one notification EventFd per queue.
    pub fn new(
        mem: GuestMem,
        device: Box<dyn VirtioDevice>,
        irq_evt: EventFd,
    ) -> Result<MmioTransport, TransportError> {
        let queues: Vec<QueueConfig> = device
            .queue_max_sizes()
            .iter()
            .map(|m| QueueConfig::new(*m))
            .collect();
        let queue_evts = queues
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(TransportError::EventFd)?;
        let thread = WorkerThread::start(device.device_type()).map_err(TransportError::Worker)?;
        Ok(MmioTransport {
            mem,
            device,
            interrupt: Interrupt::new(irq_evt),
            queue_evts,
            queues,
            status: DeviceStatus::Init,
            status_reg: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            active: false,
            log_limit: LogLimiter::default(),
            thread,
        })
    }

    /// One notification EventFd per queue, in queue order (register them as ioeventfds at
    /// `base + QUEUE_NOTIFY_OFFSET` with datamatch = the queue index).
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The current device status.
    pub fn status(&self) -> DeviceStatus {
        self.status
    }

    /// Whether the device reported `DEVICE_NEEDS_RESET`.
    pub fn needs_reset(&self) -> bool {
        self.interrupt.needs_reset()
    }

    fn device_features(&self) -> u64 {
        self.device.features() | (1u64 << VIRTIO_F_VERSION_1)
    }

    fn selected_queue(&mut self) -> Option<&mut QueueConfig> {
        usize::try_from(self.queue_sel)
            .ok()
            .and_then(|i| self.queues.get_mut(i))
    }

    fn read_reg(&self, offset: u64) -> u32 {
        match offset {
            REG_MAGIC => MMIO_MAGIC,
            REG_VERSION => MMIO_VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features() as u32,
                1 => (self.device_features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => usize::try_from(self.queue_sel)
                .ok()
                .and_then(|i| self.queues.get(i))
                .map_or(0, |q| u32::from(q.max_size)),
            REG_QUEUE_READY => usize::try_from(self.queue_sel)
                .ok()
                .and_then(|i| self.queues.get(i))
                .map_or(0, |q| u32::from(q.ready)),
            REG_INTERRUPT_STATUS => {
                let v = self.interrupt.status();
                log::trace!(
                    "virtio-mmio: type {} interrupt status read: {v:#x}",
                    self.device.device_type()
                );
                v
            }
            REG_STATUS => {
                let mut v = self.status_reg;
                if self.interrupt.needs_reset() {
                    v |= STATUS_DEVICE_NEEDS_RESET;
                }
                v
            }
            // No shared memory regions: a length of all ones means "absent" to Linux.
            REG_SHM_LEN_LOW | REG_SHM_LEN_HIGH | REG_SHM_BASE_LOW | REG_SHM_BASE_HIGH => u32::MAX,
            REG_CONFIG_GENERATION => self.interrupt.config_generation(),
            _ => {
                log::debug!("virtio-mmio: read of unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        log::trace!(
            "virtio-mmio: type {} write {offset:#x} = {v:#x}",
            self.device.device_type()
        );
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            REG_DRIVER_FEATURES => self.write_driver_features(v),
            REG_QUEUE_SEL => self.queue_sel = v,
            REG_QUEUE_NUM => {
                // Out-of-range values become 0, which validation rejects.
                let size = u16::try_from(v).unwrap_or(0);
                self.write_queue(|q| q.size = size)
            }
            REG_QUEUE_DESC_LOW => self.write_queue(|q| set_low(&mut q.desc, v)),
            REG_QUEUE_DESC_HIGH => self.write_queue(|q| set_high(&mut q.desc, v)),
            REG_QUEUE_AVAIL_LOW => self.write_queue(|q| set_low(&mut q.avail, v)),
            REG_QUEUE_AVAIL_HIGH => self.write_queue(|q| set_high(&mut q.avail, v)),
            REG_QUEUE_USED_LOW => self.write_queue(|q| set_low(&mut q.used, v)),
            REG_QUEUE_USED_HIGH => self.write_queue(|q| set_high(&mut q.used, v)),
            REG_QUEUE_READY => self.write_queue_ready(v),
            REG_QUEUE_NOTIFY => self.notify(v),
            REG_INTERRUPT_ACK => self.interrupt.ack(v),
            REG_STATUS => self.write_status(v),
            REG_SHM_SEL => {}
            _ => log::debug!("virtio-mmio: write of unknown register {offset:#x}"),
        }
    }

    fn write_driver_features(&mut self, v: u32) {
        if self.status != DeviceStatus::Driver {
            guest_warn!(
                self.log_limit,
                "virtio-mmio: driver features written in state {:?}",
                self.status
            );
            return;
        }
        let offered = self.device_features();
        match self.driver_features_sel {
            0 => {
                self.driver_features =
                    (self.driver_features & !0xffff_ffff) | (u64::from(v) & offered & 0xffff_ffff);
            }
            1 => {
                self.driver_features = (self.driver_features & 0xffff_ffff)
                    | ((u64::from(v) << 32) & offered & !0xffff_ffff);
            }
            _ => guest_warn!(
                self.log_limit,
                "virtio-mmio: driver features page {} ignored",
                self.driver_features_sel
            ),
        }
    }

    /// Applies `f` to the selected queue, if the driver may configure queues now.
    fn write_queue(&mut self, f: impl FnOnce(&mut QueueConfig)) {
        if self.status != DeviceStatus::FeaturesOk {
            guest_warn!(
                self.log_limit,
                "virtio-mmio: queue configured in state {:?}",
                self.status
            );
            return;
        }
        match self.selected_queue() {
            Some(q) if !q.ready => f(q),
            Some(_) => guest_warn!(self.log_limit, "virtio-mmio: queue configured while ready"),
            None => guest_warn!(
                self.log_limit,
                "virtio-mmio: queue configured for a bad queue index"
            ),
        }
    }

    fn write_queue_ready(&mut self, v: u32) {
        if v == 0 {
            // Linux writes 0 and reads it back when it deletes a queue, in any state. The running
            // device keeps its own copy of the queue until the next reset.
            if let Some(q) = self.selected_queue() {
                q.ready = false;
            }
            return;
        }
        if self.status != DeviceStatus::FeaturesOk {
            guest_warn!(
                self.log_limit,
                "virtio-mmio: queue ready written in state {:?}",
                self.status
            );
            return;
        }
        let mem = self.mem.clone();
        let Some(q) = self.selected_queue() else {
            guest_warn!(
                self.log_limit,
                "virtio-mmio: queue ready for a bad queue index"
            );
            return;
        };
        match validate_layout(&mem, q.size, q.max_size, q.desc, q.avail, q.used) {
            Ok(()) => q.ready = true,
            Err(e) => guest_warn!(self.log_limit, "virtio-mmio: queue not made ready: {e}"),
        }
    }

    fn notify(&mut self, v: u32) {
        // Only reached when no ioeventfd is registered for this window (e.g. tests).
        match usize::try_from(v).ok().and_then(|i| self.queue_evts.get(i)) {
            Some(evt) => {
                if let Err(e) = evt.write(1) {
                    log::warn!("virtio-mmio: cannot signal queue {v}: {e}");
                }
            }
            None => guest_warn!(self.log_limit, "virtio-mmio: notify for bad queue {v}"),
        }
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let Some(target) = DeviceStatus::from_write(v) else {
            guest_warn!(self.log_limit, "virtio-mmio: invalid status {v:#x} ignored");
            return;
        };
        if target == self.status && target != DeviceStatus::Failed {
            return;
        }
        if !transition_allowed(self.status, target) {
            guest_warn!(
                self.log_limit,
                "virtio-mmio: status change {:?} -> {target:?} ({v:#x}) ignored",
                self.status
            );
            return;
        }
        match target {
            DeviceStatus::FeaturesOk => {
                if self.driver_features & (1u64 << VIRTIO_F_VERSION_1) == 0 {
                    // Leave FEATURES_OK clear: the driver reads it back and gives up.
                    guest_warn!(
                        self.log_limit,
                        "virtio-mmio: driver did not accept VIRTIO_F_VERSION_1"
                    );
                    return;
                }
            }
            DeviceStatus::DriverOk => self.activate(),
            DeviceStatus::Failed => {
                guest_warn!(
                    self.log_limit,
                    "virtio-mmio: driver marked the device failed"
                );
                self.stop_device();
            }
            DeviceStatus::Init | DeviceStatus::Acknowledge | DeviceStatus::Driver => {}
        }
        log::debug!(
            "virtio-mmio: device type {}: {:?} -> {target:?}",
            self.device.device_type(),
            self.status
        );
        self.status = target;
        self.status_reg = target.bits().unwrap_or(v);
    }

    /// Hands the queues to the device. On failure the device reports `DEVICE_NEEDS_RESET`.
    fn activate(&mut self) {
        match self.build_activate_args() {
            Ok(args) => match self.device.activate(args) {
                Ok(()) => self.active = true,
                Err(e) => {
                    log::error!("virtio-mmio: activation failed: {}", error_chain(&e));
                    self.interrupt.set_needs_reset();
                }
            },
            Err(msg) => {
                guest_warn!(self.log_limit, "virtio-mmio: activation refused: {msg}");
                self.interrupt.set_needs_reset();
            }
        }
    }

    fn build_activate_args(&self) -> Result<ActivateArgs, String> {
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, c) in self.queues.iter().enumerate() {
            if !c.ready {
                return Err(format!("queue {i} is not ready"));
            }
            validate_layout(&self.mem, c.size, c.max_size, c.desc, c.avail, c.used)
                .map_err(|e| format!("queue {i}: {e}"))?;
            let mut q = Queue::new(c.max_size).map_err(|e| format!("queue {i}: {e}"))?;
            q.try_set_size(c.size)
                .map_err(|e| format!("queue {i}: {e}"))?;
            q.try_set_desc_table_address(GuestAddress(c.desc))
                .map_err(|e| format!("queue {i}: {e}"))?;
            q.try_set_avail_ring_address(GuestAddress(c.avail))
                .map_err(|e| format!("queue {i}: {e}"))?;
            q.try_set_used_ring_address(GuestAddress(c.used))
                .map_err(|e| format!("queue {i}: {e}"))?;
            q.set_ready(true);
            if !q.is_valid(&self.mem) {
                return Err(format!("queue {i} is invalid"));
            }
            queues.push(q);
        }
        let queue_evts = self
            .queue_evts
            .iter()
            .map(EventFd::try_clone)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot duplicate queue eventfds: {e}"))?;
        Ok(ActivateArgs {
            mem: self.mem.clone(),
            queues,
            queue_evts,
            interrupt: self.interrupt.clone(),
            acked_features: self.driver_features,
            thread: self.thread.clone(),
        })
    }

    fn stop_device(&mut self) {
        if self.active {
            self.device.reset();
            self.active = false;
        }
    }

    /// Back to the power-on state: stops the device worker first.
    fn reset(&mut self) {
        self.stop_device();
        for q in &mut self.queues {
            *q = QueueConfig::new(q.max_size);
        }
        self.status = DeviceStatus::Init;
        self.status_reg = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.interrupt.clear();
    }
}

impl Drop for MmioTransport {
    fn drop(&mut self) {
        self.stop_device();
    }
}

fn set_low(field: &mut u64, v: u32) {
    *field = (*field & !0xffff_ffff) | u64::from(v);
}

fn set_high(field: &mut u64, v: u32) {
    *field = (*field & 0xffff_ffff) | (u64::from(v) << 32);
}

impl MmioDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= REG_CONFIG {
            self.device.read_config(offset - REG_CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            guest_warn!(
                self.log_limit,
                "virtio-mmio: bad register read of {} bytes at {offset:#x}",
                data.len()
            );
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= REG_CONFIG {
            self.device.write_config(offset - REG_CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            guest_warn!(
                self.log_limit,
                "virtio-mmio: bad register write of {} bytes at {offset:#x}",
                data.len()
            );
            return;
        };
        if !offset.is_multiple_of(4) {
            guest_warn!(
                self.log_limit,
                "virtio-mmio: misaligned register write at {offset:#x}"
            );
            return;
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Read;
    use std::os::fd::OwnedFd;
    use std::time::{Duration, Instant};

    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::devices::virtio::console::Console;
    use crate::devices::virtio::test_utils::*;
    use crate::devices::virtio::{INTERRUPT_CONFIG, INTERRUPT_VRING, TYPE_CONSOLE};

    const ACK: u32 = STATUS_ACKNOWLEDGE;
    const DRV: u32 = STATUS_ACKNOWLEDGE | STATUS_DRIVER;
    const FOK: u32 = DRV | STATUS_FEATURES_OK;
    const DOK: u32 = FOK | STATUS_DRIVER_OK;

    fn console_transport(mem: &GuestMem) -> (MmioTransport, EventFd) {
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let t = MmioTransport::new(
            mem.clone(),
            Box::new(Console::new(None, None)),
            irq.try_clone().unwrap(),
        )
        .unwrap();
        (t, irq)
    }

    /// Brings a transport to FEATURES_OK.
    fn to_features_ok(t: &mut MmioTransport) {
        wr(t, REG_STATUS, ACK);
        wr(t, REG_STATUS, DRV);
        wr(t, REG_DRIVER_FEATURES_SEL, 1);
        wr(t, REG_DRIVER_FEATURES, 1);
        wr(t, REG_STATUS, FOK);
        assert_eq!(rd(t, REG_STATUS), FOK);
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn identification_registers() {
        let mem = guest_memory();
        let (mut t, _irq) = console_transport(&mem);
        assert_eq!(rd(&mut t, REG_MAGIC), 0x7472_6976);
        assert_eq!(rd(&mut t, REG_VERSION), 2);
        assert_eq!(rd(&mut t, REG_DEVICE_ID), TYPE_CONSOLE);
        assert_eq!(rd(&mut t, REG_VENDOR_ID), VENDOR_ID);
        assert_eq!(rd(&mut t, REG_CONFIG_GENERATION), 0);
        assert_eq!(rd(&mut t, REG_SHM_LEN_LOW), u32::MAX);
        assert_eq!(rd(&mut t, REG_SHM_LEN_HIGH), u32::MAX);
        wr(&mut t, REG_QUEUE_SEL, 0);
        assert_eq!(rd(&mut t, REG_QUEUE_NUM_MAX), 256);
        wr(&mut t, REG_QUEUE_SEL, 7);
        assert_eq!(rd(&mut t, REG_QUEUE_NUM_MAX), 0, "absent queue has max 0");
        // Odd-sized register accesses read as zero and do not panic.
        let mut b = [0xffu8; 2];
        t.read(REG_MAGIC, &mut b);
        assert_eq!(b, [0, 0]);
        t.write(REG_STATUS, &[1, 0]);
        assert_eq!(rd(&mut t, REG_STATUS), 0);
    }

    #[test]
    fn transition_table_is_the_only_way() {
        use DeviceStatus::*;
        let all = [Init, Acknowledge, Driver, FeaturesOk, DriverOk, Failed];
        let allowed: Vec<_> = all
            .iter()
            .flat_map(|a| all.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| transition_allowed(*a, *b))
            .collect();
        assert_eq!(allowed.len(), STATUS_TRANSITIONS.len());
        assert!(transition_allowed(Init, Acknowledge));
        assert!(!transition_allowed(Init, DriverOk));
        assert!(!transition_allowed(Failed, Acknowledge));
        assert!(!transition_allowed(DriverOk, FeaturesOk));
    }

    #[test]
    fn valid_handshake_reaches_driver_ok() {
        let mem = guest_memory();
        let (t, queues, _irq) = activated(&mem, Box::new(Console::new(None, None)), &[256, 256]);
        let mut t = t;
        assert_eq!(queues.len(), 2);
        assert_eq!(t.status(), DeviceStatus::DriverOk);
        assert_eq!(rd(&mut t, REG_STATUS), DOK);
        assert!(!t.needs_reset());
        // Queue registers are frozen once live, except that Linux may clear READY (and checks
        // that it reads back 0) when it deletes a queue.
        wr(&mut t, REG_QUEUE_SEL, 1);
        assert_eq!(rd(&mut t, REG_QUEUE_READY), 1);
        wr(&mut t, REG_QUEUE_NUM, 16);
        assert_eq!(t.queues[1].size, 256);
        wr(&mut t, REG_QUEUE_READY, 0);
        assert_eq!(rd(&mut t, REG_QUEUE_READY), 0);
        wr(&mut t, REG_QUEUE_READY, 1);
        assert_eq!(rd(&mut t, REG_QUEUE_READY), 0);
    }

    #[test]
    fn invalid_status_writes_are_ignored() {
        let mem = guest_memory();
        let (mut t, _irq) = console_transport(&mem);
        // Skipping straight to DRIVER_OK from reset.
        wr(&mut t, REG_STATUS, DOK);
        assert_eq!(rd(&mut t, REG_STATUS), 0);
        assert_eq!(t.status(), DeviceStatus::Init);
        wr(&mut t, REG_STATUS, ACK);
        // Skipping DRIVER.
        wr(&mut t, REG_STATUS, ACK | STATUS_FEATURES_OK);
        assert_eq!(rd(&mut t, REG_STATUS), ACK);
        // Unknown bits.
        wr(&mut t, REG_STATUS, ACK | 0x10);
        assert_eq!(rd(&mut t, REG_STATUS), ACK);
        // Driver sets NEEDS_RESET itself: not a state it may ask for.
        wr(&mut t, REG_STATUS, ACK | STATUS_DEVICE_NEEDS_RESET);
        assert_eq!(rd(&mut t, REG_STATUS), ACK);
        wr(&mut t, REG_STATUS, DRV);
        assert_eq!(t.status(), DeviceStatus::Driver);
        // Going backwards.
        wr(&mut t, REG_STATUS, ACK);
        assert_eq!(t.status(), DeviceStatus::Driver);
        // FAILED is accepted, then everything but reset is ignored.
        wr(&mut t, REG_STATUS, DRV | STATUS_FAILED);
        assert_eq!(t.status(), DeviceStatus::Failed);
        assert_eq!(rd(&mut t, REG_STATUS), DRV | STATUS_FAILED);
        wr(&mut t, REG_STATUS, FOK);
        assert_eq!(t.status(), DeviceStatus::Failed);
        wr(&mut t, REG_STATUS, 0);
        assert_eq!(t.status(), DeviceStatus::Init);
        assert_eq!(rd(&mut t, REG_STATUS), 0);
    }

    #[test]
    fn feature_negotiation() {
        let mem = guest_memory();
        let (mut t, _irq) = console_transport(&mem);
        wr(&mut t, REG_DEVICE_FEATURES_SEL, 0);
        assert_eq!(rd(&mut t, REG_DEVICE_FEATURES), 0);
        wr(&mut t, REG_DEVICE_FEATURES_SEL, 1);
        assert_eq!(rd(&mut t, REG_DEVICE_FEATURES), 1, "VIRTIO_F_VERSION_1");
        wr(&mut t, REG_DEVICE_FEATURES_SEL, 2);
        assert_eq!(rd(&mut t, REG_DEVICE_FEATURES), 0);

        // Driver features before DRIVER are ignored.
        wr(&mut t, REG_DRIVER_FEATURES_SEL, 1);
        wr(&mut t, REG_DRIVER_FEATURES, 1);
        wr(&mut t, REG_STATUS, ACK);
        wr(&mut t, REG_STATUS, DRV);
        wr(&mut t, REG_STATUS, FOK);
        assert_eq!(
            rd(&mut t, REG_STATUS),
            DRV,
            "FEATURES_OK refused without VERSION_1"
        );

        // Features the device does not offer are masked off; VERSION_1 makes it acceptable.
        wr(&mut t, REG_DRIVER_FEATURES_SEL, 0);
        wr(&mut t, REG_DRIVER_FEATURES, u32::MAX);
        wr(&mut t, REG_DRIVER_FEATURES_SEL, 1);
        wr(&mut t, REG_DRIVER_FEATURES, u32::MAX);
        assert_eq!(t.driver_features, 1u64 << VIRTIO_F_VERSION_1);
        wr(&mut t, REG_STATUS, FOK);
        assert_eq!(rd(&mut t, REG_STATUS), FOK);
        // No feature changes after FEATURES_OK.
        wr(&mut t, REG_DRIVER_FEATURES_SEL, 1);
        wr(&mut t, REG_DRIVER_FEATURES, 0);
        assert_eq!(t.driver_features, 1u64 << VIRTIO_F_VERSION_1);
    }

    fn try_ready(t: &mut MmioTransport, q: &GuestQueue) -> u32 {
        setup_queue(t, 0, q);
        let r = rd(t, REG_QUEUE_READY);
        wr(t, REG_QUEUE_READY, 0);
        r
    }

    #[test]
    fn queue_config_validation() {
        let mem = guest_memory();
        let (mut t, _irq) = console_transport(&mem);
        // Queue registers are ignored before FEATURES_OK.
        setup_queue(&mut t, 0, &GuestQueue::new(RINGS_BASE, 256));
        assert_eq!(rd(&mut t, REG_QUEUE_READY), 0);
        to_features_ok(&mut t);

        assert_eq!(try_ready(&mut t, &GuestQueue::new(RINGS_BASE, 256)), 1);
        assert_eq!(try_ready(&mut t, &GuestQueue::new(RINGS_BASE, 16)), 1);
        // Not a power of two, above the maximum, zero.
        assert_eq!(try_ready(&mut t, &GuestQueue::new(RINGS_BASE, 100)), 0);
        assert_eq!(try_ready(&mut t, &GuestQueue::new(RINGS_BASE, 512)), 0);
        assert_eq!(try_ready(&mut t, &GuestQueue::new(RINGS_BASE, 0)), 0);
        // Misaligned descriptor table.
        assert_eq!(try_ready(&mut t, &GuestQueue::new(RINGS_BASE + 8, 16)), 0);
        // Rings beyond guest memory, and a 64-bit address.
        let end = MEM_SIZE as u64;
        assert_eq!(try_ready(&mut t, &GuestQueue::new(end - 0x100, 16)), 0);
        assert_eq!(try_ready(&mut t, &GuestQueue::new(1 << 40, 16)), 0);
        let mut q = GuestQueue::new(RINGS_BASE, 16);
        q.used = u64::MAX - 3;
        assert_eq!(try_ready(&mut t, &q), 0);
        // Queue size writes above u16 do not wrap into a valid size.
        wr(&mut t, REG_QUEUE_SEL, 0);
        wr(&mut t, REG_QUEUE_NUM, 0x1_0010);
        wr(&mut t, REG_QUEUE_READY, 1);
        assert_eq!(rd(&mut t, REG_QUEUE_READY), 0);
    }

    #[test]
    fn rings_must_not_straddle_the_mmio_gap() {
        // Two regions with a hole between them, like RAM below and above the MMIO gap.
        let mem = GuestMem::from_ranges(&[
            (GuestAddress(0), 0x10_0000),
            (GuestAddress(0x20_0000), 0x10_0000),
        ])
        .unwrap();
        let (mut t, _irq) = console_transport(&mem);
        to_features_ok(&mut t);
        // The descriptor table starts below the hole and runs into it.
        assert_eq!(
            try_ready(&mut t, &GuestQueue::new(0x10_0000 - 0x800, 256)),
            0
        );
        // Entirely inside the hole.
        assert_eq!(try_ready(&mut t, &GuestQueue::new(0x18_0000, 16)), 0);
        // Above the hole is fine.
        assert_eq!(try_ready(&mut t, &GuestQueue::new(0x20_0000, 256)), 1);
    }

    #[test]
    fn driver_ok_with_unready_queue_needs_reset() {
        let mem = guest_memory();
        let (mut t, irq) = console_transport(&mem);
        to_features_ok(&mut t);
        setup_queue(&mut t, 0, &GuestQueue::new(RINGS_BASE, 16));
        // Queue 1 never made ready.
        wr(&mut t, REG_STATUS, DOK);
        assert!(t.needs_reset());
        assert_eq!(rd(&mut t, REG_STATUS), DOK | STATUS_DEVICE_NEEDS_RESET);
        assert_ne!(rd(&mut t, REG_INTERRUPT_STATUS) & INTERRUPT_CONFIG, 0);
        assert!(irq.read().is_ok(), "irq eventfd was signalled");
        // A reset clears it.
        wr(&mut t, REG_STATUS, 0);
        assert!(!t.needs_reset());
        assert_eq!(rd(&mut t, REG_STATUS), 0);
        assert_eq!(rd(&mut t, REG_INTERRUPT_STATUS), 0);
    }

    fn pipe() -> (OwnedFd, std::fs::File) {
        let (r, w) = std::io::pipe().unwrap();
        let r = std::fs::File::from(OwnedFd::from(r));
        (OwnedFd::from(w), r)
    }

    fn console_with_pipe(
        mem: &GuestMem,
    ) -> (MmioTransport, Vec<GuestQueue>, EventFd, std::fs::File) {
        let (w, r) = pipe();
        let dev = Console::new(Some(w), None);
        let (t, q, irq) = activated(mem, Box::new(dev), &[256, 256]);
        (t, q, irq, r)
    }

    fn assert_needs_reset(t: &mut MmioTransport, irq: &EventFd) {
        wait_for("DEVICE_NEEDS_RESET", || t.needs_reset());
        assert_eq!(rd(t, REG_STATUS), DOK | STATUS_DEVICE_NEEDS_RESET);
        assert_ne!(rd(t, REG_INTERRUPT_STATUS) & INTERRUPT_CONFIG, 0);
        assert!(irq.read().is_ok());
    }

    #[test]
    fn corrupt_avail_index_needs_reset_and_reset_recovers() {
        let mem = guest_memory();
        let (mut t, queues, irq, mut out) = console_with_pipe(&mem);
        // The driver claims 300 new entries in a queue of 256.
        queues[1].set_avail_idx(&mem, 300);
        notify(&mut t, 1);
        assert_needs_reset(&mut t, &irq);

        // Reset and set the device up again: it works.
        wr(&mut t, REG_STATUS, 0);
        assert!(!t.needs_reset());
        for r in [RINGS_BASE, RINGS_BASE + 0x8000] {
            mem.write_slice(&[0u8; 0x8000], GuestAddress(r)).unwrap();
        }
        to_features_ok(&mut t);
        let mut rx = GuestQueue::new(RINGS_BASE, 256);
        let mut tx = GuestQueue::new(RINGS_BASE + 0x8000, 256);
        setup_queue(&mut t, 0, &rx);
        setup_queue(&mut t, 1, &tx);
        wr(&mut t, REG_STATUS, DOK);
        assert!(!t.needs_reset());
        mem.write_slice(b"again", GuestAddress(DATA_BASE)).unwrap();
        tx.add_chain(&mem, &[(DATA_BASE, 5, false)]);
        notify(&mut t, 1);
        assert_eq!(tx.wait_used(&mem), (0, 0));
        let mut got = [0u8; 5];
        out.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"again");
        assert_ne!(rd(&mut t, REG_INTERRUPT_STATUS) & INTERRUPT_VRING, 0);
        wr(&mut t, REG_INTERRUPT_ACK, INTERRUPT_VRING);
        assert_eq!(rd(&mut t, REG_INTERRUPT_STATUS) & INTERRUPT_VRING, 0);
        let _ = rx.pop_used(&mem);
    }

    #[test]
    fn looping_descriptor_chain_needs_reset() {
        let mem = guest_memory();
        let (mut t, mut queues, irq, _out) = console_with_pipe(&mem);
        let tx = &mut queues[1];
        // Descriptor 0 -> 1 -> 0 -> ...
        tx.write_desc(&mem, 0, DATA_BASE, 4, 1, 1);
        tx.write_desc(&mem, 1, DATA_BASE, 4, 1, 0);
        tx.publish(&mem, 0);
        notify(&mut t, 1);
        assert_needs_reset(&mut t, &irq);
    }

    #[test]
    fn descriptor_index_out_of_range_needs_reset() {
        let mem = guest_memory();
        let (mut t, mut queues, irq, _out) = console_with_pipe(&mem);
        let tx = &mut queues[1];
        tx.write_desc(&mem, 0, DATA_BASE, 4, 1, 999);
        tx.publish(&mem, 0);
        notify(&mut t, 1);
        assert_needs_reset(&mut t, &irq);
    }

    #[test]
    fn buffer_outside_guest_memory_needs_reset() {
        let mem = guest_memory();
        let (mut t, mut queues, irq, _out) = console_with_pipe(&mem);
        queues[1].add_chain(&mem, &[(MEM_SIZE as u64 - 2, 16, false)]);
        notify(&mut t, 1);
        assert_needs_reset(&mut t, &irq);
    }

    #[test]
    fn head_index_out_of_range_needs_reset() {
        let mem = guest_memory();
        let (mut t, mut queues, irq, _out) = console_with_pipe(&mem);
        queues[1].publish(&mem, 4000);
        notify(&mut t, 1);
        assert_needs_reset(&mut t, &irq);
    }
}
