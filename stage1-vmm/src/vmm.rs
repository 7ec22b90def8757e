//! The VMM: turns a [`VmConfig`] into a running VM and waits for it to end.
//!
//! Steps, in order: open the kernel (and initramfs) files — before touching /dev/kvm, so a
//! typo fails fast; open and check KVM (refusing a PVM host when booting Linux); create the VM,
//! guest memory, irqchip and PIT; put COM1, COM2 and the i8042 on the bus (the
//! [`DeviceManager`]). Then the caller may [`Vmm::add_virtio`] devices and [`Vmm::attach_com2`]
//! a backend. [`Vmm::run`] loads the kernel with the final command line, writes the MP table,
//! creates and configures the vCPUs, starts one thread per vCPU (through [`crate::threads`]),
//! and runs the event loop (console input, guest end, panic line, timeout) on the calling
//! thread until the VM ends, then stops and joins all threads.
//!
//! A [`Vmm`] is four parts: the `Machine` (KVM, VM, guest memory, vCPU count), the
//! `BootSource` (kernel, initramfs, command line), the [`DeviceManager`] and the `EndWatch`
//! (what decides that the VM ended).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_pit_config, kvm_reinject_control, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use thiserror::Error;
use vm_memory::{GuestMemory, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::boot::cmdline::{Cmdline, CmdlineError, DEFAULT_CMDLINE};
use crate::boot::{self, e820, mptable, BootError};
use crate::device_manager::{
    ConsoleStats, DeviceError, DeviceManager, MmioSlot, SerialBackend, VirtioMmio,
};
use crate::devices::virtio::net::Net;
use crate::devices::virtio::vsock::{Vsock, VsockConfig};
use crate::devices::virtio::VirtioDevice;
use crate::exit::VcpuAction;
use crate::kvm::{open_kvm, KvmError};
use crate::memory::{create_guest_memory, GuestMem, MemoryError, KVM_TSS_ADDRESS, MIB};
use crate::snapshot::state::VcpuState;
use crate::snapshot::{self, SnapshotError, SnapshotMode, SnapshotPort, SnapshotState};
use crate::threads::{self, ThreadKind};
use crate::vcpu::{self, ExitCounts, VcpuEnd, VcpuError};

/// After the panic line, how long the guest gets to print the rest and reboot (`panic=1`).
const PANIC_GRACE: Duration = Duration::from_secs(3);
/// Interval at which a vCPU thread that has not stopped yet is kicked again.
const KICK_RETRY: Duration = Duration::from_millis(10);
/// First wait before checking again whether the kicked vCPU threads have ended; it doubles up
/// to [`KICK_RETRY`]. A kicked thread leaves `KVM_RUN` at once (`vcpu` module: the kick sets
/// `immediate_exit`), so the first checks find it gone; a flat 10 ms sleep made every VM's end
/// wait for it, as the thread that saw the reset is still returning when the loop first looks.
const JOIN_POLL_FIRST: Duration = Duration::from_micros(100);
/// Give up on a vCPU thread that ignores kicks for this long.
const KICK_GIVE_UP: Duration = Duration::from_secs(2);
/// Bytes read from a console input per wakeup (the UART FIFO holds 64).
const INPUT_CHUNK: usize = 64;

/// Errors creating or running a VM.
#[derive(Debug, Error)]
pub enum VmmError {
    /// The kernel or initramfs file cannot be opened.
    #[error("cannot open {what} {path}")]
    OpenFile {
        /// "kernel" or "initramfs".
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Bad vCPU count.
    #[error("vCPU count must be 1 to {max}, not {0}", max = mptable::MAX_CPUS)]
    BadCpuCount(u32),
    /// KVM is missing, unusable or PVM.
    #[error(transparent)]
    Kvm(#[from] KvmError),
    /// A VM-level KVM ioctl failed.
    #[error("VM ioctl {0} failed")]
    VmIoctl(&'static str, #[source] kvm_ioctls::Error),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// The kernel command line.
    #[error("bad kernel command line")]
    Cmdline(#[from] CmdlineError),
    /// Loading the kernel.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// Writing the MP table.
    #[error(transparent)]
    Mptable(#[from] mptable::MptableError),
    /// Setting up a vCPU.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// Creating or adding a device.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// Creating an eventfd or a thread failed.
    #[error("{0}")]
    Io(&'static str, #[source] std::io::Error),
    /// Saving or restoring a snapshot.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// What the VM is made of: plain data (paths, sizes, flags). The live objects (open files, KVM
/// handles, devices, threads) are built from it by [`Vmm::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Kernel: ELF vmlinux (PVH entry preferred) or bzImage.
    pub kernel: PathBuf,
    /// Optional initramfs (newc cpio, maybe compressed).
    pub initramfs: Option<PathBuf>,
    /// Added after [`DEFAULT_CMDLINE`] (or replacing it, see `replace_cmdline`).
    pub cmdline: String,
    /// Use `cmdline` alone, without [`DEFAULT_CMDLINE`].
    pub replace_cmdline: bool,
    /// Guest RAM (MiB).
    pub mem_mib: u64,
    /// Number of vCPUs.
    pub cpus: u32,
    /// End the VM with [`VmOutcome::Timeout`] after this long.
    pub timeout: Option<Duration>,
    /// The guest is a real Linux: refuse a PVM host (see [`crate::pvm`]). Tiny hand-made test
    /// guests set this to `false`.
    pub linux_guest: bool,
    /// One virtio-net device per entry, added by [`Vmm::new`] before any other virtio device
    /// (the guest finds its interfaces by MAC, so their order does not matter).
    pub net: Vec<NetConfig>,
    /// A virtio-vsock device ([`crate::devices::virtio::vsock`]), added by [`Vmm::new`] after
    /// the network cards; its socket is created then. A pod adds its own after the jail instead
    /// (`pod::run`), so that the socket's path is the jail's `/pod/vsock.sock`.
    pub vsock: Option<VsockConfig>,
    /// Make a snapshot when the guest asks, restore one, or neither ([`crate::snapshot`]).
    pub snapshot: SnapshotMode,
}

/// One network card: an open tap (see [`crate::net::attach`]) and the guest interface's MAC.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The tap: `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, 12-byte vnet header, non-blocking.
    /// Shared so that the config stays plain data; the device gets its own duplicate.
    pub tap: Arc<OwnedFd>,
    /// The guest interface's MAC address.
    pub mac: [u8; 6],
    /// The link's MTU (bytes), offered to the guest (`VIRTIO_NET_F_MTU`); the CNI interface's.
    pub mtu: Option<u16>,
}

impl PartialEq for NetConfig {
    /// The same open tap (not merely an equal descriptor number) and MAC.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.tap, &other.tap) && self.mac == other.mac && self.mtu == other.mtu
    }
}

impl Eq for NetConfig {}

impl VmConfig {
    /// A config for `kernel` with defaults: 512 MiB, 1 vCPU, default command line, no timeout.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmConfig {
            kernel: kernel.into(),
            initramfs: None,
            cmdline: String::new(),
            replace_cmdline: false,
            mem_mib: 512,
            cpus: 1,
            timeout: None,
            linux_guest: true,
            net: Vec::new(),
            vsock: None,
            snapshot: SnapshotMode::Off,
        }
    }
}

/// How a VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmOutcome {
    /// The guest reset the machine (`reboot` with `reboot=k`): the normal end.
    Reset,
    /// The guest powered off.
    PowerOff,
    /// The kernel panicked (the panic line).
    Panic(String),
    /// The VM failed: triple fault, entry failure, internal error, halt without wakeup...
    Failed(String),
    /// The timeout expired.
    Timeout,
    /// The guest asked for a snapshot and the VMM saved it ([`SnapshotMode::Make`]).
    Snapshot,
}

impl VmOutcome {
    /// Whether the guest ended normally.
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            VmOutcome::Reset | VmOutcome::PowerOff | VmOutcome::Snapshot
        )
    }

    /// One-line reason for a failure.
    pub fn reason(&self) -> String {
        match self {
            VmOutcome::Reset => "guest rebooted".into(),
            VmOutcome::PowerOff => "guest powered off".into(),
            VmOutcome::Panic(line) => format!("guest kernel panic: {line}"),
            VmOutcome::Failed(why) => format!("VM failed: {why}"),
            VmOutcome::Timeout => "VM timed out".into(),
            VmOutcome::Snapshot => "snapshot saved".into(),
        }
    }
}

