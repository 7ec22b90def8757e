//! Mutable pods: the experimental `rkt app` commands (rkt 1.30's, as rktlet drove them).
//!
//! `rkt app sandbox` creates a pod with no apps and the pod-manifest annotation
//! [`pod_abi::plan::MUTABLE_ANNOTATION`] and runs it like `rkt run`; its launch plan says
//! `mutable`, so guest-init keeps it running with no app until it is stopped. Then:
//!
//! - [`add`]: fetches (store only, or a file) and renders the image, copies its tree into the
//!   running pod at `stage1/rootfs/opt/stage2/<app>/rootfs` (a mount made now would not reach
//!   the pod's mount namespace or the VM's share; `--no-overlay`'s copy, reflinked where the file
//!   system can), adds the app to the pod manifest (`pod`) and to the launch plan, and calls
//!   the stage1 `app/add` entrypoint (guest-init sets the app's environment up). Any failure
//!   undoes what was done.
//! - [`start`], [`stop`], [`remove`]: the stage1 `app/start`, `app/stop`, `app/rm`
//!   entrypoints; `remove` stops a running app first, then removes its tree, `appsinfo/<app>`,
//!   and its entries in the pod manifest and the plan.
//! - [`app_statuses`]: each app's state (created, running, exited), times and exit code.
//!
//! Every change runs under the pod's app lock ([`APP_LOCK`], an exclusive `flock`; the pod
//! lock itself is the stage1's for the pod's life), so one request at a time reaches
//! guest-init. App names are ACNames before they touch a path; files the pod can write (the
//! plan, status files, the `rkt/started` and `rkt/finished` marks) are read with
//! `pod_abi::podfile::read_beneath` and written with `write_beneath`.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::SystemTime;

use appc::schema::PodManifest;
use pod_abi::paths::{PodPaths, PLAN_IN_STAGE1};
use pod_abi::plan::{Plan, MUTABLE_ANNOTATION};
use pod_abi::podfile::{read_beneath, write_beneath, SMALL_FILE_MAX};
use pod_abi::stage1::{AppArgs, MountFd, ANN_APP_ADD, ANN_APP_RM, ANN_APP_START, ANN_APP_STOP};

use super::args::{AppOptions, Mode, RunCommand};
use super::launch::{read_pod_manifest, LaunchError, RunOptions};
use super::manifest::{build_pod_manifest, EnvSources, ResolvedApp};
use super::{layout, Pod, PodError, PodState, PodsDir};
use crate::error::UsageError;
use crate::fetch::{fetch_image, FetchError, FetchOptions};
use crate::stage1::{self, Entrypoints, Stage1Error};
use crate::store::Store;

/// The app lock's file in the pod directory (host-only; created `0600`).
pub const APP_LOCK: &str = "app.lck";
/// Placeholder image that lets `rkt run`'s parser read a sandbox's pod flags.
const SANDBOX_PLACEHOLDER: &str = "\u{0}sandbox";

