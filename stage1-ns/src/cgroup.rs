//! The pod's cgroups on the host. `run` creates one cgroup per hierarchy it uses (cgroup v1:
//! `memory` and `cpu`; cgroup v2: the unified hierarchy) below stage1-ns's own cgroup, named
//! `rkt-<uuid>`, moves guest-init into it and bind-mounts it at `/rkt/cgroup/<name>` in the
//! stage1 root, where guest-init creates one sub-cgroup per app with limits. The created host
//! directories are listed in the pod directory's [`CGROUPS_FILE`] for `gc`.
//!
//! How the child that becomes guest-init gets in is part of each cgroup's plan ([`Join`]):
//! moving a whole process (a `cgroup.procs` write) takes the kernel's global threadgroup lock,
//! whose first writer after a quiet spell waits for an RCU grace period (9-12 ms measured here on
//! cgroup v1); a single thread moving itself does not take it. So on cgroup v1 the child, still
//! single-threaded, moves itself first thing by writing `0` to each cgroup's `tasks` file
//! ([`join_self`], 0.1-0.2 ms). A cgroup v2 domain cgroup takes whole processes only: there the
//! launcher writes the child's PID ([`join`]) while the child builds the namespaces, so that the
//! grace period overlaps that work. Either way no app starts before both are done (the
//! launcher sends the start byte afterwards, and guest-init forks nothing before that byte).

use std::io;
use std::path::{Path, PathBuf};

use app_confine::cgroup::{V1_JOIN, V2_JOIN};

/// File in the pod directory listing the host cgroup directories `run` created, one per line.
pub const CGROUPS_FILE: &str = "stage1-ns-cgroups";
/// Root of the cgroup filesystems on the host.
pub const HOST_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Sub-cgroup of a v2 pod cgroup that holds guest-init (cgroup v2 forbids processes in inner
/// nodes that delegate controllers; `_` cannot start an app name, so it never collides).
pub const V2_INIT_CGROUP: &str = "_stage1";
/// cgroup v1 controllers the pod uses.
const V1_CONTROLLERS: [&str; 2] = ["memory", "cpu"];
/// Times `gc` retries removing a busy cgroup.
const RMDIR_RETRIES: u32 = 20;
/// Pause between those retries, in milliseconds.
const RMDIR_RETRY_MS: u64 = 50;

/// How the child that becomes guest-init joins a pod cgroup (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Join {
    /// cgroup v1: the child writes `0` to this `tasks` file itself ([`join_self`]).
    SelfThread(PathBuf),
    /// cgroup v2: the launcher writes the child's PID to this `cgroup.procs` file ([`join`]).
    ByLauncher(PathBuf),
}

/// One pod cgroup on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    /// Directory name under `/rkt/cgroup` in the stage1 root (`memory`, `cpu`, `unified`).
    pub name: String,
    /// The pod's cgroup directory on the host (bind source).
    pub dir: PathBuf,
    /// How guest-init joins it.
    pub join: Join,
}

/// Computes the pod cgroups from `/proc/self/cgroup` (pure).
pub fn plan(proc_self_cgroup: &str, v2: bool, root: &Path, uuid: &str) -> Vec<PodCgroup> {
    let leaf = format!("rkt-{uuid}");
    let mut out = Vec::new();
    for line in proc_self_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if v2 {
            if ctrls.is_empty() {
                let dir = root.join(rel).join(&leaf);
                let join = Join::ByLauncher(dir.join(V2_INIT_CGROUP).join(V2_JOIN));
                out.push(PodCgroup {
                    name: "unified".into(),
                    dir,
                    join,
                });
            }
            continue;
        }
        for c in ctrls.split(',') {
            if V1_CONTROLLERS.contains(&c) {
                let dir = root.join(c).join(rel).join(&leaf);
                let join = Join::SelfThread(dir.join(V1_JOIN));
                out.push(PodCgroup {
                    name: c.to_string(),
                    dir,
                    join,
                });
            }
        }
    }
    out
}

