//! The port-I/O and MMIO buses: which device answers which guest address. Built before the
//! vCPUs start, then shared read-only between vCPU threads; each device has its own lock.

use std::sync::{Arc, Mutex};

use thiserror::Error;

/// What a device write asks of the VM, beyond the write itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAction {
    /// Nothing.
    None,
    /// Reset the machine (the guest rebooted; for us the VM ends).
    Reset,
    /// The guest asked for a snapshot here (the snapshot port, [`crate::snapshot`]): the vCPU
    /// leaves its run loop so the VMM can save it.
    Snapshot,
}

/// A device on the MMIO bus: the vCPU exit handler calls `read`/`write` with the offset from the
/// device's base. Devices never block the calling vCPU thread.
pub trait MmioDevice: Send {
    /// Guest read of `data.len()` bytes at `offset` from the device's base.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest write of `data` at `offset` from the device's base.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// A device on the port-I/O bus.
pub trait PioDevice: Send {
    /// Guest `in` of `data.len()` bytes at `offset` from the device's base port.
    fn read(&mut self, offset: u16, data: &mut [u8]);
    /// Guest `out` of `data` at `offset` from the device's base port.
    fn write(&mut self, offset: u16, data: &[u8]) -> DeviceAction;
}

/// Errors building a bus.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range overlaps a device already on the bus.
    #[error("address range {base:#x}+{len:#x} overlaps another device")]
    Overlap {
        /// Base address.
        base: u64,
        /// Length (bytes).
        len: u64,
    },
    /// Zero length, or the range wraps around.
    #[error("invalid address range {base:#x}+{len:#x}")]
    BadRange {
        /// Base address.
        base: u64,
        /// Length (bytes).
        len: u64,
    },
}

struct Slot<D: ?Sized> {
    base: u64,
    len: u64,
    dev: Arc<Mutex<D>>,
}

/// A sorted list of non-overlapping address ranges, each owned by one device.
struct RangeMap<D: ?Sized> {
    slots: Vec<Slot<D>>,
}

impl<D: ?Sized> RangeMap<D> {
    fn new() -> Self {
        RangeMap { slots: Vec::new() }
    }

    fn insert(&mut self, base: u64, len: u64, dev: Arc<Mutex<D>>) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::BadRange { base, len })?;
        if self
            .slots
            .iter()
            .any(|s| base < s.base + s.len && s.base < end)
        {
            return Err(BusError::Overlap { base, len });
        }
        let at = self.slots.partition_point(|s| s.base < base);
        self.slots.insert(at, Slot { base, len, dev });
        Ok(())
    }

    /// The device covering `addr..addr+size` and the offset of `addr` in it.
    fn find(&self, addr: u64, size: usize) -> Option<(&Arc<Mutex<D>>, u64)> {
        let at = self.slots.partition_point(|s| s.base <= addr);
        let s = self.slots.get(at.checked_sub(1)?)?;
        let off = addr - s.base;
        (off.checked_add(size as u64)? <= s.len).then_some((&s.dev, off))
    }
}

