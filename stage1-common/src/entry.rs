//! Entrypoint dispatch: our stage1 images link `/run`, `/stop`, `/gc` and `/enter` to one
//! binary, which picks the entrypoint from argv\[0\]'s basename, or from its first argument
//! (`stage1-ns run ...`, for tests). A flavor implements [`Stage1`]; [`dispatch`] parses the
//! arguments (`pod_abi::stage1`), installs the logger, runs the entrypoint with cwd as the pod,
//! prints an error once and maps it to the exit code ([`Stage1Error::exit_code`]).

use std::process::ExitCode;

use pod_abi::stage1::{AppArgs, AttachArgs, EnterArgs, Entrypoint, GcArgs, RunArgs, StopArgs};

use crate::error::chain;
use crate::{PodContext, Stage1Error};

/// A stage1 flavor's host side: only what differs between flavors.
pub trait Stage1 {
    /// Program name: the prefix of every message (`stage1-ns`).
    const NAME: &'static str;
    /// `run`: launch the pod and wait for it; returns the pod's exit code (see
    /// [`crate::pod::finish`]). The pod's `failure` file is already set for
    /// [`crate::pod::record_failure`].
    fn run(&self, pod: &PodContext, args: &RunArgs) -> Result<i32, Stage1Error>;
    /// `stop`: usually [`crate::stop::stop_verified`] with the flavor's process check.
    fn stop(&self, pod: &PodContext, args: &StopArgs) -> Result<i32, Stage1Error>;
    /// `gc`: remove what the flavor left on the host; idempotent.
    fn gc(&self, pod: &PodContext, args: &GcArgs) -> Result<i32, Stage1Error>;
    /// `enter`: run a command in an app of the running pod; returns its exit code.
    fn enter(&self, pod: &PodContext, args: &EnterArgs) -> Result<i32, Stage1Error>;
    /// `attach`: proxy the terminal or the streams of an app of the running pod (started with
    /// `--stdin`/`--stdout`/`--stderr` of `stream` or `tty`); returns 0 once they closed.
    /// Refused by default.
    fn attach(&self, pod: &PodContext, args: &AttachArgs) -> Result<i32, Stage1Error> {
        let _ = (pod, args);
        Err(Stage1Error::Refused(format!(
            "{} does not implement attach",
            Self::NAME
        )))
    }
    /// `app/add`, `app/start`, `app/stop`, `app/rm` of a mutable pod: usually
    /// [`crate::app::send_request`] on the flavor's exec channel. Refused by default.
    fn app(&self, pod: &PodContext, entry: Entrypoint, args: &AppArgs) -> Result<i32, Stage1Error> {
        let _ = (pod, args);
        Err(Stage1Error::Refused(format!(
            "{} does not implement {}",
            Self::NAME,
            entry.name()
        )))
    }
}

/// The entrypoint `argv` asks for and its arguments: argv\[0\]'s basename, else argv\[1\];
/// `None` if neither names one.
pub fn select(mut argv: Vec<String>) -> Option<(Entrypoint, Vec<String>)> {
    let base = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(e) = Entrypoint::from_name(&base) {
        return Some((e, argv.split_off(1.min(argv.len()))));
    }
    let e = argv.get(1).and_then(|a| Entrypoint::from_name(a))?;
    Some((e, argv.split_off(2)))
}

/// Runs `entry` of flavor `s` with `args` (argv without the entrypoint) and returns the
/// process exit code; errors are printed here, once.
pub fn dispatch<S: Stage1>(s: &S, entry: Entrypoint, args: Vec<String>) -> i32 {
    let debug = args.iter().any(|a| a == "--debug");
    crate::log::init(S::NAME, debug);
    let pod = match PodContext::from_cwd() {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "{} {}: cannot get the current directory: {e}",
                S::NAME,
                entry.name()
            );
            return pod_abi::exit::FAILURE;
        }
    };
    let res = match entry {
        Entrypoint::Run => RunArgs::parse(args).map_err(Into::into).and_then(|a| {
            crate::pod::set_failure_path(pod.paths().failure());
            s.run(&pod, &a)
        }),
        Entrypoint::Stop => StopArgs::parse(args)
            .map_err(Into::into)
            .and_then(|a| s.stop(&pod, &a)),
        Entrypoint::Gc => GcArgs::parse(args)
            .map_err(Into::into)
            .and_then(|a| s.gc(&pod, &a)),
        Entrypoint::Enter => EnterArgs::parse(args)
            .map_err(Into::into)
            .and_then(|a| s.enter(&pod, &a)),
        Entrypoint::Attach => AttachArgs::parse(args)
            .map_err(Into::into)
            .and_then(|a| s.attach(&pod, &a)),
        Entrypoint::AppAdd | Entrypoint::AppStart | Entrypoint::AppStop | Entrypoint::AppRm => {
            AppArgs::parse(args)
                .map_err(Into::into)
                .and_then(|a| s.app(&pod, entry, &a))
        }
    };
    match res {
        Ok(code) => code,
        Err(e) => report(S::NAME, entry, &e, debug),
    }
}

/// Prints `e` once and returns its exit code; a failed `run` restores the terminal and
/// records the reason in the pod's `failure` file.
fn report(name: &str, entry: Entrypoint, e: &Stage1Error, debug: bool) -> i32 {
    let msg = chain(e);
    match (e, entry) {
        (Stage1Error::Usage(_), _) => eprintln!("{name} {}: {msg}", entry.name()),
        (_, Entrypoint::Run) => {
            crate::terminal::restore();
            crate::pod::record_failure(&msg);
            if debug {
                eprintln!("{name} run: {e:?}");
            }
        }
        _ => eprintln!("{name} {}: {msg}", entry.name()),
    }
    e.exit_code(entry)
}

/// An exit code as the process's [`ExitCode`] (values outside 0..=255 become 255).
pub fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}

/// The whole `main` of a stage1 binary without other commands: select, dispatch, exit.
pub fn main<S: Stage1>(s: &S) -> ExitCode {
    match select(std::env::args().collect()) {
        Some((entry, args)) => exit_code(dispatch(s, entry, args)),
        None => {
            eprintln!(
                "usage: {} run|stop|gc|enter|attach|app_add|app_start|app_stop|app_rm ARGS...",
                S::NAME
            );
            exit_code(pod_abi::exit::USAGE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn selects_on_argv0_or_first_argument() {
        assert_eq!(
            select(v(&["/stage1/rootfs/run", "--debug", "u"])),
            Some((Entrypoint::Run, v(&["--debug", "u"])))
        );
        assert_eq!(
            select(v(&["stage1-ns", "gc", "u"])),
            Some((Entrypoint::Gc, v(&["u"])))
        );
        assert_eq!(select(v(&["stage1-vmm", "boot", "--kernel=k"])), None);
        assert_eq!(select(v(&["stage1-ns"])), None);
        assert_eq!(select(v(&[])), None);
    }
}
