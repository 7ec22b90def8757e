//! `rkt gc`'s upkeep of the KVM snapshot cache, `<dir>/cache/snapshots` (docs/snapshot.md,
//! "Cache upkeep"; stage1-vmm fills it, the names, lock and records are `pod_abi::snapshot`).
//!
//! An entry `<id>/` is removed when it can never be restored again (its source record is
//! missing or unreadable, or the kernel or guest-init it was made from is gone or changed: no
//! key names it any more) or when it has not been used for [`UNUSED_MAX_SECS`]; a
//! `<id>.tmp` is removed when it is older than the maker's time limit. Each key is handled
//! under its lock, taken without waiting: a key whose maker runs is skipped. A key left with
//! neither entry nor `.tmp` loses its lock file too (unlinked while held; lockers retake a
//! lock whose file left the path). Nothing outside the cache directory is touched: it must be
//! a real directory (as must `<dir>/cache`), owned by this user and open to nobody else, and
//! only names of the cache's own form are looked at.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use pod_abi::snapshot::{
    file_id_of, is_entry_id, last_used, lock_entry, Source, CACHE_IN_DATA_DIR, LOCK_SUFFIX,
    MAKE_TIMEOUT_SECS, MAKING_SUFFIX, SOURCE_FILE, SOURCE_MAX,
};

/// An entry not used for longer than this is removed (seconds: 24 h). Making it again costs
/// one boot of the snapshot stage (seconds) and its memory file is the guest's RAM size.
pub const UNUSED_MAX_SECS: u64 = 24 * 60 * 60;

/// Errors that stop the cache's upkeep as a whole.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotGcError {
    /// The cache directory is not safe to clean.
    #[error(
        "snapshot cache {0} is not a real directory owned by this user and closed to others: \
         not cleaned"
    )]
    Unsafe(PathBuf),
    /// Reading the cache directory failed.
    #[error("snapshot cache {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Why an entry (or a `.tmp`) is removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    /// The source record is missing or not readable (why).
    NoSource(String),
    /// The kernel it was made from is gone.
    KernelGone(PathBuf),
    /// The kernel it was made from changed (another file or rewritten).
    KernelChanged(PathBuf),
    /// The guest-init it was made from is gone.
    GuestInitGone(PathBuf),
    /// The guest-init it was made from changed.
    GuestInitChanged(PathBuf),
    /// Not used for this long (more than [`UNUSED_MAX_SECS`]).
    Unused(Duration),
    /// A dead maker's `.tmp`, this old (more than [`MAKE_TIMEOUT_SECS`]).
    Leftover(Duration),
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stale::NoSource(why) => write!(f, "no usable source record ({why})"),
            Stale::KernelGone(p) => write!(f, "its kernel {} is gone", p.display()),
            Stale::KernelChanged(p) => write!(f, "its kernel {} changed", p.display()),
            Stale::GuestInitGone(p) => write!(f, "its guest-init {} is gone", p.display()),
            Stale::GuestInitChanged(p) => write!(f, "its guest-init {} changed", p.display()),
            Stale::Unused(d) => write!(
                f,
                "unused for {} s (more than {UNUSED_MAX_SECS} s)",
                d.as_secs()
            ),
            Stale::Leftover(d) => write!(
                f,
                "a dead maker's leftover, {} s old (more than {MAKE_TIMEOUT_SECS} s)",
                d.as_secs()
            ),
        }
    }
}

/// The current identities (`pod_abi::snapshot::file_id`) of the files a record names; `None`
/// when the file is gone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    /// The kernel's.
    pub kernel: Option<String>,
    /// guest-init's.
    pub guest_init: Option<String>,
}

/// Whether an entry is stale: its record (or why there is none), the current identities of the
/// files it names, when it was last used, and now. `None`: keep it.
pub fn judge(
    record: &Result<Source, String>,
    current: &Current,
    last_used: SystemTime,
    now: SystemTime,
) -> Option<Stale> {
    let src = match record {
        Ok(s) => s,
        Err(why) => return Some(Stale::NoSource(why.clone())),
    };
    match &current.kernel {
        None => return Some(Stale::KernelGone(src.kernel.clone())),
        Some(id) if *id != src.kernel_id => return Some(Stale::KernelChanged(src.kernel.clone())),
        Some(_) => {}
    }
    match &current.guest_init {
        None => return Some(Stale::GuestInitGone(src.guest_init.clone())),
        Some(id) if *id != src.guest_init_id => {
            return Some(Stale::GuestInitChanged(src.guest_init.clone()))
        }
        Some(_) => {}
    }
    let idle = now.duration_since(last_used).unwrap_or_default();
    (idle > Duration::from_secs(UNUSED_MAX_SECS)).then_some(Stale::Unused(idle))
}

/// Whether a `<id>.tmp` last changed at `modified` is a dead maker's leftover (its lock is free).
pub fn judge_making(modified: SystemTime, now: SystemTime) -> Option<Stale> {
    let age = now.duration_since(modified).unwrap_or_default();
    (age > Duration::from_secs(MAKE_TIMEOUT_SECS)).then_some(Stale::Leftover(age))
}

