//! guest-init: PID 1 of a pod, for both stage1 flavors (arguments: `pod_abi::init::InitArgs`).
//!
//! It reads the launch plan (`pod_abi::paths::GUEST_PLAN`), builds each app's execution
//! environment under `/opt/stage2/<app>/rootfs`, runs the apps (see `supervisor`), writes
//! their statuses (`GUEST_STATUS_DIR`) and ends: `exit(pod exit code)` in the ns flavor,
//! `sync` and `reboot(RB_AUTOBOOT)` in the kvm flavor. A failure of guest-init itself is printed on the
//! console and written to `GUEST_FAILURE` before it ends, so its reason is never lost; the
//! stage1 host side records it as the pod's failure.
//!
//! A library as well as the `/init` binary: stage1-ns's child runs [`init`] in its own process
//! instead of executing `/init` (one exec and libc start-up fewer on every pod start).

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cgroup;
mod etc_files;
mod exec_service;
mod iomux;
mod launch;
mod log;
mod machine;
mod mounts;
mod net;
mod pidns;
mod readahead;
mod snapshot_stage;
mod status;
mod supervisor;
mod sys;

pub use pidns::{reaper_main, REAPER_ARGV0};

use std::os::fd::{IntoRawFd, RawFd};
use std::path::{Path, PathBuf};

use app_confine::paths;
use app_confine::user;
use nix::mount::{mount, MsFlags};
use pod_abi::init::{Channel, InitArgs, INIT_USAGE};
use pod_abi::paths::{GUEST_FAILURE, GUEST_PLAN};
use pod_abi::plan::{Flavor, Plan};

/// The apps' stdout (and an interactive app's terminal) in the kvm flavor.
const HVC_STDOUT: &str = Channel::AppStdout.guest_device();
/// The apps' stderr in the kvm flavor.
const HVC_STDERR: &str = Channel::AppStderr.guest_device();

/// The `/init` binary: parses the arguments (`InitArgs`; in the snapshot initramfs, after the
/// snapshot stage, those the host wrote into the pod's share), then [`init`].
pub fn main() -> ! {
    // Anywhere among the arguments: the kernel passes init the command-line words it does not
    // know (without `=`) before those after `--`.
    let snapshot_stage = std::env::args()
        .skip(1)
        .any(|a| a == pod_abi::snapshot::INIT_STAGE_ARG);
    let words: Vec<String> = if snapshot_stage {
        // The snapshot initramfs (snapshot_stage): on success the pod's root is `/` and the
        // pod's arguments come from the share. PID 1 exiting panics the kernel, which ends the
        // VM with the reason on the console.
        match snapshot_stage::run() {
            Ok(words) => words,
            Err(why) => {
                info!("fatal: snapshot stage: {why}");
                std::process::exit(pod_abi::exit::STAGE1_FAILED);
            }
        }
    } else {
        std::env::args().skip(1).collect()
    };
    let args = match InitArgs::parse(words) {
        Ok(a) => a,
        Err(e) => {
            info!("{e}; usage: {INIT_USAGE}");
            // Without a flavor we do not know how to end; PID 1 of a VM panics on exit,
            // which reboots it (panic=1).
            std::process::exit(pod_abi::exit::USAGE);
        }
    };
    init(args)
}

/// guest-init proper, as PID 1 of the pod: never returns (the process exits, or the VM
/// reboots). A caller in the same process (stage1-ns's child) hands over everything: every fd
/// but stdio and `args`' sockets is closed here, and nothing of the caller runs again.
pub fn init(args: InitArgs) -> ! {
    if args.trace_phases {
        pod_abi::trace::enable();
    }
    pod_abi::trace::phase("guest-init", "main");
    log::set_debug(args.debug);
    if args.flavor == Flavor::Kvm {
        ensure_stdio();
        console_output_unprocessed();
    }
    // The launcher's sockets (ns: `--start-fd`, and `--exec-fd` for a mutable pod) are the
    // only inherited fds kept (close-on-exec).
    let keep: Vec<RawFd> = args.start_fd.into_iter().chain(args.exec_fd).collect();
    app_confine::exec::close_inherited_fds_except(&keep);
    let owned = |fd: RawFd| {
        // SAFETY: the launcher passed this fd for guest-init alone; it is owned from here on.
        unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    };
    let start = args.start_fd.map(owned);
    let exec_listener = args
        .exec_fd
        .filter(|fd| Some(*fd) != args.start_fd)
        .map(owned);
    let code = match run(&args, start, exec_listener) {
        Ok(code) => code,
        Err(reason) => {
            info!("fatal: {reason}");
            let _ = status::write_file(Path::new(GUEST_FAILURE), &format!("{reason}\n"));
            pod_abi::exit::STAGE1_FAILED
        }
    };
    finish(args.flavor, code)
}

