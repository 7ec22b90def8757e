//! The kvm flavor's stage1 entrypoints: `run`, `stop`, `gc`, `enter` (the stage1 image links
//! `/run`, `/stop`, `/gc`, `/enter` to the `stage1-vmm` binary; `stage1-common` dispatches on
//! argv\[0\] to [`Kvm`], this flavor's [`Stage1`]). All run with cwd = the pod directory, as
//! stage0 starts them.
//!
//! - [`run`]: sizes the VM from the launch plan ([`sizing`]), boots the pod's kernel with the
//!   pod's `stage1/rootfs` as the guest's root over virtio-fs, app stdout/stderr on two
//!   virtio-consoles, the kernel console on COM1 (-> stderr) and the guest-init control channel
//!   on COM2, jailed in its own mount namespace ([`jail`]); turns the VM's end into the pod's exit
//!   code or a `failure` file. Signals and the terminal: [`control`].
//! - [`stop`]: graceful over the exec channel (guest-init's report printed), else SIGTERM to
//!   the verified VMM process (the COM2 `stop` line); `--force`: SIGKILL to the VMM.
//! - `gc`: nothing VM-specific is left behind after the VMM exits; idempotent.
//! - [`enter`]: runs a command in an app over the exec channel (guest-init's exec service on
//!   vsock), proxying the terminal, signals and the exit status.
//! - `app_add`, `app_start`, `app_stop`, `app_rm` (mutable pods): one app request over the
//!   same channel (`stage1_common::app`).
//!
//! See docs/kvm-stage1.md.

pub mod control;
pub mod enter;
pub mod jail;
pub mod run;
pub mod sizing;
pub mod snapshot_start;
pub mod stop;

use std::path::{Path, PathBuf};

use pod_abi::stage1::{
    AppArgs, ArgsError, AttachArgs, EnterArgs, Entrypoint, GcArgs, RunArgs, StopArgs,
};
use stage1_common::{PodContext, Stage1, Stage1Error};

pub use stage1_common::pod::{record_failure, set_failure_path};
pub use stage1_common::write_atomic;

/// Prefix of every message the entrypoints print.
pub const PROG: &str = "stage1-vmm";

