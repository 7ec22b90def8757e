//! Ownership and modes of the data directory (`--dir`), as rkt's `setup-data-dir.sh` made
//! them: the directory itself `2750 root:rkt`, `cas/tree` `2700`, `pods` `2750`, the image
//! index `0640`. Host users outside the `rkt` group cannot reach anything below `--dir`
//! (rendered images and pod trees keep setuid bits and file capabilities), and members of the
//! group can read the store and list pods but cannot reach a rendered tree or a pod's
//! writable trees (see `pod::layout`).
//!
//! The `rkt` group is looked up in `/etc/group` (not through NSS: see [`lookup_group`]) and
//! created on first use by root: `groupadd --system rkt`, or, where
//! groupadd is absent, a line appended to `/etc/group` (written atomically, under an flock
//! on `/etc/group` that also serializes concurrent `rkt` processes). If the group cannot be
//! made, everything is owned by `root:root` with the same modes. Existing directories are
//! tightened on every open (a few `stat` calls).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::util::{flock, write_atomic, LockMode};

/// Name of the group that may read the store and list pods.
pub const GROUP: &str = "rkt";
/// Mode of `--dir`, `cas` and its `blob`, `db` and `locks` directories.
pub const DATA_DIR_MODE: u32 = 0o2750;
/// Mode of `cas/tree` (rendered images: setuid files, file capabilities) and `cas/tmp`.
pub const TREE_DIR_MODE: u32 = 0o2700;
/// Mode of `pods`.
pub const PODS_DIR_MODE: u32 = 0o2750;
/// Mode of the state directories under `pods` (no setgid: a pod's files must not inherit
/// the `rkt` group, least of all an app's root directory through its overlay upper dir).
pub const POD_STATE_DIR_MODE: u32 = 0o750;
/// Mode of one rendered tree, `cas/tree/<treeid>` (no setgid, owned by root:root).
pub const TREE_MODE: u32 = 0o700;
/// Mode of the image index and of blobs.
pub const INDEX_FILE_MODE: u32 = 0o640;

/// GIDs for a group appended to `/etc/group` by rkt: taken from the top of this range down,
/// like `groupadd --system`.
const SYSTEM_GIDS: std::ops::RangeInclusive<u32> = 100..=999;

/// Where groupadd may live (absolute: rkt runs as root and must not trust `PATH`).
const GROUPADD: &[&str] = &["/usr/sbin/groupadd", "/sbin/groupadd"];

/// Owner of the data directory and its subdirectories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// None when rkt does not run as root (nothing is chowned then).
    pub uid: Option<u32>,
    /// GID of the `rkt` group, or 0 when it could not be found or made.
    pub gid: u32,
}

/// The owner for this process: `root:rkt` (creating the group if needed) when running as
/// root; the caller's own IDs otherwise (nothing is chowned).
pub fn owner() -> Owner {
    static OWNER: OnceLock<Owner> = OnceLock::new();
    *OWNER.get_or_init(|| {
        if !nix::unistd::geteuid().is_root() {
            return Owner {
                uid: None,
                gid: nix::unistd::getegid().as_raw(),
            };
        }
        let gid = match lookup_group(GROUP).map(Ok).unwrap_or_else(|| create_group(GROUP)) {
            Ok(g) => g,
            Err(e) => {
                eprintln!(
                    "rkt: warning: cannot create group {GROUP} ({e}); the data directory is owned by root:root"
                );
                0
            }
        };
        Owner { uid: Some(0), gid }
    })
}

/// The group file rkt reads and extends.
const ETC_GROUP: &str = "/etc/group";

/// GID of group `name` in `/etc/group`, if it is there. Read directly, not through NSS: the
/// static rkt cannot load NSS modules (for `group: files systemd` glibc would `dlopen`
/// libnss_systemd into it and crash on a group that `files` does not hold), and the group rkt
/// makes is always written there (by groupadd or [`append_group`]).
pub fn lookup_group(name: &str) -> Option<u32> {
    group_in(Path::new(ETC_GROUP), name)
}

/// GID of group `name` in the group file `path`.
fn group_in(path: &Path, name: &str) -> Option<u32> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .map(group_line)
        .find_map(|(n, gid)| if n == name { gid } else { None })
}

