//! How the host reads files a pod can write, and how every side writes the contract's files.
//!
//! A pod (an app, guest-init, or a KVM guest through its virtio-fs share) can replace anything
//! under `stage1/rootfs` with a symlink to a host file, a FIFO, a device node or a huge file.
//! [`read_beneath`] is the one way the host reads such a file: the path is resolved beneath a
//! directory the host trusts (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`; on kernels
//! without `openat2`, a walk of the components with `O_NOFOLLOW`), the file is first opened with
//! `O_PATH` so that a FIFO or device node is never opened for I/O, it must be a regular file, and
//! at most `cap` bytes are read. No call blocks on anything the pod controls.
//!
//! [`write_atomic`] is the one atomic write (temporary file, fsync, rename, fsync of the
//! directory) used by the stage1 host sides and guest-init; [`write_atomic_unsynced`] is the
//! same without the fsyncs, for files that do not outlive a boot. [`flock`] is the one `flock(2)`
//! wrapper (stage0's store and pods, the snapshot cache's entry locks).

use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// Size cap for one-line files: app statuses, setup errors, failure reasons (bytes).
pub const SMALL_FILE_MAX: usize = 4096;
/// Size cap for the `pid` file (bytes).
pub const PID_FILE_MAX: usize = 64;
/// Size cap for the launch plan when read back from a pod's root (bytes).
pub const PLAN_MAX: usize = 4 << 20;
/// Size cap for the pod manifest (`pod`) and an app's image manifest in `appsinfo` (bytes).
pub const MANIFEST_MAX: usize = 4 << 20;

/// Why a pod-written file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PodFileError {
    /// The file (or a directory on its path) does not exist.
    #[error("{0}: no such file")]
    NotFound(PathBuf),
    /// The file or a directory on its path is a symbolic link.
    #[error("{0}: refusing a symbolic link")]
    Symlink(PathBuf),
    /// The file is not a regular file (a FIFO, a device, a directory, ...).
    #[error("{0}: not a regular file")]
    NotRegular(PathBuf),
    /// The file is larger than the cap.
    #[error("{path}: larger than {cap} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap (bytes).
        cap: usize,
    },
    /// The relative path is absolute or climbs out with `..`.
    #[error("{0}: path leaves its directory")]
    Escapes(PathBuf),
    /// The file was replaced between the check and the open.
    #[error("{0}: replaced while being opened")]
    Replaced(PathBuf),
    /// The contents are not what the contract says.
    #[error("pod wrote an invalid {what} in {path}")]
    Invalid {
        /// What the file should hold ("status", "pid", ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// Any other I/O error.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl PodFileError {
    /// Whether the file simply does not exist (not an attack, not garbage).
    pub fn is_not_found(&self) -> bool {
        matches!(self, PodFileError::NotFound(_))
    }
}

/// Opens a directory the host trusts (e.g. a pod's `stage1/rootfs`) as the base of
/// [`read_beneath_at`]; the path itself is resolved normally. `O_PATH`: the fd only anchors
/// `*at` calls, and on a FUSE mount (a KVM pod's share, for guest-init) an `O_PATH` open sends
/// no OPENDIR and RELEASEDIR round trip.
pub fn open_dir(path: &Path) -> std::io::Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)?;
    Ok(OwnedFd::from(f))
}

/// Reads at most `cap` bytes of the regular file `rel` beneath the trusted directory `dir`,
/// refusing symlinks anywhere in `rel`, FIFOs, devices and larger files (see the module docs).
pub fn read_beneath(dir: &Path, rel: &Path, cap: usize) -> Result<Vec<u8>, PodFileError> {
    let full = dir.join(rel);
    let d = open_dir(dir).map_err(|e| io_error(&full, e))?;
    read_at(d_borrow(&d), rel, cap, &full, Resolver::Auto)
}

/// [`read_beneath`] relative to an open directory.
pub fn read_beneath_at(
    dir: BorrowedFd<'_>,
    rel: &Path,
    cap: usize,
) -> Result<Vec<u8>, PodFileError> {
    read_at(dir, rel, cap, rel, Resolver::Auto)
}

