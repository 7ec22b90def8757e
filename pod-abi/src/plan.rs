//! The launch plan: everything guest-init needs to start a pod's apps, fully resolved on the host
//! by stage0 from the pod manifest, the apps' image manifests and the command line, and written
//! atomically to `stage1/rootfs/rkt/plan.json` right before stage0 execs the stage1 `run`
//! entrypoint (the pod manifest `pod` stays the authoritative contract for third-party stage1s).
//! guest-init reads only this file, so the same guest-init serves the namespace flavor and the
//! KVM flavor; the flavor itself reaches guest-init as its `--flavor=ns|kvm` argument.

use serde::{Deserialize, Serialize};

/// Plan format version; bump on incompatible changes.
pub const PLAN_VERSION: u32 = 1;
/// Default `PATH` of the appc execution environment.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Default grace period between SIGTERM and SIGKILL when stopping apps, in seconds.
pub const DEFAULT_STOP_GRACE_SECS: u32 = 10;
/// The longest grace period the host waits for (seconds): a KVM guest can rewrite the plan in
/// its share, so a host reading it after the pod started clamps the value to this
/// ([`Plan::host_stop_grace_secs`]).
pub const MAX_STOP_GRACE_SECS: u32 = 300;

/// Which stage1 flavor runs guest-init (decides how it ends: exit vs reboot); passed to
/// guest-init as `--flavor=ns|kvm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// PID 1 of a set of Linux namespaces on the host: exits at the end.
    Ns,
    /// PID 1 of a KVM guest: syncs and reboots at the end.
    Kvm,
}

/// The whole pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// [`PLAN_VERSION`].
    pub version: u32,
    /// Pod UUID.
    pub uuid: String,
    /// Hostname for the pod's UTS namespace.
    pub hostname: String,
    /// One app attached to the console as a TTY.
    #[serde(default)]
    pub interactive: bool,
    /// Verbose guest-init logging on the console.
    #[serde(default)]
    pub debug: bool,
    /// SIGTERM -> SIGKILL grace period in seconds.
    pub stop_grace_secs: u32,
    /// Apps in pod-manifest order.
    pub apps: Vec<AppPlan>,
    /// Networking options beyond `--net` (which reaches stage1 as its `--net=` argument).
    #[serde(default)]
    pub net: NetPlan,
    /// A mutable pod (`rkt app sandbox`, annotation [`MUTABLE_ANNOTATION`]): it keeps running
    /// with no app running until it is stopped, and takes app requests
    /// (`crate::exec::Request::AppAdd` ...) on its exec channel.
    #[serde(default)]
    pub mutable: bool,
    /// `rkt run --kvm-snapshot` (experimental): the KVM flavor starts the pod from a snapshot
    /// of a booted guest (docs/snapshot.md); the ns flavor ignores it with a warning.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kvm_snapshot: bool,
    /// `rkt run --ipc=parent`: the pod shares the host's IPC namespace (System V IPC, POSIX
    /// message queues) instead of getting its own. The ns flavor only; the kvm flavor refuses
    /// it (its apps run on the guest's kernel).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_ipc: bool,
    /// `rkt run --private-users`: every app process runs in a user namespace mapping pod IDs
    /// to this host range (`crate::userns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_users: Option<crate::userns::IdRange>,
    /// `rkt run --pids-limit`: the most tasks (processes and threads) the pod holds at once, on
    /// the host's `pids` cgroup of an ns pod (a kvm pod's tasks are its guest's); `None`, no
    /// limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u64>,
}

/// The most tasks (processes and threads) a pod holds at once unless `rkt run --pids-limit`
/// says otherwise ([`Plan::pids_limit`]): a fork bomb in an ns pod stops there, far below the
/// host's `pid_max` (podman's default is 2048 per container).
pub const DEFAULT_PIDS_LIMIT: u64 = 4096;

/// The pod-manifest annotation that makes a pod mutable (rkt's, set by `rkt app sandbox`).
pub const MUTABLE_ANNOTATION: &str = "coreos.com/rkt/stage1/mutable";