/// Both buses of one VM.
pub struct Bus {
    pio: RangeMap<dyn PioDevice>,
    mmio: RangeMap<dyn MmioDevice>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

/// Locks a device, surviving a poisoned lock (a panicked vCPU thread must not wedge the rest).
fn lock<D: ?Sized>(m: &Mutex<D>) -> std::sync::MutexGuard<'_, D> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Bus {
            pio: RangeMap::new(),
            mmio: RangeMap::new(),
        }
    }

    /// Places `dev` at ports `base..base+len`.
    pub fn add_pio(
        &mut self,
        base: u16,
        len: u16,
        dev: Arc<Mutex<dyn PioDevice>>,
    ) -> Result<(), BusError> {
        if u32::from(base) + u32::from(len) > 0x1_0000 {
            return Err(BusError::BadRange {
                base: base.into(),
                len: len.into(),
            });
        }
        self.pio.insert(base.into(), len.into(), dev)
    }

    /// Places `dev` at guest physical `base..base+len`.
    pub fn add_mmio(
        &mut self,
        base: u64,
        len: u64,
        dev: Arc<Mutex<dyn MmioDevice>>,
    ) -> Result<(), BusError> {
        self.mmio.insert(base, len, dev)
    }

    /// Port read; `false` (and `data` filled with 0xff, as a floating bus) if no device is there.
    pub fn pio_read(&self, port: u16, data: &mut [u8]) -> bool {
        match self.pio.find(port.into(), data.len()) {
            Some((dev, off)) => {
                lock(dev).read(off as u16, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Port write; `None` if no device is there (the write is dropped).
    pub fn pio_write(&self, port: u16, data: &[u8]) -> Option<DeviceAction> {
        let (dev, off) = self.pio.find(port.into(), data.len())?;
        Some(lock(dev).write(off as u16, data))
    }

    /// MMIO read; `false` (and `data` filled with 0xff) if no device is there.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.mmio.find(addr, data.len()) {
            Some((dev, off)) => {
                lock(dev).read(off, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// MMIO write; `false` if no device is there (the write is dropped).
    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> bool {
        match self.mmio.find(addr, data.len()) {
            Some((dev, off)) => {
                lock(dev).write(off, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A register file: reads return what was written; writing 0xfe at offset 0 asks for reset.
    #[derive(Default)]
    pub(crate) struct Dummy {
        pub regs: [u8; 16],
    }

    impl PioDevice for Dummy {
        fn read(&mut self, offset: u16, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = self.regs.get(offset as usize + i).copied().unwrap_or(0);
            }
        }
        fn write(&mut self, offset: u16, data: &[u8]) -> DeviceAction {
            if offset == 0 && data == [0xfe] {
                return DeviceAction::Reset;
            }
            for (i, b) in data.iter().enumerate() {
                if let Some(r) = self.regs.get_mut(offset as usize + i) {
                    *r = *b;
                }
            }
            DeviceAction::None
        }
    }

    impl MmioDevice for Dummy {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            PioDevice::read(self, offset as u16, data)
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            PioDevice::write(self, offset as u16, data);
        }
    }

    #[test]
    fn routes_by_range_and_offset() {
        let mut bus = Bus::new();
        let d = Arc::new(Mutex::new(Dummy::default()));
        bus.add_pio(0x3f8, 8, d.clone()).expect("adds");
        assert_eq!(bus.pio_write(0x3f9, &[7]), Some(DeviceAction::None));
        let mut b = [0u8];
        assert!(bus.pio_read(0x3f9, &mut b));
        assert_eq!(b, [7]);
        assert_eq!(d.lock().expect("lock").regs[1], 7);
        // Outside: floating bus.
        assert!(!bus.pio_read(0x3f7, &mut b));
        assert_eq!(b, [0xff]);
        assert_eq!(bus.pio_write(0x400, &[1]), None);
        // Straddling the end of a device is not routed.
        let mut w = [0u8; 2];
        assert!(!bus.pio_read(0x3ff, &mut w));
    }

    #[test]
    fn rejects_overlaps() {
        let mut bus = Bus::new();
        let d = Arc::new(Mutex::new(Dummy::default()));
        bus.add_mmio(0x1000, 0x1000, d.clone()).expect("adds");
        bus.add_mmio(0x3000, 0x1000, d.clone()).expect("adds");
        assert!(matches!(
            bus.add_mmio(0x1800, 0x1000, d.clone()),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.add_mmio(0x0, 0x1001, d.clone()),
            Err(BusError::Overlap { .. })
        ));
        bus.add_mmio(0x2000, 0x1000, d.clone())
            .expect("fits between");
        assert!(matches!(
            bus.add_mmio(u64::MAX, 2, d.clone()),
            Err(BusError::BadRange { .. })
        ));
        assert!(bus.mmio_write(0x2004, &[1, 2, 3, 4]));
        let mut r = [0u8; 4];
        assert!(bus.mmio_read(0x2004, &mut r));
        assert_eq!(r, [1, 2, 3, 4]);
    }
}
