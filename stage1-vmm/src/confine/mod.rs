//! Least privilege for the VMM process, as Firecracker's jailer and cloud-hypervisor do it:
//! `PR_SET_NO_NEW_PRIVS`, a capability bounding set reduced process-wide, and, per thread, a
//! seccomp filter and capability sets chosen by what the thread does ([`Profile`], one per
//! [`ThreadKind`] and one for the main thread once the VM is set up).
//!
//! Order (see `pod::run`): [`init`] runs first, on the single-threaded process (the SIGSYS
//! handler and the bounding set are process-wide, and threads inherit what exists when they are
//! created); every thread started by [`crate::threads::spawn`] then confines itself before its
//! body ([`thread`]); [`jailed`] moves the violation report into the jail; the main thread
//! confines itself last ([`main_thread`]), after it has started every other thread (a filter is
//! inherited by the threads its owner creates, so the main thread's must come after them).
//!
//! A forbidden system call does not run: the filter traps it (`SECCOMP_RET_TRAP`), and the
//! SIGSYS handler writes `seccomp: thread <kind> made forbidden syscall <nr> (<name>)` on stderr
//! and into the pod's `failure` file, then ends the process with
//! `pod_abi::exit::STAGE1_FAILED` (cloud-hypervisor's model). The tables are in [`filters`];
//! docs/vmm.md ("Confinement") has them as a table.
//!
//! `RKT_VMM_SECCOMP=0` ([`SECCOMP_ENV`]) turns the seccomp filters off (capabilities and
//! no-new-privs stay): a debugging and benchmarking knob that prints a loud warning.

pub mod caps;
pub mod filters;
mod sigsys;

use std::io;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use crate::threads::ThreadKind;

pub use filters::Profile;

/// Set to `0` to run without seccomp filters (debugging, benchmarks); anything else, or unset,
/// keeps them on.
pub const SECCOMP_ENV: &str = "RKT_VMM_SECCOMP";

/// Whether confinement is active in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// [`init`] was not called (the `boot` debug command, unit tests): threads run unconfined.
    Off = 0,
    /// Filters and capabilities per thread.
    On = 1,
    /// Capabilities per thread, no seccomp filters (`RKT_VMM_SECCOMP=0`).
    NoSeccomp = 2,
}

static MODE: AtomicU8 = AtomicU8::new(Mode::Off as u8);
/// The compiled filters, one per profile, built once by [`init`].
static PROGRAMS: OnceLock<filters::Programs> = OnceLock::new();

/// The current mode.
pub fn mode() -> Mode {
    match MODE.load(Ordering::SeqCst) {
        1 => Mode::On,
        2 => Mode::NoSeccomp,
        _ => Mode::Off,
    }
}

/// Errors confining the VMM.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// A system call failed.
    #[error("{0}")]
    Sys(&'static str, #[source] io::Error),
    /// A capability operation failed.
    #[error("{0}: {1}")]
    Caps(&'static str, String),
    /// A seccomp filter could not be built or installed.
    #[error("seccomp filter for {0}: {1}")]
    Seccomp(&'static str, String),
}

/// The profile (filter and capabilities) of a thread of `kind`.
pub fn profile_of(kind: ThreadKind) -> Profile {
    use crate::devices::virtio::{
        TYPE_BALLOON, TYPE_BLOCK, TYPE_FS, TYPE_NET, TYPE_RNG, TYPE_VSOCK,
    };
    match kind {
        ThreadKind::Vcpu => Profile::Vcpu,
        ThreadKind::SnapshotVcpu => Profile::SnapshotVcpu,
        ThreadKind::DeviceWorker(TYPE_FS) => Profile::FsWorker,
        ThreadKind::DeviceWorker(TYPE_BLOCK) => Profile::BlockWorker,
        ThreadKind::DeviceWorker(TYPE_NET) => Profile::NetWorker,
        ThreadKind::DeviceWorker(TYPE_VSOCK) => Profile::VsockWorker,
        ThreadKind::DeviceWorker(TYPE_BALLOON) => Profile::BalloonWorker,
        ThreadKind::DeviceWorker(TYPE_RNG) => Profile::RngWorker,
        // The console, and any other device: queues and its own fds, no file system.
        ThreadKind::DeviceWorker(_) => Profile::ConsoleWorker,
        ThreadKind::Console => Profile::Console,
        ThreadKind::Signals => Profile::Signals,
        ThreadKind::Stdin => Profile::Stdin,
        ThreadKind::Sampler => Profile::Sampler,
    }
}

/// Step 0 of a pod (single-threaded, before anything else): no new privileges, the bounding set
/// reduced to what any thread keeps ([`caps::PROCESS_BOUNDING`]), the SIGSYS handler, the
/// violation report pointed at `report_dir` (the pod directory), the filters compiled. From here
/// on every new thread is confined.
pub fn init(report_dir: &Path) -> Result<Mode, ConfineError> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(ConfineError::Sys(
            "prctl(PR_SET_NO_NEW_PRIVS)",
            io::Error::last_os_error(),
        ));
    }
    caps::reduce_bounding(caps::PROCESS_BOUNDING)?;
    let dir = open_dir(report_dir)?;
    sigsys::set_report_fd(dir.into_raw_fd());
    sigsys::install_handler()?;
    let mode = if std::env::var_os(SECCOMP_ENV).is_some_and(|v| v == "0") {
        eprintln!(
            "stage1-vmm: WARNING: {SECCOMP_ENV}=0: the VMM runs WITHOUT seccomp filters; \
             a guest that takes over a VMM thread can make any system call. Debugging and \
             benchmarks only."
        );
        Mode::NoSeccomp
    } else {
        Mode::On
    };
    let programs = filters::compile_all(sigsys::report_fd(), std::process::id())?;
    let _ = PROGRAMS.set(programs);
    MODE.store(mode as u8, Ordering::SeqCst);
    Ok(mode)
}

