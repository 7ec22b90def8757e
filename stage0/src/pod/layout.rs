//! The pod directory's contents: files written at prepare time (`pod`, `pod-created`,
//! `stage1TreeStoreID`, `stage1/manifest`, `appsinfo/`, overlay upper/work dirs), the mounts
//! made right before stage1 runs (stage1 and app rootfs overlays, volumes), the launch plan,
//! and unmounting everything for gc. Nothing of an image is copied: the rendered trees are
//! overlayfs lower layers, except with `--no-overlay` (or a data directory that cannot hold
//! overlay upper dirs), where `prepare` copies the trees into the pod (`tree_copy`) and
//! leaves no `overlay-prepared` marker.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use appc::schema::{App, PodManifest};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use pod_abi::mountinfo::MountTable;
use pod_abi::paths::{
    PodPaths, APPSINFO_DIR, OVERLAY_DIR, POD_CREATED, POD_MANIFEST, PRIVATE_USERS_PREPARED,
    STAGE1_TREE_ID,
};
use pod_abi::plan::Plan;
use pod_abi::userns::IdRange;

use super::tree_copy::CopyStats;
use super::PodError;
use crate::store::gc::PodReferences;
use crate::util::{open_path_no_symlinks, NoSymlinkError};

/// File holding the stage1 image ID (sha512) next to `stage1TreeStoreID`, so that
/// `run-prepared` can render the same stage1 again.
pub const STAGE1_IMAGE_ID: &str = "stage1ImageID";
/// File in `appsinfo/<app>/` holding the app's tree ID.
pub const APP_TREE_ID: &str = "treeStoreID";
/// Marker written once the overlay directories are in place (as rkt).
pub const OVERLAY_PREPARED: &str = "overlay-prepared";
/// Mode of directories created in the pod (octal permission bits).
const DIR_MODE: u32 = 0o755;
/// Mode of the pod directories that hold trees a pod can write (`stage1`, `overlay`,
/// `sharedVolumes`): only root may reach a file a pod planted (setuid binaries, devices).
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Pod subdirectories created with [`PRIVATE_DIR_MODE`].
pub const PRIVATE_DIRS: [&str; 3] = ["stage1", OVERLAY_DIR, "sharedVolumes"];

/// A rendered image tree used by the pod.
#[derive(Debug, Clone)]
pub struct TreeInfo {
    /// Image ID (`sha512-...`).
    pub image_id: String,
    /// Tree-store ID.
    pub tree_id: String,
    /// Rendered rootfs (overlay lower dir).
    pub rootfs: PathBuf,
    /// The image manifest file of the tree.
    pub manifest: PathBuf,
}

/// Creates (or tightens) the pod's [`PRIVATE_DIRS`].
fn private_dirs(root: &Path) -> Result<(), PodError> {
    for d in PRIVATE_DIRS {
        let p = root.join(d);
        match fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(PodError::io("create", &p, e)),
        }
        let m = fs::symlink_metadata(&p).map_err(|e| PodError::io("stat", &p, e))?;
        if !m.is_dir() {
            return Err(PodError::Config(format!(
                "{} is not a directory",
                p.display()
            )));
        }
        if m.mode() & 0o7777 != PRIVATE_DIR_MODE {
            fs::set_permissions(&p, fs::Permissions::from_mode(PRIVATE_DIR_MODE))
                .map_err(|e| PodError::io("chmod", &p, e))?;
        }
    }
    Ok(())
}

fn mkdirs(p: &Path) -> Result<(), PodError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(p)
        .map_err(|e| PodError::io("create", p, e))
}

/// Writes `data` to `path` atomically (temp file in the same directory, then rename) but
/// without fsync: a pod's files matter only while the host is up (`rkt prepare` syncs the pod
/// once at the end, see [`sync_pod`]), and fsyncs would dominate a pod's start time.
pub fn write_file(path: &Path, data: &[u8]) -> Result<(), PodError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp.{}", std::process::id()));
    fs::write(&tmp, data).map_err(|e| PodError::io("write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| PodError::io("rename", &tmp, e))
}

/// Flushes the file system holding the pod directory (one `syncfs`, for prepared pods that
/// must survive a reboot).
pub fn sync_pod(paths: &PodPaths) -> Result<(), PodError> {
    let f = fs::File::open(paths.root()).map_err(|e| PodError::io("open", paths.root(), e))?;
    nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f))
        .map_err(|e| PodError::io("sync", paths.root(), e.into()))
}

fn copy(from: &Path, to: &Path) -> Result<(), PodError> {
    let data = fs::read(from).map_err(|e| PodError::io("read", from, e))?;
    write_file(to, &data)
}

