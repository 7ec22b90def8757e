//! Pod lifecycle as in rkt: one directory per state under `<dir>/pods/`, moves by rename(2)
//! while holding an exclusive flock on the pod directory, and the flock itself telling
//! "preparing" from "aborted prepare", "running" from "exited" and "deleting" from "marked".
//!
//! The allowed renames are [`PodDirState::TRANSITIONS`]; the derived states are [`PodState`].

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use pod_abi::paths::{PodDirState, PodPaths};

use super::PodError;
use crate::util::{flock, LockMode};

/// Minimum length of a UUID prefix accepted on the command line (characters).
pub const MIN_UUID_PREFIX: usize = 2;

/// The state of a pod as rkt reports it (`rkt status`, `rkt list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PodState {
    /// In `embryo/`.
    Embryo,
    /// In `prepare/`, locked.
    Preparing,
    /// In `prepare/`, unlocked: the preparing process died.
    AbortedPrepare,
    /// In `prepared/`.
    Prepared,
    /// In `run/`, locked by stage1.
    Running,
    /// In `run/`, unlocked.
    Exited,
    /// In `exited-garbage/`, unlocked: marked by gc.
    ExitedGarbage,
    /// In `exited-garbage/`, locked: being deleted.
    ExitedDeleting,
    /// In `garbage/`, unlocked.
    Garbage,
    /// In `garbage/`, locked: being deleted.
    Deleting,
}

impl PodState {
    /// rkt's string for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            PodState::Embryo => "embryo",
            PodState::Preparing => "preparing",
            PodState::AbortedPrepare => "aborted prepare",
            PodState::Prepared => "prepared",
            PodState::Running => "running",
            PodState::Exited => "exited",
            PodState::ExitedGarbage => "exited garbage",
            PodState::ExitedDeleting => "exited deleting",
            PodState::Garbage => "garbage",
            PodState::Deleting => "deleting",
        }
    }

    /// Derives the state from the directory and whether its lock is held.
    pub fn derive(dir: PodDirState, locked: bool) -> PodState {
        match (dir, locked) {
            (PodDirState::Embryo, _) => PodState::Embryo,
            (PodDirState::Prepare, true) => PodState::Preparing,
            (PodDirState::Prepare, false) => PodState::AbortedPrepare,
            (PodDirState::Prepared, _) => PodState::Prepared,
            (PodDirState::Run, true) => PodState::Running,
            (PodDirState::Run, false) => PodState::Exited,
            (PodDirState::ExitedGarbage, true) => PodState::ExitedDeleting,
            (PodDirState::ExitedGarbage, false) => PodState::ExitedGarbage,
            (PodDirState::Garbage, true) => PodState::Deleting,
            (PodDirState::Garbage, false) => PodState::Garbage,
        }
    }

    /// Whether the pod has run (its apps may have status files).
    pub fn is_after_run(self) -> bool {
        matches!(
            self,
            PodState::Exited | PodState::ExitedGarbage | PodState::ExitedDeleting
        )
    }
}

impl std::fmt::Display for PodState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `<dir>/pods` tree.
#[derive(Debug, Clone)]
pub struct PodsDir {
    root: PathBuf,
}

