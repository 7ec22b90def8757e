//! vCPU setup (CPUID, MSRs, registers, FPU, LAPIC) and the `KVM_RUN` loop, with a race-free
//! kick: another thread sets the stop flag and sends [`kick_signal`] to the vCPU thread; the
//! signal handler sets `kvm_run.immediate_exit` through a thread-local pointer, so a kick that
//! lands between "check the flag" and "enter KVM_RUN" still makes KVM_RUN return at once.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Once;

use kvm_bindings::{
    kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress};

use crate::boot::BootEntry;
use crate::bus::Bus;
use crate::exit::{handle_exit, ExitError, VcpuAction};
use crate::memory::GuestMem;
use crate::memory::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_START, PDPTE_START, PML4_START,
};

/// Errors setting up a vCPU.
#[derive(Debug, Error)]
pub enum VcpuError {
    /// A KVM vCPU ioctl failed.
    #[error("vCPU ioctl {0} failed")]
    Ioctl(&'static str, #[source] kvm_ioctls::Error),
    /// Writing the boot GDT or page tables failed.
    #[error("cannot write vCPU boot tables to guest memory")]
    WriteTables(#[source] vm_memory::GuestMemoryError),
    /// Building the MSR list failed.
    #[error("cannot build the MSR list")]
    Msrs,
    /// Installing the kick signal handler failed.
    #[error("cannot install the vCPU kick signal handler")]
    Signal(#[source] vmm_sys_util::errno::Error),
}

/// How a vCPU thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuEnd {
    /// The guest asked for it (reset, power off, halt).
    Guest(VcpuAction),
    /// A fatal exit (triple fault, entry failure, internal error...).
    Failed(String),
    /// Stopped by the VMM (kick).
    Stopped,
}

/// What a VM exit was, for counting (see [`ExitCounts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExitKind {
    /// `in` from a port.
    PioIn(u16),
    /// `out` to a port.
    PioOut(u16),
    /// MMIO read in the 4 KiB page at this address.
    MmioRead(u64),
    /// MMIO write in the 4 KiB page at this address.
    MmioWrite(u64),
    /// `hlt` (only without an in-kernel irqchip).
    Hlt,
    /// KVM_EXIT_SHUTDOWN (triple fault).
    Shutdown,
    /// KVM_EXIT_SYSTEM_EVENT of this type (reset, power off, crash).
    SystemEvent(u32),
    /// KVM_RUN interrupted by a signal (a kick).
    Interrupted,
    /// Interrupt window, host interrupt, IOAPIC EOI: KVM returned with nothing to do.
    Spurious,
    /// Anything else.
    Other,
}

/// VM exits per kind (the profile: [`crate::exit_stats`]).
pub type ExitCounts = BTreeMap<ExitKind, u64>;

/// The kind of `exit`.
pub fn exit_kind(exit: &VcpuExit<'_>) -> ExitKind {
    match exit {
        VcpuExit::IoIn(port, _) => ExitKind::PioIn(*port),
        VcpuExit::IoOut(port, _) => ExitKind::PioOut(*port),
        VcpuExit::MmioRead(addr, _) => ExitKind::MmioRead(addr & !0xfff),
        VcpuExit::MmioWrite(addr, _) => ExitKind::MmioWrite(addr & !0xfff),
        VcpuExit::Hlt => ExitKind::Hlt,
        VcpuExit::Shutdown => ExitKind::Shutdown,
        VcpuExit::SystemEvent(kind, _) => ExitKind::SystemEvent(*kind),
        VcpuExit::IrqWindowOpen | VcpuExit::Intr | VcpuExit::IoapicEoi(_) => ExitKind::Spurious,
        _ => ExitKind::Other,
    }
}

// --- CPUID -------------------------------------------------------------------

/// CPUID.1:ECX bit: running under a hypervisor.
const CPUID_1_ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.1:EDX bit: the package has several logical processors.
const CPUID_1_EDX_HTT: u32 = 1 << 28;
/// CPUID.1:ECX bit: TSC-deadline mode of the LAPIC timer. KVM emulates it with the in-kernel
/// LAPIC but leaves it out of KVM_GET_SUPPORTED_CPUID; with it the guest skips calibrating the
/// LAPIC timer against the PIT (100 ms at HZ=100).
const CPUID_1_ECX_TSC_DEADLINE: u32 = 1 << 24;
/// CPUID.1:ECX bit: VMX (Intel hardware virtualization).
const CPUID_1_ECX_VMX: u32 = 1 << 5;
/// CPUID.0x80000001:ECX bit: SVM (AMD hardware virtualization).
const CPUID_80000001_ECX_SVM: u32 = 1 << 2;
/// KVM's CPUID signature leaf.
const KVM_CPUID_SIGNATURE: u32 = 0x4000_0000;
/// KVM's CPUID feature leaf.
const KVM_CPUID_FEATURES: u32 = 0x4000_0001;

/// Environment knob: `1` offers guests the TSC-deadline timer, `0` withholds it; unset (or any
/// other value), [`tsc_deadline_policy`] decides from the host CPU.
pub const TSC_DEADLINE_ENV: &str = "RKT_VMM_TSC_DEADLINE";

/// Whether guests may be offered the TSC-deadline timer (KVM must emulate it as well), given
/// [`TSC_DEADLINE_ENV`] and the host's own CPUID.1:ECX. By default not when the host is itself
/// a guest without a TSC-deadline timer of its own, as under QEMU's TCG (ci/nested-kvm's L1):
/// there the guest's deadline interrupts stop coming once the machine is busy (no timer tick
/// in a whole boot, a `sleep 5` that never ends; docs/nested-kvm.md, "L2 timers"), while the
/// LAPIC's one-shot mode keeps its ticks, for the guest's 100 ms calibration of it at boot.
pub fn tsc_deadline_policy(env: Option<&str>, host_leaf1_ecx: u32) -> bool {
    match env {
        Some("1") => true,
        Some("0") => false,
        _ => {
            host_leaf1_ecx & CPUID_1_ECX_HYPERVISOR == 0
                || host_leaf1_ecx & CPUID_1_ECX_TSC_DEADLINE != 0
        }
    }
}

/// [`tsc_deadline_policy`] for this process's environment and host CPU.
pub fn host_tsc_deadline_policy() -> bool {
    let env = std::env::var(TSC_DEADLINE_ENV).ok();
    tsc_deadline_policy(env.as_deref(), std::arch::x86_64::__cpuid(1).ecx)
}

/// Whether guests of `kvm` are offered the TSC-deadline timer: KVM emulates it and
/// [`host_tsc_deadline_policy`] allows it. The one decider: a VM's vCPUs
/// ([`guest_tsc_deadline`]) and a pod snapshot's key (`snapshot::pod::PodShape`) both ask it.
pub fn tsc_deadline_offered(kvm: &Kvm) -> bool {
    kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer) && host_tsc_deadline_policy()
}

