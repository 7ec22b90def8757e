//! Per-app cgroups for `resource/memory`, `resource/cpu` and `os/linux/cpu-shares`. All hierarchies guest-init uses
//! live under [`CGROUP_ROOT`]: `memory/`, `cpu/` (cgroup v1 controllers) or `unified/`
//! (cgroup v2). In the ns flavor stage1-ns bind-mounts the pod's host cgroups there; in the kvm
//! flavor guest-init mounts the guest kernel's hierarchies there itself ([`mount_in_guest`]).

use std::io;
use std::path::{Path, PathBuf};

use app_confine::cgroup::{limit_writes, Limit, V1_JOIN, V2_JOIN};
use pod_abi::plan::AppPlan;

/// Where the pod's cgroup hierarchies are reachable inside the stage1 root.
pub const CGROUP_ROOT: &str = "/rkt/cgroup";

/// Which hierarchies are available under the cgroup root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// v1 memory controller directory.
    pub memory_v1: Option<PathBuf>,
    /// v1 cpu controller directory.
    pub cpu_v1: Option<PathBuf>,
    /// v2 unified directory.
    pub unified: Option<PathBuf>,
}

impl Layout {
    /// Detects the hierarchies under `root`.
    pub fn detect(root: &Path) -> Self {
        let has = |d: &Path, f: &str| d.join(f).exists();
        let mem = root.join("memory");
        let cpu = root.join("cpu");
        let uni = root.join("unified");
        Layout {
            memory_v1: has(&mem, "memory.limit_in_bytes").then_some(mem),
            cpu_v1: has(&cpu, "cpu.cfs_quota_us").then_some(cpu),
            unified: has(&uni, "cgroup.controllers").then_some(uni),
        }
    }
}

/// The cgroup work for one app: directories to create, files to write, the files through which
/// the app's first process joins, and limits that no hierarchy could enforce (reported on the
/// console).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppCgroups {
    /// Directories to create.
    pub dirs: Vec<PathBuf>,
    /// (file, contents) to write after creating the directories.
    pub writes: Vec<(PathBuf, String)>,
    /// Files the app's first process, single-threaded after its fork, writes `0` into to join
    /// (`app_confine::cgroup`: `tasks` on cgroup v1, `cgroup.procs` on v2).
    pub join: Vec<PathBuf>,
    /// Limits requested but not enforceable here.
    pub unenforced: Vec<String>,
}

/// Computes the cgroup work for `app` on `layout` (pure).
pub fn plan_app(app: &AppPlan, layout: &Layout) -> AppCgroups {
    let mut out = AppCgroups::default();
    // Each limit in the app's directory of its own v1 controller's hierarchy, else of the
    // unified one, else reported as not enforced.
    let mut place = |v1: &Option<PathBuf>, limit: Limit, what: String| {
        let (d, v2, join) = match (v1, &layout.unified) {
            (Some(c), _) => (c.join(&app.name), false, V1_JOIN),
            (None, Some(u)) => (u.join(&app.name), true, V2_JOIN),
            (None, None) => {
                out.unenforced.push(what);
                return;
            }
        };
        out.writes.extend(limit_writes(&d, v2, limit));
        if !out.dirs.contains(&d) {
            out.join.push(d.join(join));
            out.dirs.push(d);
        }
    };
    if let Some(limit) = app.memory_limit {
        place(
            &layout.memory_v1,
            Limit::Memory(limit),
            format!("resource/memory limit {limit} bytes"),
        );
    }
    if let Some(millis) = app.cpu_limit_millis {
        place(
            &layout.cpu_v1,
            Limit::Cpu(millis),
            format!("resource/cpu limit {millis}m"),
        );
    }
    if let Some(shares) = app.cpu_shares {
        place(
            &layout.cpu_v1,
            Limit::CpuShares(shares),
            format!("os/linux/cpu-shares {shares}"),
        );
    }
    out
}

/// Creates the directories and writes the limits.
pub fn apply(cg: &AppCgroups) -> io::Result<()> {
    for d in &cg.dirs {
        match std::fs::create_dir(d) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    for (f, v) in &cg.writes {
        std::fs::write(f, v)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", f.display())))?;
    }
    Ok(())
}

/// kvm flavor: mounts the guest kernel's memory and cpu controllers (v1) under [`CGROUP_ROOT`],
/// or the v2 hierarchy when v1 is unavailable, and enables the controllers for children.
pub fn mount_in_guest() -> io::Result<()> {
    use nix::mount::{mount, MsFlags};
    let root = Path::new(CGROUP_ROOT);
    std::fs::create_dir_all(root)?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("tmpfs"), root, Some("tmpfs"), flags, Some("mode=755"))
        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    let mut v1 = true;
    for c in ["memory", "cpu"] {
        let d = root.join(c);
        std::fs::create_dir_all(&d)?;
        if mount(Some("cgroup"), &d, Some("cgroup"), flags, Some(c)).is_err() {
            v1 = false;
            let _ = std::fs::remove_dir(&d);
        }
    }
    if !v1 {
        let d = root.join("unified");
        std::fs::create_dir_all(&d)?;
        mount(Some("cgroup2"), &d, Some("cgroup2"), flags, None::<&str>)
            .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
        let _ = std::fs::write(d.join("cgroup.subtree_control"), "+memory +cpu");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_limits() {
        let mut a = crate::mounts::tests::app("web");
        a.memory_limit = Some(1 << 30);
        a.cpu_limit_millis = Some(500);
        let v1 = Layout {
            memory_v1: Some("/c/memory".into()),
            cpu_v1: Some("/c/cpu".into()),
            unified: None,
        };
        let p = plan_app(&a, &v1);
        assert_eq!(
            p.dirs,
            vec![PathBuf::from("/c/memory/web"), "/c/cpu/web".into()]
        );
        assert_eq!(
            p.join,
            vec![
                PathBuf::from("/c/memory/web/tasks"),
                "/c/cpu/web/tasks".into()
            ]
        );
        assert!(p.writes.contains(&(
            "/c/memory/web/memory.limit_in_bytes".into(),
            "1073741824".into()
        )));
        assert!(p
            .writes
            .contains(&("/c/cpu/web/cpu.cfs_quota_us".into(), "50000".into())));
        let v2 = Layout {
            unified: Some("/c/unified".into()),
            ..Default::default()
        };
        let p = plan_app(&a, &v2);
        assert_eq!(p.dirs, vec![PathBuf::from("/c/unified/web")]);
        assert_eq!(p.join, vec![PathBuf::from("/c/unified/web/cgroup.procs")]);
        assert!(p
            .writes
            .contains(&("/c/unified/web/cpu.max".into(), "50000 100000".into())));
        a.cpu_shares = Some(512);
        let p = plan_app(&a, &v2);
        assert!(p
            .writes
            .contains(&("/c/unified/web/cpu.weight".into(), "20".into())));
        assert_eq!(p.dirs.len(), 1);
        let p = plan_app(&a, &v1);
        assert!(p
            .writes
            .contains(&("/c/cpu/web/cpu.shares".into(), "512".into())));
        let none = plan_app(&a, &Layout::default());
        assert_eq!(none.unenforced.len(), 3);
        assert!(plan_app(&crate::mounts::tests::app("x"), &v1)
            .dirs
            .is_empty());
    }
}