/// A group file line's name and GID (`name:password:gid:members`); no GID when it does not
/// parse.
fn group_line(line: &str) -> (&str, Option<u32>) {
    let mut f = line.split(':');
    let name = f.next().unwrap_or_default();
    (name, f.nth(1).and_then(|g| g.trim().parse().ok()))
}

/// Creates the system group `name` (see the module docs); returns its GID.
fn create_group(name: &str) -> io::Result<u32> {
    let etc_group = Path::new(ETC_GROUP);
    let lock = File::open(etc_group)?;
    flock(&lock, LockMode::Exclusive, true)?;
    if let Some(g) = lookup_group(name) {
        return Ok(g);
    }
    let groupadd = GROUPADD.iter().map(Path::new).find(|p| p.is_file());
    match groupadd {
        Some(ga) => {
            let out = std::process::Command::new(ga)
                .args(["--system", name])
                .stdin(std::process::Stdio::null())
                .output()?;
            // A concurrent creator (another tool) may have won: look again either way.
            if let Some(g) = lookup_group(name) {
                return Ok(g);
            }
            Err(io::Error::other(format!(
                "{} --system {name} failed: {}",
                ga.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
        None => {
            append_group(etc_group, name)?;
            lookup_group(name).ok_or_else(|| {
                io::Error::other(format!("group {name} added to /etc/group but not found"))
            })
        }
    }
}

/// Appends `name:x:<gid>:` to the group file `path` atomically (temp file, fsync, rename;
/// owner and mode kept), with the highest free GID of the system range. The caller holds
/// the lock. Returns the GID (or the existing one if `name` is already there).
pub fn append_group(path: &Path, name: &str) -> io::Result<u32> {
    let text = fs::read_to_string(path)?;
    let mut used = std::collections::HashSet::new();
    for (n, gid) in text.lines().map(group_line) {
        if n == name {
            if let Some(g) = gid {
                return Ok(g);
            }
        }
        used.extend(gid);
    }
    let gid = SYSTEM_GIDS
        .rev()
        .find(|g| !used.contains(g))
        .ok_or_else(|| io::Error::other("no free system GID"))?;
    let mut out = text;
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("{name}:x:{gid}:\n"));
    let md = fs::metadata(path)?;
    write_atomic(path, out.as_bytes(), md.mode() & 0o7777)?;
    std::os::unix::fs::chown(path, Some(md.uid()), Some(md.gid()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(md.mode() & 0o7777))?;
    Ok(gid)
}

/// Creates `path` (and missing parents) if needed, then gives it `owner` and exactly `mode`
/// (set-group-ID included) unless it already has them. A symlink is refused: every
/// directory below `--dir` is rkt's own.
pub fn ensure_dir(path: &Path, mode: u32, owner: Owner) -> io::Result<()> {
    let md = stat_or_create(path, mode, |p| fs::symlink_metadata(p))?;
    if md.file_type().is_symlink() || !md.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a directory", path.display()),
        ));
    }
    set_owner_mode(path, &md, mode, owner)
}

/// `stat(path)`, after creating `path` (and missing parents, with `mode`'s permission bits)
/// when it does not exist: one system call for a directory that exists, as every one does
/// after a store's first use, where `mkdir` first would take three.
fn stat_or_create(
    path: &Path,
    mode: u32,
    stat: fn(&Path) -> io::Result<fs::Metadata>,
) -> io::Result<fs::Metadata> {
    match stat(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match fs::DirBuilder::new()
                .recursive(true)
                .mode(mode & 0o777)
                .create(path)
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            stat(path)
        }
        r => r,
    }
}

/// chown (when root and different) then chmod (when different).
fn set_owner_mode(path: &Path, md: &fs::Metadata, mode: u32, owner: Owner) -> io::Result<()> {
    if let Some(uid) = owner.uid {
        if md.uid() != uid || md.gid() != owner.gid {
            std::os::unix::fs::lchown(path, Some(uid), Some(owner.gid))?;
        }
    }
    if md.mode() & 0o7777 != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Secures the data directory itself (`2750 root:rkt`; created if missing). The data
/// directory may be a symlink (e.g. to another disk); its target is secured.
pub fn secure_data_dir(dir: &Path) -> io::Result<Owner> {
    let owner = owner();
    let md = stat_or_create(dir, DATA_DIR_MODE, |p| fs::metadata(p))?;
    if !md.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} is not a directory", dir.display()),
        ));
    }
    set_owner_mode(dir, &md, DATA_DIR_MODE, owner)?;
    Ok(owner)
}

