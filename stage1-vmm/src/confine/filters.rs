//! The seccomp allowlists, as data: named groups of system calls ([`Group`]), one list of groups
//! per [`Profile`], compiled with `seccompiler` into one BPF program per profile. Anything not
//! listed traps (`SECCOMP_RET_TRAP`, reported by the SIGSYS handler, see [`super`]).
//!
//! The lists were taken from the real workloads (every test of `tests/tests/kvm_pod.rs` and
//! `kvm_security.rs` under `strace -f` inside ci/nested-kvm, per thread), then trimmed to what
//! the code paths need; docs/vmm.md has the table.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::sigsys::REPORT_FLAGS;
use super::ConfineError;

/// When a listed call is allowed.
#[derive(Debug, Clone, Copy)]
pub enum When {
    /// Always.
    Always,
    /// Only when argument `.0` (0-based, compared as 32 bits) is one of `.1`.
    ArgIn(u8, &'static [u64]),
    /// Only with argument `.0` equal to this process's id (`tgkill`, `kill`: no signals to other
    /// processes).
    OwnPid(u8),
    /// Only the violation report's open: `openat(<report dir fd>, _, REPORT_FLAGS, _)`.
    ReportOpen,
}

/// One allowed system call.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// Its name (for messages and docs).
    pub name: &'static str,
    /// Its number on this architecture.
    pub nr: i64,
    /// When it is allowed.
    pub when: When,
}

/// A named group of calls (one concern: memory, files, KVM...).
#[derive(Debug)]
pub struct Group {
    /// Short name, as in docs/vmm.md.
    pub name: &'static str,
    /// The calls.
    pub calls: &'static [Call],
}

impl Call {
    /// The call's name without the `SYS_` prefix.
    pub fn short_name(&self) -> &'static str {
        self.name.strip_prefix("SYS_").unwrap_or(self.name)
    }
}

/// `sys!(SYS_read)`: always allowed; `sys!(SYS_ioctl, When::ArgIn(..))`: with a condition.
macro_rules! sys {
    ($nr:ident) => {
        Call {
            name: stringify!($nr),
            nr: libc::$nr,
            when: When::Always,
        }
    };
    ($nr:ident, $when:expr) => {
        Call {
            name: stringify!($nr),
            nr: libc::$nr,
            when: $when,
        }
    };
}

// ioctl request numbers (linux/kvm.h, asm-generic/ioctls.h).
const KVM_RUN: u64 = 0xae80;
const TCGETS: u64 = 0x5401;
const TCSETS: u64 = 0x5402;
const TCSETSW: u64 = 0x5403;
const TCSETSF: u64 = 0x5404;
const TIOCGWINSZ: u64 = 0x5413;
// KVM state reads of a snapshot (linux/kvm.h: `_IOR`/`_IOWR(KVMIO, nr, type)`).
const KVMIO: u64 = 0xae;
const fn kvm_ior(nr: u64, size: usize) -> u64 {
    (2 << 30) | ((size as u64) << 16) | (KVMIO << 8) | nr
}
const fn kvm_iowr(nr: u64, size: usize) -> u64 {
    (3 << 30) | ((size as u64) << 16) | (KVMIO << 8) | nr
}
use std::mem::size_of;
const KVM_GET_REGS: u64 = kvm_ior(0x81, size_of::<kvm_bindings::kvm_regs>());
const KVM_GET_SREGS: u64 = kvm_ior(0x83, size_of::<kvm_bindings::kvm_sregs>());
const KVM_GET_MSRS: u64 = kvm_iowr(0x88, size_of::<kvm_bindings::kvm_msrs>());
const KVM_GET_FPU: u64 = kvm_ior(0x8c, size_of::<kvm_bindings::kvm_fpu>());
const KVM_GET_LAPIC: u64 = kvm_ior(0x8e, size_of::<kvm_bindings::kvm_lapic_state>());
const KVM_GET_CPUID2: u64 = kvm_iowr(0x91, size_of::<kvm_bindings::kvm_cpuid2>());
const KVM_GET_MP_STATE: u64 = kvm_ior(0x98, size_of::<kvm_bindings::kvm_mp_state>());
const KVM_GET_VCPU_EVENTS: u64 = kvm_ior(0x9f, size_of::<kvm_bindings::kvm_vcpu_events>());
const KVM_GET_DEBUGREGS: u64 = kvm_ior(0xa1, size_of::<kvm_bindings::kvm_debugregs>());
const KVM_GET_XSAVE: u64 = kvm_ior(0xa4, size_of::<kvm_bindings::kvm_xsave>());
const KVM_GET_XCRS: u64 = kvm_ior(0xa6, size_of::<kvm_bindings::kvm_xcrs>());
const KVM_GET_IRQCHIP: u64 = kvm_iowr(0x62, size_of::<kvm_bindings::kvm_irqchip>());
const KVM_GET_CLOCK: u64 = kvm_ior(0x7c, size_of::<kvm_bindings::kvm_clock_data>());
const KVM_GET_PIT2: u64 = kvm_ior(0x9f, size_of::<kvm_bindings::kvm_pit_state2>());
// fcntl commands.
const F_DUPFD_CLOEXEC: u64 = libc::F_DUPFD_CLOEXEC as u64;

