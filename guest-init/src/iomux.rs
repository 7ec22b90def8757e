//! The multiplexer of an app whose streams are attachable (`--stdin`, `--stdout`, `--stderr` of
//! `stream` or `tty`; `pod_abi::attach`), as rkt's iottymux: PID 1 makes the app's pipes (or
//! its pseudo-terminal) and forks one multiplexer process per app, which holds the other ends
//! and listens on `/rkt/iottymux/<app>/sock`, on a tmpfs PID 1 mounts in the stage1 root
//! (mode 0700, where no app reaches). An attacher (`stage1-ns attach` in the pod's mount
//! namespace, or the kvm exec service's relay) sends one `Request::Attach` line, then
//! `Stdin`, `StdinEof` and `Resize` frames, and gets the output it asked for as `Stdout` and
//! `Stderr` frames.
//!
//! Bounded and never blocking the app: output nobody is attached to is read and dropped (as
//! iottymux did), an attacher whose unsent output passes [`CLIENT_BUFFER`] is dropped, input
//! waits in at most [`INPUT_BUFFER`] bytes (the attachers are not read meanwhile), at most
//! `pod_abi::attach::MAX_ATTACHERS` attach at once, a request must come within
//! [`REQUEST_TIMEOUT`]. An attacher's end of input (`StdinEof`) leaves the app's stdin open for
//! the next one. When the app's output ends (every output at EOF) or PID 1 sends SIGTERM (the
//! app was reaped), the multiplexer forwards what is left, ends every session with `Exit(0)`
//! and exits.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{ForkResult, Pid};
use pod_abi::attach::{Attach, IoMode, StdioPlan, GUEST_MUX_DIR, MAX_ATTACHERS, MUX_SOCKET};
use pod_abi::exec::{encode, Frame, FrameReader, Request, MAX_PAYLOAD, MAX_REQUEST};

use crate::info;

/// Unsent output an attacher may have before it is dropped, in bytes.
pub const CLIENT_BUFFER: usize = 1 << 20;
/// Input for the app held while it does not read, in bytes.
pub const INPUT_BUFFER: usize = 4 * MAX_PAYLOAD;
/// What one read takes from an attacher, in bytes.
const CLIENT_READ: usize = 16 * 1024;
/// Time an attacher has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the last frames have to reach the attachers when the multiplexer ends.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// Size of the tmpfs holding the sockets.
const TMPFS_OPTS: &str = "mode=0700,size=1m";

/// The app's ends of its streams, for `crate::launch` (dropped by PID 1 once the app runs).
#[derive(Debug, Default)]
pub struct AppEnds {
    /// Its stdin (`None`: the launch's default).
    pub stdin: Option<OwnedFd>,
    /// Its stdout.
    pub stdout: Option<OwnedFd>,
    /// Its stderr.
    pub stderr: Option<OwnedFd>,
    /// stdin is the app's own terminal: it becomes the controlling terminal.
    pub ctty: bool,
}

impl AppEnds {
    /// Makes these the stdio of a launch (the fds stay owned here until it is done).
    pub fn apply(&self, spec: &mut crate::launch::LaunchSpec) {
        if let Some(f) = &self.stdin {
            spec.stdin = Some(f.as_raw_fd());
        }
        if let Some(f) = &self.stdout {
            spec.stdout = Some(f.as_raw_fd());
        }
        if let Some(f) = &self.stderr {
            spec.stderr = Some(f.as_raw_fd());
        }
        spec.ctty = self.ctty;
    }
}

/// Mounts the tmpfs for the sockets at `/rkt/iottymux` (once; a mount already there is kept).
pub fn mount_dir() -> Result<(), String> {
    let dir = Path::new(GUEST_MUX_DIR);
    if std::fs::create_dir_all(dir).is_err() && !dir.is_dir() {
        return Err(format!("cannot make {GUEST_MUX_DIR}"));
    }
    if pod_abi::mountinfo::is_mount_point(dir).unwrap_or(false) {
        return Ok(());
    }
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        Some(TMPFS_OPTS),
    )
    .map_err(|e| format!("mount a tmpfs at {GUEST_MUX_DIR}: {}", e.desc()))
}

