//! stage1 images: selection (`--stage1=ns|kvm`, `--stage1-path/-name/-hash/-url`, the default
//! flavor found next to the `rkt` binary), entrypoint resolution from the stage1 manifest's
//! annotations, and running the entrypoints with cwd = the pod directory (`run` by exec with
//! the pod lock fd in `RKT_LOCK_FD`, as rkt does).

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use appc::ImageManifest;
use pod_abi::stage1 as abi;

use crate::fetch::{fetch_image, FetchError, FetchOptions};
use crate::pod::args::Stage1Ref;
use crate::store::{ImageRecord, Store, StoreError};

/// The flavor used when no stage1 flag is given.
pub const DEFAULT_FLAVOR: &str = "ns";
/// System-wide directory holding `stage1-<flavor>.aci` files.
pub const SYSTEM_STAGE1_DIR: &str = "/usr/lib/rkt/stage1-images";
/// Cache of imported stage1 ACI files (path, size, mtime -> image ID) under `--dir`.
pub const STAGE1_CACHE_FILE: &str = "stage1-images.json";

/// Errors selecting or running stage1.
#[derive(Debug, thiserror::Error)]
pub enum Stage1Error {
    /// The default stage1 image file was not found.
    #[error("stage1 image {file} not found (looked in {searched}); give --stage1-path")]
    NotFound {
        /// The file looked for (`stage1-<flavor>.aci`, or `--stage1-from-dir`'s name).
        file: String,
        /// Directories searched.
        searched: String,
    },
    /// Fetching/importing the image failed.
    #[error("cannot get stage1 image {0}")]
    Fetch(String, #[source] Box<FetchError>),
    /// Store lookup failed.
    #[error("cannot find stage1 image {0}")]
    Store(String, #[source] Box<StoreError>),
    /// The stage1 manifest lacks an entrypoint.
    #[error("stage1 image has no {0} entrypoint annotation")]
    NoEntrypoint(&'static str),
    /// An entrypoint path is not a clean relative path.
    #[error("stage1 entrypoint {0:?} is not a path inside the stage1 rootfs")]
    BadEntrypoint(String),
    /// Reading the stage1 manifest failed.
    #[error("cannot read stage1 manifest {0}")]
    Manifest(PathBuf, #[source] std::io::Error),
    /// The stage1 manifest is invalid.
    #[error("invalid stage1 manifest {0}")]
    BadManifest(PathBuf, #[source] appc::ManifestError),
    /// exec/spawn failed.
    #[error("cannot execute stage1 entrypoint {0}")]
    Exec(PathBuf, #[source] std::io::Error),
    /// The pod's `stage1TreeStoreID` cannot be read.
    #[error("cannot read the pod's stage1 tree ID")]
    TreeId(#[source] pod_abi::podfile::PodFileError),
    /// The pod's stage1 tree is not (or no longer) rendered in the store.
    #[error(
        "the pod's stage1 image tree {0:?} is not in the store (was the stage1 image removed?)"
    )]
    NoTree(String),
}

/// The read-only root of the stage1 image a pod was created with: its rendered tree in the
/// store (`cas/tree/<stage1TreeStoreID>/rootfs`). Every entrypoint runs from here. The pod's
/// own `stage1/rootfs` is an overlay whose upper layer the pod writes (in the kvm flavor it is
/// the guest's virtio-fs root), so the host never executes anything from it.
pub fn image_root(data_dir: &Path, pod_dir: &Path) -> Result<PathBuf, Stage1Error> {
    let rel = Path::new(pod_abi::paths::STAGE1_TREE_ID);
    let id = pod_abi::podfile::read_line_beneath(pod_dir, rel, pod_abi::podfile::SMALL_FILE_MAX)
        .map_err(Stage1Error::TreeId)?;
    crate::store::rendered_rootfs(data_dir, &id).ok_or(Stage1Error::NoTree(id))
}

/// Directories searched for `stage1-<flavor>.aci`, in order.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            if let Some(up) = dir.parent() {
                v.push(up.to_path_buf());
            }
            v.push(dir.to_path_buf());
        }
    }
    v.push(PathBuf::from(SYSTEM_STAGE1_DIR));
    v
}

/// Finds `stage1-<flavor>.aci` in [`search_dirs`].
pub fn find_flavor_aci(flavor: &str) -> Result<PathBuf, Stage1Error> {
    find_stage1_file(&format!("stage1-{flavor}.aci"))
}

/// Finds the stage1 image file `file` (a plain file name) in [`search_dirs`].
pub fn find_stage1_file(file: &str) -> Result<PathBuf, Stage1Error> {
    let dirs = search_dirs();
    dirs.iter()
        .map(|d| d.join(file))
        .find(|p| p.is_file())
        .ok_or_else(|| Stage1Error::NotFound {
            file: file.to_string(),
            searched: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Imports a stage1 ACI file, reusing the previous import when the file is unchanged (same
/// path, size and mtime), so a run does not re-hash the stage1 image.
pub fn import_file(
    store: &Store,
    path: &Path,
    opts: &FetchOptions,
) -> Result<ImageRecord, Stage1Error> {
    use std::os::unix::fs::MetadataExt;
    let abs = pod_abi::paths::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let key = abs.display().to_string();
    let stamp = std::fs::metadata(&abs)
        .map(|m| format!("{}:{}.{}", m.size(), m.mtime(), m.mtime_nsec()))
        .ok();
    let cache_path = store.dir().join(STAGE1_CACHE_FILE);
    let mut cache: serde_json::Map<String, serde_json::Value> = std::fs::read(&cache_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if let (Some(stamp), Some(entry)) = (&stamp, cache.get(&key)) {
        if entry.get("stamp").and_then(|s| s.as_str()) == Some(stamp.as_str()) {
            if let Some(id) = entry.get("id").and_then(|s| s.as_str()) {
                if let Ok(rec) = store.resolve(id) {
                    return Ok(rec);
                }
            }
        }
    }
    let mut o = opts.clone();
    o.trusted_location = true;
    let rec =
        fetch_image(store, &key, &o).map_err(|e| Stage1Error::Fetch(key.clone(), Box::new(e)))?;
    if let Some(stamp) = stamp {
        cache.insert(key, serde_json::json!({"stamp": stamp, "id": rec.id}));
        let _ = crate::util::write_atomic(
            &cache_path,
            &serde_json::to_vec(&cache).unwrap_or_default(),
            0o644,
        );
    }
    Ok(rec)
}

/// Resolves the stage1 image to a store record (importing/fetching as needed).
pub fn select(
    store: &Store,
    r: &Stage1Ref,
    opts: &FetchOptions,
) -> Result<ImageRecord, Stage1Error> {
    match r {
        Stage1Ref::Default => import_file(store, &find_flavor_aci(DEFAULT_FLAVOR)?, opts),
        Stage1Ref::Flavor(f) => import_file(store, &find_flavor_aci(f)?, opts),
        Stage1Ref::Path(p) => import_file(store, p, opts),
        Stage1Ref::FromDir(f) => import_file(store, &find_stage1_file(f)?, opts),
        Stage1Ref::Name(n) => match store.resolve(n) {
            Ok(rec) => Ok(rec),
            Err(_) => {
                fetch_image(store, n, opts).map_err(|e| Stage1Error::Fetch(n.clone(), Box::new(e)))
            }
        },
        Stage1Ref::Hash(h) => store
            .resolve(h)
            .map_err(|e| Stage1Error::Store(h.clone(), Box::new(e))),
        Stage1Ref::Url(u) => {
            fetch_image(store, u, opts).map_err(|e| Stage1Error::Fetch(u.clone(), Box::new(e)))
        }
    }
}

/// The entrypoints of a stage1 image, from its manifest.
#[derive(Debug, Clone)]
pub struct Entrypoints {
    manifest: ImageManifest,
}

impl Entrypoints {
    /// Reads `stage1/manifest` of a pod (bounded, never through a symlink or from a FIFO).
    pub fn read(stage1_manifest: &Path) -> Result<Self, Stage1Error> {
        let (dir, name) = match (stage1_manifest.parent(), stage1_manifest.file_name()) {
            (Some(d), Some(n)) => (d, Path::new(n)),
            _ => (Path::new("."), stage1_manifest),
        };
        let b = pod_abi::podfile::read_beneath(dir, name, pod_abi::podfile::MANIFEST_MAX).map_err(
            |e| {
                let io = match e.is_not_found() {
                    true => std::io::Error::from(std::io::ErrorKind::NotFound),
                    false => std::io::Error::other(e.to_string()),
                };
                Stage1Error::Manifest(stage1_manifest.to_path_buf(), io)
            },
        )?;
        let manifest = ImageManifest::from_json(&b)
            .map_err(|e| Stage1Error::BadManifest(stage1_manifest.to_path_buf(), e))?;
        Ok(Self { manifest })
    }

    /// Wraps a manifest.
    pub fn from_manifest(manifest: ImageManifest) -> Self {
        Self { manifest }
    }

    /// The interface version (missing means 1).
    pub fn interface_version(&self) -> u32 {
        self.manifest
            .annotation(abi::ANN_INTERFACE_VERSION)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1)
    }

    /// The path inside the stage1 rootfs of the entrypoint named by annotation `ann`.
    pub fn entrypoint(&self, ann: &'static str) -> Result<PathBuf, Stage1Error> {
        let v = self
            .manifest
            .annotation(ann)
            .ok_or(Stage1Error::NoEntrypoint(ann))?;
        let rel = v.trim_start_matches('/');
        let ok = !rel.is_empty()
            && Path::new(rel)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !ok {
            return Err(Stage1Error::BadEntrypoint(v.to_string()));
        }
        Ok(PathBuf::from(rel))
    }

    /// Whether the image declares entrypoint `ann`.
    pub fn has(&self, ann: &str) -> bool {
        self.manifest.annotation(ann).is_some()
    }
}

fn cstr(s: &std::ffi::OsStr) -> Result<CString, std::io::Error> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(s.as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in argument"))
}

/// Replaces this process with the stage1 `run` entrypoint: cwd = `pod_dir`, argv = `args`,
/// the pod lock fd inherited (FD_CLOEXEC cleared) and named in `RKT_LOCK_FD`. Returns only on
/// failure.
pub fn exec_run(pod_dir: &Path, entry: &Path, args: &abi::RunArgs, lock: OwnedFd) -> Stage1Error {
    let fd = lock.as_raw_fd();
    let err = |e: std::io::Error| Stage1Error::Exec(entry.to_path_buf(), e);
    if let Err(e) = std::env::set_current_dir(pod_dir) {
        return err(e);
    }
    // SAFETY: F_GETFD/F_SETFD on an fd we own; return values are checked.
    let r = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC)
        }
    };
    if r < 0 {
        return err(std::io::Error::last_os_error());
    }
    let mut argv = Vec::new();
    for a in std::iter::once(entry.as_os_str().to_owned())
        .chain(args.to_argv().into_iter().map(Into::into))
    {
        match cstr(&a) {
            Ok(c) => argv.push(c),
            Err(e) => return err(e),
        }
    }
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != abi::ENV_LOCK_FD)
        .filter_map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            cstr(&kv).ok()
        })
        .collect();
    if let Ok(c) = CString::new(format!("{}={fd}", abi::ENV_LOCK_FD)) {
        envp.push(c);
    }
    let path = match cstr(entry.as_os_str()) {
        Ok(p) => p,
        Err(e) => return err(e),
    };
    // Keep the fd open across exec (ownership passes to the new program image).
    std::mem::forget(lock);
    match nix::unistd::execve(&path, &argv, &envp) {
        Ok(never) => match never {},
        Err(e) => err(std::io::Error::from(e)),
    }
}

