//! The `stop` entrypoint (cwd = the pod directory): SIGTERM to guest-init (graceful: it
//! forwards to the apps, waits the grace period, then SIGKILLs them) or SIGKILL with `--force`
//! (the whole PID namespace dies with it). The pid is verified to be this pod's guest-init.

use std::path::Path;

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pod_abi::plan::Plan;
use pod_abi::stage1::StopArgs;

/// Why a pid is not this pod's guest-init, or `None` if it is.
pub fn verify_guest_init(pid: i32, uuid: &str) -> Option<String> {
    let proc_dir = format!("/proc/{pid}");
    let Ok(cmdline) = std::fs::read(format!("{proc_dir}/cmdline")) else {
        return Some(format!("process {pid} does not exist"));
    };
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if args.first().map(String::as_str) != Some("/init") || !args.iter().any(|a| a == "--flavor=ns")
    {
        return Some(format!(
            "process {pid} is not guest-init ({:?})",
            args.join(" ")
        ));
    }
    match Plan::read(Path::new(&format!("{proc_dir}/root/rkt/plan.json"))) {
        Ok(p) if p.uuid == uuid => None,
        Ok(p) => Some(format!("process {pid} runs pod {}, not {uuid}", p.uuid)),
        Err(e) => Some(format!("process {pid}: cannot read its plan: {e}")),
    }
}

/// Runs `stop`.
pub fn stop(args: &StopArgs) -> anyhow::Result<i32> {
    let dir = std::env::current_dir().context("current directory")?;
    let pid = match crate::run::read_pid(&dir) {
        Ok(p) => p,
        Err(e) => bail!("pod {} is not running: {e:#}", args.uuid),
    };
    if let Some(why) = verify_guest_init(pid, &args.uuid) {
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("stage1-ns: pod {} has already exited", args.uuid);
            return Ok(0);
        }
        bail!("refusing to signal: {why}");
    }
    let sig = if args.force {
        Signal::SIGKILL
    } else {
        Signal::SIGTERM
    };
    kill(Pid::from_raw(pid), sig).with_context(|| format!("kill {pid} with {sig:?}"))?;
    Ok(0)
}