/// Page protections a confined thread may ask for: none, read, read-write (never executable:
/// the VMM maps no code after setup).
const NOT_EXEC: &[u64] = &[
    libc::PROT_NONE as u64,
    libc::PROT_READ as u64,
    (libc::PROT_READ | libc::PROT_WRITE) as u64,
];

/// Every thread: the Rust runtime (allocation, locks, thread exit, panics that abort), the
/// clock, stderr logging and the violation report.
pub const RUNTIME: Group = Group {
    name: "runtime",
    calls: &[
        sys!(SYS_brk),
        sys!(SYS_mmap, When::ArgIn(2, NOT_EXEC)),
        sys!(SYS_munmap),
        sys!(SYS_mremap),
        sys!(SYS_mprotect, When::ArgIn(2, NOT_EXEC)),
        sys!(SYS_madvise),
        sys!(SYS_futex),
        sys!(SYS_sched_yield),
        sys!(SYS_getrandom),
        sys!(SYS_clock_gettime),
        sys!(SYS_clock_nanosleep),
        sys!(SYS_nanosleep),
        sys!(SYS_rt_sigreturn),
        sys!(SYS_rt_sigprocmask),
        sys!(SYS_sigaltstack),
        sys!(SYS_getpid),
        sys!(SYS_gettid),
        sys!(SYS_tgkill, When::OwnPid(0)),
        sys!(SYS_write),
        sys!(SYS_close),
        sys!(SYS_exit),
        sys!(SYS_exit_group),
        sys!(SYS_openat, When::ReportOpen),
    ],
};

/// A vCPU: `KVM_RUN`, the eventfds of interrupts and of the VMM's wake-up, and a virtio
/// activation (a driver's `DRIVER_OK` write runs on the vCPU: it duplicates the queue eventfds
/// and creates the activation's epoll and stop eventfd, then hands them to the worker thread).
/// `KVM_GET_REGS` and `KVM_GET_SREGS` read its own registers for the failure message of a guest
/// that triple-faulted (`vcpu::fault_registers`).
pub const VCPU: Group = Group {
    name: "kvm-run",
    calls: &[
        sys!(
            SYS_ioctl,
            When::ArgIn(1, &[KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS])
        ),
        sys!(SYS_fcntl, When::ArgIn(1, &[F_DUPFD_CLOEXEC])),
        sys!(SYS_eventfd2),
        sys!(SYS_epoll_create1),
        sys!(SYS_epoll_ctl),
    ],
};

