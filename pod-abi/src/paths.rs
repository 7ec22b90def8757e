//! On-disk layout of a pod directory (`<dir>/pods/<state>/<uuid>/`), as in rkt.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Pod manifest file name inside the pod directory.
pub const POD_MANIFEST: &str = "pod";
/// Empty file whose mtime is the pod's creation time.
pub const POD_CREATED: &str = "pod-created";
/// File holding the decimal PID of the stage1 process that `rkt enter`/`stop` address.
pub const PID_FILE: &str = "pid";
/// Lock file for app mutations.
pub const POD_LOCK: &str = "pod.lck";
/// Tree-store ID of the stage1 image.
pub const STAGE1_TREE_ID: &str = "stage1TreeStoreID";
/// A `--private-users` pod's ID range, `SHIFT:COUNT` (`crate::userns`; rkt's name).
pub const PRIVATE_USERS_PREPARED: &str = "private-users-prepared";
/// Directory with `<app>/{manifest,treeStoreID}`.
pub const APPSINFO_DIR: &str = "appsinfo";
/// Directory with one sub-directory per `kind=empty` volume.
pub const SHARED_VOLUMES_DIR: &str = "sharedVolumes";
/// Directory with overlay upper/work directories.
pub const OVERLAY_DIR: &str = "overlay";
/// The apps' exit statuses as the host side of stage1 read them when the pod ended, `<app>=<code>`
/// lines (`crate::status::publish`): readable by the `rkt` group, who cannot enter `stage1/`.
pub const POD_APP_STATUSES: &str = "app-statuses";
/// Written by stage1 when the pod ends abnormally: one line of reason (e.g. "guest kernel panic").
pub const POD_FAILURE: &str = "failure";

/// Path of the stage1 root inside the pod, relative to the stage1 root: status files.
pub const STATUS_DIR_IN_STAGE1: &str = "rkt/status";
/// Per-app failure reasons (setup errors) relative to the stage1 root: `rkt/errors/<app>`.
pub const ERRORS_DIR_IN_STAGE1: &str = "rkt/errors";
/// Launch plan written by the host side of stage1, read by guest-init: `rkt/plan.json`.
pub const PLAN_IN_STAGE1: &str = "rkt/plan.json";
/// guest-init's own failure reason (one line) relative to the stage1 root: `rkt/failure`.
pub const GUEST_FAILURE_IN_STAGE1: &str = "rkt/failure";
/// A KVM guest's network (`crate::guestnet`), written by the host before boot, relative to the
/// stage1 root: `rkt/net.json`.
pub const NET_IN_STAGE1: &str = "rkt/net.json";

/// guest-init's view (its root is the stage1 root) of the contract directory `rkt`.
pub const GUEST_RKT_DIR: &str = "/rkt";
/// guest-init's view of [`STATUS_DIR_IN_STAGE1`].
pub const GUEST_STATUS_DIR: &str = "/rkt/status";
/// guest-init's view of [`ERRORS_DIR_IN_STAGE1`].
pub const GUEST_ERRORS_DIR: &str = "/rkt/errors";
/// guest-init's view of [`PLAN_IN_STAGE1`].
pub const GUEST_PLAN: &str = "/rkt/plan.json";
/// guest-init's view of [`GUEST_FAILURE_IN_STAGE1`].
pub const GUEST_FAILURE: &str = "/rkt/failure";
/// guest-init's view of [`NET_IN_STAGE1`].
pub const GUEST_NET: &str = "/rkt/net.json";
/// guest-init's path as PID 1 sees it (argv\[0\] of the pod's init).
pub const GUEST_INIT_PATH: &str = "/init";
/// ns flavor, mutable pods: the exec channel's socket in the pod directory (bound by
/// stage1-ns before the pod starts, where nothing in the pod can reach; guest-init inherits the
/// listening socket as `--exec-fd`).
pub const EXEC_SOCKET: &str = "exec.sock";
/// Where guest-init records when an app of a mutable pod was started (`<app>` holds Unix
/// nanoseconds), relative to the stage1 root.
pub const STARTED_DIR_IN_STAGE1: &str = "rkt/started";
/// [`STARTED_DIR_IN_STAGE1`] as guest-init sees it.
pub const GUEST_STARTED_DIR: &str = "/rkt/started";
/// Where guest-init records when an app of a mutable pod finished (`<app>` holds Unix
/// nanoseconds), relative to the stage1 root.
pub const FINISHED_DIR_IN_STAGE1: &str = "rkt/finished";
/// [`FINISHED_DIR_IN_STAGE1`] as guest-init sees it.
pub const GUEST_FINISHED_DIR: &str = "/rkt/finished";
/// Where guest-init lives in every stage1 image's rootfs.
pub const GUEST_INIT_IN_STAGE1: &str = "init";
/// Directory of the app roots as guest-init sees it (`/opt/stage2/<app>/rootfs`).
pub const GUEST_STAGE2_DIR: &str = "/opt/stage2";

