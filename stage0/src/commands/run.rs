//! `rkt run`, `rkt prepare`, `rkt run-prepared`: resolve the images, create the pod (manifest,
//! layout), then mount the rootfs overlays and volumes, write the launch plan and exec the
//! stage1 `run` entrypoint holding the pod lock.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use pod_abi::paths::PodDirState;
use stage0::fetch::{fetch_image, FetchOptions, InsecureOptions, PullPolicy};
use stage0::pod::args::{Mode, RunCommand, UsageError};
use stage0::pod::layout::{self, TreeInfo};
use stage0::pod::manifest::{self, EnvSources, ResolvedApp};
use stage0::pod::plan::{build_plan, RunTimeOptions};
use stage0::pod::{Pod, PodError, PodState, PodsDir};
use stage0::stage1::{self, Entrypoints};
use stage0::store::{ImageRecord, Store};

use crate::cli::Globals;

/// Flags of `rkt run` (rkt's per-image flags follow images; parsed by hand).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Images, per-app flags and `-- args ---` separators.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Flags of `rkt prepare`.
#[derive(Debug, clap::Args)]
pub struct PrepareArgs {
    /// Images, per-app flags and `-- args ---` separators.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Flags of `rkt run-prepared`.
#[derive(Debug, clap::Args)]
pub struct RunPreparedArgs {
    /// Network configuration (default, host, none, ...).
    #[arg(long, default_value = "default")]
    pub net: String,
    /// Attach the app to the terminal (single-app pods).
    #[arg(long)]
    pub interactive: bool,
    /// Pod hostname (default rkt-<uuid>).
    #[arg(long, default_value = "")]
    pub hostname: String,
    /// Pod UUID (or unambiguous prefix).
    pub uuid: String,
}

/// Maps an error to rkt's exit codes, adding the pod-specific ones.
pub fn code_for(e: &anyhow::Error) -> i32 {
    for c in e.chain() {
        if c.downcast_ref::<UsageError>().is_some() {
            return pod_abi::exit::USAGE;
        }
        if let Some(p) = c.downcast_ref::<PodError>() {
            if p.is_pod_state() {
                return pod_abi::exit::POD_STATE;
            }
        }
        // stage1 selection boxes its fetch errors.
        if let Some(f) = c.downcast_ref::<Box<stage0::fetch::FetchError>>() {
            if f.is_not_found() {
                return pod_abi::exit::IMAGE_NOT_FOUND;
            }
            if f.is_bad_image() {
                return pod_abi::exit::BAD_IMAGE;
            }
        }
    }
    super::exit_code_for(e)
}

/// Prints the error and returns its exit code.
pub fn report(r: anyhow::Result<i32>) -> anyhow::Result<i32> {
    match r {
        Ok(c) => Ok(c),
        Err(e) => {
            super::print_error(&e);
            Ok(code_for(&e))
        }
    }
}

fn merged_globals(g: &Globals, cmd: &RunCommand) -> (PathBuf, bool, String) {
    let dir = cmd.globals.dir.clone().unwrap_or_else(|| g.dir.clone());
    // Absolute, so tree paths (overlay lower dirs) do not depend on the cwd.
    let _ = std::fs::create_dir_all(&dir);
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let debug = g.debug || cmd.globals.debug;
    let insecure = cmd
        .globals
        .insecure_options
        .clone()
        .unwrap_or_else(|| g.insecure_options.clone());
    (dir, debug, insecure)
}

fn debug_log(debug: bool, msg: impl FnOnce() -> String) {
    if debug {
        eprintln!("rkt: {}", msg());
    }
}

/// Renders a record's tree.
fn tree_of(store: &Store, rec: &ImageRecord) -> anyhow::Result<TreeInfo> {
    let t = store
        .render_tree(rec)
        .with_context(|| format!("cannot render image {}", rec.display_name()))?;
    Ok(TreeInfo {
        image_id: rec.id.clone(),
        tree_id: t.id,
        rootfs: t.rootfs,
        manifest: t.manifest,
    })
}

/// Creates and prepares a pod; returns it locked in `prepare/`.
#[allow(clippy::type_complexity)]
fn create_pod(
    g: &Globals,
    mode: Mode,
    rest: &[String],
) -> anyhow::Result<(Pod, RunCommand, Store, bool, (TreeInfo, Vec<TreeInfo>))> {
    let cmd = RunCommand::parse(mode, rest)?;
    for f in &cmd.pod.ignored {
        eprintln!("rkt: warning: {f} is not supported by this runtime and is ignored");
    }
    let (dir, debug, insecure) = merged_globals(g, &cmd);
    let insecure = InsecureOptions::parse(&insecure)?;
    let pull_policy = match &cmd.pod.pull_policy {
        Some(p) => p.parse::<PullPolicy>()?,
        None => PullPolicy::New,
    };
    let opts = FetchOptions {
        insecure,
        pull_policy,
        progress: true,
        debug,
        no_store: false,
    };
    let store = Store::open(&dir).context("cannot open the image store")?;
    let mut sources = EnvSources::default();
    if cmd.pod.inherit_env {
        sources.inherited = std::env::vars().collect();
    }
    for f in &cmd.pod.set_env_file {
        sources.from_files.extend(manifest::read_env_file(f)?);
    }
    sources.set_env = cmd.pod.set_env.clone();

    let mut resolved = Vec::new();
    let mut trees = Vec::new();
    for a in &cmd.apps {
        let rec = fetch_image(&store, &a.image, &opts)
            .with_context(|| format!("cannot get image {}", a.image))?;
        let m = store.manifest(&rec)?;
        debug_log(debug, || format!("image {} -> {}", a.image, rec.id));
        trees.push(tree_of(&store, &rec)?);
        resolved.push(ResolvedApp {
            opts: a.clone(),
            image_id: rec.id.clone(),
            manifest: m,
        });
    }
    let s1rec = stage1::select(&store, &cmd.pod.stage1, &opts)?;
    debug_log(debug, || {
        format!("stage1 image {} ({})", s1rec.display_name(), s1rec.id)
    });
    let s1m = store.manifest(&s1rec)?;
    Entrypoints::from_manifest(s1m).entrypoint(pod_abi::stage1::ANN_RUN)?;
    let s1tree = tree_of(&store, &s1rec)?;
    let pm = manifest::build_pod_manifest(&cmd.pod, &sources, &resolved, &mut |w| {
        eprintln!("rkt: warning: {w}")
    })?;

    let pods = PodsDir::open(&dir)?;
    let pod = pods.create()?;
    debug_log(debug, || {
        format!("pod {} at {}", pod.uuid(), pod.path().display())
    });
    layout::write_prepared(&pod.paths(), &pm, &s1tree, &trees)?;
    if let Some(f) = &cmd.pod.uuid_file_save {
        stage0::util::write_atomic(f, pod.uuid().as_bytes(), 0o644)
            .with_context(|| format!("cannot write {}", f.display()))?;
    }
    Ok((pod, cmd, store, debug, (s1tree, trees)))
}

/// Trees of a prepared pod, re-rendered from the store by image ID.
fn pod_trees(
    store: &Store,
    pod: &Pod,
    pm: &appc::PodManifest,
) -> anyhow::Result<(TreeInfo, Vec<TreeInfo>)> {
    let root = pod.path();
    let s1id = std::fs::read_to_string(root.join(layout::STAGE1_IMAGE_ID))
        .context("cannot read the pod's stage1 image ID")?;
    let s1 = tree_of(store, &store.resolve(s1id.trim())?)?;
    let mut apps = Vec::new();
    for a in &pm.apps {
        apps.push(tree_of(store, &store.resolve(&a.image.id)?)?);
    }
    Ok((s1, apps))
}

/// Mounts, writes the plan and execs stage1. The pod must be locked in `run/`. Returns only on
/// failure (after recording it in the pod's `failure` file).
fn launch(
    pod: Pod,
    store: &Store,
    trees: Option<(TreeInfo, Vec<TreeInfo>)>,
    rt: RunTimeOptions,
    net: &str,
) -> anyhow::Result<i32> {
    let paths = pod.paths();
    let result = (|| -> anyhow::Result<(std::path::PathBuf, pod_abi::stage1::RunArgs)> {
        let pmb = std::fs::read(paths.manifest())
            .map_err(|e| PodError::io("read", &paths.manifest(), e))?;
        let pm = appc::PodManifest::from_json(&pmb).map_err(|e| PodError::Manifest {
            path: paths.manifest(),
            source: e,
        })?;
        let (s1, apps) = match trees {
            Some(t) => t,
            None => pod_trees(store, &pod, &pm)?,
        };
        let images = apps
            .iter()
            .map(|t| {
                let b = std::fs::read(&t.manifest)?;
                Ok(appc::ImageManifest::from_json(&b)?)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let plan = build_plan(pod.uuid(), &pm, &images, &rt)?;
        for a in plan.apps.iter().filter(|a| !a.ignored_isolators.is_empty()) {
            eprintln!(
                "rkt: warning: app {}: isolators not implemented, ignored: {}",
                a.name,
                a.ignored_isolators.join(", ")
            );
        }
        layout::mount_rootfs(&paths, &pm, &s1, &apps)?;
        layout::mount_volumes(&paths, &pm, &plan)?;
        layout::write_plan(&paths, &plan)?;
        let ep = Entrypoints::read(&paths.stage1_manifest())?;
        let entry = paths
            .stage1_rootfs()
            .join(ep.entrypoint(pod_abi::stage1::ANN_RUN)?);
        let args = pod_abi::stage1::RunArgs {
            debug: rt.debug,
            net: net.to_string(),
            interactive: rt.interactive,
            // --hostname exists from stage1 interface version 2 on.
            hostname: if ep.interface_version() >= 2 {
                plan.hostname.clone()
            } else {
                String::new()
            },
            uuid: pod.uuid().to_string(),
        };
        Ok((entry, args))
    })();
    let (entry, args) = match result {
        Ok(x) => x,
        Err(e) => {
            let _ = std::fs::write(paths.failure(), format!("{e:#}\n"));
            return Err(e.context(format!("cannot start pod {}", pod.uuid())));
        }
    };
    let root = pod.path();
    let _ = std::io::stdout().flush();
    let err = stage1::exec_run(&root, &entry, &args, pod.into_lock_fd());
    let _ = std::fs::write(root.join(pod_abi::paths::POD_FAILURE), format!("{err}\n"));
    Err(err.into())
}

/// Runs `rkt run`.
pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    report((|| {
        let (mut pod, cmd, store, debug, trees) = create_pod(g, Mode::Run, &a.rest)?;
        pod.transition(PodDirState::Run)?;
        let rt = RunTimeOptions {
            hostname: cmd.pod.hostname.clone().unwrap_or_default(),
            interactive: cmd.pod.interactive,
            debug,
        };
        launch(pod, &store, Some(trees), rt, &cmd.pod.net)
    })())
}

/// Runs `rkt prepare`: prints the UUID only on stdout.
pub fn prepare(g: &Globals, a: PrepareArgs) -> anyhow::Result<i32> {
    report((|| {
        let (mut pod, cmd, _store, _debug, _trees) = create_pod(g, Mode::Prepare, &a.rest)?;
        pod.transition(PodDirState::Prepared)?;
        layout::sync_pod(&pod.paths())?;
        pod.unlock();
        if !cmd.pod.quiet {
            eprintln!("rkt: pod {} prepared", pod.uuid());
        }
        println!("{}", pod.uuid());
        Ok(0)
    })())
}

/// Runs `rkt run-prepared`.
pub fn run_prepared(g: &Globals, a: RunPreparedArgs) -> anyhow::Result<i32> {
    report((|| {
        let pods = PodsDir::open(&g.dir)?;
        let data_dir = pods
            .root()
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| g.dir.clone());
        let mut pod = pods.open_pod(&a.uuid)?;
        if pod.dir_state() != PodDirState::Prepared {
            return Err(PodError::WrongState {
                uuid: pod.uuid().to_string(),
                state: pod.state(),
                wanted: "not prepared",
            }
            .into());
        }
        pod.lock(false)?;
        if pod.dir_state() != PodDirState::Prepared {
            let st = PodState::derive(pod.dir_state(), true);
            return Err(PodError::WrongState {
                uuid: pod.uuid().to_string(),
                state: st,
                wanted: "not prepared",
            }
            .into());
        }
        let pmb = std::fs::read(pod.paths().manifest())?;
        let pm = appc::PodManifest::from_json(&pmb)?;
        if a.interactive && pm.apps.len() != 1 {
            return Err(UsageError("--interactive works with a single app only".into()).into());
        }
        pod.transition(PodDirState::Run)?;
        let store = Store::open(&data_dir)?;
        let rt = RunTimeOptions {
            hostname: a.hostname.clone(),
            interactive: a.interactive,
            debug: g.debug,
        };
        launch(pod, &store, None, rt, &a.net)
    })())
}
