//! `rkt gc` and the KVM snapshot cache (`<dir>/cache/snapshots`, docs/snapshot.md "Cache
//! upkeep"), on a fake cache (no KVM, no stage1): entries whose kernel or guest-init is gone or
//! changed, that have no source record or were unused for longer than the period, and a dead
//! maker's old `.tmp` are removed; a fresh entry, a young `.tmp`, an entry whose lock is held
//! and names of other forms stay. A symlinked cache (or `cache`) is refused and what it points
//! at is untouched.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use pod_abi::snapshot::{
    file_id_of, lock_entry, Source, CACHE_IN_DATA_DIR, LOCK_SUFFIX, MAKE_TIMEOUT_SECS,
    MAKING_SUFFIX, SOURCE_FILE,
};
use rkt_tests::{rkt_bin, scratch_base, skip, stderr, stdout};

/// Twice what `stage0::snapshots::UNUSED_MAX_SECS` allows (24 h).
const LONG_UNUSED_SECS: u64 = 2 * 24 * 60 * 60;

fn id(n: u32) -> String {
    format!("{n:064x}")
}

fn set_mtime_ago(p: &Path, secs: u64) {
    let t = SystemTime::now() - Duration::from_secs(secs);
    fs::File::open(p).unwrap().set_modified(t).unwrap();
}

/// A cache entry `root/<id>` with a state and memory file and, if given, its source record.
fn entry(root: &Path, id: &str, source: Option<&Source>) -> PathBuf {
    let d = root.join(id);
    fs::create_dir(&d).unwrap();
    fs::write(d.join("state"), b"RKTSNAP\0").unwrap();
    fs::write(d.join("memory"), vec![0u8; 4096]).unwrap();
    if let Some(s) = source {
        fs::write(d.join(SOURCE_FILE), s.encode().unwrap()).unwrap();
    }
    d
}

/// A kernel and guest-init under `dir`, and the record naming them as they are now.
fn image(dir: &Path) -> Source {
    fs::create_dir_all(dir.join("kernel")).unwrap();
    let kernel = dir.join("kernel/vmlinux");
    let guest_init = dir.join("init");
    fs::write(&kernel, b"kernel").unwrap();
    fs::write(&guest_init, b"guest-init").unwrap();
    Source {
        kernel_id: file_id_of(&kernel).unwrap(),
        guest_init_id: file_id_of(&guest_init).unwrap(),
        kernel,
        guest_init,
    }
}

fn cache_dir(data: &Path) -> PathBuf {
    let root = data.join(CACHE_IN_DATA_DIR);
    fs::create_dir_all(&root).unwrap();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).unwrap();
    root
}

