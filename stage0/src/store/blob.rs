//! CAS blobs: `cas/blob/sha256/<2hex>/sha256-<64hex>`, the uncompressed tar of each image.
//!
//! A blob is written to an anonymous `O_TMPFILE` in `cas/tmp` (so a killed writer leaves
//! nothing behind), fsynced, then linked into place with `linkat`. Filesystems without
//! `O_TMPFILE` get a named, flocked temp file in `cas/tmp` that is renamed into place; later
//! operations delete such files once nobody holds their lock.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::StoreError;
use crate::util::{flock, fsync_dir, LockMode};

/// Size of the write buffer in front of a blob being imported, in bytes.
pub(crate) const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// Prefix of named temp files in `cas/tmp`.
const TMP_PREFIX: &str = "import-";

/// Prefix of download directories in `cas/tmp` (`docker://` layouts, [`DownloadDir`]).
const DOWNLOAD_PREFIX: &str = "download-";
/// The lock file inside a download directory, held while it is in use.
const DOWNLOAD_LOCK: &str = ".lock";

/// Named temp files younger than this are never cleaned up (they may be between `open`
/// and `flock`), in seconds.
const TMP_MIN_AGE_SECS: u64 = 60;

/// `cas/blob/sha256/<2hex>/<sha256_id>`.
pub(crate) fn blob_path(cas: &Path, sha256_id: &str) -> PathBuf {
    let hex = sha256_id.strip_prefix("sha256-").unwrap_or(sha256_id);
    let shard = hex.get(..2).unwrap_or("00");
    cas.join("blob").join("sha256").join(shard).join(sha256_id)
}

/// Every blob file: (sha256 ID, path).
pub(crate) fn list_blobs(cas: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let root = cas.join("blob").join("sha256");
    let Ok(shards) = fs::read_dir(&root) else {
        return out;
    };
    for shard in shards.flatten() {
        let Ok(files) = fs::read_dir(shard.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with("sha256-") && name.len() == 71 {
                out.push((name, f.path()));
            }
        }
    }
    out
}

/// A blob being written.
pub(crate) struct TempBlob {
    file: File,
    /// Some(path) for a named temp file; None for O_TMPFILE.
    named: Option<PathBuf>,
    tmp_dir: PathBuf,
}

impl TempBlob {
    /// Creates an anonymous temp file in `cas/tmp`, or a named flocked one if unsupported.
    pub(crate) fn create(cas: &Path) -> Result<TempBlob, StoreError> {
        let tmp_dir = cas.join("tmp");
        match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(super::datadir::INDEX_FILE_MODE)
            .open(&tmp_dir)
        {
            Ok(file) => {
                return Ok(TempBlob {
                    file,
                    named: None,
                    tmp_dir,
                })
            }
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
                ) => {}
            Err(e) => return Err(StoreError::io("create temp file in", &tmp_dir)(e)),
        }
        let name = format!(
            "{TMP_PREFIX}{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let path = tmp_dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(super::datadir::INDEX_FILE_MODE)
            .open(&path)
            .map_err(StoreError::io("create temp file", &path))?;
        flock(&file, LockMode::Exclusive, true).map_err(StoreError::io("lock temp file", &path))?;
        Ok(TempBlob {
            file,
            named: Some(path),
            tmp_dir,
        })
    }

    /// The file to write to.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// A path for error messages.
    pub(crate) fn path(&self) -> PathBuf {
        self.named.clone().unwrap_or_else(|| self.tmp_dir.clone())
    }

    /// fsyncs the data.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        self.file
            .sync_all()
            .map_err(StoreError::io("fsync", self.path()))
    }

    /// Makes the (synced) temp file visible at `dest` atomically, then fsyncs the directory.
    pub(crate) fn publish(&mut self, dest: &Path) -> Result<(), StoreError> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(StoreError::io("create directory", dir))?;
        match self.named.take() {
            Some(p) => fs::rename(&p, dest).map_err(StoreError::io("rename temp file to", dest))?,
            None => match link_tmpfile(&self.file, dest) {
                // Blobs are content-addressed and only ever published complete: an existing
                // file with this name already holds exactly these bytes.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                r => r.map_err(StoreError::io("link temp file to", dest))?,
            },
        }
        fsync_dir(dir).map_err(StoreError::io("fsync", dir))
    }
}

