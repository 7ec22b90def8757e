//! A mutable pod's app requests (`pod_abi::exec::Request::{AppAdd, AppStart, AppStop, AppRm}`,
//! relayed by an exec session over the stop channel): apps join, start, stop and leave the
//! running pod. A started app goes through the same state machine, launch path, confinement
//! and status files as the apps of `rkt run`; only its arrival and departure are new.
//!
//! - add: the host has put the app's tree at `/opt/stage2/<app>/rootfs` and its entry in
//!   `/rkt/plan.json`; the plan is read again and the app's environment set up
//!   ([`Supervisor::prepare`]), not started.
//! - start: `Event::Start`; `/rkt/started/<app>` records when (Unix nanoseconds), and
//!   `/rkt/finished/<app>` when it is done.
//! - stop: SIGTERM to a running app, SIGKILL to its process group after the grace period;
//!   answered once it reached `Done` (post-stop handler run, status written).
//! - rm: a stopped (or never started) app's mounts in the pod are detached, its status files
//!   removed, and it leaves the supervisor.
//!
//! The answer is a `pod_abi::exec::AppReply` on the same channel.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::PollTimeout;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pod_abi::exec::{AppReply, Request};
use pod_abi::plan::Plan;
use pod_abi::status::SETUP_FAILED;

use super::{AppRun, Supervisor, ERRORS_DIR, STATUS_DIR};
use crate::machine::{Event, Phase};
use crate::{debug, info};

/// Where guest-init records when an added app was started (guest-init's view).
pub const STARTED_DIR: &str = pod_abi::paths::GUEST_STARTED_DIR;
/// Where guest-init records when an app of a mutable pod finished (guest-init's view).
pub const FINISHED_DIR: &str = pod_abi::paths::GUEST_FINISHED_DIR;

/// Unix time now, in nanoseconds, as the marks hold it.
fn now_nanos() -> String {
    format!("{}\n", pod_abi::time::now_nanos())
}

/// App stops waiting for their app to end.
#[derive(Debug, Default)]
pub struct Requests {
    stops: Vec<PendingStop>,
}

#[derive(Debug)]
struct PendingStop {
    app: String,
    /// SIGKILL is due then.
    deadline: Instant,
    killed: bool,
}

impl Requests {
    /// `t` shortened to the next app-stop deadline.
    pub fn clamp(&self, t: PollTimeout) -> PollTimeout {
        let now = Instant::now();
        let next = self
            .stops
            .iter()
            .filter(|p| !p.killed)
            .map(|p| p.deadline.saturating_duration_since(now))
            .min();
        let Some(left) = next else {
            return t;
        };
        let ms = u32::try_from(left.as_millis().min(u128::from(u32::MAX >> 1))).unwrap_or(0);
        let ours = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        if t == PollTimeout::NONE {
            ours
        } else {
            t.min(ours)
        }
    }
}

impl Supervisor {
    /// A mutable pod that is not stopping waits for app requests even with no app running.
    pub(super) fn waits_for_apps(&self) -> bool {
        self.plan.mutable && self.stop_deadline.is_none()
    }

    fn index_of(&self, app: &str) -> Option<usize> {
        self.plan.apps.iter().position(|a| a.name == app)
    }

    /// Handles an app request; answers at once, or (a stop of a running app) once it ended.
    pub(super) fn app_request(&mut self, req: Request) {
        let Some(app) = req.app_op().map(str::to_string) else {
            return;
        };
        let res = if !self.plan.mutable {
            Err("the pod is not mutable (start it with rkt app sandbox)".to_string())
        } else if self.stop_deadline.is_some() {
            Err("the pod is stopping".to_string())
        } else {
            match req {
                Request::AppAdd { .. } => self.add(&app),
                Request::AppStart { .. } => self.start_app(&app),
                Request::AppStop { grace_secs, .. } => match self.stop_app(&app, grace_secs) {
                    // Answered when the app is done.
                    Ok(true) => return,
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                },
                Request::AppRm { .. } => self.remove(&app),
                Request::Exec { .. } | Request::Stop { .. } | Request::Attach { .. } => return,
            }
        };
        if let Err(e) = &res {
            info!("app {app}: {e}");
        }
        self.reply(&app, res.err());
    }