/// The pod's networking options: where network configurations live, port forwards, and what
/// guest-init writes into each app's `/etc/resolv.conf` and `/etc/hosts`. The default (an older
/// plan without it) means: rkt's default config dirs, no ports, image files left alone (except
/// rkt's fallback `/etc/hosts`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetPlan {
    /// `--local-config` (`net.d/` below it holds network configs); empty means `/etc/rkt`.
    #[serde(default)]
    pub local_config: String,
    /// `--system-config`; empty means `/usr/lib/rkt`.
    #[serde(default)]
    pub system_config: String,
    /// `--port` forwards, resolved against the apps' declared ports.
    #[serde(default)]
    pub ports: Vec<PortPlan>,
    /// `--dns` servers (`host` resolved by stage0 into [`NetPlan::resolv_conf`]).
    #[serde(default)]
    pub dns: Vec<String>,
    /// `--dns-search`.
    #[serde(default)]
    pub dns_search: Vec<String>,
    /// `--dns-opt`.
    #[serde(default)]
    pub dns_opt: Vec<String>,
    /// `--dns-domain`.
    #[serde(default)]
    pub dns_domain: String,
    /// `--dns=host`: the host's `/etc/resolv.conf`, verbatim.
    #[serde(default)]
    pub resolv_conf: Option<String>,
    /// `--hosts-entry IP=HOST` entries.
    #[serde(default)]
    pub hosts_entries: Vec<HostsEntry>,
    /// `--hosts-entry=host`: the host's `/etc/hosts`, verbatim.
    #[serde(default)]
    pub hosts_file: Option<String>,
}

/// One port forward (CNI `portMappings` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortPlan {
    /// The app port's name.
    pub name: String,
    /// Protocol (`tcp` or `udp`).
    pub protocol: String,
    /// Port inside the pod.
    pub container_port: u16,
    /// Port on the host.
    pub host_port: u16,
    /// Host address to bind; empty means every address.
    #[serde(default)]
    pub host_ip: String,
}

/// One `/etc/hosts` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostsEntry {
    /// Address.
    pub ip: String,
    /// Names for it.
    pub names: Vec<String>,
}

/// The variable that carries a registered pod's metadata service URL (appc).
pub const AC_METADATA_URL: &str = "AC_METADATA_URL";

/// Gives every app of `plan` `AC_METADATA_URL=url`, replacing any value the image or the
/// command line set.
pub fn set_metadata_url(plan: &mut Plan, url: &str) {
    for app in &mut plan.apps {
        app.env.retain(|(k, _)| k != AC_METADATA_URL);
        app.env.push((AC_METADATA_URL.to_string(), url.to_string()));
    }
}

/// One app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppPlan {
    /// App name (ACName); rootfs at `/opt/stage2/<name>/rootfs` relative to the stage1 root.
    pub name: String,
    /// Image ID (sha512-...).
    pub image_id: String,
    /// argv; argv\[0\] looked up in PATH inside the app root when it has no `/`.
    pub exec: Vec<String>,
    /// Final environment in order (PATH, AC_APP_NAME, container=rkt, image env, overrides).
    pub env: Vec<(String, String)>,
    /// User: name (from the app's /etc/passwd), number, or absolute path (owner of that file).
    pub user: String,
    /// Group: name (from the app's /etc/group), number, or absolute path.
    pub group: String,
    /// Supplementary GIDs.
    #[serde(default)]
    pub supplementary_gids: Vec<u32>,
    /// Absolute working directory inside the app root (must exist).
    pub working_directory: String,
    /// `pre-start` event handler argv, run to completion before the app starts.
    #[serde(default)]
    pub pre_start: Option<Vec<String>>,
    /// `post-stop` event handler argv, run after the app exits.
    #[serde(default)]
    pub post_stop: Option<Vec<String>>,
    /// Mount the app root read-only.
    #[serde(default)]
    pub read_only_rootfs: bool,
    /// Volumes as they appear in the app (already bind-mounted by stage0 into the app root;
    /// guest-init makes each target a mount point with the right flags if it is not one yet).
    #[serde(default)]
    pub mounts: Vec<MountPlan>,
    /// The app's capability bounding set (`CAP_*`); a root app also holds them (permitted,
    /// effective, inheritable), a non-root app only with [`AppPlan::capabilities_retained`].
    pub capabilities: Vec<String>,
    /// `capabilities` come from an `os/linux/capabilities-retain-set` isolator: a non-root
    /// app then holds them too (permitted, effective, inheritable and ambient); otherwise a
    /// non-root app holds no capability.
    #[serde(default)]
    pub capabilities_retained: bool,
    /// `os/linux/no-new-privileges`.
    #[serde(default)]
    pub no_new_privileges: bool,
    /// `--insecure-options=paths`: leave the host-global `/proc` entries (`/proc/sys`,
    /// `/proc/sysrq-trigger`, ...) writable in the app, as rkt's option did.
    #[serde(default)]
    pub insecure_paths: bool,
    /// `resource/memory` limit in bytes.
    #[serde(default)]
    pub memory_limit: Option<u64>,
    /// `resource/cpu` limit in millicores.
    #[serde(default)]
    pub cpu_limit_millis: Option<u64>,
    /// `os/linux/cpu-shares` (2..=262144): the app's CPU weight against the pod's other apps
    /// (cgroup v1 `cpu.shares`; v2 `cpu.weight`, converted as runc and crun do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    /// `os/linux/oom-score-adj` (-1000..=1000): the app's `oom_score_adj`, set before its exec
    /// and inherited by its children.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i32>,
    /// Isolators present in the manifests that this runtime does not implement (reported).
    #[serde(default)]
    pub ignored_isolators: Vec<String>,
    /// The app's system call filter (`os/linux/seccomp-*-set`, or rkt's default), resolved to
    /// x86_64 numbers by stage0; `None` with `--insecure-options=seccomp`.
    #[serde(default)]
    pub seccomp: Option<SeccompPlan>,
    /// How the app's stdin, stdout and stderr are connected (`--stdin`, `--stdout`,
    /// `--stderr`; `crate::attach`).
    #[serde(default)]
    pub stdio: crate::attach::StdioPlan,
}