/// Overlay upper/work of the stage1 rootfs: `overlay/<treeid>/{upper,work}`.
fn stage1_overlay(paths: &PodPaths, tree_id: &str) -> (PathBuf, PathBuf) {
    let b = paths.root().join(OVERLAY_DIR).join(tree_id);
    (b.join("upper"), b.join("work"))
}

/// Overlay upper/work of an app rootfs: `overlay/<treeid>/<app>/{upper,work}`.
fn app_overlay(paths: &PodPaths, tree_id: &str, app: &str) -> (PathBuf, PathBuf) {
    let b = paths.root().join(OVERLAY_DIR).join(tree_id).join(app);
    (b.join("upper"), b.join("work"))
}

/// Writes everything `prepare` leaves in the pod directory (no mounts): with `overlay`, the
/// overlay upper/work dirs and the `overlay-prepared` marker; without, copies of the stage1
/// and app trees (see [`super::tree_copy`]), returned as copy statistics.
pub fn write_prepared(
    paths: &PodPaths,
    pm: &PodManifest,
    stage1: &TreeInfo,
    apps: &[TreeInfo],
    overlay: bool,
    private_users: Option<IdRange>,
) -> Result<CopyStats, PodError> {
    let root = paths.root();
    write_file(&paths.manifest(), &pm.to_json())?;
    let created = root.join(POD_CREATED);
    fs::File::create(&created).map_err(|e| PodError::io("create", &created, e))?;
    let w = |name: &str, data: &[u8]| write_file(&root.join(name), data);
    w(STAGE1_TREE_ID, stage1.tree_id.as_bytes())?;
    w(STAGE1_IMAGE_ID, stage1.image_id.as_bytes())?;
    private_dirs(root)?;
    let mut stats = CopyStats::default();
    if overlay {
        mkdirs(&paths.stage1_rootfs())?;
        let (u, wk) = stage1_overlay(paths, &stage1.tree_id);
        mkdirs(&u)?;
        mkdirs(&wk)?;
    } else {
        stats = copy_tree(&stage1.rootfs, &paths.stage1_rootfs(), None, stats)?;
    }
    copy(&stage1.manifest, &paths.stage1_manifest())?;
    for (ra, t) in pm.apps.iter().zip(apps) {
        let name = ra.name.as_str();
        let info = paths.appsinfo(name);
        mkdirs(&info)?;
        copy(&t.manifest, &info.join("manifest"))?;
        write_file(&info.join(APP_TREE_ID), t.tree_id.as_bytes())?;
        if overlay {
            let (u, wk) = app_overlay(paths, &t.tree_id, name);
            mkdirs(&u)?;
            mkdirs(&wk)?;
        } else {
            let target = paths.app_rootfs(name);
            if let Some(parent) = target.parent() {
                mkdirs(parent)?;
            }
            stats = copy_tree(&t.rootfs, &target, private_users, stats)?;
        }
    }
    if overlay {
        w(OVERLAY_PREPARED, b"")?;
    }
    Ok(stats)
}

/// Records a `--private-users` pod's ID range (`private-users-prepared`; written before the
/// trees are copied, under the lock of `launch::reserve_id_range`).
pub fn write_private_users(paths: &PodPaths, range: IdRange) -> Result<(), PodError> {
    write_file(
        &paths.root().join(PRIVATE_USERS_PREPARED),
        range.to_string().as_bytes(),
    )
}

/// A `--private-users` pod's ID range (`private-users-prepared`), None for other pods.
pub fn private_users(paths: &PodPaths) -> Result<Option<IdRange>, PodError> {
    let rel = Path::new(PRIVATE_USERS_PREPARED);
    let line = match pod_abi::podfile::read_line_beneath(
        paths.root(),
        rel,
        pod_abi::podfile::SMALL_FILE_MAX,
    ) {
        Ok(l) => l,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(PodError::io("read", &paths.root().join(rel), io_other(e))),
    };
    IdRange::parse(&line)
        .map(Some)
        .map_err(|e| PodError::io("read", &paths.root().join(rel), io_other(e)))
}

fn io_other(e: impl std::error::Error + Send + Sync + 'static) -> std::io::Error {
    std::io::Error::other(e)
}

/// Whether the pod's trees are overlay mounts (else copies made by `prepare`).
pub fn uses_overlay(paths: &PodPaths) -> bool {
    paths.root().join(OVERLAY_PREPARED).exists()
}

