//! One module per command family. Commands return `anyhow::Result<i32>` (the exit code on
//! success paths, e.g. `rkt run` returns the pod's exit code).

pub mod fetch;
pub mod image;
pub mod pods;
pub mod run;
pub mod version;

use stage0::fetch::FetchError;
use stage0::store::StoreError;

/// Prints `rkt: <error>: <cause>: <cause>` once on stderr.
pub fn print_error(e: &anyhow::Error) {
    let mut msg = format!("rkt: {e}");
    for cause in e.chain().skip(1) {
        msg.push_str(&format!(": {cause}"));
    }
    eprintln!("{msg}");
}

/// A usage error detected after argument parsing (bad flag value): exit code USAGE.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Maps an error to rkt's documented exit codes (see `pod_abi::exit`): IMAGE_NOT_FOUND for
/// missing images and files, BAD_IMAGE for invalid or hostile archives, USAGE for bad flag
/// values, FAILURE otherwise.
pub fn exit_code_for(e: &anyhow::Error) -> i32 {
    use pod_abi::exit;
    for cause in e.chain() {
        if cause.downcast_ref::<UsageError>().is_some() {
            return exit::USAGE;
        }
        if let Some(f) = cause.downcast_ref::<FetchError>() {
            if f.is_usage() {
                return exit::USAGE;
            }
            if f.is_not_found() {
                return exit::IMAGE_NOT_FOUND;
            }
            if f.is_bad_image() {
                return exit::BAD_IMAGE;
            }
        }
        if let Some(s) = cause.downcast_ref::<StoreError>() {
            if matches!(s, StoreError::BadReference(_)) {
                return exit::USAGE;
            }
            if s.is_not_found() {
                return exit::IMAGE_NOT_FOUND;
            }
            if s.is_bad_image() {
                return exit::BAD_IMAGE;
            }
        }
    }
    exit::FAILURE
}
