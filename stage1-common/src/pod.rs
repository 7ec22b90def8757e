//! The pod an entrypoint works on (cwd = the pod directory, as stage0 starts every
//! entrypoint): the lock fd inherited from stage0, the `pid` file, the pod's `failure` file and
//! the pod's exit code from its apps' statuses ([`finish`]).

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use pod_abi::paths::{PodPaths, PID_FILE};
use pod_abi::plan::Plan;
use pod_abi::podfile::{read_beneath, PodFileError, PID_FILE_MAX};
use pod_abi::stage1::ENV_LOCK_FD;
use pod_abi::status::{app_status, guest_init_failure, guest_init_failure_line, pod_exit_code};

use crate::log::prog;

/// The pod directory an entrypoint runs in.
#[derive(Debug, Clone)]
pub struct PodContext {
    paths: PodPaths,
}

impl PodContext {
    /// The pod in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PodContext {
            paths: PodPaths::new(dir),
        }
    }
    /// The pod in the current directory.
    pub fn from_cwd() -> std::io::Result<Self> {
        Ok(Self::new(std::env::current_dir()?))
    }
    /// The pod directory.
    pub fn dir(&self) -> &Path {
        self.paths.root()
    }
    /// The pod's paths.
    pub fn paths(&self) -> &PodPaths {
        &self.paths
    }
    /// The pod's UUID: the pod directory's name (empty if it has none).
    pub fn uuid(&self) -> String {
        self.dir()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
    /// Writes the `pid` file (decimal, newline) atomically.
    pub fn write_pid(&self, pid: i32) -> std::io::Result<()> {
        // No fsync: a pod does not outlive a reboot, and this is on the start path.
        pod_abi::podfile::write_atomic_unsynced(&self.paths.pid(), format!("{pid}\n").as_bytes())
    }
    /// Reads the `pid` file (bounded, no symlinks, must hold a positive number).
    pub fn read_pid(&self) -> Result<i32, PodFileError> {
        let b = read_beneath(self.dir(), Path::new(PID_FILE), PID_FILE_MAX)?;
        String::from_utf8_lossy(&b)
            .trim()
            .parse()
            .ok()
            .filter(|p: &i32| *p > 0)
            .ok_or(PodFileError::Invalid {
                what: "pid",
                path: self.paths.pid(),
            })
    }
}

/// Keeps the pod lock fd that stage0 passes in [`ENV_LOCK_FD`] open for this process's life,
/// but close-on-exec so that no child inherits it; the kernel drops it when the process ends,
/// which tells stage0 that the pod exited. `None` (with a warning) if there is none.
pub fn keep_lock_fd() -> Option<RawFd> {
    let Ok(v) = std::env::var(ENV_LOCK_FD) else {
        ::log::warn!("no {ENV_LOCK_FD} (not started by rkt?); the pod will not count as running");
        return None;
    };
    let Ok(fd) = v.trim().parse::<RawFd>() else {
        ::log::warn!("bad {ENV_LOCK_FD}={v}");
        return None;
    };
    // SAFETY: F_GETFD/F_SETFD on an fd number; an invalid one just fails with EBADF.
    let ok = unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFD);
        fl >= 0 && libc::fcntl(fd, libc::F_SETFD, fl | libc::FD_CLOEXEC) >= 0
    };
    if !ok {
        ::log::warn!("{ENV_LOCK_FD}={fd} names no open fd");
        return None;
    }
    Some(fd)
}

/// Where [`record_failure`] writes (the pod's `failure` file; a jailed VMM moves it).
static FAILURE_PATH: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Sets the file [`record_failure`] and [`write_failure`] write to.
pub fn set_failure_path(p: PathBuf) {
    *FAILURE_PATH.lock().unwrap_or_else(|p| p.into_inner()) = Some(p);
}

fn failure_path() -> Option<PathBuf> {
    FAILURE_PATH
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
}

