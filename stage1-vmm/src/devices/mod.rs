//! Device models. Legacy PIO devices live in `legacy`, virtio-mmio devices in `virtio`.
//!
//! Contract between the VMM core and device models: an MMIO device implements [`MmioDevice`] and
//! is placed on the MMIO bus at a base address; the vCPU exit handler calls `read`/`write` with
//! the offset from that base. Devices never block the calling vCPU thread.

pub mod legacy;
pub mod virtio;

use vmm_sys_util::eventfd::EventFd;

/// Guest memory type shared by the VMM and every device.
pub type GuestMem = vm_memory::GuestMemoryMmap<()>;

/// A device on the MMIO bus.
pub trait MmioDevice: Send {
    /// Guest read of `data.len()` bytes at `offset` from the device's base.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest write of `data` at `offset` from the device's base.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A virtio-mmio transport as the VMM registers it (see `Vmm::add_virtio_mmio`): an MMIO
/// device plus one queue-notify eventfd per queue, which the VMM registers as ioeventfds at
/// base + 0x50 with datamatch = queue index.
pub trait VirtioMmio: MmioDevice {
    /// The queue-notify eventfds, in queue order.
    fn queue_evts(&self) -> &[EventFd];
}
