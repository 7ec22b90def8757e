//! App status files: `stage1/rootfs/rkt/status/<app>` holds the decimal exit code, written
//! atomically by guest-init; `rkt/errors/<app>` holds a one-line reason when the app could not
//! be set up or started. Also the rule that turns app statuses into the pod's exit code.
//!
//! The host reads them with [`crate::podfile::read_beneath`]: beneath the stage1 root, no
//! symlinks, regular files of at most [`SMALL_FILE_MAX`] bytes.

use std::path::{Path, PathBuf};

use crate::paths::{
    ERRORS_DIR_IN_STAGE1, GUEST_FAILURE_IN_STAGE1, POD_APP_STATUSES, STATUS_DIR_IN_STAGE1,
};
use crate::podfile::{first_line, read_beneath, PodFileError, SMALL_FILE_MAX};

/// Exit code recorded when guest-init could not set an app up (missing binary, bad user, ...).
pub const SETUP_FAILED: i32 = 254;
/// Exit code recorded when an app was killed by a signal: 128 + signal number, as a shell does.
pub const SIGNAL_BASE: i32 = 128;
/// What the host writes to the pod's `failure` file, before guest-init's own reason, when
/// guest-init failed as a whole (`guest-init failed: <reason>`).
pub const GUEST_INIT_FAILED: &str = "guest-init failed";

/// Parses the contents of a status file.
pub fn parse_status(text: &str) -> Option<i32> {
    text.trim().parse().ok()
}

