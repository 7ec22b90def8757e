//! The KVM stage1: a mini-VMM on rust-vmm crates that boots the guest kernel, shares the pod's
//! stage1 root over in-process virtio-fs and runs guest-init as PID 1.
//!
//! Map: [`kvm`] and [`pvm`] check the host; [`memory`] lays out guest RAM; [`boot`] loads the
//! kernel (PVH or bzImage) and writes the boot structures; [`vcpu`] configures vCPUs and runs
//! `KVM_RUN`; [`exit`] decides what each exit means (pure); [`bus`] routes port and MMIO
//! accesses to [`devices`], which [`device_manager`] creates and wires to KVM; [`threads`] starts
//! every thread and [`confine`] gives each its seccomp filter and capabilities; [`vmm`] puts it
//! together; [`snapshot`] saves a VM when its guest asks and restores it (docs/snapshot.md).
//! The core (`memory`, `boot`, `vcpu`, `exit`, `bus`)
//! does not depend on `devices`. See docs/vmm.md.

#![deny(missing_docs)]

pub mod boot;
pub mod bus;
pub mod bytes;
pub mod confine;
pub mod device_manager;
pub mod devices;
pub mod exit;
pub mod exit_stats;
pub mod kvm;
pub mod kvm_stats;
pub mod malloc;
pub mod memory;
pub mod net;
pub mod pod;
pub mod profile;
pub mod pvm;
pub mod random;
pub mod snapshot;
pub mod threads;
pub mod vcpu;
pub mod vmm;

pub use device_manager::{MmioSlot, SerialBackend};
pub use devices::virtio::vsock::VsockConfig;
pub use vmm::{NetConfig, RunReport, VmConfig, VmOutcome, Vmm, VmmError};
