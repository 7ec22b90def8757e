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
use std::mem::size_of;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fuse_backend_rs::abi::fuse_abi::{InHeader, MknodIn, OutHeader};
use fuse_backend_rs::api::filesystem::FileSystem;
use fuse_backend_rs::api::server::{Server, MAX_BUFFER_SIZE};
use fuse_backend_rs::api::{Vfs, VfsOptions};
use fuse_backend_rs::passthrough::{CachePolicy, Config as PassthroughConfig, PassthroughFs};
use fuse_backend_rs::transport::{Reader, VirtioFsWriter};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vmm_sys_util::epoll::Epoll;

use super::queue::{add_used, pop_chain, QueueError};
use super::worker::{self, DeviceError, Drain, Worker, WorkerHandle};
use super::{ActivateArgs, ActivateError, Interrupt, LogLimiter, VirtioDevice, TYPE_FS};
use crate::memory::GuestMem;

/// Maximum length of the mount tag (bytes, virtio 1.2, 5.11.4).
pub const TAG_LEN: usize = 36;
/// Default mount tag (the guest mounts `-t virtiofs rkt /mnt`).
pub const DEFAULT_TAG: &str = "rkt";
/// Queue size of the hiprio and the request queue (entries).
pub const QUEUE_SIZE: u16 = 256;
/// Number of request queues (in addition to the hiprio queue).
const NUM_REQUEST_QUEUES: u32 = 1;
/// Default [`FsConfig::max_fds`] (descriptors): a walk of a 10 000-file tree needs a few
/// thousand; the share's whole state fits with room to spare.
pub const DEFAULT_MAX_FDS: u64 = 65_536;
/// Descriptors the rest of the VMM (guest memory, KVM, device eventfds, sockets) may hold on
/// top of [`FsConfig::max_fds`] (descriptors).
const FD_RESERVE: u64 = 1024;
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
    /// Host descriptors the guest may make the VMM hold through the share (descriptors; one
    /// per open handle and per looked-up, not forgotten inode). Enforced by the kernel:
    /// `Fs::new` sets `RLIMIT_NOFILE` to this plus a small reserve for the rest of the VMM, so
    /// beyond it the guest's OPEN, CREATE, OPENDIR and LOOKUP fail with EMFILE.
    pub max_fds: u64,
}

impl FsConfig {
    /// Exports `shared_dir` with the default tag and caching (`Always`, 5 s timeouts).
    pub fn new(shared_dir: impl Into<PathBuf>) -> Self {
        Self {
            shared_dir: shared_dir.into(),
            tag: DEFAULT_TAG.to_string(),
            cache_policy: CachePolicy::Always,
            cache_timeout: Duration::from_secs(DEFAULT_CACHE_TIMEOUT_SECS),
            max_fds: DEFAULT_MAX_FDS,
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
    config_space: [u8; TAG_LEN + 4],
    /// The FUSE server, kept across activations: it is built once, while `/proc` is still
    /// there (PassthroughFs opens `/proc/self/fd`, which the pod's jail then removes).
    server: Arc<FsServer>,
    /// The server's file system, ended (handles and inodes dropped) before each activation.
    vfs: Arc<Vfs>,
    worker: Option<WorkerHandle>,
    log_limit: LogLimiter,
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
        set_fd_limit(cfg.max_fds.saturating_add(FD_RESERVE));
        let (server, vfs) = build_server(&cfg)?;
        Ok(Fs {
            config_space,
            server,
            vfs,
            worker: None,
            log_limit: LogLimiter::default(),
        })
    }
}

/// Sets the open-file limit (soft and hard) to `budget` descriptors, or the kernel's `nr_open`
/// if that is lower. The hard limit goes down when it was higher (a guest must not pin more of
/// the host's file table than the budget), and up when the process may raise it (root with
/// CAP_SYS_RESOURCE, as virtiofsd); else the soft limit goes up to the hard one.
/// PassthroughFs keeps one `O_PATH` fd per inode the guest has looked up and not yet
/// forgotten, and one fd per open handle.
fn set_fd_limit(budget: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the valid `lim` we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        log::warn!("virtio-fs: getrlimit: {}", io::Error::last_os_error());
        return;
    }
    let want = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(budget, |nr_open| budget.min(nr_open));
    let both = libc::rlimit {
        rlim_cur: want,
        rlim_max: want,
    };
    // SAFETY: setrlimit reads the valid `both` we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &both) } == 0 {
        return;
    }
    // EPERM raising the hard limit without CAP_SYS_RESOURCE: the soft one can go up to it.
    lim.rlim_cur = want.min(lim.rlim_max);
    // SAFETY: setrlimit reads the valid `lim` we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        log::warn!("virtio-fs: setrlimit: {}", io::Error::last_os_error());
    }
}

/// Builds the Vfs with PassthroughFs mounted at "/" (`do_import: false`: the Vfs validates
/// names) and the FUSE server over it.
fn build_server(cfg: &FsConfig) -> Result<(Arc<FsServer>, Arc<Vfs>), FsError> {
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
    let vfs = Arc::new(vfs);
    Ok((Arc::new(Server::new(vfs.clone())), vfs))
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
        super::read_config_bytes(&self.config_space, offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        guest_warn!(
            self.log_limit,
            "virtio-fs: write to read-only config space at {offset:#x} ignored"
        );
    }

    fn activate(&mut self, args: ActivateArgs) -> Result<(), ActivateError> {
        // A re-activation ends the previous FUSE session on the worker thread (FsWorker::init):
        // the vCPU thread that activates the device has no file-system calls.
        let queues = self.queue_max_sizes().len();
        worker::activate(
            &mut self.worker,
            args,
            queues,
            "virtio-fs",
            |mem, queues, interrupt| FsWorker {
                mem,
                queues,
                interrupt,
                server: self.server.clone(),
                vfs: self.vfs.clone(),
                log_limit: LogLimiter::default(),
            },
        )
    }

    fn reset(&mut self) {
        // Dropping the handle stops the worker's loop and waits for it.
        self.worker = None;
    }
}

