//! The VMM: turns a [`VmConfig`] into a running VM and waits for it to end.
//!
//! Steps, in order: open the kernel (and initramfs) files — before touching /dev/kvm, so a
//! typo fails fast; open and check KVM (refusing a PVM host when booting Linux); create the VM,
//! guest memory, irqchip and PIT; put COM1, COM2 and the i8042 on the bus. Then the caller may
//! [`Vmm::add_virtio_mmio`] devices and [`Vmm::attach_com2`] a backend. [`Vmm::run`] loads
//! the kernel with the final command line, writes the MP table, creates and configures the
//! vCPUs, starts one thread per vCPU, and runs the event loop (console input, guest end,
//! panic line, timeout) on the calling thread until the VM ends, then stops and joins all
//! threads.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use thiserror::Error;
use vm_memory::{GuestMemory, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::boot::cmdline::{Cmdline, CmdlineError, DEFAULT_CMDLINE};
use crate::boot::{self, e820, mptable, BootError};
use crate::bus::{Bus, BusError};
use crate::devices::legacy::i8042::{I8042_DATA_PORT, I8042_PORTS};
use crate::devices::legacy::output::{AsyncWriterHandle, DEFAULT_QUEUE_BYTES};
use crate::devices::legacy::serial::{COM1_IRQ, COM1_PORT, COM2_IRQ, COM2_PORT, UART_PORTS};
use crate::devices::legacy::{AsyncWriter, OutputStats, PanicWatch, SerialDevice, I8042};
use crate::devices::{GuestMem, VirtioMmio};
use crate::exit::VcpuAction;
use crate::kvm::{open_kvm, KvmError};
use crate::memory::{
    create_guest_memory, MemoryError, KVM_TSS_ADDRESS, MIB, VIRTIO_MMIO_END, VIRTIO_MMIO_SLOT_SIZE,
    VIRTIO_MMIO_START,
};
use crate::vcpu::{self, ExitCounts, VcpuEnd, VcpuError};

/// Queue notification register of a virtio-mmio transport (offset from its base).
const VIRTIO_MMIO_QUEUE_NOTIFY: u64 = 0x50;
/// GSIs handed to virtio-mmio devices, in order: the IOAPIC pins not used by legacy ISA devices
/// (0 timer, 1 keyboard, 2 cascade, 3/4 serial, 8 RTC).
const VIRTIO_GSIS: &[u32] = &[
    5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
];
/// After the panic line, how long the guest gets to print the rest and reboot (`panic=1`).
const PANIC_GRACE: Duration = Duration::from_secs(3);
/// Interval at which a vCPU thread that has not stopped yet is kicked again.
const KICK_RETRY: Duration = Duration::from_millis(10);
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
    /// Placing a device on the bus.
    #[error("cannot place a device on the bus")]
    Bus(#[from] BusError),
    /// No MMIO slot or GSI left for another virtio device.
    #[error("no virtio-mmio slot or interrupt left")]
    NoVirtioSlot,
    /// Creating an eventfd, a thread or polling failed.
    #[error("{0}")]
    Io(&'static str, #[source] std::io::Error),
}

/// What the VM is made of.
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
    /// Where the console (COM1) output goes; `None` = this process's stdout.
    pub console_out: Option<Box<dyn Write + Send>>,
    /// Console input (COM1); `None` = none.
    pub console_in: Option<OwnedFd>,
    /// The guest is a real Linux: refuse a PVM host (see [`crate::pvm`]). Tiny hand-made test
    /// guests set this to `false`.
    pub linux_guest: bool,
}

impl VmConfig {
    /// A config for `kernel` with defaults: 512 MiB, 1 vCPU, default command line, stdout
    /// console, no input, no timeout.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmConfig {
            kernel: kernel.into(),
            initramfs: None,
            cmdline: String::new(),
            replace_cmdline: false,
            mem_mib: 512,
            cpus: 1,
            timeout: None,
            console_out: None,
            console_in: None,
            linux_guest: true,
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
}

impl VmOutcome {
    /// Whether the guest ended normally.
    pub fn is_success(&self) -> bool {
        matches!(self, VmOutcome::Reset | VmOutcome::PowerOff)
    }

    /// One-line reason for a failure.
    pub fn reason(&self) -> String {
        match self {
            VmOutcome::Reset => "guest rebooted".into(),
            VmOutcome::PowerOff => "guest powered off".into(),
            VmOutcome::Panic(line) => format!("guest kernel panic: {line}"),
            VmOutcome::Failed(why) => format!("VM failed: {why}"),
            VmOutcome::Timeout => "VM timed out".into(),
        }
    }
}

/// Where a registered virtio-mmio device lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioSlot {
    /// Guest physical base of its 4 KiB window.
    pub base: u64,
    /// Its GSI (IOAPIC pin).
    pub gsi: u32,
}