impl PodsDir {
    /// `<data_dir>/pods` (made absolute); creates the state directories if missing, and
    /// gives the data directory, `pods` and the state directories rkt's ownership and modes
    /// (see [`crate::store::datadir`]).
    pub fn open(data_dir: &Path) -> Result<Self, PodError> {
        let states: Vec<&str> = PodDirState::ALL.iter().map(|s| s.dir_name()).collect();
        let pods = data_dir.join("pods");
        let root = match crate::store::datadir::secure_pods_dir(data_dir, &states) {
            Ok(root) => root,
            // A reader who may not make it (a `rkt` group member) before the first pod: there
            // are no pods to list.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && !pods.exists() => {
                let dir = pod_abi::paths::canonicalize(data_dir)
                    .map_err(|e| PodError::io("resolve", data_dir, e))?;
                return Ok(Self {
                    root: dir.join("pods"),
                });
            }
            Err(e) => return Err(PodError::io("create", &pods, e)),
        };
        // Absolute: stage1 runs with cwd = the pod directory and overlay options need
        // absolute paths.
        let root =
            pod_abi::paths::canonicalize(&root).map_err(|e| PodError::io("resolve", &root, e))?;
        Ok(Self { root })
    }

    /// `<dir>/pods`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The data directory (`--dir`) holding `pods/` and `cas/`.
    pub fn data_dir(&self) -> &Path {
        self.root.parent().unwrap_or(&self.root)
    }

    /// `<dir>/pods/<state>/<uuid>`.
    pub fn path(&self, state: PodDirState, uuid: &str) -> PathBuf {
        self.root.join(state.dir_name()).join(uuid)
    }

    /// Creates a new pod: `embryo/<uuid>`, locked exclusively, then renamed to `prepare/`.
    /// The returned pod holds the lock (state "preparing").
    pub fn create(&self) -> Result<Pod, PodError> {
        let uuid = uuid::Uuid::new_v4().to_string();
        let path = self.path(PodDirState::Embryo, &uuid);
        fs::create_dir(&path).map_err(|e| PodError::io("create", &path, e))?;
        let dir = open_dir(&path)?;
        flock(&dir, LockMode::Exclusive, false).map_err(|e| PodError::io("lock", &path, e))?;
        let mut pod = Pod {
            pods: self.clone(),
            uuid,
            dir_state: PodDirState::Embryo,
            dir,
            locked: true,
        };
        pod.transition(PodDirState::Prepare)?;
        Ok(pod)
    }

    /// An exclusive flock on `pods/` itself, held while the returned file lives (waits for
    /// it): serializes choices that depend on every pod's records (`--private-users` ranges).
    pub fn lock_all(&self) -> Result<File, PodError> {
        let dir = open_dir(&self.root)?;
        flock(&dir, LockMode::Exclusive, true).map_err(|e| PodError::io("lock", &self.root, e))?;
        Ok(dir)
    }

    /// Every pod UUID found in any state directory, sorted, without duplicates.
    pub fn list_uuids(&self) -> Result<Vec<String>, PodError> {
        let mut out = Vec::new();
        for s in PodDirState::ALL {
            let d = self.root.join(s.dir_name());
            let rd = match fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(PodError::io("read", &d, e)),
            };
            for ent in rd.flatten() {
                let name = ent.file_name().to_string_lossy().into_owned();
                if uuid::Uuid::parse_str(&name).is_ok() && ent.path().is_dir() {
                    out.push(name);
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Every pod listed by [`PodsDir::list_uuids`] that is still there when its turn comes,
    /// opened one at a time (unlocked), in UUID order.
    pub fn pods(&self) -> Result<impl Iterator<Item = Pod> + '_, PodError> {
        Ok(self
            .list_uuids()?
            .into_iter()
            .filter_map(|u| self.open_pod(&u).ok()))
    }

    /// Resolves a full UUID or an unambiguous prefix to a full UUID.
    pub fn resolve(&self, reference: &str) -> Result<String, PodError> {
        let r = reference.trim().to_ascii_lowercase();
        if r.len() < MIN_UUID_PREFIX {
            return Err(PodError::NotFound(reference.to_string()));
        }
        let all = self.list_uuids()?;
        if all.contains(&r) {
            return Ok(r);
        }
        let m: Vec<&String> = all.iter().filter(|u| u.starts_with(&r)).collect();
        match m.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(PodError::NotFound(reference.to_string())),
            _ => Err(PodError::Ambiguous(reference.to_string())),
        }
    }

    /// Opens a pod by full UUID or prefix, without locking it.
    pub fn open_pod(&self, reference: &str) -> Result<Pod, PodError> {
        // A full UUID names its pod without a listing of every state directory (`rkt gc` opens
        // each pod it lists: a listing per pod made it quadratic in the pods on the host).
        let uuid = match full_uuid(reference) {
            Some(u) => u,
            None => self.resolve(reference)?,
        };
        // A concurrent rename can move the pod between the lookup and the open; retry a few times.
        for _ in 0..8 {
            for s in PodDirState::ALL {
                let path = self.path(s, &uuid);
                // A directory only, as `list_uuids` lists (ENOTDIR: not a pod).
                let opened = {
                    use std::os::unix::fs::OpenOptionsExt;
                    fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_DIRECTORY)
                        .open(&path)
                };
                match opened {
                    Ok(dir) => {
                        return Ok(Pod {
                            pods: self.clone(),
                            uuid,
                            dir_state: s,
                            dir,
                            locked: false,
                        })
                    }
                    Err(e)
                        if e.kind() == io::ErrorKind::NotFound
                            || e.raw_os_error() == Some(libc::ENOTDIR) =>
                    {
                        continue
                    }
                    Err(e) => return Err(PodError::io("open", &path, e)),
                }
            }
        }
        Err(PodError::NotFound(reference.to_string()))
    }
}