fn run(
    args: &InitArgs,
    start: Option<std::os::fd::OwnedFd>,
    exec_listener: Option<std::os::fd::OwnedFd>,
) -> Result<i32, String> {
    // Block the signals first so that a stop arriving during setup is not lost.
    let signals = supervisor::signal_fd().map_err(|e| format!("signalfd: {}", e.desc()))?;
    let env = match args.flavor {
        Flavor::Kvm => kvm_setup(args.control_path()),
        Flavor::Ns => ns_setup(start, exec_listener),
    }?;
    pod_abi::trace::phase("guest-init", "setup");
    net::setup(args.flavor);
    pod_abi::trace::phase("guest-init", "net");
    let mut plan = Plan::read(Path::new(GUEST_PLAN)).map_err(|e| supervisor::chain(&e))?;
    pod_abi::trace::phase("guest-init", "plan");
    let mut env = env;
    if args.flavor == Flavor::Ns && app_confine::pidns::apps_apart(&plan) {
        env.apps_proc = Some(pidns::split()?);
        pod_abi::trace::phase("guest-init", "apps-pid-namespace");
    }
    if let Some(url) = &args.metadata_url {
        pod_abi::plan::set_metadata_url(&mut plan, url);
    }
    if plan.debug {
        log::set_debug(true);
    }
    // Space for the statuses, however full the apps make the pod's file system.
    if let Err(e) = status::reserve(Path::new(pod_abi::paths::GUEST_RKT_DIR)) {
        info!("cannot reserve space for statuses: {e}");
    }
    if args.flavor == Flavor::Kvm && plan.private_users.is_some() {
        // App root is not root of the guest's network namespace (the guest's initial user
        // namespace owns it): let every ID bind ports below 1024, as stage1-ns does per pod.
        let knob = "/proc/sys/net/ipv4/ip_unprivileged_port_start";
        if let Err(e) = std::fs::write(knob, b"0") {
            info!("write {knob}: {e}");
        }
    }
    if args.flavor == Flavor::Kvm && !plan.hostname.is_empty() {
        if let Err(e) = nix::unistd::sethostname(&plan.hostname) {
            info!("sethostname {}: {}", plan.hostname, e.desc());
        }
    }
    debug!("pod {} with {} app(s)", plan.uuid, plan.apps.len());
    if args.flavor == Flavor::Kvm && plan.interactive && plan.apps.len() == 1 {
        attach_interactive_console(&mut env);
    }
    let codes = supervisor::run(&plan, env, signals);
    pod_abi::trace::phase("guest-init", "apps-exited");
    if args.flavor == Flavor::Ns {
        sync_pod_filesystems(&plan);
    }
    Ok(pod_abi::status::pod_exit_code(&codes))
}

fn mount_fs(
    src: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    let _ = std::fs::create_dir_all(target);
    match mount(Some(src), target, Some(fstype), flags, data) {
        Ok(()) | Err(nix::errno::Errno::EBUSY) => Ok(()),
        Err(e) => Err(format!("mount {fstype} on {target}: {}", e.desc())),
    }
}

/// The pod console to bind into apps: stage1-ns binds the pod's terminal (if it has one) at
/// `/dev/console` of the stage1 root; a bind source must be in the pod's mount namespace.
fn console_in_root() -> Option<PathBuf> {
    let p = Path::new("/dev/console");
    p.exists().then(|| p.to_path_buf())
}

/// ns flavor: stage1-ns already pivoted into the stage1 root inside new namespaces; mount a
/// procfs of the pod's PID namespace for guest-init's own use and forget the environment
/// stage1-ns had from the host. (The apps' own PID namespace, where the plan asks for it, is
/// made once the plan is read: [`pidns::split`].)
fn ns_setup(
    start: Option<std::os::fd::OwnedFd>,
    exec_listener: Option<std::os::fd::OwnedFd>,
) -> Result<supervisor::Env, String> {
    let nse = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", "/proc", "proc", nse, None)?;
    // guest-init is a fork of stage1-ns, which the host's rkt started with the operator's
    // environment: none of it goes on to any process of the pod.
    app_confine::exec::forget_environment()
        .map_err(|e| format!("forget the launcher's environment: {e}"))?;
    Ok(supervisor::Env {
        console: console_in_root(),
        host_dev: PathBuf::from("/dev"),
        nodev: true,
        apps_proc: None,
        stdout: None,
        stderr: None,
        control: None,
        start,
        exec_listener,
    })
}

/// Opens a virtio console for app output in raw mode: no output processing (ONLCR would turn
/// every `\n` into `\r\n`), so the host receives the apps' bytes unchanged.
fn open_rw(path: &str) -> Option<RawFd> {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .ok()?;
    if let Ok(mut t) = tcgetattr(&f) {
        cfmakeraw(&mut t);
        let _ = tcsetattr(&f, SetArg::TCSANOW, &t);
    }
    Some(f.into_raw_fd())
}