/// Copies one tree into the pod, owners shifted into `shift` if given, adding to `stats`.
fn copy_tree(
    from: &Path,
    to: &Path,
    shift: Option<IdRange>,
    stats: CopyStats,
) -> Result<CopyStats, PodError> {
    let s = super::tree_copy::copy_tree_shifted(from, to, shift)
        .map_err(|e| PodError::io("copy tree to", to, e))?;
    Ok(CopyStats {
        reflinked: stats.reflinked + s.reflinked,
        copied: stats.copied + s.copied,
        bytes: stats.bytes + s.bytes,
        other: stats.other + s.other,
    })
}

fn overlay(lower: &Path, upper: &Path, work: &Path, target: &Path) -> Result<(), PodError> {
    for p in [lower, upper, work] {
        let s = p.to_string_lossy();
        if s.contains([',', ':', '\\']) {
            return Err(PodError::Config(format!(
                "path {s:?} cannot be used in overlay options"
            )));
        }
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    // `volatile` (Linux >= 5.10): the upper layer is thrown away with the pod, so syncs on the
    // pod's rootfs (status files, app fsyncs) need not reach the disk. Older kernels reject
    // the option: mount again without it.
    let volatile = format!("{opts},volatile");
    let m = |o: &str| {
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(o),
        )
    };
    m(&volatile)
        .or_else(|_| m(&opts))
        .map_err(|e| PodError::Mount {
            what: format!("overlay of {}", lower.display()),
            target: target.to_path_buf(),
            source: e,
        })
}

/// Mounts the stage1 rootfs and every app rootfs as overlayfs (unless `prepare` copied the
/// trees, see [`uses_overlay`]) and puts each app's image manifest at
/// `stage1/rootfs/opt/stage2/<app>/manifest`.
pub fn mount_rootfs(
    paths: &PodPaths,
    pm: &PodManifest,
    stage1: &TreeInfo,
    apps: &[TreeInfo],
) -> Result<(), PodError> {
    private_dirs(paths.root())?;
    let use_overlay = uses_overlay(paths);
    let s1 = paths.stage1_rootfs();
    mkdirs(&s1)?;
    if use_overlay {
        let (u, w) = stage1_overlay(paths, &stage1.tree_id);
        mkdirs(&u)?;
        mkdirs(&w)?;
        overlay(&stage1.rootfs, &u, &w, &s1)?;
    }
    for d in [
        pod_abi::paths::STATUS_DIR_IN_STAGE1,
        pod_abi::paths::ERRORS_DIR_IN_STAGE1,
    ] {
        mkdirs(&s1.join(d))?;
    }
    for (ra, t) in pm.apps.iter().zip(apps) {
        let name = ra.name.as_str();
        let target = paths.app_rootfs(name);
        mkdirs(&target)?;
        if use_overlay {
            let (u, w) = app_overlay(paths, &t.tree_id, name);
            mkdirs(&u)?;
            mkdirs(&w)?;
            overlay(&t.rootfs, &u, &w, &target)?;
        }
        copy(&t.manifest, &paths.app_manifest(name))?;
    }
    Ok(())
}

/// Creates `rel` (absolute path inside the app) under `root` without following symlinks: an
/// image must not be able to redirect a volume onto a host path. The last component becomes a
/// directory (or an empty file when `file` is set); a file in the way of a directory target is
/// replaced (it lives in the pod's overlay upper layer).
pub fn secure_target(root: &Path, rel: &str, file: bool) -> Result<PathBuf, PodError> {
    let mut cur = root.to_path_buf();
    let comps: Vec<Component> = Path::new(rel).components().collect();
    let n = comps.len();
    for (i, c) in comps.into_iter().enumerate() {
        let name = match c {
            Component::RootDir | Component::CurDir => continue,
            Component::Normal(x) => x,
            Component::ParentDir | Component::Prefix(_) => {
                return Err(PodError::Config(format!(
                    "volume target {rel:?} must not contain \"..\""
                )))
            }
        };
        cur.push(name);
        let last = i + 1 == n;
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(PodError::Config(format!(
                    "volume target {rel:?}: {} is a symlink in the image; refusing to follow it",
                    cur.display()
                )))
            }
            Ok(m) if m.is_dir() => {
                if last && file {
                    return Err(PodError::Config(format!(
                        "volume target {rel:?} is a directory but the source is a file"
                    )));
                }
            }
            Ok(_) => {
                if !(last && file) {
                    fs::remove_file(&cur).map_err(|e| PodError::io("replace", &cur, e))?;
                    fs::DirBuilder::new()
                        .mode(DIR_MODE)
                        .create(&cur)
                        .map_err(|e| PodError::io("create", &cur, e))?;
                }
            }
            Err(_) if last && file => {
                fs::File::create(&cur).map_err(|e| PodError::io("create", &cur, e))?;
            }
            Err(_) => {
                fs::DirBuilder::new()
                    .mode(DIR_MODE)
                    .create(&cur)
                    .map_err(|e| PodError::io("create", &cur, e))?;
            }
        }
    }
    Ok(cur)
}