/// `reference` as a pod directory name if it is a whole UUID (hyphenated, any case).
fn full_uuid(reference: &str) -> Option<String> {
    let r = reference.trim().to_ascii_lowercase();
    let u = uuid::Uuid::parse_str(&r).ok()?;
    (u.hyphenated().to_string() == r).then_some(r)
}

fn open_dir(path: &Path) -> Result<File, PodError> {
    File::open(path).map_err(|e| PodError::io("open", path, e))
}

/// One pod directory, opened (the fd follows renames), optionally holding its lock.
#[derive(Debug)]
pub struct Pod {
    pods: PodsDir,
    uuid: String,
    dir_state: PodDirState,
    dir: File,
    locked: bool,
}

impl Pod {
    /// The pod UUID.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// The state directory the pod is in (as of the last transition or open).
    pub fn dir_state(&self) -> PodDirState {
        self.dir_state
    }

    /// The pod directory path.
    pub fn path(&self) -> PathBuf {
        self.pods.path(self.dir_state, &self.uuid)
    }

    /// Typed paths of the pod's files.
    pub fn paths(&self) -> PodPaths {
        PodPaths::new(self.path())
    }

    /// Whether this handle holds the pod lock.
    pub fn holds_lock(&self) -> bool {
        self.locked
    }

    /// Whether some process holds the pod lock (probed with a shared non-blocking flock on a
    /// fresh open file description, as rkt does).
    pub fn is_locked_by_anyone(&self) -> bool {
        if self.locked {
            return true;
        }
        let Ok(probe) = File::open(self.path()) else {
            return false;
        };
        match flock(&probe, LockMode::Shared, false) {
            Ok(()) => false,
            Err(e) => e.kind() == io::ErrorKind::WouldBlock,
        }
    }

    /// The derived state (rkt's names).
    pub fn state(&self) -> PodState {
        PodState::derive(self.dir_state, self.is_locked_by_anyone())
    }

    /// Takes the exclusive lock; `wait = false` fails with [`PodError::Locked`] if held.
    pub fn lock(&mut self, wait: bool) -> Result<(), PodError> {
        if self.locked {
            return Ok(());
        }
        match flock(&self.dir, LockMode::Exclusive, wait) {
            Ok(()) => {
                self.locked = true;
                // The pod may have moved between open and lock: re-find it.
                self.refresh_dir_state()?;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                Err(PodError::Locked(self.uuid.clone()))
            }
            Err(e) => Err(PodError::io("lock", &self.path(), e)),
        }
    }

    /// Releases the lock (if held).
    pub fn unlock(&mut self) {
        if self.locked {
            // SAFETY: LOCK_UN on the valid fd owned by `self.dir`; failure only means the lock
            // was not held, which is harmless.
            unsafe { libc::flock(self.dir.as_raw_fd(), libc::LOCK_UN) };
            self.locked = false;
        }
    }

