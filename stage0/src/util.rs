//! Small shared helpers: atomic file writes, flock, opening a path without following
//! symlinks, bounded reads.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

/// Writes `data` to `path` atomically: temp file in the same directory, fsync, rename, fsync of
/// the directory. Readers see the old or the new contents, never a torn file.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    fsync_dir(dir)
}

/// fsyncs a directory so that a rename or create inside it is durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub use pod_abi::podfile::{flock, LockMode};

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `RESOLVE_NO_SYMLINKS` of openat2(2): fail with ELOOP on a symlink in any component.
const RESOLVE_NO_SYMLINKS: u64 = 0x04;

/// Why [`open_path_no_symlinks`] refused a path.
#[derive(Debug, thiserror::Error)]
pub enum NoSymlinkError {
    /// A component of the path is a symlink (the path up to and including it).
    #[error("{0} is a symlink")]
    Symlink(PathBuf),
    /// The path has a `.` or `..` component, or is not absolute.
    #[error("not a normalized absolute path")]
    NotNormalized,
    /// The path cannot be opened (missing, permissions).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Opens `path` (absolute, without `.`/`..`) as an `O_PATH` fd without following a symlink
/// in ANY component: openat2 with `RESOLVE_NO_SYMLINKS`, or, on kernels before 5.6, an
/// `lstat` of each component followed by a check that the opened file is the one inspected.
/// The fd can be bind-mounted through `/proc/self/fd/<fd>`, so nothing can be swapped
/// between the check and the use.
pub fn open_path_no_symlinks(path: &Path) -> Result<OwnedFd, NoSymlinkError> {
    use std::os::unix::ffi::OsStrExt;
    if !path.is_absolute()
        || path
            .components()
            .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    {
        return Err(NoSymlinkError::NotNormalized);
    }
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| NoSymlinkError::NotNormalized)?;
    let how = OpenHow {
        // The libc constants are small non-negative c_ints.
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_NO_SYMLINKS,
    };
    // SAFETY: openat2 with a valid NUL-terminated path and a properly sized, initialized
    // open_how that outlive the call; the result is checked before use.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if r >= 0 {
        let fd = i32::try_from(r).map_err(|_| io::Error::other("openat2 returned a bad fd"))?;
        // SAFETY: openat2 returned a new fd that nothing else owns.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ELOOP) => Err(first_symlink(path)
            .map(NoSymlinkError::Symlink)
            .unwrap_or(NoSymlinkError::Io(e))),
        Some(libc::ENOSYS) | Some(libc::EPERM) => open_checked_by_lstat(path),
        _ => Err(e.into()),
    }
}

/// The shortest prefix of `path` that is a symlink, if any.
fn first_symlink(path: &Path) -> Option<PathBuf> {
    let mut cur = PathBuf::new();
    for c in path.components() {
        cur.push(c);
        if fs::symlink_metadata(&cur).is_ok_and(|m| m.file_type().is_symlink()) {
            return Some(cur);
        }
    }
    None
}

/// Fallback of [`open_path_no_symlinks`] without openat2.
fn open_checked_by_lstat(path: &Path) -> Result<OwnedFd, NoSymlinkError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    if let Some(l) = first_symlink(path) {
        return Err(NoSymlinkError::Symlink(l));
    }
    let before = fs::symlink_metadata(path)?;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    let after = f.metadata()?;
    if (before.dev(), before.ino()) != (after.dev(), after.ino()) || first_symlink(path).is_some() {
        return Err(NoSymlinkError::Symlink(path.to_path_buf()));
    }
    Ok(OwnedFd::from(f))
}

/// Reads the file at `path` (any kind: a pipe such as `<(cmd)` works) if it holds at most
/// `max` bytes; a larger one (or an endless one such as `/dev/zero`) is an error after
/// reading `max + 1` bytes.
pub fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let f = File::open(path)?;
    let mut out = Vec::new();
    f.take(max.saturating_add(1)).read_to_end(&mut out)?;
    if u64::try_from(out.len()).unwrap_or(u64::MAX) > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(out)
}
