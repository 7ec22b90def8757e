//! The apps' PID namespace of an ns pod: a namespace below guest-init's, which holds every app
//! process, event handler and `rkt enter` command and nothing of the stage1 (guest-init, its
//! attach multiplexers and exec service live one level up, where the apps cannot name them).
//! A root app given `CAP_SYS_PTRACE` (and a filter that lets `ptrace` through) may trace every
//! process it sees; guest-init holds every capability on the host, so it must not be one of
//! them. This module joins that namespace, refusing one that is not a different namespace from
//! the one it must differ from (guest-init's own): a process never lands among the stage1's
//! by mistake.
//!
//! A process on its way to becoming an app's (guest-init's child for an app or handler,
//! stage1-ns's for a `rkt enter` command) holds its launcher's capabilities until it takes the
//! app's identity; born among the apps, it would be in the sight of one with `CAP_SYS_PTRACE`
//! for that while (runc's window). So it is born out of their sight, joins the apps'
//! namespace for its children, confines itself, takes the app's identity and only then
//! [`hatch`]es the process that runs the app's code, which is born among the apps holding no
//! more than the app.

use std::fs::File;
use std::os::fd::RawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sched::{setns, CloneFlags};

use crate::StepError;

/// Whether an ns pod's apps get a PID namespace of their own: when one of them may hold
/// `CAP_SYS_PTRACE` over the host's user namespace (its bounding set names it and the pod has no
/// user namespace of its own), the one capability that lets a process trace, and read and
/// write the memory of, a process holding more than it does; or when apps may still be added
/// (a mutable pod). Without it an app can do neither to guest-init or a launcher (the kernel
/// wants the tracer's capabilities to be a superset of the traced process's), so the pod is
/// spared the namespace's cost (~1 ms of a 9 ms start on a 2-core host).
pub fn apps_apart(plan: &pod_abi::plan::Plan) -> bool {
    let ptrace = |a: &pod_abi::plan::AppPlan| {
        a.capabilities
            .iter()
            .any(|c| linux_caps::canonical(c) == Some("CAP_SYS_PTRACE"))
    };
    plan.mutable || (plan.private_users.is_none() && plan.apps.iter().any(ptrace))
}

/// Opens the PID namespace at `candidate` (a `/proc/<pid>/ns/pid` or `pid_for_children` link)
/// if it is not the one at `not` (the namespace the apps' must differ from), else `EAGAIN`.
pub fn open_apart(candidate: &Path, not: &Path) -> Result<File, StepError> {
    let io = |what: &str, p: &Path| {
        let step = format!("{what} {}", p.display());
        move |e: std::io::Error| StepError::io(step, &e)
    };
    let f = File::open(candidate).map_err(io("open", candidate))?;
    let m = f.metadata().map_err(io("stat", candidate))?;
    let other = std::fs::metadata(not).map_err(io("stat", not))?;
    if (m.dev(), m.ino()) == (other.dev(), other.ino()) {
        return Err(StepError::new(
            format!("{} is not the apps' own PID namespace", candidate.display()),
            nix::errno::Errno::EAGAIN,
        ));
    }
    Ok(f)
}

/// Makes `ns` (an open PID namespace) the one the caller's next children are born in
/// (`setns(CLONE_NEWPID)`; the caller itself stays where it is). Needs `CAP_SYS_ADMIN`.
pub fn join_for_children(ns: &File) -> Result<(), StepError> {
    setns(ns, CloneFlags::CLONE_NEWPID).map_err(|e| StepError::new("join a PID namespace", e))
}

/// The line [`hatch`] writes on its report pipe before anything else: `pid N`.
const PID_LINE: &str = "pid ";

/// Forks the process that becomes the app's (born in the namespace the caller joined for its
/// children, with the caller's identity, confinement, cgroups and undumpable memory), writes
/// `pid N` and a newline on `report` (N in the caller's namespace) and ends the caller, whose
/// parent (a subreaper, or the init of the caller's namespace) adopts the new process. Returns
/// in the new process only; a failed fork is returned to the caller.
pub fn hatch(report: RawFd) -> Result<(), StepError> {
    // SAFETY: the launcher is single-threaded; both sides only make system calls and exit or
    // exec.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => Ok(()),
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let line = format!("{PID_LINE}{child}\n");
            // SAFETY: `report` is the caller's open pipe, borrowed for this write only.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(report) };
            let code = match nix::unistd::write(fd, line.as_bytes()) {
                Ok(n) if n == line.len() => 0,
                _ => pod_abi::exit::STAGE1_FAILED,
            };
            // SAFETY: _exit after fork is always safe; the new process goes on alone.
            unsafe { libc::_exit(code) }
        }
        Err(e) => Err(StepError::new("fork the app's process", e)),
    }
}