/// [`tsc_deadline_offered`] for this VM, logged. Decided once per VM, for all its vCPUs.
pub fn guest_tsc_deadline(kvm: &Kvm) -> bool {
    let on = tsc_deadline_offered(kvm);
    if !on {
        log::debug!("guest LAPIC timer: one-shot mode (no TSC-deadline timer offered)");
    }
    on
}

/// The CPUID for vCPU `id` of `count`: what KVM supports, with this vCPU's APIC ID (leaves 1,
/// 0xb, 0x1f), the hypervisor bit and the KVM signature leaf, and without VMX/SVM: pods do not
/// run VMs, and a guest kernel with KVM built in would spend boot time setting up nested
/// virtualization (0.4 s of an L2 boot under ci/nested-kvm).
pub fn patch_cpuid(cpuid: &mut CpuId, id: u8, count: u8, tsc_deadline: bool) {
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(count) << 16);
                // CLFLUSH line size: 8 quadwords (64 bytes).
                e.ebx = (e.ebx & 0xffff_00ff) | (8 << 8);
                e.ecx |= CPUID_1_ECX_HYPERVISOR;
                e.ecx &= !CPUID_1_ECX_VMX;
                if tsc_deadline {
                    e.ecx |= CPUID_1_ECX_TSC_DEADLINE;
                }
                if count > 1 {
                    e.edx |= CPUID_1_EDX_HTT;
                }
            }
            0xb | 0x1f => e.edx = u32::from(id),
            0x8000_0001 => e.ecx &= !CPUID_80000001_ECX_SVM,
            KVM_CPUID_SIGNATURE => {
                e.eax = KVM_CPUID_FEATURES;
                e.ebx = u32::from_le_bytes(*b"KVMK");
                e.ecx = u32::from_le_bytes(*b"VMKV");
                e.edx = u32::from_le_bytes(*b"M\0\0\0");
            }
            _ => {}
        }
    }
}

