//! What one VM exit means, as a pure function of the bus and the exit: unit-testable without
//! KVM. The `KVM_RUN` loop in [`crate::vcpu`] only calls [`handle_exit`] and acts on the result.

use kvm_ioctls::VcpuExit;
use thiserror::Error;

use crate::bus::{Bus, DeviceAction};

/// KVM_SYSTEM_EVENT_SHUTDOWN: the guest powered off.
const SYSTEM_EVENT_SHUTDOWN: u32 = 1;
/// KVM_SYSTEM_EVENT_RESET: the guest reset.
const SYSTEM_EVENT_RESET: u32 = 2;
/// KVM_SYSTEM_EVENT_CRASH: the guest crashed.
const SYSTEM_EVENT_CRASH: u32 = 3;

/// What the vCPU loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuAction {
    /// Re-enter the guest.
    Continue,
    /// The guest reset the machine (i8042 reset, reboot): the VM ends, normally.
    Reset,
    /// The guest powered off: the VM ends, normally.
    PowerOff,
    /// The guest halted with nothing to wake it (only without an in-kernel irqchip).
    Halted,
    /// The guest asked for a snapshot: the vCPU stops so that the VMM can save the VM.
    Snapshot,
}

/// Exits that end the VM with a failure.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ExitError {
    /// KVM_EXIT_SHUTDOWN: a triple fault.
    #[error("guest triple fault (KVM_EXIT_SHUTDOWN)")]
    TripleFault,
    /// KVM_EXIT_FAIL_ENTRY.
    #[error("KVM could not enter the guest (KVM_EXIT_FAIL_ENTRY, hardware reason {reason:#x}, cpu {cpu})")]
    FailEntry {
        /// Hardware entry failure reason.
        reason: u64,
        /// Physical CPU.
        cpu: u32,
    },
    /// KVM_EXIT_INTERNAL_ERROR.
    #[error("KVM internal error (KVM_EXIT_INTERNAL_ERROR)")]
    Internal,
    /// KVM_SYSTEM_EVENT_CRASH or another system event we do not know.
    #[error("guest system event {0} (crash)")]
    SystemEvent(u32),
    /// Any exit we do not expect with our configuration.
    #[error("unexpected VM exit {0}")]
    Unexpected(String),
}

