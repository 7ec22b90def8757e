//! Opening `/dev/kvm` and checking that it can run our VMs: the stable API version, the
//! capabilities we rely on, and not being a PVM host (see [`crate::pvm`]).

use std::path::Path;

use kvm_ioctls::{Cap, Kvm};
use thiserror::Error;

use crate::pvm;

/// The only KVM API version there is (KVM_API_VERSION).
const KVM_API_VERSION: i32 = 12;
/// Path of the KVM device.
pub const KVM_DEV: &str = "/dev/kvm";

/// Capabilities the VMM uses, with the reason.
const REQUIRED_CAPS: &[(Cap, &str)] = &[
    (Cap::Irqchip, "in-kernel PIC/IOAPIC/LAPIC"),
    (Cap::Pit2, "in-kernel PIT"),
    (Cap::ReinjectControl, "the PIT dropping missed ticks"),
    (Cap::Irqfd, "device interrupts through eventfds"),
    (
        Cap::Ioeventfd,
        "virtio queue notifications through eventfds",
    ),
    (Cap::UserMemory, "guest RAM from our mmap"),
    (Cap::SetTssAddr, "KVM's TSS below 4 GiB"),
    (Cap::ExtCpuid, "KVM_GET_SUPPORTED_CPUID"),
    (
        Cap::ImmediateExit,
        "kicking vCPUs out of KVM_RUN without races",
    ),
];

/// Errors opening or checking KVM.
#[derive(Debug, Error)]
pub enum KvmError {
    /// /dev/kvm is missing.
    #[error("{KVM_DEV} does not exist: this host has no KVM (load kvm_intel/kvm_amd, or run under ci/nested-kvm)")]
    NoDevice,
    /// Opening /dev/kvm failed.
    #[error("cannot open {KVM_DEV}")]
    Open(#[source] kvm_ioctls::Error),
    /// Unexpected API version.
    #[error("unsupported KVM API version {0} (need 12)")]
    ApiVersion(i32),
    /// A required capability is missing.
    #[error("KVM lacks capability {cap} ({why})")]
    MissingCap {
        /// Capability name.
        cap: String,
        /// What we need it for.
        why: &'static str,
    },
    /// The host's KVM is PVM, which cannot boot an ordinary Linux guest.
    #[error(
        "this host's /dev/kvm is PVM (kvm_pvm loaded, no vmx/svm CPU flag): it cannot boot an \
         unmodified Linux guest; run under ci/nested-kvm (a nested L1 VM with a real KVM), or \
         set {}=1 to try anyway",
        pvm::ALLOW_PVM_ENV
    )]
    PvmHost,
}

/// Opens /dev/kvm and checks API version and capabilities. With `need_linux`, also refuses a
/// PVM host (unless overridden); tiny hand-made guests run on PVM fine and pass `false`.
pub fn open_kvm(need_linux: bool) -> Result<Kvm, KvmError> {
    if need_linux && pvm::host_is_pvm() && !pvm::pvm_override() {
        return Err(KvmError::PvmHost);
    }
    if !Path::new(KVM_DEV).exists() {
        return Err(KvmError::NoDevice);
    }
    let kvm = Kvm::new().map_err(KvmError::Open)?;
    check_kvm(&kvm)?;
    Ok(kvm)
}

/// Checks the API version and `REQUIRED_CAPS`.
pub fn check_kvm(kvm: &Kvm) -> Result<(), KvmError> {
    let v = kvm.get_api_version();
    if v != KVM_API_VERSION {
        return Err(KvmError::ApiVersion(v));
    }
    for (cap, why) in REQUIRED_CAPS {
        if !kvm.check_extension(*cap) {
            return Err(KvmError::MissingCap {
                cap: format!("{cap:?}"),
                why,
            });
        }
    }
    Ok(())
}
