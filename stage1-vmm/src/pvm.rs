//! Detecting a PVM host: `/dev/kvm` backed by the paravirtual `kvm_pvm` module on a CPU without
//! VMX/SVM. Such a KVM runs only PVM-aware guest kernels; an ordinary Linux guest crawls through
//! the instruction emulator for about a minute and then faults on its first system call. We
//! refuse at once instead, unless [`ALLOW_PVM_ENV`] is set (for experiments).

use std::path::Path;

/// Set to `1` to boot on a PVM host anyway (the guest will most likely not get far).
pub const ALLOW_PVM_ENV: &str = "RKT_VMM_ALLOW_PVM";
/// Present when the PVM KVM module is loaded.
const KVM_PVM_MODULE: &str = "/sys/module/kvm_pvm";
/// CPU flags.
const CPUINFO: &str = "/proc/cpuinfo";

/// Whether a `flags` line of /proc/cpuinfo names hardware virtualization (vmx or svm).
pub fn cpuinfo_has_hw_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .flat_map(|l| l.split_whitespace())
        .any(|f| f == "vmx" || f == "svm")
}

/// Pure decision: a PVM host has the kvm_pvm module and no vmx/svm CPU flag.
pub fn is_pvm(kvm_pvm_loaded: bool, cpuinfo: &str) -> bool {
    kvm_pvm_loaded && !cpuinfo_has_hw_virt(cpuinfo)
}

/// Whether this host's /dev/kvm is PVM (reads sysfs and /proc/cpuinfo).
pub fn host_is_pvm() -> bool {
    let loaded = Path::new(KVM_PVM_MODULE).exists();
    if !loaded {
        return false;
    }
    let cpuinfo = std::fs::read_to_string(CPUINFO).unwrap_or_default();
    is_pvm(loaded, &cpuinfo)
}

/// Whether the user asked to boot on a PVM host anyway.
pub fn pvm_override() -> bool {
    std::env::var(ALLOW_PVM_ENV).is_ok_and(|v| v == "1")
}

/// Whether this host's KVM can boot an ordinary Linux guest (not PVM, or overridden).
pub fn host_can_boot_linux() -> bool {
    !host_is_pvm() || pvm_override()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_pvm() {
        let amd = "processor : 0\nflags\t\t: fpu vme de pse svm npt\n";
        let intel = "flags : fpu vmx ept\n";
        let none = "flags : fpu vme de pse tsc msr pae hypervisor\n";
        assert!(!is_pvm(true, amd));
        assert!(!is_pvm(true, intel));
        assert!(is_pvm(true, none));
        assert!(!is_pvm(false, none));
        // "svm" inside another word does not count.
        assert!(is_pvm(true, "flags : svmx_lock\n"));
    }
}
