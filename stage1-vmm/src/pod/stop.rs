//! What is the kvm flavor's own in `stop`, `gc` and `enter` (the rest is `stage1_common`).
//!
//! `stop` signals the VMM whose pid the pod's `pid` file names, after checking that the process
//! really is this pod's VMM ([`verify_vmm`]): SIGTERM asks for a graceful stop (the VMM sends
//! the `stop` control line to guest-init), SIGKILL (`--force`) ends the VM at once. `gc` has
//! nothing to do: the VM, its devices and its mount namespace die with the VMM process, and
//! stage0 unmounts and removes the pod directory. `enter` needs an exec channel into the guest,
//! which does not exist yet ([`ENTER_UNSUPPORTED`]).

/// The name of the VMM binary, which `/proc/<pid>/exe` of a pod's VMM ends with.
pub const VMM_EXE_NAME: &str = "stage1-vmm";

/// Why `pid` is not the VMM of pod `uuid`, or `None` if it is: its executable must be
/// [`VMM_EXE_NAME`] and its command line must end with the pod's UUID (the `run` argv).
pub fn verify_vmm(pid: i32, uuid: &str) -> Option<String> {
    let proc_dir = format!("/proc/{pid}");
    let Some(args) = stage1_common::stop::proc_cmdline(pid) else {
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
    if args.last().map(String::as_str) != Some(uuid) {
        return Some(format!(
            "process {pid} runs another pod ({:?})",
            args.join(" ")
        ));
    }
    None
}

/// What `enter` says: there is no exec channel into the guest yet.
pub const ENTER_UNSUPPORTED: &str = "rkt enter is not supported by the kvm stage1 yet";

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
}
