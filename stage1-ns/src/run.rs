//! The `run` entrypoint: cwd is the pod directory, `RKT_LOCK_FD` holds the pod lock (kept open
//! for the pod's whole life). Creates the pod cgroups, a new PID namespace whose PID 1 is
//! guest-init (forked child: namespaces + pivot_root, then guest-init in the same process,
//! `guest_init::init` with `pod_abi::init::InitArgs` for the ns flavor: no exec of `/init`),
//! writes `pid`, forwards the stop signals, proxies the terminal when interactive, and exits with
//! the pod's exit code (`stage1_common::pod::finish`).
//!
//! Start-up order (no window in which `pid` names anything but guest-init in its root with the
//! apps' environments set up, and no app before `pid` exists): the child moves itself into the
//! cgroup v1 pod cgroups ([`cgroup::join_self`]) and this process moves it into a cgroup v2 one
//! ([`cgroup::join`]) while the child pivots into the stage1 root and becomes guest-init with
//! `--start-fd` (one end of a socket pair); the report pipe reaching EOF (the child closes it
//! when it hands over, as an exec would) tells this process that guest-init runs; guest-init
//! closes every other fd it inherited, sets up every app's environment and sends the ready
//! byte; only then is `pid` written and the start byte sent back, and guest-init starts no app
//! before it has read it. `stop` and `enter` recognise guest-init as PID 1 of a PID namespace
//! whose root holds this pod's plan ([`crate::stop`]); its argv stays stage1-ns's.
//!
//! The pod lives and dies with this process (the pod lock is this process's): the child asks
//! for SIGKILL when its parent dies (`PR_SET_PDEATHSIG`), and guest-init, PID 1 of the pod's
//! PID namespace, takes every process of the pod with it. A launcher that died before that
//! request took effect never sends the start byte, and guest-init then starts no app and ends.

