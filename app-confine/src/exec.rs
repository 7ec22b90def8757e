//! The last steps before an app's code runs: no inherited descriptor beyond stdio
//! ([`close_inherited_fds`]) and `execve` with the app's exact environment and a PATH search
//! ([`Command::exec`]), failing with the shell's exit codes.

use std::ffi::CString;

use pod_abi::exit::{APP_NOT_EXECUTABLE, APP_NOT_FOUND};
use pod_abi::status::SETUP_FAILED;

/// Highest fd closed by the fallback loop when `close_range(2)` is unavailable.
const MAX_STRAY_FD: i32 = 1024;

/// Closes every fd above stderr (whatever a caller leaked), so that app code never inherits
/// one: a leaked directory fd would reach outside the app root.
pub fn close_inherited_fds() {
    // SAFETY: close_range only closes descriptors; callers hold no fd >= 3 they still need.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if r != 0 {
        for fd in 3..MAX_STRAY_FD {
            let _ = nix::unistd::close(fd);
        }
    }
}

/// The exit code a shell would use for an exec errno.
pub fn exec_errno_code(errno: nix::errno::Errno) -> i32 {
    if errno == nix::errno::Errno::ENOENT {
        APP_NOT_FOUND
    } else {
        APP_NOT_EXECUTABLE
    }
}

/// A command ready for `execve` (C strings prepared before fork, so the child allocates
/// nothing it could fail on).
#[derive(Debug, Clone)]
pub struct Command {
    argv: Vec<CString>,
    env: Vec<CString>,
    path: String,
}

impl Command {
    /// `argv` with exactly `env` (`PATH` from it, else the appc default, for the search).
    /// Errors: an empty argv, a NUL byte.
    pub fn new(argv: &[String], env: &[(String, String)]) -> Result<Self, String> {
        let cs = |s: &str| CString::new(s).map_err(|_| format!("NUL byte in {s:?}"));
        if argv.is_empty() {
            return Err("empty exec".into());
        }
        let argv = argv.iter().map(|a| cs(a)).collect::<Result<Vec<_>, _>>()?;
        let cenv = env
            .iter()
            .map(|(k, v)| cs(&format!("{k}={v}")))
            .collect::<Result<Vec<_>, _>>()?;
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| pod_abi::plan::DEFAULT_PATH.to_string());
        Ok(Command {
            argv,
            env: cenv,
            path,
        })
    }

    /// `execve`, with a PATH search like `execvp` when argv\[0\] has no `/`. Returns only on
    /// failure: the exit code (127 not found, 126 not executable) and the reason.
    pub fn exec(&self) -> (i32, String) {
        let Some(arg0) = self.argv.first() else {
            return (SETUP_FAILED, "empty exec".into());
        };
        let name = arg0.to_string_lossy().into_owned();
        if name.contains('/') {
            let e = nix::unistd::execve(arg0, &self.argv, &self.env)
                .err()
                .unwrap_or(nix::errno::Errno::EIO);
            return (exec_errno_code(e), format!("exec {name}: {}", e.desc()));
        }
        let mut denied = None;
        for dir in self.path.split(':').filter(|d| !d.is_empty()) {
            let Ok(full) = CString::new(format!("{dir}/{name}")) else {
                continue;
            };
            match nix::unistd::execve(&full, &self.argv, &self.env) {
                Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => {}
                Err(e) => denied = Some((full.to_string_lossy().into_owned(), e)),
                Ok(never) => match never {},
            }
        }
        match denied {
            Some((full, e)) => (exec_errno_code(e), format!("exec {full}: {}", e.desc())),
            None => (
                APP_NOT_FOUND,
                format!("exec {name:?}: executable file not found in $PATH"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_preparation() {
        assert_eq!(exec_errno_code(nix::errno::Errno::ENOENT), 127);
        assert_eq!(exec_errno_code(nix::errno::Errno::EACCES), 126);
        assert!(Command::new(&[], &[]).is_err());
        assert!(Command::new(&["a\0b".into()], &[]).is_err());
        let c = Command::new(&["x".into()], &[("PATH".into(), "/nowhere".into())]).unwrap();
        assert_eq!(c.path, "/nowhere");
        let (code, why) = c.exec();
        assert_eq!(code, 127, "{why}");
        assert_eq!(why, "exec \"x\": executable file not found in $PATH");
        let c = Command::new(&["/nonexistent/x".into()], &[]).unwrap();
        assert_eq!(c.exec().0, 127);
    }
}