    fn reply(&self, app: &str, error: Option<String>) {
        if let Some(svc) = &self.service {
            let r = AppReply {
                app: app.to_string(),
                error,
            };
            crate::exec_service::send_app_reply(&svc.ctl, &r);
        }
    }

    fn add(&mut self, app: &str) -> Result<(), String> {
        if self.index_of(app).is_some() {
            return Err(format!("app {app:?} is already in the pod"));
        }
        let entry = read_plan_entry(app)?;
        let spec = self.prepare(&entry)?;
        let streams = super::prepare_streams(&entry, &spec.rootfs)?;
        // A status of an earlier app of that name must not be taken for this one's.
        for dir in [STATUS_DIR, ERRORS_DIR, STARTED_DIR, FINISHED_DIR] {
            let _ = std::fs::remove_file(Path::new(dir).join(app));
        }
        self.plan.apps.push(entry);
        self.apps.push(AppRun {
            phase: Phase::Pending,
            pid: None,
            code: None,
            spec: Some(spec),
            error: None,
            sigterm: false,
            sigkill: false,
            streams,
        });
        debug!("app {app} added");
        Ok(())
    }

    fn start_app(&mut self, app: &str) -> Result<(), String> {
        let i = self
            .index_of(app)
            .ok_or_else(|| format!("no app {app:?} in the pod"))?;
        match self.apps.get(i).map(|a| a.phase) {
            Some(Phase::Pending) => {}
            Some(Phase::Done) => {
                return Err(format!(
                    "app {app:?} has exited; remove it and add it again"
                ))
            }
            _ => return Err(format!("app {app:?} is already running")),
        }
        if let Err(e) = crate::status::write_atomic(Path::new(STARTED_DIR), app, &now_nanos()) {
            info!("app {app}: cannot record its start: {e}");
        }
        self.fire(i, Event::Start);
        match self.apps.get(i) {
            Some(a) if a.phase == Phase::Done && a.code == Some(SETUP_FAILED) => Err(a
                .error
                .clone()
                .unwrap_or_else(|| "the app could not be started".into())),
            _ => Ok(()),
        }
    }

    /// `Ok(true)`: the app got SIGTERM and the answer waits for its end.
    fn stop_app(&mut self, app: &str, grace_secs: Option<u32>) -> Result<bool, String> {
        let i = self
            .index_of(app)
            .ok_or_else(|| format!("no app {app:?} in the pod"))?;
        let grace = Duration::from_secs(u64::from(grace_secs.unwrap_or(self.plan.stop_grace_secs)));
        let Some(a) = self.apps.get_mut(i) else {
            return Err(format!("no app {app:?} in the pod"));
        };
        match (a.phase, a.pid) {
            (Phase::PreStart | Phase::Running, Some(pid)) => {
                a.sigterm = true;
                let _ = kill(pid, Signal::SIGTERM);
            }
            // Its post-stop handler runs: the answer comes when it is done.
            (Phase::PostStop, _) => {}
            // Never started, or already done: nothing to stop.
            _ => return Ok(false),
        }
        self.requests.stops.push(PendingStop {
            app: app.to_string(),
            deadline: Instant::now() + grace,
            killed: false,
        });
        Ok(true)
    }

    /// SIGKILL to apps whose stop grace period is over.
    pub(super) fn kill_overdue_apps(&mut self) {
        let now = Instant::now();
        let due: Vec<String> = self
            .requests
            .stops
            .iter_mut()
            .filter(|p| !p.killed && now >= p.deadline)
            .map(|p| {
                p.killed = true;
                p.app.clone()
            })
            .collect();
        for app in due {
            let Some(i) = self.index_of(&app) else {
                continue;
            };
            if let Some(a) = self.apps.get_mut(i) {
                if let Some(pid) = a.pid {
                    info!("app {app}: killing it after the grace period");
                    a.sigkill |= matches!(a.phase, Phase::PreStart | Phase::Running);
                    let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
                    let _ = kill(pid, Signal::SIGKILL);
                }
            }
        }
    }