/// After the jail: the violation report now goes through `pod_in_jail` (the same directory,
/// reopened inside the jail, so the descriptor the filters allow never leads outside it).
pub fn jailed(pod_in_jail: &Path) -> Result<(), ConfineError> {
    if mode() == Mode::Off {
        return Ok(());
    }
    let dir = open_dir(pod_in_jail)?;
    let target = sigsys::report_fd();
    // SAFETY: dup3 onto the descriptor this module reserved in `init`; it replaces it atomically.
    if unsafe { libc::dup3(dir.as_raw_fd(), target, libc::O_CLOEXEC) } < 0 {
        return Err(ConfineError::Sys(
            "dup3 of the report directory",
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn open_dir(p: &Path) -> Result<std::fs::File, ConfineError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(p)
        .map_err(|e| ConfineError::Sys("cannot open the pod directory for reports", e))
}

/// Confines the calling thread as a thread of `kind` (called by [`crate::threads::spawn`] before
/// the thread's body). A thread that cannot be confined ends the process.
pub fn thread(kind: ThreadKind) {
    apply_or_die(profile_of(kind));
}

/// Confines the main thread once it has started every other thread (vCPUs last): its capability
/// sets are emptied and its filter installed. Nothing when [`init`] was not called.
pub fn main_thread() {
    apply_or_die(Profile::Main);
}

/// As [`main_thread`], for the main thread of a snapshot-making VM (it also saves the VM).
pub fn snapshot_main_thread() {
    apply_or_die(Profile::SnapshotMain);
}

fn apply_or_die(profile: Profile) {
    let mode = mode();
    if mode == Mode::Off {
        return;
    }
    if let Err(e) = apply(profile, mode) {
        let msg = format!("cannot confine thread {}: {e}", profile.name());
        sigsys::record(&msg);
        // SAFETY: _exit ends the process at once; nothing runs unconfined.
        unsafe { libc::_exit(pod_abi::exit::STAGE1_FAILED) };
    }
}

/// Capabilities first (capset and prctl are not in every filter), then the filter.
fn apply(profile: Profile, mode: Mode) -> Result<(), ConfineError> {
    caps::apply(profile.caps())?;
    sigsys::set_thread_profile(profile);
    if mode == Mode::On {
        let prog = PROGRAMS
            .get()
            .and_then(|p| p.get(profile))
            .ok_or(ConfineError::Seccomp(profile.name(), "not compiled".into()))?;
        seccompiler::apply_filter(prog)
            .map_err(|e| ConfineError::Seccomp(profile.name(), e.to_string()))?;
    }
    Ok(())
}

/// Records `reason` as the pod's failure (stderr and the `failure` file) from any thread, confined
/// or not: through the report directory when [`init`] ran, else as `stage1_common` does.
pub fn record_failure(reason: &str) {
    if mode() == Mode::Off {
        crate::pod::record_failure(reason);
    } else {
        sigsys::record(reason);
    }
}

#[cfg(test)]
mod tests;
