//! stage1-ns: the host side of the namespace stage1 flavor. One binary, dispatched by
//! `stage1-common` on the basename of argv\[0\] (`run`, `stop`, `gc`, `enter`, `attach` are symlinks
//! to it in the stage1 image) or on its first argument (`stage1-ns run ...`, for tests); as
//! `rkt-apps-reaper` it is guest-init's reaper of an ns pod's apps' PID namespace, executed
//! afresh (`guest_init::reaper_main`).

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod app;
mod attach;
mod enter;
mod ns;
mod run;
mod stdio;
mod stop;

use std::process::ExitCode;

use pod_abi::stage1::{AppArgs, AttachArgs, EnterArgs, Entrypoint, GcArgs, RunArgs, StopArgs};
use stage1_common::{PodContext, Stage1, Stage1Error};

/// The namespace flavor.
struct Ns;

impl Stage1 for Ns {
    const NAME: &'static str = "stage1-ns";
    fn run(&self, pod: &PodContext, args: &RunArgs) -> Result<i32, Stage1Error> {
        let res = run::run(pod, args).map_err(Stage1Error::failed);
        // The pod has ended: its metadata registration goes with it. (The kvm flavor cannot:
        // its confined VMM sees no socket outside the pod; stage0's rm and gc unregister.)
        if args.mds_token.is_some() {
            stage1_common::metadata::unregister(&args.uuid);
        }
        pod_abi::trace::phase("stage1-ns", "exit");
        res
    }
    fn stop(&self, pod: &PodContext, args: &StopArgs) -> Result<i32, Stage1Error> {
        stage1_common::stop::stop_verified(pod, args, stop::verify_guest_init)
    }
    fn gc(&self, pod: &PodContext, args: &GcArgs) -> Result<i32, Stage1Error> {
        // Networks first, so that a cgroup failure never leaves rules and namespaces behind.
        let net = stage1_common::net::gc(pod.dir(), &args.uuid);
        stage1_common::cgroup::gc(pod.dir())
            .map_err(|e| Stage1Error::failed(format!("remove the pod cgroups: {e}")))?;
        net.map_err(|e| Stage1Error::failed(format!("tear down the pod's networks: {e}")))?;
        Ok(0)
    }
    fn enter(&self, pod: &PodContext, args: &EnterArgs) -> Result<i32, Stage1Error> {
        enter::enter(pod.dir(), args).map_err(Stage1Error::failed)
    }
    fn attach(&self, _pod: &PodContext, args: &AttachArgs) -> Result<i32, Stage1Error> {
        attach::attach(args).map_err(Stage1Error::failed)
    }
    fn app(&self, pod: &PodContext, entry: Entrypoint, args: &AppArgs) -> Result<i32, Stage1Error> {
        app::request(pod, entry, args)
    }
}

fn main() -> ExitCode {
    // guest-init's reaper of the apps' PID namespace, executed afresh (guest_init::pidns).
    if std::env::args_os()
        .next()
        .is_some_and(|a| a == guest_init::REAPER_ARGV0)
    {
        guest_init::reaper_main()
    }
    stage1_common::entry::main(&Ns)
}
