//! The exec service (kvm flavor): `rkt enter` and `rkt stop` reach guest-init over vsock port
//! `pod_abi::vsock::EXEC_PORT`, speaking `pod_abi::exec`.
//!
//! Processes, so that nothing a host client does can wedge PID 1:
//! - PID 1 binds the listener ([`listen_vsock`], before the apps start) and forks the
//!   **server** ([`start`]), which accepts connections and forks one **session** process per
//!   connection, at most [`MAX_SESSIONS`] at a time (more are answered with an error).
//! - A session reads one request (at most `MAX_REQUEST` bytes within [`REQUEST_TIMEOUT`]).
//!   `exec`: it forks the command, which confines itself exactly as the ns flavor's `enter`
//!   does (`app_confine::enter::confine_and_exec`, plus the app's cgroups), with pipes or a
//!   pseudo-terminal as stdio, and proxies frames until the command ends ([`exec_session`]).
//!   The command is the session's child: PID 1's `waitpid(-1)` never sees it, and a session
//!   never waits for anything but its own child, so no app status can be taken by a session.
//!   `stop`: it asks PID 1 over a `SOCK_SEQPACKET` pair (the stop request's line), and relays
//!   PID 1's `StopReport` to the host ([`stop_session`]); PID 1 waits (bounded by
//!   [`REPORT_WAIT`]) until the host has it, then powers off.
//! - A host that vanishes: the command gets SIGHUP, and SIGKILL [`HANGUP_GRACE`] later; a
//!   host that stops reading: writes time out after [`WRITE_TIMEOUT`], the same then.
//!   Buffers are bounded (one frame each way, [`STDIN_MAX`] of pending stdin).

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use app_confine::enter::{confine_and_exec, pick_app, EnterSpec};
use app_confine::exec::{close_inherited_fds, Command};
use app_confine::userns::Handshake;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use pod_abi::exec::{
    encoded, read_room, Frame, FrameReader, Request, StopReport, MAX_PAYLOAD, MAX_REQUEST,
};
use pod_abi::exit::STAGE1_FAILED;
use pod_abi::plan::Plan;
use pod_abi::status::SIGNAL_BASE;

use crate::{cgroup, debug, info};

/// Sessions served at once.
pub const MAX_SESSIONS: usize = 16;
/// Time a client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a write to the host may block before the host is considered gone.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time between SIGHUP and SIGKILL to a command whose host went away.
pub const HANGUP_GRACE: Duration = Duration::from_secs(2);
/// Time PID 1 (and a stop session) wait for the stop report to reach the host.
pub const REPORT_WAIT: Duration = Duration::from_secs(5);
/// Stdin bytes held for a command that does not read them before the host is throttled.
pub const STDIN_MAX: usize = 4 * MAX_PAYLOAD;
/// The ack a stop session sends PID 1 once the host has the report.
const ACK: &[u8] = b"ack";

/// How a session's command is confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confinement {
    /// As the app's processes (`app_confine::enter`): the service in a pod.
    App,
    /// Not at all: unit tests, which run as an unprivileged user.
    #[cfg_attr(not(test), allow(dead_code))]
    Unconfined,
}

/// What sessions need.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The launch plan.
    pub plan: &'a Plan,
    /// The session end of PID 1's stop channel (`SOCK_SEQPACKET`).
    pub ctl: Option<RawFd>,
    /// How commands are confined.
    pub confinement: Confinement,
}

/// PID 1's handle on the running service.
#[derive(Debug)]
pub struct Service {
    /// The server process.
    pub pid: Pid,
    /// PID 1's end of the stop channel: stop request lines arrive here, the report leaves.
    pub ctl: OwnedFd,
}

