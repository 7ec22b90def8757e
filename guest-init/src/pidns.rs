//! The apps' own PID namespace (ns flavor): guest-init, PID 1 of the pod and holder of every
//! capability on the host, stays out of the apps' sight. A root app that the operator gave
//! `CAP_SYS_PTRACE` and a filter letting `ptrace` through may trace, read the memory and
//! environment of, and open the root of every process it sees (the kernel asks no more of the
//! same user in the same user namespace); if guest-init, its attach multiplexers or its exec
//! service were among them, that app would own the host.
//!
//! [`split`] makes a PID namespace below guest-init's, whose init is a reaper forked here: it
//! mounts the namespace's procfs at [`APPS_PROC`] (each app's `/proc` is a bind of it, since a
//! procfs shows the namespace of whoever mounted it), then confines itself to nothing (an
//! empty read-only root, `nobody`, no capabilities), executes its binary afresh (keeping none
//! of guest-init's memory), installs a filter allowing only what reaping needs and reaps the
//! orphans the apps leave. Apps, event handlers and `rkt enter` commands are born
//! in that namespace ([`for_apps`] before each fork); the stage1's own helpers are born in
//! guest-init's ([`outside`]). The namespace ends with guest-init (its processes are in
//! guest-init's namespace too) or with the reaper. Only a pod whose apps may hold
//! `CAP_SYS_PTRACE` over the host, or a mutable one, is split
//! (`app_confine::pidns::apps_apart`): without that capability no app can trace a process
//! holding more than it does. The kvm flavor does not split: its guest-init is PID 1 of a VM,
//! not of the host.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use app_confine::caps::{self, CapSets};
use app_confine::StepError;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{ForkResult, Gid, Uid};
use pod_abi::plan::SeccompPlan;

use crate::info;

/// The apps' procfs in the stage1 root (guest-init's view); each app's `/proc` binds it.
pub const APPS_PROC: &str = "/rkt/apps-proc";
/// The reaper's root: an empty directory, read-only.
const REAPER_ROOT: &str = "/rkt/reaper-root";
/// The reaper's user and group (`nobody`).
const REAPER_ID: u32 = 65534;
/// guest-init's own PID namespace, for a helper's children.
const OWN_NS: &str = "/proc/self/ns/pid";

/// The reaper's pid in guest-init's namespace; 0 until [`split`] (and always in the kvm flavor).
static REAPER: AtomicI32 = AtomicI32::new(0);

/// The byte the reaper writes once the apps' procfs is mounted; its confinement goes on while
/// guest-init prepares the apps, and is checked ([`confined`]) before the first app's launch.
const PROC_MOUNTED: u8 = b'p';
/// The byte the reaper writes last, once it is confined: `nobody`, no capability, an empty
/// root (anything else is why it failed). Its fresh exec and its filter follow.
const CONFINED: u8 = b'c';

/// What is known of the reaper's confinement.
enum Reaper {
    /// Under way (or not started: no split); the read end of its report.
    Confining(Option<OwnedFd>),
    /// Done.
    Confined,
    /// Failed: why (the reaper, and with it the apps' namespace, is gone).
    Failed(String),
}

/// The reaper's state, for [`confined`].
static REAPER_STATE: std::sync::Mutex<Reaper> = std::sync::Mutex::new(Reaper::Confining(None));

/// Makes the apps' PID namespace and its reaper (call once, single-threaded, before any other
/// fork); afterwards guest-init's children are born in it. Returns the apps' procfs mount once
/// the reaper has mounted it; [`confined`] tells when the reaper is done.
pub fn split() -> Result<PathBuf, String> {
    for (dir, mode) in [(APPS_PROC, 0o555), (REAPER_ROOT, 0o555)] {
        use std::os::unix::fs::DirBuilderExt;
        match std::fs::DirBuilder::new().mode(mode).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("make {dir}: {e}")),
        }
    }
    unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|e| format!("unshare a PID namespace for the apps: {}", e.desc()))?;
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("pipe: {}", e.desc()))?;
    // SAFETY: guest-init is single-threaded here; the child confines itself and reaps.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork the reaper: {}", e.desc()))? {
        ForkResult::Child => {
            drop(rd);
            reaper(wr)
        }
        ForkResult::Parent { child } => {
            drop(wr);
            let first = read_byte(&rd);
            if first != Some(PROC_MOUNTED) {
                let rest = crate::launch::read_all(&rd);
                return Err(format!(
                    "the apps' PID namespace: {}{}",
                    first.map(char::from).unwrap_or_default(),
                    String::from_utf8_lossy(&rest)
                ));
            }
            *REAPER_STATE.lock().unwrap_or_else(|p| p.into_inner()) = Reaper::Confining(Some(rd));
            REAPER.store(child.as_raw(), Ordering::Relaxed);
            for_apps().map_err(|e| e.to_string())?;
            Ok(PathBuf::from(APPS_PROC))
        }
    }
}

