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
//!    pod directory (recursively, through an fd opened before) into it at `/pod`, makes that bind
//!    and every mount below it (the overlays, the volumes) `nosuid,nodev` ([`harden_pod_bind`]:
//!    a device node in the share, which neither the device nor the virtio-fs worker's
//!    capabilities let the guest create, could still never be opened on the host, and no setuid
//!    bit takes effect in the jail),
//!    mounts procfs
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
    harden_pod_bind(&pod)?;
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

/// Adds `nosuid,nodev` to the mount at `pod` and every mount below it, keeping their other flags
/// (read-only volumes stay read-only): `mount_setattr(AT_RECURSIVE)` (Linux 5.12); on older
/// kernels, each mount is remounted with its own flags plus these two.
pub fn harden_pod_bind(pod: &Path) -> Result<(), JailError> {
    let p = cstr(pod)?;
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr with a valid path, a valid attr struct and its size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            p.as_ptr(),
            libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ENOSYS) {
        return Err(JailError::Sys(
            format!("mount_setattr {}", pod.display()),
            e,
        ));
    }
    let mountinfo = std::fs::read(pod_abi::mountinfo::SELF)
        .map_err(|e| JailError::Sys("read /proc/self/mountinfo".into(), e))?;
    // Each listed mount reached again from `pod` without following a symlink: a directory
    // in a volume another, running pod shares can have become a symlink to a host directory
    // since the table was read (`pod_abi::mountinfo::pin_beneath`).
    let dir = pod_abi::podfile::open_dir(pod)
        .map_err(|e| JailError::Sys(format!("open {}", pod.display()), e))?;
    for target in pod_abi::mountinfo::MountTable::parse(&mountinfo).points_under(pod) {
        match pod_abi::mountinfo::pin_beneath(std::os::fd::AsFd::as_fd(&dir), pod, &target) {
            Ok(p) => remount_nosuid_nodev(p.path())?,
            Err(e) => {
                return Err(JailError::Sys(
                    format!("reach the mount {} beneath the pod", target.display()),
                    e,
                ))
            }
        }
    }
    Ok(())
}

/// Remounts the mount at `target` with its current per-mount flags plus `nosuid,nodev`.
fn remount_nosuid_nodev(target: &Path) -> Result<(), JailError> {
    let t = cstr(target)?;
    // SAFETY: a zeroed statvfs is valid; statvfs fills it from a valid path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    check(unsafe { libc::statvfs(t.as_ptr(), &mut st) }, || {
        format!("statvfs {}", target.display())
    })?;
    let keep = [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ]
    .iter()
    .filter(|(st_flag, _)| st.f_flag & *st_flag != 0)
    .fold(0, |acc, (_, ms)| acc | *ms);
    mount(
        None,
        target,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV | keep,
        None,
    )
}

/// Detaches the jail's procfs (devices that opened `/proc/self/fd` keep their fd working).
pub fn drop_proc() -> Result<(), JailError> {
    let p = cstr(Path::new(PROC_IN_JAIL))?;
    // SAFETY: umount2 with a valid path and flags.
    let rc = unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
    check(rc, || format!("detach {PROC_IN_JAIL}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lists_mounts_at_or_below() {
        let info = "22 1 0:21 / / rw - ext4 /dev/root rw\n\
                    30 22 0:30 / /pod rw,nosuid - tmpfs t rw\n\
                    31 30 0:31 / /pod/stage1/rootfs rw - overlay o rw\n\
                    32 30 0:32 / /pod/apps/a\\040b rw - overlay o rw\n\
                    33 22 0:33 / /podx rw - tmpfs t rw\n";
        let got =
            pod_abi::mountinfo::MountTable::parse(info.as_bytes()).points_under(Path::new("/pod"));
        assert_eq!(
            got,
            vec![
                std::path::PathBuf::from("/pod/apps/a b"),
                "/pod/stage1/rootfs".into(),
                "/pod".into(),
            ]
        );
    }
}
