//! The `run` entrypoint: one pod, one VM, this process (whose pid is the pod's `pid`).
//!
//! [`run`] is a list of named steps, and their order matters (see [`super::jail`] and
//! [`crate::confine`]): `prepare_process` blocks the stop signals, enters a private mount
//! namespace and starts the confinement (no new privileges, bounding set, SIGSYS handler) while
//! single-threaded; `read_plan` reads the plan and writes `pid`; `choose_size` sizes the VM;
//! `join_pod_cgroup` moves the VMM into the pod's host cgroups, limited to the VM's size;
//! with `--kvm-snapshot` in the plan, [`super::snapshot_start::prepare`] gets the snapshot to
//! restore (making it first, by a child process with no pod) and writes guest-init's arguments;
//! `HostIo::open` takes the host ends of the consoles while /proc is the host's; `build_vm`
//! creates the VM (opens the kernel from the stage1 image, [`kernel_path`], and /dev/kvm), or
//! restores it from the snapshot;
//! `jail_vmm` pivots into the pod directory;
//! `attach_devices` adds ([`add_pod_devices`]) hvc0 (stdout), hvc1 (stderr), the virtio-fs share of `stage1/rootfs`,
//! the virtio-vsock device (`/pod/vsock.sock`), the balloon (free page reporting), the entropy
//! device and COM2; `start_control` starts the signal (and, for `--interactive`, stdin) threads;
//! `boot_and_wait` runs the VM (the main thread confines itself once the vCPUs run);
//! [`finish`] turns its end into the pod's exit code.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pod_abi::init::InitArgs;
use pod_abi::paths::PodPaths;
use pod_abi::plan::{Flavor, Plan};
use pod_abi::stage1::RunArgs;

use super::{
    control, jail, record_failure, set_failure_path, sizing, write_atomic, PodError, PROG,
};
use crate::device_manager::SerialBackend;
use crate::devices::virtio::balloon::Balloon;
use crate::devices::virtio::console::{nonblocking_fd, Console};
use crate::devices::virtio::fs::{Fs, FsConfig};
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::vsock::{Vsock, VsockConfig};
use crate::vmm::{VmConfig, VmOutcome, Vmm};

/// The guest kernel, relative to the stage1 root.
pub const KERNEL_IN_STAGE1: &str = "kernel/vmlinux";
/// Mount tag of the pod's root share (the guest mounts it as `/` with `root=<tag>`).
pub const ROOT_TAG: &str = "rkt";
/// Kernel parameters for a virtio-fs root and guest-init (after the VMM's defaults).
pub const ROOT_CMDLINE: &str = "root=rkt rootfstype=virtiofs rw init=/init";

/// guest-init's arguments for this pod; `metadata_url` is the pod's `AC_METADATA_URL` when it
/// is registered with the metadata service.
pub fn pod_init_args(debug: bool, metadata_url: Option<&str>) -> Vec<String> {
    let mut init = InitArgs::new(Flavor::Kvm);
    init.debug = debug;
    init.metadata_url = metadata_url.map(str::to_string);
    init.trace_phases = pod_abi::trace::enabled();
    init.to_args()
}

/// The command line added to the VMM's defaults for this pod (a cold boot): the root share,
/// then [`pod_init_args`] after `--`.
pub fn pod_cmdline(debug: bool, metadata_url: Option<&str>) -> String {
    let mut s = String::from(ROOT_CMDLINE);
    if debug {
        // Later than the default `quiet`, so it wins: the whole boot log on stderr.
        s.push_str(" loglevel=7");
    }
    s.push_str(" --");
    for a in pod_init_args(debug, metadata_url) {
        s.push(' ');
        s.push_str(&a);
    }
    s
}

/// Kernel console lines kept for the failure report (lines).
pub const KERNEL_TAIL_LINES: usize = 64;
/// Longest console line kept whole (bytes); longer lines are cut.
const MAX_LINE: usize = 4096;

/// Whether a console line is the kernel's (printk with `CONFIG_PRINTK_TIME`: `[    1.234567] `).
pub fn is_kernel_line(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"[") else {
        return false;
    };
    let rest: Vec<u8> = rest.iter().copied().skip_while(|b| *b == b' ').collect();
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && rest.get(digits) == Some(&b'.')
}