/// What [`gc`] does, name by name.
#[derive(Debug)]
pub enum SnapshotGcEvent {
    /// `name` (an id or `<id>.tmp`) was removed.
    Removed {
        /// The name in the cache directory.
        name: String,
        /// Why.
        why: Stale,
    },
    /// `name` was kept (for `--debug`).
    Kept {
        /// The name in the cache directory.
        name: String,
        /// Why.
        why: String,
    },
    /// Handling `name` failed.
    Failed {
        /// The name in the cache directory.
        name: String,
        /// What went wrong.
        error: String,
    },
}

/// The entry `dir`'s record, or why there is none (read bounded, no symlinks or FIFOs).
fn read_record(dir: &Path) -> Result<Source, String> {
    let b = pod_abi::podfile::read_beneath(dir, Path::new(SOURCE_FILE), SOURCE_MAX).map_err(
        |e| match e.is_not_found() {
            true => format!("no {SOURCE_FILE} file"),
            false => e.to_string(),
        },
    )?;
    Source::parse(&b).map_err(|e| e.to_string())
}

/// The cache directory of `data_dir` if it exists and is safe to clean (see the module docs).
fn open_root(data_dir: &Path) -> Result<Option<PathBuf>, SnapshotGcError> {
    let root = data_dir.join(CACHE_IN_DATA_DIR);
    let mut dir = data_dir.to_path_buf();
    for part in Path::new(CACHE_IN_DATA_DIR).components() {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => return Err(SnapshotGcError::Unsafe(dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(SnapshotGcError::Io { path: dir, source }),
        }
    }
    let m = fs::symlink_metadata(&root).map_err(|source| SnapshotGcError::Io {
        path: root.clone(),
        source,
    })?;
    if m.uid() != nix::unistd::geteuid().as_raw() || m.mode() & 0o077 != 0 {
        return Err(SnapshotGcError::Unsafe(root));
    }
    Ok(Some(root))
}

/// A real directory at `path` (not a symlink): its metadata.
fn real_dir(path: &Path) -> Option<fs::Metadata> {
    fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_dir())
}

/// Removes the stale entries of `<data_dir>/cache/snapshots` (see the module docs), reporting
/// each name through `on`. A missing cache is not an error. Returns whether every removal
/// succeeded.
pub fn gc(
    data_dir: &Path,
    now: SystemTime,
    on: &mut dyn FnMut(SnapshotGcEvent),
) -> Result<bool, SnapshotGcError> {
    let Some(root) = open_root(data_dir)? else {
        return Ok(true);
    };
    let mut ids = std::collections::BTreeSet::new();
    let list = fs::read_dir(&root).map_err(|source| SnapshotGcError::Io {
        path: root.clone(),
        source,
    })?;
    for e in list {
        let e = e.map_err(|source| SnapshotGcError::Io {
            path: root.clone(),
            source,
        })?;
        let name = e.file_name().to_string_lossy().into_owned();
        let id = [MAKING_SUFFIX, LOCK_SUFFIX]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        if is_entry_id(id) {
            ids.insert(id.to_string());
        } else {
            on(SnapshotGcEvent::Kept {
                name,
                why: "not a snapshot cache name".into(),
            });
        }
    }
    let mut all_ok = true;
    for id in ids {
        all_ok &= gc_key(&root, &id, now, on);
    }
    Ok(all_ok)
}