/// What a run cost (for profiling and the benchmark).
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Console output counters.
    pub console: ConsoleStats,
    /// VM exits of all vCPUs, by kind.
    pub exits: ExitCounts,
    /// KVM's own counters of all vCPUs (exits handled in the kernel included; empty unless
    /// [`crate::exit_stats::wanted`]).
    pub kvm: crate::kvm_stats::KvmCounters,
    /// From [`Vmm::new`] to the vCPU threads starting (VM, memory, devices, kernel load).
    pub setup: Duration,
    /// From the vCPU threads starting to the VM's end.
    pub guest: Duration,
    /// From the VM's end to all threads stopped and joined.
    pub teardown: Duration,
    /// The virtio-mmio slots: (guest physical base, device), for naming MMIO exits.
    pub mmio_devices: Vec<(u64, &'static str)>,
}

impl RunReport {
    /// The exit profile table ([`crate::exit_stats::table`]).
    pub fn exit_table(&self) -> Vec<String> {
        let mut t = crate::exit_stats::table(&self.exits, &self.mmio_devices);
        t.extend(crate::kvm_stats::table(&self.kvm));
        t
    }
}

/// The boot inputs built from a [`VmConfig`] before KVM is touched: the open kernel and
/// initramfs (so a typo fails fast) and the command line (devices append to it).
struct BootSource {
    /// `None` when restoring a snapshot (nothing is loaded).
    kernel: Option<File>,
    initramfs: Option<File>,
    cmdline: Cmdline,
}