fn gc(rkt: &Path, data: &Path, debug: bool) -> Output {
    let mut c = Command::new(rkt);
    c.arg(format!("--dir={}", data.display()));
    if debug {
        c.arg("--debug");
    }
    let o = c.arg("gc").output().unwrap();
    eprintln!(
        "$ rkt gc\n[exit {:?}]\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    o
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The rkt binary and a scratch directory for `test`, or `None` after a SKIP line.
fn setup(test: &str) -> Option<(PathBuf, tempfile::TempDir)> {
    let Some(rkt) = rkt_bin() else {
        skip(test, "no rkt binary (set RKT_BIN or run `make build`)");
        return None;
    };
    let tmp = tempfile::Builder::new()
        .prefix("rkt-snapgc-")
        .tempdir_in(scratch_base())
        .unwrap();
    Some((rkt, tmp))
}

#[test]
fn gc_removes_stale_snapshot_entries_and_keeps_the_rest() {
    let Some((rkt, tmp)) = setup("gc_removes_stale_snapshot_entries_and_keeps_the_rest") else {
        return;
    };
    let data = tmp.path().join("data");
    let root = cache_dir(&data);
    let fresh_src = image(&tmp.path().join("img"));

    let fresh = entry(&root, &id(1), Some(&fresh_src));
    let gone_src = image(&tmp.path().join("img-gone"));
    entry(&root, &id(2), Some(&gone_src));
    fs::remove_file(&gone_src.kernel).unwrap();
    let changed_src = image(&tmp.path().join("img-changed"));
    entry(&root, &id(3), Some(&changed_src));
    std::thread::sleep(Duration::from_millis(20));
    fs::write(&changed_src.kernel, b"another kernel").unwrap();
    let unused = entry(&root, &id(4), Some(&fresh_src));
    set_mtime_ago(&unused, LONG_UNUSED_SECS);
    entry(&root, &id(5), None);
    let old_tmp = root.join(format!("{}{MAKING_SUFFIX}", id(6)));
    fs::create_dir(&old_tmp).unwrap();
    fs::write(old_tmp.join("memory"), b"half").unwrap();
    set_mtime_ago(&old_tmp, MAKE_TIMEOUT_SECS + 60);
    let young_tmp = root.join(format!("{}{MAKING_SUFFIX}", id(7)));
    fs::create_dir(&young_tmp).unwrap();
    // Stale twice over (no record, unused), but a maker holds its lock.
    let locked = entry(&root, &id(8), None);
    set_mtime_ago(&locked, LONG_UNUSED_SECS);
    let held = lock_entry(&root, &id(8), false).unwrap().unwrap();
    // A dead maker's lock file with nothing left of its key.
    fs::write(root.join(format!("{}{LOCK_SUFFIX}", id(9))), b"").unwrap();
    // Names of other forms, and the entry's neighbours outside the cache.
    fs::write(root.join("notes"), b"mine").unwrap();
    fs::create_dir(root.join(id(10).to_uppercase())).unwrap();
    fs::write(data.join("cache/other"), b"keep").unwrap();

    let o = gc(&rkt, &data, true);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for (n, why) in [
        (2, "its kernel"),
        (3, "its kernel"),
        (4, "unused for"),
        (5, "no usable source record"),
    ] {
        let line = format!("Removed snapshot {}: {why}", id(n));
        assert!(out.contains(&line), "no {line:?} in:\n{out}");
    }
    assert!(
        out.contains(&format!("{} is gone", gone_src.kernel.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("{} changed", changed_src.kernel.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "Removed snapshot {}{MAKING_SUFFIX}: a dead maker's leftover",
            id(6)
        )),
        "{out}"
    );
    assert_eq!(out.lines().count(), 5, "{out}");
    let err = stderr(&o);
    assert!(
        err.contains(&format!("snapshot cache: kept {}: last used", id(1))),
        "{err}"
    );
    assert!(
        err.contains(&format!("snapshot cache: kept {}: its lock is held", id(8))),
        "{err}"
    );

    let mut want = vec![
        id(1),
        format!("{}{LOCK_SUFFIX}", id(1)),
        format!("{}{MAKING_SUFFIX}", id(7)),
        format!("{}{LOCK_SUFFIX}", id(7)),
        id(8),
        format!("{}{LOCK_SUFFIX}", id(8)),
        id(10).to_uppercase(),
        "notes".to_string(),
    ];
    want.sort();
    assert_eq!(names(&root), want);
    assert!(fresh.join("memory").is_file() && fresh.join(SOURCE_FILE).is_file());
    assert_eq!(fs::read(data.join("cache/other")).unwrap(), b"keep");
    assert!(fresh_src.kernel.is_file() && changed_src.kernel.is_file());

    // Once the maker is done, the locked entry goes too; a second run without --debug says
    // nothing of what it keeps.
    drop(held);
    let o = gc(&rkt, &data, false);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        format!(
            "Removed snapshot {}: no usable source record (no {SOURCE_FILE} file)",
            id(8)
        )
    );
    assert!(
        !stderr(&o).contains("snapshot cache: kept"),
        "{}",
        stderr(&o)
    );
    assert!(fresh.join("memory").is_file());
}

#[test]
fn gc_refuses_a_symlinked_snapshot_cache() {
    let Some((rkt, tmp)) = setup("gc_refuses_a_symlinked_snapshot_cache") else {
        return;
    };
    // What the links point at: a directory shaped like a cache, with an entry gc would remove.
    let victim = tmp.path().join("victim");
    let victim_cache = cache_dir(&victim);
    let target = entry(&victim_cache, &id(1), None);
    let (cache, snapshots) = CACHE_IN_DATA_DIR.split_once('/').unwrap();

    // `cache/snapshots` is a symlink.
    let data = tmp.path().join("data-a");
    fs::create_dir_all(data.join(cache)).unwrap();
    std::os::unix::fs::symlink(&victim_cache, data.join(cache).join(snapshots)).unwrap();
    // `cache` is a symlink.
    let data_b = tmp.path().join("data-b");
    fs::create_dir_all(&data_b).unwrap();
    std::os::unix::fs::symlink(victim.join(cache), data_b.join(cache)).unwrap();

    for d in [&data, &data_b] {
        let o = gc(&rkt, d, true);
        assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stderr(&o).contains("not cleaned"), "{}", stderr(&o));
        assert!(!stdout(&o).contains("Removed snapshot"), "{}", stdout(&o));
        assert!(
            target.join("memory").is_file(),
            "gc removed an entry through a symlink"
        );
        assert_eq!(names(&victim_cache), vec![id(1)]);
    }
}
