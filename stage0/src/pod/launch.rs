//! Pod launch for `rkt run`, `rkt prepare` and `rkt run-prepared`: create a pod from a parsed
//! command line (fetch and render the images, select stage1, write the pod manifest and
//! layout), then mount the rootfs overlays and volumes, write the launch plan and exec the
//! stage1 `run` entrypoint holding the pod lock.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use pod_abi::paths::PodDirState;

use super::args::RunCommand;
use super::layout::{self, TreeInfo};
use super::manifest::{self, EnvSources, ResolvedApp};
use super::metadata;
use super::overlay_support::{self, OverlaySupport};
use super::plan::build_plan;
use super::{Pod, PodError, PodState, PodsDir};
use crate::error::{error_chain, UsageError};
use crate::fetch::{fetch_image, FetchError, FetchOptions};
use crate::stage1::{self, Entrypoints, Stage1Error};
use crate::store::{ImageRecord, Store, StoreError, TreeHold};
use pod_abi::userns::IdRange;

/// Errors of creating and launching a pod.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// A bad flag value.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// A pod operation failed.
    #[error(transparent)]
    Pod(#[from] PodError),
    /// Selecting or executing stage1 failed.
    #[error(transparent)]
    Stage1(#[from] Stage1Error),
    /// A fetch option is invalid.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A store lookup failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The image store cannot be opened.
    #[error("cannot open the image store")]
    OpenStore(#[source] StoreError),
    /// An app image cannot be fetched or found.
    #[error("cannot get image {0}")]
    Image(String, #[source] Box<FetchError>),
    /// An image cannot be rendered.
    #[error("cannot render image {0}")]
    Render(String, #[source] Box<StoreError>),
    /// A rendered image manifest cannot be read.
    #[error("cannot read image manifest {0}")]
    ImageManifest(PathBuf, #[source] appc::ManifestError),
    /// A file cannot be read or written.
    #[error("cannot {0} {1}")]
    Io(&'static str, PathBuf, #[source] std::io::Error),
    /// `--mds-register` failed.
    #[error(transparent)]
    Metadata(#[from] super::metadata::MetadataError),
    /// The pod's disk limit could not be set.
    #[error("cannot limit the pod's disk use")]
    Quota(#[from] super::quota::QuotaError),
    /// Starting the pod failed after it moved to `run/` (recorded in its `failure` file).
    #[error("cannot start pod {uuid}")]
    Start {
        /// The pod.
        uuid: String,
        /// What failed.
        #[source]
        source: Box<LaunchError>,
    },
}

impl LaunchError {
    /// The wrapped error whose exit code this one has: the one a transparent variant hides
    /// from the source chain, or a boxed cause (for [`crate::error::exit_code`]).
    pub fn inner(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LaunchError::Usage(e) => Some(e),
            LaunchError::Pod(e) => Some(e),
            LaunchError::Stage1(e) => Some(e),
            LaunchError::Fetch(e) => Some(e),
            LaunchError::Store(e) => Some(e),
            LaunchError::Image(_, e) => Some(&**e),
            LaunchError::Render(_, e) => Some(&**e),
            LaunchError::Metadata(e) => Some(e),
            LaunchError::Start { source, .. } => Some(&**source),
            _ => None,
        }
    }
}

/// Where to create a pod and how to get its images.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// Data directory (`--dir`), absolute so that overlay lower dirs do not depend on the cwd.
    pub data_dir: PathBuf,
    /// How images are fetched.
    pub fetch: FetchOptions,
}

/// Launch-time options (`rkt run` flags, or `rkt run-prepared` ones).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Pod hostname; empty means `rkt-<uuid>`.
    pub hostname: String,
    /// `--interactive`.
    pub interactive: bool,
    /// `--debug`.
    pub debug: bool,
    /// `--net` as given to stage1.
    pub net: String,
    /// `--insecure-options`; launching reads `paths` (apps keep a writable `/proc/sys`,
    /// `/proc/sysrq-trigger`...), `seccomp` (apps get no system call filter, otherwise their
    /// seccomp isolator's or rkt's default: `super::seccomp::default_plan`) and `capabilities`
    /// (an app's bounding set is every capability, whatever its capability isolators say).
    pub insecure: crate::fetch::InsecureOptions,
    /// Network config dirs, `--dns*`, `--hosts-entry` (ports come from the pod manifest).
    pub net_plan: pod_abi::plan::NetPlan,
    /// `--mds-register`: register the pod with the metadata service (started on demand).
    pub mds_register: bool,
    /// `--kvm-snapshot`: recorded in the plan (`Plan::kvm_snapshot`).
    pub kvm_snapshot: bool,
    /// `--ipc=parent`: recorded in the plan (`Plan::host_ipc`).
    pub host_ipc: bool,
    /// `--pids-limit`, resolved (`super::args::PidsLimit::tasks`): recorded in the plan
    /// (`Plan::pids_limit`).
    pub pids_limit: Option<u64>,
}

/// What a launch reports while it works (`rkt` prints warnings always, debug lines with
/// `--debug`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Something the user should know (an ignored flag, an implicit volume ...).
    Warning(String),
    /// A step taken (image IDs, pod path).
    Debug(String),
}

/// The rendered trees a pod runs on: the stage1 image's and each app's, in pod order.
#[derive(Debug)]
pub struct PodTrees {
    /// stage1.
    pub stage1: TreeInfo,
    /// Apps in pod-manifest order.
    pub apps: Vec<TreeInfo>,
    /// The trees' holds, kept until the pod's references to them are written and its
    /// overlays mounted (`image gc` leaves them alone meanwhile).
    _holds: Vec<TreeHold>,
}

/// A pod whose manifest and layout are written, locked by this process, ready to be run or
/// left prepared.
#[derive(Debug)]
pub struct PreparedPod {
    pod: Pod,
    store: Store,
    /// Known after `create`; re-rendered from the store at launch after `open`.
    trees: Option<PodTrees>,
}

/// Random picks of a `--private-users` range before giving up on finding a free one.
const ID_RANGE_PICKS: usize = 64;

/// A `--private-users` range (rkt's: a random multiple of 65536, each multiple from one call
/// of `draw`) that none of `taken` (the other pods' ranges) overlaps.
fn pick_id_range_with(
    taken: &[IdRange],
    draw: &mut dyn FnMut() -> u16,
) -> Result<IdRange, LaunchError> {
    for _ in 0..ID_RANGE_PICKS {
        let r = IdRange::from_pick(draw());
        if !taken.iter().any(|t| t.overlaps(&r)) {
            return Ok(r);
        }
    }
    Err(UsageError(format!(
        "--private-users: no free user ID range found in {ID_RANGE_PICKS} tries ({} pods hold one; remove some with rkt gc)",
        taken.len()
    ))
    .into())
}

/// Picks the new pod's `--private-users` range and records it in its directory
/// (`private-users-prepared`) under an exclusive lock on `pods/`, so that two pods created at
/// once never draw the same range: each sees the other's record.
fn reserve_id_range(
    pods: &PodsDir,
    pod: &Pod,
    draw: &mut dyn FnMut() -> u16,
) -> Result<IdRange, LaunchError> {
    let _lock = pods.lock_all()?;
    let r = pick_id_range_with(&layout::private_user_ranges(pods.data_dir()), draw)?;
    layout::write_private_users(&pod.paths(), r)?;
    Ok(r)
}

/// A random draw for [`IdRange::from_pick`].
fn random_draw() -> u16 {
    let b = *uuid::Uuid::new_v4().as_bytes();
    u16::from_le_bytes([b[0], b[1]])
}

/// Renders a record's tree and holds it in `holds`.
fn tree_of(
    store: &Store,
    rec: &ImageRecord,
    holds: &mut Vec<TreeHold>,
) -> Result<TreeInfo, LaunchError> {
    let (t, hold) = store
        .hold_tree(rec)
        .map_err(|e| LaunchError::Render(rec.display_name(), Box::new(e)))?;
    holds.push(hold);
    Ok(TreeInfo {
        image_id: rec.id.clone(),
        tree_id: t.id,
        rootfs: t.rootfs,
        manifest: t.manifest,
    })
}

/// `--pod-manifest`: reads the manifest at `path`, resolves each app's image in the store by
/// its ID (writing the full ID, and the image's name where the manifest gives none), renders
/// the trees into `apps` (held in `holds`), and checks the result
/// ([`manifest::check_user_pod_manifest`]); `interactive` needs a single app.
fn pod_from_manifest(
    store: &Store,
    path: &Path,
    interactive: bool,
    apps: &mut Vec<TreeInfo>,
    holds: &mut Vec<TreeHold>,
    notice: &mut dyn FnMut(Notice),
) -> Result<appc::PodManifest, LaunchError> {
    let mut pm = manifest::read_user_pod_manifest(path)?;
    let mut images = Vec::new();
    for ra in &mut pm.apps {
        if ra.image.id.is_empty() {
            return Err(PodError::Config(format!(
                "pod manifest: app {} names no image ID (a pod manifest's images are taken from the store by ID)",
                ra.name
            ))
            .into());
        }
        let rec = store
            .resolve(&ra.image.id)
            .map_err(|e| LaunchError::Image(ra.image.id.clone(), Box::new(e.into())))?;
        let m = store.manifest(&rec)?;
        notice(Notice::Debug(format!(
            "app {}: image {} -> {}",
            ra.name, ra.image.id, rec.id
        )));
        ra.image.id = rec.id.clone();
        if ra.image.name.is_none() {
            ra.image.name = Some(m.name.clone());
        }
        apps.push(tree_of(store, &rec, holds)?);
        images.push(m);
    }
    manifest::check_user_pod_manifest(&mut pm, &images, &mut |w| notice(Notice::Warning(w)))?;
    if interactive && pm.apps.len() != 1 {
        return Err(PodError::Config("--interactive works with a single app only".into()).into());
    }
    Ok(pm)
}

impl PreparedPod {
    /// Creates a pod for `cmd` in `prepare/`: fetches and renders the app and stage1 images,
    /// writes the pod manifest and layout, and `--uuid-file-save`.
    pub fn create(
        cmd: &RunCommand,
        opts: &PrepareOptions,
        notice: &mut dyn FnMut(Notice),
    ) -> Result<Self, LaunchError> {
        for f in &cmd.pod.ignored {
            notice(Notice::Warning(format!(
                "{f} is not supported by this runtime and is ignored"
            )));
        }
        let store = Store::open(&opts.data_dir).map_err(LaunchError::OpenStore)?;
        pod_abi::trace::phase("rkt", "store-open");
        let pods = PodsDir::open(&opts.data_dir)?;
        if cmd.pod.disk_limit.is_some() {
            // Refused before anything is fetched where no limit can hold.
            let root = std::fs::File::open(pods.root())
                .map_err(|e| LaunchError::Io("open", pods.root().to_path_buf(), e))?;
            super::quota::check(root.as_fd(), pods.root())
                .map_err(|e| UsageError(e.to_string()))?;
        }
        let mut sources = EnvSources::default();
        if cmd.pod.inherit_env {
            sources.inherited = std::env::vars().collect();
        }
        for f in &cmd.pod.set_env_file {
            sources.from_files.extend(manifest::read_env_file(f)?);
        }
        sources.set_env = cmd.pod.set_env.clone();

        let mut resolved = Vec::new();
        let mut apps = Vec::new();
        let mut holds = Vec::new();
        // --pod-manifest: the apps and their images come from the manifest, by store ID.
        let user_pm = match &cmd.pod.pod_manifest {
            Some(path) => Some(pod_from_manifest(
                &store,
                path,
                cmd.pod.interactive,
                &mut apps,
                &mut holds,
                notice,
            )?),
            None => None,
        };
        for a in &cmd.apps {
            let mut fetch = opts.fetch.clone();
            fetch.signature = a.signature.clone();
            let rec = fetch_image(&store, &a.image, &fetch)
                .map_err(|e| LaunchError::Image(a.image.clone(), Box::new(e)))?;
            let m = store.manifest(&rec)?;
            notice(Notice::Debug(format!("image {} -> {}", a.image, rec.id)));
            apps.push(tree_of(&store, &rec, &mut holds)?);
            resolved.push(ResolvedApp {
                opts: a.clone(),
                image_id: rec.id.clone(),
                manifest: m,
            });
        }
        pod_abi::trace::phase("rkt", "app-images");
        let s1rec = stage1::select(&store, &cmd.pod.stage1, &opts.fetch)?;
        notice(Notice::Debug(format!(
            "stage1 image {} ({})",
            s1rec.display_name(),
            s1rec.id
        )));
        let s1m = store.manifest(&s1rec)?;
        Entrypoints::from_manifest(s1m).entrypoint(pod_abi::stage1::ANN_RUN)?;
        let stage1 = tree_of(&store, &s1rec, &mut holds)?;
        pod_abi::trace::phase("rkt", "stage1-image");
        let pm = match user_pm {
            Some(pm) => pm,
            None => manifest::build_pod_manifest(&cmd.pod, &sources, &resolved, &mut |w| {
                notice(Notice::Warning(w))
            })?,
        };

        // --private-users: the pod's own copies of the trees, owners shifted into its range
        // (the store's trees are shared by every pod).
        if cmd.pod.private_users && !cmd.pod.no_overlay {
            notice(Notice::Debug(
                "--private-users: the image trees are copied into the pod (as with --no-overlay)"
                    .into(),
            ));
        }
        let overlay = !cmd.pod.no_overlay
            && !cmd.pod.private_users
            && match overlay_support::probe(pods.root()) {
                OverlaySupport::Yes => true,
                OverlaySupport::No(why) => {
                    notice(Notice::Warning(format!(
                        "{why}; falling back to --no-overlay (the image trees are copied into the pod)"
                    )));
                    false
                }
            };
        let pod = pods.create()?;
        if let Some(bytes) = cmd.pod.disk_limit {
            let _lock = pods.lock_all()?;
            let id = super::quota::limit(pod.dir_file().as_fd(), &pod.path(), pod.uuid(), bytes)?;
            notice(Notice::Debug(format!(
                "disk limit {bytes} bytes: XFS project {id}"
            )));
        }
        let private_users = match cmd.pod.private_users {
            true => Some(reserve_id_range(&pods, &pod, &mut random_draw)?),
            false => None,
        };
        notice(Notice::Debug(format!(
            "pod {} at {}",
            pod.uuid(),
            pod.path().display()
        )));
        let copied =
            layout::write_prepared(&pod.paths(), &pm, &stage1, &apps, overlay, private_users)?;
        pod_abi::trace::phase("rkt", "pod-written");
        if !overlay {
            notice(Notice::Debug(format!(
                "trees copied into the pod: {} files reflinked, {} copied, {} bytes",
                copied.reflinked, copied.copied, copied.bytes
            )));
        }
        if let Some(f) = &cmd.pod.uuid_file_save {
            crate::util::write_atomic(f, pod.uuid().as_bytes(), 0o644)
                .map_err(|e| LaunchError::Io("write", f.clone(), e))?;
        }
        Ok(PreparedPod {
            pod,
            store,
            trees: Some(PodTrees {
                stage1,
                apps,
                _holds: holds,
            }),
        })
    }

    /// Opens and locks a prepared pod for `rkt run-prepared`. `interactive` needs a
    /// single-app pod.
    pub fn open(pods: &PodsDir, reference: &str, interactive: bool) -> Result<Self, LaunchError> {
        let mut pod = pods.open_pod(reference)?;
        let wrong = |uuid: &str, state| PodError::WrongState {
            uuid: uuid.to_string(),
            state,
            wanted: "not prepared",
        };
        if pod.dir_state() != PodDirState::Prepared {
            return Err(wrong(pod.uuid(), pod.state()).into());
        }
        pod.lock(false)?;
        if pod.dir_state() != PodDirState::Prepared {
            return Err(wrong(pod.uuid(), PodState::derive(pod.dir_state(), true)).into());
        }
        let pm = read_pod_manifest(&pod)?;
        if interactive && pm.apps.len() != 1 {
            return Err(UsageError("--interactive works with a single app only".into()).into());
        }
        let data_dir = pods
            .root()
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| pods.root().to_path_buf());
        let store = Store::open(&data_dir)?;
        Ok(PreparedPod {
            pod,
            store,
            trees: None,
        })
    }

    /// The pod's UUID.
    pub fn uuid(&self) -> &str {
        self.pod.uuid()
    }

    /// Leaves the pod prepared (`prepared/`, synced, unlocked) for a later `run-prepared`;
    /// returns its UUID.
    pub fn into_prepared(mut self) -> Result<String, LaunchError> {
        self.pod.transition(PodDirState::Prepared)?;
        layout::sync_pod(&self.pod.paths())?;
        self.pod.unlock();
        Ok(self.pod.uuid().to_string())
    }

    /// Moves the pod to `run/`, mounts, writes the plan and execs stage1 (this process is
    /// replaced). Returns only on failure, after recording it in the pod's `failure` file.
    pub fn run(mut self, opts: &RunOptions, notice: &mut dyn FnMut(Notice)) -> LaunchError {
        if let Err(e) = self.pod.transition(PodDirState::Run) {
            return e.into();
        }
        let paths = self.pod.paths();
        let (entry, args) = match self.start(opts, notice) {
            Ok(x) => x,
            Err(e) => {
                let _ = std::fs::write(paths.failure(), format!("{}\n", error_chain(&e)));
                return LaunchError::Start {
                    uuid: self.pod.uuid().to_string(),
                    source: Box::new(e),
                };
            }
        };
        let root = self.pod.path();
        let _ = std::io::stdout().flush();
        pod_abi::trace::phase("rkt", "exec-stage1");
        let err = stage1::exec_run(&root, &entry, &args, self.pod.into_lock_fd());
        let _ = std::fs::write(root.join(pod_abi::paths::POD_FAILURE), format!("{err}\n"));
        err.into()
    }

    /// The launch steps before exec: plan, mounts, entrypoint and its arguments.
    fn start(
        &mut self,
        opts: &RunOptions,
        notice: &mut dyn FnMut(Notice),
    ) -> Result<(PathBuf, pod_abi::stage1::RunArgs), LaunchError> {
        let paths = self.pod.paths();
        let pm = read_pod_manifest(&self.pod)?;
        let trees = match self.trees.take() {
            Some(t) => t,
            None => pod_trees(&self.store, &self.pod, &pm)?,
        };
        let images = trees
            .apps
            .iter()
            .map(|t| {
                let b = std::fs::read(&t.manifest)
                    .map_err(|e| LaunchError::Io("read", t.manifest.clone(), e))?;
                appc::ImageManifest::from_json(&b)
                    .map_err(|e| LaunchError::ImageManifest(t.manifest.clone(), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut plan = build_plan(self.pod.uuid(), &pm, &images, opts)?;
        super::quota::fix_projects(self.pod.dir_file().as_fd(), &mut plan.apps);
        plan.private_users = layout::private_users(&paths)?;
        for a in plan.apps.iter().filter(|a| !a.ignored_isolators.is_empty()) {
            notice(Notice::Warning(format!(
                "app {}: isolators not implemented, ignored: {}",
                a.name,
                a.ignored_isolators.join(", ")
            )));
        }
        layout::mount_rootfs(&paths, &pm, &trees.stage1, &trees.apps)?;
        layout::mount_volumes(&paths, &pm, &plan)?;
        pod_abi::trace::phase("rkt", "mounted");
        layout::write_plan(&paths, &plan)?;
        let ep = Entrypoints::read(&paths.stage1_manifest())?;
        // From the store's read-only tree, never from the pod's writable stage1/rootfs.
        let entry = trees
            .stage1
            .rootfs
            .join(ep.entrypoint(pod_abi::stage1::ANN_RUN)?);
        let mds = if opts.mds_register {
            let apps: Vec<(String, &Path)> = pm
                .apps
                .iter()
                .zip(&trees.apps)
                .map(|(a, t)| (a.name.as_str().to_string(), t.manifest.as_path()))
                .collect();
            let mut warn = |w: String| notice(Notice::Warning(w));
            Some(metadata::register(
                self.pod.uuid(),
                &paths.manifest(),
                &apps,
                &mut warn,
            )?)
        } else {
            None
        };
        let args = pod_abi::stage1::RunArgs {
            debug: opts.debug,
            net: opts.net.clone(),
            interactive: opts.interactive,
            // --hostname exists from stage1 interface version 2 on.
            hostname: if ep.interface_version() >= 2 {
                plan.hostname.clone()
            } else {
                String::new()
            },
            mds_token: mds.as_ref().map(|r| r.token.clone()),
            mds_port: mds.as_ref().map(|r| r.port),
            // rkt's flags for what the plan also says (--disable-* from interface version 3
            // on, --ipc from 6 on), for stage1s that do not read the plan.
            disable_capabilities: ep.interface_version() >= 3 && opts.insecure.capabilities,
            disable_paths: ep.interface_version() >= 3 && opts.insecure.paths,
            disable_seccomp: ep.interface_version() >= 3 && opts.insecure.seccomp,
            ipc: (ep.interface_version() >= 6 && opts.host_ipc).then(|| "parent".to_string()),
            private_users: plan.private_users.map(|r| r.to_string()),
            uuid: self.pod.uuid().to_string(),
        };
        Ok((entry, args))
    }
}

/// Reads and parses the pod manifest of `pod`.
pub fn read_pod_manifest(pod: &Pod) -> Result<appc::PodManifest, PodError> {
    let path = pod.paths().manifest();
    let b = pod_abi::podfile::read_beneath(
        &pod.path(),
        Path::new(pod_abi::paths::POD_MANIFEST),
        pod_abi::podfile::MANIFEST_MAX,
    )
    .map_err(|e| PodError::io("read", &path, std::io::Error::other(e)))?;
    appc::PodManifest::from_json(&b).map_err(|e| PodError::Manifest { path, source: e })
}

/// Trees of a prepared pod, re-rendered from the store by image ID.
fn pod_trees(store: &Store, pod: &Pod, pm: &appc::PodManifest) -> Result<PodTrees, LaunchError> {
    let path = pod.path().join(layout::STAGE1_IMAGE_ID);
    let s1id = pod_abi::podfile::read_line_beneath(
        &pod.path(),
        Path::new(layout::STAGE1_IMAGE_ID),
        pod_abi::podfile::SMALL_FILE_MAX,
    )
    .map_err(|e| LaunchError::Io("read", path, std::io::Error::other(e.to_string())))?;
    let mut holds = Vec::new();
    let stage1 = tree_of(store, &store.resolve(s1id.trim())?, &mut holds)?;
    let mut apps = Vec::new();
    for a in &pm.apps {
        apps.push(tree_of(store, &store.resolve(&a.image.id)?, &mut holds)?);
    }
    Ok(PodTrees {
        stage1,
        apps,
        _holds: holds,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A new pod's range overlaps none of the other pods'; with every range taken, the
    /// error says so rather than sharing one.
    #[test]
    fn id_ranges_are_not_shared() {
        let r = pick_id_range_with(&[], &mut random_draw).unwrap();
        assert!(r.shift >= 0x10000 && r.shift.is_multiple_of(0x10000));
        let all_but_one: Vec<IdRange> = (0..0x7fffu16)
            .map(IdRange::from_pick)
            .filter(|x| *x != IdRange::from_pick(7))
            .collect();
        // Whenever a pick succeeds, it is the free range.
        for _ in 0..20 {
            if let Ok(x) = pick_id_range_with(&all_but_one, &mut random_draw) {
                assert_eq!(x, IdRange::from_pick(7));
            }
        }
        let all: Vec<IdRange> = (0..0x7fffu16).map(IdRange::from_pick).collect();
        let e = pick_id_range_with(&all, &mut random_draw).unwrap_err();
        assert!(e.to_string().contains("no free user ID range"), "{e}");
    }

    /// Two pods reserving a range at once never share one: the second waits for the first's
    /// record and sees it.
    #[test]
    fn concurrent_reservations_take_different_ranges() {
        let t = tempfile::tempdir().unwrap();
        let pods = PodsDir::open(t.path()).unwrap();
        let new_pods = [pods.create().unwrap(), pods.create().unwrap()];
        let got: Vec<IdRange> = std::thread::scope(|s| {
            let hs: Vec<_> = new_pods
                .iter()
                .map(|pod| {
                    let pods = pods.clone();
                    s.spawn(move || {
                        // Each draws 7 first, slowly (the window in which the other would
                        // read no record and draw 7 too), then 8, 9, ...
                        let mut n = 0u16;
                        let mut draw = || {
                            n += 1;
                            if n == 1 {
                                std::thread::sleep(std::time::Duration::from_millis(100));
                            }
                            6 + n
                        };
                        reserve_id_range(&pods, pod, &mut draw).unwrap()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_ne!(got[0], got[1]);
        let mut on_disk = layout::private_user_ranges(t.path());
        on_disk.sort_by_key(|r| r.shift);
        let mut want = got.clone();
        want.sort_by_key(|r| r.shift);
        assert_eq!(on_disk, want);
    }
}
