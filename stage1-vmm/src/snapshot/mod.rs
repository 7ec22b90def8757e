//! Snapshots of a booted VM, as Firecracker's: the guest asks for one at a point of its
//! choosing through the snapshot port (`pod_abi::snapshot`); the VMM completes the vCPU's port
//! write, saves the vCPUs, the VM (irqchip, PIT, KVM clock), the legacy devices and guest memory
//! into a directory, and ends the VM. A restore maps the memory file copy-on-write, sets the
//! state before the vCPUs first run, and hands the guest fresh entropy and the wall clock
//! through the same port (a snapshot's entropy and clock are shared by every VM restored from
//! it; see Firecracker's `random-for-clones.md`). docs/snapshot.md has the details.
//!
//! A snapshot directory holds two files: [`STATE_FILE`] ([`state::SnapshotState`] in the
//! [`mod@format`] encoding) and [`MEMORY_FILE`] (guest RAM, [`memory`]). Both are written to a
//! temporary name and renamed, memory first, so a directory with a state file is complete.
//!
//! Virtio-mmio transports are in the snapshot (registers, queue positions:
//! [`crate::devices::virtio::mmio::snapshot`]), device backends never: the restoring VM creates
//! the same devices in the same slots, each with its own fresh backend. Every vCPU is saved,
//! each by its own thread once all are out of the guest.

pub mod cache;
pub mod format;
pub mod initramfs;
pub mod kvm_state;
pub mod memory;
pub mod pod;
pub mod port;
pub mod state;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

pub use format::FormatError;
pub use port::SnapshotPort;
pub use state::SnapshotState;

/// The state file's name in a snapshot directory.
pub const STATE_FILE: &str = "state";
/// The memory file's name in a snapshot directory.
pub const MEMORY_FILE: &str = "memory";

/// What a VM does about snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Nothing: the snapshot port is absent, a guest's request is ignored.
    #[default]
    Off,
    /// Boot; when the guest asks, save into this directory and end the VM.
    Make(PathBuf),
    /// Restore from this directory instead of booting a kernel.
    Restore(PathBuf),
}

/// Errors saving or restoring a snapshot.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// A KVM ioctl failed.
    #[error("snapshot: {0} failed")]
    Ioctl(&'static str, #[source] kvm_ioctls::Error),
    /// Building an MSR or CPUID list failed.
    #[error("snapshot: cannot build an MSR or CPUID list")]
    Msrs,
    /// KVM refused to restore an MSR.
    #[error("snapshot: KVM refused MSR {0:#x} on restore")]
    MsrRefused(u32),
    /// The vCPU had another exit to report while its I/O was being completed.
    #[error("snapshot: the vCPU had a pending exit; not saved")]
    PendingExit,
    /// The state file cannot be parsed.
    #[error("snapshot state {path}: {source}")]
    Format {
        /// The state file.
        path: PathBuf,
        /// Why.
        #[source]
        source: FormatError,
    },
    /// An inconsistency between parts of a snapshot.
    #[error("snapshot: inconsistent {0}")]
    Corrupt(&'static str),
    /// The memory file's length is not the snapshot's memory size.
    #[error("snapshot memory file is {len} bytes, the state says {want}")]
    MemoryFileSize {
        /// Its length.
        len: u64,
        /// The state's memory size.
        want: u64,
    },
    /// A file operation failed.
    #[error("snapshot: {0}")]
    Io(&'static str, #[source] std::io::Error),
}

fn open_nofollow(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Reads and parses `dir`'s state file (bounded read; a symlink is refused).
pub fn read_state(dir: &Path) -> Result<SnapshotState, SnapshotError> {
    let path = dir.join(STATE_FILE);
    let f = open_nofollow(&path).map_err(|e| SnapshotError::Io("cannot open the state file", e))?;
    let mut buf = Vec::new();
    f.take(format::MAX_STATE_LEN as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| SnapshotError::Io("cannot read the state file", e))?;
    SnapshotState::decode(&buf).map_err(|source| SnapshotError::Format { path, source })
}

/// Opens `dir`'s memory file (a symlink is refused).
pub fn open_memory(dir: &Path) -> Result<File, SnapshotError> {
    open_nofollow(&dir.join(MEMORY_FILE))
        .map_err(|e| SnapshotError::Io("cannot open the memory file", e))
}

/// Writes `state` and `mem` into `dir` (created 0700 if missing): each file under a temporary
/// name, synced, then renamed; memory first.
pub fn write_dir(
    dir: &Path,
    state: &SnapshotState,
    mem: &crate::memory::GuestMem,
) -> Result<(), SnapshotError> {
    let io = |what| move |e| SnapshotError::Io(what, e);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("cannot create the snapshot directory"))?;
    let create = |name: &str| {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dir.join(name))
    };
    let mem_tmp = format!("{MEMORY_FILE}.tmp");
    let mut f = create(&mem_tmp).map_err(io("cannot create the memory file"))?;
    memory::save(mem, state.mem_size, &mut f)?;
    f.sync_all().map_err(io("cannot sync the memory file"))?;
    std::fs::rename(dir.join(&mem_tmp), dir.join(MEMORY_FILE))
        .map_err(io("cannot rename the memory file"))?;

    let state_tmp = format!("{STATE_FILE}.tmp");
    let mut f = create(&state_tmp).map_err(io("cannot create the state file"))?;
    f.write_all(&state.encode())
        .map_err(io("cannot write the state file"))?;
    f.sync_all().map_err(io("cannot sync the state file"))?;
    std::fs::rename(dir.join(&state_tmp), dir.join(STATE_FILE))
        .map_err(io("cannot rename the state file"))
}