/// The other ends, which the multiplexer keeps.
struct MuxEnds {
    /// Where input goes (stdin pipe, or the terminal).
    input: Option<OwnedFd>,
    /// Outputs: (fd, is stderr); the terminal counts as stdout. `None` once at its end
    /// (removed after the round).
    outputs: Vec<(Option<OwnedFd>, bool)>,
    /// `input` and the one output are the app's terminal (resizes go to `input`).
    tty: bool,
}

impl MuxEnds {
    /// Sets the app's terminal size (nothing without a terminal, or with a size of 0).
    fn resize(&self, rows: u16, cols: u16) {
        if let (true, Some(m), true) = (self.tty, &self.input, rows > 0 && cols > 0) {
            crate::exec_service::set_winsize(m.as_raw_fd(), rows, cols);
        }
    }
}

fn nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map(|_| ())
}

/// Opens a pseudo-terminal pair in the devpts instance PID 1 mounted at the app root's
/// `/dev/pts` (so the app sees its terminal as its own `/dev/pts/N`): the master from its
/// `ptmx` (checked to be the multiplexor device), the slave through `TIOCGPTPEER`, with no
/// path lookup in the app's tree.
fn open_pty(rootfs: &Path) -> Result<(OwnedFd, OwnedFd), String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
    let ptmx = rootfs.join("dev/pts/ptmx");
    let master = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&ptmx)
        .map_err(|e| format!("open {}: {e}", ptmx.display()))?;
    let md = master
        .metadata()
        .map_err(|e| format!("stat {}: {e}", ptmx.display()))?;
    if !md.file_type().is_char_device() || md.rdev() != libc::makedev(5, 2) {
        return Err(format!("{} is not the pty multiplexor", ptmx.display()));
    }
    let master = OwnedFd::from(master);
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads the int passed by pointer; the fd is ours.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(format!(
            "unlock the terminal: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: TIOCGPTPEER takes open flags and returns a new fd we then own.
    let slave = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if slave < 0 {
        return Err(format!(
            "open the terminal's peer: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `slave` is a fresh descriptor nobody else owns.
    let slave = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(slave) };
    Ok((master, slave))
}

/// Makes the pipes or the terminal of `stdio` (a terminal in the app root `rootfs`'s devpts).
fn make_ends(stdio: &StdioPlan, rootfs: &Path) -> Result<(AppEnds, MuxEnds), String> {
    let e = |e: nix::errno::Errno| format!("pipes: {}", e.desc());
    if stdio.tty() {
        let (master, slave) = open_pty(rootfs)?;
        nonblocking(&master).map_err(e)?;
        let dup = |fd: &OwnedFd| fd.try_clone().map_err(|x| format!("dup: {x}"));
        let master_in = dup(&master)?;
        let out = dup(&slave)?;
        let err = dup(&slave)?;
        return Ok((
            AppEnds {
                stdin: Some(slave),
                stdout: Some(out),
                stderr: Some(err),
                ctty: true,
            },
            MuxEnds {
                input: Some(master_in),
                outputs: vec![(Some(master), false)],
                tty: true,
            },
        ));
    }
    let mut app = AppEnds::default();
    let mut mux = MuxEnds {
        input: None,
        outputs: Vec::new(),
        tty: false,
    };
    if stdio.stdin == IoMode::Stream {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(e)?;
        nonblocking(&w).map_err(e)?;
        app.stdin = Some(r);
        mux.input = Some(w);
    }
    for (mode, is_err) in [(stdio.stdout, false), (stdio.stderr, true)] {
        if mode == IoMode::Stream {
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(e)?;
            nonblocking(&r).map_err(e)?;
            if is_err {
                app.stderr = Some(w);
            } else {
                app.stdout = Some(w);
            }
            mux.outputs.push((Some(r), is_err));
        }
    }
    Ok((app, mux))
}

/// Binds `/rkt/iottymux/<app>/sock` (a fresh directory of PID 1's; relative to it, as a long
/// app name does not fit a socket address).
fn bind(app: &str) -> Result<UnixListener, String> {
    let dir = pod_abi::attach::mux_dir(app);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).map_err(|e| format!("make {}: {e}", dir.display()))?;
    let cwd = std::env::current_dir().map_err(|e| format!("current directory: {e}"))?;
    std::env::set_current_dir(&dir).map_err(|e| format!("enter {}: {e}", dir.display()))?;
    let l = UnixListener::bind(MUX_SOCKET);
    let back = std::env::set_current_dir(&cwd);
    let l = l.map_err(|e| format!("bind {}/{MUX_SOCKET}: {e}", dir.display()))?;
    back.map_err(|e| format!("back to {}: {e}", cwd.display()))?;
    l.set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    Ok(l)
}

/// Starts the multiplexer of app `app` whose root is `rootfs` (PID 1, before the app's
/// launch): returns the app's ends of its streams and the multiplexer's pid.
pub fn start(app: &str, rootfs: &Path, stdio: &StdioPlan) -> Result<(AppEnds, Pid), String> {
    mount_dir()?;
    let listener = bind(app)?;
    let (ends, mux) = make_ends(stdio, rootfs)?;
    let app_name = app.to_string();
    let plan = *stdio;
    // SAFETY: guest-init is single-threaded, so the child may allocate and use any libc call.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {}", e.desc()))? {
        ForkResult::Child => {
            drop(ends);
            let code = match Mux::new(app_name, plan, listener, mux) {
                Ok(mut m) => {
                    m.run();
                    0
                }
                Err(e) => {
                    info!("app {app}: attach multiplexer: {e}");
                    1
                }
            };
            // SAFETY: _exit after fork is always safe.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => Ok((ends, child)),
    }
}

/// What one poll of the multiplexer found ready.
#[derive(Debug, Default)]
struct Ready {
    /// PID 1 said to end (or polling failed).
    sigterm: bool,
    /// A connection waits.
    listener: bool,
    /// Outputs with data (or at their end), by index.
    outputs: Vec<usize>,
    /// The app takes input again.
    input: bool,
    /// Attachers: (index, readable, writable).
    clients: Vec<(usize, bool, bool)>,
}

/// One attacher.
struct Client {
    stream: UnixStream,
    /// The request line until it is complete.
    line: Vec<u8>,
    /// What it attached to, once its request came.
    attach: Option<Attach>,
    /// Frames after the request.
    frames: FrameReader,
    /// Output not yet written to it.
    out: Vec<u8>,
    /// When it connected (the request's deadline).
    since: Instant,
    /// Gone (closed, failed, too slow): removed at the end of the round.
    gone: bool,
}

struct Mux {
    app: String,
    plan: StdioPlan,
    listener: UnixListener,
    ends: MuxEnds,
    clients: Vec<Client>,
    /// Input for the app not yet written.
    input: Vec<u8>,
    signals: SignalFd,
    /// Where reads land ([`MAX_PAYLOAD`] bytes, one frame's worth).
    scratch: Vec<u8>,
    /// The app's log file (`StdioPlan::log_file`), until writing it fails.
    log: Option<LogFile>,
}

/// An app's log file (rkt's `k8s-plain` log mode, `pod_abi::attach::ANN_LOG_MODE`): each line
/// of its `stream` outputs as `pod_abi::attach::log_line` writes it, timestamped when read.
struct LogFile {
    file: std::fs::File,
    /// The unfinished line of stdout and of stderr.
    partial: [Vec<u8>; 2],
}

impl LogFile {
    /// Opens `pod_abi::attach::guest_log_file(app)` (the stage1 attached the host's file there)
    /// for appending, without following a symlink.
    fn open(app: &str) -> Result<LogFile, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = pod_abi::attach::guest_log_file(app);
        let file = std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        match file.metadata() {
            Ok(m) if m.is_file() => Ok(LogFile {
                file,
                partial: [Vec::new(), Vec::new()],
            }),
            _ => Err(format!("{} is not a regular file", path.display())),
        }
    }

    /// Adds `data` read from stdout or (`is_err`) stderr and writes the lines it completes;
    /// a line reaching `pod_abi::attach::MAX_LOG_LINE` bytes is written as it is.
    fn add(&mut self, is_err: bool, data: &[u8]) -> std::io::Result<()> {
        let now = pod_abi::time::now_nanos();
        let stream = if is_err { "stderr" } else { "stdout" };
        let partial = &mut self.partial[usize::from(is_err)];
        let mut out = Vec::new();
        for b in data {
            if *b == b'\n' {
                out.extend(pod_abi::attach::log_line(now, stream, partial));
                partial.clear();
            } else {
                partial.push(*b);
                if partial.len() >= pod_abi::attach::MAX_LOG_LINE {
                    out.extend(pod_abi::attach::log_line(now, stream, partial));
                    partial.clear();
                }
            }
        }
        self.write(&out)
    }

    /// Writes the unfinished line of stdout or (`is_err`) stderr, whose end came.
    fn end(&mut self, is_err: bool) -> std::io::Result<()> {
        let stream = if is_err { "stderr" } else { "stdout" };
        let partial = std::mem::take(&mut self.partial[usize::from(is_err)]);
        if partial.is_empty() {
            return Ok(());
        }
        let line = pod_abi::attach::log_line(pod_abi::time::now_nanos(), stream, &partial);
        self.write(&line)
    }

    fn write(&mut self, out: &[u8]) -> std::io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        self.file.write_all(out)
    }
}