    fn refresh_dir_state(&mut self) -> Result<(), PodError> {
        let me = self
            .dir
            .metadata()
            .map_err(|e| PodError::io("stat", &self.path(), e))?;
        use std::os::unix::fs::MetadataExt;
        for s in PodDirState::ALL {
            if let Ok(m) = fs::metadata(self.pods.path(s, &self.uuid)) {
                if m.ino() == me.ino() && m.dev() == me.dev() {
                    self.dir_state = s;
                    return Ok(());
                }
            }
        }
        Err(PodError::NotFound(self.uuid.clone()))
    }

    /// Moves the pod to another state directory by rename(2). The caller must hold the lock,
    /// and the move must be in [`PodDirState::TRANSITIONS`].
    pub fn transition(&mut self, to: PodDirState) -> Result<(), PodError> {
        if !self.dir_state.can_move_to(to) {
            return Err(PodError::BadTransition {
                from: self.dir_state,
                to,
            });
        }
        if !self.locked {
            return Err(PodError::NotLocked(self.uuid.clone()));
        }
        let from = self.path();
        let dst = self.pods.path(to, &self.uuid);
        // No fsync: a pod that runs does not outlive the host; `rkt prepare` syncs the file
        // system once after its last transition (see `layout::sync_pod`).
        fs::rename(&from, &dst).map_err(|e| PodError::io("rename", &from, e))?;
        self.dir_state = to;
        Ok(())
    }

    /// The open directory (e.g. to pass its fd to stage1 as `RKT_LOCK_FD`).
    pub fn dir_file(&self) -> &File {
        &self.dir
    }

    /// Gives up the handle and returns the locked directory fd (for stage1 to inherit).
    pub fn into_lock_fd(self) -> OwnedFd {
        OwnedFd::from(self.dir)
    }

    /// The pod's creation time: mtime of `pod-created` (or of `pod`).
    pub fn created(&self) -> Option<std::time::SystemTime> {
        let p = self.paths();
        fs::metadata(p.root().join(pod_abi::paths::POD_CREATED))
            .or_else(|_| fs::metadata(p.manifest()))
            .and_then(|m| m.modified())
            .ok()
    }

    /// The pod's start time: mtime of `pid` (or `ppid`), if stage1 wrote one.
    pub fn started(&self) -> Option<std::time::SystemTime> {
        let root = self.path();
        ["pid", "ppid"]
            .iter()
            .find_map(|f| fs::metadata(root.join(f)).and_then(|m| m.modified()).ok())
    }

