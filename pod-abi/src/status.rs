//! App status files: `stage1/rootfs/rkt/status/<app>` holds the decimal exit code, written
//! atomically by guest-init; `rkt/errors/<app>` holds a one-line reason when the app could not
//! be set up or started. Also the rule that turns app statuses into the pod's exit code.

use std::path::Path;

/// Exit code recorded when guest-init could not set an app up (missing binary, bad user, ...).
pub const SETUP_FAILED: i32 = 254;
/// Exit code recorded when an app was killed by a signal: 128 + signal number, as a shell does.
pub const SIGNAL_BASE: i32 = 128;

/// Parses the contents of a status file.
pub fn parse_status(text: &str) -> Option<i32> {
    text.trim().parse().ok()
}

/// Reads `<status_dir>/<app>`; `None` if the app has not exited (no file) or it is garbled.
pub fn read_app_status(status_dir: &Path, app: &str) -> Option<i32> {
    std::fs::read_to_string(status_dir.join(app))
        .ok()
        .and_then(|t| parse_status(&t))
}

/// The pod's exit code from its apps' codes in app order: the first non-zero, else 0.
/// An app without a status counts as [`SETUP_FAILED`] (it never reported).
pub fn pod_exit_code(codes: &[Option<i32>]) -> i32 {
    codes
        .iter()
        .map(|c| c.unwrap_or(SETUP_FAILED))
        .find(|&c| c != 0)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_non_zero_in_app_order() {
        assert_eq!(pod_exit_code(&[Some(0), Some(3), Some(4)]), 3);
        assert_eq!(pod_exit_code(&[Some(0), Some(0)]), 0);
        assert_eq!(pod_exit_code(&[Some(0), None]), SETUP_FAILED);
        assert_eq!(parse_status("42\n"), Some(42));
        assert_eq!(parse_status("x"), None);
    }
}