/// A COM2 backend: what the guest writes goes to `out`; what `input` yields is fed to the guest.
pub struct SerialBackend {
    /// Output sink; written from a dedicated thread, so it may block.
    pub out: Box<dyn Write + Send>,
    /// Input (a pipe, socket or tty); read when readable, EOF ends input.
    pub input: Option<OwnedFd>,
}

struct SerialPort {
    dev: Arc<Mutex<SerialDevice>>,
    input: Option<OwnedFd>,
    writer: AsyncWriterHandle,
    stats: Arc<OutputStats>,
}

/// Console output statistics after a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsoleStats {
    /// Bytes written to the console output.
    pub written: u64,
    /// Bytes dropped because the console output could not keep up.
    pub dropped: u64,
}

/// What a run cost (for profiling and the benchmark).
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Console output counters.
    pub console: ConsoleStats,
    /// VM exits of all vCPUs, by kind.
    pub exits: ExitCounts,
    /// From [`Vmm::new`] to the vCPU threads starting (VM, memory, devices, kernel load).
    pub setup: Duration,
    /// From the vCPU threads starting to the VM's end.
    pub guest: Duration,
    /// From the VM's end to all threads stopped and joined.
    pub teardown: Duration,
}

/// A VM being assembled, then run.
pub struct Vmm {
    kvm: Kvm,
    vm: VmFd,
    mem: GuestMem,
    mem_size: u64,
    cpus: u8,
    kernel: File,
    initramfs: Option<File>,
    cmdline: Cmdline,
    timeout: Option<Duration>,
    bus: Bus,
    wake: Arc<EventFd>,
    panic_line: Arc<Mutex<Option<String>>>,
    com1: SerialPort,
    com2: Option<SerialPort>,
    com2_dev: Arc<Mutex<Option<Arc<Mutex<SerialDevice>>>>>,
    com2_irq: EventFd,
    next_virtio: usize,
    virtio_devices: Vec<Arc<Mutex<dyn VirtioMmio>>>,
    /// irqfds of virtio devices: registered for the VM's life, so kept open with it.
    virtio_irqs: Vec<EventFd>,
    created: Instant,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn eventfd() -> Result<EventFd, VmmError> {
    EventFd::new(EFD_NONBLOCK).map_err(|e| VmmError::Io("cannot create an eventfd", e))
}

/// COM2's slot on the bus forwards to the attached device; with none, it floats (reads 0xff,
/// so the guest's 8250 driver finds no UART there).
struct Com2Slot(Arc<Mutex<Option<Arc<Mutex<SerialDevice>>>>>);
impl crate::bus::PioDevice for Com2Slot {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        match lock(&self.0).as_ref() {
            Some(d) => lock(d).read(offset, data),
            None => data.fill(0xff),
        }
    }
    fn write(&mut self, offset: u16, data: &[u8]) -> crate::bus::DeviceAction {
        match lock(&self.0).as_ref() {
            Some(d) => lock(d).write(offset, data),
            None => crate::bus::DeviceAction::None,
        }
    }
}

impl VirtioMmio for crate::devices::virtio::mmio::MmioTransport {
    fn queue_evts(&self) -> &[EventFd] {
        crate::devices::virtio::mmio::MmioTransport::queue_evts(self)
    }
}

