//! Joining cgroups from inside the process that joins: the files it writes `0` into, and the
//! write. On cgroup v1 a process joins through `tasks`, which moves only the calling thread: the
//! kernel then skips its global threadgroup lock, whose first writer after a quiet spell waits
//! for an RCU grace period (0.1-0.2 ms against 9-12 ms for `cgroup.procs`, measured on a v1
//! host; docs/pods.md). A cgroup v2 domain cgroup takes whole processes only, through
//! `cgroup.procs`. Callers are single-threaded (a forked child), so that the one thread moved is
//! the whole process.
//!
//! Also the files that set a cgroup's limits ([`limit_writes`]): the one home of the limit files
//! for the apps' cgroups (guest-init) and the pods' cgroups on the host (stage1).

use std::io;
use std::path::{Path, PathBuf};

/// The file a process joins a cgroup v1 cgroup through (moves the calling thread).
pub const V1_JOIN: &str = "tasks";
/// The file a process joins a cgroup v2 cgroup through (moves the whole process).
pub const V2_JOIN: &str = "cgroup.procs";
/// The cgroup v1 controller (and v2 controller name) of the task limit ([`Limit::Pids`]).
pub const PIDS_CONTROLLER: &str = "pids";

/// CFS period of CPU limits (µs).
pub const CFS_PERIOD_US: u64 = 100_000;
/// Smallest CFS quota the kernel accepts (µs).
pub const MIN_CFS_QUOTA_US: u64 = 1_000;
/// Millicores per CPU (the unit of `resource/cpu` limits).
pub const MILLIS_PER_CPU: u64 = 1000;

/// A limit on a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Memory (bytes): `memory.limit_in_bytes` (v1), `memory.max` (v2).
    Memory(u64),
    /// CPU time (millicores of one CPU, per CFS period): `cpu.cfs_quota_us` (v1), `cpu.max` (v2).
    Cpu(u64),
    /// CPU weight (shares, 2..=262144): `cpu.shares` (v1), `cpu.weight` (v2, 1..=10000,
    /// [`shares_to_weight`]).
    CpuShares(u64),
    /// Tasks (processes and threads) at once: `pids.max` (v1 and v2).
    Pids(u64),
}

impl Limit {
    /// The cgroup v1 controller whose hierarchy holds this limit's files.
    pub fn controller(self) -> &'static str {
        match self {
            Limit::Memory(_) => "memory",
            Limit::Cpu(_) | Limit::CpuShares(_) => "cpu",
            Limit::Pids(_) => PIDS_CONTROLLER,
        }
    }
}

/// The CFS quota (µs per [`CFS_PERIOD_US`]) of `millis` millicores.
pub fn cpu_quota_us(millis: u64) -> u64 {
    (millis.saturating_mul(CFS_PERIOD_US) / MILLIS_PER_CPU).max(MIN_CFS_QUOTA_US)
}

/// The (file, contents) writes that set `limit` on the cgroup `dir` of a cgroup v1 hierarchy (the
/// limit's own controller) or, with `v2`, of the unified hierarchy.
pub fn limit_writes(dir: &Path, v2: bool, limit: Limit) -> Vec<(PathBuf, String)> {
    match (limit, v2) {
        (Limit::Memory(b), false) => vec![(dir.join("memory.limit_in_bytes"), b.to_string())],
        (Limit::Memory(b), true) => vec![(dir.join("memory.max"), b.to_string())],
        (Limit::Cpu(m), false) => vec![
            (dir.join("cpu.cfs_period_us"), CFS_PERIOD_US.to_string()),
            (dir.join("cpu.cfs_quota_us"), cpu_quota_us(m).to_string()),
        ],
        (Limit::Cpu(m), true) => vec![(
            dir.join("cpu.max"),
            format!("{} {CFS_PERIOD_US}", cpu_quota_us(m)),
        )],
        (Limit::CpuShares(n), false) => vec![(dir.join("cpu.shares"), n.to_string())],
        (Limit::CpuShares(n), true) => {
            vec![(dir.join("cpu.weight"), shares_to_weight(n).to_string())]
        }
        (Limit::Pids(n), _) => vec![(dir.join("pids.max"), n.to_string())],
    }
}

/// cgroup v1 CPU shares (2..=262144) as a cgroup v2 `cpu.weight` (1..=10000), the conversion
/// runc and crun use: 2 -> 1, 1024 (the default) -> 39, 262144 -> 10000.
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9_999) / 262_142
}

/// Moves the calling process into the cgroup of each join file (`0`: "the caller"). On
/// failure, the file that refused it and why.
pub fn join_self<P: AsRef<Path>>(files: &[P]) -> Result<(), (PathBuf, io::Error)> {
    for f in files {
        let f = f.as_ref();
        std::fs::write(f, "0").map_err(|e| (f.to_path_buf(), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_files_of_both_hierarchies() {
        let d = Path::new("/c");
        assert_eq!(
            limit_writes(d, false, Limit::Memory(1 << 20)),
            vec![("/c/memory.limit_in_bytes".into(), "1048576".into())]
        );
        assert_eq!(
            limit_writes(d, true, Limit::Memory(7)),
            vec![(PathBuf::from("/c/memory.max"), "7".into())]
        );
        assert_eq!(
            limit_writes(d, false, Limit::Cpu(250)),
            vec![
                ("/c/cpu.cfs_period_us".into(), "100000".into()),
                (PathBuf::from("/c/cpu.cfs_quota_us"), "25000".into())
            ]
        );
        assert_eq!(
            limit_writes(d, true, Limit::Cpu(2000)),
            vec![(PathBuf::from("/c/cpu.max"), "200000 100000".into())]
        );
        for v2 in [false, true] {
            assert_eq!(
                limit_writes(d, v2, Limit::Pids(4096)),
                vec![(PathBuf::from("/c/pids.max"), "4096".into())]
            );
        }
        // The kernel's smallest quota, not a refused write.
        assert_eq!(cpu_quota_us(1), MIN_CFS_QUOTA_US);
    }

    #[test]
    fn cpu_shares_become_v1_shares_or_a_v2_weight() {
        let d = Path::new("/c/web");
        assert_eq!(
            limit_writes(d, false, Limit::CpuShares(512)),
            vec![(d.join("cpu.shares"), "512".to_string())]
        );
        assert_eq!(
            limit_writes(d, true, Limit::CpuShares(1024)),
            vec![(d.join("cpu.weight"), "39".to_string())]
        );
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 1);
    }

    #[test]
    fn writes_zero_to_each_file_and_names_the_one_that_fails() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        join_self(&[&a, &b]).unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "0");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "0");
        let missing = d.path().join("no/such/tasks");
        let (f, e) = join_self(&[&a, &missing]).unwrap_err();
        assert_eq!(f, missing);
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
