//! The snapshot port: how a guest (the test init, guest-init) asks the KVM stage1 for a
//! snapshot at a point of its choosing, and how, after a restore, it reads the fresh per-VM data
//! that must not come from the snapshot (entropy, the wall clock; see docs/snapshot.md).
//!
//! Protocol (x86 port I/O, one byte per access):
//! - `out` [`REQUEST`] to [`PORT_DATA`]: snapshot here. The vCPU stops before the next
//!   instruction; the VMM saves the VM and ends it. A VMM that takes no snapshot ignores it.
//! - `in` [`PORT_STATUS`]: [`STATUS_RESTORED`] when this VM was restored from a snapshot and
//!   [`FRESH_LEN`] bytes of fresh data wait at [`PORT_DATA`]; anything else (0, or 0xff where no
//!   device answers) means a cold boot: carry on.
//! - `in` [`PORT_DATA`], [`FRESH_LEN`] times: the record [`Fresh::encode`] describes.

use std::path::Path;

/// guest-init's first argument when the kernel starts it from the snapshot initramfs: stop at
/// the snapshot port, then mount the pod's root share and continue as the pod's init.
pub const INIT_STAGE_ARG: &str = "--snapshot-stage";
/// Where the host puts guest-init's arguments for a restored pod, relative to the stage1 root
/// (one argument per line): a snapshot's kernel command line is the snapshot maker's, so pod
/// arguments cannot come from it.
pub const INIT_ARGS_IN_STAGE1: &str = "rkt/init-args";
/// Largest [`INIT_ARGS_IN_STAGE1`] guest-init reads (bytes).
pub const INIT_ARGS_MAX: usize = 64 << 10;

/// Most network cards a pod snapshot holds (a pod with more boots cold).
pub const MAX_NET_CARDS: usize = 16;

/// The MAC of network card `card` (0-based, in the pod's card order) in the VM that makes a
/// pod snapshot: a restored guest's interfaces keep the MACs their driver read at the maker's
/// boot, so guest-init finds card `card` by this MAC when no interface has the pod's and gives
/// it the pod's (locally administered, `02:72:6b:74:00:<card>`; `None` past
/// [`MAX_NET_CARDS`]).
pub fn maker_mac(card: usize) -> Option<[u8; 6]> {
    let n = u8::try_from(card).ok().filter(|_| card < MAX_NET_CARDS)?;
    Some([0x02, b'r', b'k', b't', 0, n])
}

/// The snapshot cache under rkt's data directory (`--dir`), outside every pod directory: one
/// entry `<id>/` per key id ([`is_entry_id`]), made in `<id>`[`MAKING_SUFFIX`] under an
/// exclusive `flock` on `<id>`[`LOCK_SUFFIX`]. stage1-vmm fills it, `rkt gc` empties it.
pub const CACHE_IN_DATA_DIR: &str = "cache/snapshots";
/// Suffix of the directory an entry is made in before it is renamed to `<id>`.
pub const MAKING_SUFFIX: &str = ".tmp";
/// Suffix of a key's lock file (exclusive `flock` while its entry is made or removed).
pub const LOCK_SUFFIX: &str = ".lock";
/// Length of an entry's id (hex SHA-256 of its key).
pub const ID_LEN: usize = 64;
/// The snapshot maker's time limit (seconds; under TCG emulation it takes ~10 s). A
/// `<id>`[`MAKING_SUFFIX`] older than this with its lock free is a dead maker's leftover.
pub const MAKE_TIMEOUT_SECS: u64 = 300;
/// An entry's source record ([`Source`]), written by the maker's parent into the entry before
/// it is renamed into place, so a complete entry always has one.
pub const SOURCE_FILE: &str = "source";
/// Largest [`SOURCE_FILE`] read back (bytes).
pub const SOURCE_MAX: usize = 4096;

