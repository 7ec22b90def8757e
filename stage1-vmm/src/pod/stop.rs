//! What is the kvm flavor's own in `stop` and `gc` (the rest is `stage1_common`).
//!
//! `stop` ([`stop`]) first checks that the process the pod's `pid` file names really is this
//! pod's VMM ([`verify_vmm`]). A graceful stop goes over the exec channel
//! ([`super::enter::stop_over_channel`]): guest-init stops the apps (SIGTERM, the grace
//! period, SIGKILL, post-stop handlers, statuses) and reports what happened, which `stop`
//! prints, before the VM powers off; `stop` then waits (bounded) for the VMM to exit. If the
//! channel cannot be reached (an older guest, a guest whose service died), the fallback is
//! SIGTERM to the VMM, which sends the `stop` control line on COM2. `--force` is SIGKILL to the
//! VMM: the VM ends at once. `gc` has nothing to do: the VM, its devices and its mount
//! namespace die with the VMM process, and stage0 unmounts and removes the pod directory.

use std::time::{Duration, Instant};

use pod_abi::stage1::StopArgs;
use stage1_common::{PodContext, Stage1Error};

use super::PROG;

/// Time the VMM has to exit after guest-init reported the stop.
pub const EXIT_WAIT: Duration = Duration::from_secs(10);
/// Time beyond the grace period that guest-init gets to send its stop report (post-stop
/// handlers, statuses; generous for a loaded, nested, emulated host: a missed report falls back
/// to SIGTERM, which kills the apps at once).
pub const REPORT_MARGIN: Duration = Duration::from_secs(60);

/// The `stop` entrypoint.
pub fn stop(pod: &PodContext, args: &StopArgs) -> Result<i32, Stage1Error> {
    let pid = pod.read_pid().ok();
    let ours = pid.filter(|p| verify_vmm(*p, &args.uuid).is_none());
    if let (false, Some(pid)) = (args.force, ours) {
        // The plan is in the guest's share: its value is clamped.
        let grace = pod_abi::plan::Plan::read_beneath(&pod.paths().stage1_rootfs())
            .map(|p| p.host_stop_grace_secs())
            .unwrap_or(pod_abi::plan::DEFAULT_STOP_GRACE_SECS);
        let wait = Duration::from_secs(u64::from(grace)) + REPORT_MARGIN;
        match super::enter::stop_over_channel(pod.dir(), None, wait) {
            Ok(Some(report)) => {
                eprintln!(
                    "{PROG}: pod {} stopped (grace period {}s)",
                    args.uuid, report.grace_secs
                );
                for line in report.lines() {
                    eprintln!("{PROG}: {line}");
                }
                wait_for_exit(pid, EXIT_WAIT);
                return Ok(0);
            }
            Ok(None) => {
                eprintln!(
                    "{PROG}: pod {} is stopping (the VM ended before guest-init's report)",
                    args.uuid
                );
                return Ok(0);
            }
            Err(e) => eprintln!(
                "{PROG}: {}; stopping through the VMM instead (SIGTERM, the stop line on COM2)",
                stage1_common::error::chain(&e)
            ),
        }
    }
    stage1_common::stop::stop_verified(pod, args, verify_vmm)
}

/// Waits until process `pid` has exited (gone, or a zombie its parent has not reaped yet), at
/// most `limit`.
fn wait_for_exit(pid: i32, limit: Duration) {
    let end = Instant::now() + limit;
    while Instant::now() < end && running(pid) {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `pid` exists and is not a zombie (`/proc/<pid>/stat`'s state after the command).
fn running(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zombies_count_as_exited() {
        let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        assert!(running(me));
        assert!(!running(i32::MAX));
        let mut child = std::process::Command::new("true")
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
        let t0 = Instant::now();
        wait_for_exit(pid, Duration::from_secs(5));
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "a zombie is not waited for"
        );
        let _ = child.wait();
    }

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