/// kvm flavor, interactive pod: the app's terminal is `hvc0` (the host copies its own terminal
/// to it), cooked again (it was opened raw for plain output), as stdin (PID 1's fd 0, which the
/// app inherits and makes its controlling terminal), stdout and stderr.
fn attach_interactive_console(env: &mut supervisor::Env) {
    use nix::sys::termios::{tcgetattr, tcsetattr, InputFlags, LocalFlags, OutputFlags, SetArg};
    let Some(fd) = open_rw(HVC_STDOUT) else {
        info!("interactive: no {HVC_STDOUT}; the app gets the console");
        return;
    };
    // SAFETY: `fd` was just opened and stays open for PID 1's life.
    let tty = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    if let Ok(mut t) = tcgetattr(tty) {
        t.input_flags |= InputFlags::ICRNL | InputFlags::IXON;
        t.output_flags |= OutputFlags::OPOST | OutputFlags::ONLCR;
        t.local_flags |= LocalFlags::ISIG
            | LocalFlags::ICANON
            | LocalFlags::ECHO
            | LocalFlags::ECHOE
            | LocalFlags::ECHOK
            | LocalFlags::IEXTEN;
        let _ = tcsetattr(tty, SetArg::TCSANOW, &t);
    }
    if let Err(e) = nix::unistd::dup2(fd, 0) {
        info!("interactive: dup2 {HVC_STDOUT} to stdin: {}", e.desc());
    }
    env.stdout = Some(fd);
    env.stderr = Some(fd);
}

/// Waits until the kernel's CRNG is ready, so no app's first `getrandom(2)` waits for it: a
/// blocking `getrandom` of one byte, which returns at once when it is. A KVM guest's CRNG is
/// made ready during the boot by the entropy device (virtio-rng: the kernel's hwrng thread
/// credits the host's bytes) or by RDRAND; this is the guarantee that holds whatever the order
/// of the boot's threads. Without either it would wait for the kernel's jitter entropy (2.5 s
/// of guest time under the nested harness).
fn wait_for_crng() -> Result<(), String> {
    let mut byte = [0u8; 1];
    loop {
        // SAFETY: getrandom writes at most `byte.len()` bytes into `byte`.
        let n = unsafe { libc::getrandom(byte.as_mut_ptr().cast(), byte.len(), 0) };
        if n == 1 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(format!("waiting for the kernel's RNG: getrandom: {e}"));
        }
    }
}

/// kvm flavor: the root is the virtio-fs share; mount what PID 1 of a VM needs, find the
/// consoles and the control channel, and mount the guest's cgroup hierarchies.
fn kvm_setup(control_path: &str) -> Result<supervisor::Env, String> {
    let nse = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", "/proc", "proc", nse, None)?;
    let soft = |r: Result<(), String>| {
        if let Err(e) = r {
            info!("{e}");
        }
    };
    soft(mount_fs("sysfs", "/sys", "sysfs", nse, None));
    soft(readahead::set(
        Path::new("/sys"),
        Path::new("/"),
        readahead::SHARE_READAHEAD_KB,
    ));
    soft(mount_fs(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=755"),
    ));
    soft(wait_for_crng());
    soft(mount_fs(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("ptmxmode=0666,mode=0620"),
    ));
    soft(mount_fs(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    ));
    soft(mount_fs(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    ));
    if let Err(e) = cgroup::mount_in_guest() {
        info!("cgroups unavailable in the guest: {}", user::errno_text(&e));
    }
    let console = Path::new("/dev/console")
        .exists()
        .then(|| PathBuf::from("/dev/console"));
    let stdout = open_rw(HVC_STDOUT);
    let stderr = open_rw(HVC_STDERR).or(stdout);
    trace_to_console(stderr);
    let control = open_control(control_path);
    // Bound before the apps start, so an enter right after the pod starts finds it.
    let exec_listener = match exec_service::listen_vsock(pod_abi::vsock::EXEC_PORT) {
        Ok(l) => Some(l),
        Err(e) => {
            // Not on the console by default: a VM without a vsock device is not an error, and
            // `rkt enter` says that it cannot reach the service.
            debug!(
                "no exec service (rkt enter, stop over vsock): {}",
                user::errno_text(&e)
            );
            None
        }
    };
    Ok(supervisor::Env {
        apps_proc: None,
        console,
        host_dev: PathBuf::from("/dev"),
        nodev: false,
        stdout,
        stderr,
        control,
        start: None,
        exec_listener,
    })
}