/// [`read_beneath`] as text: the first line, trimmed (lossy UTF-8).
pub fn read_line_beneath(dir: &Path, rel: &Path, cap: usize) -> Result<String, PodFileError> {
    let b = read_beneath(dir, rel, cap)?;
    Ok(first_line(&b))
}

/// The first line of `b`, trimmed (lossy UTF-8).
pub fn first_line(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn d_borrow(d: &OwnedFd) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    d.as_fd()
}

/// How paths are resolved (tests force the fallback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolver {
    /// `openat2`, falling back to the walk when the kernel lacks it.
    Auto,
    /// The component walk only.
    #[cfg_attr(not(test), allow(dead_code))]
    Walk,
}

fn io_error(path: &Path, e: std::io::Error) -> PodFileError {
    let p = path.to_path_buf();
    match e.raw_os_error() {
        Some(libc::ENOENT) => PodFileError::NotFound(p),
        Some(libc::ELOOP) => PodFileError::Symlink(p),
        Some(libc::EXDEV) => PodFileError::Escapes(p),
        _ => PodFileError::Io { path: p, source: e },
    }
}

fn read_at(
    dir: BorrowedFd<'_>,
    rel: &Path,
    cap: usize,
    shown: &Path,
    how: Resolver,
) -> Result<Vec<u8>, PodFileError> {
    let parts = components(rel).ok_or_else(|| PodFileError::Escapes(shown.to_path_buf()))?;
    let open = |flags: libc::c_int| -> Result<OwnedFd, PodFileError> {
        let r = match how {
            Resolver::Auto => match openat2_beneath(dir, rel, flags) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                    walk(dir, &parts, flags)
                }
                r => r,
            },
            Resolver::Walk => walk(dir, &parts, flags),
        };
        r.map_err(|e| io_error(shown, e))
    };
    // Look first (O_PATH opens nothing for I/O), then open what was seen.
    let probe = open(libc::O_PATH)?;
    let seen = fstat(&probe).map_err(|e| io_error(shown, e))?;
    match seen.st_mode & libc::S_IFMT {
        libc::S_IFREG => {}
        libc::S_IFLNK => return Err(PodFileError::Symlink(shown.to_path_buf())),
        _ => return Err(PodFileError::NotRegular(shown.to_path_buf())),
    }
    if usize::try_from(seen.st_size).unwrap_or(usize::MAX) > cap {
        return Err(PodFileError::TooLarge {
            path: shown.to_path_buf(),
            cap,
        });
    }
    let fd = open(libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY)?;
    let st = fstat(&fd).map_err(|e| io_error(shown, e))?;
    if st.st_dev != seen.st_dev
        || st.st_ino != seen.st_ino
        || st.st_mode & libc::S_IFMT != libc::S_IFREG
    {
        return Err(PodFileError::Replaced(shown.to_path_buf()));
    }
    // Room for the size seen and one byte more: two reads for a file that did not grow.
    let seen_len = usize::try_from(st.st_size).unwrap_or(cap).min(cap);
    let mut out = Vec::with_capacity(seen_len.saturating_add(1));
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    File::from(fd)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| io_error(shown, e))?;
    if out.len() > cap {
        return Err(PodFileError::TooLarge {
            path: shown.to_path_buf(),
            cap,
        });
    }
    Ok(out)
}

/// The normal components of `rel`; `None` if it is absolute or has `..`.
fn components(rel: &Path) -> Option<Vec<CString>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => out.push(CString::new(s.as_bytes()).ok()?),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.is_empty()).then_some(out)
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on an fd we own, writing into the stat we own.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

fn owned(fd: libc::c_int) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn openat2_beneath(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: libc::c_int,
) -> std::io::Result<OwnedFd> {
    openat2_beneath_mode(dir, rel, flags, 0)
}

