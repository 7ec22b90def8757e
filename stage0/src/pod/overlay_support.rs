//! Whether the pods directory can hold overlayfs upper directories. When it cannot (the data
//! directory lives on overlayfs itself, NFS, FUSE, CIFS ...), `prepare`/`run` fall back to
//! `--no-overlay` with one warning, as rkt did: the app trees are copied into the pod
//! (`tree_copy`).
//!
//! The file-system type decides without a mount for the common cases (an allow-list of
//! local file systems that take an upper dir, a deny-list of those that do not); any other
//! type is probed once per command by mounting a tiny overlay in a temporary directory under
//! the pods directory (about 5 ms).

use std::fs;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// File-system magics (`statfs.f_type`) known to hold an overlay upper dir: ext2/3/4, xfs,
/// btrfs, tmpfs, f2fs, zfs.
const UPPER_OK: [(u64, &str); 6] = [
    (0xEF53, "ext4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0x0102_1994, "tmpfs"),
    (0xF2F5_2010, "f2fs"),
    (0x2FC1_2FC1, "zfs"),
];

/// File-system magics that cannot hold an overlay upper dir.
const UPPER_REFUSED: [(u64, &str); 8] = [
    (0x794C_7630, "overlayfs"),
    (0x6969, "nfs"),
    (0x6573_5546, "fuse"),
    (0xFF53_4D42, "cifs"),
    (0xFE53_4D42, "smb2"),
    (0x0102_1997, "9p"),
    (0xF15F, "ecryptfs"),
    (0x7375_7245, "coda"),
];

/// The answer of [`probe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverlaySupport {
    /// Overlay mounts with upper dirs under the directory work.
    Yes,
    /// They do not; the reason (one line, for the warning).
    No(String),
}

/// How the file-system type `magic` decides, if it does.
pub fn classify(magic: u64) -> Option<Result<&'static str, &'static str>> {
    if let Some((_, n)) = UPPER_OK.iter().find(|(m, _)| *m == magic) {
        return Some(Ok(n));
    }
    UPPER_REFUSED
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, n)| Err(*n))
}

/// Whether `dir` (the pods directory, which must exist) can hold overlay upper dirs.
pub fn probe(dir: &Path) -> OverlaySupport {
    let magic = match nix::sys::statfs::statfs(dir) {
        // f_type is a signed word holding an unsigned 32-bit magic.
        Ok(st) => (st.filesystem_type().0 as u64) & 0xFFFF_FFFF,
        Err(e) => return OverlaySupport::No(format!("cannot statfs {}: {e}", dir.display())),
    };
    match classify(magic) {
        Some(Ok(_)) => OverlaySupport::Yes,
        Some(Err(name)) => OverlaySupport::No(format!(
            "{} is on {name}, which cannot hold an overlay upper directory",
            dir.display()
        )),
        None => mount_probe(dir, magic),
    }
}

/// Mounts an overlay with its upper dir in a fresh directory under `dir` and unmounts it.
fn mount_probe(dir: &Path, magic: u64) -> OverlaySupport {
    let base = dir.join(format!(".overlay-probe-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let res = (|| -> Result<(), String> {
        for d in ["lower", "upper", "work", "merged"] {
            fs::create_dir_all(base.join(d)).map_err(|e| e.to_string())?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            base.join("lower").display(),
            base.join("upper").display(),
            base.join("work").display()
        );
        if base.to_string_lossy().contains([',', ':', '\\']) {
            return Err("path not usable in overlay options".into());
        }
        let target = base.join("merged");
        mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(|e| e.to_string())?;
        let _ = umount2(&target, MntFlags::MNT_DETACH);
        Ok(())
    })();
    let _ = fs::remove_dir_all(&base);
    match res {
        Ok(()) => OverlaySupport::Yes,
        Err(e) => OverlaySupport::No(format!(
            "an overlay with its upper directory in {} (file system 0x{magic:x}) cannot be mounted: {e}",
            dir.display()
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn known_types_decide_without_mounting() {
        assert_eq!(classify(0xEF53), Some(Ok("ext4")));
        assert_eq!(classify(0x794C_7630), Some(Err("overlayfs")));
        assert_eq!(classify(0x6969), Some(Err("nfs")));
        assert_eq!(classify(0x1234), None);
        let t = tempfile::tempdir().unwrap();
        // Whatever the test's file system is, probing never leaves anything behind.
        let _ = probe(t.path());
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 0);
    }
}