/// A seccomp filter over system call numbers (x86_64), installed as the last step before the
/// app's `execve` (`app_confine::seccomp`). Calls of another ABI (i386, x32) are denied whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompPlan {
    /// `true`: only `syscalls` are allowed (a retain-set); `false`: `syscalls` are denied (a
    /// remove-set). Either way [`SeccompPlan::ALWAYS_ALLOWED`] are allowed.
    pub retain: bool,
    /// The errno a denied call returns; `None`: the process is killed by `SIGSYS`.
    #[serde(default)]
    pub errno: Option<u16>,
    /// System call numbers, sorted, without duplicates.
    pub syscalls: Vec<u32>,
    /// Also deny `clone` with a namespace flag (a user namespace, above all, needs no
    /// capability) and answer `clone3`, whose flags a filter cannot read, with `ENOSYS`, so
    /// that libc falls back to `clone`. Set by rkt's default filter, which denies `unshare` and
    /// `setns` too.
    #[serde(default)]
    pub no_new_namespaces: bool,
    /// Also deny `ioctl(FS_IOC_FSSETXATTR)` and `file_setattr`, which set a file's extended
    /// flags and its XFS project ID: a pod with a disk limit (`rkt run --disk-limit`) is
    /// counted by the project ID of its files, which their owner could otherwise change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fixed_projects: bool,
}

impl SeccompPlan {
    /// The `clone` flags [`SeccompPlan::no_new_namespaces`] denies: `CLONE_NEWNS`,
    /// `CLONE_NEWCGROUP`, `CLONE_NEWUTS`, `CLONE_NEWIPC`, `CLONE_NEWUSER`, `CLONE_NEWPID`,
    /// `CLONE_NEWNET` (all in the low 32 bits of the flags).
    pub const NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
        | libc::CLONE_NEWCGROUP
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET) as u32;

    /// `FS_IOC_FSSETXATTR` (`_IOW('X', 32, struct fsxattr)`), the `ioctl` that sets a file's
    /// extended flags and XFS project ID, denied by [`SeccompPlan::fixed_projects`].
    pub const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;
    /// `file_setattr(2)` (x86_64, Linux 6.17): the same as a system call.
    pub const FILE_SETATTR: u32 = 469;

    /// What every filter allows, whatever its list: the `execve` that starts the app and the
    /// calls that end it (`execve`, `exit`, `exit_group`, `rt_sigreturn`), as systemd's
    /// `SystemCallFilter=` keeps them.
    pub const ALWAYS_ALLOWED: [u32; 4] = [
        libc::SYS_execve as u32,
        libc::SYS_exit as u32,
        libc::SYS_exit_group as u32,
        libc::SYS_rt_sigreturn as u32,
    ];

    /// Whether the filter kills a process making the call numbered `nr` (without its
    /// arguments' say: `clone` counts as allowed): denied and no errno.
    pub fn kills(&self, nr: u32) -> bool {
        let listed = self.syscalls.contains(&nr);
        let denied = !Self::ALWAYS_ALLOWED.contains(&nr) && listed != self.retain;
        denied && self.errno.is_none()
    }
}

