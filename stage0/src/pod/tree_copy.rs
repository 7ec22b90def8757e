//! Copies a rendered image tree into a pod for `--no-overlay` (or when the data directory
//! cannot hold overlay upper dirs). The copy is the pod's own: files are reflinked with
//! `FICLONE` where the file system shares extents (btrfs, xfs), copied otherwise; never
//! hardlinked to the store, which a pod could then modify. Modes (setuid bits included),
//! owners, extended attributes (file capabilities), timestamps, symlinks (as symlinks),
//! device nodes, FIFOs and hardlinks inside the tree are kept.
//!
//! The source is a store tree (root-only, never written by a pod). The destination is a new
//! directory of a pod that has not run yet, or, for `rkt app add`/`rm` on a running pod, a
//! directory a pod (a kvm guest) can write while the host works there: such work runs through
//! [`beneath_root`], so every destination path resolves beneath the pod's root whatever
//! symlinks or renames the pod makes meanwhile.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pod_abi::userns::IdRange;

/// What a copy did (for `--debug` and the benchmark).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Regular files whose data was shared with `FICLONE`.
    pub reflinked: u64,
    /// Regular files whose data was copied.
    pub copied: u64,
    /// Bytes of regular files (reflinked or copied).
    pub bytes: u64,
    /// Entries of other kinds (directories, symlinks, devices, FIFOs, hardlinks).
    pub other: u64,
}

/// Runs `f` on a thread of its own whose root directory is `root` (`unshare(CLONE_FS)`, then
/// `chroot`; other threads keep theirs) and whose working directory is `cwd`, a directory
/// opened before the `chroot` (e.g. a trusted store tree outside `root`; `/` when None).
/// Absolute paths in `f` then resolve beneath `root`, symlinks a pod planted and `..`
/// included, while relative paths read `cwd`.
pub fn beneath_root<T: Send>(
    root: &Path,
    cwd: Option<&Path>,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let cwd = cwd.map(|p| with_path(p, File::open(p))).transpose()?;
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).map_err(io::Error::from)?;
                with_path(root, nix::unistd::chroot(root).map_err(io::Error::from))?;
                nix::unistd::chdir("/").map_err(io::Error::from)?;
                if let Some(d) = cwd {
                    nix::unistd::fchdir(d.as_raw_fd()).map_err(io::Error::from)?;
                }
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the confined copy thread panicked")))
    })
}

/// Copies the directory `src` to `dst` (which must not exist).
pub fn copy_tree(src: &Path, dst: &Path) -> io::Result<CopyStats> {
    copy_tree_shifted(src, dst, None)
}

/// [`copy_tree`], every owner and group shifted into `shift` (`--private-users`: image ID
/// `n` becomes host ID `shift + n`); an ID outside the range is an error.
pub fn copy_tree_shifted(src: &Path, dst: &Path, shift: Option<IdRange>) -> io::Result<CopyStats> {
    let mut c = Copier {
        stats: CopyStats::default(),
        links: HashMap::new(),
        shift,
    };
    c.copy(src, dst)?;
    Ok(c.stats)
}

struct Copier {
    stats: CopyStats,
    /// (dev, ino) of multiply-linked files already copied, and their copies.
    links: HashMap<(u64, u64), PathBuf>,
    /// The pod's ID range, if the owners are shifted.
    shift: Option<IdRange>,
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn with_path<T>(p: &Path, r: io::Result<T>) -> io::Result<T> {
    r.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))
}

