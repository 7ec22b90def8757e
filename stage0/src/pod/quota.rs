//! A pod's disk limit (`--disk-limit`): an XFS project quota on the pod's directory.
//!
//! The pod's directory gets a project ID of its own with the inherit flag
//! (`FS_XFLAG_PROJINHERIT`) before anything is written in it, so every file and directory made
//! below it (the overlay upper layers an app or a KVM guest writes, `--no-overlay` copies, the
//! pod's records) is counted against that project, and XFS refuses a write past the limit with
//! `ENOSPC` (a project's limit is reported as a full disk) whoever makes it (XFS enforces
//! project quotas even for holders of `CAP_SYS_RESOURCE`, such as the overlay copying up a
//! file with its mounter's credentials, which ext4 would let through). A file's project ID can
//! be changed by its owner: the apps of a limited pod run with a system call filter that
//! denies it (`SeccompPlan::fixed_projects`).
//!
//! Only XFS mounted with project quotas (`prjquota` or `pquota`) holds such a limit; anywhere
//! else `--disk-limit` is refused with the reason, before the pod exists.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

/// `XFS_SUPER_MAGIC` (`statfs.f_type`).
const XFS_SUPER_MAGIC: i64 = 0x5846_5342;
/// `quotactl_fd(2)` on x86_64 (Linux 5.14).
const SYS_QUOTACTL_FD: libc::c_long = 443;
/// `PRJQUOTA`.
const PRJQUOTA: u32 = 2;
/// `Q_GETQUOTA`.
const Q_GETQUOTA: u32 = 0x80_0007;
/// `Q_SETQUOTA`.
const Q_SETQUOTA: u32 = 0x80_0008;
/// `QIF_BLIMITS | QIF_ILIMITS`: the block and inode limits of an `if_dqblk` are set.
const QIF_LIMITS: u32 = 1 | 4;
/// Bytes of a quota block (`QIF_DQBLKSIZE`).
const QUOTA_BLOCK: u64 = 1024;
/// `FS_IOC_FSGETXATTR`: `_IOR('X', 31, struct fsxattr)`.
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
/// `FS_XFLAG_PROJINHERIT`: files made in the directory take its project ID.
const FS_XFLAG_PROJINHERIT: u32 = 0x200;
/// Project IDs rkt picks from: above those an administrator numbers by hand, below 2^31.
const PROJECT_IDS: std::ops::Range<u32> = 0x0010_0000..0x7fff_ffff;
/// Candidates tried after the first taken one (count).
const TRIES: u32 = 64;
/// Bytes of the limit per file the pod may hold (inodes are limited too: XFS does not count
/// an inode's own space against the block limit).
pub const BYTES_PER_INODE: u64 = 4096;
/// The smallest `--disk-limit` (bytes): the pod's own records need a few KiB.
pub const MIN_LIMIT: u64 = 1 << 20;

/// `struct fsxattr`.
#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

/// `struct if_dqblk`.
#[repr(C)]
#[derive(Default, Debug)]
struct IfDqblk {
    bhardlimit: u64,
    bsoftlimit: u64,
    curspace: u64,
    ihardlimit: u64,
    isoftlimit: u64,
    curinodes: u64,
    btime: u64,
    itime: u64,
    valid: u32,
}

/// Why a pod's disk limit could not be set.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// The pod directory is not on XFS.
    #[error("--disk-limit needs the pods directory on XFS mounted with project quotas (prjquota); {0} is not on XFS")]
    NotXfs(String),
    /// XFS without project quota enforcement.
    #[error("--disk-limit needs project quotas on the XFS file system of {0}: mount it with -o prjquota")]
    NotEnabled(String),
    /// The pods directory passes on a project of its own (an administrator's).
    #[error("--disk-limit needs a pods directory that passes on no XFS project; {0} passes on project {1} (its pods are limited together)")]
    Inherited(String, u32),
    /// No free project ID among the candidates.
    #[error("no free XFS project ID for the pod after {TRIES} tries")]
    NoFreeId,
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// The call.
        what: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

fn sys(what: &'static str) -> impl FnOnce(std::io::Error) -> QuotaError {
    move |source| QuotaError::Sys { what, source }
}

