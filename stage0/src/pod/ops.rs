//! Operations on existing pods: stop, remove (`rkt rm`), garbage collection (`rkt gc`), enter
//! and waiting for a state (`rkt status --wait`). stage1's `stop`, `gc` and `enter`
//! entrypoints run with cwd = the pod directory.

use std::process::ExitStatus;
use std::time::{Duration, Instant, SystemTime};

use pod_abi::paths::PodDirState;

use super::status::PodInfo;
use super::{layout, Pod, PodError, PodState, PodsDir};
use crate::error::UsageError;
use crate::stage1::{self, Entrypoints, Stage1Error};

/// Poll interval while waiting for a pod (milliseconds).
pub const WAIT_POLL_MS: u64 = 50;
/// How long `enter` waits for the pod's pid file (polls of [`WAIT_POLL_MS`]).
const ENTER_PID_POLLS: u32 = 100;
/// Command `enter` runs when none is given.
pub const DEFAULT_ENTER_CMD: &str = "/bin/bash";

/// Errors of pod operations.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// A bad flag value.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// A pod lifecycle operation failed (missing pod, wrong state, lock ...).
    #[error(transparent)]
    Pod(#[from] PodError),
    /// Reading or executing a stage1 entrypoint failed.
    #[error(transparent)]
    Stage1(#[from] Stage1Error),
    /// The stage1 `stop` entrypoint failed.
    #[error("stage1 stop entrypoint failed ({0})")]
    StopFailed(ExitStatus),
    /// The pod has no pid file.
    #[error("pod {0} has no pid file")]
    NoPid(String),
    /// The pod's pid file did not appear in time.
    #[error("pod {0} has no pid file yet")]
    NoPidYet(String),
    /// Signalling stage1 failed.
    #[error("cannot signal stage1")]
    Signal(#[source] nix::Error),
    /// `status --wait=DURATION` ran out.
    #[error("timed out waiting for pod {0} to exit")]
    Timeout(String),
}

impl OpError {
    /// The error a transparent variant hides from the source chain (for
    /// [`crate::error::exit_code`]).
    pub fn inner(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpError::Usage(e) => Some(e),
            OpError::Pod(e) => Some(e),
            OpError::Stage1(e) => Some(e),
            _ => None,
        }
    }
}

fn require_running(pod: &Pod) -> Result<(), PodError> {
    let state = pod.state();
    if state == PodState::Running {
        return Ok(());
    }
    Err(PodError::WrongState {
        uuid: pod.uuid().to_string(),
        state,
        wanted: "not running",
    })
}

/// Stops a running pod: the stage1 `stop` entrypoint, or SIGTERM (SIGKILL with `force`) to
/// its pid without one. Returns the pod's UUID.
pub fn stop(pods: &PodsDir, reference: &str, force: bool) -> Result<String, OpError> {
    let pod = pods.open_pod(reference)?;
    require_running(&pod)?;
    let ep = Entrypoints::read(&pod.paths().stage1_manifest())?;
    if ep.has(pod_abi::stage1::ANN_STOP) {
        let entry = stage1::image_root(pods.data_dir(), &pod.path())?
            .join(ep.entrypoint(pod_abi::stage1::ANN_STOP)?);
        let argv = pod_abi::stage1::StopArgs {
            force,
            uuid: pod.uuid().to_string(),
        }
        .to_argv();
        let s = stage1::run_entrypoint(&pod.path(), &entry, &argv)?;
        if !s.success() {
            return Err(OpError::StopFailed(s));
        }
    } else {
        let pid = pod.pid().ok_or_else(|| OpError::NoPid(pod.uuid().into()))?;
        let sig = if force {
            nix::sys::signal::Signal::SIGKILL
        } else {
            nix::sys::signal::Signal::SIGTERM
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).map_err(OpError::Signal)?;
    }
    Ok(pod.uuid().to_string())
}

/// Deletes a pod: lock, move to a garbage state, run the stage1 `gc` entrypoint (failures
/// reported through `warn`), unmount everything, remove the directory. Fails on running
/// pods.
pub fn remove(
    pods: &PodsDir,
    pod: &mut Pod,
    debug: bool,
    warn: &mut dyn FnMut(String),
) -> Result<(), OpError> {
    begin_remove(pods, pod, debug, warn)?;
    layout::remove_pod_dir(&pod.path())?;
    Ok(())
}

/// [`remove`] up to the unmounts: lock, garbage state, the stage1 `gc` entrypoint, the
/// metadata service. The pod stays locked while `pod` lives.
fn begin_remove(
    pods: &PodsDir,
    pod: &mut Pod,
    debug: bool,
    warn: &mut dyn FnMut(String),
) -> Result<(), OpError> {
    let data_dir = pods.data_dir();
    pod.lock(false).map_err(|e| match e {
        PodError::Locked(u) => PodError::WrongState {
            uuid: u,
            state: PodState::Running,
            wanted: "cannot remove a running pod",
        },
        e => e,
    })?;
    match pod.dir_state() {
        PodDirState::Run => pod.transition(PodDirState::ExitedGarbage)?,
        PodDirState::Prepare | PodDirState::Prepared => pod.transition(PodDirState::Garbage)?,
        PodDirState::ExitedGarbage | PodDirState::Garbage | PodDirState::Embryo => {}
    }
    let paths = pod.paths();
    if let Ok(ep) = Entrypoints::read(&paths.stage1_manifest()) {
        if let Ok(entry) = ep.entrypoint(pod_abi::stage1::ANN_GC) {
            let image_root = stage1::image_root(data_dir, &pod.path());
            if let Err(e) = &image_root {
                warn(format!("stage1 gc of pod {} skipped: {e}", pod.uuid()));
            }
            if let Some(entry) = image_root.ok().map(|r| r.join(&entry)) {
                let argv = pod_abi::stage1::GcArgs {
                    debug,
                    uuid: pod.uuid().to_string(),
                }
                .to_argv();
                match stage1::run_entrypoint(&pod.path(), &entry, &argv) {
                    Ok(s) if s.success() => {}
                    Ok(s) => warn(format!("stage1 gc of pod {} failed ({s})", pod.uuid())),
                    Err(e) => warn(format!("stage1 gc of pod {}: {e}", pod.uuid())),
                }
            }
        }
    }
    if let Err(e) = super::metadata::unregister(pod.uuid()) {
        warn(format!("pod {}: metadata service: {e}", pod.uuid()));
    }
    Ok(())
}

/// [`remove`] by UUID (prefix); returns the full UUID.
pub fn remove_by_ref(
    pods: &PodsDir,
    reference: &str,
    debug: bool,
    warn: &mut dyn FnMut(String),
) -> Result<String, OpError> {
    let mut pod = pods.open_pod(reference)?;
    remove(pods, &mut pod, debug, warn)?;
    Ok(pod.uuid().to_string())
}

/// `rkt gc` settings.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// How long an exited pod stays in `exited-garbage` before it is deleted.
    pub grace_period: Duration,
    /// Age after which a prepared pod is garbage.
    pub expire_prepared: Duration,
    /// Only mark, do not delete.
    pub mark_only: bool,
    /// Pass `--debug` to the stage1 `gc` entrypoint.
    pub debug: bool,
}