/// Whether the apps have a PID namespace of their own ([`split`] ran).
pub fn is_split() -> bool {
    REAPER.load(Ordering::Relaxed) != 0
}

/// Waits until the reaper has confined itself (at once after the first call); an error names
/// the step that failed, after which the reaper is gone, and with it the apps' namespace. Call
/// before the first process of an app is forked: no app may see the reaper unconfined.
pub fn confined() -> Result<(), String> {
    let mut state = REAPER_STATE.lock().unwrap_or_else(|p| p.into_inner());
    let next = match &*state {
        Reaper::Confining(None) | Reaper::Confined => return Ok(()),
        Reaper::Failed(why) => return Err(why.clone()),
        Reaper::Confining(Some(rd)) => match read_byte(rd) {
            Some(CONFINED) => Reaper::Confined,
            None => Reaper::Failed(
                "the apps' PID namespace: its reaper ended before it was confined".into(),
            ),
            Some(first) => Reaper::Failed(format!(
                "the apps' PID namespace: {}{}",
                char::from(first),
                String::from_utf8_lossy(&crate::launch::read_all(rd))
            )),
        },
    };
    *state = next;
    match &*state {
        Reaper::Failed(why) => Err(why.clone()),
        _ => Ok(()),
    }
}

/// One byte of the reaper's report; `None` at its end.
fn read_byte(rd: &OwnedFd) -> Option<u8> {
    let mut b = [0u8; 1];
    loop {
        match nix::unistd::read(rd.as_raw_fd(), &mut b) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(1) => return Some(b[0]),
            _ => return None,
        }
    }
}

/// Makes the caller's next children be born in the apps' namespace, checked to be another
/// than the caller's own (a no-op without [`split`]). Call before forking any process of an
/// app: a failure must fail that process's start.
pub fn for_apps() -> Result<(), StepError> {
    let reaper = REAPER.load(Ordering::Relaxed);
    if reaper == 0 {
        return Ok(());
    }
    let ns = app_confine::pidns::open_apart(
        Path::new(&format!("/proc/{reaper}/ns/pid")),
        Path::new(OWN_NS),
    )?;
    app_confine::pidns::join_for_children(&ns)
}

/// Runs `f`, which forks a stage1 helper (a multiplexer, the exec service), with the caller's
/// children born in its own namespace, out of the apps' sight; then back to the apps'.
pub fn outside<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    if REAPER.load(Ordering::Relaxed) == 0 {
        return Ok(f());
    }
    own_for_children()?;
    let out = f();
    back_to_apps();
    Ok(out)
}

/// `fork` out of the apps' sight (as [`outside`]); only the parent goes back to the apps'
/// namespace for its children: the child, an app's launcher, joins it itself
/// ([`for_apps`]) once it has done what needs guest-init's.
pub fn fork_outside() -> Result<ForkResult, String> {
    own_for_children()?;
    // SAFETY: guest-init is single-threaded; the caller's child only sets up and execs or
    // exits.
    let forked = unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {}", e.desc()))?;
    if let ForkResult::Parent { .. } = forked {
        back_to_apps();
    }
    Ok(forked)
}

/// The caller's next children are born in its own namespace.
fn own_for_children() -> Result<(), String> {
    let own = std::fs::File::open(OWN_NS).map_err(|e| format!("open {OWN_NS}: {e}"))?;
    app_confine::pidns::join_for_children(&own).map_err(|e| e.to_string())
}

/// After a helper's fork: children in the apps' namespace again. A failure is only reported:
/// every app fork joins again (and fails closed); this keeps `rkt enter`, which reads
/// guest-init's `pid_for_children`, from finding guest-init's own.
fn back_to_apps() {
    if let Err(e) = for_apps() {
        info!("back to the apps' PID namespace: {e}");
    }
}

/// `argv[0]` of the reaper once it has executed its binary afresh ([`reaper_main`]).
pub const REAPER_ARGV0: &str = "rkt-apps-reaper";

/// The reaper, PID 1 of the apps' namespace, as forked: confines itself, reports on `report`
/// ([`PROC_MOUNTED`] once the apps' procfs is mounted, [`CONFINED`] once it holds nothing) and
/// executes its own binary afresh ([`reaper_main`]), so that it keeps none of guest-init's
/// memory for an app that traces it to read. On a failure it reports why and exits, which ends
/// the namespace (after [`CONFINED`], the apps' launches then fail). Never returns.
fn reaper(report: OwnedFd) -> ! {
    let why = match confine_reaper(&report) {
        Ok(never) => match never {},
        Err(why) => why,
    };
    let _ = nix::unistd::write(&report, why.as_bytes());
    drop(report);
    // SAFETY: _exit after fork is always safe.
    unsafe { libc::_exit(pod_abi::exit::STAGE1_FAILED) }
}

