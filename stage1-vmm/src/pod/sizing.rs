//! Sizing the pod VM from the apps' isolators (pure).
//!
//! Memory: the sum of the apps' `resource/memory` limits ([`DEFAULT_APP_MEM_MIB`] for an app
//! without one), plus the guest's own fixed cost ([`GUEST_BASE_MIB`]: kernel image, guest-init,
//! page tables, the share's dentries and page cache) and the kernel's per-page bookkeeping
//! (`struct page` and friends, [`PER_PAGE_OVERHEAD_DIVISOR`]), so that the guest's `MemTotal` is at
//! least the sum of the limits and each app can really use its limit. There is no 512 MiB floor
//! (rkt's stage1-kvm had one); a hello-world pod gets a small VM. See docs/kvm-stage1.md for the
//! measurements behind the constants.
//!
//! vCPUs: `ceil(sum of resource/cpu limits)` when every app has one, else all host CPUs (as rkt);
//! never more than the host has, never fewer than one.

use app_confine::cgroup::MILLIS_PER_CPU;
use pod_abi::plan::Plan;

/// Memory counted for an app without a `resource/memory` limit (MiB).
pub const DEFAULT_APP_MEM_MIB: u64 = 128;
/// Fixed guest cost on top of the apps' memory (MiB). Measured (project kernel 6.1, guest-init,
/// one app reading /proc/meminfo right after start; kvm_memory_limit_sizes_the_vm prints it):
/// the kernel keeps 17.7 MiB of a 172 MiB VM and 20.1 MiB of a 304 MiB VM for itself
/// (`RAM - MemTotal`: code, data, reserved areas, ~1.8% per-page structures), and 8.3 to 9.4 MiB
/// are in use once the app runs (`MemTotal - MemAvailable`: guest-init, slab, page cache of the
/// share). Fixed part: about 15 + 9.5 MiB; rounded up to 32 MiB for slack.
pub const GUEST_BASE_MIB: u64 = 32;
/// The kernel's per-page structures take about 1/55 of RAM (measured above; the 64-byte
/// `struct page` per 4 KiB page alone is 1/64); the VM gets `apps / PER_PAGE_OVERHEAD_DIVISOR`
/// more so the apps keep their share.
pub const PER_PAGE_OVERHEAD_DIVISOR: u64 = 32;
/// Memory counted for the apps of a mutable pod (`rkt app sandbox`), which starts with none and
/// gets its apps later (MiB): room for four apps without limits.
pub const MUTABLE_APPS_MIB: u64 = 4 * DEFAULT_APP_MEM_MIB;
/// Host memory the VMM may use beyond guest RAM, in the pod's host cgroup (MiB): its own
/// heap, stacks and buffers (~25-31 MiB RSS measured beyond guest RAM, docs/benchmarks.md),
/// KVM's per-VM and per-vCPU kernel memory, and the page cache of the pod's files, which the
/// kernel reclaims at the limit. See [`host_limits`].
pub const VMM_ALLOWANCE_MIB: u64 = 128;
/// Host CPU the VMM may use beyond what the apps are limited to, in the pod's host cgroup
/// (millicores): its device threads and exits. Kata Containers' suggested pod overhead is the
/// same 250m. See [`host_limits`].
pub const VMM_CPU_ALLOWANCE_MILLIS: u64 = 250;
/// Largest VM we create (MiB): 1 TiB, far beyond any host we run on; larger sums are clamped.
pub const MAX_MEM_MIB: u64 = 1 << 20;
/// Bytes per MiB.
const MIB: u64 = 1 << 20;

/// The size of a pod VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSize {
    /// Guest RAM (MiB).
    pub mem_mib: u64,
    /// vCPUs.
    pub cpus: u32,
}

/// Memory the apps of `plan` are entitled to (MiB, limits rounded up to whole MiB).
pub fn apps_mem_mib(plan: &Plan) -> u64 {
    plan.apps
        .iter()
        .map(|a| match a.memory_limit {
            Some(bytes) => bytes.div_ceil(MIB),
            None => DEFAULT_APP_MEM_MIB,
        })
        .fold(0u64, u64::saturating_add)
}

