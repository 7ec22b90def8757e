//! The snapshot cache: one snapshot per [`SnapshotKey`], made once and restored by every VM of
//! that shape. It lives outside every pod directory ([`DEFAULT_ROOT`]), is root-only (the root
//! directory must be a real directory owned by this user and writable by nobody else), and is
//! filled under an exclusive `flock` per key: the snapshot is made into `<id>.tmp`, then renamed
//! to `<id>`, so a reader sees a complete snapshot or none. Getting an entry marks it used;
//! `rkt gc` removes stale entries under the same lock (names and lock: `pod_abi::snapshot`), as
//! does a pod that found its entry damaged ([`Cache::remove_if`]).
//!
//! A key names everything a snapshot depends on (the stage1 image, the kernel, memory size,
//! vCPUs, the device layout: whatever the caller sets); its id is the SHA-256 of the parts,
//! length-prefixed so that no value can pose as another part.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use pod_abi::snapshot::{lock_entry, mark_used, LOCK_SUFFIX, MAKING_SUFFIX};

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::STATE_FILE;

/// Where the cache lives by default (beside rkt's other data, outside every pod directory).
pub const DEFAULT_ROOT: &str = "/var/lib/rkt/cache/snapshots";

/// Errors using the cache.
#[derive(Debug, Error)]
pub enum CacheError {
    /// A file operation failed.
    #[error("snapshot cache {path}: {what}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The cache root is not safe to use.
    #[error("snapshot cache {0} is not a directory owned by this user and writable only by it")]
    Unsafe(PathBuf),
    /// Making the snapshot failed.
    #[error("making the snapshot failed: {0}")]
    Make(String),
}

/// What a snapshot depends on: named parts (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotKey(BTreeMap<&'static str, String>);

impl SnapshotKey {
    /// An empty key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets part `name` to `value`.
    pub fn set(&mut self, name: &'static str, value: impl ToString) -> &mut Self {
        self.0.insert(name, value.to_string());
        self
    }

    /// The key's id: SHA-256 (hex) of the parts in name order, each as
    /// `<len>:<name><len>:<value>`.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        for (k, v) in &self.0 {
            h.update(format!("{}:{k}{}:", k.len(), v.len()).as_bytes());
            h.update(v.as_bytes());
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What [`Cache::remove_if`] did with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// It was judged under the key's lock and removed.
    Removed,
    /// Judged under the key's lock, it was found sound (made afresh meanwhile): kept.
    Kept,
    /// Another process holds the key's lock (making or removing the entry): left alone.
    Busy,
    /// There was no entry.
    Absent,
    /// The entry's path is not a real directory (a symlink, a file): left alone.
    NotADirectory,
}

/// An open cache.
#[derive(Debug)]
pub struct Cache {
    root: PathBuf,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CacheError + 'a {
    move |source| CacheError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Marks the entry `dir` used ([`mark_used`]; `rkt gc` removes entries unused for long). A
/// failure is ignored: the worst it does is an early removal, and the entry is made again.
fn used(dir: &Path) {
    let _ = mark_used(dir);
}

/// Whether `dir` holds a complete snapshot (a regular `state` file, not a symlink).
fn complete(dir: &Path) -> bool {
    fs::symlink_metadata(dir.join(STATE_FILE)).is_ok_and(|m| m.file_type().is_file())
}

impl Cache {
    /// Opens the cache at `root`, creating it (mode 0700) if missing; refuses a root that is a
    /// symlink, not a directory, owned by another user, or writable by group or others.
    pub fn open(root: impl Into<PathBuf>) -> Result<Cache, CacheError> {
        let root = root.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(io("cannot create", &root))?;
        let m = fs::symlink_metadata(&root).map_err(io("cannot stat", &root))?;
        // SAFETY: geteuid takes no arguments.
        let euid = unsafe { libc::geteuid() };
        if !m.file_type().is_dir() || m.uid() != euid || m.mode() & 0o022 != 0 {
            return Err(CacheError::Unsafe(root));
        }
        Ok(Cache { root })
    }

    /// The snapshot directory of `key`, if the cache has it.
    pub fn lookup(&self, key: &SnapshotKey) -> Option<PathBuf> {
        let dir = self.root.join(key.id());
        complete(&dir).then_some(dir)
    }

