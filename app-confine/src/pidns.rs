//! The apps' PID namespace of an ns pod: a namespace below guest-init's, which holds every app
//! process, event handler and `rkt enter` command and nothing of the stage1 (guest-init, its
//! attach multiplexers and exec service live one level up, where the apps cannot name them).
//! A root app given `CAP_SYS_PTRACE` (and a filter that lets `ptrace` through) may trace every
//! process it sees; guest-init holds every capability on the host, so it must not be one of
//! them. This module joins that namespace, refusing one that is not a different namespace from
//! the one it must differ from (guest-init's own): a process never lands among the stage1's
//! by mistake.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sched::{setns, CloneFlags};

use crate::StepError;

/// Opens the PID namespace at `candidate` (a `/proc/<pid>/ns/pid` or `pid_for_children` link)
/// if it is not the one at `not` (the namespace the apps' must differ from), else `EAGAIN`.
pub fn open_apart(candidate: &Path, not: &Path) -> Result<File, StepError> {
    let io = |what: &str, p: &Path| {
        let step = format!("{what} {}", p.display());
        move |e: std::io::Error| StepError::io(step, &e)
    };
    let f = File::open(candidate).map_err(io("open", candidate))?;
    let m = f.metadata().map_err(io("stat", candidate))?;
    let other = std::fs::metadata(not).map_err(io("stat", not))?;
    if (m.dev(), m.ino()) == (other.dev(), other.ino()) {
        return Err(StepError::new(
            format!("{} is not the apps' own PID namespace", candidate.display()),
            nix::errno::Errno::EAGAIN,
        ));
    }
    Ok(f)
}

/// Makes `ns` (an open PID namespace) the one the caller's next children are born in
/// (`setns(CLONE_NEWPID)`; the caller itself stays where it is). Needs `CAP_SYS_ADMIN`.
pub fn join_for_children(ns: &File) -> Result<(), StepError> {
    setns(ns, CloneFlags::CLONE_NEWPID).map_err(|e| StepError::new("join a PID namespace", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_the_namespace_it_must_differ_from() {
        let own = Path::new("/proc/self/ns/pid");
        let e = open_apart(own, own).unwrap_err();
        assert_eq!(e.errno, nix::errno::Errno::EAGAIN, "{e}");
        assert!(e.to_string().contains("not the apps' own"), "{e}");
        let missing = open_apart(Path::new("/proc/self/ns/nonexistent"), own).unwrap_err();
        assert_eq!(missing.errno, nix::errno::Errno::ENOENT, "{missing}");
    }
}
