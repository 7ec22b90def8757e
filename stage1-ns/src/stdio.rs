//! The stdio of a command `enter` runs in a pod ([`Stdio`]) and the stdout and stderr of an ns
//! pod's apps ([`PodOutputs`]): never the host's own descriptors when app code could reopen them
//! with more access than given. A process reopens its descriptors through
//! `/proc/self/fd/N` (and an app of the pod those of a command it may inspect): a host file
//! given read-only as stdin opens read-write that way, and the operator's terminal would stay
//! readable by the pod after the command ended (keystrokes meant for the host's shell). So:
//!
//! * stdin a terminal: the command gets a new pseudo-terminal (its session's controlling
//!   terminal) for 0, 1 and 2; ours is raw and relayed, window sizes follow (`SIGWINCH`), and
//!   `SIGINT`, `SIGTERM`, `SIGHUP`, `SIGQUIT` sent to `rkt enter` are forwarded to the command;
//! * otherwise each of 0, 1 and 2 that is not a pipe, a socket or `/dev/null` (whose reopening
//!   gives nothing more) is replaced by a pipe relayed to or from ours.
//!
//! For `rkt run`, whose apps read no stdin unless interactive (a pseudo-terminal already), a
//! terminal on fd 1 or 2 becomes a pseudo-terminal of the pod's and a file a pipe.
//!
//! The relay ends when the command (guest-init) has exited and its outputs are closed, or have been idle for
//! [`DRAIN_IDLE_MS`] after its exit (a background process of the command may hold them).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{bail, Context};
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use stage1_common::terminal::{copy_winsize, RawMode};

/// How long the outputs may stay silent after the command exited before the relay ends, in ms.
pub const DRAIN_IDLE_MS: u16 = 200;
/// Bytes read at a time.
const CHUNK: usize = 64 * 1024;
/// Signals forwarded to the command when it has a terminal of its own (our terminal is raw, so
/// these come from elsewhere, e.g. `kill`), and the window size change.
const TAKEN: [Signal; 5] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGWINCH,
];

/// The command's stdio, prepared before the fork.
#[derive(Debug)]
pub enum Stdio {
    /// A pseudo-terminal: the command gets `slave` as 0, 1, 2.
    Pty {
        /// Our end.
        master: OwnedFd,
        /// The command's end.
        slave: OwnedFd,
    },
    /// Per fd 0, 1, 2: `None` to pass ours, or the command's end and ours of a pipe.
    Pipes([Option<(OwnedFd, OwnedFd)>; 3]),
}

/// Whether handing `fd` itself to app code gives it nothing more than the descriptor: a pipe
/// or FIFO (reopened, the same pipe), a socket (cannot be reopened) or `/dev/null`.
pub fn passable(fd: BorrowedFd<'_>) -> bool {
    let Ok(st) = nix::sys::stat::fstat(fd.as_raw_fd()) else {
        return false;
    };
    match st.st_mode & libc::S_IFMT {
        libc::S_IFIFO | libc::S_IFSOCK => true,
        libc::S_IFCHR => st.st_rdev == libc::makedev(1, 3),
        _ => false,
    }
}

fn cloexec(fd: &OwnedFd) -> nix::Result<()> {
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map(drop)
}

fn nonblocking(fd: &OwnedFd) -> nix::Result<()> {
    let fl = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK)).map(drop)
}

/// `fd` 0, 1 or 2 of this process.
pub(crate) fn std_fd(n: RawFd) -> BorrowedFd<'static> {
    // SAFETY: 0, 1 and 2 stay open for the life of the process ([`Stdio::new`] opens
    // `/dev/null` on any that was closed, stage0 execs stage1 with all three open) and are
    // never closed here.
    unsafe { BorrowedFd::borrow_raw(n) }
}

impl Stdio {
    /// Prepares the command's stdio from ours (see the module documentation).
    pub fn new() -> anyhow::Result<Stdio> {
        for n in 0..3 {
            if fcntl(n, FcntlArg::F_GETFD).is_err() {
                // A closed stdio slot: /dev/null lands on it (the lowest free number), so
                // that no pipe made below takes its number.
                let fd =
                    nix::fcntl::open("/dev/null", OFlag::O_RDWR, nix::sys::stat::Mode::empty())
                        .context("open /dev/null")?;
                if fd != n {
                    bail!("a closed stdio slot ({n}) did not get /dev/null");
                }
            }
        }
        if nix::unistd::isatty(0).unwrap_or(false) {
            let p = nix::pty::openpty(None, None).context("openpty")?;
            cloexec(&p.master).context("pty")?;
            cloexec(&p.slave).context("pty")?;
            copy_winsize(std_fd(0), p.master.as_fd());
            return Ok(Stdio::Pty {
                master: p.master,
                slave: p.slave,
            });
        }
        let mut ends: [Option<(OwnedFd, OwnedFd)>; 3] = [None, None, None];
        for (n, slot) in ends.iter_mut().enumerate() {
            let n = n as RawFd;
            if passable(std_fd(n)) {
                continue;
            }
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe")?;
            *slot = Some(if n == 0 { (r, w) } else { (w, r) });
        }
        Ok(Stdio::Pipes(ends))
    }

