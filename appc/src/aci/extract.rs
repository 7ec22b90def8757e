//! Hardened extraction of an ACI's `rootfs/`: every path component is opened relative to
//! its parent with `O_NOFOLLOW`, so no symlink in the image (or left by an earlier layer)
//! is ever followed and nothing is created outside the destination.
//!
//! Later entries replace earlier ones (also across calls into the same destination, which
//! is how dependency layers are rendered): a directory needed where something else is
//! (e.g. a symlink to a directory) replaces it instead of following it.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use tar::EntryType;

use super::fsat::{self, Existing};
use super::layout::{clean_path, MAX_PATH_BYTES};
use super::{AciError, EntryProblem};

/// Mode of directories created implicitly (permission bits).
const IMPLIED_DIR_MODE: u32 = 0o755;
/// Copy buffer for file data (bytes).
const COPY_BUF_BYTES: usize = 256 << 10;
/// Prefix of pax records carrying extended attributes.
const PAX_XATTR: &str = "SCHILY.xattr.";

/// Options of [`extract_rootfs`].
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Absolute paths to keep (empty = everything). A listed directory keeps its subtree;
    /// directories leading to a listed path are kept too.
    pub whitelist: Vec<String>,
    /// Create device nodes and fifos (otherwise they are an error).
    pub allow_devices: bool,
    /// Apply the archive's uid/gid (default: when running as root).
    pub preserve_owner: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        Self {
            whitelist: Vec::new(),
            allow_devices: false,
            preserve_owner: fsat::is_root(),
        }
    }
}

/// The path filter built from `ExtractOptions::whitelist`.
struct Whitelist(Vec<Vec<u8>>);

impl Whitelist {
    fn new(list: &[String]) -> Self {
        Self(
            list.iter()
                .map(|p| clean_path(p.trim_start_matches('/').as_bytes()).unwrap_or_default())
                .filter(|p| !p.is_empty())
                .collect(),
        )
    }

    /// Whether the rootfs-relative `rel` is kept (`is_dir`: it is a directory entry).
    fn keeps(&self, rel: &[u8], is_dir: bool) -> bool {
        if self.0.is_empty() {
            return true;
        }
        self.0.iter().any(|w| {
            rel == w.as_slice()
                || (rel.starts_with(w) && rel.get(w.len()) == Some(&b'/'))
                || (is_dir && w.starts_with(rel) && w.get(rel.len()) == Some(&b'/'))
        })
    }
}

/// Open directories from the root down to the current entry's parent.
struct DirStack {
    root: OwnedFd,
    /// (component, fd) pairs of the current parent chain.
    stack: Vec<(Vec<u8>, OwnedFd)>,
}

fn ex<'a>(path: &'a [u8], op: &'static str) -> impl FnOnce(io::Error) -> AciError + 'a {
    move |source| AciError::Extract {
        path: String::from_utf8_lossy(path).into_owned(),
        op,
        source,
    }
}

/// Open (creating or replacing as needed) directory `name` in `dir`.
fn ensure_dir(dir: BorrowedFd<'_>, name: &[u8], rel: &[u8]) -> Result<OwnedFd, AciError> {
    match fsat::open_dir(dir, name) {
        Ok(fd) => return Ok(fd),
        Err(e) => match e.raw_os_error() {
            Some(libc::ENOENT) => {}
            // A symlink (ELOOP) or a non-directory (ENOTDIR): replace, never follow.
            Some(libc::ELOOP | libc::ENOTDIR) => {
                fsat::remove_all(dir, name).map_err(ex(rel, "unlinkat"))?
            }
            _ => return Err(ex(rel, "openat")(e)),
        },
    }
    fsat::mkdir(dir, name, IMPLIED_DIR_MODE).map_err(ex(rel, "mkdirat"))?;
    fsat::open_dir(dir, name).map_err(ex(rel, "openat"))
}

impl DirStack {
    /// The directory holding `parents` (rootfs-relative components), created as needed.
    fn parent(&mut self, parents: &[&[u8]], rel: &[u8]) -> Result<BorrowedFd<'_>, AciError> {
        let common = self
            .stack
            .iter()
            .zip(parents)
            .take_while(|((have, _), want)| have.as_slice() == **want)
            .count();
        self.stack.truncate(common);
        for comp in parents.iter().skip(common) {
            let fd = {
                let dir = self.stack.last().map(|(_, fd)| fd).unwrap_or(&self.root);
                ensure_dir(dir.as_fd(), comp, rel)?
            };
            self.stack.push((comp.to_vec(), fd));
        }
        Ok(self
            .stack
            .last()
            .map(|(_, fd)| fd)
            .unwrap_or(&self.root)
            .as_fd())
    }

    /// Open the existing directory chain `parents` without creating anything.
    fn lookup(&self, parents: &[&[u8]], rel: &[u8]) -> Result<Option<OwnedFd>, AciError> {
        let mut cur: Option<OwnedFd> = None;
        for comp in parents {
            let dir = cur.as_ref().unwrap_or(&self.root);
            match fsat::open_dir(dir.as_fd(), comp) {
                Ok(fd) => cur = Some(fd),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
                Err(e) => return Err(ex(rel, "openat")(e)),
            }
        }
        match cur {
            Some(fd) => Ok(Some(fd)),
            None => fsat::open_dir(self.root.as_fd(), b".")
                .map(Some)
                .map_err(ex(rel, "openat")),
        }
    }
}