/// The COM1 sink of a pod: guest-init's own lines go to stderr; kernel lines are kept (the last
/// [`KERNEL_TAIL_LINES`]) and shown only if the VM fails, so a normal run prints no kernel noise.
/// With `--debug` everything goes to stderr.
pub struct ConsoleFilter<W: std::io::Write> {
    out: W,
    debug: bool,
    partial: Vec<u8>,
    tail: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
}

impl<W: std::io::Write> ConsoleFilter<W> {
    /// A filter writing to `out`; `tail` receives the kernel lines.
    pub fn new(
        out: W,
        debug: bool,
        tail: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
    ) -> Self {
        ConsoleFilter {
            out,
            debug,
            partial: Vec::new(),
            tail,
        }
    }

    fn line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.debug || !is_kernel_line(line) {
            // The kernel's serial console ends its lines in `\r\n`: the host's stderr gets `\n`.
            return match line.strip_suffix(b"\r\n") {
                Some(body) => {
                    self.out.write_all(body)?;
                    self.out.write_all(b"\n")
                }
                None => self.out.write_all(line),
            };
        }
        let mut t = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        if t.len() == KERNEL_TAIL_LINES {
            t.pop_front();
        }
        t.push_back(String::from_utf8_lossy(line).trim_end().to_string());
        Ok(())
    }
}

impl<W: std::io::Write> std::io::Write for ConsoleFilter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            if self.partial.len() < MAX_LINE {
                self.partial.push(b);
            }
            if b == b'\n' {
                let line = std::mem::take(&mut self.partial);
                self.line(&line)?;
            }
        }
        Ok(buf.len())
    }
    /// Flushes the output; an incomplete line stays buffered (the console writer flushes after
    /// every chunk, often a single byte), to be judged when it is complete or at drop.
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl<W: std::io::Write> Drop for ConsoleFilter<W> {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            let _ = self.line(&line);
            let _ = self.out.flush();
        }
    }
}

/// A pipe: (read end, write end), both close-on-exec; the read end non-blocking.
fn pipe() -> Result<(OwnedFd, OwnedFd), PodError> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(PodError::Host(
            "cannot create a pipe",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: pipe2 succeeded; both fds are fresh and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_GETFL/F_SETFL on the valid read end.
    unsafe {
        let fl = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(r.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
    Ok((r, w))
}

/// Installs a panic hook that records the panic as the pod's failure before the default output.
fn install_panic_hook() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        control::restore_terminal();
        crate::confine::record_failure(&format!("stage1-vmm crashed: {info}"));
        prev(info);
    }));
}

/// Runs the pod (see the module docs); returns the pod's exit code.
pub fn run(args: &RunArgs) -> Result<i32, PodError> {
    let phase = |p: &str| pod_abi::trace::phase(PROG, p);
    phase("run");
    let (cwd, net) = prepare_process(args)?;
    phase("process-prepared");
    let host = PodPaths::new(&cwd);
    let plan = read_plan(&host)?;
    let size = choose_size(&plan, args);
    join_pod_cgroup(&cwd, args, &plan, size)?;
    phase("cgroup-joined");
    let debug = args.debug || plan.debug;
    let init_args = pod_init_args(debug, net.metadata_url.as_deref());
    let restore = super::snapshot_start::prepare(&cwd, &plan, size, net.cards.len(), &init_args)?;
    phase("snapshot-prepared");
    let io = HostIo::open(args.interactive || plan.interactive)?;
    let (mut vmm, kernel_tail) = build_vm(&host, size, debug, net, restore)?;
    phase("vm-built");
    let pod = jail_vmm(&cwd)?;
    phase("jailed");
    attach_devices(&mut vmm, &pod, io.devices, args.debug)?;
    start_control(io.control, &plan)?;
    phase("devices-attached");
    let outcome = boot_and_wait(vmm, &kernel_tail)?;
    phase("vm-ended");
    Ok(finish(&pod, &plan, &outcome))
}