/// Handles one exit: routes port and MMIO accesses to the bus (unknown ports read as 0xff and
/// ignore writes, as on a real machine), and maps the terminal exits.
pub fn handle_exit(bus: &Bus, exit: VcpuExit<'_>) -> Result<VcpuAction, ExitError> {
    match exit {
        VcpuExit::IoIn(port, data) => {
            if !bus.pio_read(port, data) {
                log::trace!("unhandled in from port {port:#x}");
            }
            Ok(VcpuAction::Continue)
        }
        VcpuExit::IoOut(port, data) => match bus.pio_write(port, data) {
            Some(DeviceAction::Reset) => Ok(VcpuAction::Reset),
            Some(DeviceAction::Snapshot) => Ok(VcpuAction::Snapshot),
            Some(DeviceAction::None) => Ok(VcpuAction::Continue),
            None => {
                log::trace!("unhandled out to port {port:#x}");
                Ok(VcpuAction::Continue)
            }
        },
        VcpuExit::MmioRead(addr, data) => {
            if !bus.mmio_read(addr, data) {
                log::debug!("unhandled MMIO read at {addr:#x}");
            }
            Ok(VcpuAction::Continue)
        }
        VcpuExit::MmioWrite(addr, data) => {
            if !bus.mmio_write(addr, data) {
                log::debug!("unhandled MMIO write at {addr:#x}");
            }
            Ok(VcpuAction::Continue)
        }
        VcpuExit::Hlt => Ok(VcpuAction::Halted),
        VcpuExit::Shutdown => Err(ExitError::TripleFault),
        VcpuExit::FailEntry(reason, cpu) => Err(ExitError::FailEntry { reason, cpu }),
        VcpuExit::InternalError => Err(ExitError::Internal),
        VcpuExit::SystemEvent(kind, _) => match kind {
            SYSTEM_EVENT_RESET => Ok(VcpuAction::Reset),
            SYSTEM_EVENT_SHUTDOWN => Ok(VcpuAction::PowerOff),
            SYSTEM_EVENT_CRASH => Err(ExitError::SystemEvent(kind)),
            other => Err(ExitError::SystemEvent(other)),
        },
        // Spurious: the irqchip is in the kernel, so these only mean "run again".
        VcpuExit::IrqWindowOpen | VcpuExit::Intr | VcpuExit::IoapicEoi(_) => {
            Ok(VcpuAction::Continue)
        }
        other => Err(ExitError::Unexpected(format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::bus::tests::Dummy;

    fn bus() -> Bus {
        let mut bus = Bus::new();
        bus.add_pio(0x60, 5, Arc::new(Mutex::new(Dummy::default())))
            .expect("adds");
        bus.add_mmio(0xd000_0000, 0x1000, Arc::new(Mutex::new(Dummy::default())))
            .expect("adds");
        bus
    }

    #[test]
    fn port_io_is_routed() {
        let b = bus();
        assert_eq!(
            handle_exit(&b, VcpuExit::IoOut(0x61, &[9])),
            Ok(VcpuAction::Continue)
        );
        let mut d = [0u8];
        assert_eq!(
            handle_exit(&b, VcpuExit::IoIn(0x61, &mut d)),
            Ok(VcpuAction::Continue)
        );
        assert_eq!(d, [9]);
    }

    #[test]
    fn reset_write_ends_the_vm() {
        let b = bus();
        assert_eq!(
            handle_exit(&b, VcpuExit::IoOut(0x60, &[0xfe])),
            Ok(VcpuAction::Reset)
        );
    }

    #[test]
    fn unknown_ports_float_and_ignore_writes() {
        let b = bus();
        for port in [0x80u16, 0x87, 0xcf8, 0xcfc, 0x70, 0x71] {
            let mut d = [0u8; 4];
            assert_eq!(
                handle_exit(&b, VcpuExit::IoIn(port, &mut d)),
                Ok(VcpuAction::Continue)
            );
            assert_eq!(d, [0xff; 4]);
            assert_eq!(
                handle_exit(&b, VcpuExit::IoOut(port, &[1])),
                Ok(VcpuAction::Continue)
            );
        }
    }

    #[test]
    fn mmio_is_routed_and_unknown_floats() {
        let b = bus();
        assert_eq!(
            handle_exit(&b, VcpuExit::MmioWrite(0xd000_0004, &[1, 2])),
            Ok(VcpuAction::Continue)
        );
        let mut d = [0u8; 2];
        assert_eq!(
            handle_exit(&b, VcpuExit::MmioRead(0xd000_0004, &mut d)),
            Ok(VcpuAction::Continue)
        );
        assert_eq!(d, [1, 2]);
        let mut d = [0u8; 4];
        assert_eq!(
            handle_exit(&b, VcpuExit::MmioRead(0xd000_1000, &mut d)),
            Ok(VcpuAction::Continue)
        );
        assert_eq!(d, [0xff; 4]);
    }

    #[test]
    fn terminal_exits() {
        let b = bus();
        assert_eq!(
            handle_exit(&b, VcpuExit::Shutdown),
            Err(ExitError::TripleFault)
        );
        assert_eq!(
            handle_exit(&b, VcpuExit::FailEntry(0x80000021, 1)),
            Err(ExitError::FailEntry {
                reason: 0x80000021,
                cpu: 1
            })
        );
        assert_eq!(
            handle_exit(&b, VcpuExit::InternalError),
            Err(ExitError::Internal)
        );
        assert_eq!(handle_exit(&b, VcpuExit::Hlt), Ok(VcpuAction::Halted));
        assert_eq!(
            handle_exit(&b, VcpuExit::SystemEvent(2, &[])),
            Ok(VcpuAction::Reset)
        );
        assert_eq!(
            handle_exit(&b, VcpuExit::SystemEvent(1, &[])),
            Ok(VcpuAction::PowerOff)
        );
        assert_eq!(
            handle_exit(&b, VcpuExit::SystemEvent(3, &[])),
            Err(ExitError::SystemEvent(3))
        );
        assert!(matches!(
            handle_exit(&b, VcpuExit::Exception),
            Err(ExitError::Unexpected(_))
        ));
        assert_eq!(handle_exit(&b, VcpuExit::Intr), Ok(VcpuAction::Continue));
    }
}