/// Binds and listens on vsock `port` of any CID, close-on-exec.
pub fn listen_vsock(port: u32) -> std::io::Result<OwnedFd> {
    let last = std::io::Error::last_os_error;
    // SAFETY: socket(2) with constant arguments; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_vm is valid; the fields are set below.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_port = port;
    addr.svm_cid = libc::VMADDR_CID_ANY;
    // SAFETY: bind reads `size_of::<sockaddr_vm>()` bytes of the valid `addr`.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(last());
    }
    // SAFETY: listen on a bound socket we own.
    if unsafe { libc::listen(fd.as_raw_fd(), MAX_SESSIONS as libc::c_int) } != 0 {
        return Err(last());
    }
    Ok(fd)
}

/// Forks the server on `listener`; PID 1 keeps the returned handle.
pub fn start(listener: OwnedFd, plan: &Plan) -> std::io::Result<Service> {
    let (mine, theirs) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    // SAFETY: guest-init is single-threaded; the child only runs the server loop.
    match unsafe { nix::unistd::fork() }.map_err(std::io::Error::from)? {
        ForkResult::Child => {
            drop(mine);
            // Nothing of PID 1's but these: an app's ends of its streams held here would keep
            // its multiplexer from seeing the app's output end.
            app_confine::exec::close_inherited_fds_except(&[
                listener.as_raw_fd(),
                theirs.as_raw_fd(),
            ]);
            let ctx = Ctx {
                plan,
                ctl: Some(theirs.as_raw_fd()),
                confinement: Confinement::App,
            };
            server_loop(&listener, &ctx)
        }
        ForkResult::Parent { child } => Ok(Service {
            pid: child,
            ctl: mine,
        }),
    }
}

/// The server: accepts, forks a session per connection, reaps sessions. Never returns.
fn server_loop(listener: &OwnedFd, ctx: &Ctx<'_>) -> ! {
    let mut sessions = 0usize;
    loop {
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                    sessions = sessions.saturating_sub(1);
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(1000u16)).unwrap_or(0) < 1 {
            continue;
        }
        // SAFETY: accept4 on our listening socket with null address pointers.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            continue;
        }
        // SAFETY: a freshly accepted connection, owned from here on.
        let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
        if sessions >= MAX_SESSIONS {
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let msg = format!("too many exec sessions (at most {MAX_SESSIONS})");
            let _ = (&stream).write_all(&encoded(&Frame::Error(msg)));
            continue;
        }
        // SAFETY: the server is single-threaded; the child serves one connection and exits.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                serve_session(stream, ctx);
                // SAFETY: _exit ends the session process without running PID 1's atexit.
                unsafe { libc::_exit(0) }
            }
            Ok(ForkResult::Parent { .. }) => sessions += 1,
            Err(e) => info!("exec service: fork: {}", e.desc()),
        }
    }
}

/// Reads the request line (bounded in size and time); returns it and the bytes after it.
fn read_request(stream: &UnixStream) -> Result<(Request, Vec<u8>), String> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let rest = buf.split_off(nl + 1);
            return Request::parse(&buf)
                .map(|r| (r, rest))
                .map_err(|e| e.to_string());
        }
        if buf.len() > MAX_REQUEST {
            return Err(pod_abi::exec::ProtoError::RequestTooLong.to_string());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no request in time".into());
        }
        let _ = stream.set_read_timeout(Some(left));
        match (&*stream).read(&mut chunk) {
            Ok(0) => return Err("connection closed before the request".into()),
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err("no request in time".into()),
        }
    }
}

/// Writes frames to the host; `false` once the host is gone (an error or a timeout).
fn send(stream: &UnixStream, frames: &[Frame]) -> bool {
    let mut bytes = Vec::new();
    for f in frames {
        pod_abi::exec::encode(f, &mut bytes);
    }
    (&*stream).write_all(&bytes).is_ok()
}

