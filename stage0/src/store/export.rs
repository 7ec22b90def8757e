//! Copying images out of the store: `rkt image export` (the ACI blob to a file),
//! `rkt image extract` (one image's rootfs) and `rkt image render` (the rendered tree with
//! its dependencies).

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{ImageRecord, Store, StoreError};

/// Writes the image's ACI (uncompressed tar) to `output` atomically; an existing file is
/// replaced only with `overwrite`.
pub fn export_aci(
    store: &Store,
    rec: &ImageRecord,
    output: &Path,
    overwrite: bool,
) -> Result<(), StoreError> {
    if output.exists() && !overwrite {
        return Err(StoreError::OutputExists("file", output.to_path_buf()));
    }
    let mut blob = store.open_blob(rec)?;
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // A fresh name, created exclusively (O_EXCL: a symlink or file planted under that name
    // by whoever can write `dir` fails the open instead of being written through).
    let mut created = None;
    for attempt in 0..16u32 {
        let tmp = dir.join(format!(
            ".rkt-export-{}-{}-{attempt}.tmp",
            std::process::id(),
            crate::store::now_nanos()
        ));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
        {
            Ok(f) => {
                created = Some((tmp, f));
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(StoreError::io("cannot write", output)(e)),
        }
    }
    let Some((tmp, mut f)) = created else {
        return Err(StoreError::io("cannot write", output)(io::Error::from(
            io::ErrorKind::AlreadyExists,
        )));
    };
    let res = (|| -> io::Result<()> {
        io::copy(&mut blob, &mut f)?;
        f.sync_all()?;
        fs::rename(&tmp, output)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(StoreError::io("cannot write", output)(e));
    }
    Ok(())
}

/// What `extract` writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtractOptions {
    /// The rendered tree with dependencies (`image render`) instead of the image's own files.
    pub render: bool,
    /// Only the root filesystem, directly in the output directory (no `manifest`).
    pub rootfs_only: bool,
    /// Replace an existing output directory.
    pub overwrite: bool,
}

/// Writes the image's files to `output` (`output/rootfs` and `output/manifest` unless
/// `rootfs_only`). As root, `output` itself is made `0700`: the tree keeps the image's owners
/// and setuid bits, and a host user must not reach an image's setuid-root file through it.
pub fn extract(
    store: &Store,
    rec: &ImageRecord,
    output: &Path,
    opts: ExtractOptions,
) -> Result<(), StoreError> {
    if output.exists() {
        if !opts.overwrite {
            return Err(StoreError::OutputExists("directory", output.to_path_buf()));
        }
        fs::remove_dir_all(output).map_err(StoreError::io("cannot remove", output))?;
    }
    let rootfs = if opts.rootfs_only {
        output.to_path_buf()
    } else {
        output.join("rootfs")
    };
    let as_root = nix::unistd::geteuid().is_root();
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(StoreError::io("cannot create", parent))?;
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .mode(if as_root { 0o700 } else { 0o755 })
            .create(output)
            .map_err(StoreError::io("cannot create", output))?;
    }
    fs::create_dir_all(&rootfs).map_err(StoreError::io("cannot create", &rootfs))?;
    if !opts.rootfs_only {
        let m = store.manifest_json(rec)?;
        let path = output.join("manifest");
        fs::write(&path, m).map_err(StoreError::io("cannot write", path))?;
    }
    if opts.render {
        let (tree, _hold) = store.hold_tree(rec)?;
        copy_tree(&tree.rootfs, &rootfs)
            .map_err(StoreError::io("cannot copy the rendered tree to", &rootfs))?;
    } else {
        let blob = store.open_blob(rec)?;
        super::aci::extract_rootfs(io::BufReader::new(blob), &rootfs, &[])
            .map_err(|e| StoreError::Render(rec.id.clone(), e))?;
    }
    if as_root {
        // The tree's own root mode may have been applied to `output` (`rootfs_only`).
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(output, fs::Permissions::from_mode(0o700))
            .map_err(StoreError::io("cannot restrict", output))?;
    }
    Ok(())
}

/// Copies a directory tree preserving modes, symlinks, ownership (as root) and mtimes.
fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = fs::symlink_metadata(src)?;
    for e in fs::read_dir(src)? {
        let e = e?;
        let s = e.path();
        let d = dst.join(e.file_name());
        let m = fs::symlink_metadata(&s)?;
        let ft = m.file_type();
        if ft.is_dir() {
            fs::create_dir_all(&d)?;
            copy_tree(&s, &d)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&s)?, &d)?;
        } else if ft.is_file() {
            fs::copy(&s, &d)?;
        } else {
            mknod_like(&d, &m)?;
        }
        let _ = std::os::unix::fs::lchown(&d, Some(m.uid()), Some(m.gid()));
        if !ft.is_symlink() {
            fs::set_permissions(&d, fs::Permissions::from_mode(m.mode() & 0o7777))?;
        }
        set_mtime(&d, &m);
    }
    let _ = std::os::unix::fs::lchown(dst, Some(md.uid()), Some(md.gid()));
    fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))?;
    set_mtime(dst, &md);
    Ok(())
}

fn mknod_like(path: &Path, m: &fs::Metadata) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated path; mode and dev come from an existing node.
    let r = unsafe { libc::mknod(c.as_ptr(), m.mode(), m.rdev()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_mtime(path: &Path, m: &fs::Metadata) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let ts = [
        libc::timespec {
            tv_sec: m.atime(),
            tv_nsec: m.atime_nsec(),
        },
        libc::timespec {
            tv_sec: m.mtime(),
            tv_nsec: m.mtime_nsec(),
        },
    ];
    // SAFETY: `c` is a valid path and `ts` two valid timespecs; failure is ignored (best effort).
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
}