/// Opens a host volume's source without following a symlink in any component of the path
/// (the appc spec says a runtime SHOULD refuse them): the fd to bind-mount.
pub fn open_host_source(v: &appc::schema::Volume) -> Result<OwnedFd, PodError> {
    let src = PathBuf::from(v.source.as_deref().unwrap_or_default());
    open_path_no_symlinks(&src).map_err(|e| {
        PodError::Config(match e {
            NoSymlinkError::Symlink(l) if l == src => format!(
                "volume {}: source {} is a symlink; give the path it points to",
                v.name,
                src.display()
            ),
            NoSymlinkError::Symlink(l) => format!(
                "volume {}: source {}: {} is a symlink; give a path without symlinks",
                v.name,
                src.display(),
                l.display()
            ),
            NoSymlinkError::NotNormalized => format!(
                "volume {}: source {:?} must be an absolute path without \".\" or \"..\"",
                v.name,
                src.display()
            ),
            NoSymlinkError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
                "volume {}: source {} does not exist ({e})",
                v.name,
                src.display()
            ),
            NoSymlinkError::Io(e) => format!(
                "volume {}: cannot open source {} ({e})",
                v.name,
                src.display()
            ),
        })
    })
}

/// The host path behind a volume (checked: host sources must exist and have no symlink in
/// any component; empty volumes are created under `sharedVolumes/` with their
/// mode/uid/gid, shifted into a `--private-users` pod's range).
pub fn volume_source(
    paths: &PodPaths,
    v: &appc::schema::Volume,
    private_users: Option<IdRange>,
) -> Result<PathBuf, PodError> {
    match v.kind.as_str() {
        "host" => {
            open_host_source(v)?;
            Ok(PathBuf::from(v.source.as_deref().unwrap_or_default()))
        }
        "empty" => {
            let p = paths.shared_volume(v.name.as_str());
            if !p.exists() {
                private_dirs(paths.root())?;
                mkdirs(&p)?;
                fs::set_permissions(&p, fs::Permissions::from_mode(v.effective_mode()))
                    .map_err(|e| PodError::io("chmod", &p, e))?;
                let (uid, gid) = (v.uid.unwrap_or(0), v.gid.unwrap_or(0));
                let (uid, gid) = match private_users {
                    None => (uid, gid),
                    Some(r) => r.to_host(uid).zip(r.to_host(gid)).ok_or_else(|| {
                        PodError::Config(format!(
                            "volume {}: owner {uid}:{gid} is outside the pod's {} user IDs",
                            v.name, r.count
                        ))
                    })?,
                };
                std::os::unix::fs::chown(&p, Some(uid), Some(gid))
                    .map_err(|e| PodError::io("chown", &p, e))?;
            }
            Ok(p)
        }
        k => Err(PodError::Config(format!(
            "volume {}: unknown kind {k:?}",
            v.name
        ))),
    }
}

/// Refuses volume targets of one app that climb with `..`, and targets that are equal or nested
/// (one under another): the outer mount would hide or be hidden by the inner one depending on
/// order.
pub fn check_mount_targets<'a>(
    app: &str,
    targets: impl IntoIterator<Item = &'a str>,
) -> Result<(), PodError> {
    let mut seen: Vec<(PathBuf, &str)> = Vec::new();
    for t in targets {
        if Path::new(t)
            .components()
            .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(PodError::Config(format!(
                "app {app}: volume target {t:?} must not contain \"..\""
            )));
        }
        let norm: PathBuf = Path::new(t)
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        for (p, orig) in &seen {
            if *p == norm {
                return Err(PodError::Config(format!(
                    "app {app}: two volumes are mounted on {t}"
                )));
            }
            if norm.starts_with(p) || p.starts_with(&norm) {
                let (outer, inner) = if norm.starts_with(p) {
                    (*orig, t)
                } else {
                    (t, *orig)
                };
                return Err(PodError::Config(format!(
                    "app {app}: volume target {inner} is inside volume target {outer}; nested volume targets are not supported"
                )));
            }
        }
        seen.push((norm, t));
    }
    Ok(())
}