impl BootSource {
    fn open(cfg: &VmConfig) -> Result<BootSource, VmmError> {
        let open = |what, path: &PathBuf| {
            File::open(path).map_err(|source| VmmError::OpenFile {
                what,
                path: path.clone(),
                source,
            })
        };
        let kernel = match cfg.snapshot {
            SnapshotMode::Restore(_) => None,
            _ => Some(open("kernel", &cfg.kernel)?),
        };
        let initramfs = cfg
            .initramfs
            .as_ref()
            .map(|p| open("initramfs", p))
            .transpose()?;
        let mut cmdline = if cfg.replace_cmdline {
            Cmdline::default()
        } else {
            Cmdline::parse(DEFAULT_CMDLINE)?
        };
        cmdline.push_str(&cfg.cmdline)?;
        Ok(BootSource {
            kernel,
            initramfs,
            cmdline,
        })
    }
}

/// The machine: KVM, the VM with its irqchip and PIT, guest memory and the vCPU count.
struct Machine {
    kvm: Kvm,
    vm: VmFd,
    mem: GuestMem,
    mem_size: u64,
    cpus: u8,
}

/// `KVM_REINJECT_CONTROL`, `_IO(KVMIO, 0x71)` (its argument, a `kvm_reinject_control`, is a
/// pointer all the same).
const KVM_REINJECT_CONTROL: libc::c_ulong = 0xae71;

/// Makes the in-kernel PIT drop the ticks a guest missed instead of replaying them
/// (QEMU's `lost_tick_policy=discard`). By default KVM counts every PIT period that passed
/// while the vCPU could not take the interrupt and delivers them one after another later, each
/// after the guest acknowledged the previous one. A guest on a shared, busy CPU (ten pods
/// booting at once on one) then spends its turns on a backlog of ticks, and its boot's check of
/// the LAPIC timer against the PIT's jiffies (`calibrate_APIC_clock`, when no TSC-deadline timer
/// is offered) sees too many jiffies, fails, and leaves the guest ticking on the PIT, which
/// replays again. A Linux guest keeps time with kvmclock, not by counting ticks, so nothing needs
/// the replay (docs/vmm.md, "Lost PIT ticks").
fn discard_lost_pit_ticks(vm: &VmFd) -> Result<(), VmmError> {
    let ctl = kvm_reinject_control {
        pit_reinject: 0,
        ..Default::default()
    };
    // SAFETY: KVM_REINJECT_CONTROL reads one `kvm_reinject_control` (32 bytes) from the
    // pointer, which points at `ctl`, alive for the call; the VM fd is open and has a PIT.
    let rc = unsafe { libc::ioctl(vm.as_raw_fd(), KVM_REINJECT_CONTROL as _, &ctl) };
    if rc < 0 {
        return Err(VmmError::VmIoctl(
            "KVM_REINJECT_CONTROL",
            kvm_ioctls::Error::last(),
        ));
    }
    Ok(())
}

impl Machine {
    /// `restore`: the snapshot's memory file, mapped instead of fresh anonymous memory.
    fn create(cfg: &VmConfig, restore: Option<File>) -> Result<Machine, VmmError> {
        let cpus = u8::try_from(cfg.cpus)
            .ok()
            .filter(|c| (1..=mptable::MAX_CPUS).contains(c))
            .ok_or(VmmError::BadCpuCount(cfg.cpus))?;
        let mem_size = cfg.mem_mib.saturating_mul(MIB);

        let kvm = open_kvm(cfg.linux_guest)?;
        let vm = kvm
            .create_vm()
            .map_err(|e| VmmError::VmIoctl("KVM_CREATE_VM", e))?;
        pod_abi::trace::phase("stage1-vmm", "vm-created");
        vm.set_tss_address(KVM_TSS_ADDRESS as usize)
            .map_err(|e| VmmError::VmIoctl("KVM_SET_TSS_ADDR", e))?;
        vm.create_irq_chip()
            .map_err(|e| VmmError::VmIoctl("KVM_CREATE_IRQCHIP", e))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit)
            .map_err(|e| VmmError::VmIoctl("KVM_CREATE_PIT2", e))?;
        discard_lost_pit_ticks(&vm)?;