    /// Whether the command gets a pseudo-terminal.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Stdio::Pty { .. })
    }

    /// In the child, before it confines itself: its ends onto 0, 1 and 2 and the signals
    /// [`Stdio::relay`] takes unblocked; with `own_session`, the pseudo-terminal as the
    /// controlling one of a session of its own. Without it the process that will run the
    /// command, hatched later, makes that session (`app_confine::session::lead`).
    pub fn install(&self, own_session: bool) -> Result<(), String> {
        let errno = |what: &str, e: nix::errno::Errno| format!("{what}: {}", e.desc());
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&taken()), None);
        match self {
            Stdio::Pty { slave, .. } => {
                for n in 0..3 {
                    nix::unistd::dup2(slave.as_raw_fd(), n).map_err(|e| errno("dup2", e))?;
                }
                if own_session {
                    app_confine::session::lead(true).map_err(|e| e.to_string())?;
                }
            }
            Stdio::Pipes(ends) => {
                for (n, end) in ends.iter().enumerate() {
                    if let Some((theirs, _)) = end {
                        nix::unistd::dup2(theirs.as_raw_fd(), n as RawFd)
                            .map_err(|e| errno("dup2", e))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// In the parent, once `child` is forked: relays until it has exited and its outputs are
    /// done; returns its wait status.
    pub fn relay(self, child: Pid) -> anyhow::Result<WaitStatus> {
        let mut relay = Relay::default();
        // The signalfd, raw mode, and the master the window size is copied to on SIGWINCH
        // (its third owner, beside the input sink and the output).
        let (sfd, raw_mode, master) = match self {
            Stdio::Pty { master, slave } => {
                drop(slave);
                nonblocking(&master).context("pty")?;
                taken().thread_block().context("block signals")?;
                let sfd =
                    SignalFd::with_flags(&taken(), SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
                        .context("signalfd")?;
                let raw = RawMode::enter(std_fd(0)).context("raw mode")?;
                let sink = master.try_clone().context("dup the pty")?;
                let winsize = master.try_clone().context("dup the pty")?;
                relay.input = Some(Pipe::new(std_fd(0), Sink::Pty(sink)));
                relay.outputs.push(Output {
                    from: master,
                    to: 1,
                });
                (Some(sfd), Some(raw), Some(winsize))
            }
            Stdio::Pipes(ends) => {
                let [stdin, stdout, stderr] = ends;
                if let Some((theirs, ours)) = stdin {
                    drop(theirs);
                    nonblocking(&ours).context("pipe")?;
                    relay.input = Some(Pipe::new(std_fd(0), Sink::Pipe(ours)));
                }
                for (end, to) in [(stdout, 1), (stderr, 2)] {
                    if let Some((theirs, ours)) = end {
                        drop(theirs);
                        relay.outputs.push(Output { from: ours, to });
                    }
                }
                (None, None, None)
            }
        };
        let status = relay.run(child, sfd.as_ref(), |signo| {
            if signo == Signal::SIGWINCH as u32 {
                if let Some(m) = &master {
                    copy_winsize(std_fd(0), m.as_fd());
                }
            } else if let Ok(sig) = Signal::try_from(signo as i32) {
                let _ = kill(child, sig);
            }
        });
        drop(raw_mode);
        status
    }
}

/// What an ns pod's apps write to: `rkt run`'s own stdout and stderr unless either could be
/// reopened with more access (see the module documentation): a terminal is then replaced by a
/// pseudo-terminal of the pod's (apps still see a terminal and keep their line buffering), a
/// file by a pipe, each relayed by stage1-ns for the pod's life.
#[derive(Debug, Default)]
pub struct PodOutputs {
    /// Put `/dev/null` on fd 0 (a pod without a terminal reads nothing of ours; guest-init,
    /// and `/dev/console` chosen from the terminals on fds 0-2, would otherwise hold our
    /// stdin, often the operator's terminal).
    null_stdin: bool,
    /// Per fd 1 and 2 (index 0 and 1): the pod's end to put there, if not ours.
    theirs: [Option<OwnedFd>; 2],
    /// What stage1-ns copies: (from, to our fd).
    relayed: Vec<(OwnedFd, RawFd)>,
}

impl PodOutputs {
    /// Prepares them from our fds 1 and 2 (before the fork).
    pub fn new() -> anyhow::Result<PodOutputs> {
        let mut out = PodOutputs {
            null_stdin: true,
            ..Default::default()
        };
        let keep = [1, 2].map(|n| fcntl(n, FcntlArg::F_GETFD).is_err() || passable(std_fd(n)));
        if keep == [true, true] {
            return Ok(out);
        }
        let tty = [1, 2].map(|n| nix::unistd::isatty(n).unwrap_or(false));
        let mut pty_slave = None;
        if tty.iter().zip(keep).any(|(t, k)| *t && !k) {
            let p = nix::pty::openpty(None, None).context("openpty")?;
            cloexec(&p.master).context("pty")?;
            cloexec(&p.slave).context("pty")?;
            let to = if tty[0] { 1 } else { 2 };
            copy_winsize(std_fd(to), p.master.as_fd());
            out.relayed.push((p.master, to));
            pty_slave = Some(p.slave);
        }
        for (i, n) in [1, 2].into_iter().enumerate() {
            if keep.get(i).copied().unwrap_or(true) {
                continue;
            }
            let end = if tty.get(i).copied().unwrap_or(false) {
                match &pty_slave {
                    Some(s) => s.try_clone().context("dup the pty")?,
                    None => continue,
                }
            } else {
                let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe")?;
                out.relayed.push((r, n));
                w
            };
            if let Some(slot) = out.theirs.get_mut(i) {
                *slot = Some(end);
            }
        }
        Ok(out)
    }

    /// Whether nothing is relayed (the apps get our stdout and stderr as they are).
    pub fn relays_nothing(&self) -> bool {
        self.relayed.is_empty()
    }

    /// In the child (guest-init to be): `/dev/null` onto 0, the pod's ends onto 1 and 2.
    pub fn install(&self) -> Result<(), String> {
        if self.null_stdin {
            let null =
                nix::fcntl::open("/dev/null", OFlag::O_RDONLY, nix::sys::stat::Mode::empty())
                    .map_err(|e| format!("open /dev/null: {}", e.desc()))?;
            if null != 0 {
                nix::unistd::dup2(null, 0).map_err(|e| format!("dup2 onto fd 0: {}", e.desc()))?;
                let _ = nix::unistd::close(null);
            }
        }
        for (end, n) in self.theirs.iter().zip([1, 2]) {
            if let Some(fd) = end {
                nix::unistd::dup2(fd.as_raw_fd(), n)
                    .map_err(|e| format!("dup2 onto fd {n}: {}", e.desc()))?;
            }
        }
        Ok(())
    }

    /// In the parent once the child is forked: supervises it, relaying the pod's output and
    /// passing every signal of `sfd` to `on_signal`, until it exited and its output is done.
    /// Returns its wait status.
    pub fn supervise(
        self,
        child: Pid,
        sfd: &SignalFd,
        on_signal: impl FnMut(u32),
    ) -> anyhow::Result<WaitStatus> {
        let PodOutputs {
            theirs, relayed, ..
        } = self;
        drop(theirs);
        let mut relay = Relay {
            input: None,
            outputs: relayed
                .into_iter()
                .map(|(from, to)| Output { from, to })
                .collect(),
        };
        relay.run(child, Some(sfd), on_signal)
    }
}

/// The signals taken while a command has a terminal of its own.
fn taken() -> SigSet {
    let mut set = SigSet::empty();
    for s in TAKEN {
        set.add(s);
    }
    set
}

/// Where our stdin goes.
#[derive(Debug)]
enum Sink {
    /// The pseudo-terminal's master (never closed at our stdin's end: the command keeps its
    /// terminal).
    Pty(OwnedFd),
    /// The command's stdin pipe, closed at our stdin's end.
    Pipe(OwnedFd),
}

impl Sink {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Sink::Pty(fd) | Sink::Pipe(fd) => fd.as_fd(),
        }
    }
}

/// Our stdin to the command, with what was read but not yet written.
#[derive(Debug)]
struct Pipe {
    from: BorrowedFd<'static>,
    to: Sink,
    pending: Vec<u8>,
    eof: bool,
}

impl Pipe {
    fn new(from: BorrowedFd<'static>, to: Sink) -> Pipe {
        Pipe {
            from,
            to,
            pending: Vec::new(),
            eof: false,
        }
    }
}

/// One of the command's outputs, copied to our fd `to`.
#[derive(Debug)]
struct Output {
    from: OwnedFd,
    to: RawFd,
}

#[derive(Debug, Default)]
struct Relay {
    input: Option<Pipe>,
    outputs: Vec<Output>,
}

/// Writes all of `data` to `to` (blocking, or non-blocking with a 5 ms pause on `EAGAIN`); a
/// failure drops the rest.
pub fn write_all(to: BorrowedFd<'_>, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(to, data) {
            Ok(0) => return,
            Ok(n) => data = data.get(n..).unwrap_or_default(),
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            Err(_) => return,
        }
    }
}