use std::os::fd::{AsFd, AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::Instant;

use anyhow::{bail, Context};
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use pod_abi::init::{InitArgs, READY_BYTE, START_BYTE};
use pod_abi::paths::PodPaths;
use pod_abi::plan::{Flavor, Plan};
use pod_abi::stage1::RunArgs;
use pod_abi::status::SIGNAL_BASE;
use stage1_common::cgroup;
use stage1_common::pod::{finish, keep_lock_fd};
use stage1_common::terminal::{copy_winsize, EscapeDetector, RawMode, ESCAPE_KILL_REASON};
use stage1_common::{signals, PodContext};

use crate::ns::{enter_pod, NsConfig, PodNet};
use crate::stdio::{std_fd, write_all, PodOutputs};

/// Runs the pod; returns the pod's exit code.
pub fn run(ctx: &PodContext, args: &RunArgs) -> anyhow::Result<i32> {
    trace("main");
    let pod_dir = ctx.dir().to_path_buf();
    let pod = ctx.paths();
    let _lock = keep_lock_fd();
    let mut plan = Plan::read(&pod.plan()).context("read the launch plan")?;
    if plan.kvm_snapshot {
        log::warn!("--kvm-snapshot applies to the kvm flavor only; ignored");
    }
    let hostname = if !args.hostname.is_empty() {
        args.hostname.clone()
    } else if !plan.hostname.is_empty() {
        plan.hostname.clone()
    } else {
        format!("rkt-{}", args.uuid)
    };
    let t0 = Instant::now();
    let net = stage1_common::net::setup(&pod_dir, &args.uuid, &args.net, &mut plan)?;
    log::debug!(
        "--net={}: networks set up in {} us",
        args.net,
        t0.elapsed().as_micros()
    );
    trace("net");
    let netns_file = match &net.netns {
        Some(p) => Some(std::fs::File::open(p).with_context(|| format!("open {}", p.display()))?),
        None => None,
    };
    let rootfs = pod_abi::paths::canonicalize(&pod.stage1_rootfs()).context("stage1 rootfs")?;
    let cgroups = cgroup::create(&pod_dir, &args.uuid, cgroup::Shape::Nested).unwrap_or_else(|e| {
        log::warn!("pod cgroups unavailable: {e}");
        Vec::new()
    });
    if let Some(n) = plan.pids_limit {
        let limit = app_confine::cgroup::Limit::Pids(n);
        match cgroup::set_limits(&cgroups, &[limit]) {
            Err((file, e)) => log::warn!("pod task limit {n} not set ({}: {e})", file.display()),
            Ok(()) if !cgroups.iter().any(|c| c.holds(limit)) => {
                log::warn!("pod task limit {n} not set (the host has no pids cgroup)")
            }
            Ok(()) => {}
        }
    }
    trace("cgroups-created");
    let interactive =
        (args.interactive || plan.interactive) && nix::unistd::isatty(0).unwrap_or(false);
    let pty = if interactive {
        Some(nix::pty::openpty(None, None).context("openpty")?)
    } else {
        None
    };
    // Not interactive: the apps get our stdout and stderr unless they could reopen them with
    // more access (a terminal, a file), which are then relayed.
    let outputs = if pty.is_none() {
        PodOutputs::new().context("the pod's stdout and stderr")?
    } else {
        PodOutputs::default()
    };
    if let Some(p) = &pty {
        // Only the copies dup'ed onto fds 0-2 may reach guest-init and the apps.
        for fd in [p.master.as_raw_fd(), p.slave.as_raw_fd()] {
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).context("pty close-on-exec")?;
        }
    }
    // The child's setup failure, or EOF once it has handed over to guest-init.
    let (rd, wr) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe")?;
    // guest-init's `--start-fd` (`go_rd`): it sends the ready byte once the apps' environments
    // are set up and waits for the start byte, sent once `pid` is
    // written, so that no app runs before the pod's pid is known (stop/enter/status use it).
    let (go_rd, go_wr) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("socketpair")?;
    // A mutable pod's exec channel: bound here, in the pod directory, where nothing in the pod
    // can reach; guest-init serves the listening socket it inherits.
    let exec_listener = if plan.mutable {
        Some(crate::app::listen(&pod_dir)?)
    } else {
        None
    };
    let mut init = InitArgs::new(Flavor::Ns);
    init.debug = args.debug || plan.debug;
    init.start_fd = Some(go_rd.as_raw_fd());
    init.exec_fd = exec_listener.as_ref().map(AsRawFd::as_raw_fd);
    // The metadata service is reached at the host side of the first network (its gateway, as
    // rkt did), or on loopback with --net=host.
    let mds_host = stage1_common::net::host_address(&net);
    init.metadata_url = stage1_common::metadata::url(args, mds_host.as_deref())?;
    let cfg = NsConfig {
        rootfs: &rootfs,
        hostname: &hostname,
        net: match (&netns_file, &net.mode) {
            (Some(f), _) => PodNet::Join(f.as_raw_fd()),
            (None, cni::NetMode::Host) => PodNet::Host,
            (None, _) => PodNet::New,
        },
        cgroups: &cgroups,
        host_ipc: plan.host_ipc,
        private_users: plan.private_users.is_some(),
    };

    // Blocked before fork, so that no stop request is lost: this process reads them from a
    // signalfd, and guest-init inherits the mask until its own signalfd takes over.
    let mask = stop_mask();
    mask.thread_block().context("block signals")?;
    unshare(CloneFlags::CLONE_NEWPID).context("unshare the PID namespace")?;
    // SAFETY: stage1-ns is single-threaded; the child runs setup code, then guest-init.
    match unsafe { nix::unistd::fork() }.context("fork guest-init")? {
        ForkResult::Child => {
            drop(rd);
            drop(go_wr);
            trace("child");
            match child(
                &cfg,
                pty.as_ref().map(|p| p.slave.as_raw_fd()),
                &outputs,
                go_rd,
                exec_listener,
            ) {
                Ok(()) => {
                    // EOF on the report pipe: guest-init runs (as an exec would tell).
                    drop(wr);
                    become_init(init)
                }
                Err(msg) => {
                    let _ = nix::unistd::write(&wr, msg.as_bytes());
                    // SAFETY: _exit after fork is always safe.
                    unsafe { libc::_exit(pod_abi::exit::STAGE1_FAILED) }
                }
            }
        }
        ForkResult::Parent { child } => {
            drop(wr);
            drop(go_rd);
            drop(exec_listener);
            trace("forked");
            // cgroup v2: while the child builds the namespaces (see the module doc); before any
            // app. (cgroup v1: the child joins itself.)
            if let Err((file, e)) = cgroup::join(&cgroups, child.as_raw()) {
                let _ = kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                let _ = cgroup::gc(&pod_dir);
                bail!("join cgroup {}: {e}", file.display());
            }
            trace("cgroups-joined");
            let pty_master = pty.map(|p| {
                drop(p.slave);
                p.master
            });
            let start = Start {
                ctx,
                report: rd,
                go: go_wr,
            };
            let r = parent(pod, &plan, child, &mask, start, pty_master, outputs);
            // The pod's PID namespace is gone with guest-init, so its cgroups are empty: remove
            // them now rather than leaving them until `gc` (which stays idempotent).
            if let Err(e) = cgroup::gc(&pod_dir) {
                log::warn!("cannot remove the pod cgroups yet (gc will retry): {e}");
            }
            trace("cgroups-removed");
            r
        }
    }
}