/// Ends a session's stream: shut our side, then wait (bounded) for the host to close, so
/// the last frames are delivered before the process exits.
fn linger(stream: &UnixStream, wait: Duration) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(wait));
    let mut b = [0u8; 256];
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        match (&*stream).read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Serves one connection (in its own process, or a test's thread).
pub fn serve_session(stream: UnixStream, ctx: &Ctx<'_>) {
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let (req, rest) = match read_request(&stream) {
        Ok(r) => r,
        Err(e) => {
            debug!("exec service: {e}");
            send(&stream, &[Frame::Error(e), Frame::Exit(STAGE1_FAILED)]);
            return;
        }
    };
    let _ = stream.set_read_timeout(None);
    match req {
        Request::Exec {
            app,
            argv,
            tty,
            rows,
            cols,
        } => {
            let code = exec_session(
                &stream,
                ctx,
                &ExecReq {
                    app: &app,
                    argv: &argv,
                    tty,
                    rows,
                    cols,
                },
                rest,
            );
            send(&stream, &[Frame::Exit(code)]);
            linger(&stream, HANGUP_GRACE);
        }
        Request::Stop { grace_secs } => stop_session(&stream, ctx, grace_secs),
        r @ Request::Attach { .. } => {
            attach_session(&stream, &r, &rest);
            linger(&stream, HANGUP_GRACE);
        }
        r @ (Request::AppAdd { .. }
        | Request::AppStart { .. }
        | Request::AppStop { .. }
        | Request::AppRm { .. }) => app::app_session(&stream, ctx, &r),
    }
}

/// An `attach` request: relays it, and the bytes that follow both ways, to the app's
/// multiplexer (`crate::iomux`), until either end closes.
fn attach_session(stream: &UnixStream, req: &Request, rest: &[u8]) {
    let Request::Attach { app, .. } = req else {
        return;
    };
    let mux = match pod_abi::attach::connect(app) {
        Ok(m) => m,
        Err(e) => {
            send(
                stream,
                &[
                    Frame::Error(format!("app {app} has no attachable streams ({e})")),
                    Frame::Exit(1),
                ],
            );
            return;
        }
    };
    let mut first = req.to_line();
    first.extend_from_slice(rest);
    if (&mux).write_all(&first).is_err() {
        return;
    }
    splice(stream, &mux);
}

/// Copies bytes between `a` and `b` both ways until one closes its sending side.
fn splice(a: &UnixStream, b: &UnixStream) {
    let mut buf = vec![0u8; MAX_PAYLOAD];
    loop {
        let mut fds = [
            PollFd::new(a.as_fd(), PollFlags::POLLIN),
            PollFd::new(b.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        for (from, to, i) in [(a, b, 0), (b, a, 1)] {
            if !ready(i) {
                continue;
            }
            match (&*from).read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if (&*to).write_all(buf.get(..n).unwrap_or_default()).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Sets the size of the terminal whose master is `master` (a session's command's, or an
/// app's own through its multiplexer).
pub(crate) fn set_winsize(master: RawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the valid winsize passed; the fd is the caller's.
    unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &ws) };
}

/// An `exec` request's fields.
struct ExecReq<'a> {
    app: &'a str,
    argv: &'a [String],
    tty: bool,
    rows: u16,
    cols: u16,
}

/// The command's stdio, parent side.
struct ParentIo {
    /// Where stdin frames go (pipe write end, or the pty master).
    stdin: Option<OwnedFd>,
    /// What becomes stdout / stderr frames (the pty master alone with a tty).
    outs: Vec<(OwnedFd, bool)>,
    /// The pty master (resize, foreground process group).
    master: Option<RawFd>,
}

/// Creates the command's stdio: child's (stdin, stdout, stderr) and the parent's ends.
fn make_io(req: &ExecReq<'_>) -> nix::Result<([OwnedFd; 3], ParentIo)> {
    let nb = |fd: &OwnedFd| {
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
        )
        .map(|_| ())
    };
    let cloexec = |fd: &OwnedFd| {
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map(|_| ())
    };
    if req.tty {
        let ws = libc::winsize {
            ws_row: req.rows,
            ws_col: req.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let wsp = (req.rows > 0 && req.cols > 0).then_some(&ws);
        let pty = nix::pty::openpty(wsp, None)?;
        cloexec(&pty.master)?;
        cloexec(&pty.slave)?;
        nb(&pty.master)?;
        let m2 = pty
            .master
            .try_clone()
            .map_err(|_| nix::errno::Errno::EMFILE)?;
        let s2 = pty
            .slave
            .try_clone()
            .map_err(|_| nix::errno::Errno::EMFILE)?;
        let s3 = pty
            .slave
            .try_clone()
            .map_err(|_| nix::errno::Errno::EMFILE)?;
        let raw = pty.master.as_raw_fd();
        return Ok((
            [pty.slave, s2, s3],
            ParentIo {
                stdin: Some(m2),
                outs: vec![(pty.master, false)],
                master: Some(raw),
            },
        ));
    }
    let (in_r, in_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    for fd in [&in_w, &out_r, &err_r] {
        nb(fd)?;
    }
    Ok((
        [in_r, out_w, err_w],
        ParentIo {
            stdin: Some(in_w),
            outs: vec![(out_r, false), (err_r, true)],
            master: None,
        },
    ))
}

/// What a confined command joins besides the app's root: the app's cgroups (the files to
/// write `0` into) and, in a `--private-users` pod, the pod's user namespace.
struct Joins {
    cgroups: Vec<std::path::PathBuf>,
    userns: Option<Handshake>,
}

/// In the forked command: session, terminal, stdio, then confine and exec. Never returns.
fn command_child(
    ctx: &Ctx<'_>,
    app: &pod_abi::plan::AppPlan,
    joins: Joins,
    command: &Command,
    child_io: &[OwnedFd; 3],
    tty: bool,
    report: &OwnedFd,
) -> ! {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let (code, why) = 'setup: {
        for (target, fd) in child_io.iter().enumerate() {
            if let Err(e) = nix::unistd::dup2(fd.as_raw_fd(), target as RawFd) {
                break 'setup (STAGE1_FAILED, format!("dup2: {}", e.desc()));
            }
        }
        if let Err(e) = app_confine::session::lead(tty) {
            break 'setup (STAGE1_FAILED, e.to_string());
        }
        let keep = Some(report.as_raw_fd());
        match ctx.confinement {
            Confinement::App => {
                let spec = EnterSpec {
                    app,
                    rootfs: pod_abi::paths::guest_app_rootfs(&app.name),
                    cgroup_join: joins.cgroups,
                    keep_fd: keep,
                    hatch: None,
                };
                confine_and_exec(&spec, command, joins.userns)
            }
            Confinement::Unconfined => {
                close_inherited_fds(keep);
                command.exec()
            }
        }
    };
    let _ = nix::unistd::write(report, format!("{code} {why}").as_bytes());
    // SAFETY: _exit after fork is always safe.
    unsafe { libc::_exit(code) }
}

/// Runs an `exec` request and proxies its streams; returns the exit code to send.
fn exec_session(stream: &UnixStream, ctx: &Ctx<'_>, req: &ExecReq<'_>, rest: Vec<u8>) -> i32 {
    let fail = |why: String| {
        send(stream, &[Frame::Error(why)]);
        STAGE1_FAILED
    };
    // A mutable pod's plan grows after the server forked: read it again for an app added since.
    let fresh = match (ctx.plan.mutable, ctx.confinement) {
        (true, Confinement::App) => {
            Plan::read(std::path::Path::new(pod_abi::paths::GUEST_PLAN)).ok()
        }
        _ => None,
    };
    let app = match pick_app(fresh.as_ref().unwrap_or(ctx.plan), req.app) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let command = match Command::new(req.argv, &app.env) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let cgroup_join = match ctx.confinement {
        Confinement::App => {
            let layout = cgroup::Layout::detect(std::path::Path::new(cgroup::CGROUP_ROOT));
            cgroup::plan_app(app, &layout).join
        }
        Confinement::Unconfined => Vec::new(),
    };
    let (child_io, io) = match make_io(req) {
        Ok(x) => x,
        Err(e) => return fail(format!("stdio for the command: {}", e.desc())),
    };
    let (rd, wr) = match nix::unistd::pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return fail(format!("pipe: {}", e.desc())),
    };
    // A --private-users pod: the command enters the pod's user namespace, its maps written
    // here (this session's /proc is the guest's, where the forked pid means the command).
    let private_users = match ctx.confinement {
        Confinement::App => fresh.as_ref().unwrap_or(ctx.plan).private_users,
        Confinement::Unconfined => None,
    };
    let userns = match private_users.map(|_| Handshake::new()).transpose() {
        Ok(h) => h,
        Err(e) => return fail(format!("pipes: {}", e.desc())),
    };
    // The exec service runs out of the apps' sight; its command is born among them.
    if let Err(e) = crate::pidns::for_apps() {
        return fail(format!("the apps' PID namespace: {e}"));
    }
    // SAFETY: the session process is single-threaded (a test's session thread only forks
    // children that exec or _exit, with everything allocated before the fork).
    let pid = match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            drop(rd);
            let joins = Joins {
                cgroups: cgroup_join,
                userns,
            };
            command_child(ctx, app, joins, &command, &child_io, req.tty, &wr)
        }
        Ok(ForkResult::Parent { child }) => {
            if let (Some(hs), Some(range)) = (userns, private_users) {
                let mapped = std::fs::File::open("/proc")
                    .map_err(|e| app_confine::StepError::io("open /proc", &e))
                    .and_then(|p| hs.parent(std::os::fd::AsFd::as_fd(&p), child, range));
                if let Err(e) = mapped {
                    debug!("exec service: the pod's user namespace: {e}");
                }
            }
            child
        }
        Err(e) => return fail(format!("fork: {}", e.desc())),
    };
    drop(child_io);
    drop(wr);
    let failure = crate::launch::parse_report(&crate::launch::read_all(&rd));
    if let Some((_, why)) = &failure {
        send(stream, &[Frame::Error(why.clone())]);
    }
    let mut p = Proxy {
        stream,
        pid,
        io,
        reader: FrameReader::default(),
        stdin_buf: Vec::new(),
        stdin_eof: false,
        host_gone: None,
    };
    p.reader.push(&rest);
    p.run()
}

/// The streams of one running command.
struct Proxy<'s> {
    stream: &'s UnixStream,
    pid: Pid,
    io: ParentIo,
    reader: FrameReader,
    stdin_buf: Vec<u8>,
    stdin_eof: bool,
    /// When the host went away: SIGKILL is due [`HANGUP_GRACE`] later.
    host_gone: Option<Instant>,
}

