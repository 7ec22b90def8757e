//! The one usage error and the one mapping from stage0 errors to rkt's exit codes
//! ([`pod_abi::exit`]).

use std::error::Error;

use pod_abi::exit;

use crate::fetch::FetchError;
use crate::pod::launch::LaunchError;
use crate::pod::ops::OpError;
use crate::pod::PodError;
use crate::store::StoreError;

/// A bad flag value or argument found after parsing (exit code [`pod_abi::exit::USAGE`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// rkt's exit code for `err`: the first cause in its source chain that has one wins
/// (USAGE for bad flag values, POD_STATE for missing or wrong-state pods, IMAGE_NOT_FOUND
/// for missing images and files, BAD_IMAGE for invalid or hostile archives), else FAILURE.
pub fn exit_code(err: &(dyn Error + 'static)) -> i32 {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(code) = code_of(e) {
            return code;
        }
        cur = e.source();
    }
    exit::FAILURE
}

/// `err` and its causes joined with `": "` (what the pod's `failure` file records).
pub fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}

/// The exit code of one cause, if its type decides one. Wrappers delegate to the error they
/// wrap (a transparent variant's does not appear in the source chain; a boxed one appears as
/// a `Box`, which does not downcast to the error type).
fn code_of(e: &(dyn Error + 'static)) -> Option<i32> {
    if e.is::<UsageError>() {
        return Some(exit::USAGE);
    }
    if let Some(p) = e.downcast_ref::<PodError>() {
        return p.is_pod_state().then_some(exit::POD_STATE);
    }
    // stage1 selection boxes its fetch errors.
    let fetch = e
        .downcast_ref::<FetchError>()
        .or_else(|| e.downcast_ref::<Box<FetchError>>().map(|b| &**b));
    if let Some(f) = fetch {
        return fetch_code(f);
    }
    if let Some(s) = e.downcast_ref::<StoreError>() {
        return store_code(s);
    }
    if let Some(l) = e.downcast_ref::<LaunchError>() {
        return l.inner().and_then(code_of);
    }
    if let Some(o) = e.downcast_ref::<OpError>() {
        return o.inner().and_then(code_of);
    }
    if let Some(a) = e.downcast_ref::<crate::pod::mutable::AppError>() {
        return a.inner().and_then(code_of);
    }
    None
}

fn fetch_code(f: &FetchError) -> Option<i32> {
    if let Some(v) = f.trust_verdict() {
        return match v {
            trust::Verdict::Unsigned => Some(exit::UNSIGNED_IMAGE),
            trust::Verdict::BadSignature => Some(exit::BAD_SIGNATURE),
            trust::Verdict::UntrustedKey => Some(exit::UNTRUSTED_KEY),
            trust::Verdict::Other => None,
        };
    }
    if f.is_usage() {
        Some(exit::USAGE)
    } else if f.is_not_found() {
        Some(exit::IMAGE_NOT_FOUND)
    } else if f.is_bad_image() {
        Some(exit::BAD_IMAGE)
    } else {
        None
    }
}

fn store_code(s: &StoreError) -> Option<i32> {
    if matches!(s, StoreError::BadReference(_)) {
        Some(exit::USAGE)
    } else if s.is_not_found() {
        Some(exit::IMAGE_NOT_FOUND)
    } else if s.is_bad_image() {
        Some(exit::BAD_IMAGE)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] PodError);

    #[test]
    fn codes_follow_the_chain() {
        let u = UsageError("bad".into());
        assert_eq!(exit_code(&u), exit::USAGE);
        let o = Outer(PodError::NotFound("x".into()));
        assert_eq!(exit_code(&o), exit::POD_STATE);
        assert_eq!(error_chain(&o), "outer: no pod matches \"x\"");
        let s = StoreError::NotFound("img".into());
        assert_eq!(exit_code(&s), exit::IMAGE_NOT_FOUND);
        let l = LaunchError::Pod(PodError::Locked("u".into()));
        assert_eq!(exit_code(&l), exit::POD_STATE);
        let o = OpError::Usage(UsageError("x".into()));
        assert_eq!(exit_code(&o), exit::USAGE);
        assert_eq!(exit_code(&PodError::Config("c".into())), exit::FAILURE);
    }
}
