//! An app's system call filter ([`pod_abi::plan::SeccompPlan`]) as a classic BPF program for
//! `seccomp(2)`, built before the fork ([`Filter::new`]) and installed as the last step before
//! `execve` ([`Filter::install`]).
//!
//! The program checks the architecture (anything but x86_64 kills the process: i386 calls
//! through `int 0x80` would otherwise reach the kernel under other numbers), denies the x32 ABI
//! (numbers with bit 30 set) whole, then searches the sorted list of calls for the number:
//!
//! ```text
//! ld  arch;  jeq AUDIT_ARCH_X86_64 ? +1 : 0;  ret KILL_PROCESS
//! ld  nr;    jge X32_SYSCALL_BIT ? 0 : +1;    ret DENY
//! jge pivot ? 0 : +1;  ja RIGHT        (a binary search over the sorted calls: [`search`])
//! LEFT:  jeq nr_1 ? 0 : +1;  ret MATCH;  ...;  ret MISMATCH
//! RIGHT: ...
//! ```
//!
//! With [`SeccompPlan::no_new_namespaces`] (rkt's default), `clone3` answers `ENOSYS` and a
//! `clone` with a namespace flag is denied before the search; with
//! [`SeccompPlan::fixed_projects`] (a pod with a disk limit), `file_setattr` and an `ioctl`
//! whose request is `FS_IOC_FSSETXATTR` are.
//!
//! For a retain-set MATCH allows and MISMATCH denies; for a remove-set the reverse. DENY is
//! `SECCOMP_RET_ERRNO | errno`, or `SECCOMP_RET_KILL_PROCESS` (death by `SIGSYS`) without an
//! errno. The filter looks at the number only, so the kernel's per-number cache (Linux 5.11+)
//! lets every allowed call skip the program.

use pod_abi::plan::SeccompPlan;

use crate::StepError;

/// `AUDIT_ARCH_X86_64`: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// Bit 30 of the number marks the x32 ABI.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// `offsetof(struct seccomp_data, nr)`.
const DATA_NR: u32 = 0;
/// `offsetof(struct seccomp_data, arch)`.
const DATA_ARCH: u32 = 4;
/// `offsetof(struct seccomp_data, args[0])`: its low 32 bits (little endian).
const DATA_ARG0_LOW: u32 = 16;
/// `offsetof(struct seccomp_data, args[1])`: its low 32 bits (an `ioctl`'s request).
const DATA_ARG1_LOW: u32 = 24;
/// The most instructions a classic BPF program may have (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;

const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
/// `SECCOMP_RET_DATA`: the errno's bits of a `RET_ERRNO` action.
const RET_DATA: u32 = 0x0000_ffff;

/// Calls every filter allows (a retain-set adds them, a remove-set drops them).
const ALWAYS_RETAINED: [u32; 4] = SeccompPlan::ALWAYS_ALLOWED;

/// A filter ready to install: the program is built when the launch is planned, so the forked
/// child only makes the two `prctl` calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    program: Vec<libc::sock_filter>,
    /// Whether the filter kills a process making one of [`REPORT_CALLS`].
    kills_reports: bool,
}

/// The calls a launcher makes to report a failed `execve` after the filter is installed: the
/// report's `write`, and the allocator's (`brk`, `mmap`, `munmap`, `mremap`, `madvise`).
pub const REPORT_CALLS: [u32; 6] = [
    libc::SYS_write as u32,
    libc::SYS_brk as u32,
    libc::SYS_mmap as u32,
    libc::SYS_munmap as u32,
    libc::SYS_mremap as u32,
    libc::SYS_madvise as u32,
];

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Most calls a leaf of the search tree compares one by one.
const LEAF: usize = 4;

/// Appends a binary search of the sorted, distinct `calls` for the number in the accumulator,
/// ending in `ret on_match` or `ret on_mismatch`: a node is `jge pivot ? (ja right) : left`,
/// whose 32-bit `ja` reaches any subtree; a leaf compares at most [`LEAF`] numbers. A call takes
/// about 2 log2(n / LEAF) + 2 LEAF instructions, not 2 n: the kernel runs the whole program
/// for each number when it builds its per-number cache at install time.
fn search(calls: &[u32], on_match: u32, on_mismatch: u32, out: &mut Vec<libc::sock_filter>) {
    let ret = libc::BPF_RET | libc::BPF_K;
    if calls.len() <= LEAF {
        for &nr in calls {
            out.push(jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, nr, 0, 1));
            out.push(stmt(ret, on_match));
        }
        out.push(stmt(ret, on_mismatch));
        return;
    }
    let mid = calls.len() / 2;
    out.push(jump(
        libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
        calls[mid],
        0,
        1,
    ));
    let ja = out.len();
    out.push(stmt(libc::BPF_JMP | libc::BPF_JA, 0));
    search(&calls[..mid], on_match, on_mismatch, out);
    out[ja].k = (out.len() - ja - 1) as u32;
    search(&calls[mid..], on_match, on_mismatch, out);
}