/// Whether `name` is an entry's id: [`ID_LEN`] lowercase hex digits.
pub fn is_entry_id(name: &str) -> bool {
    name.len() == ID_LEN && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Takes the exclusive `flock` on `<root>/<id>`[`LOCK_SUFFIX`] (created 0600 if missing, never
/// through a symlink) that guards making and removing the entry: waits for it when `wait`,
/// else returns `Ok(None)` when another process holds it. The lock goes with the returned file.
/// `rkt gc` unlinks a lock file (holding it) after removing its entry, so a lock taken on a
/// file no longer at the path is dropped and taken again on the path's new file.
pub fn lock_entry(root: &Path, id: &str, wait: bool) -> std::io::Result<Option<std::fs::File>> {
    use crate::podfile::{flock, LockMode};
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let path = root.join(format!("{id}{LOCK_SUFFIX}"));
    loop {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        // The lock goes with the file.
        match flock(&f, LockMode::Exclusive, wait) {
            Ok(()) => {}
            Err(e) if !wait && e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        }
        let held = f.metadata()?;
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.dev() == held.dev() && m.ino() == held.ino() => return Ok(Some(f)),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Marks the entry `dir` used now: its directory's modification time is its last use
/// ([`last_used`]). One `utimensat`; the maker's writes into the entry set it too.
pub fn mark_used(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a NUL-terminated path we own; a null `times` means "now" for both times.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            std::ptr::null(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// When the entry whose directory has metadata `m` was last used ([`mark_used`]).
pub fn last_used(m: &std::fs::Metadata) -> std::io::Result<std::time::SystemTime> {
    m.modified()
}

/// A file's identity as snapshot keys use it: device, inode, size, modification and change
/// times (`dev:ino:size:mtime.ns:ctime.ns`). Any write changes the change time; hashing the
/// kernel at every pod start would cost seconds under emulation.
pub fn file_id(m: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "{}:{}:{}:{}.{}:{}.{}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    )
}

/// [`file_id`] of the file at `path` (symlinks followed).
pub fn file_id_of(path: &Path) -> std::io::Result<String> {
    std::fs::metadata(path).map(|m| file_id(&m))
}

/// What a cache entry was made from (its [`SOURCE_FILE`], JSON): the kernel's and guest-init's
/// host paths and their [`file_id`]s when the key was built. An entry whose files are gone or
/// changed can never be restored again (no key can name it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// The guest kernel (absolute host path).
    pub kernel: std::path::PathBuf,
    /// Its [`file_id`].
    pub kernel_id: String,
    /// The stage1 image's guest-init (absolute host path).
    pub guest_init: std::path::PathBuf,
    /// Its [`file_id`].
    pub guest_init_id: String,
}

/// A [`Source`] that cannot be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Larger than [`SOURCE_MAX`].
    #[error("source record is {0} bytes, more than {SOURCE_MAX}")]
    TooLarge(usize),
    /// Not the record's JSON (or a path is not UTF-8).
    #[error("source record: {0}")]
    Json(#[from] serde_json::Error),
    /// A path is relative or an id is empty.
    #[error("source record: relative path or empty id")]
    Invalid,
}

impl Source {
    fn valid(&self) -> bool {
        self.kernel.is_absolute()
            && self.guest_init.is_absolute()
            && !self.kernel_id.is_empty()
            && !self.guest_init_id.is_empty()
    }

    /// The record's bytes (at most [`SOURCE_MAX`]).
    pub fn encode(&self) -> Result<Vec<u8>, SourceError> {
        if !self.valid() {
            return Err(SourceError::Invalid);
        }
        let b = serde_json::to_vec(self)?;
        if b.len() > SOURCE_MAX {
            return Err(SourceError::TooLarge(b.len()));
        }
        Ok(b)
    }

    /// Parses a record; refuses more than [`SOURCE_MAX`] bytes, unknown fields, relative paths
    /// and empty ids.
    pub fn parse(b: &[u8]) -> Result<Source, SourceError> {
        if b.len() > SOURCE_MAX {
            return Err(SourceError::TooLarge(b.len()));
        }
        let s: Source = serde_json::from_slice(b)?;
        if !s.valid() {
            return Err(SourceError::Invalid);
        }
        Ok(s)
    }
}

/// The data/command port.
pub const PORT_DATA: u16 = 0x5e0;
/// The status port.
pub const PORT_STATUS: u16 = 0x5e1;
/// Number of ports the device decodes.
pub const PORTS: u16 = 2;
/// The byte written to [`PORT_DATA`] to ask for a snapshot ('S').
pub const REQUEST: u8 = 0x53;
/// [`PORT_STATUS`]: restored, fresh data waiting.
pub const STATUS_RESTORED: u8 = 1;
/// [`PORT_STATUS`]: not restored (cold boot).
pub const STATUS_COLD: u8 = 0;
/// Bytes of entropy in the record.
pub const ENTROPY_LEN: usize = 32;
/// Length of the fresh-data record (bytes).
pub const FRESH_LEN: usize = ENTROPY_LEN + 16;

/// The fresh per-VM data a restored guest reads: host entropy (from `getrandom`) for the
/// guest's pool (`RNDADDENTROPY`) and the host's wall clock for `clock_settime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fresh {
    /// Random bytes from the host.
    pub entropy: [u8; ENTROPY_LEN],
    /// CLOCK_REALTIME seconds at restore.
    pub secs: u64,
    /// CLOCK_REALTIME nanoseconds (below 1e9).
    pub nanos: u32,
}

impl Fresh {
    /// The record: entropy, then `secs` (u64 LE), `nanos` (u32 LE), 4 zero bytes.
    pub fn encode(&self) -> [u8; FRESH_LEN] {
        let mut out = [0u8; FRESH_LEN];
        out[..ENTROPY_LEN].copy_from_slice(&self.entropy);
        out[ENTROPY_LEN..ENTROPY_LEN + 8].copy_from_slice(&self.secs.to_le_bytes());
        out[ENTROPY_LEN + 8..ENTROPY_LEN + 12].copy_from_slice(&self.nanos.to_le_bytes());
        out
    }

    /// Parses a record; `None` when `nanos` is out of range.
    pub fn decode(b: &[u8; FRESH_LEN]) -> Option<Fresh> {
        let mut entropy = [0u8; ENTROPY_LEN];
        entropy.copy_from_slice(&b[..ENTROPY_LEN]);
        let mut secs = [0u8; 8];
        secs.copy_from_slice(&b[ENTROPY_LEN..ENTROPY_LEN + 8]);
        let mut nanos = [0u8; 4];
        nanos.copy_from_slice(&b[ENTROPY_LEN + 8..ENTROPY_LEN + 12]);
        let nanos = u32::from_le_bytes(nanos);
        (nanos < 1_000_000_000).then_some(Fresh {
            entropy,
            secs: u64::from_le_bytes(secs),
            nanos,
        })
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn maker_macs_are_local_distinct_and_bounded() {
        let macs: Vec<[u8; 6]> = (0..MAX_NET_CARDS).filter_map(maker_mac).collect();
        assert_eq!(macs.len(), MAX_NET_CARDS);
        for (i, m) in macs.iter().enumerate() {
            assert_eq!(m[0] & 0x03, 0x02, "locally administered unicast");
            assert!(macs[..i].iter().all(|o| o != m));
        }
        assert_eq!(maker_mac(MAX_NET_CARDS), None);
    }

    use super::*;

    fn source() -> Source {
        Source {
            kernel: "/d/cas/tree/x/rootfs/kernel/vmlinux".into(),
            kernel_id: "1:2:3:4.5:6.7".into(),
            guest_init: "/d/cas/tree/x/rootfs/init".into(),
            guest_init_id: "1:9:3:4.5:6.7".into(),
        }
    }

    #[test]
    fn source_records_round_trip_and_garbage_is_refused() {
        let b = source().encode().expect("encodes");
        assert_eq!(Source::parse(&b).expect("parses"), source());
        let mut long = source();
        long.kernel = format!("/{}", "k".repeat(SOURCE_MAX)).into();
        assert!(matches!(long.encode(), Err(SourceError::TooLarge(_))));
        assert!(matches!(
            Source::parse(&vec![b' '; SOURCE_MAX + 1]),
            Err(SourceError::TooLarge(_))
        ));
        let mut rel = source();
        rel.guest_init = "init".into();
        assert!(matches!(rel.encode(), Err(SourceError::Invalid)));
        let garbage: [&[u8]; 6] = [
            b"",
            b"\xff\xfe",
            b"{}",
            br#"{"kernel":"/k","kernelId":"a","guestInit":"/i"}"#,
            br#"{"kernel":"/k","kernelId":"","guestInit":"/i","guestInitId":"b"}"#,
            br#"{"kernel":"/k","kernelId":"a","guestInit":"/i","guestInitId":"b","x":1}"#,
        ];
        for g in garbage {
            assert!(
                Source::parse(g).is_err(),
                "{:?}",
                String::from_utf8_lossy(g)
            );
        }
        assert!(Source::parse(&b[..b.len() - 1]).is_err());
    }

    #[test]
    fn entry_ids_are_64_lowercase_hex_digits() {
        assert!(is_entry_id(&"0a".repeat(32)));
        for bad in [
            "",
            "ab",
            &"0A".repeat(32),
            &"0a".repeat(33),
            &format!("{}.tmp", "a".repeat(60)),
        ] {
            assert!(!is_entry_id(bad), "{bad}");
        }
    }

    #[test]
    fn entry_locks_exclude_each_other_and_survive_the_file_being_unlinked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = "ab".repeat(32);
        let held = lock_entry(dir.path(), &id, false)
            .expect("locks")
            .expect("free");
        assert!(lock_entry(dir.path(), &id, false).expect("tries").is_none());
        // The holder unlinks the file (as `rkt gc` does): a waiter that opened the old file
        // must end up holding the new one.
        let path = dir.path().join(format!("{id}{LOCK_SUFFIX}"));
        let root = dir.path().to_path_buf();
        let id2 = id.clone();
        let waiter = std::thread::spawn(move || lock_entry(&root, &id2, true));
        std::thread::sleep(std::time::Duration::from_millis(100));
        std::fs::remove_file(&path).expect("unlink");
        drop(held);
        let got = waiter.join().expect("join").expect("locks").expect("held");
        use std::os::unix::fs::MetadataExt;
        let on_disk = std::fs::metadata(&path).expect("recreated");
        assert_eq!(got.metadata().expect("fstat").ino(), on_disk.ino());
        assert!(lock_entry(dir.path(), &id, false).expect("tries").is_none());
    }

    #[test]
    fn marking_an_entry_used_moves_its_modification_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1 << 30);
        std::fs::File::open(dir.path())
            .and_then(|f| f.set_modified(old))
            .expect("set mtime");
        let m = std::fs::metadata(dir.path()).expect("stat");
        assert_eq!(last_used(&m).expect("mtime"), old);
        mark_used(dir.path()).expect("marks");
        let m = std::fs::metadata(dir.path()).expect("stat");
        let age = std::time::SystemTime::now()
            .duration_since(last_used(&m).expect("mtime"))
            .unwrap_or_default();
        assert!(age < std::time::Duration::from_secs(60), "{age:?}");
        assert!(mark_used(&dir.path().join("gone")).is_err());
    }

    #[test]
    fn file_ids_change_with_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("k");
        std::fs::write(&f, b"one").expect("write");
        let a = file_id_of(&f).expect("id");
        assert_eq!(a, file_id_of(&f).expect("id"));
        std::fs::write(&f, b"two!").expect("write");
        assert_ne!(a, file_id_of(&f).expect("id"));
        assert!(file_id_of(&dir.path().join("gone")).is_err());
    }

    #[test]
    fn record_round_trips_and_rejects_bad_nanos() {
        let f = Fresh {
            entropy: [7; ENTROPY_LEN],
            secs: 1_800_000_000,
            nanos: 999_999_999,
        };
        assert_eq!(Fresh::decode(&f.encode()), Some(f));
        let mut bad = f.encode();
        bad[ENTROPY_LEN + 8..ENTROPY_LEN + 12].copy_from_slice(&1_000_000_000u32.to_le_bytes());
        assert_eq!(Fresh::decode(&bad), None);
    }
}
