//! The `stop` entrypoint's process check (the rest is `stage1_common::stop`): the pid must be
//! this pod's guest-init. SIGTERM then asks guest-init for a graceful stop (it forwards to the
//! apps, waits the grace period, then SIGKILLs them); SIGKILL (`--force`) ends the whole PID
//! namespace with it.

use std::path::Path;

use pod_abi::plan::Plan;

/// Why a pid is not an ns-flavor guest-init, or `None` if it is: guest-init is PID 1 of the
/// pod's PID namespace, below this one (`NSpid` ends in 1). Its argv is its launcher's:
/// stage1-ns's child runs guest-init in process. No app is PID 1 (they are guest-init's
/// children), and all of them end with it; a process elsewhere that is PID 1 of its own
/// namespace is told apart by [`verify_guest_init`]'s plan check. stage1-ns writes `pid`
/// only once guest-init runs, so this holds from the moment `pid` exists.
pub fn verify_init_pid(pid: i32) -> Option<String> {
    let Some(nspid) = stage1_common::stop::proc_nspid(pid) else {
        return Some(format!("process {pid} does not exist"));
    };
    if nspid.len() < 2 || nspid.last() != Some(&1) {
        return Some(format!(
            "process {pid} is not guest-init (not PID 1 of a PID namespace: NSpid {nspid:?})"
        ));
    }
    None
}

/// Why a pid is not this pod's guest-init, or `None` if it is: [`verify_init_pid`], and the
/// plan in its root has this pod's UUID.
pub fn verify_guest_init(pid: i32, uuid: &str) -> Option<String> {
    if let Some(why) = verify_init_pid(pid) {
        return Some(why);
    }
    match Plan::read_beneath(Path::new(&format!("/proc/{pid}/root"))) {
        Ok(p) if p.uuid == uuid => None,
        Ok(p) => Some(format!("process {pid} runs pod {}, not {uuid}", p.uuid)),
        Err(e) => Some(format!(
            "process {pid}: cannot read its plan: {}",
            stage1_common::error::chain(&e)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strangers_are_not_guest_init() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(verify_guest_init(me, "u")
            .unwrap_or_default()
            .contains("is not guest-init"));
        assert!(verify_guest_init(i32::MAX, "u")
            .unwrap_or_default()
            .contains("does not exist"));
    }
}
