//! The jailer pattern, in process: the VMM runs in its own mount namespace whose root is a
//! tmpfs holding only the pod directory (at [`POD_IN_JAIL`]) and, while the devices are being
//! opened, a private procfs. A path escape from the virtio-fs share (a guest sending `..` or a
//! name with `/` past the Vfs checks) then finds nothing of the host's file system.
//!
//! Two steps, because of how Linux treats threads and detached mounts:
//! 1. [`enter_private_namespace`] must run while the process has one thread (`unshare(CLONE_NEWNS)`
//!    fails with EINVAL once threads share the file-system context): a new mount namespace whose
//!    mounts are slaves of the host's (nothing we mount leaks out).
//! 2. [`pivot_into`] (threads may exist by then) mounts a tmpfs over the pod directory, binds the
//!    pod directory (recursively, through an fd opened before) into it at `/pod`, mounts procfs
//!    at `/proc`, and pivots. The share must be opened after this step so that its directory fd
//!    lives in the new tree (an fd opened before would see the app overlays and volumes detached
//!    when the old root is unmounted). [`drop_proc`] then detaches `/proc` once the devices hold
//!    what they need from it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Where the pod directory appears inside the jail.
pub const POD_IN_JAIL: &str = "/pod";
/// Where procfs is mounted inside the jail until [`drop_proc`].
const PROC_IN_JAIL: &str = "/proc";

/// Errors jailing the VMM.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// A system call failed.
    #[error("{0}")]
    Sys(String, #[source] io::Error),
}

fn cstr(p: &Path) -> Result<CString, JailError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        JailError::Sys(
            format!("path {} contains a NUL byte", p.display()),
            io::Error::from(io::ErrorKind::InvalidInput),
        )
    })
}

fn check(rc: libc::c_int, what: impl FnOnce() -> String) -> Result<(), JailError> {
    if rc < 0 {
        return Err(JailError::Sys(what(), io::Error::last_os_error()));
    }
    Ok(())
}

fn mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), JailError> {
    let src_c = src.map(cstr).transpose()?;
    let target_c = cstr(target)?;
    let fstype_c = fstype.and_then(|s| CString::new(s).ok());
    let data_c = data.and_then(|s| CString::new(s).ok());
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is either null or a valid NUL-terminated string that outlives the
    // call; mount(2) does not keep them.
    let rc = unsafe {
        libc::mount(
            ptr(&src_c),
            target_c.as_ptr(),
            ptr(&fstype_c),
            flags,
            ptr(&data_c).cast(),
        )
    };
    check(rc, || format!("mount {}", target.display()))
}

/// Step 1: a private mount namespace (see the module docs). Call before any thread exists.
pub fn enter_private_namespace() -> Result<(), JailError> {
    // SAFETY: unshare takes only flags.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNS) };
    check(rc, || "unshare(CLONE_NEWNS)".into())?;
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_SLAVE,
        None,
    )
}

/// Step 2: the tmpfs root with the pod directory at [`POD_IN_JAIL`] and procfs; the current
/// directory becomes [`POD_IN_JAIL`].
pub fn pivot_into(pod_dir: &Path) -> Result<(), JailError> {
    let pod_fd: OwnedFd = std::fs::File::open(pod_dir)
        .map_err(|e| JailError::Sys(format!("open {}", pod_dir.display()), e))?
        .into();
    let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
    mount(
        Some(Path::new("rkt-vmm-jail")),
        pod_dir,
        Some("tmpfs"),
        nosuid_nodev | libc::MS_NOEXEC,
        Some("mode=0700,size=64k"),
    )?;
    let jail = pod_dir;
    let pod = jail.join(POD_IN_JAIL.trim_start_matches('/'));
    let proc = jail.join(PROC_IN_JAIL.trim_start_matches('/'));
    for d in [&pod, &proc] {
        std::fs::create_dir(d).map_err(|e| JailError::Sys(format!("mkdir {}", d.display()), e))?;
    }
    let fd_path = std::path::PathBuf::from(format!("/proc/self/fd/{}", pod_fd.as_raw_fd()));
    mount(
        Some(&fd_path),
        &pod,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )?;
    drop(pod_fd);
    // The recursive bind also copied the tmpfs that now sits on the pod directory, on top of
    // the bind's root: take that copy off to uncover the pod directory itself.
    if pod.join(POD_IN_JAIL.trim_start_matches('/')).is_dir() {
        let p = cstr(&pod)?;
        // SAFETY: umount2 with a valid path and flags.
        let rc = unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
        check(rc, || format!("uncover {}", pod.display()))?;
    }
    mount(
        Some(Path::new("proc")),
        &proc,
        Some("proc"),
        nosuid_nodev | libc::MS_NOEXEC,
        None,
    )?;
    std::env::set_current_dir(jail)
        .map_err(|e| JailError::Sys(format!("chdir {}", jail.display()), e))?;
    let dot = c".";
    // SAFETY: pivot_root with two valid NUL-terminated paths; no memory is kept.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    if rc == 0 {
        // The old root is now stacked under the new one at "/": detach it.
        // SAFETY: umount2 with a valid path and flags.
        let rc = unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) };
        check(rc, || "detach the old root".into())?;
    } else {
        // pivot_root is refused on some roots (an initramfs); move the jail over "/" and
        // chroot into it, as runc does without pivot_root.
        mount(
            Some(Path::new(".")),
            Path::new("/"),
            None,
            libc::MS_MOVE,
            None,
        )?;
        // SAFETY: chroot with a valid NUL-terminated path.
        let rc = unsafe { libc::chroot(dot.as_ptr()) };
        check(rc, || "chroot into the jail".into())?;
    }
    std::env::set_current_dir(POD_IN_JAIL)
        .map_err(|e| JailError::Sys(format!("chdir {POD_IN_JAIL}"), e))?;
    Ok(())
}

/// Detaches the jail's procfs (devices that opened `/proc/self/fd` keep their fd working).
pub fn drop_proc() -> Result<(), JailError> {
    let p = cstr(Path::new(PROC_IN_JAIL))?;
    // SAFETY: umount2 with a valid path and flags.
    let rc = unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
    check(rc, || format!("detach {PROC_IN_JAIL}"))
}
