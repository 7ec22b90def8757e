//! Removing a tree a pod wrote without ever leaving its mount.
//!
//! `std::fs::remove_dir_all` walks into whatever is mounted below the tree: a host volume
//! bind-mounted into a pod that was not unmounted (a mount table misread, a mount made after
//! the table was read) would lose its contents. [`remove_tree`] opens every directory it
//! descends into with openat2(2) `RESOLVE_NO_XDEV | RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`
//! relative to its parent, so a mount point below the tree (a bind mount of the same file
//! system included) stops the removal with [`MOUNT_REMAINS`] instead of being entered; a
//! file mount point fails its unlink (EBUSY). The walk keeps one directory stream per level,
//! not a call frame, so a deep tree cannot exhaust the stack, and at most [`MAX_OPEN_LEVELS`]
//! of them: a directory deeper than that is moved up to the top of the tree (a rename within
//! it) and removed from there, so a chain of nested directories far deeper than the open-file
//! limit (a pod makes one by creating and entering `d` 30 000 times, which any app can) is
//! removed like any other tree instead of failing with `EMFILE` on every `rkt gc`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The error [`remove_tree`] stops with at a mount point below the tree.
pub const MOUNT_REMAINS: i32 = libc::EXDEV;

/// Entries read from a directory at a time (the rest stay in the stream).
const BATCH: usize = 256;

/// Directory streams [`remove_tree`] keeps open at most (one per level it is in).
pub const MAX_OPEN_LEVELS: usize = 64;

/// Name prefix of a directory moved up to the top of the tree being removed.
const HOISTED: &str = ".rkt-remove-";

/// A directory stream (fdopendir), closed on drop.
struct Stream {
    dirp: *mut libc::DIR,
}

impl Stream {
    fn new(fd: OwnedFd) -> io::Result<Stream> {
        let raw = fd.as_raw_fd();
        // SAFETY: fdopendir takes ownership of a valid directory fd on success.
        let dirp = unsafe { libc::fdopendir(raw) };
        if dirp.is_null() {
            return Err(io::Error::last_os_error()); // `fd` is dropped (closed) here.
        }
        std::mem::forget(fd); // Owned by the stream now.
        Ok(Stream { dirp })
    }

    fn fd(&self) -> RawFd {
        // SAFETY: dirp is a valid open stream until drop.
        unsafe { libc::dirfd(self.dirp) }
    }

    /// Reads the directory again from its start (entries added since are seen).
    fn rewind(&mut self) {
        // SAFETY: dirp is a valid open stream until drop.
        unsafe { libc::rewinddir(self.dirp) }
    }

    /// Up to [`BATCH`] names (no `.`/`..`) with their d_type; empty at the end.
    fn batch(&mut self) -> io::Result<Vec<(CString, u8)>> {
        let mut out = Vec::new();
        while out.len() < BATCH {
            // SAFETY: errno is thread-local; cleared so that end and error can be told apart.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: dirp is a valid open stream; the entry is copied before the next call.
            let e = unsafe { libc::readdir64(self.dirp) };
            if e.is_null() {
                let err = io::Error::last_os_error();
                return match err.raw_os_error() {
                    Some(0) | None => Ok(out),
                    _ => Err(err),
                };
            }
            // SAFETY: readdir64 returned a valid entry whose d_name is NUL-terminated.
            let (name, kind) = unsafe { (CStr::from_ptr((*e).d_name.as_ptr()), (*e).d_type) };
            if name.to_bytes() != b"." && name.to_bytes() != b".." {
                out.push((name.to_owned(), kind));
            }
        }
        Ok(out)
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: dirp is a valid stream, closed once.
        unsafe { libc::closedir(self.dirp) };
    }
}

/// Opens directory `name` of `dir` without crossing a mount or following a symlink.
fn open_subdir(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    crate::podfile::openat2_resolve(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY,
        0,
        libc::RESOLVE_NO_XDEV,
    )
}