impl Mux {
    fn new(
        app: String,
        plan: StdioPlan,
        listener: UnixListener,
        ends: MuxEnds,
    ) -> Result<Mux, String> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.thread_block()
            .map_err(|e| format!("block SIGTERM: {}", e.desc()))?;
        let signals = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| format!("signalfd: {}", e.desc()))?;
        // Inherited from PID 1: nothing but our own ends stays open.
        let keep: Vec<RawFd> = [listener.as_raw_fd(), signals.as_fd().as_raw_fd()]
            .into_iter()
            .chain(ends.input.as_ref().map(AsRawFd::as_raw_fd))
            .chain(
                ends.outputs
                    .iter()
                    .filter_map(|(f, _)| f.as_ref().map(AsRawFd::as_raw_fd)),
            )
            .chain([0, 1, 2])
            .collect();
        app_confine::exec::close_inherited_fds_except(&keep);
        let log = if plan.log_file {
            match LogFile::open(&app) {
                Ok(l) => Some(l),
                Err(e) => {
                    info!("app {app}: log file: {e}; its output is not logged");
                    None
                }
            }
        } else {
            None
        };
        Ok(Mux {
            app,
            plan,
            listener,
            ends,
            clients: Vec::new(),
            input: Vec::new(),
            signals,
            scratch: vec![0u8; MAX_PAYLOAD],
            log,
        })
    }

    /// Serves until the app's output ends or SIGTERM.
    fn run(&mut self) {
        loop {
            let had_outputs = !self.ends.outputs.is_empty();
            let ready = self.wait();
            if ready.sigterm {
                self.drain_outputs();
                break;
            }
            if ready.listener {
                self.accept();
            }
            for i in ready.outputs {
                self.read_output(i);
            }
            if ready.input {
                self.flush_input();
            }
            for (i, readable, writable) in ready.clients {
                if writable {
                    self.flush_client(i);
                }
                if readable {
                    self.read_client(i);
                }
            }
            self.expire_requests();
            self.clients.retain(|c| !c.gone);
            self.ends.outputs.retain(|(f, _)| f.is_some());
            if had_outputs && self.ends.outputs.is_empty() {
                break;
            }
        }
        self.finish();
    }

    /// Polls once: what is ready.
    fn wait(&mut self) -> Ready {
        let mut fds = vec![
            PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
        ];
        let mut out_idx = Vec::new();
        for (i, (f, _)) in self.ends.outputs.iter().enumerate() {
            if let Some(f) = f {
                out_idx.push((i, fds.len()));
                fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
            }
        }
        let in_at = fds.len();
        let input_pending = !self.input.is_empty();
        if let Some(f) = &self.ends.input {
            let ev = if input_pending {
                PollFlags::POLLOUT
            } else {
                PollFlags::empty()
            };
            fds.push(PollFd::new(f.as_fd(), ev));
        }
        let cl_at = fds.len();
        for c in &self.clients {
            let mut ev = PollFlags::empty();
            // Back-pressure: no more input is read while the app's is not taken.
            if !input_pending {
                ev |= PollFlags::POLLIN;
            }
            if !c.out.is_empty() {
                ev |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(c.stream.as_fd(), ev));
        }
        let timeout = if self.clients.iter().any(|c| c.attach.is_none()) {
            PollTimeout::from(500u16)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ready::default(),
            Err(e) => {
                info!("app {}: attach multiplexer: poll: {}", self.app, e.desc());
                return Ready {
                    sigterm: true,
                    ..Ready::default()
                };
            }
        }
        let rev = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .unwrap_or(PollFlags::empty())
        };
        Ready {
            sigterm: !rev(0).is_empty(),
            listener: !rev(1).is_empty(),
            outputs: out_idx
                .iter()
                .filter(|(_, at)| !rev(*at).is_empty())
                .map(|(i, _)| *i)
                .collect(),
            input: self.ends.input.is_some() && !rev(in_at).is_empty(),
            clients: (0..self.clients.len())
                .filter_map(|i| {
                    let r = rev(cl_at + i);
                    let readable =
                        r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR);
                    let writable = r.contains(PollFlags::POLLOUT);
                    (readable || writable).then_some((i, readable, writable))
                })
                .collect(),
        }
    }

    fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if self.clients.len() >= MAX_ATTACHERS {
                let mut b = Vec::new();
                encode(
                    &Frame::Error(format!(
                        "app {} has {MAX_ATTACHERS} attachers already",
                        self.app
                    )),
                    &mut b,
                );
                encode(&Frame::Exit(1), &mut b);
                let _ = (&stream).write_all(&b);
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.clients.push(Client {
                stream,
                line: Vec::new(),
                attach: None,
                frames: FrameReader::default(),
                out: Vec::new(),
                since: Instant::now(),
                gone: false,
            });
        }
    }

    /// Reads what output `i` has and hands it to the attachers that want it.
    fn read_output(&mut self, i: usize) -> bool {
        let Some((Some(fd), is_err)) = self.ends.outputs.get(i) else {
            return false;
        };
        let is_err = *is_err;
        let n = match nix::unistd::read(fd.as_raw_fd(), &mut self.scratch) {
            Ok(0) | Err(nix::errno::Errno::EIO) => {
                self.close_output(i);
                return false;
            }
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => return false,
            Err(_) => {
                self.close_output(i);
                return false;
            }
        };
        let data = self.scratch.get(..n).unwrap_or_default().to_vec();
        self.log_with(|l| l.add(is_err, &data));
        let frame = if is_err {
            Frame::Stderr(data)
        } else {
            Frame::Stdout(data)
        };
        self.broadcast(&frame, is_err);
        true
    }

    /// Closes output `i` (its slot is removed after the round).
    fn close_output(&mut self, i: usize) {
        if let Some(slot) = self.ends.outputs.get_mut(i) {
            slot.0 = None;
            let is_err = slot.1;
            self.log_with(|l| l.end(is_err));
        }
    }

    /// Runs `f` on the log file; a failure (a full disk, say) ends the logging, said once.
    fn log_with(&mut self, f: impl FnOnce(&mut LogFile) -> std::io::Result<()>) {
        if let Some(l) = &mut self.log {
            if let Err(e) = f(l) {
                info!("app {}: log file: {e}; no more output is logged", self.app);
                self.log = None;
            }
        }
    }

    fn broadcast(&mut self, frame: &Frame, is_err: bool) {
        let mut bytes = Vec::new();
        encode(frame, &mut bytes);
        for c in &mut self.clients {
            let wants = c.attach.is_some_and(|a| {
                if is_err {
                    a.stderr
                } else {
                    a.stdout || a.tty_out
                }
            });
            if !wants || c.gone {
                continue;
            }
            c.out.extend_from_slice(&bytes);
            if c.out.len() > CLIENT_BUFFER {
                info!(
                    "app {}: dropping an attacher that does not keep up",
                    self.app
                );
                c.gone = true;
                continue;
            }
            write_some(c);
        }
    }

    fn flush_client(&mut self, i: usize) {
        if let Some(c) = self.clients.get_mut(i) {
            write_some(c);
        }
    }

    fn read_client(&mut self, i: usize) {
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        let buf = self.scratch.get_mut(..CLIENT_READ).unwrap_or_default();
        let n = match (&c.stream).read(buf) {
            Ok(0) => {
                c.gone = true;
                return;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                return
            }
            Err(_) => {
                c.gone = true;
                return;
            }
        };
        let mut data = self.scratch.get(..n).unwrap_or_default();
        if c.attach.is_none() {
            let nl = data.iter().position(|b| *b == b'\n');
            let take = nl.map_or(data.len(), |p| p + 1);
            c.line
                .extend_from_slice(data.get(..take).unwrap_or_default());
            data = data.get(take..).unwrap_or_default();
            if nl.is_none() {
                if c.line.len() > MAX_REQUEST {
                    refuse(c, "request too long".into());
                }
                return;
            }
            let line = std::mem::take(&mut c.line);
            match check_request(&line, &self.app, &self.plan) {
                Ok((a, rows, cols)) => {
                    c.attach = Some(a);
                    if a.tty() {
                        self.ends.resize(rows, cols);
                    }
                }
                Err(e) => {
                    refuse(c, e);
                    return;
                }
            }
        }
        c.frames.push(data);
        let Some(a) = c.attach else {
            return;
        };
        loop {
            match c.frames.next_frame() {
                Ok(Some(Frame::Stdin(d))) if a.input() => self.input.extend_from_slice(&d),
                Ok(Some(Frame::Resize { rows, cols })) if a.tty() => self.ends.resize(rows, cols),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    refuse(c, e.to_string());
                    break;
                }
            }
        }
        self.flush_input();
    }

    /// Writes pending input to the app. No attacher is read while input is pending, so it
    /// grows past [`INPUT_BUFFER`] only when several attachers complete whole frames in one
    /// round; past it the oldest pending bytes are dropped.
    fn flush_input(&mut self) {
        let Some(fd) = &self.ends.input else {
            self.input.clear();
            return;
        };
        while !self.input.is_empty() {
            match nix::unistd::write(fd, &self.input) {
                Ok(n) => {
                    self.input.drain(..n.min(self.input.len()));
                }
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => {
                    // The app closed its stdin: nothing more to give it.
                    self.input.clear();
                    self.ends.input = None;
                    break;
                }
            }
        }
        if self.input.len() > INPUT_BUFFER {
            let over = self.input.len() - INPUT_BUFFER;
            self.input.drain(..over);
        }
    }

    fn expire_requests(&mut self) {
        for c in &mut self.clients {
            if c.attach.is_none() && !c.gone && c.since.elapsed() > REQUEST_TIMEOUT {
                refuse(c, "no request in time".into());
            }
        }
    }

    /// Forwards what the outputs still hold (the app has ended): reads each until it is empty
    /// (at most 64 reads, since another holder may go on writing).
    fn drain_outputs(&mut self) {
        for i in 0..self.ends.outputs.len() {
            for _ in 0..64 {
                if !self.read_output(i) {
                    break;
                }
            }
        }
    }

    /// Ends every session with `Exit(0)` and gives the frames a moment to leave.
    fn finish(&mut self) {
        self.log_with(|l| l.end(false).and(l.end(true)));
        let mut bytes = Vec::new();
        encode(&Frame::Exit(0), &mut bytes);
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        for c in &mut self.clients {
            if c.gone || c.attach.is_none() {
                continue;
            }
            c.out.extend_from_slice(&bytes);
            let _ = c.stream.set_nonblocking(false);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = c.stream.set_write_timeout(Some(left));
            let _ = (&c.stream).write_all(&c.out);
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
        }
        let _ = std::fs::remove_dir_all(pod_abi::attach::mux_dir(&self.app));
    }
}