/// Step 1, while single-threaded: block the stop signals, point failures at the pod's `failure`
/// file, install the panic hook, check the lock fd, enter a private mount namespace and start the
/// confinement (`PR_SET_NO_NEW_PRIVS`, bounding set, SIGSYS handler, compiled filters: every
/// thread started after this is confined). Between the lock and the private mount namespace
/// it sets up the pod's networks ([`setup_network`]: the persistent netns must be visible to
/// `gc`, and `tc`/the plugins run before the VMM loses its capabilities). Returns the pod
/// directory (the cwd stage0 gave us) and the network devices.
fn prepare_process(args: &RunArgs) -> Result<(PathBuf, PodNet), PodError> {
    control::block_stop_signals().map_err(|e| PodError::Host("cannot block signals", e))?;
    let cwd = std::env::current_dir()
        .map_err(|e| PodError::Host("cannot get the current directory", e))?;
    let host = PodPaths::new(&cwd);
    set_failure_path(host.failure());
    install_panic_hook();
    let _lock = stage1_common::pod::keep_lock_fd();
    let net = setup_network(&cwd, args)?;
    jail::enter_private_namespace()?;
    crate::confine::init(&cwd)?;
    Ok((cwd, net))
}

/// `--net=host` and `--ipc=parent` are refused, before anything of the pod is set up: a VM
/// cannot share the host's network or IPC namespace.
fn refuse_host_namespaces(args: &RunArgs, plan: &Plan) -> Result<(), PodError> {
    if args.net == "host" {
        return Err(PodError::HostNamespace(
            "--net=host: a KVM pod cannot share the host's network namespace; use --net=default (or a named network)".into(),
        ));
    }
    if plan.host_ipc {
        return Err(PodError::HostNamespace(
            "--ipc=parent: a KVM pod cannot share the host's IPC namespace (its apps run on the guest's kernel); use --ipc=private or the ns flavor".into(),
        ));
    }
    Ok(())
}

/// The pod's network devices and the kernel command line's metadata URL.
struct PodNet {
    /// One virtio-net card per CNI network, in attach order (eth0, eth1, ...).
    cards: Vec<crate::vmm::NetConfig>,
    /// The pod's `AC_METADATA_URL`, when it is registered.
    metadata_url: Option<String>,
}

/// Step 1b: the pod's CNI networks (`stage1_common::net`, as the ns flavor), a tap joined to
/// each CNI interface inside the pod's netns (`crate::net::attach`), and the guest's network
/// configuration written to `rkt/net.json` in the stage1 root for guest-init. A pod that asks
/// for a namespace of the host is refused first ([`refuse_host_namespaces`]).
fn setup_network(cwd: &Path, args: &RunArgs) -> Result<PodNet, PodError> {
    let host = PodPaths::new(cwd);
    let mut plan = Plan::read(&host.plan()).map_err(PodError::Plan)?;
    refuse_host_namespaces(args, &plan)?;
    let net = stage1_common::net::setup(cwd, &args.uuid, &args.net, &mut plan)
        .map_err(|e| PodError::Net(stage1_common::error::chain(&e)))?;
    let mut cards = Vec::new();
    let mut attached = Vec::new();
    if let Some(netns) = &net.netns {
        for (i, a) in net.attached.iter().enumerate() {
            let tap = format!("tap{i}");
            let att = crate::net::attach(netns, &a.info.if_name, &tap).map_err(|e| {
                PodError::Net(format!(
                    "network {}: cannot join a tap to {}: {}",
                    a.info.net_name,
                    a.info.if_name,
                    stage1_common::error::chain(&e)
                ))
            })?;
            attached.push(att);
        }
    }
    let guest = crate::net::guest_config(attached.iter());
    // Without a card the guest has only `lo`, which is also what guest-init does when the file
    // is absent: no file to write, and none for the guest to read and parse.
    if !guest.interfaces.is_empty() {
        let path = host.stage1_rootfs().join(pod_abi::paths::NET_IN_STAGE1);
        let json = guest
            .to_json()
            .map_err(|e| PodError::Net(format!("the guest's network configuration: {e}")))?;
        write_atomic(&path, &json).map_err(|e| PodError::io("cannot write", &path, e))?;
    }
    for a in attached {
        cards.push(crate::vmm::NetConfig {
            mtu: a.interface.mtu.and_then(|m| u16::try_from(m).ok()),
            mac: a.interface.mac.0,
            tap: std::sync::Arc::new(a.tap),
        });
    }
    let host_ip = stage1_common::net::host_address(&net);
    let metadata_url = stage1_common::metadata::url(args, host_ip.as_deref())
        .map_err(|e| PodError::Net(e.to_string()))?;
    Ok(PodNet {
        cards,
        metadata_url,
    })
}

