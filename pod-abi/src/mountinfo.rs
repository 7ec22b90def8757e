//! `/proc/self/mountinfo`: the mount points of a mount namespace, octal escapes decoded (the
//! one parser for rkt, the stage1 flavors and guest-init).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// The calling process's mount table.
pub const SELF: &str = "/proc/self/mountinfo";

/// Decodes the octal escapes of a mountinfo path field (`\040` space, `\011` tab, `\012`
/// newline, `\134` backslash), byte for byte; anything else is kept as it is (the kernel
/// writes every other byte raw, non-UTF-8 ones included: a pod that renames a directory above
/// a mount chooses them).
pub fn unescape(b: &[u8]) -> OsString {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|x| (b'0'..=b'7').contains(x)))
            .and_then(|d| {
                u8::try_from(d.iter().fold(0u32, |a, x| a * 8 + u32::from(x - b'0'))).ok()
            });
        match (c, oct) {
            (b'\\', Some(v)) => {
                out.push(v);
                i += 4;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    OsString::from_vec(out)
}

/// The mount points (field 5) of a mountinfo text (bytes, as the kernel writes it), in its
/// order, one per mount.
pub fn mount_points(text: &[u8]) -> Vec<PathBuf> {
    text.split(|&b| b == b'\n')
        .filter_map(|l| l.split(|&b| b == b' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .collect()
}

/// Whether a mount sits on `path` (symlinks followed, as a path-based mount would): the
/// root-of-a-mount attribute of `statx(2)` (Linux 5.8), one system call; on older kernels the
/// table ([`MountTable::read`]) with `path` canonicalized. An unreadable path or table is an
/// error.
pub fn is_mount_point(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a zeroed statx is a valid buffer for the kernel to fill.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a writable statx buffer for this call.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_NO_AUTOMOUNT,
            libc::STATX_TYPE,
            &mut st,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let root = u64::try_from(libc::STATX_ATTR_MOUNT_ROOT).unwrap_or(0);
    if st.stx_attributes_mask & root != 0 {
        return Ok(st.stx_attributes & root != 0);
    }
    let canon = crate::paths::canonicalize(path)?;
    Ok(MountTable::read()?.contains(&canon))
}

/// A mount table read once: each mount point with the number of mounts stacked on it.
/// Reading it once for many directories keeps a walk over many pods linear (`rkt gc`: a read
/// per pod made it quadratic in the pods on the host, as exited pods keep their overlays
/// mounted until gc).
#[derive(Debug, Default, Clone)]
pub struct MountTable {
    /// Mount point -> how many mounts sit on it.
    points: BTreeMap<PathBuf, usize>,
}

impl MountTable {
    /// Reads the calling process's table ([`SELF`]). A table that cannot be read is an error,
    /// never an empty table: a caller about to remove a directory must not take "unreadable"
    /// for "nothing mounted".
    pub fn read() -> std::io::Result<MountTable> {
        std::fs::read(SELF).map(|t| MountTable::parse(&t))
    }

    /// Parses a mountinfo text (bytes, as the kernel writes it).
    pub fn parse(text: &[u8]) -> MountTable {
        let mut points = BTreeMap::new();
        for m in mount_points(text) {
            *points.entry(m).or_insert(0usize) += 1;
        }
        MountTable { points }
    }

    /// Whether a mount sits on `path` (compared as given: canonicalize first where needed).
    pub fn contains(&self, path: &Path) -> bool {
        self.points.contains_key(path)
    }

    /// Mount points at or under `dir`, deepest first, each as often as mounts are stacked on
    /// it: unmounting the list in order leaves nothing under `dir` that the table knew of.
    pub fn under(&self, dir: &Path) -> Vec<PathBuf> {
        // Paths order component by component, so `dir` and everything below it are one
        // contiguous range starting at `dir`.
        let mut out: Vec<(&PathBuf, usize)> = self
            .points
            .range::<Path, _>((std::ops::Bound::Included(dir), std::ops::Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(dir))
            .map(|(p, n)| (p, *n))
            .collect();
        out.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        out.into_iter()
            .flat_map(|(p, n)| std::iter::repeat_n(p.clone(), n))
            .collect()
    }

    /// [`MountTable::under`] with each mount point once.
    pub fn points_under(&self, dir: &Path) -> Vec<PathBuf> {
        let mut out = self.under(dir);
        out.dedup();
        out
    }
}

/// A mount point from the table, reached again from a directory the host trusts without
/// following a symlink ([`pin_beneath`]), named by its `/proc/self/fd/N` path: `umount2(2)`
/// and `mount(2)` given that path act on exactly the mount the descriptor holds.
#[derive(Debug)]
pub struct Pinned {
    fd: std::os::fd::OwnedFd,
    path: PathBuf,
}

impl Pinned {
    /// `/proc/self/fd/N` of the pinned mount point.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `O_PATH` descriptor.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.fd)
    }
}

/// Re-resolves `point`, a mount point the table lists at or under `dir`, from `dir_fd` (`dir`
/// opened) with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`. The table's paths are only text: by
/// the time one is used, a component of it that a pod writes (a directory inside a volume
/// another running pod shares) can have become a symlink to anywhere on the host, which a
/// path-based `umount2` or remount would follow (`UMOUNT_NOFOLLOW` guards the last component
/// only). A trailing symlink pins the link itself, which is no mount point. `ENOSYS` (a
/// kernel before 5.6) is returned as it is.
pub fn pin_beneath(
    dir_fd: std::os::fd::BorrowedFd<'_>,
    dir: &Path,
    point: &Path,
) -> std::io::Result<Pinned> {
    use std::os::fd::AsRawFd;
    let rel = point
        .strip_prefix(dir)
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EXDEV))?;
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let fd = crate::podfile::openat2_beneath_mode(dir_fd, rel, libc::O_PATH, 0)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    Ok(Pinned { fd, path })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn c(p: &Path) -> std::ffi::CString {
        std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
    }

    fn tmpfs(p: &Path) {
        std::fs::create_dir_all(p).unwrap();
        let (src, ty) = (c(Path::new("tmpfs")), c(Path::new("tmpfs")));
        // SAFETY: mount with NUL-terminated strings we own and no data.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                c(p).as_ptr(),
                ty.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(
            r,
            0,
            "mount {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
    }

    fn detach(p: &Path) -> i32 {
        // SAFETY: umount2 with a NUL-terminated path we own.
        unsafe { libc::umount2(c(p).as_ptr(), libc::MNT_DETACH) }
    }

    /// Whether the test runs as root (mounts); says why it skips otherwise.
    fn root(test: &str) -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            println!("SKIP: {test}: needs root");
        }
        root
    }

    /// A table path whose middle component a running pod turned into a symlink to a host
    /// directory is refused (the path-based unmount would have taken the host's mount); the
    /// mount pinned by its current name is the pod's own. Needs root (tmpfs mounts under a
    /// fresh temporary directory, detached at the end).
    #[test]
    fn a_pinned_mount_point_is_the_one_listed_never_one_a_symlink_leads_to() {
        if !root("a_pinned_mount_point_is_the_one_listed_never_one_a_symlink_leads_to") {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let pod = t.path().join("pod");
        let host = t.path().join("host");
        tmpfs(&pod.join("vol/d/m"));
        tmpfs(&host.join("m"));
        let listed = pod.join("vol/d/m");
        assert!(MountTable::read().unwrap().contains(&listed));
        // A running pod that writes vol/ swaps d for a symlink to the host directory.
        std::fs::rename(pod.join("vol/d"), pod.join("vol/d2")).unwrap();
        std::os::unix::fs::symlink(&host, pod.join("vol/d")).unwrap();
        // What the table's text leads a path-based unmount to: the host's mount.
        // SAFETY: umount2 with a NUL-terminated path we own.
        let r = unsafe {
            libc::umount2(
                c(&listed).as_ptr(),
                libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW,
            )
        };
        assert_eq!(r, 0);
        assert!(!MountTable::read().unwrap().contains(&host.join("m")));
        tmpfs(&host.join("m"));
        let dir = crate::podfile::open_dir(&pod).unwrap();
        let dfd = std::os::fd::AsFd::as_fd(&dir);
        let e = pin_beneath(dfd, &pod, &listed).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        // Pinned by its current name, the pod's own mount goes; the host's stays.
        let moved = pod.join("vol/d2/m");
        let p = pin_beneath(dfd, &pod, &moved).unwrap();
        assert_eq!(detach(p.path()), 0, "{}", std::io::Error::last_os_error());
        let table = MountTable::read().unwrap();
        assert!(!table.contains(&moved) && table.contains(&host.join("m")));
        // The directory itself pins as "."; a path outside it does not pin.
        assert!(pin_beneath(dfd, &pod, &pod).is_ok());
        assert!(pin_beneath(dfd, &pod, &host).is_err());
        assert_eq!(detach(&host.join("m")), 0);
    }

    #[test]
    fn a_mount_point_is_told_from_a_directory_as_the_table_tells_it() {
        if !root("a_mount_point_is_told_from_a_directory_as_the_table_tells_it") {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let m = t.path().join("m");
        let plain = t.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        tmpfs(&m);
        std::fs::create_dir(m.join("sub")).unwrap();
        std::os::unix::fs::symlink(&m, t.path().join("link")).unwrap();
        let table = MountTable::read().unwrap();
        for (p, want) in [
            (m.clone(), true),
            (t.path().join("link"), true),
            (plain.clone(), false),
            (m.join("sub"), false),
            (t.path().to_path_buf(), table.contains(t.path())),
        ] {
            assert_eq!(is_mount_point(&p).unwrap(), want, "{}", p.display());
        }
        assert!(is_mount_point(&t.path().join("missing")).is_err());
        assert_eq!(detach(&m), 0);
        assert!(!is_mount_point(&m).unwrap());
    }

    #[test]
    fn escapes_are_decoded_byte_for_byte() {
        let unescape = |s: &str| unescape(s.as_bytes());
        assert_eq!(unescape("/a\\040b"), OsString::from("/a b"));
        assert_eq!(
            unescape("/t\\011n\\012s\\134"),
            OsString::from("/t\tn\ns\\")
        );
        assert_eq!(unescape("/plain"), OsString::from("/plain"));
        assert_eq!(unescape("/x\\"), OsString::from("/x\\"));
        assert_eq!(unescape("/x\\9aa"), OsString::from("/x\\9aa"));
        // Not a byte: kept as written.
        assert_eq!(unescape("/x\\777"), OsString::from("/x\\777"));
        assert_eq!(unescape("/\\377"), OsString::from_vec(vec![b'/', 0xff]));
    }

    #[test]
    fn mount_points_in_order() {
        let t = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n30 22 0:5 / /a\\040b rw - tmpfs t rw\n";
        assert_eq!(
            mount_points(t.as_bytes()),
            vec![PathBuf::from("/"), PathBuf::from("/a b")]
        );
    }

    #[test]
    fn a_directory_deepest_first_with_stacked_mounts() {
        let line = |n: u32, m: &str| format!("{n} 1 0:1 / {m} rw - tmpfs tmpfs rw\n");
        let text = [
            line(1, "/"),
            line(2, "/d/pods/p1"),
            line(3, "/d/pods/p1/stage1/rootfs"),
            line(4, "/d/pods/p1/stage1/rootfs/opt/app\\040x"),
            line(5, "/d/pods/p1/stage1/rootfs"),
            line(6, "/d/pods/p10/stage1/rootfs"),
            line(7, "/d/pods/p0"),
        ]
        .concat();
        let t = MountTable::parse(text.as_bytes());
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            t.under(Path::new("/d/pods/p1")),
            vec![
                p("/d/pods/p1/stage1/rootfs/opt/app x"),
                p("/d/pods/p1/stage1/rootfs"),
                p("/d/pods/p1/stage1/rootfs"),
                p("/d/pods/p1"),
            ]
        );
        assert_eq!(
            t.points_under(Path::new("/d/pods/p1")),
            vec![
                p("/d/pods/p1/stage1/rootfs/opt/app x"),
                p("/d/pods/p1/stage1/rootfs"),
                p("/d/pods/p1"),
            ]
        );
        assert_eq!(
            t.under(Path::new("/d/pods/p10")),
            vec![p("/d/pods/p10/stage1/rootfs")]
        );
        assert!(t.under(Path::new("/d/pods/p2")).is_empty());
        assert_eq!(t.under(Path::new("/")).len(), 7);
        assert!(t.contains(Path::new("/d/pods/p0")));
        assert!(!t.contains(Path::new("/d/pods")));
    }

    #[test]
    fn a_mount_point_that_is_not_utf8_is_still_a_mount_point() {
        // What a pod makes by renaming a directory above one of the host's mounts to "\xff".
        let mut text = b"1 0 0:1 / / rw - ext4 d rw\n2 1 0:2 / /d/pods/p1/rootfs/".to_vec();
        text.extend_from_slice(&[0xff, b'/', b'v']);
        text.extend_from_slice(b" rw - ext4 d rw\n3 1 0:3 / /d/pods/p2/rootfs rw - tmpfs t rw\n");
        let t = MountTable::parse(&text);
        let odd = PathBuf::from(OsString::from_vec(b"/d/pods/p1/rootfs/\xff/v".to_vec()));
        assert_eq!(t.under(Path::new("/d/pods/p1")), vec![odd]);
        assert_eq!(t.under(Path::new("/d/pods/p2")).len(), 1);
    }
}