/// Run `create`; if the name is taken, remove what is there (recursively, never following
/// symlinks) and run it again. Fresh extractions pay no extra syscall.
fn replacing<T>(
    dir: BorrowedFd<'_>,
    name: &[u8],
    rel: &[u8],
    op: &'static str,
    create: impl Fn() -> io::Result<T>,
) -> Result<T, AciError> {
    match create() {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            fsat::remove_all(dir, name).map_err(ex(rel, "unlinkat"))?;
            create().map_err(ex(rel, op))
        }
        r => r.map_err(ex(rel, op)),
    }
}

/// Split a clean rootfs-relative path into parent components and the final name.
fn split(rel: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut comps: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
    let name = comps.pop().unwrap_or_default();
    (comps, name)
}

/// A directory whose mode and mtime are applied after all its children exist.
struct DeferredDir {
    rel: Vec<u8>,
    mode: u32,
    mtime: i64,
}

/// Extract the `rootfs/` part of an UNCOMPRESSED ACI tar into `dest` (which must exist),
/// hardened even for unvalidated input: `..`/absolute paths and entries outside `rootfs/`
/// are refused, nothing is created through a symlink, links are created as links (never
/// followed), devices only if allowed. Mode, mtime, xattrs and (when
/// `preserve_owner`) uid/gid are kept; directory modes and mtimes are applied at the end.
pub fn extract_rootfs<R: Read>(tar: R, dest: &Path, opts: &ExtractOptions) -> Result<(), AciError> {
    let root = fsat::open_root(dest).map_err(|e| AciError::Extract {
        path: dest.display().to_string(),
        op: "open",
        source: e,
    })?;
    let whitelist = Whitelist::new(&opts.whitelist);
    let mut dirs = DirStack {
        root,
        stack: Vec::new(),
    };
    let mut deferred: Vec<DeferredDir> = Vec::new();
    let mut buf = vec![0u8; COPY_BUF_BYTES];
    let mut archive = tar::Archive::new(super::TarGuard::new(tar));
    for entry in archive.entries().map_err(AciError::tar)? {
        let mut entry = entry.map_err(AciError::tar)?;
        let raw = entry.path_bytes().into_owned();
        let bad = |problem| AciError::Entry {
            path: String::from_utf8_lossy(&raw).into_owned(),
            problem,
        };
        let etype = entry.header().entry_type();
        if etype == EntryType::XGlobalHeader {
            continue;
        }
        let path = clean_path(&raw).map_err(bad)?;
        if path.len() > MAX_PATH_BYTES {
            return Err(bad(EntryProblem::PathTooLong));
        }
        if path.is_empty() || path == b"manifest" || path == b"rootfs" {
            continue;
        }
        let Some(rel) = path.strip_prefix(b"rootfs/") else {
            return Err(bad(EntryProblem::OutsideLayout));
        };
        if !whitelist.keeps(rel, etype == EntryType::Directory) {
            continue;
        }
        let h = entry.header();
        let mode = h.mode().map_err(AciError::CorruptTar)? & 0o7777;
        // Empty numeric fields (some writers leave them blank) read as 0.
        let mtime = i64::try_from(h.mtime().unwrap_or(0)).unwrap_or(0);
        let owner = if opts.preserve_owner {
            Some((
                u32::try_from(h.uid().unwrap_or(0)).unwrap_or(u32::MAX),
                u32::try_from(h.gid().unwrap_or(0)).unwrap_or(u32::MAX),
            ))
        } else {
            None
        };
        let xattrs = xattrs(&mut entry)?;
        let (parents, name) = split(rel);
        match etype {
            EntryType::Directory => {
                let dir = dirs.parent(&parents, rel)?;
                let fd = ensure_dir(dir, name, rel)?;
                if let Some((uid, gid)) = owner {
                    fsat::chown_fd(fd.as_fd(), uid, gid).map_err(ex(rel, "fchown"))?;
                }
                set_xattrs(fd.as_fd(), &xattrs, rel)?;
                deferred.push(DeferredDir {
                    rel: rel.to_vec(),
                    mode,
                    mtime,
                });
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let dir = dirs.parent(&parents, rel)?;
                let mut f = replacing(dir, name, rel, "openat", || fsat::create_file(dir, name))?;
                copy(&mut entry, &mut f, &mut buf).map_err(AciError::tar)?;
                if let Some((uid, gid)) = owner {
                    fsat::chown_fd(f.as_fd(), uid, gid).map_err(ex(rel, "fchown"))?;
                }
                fsat::chmod_fd(f.as_fd(), mode).map_err(ex(rel, "fchmod"))?;
                set_xattrs(f.as_fd(), &xattrs, rel)?;
                fsat::set_mtime_fd(f.as_fd(), mtime).map_err(ex(rel, "futimens"))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| bad(EntryProblem::EmptyLinkTarget))?
                    .into_owned();
                let dir = dirs.parent(&parents, rel)?;
                replacing(dir, name, rel, "symlinkat", || {
                    fsat::symlink(&target, dir, name)
                })?;
                if let Some((uid, gid)) = owner {
                    fsat::lchown_at(dir, name, uid, gid).map_err(ex(rel, "fchownat"))?;
                }
                fsat::set_mtime_at(dir, name, mtime).map_err(ex(rel, "utimensat"))?;
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                let missing = || {
                    bad(EntryProblem::HardlinkMissing(
                        String::from_utf8_lossy(&target).into_owned(),
                    ))
                };
                let t = clean_path(&target).map_err(|_| missing())?;
                let Some(trel) = t.strip_prefix(b"rootfs/") else {
                    return Err(missing());
                };
                if trel == rel {
                    return Err(missing());
                }
                let (tparents, tname) = split(trel);
                let tdir = match dirs.lookup(&tparents, rel)? {
                    Some(fd) => fd,
                    None if !whitelist.0.is_empty() => continue,
                    None => return Err(missing()),
                };
                match fsat::existing(tdir.as_fd(), tname).map_err(ex(rel, "fstatat"))? {
                    Existing::Other => {}
                    Existing::Missing if !whitelist.0.is_empty() => continue,
                    Existing::Missing => return Err(missing()),
                    Existing::Dir => {
                        return Err(bad(EntryProblem::HardlinkToDir(
                            String::from_utf8_lossy(&target).into_owned(),
                        )))
                    }
                }
                let dir = dirs.parent(&parents, rel)?;
                replacing(dir, name, rel, "linkat", || {
                    fsat::hardlink(tdir.as_fd(), tname, dir, name)
                })?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                if !opts.allow_devices {
                    return Err(bad(EntryProblem::Device));
                }
                let kind = match etype {
                    EntryType::Char => libc::S_IFCHR,
                    EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                // Blank device fields (common for fifos) read as 0.
                let major = entry.header().device_major().ok().flatten().unwrap_or(0);
                let minor = entry.header().device_minor().ok().flatten().unwrap_or(0);
                let dir = dirs.parent(&parents, rel)?;
                replacing(dir, name, rel, "mknodat", || {
                    fsat::mknod(dir, name, kind | mode, libc::makedev(major, minor))
                })?;
                if let Some((uid, gid)) = owner {
                    fsat::lchown_at(dir, name, uid, gid).map_err(ex(rel, "fchownat"))?;
                }
                fsat::chmod_at(dir, name, mode).map_err(ex(rel, "fchmodat"))?;
                fsat::set_mtime_at(dir, name, mtime).map_err(ex(rel, "utimensat"))?;
            }
            other => {
                return Err(bad(EntryProblem::UnsupportedType(char::from(
                    other.as_byte(),
                ))))
            }
        }
    }
    dirs.stack.clear();
    // Children first, so setting a parent's mtime is not undone by later work.
    for d in deferred.iter().rev() {
        let (parents, name) = split(&d.rel);
        let Some(pfd) = dirs.lookup(&parents, &d.rel)? else {
            continue;
        };
        // The directory may have been replaced by a later entry.
        let Ok(fd) = fsat::open_dir(pfd.as_fd(), name) else {
            continue;
        };
        fsat::chmod_fd(fd.as_fd(), d.mode).map_err(ex(&d.rel, "fchmod"))?;
        fsat::set_mtime_fd(fd.as_fd(), d.mtime).map_err(ex(&d.rel, "futimens"))?;
    }
    Ok(())
}