/// A start-up phase of this process (`pod_abi::trace`, `RKT_TRACE_PHASES=1`).
fn trace(phase: &str) {
    pod_abi::trace::phase("stage1-ns", phase);
}

/// The signals this process handles (forwarded or acted on) rather than dies of.
fn stop_mask() -> SigSet {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGWINCH,
    ] {
        mask.add(s);
    }
    mask
}

/// What the parent needs to start guest-init: the pod (for `pid`), the child's report pipe
/// and the start socket.
struct Start<'a> {
    ctx: &'a PodContext,
    report: OwnedFd,
    go: OwnedFd,
}

impl Start<'_> {
    /// Waits for the child to hand over to guest-init (or to report why it could not) and for
    /// guest-init to have set up the apps' environments (its ready byte), writes `pid` and
    /// sends the start byte. A guest-init that ends before it is ready gets no `pid` (the
    /// supervision that follows reports how it ended).
    fn go(self, child: Pid) -> anyhow::Result<()> {
        let failure = read_all(&self.report);
        if !failure.is_empty() {
            let _ = waitpid(child, None);
            bail!("{failure}");
        }
        trace("handed-over");
        let mut b = [0u8; 1];
        let ready = loop {
            match nix::unistd::read(self.go.as_raw_fd(), &mut b) {
                Err(nix::errno::Errno::EINTR) => {}
                Ok(1) => break b == [READY_BYTE],
                _ => break false,
            }
        };
        if !ready {
            return Ok(());
        }
        trace("ready");
        if let Err(e) = self.ctx.write_pid(child.as_raw()) {
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            return Err(e).context("write the pid file");
        }
        // guest-init may already be gone: the supervision that follows tells how it ended.
        let _ = nix::sys::socket::send(self.go.as_raw_fd(), &[START_BYTE], MsgFlags::MSG_NOSIGNAL);
        trace("started");
        Ok(())
    }
}

/// The child: namespaces, console; `Ok` when the caller is to run guest-init in this process
/// ([`become_init`]), `Err` with the failure reason.
fn child(
    cfg: &NsConfig<'_>,
    slave: Option<RawFd>,
    outputs: &PodOutputs,
    go: OwnedFd,
    exec_listener: Option<std::os::unix::net::UnixListener>,
) -> Result<(), String> {
    // The pod dies with its launcher: this process (guest-init once handed over, PID 1 of the
    // pod's PID namespace) gets SIGKILL when stage1-ns dies. If stage1-ns died before this, it
    // never sends the start byte and guest-init exits on EOF.
    // SAFETY: prctl with integer arguments only.
    if unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    } != 0
    {
        return Err(format!(
            "die with the launcher (PR_SET_PDEATHSIG): {}",
            nix::errno::Errno::last().desc()
        ));
    }
    // Into the cgroup v1 pod cgroups before anything else: guest-init and every app inherit them.
    if let Err((file, e)) = cgroup::join_self(cfg.cgroups) {
        return Err(format!("join cgroup {}: {e}", file.display()));
    }
    trace("cgroups-self-joined");
    // Detach from the user's session: ^C on the terminal reaches stage1-ns, which forwards it.
    let _ = nix::unistd::setsid();
    if let Some(s) = slave {
        for fd in 0..=2 {
            if let Err(e) = nix::unistd::dup2(s, fd) {
                return Err(format!("dup2 the pty onto fd {fd}: {}", e.desc()));
            }
        }
    }
    outputs.install()?;
    if let Err(e) = enter_pod(cfg) {
        return Err(format!("{}: {}", e.step, e.source.desc()));
    }
    trace("namespaces");
    // Owned by guest-init from here on (its `--start-fd` and `--exec-fd`, kept by number
    // whatever their close-on-exec flag).
    let _ = go.into_raw_fd();
    let _ = exec_listener.map(IntoRawFd::into_raw_fd);
    // `ps` tells it from its launcher (whose argv it keeps).
    // SAFETY: prctl reads a NUL-terminated string that outlives the call.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"init".as_ptr(), 0, 0, 0) };
    Ok(())
}

/// Runs guest-init in this process, as PID 1 of the pod (it closes every fd but its own and
/// exits with the pod). Nothing of stage1-ns runs after this, not even a destructor: a panic
/// (unwinding in test builds) ends the process here.
fn become_init(args: InitArgs) -> ! {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guest_init::init(args)));
    // SAFETY: _exit ends the process without running anything else.
    unsafe { libc::_exit(pod_abi::exit::STAGE1_FAILED) }
}