/// The vCPU of a snapshot-making VM (`stage1-vmm boot --snapshot-out`, never a pod's): reads
/// its own state once the guest asks for the snapshot (`snapshot::kvm_state::save_vcpu`).
pub const VCPU_SAVE: Group = Group {
    name: "vcpu-save",
    calls: &[sys!(
        SYS_ioctl,
        When::ArgIn(
            1,
            &[
                KVM_GET_REGS,
                KVM_GET_SREGS,
                KVM_GET_MSRS,
                KVM_GET_FPU,
                KVM_GET_LAPIC,
                KVM_GET_CPUID2,
                KVM_GET_MP_STATE,
                KVM_GET_VCPU_EVENTS,
                KVM_GET_DEBUGREGS,
                KVM_GET_XSAVE,
                KVM_GET_XCRS,
            ]
        )
    )],
};

/// The main thread of a snapshot-making VM: reads the VM's state (irqchip, PIT, clock) and
/// writes the snapshot directory (`snapshot::write_dir`: `mkdir`, page writes at offsets, the
/// length set; opening, syncing and renaming are main-loop's).
pub const SNAPSHOT_WRITE: Group = Group {
    name: "snapshot-write",
    calls: &[
        sys!(
            SYS_ioctl,
            When::ArgIn(1, &[KVM_GET_IRQCHIP, KVM_GET_CLOCK, KVM_GET_PIT2])
        ),
        sys!(SYS_mkdir),
        sys!(SYS_mkdirat),
        sys!(SYS_pwrite64),
        sys!(SYS_ftruncate),
    ],
};

/// A device worker's event loop: epoll over the queue eventfds and its own fds.
pub const EVENT_LOOP: Group = Group {
    name: "event-loop",
    calls: &[
        sys!(SYS_epoll_wait),
        sys!(SYS_epoll_pwait),
        sys!(SYS_epoll_ctl),
        sys!(SYS_read),
    ],
};

/// The virtio-console worker: waits on a host end that epoll cannot watch (a regular file).
pub const CONSOLE_IO: Group = Group {
    name: "console-io",
    calls: &[sys!(SYS_poll), sys!(SYS_ppoll)],
};

/// The virtio-blk worker: positioned I/O on its backing file.
pub const BLOCK_IO: Group = Group {
    name: "block-io",
    calls: &[
        sys!(SYS_pread64),
        sys!(SYS_pwrite64),
        sys!(SYS_preadv),
        sys!(SYS_pwritev),
        sys!(SYS_lseek),
        sys!(SYS_fsync),
        sys!(SYS_fdatasync),
        sys!(SYS_fstat),
    ],
};

/// The virtio-net worker: one `read` per received frame and one `write` per transmitted frame
/// on its tap (`read` is in [`EVENT_LOOP`], `write` in [`RUNTIME`]); the vectored forms for
/// scatter-gather I/O. Nothing else: no sockets, no ioctls (the tap is configured before).
pub const NET_IO: Group = Group {
    name: "net-io",
    calls: &[sys!(SYS_readv), sys!(SYS_writev)],
};

/// The virtio-vsock worker: unix stream sockets only. It accepts host clients on the listener
/// the main thread bound (`accept4`), connects to host listeners for the guest (`socket` of
/// `AF_UNIX` only, `connect`, after an `lstat` of the name: `newfstatat`/`statx`), moves bytes
/// (`recvfrom`: std reads sockets with `recv`; `sendto` with `MSG_NOSIGNAL`), half-closes
/// (`shutdown`), and
/// ticks a timer for its handshake and close deadlines (`timerfd_*`).
pub const VSOCK_IO: Group = Group {
    name: "vsock-io",
    calls: &[
        sys!(SYS_accept4),
        sys!(SYS_socket, When::ArgIn(0, &[libc::AF_UNIX as u64])),
        sys!(SYS_connect),
        sys!(SYS_sendto),
        sys!(SYS_recvfrom),
        sys!(SYS_shutdown),
        sys!(SYS_newfstatat),
        sys!(SYS_statx),
        sys!(SYS_timerfd_create),
        sys!(SYS_timerfd_settime),
    ],
};

