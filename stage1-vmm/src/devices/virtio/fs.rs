//! virtio-fs (device ID 26), served in process by fuse-backend-rs.
//!
//! One host directory (the pod's `stage1/rootfs`) is exported through `PassthroughFs`, mounted
//! at "/" of a fuse-backend-rs `Vfs` with `do_import: false`. That combination matters for
//! safety: with `do_import: false` PassthroughFs skips its own name checks because the Vfs layer
//! validates every name component (names containing `/` are rejected with EINVAL, `..` at the
//! root of the share resolves to the root itself). Never use `do_import: false` without the Vfs,
//! and never share `/` (libkrun #329).
//!
//! Symlinks inside the share are returned to the guest as symlinks (READLINK gives their text);
//! the host never follows them during a lookup (PassthroughFs opens with `O_PATH | O_NOFOLLOW`),
//! so a link to `/etc` resolves inside the guest's view, not on the host.
//!
//! Queues: 0 = hiprio (FORGET, INTERRUPT), 1 = one request queue. Each descriptor chain is one
//! FUSE request handled by `Server::handle_message`; a failing request is logged and returned to
//! the guest with 0 bytes written, never a panic.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::api::{Vfs, VfsOptions};
use fuse_backend_rs::passthrough::{CachePolicy, Config as PassthroughConfig, PassthroughFs};
use fuse_backend_rs::transport::{Reader, VirtioFsWriter};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::epoll::Epoll;

use super::queue::{add_used, has_pending, pop_chain, QueueError};
use super::worker::{self, DeviceError, Drain, Worker, WorkerHandle};
use super::{ActivateArgs, ActivateError, Interrupt, VirtioDevice, TYPE_FS};
use crate::devices::GuestMem;

/// Maximum length of the mount tag (bytes, virtio 1.2, 5.11.4).
pub const TAG_LEN: usize = 36;
/// Default mount tag (the guest mounts `-t virtiofs rkt /mnt`).
pub const DEFAULT_TAG: &str = "rkt";
/// Queue size of the hiprio and the request queue (entries).
pub const QUEUE_SIZE: u16 = 256;
/// Number of request queues (in addition to the hiprio queue).
const NUM_REQUEST_QUEUES: u32 = 1;
/// Default entry and attribute cache timeout (seconds). The guest is the only writer of the pod
/// root while the pod runs, so caching is safe.
pub const DEFAULT_CACHE_TIMEOUT_SECS: u64 = 5;

/// Configuration of a virtio-fs device.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// Host directory to export (an absolute path; never `/`).
    pub shared_dir: PathBuf,
    /// Mount tag the guest uses (1 to [`TAG_LEN`] bytes).
    pub tag: String,
    /// Page-cache policy for the guest.
    pub cache_policy: CachePolicy,
    /// How long the guest may cache names and attributes.
    pub cache_timeout: Duration,
}

impl FsConfig {
    /// Exports `shared_dir` with the default tag and caching (`Always`, 5 s timeouts).
    pub fn new(shared_dir: impl Into<PathBuf>) -> Self {
        Self {
            shared_dir: shared_dir.into(),
            tag: DEFAULT_TAG.to_string(),
            cache_policy: CachePolicy::Always,
            cache_timeout: Duration::from_secs(DEFAULT_CACHE_TIMEOUT_SECS),
        }
    }
}