/// Step 2: reads the launch plan and writes `pid` (this process is the pod).
fn read_plan(host: &PodPaths) -> Result<Plan, PodError> {
    let plan = Plan::read(&host.plan()).map_err(PodError::Plan)?;
    let pid = std::process::id();
    write_atomic(&host.pid(), pid.to_string().as_bytes())
        .map_err(|e| PodError::io("cannot write", &host.pid(), e))?;
    Ok(plan)
}

/// Step 3: the VM's memory and vCPUs from the plan and the host's CPUs (or
/// [`sizing::VCPUS_ENV`]).
fn choose_size(plan: &Plan, args: &RunArgs) -> sizing::VmSize {
    let host_cpus = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
        .min(u32::from(crate::boot::mptable::MAX_CPUS));
    let mut size = sizing::size_vm(plan, host_cpus);
    let knob = std::env::var(sizing::VCPUS_ENV).ok();
    if let Some(n) = sizing::vcpus_override(knob.as_deref()) {
        eprintln!(
            "{PROG}: {}={n}: the VM gets {n} vCPU(s) (sized: {}, host CPUs: {host_cpus})",
            sizing::VCPUS_ENV,
            size.cpus
        );
        size.cpus = n;
    }
    log::info!(
        "pod {}: {} app(s), {} MiB, {} vCPU(s)",
        plan.uuid,
        plan.apps.len(),
        size.mem_mib,
        size.cpus
    );
    if args.debug {
        eprintln!(
            "{PROG}: pod {}: {} MiB RAM ({} MiB for the apps), {} vCPU(s)",
            plan.uuid,
            size.mem_mib,
            sizing::apps_mem_mib(plan),
            size.cpus
        );
    }
    size
}

/// Step 3b: the pod's host cgroups ([`stage1_common::cgroup`], `Shape::Leaf`) with the VM's
/// limits ([`sizing::host_limits`]), which this process joins with all its threads before any
/// other starts (the snapshot maker, a child, is in them too). A host without usable cgroup
/// hierarchies, or whose hierarchy does not delegate a controller here, gets a warning on
/// stderr and a pod without that limit, as the ns flavor's pods; a failed join fails the pod.
/// `gc` removes the cgroups.
fn join_pod_cgroup(
    cwd: &Path,
    args: &RunArgs,
    plan: &Plan,
    size: sizing::VmSize,
) -> Result<(), PodError> {
    use stage1_common::cgroup;
    let cgroups = match cgroup::create(cwd, &args.uuid, cgroup::Shape::Leaf) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{PROG}: warning: the pod has no host cgroup (its VMM is not limited): {e}");
            return Ok(());
        }
    };
    if let Err((file, e)) = cgroup::set_limits(&cgroups, &sizing::host_limits(plan, size)) {
        eprintln!(
            "{PROG}: warning: the pod's host cgroup limits are not all set: {}: {e}",
            file.display()
        );
    }
    cgroup::join_this_process(&cgroups)
        .map_err(|(file, e)| PodError::io("cannot join the pod's cgroup through", &file, e))
}

/// The host ends the devices get: the apps' stdout/stderr and, for an interactive pod, the read
/// end of the console's input pipe; and COM2's input pipe.
struct DeviceIo {
    out: OwnedFd,
    err: OwnedFd,
    console_in: Option<OwnedFd>,
    com2_rx: OwnedFd,
}

/// The host ends the control threads get: COM2's input pipe (for `stop` lines) and, for an
/// interactive pod, the console's input pipe (for stdin).
struct ControlIo {
    com2_tx: OwnedFd,
    stdin_pipe: Option<OwnedFd>,
}

/// The host file descriptors of a pod, taken before the jail.
struct HostIo {
    devices: DeviceIo,
    control: ControlIo,
}

impl HostIo {
    /// Step 4: the host ends of the consoles and the pipes, taken while /proc is the host's.
    fn open(interactive: bool) -> Result<HostIo, PodError> {
        let out = nonblocking_fd(std::io::stdout().as_fd(), true)
            .map_err(|e| PodError::Host("cannot use stdout", e))?;
        let err = nonblocking_fd(std::io::stderr().as_fd(), true)
            .map_err(|e| PodError::Host("cannot use stderr", e))?;
        let (console_in, stdin_pipe) = if interactive {
            let (r, w) = pipe()?;
            (Some(r), Some(w))
        } else {
            (None, None)
        };
        let (com2_rx, com2_tx) = pipe()?;
        Ok(HostIo {
            devices: DeviceIo {
                out,
                err,
                console_in,
                com2_rx,
            },
            control: ControlIo {
                com2_tx,
                stdin_pipe,
            },
        })
    }
}