/// What `gc` does, pod by pod, in order.
#[derive(Debug)]
pub enum GcEvent {
    /// The pod moved to a garbage state.
    Marked(String),
    /// An exited-garbage pod is kept: still within the grace period.
    WithinGrace(String),
    /// The pod is being deleted.
    Collecting(String),
    /// Deleting the pod failed.
    Failed(String, OpError),
    /// A warning from deleting the pod.
    Warning(String),
}

/// Garbage-collects pods: marks exited, aborted and expired prepared pods, then (unless
/// `mark_only`) deletes garbage and exited-garbage pods past the grace period. Returns
/// whether every deletion succeeded.
pub fn gc(pods: &PodsDir, opts: &GcOptions, on: &mut dyn FnMut(GcEvent)) -> Result<bool, OpError> {
    let now = SystemTime::now();
    let age = |t: Option<SystemTime>| {
        t.and_then(|t| now.duration_since(t).ok())
            .unwrap_or_default()
    };
    for mut p in pods.pods()? {
        let to = match p.state() {
            PodState::Exited => PodDirState::ExitedGarbage,
            PodState::AbortedPrepare => PodDirState::Garbage,
            PodState::Prepared if age(p.created()) >= opts.expire_prepared => PodDirState::Garbage,
            _ => continue,
        };
        if p.lock(false).is_err() {
            continue;
        }
        if p.dir_state().can_move_to(to) {
            on(GcEvent::Marked(p.uuid().to_string()));
            p.transition(to)?;
        }
        p.unlock();
    }
    if opts.mark_only {
        return Ok(true);
    }
    let mut all_ok = true;
    // Pods whose stage1 gc ran, locked, waiting for their unmounts and removal: done together
    // per batch (mountinfo read once per round for the whole batch, not per pod).
    let mut batch: Vec<(String, Pod)> = Vec::new();
    for mut p in pods.pods()? {
        let u = p.uuid().to_string();
        let due = match p.state() {
            PodState::ExitedGarbage => age(p.gc_marked()) >= opts.grace_period,
            PodState::Garbage => true,
            _ => false,
        };
        if !due {
            if p.state() == PodState::ExitedGarbage {
                on(GcEvent::WithinGrace(u));
            }
            continue;
        }
        on(GcEvent::Collecting(u.clone()));
        let mut warnings = Vec::new();
        let res = begin_remove(pods, &mut p, opts.debug, &mut |w| warnings.push(w));
        for w in warnings {
            on(GcEvent::Warning(w));
        }
        match res {
            Ok(()) => batch.push((u, p)),
            Err(e) => {
                on(GcEvent::Failed(u, e));
                all_ok = false;
            }
        }
        if batch.len() >= GC_BATCH {
            all_ok &= finish_removals(std::mem::take(&mut batch), on);
        }
    }
    all_ok &= finish_removals(batch, on);
    Ok(all_ok)
}