fn quotactl(fd: BorrowedFd<'_>, cmd: u32, id: u32, dq: &mut IfDqblk) -> Result<(), std::io::Error> {
    let qcmd = (cmd << 8) | PRJQUOTA;
    // SAFETY: quotactl_fd with a live fd and a pointer to an if_dqblk that outlives the call.
    let r = unsafe {
        libc::syscall(
            SYS_QUOTACTL_FD,
            fd.as_raw_fd(),
            qcmd,
            id,
            dq as *mut IfDqblk,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn get_xattr(fd: BorrowedFd<'_>) -> Result<FsXattr, std::io::Error> {
    let mut fa = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR fills a struct fsxattr we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR, &mut fa as *mut FsXattr) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fa)
}

fn is_xfs(fd: BorrowedFd<'_>) -> Result<bool, std::io::Error> {
    let st = nix::sys::statfs::fstatfs(fd).map_err(std::io::Error::from)?;
    Ok(st.filesystem_type().0 as i64 == XFS_SUPER_MAGIC)
}

/// Whether project `id` is free: no usage and no limits (a project XFS never saw is).
fn is_free(fd: BorrowedFd<'_>, id: u32, shown: &Path) -> Result<bool, QuotaError> {
    let mut dq = IfDqblk::default();
    match quotactl(fd, Q_GETQUOTA, id, &mut dq) {
        Ok(()) => {
            Ok(dq.curspace == 0 && dq.curinodes == 0 && dq.bhardlimit == 0 && dq.ihardlimit == 0)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENOSYS)) => {
            Err(QuotaError::NotEnabled(shown.display().to_string()))
        }
        Err(e) => Err(sys("quotactl Q_GETQUOTA")(e)),
    }
}

/// Checks that `dir` (the pods directory) can hold a disk limit, before a pod is made.
pub fn check(dir: BorrowedFd<'_>, shown: &Path) -> Result<(), QuotaError> {
    if !is_xfs(dir).map_err(sys("fstatfs"))? {
        return Err(QuotaError::NotXfs(shown.display().to_string()));
    }
    // XFS refuses to move a file into a directory that passes on another project (EXDEV):
    // the pod could never move on from `prepare/`.
    if let Some(id) = project_of(dir) {
        return Err(QuotaError::Inherited(shown.display().to_string(), id));
    }
    is_free(dir, PROJECT_IDS.start, shown).map(|_| ())
}

/// Limits what may be written below `pod_dir` (an empty directory just made, open) to
/// `bytes` (rounded up to 1 KiB) and `bytes / BYTES_PER_INODE` files, with a project ID of
/// its own picked from `seed` (the pod's UUID). Returns the project ID. The caller holds the
/// lock that serializes pod creation (`PodsDir::lock_all`).
pub fn limit(
    pod_dir: BorrowedFd<'_>,
    shown: &Path,
    seed: &str,
    bytes: u64,
) -> Result<u32, QuotaError> {
    if !is_xfs(pod_dir).map_err(sys("fstatfs"))? {
        return Err(QuotaError::NotXfs(shown.display().to_string()));
    }
    let span = PROJECT_IDS.end - PROJECT_IDS.start;
    let first = seed.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    }) % span;
    let mut id = None;
    for i in 0..TRIES {
        let cand = PROJECT_IDS.start + (first + i) % span;
        if is_free(pod_dir, cand, shown)? {
            id = Some(cand);
            break;
        }
    }
    let id = id.ok_or(QuotaError::NoFreeId)?;
    let blocks = bytes.div_ceil(QUOTA_BLOCK);
    let inodes = (bytes / BYTES_PER_INODE).max(1);
    let mut dq = IfDqblk {
        bhardlimit: blocks,
        bsoftlimit: blocks,
        ihardlimit: inodes,
        isoftlimit: inodes,
        valid: QIF_LIMITS,
        ..IfDqblk::default()
    };
    quotactl(pod_dir, Q_SETQUOTA, id, &mut dq).map_err(sys("quotactl Q_SETQUOTA"))?;
    let mut fa = get_xattr(pod_dir).map_err(sys("FS_IOC_FSGETXATTR"))?;
    fa.projid = id;
    fa.xflags |= FS_XFLAG_PROJINHERIT;
    // SAFETY: FS_IOC_FSSETXATTR reads a struct fsxattr we own.
    if unsafe {
        libc::ioctl(
            pod_dir.as_raw_fd(),
            pod_abi::plan::SeccompPlan::FS_IOC_FSSETXATTR as libc::c_ulong,
            &fa as *const FsXattr,
        )
    } != 0
    {
        let e = std::io::Error::last_os_error();
        let _ = quotactl(
            pod_dir,
            Q_SETQUOTA,
            id,
            &mut IfDqblk {
                valid: QIF_LIMITS,
                ..IfDqblk::default()
            },
        );
        return Err(sys("FS_IOC_FSSETXATTR")(e));
    }
    Ok(id)
}