/// Errors of the app commands.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A bad command line or request (exit 2).
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// A pod lifecycle error (missing pod, wrong state: exit 5).
    #[error(transparent)]
    Pod(#[from] PodError),
    /// The stage1 image's entrypoints.
    #[error(transparent)]
    Stage1(#[from] Stage1Error),
    /// The image could not be fetched or rendered.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The image is not in the store (or the file cannot be read).
    #[error("image {0}")]
    Image(String, #[source] Box<FetchError>),
    /// The pod's launch plan could not be read.
    #[error("cannot read the pod's launch plan")]
    Plan(#[source] pod_abi::plan::PlanError),
    /// A file the pod can write could not be written safely.
    #[error("cannot write {0} into the pod")]
    PodFile(String, #[source] pod_abi::podfile::PodFileError),
    /// The pod was not made by `rkt app sandbox`.
    #[error("pod {0} is not mutable (start one with rkt app sandbox)")]
    NotMutable(String),
    /// A stage1 app entrypoint failed (it printed why).
    #[error("stage1 {0} entrypoint failed ({1})")]
    Entrypoint(&'static str, ExitStatus),
    /// The app's log file (`kubernetes-log-dir` and `-path`) could not be opened.
    #[error("cannot open the app's log file {0}")]
    LogFile(PathBuf, #[source] std::io::Error),
}

impl AppError {
    /// The error a transparent variant hides from the source chain (for
    /// [`crate::error::exit_code`]).
    pub fn inner(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AppError::Usage(e) => Some(e),
            AppError::Pod(e) => Some(e),
            AppError::Stage1(e) => Some(e),
            AppError::Launch(e) => Some(e),
            AppError::Image(_, e) => Some(&**e),
            _ => None,
        }
    }
}

fn usage(msg: impl Into<String>) -> AppError {
    AppError::Usage(UsageError(msg.into()))
}

/// Whether the pod manifest asks for a mutable pod.
pub fn is_mutable(pm: &PodManifest) -> bool {
    pm.annotations
        .iter()
        .any(|a| a.name.as_str() == MUTABLE_ANNOTATION && a.value == "true")
}

/// The value of `flag` when `a` is it (`--flag=V`, or `--flag V` taking the next argument from
/// `rest`); `None` for any other argument.
fn flag_value<'a>(
    flag: &str,
    a: &str,
    rest: &mut impl Iterator<Item = &'a String>,
) -> Result<Option<String>, UsageError> {
    match a.strip_prefix(flag) {
        Some("") => rest
            .next()
            .cloned()
            .map(Some)
            .ok_or_else(|| UsageError(format!("{flag} needs a value"))),
        Some(v) => Ok(v.strip_prefix('=').map(str::to_string)),
        None => Ok(None),
    }
}

/// Parses `rkt app sandbox`'s flags: `rkt run`'s pod flags, no image; `--port` in rkt's
/// sandbox form `NAME:PROTO:PODPORT:HOSTIP:HOSTPORT` ([`super::args::parse_pod_port`]).
pub fn parse_sandbox(argv: &[String]) -> Result<RunCommand, UsageError> {
    if let Some(a) = argv.iter().find(|a| *a == "--" || *a == "---") {
        return Err(UsageError(format!(
            "app sandbox takes no {a:?} and no image"
        )));
    }
    if argv
        .iter()
        .any(|a| a == "--pod-manifest" || a.starts_with("--pod-manifest="))
    {
        return Err(UsageError(
            "app sandbox takes no --pod-manifest (it makes a pod without apps)".into(),
        ));
    }
    // `--port` is rkt's sandbox form (the pod side given, no app to declare it yet).
    let mut pod_ports = Vec::new();
    let mut rest = Vec::new();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        match flag_value("--port", a, &mut it)? {
            Some(v) => pod_ports.push(super::args::parse_pod_port(&v)?),
            None => rest.push(a.clone()),
        }
    }
    // Parsed as `rkt run PLACEHOLDER FLAGS`: pod flags are taken anywhere, and the flags that
    // follow the placeholder as an app's are the sandbox's pod metadata (below) or refused.
    let mut all = vec![SANDBOX_PLACEHOLDER.to_string()];
    all.extend(rest);
    let mut cmd = RunCommand::parse(Mode::Run, &all)?;
    cmd.pod.pod_ports = pod_ports;
    let mut only = match cmd.apps.as_mut_slice() {
        [only] if only.image == SANDBOX_PLACEHOLDER => std::mem::take(only),
        _ => {
            return Err(UsageError(
                "app sandbox takes no image (add apps with rkt app add)".into(),
            ))
        }
    };
    // The pod's own annotations and labels: `rkt run`'s per-app flags, the pod's in a sandbox.
    cmd.pod.annotations = std::mem::take(&mut only.annotations);
    cmd.pod.user_annotations = std::mem::take(&mut only.user_annotations);
    cmd.pod.user_labels = std::mem::take(&mut only.user_labels);
    cmd.pod.mounts = std::mem::take(&mut only.mounts);
    let bare = AppOptions {
        image: SANDBOX_PLACEHOLDER.to_string(),
        ..Default::default()
    };
    if only != bare {
        return Err(UsageError(
            "app sandbox takes pod flags only (app flags such as --name or --exec belong to rkt app add)"
                .into(),
        ));
    }
    cmd.apps.clear();
    if cmd.pod.interactive {
        return Err(UsageError("app sandbox has no terminal app".into()));
    }
    if !cmd.pod.volumes.is_empty() || !cmd.pod.mounts.is_empty() || cmd.pod.mds_register {
        return Err(UsageError(
            "app sandbox: --volume, --mount and --mds-register need the apps; not supported (rkt app add --mnt-volume gives an app a volume)"
                .into(),
        ));
    }
    cmd.pod.mutable = true;
    Ok(cmd)
}

/// `rkt app add`'s command line.
#[derive(Debug, Clone)]
pub struct AddCommand {
    /// The pod (a UUID or an unambiguous prefix).
    pub uuid: String,
    /// The app, in `rkt run`'s form (one image).
    pub cmd: RunCommand,
    /// `--mnt-volume`s: the app's own volumes, each with its target (`appVolume` set).
    pub volumes: Vec<appc::schema::Mount>,
}

/// Parses `rkt app add UUID IMAGE [app flags] [-- ARGS...]` (rkt's form: the pod and the image
/// first); `--label K=V` is rkt's spelling of `--user-label`, `--mnt-volume` (rkt's, for the
/// CRI) a volume of this app and its target in one flag.
pub fn parse_add(argv: &[String]) -> Result<AddCommand, UsageError> {
    let bad = || UsageError("usage: rkt app add UUID IMAGE [flags] [-- ARGS...]".into());
    let (uuid, rest) = argv.split_first().ok_or_else(bad)?;
    let image = rest.first().ok_or_else(bad)?;
    if uuid.starts_with('-') || image.starts_with('-') {
        return Err(bad());
    }
    let mut translated = Vec::new();
    let mut volumes = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            translated.push(a.clone());
            break;
        }
        if let Some(m) = flag_value("--mnt-volume", a, &mut it)? {
            let (v, target) = super::args::parse_mnt_volume(&m)?;
            volumes.push(appc::schema::Mount {
                volume: v.name.clone(),
                path: target,
                app_volume: Some(v),
            });
            continue;
        }
        translated.push(match a.strip_prefix("--label") {
            Some(v) if v.is_empty() || v.starts_with('=') => format!("--user-label{v}"),
            _ => a.clone(),
        });
    }
    translated.extend(it.cloned());
    let cmd = RunCommand::parse(Mode::Run, &translated)?;
    if let Some(n) = cmd.apps.iter().find_map(|a| a.name.as_deref()) {
        if !pod_abi::exec::is_app_name(n) {
            return Err(UsageError(format!(
                "invalid app name {n:?} (lower-case letters, digits and inner dashes)"
            )));
        }
    }
    if cmd.apps.len() != 1 {
        return Err(UsageError("app add takes one image".into()));
    }
    let p = &cmd.pod;
    if !p.volumes.is_empty() || !p.mounts.is_empty() || !p.ports.is_empty() {
        return Err(UsageError(
            "app add: --volume, --mount and --port are not supported (--mnt-volume gives the app a volume)".into(),
        ));
    }
    if cmd.apps.iter().any(|a| !a.mounts.is_empty()) {
        return Err(UsageError(
            "app add: --mount is not supported (--mnt-volume gives the app a volume)".into(),
        ));
    }
    Ok(AddCommand {
        uuid: uuid.clone(),
        cmd,
        volumes,
    })
}

/// A running mutable pod with its app lock held.
struct Locked {
    pod: Pod,
    pm: PodManifest,
    /// Released when dropped.
    _lock: nix::fcntl::Flock<File>,
}

fn open_locked(pods: &PodsDir, reference: &str) -> Result<Locked, AppError> {
    use std::os::unix::fs::OpenOptionsExt;
    let pod = pods.open_pod(reference)?;
    let wrong = |state| PodError::WrongState {
        uuid: pod.uuid().to_string(),
        state,
        wanted: "not running",
    };
    if pod.state() != PodState::Running {
        return Err(wrong(pod.state()).into());
    }
    let path = pod.path().join(APP_LOCK);
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| PodError::io("open", &path, e))?;
    let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| PodError::io("lock", &path, e.into()))?;
    // The pod may have ended while we waited.
    if pod.state() != PodState::Running {
        return Err(wrong(pod.state()).into());
    }
    let pm = read_pod_manifest(&pod)?;
    if !is_mutable(&pm) {
        return Err(AppError::NotMutable(pod.uuid().to_string()));
    }
    Ok(Locked {
        pod,
        pm,
        _lock: lock,
    })
}

