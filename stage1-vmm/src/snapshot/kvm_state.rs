//! Reading and writing KVM's state: one vCPU's ([`save_vcpu`], [`restore_vcpu`]) and the VM's
//! ([`save_vm`], [`restore_vm`]), in the orders Firecracker uses (its `vstate/vcpu.rs` and
//! `vstate/vm.rs`): the MSRs KVM lists (`KVM_GET_MSR_INDEX_LIST`), skipping those it lists but
//! will not read; on restore CPUID first, the MSRs after the LAPIC (TSC deadline), the vCPU
//! events last.

use kvm_bindings::{
    kvm_irqchip, kvm_msr_entry, CpuId, Msrs, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{VcpuFd, VmFd};

use super::state::{VcpuState, VmState};
use super::SnapshotError;

/// MSRs per KVM_GET_MSRS call (KVM's own limit is 255).
const MSR_CHUNK: usize = 64;

fn ioctl(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> SnapshotError {
    move |e| SnapshotError::Ioctl(what, e)
}

/// Reads the MSRs in `indices` that KVM lets us read: KVM_GET_MSRS stops at the first one it
/// refuses and returns how many it read; that one is skipped and the rest read on.
fn read_msrs(vcpu: &VcpuFd, indices: &[u32]) -> Result<Vec<(u32, u64)>, SnapshotError> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest = indices;
    while !rest.is_empty() {
        let chunk = rest.get(..rest.len().min(MSR_CHUNK)).unwrap_or_default();
        let entries: Vec<kvm_msr_entry> = chunk
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|_| SnapshotError::Msrs)?;
        let n = vcpu.get_msrs(&mut msrs).map_err(ioctl("KVM_GET_MSRS"))?;
        out.extend(msrs.as_slice().iter().take(n).map(|e| (e.index, e.data)));
        // Skip the one KVM refused (if it stopped early), carry on after it.
        let used = if n < chunk.len() { n + 1 } else { n };
        rest = rest.get(used..).unwrap_or_default();
    }
    Ok(out)
}

/// Saves one vCPU with the MSRs of `msr_list` (KVM_GET_MSR_INDEX_LIST) that KVM lets us
/// read. The vCPU must be out of `KVM_RUN` with any port/MMIO exit completed (see
/// [`complete_pending_io`]).
pub fn save_vcpu(vcpu: &VcpuFd, msr_list: &[u32]) -> Result<VcpuState, SnapshotError> {
    let cpuid = vcpu
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(ioctl("KVM_GET_CPUID2"))?;
    Ok(VcpuState {
        cpuid: cpuid.as_slice().to_vec(),
        msrs: read_msrs(vcpu, msr_list)?,
        regs: vcpu.get_regs().map_err(ioctl("KVM_GET_REGS"))?,
        sregs: vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?,
        fpu: vcpu.get_fpu().map_err(ioctl("KVM_GET_FPU"))?,
        xsave: vcpu.get_xsave().map_err(ioctl("KVM_GET_XSAVE"))?,
        xcrs: vcpu.get_xcrs().map_err(ioctl("KVM_GET_XCRS"))?,
        lapic: vcpu.get_lapic().map_err(ioctl("KVM_GET_LAPIC"))?,
        mp_state: vcpu.get_mp_state().map_err(ioctl("KVM_GET_MP_STATE"))?,
        events: vcpu
            .get_vcpu_events()
            .map_err(ioctl("KVM_GET_VCPU_EVENTS"))?,
        debugregs: vcpu.get_debug_regs().map_err(ioctl("KVM_GET_DEBUGREGS"))?,
    })
}

/// Completes the port or MMIO access the vCPU last exited for, without running guest code:
/// KVM finishes an exit's instruction only on the next `KVM_RUN`, and `immediate_exit` makes
/// that call return at once (EINTR) after doing so. Without it the saved RIP would still point
/// at the `out` that asked for the snapshot.
pub fn complete_pending_io(vcpu: &mut VcpuFd) -> Result<(), SnapshotError> {
    vcpu.set_kvm_immediate_exit(1);
    let r = vcpu.run().map(|_| ());
    vcpu.set_kvm_immediate_exit(0);
    match r {
        Err(e) if e.errno() == libc::EINTR => Ok(()),
        Err(e) => Err(SnapshotError::Ioctl("KVM_RUN (complete I/O)", e)),
        // Returned an exit instead: KVM had something to report first. Not expected after a
        // port write; refuse rather than save a state in the middle of another exit.
        Ok(()) => Err(SnapshotError::PendingExit),
    }
}