    /// The time gc marked the pod (ctime of the pod directory in a garbage state).
    pub fn gc_marked(&self) -> Option<std::time::SystemTime> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::symlink_metadata(self.path()).ok()?;
        let secs = u64::try_from(m.ctime()).ok()?;
        let nanos = u32::try_from(m.ctime_nsec()).unwrap_or(0);
        Some(std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos))
    }

    /// The PID stage1 wrote to `pid` (or `ppid`), read bounded, never through a symlink or
    /// from a FIFO (`pod_abi::podfile`: a KVM pod's VMM holds the pod directory writable).
    pub fn pid(&self) -> Option<i32> {
        let root = self.path();
        ["pid", "ppid"].iter().find_map(|f| {
            pod_abi::podfile::read_line_beneath(&root, Path::new(f), pod_abi::podfile::PID_FILE_MAX)
                .ok()
                .and_then(|t| t.trim().parse().ok())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn create_moves_to_prepare_and_locks() {
        let t = tempfile::tempdir().unwrap();
        let pods = PodsDir::open(t.path()).unwrap();
        let mut pod = pods.create().unwrap();
        assert_eq!(pod.dir_state(), PodDirState::Prepare);
        assert!(pod.path().is_dir());
        assert_eq!(pod.state(), PodState::Preparing);
        // A second handle sees the lock held.
        let other = pods.open_pod(pod.uuid()).unwrap();
        assert_eq!(other.state(), PodState::Preparing);
        pod.unlock();
        assert_eq!(other.state(), PodState::AbortedPrepare);
    }

    #[test]
    fn open_pod_by_full_uuid_prefix_and_case() {
        let t = tempfile::tempdir().unwrap();
        let pods = PodsDir::open(t.path()).unwrap();
        let pod = pods.create().unwrap();
        let u = pod.uuid().to_string();
        for r in [
            u.clone(),
            u.to_ascii_uppercase(),
            format!(" {u} "),
            u[..8].to_string(),
        ] {
            assert_eq!(pods.open_pod(&r).unwrap().uuid(), u, "{r:?}");
        }
        // A whole UUID of no pod, and the same UUID in another form, are not found.
        let other = uuid::Uuid::new_v4().hyphenated().to_string();
        assert!(matches!(pods.open_pod(&other), Err(PodError::NotFound(_))));
        let simple = u.replace('-', "");
        assert!(matches!(pods.open_pod(&simple), Err(PodError::NotFound(_))));
        assert_eq!(full_uuid(&u).as_deref(), Some(u.as_str()));
        assert_eq!(full_uuid(&simple), None);
        // A file with a UUID's name in a state directory is not a pod.
        let stray = uuid::Uuid::new_v4().hyphenated().to_string();
        std::fs::write(pods.path(PodDirState::Run, &stray), b"").unwrap();
        assert!(matches!(pods.open_pod(&stray), Err(PodError::NotFound(_))));
    }

    #[test]
    fn transitions_follow_the_table() {
        let t = tempfile::tempdir().unwrap();
        let pods = PodsDir::open(t.path()).unwrap();
        let mut pod = pods.create().unwrap();
        pod.transition(PodDirState::Prepared).unwrap();
        assert!(matches!(
            pod.transition(PodDirState::ExitedGarbage),
            Err(PodError::BadTransition { .. })
        ));
        pod.transition(PodDirState::Run).unwrap();
        let probe = pods.open_pod(pod.uuid()).unwrap();
        assert_eq!(probe.state(), PodState::Running);
        pod.unlock();
        assert_eq!(probe.state(), PodState::Exited);
        assert!(matches!(
            pod.transition(PodDirState::ExitedGarbage),
            Err(PodError::NotLocked(_))
        ));
        pod.lock(false).unwrap();
        pod.transition(PodDirState::ExitedGarbage).unwrap();
        pod.unlock();
        assert_eq!(
            pods.open_pod(pod.uuid()).unwrap().state(),
            PodState::ExitedGarbage
        );
    }

    #[test]
    fn prefixes_resolve_unambiguously() {
        let t = tempfile::tempdir().unwrap();
        let pods = PodsDir::open(t.path()).unwrap();
        for u in [
            "aaaa1111-0000-4000-8000-000000000000",
            "aaaa2222-0000-4000-8000-000000000000",
        ] {
            fs::create_dir(pods.path(PodDirState::Prepared, u)).unwrap();
        }
        assert!(matches!(pods.resolve("aaaa"), Err(PodError::Ambiguous(_))));
        assert_eq!(
            pods.resolve("aaaa1").unwrap(),
            "aaaa1111-0000-4000-8000-000000000000"
        );
        assert!(matches!(pods.resolve("bbbb"), Err(PodError::NotFound(_))));
        assert!(matches!(pods.resolve("a"), Err(PodError::NotFound(_))));
        // Locking a pod that another handle holds fails without waiting.
        let mut a = pods.open_pod("aaaa1").unwrap();
        let mut b = pods.open_pod("aaaa1").unwrap();
        a.lock(false).unwrap();
        assert!(matches!(b.lock(false), Err(PodError::Locked(_))));
    }
}
