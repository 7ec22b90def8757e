//! How guest-init ends a KVM pod's VM once the pod's file systems are synced: command
//! [`COMMAND`] on the i8042's command port [`PORT`], the PC's reset line, which a kernel booted
//! with `reboot=k` also drives. stage1-vmm's i8042 takes it as the guest's reboot, a clean end.
//! Driven from guest-init, it skips the guest kernel's own reboot path (device shutdown,
//! IO-APIC masking, the console's reboot line), which does nothing a synced pod needs.

/// The i8042's status/command port.
pub const PORT: u16 = 0x64;
/// The command that pulses the reset line.
pub const COMMAND: u8 = 0xfe;