fn read_all(fd: &OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parent(
    pod: &PodPaths,
    plan: &Plan,
    child: Pid,
    mask: &SigSet,
    start: Start<'_>,
    master: Option<OwnedFd>,
    outputs: PodOutputs,
) -> anyhow::Result<i32> {
    let sfd = SignalFd::with_flags(mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("signalfd")?;
    start.go(child)?;
    let status = match master {
        Some(m) => supervise_interactive(child, &sfd, m)?,
        None if outputs.relays_nothing() => supervise(child, &sfd)?,
        None => outputs.supervise(child, &sfd, |signo| forward(child, signo))?,
    };
    trace("init-exited");
    let ended = match status {
        WaitStatus::Signaled(_, s, _) => format!("guest-init killed by {s:?}"),
        WaitStatus::Exited(_, c) => format!("guest-init exited with status {c}"),
        _ => "guest-init ended".into(),
    };
    Ok(finish(pod, plan, Some(&ended)))
}

/// Forwards a stop signal to guest-init as SIGTERM.
fn forward(child: Pid, si_signo: u32) {
    if signals::is_stop_signal(i32::try_from(si_signo).unwrap_or_default()) {
        let _ = kill(child, Signal::SIGTERM);
    }
}

fn child_exited(child: Pid) -> Option<WaitStatus> {
    match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => None,
        Ok(st @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => Some(st),
        Ok(_) => None,
        Err(_) => Some(WaitStatus::Exited(child, SIGNAL_BASE)),
    }
}

fn supervise(child: Pid, sfd: &SignalFd) -> anyhow::Result<WaitStatus> {
    loop {
        if let Some(st) = child_exited(child) {
            return Ok(st);
        }
        let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => bail!("poll: {}", e.desc()),
        }
        while let Ok(Some(si)) = sfd.read_signal() {
            forward(child, si.ssi_signo);
        }
    }
}

fn supervise_interactive(
    child: Pid,
    sfd: &SignalFd,
    master: OwnedFd,
) -> anyhow::Result<WaitStatus> {
    let stdin = std::io::stdin();
    let stdin_fd = stdin.as_fd();
    copy_winsize(stdin_fd, master.as_fd());
    let raw = RawMode::enter(stdin_fd).context("raw mode")?;
    let mut esc = EscapeDetector::default();
    let mut stdin_open = true;
    let mut master_open = true;
    let mut buf = [0u8; 4096];
    let mut exited = None;
    let result = loop {
        if exited.is_none() {
            exited = child_exited(child);
        }
        if exited.is_some() && !master_open {
            break exited;
        }
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        if master_open {
            fds.push(PollFd::new(master.as_fd(), PollFlags::POLLIN));
        }
        if stdin_open && master_open {
            fds.push(PollFd::new(stdin_fd, PollFlags::POLLIN));
        }
        // Once guest-init is gone, drain the pty without blocking.
        let timeout = if exited.is_some() {
            PollTimeout::from(100u16)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(0) if exited.is_some() => break exited,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => bail!("poll: {}", e.desc()),
        }
        let ready = |i: usize| {
            fds.get(i)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty())
        };
        let (sig_r, m_r, in_r) = (
            ready(0),
            master_open && ready(1),
            stdin_open && master_open && ready(2),
        );
        drop(fds);
        if sig_r {
            while let Ok(Some(si)) = sfd.read_signal() {
                if si.ssi_signo == Signal::SIGWINCH as u32 {
                    copy_winsize(stdin_fd, master.as_fd());
                } else {
                    forward(child, si.ssi_signo);
                }
            }
        }
        if m_r {
            match nix::unistd::read(master.as_raw_fd(), &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EIO) => master_open = false,
                Ok(n) => write_all(std_fd(1), buf.get(..n).unwrap_or_default()),
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                Err(_) => master_open = false,
            }
        }
        if in_r {
            match nix::unistd::read(stdin_fd.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    let data = buf.get(..n).unwrap_or_default();
                    let now = Instant::now();
                    if esc.feed_all(data, now) {
                        let _ = kill(child, Signal::SIGKILL);
                        let msg = format!(
                            "\r\n{}: {ESCAPE_KILL_REASON}\r\n",
                            stage1_common::log::prog()
                        );
                        write_all(std_fd(2), msg.as_bytes());
                    }
                    write_all(master.as_fd(), data);
                }
            }
        }
    };
    drop(raw);
    Ok(result.unwrap_or(WaitStatus::Exited(child, 0)))
}
