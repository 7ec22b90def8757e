//! The `enter` entrypoint: joins the ipc, uts, net, pid and mount namespaces of the pod's
//! guest-init (`--pid`), chroots into `/opt/stage2/<app>/rootfs`, sets the app's environment
//! from the launch plan, forks (to be inside the PID namespace) and runs the command
//! (default `/bin/sh`), returning its exit code.

use std::ffi::CString;
use std::fs::File;

use anyhow::{bail, Context};
use nix::sched::{setns, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::ForkResult;
use pod_abi::plan::{Plan, DEFAULT_PATH};
use pod_abi::stage1::EnterArgs;
use pod_abi::status::SIGNAL_BASE;

/// Default command when none is given.
pub const DEFAULT_CMD: &str = "/bin/sh";

/// Runs `enter`.
pub fn enter(args: &EnterArgs) -> anyhow::Result<i32> {
    let proc_dir = format!("/proc/{}", args.pid);
    let plan = Plan::read_beneath(std::path::Path::new(&format!("{proc_dir}/root")))
        .with_context(|| format!("read the plan of pid {}", args.pid))?;
    let app = if args.app.is_empty() {
        match plan.apps.as_slice() {
            [one] => one,
            _ => bail!("the pod has several apps; pass --appname"),
        }
    } else {
        plan.apps
            .iter()
            .find(|a| a.name == args.app)
            .with_context(|| format!("no app {:?} in the pod", args.app))?
    };
    let mut nss = Vec::new();
    for (name, flag) in [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let f = File::open(format!("{proc_dir}/ns/{name}"))
            .with_context(|| format!("open {name} namespace"))?;
        nss.push((name, flag, f));
    }
    let root = File::open(format!("{proc_dir}/root")).context("open the pod's root")?;
    for (name, flag, f) in &nss {
        setns(f, *flag).with_context(|| format!("join the {name} namespace"))?;
    }
    nix::unistd::fchdir(std::os::fd::AsRawFd::as_raw_fd(&root))
        .context("fchdir to the pod root")?;
    let app_root = format!("opt/stage2/{}/rootfs", app.name);
    nix::unistd::chroot(app_root.as_str()).with_context(|| format!("chroot {app_root}"))?;
    let wd = if app.working_directory.is_empty() {
        "/"
    } else {
        app.working_directory.as_str()
    };
    if nix::unistd::chdir(wd).is_err() {
        nix::unistd::chdir("/").context("chdir /")?;
    }
    let cmd = if args.cmd.is_empty() {
        vec![DEFAULT_CMD.to_string()]
    } else {
        args.cmd.clone()
    };
    let argv: Vec<CString> = cmd
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()?;
    let env: Vec<CString> = app
        .env
        .iter()
        .map(|(k, v)| CString::new(format!("{k}={v}")))
        .collect::<Result<_, _>>()?;
    let path = app
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or(DEFAULT_PATH.into());
    // SAFETY: single-threaded; the child only execs.
    match unsafe { nix::unistd::fork() }.context("fork")? {
        ForkResult::Child => {
            let code = exec_search(&argv, &env, &path);
            // SAFETY: _exit after fork is always safe.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, c)) => return Ok(c),
                Ok(WaitStatus::Signaled(_, s, _)) => return Ok(SIGNAL_BASE + s as i32),
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => bail!("wait: {}", e.desc()),
            }
        },
    }
}

/// execve with PATH search; returns the shell-style exit code on failure.
fn exec_search(argv: &[CString], env: &[CString], path: &str) -> i32 {
    let Some(arg0) = argv.first() else { return 127 };
    let name = arg0.to_string_lossy().into_owned();
    let mut candidates = Vec::new();
    if name.contains('/') {
        candidates.push(arg0.clone());
    } else {
        for d in path.split(':').filter(|d| !d.is_empty()) {
            if let Ok(c) = CString::new(format!("{d}/{name}")) {
                candidates.push(c);
            }
        }
    }
    let mut last = nix::errno::Errno::ENOENT;
    for c in &candidates {
        let Err(e) = nix::unistd::execve(c, argv, env);
        if e != nix::errno::Errno::ENOENT {
            last = e;
        }
    }
    eprintln!("stage1-ns enter: exec {name}: {}", last.desc());
    if last == nix::errno::Errno::ENOENT {
        pod_abi::exit::APP_NOT_FOUND
    } else {
        pod_abi::exit::APP_NOT_EXECUTABLE
    }
}
