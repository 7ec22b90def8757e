//! Atomic writes of the per-app status and error files and of guest-init's own failure (paths
//! in `pod_abi::paths`: `GUEST_STATUS_DIR`, `GUEST_ERRORS_DIR`, `GUEST_FAILURE`), with
//! `pod_abi::podfile::write_atomic` (temporary file, fsync, rename, fsync of the directory), so a
//! reader never sees a torn file even if the pod dies mid-write.

use std::io;
use std::path::Path;

/// Writes `contents` to `dir/name` atomically, creating `dir` if needed.
pub fn write_atomic(dir: &Path, name: &str, contents: &str) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    pod_abi::podfile::write_atomic(&dir.join(name), contents.as_bytes())
}

/// Writes `contents` to `path` atomically, creating its directory if needed.
pub fn write_file(path: &Path, contents: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    pod_abi::podfile::write_atomic(path, contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("status");
        write_atomic(&dir, "app", "1\n").unwrap();
        write_atomic(&dir, "app", "0\n").unwrap();
        assert_eq!(fs::read_to_string(dir.join("app")).unwrap(), "0\n");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        let failure = d.path().join(pod_abi::paths::GUEST_FAILURE_IN_STAGE1);
        write_file(&failure, "bad plan\n").unwrap();
        assert_eq!(fs::read_to_string(&failure).unwrap(), "bad plan\n");
    }
}
