//! Starting one process of an app (its pre-start or post-stop handler, or the app itself) in the
//! app's execution environment: fork, then in the child session/tty, stdio, cgroups, its own
//! mount namespace with the app root as `/` (`app_confine::root::confine`: `pivot_root`, old
//! root detached), working directory, the app's identity (`app_confine::identity`: groups,
//! uid/gid, capabilities) and exec (`app_confine::exec`). `stage1-ns enter` confines the
//! commands it runs with the same code. A setup or exec failure in the child travels back to
//! PID 1 over a close-on-exec pipe as `<code> <reason>` and the child exits with that code, so
//! the reason is never lost.
//!
//! With the apps' own PID namespace (the ns flavor, `crate::pidns`) the child is born out of the
//! apps' sight, joins their namespace for its children, does all of the above up to the app's
//! identity and then hatches the process that execs (`app_confine::pidns::hatch`, its pid on
//! the pipe first): nothing holding more than the app is ever among the apps. That process,
//! adopted by PID 1, makes its own session (and takes its terminal) before it execs.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use app_confine::exec::Command;
use app_confine::identity::Identity;
use app_confine::userns::Handshake;
use nix::fcntl::OFlag;
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use nix::unistd::{ForkResult, Pid};
use pod_abi::status::SETUP_FAILED;
use pod_abi::userns::IdRange;

use crate::info;

/// Everything the child needs, prepared by PID 1 before forking.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// App root (in PID 1's view).
    pub rootfs: PathBuf,
    /// argv.
    pub argv: Vec<String>,
    /// Complete environment.
    pub env: Vec<(String, String)>,
    /// Credentials and capabilities.
    pub identity: Identity,
    /// Working directory inside the app root.
    pub workdir: String,
    /// Files to write `0` into to join the app's cgroups (`crate::cgroup::AppCgroups::join`).
    pub cgroup_join: Vec<PathBuf>,
    /// Keep the console as stdin and make it the controlling terminal.
    pub interactive: bool,
    /// fd to use as stdin (`None`: the app root's `/dev/null`, or the console with
    /// `interactive`).
    pub stdin: Option<RawFd>,
    /// stdin is a terminal of the app's own: make it the controlling terminal.
    pub ctty: bool,
    /// fd to use as stdout (`None`: inherit PID 1's).
    pub stdout: Option<RawFd>,
    /// fd to use as stderr (`None`: inherit PID 1's).
    pub stderr: Option<RawFd>,
    /// `--private-users`: the process runs in a user namespace mapping the pod's IDs to this
    /// host range (`app_confine::userns`).
    pub private_users: Option<IdRange>,
    /// `os/linux/oom-score-adj`: written to the process's `oom_score_adj` before it leaves
    /// PID 1's namespaces (lowering it needs `CAP_SYS_RESOURCE` there).
    pub oom_score_adj: Option<i32>,
}

/// A started child and, if its setup or exec failed, the exit code and reason.
#[derive(Debug)]
pub struct Launched {
    /// Child pid (reaped by the supervisor's loop).
    pub pid: Pid,
    /// `(code, reason)` reported by the child before exiting.
    pub failure: Option<(i32, String)>,
}

/// Parses the child's `<code> <reason>` report.
pub fn parse_report(b: &[u8]) -> Option<(i32, String)> {
    let s = String::from_utf8_lossy(b);
    let (code, msg) = s.split_once(' ')?;
    Some((code.parse().ok()?, msg.trim_end().to_string()))
}

/// Forks and starts `spec` (its process in the apps' PID namespace where there is one,
/// hatched there holding the app's identity). Fails only if fork or the report pipe cannot be
/// created.
pub fn spawn(spec: &LaunchSpec) -> nix::Result<Launched> {
    let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let prepared = Command::new(&spec.argv, &spec.env);
    let userns = match spec.private_users {
        Some(_) => Some(Handshake::new()?),
        None => None,
    };
    let hatch = crate::pidns::is_split();
    let forked = if hatch {
        crate::pidns::confined().map_err(|e| {
            info!("{e}");
            nix::errno::Errno::ESRCH
        })?;
        crate::pidns::fork_outside().map_err(|e| {
            info!("{e}");
            nix::errno::Errno::EAGAIN
        })?
    } else {
        // SAFETY: guest-init is single-threaded, so the child may allocate and use any libc
        // call.
        unsafe { nix::unistd::fork() }?
    };
    match forked {
        ForkResult::Child => {
            drop(rd);
            let report = hatch.then_some(wr.as_raw_fd());
            let (code, msg) = match prepared {
                Ok(p) => child(spec, &p, userns, report),
                Err(m) => (SETUP_FAILED, m),
            };
            let _ = nix::unistd::write(&wr, format!("{code} {msg}").as_bytes());
            // SAFETY: _exit is always safe; skipping atexit handlers is intended after fork.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(wr);
            // The child's maps (guest-init's /proc is of the pod's PID namespace, the one
            // the pid is of); a failure here ends the child, whose report says why.
            let mapped = match (userns, spec.private_users) {
                (Some(hs), Some(range)) => std::fs::File::open("/proc")
                    .map_err(|e| app_confine::StepError::io("open /proc", &e))
                    .and_then(|p| hs.parent(p.as_fd(), child, range)),
                _ => Ok(()),
            };
            if let Err(e) = &mapped {
                info!("the pod's user namespace: {e}");
            }
            let report = read_all(&rd);
            // The hatched process is the app's (adopted by PID 1); without one, the launcher
            // failed and is the app's process.
            let (pid, report) = app_confine::pidns::adopt(child, &report);
            // The child's own report first: it may have failed before the handshake.
            let failure = parse_report(report).or_else(|| {
                mapped
                    .err()
                    .map(|e| (SETUP_FAILED, format!("the pod's user namespace: {e}")))
            });
            Ok(Launched { pid, failure })
        }
    }
}

