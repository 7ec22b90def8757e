//! The pod's cgroups on the host. A stage1's `run` creates one cgroup per hierarchy it uses
//! (cgroup v1: `memory` and `cpu`, and `pids` for an ns pod; cgroup v2: the unified hierarchy)
//! below its own cgroup, named `rkt-<uuid>`, and lists the created directories in the pod
//! directory's [`CGROUPS_FILE`] for `gc`, which removes them ([`gc`]), and for an ns pod's
//! `enter`, whose command joins its app's ([`app_joins`]). Two shapes ([`Shape`]):
//!
//! * ns ([`Shape::Nested`]): stage1-ns moves guest-init into them, sets the pod's task limit
//!   (`pids.max`: a fork bomb in the pod stops there, not at the host's `pid_max`) and
//!   bind-mounts the memory and cpu ones at `/rkt/cgroup/<name>` in the stage1 root
//!   ([`PodCgroup::for_apps`]), where guest-init creates one sub-cgroup per app with the app's
//!   limits; on cgroup v2 guest-init sits in the leaf [`V2_INIT_CGROUP`].
//! * kvm ([`Shape::Leaf`]): the VMM moves itself in, whole ([`join_this_process`]), and the pod
//!   cgroup carries the VM's limits ([`set_limits`]): a guest's vCPUs and device threads
//!   together get no more host CPU and memory than the pod was sized for.
//!
//! How an ns pod's child that becomes guest-init gets in is part of each cgroup's plan ([`Join`]):
//! moving a whole process (a `cgroup.procs` write) takes the kernel's global threadgroup lock,
//! whose first writer after a quiet spell waits for an RCU grace period (9-12 ms measured here on
//! cgroup v1); a single thread moving itself does not take it. So on cgroup v1 the child, still
//! single-threaded, moves itself first thing by writing `0` to each cgroup's `tasks` file
//! ([`join_self`], 0.1-0.2 ms). A cgroup v2 domain cgroup takes whole processes only: there the
//! launcher writes the child's PID ([`join`]) while the child builds the namespaces, so that the
//! grace period overlaps that work. Either way no app starts before both are done (the
//! launcher sends the start byte afterwards, and guest-init forks nothing before that byte).
//! The VMM joins its own cgroups through the same files, writing `0` itself
//! ([`join_this_process`]).

use std::io;
use std::path::{Path, PathBuf};

use app_confine::cgroup::{limit_writes, Limit, PIDS_CONTROLLER, V1_JOIN, V2_JOIN};

/// File in the pod directory listing the host cgroup directories `run` created, one per line.
pub const CGROUPS_FILE: &str = "stage1-cgroups";
/// Root of the cgroup filesystems on the host.
pub const HOST_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Sub-cgroup of a v2 pod cgroup that holds guest-init (its one home is `pod_abi`).
pub use pod_abi::proccgroup::V2_INIT_CGROUP;
/// Controllers a pod of each shape uses: cgroup v1 hierarchies, or those enabled for a cgroup
/// v2 cgroup's children (`cgroup.subtree_control`). `pids` limits an ns pod's tasks on the
/// host; a kvm pod's are the guest's (its VMM's threads are few and fixed).
fn controllers(shape: Shape) -> &'static [&'static str] {
    match shape {
        Shape::Nested => &["memory", "cpu", PIDS_CONTROLLER],
        Shape::Leaf => &["memory", "cpu"],
    }
}
/// Times `gc` retries removing a busy cgroup.
const RMDIR_RETRIES: u32 = 20;
/// Pause between those retries, in milliseconds.
const RMDIR_RETRY_MS: u64 = 50;

/// Who lives in a pod cgroup (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// guest-init and per-app sub-cgroups (ns); on cgroup v2 guest-init in [`V2_INIT_CGROUP`].
    Nested,
    /// One process, no sub-cgroups (kvm: the VMM).
    Leaf,
}

/// How a process joins a pod cgroup (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Join {
    /// cgroup v1: the child writes `0` to this `tasks` file itself ([`join_self`]).
    SelfThread(PathBuf),
    /// cgroup v2: the launcher writes the child's PID to this `cgroup.procs` file ([`join`])
    /// (a [`Shape::Leaf`] process writes `0` to it itself: [`join_this_process`]).
    ByLauncher(PathBuf),
}

/// One pod cgroup on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    /// The hierarchy: `memory`, `cpu` (cgroup v1 controllers) or `unified` (v2); also the
    /// directory name under `/rkt/cgroup` in an ns pod's stage1 root.
    pub name: String,
    /// The pod's cgroup directory on the host (bind source).
    pub dir: PathBuf,
    /// How its process (guest-init, or the VMM) joins it.
    pub join: Join,
}