impl Copier {
    fn copy(&mut self, src: &Path, dst: &Path) -> io::Result<()> {
        let md = with_path(src, fs::symlink_metadata(src))?;
        let ft = md.file_type();
        if ft.is_dir() {
            with_path(dst, fs::create_dir(dst))?;
            fs::set_permissions(dst, fs::Permissions::from_mode(0o700))?;
            let mut names: Vec<_> = with_path(src, fs::read_dir(src))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()?;
            names.sort();
            for n in names {
                self.copy(&src.join(&n), &dst.join(&n))?;
            }
            self.stats.other += 1;
        } else if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = self.links.get(&(md.dev(), md.ino())) {
                    with_path(dst, fs::hard_link(first, dst))?;
                    self.stats.other += 1;
                    return Ok(());
                }
                self.links.insert((md.dev(), md.ino()), dst.to_path_buf());
            }
            with_path(dst, self.copy_file(src, dst, md.len()))?;
        } else if ft.is_symlink() {
            let target = with_path(src, fs::read_link(src))?;
            with_path(dst, std::os::unix::fs::symlink(&target, dst))?;
            self.stats.other += 1;
        } else {
            // Devices, FIFOs, sockets: a node of the same kind and number.
            let c = cpath(dst)?;
            // SAFETY: mknod with a valid NUL-terminated path; the result is checked.
            let r = unsafe { libc::mknod(c.as_ptr(), md.mode(), md.rdev() as libc::dev_t) };
            if r != 0 {
                return with_path(dst, Err(io::Error::last_os_error()));
            }
            self.stats.other += 1;
        }
        let (uid, gid) = match self.shift {
            None => (md.uid(), md.gid()),
            Some(r) => match (r.to_host(md.uid()), r.to_host(md.gid())) {
                (Some(u), Some(g)) => (u, g),
                _ => {
                    return with_path(
                        src,
                        Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "owner {}:{} is outside the pod's {} user IDs",
                                md.uid(),
                                md.gid(),
                                r.count
                            ),
                        )),
                    )
                }
            },
        };
        with_path(dst, copy_attributes(src, dst, &md, uid, gid))
    }

    /// Copies a regular file's data: reflink first, then an in-kernel copy.
    fn copy_file(&mut self, src: &Path, dst: &Path, len: u64) -> io::Result<()> {
        let from = File::open(src)?;
        let to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(dst)?;
        // SAFETY: FICLONE on two valid open fds owned by `to` and `from`; the result is
        // checked and a failure leaves the (empty) destination unchanged.
        let r = unsafe { libc::ioctl(to.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) };
        if r == 0 {
            self.stats.reflinked += 1;
        } else {
            let mut from = from;
            let mut to = to;
            // copy_file_range(2) underneath: in-kernel, and sharing extents where it can.
            io::copy(&mut from, &mut to)?;
            self.stats.copied += 1;
        }
        self.stats.bytes += len;
        Ok(())
    }
}

/// Owner, then mode (a chown clears setuid bits), extended attributes (a chown clears file
/// capabilities), then timestamps; symlinks keep their own owner and times.
fn copy_attributes(
    src: &Path,
    dst: &Path,
    md: &fs::Metadata,
    uid: u32,
    gid: u32,
) -> io::Result<()> {
    std::os::unix::fs::lchown(dst, Some(uid), Some(gid))?;
    if !md.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))?;
        copy_xattrs(src, dst)?;
    }
    let c = cpath(dst)?;
    let times = [
        libc::timespec {
            tv_sec: md.atime(),
            tv_nsec: md.atime_nsec(),
        },
        libc::timespec {
            tv_sec: md.mtime(),
            tv_nsec: md.mtime_nsec(),
        },
    ];
    // SAFETY: utimensat with a valid NUL-terminated path and a two-element timespec array,
    // both outliving the call; the result is checked.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Copies every extended attribute of `src` to `dst` ([`crate::xattr::read_all`]); attributes
