//! The error an entrypoint returns, printed once as one chain and mapped to one exit code.

use pod_abi::stage1::{ArgsError, Entrypoint};

/// An entrypoint's failure.
#[derive(Debug, thiserror::Error)]
pub enum Stage1Error {
    /// Bad entrypoint arguments: exit [`pod_abi::exit::USAGE`].
    #[error(transparent)]
    Usage(#[from] ArgsError),
    /// The request was refused (the pod is not running, the pid is not ours, unsupported).
    #[error("{0}")]
    Refused(String),
    /// Anything else (the flavor's own error, with its causes).
    #[error(transparent)]
    Failed(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl Stage1Error {
    /// Wraps a flavor's error.
    pub fn failed(e: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        Stage1Error::Failed(e.into())
    }

    /// The exit code of entrypoint `entry` failing with this error: usage errors
    /// [`pod_abi::exit::USAGE`], a failed `run` [`pod_abi::exit::STAGE1_FAILED`] (the pod's
    /// `failure` file says why), everything else [`pod_abi::exit::FAILURE`].
    pub fn exit_code(&self, entry: Entrypoint) -> i32 {
        match (self, entry) {
            (Stage1Error::Usage(_), _) => pod_abi::exit::USAGE,
            (_, Entrypoint::Run) => pod_abi::exit::STAGE1_FAILED,
            _ => pod_abi::exit::FAILURE,
        }
    }
}

/// The error and its causes on one line (`a: b: c`).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn one_code_per_kind() {
        let usage = Stage1Error::from(ArgsError::MissingUuid);
        assert_eq!(usage.exit_code(Entrypoint::Run), pod_abi::exit::USAGE);
        let f = Stage1Error::failed(Outer(std::io::Error::from_raw_os_error(libc::ENOENT)));
        assert_eq!(f.exit_code(Entrypoint::Run), pod_abi::exit::STAGE1_FAILED);
        assert_eq!(f.exit_code(Entrypoint::Stop), pod_abi::exit::FAILURE);
        let r = Stage1Error::Refused("no".into());
        assert_eq!(r.exit_code(Entrypoint::Gc), pod_abi::exit::FAILURE);
        assert!(
            chain(&f).starts_with("outer: No such file"),
            "{}",
            chain(&f)
        );
    }
}