/// Opens `rel` beneath `dir` with openat2(2) (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_MAGICLINKS`, `O_NOFOLLOW | O_CLOEXEC` added to `flags`); `mode` is what a file
/// created by `O_CREAT` in `flags` gets (before the umask).
pub fn openat2_beneath_mode(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: libc::c_int,
    mode: u32,
) -> std::io::Result<OwnedFd> {
    let path = CString::new(rel.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    openat2_resolve(dir, &path, flags, mode, 0)
}

/// openat2(2) of `path` beneath `dir` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
/// RESOLVE_NO_MAGICLINKS` plus `more_resolve`, and `O_NOFOLLOW | O_CLOEXEC` added to `flags`.
pub(crate) fn openat2_resolve(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: libc::c_int,
    mode: u32,
    more_resolve: u64,
) -> std::io::Result<OwnedFd> {
    // SAFETY: open_how is plain data; all-zero is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = u64::try_from(flags | libc::O_NOFOLLOW | libc::O_CLOEXEC).unwrap_or_default();
    how.mode = u64::from(mode);
    how.resolve = libc::RESOLVE_BENEATH
        | libc::RESOLVE_NO_SYMLINKS
        | libc::RESOLVE_NO_MAGICLINKS
        | more_resolve;
    // SAFETY: openat2 reads the NUL-terminated path and the open_how we own, of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    owned(libc::c_int::try_from(fd).unwrap_or(-1))
}

/// The fallback: each directory opened with `O_NOFOLLOW | O_DIRECTORY`, the last component with
/// `O_NOFOLLOW` (an `O_PATH` open of a symlink yields the link itself, which fstat reports).
fn walk(dir: BorrowedFd<'_>, parts: &[CString], flags: libc::c_int) -> std::io::Result<OwnedFd> {
    let Some((last, dirs)) = parts.split_last() else {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    };
    let mut cur: Option<OwnedFd> = None;
    for c in dirs {
        let base = cur.as_ref().map_or(dir.as_raw_fd(), |f| f.as_raw_fd());
        // SAFETY: openat on a valid dir fd with a NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                base,
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        let next = owned(fd).map_err(|e| {
            // O_PATH|O_NOFOLLOW|O_DIRECTORY on a symlink fails with ENOTDIR: say what it was.
            if e.raw_os_error() == Some(libc::ENOTDIR) && is_symlink_at(base, c) {
                std::io::Error::from_raw_os_error(libc::ELOOP)
            } else {
                e
            }
        })?;
        cur = Some(next);
    }
    let base = cur.as_ref().map_or(dir.as_raw_fd(), |f| f.as_raw_fd());
    // SAFETY: openat on a valid dir fd with a NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            base,
            last.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    owned(fd)
}

fn is_symlink_at(dir: libc::c_int, name: &CStr) -> bool {
    file_type_at(dir, name) == Some(libc::S_IFLNK)
}

/// The file type bits (`S_IFMT`) of `name` in `dir`, the name itself if a symlink; None if
/// it cannot be read.
pub(crate) fn file_type_at(dir: libc::c_int, name: &CStr) -> Option<libc::mode_t> {
    // SAFETY: an all-zero stat is a valid value for fstatat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat on a valid dir fd, a NUL-terminated name and a stat we own.
    let r = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    (r == 0).then_some(st.st_mode & libc::S_IFMT)
}

/// Writes `data` to `path` atomically: a temporary file in the same directory (never following
/// a symlink), fsync, rename over `path`, fsync of the directory. The temporary file is removed
/// on error.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_via_temp(path, data, true)
}

/// [`write_atomic`] without the two fsyncs, for files that mean nothing after a reboot (a
/// running pod's `pid`): readers still see the old content or the new one, never a part.
pub fn write_atomic_unsynced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_via_temp(path, data, false)
}

fn write_via_temp(path: &Path, data: &[u8], sync: bool) -> std::io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(data)?;
        if sync {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return res;
    }
    if !sync {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Durability of the rename; a failure here does not undo the write.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// flock modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// LOCK_SH.
    Shared,
    /// LOCK_EX.
    Exclusive,
}