/// The virtio-fs worker: the passthrough file system (fuse-backend-rs `PassthroughFs`), its
/// per-request credential switch and `CAP_FSETID` juggling.
pub const PASSTHROUGH_FS: Group = Group {
    name: "passthrough-fs",
    calls: &[
        sys!(SYS_openat),
        sys!(SYS_newfstatat),
        sys!(SYS_fstat),
        sys!(SYS_statx),
        sys!(SYS_fstatfs),
        sys!(SYS_preadv),
        sys!(SYS_pwritev),
        sys!(SYS_lseek),
        sys!(SYS_getdents64),
        sys!(SYS_mkdirat),
        sys!(SYS_mknodat),
        sys!(SYS_unlinkat),
        sys!(SYS_renameat2),
        sys!(SYS_linkat),
        sys!(SYS_symlinkat),
        sys!(SYS_readlinkat),
        sys!(SYS_fchmod),
        sys!(SYS_fchmodat),
        sys!(SYS_fchownat),
        sys!(SYS_ftruncate),
        sys!(SYS_fallocate),
        sys!(SYS_fsync),
        sys!(SYS_fdatasync),
        sys!(SYS_utimensat),
        sys!(SYS_dup),
        sys!(SYS_fcntl),
        sys!(SYS_setresuid),
        sys!(SYS_setresgid),
        sys!(SYS_capget),
        sys!(SYS_capset),
        sys!(SYS_umask),
        sys!(SYS_getuid),
        sys!(SYS_getgid),
    ],
};

/// A console writer: drains a serial port's queue into its sink (stderr, a pipe) with `write`
/// (in [`RUNTIME`]) and nothing else.
pub const WRITER: Group = Group {
    name: "writer",
    calls: &[],
};

/// Restoring the terminal (an interactive pod's raw mode) on the way out.
pub const TERMINAL: Group = Group {
    name: "terminal",
    calls: &[sys!(
        SYS_ioctl,
        When::ArgIn(1, &[TCGETS, TCSETS, TCSETSW, TCSETSF, TIOCGWINSZ])
    )],
};

/// The signal thread: waits for the stop signals, writes `stop` lines on COM2's pipe.
pub const SIGNAL_WAIT: Group = Group {
    name: "signal-wait",
    calls: &[sys!(SYS_rt_sigtimedwait)],
};

/// The stdin thread: reads the terminal, writes the console's input pipe.
pub const STDIN_COPY: Group = Group {
    name: "stdin-copy",
    calls: &[sys!(SYS_read)],
};

/// The main thread once the VM runs: the event loop (poll, eventfds, console input), the vCPU
/// kicks and joins, the teardown, and the pod's end (reading the statuses beneath the pod
/// directory, writing `failure`).
pub const MAIN_LOOP: Group = Group {
    name: "main-loop",
    calls: &[
        sys!(SYS_poll),
        sys!(SYS_ppoll),
        sys!(SYS_read),
        sys!(SYS_openat),
        sys!(SYS_openat2),
        sys!(SYS_newfstatat),
        sys!(SYS_fstat),
        sys!(SYS_statx),
        sys!(SYS_lseek),
        sys!(SYS_fsync),
        sys!(SYS_rename),
        sys!(SYS_renameat),
        sys!(SYS_renameat2),
        sys!(SYS_unlink),
        sys!(SYS_unlinkat),
        sys!(SYS_fcntl),
    ],
};

