//! Confining a process to an app of a pod, the one implementation shared by guest-init (every
//! app process and event handler) and the ns flavor's `enter` (the command `rkt enter` runs):
//!
//! 1. [`root::confine`]: a mount namespace of its own (mounts made slaves), the app root bound
//!    onto itself and `pivot_root`ed into, the old root detached, so nothing of the pod's
//!    stage1 tree stays reachable, whatever the process's capabilities;
//! 2. [`identity::Identity`]: the app's user, group, supplementary groups and capability sets
//!    from the launch plan ([`caps::app_sets`]: bounding set = the plan's list, a non-root
//!    user holds none unless retained), resolved against the app root and assumed in the
//!    right order;
//! 3. [`exec::Command`]: `execve` with the app's exact environment and a PATH search, failing
//!    with the shell's exit codes (127 not found, 126 not executable).
//!
//! [`enter::confine_and_exec`] chains them (with the app's cgroups) for a command `rkt enter`
//! runs, in both flavors; [`pidns`] joins the apps' own PID namespace of an ns pod.
//!
//! Dependencies stay light (nix, libc, the plan types, the capability table): guest-init is a
//! static PID 1.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod caps;
pub mod cgroup;
pub mod enter;
pub mod exec;
pub mod identity;
pub mod paths;
pub mod pidns;
pub mod root;
pub mod seccomp;
pub mod session;
pub mod user;
pub mod userns;

/// A failed step of confining a process: what was being done and the system's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{step}: {}", errno.desc())]
pub struct StepError {
    /// The step, e.g. `pivot_root`.
    pub step: String,
    /// Cause.
    pub errno: nix::errno::Errno,
}

impl StepError {
    /// `step` failed with `errno`.
    pub fn new(step: impl Into<String>, errno: nix::errno::Errno) -> Self {
        StepError {
            step: step.into(),
            errno,
        }
    }

    /// `step` failed with the I/O error `e`.
    pub fn io(step: impl Into<String>, e: &std::io::Error) -> Self {
        Self::new(
            step,
            nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        )
    }
}

/// `map_err` helper: the step that failed.
pub(crate) fn at(step: &str) -> impl FnOnce(nix::errno::Errno) -> StepError + '_ {
    move |e| StepError::new(step, e)
}