/// Gives an existing file `mode` and `owner` (e.g. the image index, created by SQLite).
pub fn secure_file(path: &Path, mode: u32, owner: Owner) -> io::Result<()> {
    let md = fs::symlink_metadata(path)?;
    if !md.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a regular file", path.display()),
        ));
    }
    set_owner_mode(path, &md, mode, owner)
}

/// Makes a new directory for one rendered tree: `0700 root:root`, without the set-group-ID
/// bit and group it would inherit from `cas/tree`.
pub fn make_private_dir(path: &Path) -> io::Result<()> {
    fs::DirBuilder::new().mode(TREE_MODE).create(path)?;
    let owner = Owner {
        uid: owner().uid,
        gid: 0,
    };
    // Not root (uid None): nothing is chowned, only the inherited set-group-ID bit dropped.
    let md = fs::symlink_metadata(path)?;
    set_owner_mode(path, &md, TREE_MODE, owner)
}

/// `<dir>/pods` and its state directories, secured (see [`PODS_DIR_MODE`],
/// [`POD_STATE_DIR_MODE`]).
pub fn secure_pods_dir(dir: &Path, states: &[&str]) -> io::Result<PathBuf> {
    let owner = secure_data_dir(dir)?;
    let pods = dir.join("pods");
    ensure_dir(&pods, PODS_DIR_MODE, owner)?;
    for s in states {
        ensure_dir(&pods.join(s), POD_STATE_DIR_MODE, owner)?;
    }
    Ok(pods)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_read_from_the_group_file() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("group");
        fs::write(
            &f,
            "root:x:0:\nrkt-admin:x:997:\nrkt:x:998:alice\nbad:x:nope:\n",
        )
        .unwrap();
        assert_eq!(group_in(&f, "rkt"), Some(998));
        assert_eq!(group_in(&f, "rkt-admin"), Some(997));
        assert_eq!(group_in(&f, "rk"), None);
        assert_eq!(group_in(&f, "bad"), None);
        assert_eq!(group_in(&t.path().join("missing"), "rkt"), None);
    }

    #[test]
    fn append_group_takes_the_highest_free_system_gid() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("group");
        fs::write(&f, "root:x:0:\nsystemd:x:999:\nusers:x:100:\nnoeol:x:5:").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(append_group(&f, "rkt").unwrap(), 998);
        let text = fs::read_to_string(&f).unwrap();
        assert!(text.ends_with("noeol:x:5:\nrkt:x:998:\n"), "{text:?}");
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o7777,
            0o644
        );
        // Idempotent.
        assert_eq!(append_group(&f, "rkt").unwrap(), 998);
        assert_eq!(fs::read_to_string(&f).unwrap().matches("rkt:").count(), 1);
    }

    #[test]
    fn dirs_get_exact_modes() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("data");
        let o = secure_data_dir(&d).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o7777,
            DATA_DIR_MODE
        );
        let tree = d.join("tree");
        ensure_dir(&tree, TREE_DIR_MODE, o).unwrap();
        assert_eq!(
            fs::metadata(&tree).unwrap().permissions().mode() & 0o7777,
            TREE_DIR_MODE
        );
        // A loosened directory is tightened again.
        fs::set_permissions(&tree, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&tree, TREE_DIR_MODE, o).unwrap();
        assert_eq!(
            fs::metadata(&tree).unwrap().permissions().mode() & 0o7777,
            TREE_DIR_MODE
        );
        // A private tree directory does not inherit the set-group-ID bit.
        let one = tree.join("one");
        make_private_dir(&one).unwrap();
        assert_eq!(
            fs::metadata(&one).unwrap().permissions().mode() & 0o7777,
            TREE_MODE
        );
        std::os::unix::fs::symlink(&tree, d.join("link")).unwrap();
        assert!(ensure_dir(&d.join("link"), TREE_DIR_MODE, o).is_err());
    }
}