/// Runs the stage1 app entrypoint `ann` for `app`; `mounts` (detached mount trees and their
/// targets) and `log` (the app's log file, a detached mount), `app/add` only, are passed open
/// as `--mount-fd` and `--log-fd`.
fn call(
    pods: &PodsDir,
    pod: &Pod,
    ann: &'static str,
    app: &str,
    debug: bool,
    mounts: &[(BorrowedFd<'_>, &str)],
    log: Option<BorrowedFd<'_>>,
) -> Result<(), AppError> {
    let ep = Entrypoints::read(&pod.paths().stage1_manifest())?;
    let entry = stage1::image_root(pods.data_dir(), &pod.path())?.join(ep.entrypoint(ann)?);
    let argv = AppArgs {
        debug,
        uuid: pod.uuid().to_string(),
        app: app.to_string(),
        mounts: mounts
            .iter()
            .map(|(fd, target)| MountFd {
                fd: fd.as_raw_fd(),
                target: target.to_string(),
            })
            .collect(),
        log_fd: log.map(|fd| fd.as_raw_fd()),
    }
    .to_argv();
    let keep: Vec<BorrowedFd<'_>> = mounts.iter().map(|(fd, _)| *fd).chain(log).collect();
    let s = stage1::run_entrypoint_with_fds(&pod.path(), &entry, &argv, &keep)?;
    if !s.success() {
        return Err(AppError::Entrypoint(
            ann.rsplit('/').next().unwrap_or(ann),
            s,
        ));
    }
    Ok(())
}

/// The pod's plan as the pod left it, with the user-ID range from the host's own record
/// (`private-users-prepared`): the plan lies in the pod's root, which a running kvm guest can
/// rewrite, and `add` chooses host owners by the range.
fn read_plan(paths: &PodPaths) -> Result<Plan, AppError> {
    let mut plan = Plan::read_beneath(&paths.stage1_rootfs()).map_err(AppError::Plan)?;
    plan.private_users = layout::private_users(paths)?;
    Ok(plan)
}

fn write_plan(paths: &PodPaths, plan: &Plan) -> Result<(), AppError> {
    let json =
        serde_json::to_vec_pretty(plan).map_err(|e| PodError::Config(format!("plan: {e}")))?;
    write_beneath(
        &paths.stage1_rootfs(),
        Path::new(PLAN_IN_STAGE1),
        &json,
        0o644,
    )
    .map_err(|e| AppError::PodFile(PLAN_IN_STAGE1.into(), e))
}

/// `stage1/rootfs/opt/stage2/<app>`, the app's directory in the pod.
fn app_dir_in_pod(paths: &PodPaths, app: &str) -> PathBuf {
    paths
        .stage1_rootfs()
        .join(pod_abi::paths::GUEST_STAGE2_DIR.trim_start_matches('/'))
        .join(app)
}

/// Removes the app's tree in the pod and its `appsinfo/<app>`. The tree is removed chrooted to
/// the pod's root (`tree_copy::beneath_root`): the pod can write there.
fn remove_app_files(paths: &PodPaths, app: &str) -> Result<(), PodError> {
    let dir = app_dir_in_pod(paths, app);
    let inner = Path::new(pod_abi::paths::GUEST_STAGE2_DIR).join(app);
    super::tree_copy::beneath_root(&paths.stage1_rootfs(), None, || {
        match std::fs::remove_dir_all(&inner) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        // The log file's mount point (unlinking it detaches the mount in the pod).
        match std::fs::remove_file(pod_abi::attach::guest_log_file(app)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    })
    .map_err(|e| PodError::io("remove", &dir, e))?;
    let info = paths.appsinfo(app);
    match std::fs::remove_dir_all(&info) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(PodError::io("remove", &info, e)),
        _ => Ok(()),
    }
}

/// What `add` needs besides the command line.
#[derive(Debug, Clone)]
pub struct AddOptions {
    /// The data directory (the store).
    pub data_dir: PathBuf,
    /// How the image is found (store only; a file is imported).
    pub fetch: FetchOptions,
    /// `--debug`.
    pub debug: bool,
}

/// `rkt app add`: adds the one app of `add` to the running mutable pod `reference`; returns
/// the app's name. Warnings (implicit volumes and the like) go to `warn`.
///
/// The app's volumes are its `--mnt-volume`s, a pod volume named as one of its image's mount
/// points, or an implicit empty volume for a mount point nothing else covers (as `rkt run`
/// gives one, with the same warning). Each is passed to the stage1 as a detached mount tree
/// ([`layout::detached_volume`]) to attach inside the pod; a mount made in the host's
/// namespace would reach neither the pod's mount namespace nor the VM's share.
pub fn add(
    pods: &PodsDir,
    reference: &str,
    add: &AddCommand,
    o: &AddOptions,
    warn: &mut dyn FnMut(String),
) -> Result<String, AppError> {
    let cmd = &add.cmd;
    let l = open_locked(pods, reference)?;
    let app_opts = cmd
        .apps
        .first()
        .ok_or_else(|| usage("app add takes one image"))?;
    let store = Store::open(&o.data_dir).map_err(LaunchError::OpenStore)?;
    let rec = fetch_image(&store, &app_opts.image, &o.fetch)
        .map_err(|e| AppError::Image(app_opts.image.clone(), Box::new(e)))?;
    let image = store.manifest(&rec).map_err(LaunchError::from)?;
    let mut sources = EnvSources::default();
    if cmd.pod.inherit_env {
        sources.inherited = std::env::vars().collect();
    }
    for f in &cmd.pod.set_env_file {
        sources
            .from_files
            .extend(super::manifest::read_env_file(f)?);
    }
    sources.set_env = cmd.pod.set_env.clone();
    let resolved = ResolvedApp {
        opts: app_opts.clone(),
        image_id: rec.id.clone(),
        manifest: image.clone(),
    };
    // The app alone, its mount points not yet matched against the pod's volumes.
    let alone = build_pod_manifest(
        &super::args::PodOptions::default(),
        &sources,
        &[resolved],
        &mut |_| {},
    )?;
    let mut ra = alone
        .apps
        .first()
        .cloned()
        .ok_or_else(|| usage("app add takes one image"))?;
    let name = ra.name.as_str().to_string();
    if l.pm.apps.iter().any(|a| a.name == ra.name) {
        return Err(usage(format!(
            "pod {} already has an app named {name}",
            l.pod.uuid()
        )));
    }
    ra.mounts = add.volumes.clone();
    if let Some(app) = ra.app.clone() {
        let mut volumes = l.pm.volumes.clone();
        let known = volumes.len();
        super::manifest::add_implicit_volumes(&mut volumes, &ra.name, &app, &ra.mounts, warn);
        for v in volumes.split_off(known) {
            if let Some(mp) = app.mount_points.iter().find(|mp| mp.name == v.name) {
                ra.mounts.push(appc::schema::Mount {
                    volume: v.name.clone(),
                    path: mp.path.clone(),
                    app_volume: Some(v),
                });
            }
        }
    }
    let mut pm = l.pm.clone();
    pm.apps.push(ra.clone());
    let one = PodManifest {
        volumes: l.pm.volumes.clone(),
        apps: vec![ra],
        ..alone
    };
    one.validate()
        .map_err(|e| usage(format!("app {name}: {e}")))?;
    let rt = RunOptions {
        insecure: o.fetch.insecure,
        ..Default::default()
    };
    let mut entry = super::plan::build_plan(l.pod.uuid(), &one, &[image], &rt)?
        .apps
        .into_iter()
        .next()
        .ok_or_else(|| usage("app add takes one image"))?;
    super::quota::fix_projects(
        std::os::fd::AsFd::as_fd(l.pod.dir_file()),
        std::iter::once(&mut entry),
    );
    layout::check_mount_targets(&name, entry.mounts.iter().map(|m| m.target.as_str()))?;
    for a in &entry.ignored_isolators {
        warn(format!(
            "app {name}: isolator not implemented, ignored: {a}"
        ));
    }
    let log = log_file(&pm, &name, &entry.stdio)?;
    entry.stdio.log_file = log.is_some();
    // Held until the app's treeStoreID is written (`image gc` leaves the tree alone meanwhile).
    let (tree, _hold) = store.hold_tree(&rec).map_err(LaunchError::from)?;
    let paths = l.pod.paths();
    let mut plan = read_plan(&paths)?;
    let res = (|| -> Result<(), AppError> {
        // The volumes first: a missing source fails before anything is written.
        let mut trees = Vec::new();
        for m in &entry.mounts {
            let v = super::plan::mount_volume(&pm, &name, m).ok_or_else(|| {
                usage(format!("app {name}: mount of unknown volume {}", m.volume))
            })?;
            let fd = layout::detached_volume(&paths, v, plan.private_users, m.read_only)?;
            trees.push((fd, m.target.clone()));
        }
        // The tree: its directory is made and the copy runs chrooted to the pod's root: a
        // running kvm guest can write there and could otherwise swap a directory on the way
        // (`opt/stage2` itself included) for a symlink to a host path.
        let dir = app_dir_in_pod(&paths, &name);
        let rootfs = dir.join("rootfs");
        let inner = pod_abi::paths::guest_app_rootfs(&name);
        let app_dir = Path::new(pod_abi::paths::GUEST_STAGE2_DIR).join(&name);
        super::tree_copy::beneath_root(&paths.stage1_rootfs(), Some(&tree.rootfs), || {
            {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(&app_dir)?;
            }
            match std::fs::remove_dir_all(&inner) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            super::tree_copy::copy_tree_shifted(Path::new("."), &inner, plan.private_users)
        })
        .map_err(|e| PodError::io("copy tree to", &rootfs, e))?;
        let mbytes =
            std::fs::read(&tree.manifest).map_err(|e| PodError::io("read", &tree.manifest, e))?;
        let rel = format!("opt/stage2/{name}/manifest");
        write_beneath(&paths.stage1_rootfs(), Path::new(&rel), &mbytes, 0o644)
            .map_err(|e| AppError::PodFile(rel.clone(), e))?;
        let info = paths.appsinfo(&name);
        std::fs::create_dir_all(&info).map_err(|e| PodError::io("create", &info, e))?;
        layout::write_file(&info.join("manifest"), &mbytes)?;
        layout::write_file(&info.join(layout::APP_TREE_ID), tree.id.as_bytes())?;
        // The plan, then the manifest: `enter` and `status` find the app once it is there.
        plan.apps.push(entry.clone());
        write_plan(&paths, &plan)?;
        layout::write_file(&paths.manifest(), &pm.to_json())?;
        let mounts: Vec<(BorrowedFd<'_>, &str)> = trees
            .iter()
            .map(|(fd, t)| (fd.as_fd(), t.as_str()))
            .collect();
        call(
            pods,
            &l.pod,
            ANN_APP_ADD,
            &name,
            o.debug,
            &mounts,
            log.as_ref().map(|f| f.as_fd()),
        )
    })();
    if let Err(e) = res {
        // Undo: the pod is as it was before the request.
        plan.apps.retain(|a| a.name != name);
        let _ = write_plan(&paths, &plan);
        let _ = layout::write_file(&paths.manifest(), &l.pm.to_json());
        let _ = remove_app_files(&paths, &name);
        return Err(e);
    }
    Ok(name)
}

/// The host file app `name`'s `stream` output is logged to, as a detached mount for the
/// stage1 to attach in the pod, when the pod asks for rkt's `k8s-plain` log mode
/// (`pod_abi::attach::ANN_LOG_MODE`) and the app has a `stream` stdout or stderr: the app's
/// `kubernetes-log-path` annotation beneath the pod's `kubernetes-log-dir`, resolved without
/// following a symlink, created (0640) if missing and appended to.
fn log_file(
    pm: &PodManifest,
    name: &str,
    stdio: &pod_abi::attach::StdioPlan,
) -> Result<Option<std::os::fd::OwnedFd>, AppError> {
    use pod_abi::attach::{ANN_K8S_LOG_DIR, ANN_K8S_LOG_PATH, ANN_LOG_MODE, LOG_MODE_K8S_PLAIN};
    let get = |anns: &[appc::schema::Annotation], key: &str| {
        anns.iter()
            .find(|a| a.name.as_str() == key)
            .map(|a| a.value.clone())
    };
    match get(&pm.annotations, ANN_LOG_MODE).as_deref() {
        None => return Ok(None),
        Some(LOG_MODE_K8S_PLAIN) => {}
        Some(other) => {
            return Err(usage(format!(
            "pod annotation {ANN_LOG_MODE}={other}: unknown log mode (want {LOG_MODE_K8S_PLAIN})"
        )))
        }
    }
    if !stdio.streams_output() {
        return Ok(None);
    }
    let dir = get(&pm.annotations, ANN_K8S_LOG_DIR)
        .filter(|d| d.starts_with('/'))
        .ok_or_else(|| {
            usage(format!(
                "{ANN_LOG_MODE}={LOG_MODE_K8S_PLAIN} needs the pod annotation {ANN_K8S_LOG_DIR} (an absolute path)"
            ))
        })?;
    let app = pm.apps.iter().find(|a| a.name.as_str() == name);
    let rel = app
        .and_then(|a| get(&a.annotations, ANN_K8S_LOG_PATH))
        .ok_or_else(|| {
            usage(format!(
                "app {name}: the pod logs streamed output ({ANN_LOG_MODE}={LOG_MODE_K8S_PLAIN}): give the app the annotation {ANN_K8S_LOG_PATH}"
            ))
        })?;
    let rel_path = Path::new(&rel);
    // Only plain names: no root, `.` or `..` component.
    if rel.is_empty()
        || rel_path
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(usage(format!(
            "app {name}: {ANN_K8S_LOG_PATH}={rel:?}: want a path relative to {ANN_K8S_LOG_DIR}, without . or .."
        )));
    }
    let full = Path::new(&dir).join(rel_path);
    let err = |e| AppError::LogFile(full.clone(), e);
    let d = pod_abi::podfile::open_dir(Path::new(&dir)).map_err(err)?;
    let f = pod_abi::podfile::openat2_beneath_mode(
        d.as_fd(),
        rel_path,
        // A FIFO there fails (ENXIO) instead of waiting for a reader; no terminal is adopted.
        libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_NONBLOCK | libc::O_NOCTTY,
        0o640,
    )
    .map_err(err)?;
    let f = File::from(f);
    let meta = f.metadata().map_err(err)?;
    if !meta.is_file() {
        return Err(err(std::io::Error::other("not a regular file")));
    }
    pod_abi::mount_api::clone_tree(f.as_fd(), false)
        .map(Some)
        .map_err(err)
}

fn require_app(l: &Locked, app: &str) -> Result<(), AppError> {
    if !pod_abi::exec::is_app_name(app) {
        return Err(usage(format!("invalid app name {app:?}")));
    }
    if !l.pm.apps.iter().any(|a| a.name.as_str() == app) {
        return Err(usage(format!("pod {} has no app {app:?}", l.pod.uuid())));
    }
    Ok(())
}

/// `rkt app start`.
pub fn start(pods: &PodsDir, reference: &str, app: &str, debug: bool) -> Result<(), AppError> {
    let l = open_locked(pods, reference)?;
    require_app(&l, app)?;
    call(pods, &l.pod, ANN_APP_START, app, debug, &[], None)
}

/// `rkt app stop`: SIGTERM, SIGKILL after the grace period; returns once the app exited.
pub fn stop(pods: &PodsDir, reference: &str, app: &str, debug: bool) -> Result<(), AppError> {
    let l = open_locked(pods, reference)?;
    require_app(&l, app)?;
    call(pods, &l.pod, ANN_APP_STOP, app, debug, &[], None)
}

/// `rkt app rm`: stops the app if it runs, removes it from the pod.
pub fn remove(pods: &PodsDir, reference: &str, app: &str, debug: bool) -> Result<(), AppError> {
    let l = open_locked(pods, reference)?;
    require_app(&l, app)?;
    call(pods, &l.pod, ANN_APP_STOP, app, debug, &[], None)?;
    call(pods, &l.pod, ANN_APP_RM, app, debug, &[], None)?;
    let paths = l.pod.paths();
    let mut pm = l.pm.clone();
    pm.apps.retain(|a| a.name.as_str() != app);
    layout::write_file(&paths.manifest(), &pm.to_json())?;
    let mut plan = read_plan(&paths)?;
    plan.apps.retain(|a| a.name != app);
    write_plan(&paths, &plan)?;
    remove_app_files(&paths, app)?;
    Ok(())
}

/// One app's state as `rkt app list` and `rkt app status` report it (rkt's `lib.App`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AppStatus {
    /// App name.
    pub name: String,
    /// `created`, `running` or `exited`.
    pub state: String,
    /// When the app was added (or the pod created), Unix nanoseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    /// When it was started, Unix nanoseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// When it exited, Unix nanoseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// Exit code, once it exited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Image ID.
    pub image_id: String,
}

/// A decimal Unix-nanoseconds mark the pod wrote at `rel` beneath its stage1 root.
fn mark(root: &Path, rel: &str) -> Option<i64> {
    let b = read_beneath(root, Path::new(rel), SMALL_FILE_MAX).ok()?;
    String::from_utf8_lossy(&b).trim().parse().ok()
}

/// The apps of `pod` with their states (any pod; a pod not made by `rkt app sandbox` reports
/// its apps as `rkt status` does).
pub fn app_statuses(pod: &Pod) -> Result<Vec<AppStatus>, AppError> {
    let pm = read_pod_manifest(pod)?;
    let state = pod.state();
    let paths = pod.paths();
    let root = paths.stage1_rootfs();
    let mutable = is_mutable(&pm);
    let ran = state == PodState::Running || state.is_after_run();
    let nanos = |t: SystemTime| super::status::unix_nanos(t);
    let pod_created = pod.created().map(nanos);
    let pod_started = if ran { pod.started().map(nanos) } else { None };
    let mut out = Vec::new();
    for a in &pm.apps {
        let name = a.name.as_str();
        let code = if ran {
            pod_abi::status::read_app_status(&paths.status_dir(), name)
        } else {
            None
        };
        let (created, started, finished) = if mutable {
            let created = std::fs::metadata(paths.appsinfo(name))
                .and_then(|m| m.modified())
                .ok()
                .map(nanos);
            (
                created,
                mark(
                    &root,
                    &format!("{}/{name}", pod_abi::paths::STARTED_DIR_IN_STAGE1),
                ),
                mark(
                    &root,
                    &format!("{}/{name}", pod_abi::paths::FINISHED_DIR_IN_STAGE1),
                ),
            )
        } else {
            (pod_created, pod_started, None)
        };
        let state = match (code, state, started) {
            (Some(_), _, _) => "exited",
            (None, PodState::Running, Some(_)) => "running",
            (None, PodState::Running, None) if !mutable => "running",
            (None, s, _) if s.is_after_run() && (started.is_some() || !mutable) => "exited",
            _ => "created",
        };
        out.push(AppStatus {
            name: name.to_string(),
            state: state.to_string(),
            created_at: created,
            started_at: started,
            finished_at: finished,
            exit_code: code,
            image_id: a.image.id.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn sandbox_takes_pod_flags_only() {
        let c = parse_sandbox(&v(&["--net=none", "--hostname=h", "--dns=1.1.1.1"])).unwrap();
        assert!(c.apps.is_empty() && c.pod.mutable);
        assert_eq!(c.pod.net, "none");
        assert_eq!(c.pod.hostname.as_deref(), Some("h"));
        assert!(parse_sandbox(&v(&["img.aci"])).is_err());
        assert!(parse_sandbox(&v(&["--", "x"])).is_err());
        assert!(parse_sandbox(&v(&["--name=x"])).is_err());
        assert!(parse_sandbox(&v(&["--interactive"])).is_err());
        assert!(parse_sandbox(&v(&["--volume=a,kind=empty"])).is_err());
        let c = parse_sandbox(&v(&["--disk-limit=64Mi"])).unwrap();
        assert_eq!(c.pod.disk_limit, Some(64 << 20));
        assert!(parse_sandbox(&v(&["--disk-limit=1k"])).is_err());
    }

    #[test]
    fn sandbox_ports_are_rkts_five_field_form() {
        let c = parse_sandbox(&v(&[
            "--port=http:tcp:8080:0.0.0.0:80",
            "--port",
            "dns:udp:53:127.0.0.1:5353",
        ]))
        .unwrap();
        let got: Vec<(&str, u32, Option<&str>, &str, u32)> = c
            .pod
            .pod_ports
            .iter()
            .map(|p| {
                let pp = p.pod_port.as_ref().unwrap();
                (
                    p.name.as_str(),
                    p.host_port,
                    p.host_ip.as_deref(),
                    pp.protocol.as_str(),
                    pp.port,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("http", 80, None, "tcp", 8080),
                ("dns", 5353, Some("127.0.0.1"), "udp", 53)
            ]
        );
        for bad in [
            "--port=http:8080",
            "--port=http:sctp:1:0.0.0.0:2",
            "--port=http:tcp:0:0.0.0.0:2",
            "--port=http:tcp:1:nowhere:2",
            "--port=Http:tcp:1:0.0.0.0:2",
            "--port",
        ] {
            assert!(parse_sandbox(&v(&[bad])).is_err(), "{bad}");
        }
    }

    #[test]
    fn sandbox_annotations_and_labels_are_the_pods() {
        let cmd = parse_sandbox(&v(&[
            "--annotation=example.com/team=infra",
            "--user-annotation",
            "note=free text",
            "--net=none",
            "--user-label=tier=web",
        ]))
        .unwrap();
        let pm = build_pod_manifest(&cmd.pod, &EnvSources::default(), &[], &mut |_| {}).unwrap();
        assert!(pm
            .annotations
            .iter()
            .any(|a| a.name.as_str() == "example.com/team" && a.value == "infra"));
        assert!(is_mutable(&pm));
        assert_eq!(pm.user_meta.annotations["note"], "free text");
        assert_eq!(pm.user_meta.labels["tier"], "web");
        let json = serde_json::to_value(&pm).unwrap();
        assert_eq!(json["userLabels"]["tier"], "web");
        // Bad names, rkt's own annotation, a missing value and --pod-manifest are refused.
        for bad in [
            &["--annotation=Bad Name=x"][..],
            &["--annotation", &format!("{MUTABLE_ANNOTATION}=false")],
            &["--user-label"],
            &["--user-label=novalue"],
            &["--pod-manifest=/p.json"],
        ] {
            let r = parse_sandbox(&v(bad))
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    build_pod_manifest(&c.pod, &EnvSources::default(), &[], &mut |_| {})
                        .map_err(|e| e.to_string())
                });
            assert!(r.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sandbox_pods_are_marked_mutable_in_manifest_and_plan() {
        let cmd = parse_sandbox(&v(&["--net=none"])).unwrap();
        let pm = build_pod_manifest(&cmd.pod, &EnvSources::default(), &[], &mut |_| {}).unwrap();
        assert!(is_mutable(&pm));
        let plan = super::super::plan::build_plan("u", &pm, &[], &RunOptions::default()).unwrap();
        assert!(plan.mutable && plan.apps.is_empty());
        let plain = build_pod_manifest(
            &super::super::args::PodOptions::default(),
            &EnvSources::default(),
            &[],
            &mut |_| {},
        )
        .unwrap();
        assert!(!is_mutable(&plain));
    }

    /// Attack (audit host F6): a kvm guest drops `privateUsers` from its plan, or points it at
    /// another range, before `rkt app add`; the host uses its own record of the range.
    #[test]
    fn the_plan_read_back_has_the_hosts_id_range() {
        let d = tempfile::tempdir().unwrap();
        let paths = PodPaths::new(d.path().to_path_buf());
        let range = pod_abi::userns::IdRange {
            shift: 0x1_0000,
            count: 0x1_0000,
        };
        layout::write_private_users(&paths, range).unwrap();
        let write = |json: &str| {
            let at = paths.stage1_rootfs().join(PLAN_IN_STAGE1);
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::fs::write(at, json).unwrap();
        };
        let plan = |extra: &str| {
            format!(
                r#"{{"version":1,"uuid":"u","hostname":"h","stopGraceSecs":1,{extra}"apps":[]}}"#
            )
        };
        write(&plan(""));
        assert_eq!(read_plan(&paths).unwrap().private_users, Some(range));
        write(&plan(r#""privateUsers":{"shift":0,"count":65536},"#));
        assert_eq!(read_plan(&paths).unwrap().private_users, Some(range));
        // A pod without a range has none, whatever its plan says.
        std::fs::remove_file(paths.root().join(pod_abi::paths::PRIVATE_USERS_PREPARED)).unwrap();
        assert_eq!(read_plan(&paths).unwrap().private_users, None);
    }

    #[test]
    fn add_takes_the_pod_then_one_image() {
        let AddCommand {
            uuid: u,
            cmd: c,
            volumes,
        } = parse_add(&v(&[
            "abcd",
            "img.aci",
            "--name=web",
            "--mnt-volume=name=data,kind=host,source=/srv,target=/data",
            "--exec=/bin/x",
            "--mnt-volume",
            "name=tmp,kind=empty,target=/scratch,readOnly=true",
            "--label=k=v",
            "--",
            "--label=arg",
            "--mnt-volume=name=arg,kind=empty,target=/x",
        ]))
        .unwrap();
        assert_eq!(u, "abcd");
        let got: Vec<(&str, &str, bool)> = volumes
            .iter()
            .map(|m| {
                let v = m.app_volume.as_ref().unwrap();
                (m.volume.as_str(), m.path.as_str(), v.is_read_only())
            })
            .collect();
        assert_eq!(
            got,
            vec![("data", "/data", false), ("tmp", "/scratch", true)]
        );
        assert_eq!(c.apps.len(), 1);
        let a = &c.apps[0];
        assert_eq!(a.name.as_deref(), Some("web"));
        assert_eq!(a.user_labels, vec![("k".to_string(), "v".to_string())]);
        assert_eq!(
            a.args.as_deref(),
            Some(&v(&["--label=arg", "--mnt-volume=name=arg,kind=empty,target=/x"])[..])
        );
        assert!(parse_add(&v(&["abcd"])).is_err());
        assert!(parse_add(&v(&["abcd", "img", "--name=Bad_Name"])).is_err());
        assert!(parse_add(&v(&["--name=x", "abcd", "img"])).is_err());
        assert!(parse_add(&v(&["abcd", "img", "--mnt-volume=a"])).is_err());
        assert!(parse_add(&v(&["abcd", "img", "--mnt-volume"])).is_err());
        assert!(parse_add(&v(&["abcd", "img", "--volume=a,kind=empty"])).is_err());
        assert!(parse_add(&v(&["abcd", "img", "---", "img2"])).is_err());
    }
}