/// Writes the first line of `reason` to the pod's `failure` file (not on stderr), control
/// characters escaped (`rkt status` prints it).
pub fn write_failure(reason: &str) {
    let line = reason.lines().next().unwrap_or("unknown failure").trim();
    let line = pod_abi::text::escape_control(line);
    if let Some(p) = failure_path() {
        if let Err(e) = crate::write_atomic(&p, format!("{line}\n").as_bytes()) {
            eprintln!("{}: cannot write {}: {e}", prog(), p.display());
        }
    }
}

/// Records why the pod failed: the first line of `reason` on stderr and in the `failure` file,
/// control characters escaped (the reason may come from the pod's `rkt/failure`).
pub fn record_failure(reason: &str) {
    let line = reason.lines().next().unwrap_or("unknown failure").trim();
    let line = pod_abi::text::escape_control(line);
    eprintln!("{}: {line}", prog());
    write_failure(&line);
}

/// The pod's exit code once guest-init has ended normally, read from the pod's stage1 root
/// (all reads bounded, see `pod_abi::podfile`):
/// - guest-init recorded a failure of its own: `guest-init failed: <reason>` is recorded and
///   the code is [`pod_abi::exit::STAGE1_FAILED`];
/// - else the first non-zero app status in app order (`pod_abi::status::pod_exit_code`); when
///   an app has no status and `ended` says how guest-init ended, `<ended> before every app
///   reported a status` goes to the `failure` file.
pub fn finish(pod: &PodPaths, plan: &Plan, ended: Option<&str>) -> i32 {
    let root = pod.stage1_rootfs();
    match guest_init_failure(&root) {
        Ok(Some(reason)) => {
            record_failure(&guest_init_failure_line(&reason));
            return pod_abi::exit::STAGE1_FAILED;
        }
        Ok(None) => {}
        Err(e) => {
            record_failure(&e.to_string());
            return pod_abi::exit::STAGE1_FAILED;
        }
    }
    let codes: Vec<Option<i32>> = plan
        .apps
        .iter()
        .map(|a| {
            app_status(&root, &a.name).unwrap_or_else(|e| {
                ::log::warn!("app {}: {e}", a.name);
                None
            })
        })
        .collect();
    publish_statuses(pod, plan, &codes);
    if let Some(why) = ended.filter(|_| codes.iter().any(Option::is_none)) {
        write_failure(&format!("{why} before every app reported a status"));
    }
    pod_exit_code(&codes)
}

