//! The `enter` entrypoint: runs a command (default `/bin/sh`; often the image's own code) in an
//! app of a running pod, confined exactly like the app's own processes. It checks that `--pid`
//! is guest-init (its argv, as `stop` does; stage1-ns writes `pid` only once guest-init runs
//! in the stage1 root, so there is no window to retry), reads the plan beneath its root, joins
//! the app's cgroups on the host (`stage1_common::cgroup::app_joins`: the pod's task limit and
//! the app's limits hold for the command too), forgets the environment it got from the host's
//! `rkt`, joins guest-init's ipc, uts, net and mount namespaces and, where the apps share it,
//! its PID namespace, and forks. Where the apps have a PID namespace of their own
//! (`app_confine::pidns::apps_apart`: one of them may hold `CAP_SYS_PTRACE`), it opens that one
//! instead (guest-init's `pid_for_children`, refused while it is guest-init's own, so the
//! command never sees guest-init) and becomes a subreaper before the fork; the child, born in
//! the host's PID namespace out of the apps' sight, joins the apps' namespace for its
//! children. The child (`app_confine::enter`, shared with the kvm flavor's exec
//! service in guest-init) confines itself to `/opt/stage2/<app>/rootfs`
//! (`app_confine::root::confine`: its own mount namespace, `pivot_root`, old root detached),
//! changes to the app's working directory, takes the app's identity (user, group,
//! supplementary groups, capability sets, `no_new_privs`: `app_confine::identity`), with the
//! apps apart hatches the command's process among them (`app_confine::pidns::hatch`; its pid
//! comes back on a pipe, and this process adopts and waits for it), and execs the command with
//! exactly the app's environment. The
//! command's stdio are a pseudo-terminal or pipes relayed to ours wherever ours could be
//! reopened with more access ([`crate::stdio`]). Returns
//! the command's exit code (128+signal; 127/126 for exec failures; 125 when the command could
//! not be confined, with the reason on stderr).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use anyhow::{bail, Context};
use app_confine::enter::{confine_and_exec, pick_app, EnterSpec, Hatch};
use app_confine::exec::Command;
use app_confine::userns::Handshake;
use nix::sched::{setns, CloneFlags};
use nix::sys::wait::WaitStatus;
use nix::unistd::ForkResult;
use pod_abi::exit::STAGE1_FAILED;
use pod_abi::paths::guest_app_rootfs;
use pod_abi::plan::{AppPlan, Plan};
use pod_abi::stage1::EnterArgs;
use pod_abi::status::SIGNAL_BASE;

use crate::stdio::Stdio;

/// Default command when none is given.
pub const DEFAULT_CMD: &str = "/bin/sh";