/// kvm flavor: phase lines (`RKT_TRACE_PHASES`) go on to the apps' stderr console, a copy of
/// `stderr` of its own, rather than the serial console, where each line cost ~80 VM exits
/// (`pod_abi::trace`). Nothing without tracing or without the console.
fn trace_to_console(stderr: Option<RawFd>) {
    let Some(fd) = stderr.filter(|_| pod_abi::trace::enabled()) else {
        return;
    };
    match nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)) {
        // Kept open for the process's life; close-on-exec, so no app inherits it.
        Ok(copy) => pod_abi::trace::set_output(copy),
        Err(e) => debug!("phase lines stay on the console: dup: {}", e.desc()),
    }
}

/// Opens the control channel (a serial port, or a FIFO in tests) raw and non-blocking.
fn open_control(path: &str) -> Option<std::fs::File> {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    if let Ok(mut t) = tcgetattr(&f) {
        cfmakeraw(&mut t);
        let _ = tcsetattr(&f, SetArg::TCSANOW, &t);
    }
    Some(f)
}

/// kvm flavor: if the kernel could not open a console for PID 1 (no `/dev/console` on the
/// root), mount devtmpfs and open it as fds 0-2, so that no message of guest-init is lost and
/// no later fd lands on 0-2 by accident.
fn ensure_stdio() {
    let closed = |fd| nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err();
    if !(0..=2).any(closed) {
        return;
    }
    if !Path::new("/dev/console").exists() {
        let _ = mount_fs(
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MsFlags::MS_NOSUID,
            Some("mode=755"),
        );
    }
    let Ok(fd) = nix::fcntl::open(
        "/dev/console",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    ) else {
        return;
    };
    for target in 0..=2 {
        if closed(target) && target != fd {
            let _ = nix::unistd::dup2(fd, target);
        }
    }
    if fd > 2 {
        let _ = nix::unistd::close(fd);
    }
}

/// kvm flavor: guest-init's own messages go to `/dev/console` (COM1), a terminal whose
/// output processing (OPOST with ONLCR) would turn every `\n` into `\r\n` on the host's stderr;
/// switched off so that the host receives guest-init's lines byte for byte.
fn console_output_unprocessed() {
    use nix::sys::termios::{tcgetattr, tcsetattr, OutputFlags, SetArg};
    // SAFETY: fd 2 stays open for PID 1's life (ensure_stdio).
    let err = unsafe { std::os::fd::BorrowedFd::borrow_raw(2) };
    if let Ok(mut t) = tcgetattr(err) {
        t.output_flags.remove(OutputFlags::OPOST);
        let _ = tcsetattr(err, SetArg::TCSANOW, &t);
    }
}

/// Set once the ns flavor has synced the pod's own filesystems.
static POD_SYNCED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// ns flavor: `syncfs` on every filesystem the pod wrote to (the stage1 root, each app root and
/// volume) instead of a global `sync`, which on a shared host waits for everyone's dirty data.
fn sync_pod_filesystems(plan: &Plan) {
    use std::os::unix::fs::MetadataExt;
    let mut paths = vec![PathBuf::from("/")];
    for app in &plan.apps {
        let root = pod_abi::paths::guest_app_rootfs(&app.name);
        for m in &app.mounts {
            if let Ok(p) = paths::secure_join(&root, &m.target) {
                paths.push(p);
            }
        }
        paths.push(root);
    }
    let mut seen = Vec::new();
    for p in paths {
        let Ok(f) = std::fs::File::open(&p) else {
            continue;
        };
        let Ok(md) = f.metadata() else { continue };
        if seen.contains(&md.dev()) {
            continue;
        }
        seen.push(md.dev());
        // SAFETY: syncfs on an fd owned by `f` for the duration of the call.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) } != 0 {
            debug!(
                "syncfs {}: {}",
                p.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    POD_SYNCED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// kvm flavor, once synced: ends the VM through the i8042 reset line (`pod_abi::reset`), as the
/// kernel's `reboot=k` would but without its reboot path (~40 ms of a pod's end under nested
/// emulation, docs/guest-init.md). Returns only if the port cannot be reached; the caller then
/// reboots.
#[cfg(target_arch = "x86_64")]
fn pulse_reset_line() {
    use pod_abi::reset::{COMMAND, PORT};
    match pod_abi::snapshot_port::Ports::open(PORT, 1) {
        Ok(p) => {
            if let Err(e) = p.outb(PORT, COMMAND) {
                debug!("reset line: {e}");
            }
        }
        Err(e) => debug!("reset line: {e}"),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn pulse_reset_line() {}

fn finish(flavor: Flavor, code: i32) -> ! {
    if flavor == Flavor::Kvm || !POD_SYNCED.load(std::sync::atomic::Ordering::Relaxed) {
        nix::unistd::sync();
    }
    pod_abi::trace::phase("guest-init", "synced");
    if flavor == Flavor::Kvm {
        pulse_reset_line();
        let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
        info!("reboot failed");
    }
    pod_abi::trace::phase("guest-init", "exit");
    std::process::exit(code)
}