/// Whether the host's cgroup root is a cgroup v2 filesystem.
pub fn host_is_v2() -> bool {
    nix::sys::statfs::statfs(HOST_CGROUP_ROOT)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Creates the pod's cgroups on the host (those whose hierarchy is mounted) and records them
/// in the pod directory. Returns the ones created.
pub fn create(pod_dir: &Path, uuid: &str) -> io::Result<Vec<PodCgroup>> {
    let v2 = host_is_v2();
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    let mut made = Vec::new();
    for cg in plan(&text, v2, Path::new(HOST_CGROUP_ROOT), uuid) {
        let Some(parent) = cg.dir.parent() else {
            continue;
        };
        if !parent.join("cgroup.procs").exists() {
            continue;
        }
        if let Err(e) = std::fs::create_dir(&cg.dir) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                log::warn!("cannot create cgroup {}: {e}", cg.dir.display());
                continue;
            }
        }
        if v2 {
            let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+memory +cpu");
            let _ = std::fs::create_dir(cg.dir.join(V2_INIT_CGROUP));
            let _ = std::fs::write(cg.dir.join("cgroup.subtree_control"), "+memory +cpu");
        }
        made.push(cg);
    }
    let list: String = made
        .iter()
        .map(|c| format!("{}\n", c.dir.display()))
        .collect();
    std::fs::write(pod_dir.join(CGROUPS_FILE), list)?;
    Ok(made)
}

/// Launcher side: moves process `pid` (and its threads) into every pod cgroup joined
/// [`Join::ByLauncher`]. On failure, the file that refused it and why.
pub fn join(cgroups: &[PodCgroup], pid: i32) -> Result<(), (PathBuf, io::Error)> {
    let text = pid.to_string();
    for cg in cgroups {
        if let Join::ByLauncher(f) = &cg.join {
            std::fs::write(f, &text).map_err(|e| (f.clone(), e))?;
        }
    }
    Ok(())
}

/// Child side: moves the calling thread into every pod cgroup joined [`Join::SelfThread`]
/// ([`app_confine::cgroup::join_self`]). The caller must be single-threaded (a forked child), so
/// that its one thread is the whole process. On failure, the file that refused it and why.
pub fn join_self(cgroups: &[PodCgroup]) -> Result<(), (PathBuf, io::Error)> {
    let files: Vec<&PathBuf> = cgroups
        .iter()
        .filter_map(|cg| match &cg.join {
            Join::SelfThread(f) => Some(f),
            Join::ByLauncher(_) => None,
        })
        .collect();
    app_confine::cgroup::join_self(&files)
}

/// Removes a cgroup directory and its sub-cgroups, killing leftover processes if needed.
pub fn remove_tree(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path())?;
        }
    }
    for attempt in 0..=RMDIR_RETRIES {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if attempt == RMDIR_RETRIES => return Err(e),
            Err(_) => {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(RMDIR_RETRY_MS));
            }
        }
    }
    Ok(())
}

/// `gc`: removes every cgroup listed in the pod directory.
pub fn gc(pod_dir: &Path) -> io::Result<()> {
    let list = match std::fs::read_to_string(pod_dir.join(CGROUPS_FILE)) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for line in list.lines().filter(|l| !l.trim().is_empty()) {
        let dir = Path::new(line.trim());
        // Only ever touch cgroups we could have created.
        if dir.starts_with(HOST_CGROUP_ROOT)
            && dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("rkt-"))
        {
            remove_tree(dir)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_paths() {
        let text = "9:name=systemd:/\n4:memory:/api/x\n2:cpu,cpuacct:/\n1:pids:/\n0::/\n";
        let v1 = plan(text, false, Path::new("/sys/fs/cgroup"), "u");
        assert_eq!(
            v1,
            vec![
                PodCgroup {
                    name: "memory".into(),
                    dir: "/sys/fs/cgroup/memory/api/x/rkt-u".into(),
                    join: Join::SelfThread("/sys/fs/cgroup/memory/api/x/rkt-u/tasks".into()),
                },
                PodCgroup {
                    name: "cpu".into(),
                    dir: "/sys/fs/cgroup/cpu/rkt-u".into(),
                    join: Join::SelfThread("/sys/fs/cgroup/cpu/rkt-u/tasks".into()),
                },
            ]
        );
        let v2 = plan("0::/user.slice/s\n", true, Path::new("/sys/fs/cgroup"), "u");
        assert_eq!(
            v2,
            vec![PodCgroup {
                name: "unified".into(),
                dir: "/sys/fs/cgroup/user.slice/s/rkt-u".into(),
                join: Join::ByLauncher(
                    "/sys/fs/cgroup/user.slice/s/rkt-u/_stage1/cgroup.procs".into()
                ),
            }]
        );
    }
}
