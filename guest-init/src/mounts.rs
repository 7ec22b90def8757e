//! The filesystem of one app's execution environment as a list of operations (data), computed
//! from the plan and a few queries, then applied through [`Sys`]. Order matters and is fixed:
//! read-only root bind, volumes, `/proc` (with the host-global kernel knobs below it made
//! read-only, [`PROC_READ_ONLY`]), `/sys`, `/dev` and its nodes, then the read-only remount of
//! the root.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use pod_abi::plan::AppPlan;

use crate::sys::Sys;

/// Character devices every app gets: (name, major, minor), mode 0666 (appc ACE).
pub const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Parts of an app's `/proc` that reach the whole (host) kernel rather than the pod, made
/// read-only for the app (each bound onto itself and remounted read-only; skipped when the
/// kernel has no such entry). A root app could otherwise set `kernel/core_pattern` to a
/// program the host kernel runs as root on the next crash, or reboot the host through
/// `sysrq-trigger`.
pub const PROC_READ_ONLY: [&str; 5] = ["sys", "sysrq-trigger", "irq", "bus", "fs"];

/// Parts of an app's `/proc` and `/sys` that tell about the whole (host) kernel and machine
/// rather than the pod, masked for the app (skipped when absent): a file gets the null device
/// bound over it, a directory an empty read-only tmpfs. The OCI runtimes' default masked paths
/// (containerd's list): other tenants' timers and process names (`timer_list`,
/// `sched_debug`), the kernel's keys, its memory image (`kcore`), firmware tables, and the
/// power-capping energy counters whose readings leak what other tenants compute
/// (CVE-2020-8694).
pub const MASKED: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Permission bits of the device nodes.
const DEVICE_MODE: u32 = 0o666;
/// Mode of directories guest-init creates (appc: missing targets are created 0755).
const DIR_MODE: u32 = 0o755;

/// One step of building an app's filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// `mkdir -p` (0755).
    Mkdir(PathBuf),
    /// A filesystem or bind mount.
    Mount {
        /// Source (device name or bind source).
        source: Option<String>,
        /// Target.
        target: PathBuf,
        /// Filesystem type (`None` for binds and remounts).
        fstype: Option<String>,
        /// Flags.
        flags: MsFlags,
        /// Filesystem options.
        data: Option<String>,
    },
    /// A character device; when mknod is not permitted, bind-mount `fallback` instead.
    Device {
        /// Node path.
        path: PathBuf,
        /// Major number.
        major: u64,
        /// Minor number.
        minor: u64,
        /// Existing node to bind if mknod fails with EPERM.
        fallback: PathBuf,
    },
    /// Bind `source` onto a file created at `target` (e.g. the console).
    BindFile {
        /// Existing file or device.
        source: PathBuf,
        /// Target created as an empty file first.
        target: PathBuf,
    },
    /// Bind `path` onto itself and remount it read-only (nosuid, nodev, noexec); skipped when
    /// nothing exists at `path`.
    ReadOnlyIfPresent(PathBuf),
    /// Mask `path` (skipped when nothing exists there): bind `null` over it; if it is a
    /// directory (the bind fails with ENOTDIR), mount an empty read-only tmpfs on it instead.
    MaskIfPresent {
        /// The entry to mask.
        path: PathBuf,
        /// A null device to bind over files.
        null: PathBuf,
    },
    /// No device node on the mount at `path` or any mount below it opens (`MOUNT_ATTR_NODEV`,
    /// set recursively, the other attributes kept).
    NoDevices(PathBuf),
    /// A symlink (skipped if something already exists there).
    Symlink {
        /// Link contents.
        target: String,
        /// Link path.
        link: PathBuf,
    },
}

/// Environment facts the operations depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountCtx {
    /// What `/dev/console` of the app is bound to (the pod's console tty), if any; without one,
    /// `/dev/console` becomes a null device so that it exists.
    pub console: Option<PathBuf>,
    /// Directory with device nodes to bind when mknod is refused (guest-init's own `/dev`).
    pub host_dev: PathBuf,
    /// No device node an app makes may open (the ns flavor, whose kernel and devices are the
    /// host's): the app's root, volumes and `/dev` are `nodev`. A kvm guest's devices are the
    /// VM's own.
    pub nodev: bool,
    /// A procfs mount to bind as the app's `/proc` (the apps' own PID namespace's, in the ns
    /// flavor); `None`: a new procfs (of guest-init's namespace, the kvm flavor).
    pub proc_source: Option<PathBuf>,
}

