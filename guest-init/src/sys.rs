//! The seam in front of the host system calls that set up an app's filesystem: mount logic is
//! computed as data ([`crate::mounts::MountOp`]) against this trait, so it can be unit-tested
//! with the recording fake without root, and applied for real by [`LinuxSys`].

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

/// Filesystem queries and mutations guest-init needs to build an app's environment.
pub trait Sys {
    /// Resolves `path` inside `root` (symlinks stay inside `root`).
    fn resolve(&self, root: &Path, path: &str) -> io::Result<PathBuf>;
    /// Whether `path` is a mount point in the current mount namespace.
    fn is_mount_point(&self, path: &Path) -> bool;
    /// `mkdir -p` with `mode` for created directories.
    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// mount(2).
    fn mount(
        &self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// mknod(2) of a character device with `mode` permission bits.
    fn mknod_char(&self, path: &Path, major: u64, minor: u64, mode: u32) -> io::Result<()>;
    /// Creates an empty regular file if nothing exists at `path` (a bind-mount target).
    fn touch(&self, path: &Path) -> io::Result<()>;
    /// symlink(2), replacing nothing.
    fn symlink(&self, target: &str, link: &Path) -> io::Result<()>;
    /// Whether something exists at `path` (without following a final symlink).
    fn exists(&self, path: &Path) -> bool;
    /// Sets `nodev` on the mount at `path` and every mount below it, keeping their other flags.
    fn set_nodev_recursive(&self, path: &Path) -> io::Result<()>;
}

/// The real system.
#[derive(Debug, Default)]
pub struct LinuxSys;

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl Sys for LinuxSys {
    fn resolve(&self, root: &Path, path: &str) -> io::Result<PathBuf> {
        app_confine::paths::secure_join(root, path)
    }
    fn is_mount_point(&self, path: &Path) -> bool {
        pod_abi::mountinfo::is_mount_point(path).unwrap_or(false)
    }
    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
    }
    fn mount(
        &self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data).map_err(nix_io)
    }
    fn mknod_char(&self, path: &Path, major: u64, minor: u64, mode: u32) -> io::Result<()> {
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        mknod(
            path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(mode),
            makedev(major, minor),
        )
        .map_err(nix_io)?;
        // mknod honours the umask; make the permissions exact.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    fn touch(&self, path: &Path) -> io::Result<()> {
        if self.exists(path) {
            return Ok(());
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map(drop)
    }
    fn symlink(&self, target: &str, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }
    fn exists(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok()
    }
    fn set_nodev_recursive(&self, path: &Path) -> io::Result<()> {
        match pod_abi::mount_api::set_attrs_at(path, pod_abi::mount_api::MOUNT_ATTR_NODEV, true) {
            // Before mount_setattr (Linux 5.12): the top mount only; a remount sets the
            // flags whole, so keep the read-only bit it may have.
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                let ro = nix::sys::statvfs::statvfs(path)
                    .map(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
                    .unwrap_or(false);
                let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NODEV;
                if ro {
                    flags |= MsFlags::MS_RDONLY;
                }
                let none: Option<&str> = None;
                nix::mount::mount(none, path, none, flags, none).map_err(nix_io)
            }
            r => r,
        }
    }
}

/// A fake [`Sys`] for tests: answers queries from sets and records every mutation.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct FakeSys {
    /// Paths that count as mount points.
    pub mount_points: Vec<PathBuf>,
    /// Paths that exist.
    pub existing: Vec<PathBuf>,
    /// Errno returned by `mknod_char`, if any.
    pub mknod_errno: Option<i32>,
    /// Errno returned by a bind mount onto each of these targets (other mounts succeed).
    pub mount_errno_for: Vec<(PathBuf, i32)>,
    /// Recorded calls, one human-readable line each.
    pub calls: std::cell::RefCell<Vec<String>>,
}

#[cfg(test)]
impl Sys for FakeSys {
    fn resolve(&self, root: &Path, path: &str) -> io::Result<PathBuf> {
        Ok(root.join(path.trim_start_matches('/')))
    }
    fn is_mount_point(&self, path: &Path) -> bool {
        self.mount_points.iter().any(|p| p == path)
    }
    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.calls
            .borrow_mut()
            .push(format!("mkdir {} {mode:o}", path.display()));
        Ok(())
    }
    fn mount(
        &self,
        source: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        self.calls.borrow_mut().push(format!(
            "mount {} {} {} {:?} {}",
            source.unwrap_or("-"),
            target.display(),
            fstype.unwrap_or("-"),
            flags,
            data.unwrap_or("-")
        ));
        match self.mount_errno_for.iter().find(|(p, _)| p == target) {
            Some((_, e)) if fstype.is_none() => Err(io::Error::from_raw_os_error(*e)),
            _ => Ok(()),
        }
    }
    fn mknod_char(&self, path: &Path, major: u64, minor: u64, mode: u32) -> io::Result<()> {
        if let Some(e) = self.mknod_errno {
            return Err(io::Error::from_raw_os_error(e));
        }
        self.calls
            .borrow_mut()
            .push(format!("mknod {} {major}:{minor} {mode:o}", path.display()));
        Ok(())
    }
    fn touch(&self, path: &Path) -> io::Result<()> {
        self.calls
            .borrow_mut()
            .push(format!("touch {}", path.display()));
        Ok(())
    }
    fn symlink(&self, target: &str, link: &Path) -> io::Result<()> {
        self.calls
            .borrow_mut()
            .push(format!("symlink {} -> {target}", link.display()));
        Ok(())
    }
    fn exists(&self, path: &Path) -> bool {
        self.existing.iter().any(|p| p == path)
    }
    fn set_nodev_recursive(&self, path: &Path) -> io::Result<()> {
        self.calls
            .borrow_mut()
            .push(format!("nodev -R {}", path.display()));
        Ok(())
    }
}