/// Validates the volumes of a pod manifest before the pod exists: every host source opens
/// without a symlink in any component, and no app has nested, duplicate or climbing targets.
/// `apps` are the apps' effective app sections in manifest order (an app's own, else its
/// image's); an app without one is skipped.
pub fn check_volumes(pm: &PodManifest, apps: &[Option<&App>]) -> Result<(), PodError> {
    let per_app = pm
        .apps
        .iter()
        .flat_map(|a| &a.mounts)
        .filter_map(|m| m.app_volume.as_ref());
    for v in pm
        .volumes
        .iter()
        .chain(per_app)
        .filter(|v| v.kind == "host")
    {
        open_host_source(v)?;
    }
    for (ra, app) in pm.apps.iter().zip(apps) {
        let Some(app) = app else {
            continue;
        };
        let mounts = super::plan::app_mounts(pm, ra, app)?;
        check_mount_targets(ra.name.as_str(), mounts.iter().map(|m| m.target.as_str()))?;
    }
    Ok(())
}

/// Makes the mount at `target` read-only, with every mount below it when `recursive`:
/// mount_setattr(2) with `AT_RECURSIVE` (Linux >= 5.12), else a read-only bind remount of
/// the target and of each submount listed in /proc/self/mountinfo (keeping their nosuid,
/// nodev, noexec and atime flags).
pub fn make_read_only(target: &Path, recursive: bool) -> Result<(), PodError> {
    let e = match pod_abi::mount_api::set_attrs_at(
        target,
        pod_abi::mount_api::MOUNT_ATTR_RDONLY,
        recursive,
    ) {
        Ok(()) => return Ok(()),
        Err(e) => nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    };
    if !matches!(e, nix::errno::Errno::ENOSYS | nix::errno::Errno::EINVAL) {
        return Err(PodError::Mount {
            what: "read-only attribute".into(),
            target: target.to_path_buf(),
            source: e,
        });
    }
    remount_read_only_tree(target, recursive)
}

/// The fallback of [`make_read_only`] (public for its test): a read-only bind remount of
/// `target` and, when `recursive`, of every mount below it in /proc/self/mountinfo, each
/// reached again from `target` without following a symlink (`pod_abi::mountinfo::pin_beneath`:
/// a directory in the volume that a running pod shares could lead a path-based remount to a
/// host mount).
pub fn remount_read_only_tree(target: &Path, recursive: bool) -> Result<(), PodError> {
    // `target` itself: a path rkt resolved beneath the app's root (`secure_target`) before
    // the pod started, a file or a directory.
    remount_read_only(target, target)?;
    if !recursive {
        return Ok(());
    }
    let below: Vec<PathBuf> = mounts_under(target)?
        .into_iter()
        .filter(|m| m != target)
        .collect();
    if below.is_empty() {
        return Ok(());
    }
    let dir = pod_abi::podfile::open_dir(target).map_err(|e| PodError::io("open", target, e))?;
    for m in below {
        match pod_abi::mountinfo::pin_beneath(dir.as_fd(), target, &m) {
            Ok(p) => remount_read_only(p.path(), &m)?,
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => remount_read_only(&m, &m)?,
            Err(e) => return Err(PodError::io("open", &m, e)),
        }
    }
    Ok(())
}

/// `MS_BIND|MS_REMOUNT|MS_RDONLY` on one mount, reached as `m` and named `shown` in errors,
/// keeping its other per-mount flags.
fn remount_read_only(m: &Path, shown: &Path) -> Result<(), PodError> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    if let Ok(st) = statvfs(m) {
        for (f, ms) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ] {
            if st.flags().contains(f) {
                flags |= ms;
            }
        }
    }
    mount(None::<&str>, m, None::<&str>, flags, None::<&str>).map_err(|e| PodError::Mount {
        what: "read-only remount".into(),
        target: shown.to_path_buf(),
        source: e,
    })
}

/// Whether `dir` is a directory with at least one entry.
fn non_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut rd| rd.next().is_some())
}

/// Bind-mounts every volume of every app onto its target inside the app's rootfs (host side,
/// before stage1 runs, so every flavor sees them). Warnings go to stderr.
pub fn mount_volumes(paths: &PodPaths, pm: &PodManifest, plan: &Plan) -> Result<(), PodError> {
    mount_volumes_with(paths, pm, plan, &mut |w| eprintln!("rkt: warning: {w}"))
}