/// One extended attribute: (name, value).
type Xattr = (Vec<u8>, Vec<u8>);

/// `SCHILY.xattr.*` pax records of an entry.
fn xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<Xattr>, AciError> {
    let mut out = Vec::new();
    if let Some(exts) = entry.pax_extensions().map_err(AciError::CorruptTar)? {
        for ext in exts {
            let ext = ext.map_err(AciError::CorruptTar)?;
            if let Ok(key) = ext.key() {
                if let Some(name) = key.strip_prefix(PAX_XATTR) {
                    out.push((name.as_bytes().to_vec(), ext.value_bytes().to_vec()));
                }
            }
        }
    }
    Ok(out)
}

/// Apply xattrs; a filesystem or privilege level without support for them is not an
/// error (the data is still extracted).
fn set_xattrs(
    fd: BorrowedFd<'_>,
    xattrs: &[(Vec<u8>, Vec<u8>)],
    rel: &[u8],
) -> Result<(), AciError> {
    for (k, v) in xattrs {
        match fsat::set_xattr_fd(fd, k, v) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP | libc::EPERM)) => {}
            Err(e) => return Err(ex(rel, "fsetxattr")(e)),
        }
    }
    Ok(())
}

/// Copy an entry's data with a large buffer.
fn copy(r: &mut dyn Read, w: &mut dyn io::Write, buf: &mut [u8]) -> io::Result<()> {
    loop {
        let n = match r.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(buf.get(..n).unwrap_or_default())?;
    }
}
