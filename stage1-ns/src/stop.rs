//! The `stop` entrypoint's process check (the rest is `stage1_common::stop`): the pid must be
//! this pod's guest-init. SIGTERM then asks guest-init for a graceful stop (it forwards to the
//! apps, waits the grace period, then SIGKILLs them); SIGKILL (`--force`) ends the whole PID
//! namespace with it.

use std::path::Path;

use pod_abi::init::InitArgs;
use pod_abi::paths::GUEST_INIT_PATH;
use pod_abi::plan::{Flavor, Plan};

/// Why a pid is not an ns-flavor guest-init, or `None` if it is: its argv is guest-init's for
/// the ns flavor (`InitArgs`). stage1-ns writes `pid` only once guest-init runs, so this holds
/// from the moment `pid` exists.
pub fn verify_init_argv(pid: i32) -> Option<String> {
    let Some(args) = stage1_common::stop::proc_cmdline(pid) else {
        return Some(format!("process {pid} does not exist"));
    };
    let is_init = args.first().map(String::as_str) == Some(GUEST_INIT_PATH)
        && InitArgs::parse(args.iter().skip(1)).is_ok_and(|a| a.flavor == Flavor::Ns);
    if !is_init {
        return Some(format!(
            "process {pid} is not guest-init ({:?})",
            args.join(" ")
        ));
    }
    None
}

/// Why a pid is not this pod's guest-init, or `None` if it is: [`verify_init_argv`], and the
/// plan in its root has this pod's UUID.
pub fn verify_guest_init(pid: i32, uuid: &str) -> Option<String> {
    if let Some(why) = verify_init_argv(pid) {
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