impl Vmm {
    /// Creates the VM (see the module docs for the steps).
    pub fn new(cfg: VmConfig) -> Result<Vmm, VmmError> {
        let created = Instant::now();
        let open = |what, path: &PathBuf| {
            File::open(path).map_err(|source| VmmError::OpenFile {
                what,
                path: path.clone(),
                source,
            })
        };
        let kernel = open("kernel", &cfg.kernel)?;
        let initramfs = cfg
            .initramfs
            .as_ref()
            .map(|p| open("initramfs", p))
            .transpose()?;
        let cpus = u8::try_from(cfg.cpus)
            .ok()
            .filter(|c| (1..=mptable::MAX_CPUS).contains(c))
            .ok_or(VmmError::BadCpuCount(cfg.cpus))?;
        let mut cmdline = if cfg.replace_cmdline {
            Cmdline::default()
        } else {
            Cmdline::parse(DEFAULT_CMDLINE)?
        };
        cmdline.push_str(&cfg.cmdline)?;
        let mem_size = cfg.mem_mib.saturating_mul(MIB);

        let kvm = open_kvm(cfg.linux_guest)?;
        let vm = kvm
            .create_vm()
            .map_err(|e| VmmError::VmIoctl("KVM_CREATE_VM", e))?;
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

        let mem = create_guest_memory(mem_size)?;
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

        let wake = Arc::new(eventfd()?);
        let panic_line = Arc::new(Mutex::new(None));
        let mut bus = Bus::new();

        // COM1: console, panic watch on the way out.
        let out = cfg
            .console_out
            .unwrap_or_else(|| Box::new(std::io::stdout()));
        let (w, writer, stats) = AsyncWriter::spawn("console-out", out, DEFAULT_QUEUE_BYTES)
            .map_err(|e| VmmError::Io("cannot start the console writer", e))?;
        let w2 = wake.clone();
        let watch = PanicWatch::new(
            w,
            panic_line.clone(),
            Some(Box::new(move || {
                let _ = w2.write(1);
            })),
        );
        let com1_irq = eventfd()?;
        vm.register_irqfd(&com1_irq, COM1_IRQ)
            .map_err(|e| VmmError::VmIoctl("KVM_IRQFD", e))?;
        let com1_dev = Arc::new(Mutex::new(SerialDevice::new(
            com1_irq,
            wake.clone(),
            Box::new(watch),
        )));
        bus.add_pio(COM1_PORT, UART_PORTS, com1_dev.clone())?;
        let com1 = SerialPort {
            dev: com1_dev,
            input: cfg.console_in,
            writer,
            stats,
        };

        // COM2: a slot whose backend is attached later (discarding until then).
        let com2_irq = eventfd()?;
        vm.register_irqfd(&com2_irq, COM2_IRQ)
            .map_err(|e| VmmError::VmIoctl("KVM_IRQFD", e))?;
        let com2_dev = Arc::new(Mutex::new(None));
        bus.add_pio(
            COM2_PORT,
            UART_PORTS,
            Arc::new(Mutex::new(Com2Slot(com2_dev.clone()))),
        )?;

        bus.add_pio(
            I8042_DATA_PORT,
            I8042_PORTS,
            Arc::new(Mutex::new(I8042::new())),
        )?;

        Ok(Vmm {
            kvm,
            vm,
            mem,
            mem_size,
            cpus,
            kernel,
            initramfs,
            cmdline,
            timeout: cfg.timeout,
            bus,
            wake,
            panic_line,
            com1,
            com2: None,
            com2_dev,
            com2_irq,
            next_virtio: 0,
            virtio_devices: Vec::new(),
            virtio_irqs: Vec::new(),
            created,
        })
    }

    /// Guest memory (for building devices).
    pub fn guest_memory(&self) -> &GuestMem {
        &self.mem
    }

    /// The kernel command line as it stands.
    pub fn cmdline(&self) -> String {
        self.cmdline.as_string()
    }

    /// Connects COM2 (ttyS1 in the guest) to `backend`: the host<->guest-init control channel.
    pub fn attach_com2(&mut self, backend: SerialBackend) -> Result<(), VmmError> {
        let (w, writer, stats) = AsyncWriter::spawn("com2-out", backend.out, DEFAULT_QUEUE_BYTES)
            .map_err(|e| VmmError::Io("cannot start the COM2 writer", e))?;
        let irq = self
            .com2_irq
            .try_clone()
            .map_err(|e| VmmError::Io("cannot clone an eventfd", e))?;
        let dev = Arc::new(Mutex::new(SerialDevice::new(
            irq,
            self.wake.clone(),
            Box::new(w),
        )));
        *lock(&self.com2_dev) = Some(dev.clone());
        self.com2 = Some(SerialPort {
            dev,
            input: backend.input,
            writer,
            stats,
        });
        Ok(())
    }

