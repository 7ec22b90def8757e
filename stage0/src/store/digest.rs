//! The digest of a rendered tree (`rkt image verify`): a SHA-256 over every entry below the
//! rootfs, in byte order of their paths, of what rendering sets: the path, the file type, the
//! permission bits (setuid, setgid and sticky included), owner and group, the content of
//! regular files, symlink targets, device numbers and extended attributes (file capabilities
//! among them). Times, inode numbers and link counts are left out: they change without the
//! tree changing for an app. Symlinks are never followed.

use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// `sha256-<64 hex>` of the tree below `rootfs` (see the module doc).
pub fn tree_digest(rootfs: &Path) -> io::Result<String> {
    let mut h = Sha256::new();
    // Directories still to walk, as paths relative to `rootfs` (explicit stack: a deep tree
    // cannot exhaust the thread's stack).
    let mut pending: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel_dir) = pending.pop() {
        let dir = rootfs.join(&rel_dir);
        let mut names: Vec<_> = fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        let mut subdirs = Vec::new();
        for name in names {
            let rel = rel_dir.join(&name);
            let path = rootfs.join(&rel);
            let md = fs::symlink_metadata(&path)?;
            let ft = md.file_type();
            let kind: u8 = if ft.is_file() {
                b'f'
            } else if ft.is_dir() {
                b'd'
            } else if ft.is_symlink() {
                b'l'
            } else if ft.is_char_device() {
                b'c'
            } else if ft.is_block_device() {
                b'b'
            } else if ft.is_fifo() {
                b'p'
            } else {
                b's'
            };
            field(&mut h, rel.as_os_str().as_bytes());
            h.update([kind]);
            h.update((md.mode() & 0o7777).to_le_bytes());
            h.update(md.uid().to_le_bytes());
            h.update(md.gid().to_le_bytes());
            match kind {
                b'f' => {
                    h.update(md.len().to_le_bytes());
                    io::copy(&mut File::open(&path)?, &mut h)?;
                }
                b'l' => field(&mut h, fs::read_link(&path)?.as_os_str().as_bytes()),
                b'c' | b'b' => h.update(md.rdev().to_le_bytes()),
                b'd' => subdirs.push(rel),
                _ => {}
            }
            let xattrs = crate::xattr::read_all(&path)?;
            h.update((xattrs.len() as u64).to_le_bytes());
            for (k, v) in &xattrs {
                field(&mut h, k.as_bytes());
                field(&mut h, v);
            }
        }
        // Walk subdirectories in order: the stack pops the last pushed first.
        pending.extend(subdirs.into_iter().rev());
    }
    Ok(format!("sha256-{}", hex::encode(h.finalize())))
}

/// A length-prefixed byte string.
fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// The file beside `rootfs` that holds the digest recorded when the tree was rendered.
pub const DIGEST_FILE: &str = "digest";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::create_dir_all(r.join("bin/sub")).unwrap();
        fs::write(r.join("bin/app"), b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(r.join("bin/app"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(r.join("bin/sub/data"), vec![7u8; 100_000]).unwrap();
        symlink("app", r.join("bin/link")).unwrap();
        t
    }

    #[test]
    fn the_digest_sees_every_change_an_app_would() {
        let t = tree();
        let r = t.path();
        let d0 = tree_digest(r).unwrap();
        assert!(d0.starts_with("sha256-") && d0.len() == 7 + 64, "{d0}");
        assert_eq!(tree_digest(r).unwrap(), d0, "stable");
        // Times do not count.
        let f = File::options().write(true).open(r.join("bin/app")).unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        assert_eq!(tree_digest(r).unwrap(), d0);

        type Change = (&'static str, fn(&Path));
        let changes: [Change; 6] = [
            ("content", |r| {
                let mut b = fs::read(r.join("bin/sub/data")).unwrap();
                b[50_000] = 8;
                fs::write(r.join("bin/sub/data"), b).unwrap();
            }),
            ("mode", |r| {
                fs::set_permissions(r.join("bin/app"), fs::Permissions::from_mode(0o4755)).unwrap()
            }),
            ("symlink target", |r| {
                fs::remove_file(r.join("bin/link")).unwrap();
                symlink("/etc/shadow", r.join("bin/link")).unwrap();
            }),
            ("new file", |r| {
                fs::write(r.join("bin/sub/extra"), b"").unwrap()
            }),
            ("removed file", |r| {
                fs::remove_file(r.join("bin/app")).unwrap()
            }),
            ("renamed file", |r| {
                fs::rename(r.join("bin/sub/data"), r.join("bin/sub/datb")).unwrap()
            }),
        ];
        for (what, change) in changes {
            let t = tree();
            change(t.path());
            assert_ne!(tree_digest(t.path()).unwrap(), d0, "{what}");
        }
    }

    #[test]
    fn a_file_moved_across_directories_changes_the_digest() {
        // Same names and bytes in another place: the path is part of each entry.
        let a = tempfile::tempdir().unwrap();
        fs::create_dir_all(a.path().join("x")).unwrap();
        fs::write(a.path().join("x/f"), b"1").unwrap();
        let b = tempfile::tempdir().unwrap();
        fs::create_dir_all(b.path().join("x")).unwrap();
        fs::write(b.path().join("f"), b"1").unwrap();
        assert_ne!(
            tree_digest(a.path()).unwrap(),
            tree_digest(b.path()).unwrap()
        );
    }
}