/// Kernel console lines kept for a failure report (see [`ConsoleFilter`]).
type KernelTail = std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>;

/// Step 5: creates the VM (opens the pod's kernel and /dev/kvm), or with `restore` (the
/// snapshot directory [`super::snapshot_start::prepare`] chose and checked) restores it: the
/// memory file is opened read-only and mapped private now, before the jail. COM1 is the kernel console
/// (and guest-init's own messages): stderr, never the apps' stdout. The kernel is `quiet`, so
/// it only speaks when something goes wrong; its lines are kept in the returned tail.
fn build_vm(
    host: &PodPaths,
    size: sizing::VmSize,
    debug: bool,
    net: PodNet,
    restore: Option<PathBuf>,
) -> Result<(Vmm, KernelTail), PodError> {
    let mut cfg = VmConfig::new(kernel_path(host));
    cfg.cmdline = pod_cmdline(debug, net.metadata_url.as_deref());
    cfg.net = net.cards;
    cfg.mem_mib = size.mem_mib;
    cfg.cpus = size.cpus;
    if let Some(dir) = restore {
        cfg.snapshot = crate::snapshot::SnapshotMode::Restore(dir);
    }
    let kernel_tail: KernelTail = std::sync::Arc::new(std::sync::Mutex::new(
        std::collections::VecDeque::with_capacity(KERNEL_TAIL_LINES),
    ));
    let console = SerialBackend {
        out: Box::new(ConsoleFilter::new(
            std::io::stderr(),
            debug,
            kernel_tail.clone(),
        )),
        input: None,
    };
    let vmm = Vmm::new(&cfg, console)?;
    Ok((vmm, kernel_tail))
}

/// The guest kernel: `kernel/vmlinux` in the stage1 image, i.e. beside this executable (its
/// canonical path, read before the jail). stage0 runs the entrypoints from the image's read-only
/// tree in the store (`cas/tree/<id>/rootfs`), so the kernel comes from there and never from
/// the pod's `stage1/rootfs`, which is the guest's writable virtio-fs root. Only when no kernel
/// sits beside the executable (it runs outside a stage1 image: a test binary) is the pod's
/// `stage1/rootfs/kernel/vmlinux` used.
pub fn kernel_path(host: &PodPaths) -> PathBuf {
    let in_image = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(KERNEL_IN_STAGE1)))
        .filter(|k| k.is_file());
    match in_image {
        Some(k) => k,
        None => {
            let k = host.stage1_rootfs().join(KERNEL_IN_STAGE1);
            log::warn!(
                "not running from a stage1 image (no {KERNEL_IN_STAGE1} beside the executable): \
                 using {}",
                k.display()
            );
            k
        }
    }
}

/// Step 6: from here on the VMM sees only the pod directory. Returns its paths in the jail.
fn jail_vmm(cwd: &Path) -> Result<PodPaths, PodError> {
    jail::pivot_into(cwd)?;
    let pod = PodPaths::new(PathBuf::from(jail::POD_IN_JAIL));
    set_failure_path(pod.failure());
    crate::confine::jailed(Path::new(jail::POD_IN_JAIL))?;
    Ok(pod)
}

/// A pod VM's devices, in the order [`add_pod_devices`] adds them: [`POD_DEVICES`]. A
/// snapshot's maker and the pod restoring it both add them this way, each with its own backends.
pub const POD_DEVICES: [&str; 7] = [
    "console", "console", "fs", "vsock", "balloon", "rng", "com2",
];

/// The backends of a pod VM's devices.
pub struct PodDevices {
    /// hvc0's output (the apps' stdout); `None` discards it.
    pub out: Option<OwnedFd>,
    /// hvc1's output (the apps' stderr); `None` discards it.
    pub err: Option<OwnedFd>,
    /// hvc0's input (an interactive pod's stdin pipe).
    pub console_in: Option<OwnedFd>,
    /// The root share (tag [`ROOT_TAG`]).
    pub fs: Fs,
    /// The host<->guest channel.
    pub vsock: Vsock,
    /// COM2, the control channel.
    pub com2: SerialBackend,
}