        let mem = match restore {
            Some(file) => snapshot::memory::map_private(file, mem_size)?,
            None => create_guest_memory(mem_size)?,
        };
        pod_abi::trace::phase("stage1-vmm", "memory-mapped");
        for (slot, region) in mem.iter().enumerate() {
            let host = mem
                .get_host_address(region.start_addr())
                .map_err(|_| VmmError::Memory(MemoryError::BadSize(mem_size)))?;
            let r = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the region is a live mapping owned by `mem`, which the Vmm keeps (and the
            // vCPU threads hold clones of) for as long as the VM exists.
            unsafe { vm.set_user_memory_region(r) }
                .map_err(|e| VmmError::VmIoctl("KVM_SET_USER_MEMORY_REGION", e))?;
        }
        Ok(Machine {
            kvm,
            vm,
            mem,
            mem_size,
            cpus,
        })
    }
}

/// What the event loop watches to decide that the VM ended: the wake eventfd (vCPU ends,
/// the panic line, drained UART input), the kernel's panic line, and the deadline.
struct EndWatch {
    wake: Arc<EventFd>,
    panic_line: Arc<Mutex<Option<String>>>,
    timeout: Option<Duration>,
}

/// A VM being assembled, then run.
pub struct Vmm {
    machine: Machine,
    boot: BootSource,
    devices: DeviceManager,
    watch: EndWatch,
    created: Instant,
    /// The virtio-mmio slots taken: (base, device), for the exit profile.
    mmio_devices: Vec<(u64, &'static str)>,
    /// What to do about snapshots, and the state being restored.
    snapshot: SnapshotPlan,
}

/// A VM's snapshot role, as [`Vmm::new`] prepared it.
enum SnapshotPlan {
    Off,
    /// Save into this directory when the guest asks.
    Make(PathBuf),
    /// Restore this state (memory is already mapped) instead of loading a kernel.
    Restore(Box<SnapshotState>),
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Vmm {
    /// Creates the VM from `cfg` (see the module docs for the steps), with `console` as COM1's
    /// host side.
    pub fn new(cfg: &VmConfig, console: SerialBackend) -> Result<Vmm, VmmError> {
        let created = Instant::now();
        let boot = BootSource::open(cfg)?;
        // A restore takes the machine's shape from the snapshot, read before /dev/kvm.
        let mut cfg = cfg.clone();
        let (plan, mem_file) = match &cfg.snapshot {
            SnapshotMode::Off => (SnapshotPlan::Off, None),
            SnapshotMode::Make(dir) => (SnapshotPlan::Make(dir.clone()), None),
            SnapshotMode::Restore(dir) => {
                let state = snapshot::read_state(dir)?;
                cfg.mem_mib = state.mem_size / MIB;
                cfg.cpus = state.vcpus.len() as u32;
                let mem = snapshot::open_memory(dir)?;
                // Every check of the snapshot comes before /dev/kvm: a caller that falls back
                // to a cold boot (pod::run) never had a half-made VM.
                snapshot::memory::check_len(&mem, state.mem_size)?;
                (SnapshotPlan::Restore(Box::new(state)), Some(mem))
            }
        };
        let cfg = &cfg;
        let machine = Machine::create(cfg, mem_file)?;
        let watch = EndWatch {
            wake: Arc::new(
                EventFd::new(EFD_NONBLOCK)
                    .map_err(|e| VmmError::Io("cannot create an eventfd", e))?,
            ),
            panic_line: Arc::new(Mutex::new(None)),
            timeout: cfg.timeout,
        };
        let devices = DeviceManager::new(&machine.vm, console, &watch.wake, &watch.panic_line)?;
        let mut vmm = Vmm {
            machine,
            boot,
            devices,
            watch,
            created,
            mmio_devices: Vec::new(),
            snapshot: plan,
        };
        let port = match &vmm.snapshot {
            SnapshotPlan::Off => None,
            SnapshotPlan::Make(_) => Some(SnapshotPort::Armed),
            SnapshotPlan::Restore(_) => Some(SnapshotPort::restored(&snapshot::port::fresh_now()?)),
        };
        if let Some(port) = port {
            vmm.devices.add_pio(
                pod_abi::snapshot::PORT_DATA,
                pod_abi::snapshot::PORTS,
                Arc::new(Mutex::new(port)),
            )?;
        }
        for n in &cfg.net {
            let tap = n
                .tap
                .try_clone()
                .map_err(|e| VmmError::Io("cannot duplicate a tap descriptor", e))?;
            let mut dev = Net::new(tap, n.mac);
            if let Some(mtu) = n.mtu {
                dev = dev.with_mtu(mtu);
            }
            // Checksum and TSO4 offloads when the tap takes them (now: the device threads
            // may not make ioctls once confined).
            match crate::net::enable_offloads(&*n.tap) {
                Ok(()) => dev = dev.with_offloads(),
                Err(e) => log::warn!("virtio-net: the tap takes no offloads ({e}); none offered"),
            }
            vmm.add_virtio(Box::new(dev))?;
        }
        if let Some(v) = &cfg.vsock {
            let dev =
                Vsock::new(v).map_err(|e| VmmError::Io("cannot create the vsock socket", e))?;
            vmm.add_virtio(Box::new(dev))?;
        }
        Ok(vmm)
    }

    /// Guest memory (for building devices).
    pub fn guest_memory(&self) -> &GuestMem {
        &self.machine.mem
    }

    /// The kernel command line as it stands.
    pub fn cmdline(&self) -> String {
        self.boot.cmdline.as_string()
    }

    /// Connects COM2 (ttyS1 in the guest) to `backend`: the host<->guest-init control channel.
    pub fn attach_com2(&mut self, backend: SerialBackend) -> Result<(), VmmError> {
        Ok(self.devices.attach_com2(backend, &self.watch.wake)?)
    }

    /// Adds a virtio device: a virtio-mmio transport in the next slot, wired to KVM and named on
    /// the kernel command line (see [`DeviceManager::add_virtio_transport`]).
    pub fn add_virtio(&mut self, device: Box<dyn VirtioDevice>) -> Result<MmioSlot, VmmError> {
        let name = crate::devices::virtio::thread_name(device.device_type());
        let slot = self.devices.add_virtio(
            &self.machine.vm,
            &self.machine.mem,
            &mut self.boot.cmdline,
            device,
        )?;
        self.mmio_devices.push((slot.base, name));
        Ok(slot)
    }

    /// Adds a virtio-mmio transport built by `make(guest memory, irq eventfd)` (another
    /// transport, or a test double); see [`DeviceManager::add_virtio_transport`].
    pub fn add_virtio_transport<D, F>(&mut self, make: F) -> Result<MmioSlot, VmmError>
    where
        D: VirtioMmio + 'static,
        F: FnOnce(GuestMem, EventFd) -> Result<D, DeviceError>,
    {
        Ok(self.devices.add_virtio_transport(
            &self.machine.vm,
            &self.machine.mem,
            &mut self.boot.cmdline,
            make,
        )?)
    }

    /// Boots the guest and runs until it ends; returns how it ended and the console counters.
    pub fn run(self) -> Result<(VmOutcome, ConsoleStats), VmmError> {
        self.run_report().map(|(o, r)| (o, r.console))
    }

    /// As [`Vmm::run`], with timings and exit counts.
    pub fn run_report(mut self) -> Result<(VmOutcome, RunReport), VmmError> {
        let vcpus = match &self.snapshot {
            SnapshotPlan::Restore(_) => self.restore_vcpus()?,
            _ => self.load_and_create_vcpus()?,
        };
        // KVM's own counters, when the exit profile is asked for: opened now, before the
        // threads are confined; a kernel without them (before 5.14) goes without.
        let mut kvm_stats: Vec<File> = if crate::exit_stats::wanted() {
            vcpus
                .iter()
                .filter_map(|v| crate::kvm_stats::open(v).ok())
                .collect()
        } else {
            Vec::new()
        };
        // A snapshot-making VM's vCPUs save themselves (each owns its fd) once all are out of
        // the guest: the one that asked, then the others, stopped below.
        let msr_list = match &self.snapshot {
            SnapshotPlan::Make(_) => Some(Arc::new(
                self.machine
                    .kvm
                    .get_msr_index_list()
                    .map_err(|e| VmmError::VmIoctl("KVM_GET_MSR_INDEX_LIST", e))?
                    .as_slice()
                    .to_vec(),
            )),
            _ => None,
        };
        let saved: Arc<Mutex<Vec<SavedVcpu>>> =
            Arc::new(Mutex::new((0..vcpus.len()).map(|_| None).collect()));
        let all_out = Arc::new(Barrier::new(vcpus.len()));
        let bus = Arc::new(self.devices.take_bus());
        let stop = Arc::new(AtomicBool::new(false));
        let ends: Arc<Mutex<Vec<(u8, VcpuEnd)>>> = Arc::new(Mutex::new(Vec::new()));
        let counts: Arc<Mutex<ExitCounts>> = Arc::new(Mutex::new(ExitCounts::new()));
        let mut threads = Vec::with_capacity(vcpus.len());
        let profile_every = crate::profile::interval();
        let vcpus_started = Instant::now();
        for (id, mut fd) in vcpus.into_iter().enumerate() {
            let (bus, stop, ends, wake) = (
                bus.clone(),
                stop.clone(),
                ends.clone(),
                self.watch.wake.clone(),
            );
            let all_counts = counts.clone();
            let (msr_list, saved, all_out) = (msr_list.clone(), saved.clone(), all_out.clone());
            // A profiled vCPU reads its own registers, as a snapshot-making one does.
            let kind = if msr_list.is_some() || profile_every.is_some() {
                ThreadKind::SnapshotVcpu
            } else {
                ThreadKind::Vcpu
            };
            let t = threads::spawn(kind, format!("vcpu{id}"), move || {
                let mut mine = ExitCounts::new();
                let mut samples =
                    profile_every.map(|_| crate::profile::Samples::new(vcpus_started, id as u8));
                let end = vcpu::run_loop(&mut fd, &bus, &stop, &mut mine, samples.as_mut());
                if let Some(s) = &samples {
                    let _ = s.print(&mut std::io::stderr().lock());
                }
                crate::exit_stats::merge(&mut lock(&all_counts), &mine);
                lock(&ends).push((id as u8, end));
                let _ = wake.write(1);
                if let Some(list) = msr_list {
                    // Saved only when every vCPU is out: one still running could change this
                    // one's LAPIC (an IPI) after it was read.
                    all_out.wait();
                    let state = snapshot::kvm_state::complete_pending_io(&mut fd)
                        .and_then(|()| snapshot::kvm_state::save_vcpu(&fd, &list));
                    if let Some(slot) = lock(&saved).get_mut(id) {
                        *slot = Some(state);
                    }
                }
            })
            .map_err(|e| VmmError::Io("cannot start a vCPU thread", e))?;
            threads.push(t);
        }
        let sampler = match profile_every {
            Some(every) => {
                use std::os::unix::thread::JoinHandleExt;
                let targets = threads.iter().map(|t| t.as_pthread_t()).collect();
                Some(
                    crate::profile::start(targets, vcpu::kick_signal(), every)
                        .map_err(|e| VmmError::Io("cannot start the profile sampler", e))?,
                )
            }
            None => None,
        };
        match self.snapshot {
            SnapshotPlan::Make(_) => threads::on_main_ready_snapshot(),
            _ => threads::on_main_ready(),
        }
        pod_abi::trace::phase("stage1-vmm", "vcpus-started");

        let started = Instant::now();
        let setup = started.duration_since(self.created);
        let mut outcome = self.event_loop(&ends);
        let ended = Instant::now();
        pod_abi::trace::phase("stage1-vmm", "guest-stopped");
        if let Some(s) = sampler {
            s.finish();
        }
        stop_vcpus(&stop, threads, ended);
        let mut kvm = crate::kvm_stats::KvmCounters::new();
        for f in &mut kvm_stats {
            if let Err(e) = crate::kvm_stats::read_into(f, &mut kvm) {
                log::debug!("KVM statistics: {e}");
            }
        }
        if outcome == VmOutcome::Snapshot {
            let states = std::mem::take(&mut *lock(&saved));
            outcome = match (collect_saved(states), &self.snapshot) {
                (Some(Ok(v)), SnapshotPlan::Make(dir)) => {
                    let dir = dir.clone();
                    self.save_snapshot(&dir, v)?;
                    VmOutcome::Snapshot
                }
                (Some(Err(e)), _) => return Err(e.into()),
                _ => VmOutcome::Failed("the guest asked for a snapshot this VM cannot take".into()),
            };
        }

        let console = self.devices.finish();
        let exits = std::mem::take(&mut *lock(&counts));
        let report = RunReport {
            console,
            exits,
            kvm,
            setup,
            guest: ended.duration_since(started),
            teardown: ended.elapsed(),
            mmio_devices: std::mem::take(&mut self.mmio_devices),
        };
        if log::log_enabled!(log::Level::Debug) {
            for line in report.exit_table() {
                log::debug!("exits: {line}");
            }
        }
        Ok((outcome, report))
    }

    /// Loads the kernel with the final command line, writes the MP table and creates and
    /// configures the vCPUs.
    fn load_and_create_vcpus(&mut self) -> Result<Vec<VcpuFd>, VmmError> {
        let m = &self.machine;
        let e820 = e820::e820_map(m.mem_size);
        let entry = boot::load(
            &m.mem,
            m.mem_size,
            self.boot
                .kernel
                .as_mut()
                .ok_or(VmmError::Snapshot(SnapshotError::Corrupt(
                    "boot without a kernel",
                )))?,
            self.boot.initramfs.as_mut(),
            &self.boot.cmdline,
            &e820,
        )?;
        pod_abi::trace::phase("stage1-vmm", "kernel-loaded");
        mptable::setup(&m.mem, m.cpus)?;
        vcpu::install_kick_handler()?;
        let tsc_deadline = vcpu::guest_tsc_deadline(&m.kvm);
        let mut vcpus = Vec::with_capacity(m.cpus.into());
        for id in 0..m.cpus {
            let fd =
                m.vm.create_vcpu(id.into())
                    .map_err(|e| VmmError::VmIoctl("KVM_CREATE_VCPU", e))?;
            vcpu::configure(&m.kvm, &fd, &m.mem, id, m.cpus, tsc_deadline, &entry)?;
            vcpus.push(fd);
        }
        pod_abi::trace::phase("stage1-vmm", "vcpus-created");
        Ok(vcpus)
    }

    /// Creates the vCPUs and puts the VM, the vCPUs and the legacy devices in the snapshot's
    /// state (memory is the snapshot's already); nothing is loaded.
    fn restore_vcpus(&mut self) -> Result<Vec<VcpuFd>, VmmError> {
        let SnapshotPlan::Restore(state) = &self.snapshot else {
            return Ok(Vec::new());
        };
        let m = &self.machine;
        vcpu::install_kick_handler()?;
        let mut vcpus = Vec::with_capacity(state.vcpus.len());
        for id in 0..state.vcpus.len() {
            let fd =
                m.vm.create_vcpu(id as u64)
                    .map_err(|e| VmmError::VmIoctl("KVM_CREATE_VCPU", e))?;
            vcpus.push(fd);
        }
        snapshot::kvm_state::restore_vm(&m.vm, &state.vm)?;
        for (fd, s) in vcpus.iter().zip(&state.vcpus) {
            snapshot::kvm_state::restore_vcpu(fd, s)?;
        }
        self.devices.set_legacy_state(&state.devices)?;
        self.devices.set_virtio_state(&state.virtio)?;
        Ok(vcpus)
    }

    /// Saves the VM (its vCPUs' states `vcpus`, in id order, taken by the vCPU threads) into
    /// `dir`.
    fn save_snapshot(&self, dir: &std::path::Path, vcpus: Vec<VcpuState>) -> Result<(), VmmError> {
        let m = &self.machine;
        // The device workers still run: stop them, so the queues and memory saved below are
        // one moment's (a worker finishing a request mid-save would leave a used ring that
        // disagrees with the saved queue positions).
        self.devices.quiesce_virtio();
        let state = SnapshotState {
            mem_size: m.mem_size,
            vm: snapshot::kvm_state::save_vm(&m.vm)?,
            vcpus,
            devices: self.devices.legacy_state(),
            virtio: self.devices.virtio_state()?,
        };
        snapshot::write_dir(dir, &state, &m.mem)?;
        Ok(())
    }

    /// Waits for the VM to end, feeding console input meanwhile.
    fn event_loop(&mut self, ends: &Mutex<Vec<(u8, VcpuEnd)>>) -> VmOutcome {
        let deadline = self.watch.timeout.map(|t| Instant::now() + t);
        let mut panic_deadline: Option<Instant> = None;
        let mut buf = [0u8; INPUT_CHUNK];
        loop {
            // Did the guest end?
            let ended = lock(ends).first().cloned();
            let panic = lock(&self.watch.panic_line).clone();
            if let Some((id, end)) = ended {
                return outcome_of(id, end, panic);
            }
            let now = Instant::now();
            if let Some(line) = panic {
                let d = *panic_deadline.get_or_insert(now + PANIC_GRACE);
                if now >= d {
                    return VmOutcome::Panic(line);
                }
            }
            if deadline.is_some_and(|d| now >= d) {
                return VmOutcome::Timeout;
            }
            let wait = [deadline, panic_deadline]
                .into_iter()
                .flatten()
                .map(|d| d.saturating_duration_since(now))
                .min();

            // Poll: wake eventfd, plus each console input that has FIFO room.
            let mut fds = vec![libc::pollfd {
                fd: self.watch.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let which = self.devices.input_pollfds(&mut fds);
            let timeout_ms = match wait {
                Some(d) => i32::try_from(d.as_millis().saturating_add(1)).unwrap_or(i32::MAX),
                None => -1,
            };
            // SAFETY: `fds` is a valid, initialized array of pollfd of the given length.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            if r < 0 {
                continue; // EINTR
            }
            if fds.first().is_some_and(|p| p.revents != 0) {
                let _ = self.watch.wake.read();
            }
            for (p, n) in fds.iter().skip(1).zip(which) {
                if p.revents != 0 {
                    self.devices.feed_input(n, p.revents, &mut buf);
                }
            }
        }
    }
}

/// A snapshot-making vCPU's state as its thread saved it; `None` until it has.
type SavedVcpu = Option<Result<VcpuState, SnapshotError>>;

/// Every vCPU's saved state in id order; `None` if one was not saved (its thread never got
/// out of the guest), the first error if one failed.
fn collect_saved(states: Vec<SavedVcpu>) -> Option<Result<Vec<VcpuState>, SnapshotError>> {
    let all: Option<Vec<_>> = states.into_iter().collect();
    all.map(|v| v.into_iter().collect())
}

/// The VM's outcome once vCPU `id` ended with `end`; a panic line seen on the console wins.
fn outcome_of(id: u8, end: VcpuEnd, panic: Option<String>) -> VmOutcome {
    match (end, panic) {
        (_, Some(line)) => VmOutcome::Panic(line),
        (VcpuEnd::Guest(VcpuAction::Reset), None) => VmOutcome::Reset,
        (VcpuEnd::Guest(VcpuAction::PowerOff), None) => VmOutcome::PowerOff,
        (VcpuEnd::Guest(VcpuAction::Halted), None) => {
            VmOutcome::Failed(format!("vCPU {id} halted with no way to wake up"))
        }
        (VcpuEnd::Guest(VcpuAction::Snapshot), None) => VmOutcome::Snapshot,
        (VcpuEnd::Guest(VcpuAction::Continue), None) | (VcpuEnd::Stopped, None) => {
            VmOutcome::Failed(format!("vCPU {id} stopped"))
        }
        (VcpuEnd::Failed(why), None) => VmOutcome::Failed(format!("vCPU {id}: {why}")),
    }
}

/// Stops the vCPU threads: sets the flag, then kicks those still running every [`KICK_RETRY`]
/// until each has ended, checking after [`JOIN_POLL_FIRST`] and twice as long each time (gives
/// up after [`KICK_GIVE_UP`] from `ended`), and joins those that finished.
fn stop_vcpus(stop: &AtomicBool, threads: Vec<JoinHandle<()>>, ended: Instant) {
    stop.store(true, Ordering::SeqCst);
    let mut wait = JOIN_POLL_FIRST;
    let mut kicked: Option<Instant> = None;
    loop {
        let running: Vec<&JoinHandle<()>> = threads.iter().filter(|t| !t.is_finished()).collect();
        if running.is_empty() || ended.elapsed() > KICK_GIVE_UP {
            break;
        }
        if kicked.is_none_or(|k| k.elapsed() >= KICK_RETRY) {
            use vmm_sys_util::signal::Killable;
            for t in running {
                let _ = t.kill(vcpu::kick_signal());
            }
            kicked = Some(Instant::now());
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(KICK_RETRY);
    }
    for t in threads {
        if t.is_finished() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_needs_every_vcpus_state() {
        let ok = || Some(Ok(VcpuState::default()));
        let all = collect_saved(vec![ok(), ok()]);
        assert!(matches!(all, Some(Ok(v)) if v.len() == 2));
        // A vCPU that never got out of the guest: no snapshot.
        assert!(collect_saved(vec![ok(), None]).is_none());
        // One that failed to save: its error.
        let failed = collect_saved(vec![ok(), Some(Err(SnapshotError::PendingExit))]);
        assert!(matches!(failed, Some(Err(SnapshotError::PendingExit))));
    }
}
