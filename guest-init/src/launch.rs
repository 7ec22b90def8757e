//! Starting one process of an app (its pre-start or post-stop handler, or the app itself) in the
//! app's execution environment: fork, then in the child session/tty, stdio, cgroups, its own
//! mount namespace with the app root as `/` ([`confine`]: `pivot_root`, old root detached),
//! working directory, credentials, capabilities, and exec. A setup or exec failure in the child
//! travels back to PID 1 over a close-on-exec pipe as `<code> <reason>` and the child exits with
//! that code, so the reason is never lost.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use nix::unistd::{ForkResult, Pid};
use pod_abi::exit::{APP_NOT_EXECUTABLE, APP_NOT_FOUND};
use pod_abi::status::SETUP_FAILED;

/// Everything the child needs, prepared by PID 1 before forking.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// App root (in PID 1's view).
    pub rootfs: PathBuf,
    /// argv.
    pub argv: Vec<String>,
    /// Complete environment.
    pub env: Vec<(String, String)>,
    /// Numeric user.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Working directory inside the app root.
    pub workdir: String,
    /// Capability sets.
    pub caps: crate::caps::CapSets,
    /// Set `no_new_privs`.
    pub no_new_privs: bool,
    /// `cgroup.procs` files to join.
    pub cgroup_procs: Vec<PathBuf>,
    /// Keep the console as stdin and make it the controlling terminal.
    pub interactive: bool,
    /// fd to use as stdout (`None`: inherit PID 1's).
    pub stdout: Option<RawFd>,
    /// fd to use as stderr (`None`: inherit PID 1's).
    pub stderr: Option<RawFd>,
}

/// A started child and, if its setup or exec failed, the exit code and reason.
#[derive(Debug)]
pub struct Launched {
    /// Child pid (reaped by the supervisor's loop).
    pub pid: Pid,
    /// `(code, reason)` reported by the child before exiting.
    pub failure: Option<(i32, String)>,
}

/// The exit code a shell would use for an exec errno.
pub fn exec_errno_code(errno: nix::errno::Errno) -> i32 {
    if errno == nix::errno::Errno::ENOENT {
        APP_NOT_FOUND
    } else {
        APP_NOT_EXECUTABLE
    }
}

/// Parses the child's `<code> <reason>` report.
pub fn parse_report(b: &[u8]) -> Option<(i32, String)> {
    let s = String::from_utf8_lossy(b);
    let (code, msg) = s.split_once(' ')?;
    Some((code.parse().ok()?, msg.trim_end().to_string()))
}

/// Forks and starts `spec`. Fails only if fork or the report pipe cannot be created.
pub fn spawn(spec: &LaunchSpec) -> nix::Result<Launched> {
    let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let prepared = Prepared::new(spec);
    // SAFETY: guest-init is single-threaded, so the child may allocate and use any libc call.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Child => {
            drop(rd);
            let (code, msg) = match prepared {
                Ok(p) => child(spec, &p),
                Err(m) => (SETUP_FAILED, m),
            };
            let _ = nix::unistd::write(&wr, format!("{code} {msg}").as_bytes());
            // SAFETY: _exit is always safe; skipping atexit handlers is intended after fork.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let report = read_all(&rd);
            Ok(Launched {
                pid: child,
                failure: parse_report(&report),
            })
        }
    }
}

fn read_all(fd: &OwnedFd) -> Vec<u8> {
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

/// C strings prepared before fork.
struct Prepared {
    argv: Vec<CString>,
    env: Vec<CString>,
    path: String,
}

impl Prepared {
    fn new(spec: &LaunchSpec) -> Result<Self, String> {
        let cs = |s: &str| CString::new(s).map_err(|_| format!("NUL byte in {s:?}"));
        if spec.argv.is_empty() {
            return Err("empty exec".into());
        }
        let argv = spec
            .argv
            .iter()
            .map(|a| cs(a))
            .collect::<Result<Vec<_>, _>>()?;
        let env = spec
            .env
            .iter()
            .map(|(k, v)| cs(&format!("{k}={v}")))
            .collect::<Result<Vec<_>, _>>()?;
        let path = spec
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| pod_abi::plan::DEFAULT_PATH.to_string());
        Ok(Prepared { argv, env, path })
    }
}