/// Adds a pod VM's devices in [`POD_DEVICES`] order: hvc0, hvc1, the root share, vsock, the
/// balloon (free page reporting only: memory the guest frees goes back to the host), the entropy
/// device (the guest kernel's CRNG fed from the host's `getrandom`), COM2.
pub fn add_pod_devices(vmm: &mut Vmm, d: PodDevices) -> Result<(), PodError> {
    vmm.add_virtio(Box::new(Console::new(d.out, d.console_in)))?;
    vmm.add_virtio(Box::new(Console::new(d.err, None)))?;
    vmm.add_virtio(Box::new(d.fs))?;
    vmm.add_virtio(Box::new(d.vsock))?;
    vmm.add_virtio(Box::new(Balloon::new()))?;
    vmm.add_virtio(Box::new(Rng::new()))?;
    vmm.attach_com2(d.com2)?;
    Ok(())
}

/// Step 7: the pod's devices ([`add_pod_devices`]): hvc0 (stdout, with stdin for an
/// interactive pod), hvc1 (stderr), the virtio-fs share of `stage1/rootfs` (opened before
/// /proc goes away), the virtio-vsock device (its socket in the pod directory,
/// `pod_abi::vsock`), the balloon, the entropy device, and COM2, the control channel.
fn attach_devices(
    vmm: &mut Vmm,
    pod: &PodPaths,
    io: DeviceIo,
    debug: bool,
) -> Result<(), PodError> {
    let mut fs_cfg = FsConfig::new(pod.stage1_rootfs());
    fs_cfg.tag = ROOT_TAG.to_string();
    let fs = Fs::new(fs_cfg)?;
    jail::drop_proc()?;
    // The host<->guest channel (enter, stop): `/pod/vsock.sock`, bound now, while the main
    // thread is not confined yet (socket, bind, chmod, rename); removed when the VM ends.
    let vsock = Vsock::new(&VsockConfig {
        socket_dir: PathBuf::from(jail::POD_IN_JAIL),
    })
    .map_err(|e| PodError::Host("cannot create the pod's vsock socket", e))?;
    let com2_out: Box<dyn std::io::Write + Send> = if debug {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::sink())
    };
    add_pod_devices(
        vmm,
        PodDevices {
            out: Some(io.out),
            err: Some(io.err),
            console_in: io.console_in,
            fs,
            vsock,
            com2: SerialBackend {
                out: com2_out,
                input: Some(io.com2_rx),
            },
        },
    )?;
    if debug {
        eprintln!("{PROG}: kernel command line: {}", vmm.cmdline());
    }
    Ok(())
}

/// Step 8: the signal thread and, for an interactive pod, the terminal in raw mode and the
/// stdin thread.
fn start_control(io: ControlIo, plan: &Plan) -> Result<(), PodError> {
    let grace = Duration::from_secs(u64::from(plan.stop_grace_secs));
    control::spawn_signal_thread(io.com2_tx, grace)
        .map_err(|e| PodError::Host("cannot start the signal thread", e))?;
    if let Some(w) = io.stdin_pipe {
        let stdin = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| PodError::Host("cannot use stdin", e))?;
        control::enter_raw_mode(libc::STDIN_FILENO)
            .map_err(|e| PodError::Host("cannot put the terminal in raw mode", e))?;
        control::spawn_stdin_thread(stdin, w)
            .map_err(|e| PodError::Host("cannot start the stdin thread", e))?;
    }
    Ok(())
}

/// Step 9: boots the guest and waits for the VM to end; restores the terminal; after a failure,
/// prints the kernel's last lines.
fn boot_and_wait(vmm: Vmm, kernel_tail: &KernelTail) -> Result<VmOutcome, PodError> {
    let res = vmm.run_report();
    control::restore_terminal();
    let (outcome, report) = res?;
    if report.console.dropped > 0 {
        log::warn!("{} kernel console bytes dropped", report.console.dropped);
    }
    if crate::exit_stats::enabled() {
        for line in report.exit_table() {
            eprintln!("{PROG}: exits: {line}");
        }
    }
    if !outcome.is_success() {
        let tail = kernel_tail.lock().unwrap_or_else(|p| p.into_inner());
        if !tail.is_empty() {
            eprintln!("{PROG}: last kernel messages:");
            for l in tail.iter() {
                eprintln!("  {l}");
            }
        }
    }
    Ok(outcome)
}

