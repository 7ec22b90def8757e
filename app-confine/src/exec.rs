//! The last steps before an app's code runs: no inherited descriptor beyond stdio
//! ([`close_inherited_fds`]) and `execve` with the app's exact environment and a PATH search
//! ([`Command::exec`]), failing with the shell's exit codes.

use std::ffi::CString;
use std::os::fd::RawFd;

use pod_abi::exit::{APP_NOT_EXECUTABLE, APP_NOT_FOUND};

use crate::identity::Identity;
use crate::seccomp::Filter;
use crate::StepError;

/// Highest fd closed by the fallback loop when `close_range(2)` is unavailable.
const MAX_STRAY_FD: i32 = 1024;

/// Makes the calling process not dumpable until its `execve` (`PR_SET_DUMPABLE` 0; `execve`
/// makes the new program dumpable again, as for any program run under unchanged IDs). Called
/// first in every child that becomes app code: from the moment it takes the app's identity
/// until its `execve`, the child has the app's user and capabilities but still its launcher's
/// memory (guest-init's, or the environment of the host's `rkt enter`) and no system call filter
/// yet, and an app of the pod with the same user and capabilities could otherwise read it
/// through `/proc/PID/environ` or `mem`, or write it (runc's CVE-2016-9962). Not dumpable, the
/// child's `/proc` entries need `CAP_SYS_PTRACE`, which no app has unless given it.
pub fn make_undumpable() -> Result<(), StepError> {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) takes integer arguments and changes only this process.
    let r = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(StepError::new(
            "prctl(PR_SET_DUMPABLE, 0)",
            nix::errno::Errno::last(),
        ))
    }
}

/// The most bytes of environment [`forget_environment`] overwrites: the kernel's limit on one
/// process's arguments and environment together (`ARG_MAX` is a quarter of an 8 MiB stack)
/// (bytes).
const MAX_ENVIRONMENT: usize = 2 << 20;

/// Forgets the environment this process was started with, so that nothing it forks carries
/// its launcher's (the host's `rkt`, i.e. the operator's, variables and secrets): clears
/// `environ` and overwrites with zeros the strings the kernel shows as `/proc/PID/environ`
/// (the bytes between `env_start` and `env_end` of `/proc/self/stat`; changing those bounds
/// would need `CAP_SYS_RESOURCE`). Call single-threaded, with `/proc` of this process mounted,
/// once whatever the process needs from its environment has been read.
pub fn forget_environment() -> Result<(), StepError> {
    let io = |e: std::io::Error| StepError::io("read /proc/self/stat", &e);
    let stat = std::fs::read_to_string("/proc/self/stat").map_err(io)?;
    let (start, end) = env_bounds(&stat)
        .ok_or_else(|| StepError::new("parse /proc/self/stat", nix::errno::Errno::EINVAL))?;
    // SAFETY: single-threaded (the caller's contract); clearenv only resets libc's `environ`.
    unsafe { libc::clearenv() };
    if end > start && end - start <= MAX_ENVIRONMENT {
        // SAFETY: [start, end) is this process's own environment block on its stack, mapped
        // and writable for the process's life; nothing refers to it once `environ` is cleared
        // (Rust copies what it reads from the environment).
        unsafe { std::ptr::write_bytes(start as *mut u8, 0, end - start) };
    }
    Ok(())
}

/// `env_start` and `env_end` (fields 50 and 51) of a `/proc/PID/stat` line; counted after the
/// command name's closing parenthesis, since the name may hold spaces and parentheses.
fn env_bounds(stat: &str) -> Option<(usize, usize)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // The first field after the name is field 3.
    let mut f = rest.split_whitespace().skip(50 - 3);
    let start = f.next()?.parse().ok()?;
    let end = f.next()?.parse().ok()?;
    Some((start, end))
}