/// Pods `gc` unmounts and removes together (each holds its lock's fd meanwhile).
const GC_BATCH: usize = 64;

/// Unmounts and removes the batch's pod directories ([`layout::remove_pod_dirs`]); `false` if
/// any failed (reported through `on`).
fn finish_removals(batch: Vec<(String, Pod)>, on: &mut dyn FnMut(GcEvent)) -> bool {
    let dirs: Vec<_> = batch.iter().map(|(_, p)| p.path()).collect();
    let mut ok = true;
    for ((u, _pod), r) in batch.into_iter().zip(layout::remove_pod_dirs(&dirs)) {
        if let Err(e) = r {
            on(GcEvent::Failed(u, e.into()));
            ok = false;
        }
    }
    ok
}

/// Waits until the pod runs with a pid file, or has run, or `timeout` has passed since
/// `start` (never an error). `None` waits forever.
pub fn wait_ready(
    pods: &PodsDir,
    uuid: &str,
    start: Instant,
    timeout: Option<Duration>,
) -> Result<(), OpError> {
    loop {
        let p = pods.open_pod(uuid)?;
        let st = p.state();
        if st == PodState::Running && p.pid().is_some()
            || st.is_after_run()
            || timeout.is_some_and(|t| start.elapsed() >= t)
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(WAIT_POLL_MS));
    }
}

/// Waits until the pod is no longer embryo, preparing, prepared or running; fails with
/// [`OpError::Timeout`] once `timeout` has passed since `start` (`None` waits forever).
pub fn wait_exited(
    pods: &PodsDir,
    uuid: &str,
    start: Instant,
    timeout: Option<Duration>,
) -> Result<(), OpError> {
    loop {
        let st = pods.open_pod(uuid)?.state();
        if !matches!(
            st,
            PodState::Running | PodState::Preparing | PodState::Prepared | PodState::Embryo
        ) {
            return Ok(());
        }
        if timeout.is_some_and(|t| start.elapsed() >= t) {
            return Err(OpError::Timeout(uuid.to_string()));
        }
        std::thread::sleep(Duration::from_millis(WAIT_POLL_MS));
    }
}

