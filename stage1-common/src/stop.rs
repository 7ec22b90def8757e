//! The `stop` entrypoint's common half: read the pod's `pid`, make sure that process is this
//! pod's (the flavor says how: guest-init's argv, the VMM's executable), then SIGTERM
//! (graceful) or SIGKILL (`--force`). A pod that has already exited is not an error; a stale
//! pid file never makes it signal a stranger.

use std::path::Path;

use pod_abi::stage1::StopArgs;

use crate::log::prog;
use crate::{PodContext, Stage1Error};

/// Signals the process named by the pod's `pid` file once `verify(pid, uuid)` returns `None`
/// (it returns why the process is not the pod's otherwise); returns the exit code.
pub fn stop_verified(
    pod: &PodContext,
    args: &StopArgs,
    verify: impl Fn(i32, &str) -> Option<String>,
) -> Result<i32, Stage1Error> {
    let pid = pod
        .read_pid()
        .map_err(|e| Stage1Error::Refused(format!("pod {} is not running: {e}", args.uuid)))?;
    if let Some(why) = verify(pid, &args.uuid) {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("{}: pod {} has already exited", prog(), args.uuid);
            return Ok(0);
        }
        return Err(Stage1Error::Refused(format!("refusing to signal: {why}")));
    }
    let sig = if args.force {
        libc::SIGKILL
    } else {
        libc::SIGTERM
    };
    // SAFETY: kill takes a pid and a signal number; no memory is involved.
    if unsafe { libc::kill(pid, sig) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            eprintln!("{}: pod {} has already exited", prog(), args.uuid);
            return Ok(0);
        }
        return Err(Stage1Error::failed(e));
    }
    Ok(0)
}

/// A process's PIDs in its PID namespace and each one above it, innermost last (the `NSpid`
/// line of `/proc/<pid>/status`); `None` if the process does not exist.
pub fn proc_nspid(pid: i32) -> Option<Vec<i32>> {
    use std::io::Read;
    // The kernel writes the file; bounded all the same. NSpid comes before the memory lines.
    let mut buf = Vec::with_capacity(2048);
    std::fs::File::open(format!("/proc/{pid}/status"))
        .ok()?
        .take(8192)
        .read_to_end(&mut buf)
        .ok()?;
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    line.split_whitespace().map(|p| p.parse().ok()).collect()
}

/// A process's argv from `/proc/<pid>/cmdline`; `None` if the process does not exist.
pub fn proc_cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn refuses_strangers_and_missing_pids() {
        let d = tempfile::tempdir().unwrap();
        let pod = PodContext::new(d.path());
        let args = StopArgs {
            force: true,
            uuid: "u".into(),
        };
        let e = stop_verified(&pod, &args, |_, _| None).unwrap_err();
        assert!(e.to_string().contains("is not running"), "{e}");
        // This test process is alive and not the pod's: refused, not signalled.
        pod.write_pid(i32::try_from(std::process::id()).unwrap())
            .unwrap();
        let e = stop_verified(&pod, &args, |_, _| Some("a stranger".into())).unwrap_err();
        assert!(e.to_string().contains("a stranger"), "{e}");
        // A pid that no longer exists: already exited.
        pod.write_pid(i32::MAX).unwrap();
        assert_eq!(
            stop_verified(&pod, &args, |_, _| Some("gone".into())).unwrap(),
            0
        );
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(!proc_cmdline(me).unwrap().is_empty());
        assert!(proc_cmdline(i32::MAX).is_none());
        assert_eq!(proc_nspid(me).unwrap().first(), Some(&me));
        assert!(proc_nspid(i32::MAX).is_none());
    }
}