/// Runs a non-`run` entrypoint (gc, stop) to completion with cwd = `pod_dir`; `entry` is a
/// path in the stage1 image's tree ([`image_root`]).
pub fn run_entrypoint(
    pod_dir: &Path,
    entry: &Path,
    argv: &[String],
) -> Result<std::process::ExitStatus, Stage1Error> {
    run_entrypoint_with_fds(pod_dir, entry, argv, &[])
}

/// [`run_entrypoint`], the entrypoint inheriting the descriptors `keep` (close-on-exec here;
/// cleared in the child only, so no other child of this process gets them).
pub fn run_entrypoint_with_fds(
    pod_dir: &Path,
    entry: &Path,
    argv: &[String],
    keep: &[std::os::fd::BorrowedFd<'_>],
) -> Result<std::process::ExitStatus, Stage1Error> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(entry);
    cmd.args(argv).current_dir(pod_dir);
    if !keep.is_empty() {
        let fds: Vec<i32> = keep.iter().map(|f| f.as_raw_fd()).collect();
        // SAFETY: the closure runs in the forked child before exec and only calls fcntl(2),
        // which is async-signal-safe, on descriptors the parent keeps open across the spawn.
        unsafe {
            cmd.pre_exec(move || {
                for fd in &fds {
                    if libc::fcntl(*fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    cmd.status()
        .map_err(|e| Stage1Error::Exec(entry.to_path_buf(), e))
}

/// Replaces this process with an entrypoint (enter), cwd = `pod_dir`; `entry` is a path in
/// the stage1 image's tree ([`image_root`]). Returns only on failure.
pub fn exec_entrypoint(pod_dir: &Path, entry: &Path, argv: &[String]) -> Stage1Error {
    use std::os::unix::process::CommandExt;
    let e = std::process::Command::new(entry)
        .args(argv)
        .current_dir(pod_dir)
        .exec();
    Stage1Error::Exec(entry.to_path_buf(), e)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ep(anns: serde_json::Value) -> Entrypoints {
        let m = serde_json::json!({"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "x/stage1", "annotations": anns});
        Entrypoints::from_manifest(ImageManifest::from_json(m.to_string().as_bytes()).unwrap())
    }

    #[test]
    fn entrypoints_from_annotations() {
        let e = ep(serde_json::json!([
            {"name": abi::ANN_RUN, "value": "/run"},
            {"name": abi::ANN_GC, "value": "/../escape"},
            {"name": abi::ANN_INTERFACE_VERSION, "value": "5"}
        ]));
        assert_eq!(e.entrypoint(abi::ANN_RUN).unwrap(), PathBuf::from("run"));
        assert!(matches!(
            e.entrypoint(abi::ANN_GC),
            Err(Stage1Error::BadEntrypoint(_))
        ));
        assert!(matches!(
            e.entrypoint(abi::ANN_STOP),
            Err(Stage1Error::NoEntrypoint(_))
        ));
        assert_eq!(e.interface_version(), 5);
        assert_eq!(ep(serde_json::json!([])).interface_version(), 1);
    }
}