/// The project ID a pod's directory passes on to what is made in it, if any (`None` on a file
/// system without project IDs or a directory that does not pass one on).
pub fn project_of(pod_dir: BorrowedFd<'_>) -> Option<u32> {
    let fa = get_xattr(pod_dir).ok()?;
    (fa.xflags & FS_XFLAG_PROJINHERIT != 0 && fa.projid != 0).then_some(fa.projid)
}

/// Where the pod's directory passes on a project ID ([`project_of`]: a `--disk-limit`, or an
/// administrator's own project on the data directory), the apps' system call filters keep
/// their files' project IDs fixed (`SeccompPlan::fixed_projects`). An app without a filter
/// (`--insecure-options=seccomp`) can still change them.
pub fn fix_projects<'a>(
    pod_dir: BorrowedFd<'_>,
    apps: impl IntoIterator<Item = &'a mut pod_abi::plan::AppPlan>,
) {
    if project_of(pod_dir).is_none() {
        return;
    }
    for app in apps {
        if let Some(f) = app.seccomp.as_mut() {
            f.fixed_projects = true;
        }
    }
}

/// The project ID a pod's directory `pod_dir` holds as its own (one [`limit`] gave it: in
/// rkt's range and not its parent's, so never an administrator's project on the data
/// directory), with its parent opened, for [`release`] once the directory is removed.
pub fn own_project(pod_dir: &Path) -> Option<(u32, std::fs::File)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(p)
            .ok()
    };
    let id = project_of(open(pod_dir)?.as_fd())?;
    let parent = open(pod_dir.parent()?)?;
    (PROJECT_IDS.contains(&id) && project_of(parent.as_fd()) != Some(id)).then_some((id, parent))
}

/// Lifts the limits of project `id` (a removed pod's, from [`own_project`]), through `dir` on
/// the same file system, so that the ID is free again. Best effort: a failure leaves an ID
/// that later pods skip.
pub fn release(dir: BorrowedFd<'_>, id: u32) {
    if !PROJECT_IDS.contains(&id) || !is_xfs(dir).unwrap_or(false) {
        return;
    }
    let _ = quotactl(
        dir,
        Q_SETQUOTA,
        id,
        &mut IfDqblk {
            valid: QIF_LIMITS,
            ..IfDqblk::default()
        },
    );
}

/// The limit in bytes of a `--disk-limit` value (a quantity: `512M`, `2G`, `1Gi`, bytes).
pub fn parse_limit(v: &str) -> Result<u64, String> {
    let q = appc::types::parse_quantity(v).map_err(|e| format!("invalid quantity {v:?} ({e})"))?;
    let bytes = q.as_units();
    if bytes < MIN_LIMIT {
        return Err(format!("{v}: want at least {MIN_LIMIT} bytes"));
    }
    Ok(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn limits_parse_as_quantities() {
        assert_eq!(parse_limit("64M").unwrap(), 64_000_000);
        assert_eq!(parse_limit("64Mi").unwrap(), 64 << 20);
        assert_eq!(parse_limit("2G").unwrap(), 2_000_000_000);
        assert!(parse_limit("1k").unwrap_err().contains("at least"));
        assert!(parse_limit("lots").is_err());
    }

    #[test]
    fn a_directory_off_xfs_is_refused_with_the_reason() {
        let d = tempfile::tempdir().unwrap();
        let f = std::fs::File::open(d.path()).unwrap();
        if is_xfs(f.as_fd()).unwrap() {
            println!(
                "SKIP: a_directory_off_xfs_is_refused_with_the_reason: the temp dir is on XFS"
            );
            return;
        }
        let e = limit(f.as_fd(), d.path(), "u", 1 << 30).unwrap_err();
        assert!(e.to_string().contains("not on XFS"), "{e}");
        assert!(check(f.as_fd(), d.path()).is_err());
        assert_eq!(project_of(f.as_fd()), None);
    }
}
