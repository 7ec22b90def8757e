//! Resolving an absolute path inside an app's root without ever leaving it: symlinks met on
//! the way are resolved relative to that root (like `chroot` + `realpath`), so a hostile image
//! cannot point a volume target or `/dev` at a file outside its rootfs.

use std::io;
use std::path::{Component, Path, PathBuf};

/// Maximum number of symlinks followed while resolving one path (as Linux's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// Joins `path` (absolute or relative, interpreted inside `root`) onto `root`, resolving every
/// symlink inside `root`. Components that do not exist yet are appended verbatim.
pub fn secure_join(root: &Path, path: &str) -> io::Result<PathBuf> {
    let mut pending: Vec<String> = components(path);
    pending.reverse();
    let mut resolved: Vec<String> = Vec::new();
    let mut links = 0usize;
    while let Some(c) = pending.pop() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let candidate = join_all(root, &resolved).join(&c);
        match std::fs::symlink_metadata(&candidate) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&candidate)?;
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    resolved.clear();
                }
                let mut more = components(&target);
                more.reverse();
                pending.extend(more);
            }
            _ => resolved.push(c),
        }
    }
    Ok(join_all(root, &resolved))
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_string()),
            _ => None,
        })
        .collect()
}

fn join_all(root: &Path, parts: &[String]) -> PathBuf {
    let mut p = root.to_path_buf();
    for part in parts {
        p.push(part);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_stay_inside_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("real/dir")).unwrap();
        symlink("/real", root.join("abs")).unwrap();
        symlink("../../../../etc", root.join("escape")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            secure_join(root, "/abs/dir").unwrap(),
            root.join("real/dir")
        );
        assert_eq!(
            secure_join(root, "/escape/passwd").unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(secure_join(root, "/../../x").unwrap(), root.join("x"));
        assert_eq!(secure_join(root, "/new/a/b").unwrap(), root.join("new/a/b"));
        assert_eq!(secure_join(root, "/").unwrap(), root.to_path_buf());
        assert!(secure_join(root, "/loop").is_err());
    }
}