fn unlink_at(dir: RawFd, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unlinkat on a valid dir fd with a NUL-terminated name.
    if unsafe { libc::unlinkat(dir, name.as_ptr(), flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One directory being emptied: its stream, its name in its parent, and the path for errors.
struct Level {
    stream: Stream,
    name: CString,
    path: PathBuf,
    pending: Vec<(CString, u8)>,
}

/// Removes `dir` and everything in it, never entering another mount (a mount point below it
/// fails the removal with [`MOUNT_REMAINS`], naming the path) and never following a symlink.
/// A missing `dir` is not an error. The error says which path failed; what was removed before
/// it stays removed.
pub fn remove_tree(dir: &Path) -> io::Result<()> {
    let (parent, base) = match (dir.parent(), dir.file_name()) {
        (Some(p), Some(b)) => (p, b),
        _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    let parent = std::fs::File::open(if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    })?;
    let base =
        CString::new(base.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let top = match open_subdir(parent_fd(&parent), &base) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(at(dir, e)),
    };
    let mut levels = vec![Level {
        stream: Stream::new(top).map_err(|e| at(dir, e))?,
        name: base,
        path: dir.to_path_buf(),
        pending: Vec::new(),
    }];
    // Directories moved up to the top since its stream was last read from the start.
    let mut hoisted = false;
    let mut hoist_seq: u64 = 0;
    loop {
        let depth = levels.len();
        let Some(top_fd) = levels.first().map(|l| l.stream.fd()) else {
            break;
        };
        let Some(cur) = levels.last_mut() else {
            break;
        };
        if cur.pending.is_empty() {
            cur.pending = cur.stream.batch().map_err(|e| at(&cur.path, e))?;
            if cur.pending.is_empty() && depth == 1 && hoisted {
                // The top's own entries are done; the directories moved into it meanwhile
                // may not have been listed.
                hoisted = false;
                cur.stream.rewind();
                cur.pending = cur.stream.batch().map_err(|e| at(&cur.path, e))?;
            }
            cur.pending.reverse();
        }
        let Some((name, kind)) = cur.pending.pop() else {
            // Empty: remove it from its parent.
            let done = levels.pop();
            if let Some(done) = done {
                let parent = levels.last().map_or(parent.as_raw_fd(), |l| l.stream.fd());
                drop(done.stream);
                unlink_at(parent, &done.name, libc::AT_REMOVEDIR).map_err(|e| at(&done.path, e))?;
            }
            continue;
        };
        let path = cur.path.join(std::ffi::OsStr::from_bytes(name.to_bytes()));
        let is_dir = match kind {
            libc::DT_DIR => true,
            libc::DT_UNKNOWN => is_dir_at(cur.stream.fd(), &name),
            _ => false,
        };
        if !is_dir {
            unlink_at(cur.stream.fd(), &name, 0).map_err(|e| at(&path, e))?;
            continue;
        }
        // SAFETY: the stream's fd stays open while `cur` lives; borrowed for this call only.
        let fd = open_subdir(unsafe { BorrowedFd::borrow_raw(cur.stream.fd()) }, &name)
            .map_err(|e| at(&path, e))?;
        if depth >= MAX_OPEN_LEVELS {
            // Checked above to be a directory of this mount; moved up, it is removed from the
            // top once the top's own entries are done.
            drop(fd);
            hoist(cur.stream.fd(), &name, top_fd, &mut hoist_seq).map_err(|e| at(&path, e))?;
            hoisted = true;
            continue;
        }
        levels.push(Level {
            stream: Stream::new(fd).map_err(|e| at(&path, e))?,
            name,
            path,
            pending: Vec::new(),
        });
    }
    Ok(())
}

/// Moves directory `name` of `dir` to the top directory `top` under a name of its own
/// ([`HOISTED`] and the first free number from `seq` on): `RENAME_NOREPLACE`, or where the
/// file system refuses that flag (`EINVAL`), a plain rename, which may replace an empty
/// directory of that name (everything under `top` is being removed: nothing is lost) and skips
/// a name that holds anything else.
fn hoist(dir: RawFd, name: &CStr, top: RawFd, seq: &mut u64) -> io::Result<()> {
    hoist_with(dir, name, top, seq, libc::RENAME_NOREPLACE)
}

/// [`hoist`], first trying the rename flags `flags`.
fn hoist_with(
    dir: RawFd,
    name: &CStr,
    top: RawFd,
    seq: &mut u64,
    mut flags: libc::c_uint,
) -> io::Result<()> {
    loop {
        let to = CString::new(format!("{HOISTED}{seq}"))
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: renameat2 on two valid directory fds with NUL-terminated names.
        let r = unsafe { libc::renameat2(dir, name.as_ptr(), top, to.as_ptr(), flags) };
        if r == 0 {
            *seq += 1;
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            // The name is taken (by anything, or by a non-empty directory or a file).
            Some(libc::EEXIST | libc::ENOTEMPTY | libc::ENOTDIR) => *seq += 1,
            Some(libc::EINVAL) if flags != 0 => flags = 0,
            _ => return Err(e),
        }
    }
}

fn parent_fd(f: &std::fs::File) -> BorrowedFd<'_> {
    // SAFETY: the file is open for the borrow's lifetime.
    unsafe { BorrowedFd::borrow_raw(f.as_raw_fd()) }
}

fn is_dir_at(dir: RawFd, name: &CStr) -> bool {
    crate::podfile::file_type_at(dir, name) == Some(libc::S_IFDIR)
}

/// `e` with the path it happened at (the kind and errno kept).
fn at(path: &Path, e: io::Error) -> io::Error {
    let what = if e.raw_os_error() == Some(MOUNT_REMAINS) {
        "a mount remains at".to_string()
    } else {
        format!("{e}: at")
    };
    io::Error::new(e.kind(), format!("{what} {}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn removes_a_tree_without_following_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir_all(outside.join("keep")).unwrap();
        std::fs::write(outside.join("keep/f"), b"x").unwrap();
        let d = t.path().join("pod");
        let mut deep = d.clone();
        for i in 0..300 {
            deep.push(format!("d{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        for i in 0..1000 {
            std::fs::write(d.join(format!("f{i}")), b"data").unwrap();
        }
        std::fs::write(deep.join("leaf"), b"x").unwrap();
        symlink(&outside, d.join("link")).unwrap();
        symlink(&outside, deep.join("link")).unwrap();
        let fifo = CString::new(d.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        remove_tree(&d).unwrap();
        assert!(!d.exists());
        assert!(outside.join("keep/f").is_file(), "a symlink's target stays");
        remove_tree(&d).unwrap(); // Gone already: fine.
    }

    /// Makes a chain of `n` directories `d` below `top`, each relative to the last (the path
    /// is far beyond `PATH_MAX`), with a file in every 100th.
    fn chain(top: &Path, n: usize) {
        let d = CString::new("d").unwrap();
        let f = CString::new("f").unwrap();
        let mut cur = std::fs::File::open(top).unwrap();
        for i in 0..n {
            // SAFETY: mkdirat/openat/openat on a valid fd with NUL-terminated names; the
            // returned fds are checked and owned by the Files made from them.
            unsafe {
                assert_eq!(libc::mkdirat(cur.as_raw_fd(), d.as_ptr(), 0o755), 0);
                if i % 100 == 0 {
                    let fd = libc::openat(
                        cur.as_raw_fd(),
                        f.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY,
                        0o644,
                    );
                    assert!(fd >= 0);
                    libc::close(fd);
                }
                let fd = libc::openat(
                    cur.as_raw_fd(),
                    d.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY,
                );
                assert!(fd >= 0);
                cur = <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd);
            }
        }
    }

    /// Set in the child that [`removes_a_chain_deeper_than_the_open_levels_it_may_keep`] runs
    /// the removal in: the tree to remove.
    const CHILD_TREE: &str = "POD_ABI_REMOVE_TEST_TREE";

    #[test]
    fn removes_a_chain_deeper_than_the_open_levels_it_may_keep() {
        // Attack: a pod's chain of 3000 nested directories (any app can make one) took one
        // descriptor per level, so `rkt gc` failed on it with EMFILE wherever the open-file
        // limit is below its depth, every time. Removed here by this test binary run again with
        // an open-file limit of 256. A directory named like a moved one is in the way of the
        // first move.
        if let Some(tree) = std::env::var_os(CHILD_TREE) {
            remove_tree(Path::new(&tree)).unwrap();
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("pod");
        std::fs::create_dir_all(d.join(format!("{HOISTED}0/x"))).unwrap();
        chain(&d, 3000);
        chain(&d.join(format!("{HOISTED}0")), 200);
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "remove::tests::removes_a_chain_deeper_than_the_open_levels_it_may_keep",
            ])
            .env(CHILD_TREE, &d);
        // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut child, || {
                let lim = libc::rlimit {
                    rlim_cur: 256,
                    rlim_max: 256,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let out = child.output().unwrap();
        if !out.status.success() {
            // Here, with no limit but this process's (the temporary directory's own removal
            // would recurse through all 3000 levels).
            let _ = remove_tree(&d);
        }
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(!d.exists());
    }

    #[test]
    fn a_plain_rename_skips_names_that_hold_something() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().unwrap();
        let top = d.path();
        std::fs::create_dir_all(top.join("a/deep/inside")).unwrap();
        // Taken: a non-empty directory and a file; free: an empty directory.
        std::fs::create_dir_all(top.join(format!("{HOISTED}0/x"))).unwrap();
        std::fs::write(top.join(format!("{HOISTED}1")), b"f").unwrap();
        std::fs::create_dir(top.join(format!("{HOISTED}2"))).unwrap();
        let a = std::fs::File::open(top.join("a")).unwrap();
        let t = std::fs::File::open(top).unwrap();
        let name = CString::new(std::ffi::OsStr::new("deep").as_bytes()).unwrap();
        let mut seq = 0;
        hoist_with(a.as_raw_fd(), &name, t.as_raw_fd(), &mut seq, 0).unwrap();
        assert_eq!(seq, 3);
        assert!(top.join(format!("{HOISTED}2/inside")).is_dir());
        assert!(top.join(format!("{HOISTED}0/x")).is_dir());
        assert!(!top.join("a/deep").exists());
    }

    #[test]
    fn stops_at_a_mount_point_and_leaves_its_contents() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP stops_at_a_mount_point_and_leaves_its_contents: needs root (mount)");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let source = t.path().join("volume");
        std::fs::create_dir_all(&source).unwrap();
        std::fs::write(source.join("precious"), b"data").unwrap();
        let d = t.path().join("pod");
        let target = d.join("rootfs/data");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(d.join("rootfs/other"), b"x").unwrap();
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
        let (s, tg) = (c(&source), c(&target));
        // SAFETY: bind mount between two NUL-terminated paths of this test.
        let r = unsafe {
            libc::mount(
                s.as_ptr(),
                tg.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if r != 0 {
            eprintln!(
                "SKIP stops_at_a_mount_point_and_leaves_its_contents: bind mount: {}",
                io::Error::last_os_error()
            );
            return;
        }
        let e = remove_tree(&d).unwrap_err();
        // SAFETY: unmount the test's own mount.
        unsafe { libc::umount2(tg.as_ptr(), libc::MNT_DETACH) };
        assert!(e.to_string().contains("a mount remains at"), "{e}");
        assert!(e.to_string().contains("rootfs/data"), "{e}");
        assert!(source.join("precious").is_file(), "the volume is untouched");
        remove_tree(&d).unwrap();
        assert!(!d.exists());
    }
}