/// Splits what a launcher's report pipe held: the hatched process's pid, if [`hatch`] ran,
/// and what follows (a failure report of the hatched process, or of the launcher before it).
pub fn hatched(report: &[u8]) -> (Option<i32>, &[u8]) {
    let Some(rest) = report.strip_prefix(PID_LINE.as_bytes()) else {
        return (None, report);
    };
    let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
        return (None, report);
    };
    let pid = std::str::from_utf8(rest.get(..nl).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|p: &i32| *p > 0);
    match pid {
        Some(p) => (Some(p), rest.get(nl + 1..).unwrap_or_default()),
        None => (None, report),
    }
}

/// In a launcher's parent, once the launcher's report has ended (the command's exec, or a
/// failure): the process that is the app's and what the report held after its pid. A hatched
/// process is it (the launcher, already gone, is reaped here, and the hatched process, adopted
/// by the caller, is the caller's to wait for); without one, the launcher itself is.
pub fn adopt(launcher: nix::unistd::Pid, report: &[u8]) -> (nix::unistd::Pid, &[u8]) {
    match hatched(report) {
        (Some(p), rest) => {
            let _ = nix::sys::wait::waitpid(launcher, None);
            (nix::unistd::Pid::from_raw(p), rest)
        }
        (None, all) => (launcher, all),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_are_apart_where_one_may_trace_the_host_or_apps_may_come() {
        let mut plan = crate::identity::tests::plan(vec![crate::identity::tests::app()]);
        assert!(
            !apps_apart(&plan),
            "rkt's default set has no CAP_SYS_PTRACE"
        );
        let mut tracer = crate::identity::tests::app();
        tracer.capabilities.push("sys_ptrace".into());
        plan.apps.push(tracer);
        assert!(apps_apart(&plan));
        plan.private_users = Some(pod_abi::userns::IdRange {
            shift: 65536,
            count: 65536,
        });
        assert!(
            !apps_apart(&plan),
            "its CAP_SYS_PTRACE is the pod's user namespace's"
        );
        plan.apps.clear();
        plan.mutable = true;
        assert!(apps_apart(&plan), "an app added later may hold it");
    }

    #[test]
    fn refuses_the_namespace_it_must_differ_from() {
        let own = Path::new("/proc/self/ns/pid");
        let e = open_apart(own, own).unwrap_err();
        assert_eq!(e.errno, nix::errno::Errno::EAGAIN, "{e}");
        assert!(e.to_string().contains("not the apps' own"), "{e}");
        let missing = open_apart(Path::new("/proc/self/ns/nonexistent"), own).unwrap_err();
        assert_eq!(missing.errno, nix::errno::Errno::ENOENT, "{missing}");
    }

    #[test]
    fn reads_the_hatched_pid_and_what_follows() {
        assert_eq!(hatched(b"pid 42\n"), (Some(42), &b""[..]));
        assert_eq!(
            hatched(b"pid 42\n127 exec /x: No such file or directory"),
            (Some(42), &b"127 exec /x: No such file or directory"[..])
        );
        assert_eq!(
            hatched(b"125 setsid: EPERM"),
            (None, &b"125 setsid: EPERM"[..])
        );
        assert_eq!(hatched(b"pid x\n"), (None, &b"pid x\n"[..]));
        assert_eq!(hatched(b"pid 0\n"), (None, &b"pid 0\n"[..]));
        assert_eq!(hatched(b"pid 42"), (None, &b"pid 42"[..]));
    }

    /// The hatched process is adopted by the caller's parent once the caller is gone (here a
    /// subreaper, the test binary run again), and the pid on the pipe is it.
    #[test]
    fn the_hatched_process_is_adopted_and_named() {
        use nix::sys::wait::{waitpid, WaitStatus};
        use nix::unistd::ForkResult;
        const CHILD: &str = "APP_CONFINE_HATCH_CHILD";
        if std::env::var_os(CHILD).is_none() {
            // A process of its own: the subreaper flag and the forks stay out of the other
            // tests' way.
            let exe = std::env::current_exe().unwrap();
            let o = std::process::Command::new(exe)
                .args([
                    "--exact",
                    "pidns::tests::the_hatched_process_is_adopted_and_named",
                ])
                .env(CHILD, "1")
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
            return;
        }
        // SAFETY: PR_SET_CHILD_SUBREAPER with an integer argument, on this process.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(r, 0);
        let (rd, wr) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only forks, writes and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            ForkResult::Child => {
                use std::os::fd::AsRawFd;
                if hatch(wr.as_raw_fd()).is_ok() {
                    // SAFETY: _exit in the hatched process.
                    unsafe { libc::_exit(7) }
                }
                // SAFETY: _exit after fork.
                unsafe { libc::_exit(1) }
            }
            ForkResult::Parent { child } => {
                drop(wr);
                assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut File::from(rd), &mut buf).unwrap();
                let (pid, rest) = hatched(&buf);
                let pid = nix::unistd::Pid::from_raw(pid.unwrap());
                assert!(rest.is_empty());
                assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 7));
            }
        }
    }
}
