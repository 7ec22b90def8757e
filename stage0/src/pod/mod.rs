//! Pods: lifecycle (state directories + flock), the `rkt run`/`prepare` command line, the pod
//! manifest, the on-disk layout (overlay mounts, volumes), the launch plan, launching
//! (`launch`), the operations on existing pods (`ops`: stop, rm, gc, enter, wait) and pod
//! status.

pub mod args;
pub mod export;
pub mod launch;
pub mod layout;
pub mod lifecycle;
pub mod manifest;
pub mod metadata;
pub mod mutable;
pub mod netopts;
pub mod ops;
pub mod overlay_support;
pub mod plan;
pub mod quota;
pub mod seccomp;
pub mod status;
pub mod syscall_groups;
pub mod syscalls;
pub mod tree_copy;

use std::path::{Path, PathBuf};

use pod_abi::paths::PodDirState;

pub use launch::{LaunchError, PreparedPod, RunOptions};
pub use lifecycle::{Pod, PodState, PodsDir};
pub use ops::OpError;

/// Errors of pod operations.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// A file-system operation failed.
    #[error("cannot {op} {path}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// No pod matches the UUID (prefix).
    #[error("no pod matches {0:?}")]
    NotFound(String),
    /// Several pods match the prefix.
    #[error("pod prefix {0:?} is ambiguous")]
    Ambiguous(String),
    /// Another process holds the pod lock.
    #[error("pod {0} is locked by another process")]
    Locked(String),
    /// A state change was attempted without the lock.
    #[error("pod {0} is not locked by this process")]
    NotLocked(String),
    /// The lifecycle does not allow this move.
    #[error("cannot move pod from {from:?} to {to:?}")]
    BadTransition {
        /// Current state directory.
        from: PodDirState,
        /// Requested state directory.
        to: PodDirState,
    },
    /// The pod is in the wrong state for the command.
    #[error("pod {uuid} is {state}, {wanted}")]
    WrongState {
        /// Pod UUID.
        uuid: String,
        /// Its state.
        state: PodState,
        /// What the command needs.
        wanted: &'static str,
    },
    /// A manifest in the pod is unreadable.
    #[error("invalid manifest {path}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: appc::ManifestError,
    },
    /// The pod's configuration is inconsistent (names, volumes, mounts ...).
    #[error("{0}")]
    Config(String),
    /// A mount failed.
    #[error("cannot mount {what} on {target}")]
    Mount {
        /// What was mounted.
        what: String,
        /// Where.
        target: PathBuf,
        /// Cause.
        #[source]
        source: nix::Error,
    },
    /// An unmount failed.
    #[error("cannot unmount {0}")]
    Unmount(PathBuf, #[source] nix::Error),
}

impl PodError {
    /// Shorthand for [`PodError::Io`].
    pub fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        PodError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether this error means "no such pod / wrong state" (rkt exit code
    /// [`pod_abi::exit::POD_STATE`]).
    pub fn is_pod_state(&self) -> bool {
        matches!(
            self,
            PodError::NotFound(_)
                | PodError::Ambiguous(_)
                | PodError::Locked(_)
                | PodError::WrongState { .. }
                | PodError::BadTransition { .. }
        )
    }
}