/// [`mount_volumes`] with the warnings (one line each: a volume hides a non-empty directory
/// of the image) given to `warn`. Host sources are opened without following symlinks and
/// mounted through their fd; read-only volumes are read-only with all their submounts.
pub fn mount_volumes_with(
    paths: &PodPaths,
    pm: &PodManifest,
    plan: &Plan,
    warn: &mut dyn FnMut(String),
) -> Result<(), PodError> {
    for app in &plan.apps {
        check_mount_targets(&app.name, app.mounts.iter().map(|m| m.target.as_str()))?;
    }
    for app in &plan.apps {
        let root = paths.app_rootfs(&app.name);
        for m in &app.mounts {
            let v = super::plan::mount_volume(pm, &app.name, m).ok_or_else(|| {
                PodError::Config(format!("app {}: unknown volume {}", app.name, m.volume))
            })?;
            let (src, shown, _fd) = if v.kind == "host" {
                let fd = open_host_source(v)?;
                let via = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
                let shown = PathBuf::from(v.source.as_deref().unwrap_or_default());
                (via, shown, Some(fd))
            } else {
                let p = volume_source(paths, v, plan.private_users)?;
                (p.clone(), p, None)
            };
            let is_file = !src.is_dir();
            let target = secure_target(&root, &m.target, is_file)?;
            if !is_file && non_empty_dir(&target) {
                warn(format!(
                    "volume {} hides the non-empty directory {} of app {}'s image",
                    m.volume, m.target, app.name
                ));
            }
            let mut flags = MsFlags::MS_BIND;
            let recursive = v.kind != "host" || v.is_recursive();
            if recursive {
                flags |= MsFlags::MS_REC;
            }
            mount(Some(&src), &target, None::<&str>, flags, None::<&str>).map_err(|e| {
                PodError::Mount {
                    what: format!("volume {} ({})", m.volume, shown.display()),
                    target: target.clone(),
                    source: e,
                }
            })?;
            if m.read_only {
                make_read_only(&target, recursive)?;
            }
        }
    }
    Ok(())
}

/// The volume `v` as a detached mount tree (`pod_abi::mount_api::clone_tree`, recursive as
/// [`mount_volumes`] binds it; read-only with every mount below it when `read_only`), for an
/// app added to a running pod: the stage1 attaches it inside the pod's mount namespace, which
/// no path of the host reaches. Host sources are opened as [`mount_volumes`] opens them; empty
/// volumes are made as [`volume_source`] makes them.
pub fn detached_volume(
    paths: &PodPaths,
    v: &appc::schema::Volume,
    private_users: Option<IdRange>,
    read_only: bool,
) -> Result<OwnedFd, PodError> {
    use std::os::fd::AsFd;
    let (src, shown) = if v.kind == "host" {
        let shown = PathBuf::from(v.source.as_deref().unwrap_or_default());
        (open_host_source(v)?, shown)
    } else {
        let p = volume_source(paths, v, private_users)?;
        let fd = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&p)
            .map_err(|e| PodError::io("open", &p, e))?;
        (OwnedFd::from(fd), p)
    };
    let failed = |what: &str, e: std::io::Error| PodError::Mount {
        what: format!("{what} of volume {}", v.name),
        target: shown.clone(),
        source: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    };
    let recursive = v.kind != "host" || v.is_recursive();
    let tree = pod_abi::mount_api::clone_tree(src.as_fd(), recursive)
        .map_err(|e| failed("a detached copy", e))?;
    if read_only {
        pod_abi::mount_api::set_attrs(tree.as_fd(), pod_abi::mount_api::MOUNT_ATTR_RDONLY, true)
            .map_err(|e| failed("the read-only attribute", e))?;
    }
    Ok(tree)
}

/// Writes the launch plan to `stage1/rootfs/rkt/plan.json` atomically.
pub fn write_plan(paths: &PodPaths, plan: &Plan) -> Result<(), PodError> {
    let p = paths.plan();
    if let Some(d) = p.parent() {
        mkdirs(d)?;
    }
    let json =
        serde_json::to_vec_pretty(plan).map_err(|e| PodError::Config(format!("plan: {e}")))?;
    write_file(&p, &json)
}

/// Mount points at or under `dir` (from /proc/self/mountinfo), deepest first, each once; an
/// unreadable table is an error.
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>, PodError> {
    Ok(read_mount_table()?.points_under(dir))
}

/// The calling process's mount table; unreadable is an error, never "nothing mounted".
fn read_mount_table() -> Result<MountTable, PodError> {
    MountTable::read().map_err(|e| PodError::io("read", Path::new(pod_abi::mountinfo::SELF), e))
}

