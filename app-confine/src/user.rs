//! Resolving an app's `user` and `group` strings as the appc spec says: a name from the app's
//! own `/etc/passwd` / `/etc/group`, a number, or an absolute path whose owner is used. The
//! image controls these files: they are read only if regular, without blocking, and at most
//! [`DB_MAX`] bytes of them.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::paths::secure_join;

/// Most bytes read from an image's `/etc/passwd` or `/etc/group` (1 MiB).
pub const DB_MAX: u64 = 1 << 20;

/// Why a user or group could not be resolved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    /// Name not found in the image's database file.
    #[error("{kind} {name:?} not found in the app's {db}")]
    NotFound {
        /// "user" or "group".
        kind: &'static str,
        /// The name.
        name: String,
        /// `/etc/passwd` or `/etc/group`.
        db: &'static str,
    },
    /// `user`/`group` was a path that does not exist in the app root.
    #[error("{kind} path {path}: {reason}")]
    BadPath {
        /// "user" or "group".
        kind: &'static str,
        /// The path.
        path: String,
        /// The OS error text.
        reason: String,
    },
    /// Empty string.
    #[error("empty {0}")]
    Empty(&'static str),
}

/// Finds `name` in a passwd- or group-style file and returns its third field (uid or gid).
pub fn lookup_id(db_text: &str, name: &str) -> Option<u32> {
    db_text.lines().find_map(|line| {
        let mut f = line.split(':');
        let n = f.next()?;
        if n != name {
            return None;
        }
        f.next()?;
        f.next()?.trim().parse().ok()
    })
}

/// Which of the two ids a spec resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    /// A user (uid; `/etc/passwd`).
    User,
    /// A group (gid; `/etc/group`).
    Group,
}

impl IdKind {
    fn name(self) -> &'static str {
        match self {
            IdKind::User => "user",
            IdKind::Group => "group",
        }
    }
    fn db(self) -> &'static str {
        match self {
            IdKind::User => "/etc/passwd",
            IdKind::Group => "/etc/group",
        }
    }
}

/// Resolves a user or group spec against the app root `rootfs`.
pub fn resolve(kind: IdKind, spec: &str, rootfs: &Path) -> Result<u32, UserError> {
    if spec.is_empty() {
        return Err(UserError::Empty(kind.name()));
    }
    if spec.starts_with('/') {
        let bad = |e: std::io::Error| UserError::BadPath {
            kind: kind.name(),
            path: spec.to_string(),
            reason: errno_text(&e),
        };
        let p = secure_join(rootfs, spec).map_err(bad)?;
        let md = std::fs::metadata(p).map_err(bad)?;
        return Ok(match kind {
            IdKind::User => md.uid(),
            IdKind::Group => md.gid(),
        });
    }
    let db = secure_join(rootfs, kind.db())
        .ok()
        .and_then(|p| read_db(&p))
        .unwrap_or_default();
    if let Some(id) = lookup_id(&db, spec) {
        return Ok(id);
    }
    spec.parse().map_err(|_| UserError::NotFound {
        kind: kind.name(),
        name: spec.to_string(),
        db: kind.db(),
    })
}

/// The text of a database file of the image: `None` unless it is a regular file (a FIFO, a
/// device or a symlink planted there is ignored, never opened for a blocking read); at most
/// [`DB_MAX`] bytes.
fn read_db(path: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    f.take(DB_MAX).read_to_string(&mut text).ok()?;
    Some(text)
}

/// The OS error text without Rust's " (os error N)" suffix.
pub fn errno_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_paths() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::write(
            r.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/:/x\n",
        )
        .unwrap();
        std::fs::write(r.join("etc/group"), "root:x:0:\nstaff:x:50:user\n").unwrap();
        assert_eq!(resolve(IdKind::User, "user", r), Ok(1000));
        assert_eq!(resolve(IdKind::User, "42", r), Ok(42));
        assert_eq!(resolve(IdKind::Group, "staff", r), Ok(50));
        assert!(matches!(
            resolve(IdKind::User, "nobody", r),
            Err(UserError::NotFound { .. })
        ));
        let me = std::fs::metadata(r.join("etc/passwd")).unwrap();
        assert_eq!(resolve(IdKind::User, "/etc/passwd", r), Ok(me.uid()));
        assert_eq!(resolve(IdKind::Group, "/etc/group", r), Ok(me.gid()));
        let e = resolve(IdKind::User, "/missing", r).unwrap_err();
        assert_eq!(
            e.to_string(),
            "user path /missing: No such file or directory"
        );
        assert_eq!(resolve(IdKind::User, "", r), Err(UserError::Empty("user")));
    }

    #[test]
    fn a_planted_fifo_is_not_read() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        nix::unistd::mkfifo(&r.join("etc/passwd"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Would block forever if opened for a plain read.
        assert!(matches!(
            resolve(IdKind::User, "user", r),
            Err(UserError::NotFound { .. })
        ));
        assert_eq!(resolve(IdKind::User, "7", r), Ok(7));
    }
}