/// An app's root as guest-init (and `enter`, once in guest-init's mount namespace) sees it:
/// `/opt/stage2/<app>/rootfs`.
pub fn guest_app_rootfs(app: &str) -> PathBuf {
    Path::new(GUEST_STAGE2_DIR).join(app).join("rootfs")
}

/// Typed accessors for the files of one pod directory.
#[derive(Debug, Clone)]
pub struct PodPaths {
    root: PathBuf,
}

impl PodPaths {
    /// Wraps a pod directory such as `/var/lib/rkt/pods/run/<uuid>`.
    pub fn new(pod_dir: impl Into<PathBuf>) -> Self {
        Self {
            root: pod_dir.into(),
        }
    }
    /// The pod directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `pod` (the PodManifest).
    pub fn manifest(&self) -> PathBuf {
        self.root.join(POD_MANIFEST)
    }
    /// `pid`.
    pub fn pid(&self) -> PathBuf {
        self.root.join(PID_FILE)
    }
    /// `failure`.
    pub fn failure(&self) -> PathBuf {
        self.root.join(POD_FAILURE)
    }
    /// `stage1/manifest` (the stage1 ImageManifest).
    pub fn stage1_manifest(&self) -> PathBuf {
        self.root.join("stage1/manifest")
    }
    /// `stage1/rootfs`.
    pub fn stage1_rootfs(&self) -> PathBuf {
        self.root.join("stage1/rootfs")
    }
    /// `stage1/rootfs/opt/stage2`, the apps' directories.
    pub fn stage2_dir(&self) -> PathBuf {
        self.stage1_rootfs().join("opt/stage2")
    }
    /// `stage1/rootfs/opt/stage2/<app>`.
    pub fn app_dir(&self, app: &str) -> PathBuf {
        self.stage2_dir().join(app)
    }
    /// `stage1/rootfs/opt/stage2/<app>/rootfs`.
    pub fn app_rootfs(&self, app: &str) -> PathBuf {
        self.app_dir(app).join("rootfs")
    }
    /// `stage1/rootfs/opt/stage2/<app>/manifest` (the app's ImageManifest).
    pub fn app_manifest(&self, app: &str) -> PathBuf {
        self.app_dir(app).join("manifest")
    }
    /// `stage1/rootfs/rkt/status`.
    pub fn status_dir(&self) -> PathBuf {
        self.stage1_rootfs().join(STATUS_DIR_IN_STAGE1)
    }
    /// `stage1/rootfs/rkt/status/<app>`.
    pub fn app_status(&self, app: &str) -> PathBuf {
        self.status_dir().join(app)
    }
    /// `stage1/rootfs/rkt/errors/<app>`.
    pub fn app_error(&self, app: &str) -> PathBuf {
        self.stage1_rootfs().join(ERRORS_DIR_IN_STAGE1).join(app)
    }
    /// `stage1/rootfs/rkt/failure` (guest-init's own failure; pod-written).
    pub fn guest_failure(&self) -> PathBuf {
        self.stage1_rootfs().join(GUEST_FAILURE_IN_STAGE1)
    }
    /// `stage1/rootfs/rkt/plan.json`.
    pub fn plan(&self) -> PathBuf {
        self.stage1_rootfs().join(PLAN_IN_STAGE1)
    }
    /// `sharedVolumes/<name>`.
    pub fn shared_volume(&self, name: &str) -> PathBuf {
        self.root.join(SHARED_VOLUMES_DIR).join(name)
    }
    /// `appsinfo/<app>`.
    pub fn appsinfo(&self, app: &str) -> PathBuf {
        self.root.join(APPSINFO_DIR).join(app)
    }
}

/// Pod states, each a directory under `<dir>/pods/`, as in rkt's pod lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PodDirState {
    /// `embryo/`: just created.
    Embryo,
    /// `prepare/`: being prepared (locked) or prepare failed (unlocked).
    Prepare,
    /// `prepared/`: ready for run-prepared.
    Prepared,
    /// `run/`: running (locked by stage1) or exited (unlocked).
    Run,
    /// `exited-garbage/`: exited and marked for gc.
    ExitedGarbage,
    /// `garbage/`: prepare failed and marked for gc.
    Garbage,
}