/// FUSE opcode of MKNOD.
const FUSE_MKNOD: u32 = 8;
/// FUSE opcode of IOCTL.
const FUSE_IOCTL: u32 = 39;

/// Most bytes a request chain may offer in each direction, readable and writable (bytes): the
/// largest FUSE payload the server negotiates (`MAX_BUFFER_SIZE`, 1 MiB, as max_write and the
/// largest READ) plus 2 MiB for headers and margin. Linux sends at most `max_pages` (256) pages
/// of payload plus headers. Beyond this the server would trust sizes a guest inflates for free
/// with descriptors that alias the same memory (IOCTL `in_size`, READDIR `size`).
const MAX_CHAIN_BYTES: u64 = MAX_BUFFER_SIZE as u64 + (2 << 20);

/// Readable and writable bytes a chain offers (saturating; the chain was validated).
fn chain_bytes(chain: &DescriptorChain<&GuestMem>) -> (u64, u64) {
    chain.clone().fold((0u64, 0u64), |(rd, wr), d| {
        let n = u64::from(d.len());
        if d.is_write_only() {
            (rd, wr.saturating_add(n))
        } else {
            (rd.saturating_add(n), wr)
        }
    })
}

/// Answers a request the device refuses before the server sees it; returns the reply size if
/// it answered. Works on a private copy of the header, so a guest rewriting the request later
/// changes nothing here (the server reads it again; the chain cap and the worker's missing
/// `CAP_MKNOD` bound what it can do then):
/// - IOCTL gets ENOTTY (the share implements none; the server would allocate `in_size` first);
/// - MKNOD of a character or block device gets EPERM: a device node created by the guest in
///   the share would be opened by the VMM on the host.
fn refuse_early(
    r: &Reader<'_>,
    w: &mut VirtioFsWriter<'_>,
    log_limit: &mut LogLimiter,
) -> Option<usize> {
    let mut peek = r.clone();
    let hdr: InHeader = peek.read_obj().ok()?;
    let errno = match hdr.opcode {
        FUSE_IOCTL => libc::ENOTTY,
        FUSE_MKNOD => {
            let args: MknodIn = peek.read_obj().ok()?;
            let kind = args.mode & libc::S_IFMT;
            if kind != libc::S_IFCHR && kind != libc::S_IFBLK {
                return None;
            }
            guest_warn!(
                log_limit,
                "virtio-fs: guest tried to create a device node; refused"
            );
            libc::EPERM
        }
        _ => return None,
    };
    let out = OutHeader {
        len: size_of::<OutHeader>() as u32,
        error: -errno,
        unique: hdr.unique,
    };
    match w.write_obj(out) {
        Ok(()) => Some(size_of::<OutHeader>()),
        Err(e) => {
            guest_warn!(log_limit, "virtio-fs: cannot write reply: {e}");
            Some(0)
        }
    }
}

struct FsWorker {
    mem: GuestMem,
    queues: Vec<Queue>,
    interrupt: Interrupt,
    /// The FUSE server (the device's, shared by every activation).
    server: Arc<FsServer>,
    /// Its file system, ended by [`Worker::init`].
    vfs: Arc<Vfs>,
    log_limit: LogLimiter,
}

impl FsWorker {
    /// Serves up to one queue's worth of requests from queue `index`.
    fn drain(&mut self, index: usize) -> Result<Drain, QueueError> {
        let mem = &self.mem;
        let server = &self.server;
        let Some(queue) = self.queues.get_mut(index) else {
            return Ok(Drain::Done);
        };
        let mut budget = queue.size();
        let mut used = false;
        // Guest kicks are suppressed while draining (VRING_USED_F_NO_NOTIFY) and re-enabled
        // before returning; `enable_notification` says whether chains arrived meanwhile.
        let result = 'drain: loop {
            queue.disable_notification(mem).map_err(QueueError::Avail)?;
            while let Some(chain) = pop_chain(queue, mem)? {
                let head = chain.head_index();
                let written = serve(mem, server, &mut self.log_limit, chain);
                log::trace!("virtio-fs: queue {index}: head {head}: {written} bytes replied");
                add_used(queue, mem, head, u32::try_from(written).unwrap_or(u32::MAX))?;
                used = true;
                budget = budget.saturating_sub(1);
                if budget == 0 {
                    let more = queue.enable_notification(mem).map_err(QueueError::Avail)?;
                    break 'drain if more { Drain::More } else { Drain::Done };
                }
            }
            if !queue.enable_notification(mem).map_err(QueueError::Avail)? {
                break Drain::Done;
            }
            // Each extra round also costs budget, so a driver that keeps moving its avail index
            // cannot keep the worker here.
            budget = budget.saturating_sub(1);
            if budget == 0 {
                break Drain::More;
            }
        };
        if used {
            self.interrupt.signal_used_queue();
        }
        Ok(result)
    }
}

/// Serves one FUSE request; returns the reply size (0 when the request failed).
fn serve(
    mem: &GuestMem,
    server: &FsServer,
    log_limit: &mut LogLimiter,
    chain: DescriptorChain<&GuestMem>,
) -> usize {
    let (rd, wr) = chain_bytes(&chain);
    if rd > MAX_CHAIN_BYTES || wr > MAX_CHAIN_BYTES {
        guest_warn!(
            log_limit,
            "virtio-fs: request chain of {rd} readable and {wr} writable bytes refused \
             (most {MAX_CHAIN_BYTES} each)"
        );
        return 0;
    }
    let reader = Reader::from_descriptor_chain(mem, chain.clone());
    let writer = VirtioFsWriter::new(mem, chain);
    match (reader, writer) {
        (Ok(r), Ok(mut w)) => match refuse_early(&r, &mut w, log_limit) {
            Some(n) => n,
            None => match server.handle_message(r, w.into(), None, None) {
                Ok(n) => n,
                Err(e) => {
                    guest_warn!(log_limit, "virtio-fs: request failed: {e}");
                    0
                }
            },
        },
        (Err(e), _) | (_, Err(e)) => {
            guest_warn!(log_limit, "virtio-fs: bad request buffers: {e}");
            0
        }
    }
}