/// Errors of the pod entrypoints.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// Bad entrypoint arguments.
    #[error(transparent)]
    Args(#[from] ArgsError),
    /// The launch plan could not be read.
    #[error("cannot read the launch plan")]
    Plan(#[source] pod_abi::plan::PlanError),
    /// A file of the pod could not be read or written.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Jailing the VMM failed.
    #[error("cannot confine the VMM to the pod directory")]
    Jail(#[from] jail::JailError),
    /// Dropping privileges (no-new-privs, capabilities, seccomp) failed.
    #[error("cannot drop the VMM's privileges")]
    Confine(#[from] crate::confine::ConfineError),
    /// Creating or running the VM failed.
    #[error(transparent)]
    Vmm(#[from] crate::vmm::VmmError),
    /// The virtio-fs share could not be set up.
    #[error("cannot share the pod's stage1 root")]
    Fs(#[from] crate::devices::virtio::fs::FsError),
    /// Setting up the host side (pipes, signals, threads) failed.
    #[error("{0}")]
    Host(&'static str, #[source] std::io::Error),
    /// The pod's networks could not be set up (the message names the network and plugin).
    #[error("{0}")]
    Net(String),
    /// The pod asks to share a namespace of the host (`--net=host`, `--ipc=parent`), which a
    /// VM cannot: its apps run on the guest's kernel.
    #[error("{0}")]
    HostNamespace(String),
    /// `--kvm-snapshot`: the snapshot could not be made, found or prepared for.
    #[error("--kvm-snapshot: {0}")]
    Snapshot(String),
}

impl PodError {
    fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        PodError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<PodError> for Stage1Error {
    fn from(e: PodError) -> Self {
        match e {
            PodError::Args(a) => Stage1Error::Usage(a),
            e => Stage1Error::failed(e),
        }
    }
}

/// The kvm flavor.
#[derive(Debug, Default)]
pub struct Kvm;

impl Stage1 for Kvm {
    const NAME: &'static str = PROG;
    fn run(&self, _pod: &PodContext, args: &RunArgs) -> Result<i32, Stage1Error> {
        Ok(run::run(args)?)
    }
    fn stop(&self, pod: &PodContext, args: &StopArgs) -> Result<i32, Stage1Error> {
        stop::stop(pod, args)
    }
    /// Tears the pod's networks down (DEL for each, the netns removed; its taps and tc
    /// redirects go with it) and removes the pod's host cgroups, which the VMM was in.
    fn gc(&self, pod: &PodContext, args: &GcArgs) -> Result<i32, Stage1Error> {
        // Networks first, so that a cgroup failure never leaves rules and namespaces behind.
        let net = stage1_common::net::gc(pod.dir(), &args.uuid);
        stage1_common::cgroup::gc(pod.dir())
            .map_err(|e| Stage1Error::failed(format!("remove the pod cgroups: {e}")))?;
        net.map_err(Stage1Error::failed)?;
        Ok(0)
    }
    /// The VMM named by `--pid` must be this pod's (`this_pods_vmm`); then the exec channel
    /// does the rest.
    fn enter(&self, pod: &PodContext, args: &EnterArgs) -> Result<i32, Stage1Error> {
        this_pods_vmm(pod, args.pid, "enter")?;
        let cmd = if args.cmd.is_empty() {
            vec!["/bin/sh".to_string()]
        } else {
            args.cmd.clone()
        };
        enter::enter(pod.dir(), &args.app, cmd).map_err(Stage1Error::failed)
    }
    /// The VMM checked as for `enter`; the exec channel relays to the app's multiplexer.
    fn attach(&self, pod: &PodContext, args: &AttachArgs) -> Result<i32, Stage1Error> {
        this_pods_vmm(pod, args.pid, "attach")?;
        enter::attach(pod.dir(), &args.app, args.attach).map_err(Stage1Error::failed)
    }
    /// A mutable pod's app request over the exec channel (guest-init's exec service on
    /// vsock), as `enter` reaches it. `app_add`'s volumes are attached first in the jailed
    /// VMM's mount namespace, beneath the share (the app's root at
    /// `/pod/stage1/rootfs/opt/stage2/<app>/rootfs` there), `nosuid,nodev` as the jail makes the
    /// pod's other mounts; the virtio-fs share then serves them and guest-init binds them in the
    /// guest as it sets the app up.
    fn app(&self, pod: &PodContext, entry: Entrypoint, args: &AppArgs) -> Result<i32, Stage1Error> {
        let req = stage1_common::app::request_for(entry, args).ok_or_else(|| {
            Stage1Error::Refused(format!("{} is not an app entrypoint", entry.name()))
        })?;
        let stream = enter::open_when_up(pod.dir()).map_err(Stage1Error::failed)?;
        if args.has_trees() {
            let pid = pod.read_pid().map_err(Stage1Error::failed)?;
            this_pods_vmm(pod, pid, "attach volumes")?;
            let in_jail = pod_abi::paths::PodPaths::new(jail::POD_IN_JAIL);
            let root = in_jail.app_rootfs(&args.app);
            let attrs =
                pod_abi::mount_api::MOUNT_ATTR_NOSUID | pod_abi::mount_api::MOUNT_ATTR_NODEV;
            stage1_common::app::attach_mounts(pid, &in_jail.stage1_rootfs(), &root, args, attrs)
                .map_err(Stage1Error::failed)?;
        }
        stage1_common::app::send_request(stream, &req).map_err(Stage1Error::failed)?;
        Ok(0)
    }
}

/// Refuses to `what` unless `pid` is this pod's VMM (its command line ends with the pod's UUID,
/// the pod directory's name).
fn this_pods_vmm(pod: &PodContext, pid: i32, what: &str) -> Result<(), Stage1Error> {
    match stop::verify_vmm(pid, &pod.uuid()) {
        Some(why) => Err(Stage1Error::Refused(format!("refusing to {what}: {why}"))),
        None => Ok(()),
    }
}