/// Restores one vCPU (created, not yet run).
pub fn restore_vcpu(vcpu: &VcpuFd, s: &VcpuState) -> Result<(), SnapshotError> {
    let cpuid = CpuId::from_entries(&s.cpuid).map_err(|_| SnapshotError::Msrs)?;
    vcpu.set_cpuid2(&cpuid).map_err(ioctl("KVM_SET_CPUID2"))?;
    vcpu.set_mp_state(s.mp_state)
        .map_err(ioctl("KVM_SET_MP_STATE"))?;
    vcpu.set_regs(&s.regs).map_err(ioctl("KVM_SET_REGS"))?;
    let mut sregs = s.sregs;
    tr_as_loaded(&mut sregs, host_is_amd());
    vcpu.set_sregs(&sregs).map_err(ioctl("KVM_SET_SREGS"))?;
    vcpu.set_fpu(&s.fpu).map_err(ioctl("KVM_SET_FPU"))?;
    // SAFETY: a 4 KiB `kvm_xsave` as KVM_GET_XSAVE returned it (no trailing XSAVE2 data).
    unsafe { vcpu.set_xsave(&s.xsave) }.map_err(ioctl("KVM_SET_XSAVE"))?;
    vcpu.set_xcrs(&s.xcrs).map_err(ioctl("KVM_SET_XCRS"))?;
    vcpu.set_debug_regs(&s.debugregs)
        .map_err(ioctl("KVM_SET_DEBUGREGS"))?;
    vcpu.set_lapic(&s.lapic).map_err(ioctl("KVM_SET_LAPIC"))?;
    let entries: Vec<kvm_msr_entry> = s
        .msrs
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    for chunk in entries.chunks(MSR_CHUNK) {
        let msrs = Msrs::from_entries(chunk).map_err(|_| SnapshotError::Msrs)?;
        let n = vcpu.set_msrs(&msrs).map_err(ioctl("KVM_SET_MSRS"))?;
        if n != chunk.len() {
            let index = chunk.get(n).map_or(0, |e| e.index);
            return Err(SnapshotError::MsrRefused(index));
        }
    }
    vcpu.set_vcpu_events(&s.events)
        .map_err(ioctl("KVM_SET_VCPU_EVENTS"))?;
    Ok(())
}

const CHIPS: [u32; 3] = [
    KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQCHIP_IOAPIC,
];

/// Saves the VM's irqchip, PIT and clock.
pub fn save_vm(vm: &VmFd) -> Result<VmState, SnapshotError> {
    let mut irqchips: [kvm_irqchip; 3] = Default::default();
    for (chip, id) in irqchips.iter_mut().zip(CHIPS) {
        chip.chip_id = id;
        vm.get_irqchip(chip).map_err(ioctl("KVM_GET_IRQCHIP"))?;
    }
    Ok(VmState {
        irqchips,
        pit: vm.get_pit2().map_err(ioctl("KVM_GET_PIT2"))?,
        clock: vm.get_clock().map_err(ioctl("KVM_GET_CLOCK"))?,
    })
}

/// Restores the VM's PIT, clock and irqchip (created by the caller). The clock goes back to
/// the saved value with no flags: the guest's monotonic time continues from the snapshot and
/// it learns the wall clock from the snapshot port.
pub fn restore_vm(vm: &VmFd, s: &VmState) -> Result<(), SnapshotError> {
    vm.set_pit2(&s.pit).map_err(ioctl("KVM_SET_PIT2"))?;
    let mut clock = s.clock;
    clock.flags = 0;
    vm.set_clock(&clock).map_err(ioctl("KVM_SET_CLOCK"))?;
    for (chip, id) in s.irqchips.iter().zip(CHIPS) {
        if chip.chip_id != id {
            return Err(SnapshotError::Corrupt("irqchip order"));
        }
        vm.set_irqchip(chip).map_err(ioctl("KVM_SET_IRQCHIP"))?;
    }
    Ok(())
}

/// Task-register types: an available and a busy 64-bit TSS.
const TSS_AVAILABLE: u8 = 9;
const TSS_BUSY: u8 = 11;

/// On AMD, gives the task register back the type the CPU loaded (available): KVM's SVM code
/// reports TR as busy on every read (SVM does not keep the bit), so a restore would write back a
/// busy type the guest never had. Hardware does not care, but QEMU's TCG (the nested harness's
/// SVM) grants `ioperm` ports only through an available TSS, so a restored guest's first
/// user-mode `in`/`out` (the snapshot port) would fault. Intel's VM entry requires busy: left
/// alone there.
fn tr_as_loaded(sregs: &mut kvm_bindings::kvm_sregs, amd: bool) {
    if amd && sregs.tr.type_ == TSS_BUSY {
        sregs.tr.type_ = TSS_AVAILABLE;
    }
}

/// Whether this CPU is AMD's (or Hygon's, the same SVM): CPUID leaf 0's vendor string.
fn host_is_amd() -> bool {
    let r = std::arch::x86_64::__cpuid(0);
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&r.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&r.edx.to_le_bytes());
    v[8..].copy_from_slice(&r.ecx.to_le_bytes());
    &v == b"AuthenticAMD" || &v == b"HygonGenuine"
}

#[cfg(test)]
mod tr_tests {
    use super::*;

    #[test]
    fn a_busy_tss_is_restored_available_on_amd_only() {
        let mut s = kvm_bindings::kvm_sregs::default();
        s.tr.type_ = TSS_BUSY;
        let mut intel = s;
        tr_as_loaded(&mut intel, false);
        assert_eq!(intel.tr.type_, TSS_BUSY);
        tr_as_loaded(&mut s, true);
        assert_eq!(s.tr.type_, TSS_AVAILABLE);
        // Anything else is left as saved.
        let mut other = kvm_bindings::kvm_sregs::default();
        other.tr.type_ = 3;
        tr_as_loaded(&mut other, true);
        assert_eq!(other.tr.type_, 3);
    }
}