/// The namespaces of guest-init that the command joins, as named under `/proc/<pid>/ns/`; the
/// mount namespace last (it changes root and cwd). The PID namespace is guest-init's, or the
/// apps' own where they have one ([`apps_pid_ns`]).
const NAMESPACES: [(&str, CloneFlags); 4] = [
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// How long `enter` waits for guest-init's children to be born among the apps again while it
/// forks one of its own helpers (a few microseconds each time) (milliseconds).
const APPS_PID_NS_WAIT_MS: u64 = 1000;

/// The apps' PID namespace of the pod whose guest-init is `pid`: guest-init's
/// `pid_for_children`, once it is not guest-init's own namespace.
fn apps_pid_ns(pid: i32) -> anyhow::Result<File> {
    let candidate = format!("/proc/{pid}/ns/pid_for_children");
    let own = format!("/proc/{pid}/ns/pid");
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_millis(APPS_PID_NS_WAIT_MS);
    loop {
        match app_confine::pidns::open_apart(Path::new(&candidate), Path::new(&own)) {
            Ok(f) => return Ok(f),
            Err(e)
                if e.errno == nix::errno::Errno::EAGAIN && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => bail!("the apps' PID namespace of pid {pid}: {e}"),
        }
    }
}

/// Runs `enter` into the pod of `pod_dir`.
pub fn enter(pod_dir: &Path, args: &EnterArgs) -> anyhow::Result<i32> {
    let pid = args.pid;
    if let Some(why) = crate::stop::verify_init_pid(pid) {
        bail!("refusing to enter: {why}");
    }
    let plan = Plan::read_beneath(Path::new(&format!("/proc/{pid}/root")))
        .with_context(|| format!("read the plan of pid {pid}"))?;
    let app = pick_app(&plan, &args.app).map_err(anyhow::Error::msg)?;
    let cmd = if args.cmd.is_empty() {
        vec![DEFAULT_CMD.to_string()]
    } else {
        args.cmd.clone()
    };
    let command = Command::new(&cmd, &app.env).map_err(anyhow::Error::msg)?;
    // The host's /proc, for the child's ID maps: after joining the pod's mount namespace,
    // `/proc` is the pod's, where the pid fork returns here means another process.
    let proc_dir = File::open("/proc").context("open /proc")?;
    let userns = match plan.private_users {
        Some(r) => Some((Handshake::new().context("pipes")?, r)),
        None => None,
    };
    // Before joining the pod's mount namespace: a pseudo-terminal comes from the host's, and
    // the cgroups are the host's (this process, single-threaded, moves whole; the command
    // forked below is then under the pod's task limit and the app's own limits).
    let stdio = Stdio::new().context("the command's stdio")?;
    let joins =
        stage1_common::cgroup::app_joins(pod_dir, &app.name).context("read the pod's cgroups")?;
    if let Err((file, e)) = app_confine::cgroup::join_self(&joins) {
        bail!("join the app's cgroup {}: {e}", file.display());
    }
    // The child is among the apps from its birth until its exec: it carries nothing of the
    // operator's environment, which this process inherited from the host's rkt
    // (the host's /proc: the pod's shows no process of the host).
    app_confine::exec::forget_environment().context("forget rkt's environment")?;
    // Apps apart from guest-init (`app_confine::pidns::apps_apart`: one may hold
    // CAP_SYS_PTRACE): the child is born here, out of their sight, and hatches the command's
    // process among them once it holds the app's identity; that process is then this one's to
    // wait for. Else the child is born in guest-init's PID namespace, where no app can trace it.
    let apps_pid = if app_confine::pidns::apps_apart(&plan) {
        Some(apps_pid_ns(pid)?)
    } else {
        None
    };
    let mut nss = Vec::new();
    if apps_pid.is_none() {
        let f = File::open(format!("/proc/{pid}/ns/pid"))
            .with_context(|| format!("open the pid namespace of pid {pid}"))?;
        nss.push(("pid", CloneFlags::CLONE_NEWPID, f));
    }
    for (name, flag) in NAMESPACES {
        let f = File::open(format!("/proc/{pid}/ns/{name}"))
            .with_context(|| format!("open the {name} namespace of pid {pid}"))?;
        nss.push((name, flag, f));
    }
    for (name, flag, f) in &nss {
        setns(f, *flag).with_context(|| format!("join the {name} namespace"))?;
    }
    drop(nss);
    // SAFETY: PR_SET_CHILD_SUBREAPER with an integer argument, on this process.
    if apps_pid.is_some() && unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("become a subreaper");
    }
    // Where the hatched command's pid comes back.
    let report = match apps_pid {
        Some(_) => Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?),
        None => None,
    };
    // SAFETY: stage1-ns is single-threaded; the child only confines itself and execs.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        ForkResult::Child => {
            let wr = report.map(|(rd, wr)| {
                drop(rd);
                wr
            });
            let hatch = apps_pid.as_ref().zip(wr.as_ref()).map(|(ns, wr)| Hatch {
                apps_ns: ns,
                report: wr.as_raw_fd(),
                terminal: stdio.is_terminal(),
            });
            let (code, why) = match stdio.install(hatch.is_none()) {
                Ok(()) => child(app, &command, userns.map(|(hs, _)| hs), hatch),
                Err(e) => (STAGE1_FAILED, format!("the command's stdio: {e}")),
            };
            eprintln!("{}: {why}", stage1_common::log::prog());
            // SAFETY: _exit after fork is always safe.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(apps_pid);
            if let Some((hs, range)) = userns {
                if let Err(e) = hs.parent(proc_dir.as_fd(), child, range) {
                    eprintln!("{}: {e}", stage1_common::log::prog());
                }
            }
            // Until the command's exec (or the child's failure): its pid, if it was hatched.
            let command = match report {
                Some((rd, wr)) => {
                    drop(wr);
                    let mut bytes = Vec::new();
                    let _ = std::io::Read::read_to_end(&mut File::from(rd), &mut bytes);
                    app_confine::pidns::adopt(child, &bytes).0
                }
                None => child,
            };
            match stdio.relay(command)? {
                WaitStatus::Exited(_, c) => Ok(c),
                WaitStatus::Signaled(_, s, _) => Ok(SIGNAL_BASE + s as i32),
                other => bail!("the command ended oddly: {other:?}"),
            }
        }
    }
}

/// In the forked child, inside the pod's namespaces with guest-init's root: the shared
/// confinement ([`app_confine::enter::confine_and_exec`]; no cgroup join here: the parent
/// joined the app's cgroups before the fork). Returns only on failure.
fn child(
    app: &AppPlan,
    command: &Command,
    userns: Option<Handshake>,
    hatch: Option<Hatch<'_>>,
) -> (i32, String) {
    let spec = EnterSpec {
        app,
        rootfs: guest_app_rootfs(&app.name),
        cgroup_join: Vec::new(),
        keep_fd: None,
        hatch,
    };
    confine_and_exec(&spec, command, userns)
}
