//! PID 1's main loop: prepares every app's environment, starts all apps concurrently (each
//! after its pre-start handler), reaps every child, forwards a stop (SIGTERM/SIGINT or `stop`
//! on the control channel) to the apps and SIGKILLs what is left after the grace period, runs
//! post-stop handlers, and writes each app's status and setup-failure reason atomically.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use pod_abi::control::{ControlMsg, LineDecoder, Received};
use pod_abi::init::{READY_BYTE, START_BYTE};
use pod_abi::plan::{AppPlan, Plan};
use pod_abi::status::{SETUP_FAILED, SIGNAL_BASE};

use crate::launch::{self, LaunchSpec};
use crate::machine::{step, Action, Event, Facts, Phase};
use crate::mounts::{self, MountCtx};
use crate::sys::LinuxSys;
use crate::{cgroup, debug, info};
use app_confine::identity::Identity;
use app_confine::user;

mod apps;

/// Where the stage1 root keeps the status files (guest-init's view).
pub const STATUS_DIR: &str = pod_abi::paths::GUEST_STATUS_DIR;
/// Where the stage1 root keeps the setup-failure reasons (guest-init's view).
pub const ERRORS_DIR: &str = pod_abi::paths::GUEST_ERRORS_DIR;

/// Pod-wide settings of the run.
#[derive(Debug)]
pub struct Env {
    /// Bind source for each app's `/dev/console`.
    pub console: Option<PathBuf>,
    /// Directory with device nodes to bind when mknod is refused.
    pub host_dev: PathBuf,
    /// Device nodes an app makes must not open (the ns flavor; [`crate::mounts::MountCtx::nodev`]).
    pub nodev: bool,
    /// The procfs of the apps' own PID namespace (the ns flavor, [`crate::pidns`]), bound as each
    /// app's `/proc`; `None`: each app gets a procfs of guest-init's (the kvm flavor).
    pub apps_proc: Option<PathBuf>,
    /// fd for the apps' stdout (`None`: inherit).
    pub stdout: Option<RawFd>,
    /// fd for the apps' stderr (`None`: inherit).
    pub stderr: Option<RawFd>,
    /// Control channel (kvm: `pod_abi::init::Channel::Control`); carries
    /// `pod_abi::control` lines.
    pub control: Option<std::fs::File>,
    /// ns flavor: the launcher's socket (`pod_abi::init::InitArgs::start_fd`): every app's
    /// environment is set up, then [`READY_BYTE`] is sent and no app starts before
    /// [`START_BYTE`] comes back.
    pub start: Option<OwnedFd>,
    /// kvm flavor: the exec service's listener (`crate::exec_service`), served from just
    /// before the apps start.
    pub exec_listener: Option<OwnedFd>,
}

#[derive(Debug)]
struct AppRun {
    phase: Phase,
    pid: Option<Pid>,
    code: Option<i32>,
    spec: Option<LaunchSpec>,
    error: Option<String>,
    /// Got SIGTERM from a stop.
    sigterm: bool,
    /// Got SIGKILL at the end of the grace period.
    sigkill: bool,
    /// Its attachable streams (`crate::iomux`), made with its environment.
    streams: Streams,
}

/// An app's ends of its streams, kept by PID 1 until it launches the app, and the multiplexer
/// that holds the other ends (`crate::iomux`).
#[derive(Debug, Default)]
pub(crate) struct Streams {
    ends: Option<crate::iomux::AppEnds>,
    mux: Option<Pid>,
}

impl Streams {
    /// Drops the app's ends and tells the multiplexer to forward what is left and end its
    /// sessions; its pid, for the pod's end to wait for ([`Supervisor::wait_for_muxes`]).
    fn end(&mut self) -> Option<Pid> {
        self.ends = None;
        let mux = self.mux.take()?;
        let _ = kill(mux, Signal::SIGTERM);
        Some(mux)
    }
}