/// Writes what the attacher's buffer holds, as far as it takes it.
fn write_some(c: &mut Client) {
    while !c.out.is_empty() {
        match (&c.stream).write(&c.out) {
            Ok(0) => {
                c.gone = true;
                return;
            }
            Ok(n) => {
                c.out.drain(..n.min(c.out.len()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => {
                c.gone = true;
                return;
            }
        }
    }
}

/// Answers an attacher with `Error` and `Exit(1)` and drops it.
fn refuse(c: &mut Client, why: String) {
    let mut b = Vec::new();
    encode(&Frame::Error(why), &mut b);
    encode(&Frame::Exit(1), &mut b);
    let _ = c.stream.set_nonblocking(false);
    let _ = c.stream.set_write_timeout(Some(FLUSH_TIMEOUT));
    let _ = (&c.stream).write_all(&b);
    c.gone = true;
}

/// The attacher's request line, checked against this app's endpoints.
fn check_request(line: &[u8], app: &str, plan: &StdioPlan) -> Result<(Attach, u16, u16), String> {
    match Request::parse(line).map_err(|e| e.to_string())? {
        Request::Attach {
            app: a,
            attach,
            rows,
            cols,
        } if a == app => {
            attach.check(app, plan).map_err(|e| e.to_string())?;
            Ok((attach, rows, cols))
        }
        Request::Attach { app: a, .. } => {
            Err(format!("this is app {app}'s multiplexer, not {a}'s"))
        }
        _ => Err("not an attach request".into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_log_file_gets_whole_timestamped_lines() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut l = LogFile {
            file: f.reopen().unwrap(),
            partial: [Vec::new(), Vec::new()],
        };
        l.add(false, b"one\ntw").unwrap();
        l.add(true, b"err\n").unwrap();
        l.add(false, b"o\nthr").unwrap();
        let long = vec![b'x'; pod_abi::attach::MAX_LOG_LINE + 3];
        l.add(true, &long).unwrap();
        l.end(false).unwrap();
        l.end(true).unwrap();
        let text = std::fs::read_to_string(f.path()).unwrap();
        let rest: Vec<String> = text
            .lines()
            .map(|l| {
                let (t, r) = l.split_once(' ').unwrap();
                assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
                r.to_string()
            })
            .collect();
        let cut = "x".repeat(pod_abi::attach::MAX_LOG_LINE);
        assert_eq!(
            rest,
            [
                "stdout one".to_string(),
                "stderr err".into(),
                "stdout two".into(),
                format!("stderr {cut}"),
                "stdout thr".into(),
                "stderr xxx".into(),
            ]
        );
    }

    fn line(app: &str, attach: Attach) -> Vec<u8> {
        Request::Attach {
            app: app.into(),
            attach,
            rows: 24,
            cols: 80,
        }
        .to_line()
    }

    #[test]
    fn requests_are_checked_against_the_apps_endpoints() {
        let plan = StdioPlan::from_values(Some("stream"), Some("stream"), None).unwrap();
        let both = Attach {
            stdin: true,
            stdout: true,
            ..Default::default()
        };
        assert_eq!(
            check_request(&line("web", both), "web", &plan),
            Ok((both, 24, 80))
        );
        assert!(check_request(&line("db", both), "web", &plan).is_err());
        let err = Attach {
            stderr: true,
            ..Default::default()
        };
        assert!(check_request(&line("web", err), "web", &plan)
            .unwrap_err()
            .contains("its endpoints: stdin, stdout"));
        let tty = Attach {
            tty_in: true,
            ..Default::default()
        };
        assert!(check_request(&line("web", tty), "web", &plan).is_err());
        let exec = Request::Stop { grace_secs: None }.to_line();
        assert!(check_request(&exec, "web", &plan).is_err());
        assert!(check_request(b"{not json\n", "web", &plan).is_err());
    }
}
