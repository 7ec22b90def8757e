//! The `attach` entrypoint: checks that `--pid` is guest-init (as `enter` does), joins its
//! mount namespace (whose root is the stage1 root, where guest-init's multiplexers listen on a
//! tmpfs no app reaches; `pod_abi::attach`), connects to the app's multiplexer and runs the
//! session (`stage1_common::session`): raw mode and resizes for a terminal, stdin when asked,
//! output byte for byte; SIGINT, SIGTERM, SIGHUP or `^]` typed three times detach. Returns 0
//! once the app's streams closed.

use std::fs::File;

use anyhow::{bail, Context};
use nix::sched::{setns, CloneFlags};
use pod_abi::stage1::AttachArgs;
use stage1_common::session;

/// Runs `attach`.
pub fn attach(args: &AttachArgs) -> anyhow::Result<i32> {
    let pid = args.pid;
    if let Some(why) = crate::stop::verify_init_pid(pid) {
        bail!("refusing to attach: {why}");
    }
    // Before any thread exists, so that only the session's signal thread takes them.
    session::block_signals().context("block signals")?;
    let mnt = File::open(format!("/proc/{pid}/ns/mnt"))
        .with_context(|| format!("open the mount namespace of pid {pid}"))?;
    // Root and working directory become the namespace's root: the stage1 root.
    setns(&mnt, CloneFlags::CLONE_NEWNS).context("join the pod's mount namespace")?;
    drop(mnt);
    let stream = pod_abi::attach::connect(&args.app).with_context(|| {
            format!(
                "app {} has no attachable streams now (it was not started with --stdin, --stdout or --stderr of stream or tty, or it has ended)",
                args.app
            )
        })?;
    Ok(session::attach(stream, &args.app, args.attach)?)
}
