//! The kvm flavor's stage1 entrypoints: `run`, `stop`, `gc`, `enter` (the stage1 image links
//! `/run`, `/stop`, `/gc`, `/enter` to the `stage1-vmm` binary, which dispatches on argv\[0\];
//! see [`dispatch`]). All run with cwd = the pod directory, as stage0 starts them.
//!
//! - [`run`]: sizes the VM from the launch plan ([`sizing`]), boots the pod's kernel with the
//!   pod's `stage1/rootfs` as the guest's root over virtio-fs, app stdout/stderr on two
//!   virtio-consoles, the kernel console on COM1 (-> stderr) and the guest-init control channel
//!   on COM2, jailed in its own mount namespace ([`jail`]); turns the VM's end into the pod's exit
//!   code or a `failure` file. Signals and the terminal: [`control`].
//! - [`stop`]: SIGTERM (graceful, through guest-init) or SIGKILL to the verified VMM process.
//! - `gc`: nothing VM-specific is left behind after the VMM exits; idempotent.
//! - `enter`: needs an exec channel into the guest, which does not exist yet: a clear error.
//!
//! See docs/kvm-stage1.md.

pub mod control;
pub mod jail;
pub mod run;
pub mod sizing;
pub mod stop;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use pod_abi::stage1::ArgsError;

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
    /// Creating or running the VM failed.
    #[error(transparent)]
    Vmm(#[from] crate::vmm::VmmError),
    /// The virtio-fs share could not be set up.
    #[error("cannot share the pod's stage1 root")]
    Fs(#[from] crate::devices::virtio::fs::FsError),
    /// A virtio transport could not be created.
    #[error("cannot create a virtio transport")]
    Transport(#[source] crate::devices::virtio::mmio::TransportError),
    /// Setting up the host side (pipes, signals, threads) failed.
    #[error("{0}")]
    Host(&'static str, #[source] std::io::Error),
    /// The pod is not running or its pid is not our VMM.
    #[error("{0}")]
    NotOurs(String),
    /// `enter` is not implemented for VMs.
    #[error("rkt enter is not supported by the kvm stage1 yet")]
    EnterUnsupported,
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

/// Writes `data` to `path` atomically (temporary file in the same directory, then rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Where [`record_failure`] writes (the pod's `failure` file; moves when the VMM is jailed).
static FAILURE_PATH: Mutex<Option<PathBuf>> = Mutex::new(None);

fn failure_path() -> Option<PathBuf> {
    FAILURE_PATH
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// Sets the file [`record_failure`] writes to.
pub fn set_failure_path(p: PathBuf) {
    *FAILURE_PATH.lock().unwrap_or_else(|p| p.into_inner()) = Some(p);
}

/// Records why the pod failed: one line in the pod's `failure` file and on stderr.
pub fn record_failure(reason: &str) {
    let line = reason.lines().next().unwrap_or("unknown failure").trim();
    eprintln!("{PROG}: {line}");
    if let Some(p) = failure_path() {
        if let Err(e) = write_atomic(&p, format!("{line}\n").as_bytes()) {
            eprintln!("{PROG}: cannot write {}: {e}", p.display());
        }
    }
}

/// The error and its causes on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Runs entrypoint `cmd` (`run`, `stop`, `gc` or `enter`) with `args` (argv without argv\[0\])
/// and returns the process exit code; errors are printed here.
pub fn dispatch(cmd: &str, args: Vec<String>) -> i32 {
    let debug = args.iter().any(|a| a == "--debug");
    let res = match cmd {
        "run" => pod_abi::stage1::RunArgs::parse(args)
            .map_err(PodError::from)
            .and_then(|a| run::run(&a)),
        "stop" => pod_abi::stage1::StopArgs::parse(args)
            .map_err(PodError::from)
            .and_then(|a| stop::stop(&a)),
        "gc" => stop::gc(args),
        "enter" => pod_abi::stage1::EnterArgs::parse(args)
            .map_err(PodError::from)
            .and_then(|a| stop::enter(&a)),
        other => Err(PodError::Args(ArgsError::UnknownFlag(other.to_string()))),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            let msg = error_chain(&e);
            match &e {
                PodError::Args(_) => {
                    eprintln!("{PROG} {cmd}: {msg}");
                    pod_abi::exit::USAGE
                }
                PodError::EnterUnsupported | PodError::NotOurs(_) => {
                    eprintln!("{PROG} {cmd}: {msg}");
                    pod_abi::exit::FAILURE
                }
                _ if cmd == "run" => {
                    control::restore_terminal();
                    record_failure(&msg);
                    if debug {
                        eprintln!("{PROG} run: {e:?}");
                    }
                    pod_abi::exit::STAGE1_FAILED
                }
                _ => {
                    eprintln!("{PROG} {cmd}: {msg}");
                    pod_abi::exit::FAILURE
                }
            }
        }
    }
}