impl PodCgroup {
    /// Whether this is a cgroup v2 (unified) cgroup.
    pub fn is_v2(&self) -> bool {
        self.name == UNIFIED
    }

    /// Whether `limit` is set on this cgroup: the unified one (v2) holds every limit, a v1
    /// cgroup those of its controller.
    pub fn holds(&self, limit: Limit) -> bool {
        self.is_v2() || self.name == limit.controller()
    }

    /// Whether guest-init makes the apps' sub-cgroups in it (so an ns pod binds it into the
    /// stage1 root): all but the v1 `pids` cgroup, whose one limit is the pod's.
    pub fn for_apps(&self) -> bool {
        self.name != PIDS_CONTROLLER
    }
}

/// [`PodCgroup::name`] of a cgroup v2 pod cgroup.
const UNIFIED: &str = "unified";

/// Computes the pod cgroups from `/proc/self/cgroup` (pure).
pub fn plan(
    proc_self_cgroup: &str,
    v2: bool,
    root: &Path,
    uuid: &str,
    shape: Shape,
) -> Vec<PodCgroup> {
    let leaf = format!("rkt-{uuid}");
    let mut out = Vec::new();
    for entry in pod_abi::proccgroup::entries(proc_self_cgroup) {
        let (ctrls, rel) = (entry.controllers, entry.path.trim_start_matches('/'));
        if v2 {
            if ctrls.is_empty() {
                let dir = root.join(rel).join(&leaf);
                let join = match shape {
                    Shape::Nested => Join::ByLauncher(dir.join(V2_INIT_CGROUP).join(V2_JOIN)),
                    Shape::Leaf => Join::ByLauncher(dir.join(V2_JOIN)),
                };
                out.push(PodCgroup {
                    name: UNIFIED.into(),
                    dir,
                    join,
                });
            }
            continue;
        }
        for c in ctrls.split(',') {
            if controllers(shape).contains(&c) {
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
pub fn create(pod_dir: &Path, uuid: &str, shape: Shape) -> io::Result<Vec<PodCgroup>> {
    let v2 = host_is_v2();
    let text = std::fs::read_to_string("/proc/self/cgroup")?;
    let mut made = Vec::new();
    for cg in plan(&text, v2, Path::new(HOST_CGROUP_ROOT), uuid, shape) {
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
            enable_controllers(parent, shape);
            if shape == Shape::Nested {
                let _ = std::fs::create_dir(cg.dir.join(V2_INIT_CGROUP));
                enable_controllers(&cg.dir, shape);
            }
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

/// cgroup v2: enables the shape's controllers for the children of `dir`: in one write, or,
/// when that fails (a write naming a controller `dir` lacks fails whole: `pids` delegated to no
/// one), one write each, so the others are still enabled.
fn enable_controllers(dir: &Path, shape: Shape) {
    let file = dir.join("cgroup.subtree_control");
    let all: Vec<String> = controllers(shape).iter().map(|c| format!("+{c}")).collect();
    if std::fs::write(&file, all.join(" ")).is_err() {
        for c in all {
            let _ = std::fs::write(&file, c);
        }
    }
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

/// Sets `limits` on the pod cgroups: each limit on the hierarchy of its controller (cgroup v1)
/// or on the unified one (v2). A limit whose hierarchy is not among `cgroups` is not set (the
/// host does not mount it). Every limit is tried; on failure, the first file that refused its
/// limit and why.
pub fn set_limits(cgroups: &[PodCgroup], limits: &[Limit]) -> Result<(), (PathBuf, io::Error)> {
    let mut first_error = None;
    for limit in limits {
        for cg in cgroups.iter().filter(|c| c.holds(*limit)) {
            for (f, v) in limit_writes(&cg.dir, cg.is_v2(), *limit) {
                if let Err(e) = std::fs::write(&f, v) {
                    first_error.get_or_insert((f, e));
                }
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Moves the calling process, with all its threads, into the pod cgroups: through the
/// cgroups' [`Join`] files when it has one thread (see the module docs), else through each
/// cgroup's `cgroup.procs` (the whole thread group, both hierarchies). On failure, the file
/// that refused it and why.
pub fn join_this_process(cgroups: &[PodCgroup]) -> Result<(), (PathBuf, io::Error)> {
    let one_thread = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().eq(["Threads:", "1"]))
        })
        .unwrap_or(false);
    let files: Vec<PathBuf> = cgroups
        .iter()
        .map(|cg| match &cg.join {
            Join::SelfThread(f) | Join::ByLauncher(f) if one_thread => f.clone(),
            _ => cg.dir.join(V2_JOIN),
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

/// The pod cgroups listed in `pod_dir`'s [`CGROUPS_FILE`] (none if it has none), only those
/// `run` could have made: beneath [`HOST_CGROUP_ROOT`], no `..`, named `rkt-...`.
fn listed(pod_dir: &Path) -> io::Result<Vec<PathBuf>> {
    // Bounded, never through a symlink or from a FIFO: a KVM pod's VMM holds the pod
    // directory writable.
    let list = match pod_abi::podfile::read_beneath(
        pod_dir,
        Path::new(CGROUPS_FILE),
        pod_abi::podfile::SMALL_FILE_MAX * 16,
    ) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(io::Error::other(e.to_string())),
    };
    Ok(list
        .lines()
        .map(|l| PathBuf::from(l.trim()))
        .filter(|dir| {
            dir.starts_with(HOST_CGROUP_ROOT)
                && dir.components().all(|c| {
                    matches!(
                        c,
                        std::path::Component::RootDir | std::path::Component::Normal(_)
                    )
                })
                && dir
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("rkt-"))
        })
        .collect())
}

/// `gc`: removes every cgroup listed in the pod directory.
pub fn gc(pod_dir: &Path) -> io::Result<()> {
    for dir in listed(pod_dir)? {
        remove_tree(&dir)?;
    }
    Ok(())
}

/// ns `enter`: the files through which a process joins the cgroups app `app`'s own processes
/// are in, so that a command entered into the app counts against the pod's task limit and the
/// app's own limits: in each pod cgroup, the app's sub-cgroup where guest-init made one (the
/// app has a limit there), else the pod cgroup itself (cgroup v1) or guest-init's leaf
/// [`V2_INIT_CGROUP`] (v2, whose inner cgroups hold no process). `tasks` on v1 (the caller
/// must be single-threaded, its one thread then the whole process), `cgroup.procs` on v2.
pub fn app_joins(pod_dir: &Path, app: &str) -> io::Result<Vec<PathBuf>> {
    // As `create` chose for this host.
    let v2 = host_is_v2();
    Ok(listed(pod_dir)?
        .into_iter()
        .map(|dir| {
            let own = dir.join(app);
            let at = if own.is_dir() {
                own
            } else if v2 {
                dir.join(V2_INIT_CGROUP)
            } else {
                dir
            };
            at.join(if v2 { V2_JOIN } else { V1_JOIN })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn v1_and_v2_paths() {
        let text = "9:name=systemd:/\n4:memory:/api/x\n2:cpu,cpuacct:/\n1:pids:/\n0::/\n";
        let v1 = plan(text, false, Path::new("/sys/fs/cgroup"), "u", Shape::Leaf);
        let memory_cpu = vec![
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
        ];
        assert_eq!(v1, memory_cpu);
        // An ns pod also gets a pids cgroup, for the pod's limit only; v1 joins through the
        // same tasks files in both shapes.
        let mut nested = memory_cpu;
        nested.push(PodCgroup {
            name: "pids".into(),
            dir: "/sys/fs/cgroup/pids/rkt-u".into(),
            join: Join::SelfThread("/sys/fs/cgroup/pids/rkt-u/tasks".into()),
        });
        assert_eq!(
            plan(text, false, Path::new("/sys/fs/cgroup"), "u", Shape::Nested),
            nested
        );
        assert_eq!(
            nested.iter().map(PodCgroup::for_apps).collect::<Vec<_>>(),
            [true, true, false]
        );
        let v2 = plan(
            "0::/user.slice/s\n",
            true,
            Path::new("/sys/fs/cgroup"),
            "u",
            Shape::Nested,
        );
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

    #[test]
    fn a_leaf_joins_its_v2_cgroup_itself() {
        let v2 = plan(
            "0::/\n",
            true,
            Path::new("/sys/fs/cgroup"),
            "u",
            Shape::Leaf,
        );
        assert_eq!(
            v2,
            vec![PodCgroup {
                name: "unified".into(),
                dir: "/sys/fs/cgroup/rkt-u".into(),
                join: Join::ByLauncher("/sys/fs/cgroup/rkt-u/cgroup.procs".into()),
            }]
        );
        assert!(v2[0].is_v2());
    }

    /// Fake cgroup directories (plain files, as the kernel's would be written).
    fn fake(d: &Path, names: &[&str]) -> Vec<PodCgroup> {
        names
            .iter()
            .map(|n| {
                let dir = d.join(n).join("rkt-u");
                std::fs::create_dir_all(&dir).unwrap();
                let join = if *n == "unified" {
                    Join::ByLauncher(dir.join(V2_JOIN))
                } else {
                    Join::SelfThread(dir.join(V1_JOIN))
                };
                PodCgroup {
                    name: n.to_string(),
                    dir,
                    join,
                }
            })
            .collect()
    }

    #[test]
    fn limits_go_to_their_controllers_hierarchy() {
        let d = tempfile::tempdir().unwrap();
        let v1 = fake(d.path(), &["memory", "cpu"]);
        set_limits(&v1, &[Limit::Memory(1 << 30), Limit::Cpu(2000)]).unwrap();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(v1[0].dir.join("memory.limit_in_bytes")), "1073741824");
        assert!(!v1[0].dir.join("cpu.cfs_quota_us").exists());
        assert_eq!(read(v1[1].dir.join("cpu.cfs_quota_us")), "200000");
        assert!(!v1[1].dir.join("memory.limit_in_bytes").exists());
        let v2 = fake(d.path(), &["unified"]);
        set_limits(&v2, &[Limit::Memory(5), Limit::Cpu(500), Limit::Pids(64)]).unwrap();
        assert_eq!(read(v2[0].dir.join("memory.max")), "5");
        assert_eq!(read(v2[0].dir.join("pids.max")), "64");
        assert_eq!(read(v2[0].dir.join("cpu.max")), "50000 100000");
        // A limit file that cannot be written is named.
        let gone = PodCgroup {
            dir: d.path().join("none"),
            ..v2[0].clone()
        };
        let (f, _) =
            set_limits(&[gone, v2[0].clone()], &[Limit::Memory(5), Limit::Cpu(200)]).unwrap_err();
        assert_eq!(f, d.path().join("none/memory.max"));
        // ... and the others are still set.
        assert_eq!(read(v2[0].dir.join("cpu.max")), "20000 100000");
    }

    #[test]
    fn a_threaded_process_joins_whole() {
        // The test harness runs tests on threads: `tasks` would move this thread only.
        let d = tempfile::tempdir().unwrap();
        let cgs = fake(d.path(), &["memory"]);
        let t = std::thread::spawn(|| std::thread::park_timeout(std::time::Duration::from_secs(5)));
        join_this_process(&cgs).unwrap();
        assert_eq!(
            std::fs::read_to_string(cgs[0].dir.join(V2_JOIN)).unwrap(),
            "0"
        );
        assert!(!cgs[0].dir.join(V1_JOIN).exists());
        t.thread().unpark();
        t.join().unwrap();
    }

    #[test]
    fn an_entered_command_joins_the_cgroups_of_its_app() {
        // Real cgroup directories cannot be made here: `listed` keeps only paths below
        // HOST_CGROUP_ROOT, so a list naming temporary ones yields nothing, and a missing list
        // nothing either (a pod made before the list existed).
        let d = tempfile::tempdir().unwrap();
        assert!(app_joins(d.path(), "web").unwrap().is_empty());
        std::fs::write(d.path().join(CGROUPS_FILE), "/tmp/rkt-x\n").unwrap();
        assert!(app_joins(d.path(), "web").unwrap().is_empty());
        // Where the host has cgroup v1 hierarchies mounted, the pids one of a made-up pod:
        // the pod cgroup itself (no sub-cgroup for the app).
        let pids = Path::new(HOST_CGROUP_ROOT).join("pids");
        if pids.join(V1_JOIN).exists() {
            let dir = pids.join("rkt-no-such-pod");
            std::fs::write(d.path().join(CGROUPS_FILE), format!("{}\n", dir.display())).unwrap();
            assert_eq!(app_joins(d.path(), "web").unwrap(), [dir.join(V1_JOIN)]);
        }
    }

    #[test]
    fn gc_touches_only_cgroups_it_could_have_made() {
        // A listed path that climbs out of the cgroup root with `..` is left alone (with
        // a `cgroup.procs` naming a process, remove_tree would kill it).
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("rkt-victim");
        std::fs::create_dir(&victim).unwrap();
        let climb = format!("{HOST_CGROUP_ROOT}/../../../../../..{}", victim.display());
        std::fs::write(
            d.path().join(CGROUPS_FILE),
            format!("{climb}\n/tmp/rkt-x\n"),
        )
        .unwrap();
        gc(d.path()).unwrap();
        assert!(
            victim.exists(),
            "gc followed `..` out of {HOST_CGROUP_ROOT}"
        );
    }
}