/// Runs in the child; returns only on failure.
fn child(spec: &LaunchSpec, p: &Prepared) -> (i32, String) {
    let fail = |what: String, e: nix::errno::Errno| (SETUP_FAILED, format!("{what}: {}", e.desc()));
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    if let Err(e) = nix::unistd::setsid() {
        return fail("setsid".into(), e);
    }
    if spec.interactive {
        if nix::unistd::isatty(0).unwrap_or(false) {
            // SAFETY: TIOCSCTTY on fd 0 with an integer argument; failure is non-fatal.
            unsafe { libc::ioctl(0, libc::TIOCSCTTY, 1) };
        }
    } else {
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
    for (fd, target) in [(spec.stdout, 1), (spec.stderr, 2)] {
        if let Some(fd) = fd {
            if let Err(e) = nix::unistd::dup2(fd, target) {
                return fail(format!("dup2 {fd} to {target}"), e);
            }
        }
    }
    for procs in &spec.cgroup_procs {
        if let Err(e) = std::fs::write(procs, "0") {
            let errno = nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
            return fail(format!("join cgroup {}", procs.display()), errno);
        }
    }
    if let Err((step, e)) = confine(&spec.rootfs) {
        return fail(format!("confine to {}: {step}", spec.rootfs.display()), e);
    }
    let wd = if spec.workdir.is_empty() {
        "/"
    } else {
        spec.workdir.as_str()
    };
    if let Err(e) = nix::unistd::chdir(wd) {
        return fail(format!("working directory {wd}"), e);
    }
    if let Err(e) = crate::caps::drop_bounding(spec.caps.bounding) {
        return fail("drop bounding capabilities".into(), io_errno(&e));
    }
    let groups: Vec<nix::unistd::Gid> = spec
        .groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    if let Err(e) = nix::unistd::setgroups(&groups) {
        return fail("setgroups".into(), e);
    }
    let gid = nix::unistd::Gid::from_raw(spec.gid);
    if let Err(e) = nix::unistd::setresgid(gid, gid, gid) {
        return fail(format!("setgid {}", spec.gid), e);
    }
    let uid = nix::unistd::Uid::from_raw(spec.uid);
    if let Err(e) = nix::unistd::setresuid(uid, uid, uid) {
        return fail(format!("setuid {}", spec.uid), e);
    }
    if let Err(e) = crate::caps::apply_sets(spec.caps, spec.no_new_privs) {
        return fail("set capabilities".into(), io_errno(&e));
    }
    exec(p)
}

/// Makes `rootfs` (a path in PID 1's view) the whole filesystem of the calling process: a
/// mount namespace of its own whose mounts are slaves (nothing propagates back to PID 1 or the
/// host), the app root bound onto itself (recursively: volumes, `/proc`, `/dev` come along),
/// `pivot_root` into it with the old root stacked on the new one (`pivot_root(".", ".")`, so
/// no directory is needed in a possibly read-only app root), then the old root detached. Unlike
/// `chroot`, nothing of PID 1's tree stays reachable, so an app holding `CAP_SYS_CHROOT` cannot
/// climb out. Ends in `/`. Errors name the step.
pub fn confine(rootfs: &std::path::Path) -> Result<(), (&'static str, nix::errno::Errno)> {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    let none: Option<&str> = None;
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| ("unshare mount namespace", e))?;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_SLAVE, none)
        .map_err(|e| ("make mounts slaves", e))?;
    mount(
        Some(rootfs),
        rootfs,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .map_err(|e| ("bind the app root onto itself", e))?;
    let dir = OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    let old_root = nix::fcntl::open("/", dir, nix::sys::stat::Mode::empty())
        .map_err(|e| ("open the old root", e))?;
    // SAFETY: `old_root` was just opened and is owned here (closed on every path below).
    let old_root = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(old_root) };
    nix::unistd::chdir(rootfs).map_err(|e| ("chdir to the app root", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| ("pivot_root", e))?;
    // The old root is now stacked on `/`; step into it to detach it.
    nix::unistd::fchdir(old_root.as_raw_fd()).map_err(|e| ("fchdir to the old root", e))?;
    drop(old_root);
    mount(none, ".", none, MsFlags::MS_REC | MsFlags::MS_SLAVE, none)
        .map_err(|e| ("make the old root a slave", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| ("detach the old root", e))?;
    nix::unistd::chdir("/").map_err(|e| ("chdir /", e))
}

fn io_errno(e: &std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// execve with a PATH search like execvp (PATH from the app's environment).
fn exec(p: &Prepared) -> (i32, String) {
    let Some(arg0) = p.argv.first() else {
        return (SETUP_FAILED, "empty exec".into());
    };
    let name = arg0.to_string_lossy().into_owned();
    if name.contains('/') {
        let e = nix::unistd::execve(arg0, &p.argv, &p.env)
            .err()
            .unwrap_or(nix::errno::Errno::EIO);
        return (exec_errno_code(e), format!("exec {name}: {}", e.desc()));
    }
    let mut denied = None;
    for dir in p.path.split(':').filter(|d| !d.is_empty()) {
        let Ok(full) = CString::new(format!("{dir}/{name}")) else {
            continue;
        };
        match nix::unistd::execve(&full, &p.argv, &p.env) {
            Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => {}
            Err(e) => denied = Some((full.to_string_lossy().into_owned(), e)),
            Ok(never) => match never {},
        }
    }
    match denied {
        Some((full, e)) => (exec_errno_code(e), format!("exec {full}: {}", e.desc())),
        None => (
            APP_NOT_FOUND,
            format!("exec {name:?}: executable file not found in $PATH"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_and_codes() {
        assert_eq!(
            parse_report(b"127 exec /bin/foo: No such file or directory"),
            Some((127, "exec /bin/foo: No such file or directory".into()))
        );
        assert_eq!(parse_report(b""), None);
        assert_eq!(exec_errno_code(nix::errno::Errno::ENOENT), 127);
        assert_eq!(exec_errno_code(nix::errno::Errno::EACCES), 126);
    }
}
