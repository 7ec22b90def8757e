//! Atomic writes of the per-app status and error files and of guest-init's own failure (paths
//! in `pod_abi::paths`: `GUEST_STATUS_DIR`, `GUEST_ERRORS_DIR`, `GUEST_FAILURE`), with
//! `pod_abi::podfile::write_atomic` (temporary file, fsync, rename, fsync of the directory), so a
//! reader never sees a torn file even if the pod dies mid-write.

//!
//! An app can fill the file system that holds the pod (the overlay upper layer under the
//! host's `--dir`). So that its status still gets written, guest-init reserves space at start
//! ([`reserve`]: a file of [`RESERVE_BYTES`] in `/rkt`), and a write that fails for lack of
//! space or quota gives the reserve back and tries once more.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Space kept for status, error and failure writes (bytes).
pub const RESERVE_BYTES: usize = 64 << 10;
/// Name of the reserve file in the directory given to [`reserve`].
pub const RESERVE_NAME: &str = ".status-reserve";

/// The reserve file, once made.
static RESERVE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Makes the reserve: [`RESERVE_BYTES`] of real blocks (written, not sparse) in `dir/`
/// [`RESERVE_NAME`], released by the first write that runs out of space.
pub fn reserve(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(RESERVE_NAME);
    let mut f = std::fs::File::create(&path)?;
    // Allocated (fallocate: blocks taken from free space at once, nothing written or to write
    // back), else written where the file system cannot allocate (virtio-fs, old overlayfs):
    // counted against free space at once too (ext4's delayed allocation reserves the blocks).
    // Never fsynced: a start must not wait for the disk.
    let len = libc::off_t::try_from(RESERVE_BYTES).unwrap_or(libc::off_t::MAX);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    if nix::fcntl::fallocate(fd, nix::fcntl::FallocateFlags::empty(), 0, len).is_err() {
        f.write_all(&vec![0u8; RESERVE_BYTES])?;
    }
    *RESERVE.lock().unwrap_or_else(|p| p.into_inner()) = Some(path);
    Ok(())
}

/// Removes the reserve if there is one; whether space was given back.
fn release_reserve() -> bool {
    let taken = RESERVE.lock().unwrap_or_else(|p| p.into_inner()).take();
    taken.is_some_and(|p| std::fs::remove_file(p).is_ok())
}

/// `pod_abi::podfile::write_atomic`, retried once after releasing the reserve when the file
/// system is full (`ENOSPC`) or over quota (`EDQUOT`).
fn write_reserved(path: &Path, contents: &[u8]) -> io::Result<()> {
    match pod_abi::podfile::write_atomic(path, contents) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) => {
            if release_reserve() {
                pod_abi::podfile::write_atomic(path, contents)
            } else {
                Err(e)
            }
        }
        r => r,
    }
}

/// Writes `contents` to `dir/name` atomically, creating `dir` if needed.
pub fn write_atomic(dir: &Path, name: &str, contents: &str) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_reserved(&dir.join(name), contents.as_bytes())
}

/// Writes `contents` to `path` atomically, creating its directory if needed.
pub fn write_file(path: &Path, contents: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_reserved(path, contents.as_bytes())
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

    /// An app fills the pod's file system; its status is still written, from the reserve.
    #[test]
    fn status_is_written_on_a_full_file_system() {
        const T: &str = "status_is_written_on_a_full_file_system";
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: {T}: needs root (mounts a small tmpfs)");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let mnt = d.path();
        let m = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
            .arg(mnt)
            .status()
            .unwrap();
        assert!(m.success());
        let fill = |name: &str| {
            let mut f = fs::File::create(mnt.join(name)).unwrap();
            let block = vec![1u8; 4096];
            while f.write_all(&block).is_ok() {}
            let _ = f.sync_all();
        };
        let rkt = mnt.join("rkt");
        reserve(&rkt).unwrap();
        fill("hog");
        // Without space, an atomic write fails (the attack works) ...
        let e = pod_abi::podfile::write_atomic(&rkt.join("probe"), b"0\n").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
        // ... and the status still lands, from the reserve.
        let r = write_atomic(&rkt.join("status"), "app", "7\n");
        let content = fs::read_to_string(rkt.join("status/app"));
        let _ = std::process::Command::new("umount").arg(mnt).status();
        r.unwrap();
        assert_eq!(content.unwrap(), "7\n");
    }
}