// --- segments and tables -----------------------------------------------------

/// A GDT entry from flags (type, S, DPL, P in bits 0..8; AVL, L, D/B, G in bits 12..16).
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (flags as u64, base as u64, limit as u64);
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0xffff)
}

/// The `kvm_segment` KVM wants for GDT entry `entry` at index `index`.
pub fn segment_from_gdt(entry: u64, index: u16) -> kvm_segment {
    let g = ((entry >> 55) & 1) as u8;
    let raw_limit = (((entry >> 32) & 0x000f_0000) | (entry & 0xffff)) as u32;
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0x00ff_ffff) | (((entry >> 56) & 0xff) << 24),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: index * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// CR0.PE: protected mode.
const X86_CR0_PE: u64 = 0x1;
/// CR0.ET: extension type (always 1 on modern CPUs).
const X86_CR0_ET: u64 = 0x10;
/// CR0.PG: paging.
const X86_CR0_PG: u64 = 0x8000_0000;
/// CR4.PAE.
const X86_CR4_PAE: u64 = 0x20;
/// EFER.LME: long mode enable.
const EFER_LME: u64 = 0x100;
/// EFER.LMA: long mode active.
const EFER_LMA: u64 = 0x400;
/// Page-table entry bits: present + writable.
const PTE_PRESENT_RW: u64 = 0x3;
/// Page-directory entry bits: present + writable + 2 MiB page.
const PDE_HUGE: u64 = 0x83;

fn write_gdt(mem: &GuestMem, gdt: &[u64]) -> Result<(), VcpuError> {
    for (i, e) in gdt.iter().enumerate() {
        mem.write_obj(*e, GuestAddress(BOOT_GDT_START + 8 * i as u64))
            .map_err(VcpuError::WriteTables)?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(VcpuError::WriteTables)
}

/// Special registers for `entry`; writes the boot GDT/IDT (and page tables for 64-bit).
pub fn boot_sregs(
    mem: &GuestMem,
    mut sregs: kvm_sregs,
    entry: &BootEntry,
) -> Result<kvm_sregs, VcpuError> {
    let long = matches!(entry, BootEntry::Linux64 { .. });
    let gdt = if long {
        [
            gdt_entry(0, 0, 0),
            gdt_entry(0xa09b, 0, 0xfffff),
            gdt_entry(0xc093, 0, 0xfffff),
            gdt_entry(0x808b, 0, 0xfffff),
        ]
    } else {
        [
            gdt_entry(0, 0, 0),
            gdt_entry(0xc09b, 0, 0xfffff),
            gdt_entry(0xc093, 0, 0xfffff),
            gdt_entry(0x008b, 0, 0x67),
        ]
    };
    write_gdt(mem, &gdt)?;
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    let code = segment_from_gdt(gdt[1], 1);
    let data = segment_from_gdt(gdt[2], 2);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment_from_gdt(gdt[3], 3);
    sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
    sregs.cr4 = 0;
    sregs.efer = 0;
    if long {
        // Identity-map the first GiB with 2 MiB pages.
        mem.write_obj(PDPTE_START | PTE_PRESENT_RW, GuestAddress(PML4_START))
            .map_err(VcpuError::WriteTables)?;
        mem.write_obj(PDE_START | PTE_PRESENT_RW, GuestAddress(PDPTE_START))
            .map_err(VcpuError::WriteTables)?;
        for i in 0..512u64 {
            mem.write_obj((i << 21) | PDE_HUGE, GuestAddress(PDE_START + i * 8))
                .map_err(VcpuError::WriteTables)?;
        }
        sregs.cr3 = PML4_START;
        sregs.cr4 |= X86_CR4_PAE;
        sregs.cr0 |= X86_CR0_PG;
        sregs.efer |= EFER_LME | EFER_LMA;
    }
    Ok(sregs)
}

/// General registers for `entry`.
pub fn boot_regs(entry: &BootEntry) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    match *entry {
        BootEntry::Pvh { entry, start_info } => {
            regs.rip = entry;
            regs.rbx = start_info;
        }
        BootEntry::Linux64 { entry, zero_page } => {
            regs.rip = entry;
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = zero_page;
        }
    }
    regs
}