/// [`gc`] of one key: its entry, its `.tmp` and its lock file.
fn gc_key(root: &Path, id: &str, now: SystemTime, on: &mut dyn FnMut(SnapshotGcEvent)) -> bool {
    let entry = root.join(id);
    let making_name = format!("{id}{MAKING_SUFFIX}");
    let making = root.join(&making_name);
    // Never wait: a held lock means a maker is at work on this key.
    let lock = match lock_entry(root, id, false) {
        Ok(Some(l)) => l,
        Ok(None) => {
            for (p, name) in [(&entry, id), (&making, making_name.as_str())] {
                if fs::symlink_metadata(p).is_ok() {
                    on(SnapshotGcEvent::Kept {
                        name: name.to_string(),
                        why: "its lock is held (a snapshot is being made)".into(),
                    });
                }
            }
            return true;
        }
        Err(e) => {
            on(SnapshotGcEvent::Failed {
                name: id.to_string(),
                error: format!("cannot lock {id}{LOCK_SUFFIX}: {e}"),
            });
            return false;
        }
    };
    let mut ok = true;
    let mut remove = |path: &Path, name: &str, why: Stale, on: &mut dyn FnMut(SnapshotGcEvent)| {
        // A running pod restored from this entry keeps its memory file mapped: on Linux the
        // mapping holds the inode, so removing the file does not disturb the pod.
        match fs::remove_dir_all(path) {
            Ok(()) => on(SnapshotGcEvent::Removed {
                name: name.to_string(),
                why,
            }),
            Err(e) => {
                ok = false;
                on(SnapshotGcEvent::Failed {
                    name: name.to_string(),
                    error: format!("cannot remove it ({why}): {e}"),
                });
            }
        }
    };
    if let Some(m) = real_dir(&entry) {
        // Judged under the lock, from the last use as it is now: a pod restoring this entry
        // marks it used before it checks and maps it (stage1-vmm's `Cache::get_or_make`).
        let record = read_record(&entry);
        let current = record
            .as_ref()
            .map(|s| Current {
                kernel: file_id_of(&s.kernel).ok(),
                guest_init: file_id_of(&s.guest_init).ok(),
            })
            .unwrap_or_default();
        let used = last_used(&m).unwrap_or(SystemTime::UNIX_EPOCH);
        match judge(&record, &current, used, now) {
            Some(why) => remove(&entry, id, why, on),
            None => on(SnapshotGcEvent::Kept {
                name: id.to_string(),
                why: format!(
                    "last used {} s ago",
                    now.duration_since(used).unwrap_or_default().as_secs()
                ),
            }),
        }
    } else if fs::symlink_metadata(&entry).is_ok() {
        on(SnapshotGcEvent::Kept {
            name: id.to_string(),
            why: "not a directory".into(),
        });
    }
    if let Some(m) = real_dir(&making) {
        let modified = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        match judge_making(modified, now) {
            Some(why) => remove(&making, &making_name, why, on),
            None => on(SnapshotGcEvent::Kept {
                name: making_name.clone(),
                why: format!("younger than the maker's time limit ({MAKE_TIMEOUT_SECS} s)"),
            }),
        }
    } else if fs::symlink_metadata(&making).is_ok() {
        on(SnapshotGcEvent::Kept {
            name: making_name,
            why: "not a directory".into(),
        });
    }
    if fs::symlink_metadata(&entry).is_err() && fs::symlink_metadata(&making).is_err() {
        // Nothing left of the key: its lock file goes too, unlinked while held.
        let _ = fs::remove_file(root.join(format!("{id}{LOCK_SUFFIX}")));
    }
    drop(lock);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> Source {
        Source {
            kernel: "/img/kernel/vmlinux".into(),
            kernel_id: "k1".into(),
            guest_init: "/img/init".into(),
            guest_init_id: "g1".into(),
        }
    }

    fn same() -> Current {
        Current {
            kernel: Some("k1".into()),
            guest_init: Some("g1".into()),
        }
    }

    const NOW: Duration = Duration::from_secs(2_000_000_000);

    fn at(secs_ago: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + NOW - Duration::from_secs(secs_ago)
    }

    #[test]
    fn a_fresh_entry_with_its_files_unchanged_is_kept() {
        assert_eq!(judge(&Ok(src()), &same(), at(0), at(0)), None);
        assert_eq!(judge(&Ok(src()), &same(), at(UNUSED_MAX_SECS), at(0)), None);
        // A last use in the future (clock moved back) is no reason to remove it.
        assert_eq!(judge(&Ok(src()), &same(), at(0), at(10)), None);
    }

    #[test]
    fn stale_entries_say_why() {
        let now = at(0);
        assert!(matches!(
            judge(&Err("no such file".into()), &same(), now, now),
            Some(Stale::NoSource(_))
        ));
        let c = Current {
            kernel: None,
            ..same()
        };
        assert_eq!(
            judge(&Ok(src()), &c, now, now),
            Some(Stale::KernelGone(src().kernel))
        );
        let c = Current {
            kernel: Some("k2".into()),
            ..same()
        };
        assert_eq!(
            judge(&Ok(src()), &c, now, now),
            Some(Stale::KernelChanged(src().kernel))
        );
        let c = Current {
            guest_init: None,
            ..same()
        };
        assert_eq!(
            judge(&Ok(src()), &c, now, now),
            Some(Stale::GuestInitGone(src().guest_init))
        );
        let c = Current {
            guest_init: Some("g2".into()),
            ..same()
        };
        assert_eq!(
            judge(&Ok(src()), &c, now, now),
            Some(Stale::GuestInitChanged(src().guest_init))
        );
        let idle = UNUSED_MAX_SECS + 1;
        assert_eq!(
            judge(&Ok(src()), &same(), at(idle), now),
            Some(Stale::Unused(Duration::from_secs(idle)))
        );
    }

    #[test]
    fn a_tmp_is_a_leftover_only_after_the_makers_time_limit() {
        assert_eq!(judge_making(at(MAKE_TIMEOUT_SECS), at(0)), None);
        assert_eq!(judge_making(at(0), at(5)), None);
        assert_eq!(
            judge_making(at(MAKE_TIMEOUT_SECS + 1), at(0)),
            Some(Stale::Leftover(Duration::from_secs(MAKE_TIMEOUT_SECS + 1)))
        );
    }

    #[test]
    fn a_missing_cache_is_nothing_to_do_and_an_open_one_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tempdir");
        let mut events = 0;
        assert!(gc(d.path(), SystemTime::now(), &mut |_| events += 1).expect("gc"));
        let root = d.path().join(CACHE_IN_DATA_DIR);
        fs::create_dir_all(&root).expect("mkdir");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod");
        assert!(matches!(
            gc(d.path(), SystemTime::now(), &mut |_| events += 1),
            Err(SnapshotGcError::Unsafe(_))
        ));
        assert_eq!(events, 0);
    }
}
