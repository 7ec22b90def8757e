//! Exit codes of `rkt` and of the stage1 entrypoints (documented and stable).
//!
//! `rkt run` / `run-prepared` exit with the pod's exit code (the first non-zero app status in
//! app order), so codes below are used only when rkt itself fails before or around the pod.

/// Generic failure of a command (I/O, store, ...).
pub const FAILURE: i32 = 1;
/// Bad command line: unknown flag, missing argument (as clap and rkt).
pub const USAGE: i32 = 2;
/// The image was not found / could not be fetched.
pub const IMAGE_NOT_FOUND: i32 = 3;
/// The image or manifest is invalid or hostile.
pub const BAD_IMAGE: i32 = 4;
/// The pod was not found or is in the wrong state for the command.
pub const POD_STATE: i32 = 5;
/// The image has no signature (and `--insecure-options=image` was not given).
pub const UNSIGNED_IMAGE: i32 = 6;
/// The image's signature is malformed, does not match, or its key is revoked, expired or
/// rejected by policy (e.g. SHA-1).
pub const BAD_SIGNATURE: i32 = 7;
/// The image is signed by a key not trusted for its name (see `rkt trust`).
pub const UNTRUSTED_KEY: i32 = 8;
/// The stage1 failed before the apps ran (VM could not boot, namespaces failed, ...).
pub const STAGE1_FAILED: i32 = 125;
/// The app's binary could not be executed (as a shell: not executable).
pub const APP_NOT_EXECUTABLE: i32 = 126;
/// The app's binary was not found (as a shell).
pub const APP_NOT_FOUND: i32 = 127;