/// Takes a flock on `f` (retried on EINTR); `wait = false` fails with `WouldBlock` instead of
/// waiting.
pub fn flock(f: &File, mode: LockMode, wait: bool) -> std::io::Result<()> {
    let mut op = match mode {
        LockMode::Shared => libc::LOCK_SH,
        LockMode::Exclusive => libc::LOCK_EX,
    };
    if !wait {
        op |= libc::LOCK_NB;
    }
    loop {
        // SAFETY: flock on a valid open fd owned by `f`; the return value is checked.
        let r = unsafe { libc::flock(f.as_raw_fd(), op) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::symlink;
    use std::time::{Duration, Instant};

    const BOTH: [Resolver; 2] = [Resolver::Auto, Resolver::Walk];

    fn read(dir: &Path, rel: &str, how: Resolver) -> Result<Vec<u8>, PodFileError> {
        let d = open_dir(dir).unwrap();
        read_at(d_borrow(&d), Path::new(rel), 16, Path::new(rel), how)
    }

    /// Runs `f` on a thread and fails the test if it takes longer than two seconds (a FIFO
    /// opened for reading would block forever).
    fn promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(2))
            .unwrap_or_else(|_| panic!("the read blocked"))
    }

    #[test]
    fn reads_a_small_regular_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("rkt/status")).unwrap();
        std::fs::write(d.path().join("rkt/status/a"), "0\n").unwrap();
        for how in BOTH {
            assert_eq!(read(d.path(), "rkt/status/a", how).unwrap(), b"0\n");
            assert!(read(d.path(), "rkt/status/b", how)
                .unwrap_err()
                .is_not_found());
        }
    }

    #[test]
    fn refuses_a_symlink_to_a_host_file() {
        let d = tempfile::tempdir().unwrap();
        let secret = d.path().join("secret");
        std::fs::write(&secret, "root only\n").unwrap();
        std::fs::create_dir(d.path().join("root")).unwrap();
        symlink(&secret, d.path().join("root/status")).unwrap();
        symlink("../secret", d.path().join("root/rel")).unwrap();
        for how in BOTH {
            for f in ["status", "rel"] {
                let e = read(&d.path().join("root"), f, how).unwrap_err();
                assert!(matches!(e, PodFileError::Symlink(_)), "{how:?} {f}: {e:?}");
            }
        }
    }

    #[test]
    fn refuses_a_symlinked_directory_component() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("host/status")).unwrap();
        std::fs::write(d.path().join("host/status/a"), "0\n").unwrap();
        std::fs::create_dir(d.path().join("root")).unwrap();
        symlink(d.path().join("host"), d.path().join("root/rkt")).unwrap();
        for how in BOTH {
            let e = read(&d.path().join("root"), "rkt/status/a", how).unwrap_err();
            assert!(matches!(e, PodFileError::Symlink(_)), "{how:?}: {e:?}");
        }
    }

    #[test]
    fn refuses_dev_zero_and_huge_files() {
        let d = tempfile::tempdir().unwrap();
        symlink("/dev/zero", d.path().join("zero")).unwrap();
        let big = File::create(d.path().join("big")).unwrap();
        big.set_len(1 << 40).unwrap();
        for how in BOTH {
            let dir = d.path().to_path_buf();
            let e = promptly(move || read(&dir, "zero", how)).unwrap_err();
            assert!(matches!(e, PodFileError::Symlink(_)), "{e:?}");
            let e = read(d.path(), "big", how).unwrap_err();
            assert!(matches!(e, PodFileError::TooLarge { cap: 16, .. }), "{e:?}");
        }
        // A device node itself (a bind of /dev/zero's kind) is not a regular file.
        let dev = open_dir(Path::new("/dev")).unwrap();
        let e =
            promptly(move || read_beneath_at(d_borrow(&dev), Path::new("zero"), 16)).unwrap_err();
        assert!(matches!(e, PodFileError::NotRegular(_)), "{e:?}");
    }

    #[test]
    fn a_fifo_returns_at_once() {
        let d = tempfile::tempdir().unwrap();
        let fifo = CString::new(d.path().join("status").as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        for how in BOTH {
            let dir = d.path().to_path_buf();
            let t0 = Instant::now();
            let e = promptly(move || read(&dir, "status", how)).unwrap_err();
            assert!(matches!(e, PodFileError::NotRegular(_)), "{e:?}");
            assert!(t0.elapsed() < Duration::from_secs(1));
        }
    }

    #[test]
    fn refuses_paths_that_leave_the_directory() {
        let d = tempfile::tempdir().unwrap();
        for how in BOTH {
            for rel in ["../x", "/etc/passwd", "a/../../x", ""] {
                let e = read(d.path(), rel, how).unwrap_err();
                assert!(matches!(e, PodFileError::Escapes(_)), "{rel}: {e:?}");
            }
        }
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("app");
        write_atomic(&p, b"1\n").unwrap();
        write_atomic(&p, b"0\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "0\n");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        assert!(write_atomic(&d.path().join("nodir/x"), b"").is_err());
        write_atomic_unsynced(&p, b"7\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "7\n");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        assert!(write_atomic_unsynced(&d.path().join("nodir/x"), b"").is_err());
        assert_eq!(first_line(b" bad plan \nmore"), "bad plan");
    }
}

/// Resolves the parent directory of `parts` beneath `dir` without symlinks (`O_PATH`);
/// a missing single-level parent (`etc`) is created with mode 0755.
fn parent_beneath(dir: BorrowedFd<'_>, parents: &[CString]) -> std::io::Result<Option<OwnedFd>> {
    if parents.is_empty() {
        return Ok(None);
    }
    let rel: PathBuf = parents
        .iter()
        .map(|c| std::ffi::OsStr::from_bytes(c.as_bytes()))
        .collect();
    let flags = libc::O_PATH | libc::O_DIRECTORY;
    let open = || match openat2_beneath(dir, &rel, flags) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
            walk(dir, parents, flags)
        }
        r => r,
    };
    match open() {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && parents.len() == 1 => {
            let name = parents.first().map(|c| c.as_ptr()).unwrap_or_default();
            // SAFETY: mkdirat on a valid dir fd with a NUL-terminated name.
            if unsafe { libc::mkdirat(dir.as_raw_fd(), name, 0o755) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e);
                }
            }
            open().map(Some)
        }
        r => r.map(Some),
    }
}