/// The profiles: one per thread kind (device workers by device type) and the main thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Profile {
    /// `ThreadKind::Vcpu`.
    Vcpu,
    /// `ThreadKind::DeviceWorker(TYPE_FS)`.
    FsWorker,
    /// `ThreadKind::DeviceWorker(TYPE_CONSOLE)` (and any other device type).
    ConsoleWorker,
    /// `ThreadKind::DeviceWorker(TYPE_BLOCK)`.
    BlockWorker,
    /// `ThreadKind::DeviceWorker(TYPE_NET)`.
    NetWorker,
    /// `ThreadKind::DeviceWorker(TYPE_VSOCK)`.
    VsockWorker,
    /// `ThreadKind::DeviceWorker(TYPE_BALLOON)`.
    BalloonWorker,
    /// `ThreadKind::DeviceWorker(TYPE_RNG)`.
    RngWorker,
    /// `ThreadKind::Console`.
    Console,
    /// `ThreadKind::Signals`.
    Signals,
    /// `ThreadKind::Stdin`.
    Stdin,
    /// The main thread after setup.
    Main,
    /// `ThreadKind::SnapshotVcpu`.
    SnapshotVcpu,
    /// The main thread of a snapshot-making VM after setup.
    SnapshotMain,
    /// `ThreadKind::Sampler`.
    Sampler,
}

impl Profile {
    /// Every profile, in `repr` order.
    pub const ALL: [Profile; 15] = [
        Profile::Vcpu,
        Profile::FsWorker,
        Profile::ConsoleWorker,
        Profile::BlockWorker,
        Profile::NetWorker,
        Profile::VsockWorker,
        Profile::BalloonWorker,
        Profile::RngWorker,
        Profile::Console,
        Profile::Signals,
        Profile::Stdin,
        Profile::Main,
        Profile::SnapshotVcpu,
        Profile::SnapshotMain,
        Profile::Sampler,
    ];

    /// The name in messages (`seccomp: thread <name> made ...`).
    pub fn name(self) -> &'static str {
        match self {
            Profile::Vcpu => "vcpu",
            Profile::FsWorker => "virtio-fs worker",
            Profile::ConsoleWorker => "virtio-console worker",
            Profile::BlockWorker => "virtio-blk worker",
            Profile::NetWorker => "virtio-net worker",
            Profile::VsockWorker => "virtio-vsock worker",
            Profile::BalloonWorker => "virtio-balloon worker",
            Profile::RngWorker => "virtio-rng worker",
            Profile::Console => "console writer",
            Profile::Signals => "signals",
            Profile::Stdin => "stdin",
            Profile::Main => "main",
            Profile::SnapshotVcpu => "snapshot vcpu",
            Profile::SnapshotMain => "snapshot main",
            Profile::Sampler => "sampler",
        }
    }

    /// The allowed groups.
    pub fn groups(self) -> &'static [&'static Group] {
        match self {
            Profile::Vcpu => &[&RUNTIME, &VCPU],
            Profile::FsWorker => &[&RUNTIME, &EVENT_LOOP, &PASSTHROUGH_FS],
            Profile::ConsoleWorker => &[&RUNTIME, &EVENT_LOOP, &CONSOLE_IO],
            Profile::BlockWorker => &[&RUNTIME, &EVENT_LOOP, &BLOCK_IO],
            Profile::NetWorker => &[&RUNTIME, &EVENT_LOOP, &NET_IO],
            Profile::VsockWorker => &[&RUNTIME, &EVENT_LOOP, &VSOCK_IO],
            // Its `madvise` of reported guest pages is the runtime group's (the allocator's).
            Profile::BalloonWorker => &[&RUNTIME, &EVENT_LOOP],
            // Its `getrandom` is the runtime group's (std's hash seeds).
            Profile::RngWorker => &[&RUNTIME, &EVENT_LOOP],
            Profile::Console => &[&RUNTIME, &WRITER],
            Profile::Signals => &[&RUNTIME, &SIGNAL_WAIT, &TERMINAL],
            Profile::Stdin => &[&RUNTIME, &STDIN_COPY, &TERMINAL],
            Profile::Main => &[&RUNTIME, &MAIN_LOOP, &TERMINAL],
            Profile::SnapshotVcpu => &[&RUNTIME, &VCPU, &VCPU_SAVE],
            Profile::SnapshotMain => &[&RUNTIME, &MAIN_LOOP, &TERMINAL, &SNAPSHOT_WRITE],
            // Sleeps and signals this process's vCPU threads (tgkill of its own pid).
            Profile::Sampler => &[&RUNTIME],
        }
    }

    /// The capabilities a thread of this profile keeps.
    pub fn caps(self) -> &'static [caps::Capability] {
        match self {
            Profile::FsWorker => super::caps::FS_WORKER,
            _ => super::caps::NONE,
        }
    }
}