/// Enters `app` of a running pod (the only app when `None`) through the stage1 `enter`
/// entrypoint, running `cmd` ([`DEFAULT_ENTER_CMD`] when empty). This process is replaced;
/// returns only on failure.
pub fn enter(pods: &PodsDir, reference: &str, app: Option<&str>, cmd: Vec<String>) -> OpError {
    match enter_args(pods, reference, app, cmd) {
        Ok((pod, entry, argv)) => stage1::exec_entrypoint(&pod.path(), &entry, &argv).into(),
        Err(e) => e,
    }
}

/// `rkt attach`: `--mode=list` returns the app's endpoints (`tty`, or its `stream` streams,
/// maybe none; from the pod manifest's stage2 annotations); any other mode execs the stage1's
/// `attach` entrypoint and returns only on failure. The pod must be running.
pub fn attach(
    pods: &PodsDir,
    reference: &str,
    app: Option<&str>,
    mode: &str,
    debug: bool,
) -> Result<Vec<&'static str>, OpError> {
    let pod = pods.open_pod(reference)?;
    require_running(&pod)?;
    let info = PodInfo::read(&pod);
    let app = pick_app(&pod, &info, app)?;
    let annotations = info
        .manifest
        .as_ref()
        .and_then(|pm| pm.apps.iter().find(|a| a.name.as_str() == app))
        .map(|a| a.annotations.clone())
        .unwrap_or_default();
    let stdio = super::args::stdio_of(
        annotations
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_str())),
    )
    .map_err(|e| UsageError(format!("app {app}: {e}")))?;
    if mode == "list" {
        return Ok(stdio.endpoints());
    }
    let attach = pod_abi::attach::Attach::from_mode(mode, &app, &stdio)
        .map_err(|e| UsageError(e.to_string()))?;
    let pid = wait_pid(&pod)?;
    let ep = Entrypoints::read(&pod.paths().stage1_manifest())?;
    let entry = stage1::image_root(pods.data_dir(), &pod.path())?
        .join(ep.entrypoint(pod_abi::stage1::ANN_ATTACH)?);
    let argv = pod_abi::stage1::AttachArgs {
        pid,
        app,
        attach,
        debug,
    }
    .to_argv();
    Err(stage1::exec_entrypoint(&pod.path(), &entry, &argv).into())
}

/// The app `app` names, or the pod's only app.
fn pick_app(pod: &Pod, info: &PodInfo, app: Option<&str>) -> Result<String, OpError> {
    match (app, info.apps.as_slice()) {
        (Some(n), apps) => {
            if !apps.iter().any(|x| x.name == n) {
                return Err(UsageError(format!("pod {} has no app {n:?}", pod.uuid())).into());
            }
            Ok(n.to_string())
        }
        (None, [one]) => Ok(one.name.clone()),
        (None, _) => {
            let names: Vec<_> = info.apps.iter().map(|x| x.name.as_str()).collect();
            Err(UsageError(format!(
                "pod has several apps ({}); choose one with --app",
                names.join(", ")
            ))
            .into())
        }
    }
}

/// The pod's pid, waiting briefly for the file a just-started pod writes.
fn wait_pid(pod: &Pod) -> Result<i32, OpError> {
    let mut pid = pod.pid();
    for _ in 0..ENTER_PID_POLLS {
        if pid.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(WAIT_POLL_MS));
        pid = pod.pid();
    }
    pid.ok_or_else(|| OpError::NoPidYet(pod.uuid().into()))
}

fn enter_args(
    pods: &PodsDir,
    reference: &str,
    app: Option<&str>,
    cmd: Vec<String>,
) -> Result<(Pod, std::path::PathBuf, Vec<String>), OpError> {
    let pod = pods.open_pod(reference)?;
    require_running(&pod)?;
    let info = PodInfo::read(&pod);
    let app = pick_app(&pod, &info, app)?;
    let pid = wait_pid(&pod)?;
    let cmd = if cmd.is_empty() {
        vec![DEFAULT_ENTER_CMD.to_string()]
    } else {
        cmd
    };
    let ep = Entrypoints::read(&pod.paths().stage1_manifest())?;
    let entry = stage1::image_root(pods.data_dir(), &pod.path())?
        .join(ep.entrypoint(pod_abi::stage1::ANN_ENTER)?);
    let argv = pod_abi::stage1::EnterArgs { pid, app, cmd }.to_argv();
    Ok((pod, entry, argv))
}