// --- MSRs ------------------------------------------------------------------

/// MTRRdefType: MTRRs enabled, default memory type write-back. Without it the guest may treat
/// all RAM as uncacheable.
const MTRR_DEF_TYPE_WB_ENABLED: u64 = (1 << 11) | 6;

/// Boot MSRs: SYSENTER/SYSCALL state cleared, TSC at 0, fast strings on, MTRRs write-back.
pub fn boot_msrs() -> Vec<kvm_msr_entry> {
    const LIST: &[(u32, u64)] = &[
        (0x174, 0),                        // IA32_SYSENTER_CS
        (0x175, 0),                        // IA32_SYSENTER_ESP
        (0x176, 0),                        // IA32_SYSENTER_EIP
        (0xc000_0081, 0),                  // STAR
        (0xc000_0082, 0),                  // LSTAR
        (0xc000_0083, 0),                  // CSTAR
        (0xc000_0084, 0),                  // SYSCALL_MASK
        (0xc000_0102, 0),                  // KERNEL_GS_BASE
        (0x10, 0),                         // IA32_TSC
        (0x1a0, 1),                        // IA32_MISC_ENABLE: fast strings
        (0x2ff, MTRR_DEF_TYPE_WB_ENABLED), // MTRRdefType
    ];
    LIST.iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect()
}

// --- LAPIC -------------------------------------------------------------------

/// Offset of LVT LINT0 in the LAPIC register page.
const APIC_LVT0: usize = 0x350;
/// Offset of LVT LINT1.
const APIC_LVT1: usize = 0x360;
/// LVT delivery mode ExtINT.
const APIC_MODE_EXTINT: u32 = 0x7;
/// LVT delivery mode NMI.
const APIC_MODE_NMI: u32 = 0x4;

fn set_lvt_mode(regs: &mut [std::os::raw::c_char; 1024], at: usize, mode: u32) {
    let Some(bytes) = regs.get_mut(at..at + 4) else {
        return;
    };
    let mut raw = [0u8; 4];
    for (d, s) in raw.iter_mut().zip(bytes.iter()) {
        *d = *s as u8;
    }
    let v = (u32::from_le_bytes(raw) & !0x700) | (mode << 8);
    for (d, s) in bytes.iter_mut().zip(v.to_le_bytes()) {
        *d = s as std::os::raw::c_char;
    }
}