/// The name of system call `nr` if any group lists it (async-signal-safe: no allocation).
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    ALL_GROUPS
        .iter()
        .flat_map(|g| g.calls.iter())
        .chain(EXTRA_NAMES.iter())
        .find(|c| c.nr == nr)
        .map(Call::short_name)
}

const ALL_GROUPS: [&Group; 15] = [
    &RUNTIME,
    &VCPU,
    &EVENT_LOOP,
    &CONSOLE_IO,
    &BLOCK_IO,
    &NET_IO,
    &VSOCK_IO,
    &PASSTHROUGH_FS,
    &WRITER,
    &TERMINAL,
    &SIGNAL_WAIT,
    &STDIN_COPY,
    &MAIN_LOOP,
    &VCPU_SAVE,
    &SNAPSHOT_WRITE,
];

/// Calls no profile allows, named only for the violation message.
const EXTRA_NAMES: &[Call] = &[
    sys!(SYS_socket),
    sys!(SYS_connect),
    sys!(SYS_bind),
    sys!(SYS_execve),
    sys!(SYS_execveat),
    sys!(SYS_clone),
    sys!(SYS_clone3),
    sys!(SYS_fork),
    sys!(SYS_vfork),
    sys!(SYS_ptrace),
    sys!(SYS_kill),
    sys!(SYS_mount),
    sys!(SYS_umount2),
    sys!(SYS_pivot_root),
    sys!(SYS_chroot),
    sys!(SYS_unshare),
    sys!(SYS_setns),
    sys!(SYS_open),
    sys!(SYS_getdents64),
    sys!(SYS_chdir),
    sys!(SYS_fchdir),
    sys!(SYS_setuid),
    sys!(SYS_setgid),
    sys!(SYS_prctl),
    sys!(SYS_seccomp),
    sys!(SYS_bpf),
    sys!(SYS_process_vm_readv),
    sys!(SYS_process_vm_writev),
    sys!(SYS_memfd_create),
    sys!(SYS_mincore),
];

/// One compiled filter per profile.
#[derive(Debug, Default)]
pub struct Programs {
    by_profile: BTreeMap<Profile, BpfProgram>,
}

impl Programs {
    /// The filter of `p`.
    pub fn get(&self, p: Profile) -> Option<&BpfProgram> {
        self.by_profile.get(&p)
    }
}

fn cond(arg: u8, value: u64) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
}

/// The rules of one call (`None`: always allowed).
fn rules_of(
    when: When,
    report_fd: i32,
    pid: u32,
) -> Result<Option<Vec<SeccompRule>>, seccompiler::BackendError> {
    let rule = |conds| SeccompRule::new(conds);
    Ok(match when {
        When::Always => None,
        When::ArgIn(arg, values) => Some(
            values
                .iter()
                .map(|v| rule(vec![cond(arg, *v)?]))
                .collect::<Result<_, _>>()?,
        ),
        When::OwnPid(arg) => Some(vec![rule(vec![cond(arg, u64::from(pid))?])?]),
        When::ReportOpen => Some(vec![rule(vec![
            cond(0, report_fd as u32 as u64)?,
            cond(2, REPORT_FLAGS as u32 as u64)?,
        ])?]),
    })
}