    /// The snapshot directory of `key`; made first by `make(empty directory)` if the cache does
    /// not have it, under the key's lock (concurrent callers wait and then find it). Returns
    /// the directory and whether this call made it. A found entry is marked used.
    pub fn get_or_make<F>(&self, key: &SnapshotKey, make: F) -> Result<(PathBuf, bool), CacheError>
    where
        F: FnOnce(&Path) -> Result<(), String>,
    {
        if let Some(dir) = self.lookup(key) {
            used(&dir);
            return Ok((dir, false));
        }
        let id = key.id();
        let Some(lock) = self.lock(&id, true)? else {
            return Err(CacheError::Make("the key's lock was not taken".into()));
        };
        let dir = self.root.join(&id);
        if complete(&dir) {
            used(&dir);
            return Ok((dir, false));
        }
        let tmp = self.root.join(format!("{id}{MAKING_SUFFIX}"));
        if fs::symlink_metadata(&tmp).is_ok() {
            // A maker that died half-way: start over.
            fs::remove_dir_all(&tmp).map_err(io("cannot remove", &tmp))?;
        }
        if fs::symlink_metadata(&dir).is_ok() {
            fs::remove_dir_all(&dir).map_err(io("cannot remove", &dir))?;
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(io("cannot create", &tmp))?;
        if let Err(e) = make(&tmp) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(CacheError::Make(e));
        }
        if !complete(&tmp) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(CacheError::Make("no state file was written".into()));
        }
        if let Err(e) = fs::rename(&tmp, &dir) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(io("cannot rename", &tmp)(e));
        }
        drop(lock);
        Ok((dir, true))
    }

    /// The lock of entry `id` ([`lock_entry`]), waited for when `wait`; `None`: held by another.
    fn lock(&self, id: &str, wait: bool) -> Result<Option<fs::File>, CacheError> {
        lock_entry(&self.root, id, wait).map_err(|e| {
            let path = self.root.join(format!("{id}{LOCK_SUFFIX}"));
            io("cannot lock", &path)(e)
        })
    }

    /// Removes the entry of `key` if `damaged(its directory)` says so, judged and removed under
    /// the key's lock taken without waiting (a held lock leaves the entry: another process is
    /// making or removing it), so that the next [`Cache::get_or_make`] makes it afresh. Only a
    /// real directory is removed (checked with `lstat`; `remove_dir_all` follows no symlink
    /// inside it either), and nothing outside the cache root.
    pub fn remove_if<F>(&self, key: &SnapshotKey, damaged: F) -> Result<Removal, CacheError>
    where
        F: FnOnce(&Path) -> bool,
    {
        let id = key.id();
        let Some(_lock) = self.lock(&id, false)? else {
            return Ok(Removal::Busy);
        };
        let dir = self.root.join(&id);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => return Ok(Removal::NotADirectory),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Removal::Absent),
            Err(e) => return Err(io("cannot stat", &dir)(e)),
        }
        if !damaged(&dir) {
            return Ok(Removal::Kept);
        }
        fs::remove_dir_all(&dir).map_err(io("cannot remove", &dir))?;
        Ok(Removal::Removed)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    fn key(mem: u64) -> SnapshotKey {
        let mut k = SnapshotKey::new();
        k.set("stage1", "sha512-abc")
            .set("mem_mib", mem)
            .set("cpus", 1);
        k
    }

    #[test]
    fn ids_are_stable_distinct_and_not_forgeable_across_parts() {
        assert_eq!(key(128).id(), key(128).id());
        assert_ne!(key(128).id(), key(256).id());
        assert_eq!(key(128).id().len(), 64);
        let mut a = SnapshotKey::new();
        a.set("a", "1b:2");
        let mut b = SnapshotKey::new();
        b.set("a", "1").set("b", "2");
        assert_ne!(a.id(), b.id());
    }

    #[test]
    fn concurrent_callers_make_the_snapshot_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("snapshots");
        let made = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (root, made) = (root.clone(), made.clone());
                std::thread::spawn(move || {
                    let c = Cache::open(&root).expect("opens");
                    c.get_or_make(&key(128), |d| {
                        made.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        fs::write(d.join(STATE_FILE), b"s").map_err(|e| e.to_string())
                    })
                    .expect("gets")
                    .0
                })
            })
            .collect();
        let dirs: Vec<PathBuf> = threads
            .into_iter()
            .map(|t| t.join().expect("join"))
            .collect();
        assert_eq!(made.load(Ordering::SeqCst), 1);
        assert!(dirs.windows(2).all(|w| w[0] == w[1]));
        let mode = fs::metadata(&root).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let c = Cache::open(&root).expect("opens");
        assert_eq!(c.lookup(&key(128)), Some(dirs[0].clone()));
        assert_eq!(c.lookup(&key(256)), None);
    }

    #[test]
    fn a_failed_or_empty_make_leaves_nothing_and_a_later_one_succeeds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Cache::open(dir.path().join("s")).expect("opens");
        assert!(matches!(
            c.get_or_make(&key(64), |_| Err("boom".into())),
            Err(CacheError::Make(_))
        ));
        assert!(matches!(
            c.get_or_make(&key(64), |_| Ok(())),
            Err(CacheError::Make(_))
        ));
        assert_eq!(c.lookup(&key(64)), None);
        let (d, made) = c
            .get_or_make(&key(64), |d| {
                fs::write(d.join(STATE_FILE), b"s").map_err(|e| e.to_string())
            })
            .expect("makes");
        assert!(made && complete(&d));
    }

    #[test]
    fn a_found_entry_is_marked_used() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Cache::open(dir.path().join("s")).expect("opens");
        let write = |d: &Path| fs::write(d.join(STATE_FILE), b"s").map_err(|e| e.to_string());
        let (d, _) = c.get_or_make(&key(32), write).expect("makes");
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30);
        fs::File::open(&d)
            .and_then(|f| f.set_modified(old))
            .expect("set mtime");
        let (again, made) = c.get_or_make(&key(32), write).expect("finds");
        assert!(!made);
        let m = fs::metadata(&again).expect("stat");
        assert!(pod_abi::snapshot::last_used(&m).expect("mtime") > old);
        assert!(DEFAULT_ROOT.ends_with(pod_abi::snapshot::CACHE_IN_DATA_DIR));
    }

    #[test]
    fn remove_if_takes_only_a_damaged_real_directory_under_a_free_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = Cache::open(dir.path().join("s")).expect("opens");
        let write = |d: &Path| fs::write(d.join(STATE_FILE), b"s").map_err(|e| e.to_string());
        assert_eq!(
            c.remove_if(&key(8), |_| true).expect("runs"),
            Removal::Absent
        );
        let (d, _) = c.get_or_make(&key(8), write).expect("makes");
        assert_eq!(
            c.remove_if(&key(8), |_| false).expect("runs"),
            Removal::Kept
        );
        assert!(complete(&d));
        // Held by another maker or remover: left alone, without waiting.
        let held = lock_entry(&c.root, &key(8).id(), false)
            .expect("locks")
            .expect("free");
        assert_eq!(c.remove_if(&key(8), |_| true).expect("runs"), Removal::Busy);
        assert!(complete(&d));
        drop(held);
        assert_eq!(
            c.remove_if(&key(8), |_| true).expect("runs"),
            Removal::Removed
        );
        assert!(fs::symlink_metadata(&d).is_err());
        // A symlink in an entry's place is not followed.
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).expect("mkdir");
        fs::write(outside.join(STATE_FILE), b"s").expect("write");
        std::os::unix::fs::symlink(&outside, &d).expect("symlink");
        assert_eq!(
            c.remove_if(&key(8), |_| true).expect("runs"),
            Removal::NotADirectory
        );
        assert!(outside.join(STATE_FILE).is_file());
    }

    #[test]
    fn an_unsafe_root_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = dir.path().join("open");
        fs::create_dir(&open).expect("mkdir");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).expect("chmod");
        assert!(matches!(Cache::open(&open), Err(CacheError::Unsafe(_))));
        let link = dir.path().join("link");
        let real = dir.path().join("real");
        fs::create_dir(&real).expect("mkdir");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        assert!(matches!(Cache::open(&link), Err(CacheError::Unsafe(_))));
    }
}