/// The sum of the apps' `resource/cpu` limits (millicores), when every app has one (and there is
/// an app).
pub fn apps_cpu_millis(plan: &Plan) -> Option<u64> {
    if plan.apps.is_empty() {
        return None;
    }
    plan.apps
        .iter()
        .map(|a| a.cpu_limit_millis)
        .try_fold(0u64, |acc, l| l.map(|l| acc.saturating_add(l)))
}

/// Environment knob (testing and overcommit): the pod's VM gets this many vCPUs (1 to
/// `boot::mptable::MAX_CPUS`) whatever the apps' limits and the host's CPUs; anything else is
/// ignored. CI's one-CPU harness gives pods two vCPUs with it.
pub const VCPUS_ENV: &str = "RKT_VMM_CPUS";

/// The vCPU count [`VCPUS_ENV`]'s value `env` asks for, if it is a valid one.
pub fn vcpus_override(env: Option<&str>) -> Option<u32> {
    env?.parse::<u32>()
        .ok()
        .filter(|&n| n >= 1 && n <= u32::from(crate::boot::mptable::MAX_CPUS))
}

/// Sizes the VM for `plan` on a host with `host_cpus` CPUs.
pub fn size_vm(plan: &Plan, host_cpus: u32) -> VmSize {
    let mut apps = apps_mem_mib(plan);
    if plan.mutable {
        apps = apps.max(MUTABLE_APPS_MIB);
    }
    let mem_mib = apps
        .saturating_add(GUEST_BASE_MIB)
        .saturating_add(apps.div_ceil(PER_PAGE_OVERHEAD_DIVISOR))
        .min(MAX_MEM_MIB);
    let host = host_cpus.max(1);
    let cpus = match apps_cpu_millis(plan) {
        Some(total) => {
            let want = total.div_ceil(MILLIS_PER_CPU).max(1);
            u32::try_from(want).unwrap_or(u32::MAX).min(host)
        }
        _ => host,
    };
    VmSize { mem_mib, cpus }
}

