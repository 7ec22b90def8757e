//! Making an app root the whole filesystem of the calling process (`pivot_root`, old root
//! detached). Unlike `chroot`, nothing of the caller's tree (guest-init's stage1 root) stays
//! reachable, so a process holding `CAP_SYS_CHROOT` cannot climb out with a double chroot.

use std::os::fd::AsRawFd;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::{at, StepError};

/// Confines the calling process to `rootfs` (a path in the caller's view, e.g.
/// `/opt/stage2/<app>/rootfs` in guest-init's root): a cgroup namespace rooted at the cgroups it is
/// in (call it once it joined them: `/proc/self/cgroup` then shows `/`, not the host's cgroup
/// paths, which name the pod and the host's own layout), a mount namespace of its own whose mounts
/// are slaves (nothing it mounts propagates back to the pod or the host), the app root bound onto
/// itself recursively (volumes, `/proc`, `/dev` come along, read-only flags are kept),
/// `pivot_root(".", ".")` into it (the old root stacked on the new one: no directory is needed in a
/// possibly read-only app root), then the old root made a slave and detached. Ends with cwd `/`.
/// Needs `CAP_SYS_ADMIN`, a process whose fs state is not shared (no threads), and a caller whose
/// root is the root of a mount (else `pivot_root` fails with `EINVAL` rather than confine less).
pub fn confine(rootfs: &Path) -> Result<(), StepError> {
    let none: Option<&str> = None;
    unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP)
        .map_err(at("unshare mount and cgroup namespaces"))?;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_SLAVE, none)
        .map_err(at("make mounts slaves"))?;
    mount(
        Some(rootfs),
        rootfs,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .map_err(at("bind the app root onto itself"))?;
    // O_PATH: only fchdir uses it, and on a KVM pod's share an O_PATH open sends no
    // OPENDIR/RELEASEDIR round trip.
    let dir = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let old_root = nix::fcntl::open("/", dir, nix::sys::stat::Mode::empty())
        .map_err(at("open the old root"))?;
    // SAFETY: `old_root` was just opened and is owned here (closed on every path below).
    let old_root =
        unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(old_root) };
    nix::unistd::chdir(rootfs).map_err(at("chdir to the app root"))?;
    nix::unistd::pivot_root(".", ".").map_err(at("pivot_root"))?;
    // The old root is now stacked on `/`; step into it to detach it.
    nix::unistd::fchdir(old_root.as_raw_fd()).map_err(at("fchdir to the old root"))?;
    drop(old_root);
    mount(none, ".", none, MsFlags::MS_REC | MsFlags::MS_SLAVE, none)
        .map_err(at("make the old root a slave"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(at("detach the old root"))?;
    nix::unistd::chdir("/").map_err(at("chdir /"))
}