/// Sets every signal's disposition back to the default. `execve` keeps ignored signals
/// ignored, and the Rust runtime of guest-init (and of `rkt enter`'s stage1) ignores `SIGPIPE`:
/// without this an app would start with `SIGPIPE` ignored, unlike under any shell or rkt.
pub fn reset_signal_dispositions() {
    /// The kernel's `struct sigaction` on x86_64 (handler, flags, restorer, 64-bit mask).
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: 0, // SIG_DFL
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction with a valid, fully initialised kernel sigaction (SIG_DFL) and
        // no old-action pointer; the raw call also reaches the real-time signals that glibc's
        // wrappers refuse (32, 33). Failures (none expected) leave the disposition as it was.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
    }
}

/// Closes every fd above stderr but `keep` (whatever a caller leaked), so that app code never
/// inherits one: a leaked directory fd would reach outside the app root. `keep` is made
/// close-on-exec.
pub fn close_inherited_fds(keep: Option<RawFd>) {
    close_inherited_fds_except(keep.as_slice());
}

/// [`close_inherited_fds`] keeping every fd of `keep` (each made close-on-exec).
pub fn close_inherited_fds_except(keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|k| *k > 2).collect();
    keep.sort_unstable();
    keep.dedup();
    let mut lo = 3;
    for &k in &keep {
        if lo < k {
            close_range(lo, k - 1);
        }
        lo = k.saturating_add(1);
    }
    close_range(lo, i32::MAX);
    for &k in &keep {
        let _ = nix::fcntl::fcntl(
            k,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
}

/// Closes the fds `lo..=hi` (`close_range(2)`, else one by one up to [`MAX_STRAY_FD`]).
fn close_range(lo: RawFd, hi: RawFd) {
    let (Ok(l), Ok(h)) = (u32::try_from(lo), u32::try_from(hi)) else {
        return;
    };
    // SAFETY: close_range only closes descriptors; callers hold none in the range they need.
    let r = unsafe { libc::syscall(libc::SYS_close_range, l, h, 0u32) };
    if r != 0 {
        for fd in lo..=hi.min(MAX_STRAY_FD) {
            let _ = nix::unistd::close(fd);
        }
    }
}

/// The exit code a shell would use for an exec errno.
pub fn exec_errno_code(errno: nix::errno::Errno) -> i32 {
    if errno == nix::errno::Errno::ENOENT {
        APP_NOT_FOUND
    } else {
        APP_NOT_EXECUTABLE
    }
}

/// A command ready for `execve` (C strings and the PATH search's candidates prepared before
/// fork, so the child allocates nothing it could fail on, and nothing between a filter's
/// install and a failed `execve`).
#[derive(Debug, Clone)]
pub struct Command {
    argv: Vec<CString>,
    env: Vec<CString>,
    /// What `execve` tries, in order: argv\[0\] when it holds a `/`, else `DIR/argv[0]` for
    /// each directory of the PATH.
    candidates: Vec<CString>,
    /// Whether the candidates come from a PATH search (a missing one is then skipped).
    searched: bool,
}

/// `execve(2)`'s argv and envp of a [`Command`] (see [`Command::exec_arrays`]).
struct ExecArrays {
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

/// Why `execve` failed, with nothing formatted yet ([`ExecFailure::report`] does that).
#[derive(Debug, Clone, Copy)]
struct ExecFailure<'a> {
    /// The shell's exit code: 127 not found, 126 not executable.
    code: i32,
    /// The candidate that failed other than by not existing, and its errno.
    failed: Option<(&'a CString, nix::errno::Errno)>,
    /// argv\[0\].
    name: Option<&'a CString>,
}

impl ExecFailure<'_> {
    /// The exit code and a one-line reason.
    fn report(&self) -> (i32, String) {
        match self.failed {
            Some((path, e)) => (
                self.code,
                format!("exec {}: {}", path.to_string_lossy(), e.desc()),
            ),
            None => (
                self.code,
                format!(
                    "exec {:?}: executable file not found in $PATH",
                    self.name.map(|n| n.to_string_lossy()).unwrap_or_default()
                ),
            ),
        }
    }
}

impl Command {
    /// `argv` with exactly `env` (`PATH` from it, else the appc default, for the search).
    /// Errors: an empty argv, a NUL byte.
    pub fn new(argv: &[String], env: &[(String, String)]) -> Result<Self, String> {
        let cs = |s: &str| CString::new(s).map_err(|_| format!("NUL byte in {s:?}"));
        let Some(arg0) = argv.first() else {
            return Err("empty exec".into());
        };
        let cenv = env
            .iter()
            .map(|(k, v)| cs(&format!("{k}={v}")))
            .collect::<Result<Vec<_>, _>>()?;
        let searched = !arg0.contains('/');
        let candidates = if !searched {
            vec![cs(arg0)?]
        } else {
            let path = env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map_or(pod_abi::plan::DEFAULT_PATH, |(_, v)| v.as_str());
            path.split(':')
                .filter(|d| !d.is_empty())
                .map(|dir| cs(&format!("{dir}/{arg0}")))
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(Command {
            argv: argv.iter().map(|a| cs(a)).collect::<Result<Vec<_>, _>>()?,
            env: cenv,
            candidates,
            searched,
        })
    }

    /// Default signal dispositions, then `execve`, with a PATH search like `execvp` when
    /// argv\[0\] has no `/`. Returns only on failure: the exit code (127 not found, 126 not
    /// executable) and the reason.
    pub fn exec(&self) -> (i32, String) {
        reset_signal_dispositions();
        self.execve().report()
    }

    /// Default signal dispositions, the identity's system call filter, then `execve` (as
    /// [`Command::exec`]). Returns only on failure: `Err` when the filter cannot be installed;
    /// a failed `execve` is reported as by [`Command::exec`], unless the filter would kill the
    /// process for the calls a report makes (a retain-set without `write`, say): then the
    /// process ends here with the exit code alone, which its parent sees when it reaps it.
    pub fn filter_and_exec(&self, id: &Identity) -> Result<(i32, String), StepError> {
        reset_signal_dispositions();
        let arrays = self.exec_arrays();
        id.filter_syscalls()?;
        let failure = self.execve_with(&arrays);
        if id.seccomp.as_ref().is_some_and(Filter::kills_reports) {
            // SAFETY: _exit makes one system call, exit_group, which every filter allows.
            unsafe { libc::_exit(failure.code) }
        }
        Ok(failure.report())
    }

    /// `execve` of each candidate in turn (as `execvp`).
    fn execve(&self) -> ExecFailure<'_> {
        self.execve_with(&self.exec_arrays())
    }

    /// The NULL-terminated argv and envp pointer arrays of `execve(2)`, pointing into `self`:
    /// built before a filter is installed, so that nothing is allocated after it.
    fn exec_arrays(&self) -> ExecArrays {
        let arr = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        ExecArrays {
            argv: arr(&self.argv),
            envp: arr(&self.env),
        }
    }

    /// [`Command::execve`] with arrays from [`Command::exec_arrays`] of this command; makes no
    /// system call but `execve` and allocates nothing.
    fn execve_with(&self, arrays: &ExecArrays) -> ExecFailure<'_> {
        let mut failed = None;
        for c in &self.candidates {
            // SAFETY: `c` is a C string and both arrays hold pointers to C strings of `self`
            // (alive for this call) and end with NULL; execve returns only on failure.
            unsafe { libc::execve(c.as_ptr(), arrays.argv.as_ptr(), arrays.envp.as_ptr()) };
            match nix::errno::Errno::last() {
                nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR if self.searched => {}
                e => failed = Some((c, e)),
            }
        }
        ExecFailure {
            code: failed.map_or(APP_NOT_FOUND, |(_, e)| exec_errno_code(e)),
            failed,
            name: self.argv.first(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_environment_block_in_a_stat_line() {
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (start, end) = env_bounds(&own).unwrap();
        assert!(start < end, "{own}");
        // Fields 3 to 49, then env_start and env_end, after a name with spaces and parentheses.
        let odd = format!("7 (a) b (c) {} 1000 2000 0", ["0"; 47].join(" "));
        assert_eq!(env_bounds(&odd), Some((1000, 2000)));
        assert_eq!(env_bounds("7 (no fields)"), None);
    }

    /// The `SigIgn` mask of the calling process.
    fn ignored_mask() -> u64 {
        let s = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(u64::MAX)
    }

    #[test]
    fn apps_start_with_no_signal_ignored() {
        // In a child: SIGPIPE ignored as the Rust runtime leaves it, then the reset.
        // SAFETY: fork in a test; the child only makes async-signal-safe calls and _exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: as above.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
            let before = ignored_mask();
            reset_signal_dispositions();
            let after = ignored_mask();
            let ok = before & (1 << (libc::SIGPIPE - 1)) != 0 && after == 0;
            // SAFETY: ends the forked child without running the parent's atexit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }

    #[test]
    fn closing_inherited_fds_keeps_the_one_asked_for() {
        use std::os::fd::IntoRawFd;
        let a = std::fs::File::open("/").unwrap().into_raw_fd();
        let b = std::fs::File::open("/").unwrap().into_raw_fd();
        // A child process, so that the test harness's own descriptors are left alone.
        // SAFETY: the child only makes plain system calls (no allocation) and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                close_inherited_fds(Some(b));
                let open = |fd| nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD);
                let ok = open(a).is_err()
                    && open(b) == Ok(nix::fcntl::FdFlag::FD_CLOEXEC.bits())
                    && open(1).is_ok();
                // SAFETY: _exit after fork is always safe.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let _ = nix::unistd::close(a);
                let _ = nix::unistd::close(b);
                let st = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }

    /// A forked child under a retain-set of `read` alone (no errno: other calls kill) fails
    /// to exec a missing program: it ends with 127, not by `SIGSYS` while reporting.
    #[test]
    fn a_failed_exec_under_a_filter_that_kills_reports_exits_with_its_code() {
        let plan = pod_abi::plan::SeccompPlan {
            retain: true,
            errno: None,
            syscalls: vec![libc::SYS_read as u32],
            no_new_namespaces: false,
            fixed_projects: false,
        };
        let seccomp = Some(Filter::new(&plan).unwrap());
        assert!(seccomp.as_ref().is_some_and(Filter::kills_reports));
        let id = Identity {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            groups: Vec::new(),
            caps: crate::caps::app_sets(0, 1, false),
            no_new_privs: true,
            seccomp,
        };
        // A path, and a PATH search over two directories.
        let path = [("PATH".to_string(), "/nowhere:/nowhere-either".to_string())];
        for c in [
            Command::new(&["/nonexistent/x".into()], &[]).unwrap(),
            Command::new(&["x".into()], &path).unwrap(),
        ] {
            // SAFETY: the child makes no allocation (all prepared above) and ends with `_exit`.
            match unsafe { nix::unistd::fork() }.unwrap() {
                nix::unistd::ForkResult::Child => {
                    let code = match c.filter_and_exec(&id) {
                        Ok(_) => 1, // returned to report: the filter would have killed it
                        Err(_) => 2,
                    };
                    // SAFETY: _exit in the forked child.
                    unsafe { libc::_exit(code) }
                }
                nix::unistd::ForkResult::Parent { child } => {
                    let st = nix::sys::wait::waitpid(child, None).unwrap();
                    assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 127), "{c:?}");
                }
            }
        }
        // With an errno nothing is killed: the failure is reported as without a filter.
        let lenient = pod_abi::plan::SeccompPlan {
            errno: Some(1),
            ..plan
        };
        assert!(!Filter::new(&lenient).unwrap().kills_reports());
    }

    #[test]
    fn codes_and_preparation() {
        assert_eq!(exec_errno_code(nix::errno::Errno::ENOENT), 127);
        assert_eq!(exec_errno_code(nix::errno::Errno::EACCES), 126);
        assert!(Command::new(&[], &[]).is_err());
        assert!(Command::new(&["a\0b".into()], &[]).is_err());
        let c = Command::new(&["x".into()], &[("PATH".into(), "/nowhere".into())]).unwrap();
        assert_eq!(c.candidates, vec![CString::new("/nowhere/x").unwrap()]);
        let (code, why) = c.exec();
        assert_eq!(code, 127, "{why}");
        assert_eq!(why, "exec \"x\": executable file not found in $PATH");
        let c = Command::new(&["/nonexistent/x".into()], &[]).unwrap();
        assert_eq!(c.exec().0, 127);
    }
}
