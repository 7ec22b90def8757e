//! The calls of Linux's new mount API the project uses (open_tree(2) and move_mount(2) since
//! 5.2, mount_setattr(2) since 5.12), for the volumes of apps added to a running pod (`rkt app
//! add --mnt-volume`): stage0 clones each volume's source into a detached mount tree in the
//! host's mount namespace (read-only already where the volume is, [`clone_tree`] and
//! [`set_attrs`]), and the stage1 attaches it inside the pod's mount namespace
//! ([`attach_in_namespace`]), where no path of the host resolves.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

pub use libc::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

fn owned(r: libc::c_long) -> io::Result<OwnedFd> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = libc::c_int::try_from(r).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn rc(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A detached copy of the mount at `src` (an `O_PATH` descriptor), with every mount below it
/// when `recursive`: open_tree(2) with `OPEN_TREE_CLONE`, close-on-exec.
pub fn clone_tree(src: BorrowedFd<'_>, recursive: bool) -> io::Result<OwnedFd> {
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as u32;
    if recursive {
        flags |= libc::AT_RECURSIVE as u32;
    }
    // SAFETY: open_tree on a descriptor we borrow, an empty NUL-terminated path and flags; the
    // result is checked.
    owned(unsafe { libc::syscall(libc::SYS_open_tree, src.as_raw_fd(), c"".as_ptr(), flags) })
}

/// Sets the mount attributes `set` (`MOUNT_ATTR_*`) on the mount `fd` refers to and, when
/// `recursive`, on every mount below it: mount_setattr(2) with `AT_EMPTY_PATH`.
pub fn set_attrs(fd: BorrowedFd<'_>, set: u64, recursive: bool) -> io::Result<()> {
    setattr(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH, set, recursive)
}

/// [`set_attrs`] on the mount at `path` (its last component not followed).
pub fn set_attrs_at(path: &Path, set: u64, recursive: bool) -> io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    setattr(
        libc::AT_FDCWD,
        &c,
        libc::AT_SYMLINK_NOFOLLOW,
        set,
        recursive,
    )
}

fn setattr(
    dirfd: libc::c_int,
    path: &std::ffi::CStr,
    mut flags: libc::c_int,
    set: u64,
    recursive: bool,
) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: mount_setattr on a descriptor (or AT_FDCWD) the caller holds, a NUL-terminated
    // path and an initialized mount_attr of the size passed, all outliving the call; the
    // result is checked.
    rc(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    })
}

/// Attaches the detached tree `tree` on the file or directory `target` refers to, in the
/// caller's mount namespace: move_mount(2) between two descriptors.
pub fn move_onto(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    let flags = libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH;
    // SAFETY: move_mount between two borrowed descriptors with empty NUL-terminated paths;
    // the result is checked.
    rc(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            flags,
        )
    })
}

/// How many symlinks [`make_target`] follows before it fails with `ELOOP` (Linux's limit).
const MAX_LINKS: usize = 40;

/// Opens (`O_PATH`) the mount point `target` beneath the directory `root`, creating what is
/// missing: directories of mode 0755 and, when `dir` is false, an empty file of mode 0644 as
/// the last component. Symlinks on the way resolve as if `root` were `/` (as guest-init
/// resolves the same target, `app_confine::paths::secure_join`), dangling ones included: each
/// is read and its text walked here, one component at a time from descriptors, `..` never
/// above `root`, so nothing a pod writes there, or swaps while this runs, leads out of `root`.
/// `target` itself must not contain `..`.
pub fn make_target(root: BorrowedFd<'_>, target: &str, dir: bool) -> io::Result<OwnedFd> {
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("mount target {target:?}: {why}"),
        )
    };
    let mut todo: std::collections::VecDeque<std::ffi::OsString> =
        std::collections::VecDeque::new();
    for c in Path::new(target).components() {
        match c {
            Component::Normal(n) => todo.push_back(n.to_os_string()),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(bad("must be a path without \"..\""))
            }
        }
    }
    if todo.is_empty() {
        return Err(bad("names no file beneath the app's root"));
    }
    // The directories walked so far; empty: at `root`.
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            stack.pop();
            continue;
        }
        if name == "." || name.is_empty() {
            continue;
        }
        let last = todo.is_empty();
        let base = stack.last().map_or(root, |f| f.as_fd());
        let c = CString::new(name.as_bytes()).map_err(|_| bad("contains a NUL byte"))?;
        let open = || {
            // SAFETY: openat on a borrowed directory descriptor with a NUL-terminated name;
            // the result is checked.
            owned(libc::c_long::from(unsafe {
                libc::openat(
                    base.as_raw_fd(),
                    c.as_ptr(),
                    libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            }))
        };
        let fd = match open() {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                create_at(base, &c, last && !dir)?;
                open()?
            }
            r => r?,
        };
        let st = fstat(fd.as_fd())?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFLNK => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let text = readlink(fd.as_fd())?;
                let p = Path::new(&text);
                if p.is_absolute() {
                    stack.clear();
                }
                for c in p.components().rev() {
                    match c {
                        Component::Normal(n) => todo.push_front(n.to_os_string()),
                        Component::ParentDir => todo.push_front("..".into()),
                        _ => {}
                    }
                }
            }
            libc::S_IFDIR => stack.push(fd),
            _ if last && !dir => return Ok(fd),
            _ => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        }
    }
    // The walk ended on a directory (or climbed back to the root through `..`).
    match stack.pop() {
        Some(fd) if dir => Ok(fd),
        Some(_) => Err(io::Error::from_raw_os_error(libc::EISDIR)),
        None => Err(bad("resolves to the app's root itself")),
    }
}