/// Writes `data` (mode `mode`) to `rel` beneath `dir`, a tree a pod controls (an app's root),
/// without ever following a symlink: the parent is resolved beneath `dir` with no symlinks in
/// any component, the data goes to a new temporary file there (`O_EXCL | O_NOFOLLOW`), which
/// is renamed over the last component, so that a symlink there is replaced, not followed.
pub fn write_beneath(dir: &Path, rel: &Path, data: &[u8], mode: u32) -> Result<(), PodFileError> {
    write_beneath_via_temp(dir, rel, data, mode, true)
}

/// [`write_beneath`] without the fsync, for files that live only as long as the pod (an app's
/// `/etc/hosts`): the pod's end syncs them with the rest of its file systems, and readers
/// still see the old file or the new one, never a part.
pub fn write_beneath_unsynced(
    dir: &Path,
    rel: &Path,
    data: &[u8],
    mode: u32,
) -> Result<(), PodFileError> {
    write_beneath_via_temp(dir, rel, data, mode, false)
}

fn write_beneath_via_temp(
    dir: &Path,
    rel: &Path,
    data: &[u8],
    mode: u32,
    sync: bool,
) -> Result<(), PodFileError> {
    let shown = dir.join(rel);
    let parts = components(rel).ok_or_else(|| PodFileError::Escapes(shown.clone()))?;
    let Some((last, parents)) = parts.split_last() else {
        return Err(PodFileError::Escapes(shown));
    };
    let root = open_dir(dir).map_err(|e| io_error(&shown, e))?;
    let parent = parent_beneath(d_borrow(&root), parents).map_err(|e| io_error(&shown, e))?;
    let pfd = parent.as_ref().unwrap_or(&root).as_raw_fd();
    let mut tmp = b".".to_vec();
    tmp.extend_from_slice(last.as_bytes());
    tmp.extend_from_slice(format!(".tmp.{}", std::process::id()).as_bytes());
    let tmp = CString::new(tmp).map_err(|_| PodFileError::Escapes(shown.clone()))?;
    // SAFETY: openat on a valid dir fd with a NUL-terminated name; the new fd is owned below.
    let fd = unsafe {
        libc::openat(
            pfd,
            tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode,
        )
    };
    let res = owned(fd).and_then(|fd| {
        let mut f = File::from(fd);
        f.write_all(data)?;
        if sync {
            f.sync_all()?;
        }
        // SAFETY: renameat on valid dir fds with NUL-terminated names.
        if unsafe { libc::renameat(pfd, tmp.as_ptr(), pfd, last.as_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    });
    if let Err(e) = res {
        // SAFETY: unlinkat on a valid dir fd with a NUL-terminated name.
        unsafe { libc::unlinkat(pfd, tmp.as_ptr(), 0) };
        return Err(io_error(&shown, e));
    }
    Ok(())
}

/// Whether anything (a symlink included, never followed) exists at `rel` beneath `dir`.
pub fn exists_beneath(dir: &Path, rel: &Path) -> bool {
    let Some(parts) = components(rel) else {
        return false;
    };
    let Some((last, parents)) = parts.split_last() else {
        return false;
    };
    let Ok(root) = open_dir(dir) else {
        return false;
    };
    let parent = if parents.is_empty() {
        None
    } else {
        let rel: PathBuf = parents
            .iter()
            .map(|c| std::ffi::OsStr::from_bytes(c.as_bytes()))
            .collect();
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        match openat2_beneath(d_borrow(&root), &rel, flags) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                walk(d_borrow(&root), parents, flags).ok()
            }
            r => r.ok(),
        }
    };
    if !parents.is_empty() && parent.is_none() {
        return false;
    }
    let pfd = parent.as_ref().unwrap_or(&root).as_raw_fd();
    // SAFETY: an all-zero stat is a valid value for fstatat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat on a valid dir fd, a NUL-terminated name and a stat we own.
    unsafe { libc::fstatat(pfd, last.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) == 0 }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod write_beneath_tests {
    use super::*;

    /// `write_beneath`'s signature.
    type Writer = fn(&Path, &Path, &[u8], u32) -> Result<(), PodFileError>;
    /// Both writers, synced and not: they differ only in the fsync.
    const WRITERS: [Writer; 2] = [write_beneath, write_beneath_unsynced];

    #[test]
    fn replaces_symlinks_and_refuses_symlinked_parents() {
        for write in WRITERS {
            let d = tempfile::tempdir().unwrap();
            let outside = tempfile::tempdir().unwrap();
            let victim = outside.path().join("victim");
            std::fs::write(&victim, "keep").unwrap();
            let root = d.path().join("root");
            std::fs::create_dir(&root).unwrap();
            // Missing /etc is created.
            write(&root, Path::new("etc/hosts"), b"h\n", 0o644).unwrap();
            assert_eq!(std::fs::read(root.join("etc/hosts")).unwrap(), b"h\n");
            assert!(exists_beneath(&root, Path::new("etc/hosts")));
            assert!(!exists_beneath(&root, Path::new("etc/nope")));
            // A final symlink is replaced, not followed.
            std::os::unix::fs::symlink(&victim, root.join("etc/resolv.conf")).unwrap();
            assert!(exists_beneath(&root, Path::new("etc/resolv.conf")));
            write(&root, Path::new("etc/resolv.conf"), b"r\n", 0o644).unwrap();
            assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
            assert!(!std::fs::symlink_metadata(root.join("etc/resolv.conf"))
                .unwrap()
                .file_type()
                .is_symlink());
            assert_eq!(std::fs::read(root.join("etc/resolv.conf")).unwrap(), b"r\n");
            // A symlinked parent is refused.
            let root2 = d.path().join("root2");
            std::fs::create_dir(&root2).unwrap();
            std::os::unix::fs::symlink(outside.path(), root2.join("etc")).unwrap();
            assert!(write(&root2, Path::new("etc/victim"), b"x", 0o644).is_err());
            assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
            assert!(write(&root2, Path::new("../x"), b"x", 0o644).is_err());
        }
    }
}
