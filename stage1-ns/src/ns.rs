//! Building the pod's namespaces inside the child that becomes guest-init: the pod's network
//! namespace (joined when `crate::net` made one, new with `lo` up for `--net=none`, the host's
//! for `--net=host`), new mount, UTS and IPC namespaces (one `unshare` with the new network
//! namespace), hostname, `/` made rprivate, the stage1 root bound onto itself, the pod cgroups
//! guest-init makes the apps' in bound at `/rkt/cgroup/<name>`, then `pivot_root` into the
//! stage1 root. This process is in the pod cgroups already, or the launcher moves it meanwhile
//! (`crate::cgroup`). Errors carry the step that failed.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use stage1_common::cgroup::PodCgroup;

/// A failed step of the namespace setup.
#[derive(Debug, thiserror::Error)]
#[error("{step}")]
pub struct NsError {
    /// What was being done.
    pub step: String,
    /// Cause.
    #[source]
    pub source: nix::Error,
}

fn at(step: impl Into<String>) -> impl FnOnce(nix::Error) -> NsError {
    let step = step.into();
    move |source| NsError { step, source }
}

/// The pod's network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodNet {
    /// The host's (`--net=host`).
    Host,
    /// A new one with only `lo` (`--net=none`).
    New,
    /// The one stage1 made with the pod's networks (an open `/var/run/netns/rkt-<uuid>`).
    Join(std::os::fd::RawFd),
}

/// Namespace settings.
#[derive(Debug, Clone)]
pub struct NsConfig<'a> {
    /// Absolute path of `stage1/rootfs`.
    pub rootfs: &'a Path,
    /// Hostname of the pod.
    pub hostname: &'a str,
    /// The pod's network namespace.
    pub net: PodNet,
    /// Pod cgroups to bind (and, on cgroup v1, join first: [`stage1_common::cgroup::join_self`]).
    pub cgroups: &'a [PodCgroup],
    /// Stay in the host's IPC namespace (`--ipc=parent`) instead of a new one.
    pub host_ipc: bool,
    /// `--private-users`: app root is not root of the pod's network namespace (owned by the
    /// host's user namespace), so a pod network of its own lets every ID bind ports below
    /// 1024 (`net.ipv4.ip_unprivileged_port_start=0`, a per-namespace setting).
    pub private_users: bool,
}

/// Runs in the forked child (PID 1 of the new PID namespace): builds everything and leaves the
/// process inside the stage1 root with cwd `/`.
pub fn enter_pod(cfg: &NsConfig<'_>) -> Result<(), NsError> {
    let mut flags = CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS;
    if !cfg.host_ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if let PodNet::Join(fd) = cfg.net {
        // SAFETY: `fd` is the open namespace file the parent passed, open across the fork.
        let ns = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        nix::sched::setns(ns, CloneFlags::CLONE_NEWNET).map_err(at("join the pod's netns"))?;
    }
    if cfg.net == PodNet::New {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    // One call: each namespace unshared separately costs the kernel's setup again.
    unshare(flags).map_err(at("unshare net/mount/uts/ipc namespaces"))?;
    pod_abi::trace::phase("stage1-ns", "unshared");
    if cfg.net == PodNet::New {
        cni::netns::loopback_up().map_err(at("bring up lo"))?;
    }
    if cfg.private_users && cfg.net != PodNet::Host {
        let knob = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
        std::fs::write(knob, b"0").map_err(|e| NsError {
            step: format!("write {knob}"),
            source: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
    }
    nix::unistd::sethostname(cfg.hostname).map_err(at(format!("sethostname {}", cfg.hostname)))?;
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(at("make / rprivate"))?;
    mount(
        Some(cfg.rootfs),
        cfg.rootfs,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .map_err(at(format!("bind {} onto itself", cfg.rootfs.display())))?;
    populate_dev(cfg.rootfs)?;
    if !cfg.cgroups.is_empty() {
        let base = cfg.rootfs.join("rkt/cgroup");
        let _ = std::fs::create_dir_all(&base);
        mount(
            Some("tmpfs"),
            &base,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=755"),
        )
        .map_err(at(format!("mount tmpfs on {}", base.display())))?;
        for cg in cfg.cgroups.iter().filter(|c| c.for_apps()) {
            let t = base.join(&cg.name);
            let _ = std::fs::create_dir_all(&t);
            mount(Some(&cg.dir), &t, none, MsFlags::MS_BIND, none)
                .map_err(at(format!("bind cgroup {}", cg.dir.display())))?;
        }
    }
    nix::unistd::chdir(cfg.rootfs).map_err(at("chdir to the stage1 root"))?;
    nix::unistd::pivot_root(".", ".").map_err(at("pivot_root into the stage1 root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(at("detach the old root"))?;
    nix::unistd::chdir("/").map_err(at("chdir /"))?;
    Ok(())
}

/// Host device nodes bound into the stage1 root's `/dev` (guest-init binds them into apps when
/// it may not mknod).
const HOST_DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

fn bind_file(source: &Path, target: &Path) -> Result<(), NsError> {
    let none: Option<&str> = None;
    std::fs::write(target, b"").map_err(|e| NsError {
        step: format!("create {}", target.display()),
        source: nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })?;
    mount(Some(source), target, none, MsFlags::MS_BIND, none).map_err(at(format!(
        "bind {} on {}",
        source.display(),
        target.display()
    )))
}

/// Mounts a tmpfs on the stage1 root's `/dev` with the host's basic device nodes and, when the
/// pod has a terminal (the interactive pty or the user's tty on fd 0-2), `/dev/console` bound
/// to it: guest-init binds that into each app, and a bind source must live in the pod's mount
/// namespace, which the host's `/dev/pts` does not after `pivot_root`.
fn populate_dev(rootfs: &Path) -> Result<(), NsError> {
    let dev = rootfs.join("dev");
    let _ = std::fs::create_dir_all(&dev);
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755"),
    )
    .map_err(at(format!("mount tmpfs on {}", dev.display())))?;
    for name in HOST_DEVICES {
        let src = Path::new("/dev").join(name);
        if src.exists() {
            bind_file(&src, &dev.join(name))?;
        }
    }
    // Bind by name: a bind source must be a mount of this (copied) namespace, which the fd's
    // own mount, from the original namespace, is not.
    let tty = (0..=2)
        .filter(|fd| nix::unistd::isatty(*fd).unwrap_or(false))
        .find_map(|fd| {
            // SAFETY: fds 0-2 are open for the duration of this call (isatty succeeded).
            let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            nix::unistd::ttyname(b).ok()
        });
    if let Some(name) = tty {
        if let Err(e) = bind_file(&name, &dev.join("console")) {
            log::warn!(
                "no /dev/console for the pod: {}: {}",
                e.step,
                e.source.desc()
            );
        }
    }
    Ok(())
}