/// The text of the symlink `fd` (an `O_PATH | O_NOFOLLOW` descriptor of it), at most
/// `PATH_MAX` bytes.
fn readlink(fd: BorrowedFd<'_>) -> io::Result<std::ffi::OsString> {
    use std::os::unix::ffi::OsStringExt;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat of the link itself (empty path) into a buffer we own, of the length
    // given; the result is checked.
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    buf.truncate(n);
    Ok(std::ffi::OsString::from_vec(buf))
}

/// Creates the directory (0755) or empty file (0644) `c` in `dir` (an `O_PATH` descriptor
/// of a directory); something already there is left alone.
fn create_at(dir: BorrowedFd<'_>, c: &std::ffi::CStr, file: bool) -> io::Result<()> {
    let r = if file {
        // SAFETY: openat on a borrowed directory descriptor with a NUL-terminated name; the
        // descriptor returned is closed at once.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o644 as libc::c_uint,
            )
        };
        owned(libc::c_long::from(fd)).map(drop)
    } else {
        // SAFETY: mkdirat on a borrowed directory descriptor with a NUL-terminated name.
        rc(libc::c_long::from(unsafe {
            libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755)
        }))
    };
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

/// One detached tree to attach: the tree and its target in the app's root.
#[derive(Debug)]
pub struct Attach<'a> {
    /// A detached mount tree ([`clone_tree`]).
    pub tree: BorrowedFd<'a>,
    /// Absolute path in the app's root.
    pub target: &'a str,
}

/// Attaches each tree at its target beneath `app_root` (an absolute path in that namespace)
/// inside the mount namespace `ns` (a `/proc/<pid>/ns/mnt` descriptor), after setting the mount
/// attributes `attrs` on it (0: none). Runs on a thread of its own that leaves the process's
/// file-system context (`unshare(CLONE_FS)`) to join `ns`, so the caller stays where it is.
/// `app_root` is opened without following any symlink; each target as [`make_target`] does.
/// Stops at the first failure (trees attached before it stay).
pub fn attach_in_namespace(
    ns: BorrowedFd<'_>,
    app_root: &Path,
    trees: &[Attach<'_>],
    attrs: u64,
) -> io::Result<()> {
    let rel = app_root.strip_prefix("/").unwrap_or(app_root).to_path_buf();
    std::thread::scope(|s| {
        s.spawn(|| -> io::Result<()> {
            // SAFETY: unshare of this thread's file-system context only; no memory involved.
            rc(libc::c_long::from(unsafe { libc::unshare(libc::CLONE_FS) }))?;
            // SAFETY: setns with a borrowed namespace descriptor; this thread's root and
            // working directory become the namespace's root.
            rc(libc::c_long::from(unsafe {
                libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNS)
            }))
            .map_err(|e| {
                io::Error::new(e.kind(), format!("join the pod's mount namespace: {e}"))
            })?;
            // SAFETY: open of a NUL-terminated path; the result is checked.
            let top = owned(libc::c_long::from(unsafe {
                libc::open(
                    c"/".as_ptr(),
                    libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
                )
            }))?;
            let root = crate::podfile::openat2_beneath(
                top.as_fd(),
                &rel,
                libc::O_PATH | libc::O_DIRECTORY,
            )
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", app_root.display())))?;
            for t in trees {
                if attrs != 0 {
                    set_attrs(t.tree, attrs, true)?;
                }
                let st = fstat(t.tree)?;
                let dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
                let target = make_target(root.as_fd(), t.target, dir)?;
                move_onto(t.tree, target.as_fd()).map_err(|e| {
                    io::Error::new(e.kind(), format!("attach the volume at {}: {e}", t.target))
                })?;
            }
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the attaching thread panicked")))
    })
}

fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a borrowed descriptor, writing into the stat we own.
    rc(libc::c_long::from(unsafe {
        libc::fstat(fd.as_raw_fd(), &mut st)
    }))?;
    Ok(st)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn targets_are_made_beneath_the_root_whatever_the_symlinks_say() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        // An absolute and a climbing symlink, both aimed at `outside` on the host.
        std::os::unix::fs::symlink(&outside, root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../outside", root.join("etc/up")).unwrap();
        let rfd = std::fs::File::open(&root).unwrap();
        let t = make_target(rfd.as_fd(), "/abs/x/y", true).unwrap();
        assert!(fstat(t.as_fd()).is_ok());
        assert!(root
            .join(outside.strip_prefix("/").unwrap())
            .join("x/y")
            .is_dir());
        make_target(rfd.as_fd(), "/etc/up/f", false).unwrap();
        assert!(root.join("outside/f").is_file());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // Existing targets are opened as they are; `..` is refused.
        make_target(rfd.as_fd(), "etc", true).unwrap();
        assert!(make_target(rfd.as_fd(), "/a/../b", true).is_err());
        assert!(make_target(rfd.as_fd(), "/", true).is_err());
        // A file where a directory is wanted fails.
        assert!(make_target(rfd.as_fd(), "/outside/f/g", true).is_err());
    }
}
