//! Store lock files in `cas/locks` (flock; released when the holder exits, even on SIGKILL).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::StoreError;
use crate::util::{flock, LockMode};

/// A held store lock; released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// Lock name of an image (by its sha256 ID, the blob key).
pub(crate) fn image_lock_name(sha256_id: &str) -> String {
    format!("image-{sha256_id}")
}

/// Lock name of a tree.
pub(crate) fn tree_lock_name(tree_id: &str) -> String {
    format!("tree-{tree_id}")
}

/// Waits for and takes the lock of the image whose sha256 ID is `sha256_id`.
pub(crate) fn image(
    cas: &Path,
    sha256_id: &str,
    mode: LockMode,
) -> Result<Option<StoreLock>, StoreError> {
    acquire(cas, &image_lock_name(sha256_id), mode, true)
}

/// Waits for and takes the lock of the tree `tree_id`.
pub(crate) fn tree(
    cas: &Path,
    tree_id: &str,
    mode: LockMode,
) -> Result<Option<StoreLock>, StoreError> {
    acquire(cas, &tree_lock_name(tree_id), mode, true)
}

/// Takes `cas/locks/<name>.lock` in `mode`. With `wait = false`, returns Ok(None) if busy.
pub(crate) fn acquire(
    cas: &Path,
    name: &str,
    mode: LockMode,
    wait: bool,
) -> Result<Option<StoreLock>, StoreError> {
    let path = cas.join("locks").join(format!("{name}.lock"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .map_err(StoreError::io("open lock", &path))?;
    match flock(&file, mode, wait) {
        Ok(()) => Ok(Some(StoreLock { _file: file })),
        Err(e) if !wait && e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(StoreError::io("lock", &path)(e)),
    }
}