pub(crate) fn read_all(fd: &OwnedFd) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    out
}

/// Runs in the child; returns only on failure. With `hatch` (the report pipe), the child was
/// born out of the apps' sight and hatches the app's process among them once it holds the
/// app's identity.
fn child(
    spec: &LaunchSpec,
    command: &Command,
    userns: Option<Handshake>,
    hatch: Option<RawFd>,
) -> (i32, String) {
    let fail = |what: String, e: nix::errno::Errno| (SETUP_FAILED, format!("{what}: {}", e.desc()));
    if let Err(e) = app_confine::exec::make_undumpable() {
        return (SETUP_FAILED, e.to_string());
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    if hatch.is_some() {
        // First: joining a PID namespace needs CAP_SYS_ADMIN over it, gone with a user
        // namespace of the pod's.
        if let Err(e) = crate::pidns::for_apps() {
            return (SETUP_FAILED, format!("the apps' PID namespace: {e}"));
        }
    }
    match spec.stdin {
        Some(fd) => {
            if let Err(e) = nix::unistd::dup2(fd, 0) {
                return fail(format!("dup2 {fd} to 0"), e);
            }
        }
        // The console stays the app's stdin.
        None if spec.interactive => {}
        None => {
            let null = spec.rootfs.join("dev/null");
            match nix::fcntl::open(&null, OFlag::O_RDWR, nix::sys::stat::Mode::empty()) {
                Ok(fd) => {
                    let _ = nix::unistd::dup2(fd, 0);
                    if fd != 0 {
                        let _ = nix::unistd::close(fd);
                    }
                }
                Err(e) => return fail(format!("open {}", null.display()), e),
            }
        }
    }
    for (fd, target) in [(spec.stdout, 1), (spec.stderr, 2)] {
        if let Some(fd) = fd {
            if let Err(e) = nix::unistd::dup2(fd, target) {
                return fail(format!("dup2 {fd} to {target}"), e);
            }
        }
    }
    let take_tty = (spec.interactive || spec.ctty) && nix::unistd::isatty(0).unwrap_or(false);
    if hatch.is_none() {
        if let Err(e) = app_confine::session::lead(take_tty) {
            return (SETUP_FAILED, e.to_string());
        }
    }
    if let Err((f, e)) = app_confine::cgroup::join_self(&spec.cgroup_join) {
        let errno = nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        return fail(format!("join cgroup {}", f.display()), errno);
    }
    if let Some(n) = spec.oom_score_adj {
        match std::fs::write("/proc/self/oom_score_adj", n.to_string()) {
            Ok(()) => {}
            // Lowering it needs CAP_SYS_RESOURCE, which a host may withhold from rkt (a
            // container); the app runs with the score it inherited, as runc does rootless.
            Err(e) if n < 0 && e.raw_os_error() == Some(libc::EACCES) => {
                eprintln!(
                    "[guest-init] warning: oom_score_adj {n} not permitted here (no CAP_SYS_RESOURCE); left as inherited"
                );
            }
            Err(e) => {
                let errno = nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
                return fail(format!("oom_score_adj {n}"), errno);
            }
        }
    }
    if let Some(hs) = userns {
        if let Err(e) = hs.child() {
            return (SETUP_FAILED, format!("the pod's user namespace: {e}"));
        }
    }
    if let Err(e) = app_confine::root::confine(&spec.rootfs) {
        return (
            SETUP_FAILED,
            format!("confine to {}: {e}", spec.rootfs.display()),
        );
    }
    let wd = if spec.workdir.is_empty() {
        "/"
    } else {
        spec.workdir.as_str()
    };
    if let Err(e) = nix::unistd::chdir(wd) {
        return fail(format!("working directory {wd}"), e);
    }
    if let Err(e) = spec.identity.assume() {
        return (SETUP_FAILED, e.to_string());
    }
    if let Some(report) = hatch {
        if let Err(e) = app_confine::pidns::hatch(report) {
            return (SETUP_FAILED, e.to_string());
        }
        // The app's process: a session of its own, and its terminal.
        if let Err(e) = app_confine::session::lead(take_tty) {
            return (SETUP_FAILED, e.to_string());
        }
    }
    pod_abi::trace::phase("app", "exec");
    command
        .filter_and_exec(&spec.identity)
        .unwrap_or_else(|e| (SETUP_FAILED, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report() {
        assert_eq!(
            parse_report(b"127 exec /bin/foo: No such file or directory"),
            Some((127, "exec /bin/foo: No such file or directory".into()))
        );
        assert_eq!(parse_report(b""), None);
    }
}