/// the destination refuses (`ENOTSUP`, `EPERM`: an unsupported namespace) are skipped.
fn copy_xattrs(src: &Path, dst: &Path) -> io::Result<()> {
    let d = cpath(dst)?;
    for (name, value) in crate::xattr::read_all(src)? {
        // SAFETY: lsetxattr with valid NUL-terminated strings and `value`'s initialized bytes;
        // checked.
        let r = unsafe {
            libc::lsetxattr(
                d.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::ENOTSUP | libc::EPERM)) {
                return Err(e);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `--private-users`: every owner moves into the pod's range, symlinks included, and
    /// the setuid bit a chown clears is set again; an owner beyond the range is an error.
    #[test]
    fn shifted_copy_moves_owners_into_the_range() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: shifted_copy_moves_owners_into_the_range: needs root to chown");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("home/user")).unwrap();
        fs::write(src.join("home/user/f"), b"x").unwrap();
        std::os::unix::fs::lchown(src.join("home/user"), Some(1000), Some(100)).unwrap();
        std::os::unix::fs::lchown(src.join("home/user/f"), Some(1000), Some(100)).unwrap();
        fs::write(src.join("su"), b"").unwrap();
        fs::set_permissions(src.join("su"), fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::symlink("su", src.join("link")).unwrap();
        let r = IdRange {
            shift: 0x30000,
            count: 0x10000,
        };
        let dst = t.path().join("dst");
        copy_tree_shifted(&src, &dst, Some(r)).unwrap();
        let m = |p: &str| fs::symlink_metadata(dst.join(p)).unwrap();
        assert_eq!((m("").uid(), m("").gid()), (0x30000, 0x30000));
        assert_eq!(
            (m("home/user/f").uid(), m("home/user/f").gid()),
            (0x303e8, 0x30064)
        );
        assert_eq!(m("link").uid(), 0x30000);
        assert_eq!((m("su").uid(), m("su").mode() & 0o7777), (0x30000, 0o4755));
        std::os::unix::fs::lchown(src.join("home/user/f"), Some(70000), None).unwrap();
        let e = copy_tree_shifted(&src, &t.path().join("dst2"), Some(r)).unwrap_err();
        assert!(
            e.to_string().contains("outside the pod's 65536 user IDs"),
            "{e}"
        );
    }

    #[test]
    fn copies_kinds_modes_links_and_times() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("bin/tool"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
        fs::hard_link(src.join("bin/tool"), src.join("bin/alias")).unwrap();
        std::os::unix::fs::symlink("tool", src.join("bin/link")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", src.join("dangling")).unwrap();
        let fifo = cpath(&src.join("fifo")).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
        fs::set_permissions(src.join("bin"), fs::Permissions::from_mode(0o751)).unwrap();
        let dst = t.path().join("dst");
        let st = copy_tree(&src, &dst).unwrap();
        assert_eq!(st.reflinked + st.copied, 1, "{st:?}");
        let m = |p: &str| fs::symlink_metadata(dst.join(p)).unwrap();
        assert_eq!(fs::read(dst.join("bin/tool")).unwrap(), b"#!/bin/sh\n");
        assert_eq!(m("bin/tool").mode() & 0o7777, 0o4755);
        assert_eq!(m("bin/alias").ino(), m("bin/tool").ino());
        assert_ne!(
            m("bin/tool").ino(),
            fs::metadata(src.join("bin/tool")).unwrap().ino()
        );
        assert_eq!(m("bin").mode() & 0o7777, 0o751);
        assert_eq!(
            fs::read_link(dst.join("dangling")).unwrap(),
            Path::new("/nonexistent")
        );
        assert!(m("bin/link").file_type().is_symlink());
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(
            &m("fifo").file_type()
        ));
        assert_eq!(
            m("bin/tool").mtime(),
            fs::metadata(src.join("bin/tool")).unwrap().mtime()
        );
        // The copy is independent of the source.
        fs::write(dst.join("bin/tool"), b"changed").unwrap();
        assert_eq!(fs::read(src.join("bin/tool")).unwrap(), b"#!/bin/sh\n");
        assert!(copy_tree(&src, &dst).is_err(), "destination exists");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod beneath_tests {
    use super::*;

    /// A pod replaced `opt/stage2` with a symlink to a host directory (absolute, and relative
    /// with `..`): the copy and the removal stay beneath the pod's root.
    #[test]
    fn a_planted_symlink_cannot_take_the_copy_or_the_removal_outside_the_root() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: a_planted_symlink_cannot_take_the_copy_or_the_removal_outside_the_root: needs root (chroot)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (src, root, host) = (
            t.path().join("src"),
            t.path().join("root"),
            t.path().join("host"),
        );
        fs::create_dir_all(src.join("etc")).unwrap();
        fs::write(src.join("etc/file"), "image").unwrap();
        fs::create_dir_all(root.join("opt")).unwrap();
        fs::create_dir_all(host.join("app/keep")).unwrap();
        let planted = [
            ("opt/stage2", host.clone()),
            ("opt/up", PathBuf::from("../../host")),
        ];
        for (link, target) in planted {
            std::os::unix::fs::symlink(&target, root.join(link)).unwrap();
            let inner = Path::new("/").join(link).join("app/rootfs");
            // It may fail or write beneath the root; never into the host directory.
            let _ = beneath_root(&root, Some(&src), || copy_tree(Path::new("."), &inner));
            assert!(
                !host.join("app/rootfs").exists(),
                "copy escaped through {link}"
            );
            let gone = Path::new("/").join(link).join("app");
            let _ = beneath_root(&root, None, || fs::remove_dir_all(&gone));
            assert!(
                host.join("app/keep").is_dir(),
                "removal escaped through {link}"
            );
        }
        // The same calls through a real directory copy and remove.
        fs::remove_file(root.join("opt/stage2")).unwrap();
        fs::create_dir_all(root.join("opt/stage2/app")).unwrap();
        beneath_root(&root, Some(&src), || {
            copy_tree(Path::new("."), Path::new("/opt/stage2/app/rootfs"))
        })
        .unwrap();
        assert_eq!(
            fs::read_to_string(root.join("opt/stage2/app/rootfs/etc/file")).unwrap(),
            "image"
        );
        beneath_root(&root, None, || fs::remove_dir_all("/opt/stage2/app")).unwrap();
        assert!(!root.join("opt/stage2/app").exists());
    }
}