impl PodDirState {
    /// Every state, in lifecycle order.
    pub const ALL: [PodDirState; 6] = [
        PodDirState::Embryo,
        PodDirState::Prepare,
        PodDirState::Prepared,
        PodDirState::Run,
        PodDirState::ExitedGarbage,
        PodDirState::Garbage,
    ];
    /// Directory name under `pods/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            PodDirState::Embryo => "embryo",
            PodDirState::Prepare => "prepare",
            PodDirState::Prepared => "prepared",
            PodDirState::Run => "run",
            PodDirState::ExitedGarbage => "exited-garbage",
            PodDirState::Garbage => "garbage",
        }
    }
    /// The renames rkt allows between state directories (the lifecycle as data).
    pub const TRANSITIONS: [(PodDirState, PodDirState); 7] = [
        (PodDirState::Embryo, PodDirState::Prepare),
        (PodDirState::Prepare, PodDirState::Prepared),
        (PodDirState::Prepare, PodDirState::Run),
        (PodDirState::Prepared, PodDirState::Run),
        (PodDirState::Run, PodDirState::ExitedGarbage),
        (PodDirState::Prepare, PodDirState::Garbage),
        // gc expiring prepared pods (`--expire-prepared`) and `rkt rm` of a prepared pod.
        (PodDirState::Prepared, PodDirState::Garbage),
    ];
    /// Whether `self -> to` is a valid transition.
    pub fn can_move_to(self, to: PodDirState) -> bool {
        Self::TRANSITIONS.contains(&(self, to))
    }
}

/// [`std::fs::canonicalize`] in one path walk: `path` opened with `O_PATH` and the kernel's
/// name for the descriptor read back (`/proc/self/fd/N`), where glibc's `realpath` reads the
/// link of every component (a 10-component pod path: 10 walks of up to 10 components). Falls
/// back to `realpath` where `/proc` does not name the file (no `/proc`, a deleted file).
pub fn canonicalize(path: &Path) -> io::Result<PathBuf> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)?;
    match std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd())) {
        Ok(p) if p.is_absolute() && !p.as_os_str().as_encoded_bytes().ends_with(b" (deleted)") => {
            Ok(p)
        }
        _ => std::fs::canonicalize(path),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn canonicalize_matches_realpath() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("a/b");
        std::fs::create_dir_all(&real).unwrap();
        std::os::unix::fs::symlink("a/b", d.path().join("l")).unwrap();
        std::fs::write(real.join("f"), b"").unwrap();
        for p in [
            d.path().join("l/f"),
            d.path().join("a/./b/../b"),
            d.path().join("l"),
        ] {
            assert_eq!(
                canonicalize(&p).unwrap(),
                std::fs::canonicalize(&p).unwrap(),
                "{}",
                p.display()
            );
        }
        let missing = d.path().join("l/missing");
        assert_eq!(
            canonicalize(&missing).unwrap_err().kind(),
            std::fs::canonicalize(&missing).unwrap_err().kind()
        );
    }

    #[test]
    fn layout_matches_rkt() {
        let p = PodPaths::new("/var/lib/rkt/pods/run/u");
        assert_eq!(
            p.app_status("a"),
            PathBuf::from("/var/lib/rkt/pods/run/u/stage1/rootfs/rkt/status/a")
        );
        assert_eq!(
            p.app_rootfs("a"),
            PathBuf::from("/var/lib/rkt/pods/run/u/stage1/rootfs/opt/stage2/a/rootfs")
        );
    }

    #[test]
    fn guest_views_match_the_host_layout() {
        for (guest, host) in [
            (GUEST_STATUS_DIR, STATUS_DIR_IN_STAGE1),
            (GUEST_ERRORS_DIR, ERRORS_DIR_IN_STAGE1),
            (GUEST_PLAN, PLAN_IN_STAGE1),
            (GUEST_FAILURE, GUEST_FAILURE_IN_STAGE1),
            (GUEST_NET, NET_IN_STAGE1),
        ] {
            assert_eq!(guest, format!("/{host}"));
            assert!(Path::new(guest).starts_with(GUEST_RKT_DIR));
        }
        assert_eq!(GUEST_INIT_PATH, format!("/{GUEST_INIT_IN_STAGE1}"));
    }

    #[test]
    fn lifecycle_table() {
        assert!(PodDirState::Embryo.can_move_to(PodDirState::Prepare));
        assert!(!PodDirState::Run.can_move_to(PodDirState::Prepared));
        assert!(!PodDirState::Garbage.can_move_to(PodDirState::Run));
    }
}