impl Drop for TempBlob {
    fn drop(&mut self) {
        if let Some(p) = &self.named {
            let _ = fs::remove_file(p);
        }
    }
}

/// Gives an `O_TMPFILE` file a name (through /proc/self/fd, which needs no capability).
fn link_tmpfile(f: &File, dest: &Path) -> io::Result<()> {
    let src = CString::new(format!("/proc/self/fd/{}", f.as_raw_fd()))?;
    let dst = CString::new(dest.as_os_str().as_bytes())?;
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call; the return
    // value is checked.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            src.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Deletes named temp files in `cas/tmp` whose writer is gone (their flock is free). Best
/// effort.
pub(crate) fn cleanup_tmp(cas: &Path) {
    let Ok(rd) = fs::read_dir(cas.join("tmp")) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(md) = e.metadata() else { continue };
        let old = md
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|a| a.as_secs() >= TMP_MIN_AGE_SECS);
        if !old {
            continue;
        }
        if name.starts_with(DOWNLOAD_PREFIX) {
            // A download directory nobody holds any more (its rkt died): removed whole.
            if let Ok(l) = File::open(e.path().join(DOWNLOAD_LOCK)) {
                if flock(&l, LockMode::Exclusive, false).is_ok() {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
            continue;
        }
        if !name.starts_with(TMP_PREFIX) {
            continue;
        }
        let Ok(f) = File::open(e.path()) else {
            continue;
        };
        if flock(&f, LockMode::Exclusive, false).is_ok() {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// A directory in `cas/tmp` for a download in progress (a `docker://` image's layout), held
/// by a shared lock on its lock file and removed when dropped; one a killed rkt left behind is
/// removed by a later [`cleanup_tmp`] (older than a minute, its lock free).
pub(crate) struct DownloadDir {
    dir: tempfile::TempDir,
    _lock: File,
}

impl DownloadDir {
    /// Makes one in `cas/tmp`.
    pub(crate) fn create(cas: &Path) -> Result<DownloadDir, StoreError> {
        let tmp = cas.join("tmp");
        let dir = tempfile::Builder::new()
            .prefix(DOWNLOAD_PREFIX)
            .tempdir_in(&tmp)
            .map_err(StoreError::io("create a directory in", &tmp))?;
        let lp = dir.path().join(DOWNLOAD_LOCK);
        let lock = File::create(&lp).map_err(StoreError::io("create", &lp))?;
        flock(&lock, LockMode::Shared, true).map_err(StoreError::io("lock", &lp))?;
        Ok(DownloadDir { dir, _lock: lock })
    }

    /// Its path.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Sets `p`'s modification time `secs` seconds into the past.
    fn age(p: &Path, secs: u64) {
        let t = std::time::SystemTime::now() - std::time::Duration::from_secs(secs);
        File::open(p).unwrap().set_modified(t).unwrap();
    }

    #[test]
    fn download_dirs_go_once_nobody_holds_them() {
        let cas = tempfile::tempdir().unwrap();
        fs::create_dir(cas.path().join("tmp")).unwrap();
        let held = DownloadDir::create(cas.path()).unwrap();
        let left = DownloadDir::create(cas.path()).unwrap();
        let left_path = left.path().to_path_buf();
        // A killed rkt: the directory stays, its lock is free.
        let DownloadDir { dir, _lock } = left;
        let _ = dir.keep();
        drop(_lock);
        for p in [held.path(), &left_path] {
            age(p, 2 * TMP_MIN_AGE_SECS);
        }
        cleanup_tmp(cas.path());
        assert!(held.path().is_dir(), "held: kept");
        assert!(!left_path.exists(), "abandoned: removed");
        let p = held.path().to_path_buf();
        drop(held);
        assert!(!p.exists(), "removed when dropped");
    }
}