/// A volume mount inside an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountPlan {
    /// Volume name.
    pub volume: String,
    /// Absolute path inside the app root.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
}

/// Error reading or writing a plan.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// I/O on the plan file.
    #[error("plan file {path}")]
    Io {
        /// The plan path.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// JSON syntax or shape.
    #[error("malformed plan")]
    Json(#[source] serde_json::Error),
    /// Version mismatch.
    #[error("plan version {0} is not supported (want {PLAN_VERSION})")]
    Version(u32),
    /// The plan in a pod's root could not be read safely (see [`Plan::read_beneath`]).
    #[error("cannot read the plan")]
    PodFile(#[from] crate::podfile::PodFileError),
}

impl Plan {
    /// A plan of `apps` with every option at its default: not interactive, no debug,
    /// [`DEFAULT_STOP_GRACE_SECS`], the default networking options, immutable, booted cold,
    /// its own IPC namespace, no user namespace, no task limit. Set others with struct
    /// update syntax (`Plan { debug: true, ..Plan::new(..) }`).
    pub fn new(uuid: String, hostname: String, apps: Vec<AppPlan>) -> Self {
        Plan {
            version: PLAN_VERSION,
            uuid,
            hostname,
            interactive: false,
            debug: false,
            stop_grace_secs: DEFAULT_STOP_GRACE_SECS,
            apps,
            net: NetPlan::default(),
            mutable: false,
            kvm_snapshot: false,
            host_ipc: false,
            private_users: None,
            pids_limit: None,
        }
    }

    /// The grace period a host process may wait for, from a plan it read back from the pod
    /// (seconds): [`Self::stop_grace_secs`] at most [`MAX_STOP_GRACE_SECS`].
    pub fn host_stop_grace_secs(&self) -> u32 {
        self.stop_grace_secs.min(MAX_STOP_GRACE_SECS)
    }

    /// Parses a plan and checks its version.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PlanError> {
        let p: Plan = serde_json::from_slice(bytes).map_err(PlanError::Json)?;
        if p.version != PLAN_VERSION {
            return Err(PlanError::Version(p.version));
        }
        Ok(p)
    }
    /// Reads and parses a plan file.
    pub fn read(path: &std::path::Path) -> Result<Self, PlanError> {
        let b = std::fs::read(path).map_err(|e| PlanError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        Self::from_json(&b)
    }
    /// Reads the plan of a running pod from its stage1 root `root` (e.g. `/proc/<pid>/root`),
    /// which the pod can write: `rkt/plan.json` resolved beneath `root` without symlinks, a
    /// regular file of at most [`crate::podfile::PLAN_MAX`] bytes.
    pub fn read_beneath(root: &std::path::Path) -> Result<Self, PlanError> {
        let b = crate::podfile::read_beneath(
            root,
            std::path::Path::new(crate::paths::PLAN_IN_STAGE1),
            crate::podfile::PLAN_MAX,
        )?;
        Self::from_json(&b)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Attack (audit host F4): a KVM guest rewrites `stopGraceSecs` in its plan to 136 years;
    /// `rkt stop` reads the plan back and waits for at most `MAX_STOP_GRACE_SECS`.
    #[test]
    fn a_rewritten_grace_period_is_clamped() {
        let p = Plan::from_json(
            br#"{"version":1,"uuid":"u","hostname":"h","stopGraceSecs":4294967295,"apps":[]}"#,
        )
        .unwrap();
        assert_eq!(p.host_stop_grace_secs(), MAX_STOP_GRACE_SECS);
        let honest = Plan {
            stop_grace_secs: DEFAULT_STOP_GRACE_SECS,
            ..p
        };
        assert_eq!(honest.host_stop_grace_secs(), DEFAULT_STOP_GRACE_SECS);
    }
}