/// Step 10, collect statuses: turns the VM's end into the pod's exit code: after a normal reboot, the apps' statuses
/// (first non-zero in app order) unless guest-init recorded a failure of its own; after a panic,
/// triple fault or KVM error, the reason goes to the pod's `failure` file and the code is
/// `STAGE1_FAILED`.
pub fn finish(pod: &PodPaths, plan: &Plan, outcome: &VmOutcome) -> i32 {
    if !outcome.is_success() {
        record_failure(&outcome.reason());
        return pod_abi::exit::STAGE1_FAILED;
    }
    stage1_common::pod::finish(pod, plan, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_filter_keeps_kernel_lines_for_failures() {
        use std::io::Write;
        let tail = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let mut out = Vec::new();
        {
            let mut f = ConsoleFilter::new(&mut out, false, tail.clone());
            // Byte by byte with a flush after each, as the serial port delivers it.
            let text: &[u8] = b"[    0.860150] PCI: Fatal\r\n[guest-init] app a exited\r\n\
                [12345.1] reboot: Restarting system\n[x] y\n[guest-init] no newline";
            for b in text {
                f.write_all(&[*b]).unwrap_or_else(|e| panic!("{e}"));
                f.flush().unwrap_or_else(|e| panic!("{e}"));
            }
        }
        assert_eq!(
            out,
            b"[guest-init] app a exited\n[x] y\n[guest-init] no newline"
        );
        let t = tail.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(t.len(), 2);
        assert!(t[0].ends_with("PCI: Fatal"));
        assert!(is_kernel_line(b"[    3.828542] reboot"));
        assert!(!is_kernel_line(b"[guest-init] x"));
        assert!(!is_kernel_line(b"[ ] x"));
    }

    #[test]
    fn cmdline_puts_init_args_last() {
        let init = InitArgs::new(Flavor::Kvm);
        assert_eq!(
            pod_cmdline(false, None),
            format!(
                "root=rkt rootfstype=virtiofs rw init=/init -- {}",
                init.to_args().join(" ")
            )
        );
        let args = pod_cmdline(true, Some("http://172.16.28.1:18112/ab"));
        let after = args.split(" -- ").nth(1).unwrap_or_default();
        assert_eq!(
            InitArgs::parse(after.split(' ')).map(|a| (a.flavor, a.debug)),
            Ok((Flavor::Kvm, true))
        );
        assert!(pod_cmdline(true, None).contains("loglevel=7"));
    }

    #[test]
    fn finish_reads_statuses_and_failures() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let pod = PodPaths::new(dir.path());
        std::fs::create_dir_all(pod.status_dir()).unwrap_or_else(|e| panic!("{e}"));
        let mut plan: Plan = serde_json::from_str(
            r#"{"version":1,"uuid":"u","hostname":"h","stopGraceSecs":1,"apps":[]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let app: pod_abi::plan::AppPlan = serde_json::from_str(
            r#"{"name":"a","imageId":"i","exec":["/x"],"env":[],"user":"0","group":"0",
                "workingDirectory":"/","capabilities":[]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut b = app.clone();
        b.name = "b".into();
        plan.apps = vec![app, b];
        std::fs::write(pod.app_status("a"), "0\n").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(pod.app_status("b"), "7\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(finish(&pod, &plan, &VmOutcome::Reset), 7);

        // A panic is a stage1 failure, recorded in the pod's failure file.
        set_failure_path(pod.failure());
        let code = finish(&pod, &plan, &VmOutcome::Panic("Kernel panic - x".into()));
        assert_eq!(code, pod_abi::exit::STAGE1_FAILED);
        let f = std::fs::read_to_string(pod.failure()).unwrap_or_default();
        assert!(f.contains("guest kernel panic: Kernel panic - x"), "{f}");

        // guest-init's own failure wins over statuses.
        std::fs::write(pod.guest_failure(), "bad plan\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            finish(&pod, &plan, &VmOutcome::Reset),
            pod_abi::exit::STAGE1_FAILED
        );
        let f = std::fs::read_to_string(pod.failure()).unwrap_or_default();
        assert_eq!(f, "guest-init failed: bad plan\n");
    }
}