/// The BPF program of `profile`: its groups merged (a call allowed always in one group is
/// allowed always), anything else traps.
pub fn compile(profile: Profile, report_fd: i32, pid: u32) -> Result<BpfProgram, ConfineError> {
    let fail = |e: String| ConfineError::Seccomp(profile.name(), e);
    // nr -> None (always) or the union of its rules.
    let mut merged: BTreeMap<i64, Option<Vec<SeccompRule>>> = BTreeMap::new();
    for g in profile.groups() {
        for c in g.calls {
            let rules = rules_of(c.when, report_fd, pid).map_err(|e| fail(e.to_string()))?;
            match (merged.get_mut(&c.nr), rules) {
                (Some(slot), None) => *slot = None,
                (Some(Some(have)), Some(more)) => have.extend(more),
                (Some(None), Some(_)) => {}
                (None, r) => {
                    merged.insert(c.nr, r);
                }
            }
        }
    }
    let rules: BTreeMap<i64, Vec<SeccompRule>> = merged
        .into_iter()
        .map(|(nr, r)| (nr, r.unwrap_or_default()))
        .collect();
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| fail(e.to_string()))?;
    let filter = SeccompFilter::new(rules, SeccompAction::Trap, SeccompAction::Allow, arch)
        .map_err(|e| fail(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| fail(e.to_string()))
}

/// Every profile's program.
pub fn compile_all(report_fd: i32, pid: u32) -> Result<Programs, ConfineError> {
    let mut by_profile = BTreeMap::new();
    for p in Profile::ALL {
        by_profile.insert(p, compile(p, report_fd, pid)?);
    }
    Ok(Programs { by_profile })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_compiles_and_names_are_known() {
        let progs = compile_all(3, 1).unwrap_or_else(|e| panic!("{e}"));
        for p in Profile::ALL {
            assert!(progs.get(p).is_some_and(|b| !b.is_empty()), "{p:?}");
        }
        assert_eq!(syscall_name(libc::SYS_socket), Some("socket"));
        assert_eq!(syscall_name(libc::SYS_ioctl), Some("ioctl"));
    }

    #[test]
    fn snapshot_ioctl_numbers_are_linux_s() {
        // The values of linux/kvm.h on x86_64.
        assert_eq!(KVM_GET_REGS, 0x8090_ae81);
        assert_eq!(KVM_GET_SREGS, 0x8138_ae83);
        assert_eq!(KVM_GET_MSRS, 0xc008_ae88);
        assert_eq!(KVM_GET_FPU, 0x81a0_ae8c);
        assert_eq!(KVM_GET_LAPIC, 0x8400_ae8e);
        assert_eq!(KVM_GET_CPUID2, 0xc008_ae91);
        assert_eq!(KVM_GET_MP_STATE, 0x8004_ae98);
        assert_eq!(KVM_GET_VCPU_EVENTS, 0x8040_ae9f);
        assert_eq!(KVM_GET_DEBUGREGS, 0x8080_aea1);
        assert_eq!(KVM_GET_XSAVE, 0x9000_aea4);
        assert_eq!(KVM_GET_XCRS, 0x8188_aea6);
        assert_eq!(KVM_GET_IRQCHIP, 0xc208_ae62);
        assert_eq!(KVM_GET_CLOCK, 0x8030_ae7c);
        assert_eq!(KVM_GET_PIT2, 0x8070_ae9f);
    }

    #[test]
    fn only_the_fs_worker_touches_files_by_name_and_keeps_capabilities() {
        let allows = |p: Profile, nr: i64| {
            p.groups()
                .iter()
                .flat_map(|g| g.calls.iter())
                .any(|c| c.nr == nr && matches!(c.when, When::Always))
        };
        for p in Profile::ALL {
            let fs = matches!(p, Profile::FsWorker | Profile::Main | Profile::SnapshotMain);
            assert_eq!(allows(p, libc::SYS_openat), fs, "{p:?} openat");
            assert_eq!(allows(p, libc::SYS_unlinkat), fs, "{p:?} unlinkat");
            assert!(!allows(p, libc::SYS_execve), "{p:?} execve");
            assert!(!allows(p, libc::SYS_socket), "{p:?} socket");
            assert_eq!(
                allows(p, libc::SYS_connect),
                p == Profile::VsockWorker,
                "{p:?} connect"
            );
            assert!(!allows(p, libc::SYS_clone3), "{p:?} clone3");
            assert_eq!(p.caps().is_empty(), p != Profile::FsWorker, "{p:?} caps");
        }
    }
}
