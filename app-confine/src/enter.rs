//! Confining a command that `rkt enter` runs in an app of a running pod, the one home shared by
//! the ns flavor's `enter` entrypoint (stage1-ns, inside guest-init's namespaces) and the kvm
//! flavor's exec service (guest-init in the VM): join the app's cgroups, [`crate::root::confine`]
//! to the app root, the app's working directory (`/` if it is gone), the app's identity
//! ([`Identity::for_app`] resolved against the app's own user database, then
//! [`Identity::assume`]), its system call filter ([`Identity::filter_syscalls`]) and `execve`
//! with exactly the app's environment.

use std::os::fd::RawFd;
use std::path::{Path, PathBuf};

use pod_abi::exit::STAGE1_FAILED;
use pod_abi::plan::{AppPlan, Plan};

use crate::exec::{close_inherited_fds, Command};
use crate::identity::Identity;
use crate::userns::Handshake;

/// `name`'s plan, or the only app's when `name` is empty; the error is one line.
pub fn pick_app<'a>(plan: &'a Plan, name: &str) -> Result<&'a AppPlan, String> {
    if name.is_empty() {
        return match plan.apps.as_slice() {
            [one] => Ok(one),
            _ => Err("the pod has several apps; pass --appname".into()),
        };
    }
    plan.apps
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| format!("no app {name:?} in the pod"))
}

/// Where and how to confine the command.
#[derive(Debug, Clone)]
pub struct EnterSpec<'a> {
    /// The app.
    pub app: &'a AppPlan,
    /// The app root in the caller's view (`/opt/stage2/<app>/rootfs`).
    pub rootfs: PathBuf,
    /// Files (caller's view) the command writes `0` into to join its app's cgroups before
    /// confining itself (`tasks` on cgroup v1, `cgroup.procs` on v2).
    pub cgroup_join: Vec<PathBuf>,
    /// An fd above stderr to keep open (close-on-exec), e.g. a report pipe; every other one
    /// is closed.
    pub keep_fd: Option<RawFd>,
    /// The caller was born out of the apps' sight: it joins their PID namespace for its
    /// children and hatches the command's process there once it holds the app's identity
    /// ([`crate::pidns::hatch`]).
    pub hatch: Option<Hatch<'a>>,
}

/// How a launcher born out of the apps' sight hatches the command's process.
#[derive(Debug, Clone, Copy)]
pub struct Hatch<'a> {
    /// The apps' PID namespace ([`crate::pidns::open_apart`]), joined for children first.
    pub apps_ns: &'a std::fs::File,
    /// Where the hatched process's pid is written (the fd kept open, in place of
    /// [`EnterSpec::keep_fd`]).
    pub report: RawFd,
    /// The command holds a terminal on fd 0: the hatched process makes a session of its own
    /// with it as the controlling terminal ([`crate::session::lead`]).
    pub terminal: bool,
}

/// Runs in a forked child whose stdio is already in place: confines it and execs `command`.
/// Returns only on failure: the exit code ([`STAGE1_FAILED`] when confining failed, 126/127
/// when the exec did) and the reason.
/// With `userns` (a `--private-users` pod), the child enters the pod's user namespace after
/// joining the cgroups ([`crate::userns::Handshake::child`]; the parent writes the maps).
pub fn confine_and_exec(
    spec: &EnterSpec<'_>,
    command: &Command,
    userns: Option<Handshake>,
) -> (i32, String) {
    if let Err(e) = crate::exec::make_undumpable() {
        return (STAGE1_FAILED, e.to_string());
    }
    // First: joining a PID namespace needs CAP_SYS_ADMIN over it, gone in the pod's user
    // namespace.
    if let Some(h) = &spec.hatch {
        if let Err(e) = crate::pidns::join_for_children(h.apps_ns) {
            return (STAGE1_FAILED, format!("the apps' PID namespace: {e}"));
        }
    }
    if let Err((f, e)) = crate::cgroup::join_self(&spec.cgroup_join) {
        return (
            STAGE1_FAILED,
            format!(
                "join cgroup {}: {}",
                f.display(),
                crate::user::errno_text(&e)
            ),
        );
    }
    if let Some(hs) = userns {
        if let Err(e) = hs.child() {
            return (STAGE1_FAILED, format!("the pod's user namespace: {e}"));
        }
    }
    close_inherited_fds(spec.hatch.map(|h| h.report).or(spec.keep_fd));
    if let Err(e) = crate::root::confine(&spec.rootfs) {
        return (
            STAGE1_FAILED,
            format!("confine to {}: {e}", spec.rootfs.display()),
        );
    }
    // Confined: `/` is the app root, so the user database is the image's own.
    let id = match Identity::for_app(spec.app, Path::new("/")) {
        Ok(id) => id,
        Err(e) => return (STAGE1_FAILED, e),
    };
    let wd = if spec.app.working_directory.is_empty() {
        "/"
    } else {
        spec.app.working_directory.as_str()
    };
    if nix::unistd::chdir(wd).is_err() {
        if let Err(e) = nix::unistd::chdir("/") {
            return (STAGE1_FAILED, format!("chdir /: {}", e.desc()));
        }
    }
    if let Err(e) = id.assume() {
        return (STAGE1_FAILED, format!("take the app's identity: {e}"));
    }
    if let Some(h) = &spec.hatch {
        if let Err(e) = crate::pidns::hatch(h.report) {
            return (STAGE1_FAILED, e.to_string());
        }
        if h.terminal {
            if let Err(e) = crate::session::lead(true) {
                return (STAGE1_FAILED, e.to_string());
            }
        }
    }
    command
        .filter_and_exec(&id)
        .unwrap_or_else(|e| (STAGE1_FAILED, format!("the app's system call filter: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pick() {
        let one = crate::identity::tests::app();
        let mut plan = crate::identity::tests::plan(vec![one.clone()]);
        assert_eq!(pick_app(&plan, "").unwrap().name, one.name);
        let mut two = one.clone();
        two.name = "second".into();
        plan.apps.push(two);
        assert!(pick_app(&plan, "").unwrap_err().contains("several apps"));
        assert_eq!(pick_app(&plan, "second").unwrap().name, "second");
        assert_eq!(pick_app(&plan, "x").unwrap_err(), "no app \"x\" in the pod");
    }
}
