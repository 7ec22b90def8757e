//! Device models. Legacy PIO devices live in `legacy`, virtio-mmio devices in `virtio`.
//!
//! Contract between the VMM core and device models: an MMIO device implements [`MmioDevice`] and
//! is placed on the MMIO bus at a base address; the vCPU exit handler calls `read`/`write` with
//! the offset from that base. Devices never block the calling vCPU thread.

pub mod virtio;

/// Guest memory type shared by the VMM and every device.
pub type GuestMem = vm_memory::GuestMemoryMmap<()>;

/// A device on the MMIO bus.
pub trait MmioDevice: Send {
    /// Guest read of `data.len()` bytes at `offset` from the device's base.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest write of `data` at `offset` from the device's base.
    fn write(&mut self, offset: u64, data: &[u8]);
}