    /// Registers a virtio-mmio device: allocates a 4 KiB slot in the MMIO gap and a GSI, calls
    /// `make(guest memory, irq eventfd)` to build the transport, places it on the bus, registers
    /// its queue-notify ioeventfds (base + 0x50, datamatch = queue index) and the irqfd, and
    /// appends `virtio_mmio.device=4K@<base>:<gsi>` to the kernel command line.
    pub fn add_virtio_mmio<D, F>(&mut self, make: F) -> Result<MmioSlot, VmmError>
    where
        D: VirtioMmio + 'static,
        F: FnOnce(GuestMem, EventFd) -> D,
    {
        let idx = self.next_virtio;
        let base = VIRTIO_MMIO_START + idx as u64 * VIRTIO_MMIO_SLOT_SIZE;
        let gsi = *VIRTIO_GSIS.get(idx).ok_or(VmmError::NoVirtioSlot)?;
        if base + VIRTIO_MMIO_SLOT_SIZE > VIRTIO_MMIO_END {
            return Err(VmmError::NoVirtioSlot);
        }
        // Command line first: if it is full, nothing has been registered.
        let mut cmdline = self.cmdline.clone();
        cmdline.add_virtio_mmio_device(VIRTIO_MMIO_SLOT_SIZE, base, gsi)?;

        let irq = eventfd()?;
        self.vm
            .register_irqfd(&irq, gsi)
            .map_err(|e| VmmError::VmIoctl("KVM_IRQFD", e))?;
        let irq_dev = irq
            .try_clone()
            .map_err(|e| VmmError::Io("cannot clone an eventfd", e))?;
        let dev = make(self.mem.clone(), irq_dev);
        for (i, evt) in dev.queue_evts().iter().enumerate() {
            self.vm
                .register_ioevent(
                    evt,
                    &IoEventAddress::Mmio(base + VIRTIO_MMIO_QUEUE_NOTIFY),
                    i as u32,
                )
                .map_err(|e| VmmError::VmIoctl("KVM_IOEVENTFD", e))?;
        }
        let dev = Arc::new(Mutex::new(dev));
        self.bus
            .add_mmio(base, VIRTIO_MMIO_SLOT_SIZE, dev.clone())?;
        self.virtio_devices.push(dev);
        self.virtio_irqs.push(irq);
        self.cmdline = cmdline;
        self.next_virtio += 1;
        Ok(MmioSlot { base, gsi })
    }

    /// Boots the guest and runs until it ends; returns how it ended and the console counters.
    pub fn run(self) -> Result<(VmOutcome, ConsoleStats), VmmError> {
        self.run_report().map(|(o, r)| (o, r.console))
    }

    /// As [`Vmm::run`], with timings and exit counts.
    pub fn run_report(mut self) -> Result<(VmOutcome, RunReport), VmmError> {
        let e820 = e820::e820_map(self.mem_size);
        let entry = boot::load(
            &self.mem,
            self.mem_size,
            &mut self.kernel,
            self.initramfs.as_mut(),
            &self.cmdline,
            &e820,
        )?;
        mptable::setup(&self.mem, self.cpus)?;
        vcpu::install_kick_handler()?;

        let mut vcpus = Vec::with_capacity(self.cpus.into());
        for id in 0..self.cpus {
            let fd = self
                .vm
                .create_vcpu(id.into())
                .map_err(|e| VmmError::VmIoctl("KVM_CREATE_VCPU", e))?;
            vcpu::configure(&self.kvm, &fd, &self.mem, id, self.cpus, &entry)?;
            vcpus.push(fd);
        }

        let bus = Arc::new(std::mem::take(&mut self.bus));
        let stop = Arc::new(AtomicBool::new(false));
        let ends: Arc<Mutex<Vec<(u8, VcpuEnd)>>> = Arc::new(Mutex::new(Vec::new()));
        let counts: Arc<Mutex<ExitCounts>> = Arc::new(Mutex::new(ExitCounts::new()));
        let mut threads = Vec::with_capacity(vcpus.len());
        for (id, mut fd) in vcpus.into_iter().enumerate() {
            let (bus, stop, ends, wake) =
                (bus.clone(), stop.clone(), ends.clone(), self.wake.clone());
            let all_counts = counts.clone();
            let t = std::thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || {
                    let mut mine = ExitCounts::new();
                    let run = std::panic::AssertUnwindSafe(|| {
                        vcpu::run_loop(&mut fd, &bus, &stop, &mut mine)
                    });
                    let end = std::panic::catch_unwind(run)
                        .unwrap_or_else(|_| VcpuEnd::Failed("vCPU thread panicked".into()));
                    let mut all = lock(&all_counts);
                    for (k, n) in mine {
                        *all.entry(k).or_insert(0) += n;
                    }
                    drop(all);
                    lock(&ends).push((id as u8, end));
                    let _ = wake.write(1);
                })
                .map_err(|e| VmmError::Io("cannot start a vCPU thread", e))?;
            threads.push(t);
        }