/// Leaves the apps' statuses where `rkt` group members read them (`pod_abi::status::publish`):
/// `codes` of the launch plan's apps, and for a mutable pod those of the apps `rkt app add` put
/// in the plan since (read bounded from the stage1 root, which the pod can write: a name that
/// is not an app name is skipped; at worst a pod misreports its own apps).
fn publish_statuses(pod: &PodPaths, plan: &Plan, codes: &[Option<i32>]) {
    let root = pod.stage1_rootfs();
    let mut names: Vec<String> = plan.apps.iter().map(|a| a.name.clone()).collect();
    let mut codes = codes.to_vec();
    if plan.mutable {
        if let Ok(now) = Plan::read_beneath(&root) {
            for a in now.apps {
                if pod_abi::exec::is_app_name(&a.name) && !names.contains(&a.name) {
                    codes.push(app_status(&root, &a.name).unwrap_or(None));
                    names.push(a.name);
                }
            }
        }
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    if let Err(e) = pod_abi::status::publish(pod.root(), &names, &codes) {
        ::log::warn!("cannot record the apps' statuses for the rkt group: {e}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A plan with apps named `apps`.
    fn plan(apps: &[&str]) -> Plan {
        let mut p = Plan::from_json(
            br#"{"version":1,"uuid":"u","hostname":"h","stopGraceSecs":1,"apps":[
                {"name":"x","imageId":"i","exec":["/x"],"env":[],"user":"0","group":"0",
                 "workingDirectory":"/","capabilities":[]}]}"#,
        )
        .unwrap();
        let proto = p.apps.remove(0);
        p.apps = apps
            .iter()
            .map(|a| {
                let mut app = proto.clone();
                app.name = a.to_string();
                app
            })
            .collect();
        p
    }

    /// One test owns the process-wide failure path.
    #[test]
    fn pid_failure_and_finish() {
        let d = tempfile::tempdir().unwrap();
        let ctx = PodContext::new(d.path());
        assert!(ctx.read_pid().unwrap_err().is_not_found());
        ctx.write_pid(42).unwrap();
        assert_eq!(ctx.read_pid().unwrap(), 42);
        std::fs::write(ctx.paths().pid(), "-1\n").unwrap();
        assert!(ctx.read_pid().is_err());
        std::fs::remove_file(ctx.paths().pid()).unwrap();
        std::os::unix::fs::symlink("/proc/self/stat", ctx.paths().pid()).unwrap();
        assert!(matches!(ctx.read_pid(), Err(PodFileError::Symlink(_))));

        let pod = ctx.paths();
        set_failure_path(pod.failure());
        std::fs::create_dir_all(pod.status_dir()).unwrap();
        std::fs::write(pod.app_status("a"), "0\n").unwrap();
        std::fs::write(pod.app_status("b"), "7\n").unwrap();
        assert_eq!(finish(pod, &plan(&["a", "b"]), Some("x")), 7);
        assert!(!pod.failure().exists());
        assert_eq!(
            std::fs::read_to_string(pod.root().join(pod_abi::paths::POD_APP_STATUSES)).unwrap(),
            "a=0\nb=7\n"
        );
        // A mutable pod: the apps `rkt app add` put in the plan since it started count for
        // the published statuses (not for the pod's code); a name that is no app name is
        // skipped.
        let mut started = plan(&["a"]);
        started.mutable = true;
        let mut now = plan(&["a", "added", "x=1\ny"]);
        now.mutable = true;
        std::fs::write(
            pod.stage1_rootfs().join(pod_abi::paths::PLAN_IN_STAGE1),
            serde_json::to_vec(&now).unwrap(),
        )
        .unwrap();
        std::fs::write(pod.app_status("added"), "5\n").unwrap();
        assert_eq!(finish(pod, &started, Some("x")), 0);
        assert!(pod_abi::status::published(pod.root()).contains(&("added".to_string(), 5)));
        assert_eq!(
            std::fs::read_to_string(pod.root().join(pod_abi::paths::POD_APP_STATUSES)).unwrap(),
            "a=0\nadded=5\n"
        );
        // A missing status counts 254 and says how guest-init ended.
        assert_eq!(
            finish(
                pod,
                &plan(&["a", "c"]),
                Some("guest-init killed by SIGKILL")
            ),
            pod_abi::status::SETUP_FAILED
        );
        assert_eq!(
            std::fs::read_to_string(pod.failure()).unwrap(),
            "guest-init killed by SIGKILL before every app reported a status\n"
        );
        // guest-init's own failure wins, with the one prefix.
        std::fs::write(pod.guest_failure(), "bad plan\n").unwrap();
        assert_eq!(
            finish(pod, &plan(&["a"]), None),
            pod_abi::exit::STAGE1_FAILED
        );
        assert_eq!(
            std::fs::read_to_string(pod.failure()).unwrap(),
            "guest-init failed: bad plan\n"
        );
        // Attack (audit host F5): terminal escapes in the pod-written reason are escaped.
        std::fs::write(pod.guest_failure(), "\u{1b}]0;x\u{7}\u{1b}[2Jowned\r\n").unwrap();
        assert_eq!(
            finish(pod, &plan(&["a"]), None),
            pod_abi::exit::STAGE1_FAILED
        );
        assert_eq!(
            std::fs::read_to_string(pod.failure()).unwrap(),
            "guest-init failed: \\x1b]0;x\\x07\\x1b[2Jowned\n"
        );
        std::fs::write(pod.guest_failure(), "bad plan\n").unwrap();
        // A FIFO planted at guest-init's failure file is refused, not waited on.
        std::fs::remove_file(pod.guest_failure()).unwrap();
        let fifo = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(
            pod.guest_failure().as_os_str(),
        ))
        .unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert_eq!(
            finish(pod, &plan(&["a"]), None),
            pod_abi::exit::STAGE1_FAILED
        );
        let f = std::fs::read_to_string(pod.failure()).unwrap();
        assert!(f.contains("not a regular file"), "{f}");
    }
}