/// Configures one vCPU for boot: CPUID (with the TSC-deadline timer if `tsc_deadline`, from
/// [`guest_tsc_deadline`]), MSRs, FPU, LAPIC (LINT0 ExtINT, LINT1 NMI), and for the boot vCPU
/// (`id == 0`) the registers for `entry`. Other vCPUs wait for INIT/SIPI.
pub fn configure(
    kvm: &Kvm,
    vcpu: &VcpuFd,
    mem: &GuestMem,
    id: u8,
    count: u8,
    tsc_deadline: bool,
    entry: &BootEntry,
) -> Result<(), VcpuError> {
    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| VcpuError::Ioctl("KVM_GET_SUPPORTED_CPUID", e))?;
    patch_cpuid(&mut cpuid, id, count, tsc_deadline);
    vcpu.set_cpuid2(&cpuid)
        .map_err(|e| VcpuError::Ioctl("KVM_SET_CPUID2", e))?;

    let msrs = Msrs::from_entries(&boot_msrs()).map_err(|_| VcpuError::Msrs)?;
    vcpu.set_msrs(&msrs)
        .map_err(|e| VcpuError::Ioctl("KVM_SET_MSRS", e))?;

    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu)
        .map_err(|e| VcpuError::Ioctl("KVM_SET_FPU", e))?;

    let mut lapic = vcpu
        .get_lapic()
        .map_err(|e| VcpuError::Ioctl("KVM_GET_LAPIC", e))?;
    set_lvt_mode(&mut lapic.regs, APIC_LVT0, APIC_MODE_EXTINT);
    set_lvt_mode(&mut lapic.regs, APIC_LVT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic)
        .map_err(|e| VcpuError::Ioctl("KVM_SET_LAPIC", e))?;

    if id == 0 {
        let sregs = vcpu
            .get_sregs()
            .map_err(|e| VcpuError::Ioctl("KVM_GET_SREGS", e))?;
        let sregs = boot_sregs(mem, sregs, entry)?;
        vcpu.set_sregs(&sregs)
            .map_err(|e| VcpuError::Ioctl("KVM_SET_SREGS", e))?;
        vcpu.set_regs(&boot_regs(entry))
            .map_err(|e| VcpuError::Ioctl("KVM_SET_REGS", e))?;
    }
    Ok(())
}

// --- kick ----------------------------------------------------------------------

thread_local! {
    /// This thread's `kvm_run.immediate_exit`, while it runs a vCPU (null otherwise).
    static IMMEDIATE_EXIT: Cell<*const AtomicU8> = const { Cell::new(std::ptr::null()) };
}

/// The signal used to kick vCPU threads: SIGRTMIN.
pub fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only a thread-local read and an atomic store: async-signal-safe.
    let p = IMMEDIATE_EXIT.with(|c| c.get());
    if !p.is_null() {
        // SAFETY: the pointer is set by `run_loop` on this very thread and cleared before the
        // kvm_run mapping goes away; the handler runs on this thread, so it cannot outlive it.
        unsafe { &*p }.store(1, Ordering::SeqCst);
    }
}

/// Installs the kick handler (once per process).
pub fn install_kick_handler() -> Result<(), VcpuError> {
    static ONCE: Once = Once::new();
    let mut res = Ok(());
    ONCE.call_once(|| {
        res = vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler)
            .map_err(VcpuError::Signal);
    });
    res
}

/// Where a vCPU that triple-faulted was, for the failure message: instruction and stack
/// pointers, the control registers (CR2: the last page-fault address) and EFER, or why they
/// could not be read.
pub fn fault_registers(vcpu: &VcpuFd) -> String {
    match (vcpu.get_regs(), vcpu.get_sregs()) {
        (Ok(r), Ok(s)) => format!(
            "rip={:#x} rsp={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
            r.rip, r.rsp, s.cr0, s.cr2, s.cr3, s.cr4, s.efer
        ),
        (Err(e), _) | (_, Err(e)) => format!("registers unreadable: {e}"),
    }
}