/// `pidfd_open(2)`: an fd that polls readable once `pid` has exited.
fn pidfd(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; the returned fd is owned right away.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    // SAFETY: a new fd from the kernel.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

impl Proxy<'_> {
    fn run(&mut self) -> i32 {
        let pidfd = pidfd(self.pid);
        let mut exited: Option<i32> = None;
        let mut out = vec![0u8; MAX_PAYLOAD];
        self.handle_frames();
        while exited.is_none() {
            exited = self.try_wait();
            if exited.is_some() {
                break;
            }
            let want_host = self.host_gone.is_none() && self.stdin_buf.len() < STDIN_MAX;
            let want_stdin_write = !self.stdin_buf.is_empty() && self.io.stdin.is_some();
            let (host_r, outs_r, stdin_w) = {
                // Only what is wanted is polled: an idle fd's hang-up would spin the loop.
                let mut fds = Vec::new();
                fn slot<'f>(
                    fds: &mut Vec<PollFd<'f>>,
                    on: bool,
                    fd: BorrowedFd<'f>,
                    f: PollFlags,
                ) -> Option<usize> {
                    on.then(|| {
                        fds.push(PollFd::new(fd, f));
                        fds.len() - 1
                    })
                }
                let host = slot(&mut fds, want_host, self.stream.as_fd(), PollFlags::POLLIN);
                let outs: Vec<_> = self
                    .io
                    .outs
                    .iter()
                    .map(|(fd, _)| slot(&mut fds, true, fd.as_fd(), PollFlags::POLLIN))
                    .collect();
                let stdin = match (&self.io.stdin, want_stdin_write) {
                    (Some(fd), true) => slot(&mut fds, true, fd.as_fd(), PollFlags::POLLOUT),
                    _ => None,
                };
                if let Some(p) = &pidfd {
                    fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
                }
                let timeout = match (self.host_gone, &pidfd) {
                    (None, Some(_)) => PollTimeout::NONE,
                    _ => PollTimeout::from(50u16),
                };
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
                let ready = |i: Option<usize>| {
                    i.and_then(|i| fds.get(i))
                        .and_then(|f| f.revents())
                        .is_some_and(|r| !r.is_empty())
                };
                (
                    ready(host),
                    outs.iter().map(|i| ready(*i)).collect::<Vec<_>>(),
                    ready(stdin),
                )
            };
            if host_r {
                self.read_host();
            }
            for (i, r) in outs_r.iter().enumerate().rev() {
                if *r {
                    self.pump_out(i, &mut out, false);
                }
            }
            if stdin_w {
                self.write_stdin();
            }
            if let Some(t) = self.host_gone {
                if t.elapsed() >= HANGUP_GRACE {
                    let _ = kill(Pid::from_raw(-self.pid.as_raw()), Signal::SIGKILL);
                    let _ = kill(self.pid, Signal::SIGKILL);
                }
            }
        }
        // The command ended: what it wrote before is in the pipes; background processes
        // still holding them are not waited for.
        for i in (0..self.io.outs.len()).rev() {
            self.pump_out(i, &mut out, true);
        }
        exited.unwrap_or(STAGE1_FAILED)
    }

    fn try_wait(&mut self) -> Option<i32> {
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, c)) => Some(c),
            Ok(WaitStatus::Signaled(_, s, _)) => Some(SIGNAL_BASE + s as i32),
            Ok(_) => None,
            Err(nix::errno::Errno::EINTR) => None,
            Err(_) => Some(STAGE1_FAILED),
        }
    }

    /// The host left (EOF, an error, a bad frame): hang the command up.
    fn host_went_away(&mut self) {
        if self.host_gone.is_none() {
            self.host_gone = Some(Instant::now());
            self.io.stdin = None;
            self.stdin_buf.clear();
            let _ = kill(Pid::from_raw(-self.pid.as_raw()), Signal::SIGHUP);
        }
    }

    fn read_host(&mut self) {
        let mut buf = vec![0u8; read_room(&self.reader)];
        match (&*self.stream).read(&mut buf) {
            Ok(0) => self.host_went_away(),
            Ok(n) => {
                self.reader.push(buf.get(..n).unwrap_or_default());
                self.handle_frames();
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => self.host_went_away(),
        }
    }

    fn handle_frames(&mut self) {
        loop {
            let f = match self.reader.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    send(self.stream, &[Frame::Error(e.to_string())]);
                    self.host_went_away();
                    return;
                }
            };
            match f {
                Frame::Stdin(d) => {
                    if self.io.stdin.is_some() && !self.stdin_eof {
                        self.stdin_buf.extend_from_slice(&d);
                    }
                }
                Frame::StdinEof => {
                    self.stdin_eof = true;
                    if self.io.master.is_some() {
                        // A terminal has no EOF of its own: its EOF character (VEOF, ^D).
                        self.stdin_buf.push(4);
                    }
                }
                Frame::Resize { rows, cols } => {
                    if let Some(m) = self.io.master {
                        set_winsize(m, rows, cols);
                    }
                }
                Frame::Signal(n) => self.forward_signal(n),
                other => {
                    let t = format!("unexpected frame from the host: {other:?}");
                    send(self.stream, &[Frame::Error(t)]);
                    self.host_went_away();
                    return;
                }
            }
        }
        self.close_stdin_if_done();
    }

    /// Signal `n` to the command's process group (with a tty: the terminal's foreground
    /// process group).
    fn forward_signal(&self, n: i32) {
        let Ok(sig) = Signal::try_from(n) else {
            return;
        };
        let mut pgrp = self.pid.as_raw();
        if let Some(m) = self.io.master {
            let mut fg: libc::pid_t = 0;
            // SAFETY: TIOCGPGRP writes a pid_t into `fg`.
            if unsafe { libc::ioctl(m, libc::TIOCGPGRP, &mut fg) } == 0 && fg > 0 {
                pgrp = fg;
            }
        }
        let _ = kill(Pid::from_raw(-pgrp), sig);
    }

    fn close_stdin_if_done(&mut self) {
        if self.stdin_eof && self.stdin_buf.is_empty() && self.io.master.is_none() {
            self.io.stdin = None;
        }
    }

    fn write_stdin(&mut self) {
        let Some(fd) = &self.io.stdin else {
            return;
        };
        match nix::unistd::write(fd, &self.stdin_buf) {
            Ok(n) => {
                self.stdin_buf.drain(..n);
            }
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => {
                // The command closed its stdin: drop what it will never read.
                self.io.stdin = None;
                self.stdin_buf.clear();
            }
        }
        self.close_stdin_if_done();
    }

    /// Copies what output `i` has to the host; with `drain`, until it has nothing more now.
    fn pump_out(&mut self, i: usize, buf: &mut [u8], drain: bool) {
        loop {
            let Some((fd, is_err)) = self.io.outs.get(i) else {
                return;
            };
            match nix::unistd::read(fd.as_raw_fd(), buf) {
                Ok(0) | Err(nix::errno::Errno::EIO) => {
                    self.io.outs.remove(i);
                    return;
                }
                Ok(n) => {
                    let d = buf.get(..n).unwrap_or_default().to_vec();
                    let f = if *is_err {
                        Frame::Stderr(d)
                    } else {
                        Frame::Stdout(d)
                    };
                    if self.host_gone.is_none() && !send(self.stream, &[f]) {
                        self.host_went_away();
                    }
                    if !drain {
                        return;
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    }
}

/// Asks PID 1 to stop the pod and relays its report to the host.
fn stop_session(stream: &UnixStream, ctx: &Ctx<'_>, grace_secs: Option<u32>) {
    let Some(ctl) = ctx.ctl else {
        send(stream, &[Frame::Error("no supervisor to stop".into())]);
        return;
    };
    // SAFETY: `ctl` stays open for the session's life (inherited from the server).
    let ctl = unsafe { BorrowedFd::borrow_raw(ctl) };
    let line = Request::Stop { grace_secs }.to_line();
    let mut buf = vec![0u8; MAX_PAYLOAD];
    info!("stop requested on the exec channel");
    // The host may only wait: anything it sends (or EOF) ends the session at once.
    let asked = ask_pid1(ctl, stream, &line, &mut buf, HostReady::Wins, |d| {
        serde_json::from_slice::<StopReport>(d).ok()
    });
    match asked {
        Err(e) => {
            send(
                stream,
                &[Frame::Error(format!("ask PID 1 to stop: {}", e.desc()))],
            );
        }
        Ok(Pid1Answer::Answer(report)) => {
            send(stream, &[Frame::StopReport(report)]);
            linger(stream, REPORT_WAIT);
            let _ =
                nix::sys::socket::send(ctl.as_raw_fd(), ACK, nix::sys::socket::MsgFlags::empty());
        }
        Ok(Pid1Answer::HostGone | Pid1Answer::Pid1Gone) => {}
    }
}

/// Which side [`ask_pid1`] heeds when the host's stream and PID 1's channel are ready at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostReady {
    /// The host's readiness (data or EOF) ends the wait even if PID 1 has answered.
    Wins,
    /// PID 1's answer is read first; the host ends the wait only when PID 1 is silent.
    Yields,
}

/// How a wait for PID 1 ended.
#[derive(Debug, PartialEq, Eq)]
enum Pid1Answer<T> {
    /// A datagram `accept` took.
    Answer(T),
    /// The host's stream became readable (it may only wait: data or EOF ends the session).
    HostGone,
    /// PID 1 closed the channel or it failed.
    Pid1Gone,
}

/// Sends `line` to PID 1 over the `SOCK_SEQPACKET` channel `ctl`, then waits for a datagram
/// (at most `buf.len()` bytes) that `accept` turns into an answer, skipping the ones it
/// refuses, while watching the host's `stream` ([`HostReady`]). `Err` when the send fails.
fn ask_pid1<T>(
    ctl: BorrowedFd<'_>,
    stream: &UnixStream,
    line: &[u8],
    buf: &mut [u8],
    host: HostReady,
    mut accept: impl FnMut(&[u8]) -> Option<T>,
) -> nix::Result<Pid1Answer<T>> {
    nix::sys::socket::send(ctl.as_raw_fd(), line, nix::sys::socket::MsgFlags::empty())?;
    loop {
        let mut fds = [
            PollFd::new(ctl, PollFlags::POLLIN),
            PollFd::new(stream.as_fd(), PollFlags::POLLIN),
        ];
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        let (pid1, host_ready) = (ready(&fds[0]), ready(&fds[1]));
        if host_ready && (host == HostReady::Wins || !pid1) {
            return Ok(Pid1Answer::HostGone);
        }
        if !pid1 {
            continue;
        }
        let n =
            match nix::sys::socket::recv(ctl.as_raw_fd(), buf, nix::sys::socket::MsgFlags::empty())
            {
                Ok(0) | Err(_) => return Ok(Pid1Answer::Pid1Gone),
                Ok(n) => n,
            };
        if let Some(answer) = accept(buf.get(..n).unwrap_or_default()) {
            return Ok(Pid1Answer::Answer(answer));
        }
    }
}

/// PID 1: a request from a session on `ctl` (a stop, or an app request of a mutable pod), if
/// one is waiting. `Err(())` when the service is gone (stop polling it).
pub fn read_ctl_request(ctl: &OwnedFd) -> Result<Option<Request>, ()> {
    let mut buf = [0u8; 2048];
    match nix::sys::socket::recv(
        ctl.as_raw_fd(),
        &mut buf,
        nix::sys::socket::MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(0) => Err(()),
        Ok(n) => match Request::parse(buf.get(..n).unwrap_or_default()) {
            Ok(r @ Request::Stop { .. }) => Ok(Some(r)),
            Ok(r) if r.app_op().is_some() => Ok(Some(r)),
            _ => Ok(None),
        },
        Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => Ok(None),
        Err(_) => Err(()),
    }
}

/// PID 1, after the apps ended: sends the report and waits (at most [`REPORT_WAIT`]) until
/// the session says the host has it.
pub fn deliver_report(ctl: &OwnedFd, report: &StopReport) {
    let bytes = serde_json::to_vec(report).unwrap_or_default();
    if nix::sys::socket::send(ctl.as_raw_fd(), &bytes, nix::sys::socket::MsgFlags::empty()).is_err()
    {
        return;
    }
    let deadline = Instant::now() + REPORT_WAIT;
    let mut buf = [0u8; 16];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            info!("the stop report was not acknowledged in time");
            return;
        }
        let mut fds = [PollFd::new(ctl.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        if poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) < 1 {
            continue;
        }
        match nix::sys::socket::recv(
            ctl.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::empty(),
        ) {
            Ok(n) if buf.get(..n) == Some(ACK) => return,
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

mod app;
pub use app::send_app_reply;

#[cfg(test)]
mod tests;
