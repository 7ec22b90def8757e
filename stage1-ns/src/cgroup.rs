//! The pod's cgroups on the host. `run` creates one cgroup per hierarchy it uses (cgroup v1:
//! `memory` and `cpu`; cgroup v2: the unified hierarchy) below stage1-ns's own cgroup, named
//! `rkt-<uuid>`, moves guest-init into it and bind-mounts it at `/rkt/cgroup/<name>` in the
//! stage1 root, where guest-init creates one sub-cgroup per app with limits. The created host
//! directories are listed in the pod directory's [`CGROUPS_FILE`] for `gc`.
//!
//! The move ([`join`]) is done by the launcher, writing the child's PID, while the child builds
//! the namespaces: the first `cgroup.procs` write of a process costs the kernel an RCU grace
//! period (5-15 ms measured on cgroup v1 under load), which this overlaps with the child's own
//! work instead of adding it. No app starts before the launcher has finished it (it sends the
//! start byte afterwards), and guest-init forks nothing before that byte.

use std::io;
use std::path::{Path, PathBuf};

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

/// One pod cgroup on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    /// Directory name under `/rkt/cgroup` in the stage1 root (`memory`, `cpu`, `unified`).
    pub name: String,
    /// The pod's cgroup directory on the host (bind source).
    pub dir: PathBuf,
    /// `cgroup.procs` file guest-init joins.
    pub join: PathBuf,
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
                let join = dir.join(V2_INIT_CGROUP).join("cgroup.procs");
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
                let join = dir.join("cgroup.procs");
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

/// Moves process `pid` (and its threads) into every pod cgroup. On failure, the `cgroup.procs`
/// file that refused it and why.
pub fn join(cgroups: &[PodCgroup], pid: i32) -> Result<(), (PathBuf, io::Error)> {
    let text = pid.to_string();
    for cg in cgroups {
        std::fs::write(&cg.join, &text).map_err(|e| (cg.join.clone(), e))?;
    }
    Ok(())
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
                    join: "/sys/fs/cgroup/memory/api/x/rkt-u/cgroup.procs".into(),
                },
                PodCgroup {
                    name: "cpu".into(),
                    dir: "/sys/fs/cgroup/cpu/rkt-u".into(),
                    join: "/sys/fs/cgroup/cpu/rkt-u/cgroup.procs".into(),
                },
            ]
        );
        let v2 = plan("0::/user.slice/s\n", true, Path::new("/sys/fs/cgroup"), "u");
        assert_eq!(
            v2,
            vec![PodCgroup {
                name: "unified".into(),
                dir: "/sys/fs/cgroup/user.slice/s/rkt-u".into(),
                join: "/sys/fs/cgroup/user.slice/s/rkt-u/_stage1/cgroup.procs".into(),
            }]
        );
    }
}
