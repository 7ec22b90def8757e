//! The `stop`, `gc` and `enter` entrypoints (cwd = the pod directory).
//!
//! `stop` signals the VMM whose pid the pod's `pid` file names, after checking that the process
//! really is this pod's VMM ([`verify_vmm`]): SIGTERM asks for a graceful stop (the VMM sends
//! `stop` to guest-init), SIGKILL (`--force`) ends the VM at once. `gc` has nothing to do: the
//! VM, its devices and its mount namespace die with the VMM process, and stage0 unmounts and
//! removes the pod directory. `enter` needs an exec channel into the guest, which does not exist
//! yet.

use std::path::Path;

use pod_abi::paths::PodPaths;
use pod_abi::stage1::{ArgsError, EnterArgs, StopArgs};

use super::{PodError, PROG};

/// The name of the VMM binary, which `/proc/<pid>/exe` of a pod's VMM ends with.
pub const VMM_EXE_NAME: &str = "stage1-vmm";

/// Why `pid` is not the VMM of pod `uuid`, or `None` if it is: its executable must be
/// [`VMM_EXE_NAME`] and its command line must end with the pod's UUID (the `run` argv).
pub fn verify_vmm(pid: i32, uuid: &str) -> Option<String> {
    let proc_dir = format!("/proc/{pid}");
    let Ok(cmdline) = std::fs::read(format!("{proc_dir}/cmdline")) else {
        return Some(format!("process {pid} does not exist"));
    };
    let exe = std::fs::read_link(format!("{proc_dir}/exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let exe_name = exe
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .trim_end_matches(" (deleted)");
    if exe_name != VMM_EXE_NAME {
        return Some(format!("process {pid} is not {VMM_EXE_NAME} ({exe:?})"));
    }
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if args.last().map(String::as_str) != Some(uuid) {
        return Some(format!(
            "process {pid} runs another pod ({:?})",
            args.join(" ")
        ));
    }
    None
}

fn read_pid(pod_dir: &Path) -> Result<i32, PodError> {
    let p = PodPaths::new(pod_dir).pid();
    let t = std::fs::read_to_string(&p).map_err(|e| PodError::io("cannot read", &p, e))?;
    t.trim()
        .parse()
        .map_err(|_| PodError::NotOurs(format!("bad pid {:?} in {}", t.trim(), p.display())))
}

/// Runs `stop`.
pub fn stop(args: &StopArgs) -> Result<i32, PodError> {
    let dir = std::env::current_dir()
        .map_err(|e| PodError::Host("cannot get the current directory", e))?;
    let pid = read_pid(&dir)?;
    if let Some(why) = verify_vmm(pid, &args.uuid) {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("{PROG}: pod {} has already exited", args.uuid);
            return Ok(0);
        }
        return Err(PodError::NotOurs(format!("refusing to signal: {why}")));
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
            eprintln!("{PROG}: pod {} has already exited", args.uuid);
            return Ok(0);
        }
        return Err(PodError::Host("cannot signal the VMM", e));
    }
    Ok(0)
}

/// Runs `gc` (`[--debug] UUID`): nothing VM-specific outlives the VMM; checks the arguments
/// and returns 0, every time.
pub fn gc(args: Vec<String>) -> Result<i32, PodError> {
    let mut uuid = None;
    for a in args {
        if a == "--debug" || a.starts_with("--local-config=") {
            continue;
        }
        if a.starts_with("--") {
            return Err(ArgsError::UnknownFlag(a).into());
        }
        if uuid.is_some() {
            return Err(ArgsError::Unexpected(a).into());
        }
        uuid = Some(a);
    }
    uuid.ok_or(ArgsError::MissingUuid)?;
    Ok(0)
}

/// Runs `enter`: not possible without an exec channel into the guest.
pub fn enter(_args: &EnterArgs) -> Result<i32, PodError> {
    Err(PodError::EnterUnsupported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_refuses_other_processes() {
        // This test process is not a VMM.
        let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        let why = verify_vmm(me, "u").unwrap_or_default();
        assert!(why.contains("is not stage1-vmm"), "{why}");
        assert!(verify_vmm(i32::MAX, "u")
            .unwrap_or_default()
            .contains("does not exist"));
    }

    #[test]
    fn gc_is_idempotent_and_checks_args() {
        assert_eq!(gc(vec!["u".into()]).ok(), Some(0));
        assert_eq!(gc(vec!["--debug".into(), "u".into()]).ok(), Some(0));
        assert!(gc(vec![]).is_err());
        assert!(gc(vec!["--bogus".into(), "u".into()]).is_err());
    }
}