    /// App `app` is done: answers the stops waiting for it.
    pub(super) fn app_finished(&mut self, app: &str) {
        if self.plan.mutable {
            if let Err(e) = crate::status::write_atomic(Path::new(FINISHED_DIR), app, &now_nanos())
            {
                info!("app {app}: cannot record its end: {e}");
            }
        }
        let before = self.requests.stops.len();
        self.requests.stops.retain(|p| p.app != app);
        if self.requests.stops.len() != before {
            self.reply(app, None);
        }
    }

    fn remove(&mut self, app: &str) -> Result<(), String> {
        let i = self
            .index_of(app)
            .ok_or_else(|| format!("no app {app:?} in the pod"))?;
        if !matches!(
            self.apps.get(i).map(|a| a.phase),
            Some(Phase::Pending | Phase::Done)
        ) {
            return Err(format!("app {app:?} is running; stop it first"));
        }
        let root = pod_abi::paths::guest_app_rootfs(app);
        detach_mounts_under(root.parent().unwrap_or(&root));
        for dir in [STATUS_DIR, ERRORS_DIR, STARTED_DIR, FINISHED_DIR] {
            let _ = std::fs::remove_file(Path::new(dir).join(app));
        }
        if let Some(p) = self.plan.apps.get(i) {
            let layout = crate::cgroup::Layout::detect(Path::new(crate::cgroup::CGROUP_ROOT));
            for d in crate::cgroup::plan_app(p, &layout).dirs {
                let _ = std::fs::remove_dir(d);
            }
        }
        self.plan.apps.remove(i);
        self.apps.remove(i);
        debug!("app {app} removed");
        Ok(())
    }
}

/// How long `add` looks for the app in a plan file it may see late: the kvm flavor's virtio-fs
/// share lets the guest cache a name for a few seconds (`DEFAULT_CACHE_TIMEOUT_SECS`).
const PLAN_WAIT: Duration = Duration::from_secs(8);

/// The app's entry in `/rkt/plan.json`, which the host has just rewritten.
fn read_plan_entry(app: &str) -> Result<pod_abi::plan::AppPlan, String> {
    let t0 = Instant::now();
    let plan_path = Path::new(pod_abi::paths::GUEST_PLAN);
    let on_fuse = nix::sys::statfs::statfs(plan_path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::FUSE_SUPER_MAGIC);
    loop {
        if on_fuse {
            // The share's entry cache may still name the replaced file, and it expires on
            // timer ticks, which a guest under nested TCG barely gets (docs/nested-kvm.md,
            // "L2 timers"): drop the unused dentries so the lookup asks the host again.
            if let Err(e) = std::fs::write("/proc/sys/vm/drop_caches", "2") {
                debug!("drop_caches: {e}");
            }
        }
        let plan = Plan::read(plan_path).map_err(|e| super::chain(&e))?;
        if let Some(a) = plan.apps.into_iter().find(|a| a.name == app) {
            return Ok(a);
        }
        if t0.elapsed() >= PLAN_WAIT {
            return Err(format!("app {app:?} is not in the launch plan"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Detaches every mount at or under `dir` in guest-init's mount namespace, deepest first.
fn detach_mounts_under(dir: &Path) {
    use nix::mount::{umount2, MntFlags};
    for _ in 0..16 {
        let ms = match pod_abi::mountinfo::MountTable::read() {
            Ok(t) => t.points_under(dir),
            Err(e) => {
                debug!("read mountinfo: {e}");
                return;
            }
        };
        if ms.is_empty() {
            return;
        }
        for m in ms {
            if let Err(e) = umount2(&m, MntFlags::MNT_DETACH) {
                debug!("umount {}: {}", m.display(), e.desc());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamp_takes_the_nearest_deadline() {
        let mut r = Requests::default();
        assert_eq!(r.clamp(PollTimeout::NONE), PollTimeout::NONE);
        r.stops.push(PendingStop {
            app: "a".into(),
            deadline: Instant::now() + Duration::from_secs(5),
            killed: false,
        });
        let t = r.clamp(PollTimeout::NONE);
        assert!(t != PollTimeout::NONE && t <= PollTimeout::from(5000u16));
        assert_eq!(r.clamp(PollTimeout::ZERO), PollTimeout::ZERO);
    }
}