/// Errors setting up a virtio-fs device.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The tag is empty or longer than [`TAG_LEN`] bytes.
    #[error("invalid virtio-fs tag {0:?}")]
    Tag(String),
    /// The shared directory path is not usable (not absolute, `/`, or not UTF-8 without NULs).
    #[error("invalid shared directory {0:?}")]
    SharedDir(PathBuf),
    /// Creating the passthrough file system failed.
    #[error("cannot open the shared directory")]
    Passthrough(#[source] io::Error),
    /// Mounting it under the Vfs failed.
    #[error("cannot mount the shared directory")]
    Mount(#[source] fuse_backend_rs::api::vfs::VfsError),
}

/// The FUSE server type: a Vfs with the passthrough file system at "/".
type FsServer = Server<Arc<Vfs>>;

/// A virtio-fs device.
pub struct Fs {
    cfg: FsConfig,
    config_space: [u8; TAG_LEN + 4],
    /// A fresh server for the next activation (a FUSE session cannot be re-initialised).
    next_server: Option<Arc<FsServer>>,
    worker: Option<WorkerHandle>,
}

impl Fs {
    /// Opens the shared directory and prepares the server.
    pub fn new(cfg: FsConfig) -> Result<Fs, FsError> {
        let tag = cfg.tag.as_bytes();
        if tag.is_empty() || tag.len() > TAG_LEN {
            return Err(FsError::Tag(cfg.tag.clone()));
        }
        let mut config_space = [0u8; TAG_LEN + 4];
        if let Some(dst) = config_space.get_mut(..tag.len()) {
            dst.copy_from_slice(tag);
        }
        if let Some(dst) = config_space.get_mut(TAG_LEN..) {
            dst.copy_from_slice(&NUM_REQUEST_QUEUES.to_le_bytes());
        }
        let server = build_server(&cfg)?;
        Ok(Fs {
            cfg,
            config_space,
            next_server: Some(server),
            worker: None,
        })
    }
}

/// Builds the Vfs with PassthroughFs mounted at "/" (`do_import: false`: the Vfs validates
/// names) and the FUSE server over it.
fn build_server(cfg: &FsConfig) -> Result<Arc<FsServer>, FsError> {
    let dir = &cfg.shared_dir;
    let root_dir = dir
        .to_str()
        .filter(|s| dir.is_absolute() && !s.contains('\0'))
        .ok_or_else(|| FsError::SharedDir(dir.clone()))?;
    if dir.parent().is_none() {
        // Refuse to share the host's root.
        return Err(FsError::SharedDir(dir.clone()));
    }
    let pt_cfg = PassthroughConfig {
        root_dir: root_dir.to_string(),
        do_import: false,
        xattr: false,
        writeback: false,
        cache_policy: cfg.cache_policy.clone(),
        entry_timeout: cfg.cache_timeout,
        attr_timeout: cfg.cache_timeout,
        ..Default::default()
    };
    let fs = PassthroughFs::<()>::new(pt_cfg).map_err(FsError::Passthrough)?;
    // With do_import false the Vfs does not import the root itself; do it before mounting.
    fs.import().map_err(FsError::Passthrough)?;
    let vfs = Vfs::new(VfsOptions {
        no_open: false,
        no_opendir: false,
        no_writeback: true,
        killpriv_v2: false,
        ..VfsOptions::default()
    });
    vfs.mount(Box::new(fs), "/").map_err(FsError::Mount)?;
    Ok(Arc::new(Server::new(Arc::new(vfs))))
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        TYPE_FS
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space, offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        log::warn!("virtio-fs: write to read-only config space at {offset:#x} ignored");
    }

    fn activate(&mut self, args: ActivateArgs) -> Result<(), ActivateError> {
        if self.worker.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        let expected = self.queue_max_sizes().len();
        if args.queues.len() != expected || args.queue_evts.len() != expected {
            return Err(ActivateError::QueueCount {
                expected,
                got: args.queues.len(),
            });
        }
        let server = match self.next_server.take() {
            Some(s) => s,
            None => {
                build_server(&self.cfg).map_err(|e| ActivateError::Backend(io::Error::other(e)))?
            }
        };
        let fs_worker = FsWorker {
            mem: args.mem,
            queues: args.queues,
            interrupt: args.interrupt.clone(),
            server,
        };
        self.worker = Some(worker::spawn(
            "virtio-fs",
            args.queue_evts,
            args.interrupt,
            fs_worker,
        )?);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
    }
}

/// Copies `data.len()` bytes of `space` from `offset`; bytes outside `space` read as zero.
pub(crate) fn read_config_bytes(space: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = space.get(start..) {
        for (d, s) in data.iter_mut().zip(src) {
            *d = *s;
        }
    }
}

struct FsWorker {
    mem: GuestMem,
    queues: Vec<Queue>,
    interrupt: Interrupt,
    server: Arc<FsServer>,
}

impl FsWorker {
    /// Serves up to one queue's worth of requests from queue `index`.
    fn drain(&mut self, index: usize) -> Result<Drain, QueueError> {
        let mem = &self.mem;
        let Some(queue) = self.queues.get_mut(index) else {
            return Ok(Drain::Done);
        };
        let mut budget = queue.size();
        let mut used = false;
        let mut result = Drain::Done;
        while let Some(chain) = pop_chain(queue, mem)? {
            let head = chain.head_index();
            let reader = Reader::from_descriptor_chain(mem, chain.clone());
            let writer = VirtioFsWriter::new(mem, chain);
            let written = match (reader, writer) {
                (Ok(r), Ok(w)) => match self.server.handle_message(r, w.into(), None, None) {
                    Ok(n) => n,
                    Err(e) => {
                        log::warn!("virtio-fs: request failed: {e}");
                        0
                    }
                },
                (Err(e), _) | (_, Err(e)) => {
                    log::warn!("virtio-fs: bad request buffers: {e}");
                    0
                }
            };
            add_used(queue, mem, head, u32::try_from(written).unwrap_or(u32::MAX))?;
            used = true;
            budget = budget.saturating_sub(1);
            if budget == 0 {
                if has_pending(queue, mem)? {
                    result = Drain::More;
                }
                break;
            }
        }
        if used {
            self.interrupt.signal_used_queue();
        }
        Ok(result)
    }
}

impl Worker for FsWorker {
    fn queue_event(&mut self, _epoll: &Epoll, queue: usize) -> Result<Drain, DeviceError> {
        self.drain(queue)
            .map_err(|source| DeviceError::Queue { queue, source })
    }
}
