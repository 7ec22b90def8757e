//! Who an app's process is: user, group, supplementary groups and capability sets, resolved
//! from the launch plan against the app root ([`Identity::for_app`]), then assumed by the
//! process in the one safe order ([`Identity::assume`]).

use std::path::Path;

use nix::unistd::{Gid, Uid};
use pod_abi::plan::AppPlan;

use crate::caps::{app_sets, parse_caps, CapSets};
use crate::user::{resolve, IdKind};
use crate::StepError;

/// The credentials and capabilities of an app's processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Numeric user.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Capability sets ([`crate::caps::app_sets`]).
    pub caps: CapSets,
    /// Set `no_new_privs`.
    pub no_new_privs: bool,
    /// The system call filter, installed by [`Identity::filter_syscalls`].
    pub seccomp: Option<crate::seccomp::Filter>,
}

impl Identity {
    /// The identity of `app`'s processes: its `user` and `group` resolved against `rootfs`
    /// (the app root as the caller sees it: `/` once confined), its capability list and retain
    /// flag, `no_new_privs`. Errors are one line (`user "x" not found in the app's
    /// /etc/passwd`, `unknown capability "CAP_X"`).
    pub fn for_app(app: &AppPlan, rootfs: &Path) -> Result<Self, String> {
        let uid = resolve(IdKind::User, &app.user, rootfs).map_err(|e| e.to_string())?;
        let gid = resolve(IdKind::Group, &app.group, rootfs).map_err(|e| e.to_string())?;
        let caps = parse_caps(&app.capabilities).map_err(|e| e.to_string())?;
        let seccomp = app
            .seccomp
            .as_ref()
            .map(crate::seccomp::Filter::new)
            .transpose()?;
        Ok(Identity {
            uid,
            gid,
            groups: app.supplementary_gids.clone(),
            caps: app_sets(caps, uid, app.capabilities_retained),
            no_new_privs: app.no_new_privileges,
            seccomp,
        })
    }

    /// Becomes this identity (the caller is root with every capability it may hand out): the
    /// bounding set dropped and `keepcaps` set while root, supplementary groups, `setresgid`,
    /// `setresuid`, then the permitted/effective/inheritable and ambient sets and
    /// `no_new_privs` ([`crate::caps::apply_sets`]).
    pub fn assume(&self) -> Result<(), StepError> {
        crate::caps::drop_bounding(self.caps.bounding)
            .map_err(|e| StepError::io("drop bounding capabilities", &e))?;
        let groups: Vec<Gid> = self.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups).map_err(crate::at("setgroups"))?;
        let gid = Gid::from_raw(self.gid);
        nix::unistd::setresgid(gid, gid, gid)
            .map_err(|e| StepError::new(format!("setgid {}", self.gid), e))?;
        let uid = Uid::from_raw(self.uid);
        nix::unistd::setresuid(uid, uid, uid)
            .map_err(|e| StepError::new(format!("setuid {}", self.uid), e))?;
        crate::caps::apply_sets(self.caps, self.no_new_privs)
            .map_err(|e| StepError::io("set capabilities", &e))
    }

    /// Installs the app's system call filter, if it has one: the last step before `execve`,
    /// after [`Identity::assume`] (whose calls a retain-set need not allow).
    pub fn filter_syscalls(&self) -> Result<(), StepError> {
        self.seccomp.as_ref().map_or(Ok(()), |f| f.install())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal pod plan holding `apps`.
    pub(crate) fn plan(apps: Vec<AppPlan>) -> pod_abi::plan::Plan {
        pod_abi::plan::Plan {
            stop_grace_secs: 1,
            ..pod_abi::plan::Plan::new("u".into(), "h".into(), apps)
        }
    }

    /// A minimal app plan.
    pub(crate) fn app() -> AppPlan {
        AppPlan {
            name: "a".into(),
            image_id: "sha512-x".into(),
            exec: vec!["/bin/true".into()],
            env: Vec::new(),
            user: "user".into(),
            group: "7".into(),
            supplementary_gids: vec![5, 6],
            working_directory: "/".into(),
            pre_start: None,
            post_stop: None,
            read_only_rootfs: false,
            mounts: Vec::new(),
            capabilities: vec!["CAP_KILL".into()],
            capabilities_retained: false,
            no_new_privileges: true,
            insecure_paths: false,
            memory_limit: None,
            cpu_limit_millis: None,
            cpu_shares: None,
            oom_score_adj: None,
            ignored_isolators: Vec::new(),
            seccomp: None,
            stdio: Default::default(),
        }
    }

    #[test]
    fn resolved_from_the_plan_and_the_app_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), "user:x:1000:1000::/:/x\n").unwrap();
        let id = Identity::for_app(&app(), d.path()).unwrap();
        let kill = 1u64 << 5;
        assert_eq!((id.uid, id.gid, id.groups.clone()), (1000, 7, vec![5, 6]));
        assert_eq!(
            id.caps,
            CapSets {
                bounding: kill,
                held: 0,
                ambient: 0
            },
            "a non-root user holds nothing unless retained"
        );
        assert!(id.no_new_privs);
        let mut bad = app();
        bad.capabilities = vec!["CAP_FLY".into()];
        assert_eq!(
            Identity::for_app(&bad, d.path()).unwrap_err(),
            "unknown capability \"CAP_FLY\""
        );
        let mut ghost = app();
        ghost.user = "ghost".into();
        assert!(Identity::for_app(&ghost, d.path())
            .unwrap_err()
            .contains("not found"));
    }
}