/// Unmounts `ms`, mount points the table lists under `dir`, in order (lazily, so a busy mount
/// does not block gc), each reached again from `dir` without following a symlink
/// (`pod_abi::mountinfo::pin_beneath`: a directory inside a volume that another, running pod
/// shares can have become a symlink to a host directory since the table was read, and a
/// path-based unmount would take the host's mount there). A mount already gone or renamed
/// (EINVAL, ENOENT, ELOOP) is skipped: the next round's table names it as it is then.
fn unmount_listed(dir: &Path, ms: &[PathBuf]) -> Result<(), PodError> {
    use nix::errno::Errno;
    let dir_fd = pod_abi::podfile::open_dir(dir).map_err(|e| PodError::io("open", dir, e))?;
    for m in ms {
        let r = match pod_abi::mountinfo::pin_beneath(dir_fd.as_fd(), dir, m) {
            Ok(p) => umount2(p.path(), MntFlags::MNT_DETACH),
            // No openat2 (Linux < 5.6): the path, never through a symlink at its end.
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                umount2(m, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW)
            }
            Err(e) => Err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EINVAL))),
        };
        match r {
            Ok(()) | Err(Errno::EINVAL | Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) => {}
            Err(e) => return Err(PodError::Unmount(m.clone(), e)),
        }
    }
    Ok(())
}

/// Rounds of unmounting before a directory that still holds mounts is given up on.
const UNMOUNT_ROUNDS: usize = 64;

/// Removes pod directories after unmounting everything in them, deepest first; one result per
/// directory, in order. Each round reads /proc/self/mountinfo once for all of them (`rkt gc`
/// passes its pods in batches), until a read shows no mount left under any: a directory is
/// removed only then, and by [`pod_abi::remove::remove_tree`], which stops at any mount point
/// it meets rather than entering it: the removal never reaches through a mount into a volume's
/// source, even one the table missed. A table that cannot be read (a pod can put any byte in
/// a mount point's path by renaming a directory above it) removes nothing.
pub fn remove_pod_dirs(dirs: &[PathBuf]) -> Vec<Result<(), PodError>> {
    let mut res: Vec<Result<(), PodError>> = dirs.iter().map(|_| Ok(())).collect();
    let mut settled = false;
    for _ in 0..UNMOUNT_ROUNDS {
        let table = match read_mount_table() {
            Ok(t) => t,
            Err(e) => {
                let msg = e.to_string();
                return dirs
                    .iter()
                    .map(|_| Err(PodError::Config(format!("not removed: {msg}"))))
                    .collect();
            }
        };
        let mut any = false;
        for (d, r) in dirs.iter().zip(res.iter_mut()) {
            let ms = table.under(d);
            if r.is_err() || ms.is_empty() {
                continue;
            }
            any = true;
            if let Err(e) = unmount_listed(d, &ms) {
                *r = Err(e);
            }
        }
        if !any {
            settled = true;
            break;
        }
    }
    if !settled {
        match read_mount_table() {
            Ok(table) => {
                for (d, r) in dirs.iter().zip(res.iter_mut()) {
                    if let (Ok(()), Some(m)) = (&r, table.under(d).first()) {
                        *r = Err(PodError::Unmount(m.clone(), nix::errno::Errno::EBUSY));
                    }
                }
            }
            Err(e) => {
                for r in res.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(PodError::Config(format!("not removed: {e}")));
                }
            }
        }
    }
    for (d, r) in dirs.iter().zip(res.iter_mut()) {
        if r.is_ok() {
            let project = super::quota::own_project(d);
            *r = pod_abi::remove::remove_tree(d).map_err(|e| PodError::io("remove", d, e));
            if let (Ok(()), Some((id, parent))) = (&r, project) {
                super::quota::release(std::os::fd::AsFd::as_fd(&parent), id);
            }
        }
    }
    res
}

/// Removes a pod directory after unmounting everything in it ([`remove_pod_dirs`]).
pub fn remove_pod_dir(dir: &Path) -> Result<(), PodError> {
    remove_pod_dirs(&[dir.to_path_buf()])
        .pop()
        .unwrap_or(Ok(()))
}

/// Owner uid of a path (used by tests and diagnostics).
pub fn owner(p: &Path) -> Option<u32> {
    fs::metadata(p).ok().map(|m| m.uid())
}

/// The ID ranges of every `--private-users` pod under `<data_dir>/pods` (bounded reads; an
/// unreadable or malformed record is skipped).
pub fn private_user_ranges(data_dir: &Path) -> Vec<IdRange> {
    pod_dirs(data_dir)
        .filter_map(|p| {
            let rel = Path::new(PRIVATE_USERS_PREPARED);
            pod_abi::podfile::read_line_beneath(&p, rel, pod_abi::podfile::SMALL_FILE_MAX).ok()
        })
        .filter_map(|l| IdRange::parse(&l).ok())
        .collect()
}