/// The limits of the pod's host cgroup, which the VMM and all its threads join. Memory: the
/// guest's RAM and [`VMM_ALLOWANCE_MIB`]. CPU: the apps' `resource/cpu` limits when every app
/// has one, else (and at most) the VM's vCPUs as whole CPUs, and [`VMM_CPU_ALLOWANCE_MILLIS`]
/// either way (Nomad's `--cpu=500` means 500 CPUs: the VM has the host's, so has the quota). So
/// an app's CPU limit holds on the host even when the guest kernel, which enforces it inside the
/// VM, does not (a root app out of its guest cgroup, a compromised guest), and a guest cannot
/// make its device threads take host CPU beyond that, nor the VMM grow without bound.
pub fn host_limits(plan: &Plan, size: VmSize) -> [app_confine::cgroup::Limit; 2] {
    use app_confine::cgroup::Limit;
    let vcpus = u64::from(size.cpus).saturating_mul(MILLIS_PER_CPU);
    let cpu = apps_cpu_millis(plan)
        .map_or(vcpus, |apps| apps.min(vcpus))
        .saturating_add(VMM_CPU_ALLOWANCE_MILLIS);
    [
        Limit::Memory(
            size.mem_mib
                .saturating_add(VMM_ALLOWANCE_MIB)
                .saturating_mul(MIB),
        ),
        Limit::Cpu(cpu),
    ]
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_vcpus_knob_takes_a_valid_count_only() {
        assert_eq!(vcpus_override(Some("2")), Some(2));
        assert_eq!(vcpus_override(Some("254")), Some(254));
        for bad in [
            None,
            Some(""),
            Some("0"),
            Some("255"),
            Some("-1"),
            Some("two"),
        ] {
            assert_eq!(vcpus_override(bad), None, "{bad:?}");
        }
    }

    use super::*;
    use pod_abi::plan::AppPlan;

    fn app(mem: Option<u64>, cpu: Option<u64>) -> AppPlan {
        AppPlan {
            name: "a".into(),
            image_id: "sha512-x".into(),
            exec: vec!["/x".into()],
            env: vec![],
            user: "0".into(),
            group: "0".into(),
            supplementary_gids: vec![],
            working_directory: "/".into(),
            pre_start: None,
            post_stop: None,
            read_only_rootfs: false,
            mounts: vec![],
            capabilities: vec![],
            capabilities_retained: false,
            no_new_privileges: false,
            insecure_paths: false,
            memory_limit: mem,
            cpu_limit_millis: cpu,
            cpu_shares: None,
            oom_score_adj: None,
            ignored_isolators: vec![],
            seccomp: None,
            stdio: Default::default(),
        }
    }

    fn plan(apps: Vec<AppPlan>) -> Plan {
        Plan::new("u".into(), "h".into(), apps)
    }

    #[test]
    fn host_limits_are_the_vm_and_the_vmm_allowance() {
        use app_confine::cgroup::Limit;
        let size = VmSize {
            mem_mib: 100,
            cpus: 2,
        };
        // Every app limited: their sum.
        let limited = plan(vec![app(None, Some(300)), app(None, Some(200))]);
        assert_eq!(
            host_limits(&limited, size),
            [
                Limit::Memory((100 + VMM_ALLOWANCE_MIB) << 20),
                Limit::Cpu(500 + VMM_CPU_ALLOWANCE_MILLIS)
            ]
        );
        // One app without a limit: the vCPUs.
        let open = plan(vec![app(None, Some(300)), app(None, None)]);
        assert_eq!(
            host_limits(&open, size)[1],
            Limit::Cpu(2000 + VMM_CPU_ALLOWANCE_MILLIS)
        );
        // Limits beyond the vCPUs (the host's CPUs cap them): the vCPUs.
        let huge = plan(vec![app(None, Some(500_000))]);
        assert_eq!(
            host_limits(&huge, size)[1],
            Limit::Cpu(2000 + VMM_CPU_ALLOWANCE_MILLIS)
        );
        // No app yet (a mutable pod): the vCPUs.
        assert_eq!(
            host_limits(&plan(vec![]), size)[1],
            Limit::Cpu(2000 + VMM_CPU_ALLOWANCE_MILLIS)
        );
    }

    #[test]
    fn memory_is_limits_plus_measured_overhead_without_a_floor() {
        // One app without a limit: the default, no 512 MiB floor.
        let s = size_vm(&plan(vec![app(None, None)]), 4);
        assert_eq!(s.mem_mib, 128 + GUEST_BASE_MIB + 4);
        // 256 MiB + 100 MiB (rounded up from bytes).
        let s = size_vm(
            &plan(vec![
                app(Some(256 << 20), None),
                app(Some(100 * MIB - 1), None),
            ]),
            4,
        );
        assert_eq!(s.mem_mib, 356 + GUEST_BASE_MIB + 12);
        // Absurd limits are clamped, never overflow.
        let s = size_vm(
            &plan(vec![app(Some(u64::MAX), None), app(Some(u64::MAX), None)]),
            1,
        );
        assert_eq!(s.mem_mib, MAX_MEM_MIB);
    }

    #[test]
    fn cpus_from_limits_or_host() {
        // All apps limited: ceil of the sum.
        let s = size_vm(&plan(vec![app(None, Some(500)), app(None, Some(700))]), 8);
        assert_eq!(s.cpus, 2);
        let s = size_vm(&plan(vec![app(None, Some(1))]), 8);
        assert_eq!(s.cpus, 1);
        // One app unlimited: the host's CPUs.
        let s = size_vm(&plan(vec![app(None, Some(500)), app(None, None)]), 8);
        assert_eq!(s.cpus, 8);
        // Capped at the host.
        let s = size_vm(&plan(vec![app(None, Some(64_000))]), 2);
        assert_eq!(s.cpus, 2);
        // A zero-CPU host report still gives one vCPU.
        let s = size_vm(&plan(vec![app(None, None)]), 0);
        assert_eq!(s.cpus, 1);
    }

    #[test]
    fn a_mutable_pod_has_room_for_apps_added_later() {
        let mut p = plan(Vec::new());
        p.mutable = true;
        let s = size_vm(&p, 2);
        assert_eq!(
            s.mem_mib,
            MUTABLE_APPS_MIB + GUEST_BASE_MIB + MUTABLE_APPS_MIB / PER_PAGE_OVERHEAD_DIVISOR
        );
        assert_eq!(s.cpus, 2);
    }
}