/// The app's status from the stage1 root: `Ok(None)` if the app has not exited (no file);
/// an error if the pod planted something other than a small regular file there, or garbage.
pub fn app_status(stage1_root: &Path, app: &str) -> Result<Option<i32>, PodFileError> {
    let rel = Path::new(STATUS_DIR_IN_STAGE1).join(app);
    match read_beneath(stage1_root, &rel, SMALL_FILE_MAX) {
        Ok(b) => {
            parse_status(&String::from_utf8_lossy(&b))
                .map(Some)
                .ok_or(PodFileError::Invalid {
                    what: "status",
                    path: stage1_root.join(rel),
                })
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Longest [`POD_APP_STATUSES`] file read, in bytes.
const PUBLISHED_MAX: usize = 256 * 1024;

/// Writes the statuses the host side of stage1 read when the pod ended (`codes` in `apps`
/// order, `None` for an app that never reported) to the pod directory's [`POD_APP_STATUSES`],
/// which members of the `rkt` group can read while the stage1 root stays root's. Not synced:
/// guest-init's own files, which it syncs, stay the record root reads.
pub fn publish(pod_dir: &Path, apps: &[&str], codes: &[Option<i32>]) -> std::io::Result<()> {
    let mut text = String::new();
    for (a, c) in apps.iter().zip(codes) {
        if let Some(c) = c {
            text.push_str(&format!("{a}={c}\n"));
        }
    }
    crate::podfile::write_atomic_unsynced(&pod_dir.join(POD_APP_STATUSES), text.as_bytes())
}

/// The statuses [`publish`] recorded, `(app, code)` in app order; empty if it has not (the pod
/// has not ended) or the file is not a small regular file.
pub fn published(pod_dir: &Path) -> Vec<(String, i32)> {
    let Ok(b) = read_beneath(pod_dir, Path::new(POD_APP_STATUSES), PUBLISHED_MAX) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&b)
        .lines()
        .filter_map(|l| {
            let (name, code) = l.split_once('=')?;
            Some((name.to_string(), parse_status(code)?))
        })
        .collect()
}

/// Reads `<status_dir>/<app>`; `None` if the app has not exited (no file), or the file is not a
/// small regular file, or it is garbled. When `status_dir` ends with `rkt/status` (as
/// [`crate::paths::PodPaths::status_dir`] does), the part above it is the trusted root and
/// `rkt/status/<app>` is resolved beneath it without symlinks; otherwise only `<app>` is.
pub fn read_app_status(status_dir: &Path, app: &str) -> Option<i32> {
    let (root, rel) = split_trusted(status_dir, STATUS_DIR_IN_STAGE1);
    match read_beneath(&root, &rel.join(app), SMALL_FILE_MAX) {
        Ok(b) => parse_status(&String::from_utf8_lossy(&b)),
        Err(_) => None,
    }
}

/// `dir` split into (trusted root, pod-controlled suffix) when it ends with `suffix`.
fn split_trusted(dir: &Path, suffix: &str) -> (PathBuf, PathBuf) {
    let n = Path::new(suffix).components().count();
    if dir.ends_with(suffix) {
        let mut root = dir.to_path_buf();
        for _ in 0..n {
            root.pop();
        }
        return (root, PathBuf::from(suffix));
    }
    (dir.to_path_buf(), PathBuf::new())
}

/// The one-line reason guest-init recorded for app `app` (`rkt/errors/<app>`), if any.
pub fn app_error(stage1_root: &Path, app: &str) -> Result<Option<String>, PodFileError> {
    let rel = Path::new(ERRORS_DIR_IN_STAGE1).join(app);
    optional_line(stage1_root, &rel)
}

/// guest-init's own failure reason (`rkt/failure`), if it wrote one; an empty file reads as
/// "no reason given".
pub fn guest_init_failure(stage1_root: &Path) -> Result<Option<String>, PodFileError> {
    Ok(
        optional_line(stage1_root, Path::new(GUEST_FAILURE_IN_STAGE1))?.map(|l| {
            if l.is_empty() {
                "no reason given".to_string()
            } else {
                l
            }
        }),
    )
}

/// The line the host writes to the pod's `failure` file for guest-init's `reason`.
pub fn guest_init_failure_line(reason: &str) -> String {
    format!("{GUEST_INIT_FAILED}: {reason}")
}

fn optional_line(root: &Path, rel: &Path) -> Result<Option<String>, PodFileError> {
    match read_beneath(root, rel, SMALL_FILE_MAX) {
        Ok(b) => Ok(Some(first_line(&b))),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
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
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::paths::PodPaths;
    use std::os::unix::fs::symlink;

    #[test]
    fn first_non_zero_in_app_order() {
        assert_eq!(pod_exit_code(&[Some(0), Some(3), Some(4)]), 3);
        assert_eq!(pod_exit_code(&[Some(0), Some(0)]), 0);
        assert_eq!(pod_exit_code(&[Some(0), None]), SETUP_FAILED);
        assert_eq!(parse_status("42\n"), Some(42));
        assert_eq!(parse_status("x"), None);
    }

    #[test]
    fn statuses_are_read_beneath_the_stage1_root() {
        let d = tempfile::tempdir().unwrap();
        let pod = PodPaths::new(d.path());
        std::fs::create_dir_all(pod.status_dir()).unwrap();
        std::fs::write(pod.app_status("a"), "3\n").unwrap();
        std::fs::write(pod.app_status("bad"), "x\n").unwrap();
        std::fs::write(d.path().join("secret"), "7\n").unwrap();
        symlink(d.path().join("secret"), pod.app_status("link")).unwrap();
        let root = pod.stage1_rootfs();
        assert_eq!(app_status(&root, "a").unwrap(), Some(3));
        assert_eq!(app_status(&root, "none").unwrap(), None);
        let e = app_status(&root, "bad").unwrap_err();
        assert!(
            e.to_string().starts_with("pod wrote an invalid status"),
            "{e}"
        );
        assert!(matches!(
            app_status(&root, "link"),
            Err(PodFileError::Symlink(_))
        ));
        assert_eq!(read_app_status(&pod.status_dir(), "a"), Some(3));
        publish(d.path(), &["a", "b", "c"], &[Some(3), None, Some(0)]).unwrap();
        assert_eq!(
            published(d.path()),
            vec![("a".to_string(), 3), ("c".to_string(), 0)]
        );
        assert_eq!(read_app_status(&pod.status_dir(), "link"), None);
        // A pod that turns `rkt` into a symlink to a host directory gets nothing read.
        let host = d.path().join("host");
        std::fs::create_dir_all(host.join("status")).unwrap();
        std::fs::write(host.join("status/h"), "9\n").unwrap();
        std::fs::remove_dir_all(root.join("rkt")).unwrap();
        symlink(&host, root.join("rkt")).unwrap();
        assert_eq!(read_app_status(&pod.status_dir(), "h"), None);
        assert!(app_status(&root, "h").is_err());
    }

    #[test]
    fn guest_init_failure_is_one_line() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(guest_init_failure(d.path()).unwrap(), None);
        std::fs::create_dir(d.path().join("rkt")).unwrap();
        std::fs::write(d.path().join(GUEST_FAILURE_IN_STAGE1), "bad plan\nmore\n").unwrap();
        assert_eq!(
            guest_init_failure(d.path()).unwrap().as_deref(),
            Some("bad plan")
        );
        std::fs::write(d.path().join(GUEST_FAILURE_IN_STAGE1), "").unwrap();
        assert_eq!(
            guest_init_failure(d.path()).unwrap().as_deref(),
            Some("no reason given")
        );
        assert_eq!(guest_init_failure_line("x"), "guest-init failed: x");
        assert_eq!(app_error(d.path(), "a").unwrap(), None);
    }
}