impl Relay {
    fn run(
        &mut self,
        child: Pid,
        sfd: Option<&SignalFd>,
        mut on_signal: impl FnMut(u32),
    ) -> anyhow::Result<WaitStatus> {
        // SAFETY: pidfd_open with a pid we forked and no flags; the result is checked.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, child.as_raw(), 0) };
        if raw < 0 {
            bail!("pidfd_open: {}", std::io::Error::last_os_error());
        }
        // SAFETY: pidfd_open just returned this new descriptor, owned here.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
        let pidfd = pidfd.as_fd();
        let mut status = None;
        let mut buf = vec![0u8; CHUNK];
        loop {
            if status.is_some() && self.outputs.is_empty() {
                break;
            }
            // What is polled, in order: pidfd, signalfd, our stdin or the command's stdin,
            // each output.
            let mut fds = Vec::new();
            let watch_child = status.is_none();
            if watch_child {
                fds.push(PollFd::new(pidfd, PollFlags::POLLIN));
            }
            if let Some(s) = sfd {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            let input_slot = match &self.input {
                Some(p) if status.is_none() && !p.pending.is_empty() => {
                    fds.push(PollFd::new(p.to.fd(), PollFlags::POLLOUT));
                    true
                }
                Some(p) if status.is_none() && !p.eof => {
                    fds.push(PollFd::new(p.from, PollFlags::POLLIN));
                    true
                }
                _ => false,
            };
            for o in &self.outputs {
                fds.push(PollFd::new(o.from.as_fd(), PollFlags::POLLIN));
            }
            let timeout = if status.is_some() {
                PollTimeout::from(DRAIN_IDLE_MS)
            } else {
                PollTimeout::NONE
            };
            match poll(&mut fds, timeout) {
                Ok(0) if status.is_some() => break,
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => bail!("poll: {}", e.desc()),
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            let mut i = 0;
            let mut next = || {
                let r = ready.get(i).copied().unwrap_or(false);
                i += 1;
                r
            };
            if watch_child && next() {
                status = match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => None,
                    Ok(s) => Some(s),
                    Err(e) => bail!("wait: {}", e.desc()),
                };
            }
            if let Some(s) = sfd.filter(|_| next()) {
                while let Ok(Some(si)) = s.read_signal() {
                    on_signal(si.ssi_signo);
                }
            }
            if input_slot && next() {
                self.move_input(&mut buf);
            }
            let mut closed = Vec::new();
            for (k, o) in self.outputs.iter().enumerate() {
                if !next() {
                    continue;
                }
                match nix::unistd::read(o.from.as_raw_fd(), &mut buf) {
                    Ok(0) | Err(nix::errno::Errno::EIO) => closed.push(k),
                    Ok(n) => write_all(std_fd(o.to), buf.get(..n).unwrap_or_default()),
                    Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                    Err(_) => closed.push(k),
                }
            }
            for k in closed.into_iter().rev() {
                self.outputs.remove(k);
            }
        }
        Ok(status.unwrap_or(WaitStatus::Exited(child, 0)))
    }

    /// Reads our stdin or writes what is pending to the command, whichever was polled.
    fn move_input(&mut self, buf: &mut [u8]) {
        let Some(p) = &mut self.input else {
            return;
        };
        if p.pending.is_empty() {
            match nix::unistd::read(p.from.as_raw_fd(), buf) {
                Ok(0) => p.eof = true,
                Ok(n) => p
                    .pending
                    .extend_from_slice(buf.get(..n).unwrap_or_default()),
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                Err(_) => p.eof = true,
            }
        }
        if !p.pending.is_empty() {
            match nix::unistd::write(p.to.fd(), &p.pending) {
                Ok(n) => {
                    p.pending.drain(..n.min(p.pending.len()));
                }
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                // The command closed its stdin: nothing more goes there.
                Err(_) => {
                    p.pending.clear();
                    p.eof = true;
                }
            }
        }
        if p.eof && p.pending.is_empty() && matches!(p.to, Sink::Pipe(_)) {
            // EOF for the command.
            self.input = None;
        }
    }
}