/// Every directory one level below a state directory of `<data_dir>/pods` (each pod, whatever
/// its state); unreadable directories are skipped.
fn pod_dirs(data_dir: &Path) -> impl Iterator<Item = PathBuf> {
    fs::read_dir(data_dir.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|state| fs::read_dir(state.path()).ok())
        .flat_map(|pods| pods.flatten().map(|p| p.path()))
}

/// Image and tree IDs used by any pod under `<data_dir>/pods` (what `image gc` keeps):
/// the images of each pod manifest, the stage1 tree and each app's tree.
pub fn store_references(data_dir: &Path) -> PodReferences {
    use pod_abi::podfile::{read_beneath, read_line_beneath, MANIFEST_MAX, SMALL_FILE_MAX};
    let mut refs = PodReferences::default();
    for p in pod_dirs(data_dir) {
        if let Ok(bytes) = read_beneath(&p, Path::new(POD_MANIFEST), MANIFEST_MAX) {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                for app in v
                    .get("apps")
                    .and_then(|a| a.as_array())
                    .into_iter()
                    .flatten()
                {
                    if let Some(id) = app
                        .get("image")
                        .and_then(|i| i.get("id"))
                        .and_then(|i| i.as_str())
                    {
                        refs.images.insert(id.to_string());
                    }
                }
            }
        }
        if let Ok(t) = read_line_beneath(&p, Path::new(STAGE1_TREE_ID), SMALL_FILE_MAX) {
            refs.trees.insert(t);
        }
        if let Ok(apps) = fs::read_dir(p.join(APPSINFO_DIR)) {
            for app in apps.flatten() {
                let rel = Path::new(APPSINFO_DIR)
                    .join(app.file_name())
                    .join(APP_TREE_ID);
                if let Ok(t) = read_line_beneath(&p, &rel, SMALL_FILE_MAX) {
                    refs.trees.insert(t);
                }
            }
        }
    }
    refs
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secure_target_refuses_symlinks_and_creates_dirs() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::os::unix::fs::symlink("/etc", root.join("evil")).unwrap();
        assert!(secure_target(root, "/evil/x", false).is_err());
        assert!(secure_target(root, "/../x", false).is_err());
        let p = secure_target(root, "/a/b/c", false).unwrap();
        assert!(p.is_dir());
        assert_eq!(
            fs::metadata(root.join("a")).unwrap().permissions().mode() & 0o777,
            0o755
        );
        fs::write(root.join("f"), b"x").unwrap();
        assert!(secure_target(root, "/f", false).unwrap().is_dir());
        assert!(secure_target(root, "/g", true).unwrap().is_file());
    }

    /// `image gc` reads each pod's references (and a new `--private-users` pod the others'
    /// ranges): a FIFO is not waited on, a symlink is not followed, an oversized file is not
    /// read; a plain pod next to them is still counted.
    #[test]
    fn pod_records_are_read_bounded_and_regular_files_only() {
        let t = tempfile::tempdir().unwrap();
        let id = |c: char| format!("deps-sha512-{}", c.to_string().repeat(64));
        let good = t.path().join("pods/run/good");
        fs::create_dir_all(good.join("appsinfo/a")).unwrap();
        fs::write(good.join(STAGE1_TREE_ID), id('a')).unwrap();
        fs::write(
            good.join("appsinfo/a").join(APP_TREE_ID),
            format!("{}\n", id('b')),
        )
        .unwrap();
        let bad = t.path().join("pods/run/bad");
        fs::create_dir_all(bad.join("appsinfo/x")).unwrap();
        nix::unistd::mkfifo(&bad.join(POD_MANIFEST), nix::sys::stat::Mode::S_IRWXU).unwrap();
        fs::write(t.path().join("elsewhere"), id('c')).unwrap();
        std::os::unix::fs::symlink(t.path().join("elsewhere"), bad.join(STAGE1_TREE_ID)).unwrap();
        let big = fs::File::create(bad.join("appsinfo/x").join(APP_TREE_ID)).unwrap();
        big.set_len(1 << 40).unwrap();
        fs::write(good.join(PRIVATE_USERS_PREPARED), "196608:65536\n").unwrap();
        std::os::unix::fs::symlink(
            good.join(PRIVATE_USERS_PREPARED),
            bad.join(PRIVATE_USERS_PREPARED),
        )
        .unwrap();
        assert_eq!(
            private_user_ranges(t.path()),
            vec![IdRange {
                shift: 196608,
                count: 65536
            }]
        );
        let refs = store_references(t.path());
        let mut trees: Vec<String> = refs.trees.into_iter().collect();
        trees.sort();
        assert_eq!(trees, vec![id('a'), id('b')]);
        assert!(refs.images.is_empty());
    }
}