impl Filter {
    /// The program for `plan`; an error when it would exceed the kernel's instruction limit.
    pub fn new(plan: &SeccompPlan) -> Result<Self, String> {
        let ld = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
        let ret = libc::BPF_RET | libc::BPF_K;
        let jeq = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
        let jge = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
        let deny = match plan.errno {
            Some(e) => RET_ERRNO | (u32::from(e) & RET_DATA),
            None => RET_KILL_PROCESS,
        };
        let (on_match, on_mismatch) = if plan.retain {
            (RET_ALLOW, deny)
        } else {
            (deny, RET_ALLOW)
        };
        let mut calls = plan.syscalls.clone();
        if plan.retain {
            calls.extend(ALWAYS_RETAINED);
        } else {
            calls.retain(|nr| !ALWAYS_RETAINED.contains(nr));
        }
        calls.sort_unstable();
        calls.dedup();
        let mut program = vec![
            stmt(ld, DATA_ARCH),
            jump(jeq, AUDIT_ARCH_X86_64, 1, 0),
            stmt(ret, RET_KILL_PROCESS),
            stmt(ld, DATA_NR),
            jump(jge, X32_SYSCALL_BIT, 0, 1),
            stmt(ret, deny),
        ];
        if plan.fixed_projects {
            program.extend([
                jump(jeq, SeccompPlan::FILE_SETATTR, 0, 1),
                stmt(ret, deny),
                jump(jeq, libc::SYS_ioctl as u32, 0, 3),
                stmt(ld, DATA_ARG1_LOW),
                jump(jeq, SeccompPlan::FS_IOC_FSSETXATTR, 0, 1),
                stmt(ret, deny),
                stmt(ld, DATA_NR),
            ]);
        }
        if plan.no_new_namespaces {
            program.extend([
                jump(jeq, libc::SYS_clone3 as u32, 0, 1),
                stmt(ret, RET_ERRNO | libc::ENOSYS as u32),
                jump(jeq, libc::SYS_clone as u32, 0, 3),
                stmt(ld, DATA_ARG0_LOW),
                jump(
                    libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
                    SeccompPlan::NAMESPACE_FLAGS,
                    0,
                    1,
                ),
                stmt(ret, deny),
                stmt(ld, DATA_NR),
            ]);
        }
        search(&calls, on_match, on_mismatch, &mut program);
        if program.len() > MAX_INSNS {
            return Err(format!(
                "seccomp filter of {} system calls is too long ({} instructions, at most {MAX_INSNS})",
                plan.syscalls.len(),
                program.len()
            ));
        }
        Ok(Filter {
            program,
            kills_reports: REPORT_CALLS.iter().any(|nr| plan.kills(*nr)),
        })
    }

    /// Whether the filter kills a process that reports a failed `execve` ([`REPORT_CALLS`]).
    pub fn kills_reports(&self) -> bool {
        self.kills_reports
    }

    /// The program's instructions.
    pub fn program(&self) -> &[libc::sock_filter] {
        &self.program
    }