/// The reaper's confinement: the apps' procfs mounted (before it leaves the pod's mount
/// namespace; reported on `report`), its binary opened (`/proc/self/exe`, the stage1 image's
/// own, which no pod can write), stdio on `/dev/null`, every other fd but those two closed, an
/// empty read-only root (`pivot_root`), `nobody` with no capability and `no_new_privs`,
/// [`CONFINED`] reported, then `execveat` of that binary as [`REAPER_ARGV0`] with no
/// environment and no other fd. Returns only on failure.
fn confine_reaper(report: &OwnedFd) -> Result<std::convert::Infallible, String> {
    let step = |s: &'static str| move |e: nix::errno::Errno| format!("{s}: {}", e.desc());
    let nse = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("proc"), APPS_PROC, Some("proc"), nse, None::<&str>)
        .map_err(step("mount the apps' procfs"))?;
    nix::unistd::write(report, &[PROC_MOUNTED]).map_err(step("report"))?;
    let keep = report.as_raw_fd();
    let exe = nix::fcntl::open(
        "/proc/self/exe",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(step("open /proc/self/exe"))?;
    let null = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(step("open /dev/null"))?;
    for fd in 0..3 {
        nix::unistd::dup2(null, fd).map_err(step("stdio on /dev/null"))?;
    }
    app_confine::exec::close_inherited_fds_except(&[keep, exe]);
    app_confine::root::confine(Path::new(REAPER_ROOT)).map_err(|e| e.to_string())?;
    let none: Option<&str> = None;
    mount(
        none,
        "/",
        none,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | nse,
        none,
    )
    .map_err(step("make the root read-only"))?;
    caps::drop_bounding(0).map_err(|e| format!("drop the bounding set: {e}"))?;
    nix::unistd::setgroups(&[]).map_err(step("setgroups"))?;
    let (gid, uid) = (Gid::from_raw(REAPER_ID), Uid::from_raw(REAPER_ID));
    nix::unistd::setresgid(gid, gid, gid).map_err(step("setresgid"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(step("setresuid"))?;
    let nothing = CapSets {
        bounding: 0,
        held: 0,
        ambient: 0,
    };
    caps::apply_sets(nothing, true).map_err(|e| format!("drop capabilities: {e}"))?;
    let argv = [std::ffi::CString::new(REAPER_ARGV0).map_err(|e| e.to_string())?];
    nix::unistd::write(report, &[CONFINED]).map_err(step("report"))?;
    let env: [std::ffi::CString; 0] = [];
    // An empty path with AT_EMPTY_PATH executes the open binary `exe`.
    let e = nix::unistd::execveat(
        Some(exe),
        c"",
        &argv,
        &env,
        nix::fcntl::AtFlags::AT_EMPTY_PATH,
    )
    .err()
    .unwrap_or(nix::errno::Errno::EINVAL);
    Err(format!("execute the reaper: {}", e.desc()))
}

/// The reaper after its fresh exec: a filter answering `EPERM` to everything but reaping and
/// exiting, then reaps (`reap`). Never returns.
pub fn reaper_main() -> ! {
    // Its name in the apps' `ps` (an fd-executed binary is named after the fd's number).
    if let Ok(name) = std::ffi::CString::new(REAPER_ARGV0) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
    }
    let mut reaping = [
        libc::SYS_wait4,
        libc::SYS_rt_sigtimedwait,
        libc::SYS_rt_sigprocmask,
        libc::SYS_restart_syscall,
    ]
    .map(|n| n as u32)
    .to_vec();
    reaping.sort_unstable();
    let plan = SeccompPlan {
        retain: true,
        errno: Some(libc::EPERM as u16),
        syscalls: reaping,
        no_new_namespaces: false,
        fixed_projects: false,
    };
    let filtered = app_confine::seccomp::Filter::new(&plan)
        .and_then(|f| f.install().map_err(|e| e.to_string()));
    if filtered.is_err() {
        // SAFETY: _exit is always safe; the namespace ends with its init.
        unsafe { libc::_exit(pod_abi::exit::STAGE1_FAILED) }
    }
    reap()
}

/// Reaps whatever the apps orphan until the namespace ends: `wait4`, and with no child left,
/// waits for `SIGCHLD` (blocked, so one sent in between stays pending).
fn reap() -> ! {
    // SAFETY: a zeroed sigset_t is valid storage for sigemptyset/sigaddset, which fill it.
    let mut chld: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `chld` is a valid sigset_t; the calls only write it and the signal mask.
    unsafe {
        libc::sigemptyset(&mut chld);
        libc::sigaddset(&mut chld, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &chld, std::ptr::null_mut());
    }
    loop {
        // SAFETY: waitpid with a null status pointer is valid.
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD) {
            // SAFETY: `chld` is a valid sigset_t; a null siginfo pointer is allowed.
            unsafe { libc::sigwaitinfo(&chld, std::ptr::null_mut()) };
        }
    }
}