impl Worker for FsWorker {
    fn init(&mut self, _epoll: &Epoll) -> Result<(), DeviceError> {
        // A driver reset may have ended the last session without FUSE_DESTROY: drop its
        // handles and inodes (closing their fds) and re-import the root, so the next INIT
        // starts a new session. Nothing here needs `/proc`. A no-op before the first INIT.
        self.vfs.destroy();
        Ok(())
    }

    fn queue_event(&mut self, _epoll: &Epoll, queue: usize) -> Result<Drain, DeviceError> {
        self.drain(queue)
            .map_err(|source| DeviceError::Queue { queue, source })
    }
}

/// The guest-test mark (`ci/guest-tests.sh`), borrowed by a test that needs a capability this
/// host's CI lacks and ci/nested-kvm's L1 (root) has.
#[cfg(test)]
#[path = "../../../tests/common/guest.rs"]
mod guest_mark;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::Path;

    use fuse_backend_rs::abi::fuse_abi::{
        EntryOut, InitIn, IoctlIn, OpenIn, OpenOut, ReadIn, ReleaseIn, SetattrIn,
    };
    use vm_memory::{ByteValued, Bytes, GuestAddress};

    use super::*;
    use crate::devices::virtio::mmio::MmioTransport;
    use crate::devices::virtio::test_utils::*;

    const LOOKUP: u32 = 1;
    const READLINK: u32 = 5;
    const OPEN: u32 = 14;
    const READ: u32 = 15;
    const INIT: u32 = 26;
    /// FUSE root node ID.
    const ROOT: u64 = 1;
    /// Request buffer (guest physical address).
    const REQ: u64 = DATA_BASE;
    /// Response buffer (guest physical address) and its size (bytes).
    const RESP: u64 = DATA_BASE + 0x1_0000;
    const RESP_LEN: u32 = 0x1_0000;
    const HELLO: &[u8] = b"hello from the share\n";

    /// A FUSE client talking to the device through its request queue.
    struct Client {
        mem: GuestMem,
        t: MmioTransport,
        q: Vec<GuestQueue>,
        unique: u64,
    }

    /// A reply: errno (0 on success) and body length.
    struct Reply {
        error: i32,
        len: usize,
    }

    impl Client {
        fn new(share: &Path) -> Client {
            Client::with(FsConfig::new(share))
        }

        fn with(cfg: FsConfig) -> Client {
            let mem = guest_memory();
            let dev = Fs::new(cfg).unwrap();
            let (t, q, _irq) = activated(&mem, Box::new(dev), &[QUEUE_SIZE, QUEUE_SIZE]);
            let mut c = Client {
                mem,
                t,
                q,
                unique: 0,
            };
            let init = InitIn {
                major: 7,
                minor: 31,
                max_readahead: 0x2_0000,
                flags: 0,
            };
            assert_eq!(c.call(INIT, 0, init.as_slice()).error, 0);
            c
        }

        /// Sends one raw chain: `req` as the readable part, one writable response buffer.
        fn raw(&mut self, req: &[u8]) -> u32 {
            self.mem.write_slice(req, GuestAddress(REQ)).unwrap();
            self.mem
                .write_slice(&[0u8; RESP_LEN as usize], GuestAddress(RESP))
                .unwrap();
            let rq = &mut self.q[1];
            rq.add_chain(
                &self.mem,
                &[(REQ, req.len() as u32, false), (RESP, RESP_LEN, true)],
            );
            notify(&mut self.t, 1);
            rq.wait_used(&self.mem).1
        }

        fn call(&mut self, opcode: u32, nodeid: u64, body: &[u8]) -> Reply {
            self.unique += 1;
            let hdr = InHeader {
                len: (std::mem::size_of::<InHeader>() + body.len()) as u32,
                opcode,
                unique: self.unique,
                nodeid,
                uid: 0,
                gid: 0,
                pid: 1,
                padding: 0,
            };
            let req = [hdr.as_slice(), body].concat();
            let used = self.raw(&req);
            let out: OutHeader = self.mem.read_obj(GuestAddress(RESP)).unwrap();
            assert_eq!(out.unique, self.unique);
            assert_eq!(out.len, used, "used length is the reply length");
            Reply {
                error: -out.error,
                len: used as usize - std::mem::size_of::<OutHeader>(),
            }
        }

        fn body<T: ByteValued>(&self) -> T {
            let at = RESP + std::mem::size_of::<OutHeader>() as u64;
            self.mem.read_obj(GuestAddress(at)).unwrap()
        }

        fn body_bytes(&self, len: usize) -> Vec<u8> {
            let mut v = vec![0u8; len];
            let at = RESP + std::mem::size_of::<OutHeader>() as u64;
            self.mem.read_slice(&mut v, GuestAddress(at)).unwrap();
            v
        }

        /// LOOKUP `name` in `parent`: the entry, or the errno.
        fn lookup(&mut self, parent: u64, name: &[u8]) -> Result<EntryOut, i32> {
            let body = [name, b"\0"].concat();
            let r = self.call(LOOKUP, parent, &body);
            if r.error != 0 {
                return Err(r.error);
            }
            let e: EntryOut = self.body();
            if e.nodeid == 0 {
                // Negative entry.
                return Err(libc::ENOENT);
            }
            Ok(e)
        }

        fn readlink(&mut self, node: u64) -> Result<Vec<u8>, i32> {
            let r = self.call(READLINK, node, &[]);
            if r.error != 0 {
                return Err(r.error);
            }
            Ok(self.body_bytes(r.len))
        }

        fn open(&mut self, node: u64) -> Result<u64, i32> {
            let open = OpenIn {
                flags: libc::O_RDONLY as u32,
                fuse_flags: 0,
            };
            let r = self.call(OPEN, node, open.as_slice());
            if r.error != 0 {
                return Err(r.error);
            }
            Ok(self.body::<OpenOut>().fh)
        }

        fn read(&mut self, node: u64, fh: u64, size: u32) -> Result<Vec<u8>, i32> {
            let read = ReadIn {
                fh,
                offset: 0,
                size,
                ..Default::default()
            };
            let r = self.call(READ, node, read.as_slice());
            if r.error != 0 {
                return Err(r.error);
            }
            Ok(self.body_bytes(r.len))
        }
    }

    /// `root/share` (exported) next to `root/outside` (must stay unreachable).
    fn layout() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let share = root.path().join("share");
        let outside = root.path().join("outside");
        std::fs::create_dir_all(share.join("a")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(share.join("hello.txt"), HELLO).unwrap();
        std::fs::write(share.join("a/b"), b"inner").unwrap();
        std::fs::write(outside.join("secret.txt"), b"host secret").unwrap();
        symlink("/etc", share.join("etc-link")).unwrap();
        symlink("../outside", share.join("up-link")).unwrap();
        symlink(outside.join("secret.txt"), share.join("secret-link")).unwrap();
        root
    }

    #[test]
    fn lookup_open_read_returns_file_bytes() {
        let root = layout();
        let mut c = Client::new(&root.path().join("share"));
        let e = c.lookup(ROOT, b"hello.txt").unwrap();
        assert_eq!(e.attr.mode & libc::S_IFMT, libc::S_IFREG);
        assert_eq!(e.attr.size, HELLO.len() as u64);
        let fh = c.open(e.nodeid).unwrap();
        assert_eq!(c.read(e.nodeid, fh, 4096).unwrap(), HELLO);
        // Nested lookups work one component at a time.
        let a = c.lookup(ROOT, b"a").unwrap();
        let b = c.lookup(a.nodeid, b"b").unwrap();
        let fh = c.open(b.nodeid).unwrap();
        assert_eq!(c.read(b.nodeid, fh, 4096).unwrap(), b"inner");
        assert!(!c.t.needs_reset());
        // Guest kicks are enabled again after every drain (used ring flags = 0).
        let flags: u16 = c.mem.read_obj(GuestAddress(c.q[1].used)).unwrap();
        assert_eq!(flags, 0);
    }

    #[test]
    fn dotdot_at_the_root_stays_in_the_share() {
        let root = layout();
        let mut c = Client::new(&root.path().join("share"));
        eprintln!(
            "PROBE dotdot root: {:?}",
            c.lookup(ROOT, b"..").map(|e| e.nodeid)
        );
        // ".." of the share root is the share root itself.
        let up = c.lookup(ROOT, b"..").unwrap();
        assert!(c.lookup(up.nodeid, b"hello.txt").is_ok());
        assert_eq!(
            c.lookup(up.nodeid, b"outside").map(|e| e.nodeid),
            Err(libc::ENOENT)
        );
        assert_eq!(
            c.lookup(up.nodeid, b"share").map(|e| e.nodeid),
            Err(libc::ENOENT)
        );
        // ".." inside a subdirectory leads back to the share root, no further.
        let a = c.lookup(ROOT, b"a").unwrap();
        let up = c.lookup(a.nodeid, b"..").unwrap();
        assert!(c.lookup(up.nodeid, b"hello.txt").is_ok());
        let upup = c.lookup(up.nodeid, b"..").unwrap();
        assert_eq!(
            c.lookup(upup.nodeid, b"outside").map(|e| e.nodeid),
            Err(libc::ENOENT)
        );
    }

    #[test]
    fn names_with_slashes_are_rejected() {
        let root = layout();
        let mut c = Client::new(&root.path().join("share"));
        assert_eq!(c.lookup(ROOT, b"a/b").map(|e| e.nodeid), Err(libc::EINVAL));
        assert_eq!(
            c.lookup(ROOT, b"../outside").map(|e| e.nodeid),
            Err(libc::EINVAL)
        );
        assert_eq!(c.lookup(ROOT, b"/etc").map(|e| e.nodeid), Err(libc::EINVAL));
        let a = c.lookup(ROOT, b"a").unwrap();
        assert_eq!(
            c.lookup(a.nodeid, b"../../outside").map(|e| e.nodeid),
            Err(libc::EINVAL)
        );
    }

    #[test]
    fn symlinks_are_not_followed_on_the_host() {
        let root = layout();
        let mut c = Client::new(&root.path().join("share"));

        let l = c.lookup(ROOT, b"etc-link").unwrap();
        assert_eq!(l.attr.mode & libc::S_IFMT, libc::S_IFLNK);
        assert_eq!(c.readlink(l.nodeid).unwrap(), b"/etc");
        // The link's node is the link itself, not a directory to walk through.
        assert_eq!(
            c.lookup(l.nodeid, b"passwd").map(|e| e.nodeid),
            Err(libc::ENOTDIR)
        );
        assert_eq!(
            c.lookup(l.nodeid, b"hostname").map(|e| e.nodeid),
            Err(libc::ENOTDIR)
        );

        let u = c.lookup(ROOT, b"up-link").unwrap();
        assert_eq!(c.readlink(u.nodeid).unwrap(), b"../outside");
        assert_eq!(
            c.lookup(u.nodeid, b"secret.txt").map(|e| e.nodeid),
            Err(libc::ENOTDIR)
        );

        // Opening a symlink's node must not open its host target.
        let s = c.lookup(ROOT, b"secret-link").unwrap();
        assert_eq!(s.attr.mode & libc::S_IFMT, libc::S_IFLNK);
        eprintln!("PROBE open symlink: {:?}", c.open(s.nodeid));
        eprintln!(
            "PROBE lookup in etc-link: {:?}",
            c.lookup(l.nodeid, b"passwd").map(|e| e.nodeid)
        );
        assert!(c.open(s.nodeid).is_err());
        // READ with a made-up handle on that node fails too.
        assert!(c.read(s.nodeid, 1, 4096).is_err());
        // SETATTR (chmod + truncate) on the link's node must not reach the target.
        let secret = root.path().join("outside/secret.txt");
        let before = std::fs::metadata(&secret).unwrap();
        let setattr = SetattrIn {
            valid: 0x1 | 0x8, // FATTR_MODE | FATTR_SIZE
            mode: libc::S_IFREG | 0o777,
            size: 0,
            ..Default::default()
        };
        assert_ne!(c.call(4, s.nodeid, setattr.as_slice()).error, 0);
        let after = std::fs::metadata(&secret).unwrap();
        assert_eq!(after.len(), before.len());
        assert_eq!(after.permissions(), before.permissions());
        assert_eq!(std::fs::read(&secret).unwrap(), b"host secret");
    }

    #[test]
    fn device_nodes_cannot_be_created() {
        let root = layout();
        let share = root.path().join("share");
        let mut c = Client::new(&share);
        let mknod = |mode: u32, name: &[u8]| {
            let args = MknodIn {
                mode: mode | 0o666,
                rdev: libc::makedev(1, 3) as u32,
                umask: 0,
                padding: 0,
            };
            [args.as_slice(), name, b"\0"].concat()
        };
        let r = c.call(FUSE_MKNOD, ROOT, &mknod(libc::S_IFCHR, b"null"));
        assert_eq!(r.error, libc::EPERM);
        let r = c.call(FUSE_MKNOD, ROOT, &mknod(libc::S_IFBLK, b"disk"));
        assert_eq!(r.error, libc::EPERM);
        assert!(!share.join("null").exists());
        assert!(!share.join("disk").exists());
        // Other node types still work.
        let r = c.call(FUSE_MKNOD, ROOT, &mknod(libc::S_IFIFO, b"fifo"));
        assert_eq!(r.error, 0);
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::symlink_metadata(share.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
    }

    /// Writes `req` at `REQ` and sends one chain of `readable` then `writable` buffers; returns
    /// the used length.
    fn aliased_chain(
        c: &mut Client,
        req: &[u8],
        readable: &[(u64, u32, bool)],
        writable: &[(u64, u32, bool)],
    ) -> u32 {
        c.mem.write_slice(req, GuestAddress(REQ)).unwrap();
        let bufs = [readable, writable].concat();
        let rq = &mut c.q[1];
        rq.add_chain(&c.mem, &bufs);
        notify(&mut c.t, 1);
        rq.wait_used(&c.mem).1
    }

    /// Bytes of guest memory every aliased descriptor covers (30 MiB of the 32 MiB test memory).
    const ALIAS_LEN: u32 = 0x1e0_0000;
    /// Aliased descriptors per chain: 3.5 GiB offered (virtio-queue itself stops a chain at
    /// 4 GiB, which the queue code treats as malformed).
    const ALIASES: usize = 120;
    /// A size the server would allocate (bytes; below the 3.5 GiB offered).
    const HUGE: u32 = 0xd000_0000;

    /// Attack (audit vmm #1): an IOCTL claiming `in_size` = 3.25 GiB in a chain of 120 readable
    /// descriptors aliasing the same 30 MiB (3.5 GiB offered) made the server allocate and
    /// copy 3.25 GiB. The chain is refused unread; a plain IOCTL gets ENOTTY; the device goes on.
    #[test]
    fn ioctl_with_an_inflated_chain_is_refused() {
        let root = layout();
        let mut c = Client::new(&root.path().join("share"));
        let ioctl = IoctlIn {
            fh: 0,
            flags: 0,
            cmd: 0x5401,
            arg: 0,
            in_size: HUGE,
            out_size: 0,
        };
        c.unique += 1;
        let hdr = InHeader {
            len: (size_of::<InHeader>() + size_of::<IoctlIn>()) as u32,
            opcode: FUSE_IOCTL,
            unique: c.unique,
            nodeid: ROOT,
            ..Default::default()
        };
        let req = [hdr.as_slice(), ioctl.as_slice()].concat();
        let readable = vec![(REQ, ALIAS_LEN, false); ALIASES];
        let used = aliased_chain(&mut c, &req, &readable, &[(RESP, RESP_LEN, true)]);
        assert_eq!(used, 0);
        assert!(!c.t.needs_reset());
        // Within the cap the IOCTL is answered ENOTTY before the server allocates anything.
        assert_eq!(
            c.call(FUSE_IOCTL, ROOT, ioctl.as_slice()).error,
            libc::ENOTTY
        );
        assert!(c.lookup(ROOT, b"hello.txt").is_ok());
    }

    /// Attack (audit vmm #1): READDIR with `size` = 3.25 GiB and 120 writable descriptors
    /// aliasing the same 30 MiB made PassthroughFs reserve 3.25 GiB. Refused; an honest READDIR works.
    #[test]
    fn readdir_with_an_inflated_chain_is_refused() {
        const OPENDIR: u32 = 27;
        const READDIR: u32 = 28;
        let root = layout();
        let mut c = Client::new(&root.path().join("share"));
        let open = OpenIn {
            flags: libc::O_RDONLY as u32,
            fuse_flags: 0,
        };
        let r = c.call(OPENDIR, ROOT, open.as_slice());
        assert_eq!(r.error, 0);
        let fh = c.body::<OpenOut>().fh;
        let readdir = |size| ReadIn {
            fh,
            offset: 0,
            size,
            ..Default::default()
        };
        c.unique += 1;
        let hdr = InHeader {
            len: (size_of::<InHeader>() + size_of::<ReadIn>()) as u32,
            opcode: READDIR,
            unique: c.unique,
            nodeid: ROOT,
            ..Default::default()
        };
        let req = [hdr.as_slice(), readdir(HUGE).as_slice()].concat();
        let writable = vec![(RESP, ALIAS_LEN, true); ALIASES];
        let used = aliased_chain(&mut c, &req, &[(REQ, req.len() as u32, false)], &writable);
        assert_eq!(used, 0);
        assert!(!c.t.needs_reset());
        let r = c.call(READDIR, ROOT, readdir(4096).as_slice());
        assert_eq!(r.error, 0);
        assert!(r.len > 0);
    }

    /// Attack (audit vmm #1, docs): a chain through an indirect table (never negotiated; it
    /// would let one chain hold 65 535 aliasing buffers) is malformed: the device needs reset.
    #[test]
    fn indirect_descriptors_are_refused() {
        let root = layout();
        let mut c = Client::new(&root.path().join("share"));
        let table = DATA_BASE + 0x4_0000;
        let entries: u16 = 4096;
        for i in 0..entries {
            let at = GuestAddress(table + 16 * u64::from(i));
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&REQ.to_le_bytes());
            raw[8..12].copy_from_slice(&ALIAS_LEN.to_le_bytes());
            let flags = if i + 1 == entries { F_WRITE } else { F_NEXT };
            raw[12..14].copy_from_slice(&flags.to_le_bytes());
            raw[14..16].copy_from_slice(&(i + 1).to_le_bytes());
            c.mem.write_slice(&raw, at).unwrap();
        }
        let rq = &mut c.q[1];
        rq.write_desc(&c.mem, 0, table, 16 * u32::from(entries), F_INDIRECT, 0);
        rq.publish(&c.mem, 0);
        notify(&mut c.t, 1);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !c.t.needs_reset() {
            assert!(std::time::Instant::now() < deadline, "device kept serving");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(c.q[1].pop_used(&c.mem), None);
    }

    /// Environment variable that makes [`open_handles_are_capped_child`] run (in a child).
    const FD_CAP_CHILD: &str = "STAGE1_VMM_FS_FD_CAP_CHILD";

    /// Runs test `child` (its full path) in a child process with `env` set and asserts it
    /// succeeded and printed `marker`.
    fn assert_child_prints(child: &str, env: &str, marker: &str) {
        let out = crate::threads::run_test_in_child(child, env);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(marker),
            "{:?}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Attack (audit vmm #2): OPEN the same file again and again, never RELEASE. Each OPEN is a
    /// new host descriptor; the limit used to be raised to `nr_open` (2^20 to 2^30). With a
    /// budget of 256 the guest gets EMFILE within 256 + `FD_RESERVE` opens, the device goes on,
    /// and a RELEASE lets the next OPEN succeed. In a child: it lowers the process's limit.
    #[test]
    fn open_handles_are_capped() {
        assert_child_prints(
            "devices::virtio::fs::tests::open_handles_are_capped_child",
            FD_CAP_CHILD,
            "FD CAP HELD",
        );
    }

    #[test]
    fn open_handles_are_capped_child() {
        const RELEASE: u32 = 18;
        if std::env::var_os(FD_CAP_CHILD).is_none() {
            return;
        }
        let root = layout();
        let mut cfg = FsConfig::new(root.path().join("share"));
        cfg.max_fds = 256;
        let mut c = Client::with(cfg);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the valid `lim` we pass.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        // Lowered to the budget (or less, where the hard limit was lower already).
        assert!(lim.rlim_max <= 256 + FD_RESERVE && lim.rlim_cur == lim.rlim_max);
        let e = c.lookup(ROOT, b"hello.txt").unwrap();
        let mut handles = Vec::new();
        let err = loop {
            match c.open(e.nodeid) {
                Ok(fh) => handles.push(fh),
                Err(err) => break err,
            }
            assert!(handles.len() <= (256 + FD_RESERVE) as usize, "no cap");
        };
        assert_eq!(err, libc::EMFILE);
        assert!(!c.t.needs_reset());
        let release = ReleaseIn {
            fh: handles.pop().unwrap(),
            ..Default::default()
        };
        assert_eq!(c.call(RELEASE, e.nodeid, release.as_slice()).error, 0);
        let fh = c.open(e.nodeid).unwrap();
        assert_eq!(c.read(e.nodeid, fh, 4096).unwrap(), HELLO);
        println!("FD CAP HELD after {} handles", handles.len() + 1);
    }

    /// Environment variable that makes [`device_node_race_child`] run (in a child).
    const MKNOD_RACE_CHILD: &str = "STAGE1_VMM_FS_MKNOD_RACE_CHILD";

    /// Attack (audit vmm #3): a second guest vCPU flips MKNOD's `mode` between `S_IFIFO` and
    /// `S_IFCHR` while requests run, so the device's check sees a FIFO and the server then
    /// reads a character device. With the worker's real capability set (no `CAP_MKNOD`) the
    /// kernel refuses every such node. In a child: it confines the test's threads.
    #[test]
    fn device_node_race() {
        const NAME: &str = "devices::virtio::fs::tests::device_node_race";
        let unusable =
            (!caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SETPCAP)
                .unwrap_or(false))
            .then(|| "needs CAP_SETPCAP (root); run under ci/nested-kvm".to_string());
        if let Err(why) = super::guest_mark::mark(NAME, unusable) {
            eprintln!("SKIP: device_node_race: {why}");
            return;
        }
        assert_child_prints(
            "devices::virtio::fs::tests::device_node_race_child",
            MKNOD_RACE_CHILD,
            "NO DEVICE NODE",
        );
    }

    #[test]
    fn device_node_race_child() {
        use std::os::unix::fs::FileTypeExt;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        if std::env::var_os(MKNOD_RACE_CHILD).is_none() {
            return;
        }
        if !caps::has_cap(None, caps::CapSet::Effective, caps::Capability::CAP_SETPCAP)
            .unwrap_or(false)
        {
            println!("SKIP: device_node_race: needs CAP_SETPCAP to take the worker's capabilities");
            return;
        }
        // The worker thread inherits the capability sets of the thread that activates it.
        crate::confine::caps::apply(crate::confine::caps::FS_WORKER).unwrap();
        let root = layout();
        let share = root.path().join("share");
        let mut c = Client::new(&share);
        let stop = Arc::new(AtomicBool::new(false));
        let flips = Arc::new(AtomicU64::new(0));
        let mode_at = GuestAddress(REQ + size_of::<InHeader>() as u64);
        let flipper = {
            let (mem, stop, flips) = (c.mem.clone(), stop.clone(), flips.clone());
            std::thread::spawn(move || {
                let mut chr = false;
                while !stop.load(Ordering::Relaxed) {
                    let kind = if chr { libc::S_IFCHR } else { libc::S_IFIFO };
                    mem.write_obj(kind | 0o666, mode_at).unwrap();
                    chr = !chr;
                    flips.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        while flips.load(Ordering::Relaxed) == 0 {
            std::thread::yield_now();
        }
        let (mut refused, mut made) = (0, 0);
        for i in 0..2000 {
            let args = MknodIn {
                mode: libc::S_IFIFO | 0o666,
                rdev: libc::makedev(1, 3) as u32,
                umask: 0,
                padding: 0,
            };
            let name = format!("n{i}\0");
            match c
                .call(
                    FUSE_MKNOD,
                    ROOT,
                    &[args.as_slice(), name.as_bytes()].concat(),
                )
                .error
            {
                0 => made += 1,
                libc::EPERM => refused += 1,
                e => panic!("mknod: errno {e}"),
            }
        }
        stop.store(true, Ordering::Relaxed);
        flipper.join().unwrap();
        for entry in std::fs::read_dir(&share).unwrap() {
            let t = entry.unwrap().file_type().unwrap();
            assert!(
                !t.is_char_device() && !t.is_block_device(),
                "device node made"
            );
        }
        assert!(made > 0 && refused > 0, "made {made}, refused {refused}");
        assert!(!c.t.needs_reset());
        println!("NO DEVICE NODE: {made} FIFOs, {refused} refused");
    }

    #[test]
    fn malformed_requests_fail_alone() {
        let root = layout();
        let mut c = Client::new(&root.path().join("share"));
        // Too short for a FUSE header.
        assert_eq!(c.raw(&[1, 2, 3, 4, 5, 6, 7, 8]), 0);
        // A header claiming a huge length and an unknown opcode.
        let hdr = InHeader {
            len: u32::MAX,
            opcode: 9999,
            unique: 77,
            nodeid: ROOT,
            ..Default::default()
        };
        c.raw(hdr.as_slice());
        // A chain without a writable buffer.
        c.mem.write_slice(&[0u8; 8], GuestAddress(REQ)).unwrap();
        let rq = &mut c.q[1];
        rq.add_chain(&c.mem, &[(REQ, 8, false)]);
        notify(&mut c.t, 1);
        assert_eq!(rq.wait_used(&c.mem).1, 0);
        // The device still serves requests.
        assert!(!c.t.needs_reset());
        assert!(c.lookup(ROOT, b"hello.txt").is_ok());
    }

    #[test]
    fn hiprio_forget_and_reset_then_new_session() {
        let root = layout();
        let mut c = Client::new(&root.path().join("share"));
        let e = c.lookup(ROOT, b"hello.txt").unwrap();
        // FORGET goes on the hiprio queue and has no reply.
        let hdr = InHeader {
            len: (size_of::<InHeader>() + 8) as u32,
            opcode: 2,
            unique: 1000,
            nodeid: e.nodeid,
            ..Default::default()
        };
        let req = [hdr.as_slice(), &1u64.to_le_bytes()].concat();
        c.mem.write_slice(&req, GuestAddress(REQ)).unwrap();
        c.q[0].add_chain(&c.mem, &[(REQ, req.len() as u32, false)]);
        notify(&mut c.t, 0);
        assert_eq!(c.q[0].wait_used(&c.mem).1, 0);

        // Driver reset, new handshake, new FUSE session on the same server.
        wr(&mut c.t, 0x70, 0);
        c.q = handshake(&c.mem, &mut c.t, &[QUEUE_SIZE, QUEUE_SIZE]);
        let init = InitIn {
            major: 7,
            minor: 31,
            max_readahead: 0x2_0000,
            flags: 0,
        };
        assert_eq!(c.call(INIT, 0, init.as_slice()).error, 0);
        let e = c.lookup(ROOT, b"hello.txt").unwrap();
        let fh = c.open(e.nodeid).unwrap();
        assert_eq!(c.read(e.nodeid, fh, 4096).unwrap(), HELLO);
        assert!(!c.t.needs_reset());
    }

    /// Audit vmm #4: a driver reset in the middle of a session (no FUSE_DESTROY: a crashed
    /// or reloaded driver) and a new activation. The device used to build a new server then,
    /// which opens `/proc/self/fd`, gone in a pod's jail; now the one server built by `Fs::new`
    /// ends the old session (its handles close) and serves the new one.
    #[test]
    fn reset_mid_session_reuses_the_server() {
        let root = layout();
        let mut c = Client::new(&root.path().join("share"));
        let e = c.lookup(ROOT, b"hello.txt").unwrap();
        let old = c.open(e.nodeid).unwrap();
        wr(&mut c.t, 0x70, 0);
        c.q = handshake(&c.mem, &mut c.t, &[QUEUE_SIZE, QUEUE_SIZE]);
        let init = InitIn {
            major: 7,
            minor: 31,
            max_readahead: 0x2_0000,
            flags: 0,
        };
        // A second INIT on a session never ended would be EINVAL.
        assert_eq!(c.call(INIT, 0, init.as_slice()).error, 0);
        // The old session's handle and inode are gone.
        assert_eq!(c.read(e.nodeid, old, 4096), Err(libc::EBADF));
        let e = c.lookup(ROOT, b"hello.txt").unwrap();
        let fh = c.open(e.nodeid).unwrap();
        assert_eq!(c.read(e.nodeid, fh, 4096).unwrap(), HELLO);
        assert!(!c.t.needs_reset());
    }

    /// Environment variable that makes [`reset_without_proc_child`] run (in a child).
    const NO_PROC_CHILD: &str = "STAGE1_VMM_FS_NO_PROC_CHILD";

    /// Audit vmm #4 as in a pod: the process loses `/proc` after `Fs::new` (here: a chroot
    /// into a directory without it, holding the share at the same path), then the driver
    /// resets and re-activates the device. Building a server there fails (what the device
    /// did before); the device's kept server serves the new session. In a child: it chroots.
    #[test]
    fn reset_without_proc() {
        const NAME: &str = "devices::virtio::fs::tests::reset_without_proc";
        let unusable = (!caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_SYS_CHROOT,
        )
        .unwrap_or(false))
        .then(|| "needs CAP_SYS_CHROOT (root); run under ci/nested-kvm".to_string());
        if let Err(why) = super::guest_mark::mark(NAME, unusable) {
            eprintln!("SKIP: reset_without_proc: {why}");
            return;
        }
        assert_child_prints(
            "devices::virtio::fs::tests::reset_without_proc_child",
            NO_PROC_CHILD,
            "REACTIVATED WITHOUT /proc",
        );
    }

    #[test]
    fn reset_without_proc_child() {
        use std::ffi::CString;
        use std::os::fd::AsRawFd;
        use std::os::unix::ffi::OsStrExt;
        if std::env::var_os(NO_PROC_CHILD).is_none() {
            return;
        }
        if !caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_SYS_CHROOT,
        )
        .unwrap_or(false)
        {
            println!("SKIP: reset_without_proc: needs CAP_SYS_CHROOT");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let share = root.path().join("share");
        std::fs::create_dir(&share).unwrap();
        std::fs::write(share.join("hello.txt"), HELLO).unwrap();
        // The share's path inside the new root, as the jail keeps `/pod/...` valid.
        let inner = root.path().join(share.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::write(inner.join("hello.txt"), HELLO).unwrap();
        let mut c = Client::new(&share);
        assert!(c.lookup(ROOT, b"hello.txt").is_ok());

        let old_root = std::fs::File::open("/").unwrap();
        let new_root = CString::new(root.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: chroot and chdir with NUL-terminated paths; this child runs only this test.
        unsafe {
            assert_eq!(libc::chroot(new_root.as_ptr()), 0);
            assert_eq!(libc::chdir(c"/".as_ptr()), 0);
        }
        assert!(std::fs::metadata("/proc/self/fd").is_err());
        assert!(matches!(
            build_server(&FsConfig::new(&share)),
            Err(FsError::Passthrough(_))
        ));
        wr(&mut c.t, 0x70, 0);
        c.q = handshake(&c.mem, &mut c.t, &[QUEUE_SIZE, QUEUE_SIZE]);
        let init = InitIn {
            major: 7,
            minor: 31,
            max_readahead: 0x2_0000,
            flags: 0,
        };
        assert_eq!(c.call(INIT, 0, init.as_slice()).error, 0);
        let e = c.lookup(ROOT, b"hello.txt").unwrap();
        let fh = c.open(e.nodeid).unwrap();
        assert_eq!(c.read(e.nodeid, fh, 4096).unwrap(), HELLO);
        assert!(!c.t.needs_reset());
        // SAFETY: fchdir to the old root's open descriptor, then chroot to it.
        unsafe {
            assert_eq!(libc::fchdir(old_root.as_raw_fd()), 0);
            assert_eq!(libc::chroot(c".".as_ptr()), 0);
        }
        println!("REACTIVATED WITHOUT /proc");
    }

    /// More files looked up than the common hard limit of 4096 descriptors: with
    /// CAP_SYS_RESOURCE the device raises the hard limit (to its budget), so every lookup gets
    /// its `O_PATH` fd. Without the capability it is marked for ci/nested-kvm, where CI runs it.
    #[test]
    fn lookups_beyond_4096_open_files() {
        const NAME: &str = "devices::virtio::fs::tests::lookups_beyond_4096_open_files";
        // CAP_SYS_RESOURCE (bit 24) in the effective set: may raise the hard limit. (Probing with
        // setrlimit would fail once an earlier test's Fs::new raised it already.)
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let cap_eff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0);
        const CAP_SYS_RESOURCE: u32 = 24;
        let unusable = (cap_eff & (1 << CAP_SYS_RESOURCE) == 0).then(|| {
            "cannot raise the hard limit (no CAP_SYS_RESOURCE); run under ci/nested-kvm".to_string()
        });
        if let Err(why) = super::guest_mark::mark(NAME, unusable) {
            eprintln!("SKIP: lookups_beyond_4096_open_files: {why}");
            return;
        }
        const FILES: usize = 5000;
        let root = tempfile::tempdir().unwrap();
        let share = root.path().join("share");
        std::fs::create_dir(&share).unwrap();
        for i in 0..FILES {
            std::fs::write(share.join(format!("f{i}")), b"x").unwrap();
        }
        let low = libc::rlimit {
            rlim_cur: 1024,
            rlim_max: 4096,
        };
        // SAFETY: setrlimit reads the valid `low` we pass.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
        let mut c = Client::new(&share);
        let mut lim = low;
        // SAFETY: getrlimit writes into the valid `lim` we pass.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert!(
            lim.rlim_max > 4096 && lim.rlim_cur == lim.rlim_max,
            "{}",
            lim.rlim_max
        );
        for i in 0..FILES {
            let name = format!("f{i}");
            assert!(c.lookup(ROOT, name.as_bytes()).is_ok(), "lookup {name}");
        }
    }

    #[test]
    fn config_space_holds_tag_and_queue_count() {
        let root = layout();
        let mut cfg = FsConfig::new(root.path().join("share"));
        cfg.tag = "podroot".into();
        let dev = Fs::new(cfg).unwrap();
        let mut tag = [0u8; TAG_LEN];
        dev.read_config(0, &mut tag);
        assert_eq!(&tag[..7], b"podroot");
        assert!(tag[7..].iter().all(|b| *b == 0));
        let mut n = [0u8; 4];
        dev.read_config(TAG_LEN as u64, &mut n);
        assert_eq!(u32::from_le_bytes(n), 1);
        let mut past = [0xffu8; 4];
        dev.read_config(1 << 40, &mut past);
        assert_eq!(past, [0; 4]);

        let mut long = FsConfig::new(root.path().join("share"));
        long.tag = "x".repeat(TAG_LEN + 1);
        assert!(matches!(Fs::new(long), Err(FsError::Tag(_))));
        assert!(matches!(
            Fs::new(FsConfig::new("/")),
            Err(FsError::SharedDir(_))
        ));
        assert!(matches!(
            Fs::new(FsConfig::new("relative/dir")),
            Err(FsError::SharedDir(_))
        ));
    }
}