/// Runs the vCPU until the guest ends it, a fatal exit, or `stop` is set (and the thread
/// kicked with [`kick_signal`]); counts exits into `counts`. With `samples` (the guest
/// profiler, [`crate::profile`]) every kick records the guest's instruction pointer.
pub fn run_loop(
    vcpu: &mut VcpuFd,
    bus: &Bus,
    stop: &AtomicBool,
    counts: &mut ExitCounts,
    mut samples: Option<&mut crate::profile::Samples>,
) -> VcpuEnd {
    let run = vcpu.get_kvm_run();
    let flag = std::ptr::addr_of_mut!(run.immediate_exit).cast::<AtomicU8>();
    IMMEDIATE_EXIT.with(|c| c.set(flag));
    let end = loop {
        if stop.load(Ordering::SeqCst) {
            break VcpuEnd::Stopped;
        }
        let result = match vcpu.run() {
            Ok(exit) => {
                *counts.entry(exit_kind(&exit)).or_insert(0) += 1;
                handle_exit(bus, exit)
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                *counts.entry(ExitKind::Interrupted).or_insert(0) += 1;
                vcpu.set_kvm_immediate_exit(0);
                // Only a profiled vCPU reads its registers: KVM_GET_REGS is outside the plain
                // vCPU's seccomp profile, and every kick (a multi-vCPU VM's end) lands here.
                if let Some(s) = samples.as_deref_mut() {
                    if let Ok(regs) = vcpu.get_regs() {
                        s.record(regs.rip);
                    }
                }
                continue;
            }
            Err(e) => break VcpuEnd::Failed(format!("KVM_RUN failed: {e}")),
        };
        match result {
            Ok(VcpuAction::Continue) => {}
            Ok(action) => break VcpuEnd::Guest(action),
            Err(ExitError::Internal) => {
                // SAFETY: exit_reason was KVM_EXIT_INTERNAL_ERROR, so `internal` is the active
                // member of the union.
                let sub = unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
                break VcpuEnd::Failed(format!("{} (suberror {sub})", ExitError::Internal));
            }
            Err(e @ ExitError::TripleFault) => {
                break VcpuEnd::Failed(format!("{e} ({})", fault_registers(vcpu)))
            }
            Err(e) => break VcpuEnd::Failed(e.to_string()),
        }
    };
    IMMEDIATE_EXIT.with(|c| c.set(std::ptr::null()));
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_exits() {
        let mut d = [0u8];
        assert_eq!(
            exit_kind(&VcpuExit::IoIn(0x3fd, &mut d)),
            ExitKind::PioIn(0x3fd)
        );
        assert_eq!(
            exit_kind(&VcpuExit::MmioWrite(0xd000_1050, &[0; 4])),
            ExitKind::MmioWrite(0xd000_1000)
        );
        assert_eq!(exit_kind(&VcpuExit::Hlt), ExitKind::Hlt);
        assert_eq!(
            exit_kind(&VcpuExit::SystemEvent(2, &[])),
            ExitKind::SystemEvent(2)
        );
        assert_eq!(exit_kind(&VcpuExit::Intr), ExitKind::Spurious);
        assert_eq!(exit_kind(&VcpuExit::Exception), ExitKind::Other);
    }

    #[test]
    fn gdt_entries_round_trip() {
        let code64 = gdt_entry(0xa09b, 0, 0xfffff);
        assert_eq!(code64, 0x00af_9b00_0000_ffff);
        let s = segment_from_gdt(code64, 1);
        assert_eq!(
            (s.selector, s.l, s.db, s.g, s.present, s.type_),
            (8, 1, 0, 1, 1, 0xb)
        );
        assert_eq!(s.limit, 0xffff_ffff);
        let code32 = gdt_entry(0xc09b, 0, 0xfffff);
        assert_eq!(code32, 0x00cf_9b00_0000_ffff);
        let s = segment_from_gdt(code32, 1);
        assert_eq!((s.l, s.db), (0, 1));
        let tss = segment_from_gdt(gdt_entry(0x008b, 0, 0x67), 3);
        assert_eq!(
            (tss.limit, tss.g, tss.type_, tss.selector),
            (0x67, 0, 0xb, 24)
        );
        assert_eq!(segment_from_gdt(0, 0).unusable, 1);
    }

    #[test]
    fn lapic_lvt_modes() {
        let mut regs = [0 as std::os::raw::c_char; 1024];
        regs[APIC_LVT0 + 1] = 0x07; // some other mode already set
        regs[APIC_LVT0] = 0x10;
        set_lvt_mode(&mut regs, APIC_LVT0, APIC_MODE_EXTINT);
        set_lvt_mode(&mut regs, APIC_LVT1, APIC_MODE_NMI);
        assert_eq!(
            (regs[APIC_LVT0] as u8, regs[APIC_LVT0 + 1] as u8),
            (0x10, 0x07)
        );
        assert_eq!(regs[APIC_LVT1 + 1] as u8, 0x04);
    }

    #[test]
    fn cpuid_gets_apic_id_and_signature() {
        let mut c = CpuId::from_entries(&[
            kvm_bindings::kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xff00_0800,
                ..Default::default()
            },
            kvm_bindings::kvm_cpuid_entry2 {
                function: 0xb,
                edx: 9,
                ..Default::default()
            },
            kvm_bindings::kvm_cpuid_entry2 {
                function: KVM_CPUID_SIGNATURE,
                ..Default::default()
            },
            kvm_bindings::kvm_cpuid_entry2 {
                function: 0x8000_0001,
                ecx: 0xffff_ffff,
                ..Default::default()
            },
        ])
        .expect("cpuid");
        patch_cpuid(&mut c, 3, 4, true);
        let e = c.as_slice();
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_ne!(e[0].ecx & CPUID_1_ECX_HYPERVISOR, 0);
        assert_eq!(e[1].edx, 3);
        assert_eq!(e[2].eax, KVM_CPUID_FEATURES);
        let mut sig = Vec::new();
        for r in [e[2].ebx, e[2].ecx, e[2].edx] {
            sig.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&sig, b"KVMKVMKVM\0\0\0");
        assert_eq!(e[0].ecx & CPUID_1_ECX_VMX, 0);
        assert_ne!(e[0].ecx & CPUID_1_ECX_TSC_DEADLINE, 0);
        assert_eq!(e[3].ecx & CPUID_80000001_ECX_SVM, 0);
    }

    #[test]
    fn tsc_deadline_is_withheld_on_a_guest_host_without_one() {
        let hv = CPUID_1_ECX_HYPERVISOR;
        let tscd = CPUID_1_ECX_TSC_DEADLINE;
        // Bare metal, with or without the timer; a guest host that has it (KVM's L1).
        assert!(tsc_deadline_policy(None, 0));
        assert!(tsc_deadline_policy(None, tscd));
        assert!(tsc_deadline_policy(None, hv | tscd));
        // A guest host without it (QEMU's TCG, as ci/nested-kvm's L1).
        assert!(!tsc_deadline_policy(None, hv));
        // The knob wins either way; other values leave it to the host.
        assert!(tsc_deadline_policy(Some("1"), hv));
        assert!(!tsc_deadline_policy(Some("0"), hv | tscd));
        assert!(!tsc_deadline_policy(Some("yes"), hv));
        // And the CPUID patch follows the decision.
        for offer in [true, false] {
            let mut c = CpuId::from_entries(&[kvm_bindings::kvm_cpuid_entry2 {
                function: 1,
                ..Default::default()
            }])
            .expect("cpuid");
            patch_cpuid(&mut c, 0, 1, offer);
            assert_eq!(c.as_slice()[0].ecx & tscd != 0, offer);
        }
    }

    #[test]
    fn regs_for_each_protocol() {
        let r = boot_regs(&BootEntry::Pvh {
            entry: 0x100_0000,
            start_info: 0x6000,
        });
        assert_eq!((r.rip, r.rbx, r.rflags), (0x100_0000, 0x6000, 2));
        let r = boot_regs(&BootEntry::Linux64 {
            entry: 0x100_0200,
            zero_page: 0x7000,
        });
        assert_eq!(
            (r.rip, r.rsi, r.rsp),
            (0x100_0200, 0x7000, BOOT_STACK_POINTER)
        );
    }
}