        let started = Instant::now();
        let setup = started.duration_since(self.created);
        let outcome = self.event_loop(&ends);
        let ended = Instant::now();

        // Stop: flag first, then kick until every thread has left KVM_RUN.
        stop.store(true, Ordering::SeqCst);
        loop {
            let mut running = 0;
            for t in &threads {
                if !t.is_finished() {
                    running += 1;
                    use vmm_sys_util::signal::Killable;
                    let _ = t.kill(vcpu::kick_signal());
                }
            }
            if running == 0 || ended.elapsed() > KICK_GIVE_UP {
                break;
            }
            std::thread::sleep(KICK_RETRY);
        }
        for t in threads {
            if t.is_finished() {
                let _ = t.join();
            }
        }

        let SerialPort { writer, stats, .. } = self.com1;
        writer.finish();
        if let Some(c) = self.com2 {
            c.writer.finish();
        }
        let console = ConsoleStats {
            written: stats.written.load(Ordering::Relaxed),
            dropped: stats.dropped.load(Ordering::Relaxed),
        };
        let exits = std::mem::take(&mut *lock(&counts));
        let report = RunReport {
            console,
            exits,
            setup,
            guest: ended.duration_since(started),
            teardown: ended.elapsed(),
        };
        Ok((outcome, report))
    }

    /// Waits for the VM to end, feeding console input meanwhile.
    fn event_loop(&mut self, ends: &Mutex<Vec<(u8, VcpuEnd)>>) -> VmOutcome {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let mut panic_deadline: Option<Instant> = None;
        let mut buf = [0u8; INPUT_CHUNK];
        loop {
            // Did the guest end?
            let ended = lock(ends).first().cloned();
            let panic = lock(&self.panic_line).clone();
            if let Some((id, end)) = ended {
                return match (end, panic) {
                    (_, Some(line)) => VmOutcome::Panic(line),
                    (VcpuEnd::Guest(VcpuAction::Reset), None) => VmOutcome::Reset,
                    (VcpuEnd::Guest(VcpuAction::PowerOff), None) => VmOutcome::PowerOff,
                    (VcpuEnd::Guest(VcpuAction::Halted), None) => {
                        VmOutcome::Failed(format!("vCPU {id} halted with no way to wake up"))
                    }
                    (VcpuEnd::Guest(VcpuAction::Continue), None) | (VcpuEnd::Stopped, None) => {
                        VmOutcome::Failed(format!("vCPU {id} stopped"))
                    }
                    (VcpuEnd::Failed(why), None) => VmOutcome::Failed(format!("vCPU {id}: {why}")),
                };
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
                fd: self.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let mut which = Vec::new();
            for (n, port) in [Some(&self.com1), self.com2.as_ref()]
                .into_iter()
                .enumerate()
            {
                if let Some(SerialPort {
                    dev,
                    input: Some(fd),
                    ..
                }) = port
                {
                    if lock(dev).input_room() > 0 {
                        fds.push(libc::pollfd {
                            fd: fd.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        });
                        which.push(n);
                    }
                }
            }
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
                let _ = self.wake.read();
            }
            for (p, n) in fds.iter().skip(1).zip(which) {
                if p.revents == 0 {
                    continue;
                }
                let port = if n == 0 {
                    Some(&mut self.com1)
                } else {
                    self.com2.as_mut()
                };
                let Some(port) = port else { continue };
                let room = lock(&port.dev).input_room().min(buf.len());
                let Some(fd) = port.input.as_ref() else {
                    continue;
                };
                // SAFETY: reading into a live buffer of at least `room` bytes from an owned fd.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), room) };
                if n > 0 {
                    let data = buf.get(..n as usize).unwrap_or_default();
                    lock(&port.dev).enqueue_input(data);
                } else if n == 0
                    || p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
                {
                    // EOF or a dead fd: stop reading this input.
                    port.input = None;
                }
            }
        }
    }
}
