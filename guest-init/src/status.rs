//! Atomic writes of the per-app status and error files (`/rkt/status/<app>`,
//! `/rkt/errors/<app>`): temporary file, fsync, rename, fsync of the directory, so a reader never
//! sees a torn file even if the pod dies mid-write.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Writes `contents` to `dir/name` atomically, creating `dir` if needed.
pub fn write_atomic(dir: &Path, name: &str, contents: &str) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("status");
        write_atomic(&dir, "app", "1\n").unwrap();
        write_atomic(&dir, "app", "0\n").unwrap();
        assert_eq!(fs::read_to_string(dir.join("app")).unwrap(), "0\n");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }
}