/// Tells the launcher that the apps' environments are set up ([`READY_BYTE`]; `enter` may now
/// confine a command to any app root) and waits for [`START_BYTE`], which it sends once the
/// pod's `pid` file exists. `false` if the launcher is gone (EOF or an error).
fn ready_then_wait_for_start(gate: &OwnedFd) -> bool {
    let mut sent = false;
    while !sent {
        match nix::unistd::write(gate, &[READY_BYTE]) {
            Ok(_) => sent = true,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    let mut b = [0u8; 1];
    loop {
        match nix::unistd::read(gate.as_raw_fd(), &mut b) {
            Err(nix::errno::Errno::EINTR) => {}
            Ok(1) => return b == [START_BYTE],
            _ => return false,
        }
    }
}

/// Makes app `app`'s streams (`pod_abi::attach`) with its environment, before any app starts
/// (so that an attacher may come as soon as the pod runs): `null` output streams get
/// `/dev/null`, `stream` and `tty` ones their multiplexer's pipes or terminal.
pub(crate) fn prepare_streams(app: &AppPlan, rootfs: &Path) -> Result<Streams, String> {
    use pod_abi::attach::IoMode;
    let stdio = &app.stdio;
    let null = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .map(OwnedFd::from)
            .map_err(|e| format!("open /dev/null: {e}"))
    };
    let mut st = Streams::default();
    if stdio.attachable() {
        let (ends, pid) = crate::pidns::outside(|| crate::iomux::start(&app.name, rootfs, stdio))
            .and_then(|r| r)
            .map_err(|e| format!("attachable streams: {e}"))?;
        st.ends = Some(ends);
        st.mux = Some(pid);
    }
    if stdio.stdout == IoMode::Null || stdio.stderr == IoMode::Null {
        let ends = st.ends.get_or_insert_with(Default::default);
        if stdio.stdout == IoMode::Null {
            ends.stdout = Some(null()?);
        }
        if stdio.stderr == IoMode::Null {
            ends.stderr = Some(null()?);
        }
    }
    Ok(st)
}

/// Runs the pod to completion and returns each app's exit code in plan order (a mutable pod's
/// apps as they are at the end).
pub fn run(plan: &Plan, env: Env, signals: SignalFd) -> Vec<Option<i32>> {
    let mut sup = Supervisor {
        plan: plan.clone(),
        requests: apps::Requests::default(),
        apps: Vec::new(),
        stop_deadline: None,
        killed: false,
        env,
        service: None,
        report_stop: false,
        grace_secs: plan.stop_grace_secs,
        ending_muxes: Vec::new(),
    };
    // A mutable pod's apps come only through `app add` requests: an app stage0 put in the plan
    // while the guest was still booting (the kvm flavor's pod runs from its VMM's start) waits
    // for its request, and for `app start`.
    if sup.plan.mutable {
        sup.plan.apps.clear();
    }
    let apps = sup.plan.apps.clone();
    for app in &apps {
        let (spec, streams, error) = match sup
            .prepare(app)
            .and_then(|spec| prepare_streams(app, &spec.rootfs).map(|st| (spec, st)))
        {
            Ok((spec, streams)) => (Some(spec), streams, None),
            Err(reason) => (None, Streams::default(), Some(reason)),
        };
        let code = error.as_ref().map(|_| SETUP_FAILED);
        sup.apps.push(AppRun {
            phase: Phase::Pending,
            pid: None,
            code,
            spec,
            error,
            sigterm: false,
            sigkill: false,
            streams,
        });
    }
    // No app may see the apps' reaper before it has confined itself (it did so meanwhile).
    if let Err(why) = crate::pidns::confined() {
        info!("{why}");
        for a in &mut sup.apps {
            a.spec = None;
            a.code = Some(SETUP_FAILED);
            a.error.get_or_insert_with(|| why.clone());
        }
    }
    pod_abi::trace::phase("guest-init", "prepared");
    if let Some(gate) = sup.env.start.take() {
        pod_abi::trace::phase("guest-init", "ready");
        if !ready_then_wait_for_start(&gate) {
            info!("the stage1 host side ended before starting the pod; no app starts");
            return sup.apps.iter().map(|_| None).collect();
        }
        pod_abi::trace::phase("guest-init", "started");
    }
    if let Some(l) = sup.env.exec_listener.take() {
        match crate::pidns::outside(|| crate::exec_service::start(l, &sup.plan))
            .map_err(std::io::Error::other)
            .and_then(|r| r)
        {
            Ok(s) => sup.service = Some(s),
            Err(e) => info!("exec service: {}", user::errno_text(&e)),
        }
    }
    for i in 0..sup.apps.len() {
        let ready = sup.apps.get(i).is_some_and(|a| a.spec.is_some());
        sup.fire(
            i,
            if ready {
                Event::Start
            } else {
                Event::SetupFailed
            },
        );
    }
    sup.event_loop(&signals);
    sup.wait_for_muxes();
    if sup.report_stop {
        if let Some(svc) = &sup.service {
            crate::exec_service::deliver_report(&svc.ctl, &sup.stop_report());
        }
    }
    sup.apps.iter().map(|a| a.code).collect()
}

struct Supervisor {
    plan: Plan,
    /// App requests of a mutable pod waiting for an app to end ([`apps`]).
    requests: apps::Requests,
    apps: Vec<AppRun>,
    stop_deadline: Option<Instant>,
    killed: bool,
    env: Env,
    /// The exec service, if it runs (kvm).
    service: Option<crate::exec_service::Service>,
    /// A stop came over the exec channel: its session waits for [`Supervisor::stop_report`].
    report_stop: bool,
    /// The grace period of the stop, in seconds.
    grace_secs: u32,
    /// Multiplexers told to end (their app ended): the pod waits for them, bounded by
    /// [`MUX_END_WAIT`], so that attachers get the app's last output and its end.
    ending_muxes: Vec<Pid>,
}

/// Time the pod's end waits for the multiplexers to flush their last frames.
const MUX_END_WAIT: Duration = Duration::from_secs(3);

impl Supervisor {
    fn app_plan(&self, i: usize) -> Option<&AppPlan> {
        self.plan.apps.get(i)
    }

    /// Builds the app's filesystem and resolves everything its processes need.
    fn prepare(&self, app: &AppPlan) -> Result<LaunchSpec, String> {
        if !app.ignored_isolators.is_empty() {
            info!(
                "app {}: ignoring unsupported isolators: {}",
                app.name,
                app.ignored_isolators.join(", ")
            );
        }
        let rootfs = pod_abi::paths::guest_app_rootfs(&app.name);
        if !rootfs.is_dir() {
            return Err(format!("app root {} is missing", rootfs.display()));
        }
        crate::etc_files::write(&self.plan, &rootfs)
            .map_err(|e| format!("/etc/resolv.conf or /etc/hosts: {e}"))?;
        let sys = LinuxSys;
        let ctx = MountCtx {
            console: self.env.console.clone(),
            host_dev: self.env.host_dev.clone(),
            nodev: self.env.nodev,
            proc_source: self.env.apps_proc.clone(),
        };
        let ops = mounts::plan_app_mounts(&sys, app, &rootfs, &ctx).map_err(|e| chain(&e))?;
        for op in &ops {
            debug!("app {}: {}", app.name, mounts::describe(op));
        }
        mounts::apply(&sys, &ops).map_err(|e| chain(&e))?;
        let identity = Identity::for_app(app, &rootfs)?;
        let layout = cgroup::Layout::detect(Path::new(cgroup::CGROUP_ROOT));
        let cg = cgroup::plan_app(app, &layout);
        for u in &cg.unenforced {
            info!(
                "app {}: no cgroup hierarchy available, not enforcing {u}",
                app.name
            );
        }
        cgroup::apply(&cg).map_err(|e| format!("cgroup setup: {e}"))?;
        Ok(LaunchSpec {
            rootfs,
            argv: app.exec.clone(),
            env: app.env.clone(),
            identity,
            workdir: app.working_directory.clone(),
            cgroup_join: cg.join,
            interactive: self.plan.interactive && self.plan.apps.len() == 1,
            stdin: None,
            ctty: false,
            stdout: self.env.stdout,
            stderr: self.env.stderr,
            private_users: self.plan.private_users,
            oom_score_adj: app.oom_score_adj,
        })
    }

    fn facts(&self, i: usize) -> Facts {
        let app = self.app_plan(i);
        Facts {
            pre_start: app.is_some_and(|a| a.pre_start.is_some()),
            post_stop: app.is_some_and(|a| a.post_stop.is_some()) && !self.killed,
            stopping: self.stop_deadline.is_some(),
        }
    }

    /// Feeds `ev` to app `i` and performs the resulting action (which may feed more events).
    fn fire(&mut self, i: usize, ev: Event) {
        let mut ev = ev;
        loop {
            let facts = self.facts(i);
            let Some(a) = self.apps.get_mut(i) else {
                return;
            };
            let Some((next, action)) = step(a.phase, ev, facts) else {
                debug!("app #{i}: ignoring event {ev:?} in phase {:?}", a.phase);
                return;
            };
            a.phase = next;
            a.pid = None;
            let argv = match action {
                Action::Finish => {
                    self.finish(i);
                    return;
                }
                Action::RunApp => self.app_plan(i).map(|p| p.exec.clone()),
                Action::RunPreStart => self.app_plan(i).and_then(|p| p.pre_start.clone()),
                Action::RunPostStop => self.app_plan(i).and_then(|p| p.post_stop.clone()),
            };
            match self.launch(i, action, argv.unwrap_or_default()) {
                Ok(()) => return,
                Err(()) => ev = Event::SetupFailed,
            }
        }
    }

    fn launch(&mut self, i: usize, action: Action, argv: Vec<String>) -> Result<(), ()> {
        let name = self.app_plan(i).map(|p| p.name.clone()).unwrap_or_default();
        let Some(a) = self.apps.get_mut(i) else {
            return Err(());
        };
        let Some(mut spec) = a.spec.clone() else {
            return Err(());
        };
        spec.argv = argv;
        // The app itself (not its handlers) gets its own ends of its streams.
        let ends = if action == Action::RunApp {
            a.streams.ends.take()
        } else {
            None
        };
        if let Some(e) = &ends {
            e.apply(&mut spec);
        }
        let what = match action {
            Action::RunPreStart => "pre-start handler",
            Action::RunPostStop => "post-stop handler",
            _ => "app",
        };
        debug!("app {name}: starting {what} {:?}", spec.argv);
        let spawned = launch::spawn(&spec);
        // The app has its ends (or failed): the multiplexer must see their end with the app's.
        drop(ends);
        match spawned {
            Ok(l) => {
                a.pid = Some(l.pid);
                if let Some((code, reason)) = l.failure {
                    let reason = if action == Action::RunApp {
                        reason
                    } else {
                        format!("{what}: {reason}")
                    };
                    info!("app {name}: {reason} (exit status {code})");
                    if action != Action::RunPostStop && a.error.is_none() {
                        a.error = Some(reason);
                    }
                }
                Ok(())
            }
            Err(e) => {
                let reason = format!("fork {what}: {}", e.desc());
                info!("app {name}: {reason}");
                if a.error.is_none() {
                    a.error = Some(reason);
                }
                if action != Action::RunPostStop {
                    a.code = Some(SETUP_FAILED);
                }
                Err(())
            }
        }
    }

    fn finish(&mut self, i: usize) {
        let name = self.app_plan(i).map(|p| p.name.clone()).unwrap_or_default();
        let Some(a) = self.apps.get_mut(i) else {
            return;
        };
        let code = *a.code.get_or_insert(SETUP_FAILED);
        // An app that never ran: its multiplexer ends too.
        self.ending_muxes.extend(a.streams.end());
        if let Some(err) = &a.error {
            info!("app {name}: setup failed: {err}");
            if let Err(e) =
                crate::status::write_atomic(Path::new(ERRORS_DIR), &name, &format!("{err}\n"))
            {
                info!("app {name}: cannot write error file: {e}");
            }
        }
        if code == 0 {
            debug!("app {name} exited with status 0");
        } else {
            info!("app {name} exited with status {code}");
        }
        if let Err(e) =
            crate::status::write_atomic(Path::new(STATUS_DIR), &name, &format!("{code}\n"))
        {
            info!("app {name}: cannot write status file: {e}");
        }
        pod_abi::trace::phase("guest-init", "status-written");
        self.app_finished(&name);
    }

    /// Waits (at most [`MUX_END_WAIT`]) for the multiplexers told to end; any still there
    /// die with the pod.
    fn wait_for_muxes(&mut self) {
        let deadline = Instant::now() + MUX_END_WAIT;
        while !self.ending_muxes.is_empty() && Instant::now() < deadline {
            self.ending_muxes.retain(|p| {
                matches!(
                    waitpid(*p, Some(WaitPidFlag::WNOHANG)),
                    Ok(WaitStatus::StillAlive)
                )
            });
            if !self.ending_muxes.is_empty() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    fn all_done(&self) -> bool {
        self.apps.iter().all(|a| a.phase == Phase::Done) && !self.waits_for_apps()
    }

    fn event_loop(&mut self, signals: &SignalFd) {
        let mut line = LineDecoder::default();
        while !self.all_done() {
            self.reap();
            if self.all_done() {
                break;
            }
            let timeout = match self.stop_deadline {
                Some(d) if !self.killed => {
                    let left = d.saturating_duration_since(Instant::now());
                    PollTimeout::try_from(left.as_millis().min(u128::from(u32::MAX >> 1)) as u32)
                        .unwrap_or(PollTimeout::MAX)
                }
                _ => PollTimeout::NONE,
            };
            let timeout = self.requests.clamp(timeout);
            let (sig_ready, ctl_ready, svc_ready) = {
                let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
                let mut svc_at = None;
                if let Some(c) = &self.env.control {
                    fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
                }
                if let Some(svc) = &self.service {
                    fds.push(PollFd::new(svc.ctl.as_fd(), PollFlags::POLLIN));
                    svc_at = Some(fds.len() - 1);
                }
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => {
                        info!("poll: {}", e.desc());
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                let ready =
                    |f: Option<&PollFd>| f.and_then(|f| f.revents()).is_some_and(|r| !r.is_empty());
                let ctl_at = self.env.control.as_ref().map(|_| 1);
                (
                    ready(fds.first()),
                    ready(ctl_at.and_then(|i| fds.get(i))),
                    ready(svc_at.and_then(|i| fds.get(i))),
                )
            };
            if sig_ready {
                while let Ok(Some(si)) = signals.read_signal() {
                    let sig = Signal::try_from(si.ssi_signo as i32);
                    match sig {
                        Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => {
                            info!(
                                "received {:?}, stopping the pod",
                                sig.unwrap_or(Signal::SIGTERM)
                            );
                            self.request_stop(None);
                        }
                        _ => {}
                    }
                }
            }
            if ctl_ready {
                self.read_control(&mut line);
            }
            if svc_ready {
                self.read_service();
            }
            if let Some(d) = self.stop_deadline {
                if !self.killed && Instant::now() >= d {
                    self.kill_all();
                }
            }
            self.kill_overdue_apps();
        }
    }

    fn read_control(&mut self, line: &mut LineDecoder) {
        let mut buf = [0u8; 64];
        let n = match self.env.control.as_mut().map(|c| c.read(&mut buf)) {
            Some(Ok(0)) | None => {
                // Hang-up: stop polling a dead channel.
                self.env.control = None;
                return;
            }
            Some(Ok(n)) => n,
            Some(Err(_)) => return,
        };
        for msg in line.feed(buf.get(..n).unwrap_or_default()) {
            match msg {
                Received::Msg(ControlMsg::Stop) => {
                    info!("stop requested on the control channel");
                    self.request_stop(None);
                }
                Received::Unknown(cmd) => info!("ignoring control command {cmd:?}"),
            }
        }
    }

    /// A stop request from an exec session (`crate::exec_service`).
    fn read_service(&mut self) {
        let Some(svc) = &self.service else {
            return;
        };
        match crate::exec_service::read_ctl_request(&svc.ctl) {
            Ok(Some(pod_abi::exec::Request::Stop { grace_secs })) => {
                self.report_stop = true;
                self.request_stop(grace_secs);
            }
            Ok(Some(req)) => self.app_request(req),
            Ok(None) => {}
            Err(()) => {
                info!("the exec service is gone");
                self.service = None;
            }
        }
    }

    /// What happened to each app during the stop.
    fn stop_report(&self) -> pod_abi::exec::StopReport {
        pod_abi::exec::StopReport {
            grace_secs: self.grace_secs,
            apps: self
                .plan
                .apps
                .iter()
                .zip(&self.apps)
                .map(|(p, a)| pod_abi::exec::StoppedApp {
                    name: p.name.clone(),
                    sigterm: a.sigterm,
                    sigkill: a.sigkill,
                    status: a.code,
                })
                .collect(),
        }
    }

    /// Starts a stop (SIGTERM, SIGKILL after the grace period: `grace_secs`, else the
    /// plan's); a second request kills at once.
    fn request_stop(&mut self, grace_secs: Option<u32>) {
        if self.stop_deadline.is_some() {
            // A second request (a second ^C, `rkt stop` twice) does not wait for the grace.
            if !self.killed {
                self.kill_all();
            }
            return;
        }
        self.grace_secs = grace_secs.unwrap_or(self.plan.stop_grace_secs);
        let grace = Duration::from_secs(u64::from(self.grace_secs));
        self.stop_deadline = Some(Instant::now() + grace);
        for a in &mut self.apps {
            if let (Some(pid), Phase::PreStart | Phase::Running) = (a.pid, a.phase) {
                a.sigterm = true;
                let _ = kill(pid, Signal::SIGTERM);
            }
        }
    }

    fn kill_all(&mut self) {
        self.killed = true;
        info!("killing the remaining app processes");
        for a in &mut self.apps {
            if let Some(pid) = a.pid {
                a.sigkill |= matches!(a.phase, Phase::PreStart | Phase::Running);
                let _ = kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }

    /// Reaps every exited child and feeds app exits into the state machine.
    fn reap(&mut self) {
        loop {
            let st = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(st) => st,
            };
            let (pid, code) = match st {
                WaitStatus::Exited(p, c) => (p, c),
                WaitStatus::Signaled(p, s, _) => (p, SIGNAL_BASE + s as i32),
                _ => continue,
            };
            pod_abi::trace::phase("guest-init", "reaped");
            let Some(i) = self.apps.iter().position(|a| a.pid == Some(pid)) else {
                if self.service.as_ref().is_some_and(|s| s.pid == pid) {
                    info!("the exec service ended with status {code}");
                }
                debug!("reaped pid {pid} with status {code}");
                continue;
            };
            let phase = self.apps.get(i).map(|a| a.phase);
            if let Some(a) = self.apps.get_mut(i) {
                if phase == Some(Phase::Running) {
                    self.ending_muxes.extend(a.streams.end());
                }
                match phase {
                    Some(Phase::Running) => a.code = Some(code),
                    // Stopped while its pre-start ran: the app never starts; it counts as
                    // terminated by the stop, not as a setup failure.
                    Some(Phase::PreStart) if self.stop_deadline.is_some() => {
                        a.code = Some(SIGNAL_BASE + Signal::SIGTERM as i32);
                    }
                    Some(Phase::PreStart) if code != 0 => {
                        a.code = Some(SETUP_FAILED);
                        if a.error.is_none() {
                            a.error = Some(format!("pre-start handler exited with status {code}"));
                        }
                    }
                    Some(Phase::PostStop) if code != 0 => {
                        let name = self
                            .plan
                            .apps
                            .get(i)
                            .map(|p| p.name.as_str())
                            .unwrap_or("?");
                        info!("app {name}: post-stop handler exited with status {code}");
                    }
                    _ => {}
                }
            }
            self.fire(
                i,
                if code == 0 {
                    Event::ExitOk
                } else {
                    Event::ExitFail
                },
            );
        }
    }
}

/// Renders an error with its causes: `a: b: c`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = match c.downcast_ref::<std::io::Error>() {
            Some(io) => user::errno_text(io),
            None => c.to_string(),
        };
        s.push_str(": ");
        s.push_str(&t);
        cur = c.source();
    }
    s
}

/// Blocks the signals PID 1 handles through a signalfd and returns it.
pub fn signal_fd() -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        mask.add(s);
    }
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}