    /// Installs the filter on the calling thread (a single-threaded child about to `execve`).
    /// Without `CAP_SYS_ADMIN` in the effective set the kernel requires `no_new_privs`, so it is
    /// set first, as systemd's `SystemCallFilter=` implies it.
    pub fn install(&self) -> Result<(), StepError> {
        if !linux_caps::number("CAP_SYS_ADMIN").is_some_and(crate::caps::effective_has) {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(StepError::new("no_new_privs", nix::errno::Errno::last()));
            }
        }
        let prog = libc::sock_fprog {
            len: self.program.len() as u16,
            filter: self.program.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at `self.program`, which outlives the call; the kernel copies
        // the program.
        let r = unsafe {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
                0,
                0,
            )
        };
        if r != 0 {
            return Err(StepError::new(
                "install the seccomp filter",
                nix::errno::Errno::last(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the classic BPF program the way the kernel would for `(arch, nr)`.
    fn run(f: &Filter, arch: u32, nr: u32) -> u32 {
        run_args(f, arch, nr, 0)
    }

    /// [`run`] with the low 32 bits of the first argument.
    fn run_args(f: &Filter, arch: u32, nr: u32, arg0: u32) -> u32 {
        run_with(f, arch, nr, [arg0, 0])
    }

    /// [`run`] with the low 32 bits of the first two arguments.
    fn run_with(f: &Filter, arch: u32, nr: u32, args: [u32; 2]) -> u32 {
        let [arg0, arg1] = args;
        let p = f.program();
        let mut pc = 0usize;
        let mut acc = 0u32;
        loop {
            let i = p[pc];
            let code = u32::from(i.code);
            if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
                acc = match i.k {
                    DATA_ARCH => arch,
                    DATA_ARG0_LOW => arg0,
                    DATA_ARG1_LOW => arg1,
                    _ => nr,
                };
                pc += 1;
            } else if code == libc::BPF_RET | libc::BPF_K {
                return i.k;
            } else if code == libc::BPF_JMP | libc::BPF_JA {
                pc += 1 + i.k as usize;
            } else {
                let taken = match code & 0xf0 {
                    libc::BPF_JEQ => acc == i.k,
                    libc::BPF_JSET => acc & i.k != 0,
                    _ => acc >= i.k,
                };
                pc += 1 + usize::from(if taken { i.jt } else { i.jf });
            }
        }
    }

    fn plan(retain: bool, errno: Option<u16>, calls: &[u32]) -> SeccompPlan {
        SeccompPlan {
            retain,
            errno,
            syscalls: calls.to_vec(),
            no_new_namespaces: false,
            fixed_projects: false,
        }
    }

    #[test]
    fn no_new_namespaces_denies_clone_into_one_and_defers_clone3() {
        let mut p = plan(false, Some(1), &[272]);
        p.no_new_namespaces = true;
        let f = Filter::new(&p).unwrap();
        let clone = libc::SYS_clone as u32;
        let thread = (libc::CLONE_VM | libc::CLONE_FS | libc::CLONE_THREAD) as u32;
        assert_eq!(run_args(&f, AUDIT_ARCH_X86_64, clone, thread), RET_ALLOW);
        assert_eq!(
            run_args(&f, AUDIT_ARCH_X86_64, clone, libc::SIGCHLD as u32),
            RET_ALLOW
        );
        for ns in [libc::CLONE_NEWUSER, libc::CLONE_NEWNS, libc::CLONE_NEWNET] {
            let flags = ns as u32 | libc::SIGCHLD as u32;
            assert_eq!(run_args(&f, AUDIT_ARCH_X86_64, clone, flags), RET_ERRNO | 1);
        }
        let clone3 = libc::SYS_clone3 as u32;
        assert_eq!(
            run(&f, AUDIT_ARCH_X86_64, clone3),
            RET_ERRNO | libc::ENOSYS as u32
        );
        // The list still decides the rest.
        assert_eq!(run(&f, AUDIT_ARCH_X86_64, 272), RET_ERRNO | 1);
        assert_eq!(run(&f, AUDIT_ARCH_X86_64, 0), RET_ALLOW);
    }

    /// `SeccompPlan::kills`, which launchers consult, says what the program does: for every
    /// number, in retain and remove sets, with and without an errno.
    #[test]
    fn the_plans_kills_agrees_with_the_program() {
        for retain in [true, false] {
            for errno in [None, Some(1)] {
                let p = plan(retain, errno, &[0, 1, 59, 165, 231, 300]);
                let f = Filter::new(&p).unwrap();
                for nr in 0..600 {
                    let killed = run(&f, AUDIT_ARCH_X86_64, nr) == RET_KILL_PROCESS;
                    assert_eq!(p.kills(nr), killed, "{nr} retain={retain} errno={errno:?}");
                }
            }
        }
    }

    #[test]
    fn fixed_projects_deny_setting_a_files_project_and_nothing_else() {
        let eperm = RET_ERRNO | libc::EPERM as u32;
        let ioctl = libc::SYS_ioctl as u32;
        for fixed in [false, true] {
            let mut p = plan(false, Some(libc::EPERM as u16), &[libc::SYS_mount as u32]);
            p.fixed_projects = fixed;
            let f = Filter::new(&p).unwrap();
            let denied = if fixed { eperm } else { RET_ALLOW };
            let set = SeccompPlan::FS_IOC_FSSETXATTR;
            assert_eq!(run_with(&f, AUDIT_ARCH_X86_64, ioctl, [3, set]), denied);
            assert_eq!(
                run_with(&f, AUDIT_ARCH_X86_64, SeccompPlan::FILE_SETATTR, [3, 0]),
                denied
            );
            // FS_IOC_FSGETXATTR, TCGETS, FIONREAD; other calls; the list still applies.
            for req in [0x801c_581f, libc::TCGETS as u32, libc::FIONREAD as u32] {
                assert_eq!(run_with(&f, AUDIT_ARCH_X86_64, ioctl, [3, req]), RET_ALLOW);
            }
            assert_eq!(run(&f, AUDIT_ARCH_X86_64, libc::SYS_read as u32), RET_ALLOW);
            assert_eq!(run(&f, AUDIT_ARCH_X86_64, libc::SYS_mount as u32), eperm);
        }
    }

    #[test]
    fn remove_set_denies_the_listed_calls_only() {
        let f = Filter::new(&plan(false, Some(1), &[169, 165])).unwrap();
        assert_eq!(run(&f, AUDIT_ARCH_X86_64, 169), RET_ERRNO | 1);
        assert_eq!(run(&f, AUDIT_ARCH_X86_64, 165), RET_ERRNO | 1);
        assert_eq!(run(&f, AUDIT_ARCH_X86_64, 0), RET_ALLOW);
        assert_eq!(run(&f, AUDIT_ARCH_X86_64, 59), RET_ALLOW);
    }

    #[test]
    fn retain_set_allows_the_listed_calls_and_the_start_and_end() {
        let f = Filter::new(&plan(true, None, &[0, 1])).unwrap();
        for nr in [0, 1].into_iter().chain(ALWAYS_RETAINED) {
            assert_eq!(run(&f, AUDIT_ARCH_X86_64, nr), RET_ALLOW, "{nr}");
        }
        assert_eq!(run(&f, AUDIT_ARCH_X86_64, 2), RET_KILL_PROCESS);
    }

    #[test]
    fn a_remove_set_cannot_deny_the_start_and_end() {
        let f = Filter::new(&plan(false, None, &ALWAYS_RETAINED)).unwrap();
        for nr in ALWAYS_RETAINED {
            assert_eq!(run(&f, AUDIT_ARCH_X86_64, nr), RET_ALLOW, "{nr}");
        }
    }

    #[test]
    fn other_abis_never_pass() {
        // A remove-set must not be bypassed with x32 numbers or i386 calls.
        let f = Filter::new(&plan(false, Some(1), &[169])).unwrap();
        assert_eq!(
            run(&f, AUDIT_ARCH_X86_64, 169 | X32_SYSCALL_BIT),
            RET_ERRNO | 1
        );
        assert_eq!(run(&f, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT), RET_ERRNO | 1);
        let i386 = 3 | 0x4000_0000;
        assert_eq!(run(&f, i386, 0), RET_KILL_PROCESS);
    }

    /// Every number of both ABIs, against the plain meaning of the plan, for lists of every
    /// size up to a few hundred (the search tree's shapes) and the real default-sized ones.
    #[test]
    fn the_search_tree_decides_every_number_as_the_list_says() {
        let mut seed = 0x2545_f491_u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed % 460
        };
        for n in (0..40).chain([61, 100, 255, 300, 361]) {
            let mut calls: Vec<u32> = (0..n).map(|_| next()).collect();
            calls.sort_unstable();
            calls.dedup();
            for retain in [false, true] {
                let f = Filter::new(&plan(retain, Some(1), &calls)).unwrap();
                for nr in 0..600 {
                    // The start and end calls are allowed whatever the list says.
                    let allowed = ALWAYS_RETAINED.contains(&nr) || calls.contains(&nr) == retain;
                    let want = if allowed { RET_ALLOW } else { RET_ERRNO | 1 };
                    assert_eq!(
                        run(&f, AUDIT_ARCH_X86_64, nr),
                        want,
                        "n={n} retain={retain} nr={nr}"
                    );
                    assert_eq!(
                        run(&f, AUDIT_ARCH_X86_64, nr | X32_SYSCALL_BIT),
                        RET_ERRNO | 1
                    );
                }
            }
        }
    }

    #[test]
    fn a_filter_too_long_for_the_kernel_is_refused() {
        let calls: Vec<u32> = (0..3000).collect();
        let e = Filter::new(&plan(false, None, &calls)).unwrap_err();
        assert!(e.contains("too long"), "{e}");
    }

    /// The real kernel: a forked child installs a remove-set of `getppid` with errno 77 and
    /// reports what the call returned.
    #[test]
    fn installed_filter_makes_the_kernel_deny_the_call() {
        let f = Filter::new(&plan(false, Some(77), &[libc::SYS_getppid as u32])).unwrap();
        // SAFETY: the child only makes system calls and exits with `_exit`.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = match f.install() {
                    // SAFETY: getppid through syscall(2), no arguments.
                    Ok(()) => match unsafe { libc::syscall(libc::SYS_getppid) } {
                        -1 => nix::errno::Errno::last_raw(),
                        _ => 1,
                    },
                    Err(_) => 2,
                };
                // SAFETY: _exit in the forked child.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let st = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 77));
            }
        }
    }
}
