//! Joining cgroups from inside the process that joins: the files it writes `0` into, and the
//! write. On cgroup v1 a process joins through `tasks`, which moves only the calling thread: the
//! kernel then skips its global threadgroup lock, whose first writer after a quiet spell waits
//! for an RCU grace period (0.1-0.2 ms against 9-12 ms for `cgroup.procs`, measured on a v1
//! host; docs/pods.md). A cgroup v2 domain cgroup takes whole processes only, through
//! `cgroup.procs`. Callers are single-threaded (a forked child), so that the one thread moved is
//! the whole process.

use std::io;
use std::path::{Path, PathBuf};

/// The file a process joins a cgroup v1 cgroup through (moves the calling thread).
pub const V1_JOIN: &str = "tasks";
/// The file a process joins a cgroup v2 cgroup through (moves the whole process).
pub const V2_JOIN: &str = "cgroup.procs";

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