/// A failed step, with the path for the report.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A target could not be resolved inside the app root.
    #[error("resolve {path} in app root")]
    Resolve {
        /// Path inside the app.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// An operation failed.
    #[error("{op}")]
    Apply {
        /// The operation, rendered.
        op: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

fn mnt(source: &str, target: PathBuf, fstype: &str, flags: MsFlags, data: &str) -> MountOp {
    MountOp::Mount {
        source: Some(source.to_string()),
        target,
        fstype: Some(fstype.to_string()),
        flags,
        data: if data.is_empty() {
            None
        } else {
            Some(data.to_string())
        },
    }
}

fn bind(path: &Path, recursive: bool) -> MountOp {
    let mut flags = MsFlags::MS_BIND;
    if recursive {
        flags |= MsFlags::MS_REC;
    }
    MountOp::Mount {
        source: Some(path.display().to_string()),
        target: path.to_path_buf(),
        fstype: None,
        flags,
        data: None,
    }
}

fn remount_ro(path: &Path) -> MountOp {
    MountOp::Mount {
        source: None,
        target: path.to_path_buf(),
        fstype: None,
        flags: MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        data: None,
    }
}

/// Computes the operations that build `app`'s environment in `rootfs` (a path in guest-init's
/// view, e.g. `/opt/stage2/<app>/rootfs`).
pub fn plan_app_mounts(
    sys: &dyn Sys,
    app: &AppPlan,
    rootfs: &Path,
    ctx: &MountCtx,
) -> Result<Vec<MountOp>, MountError> {
    let resolve = |p: &str| {
        sys.resolve(rootfs, p).map_err(|e| MountError::Resolve {
            path: p.to_string(),
            source: e,
        })
    };
    let mut ops = Vec::new();
    if app.read_only_rootfs {
        ops.push(bind(rootfs, true));
    }
    for m in &app.mounts {
        let t = resolve(&m.target)?;
        ops.push(MountOp::Mkdir(t.clone()));
        if !sys.is_mount_point(&t) {
            ops.push(bind(&t, true));
        }
        if m.read_only {
            ops.push(remount_ro(&t));
        }
    }
    // No device node the app makes opens anywhere it can write (a root app holds
    // `CAP_MKNOD`, and on an ns host a node of the host's disk would be the host): the root and
    // the volumes below it are `nodev`, as is `/dev`, where the usual nodes are bound from
    // guest-init's own `/dev` instead of made.
    // MS_NODEV where the flavor asks for it (the ns flavor: `MountCtx::nodev`), else nothing.
    let nodev = if ctx.nodev {
        MsFlags::MS_NODEV
    } else {
        MsFlags::empty()
    };
    if ctx.nodev {
        if !app.read_only_rootfs && !sys.is_mount_point(rootfs) {
            // Recursive: the volumes `rkt app add` attached below it come along.
            ops.push(bind(rootfs, true));
        }
        ops.push(MountOp::NoDevices(rootfs.to_path_buf()));
    }
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc_ = resolve("/proc")?;
    ops.push(MountOp::Mkdir(proc_.clone()));
    match &ctx.proc_source {
        Some(src) => {
            ops.push(MountOp::Mount {
                source: Some(src.display().to_string()),
                target: proc_.clone(),
                fstype: None,
                flags: MsFlags::MS_BIND,
                data: None,
            });
            ops.push(MountOp::Mount {
                source: None,
                target: proc_.clone(),
                fstype: None,
                flags: MsFlags::MS_BIND | MsFlags::MS_REMOUNT | nosuid_nodev_noexec,
                data: None,
            });
        }
        None => ops.push(mnt("proc", proc_.clone(), "proc", nosuid_nodev_noexec, "")),
    }
    if !app.insecure_paths {
        for p in PROC_READ_ONLY {
            ops.push(MountOp::ReadOnlyIfPresent(proc_.join(p)));
        }
    }
    let sys_ = resolve("/sys")?;
    ops.push(MountOp::Mkdir(sys_.clone()));
    ops.push(mnt(
        "sysfs",
        sys_.clone(),
        "sysfs",
        nosuid_nodev_noexec | MsFlags::MS_RDONLY,
        "",
    ));
    if !app.insecure_paths {
        for p in MASKED {
            // Below the app's own /proc and /sys, which the app cannot replace with links.
            let path = match (p.strip_prefix("/proc/"), p.strip_prefix("/sys/")) {
                (Some(r), _) => proc_.join(r),
                (_, Some(r)) => sys_.join(r),
                _ => continue,
            };
            ops.push(MountOp::MaskIfPresent {
                path,
                null: ctx.host_dev.join("null"),
            });
        }
    }
    let dev = resolve("/dev")?;
    ops.push(MountOp::Mkdir(dev.clone()));
    ops.push(mnt(
        "tmpfs",
        dev.clone(),
        "tmpfs",
        MsFlags::MS_NOSUID | nodev | MsFlags::MS_STRICTATIME,
        "mode=755,size=65536k",
    ));
    for (name, major, minor) in DEVICES {
        ops.push(MountOp::Device {
            path: dev.join(name),
            major,
            minor,
            fallback: ctx.host_dev.join(name),
        });
    }
    match &ctx.console {
        Some(c) => ops.push(MountOp::BindFile {
            source: c.clone(),
            target: dev.join("console"),
        }),
        None => ops.push(MountOp::Device {
            path: dev.join("console"),
            major: 1,
            minor: 3,
            fallback: ctx.host_dev.join("null"),
        }),
    }
    ops.push(MountOp::Mkdir(dev.join("pts")));
    ops.push(mnt(
        "devpts",
        dev.join("pts"),
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620",
    ));
    ops.push(MountOp::Symlink {
        target: "pts/ptmx".into(),
        link: dev.join("ptmx"),
    });
    ops.push(MountOp::Mkdir(dev.join("shm")));
    ops.push(mnt(
        "shm",
        dev.join("shm"),
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        "mode=1777,size=65536k",
    ));
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ops.push(MountOp::Symlink {
            target: target.into(),
            link: dev.join(link),
        });
    }
    if app.read_only_rootfs {
        // A remount sets the mount's flags whole: nodev again.
        ops.push(MountOp::Mount {
            source: None,
            target: rootfs.to_path_buf(),
            fstype: None,
            flags: MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | nodev,
            data: None,
        });
    }
    Ok(ops)
}

/// Applies the operations in order; stops at the first failure.
pub fn apply(sys: &dyn Sys, ops: &[MountOp]) -> Result<(), MountError> {
    for op in ops {
        apply_one(sys, op).map_err(|e| MountError::Apply {
            op: describe(op),
            source: e,
        })?;
    }
    Ok(())
}

fn apply_one(sys: &dyn Sys, op: &MountOp) -> io::Result<()> {
    match op {
        MountOp::Mkdir(p) => sys.mkdir_all(p, DIR_MODE),
        MountOp::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => sys.mount(
            source.as_deref(),
            target,
            fstype.as_deref(),
            *flags,
            data.as_deref(),
        ),
        MountOp::Device {
            path,
            major,
            minor,
            fallback,
        } => {
            // The app's /dev is nodev: a node opens there only as a bind of one on a mount
            // that allows devices (guest-init's /dev); mknod is the last resort.
            if sys.exists(fallback) {
                sys.touch(path)?;
                let src = fallback.display().to_string();
                sys.mount(Some(&src), path, None, MsFlags::MS_BIND, None)
            } else {
                sys.mknod_char(path, *major, *minor, DEVICE_MODE)
            }
        }
        MountOp::BindFile { source, target } => {
            sys.touch(target)?;
            let src = source.display().to_string();
            sys.mount(Some(&src), target, None, MsFlags::MS_BIND, None)
        }
        MountOp::ReadOnlyIfPresent(path) => {
            if !sys.exists(path) {
                return Ok(());
            }
            let src = path.display().to_string();
            sys.mount(
                Some(&src),
                path,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            let ro = MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC;
            sys.mount(None, path, None, ro, None)
        }
        MountOp::NoDevices(path) => sys.set_nodev_recursive(path),
        MountOp::MaskIfPresent { path, null } => {
            if !sys.exists(path) {
                return Ok(());
            }
            let src = null.display().to_string();
            match sys.mount(Some(&src), path, None, MsFlags::MS_BIND, None) {
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => sys.mount(
                    Some("tmpfs"),
                    path,
                    Some("tmpfs"),
                    MsFlags::MS_RDONLY
                        | MsFlags::MS_NOSUID
                        | MsFlags::MS_NODEV
                        | MsFlags::MS_NOEXEC,
                    Some("size=0,mode=555"),
                ),
                r => r,
            }
        }
        MountOp::Symlink { target, link } => {
            if sys.exists(link) {
                return Ok(());
            }
            sys.symlink(target, link)
        }
    }
}

/// One line describing an operation (for error reports).
pub fn describe(op: &MountOp) -> String {
    match op {
        MountOp::Mkdir(p) => format!("mkdir {}", p.display()),
        MountOp::Mount {
            source,
            target,
            fstype,
            flags,
            ..
        } => format!(
            "mount {} on {} ({}, {:?})",
            source.as_deref().unwrap_or("none"),
            target.display(),
            fstype.as_deref().unwrap_or("bind"),
            flags
        ),
        MountOp::Device {
            path, major, minor, ..
        } => {
            format!("mknod {} c {major} {minor}", path.display())
        }
        MountOp::BindFile { source, target } => {
            format!("bind {} on {}", source.display(), target.display())
        }
        MountOp::ReadOnlyIfPresent(p) => format!("read-only {}", p.display()),
        MountOp::MaskIfPresent { path, .. } => format!("mask {}", path.display()),
        MountOp::NoDevices(p) => format!("nodev {} and below", p.display()),
        MountOp::Symlink { target, link } => format!("symlink {} -> {target}", link.display()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sys::FakeSys;
    use pod_abi::plan::MountPlan;

    pub(crate) fn app(name: &str) -> AppPlan {
        AppPlan {
            name: name.into(),
            image_id: "sha512-x".into(),
            exec: vec!["/bin/true".into()],
            env: vec![],
            user: "0".into(),
            group: "0".into(),
            supplementary_gids: vec![],
            working_directory: "/".into(),
            pre_start: None,
            post_stop: None,
            read_only_rootfs: false,
            mounts: vec![],
            capabilities: vec![],
            capabilities_retained: false,
            no_new_privileges: false,
            insecure_paths: false,
            memory_limit: None,
            cpu_limit_millis: None,
            cpu_shares: None,
            oom_score_adj: None,
            ignored_isolators: vec![],
            seccomp: None,
            stdio: Default::default(),
        }
    }

    fn ctx() -> MountCtx {
        MountCtx {
            console: Some("/proc/self/fd/1".into()),
            host_dev: "/dev".into(),
            nodev: true,
            proc_source: None,
        }
    }

    #[test]
    fn volumes_bound_unless_mount_point_and_ro_remounted() {
        let sys = FakeSys {
            mount_points: vec!["/r/db".into()],
            ..Default::default()
        };
        let mut a = app("a");
        a.mounts = vec![
            MountPlan {
                volume: "db".into(),
                target: "/db".into(),
                read_only: false,
            },
            MountPlan {
                volume: "ro".into(),
                target: "/ro".into(),
                read_only: true,
            },
        ];
        let ops = plan_app_mounts(&sys, &a, Path::new("/r"), &ctx()).unwrap();
        let binds: Vec<_> = ops
            .iter()
            .filter_map(|o| match o {
                MountOp::Mount {
                    target,
                    fstype: None,
                    flags,
                    ..
                } => Some((target.clone(), *flags)),
                _ => None,
            })
            .collect();
        assert_eq!(
            binds,
            vec![
                ("/r/ro".into(), MsFlags::MS_BIND | MsFlags::MS_REC),
                (
                    "/r/ro".into(),
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY
                ),
                // The root, not a mount point here, bound onto itself for its nodev.
                ("/r".into(), MsFlags::MS_BIND | MsFlags::MS_REC),
            ]
        );
    }

    #[test]
    fn nothing_the_app_can_write_holds_a_device_that_opens() {
        let sys = FakeSys {
            existing: vec!["/dev/null".into()],
            ..Default::default()
        };
        let ops = plan_app_mounts(&sys, &app("a"), Path::new("/r"), &ctx()).unwrap();
        let nodev = ops
            .iter()
            .position(|o| *o == MountOp::NoDevices("/r".into()))
            .expect("the root and its volumes nodev");
        let proc_at = ops
            .iter()
            .position(|o| matches!(o, MountOp::Mount { fstype: Some(t), .. } if t == "proc"))
            .unwrap();
        assert!(
            nodev < proc_at,
            "before /proc, /sys and /dev are mounted: {ops:#?}"
        );
        assert!(
            ops.iter().any(
                |o| matches!(o, MountOp::Mount { fstype: Some(t), flags, .. }
                if t == "tmpfs" && flags.contains(MsFlags::MS_NODEV))
            ),
            "/dev is nodev: {ops:#?}"
        );
        apply(&sys, &ops).unwrap();
        let calls = sys.calls.borrow();
        assert!(calls.contains(&"nodev -R /r".to_string()), "{calls:#?}");
        // mknod would work here, but its node would not open on a nodev /dev: bound instead.
        assert!(
            calls.contains(&"mount /dev/null /r/dev/null - MsFlags(MS_BIND) -".to_string()),
            "{calls:#?}"
        );
        assert!(
            !calls.iter().any(|c| c.starts_with("mknod /r/dev/null")),
            "{calls:#?}"
        );
        drop(calls);
        // A kvm guest's devices are the VM's own: nothing nodev.
        let kvm = MountCtx {
            nodev: false,
            ..ctx()
        };
        let ops = plan_app_mounts(&sys, &app("a"), Path::new("/r"), &kvm).unwrap();
        assert!(
            !ops.iter().any(|o| matches!(o, MountOp::NoDevices(_))),
            "{ops:#?}"
        );
        assert!(
            !ops.iter().any(|o| matches!(o, MountOp::Mount { flags, .. }
                if flags.contains(MsFlags::MS_NODEV) && flags.contains(MsFlags::MS_STRICTATIME))),
            "{ops:#?}"
        );
    }

    #[test]
    fn proc_is_the_apps_own_procfs_when_given() {
        let sys = FakeSys::default();
        let bound = MountCtx {
            proc_source: Some("/rkt/apps-proc".into()),
            ..ctx()
        };
        let ops = plan_app_mounts(&sys, &app("a"), Path::new("/r"), &bound).unwrap();
        assert!(
            !ops.iter()
                .any(|o| matches!(o, MountOp::Mount { fstype: Some(t), .. } if t == "proc")),
            "no procfs of guest-init's namespace: {ops:#?}"
        );
        let at = ops
            .iter()
            .position(|o| {
                matches!(o, MountOp::Mount { source: Some(s), target, flags, .. }
                if s == "/rkt/apps-proc" && target == Path::new("/r/proc") && *flags == MsFlags::MS_BIND)
            })
            .unwrap_or_else(|| panic!("/proc bound from the apps' procfs: {ops:#?}"));
        assert_eq!(
            ops.get(at + 1),
            Some(&MountOp::Mount {
                source: None,
                target: "/r/proc".into(),
                fstype: None,
                flags: MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                data: None,
            })
        );
        let knob = ops.iter().position(
            |o| matches!(o, MountOp::ReadOnlyIfPresent(p) if p.starts_with("/r/proc/sys")),
        );
        assert!(
            knob.is_some_and(|k| k > at + 1),
            "knobs made read-only on the bound /proc: {ops:#?}"
        );
    }

    #[test]
    fn read_only_root_is_bound_first_and_remounted_last() {
        let sys = FakeSys::default();
        let mut a = app("a");
        a.read_only_rootfs = true;
        let ops = plan_app_mounts(&sys, &a, Path::new("/r"), &ctx()).unwrap();
        assert_eq!(ops.first(), Some(&bind(Path::new("/r"), true)));
        assert_eq!(
            ops.last(),
            Some(&MountOp::Mount {
                source: None,
                target: "/r".into(),
                fstype: None,
                flags: MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NODEV,
                data: None,
            }),
            "remounted read-only, and nodev still"
        );
    }

    #[test]
    fn dev_has_required_nodes_and_fallback_binds() {
        let sys = FakeSys {
            mknod_errno: Some(libc::EPERM),
            existing: DEVICES
                .iter()
                .map(|d| Path::new("/dev").join(d.0))
                .collect(),
            ..Default::default()
        };
        let ops = plan_app_mounts(&sys, &app("a"), Path::new("/r"), &ctx()).unwrap();
        apply(&sys, &ops).unwrap();
        let calls = sys.calls.borrow();
        for (name, _, _) in DEVICES {
            let line = format!("mount /dev/{name} /r/dev/{name} - MsFlags(MS_BIND) -");
            assert!(calls.contains(&line), "{line} missing in {calls:#?}");
        }
        assert!(calls
            .iter()
            .any(|c| c.starts_with("mount devpts /r/dev/pts devpts")
                && c.ends_with("newinstance,ptmxmode=0666,mode=0620")));
        assert!(calls.contains(&"symlink /r/dev/ptmx -> pts/ptmx".to_string()));
        assert!(calls
            .contains(&"mount /proc/self/fd/1 /r/dev/console - MsFlags(MS_BIND) -".to_string()));
        assert!(calls
            .iter()
            .any(|c| c.starts_with("mount shm /r/dev/shm tmpfs")));
    }

    #[test]
    fn host_global_proc_entries_are_read_only_when_present() {
        let sys = FakeSys {
            existing: vec!["/r/proc/sys".into()],
            ..Default::default()
        };
        let ops = plan_app_mounts(&sys, &app("a"), Path::new("/r"), &ctx()).unwrap();
        let proc_at = ops
            .iter()
            .position(|o| matches!(o, MountOp::Mount { fstype: Some(t), .. } if t == "proc"))
            .unwrap();
        assert_eq!(
            ops.get(proc_at + 1),
            Some(&MountOp::ReadOnlyIfPresent("/r/proc/sys".into()))
        );
        apply(&sys, &ops).unwrap();
        let calls = sys.calls.borrow();
        assert!(calls
            .contains(&"mount /r/proc/sys /r/proc/sys - MsFlags(MS_BIND | MS_REC) -".to_string()));
        assert!(calls.iter().any(|c| c.starts_with("mount - /r/proc/sys - ")
            && c.contains("MS_RDONLY")
            && c.contains("MS_REMOUNT")));
        assert!(
            !calls.iter().any(|c| c.contains("/r/proc/sysrq-trigger")),
            "absent entries are skipped: {calls:#?}"
        );
    }

    #[test]
    fn insecure_paths_leaves_proc_writable() {
        let sys = FakeSys {
            existing: vec!["/r/proc/sys".into()],
            ..Default::default()
        };
        let mut a = app("a");
        a.insecure_paths = true;
        let ops = plan_app_mounts(&sys, &a, Path::new("/r"), &ctx()).unwrap();
        assert!(
            !ops.iter()
                .any(|o| matches!(o, MountOp::ReadOnlyIfPresent(_))),
            "{ops:#?}"
        );
    }

    #[test]
    fn host_wide_proc_and_sys_entries_are_masked_when_present() {
        let sys = FakeSys {
            existing: vec!["/r/proc/timer_list".into(), "/r/sys/firmware".into()],
            mount_errno_for: vec![("/r/sys/firmware".into(), libc::ENOTDIR)],
            ..Default::default()
        };
        let ops = plan_app_mounts(&sys, &app("a"), Path::new("/r"), &ctx()).unwrap();
        let masked: Vec<_> = ops
            .iter()
            .filter_map(|o| match o {
                MountOp::MaskIfPresent { path, .. } => Some(path.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(masked.len(), MASKED.len(), "{ops:#?}");
        assert!(masked.contains(&"/r/proc/keys".into()));
        assert!(masked.contains(&"/r/sys/devices/virtual/powercap".into()));
        apply(&sys, &ops).unwrap();
        let calls = sys.calls.borrow();
        assert!(
            calls.contains(&"mount /dev/null /r/proc/timer_list - MsFlags(MS_BIND) -".to_string()),
            "{calls:#?}"
        );
        assert!(
            calls
                .iter()
                .any(|c| c.starts_with("mount tmpfs /r/sys/firmware tmpfs")
                    && c.contains("MS_RDONLY")),
            "a directory gets an empty read-only tmpfs: {calls:#?}"
        );
        assert!(
            !calls.iter().any(|c| c.contains("/r/proc/keys")),
            "absent entries are skipped: {calls:#?}"
        );
        let mut a = app("a");
        a.insecure_paths = true;
        let ops = plan_app_mounts(&sys, &a, Path::new("/r"), &ctx()).unwrap();
        assert!(
            !ops.iter()
                .any(|o| matches!(o, MountOp::MaskIfPresent { .. })),
            "--insecure-options=paths masks nothing: {ops:#?}"
        );
    }

    #[test]
    fn mknod_failure_without_fallback_is_reported() {
        let sys = FakeSys {
            mknod_errno: Some(libc::EPERM),
            ..Default::default()
        };
        let ops = plan_app_mounts(&sys, &app("a"), Path::new("/r"), &ctx()).unwrap();
        let e = apply(&sys, &ops).unwrap_err();
        assert_eq!(e.to_string(), "mknod /r/dev/null c 1 3");
    }
}
