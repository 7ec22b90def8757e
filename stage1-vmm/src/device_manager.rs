//! The VM's devices: both buses, the legacy devices (COM1 console, COM2 control channel, the
//! i8042) and the virtio-mmio slots, with the KVM wiring each needs (irqfds, ioeventfds) and the
//! kernel command-line entry each virtio slot needs. Modelled on cloud-hypervisor's
//! `DeviceManager` and vmm-reference's `MmioManager`: adding a device is one fallible step that
//! either wires everything or changes nothing the guest can see.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use kvm_ioctls::{IoEventAddress, VmFd};
use thiserror::Error;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::boot::cmdline::{Cmdline, CmdlineError};
use crate::bus::{Bus, BusError, DeviceAction, MmioDevice, PioDevice};
use crate::devices::legacy::i8042::{I8042_DATA_PORT, I8042_PORTS};
use crate::devices::legacy::output::{AsyncWriterHandle, DEFAULT_QUEUE_BYTES};
use crate::devices::legacy::serial::{COM1_IRQ, COM1_PORT, COM2_IRQ, COM2_PORT, UART_PORTS};
use crate::devices::legacy::{AsyncWriter, OutputStats, PanicWatch, SerialDevice, I8042};
use crate::devices::virtio::mmio::{MmioTransport, TransportError, QUEUE_NOTIFY_OFFSET};
use crate::devices::virtio::VirtioDevice;
use crate::memory::{GuestMem, VIRTIO_MMIO_END, VIRTIO_MMIO_SLOT_SIZE, VIRTIO_MMIO_START};
use crate::snapshot::state::{DevicesState, TransportState};

/// GSIs handed to virtio-mmio devices, in order: the IOAPIC pins not used by legacy ISA devices
/// (0 timer, 1 keyboard, 2 cascade, 3/4 serial, 8 RTC).
const VIRTIO_GSIS: &[u32] = &[
    5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
];

/// Errors adding a device.
#[derive(Debug, Error)]
pub enum DeviceError {
    /// Placing a device on the bus.
    #[error("cannot place a device on the bus")]
    Bus(#[from] BusError),
    /// A virtio transport's snapshot state cannot be taken or applied.
    #[error("virtio slot {slot}: {why}")]
    VirtioSnapshot {
        /// The slot index.
        slot: usize,
        /// Why.
        why: String,
    },
    /// No MMIO slot or GSI left for another virtio device.
    #[error("no virtio-mmio slot or interrupt left")]
    NoVirtioSlot,
    /// The kernel command line has no room for the device's entry.
    #[error("no room on the kernel command line for the device")]
    Cmdline(#[from] CmdlineError),
    /// The virtio-mmio transport could not be created.
    #[error("cannot create a virtio transport")]
    Transport(#[from] TransportError),
    /// Registering an irqfd or ioeventfd failed.
    #[error("VM ioctl {0} failed")]
    VmIoctl(&'static str, #[source] kvm_ioctls::Error),
    /// Creating an eventfd or a writer thread failed.
    #[error("{0}")]
    Io(&'static str, #[source] std::io::Error),
}

/// A virtio-mmio transport as the device manager registers it: an MMIO device plus one
/// queue-notify eventfd per queue (registered as ioeventfds at base + 0x50, datamatch = queue
/// index).
pub trait VirtioMmio: MmioDevice {
    /// The queue-notify eventfds, in queue order.
    fn queue_evts(&self) -> &[EventFd];
    /// The transport's state for a snapshot; `None`: this transport cannot be snapshotted.
    fn snapshot_state(&self) -> Option<TransportState> {
        None
    }
    /// Applies a snapshot's state to this (fresh) transport.
    fn restore_state(&mut self, _state: &TransportState) -> Result<(), String> {
        Err("this transport cannot be restored".into())
    }
    /// Stops the device's worker before a snapshot reads the transport and guest memory.
    fn quiesce(&mut self) {}
}

impl VirtioMmio for MmioTransport {
    fn queue_evts(&self) -> &[EventFd] {
        MmioTransport::queue_evts(self)
    }
    fn snapshot_state(&self) -> Option<TransportState> {
        Some(MmioTransport::snapshot_state(self))
    }
    fn restore_state(&mut self, state: &TransportState) -> Result<(), String> {
        MmioTransport::restore_state(self, state).map_err(|e| e.to_string())
    }
    fn quiesce(&mut self) {
        MmioTransport::quiesce(self)
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

impl MmioSlot {
    /// Slot number `idx`, if the MMIO area and the GSI list have room for it.
    fn nth(idx: usize) -> Option<MmioSlot> {
        let gsi = *VIRTIO_GSIS.get(idx)?;
        let base =
            VIRTIO_MMIO_START.checked_add(u64::try_from(idx).ok()? * VIRTIO_MMIO_SLOT_SIZE)?;
        (base + VIRTIO_MMIO_SLOT_SIZE <= VIRTIO_MMIO_END).then_some(MmioSlot { base, gsi })
    }
}

/// A serial port's host side: what the guest writes goes to `out`; what `input` yields is fed
/// to the guest.
pub struct SerialBackend {
    /// Output sink; written from a dedicated thread ([`AsyncWriter`]), so it may block.
    pub out: Box<dyn Write + Send>,
    /// Input (a pipe, socket or tty); read when readable, EOF ends input.
    pub input: Option<OwnedFd>,
}

impl SerialBackend {
    /// Output to this process's stdout, no input.
    pub fn stdout() -> Self {
        SerialBackend {
            out: Box::new(std::io::stdout()),
            input: None,
        }
    }
}

/// Console output statistics after a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsoleStats {
    /// Bytes written to the console output.
    pub written: u64,
    /// Bytes dropped because the console output could not keep up.
    pub dropped: u64,
}

/// A connected UART: the device, its input fd and its output writer thread.
struct SerialPort {
    dev: Arc<Mutex<SerialDevice>>,
    input: Option<OwnedFd>,
    writer: AsyncWriterHandle,
    stats: Arc<OutputStats>,
}

/// What sits at COM2's ports: nothing until a backend is attached.
type Com2Cell = Arc<Mutex<Option<Arc<Mutex<SerialDevice>>>>>;

/// COM2's slot on the bus forwards to the attached device; with none, it floats (reads 0xff,
/// so the guest's 8250 driver finds no UART there).
struct Com2Slot(Com2Cell);

impl PioDevice for Com2Slot {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        match lock(&self.0).as_ref() {
            Some(d) => lock(d).read(offset, data),
            None => data.fill(0xff),
        }
    }
    fn write(&mut self, offset: u16, data: &[u8]) -> DeviceAction {
        match lock(&self.0).as_ref() {
            Some(d) => lock(d).write(offset, data),
            None => DeviceAction::None,
        }
    }
}

/// COM2: the bus slot, its irqfd (registered at creation) and, once attached, its port.
struct Com2 {
    cell: Com2Cell,
    irq: EventFd,
    port: Option<SerialPort>,
}

/// One registered virtio-mmio device.
struct VirtioSlot {
    /// Kept so the transport (and its worker) lives as long as the VM, also off the bus.
    _dev: Arc<Mutex<dyn VirtioMmio>>,
    /// The irqfd: registered for the VM's life, so kept open with it.
    _irq: EventFd,
}

/// The VM's devices and buses (see the module docs).
pub struct DeviceManager {
    bus: Bus,
    com1: SerialPort,
    com2: Com2,
    i8042: Arc<Mutex<I8042>>,
    virtio: Vec<VirtioSlot>,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn eventfd() -> Result<EventFd, DeviceError> {
    EventFd::new(EFD_NONBLOCK).map_err(|e| DeviceError::Io("cannot create an eventfd", e))
}

fn register_irqfd(vm: &VmFd, evt: &EventFd, gsi: u32) -> Result<(), DeviceError> {
    vm.register_irqfd(evt, gsi)
        .map_err(|e| DeviceError::VmIoctl("KVM_IRQFD", e))
}

impl DeviceManager {
    /// Puts the legacy devices on a new bus: COM1 with `console` (its output passes through a
    /// [`PanicWatch`] that stores the kernel's panic line in `panic_line` and signals `wake`),
    /// a floating COM2 slot and the i8042. `wake` is also signalled when the guest drains a
    /// UART's input FIFO.
    pub fn new(
        vm: &VmFd,
        console: SerialBackend,
        wake: &Arc<EventFd>,
        panic_line: &Arc<Mutex<Option<String>>>,
    ) -> Result<DeviceManager, DeviceError> {
        let mut bus = Bus::new();

        // COM1: console, panic watch on the way out.
        let (w, writer, stats) =
            AsyncWriter::spawn("console-out", console.out, DEFAULT_QUEUE_BYTES)
                .map_err(|e| DeviceError::Io("cannot start the console writer", e))?;
        let w2 = wake.clone();
        let watch = PanicWatch::new(
            w,
            panic_line.clone(),
            Some(Box::new(move || {
                let _ = w2.write(1);
            })),
        );
        let com1_irq = eventfd()?;
        register_irqfd(vm, &com1_irq, COM1_IRQ)?;
        let com1_dev = Arc::new(Mutex::new(SerialDevice::new(
            com1_irq,
            wake.clone(),
            Box::new(watch),
        )));
        bus.add_pio(COM1_PORT, UART_PORTS, com1_dev.clone())?;
        let com1 = SerialPort {
            dev: com1_dev,
            input: console.input,
            writer,
            stats,
        };

        // COM2: a slot whose backend is attached later (floating until then).
        let com2_irq = eventfd()?;
        register_irqfd(vm, &com2_irq, COM2_IRQ)?;
        let cell: Com2Cell = Arc::new(Mutex::new(None));
        bus.add_pio(
            COM2_PORT,
            UART_PORTS,
            Arc::new(Mutex::new(Com2Slot(cell.clone()))),
        )?;

        let i8042 = Arc::new(Mutex::new(I8042::new()));
        bus.add_pio(I8042_DATA_PORT, I8042_PORTS, i8042.clone())?;

        Ok(DeviceManager {
            bus,
            com1,
            com2: Com2 {
                cell,
                irq: com2_irq,
                port: None,
            },
            i8042,
            virtio: Vec::new(),
        })
    }

    /// Connects COM2 (ttyS1 in the guest) to `backend`; `wake` is signalled when the guest
    /// drains its input FIFO.
    pub fn attach_com2(
        &mut self,
        backend: SerialBackend,
        wake: &Arc<EventFd>,
    ) -> Result<(), DeviceError> {
        let (w, writer, stats) = AsyncWriter::spawn("com2-out", backend.out, DEFAULT_QUEUE_BYTES)
            .map_err(|e| DeviceError::Io("cannot start the COM2 writer", e))?;
        let irq = self
            .com2
            .irq
            .try_clone()
            .map_err(|e| DeviceError::Io("cannot clone an eventfd", e))?;
        let dev = Arc::new(Mutex::new(SerialDevice::new(
            irq,
            wake.clone(),
            Box::new(w),
        )));
        *lock(&self.com2.cell) = Some(dev.clone());
        self.com2.port = Some(SerialPort {
            dev,
            input: backend.input,
            writer,
            stats,
        });
        Ok(())
    }

    /// Adds a virtio device behind a new virtio-mmio transport: see
    /// [`DeviceManager::add_virtio_transport`].
    pub fn add_virtio(
        &mut self,
        vm: &VmFd,
        mem: &GuestMem,
        cmdline: &mut Cmdline,
        device: Box<dyn VirtioDevice>,
    ) -> Result<MmioSlot, DeviceError> {
        self.add_virtio_transport(vm, mem, cmdline, |mem, irq| {
            Ok(MmioTransport::new(mem, device, irq)?)
        })
    }

    /// Registers a virtio-mmio transport in one step: takes the next 4 KiB slot in the MMIO gap
    /// and the next GSI, registers an irqfd for the GSI, builds the transport with
    /// `make(guest memory, irq eventfd)`, registers its queue-notify ioeventfds (base + 0x50,
    /// datamatch = queue index), places it on the MMIO bus and appends
    /// `virtio_mmio.device=4K@<base>:<gsi>` to `cmdline`. On error the slot stays free and
    /// `cmdline` is unchanged, so a slot never lacks its command-line entry.
    pub fn add_virtio_transport<D, F>(
        &mut self,
        vm: &VmFd,
        mem: &GuestMem,
        cmdline: &mut Cmdline,
        make: F,
    ) -> Result<MmioSlot, DeviceError>
    where
        D: VirtioMmio + 'static,
        F: FnOnce(GuestMem, EventFd) -> Result<D, DeviceError>,
    {
        let slot = MmioSlot::nth(self.virtio.len()).ok_or(DeviceError::NoVirtioSlot)?;
        // Command line first: if it is full, nothing has been registered.
        let mut new_cmdline = cmdline.clone();
        new_cmdline.add_virtio_mmio_device(VIRTIO_MMIO_SLOT_SIZE, slot.base, slot.gsi)?;

        let irq = eventfd()?;
        let irq_dev = irq
            .try_clone()
            .map_err(|e| DeviceError::Io("cannot clone an eventfd", e))?;
        let dev = make(mem.clone(), irq_dev)?;
        register_irqfd(vm, &irq, slot.gsi)?;
        let notify = IoEventAddress::Mmio(slot.base + QUEUE_NOTIFY_OFFSET);
        let mut registered = 0;
        let mut result = Ok(());
        for (i, evt) in dev.queue_evts().iter().enumerate() {
            result = vm
                .register_ioevent(evt, &notify, i as u32)
                .map_err(|e| DeviceError::VmIoctl("KVM_IOEVENTFD", e));
            if result.is_err() {
                break;
            }
            registered += 1;
        }
        let dev = Arc::new(Mutex::new(dev));
        if result.is_ok() {
            result = self
                .bus
                .add_mmio(slot.base, VIRTIO_MMIO_SLOT_SIZE, dev.clone())
                .map_err(DeviceError::from);
        }
        if let Err(e) = result {
            // Undo, so the GSI and the notify address are free again.
            for (i, evt) in lock(&dev).queue_evts().iter().take(registered).enumerate() {
                let _ = vm.unregister_ioevent(evt, &notify, i as u32);
            }
            let _ = vm.unregister_irqfd(&irq, slot.gsi);
            return Err(e);
        }
        self.virtio.push(VirtioSlot {
            _dev: dev,
            _irq: irq,
        });
        *cmdline = new_cmdline;
        Ok(slot)
    }

    /// Places another port-I/O device (the snapshot port) on the bus.
    pub fn add_pio(
        &mut self,
        base: u16,
        len: u16,
        dev: Arc<Mutex<dyn PioDevice>>,
    ) -> Result<(), DeviceError> {
        Ok(self.bus.add_pio(base, len, dev)?)
    }

    /// Stops every virtio device's worker (see [`MmioTransport::quiesce`]): a snapshot-making VM
    /// calls it once its vCPUs are stopped, before it reads [`Self::virtio_state`] and guest
    /// memory, so that the queues and memory it saves are the same moment's.
    pub fn quiesce_virtio(&self) {
        for v in &self.virtio {
            lock(&v._dev).quiesce();
        }
    }

    /// Every virtio transport's state, in slot order, for a snapshot.
    pub fn virtio_state(&self) -> Result<Vec<TransportState>, DeviceError> {
        self.virtio
            .iter()
            .enumerate()
            .map(|(slot, v)| {
                lock(&v._dev)
                    .snapshot_state()
                    .ok_or(DeviceError::VirtioSnapshot {
                        slot,
                        why: "this transport cannot be snapshotted".into(),
                    })
            })
            .collect()
    }

    /// Applies a snapshot's virtio states: this VM must have the same devices in the same slots
    /// (by type and queue count); each live one is activated with its fresh backend.
    pub fn set_virtio_state(&mut self, states: &[TransportState]) -> Result<(), DeviceError> {
        if states.len() != self.virtio.len() {
            return Err(DeviceError::VirtioSnapshot {
                slot: self.virtio.len().min(states.len()),
                why: format!(
                    "the snapshot has {} virtio devices, this VM {}",
                    states.len(),
                    self.virtio.len()
                ),
            });
        }
        for (slot, (v, s)) in self.virtio.iter().zip(states).enumerate() {
            lock(&v._dev)
                .restore_state(s)
                .map_err(|why| DeviceError::VirtioSnapshot { slot, why })?;
        }
        Ok(())
    }

    /// The legacy devices' state, for a snapshot.
    pub fn legacy_state(&self) -> DevicesState {
        DevicesState {
            com1: lock(&self.com1.dev).state(),
            com2: self.com2.port.as_ref().map(|p| lock(&p.dev).state()),
            i8042: lock(&self.i8042).state(),
        }
    }

    /// Puts the legacy devices in state `s` (from a snapshot). COM2's state applies when a
    /// backend is attached (a snapshot's COM2 without one here is dropped: the port floats).
    pub fn set_legacy_state(&mut self, s: &DevicesState) -> Result<(), DeviceError> {
        let bad = |e| DeviceError::Io("cannot restore a UART", e);
        lock(&self.com1.dev).set_state(&s.com1).map_err(bad)?;
        if let (Some(port), Some(st)) = (self.com2.port.as_ref(), s.com2.as_ref()) {
            lock(&port.dev).set_state(st).map_err(bad)?;
        }
        lock(&self.i8042).set_state(&s.i8042);
        Ok(())
    }

    /// The buses, for the vCPU threads (leaves an empty bus behind; devices stay registered
    /// here and live until the manager is dropped).
    pub fn take_bus(&mut self) -> Bus {
        std::mem::take(&mut self.bus)
    }

    /// Appends a `pollfd` for each console input that has room in its UART FIFO; returns which
    /// port each one is (0 = COM1, 1 = COM2), in order, for [`DeviceManager::feed_input`].
    pub fn input_pollfds(&self, fds: &mut Vec<libc::pollfd>) -> Vec<usize> {
        let mut which = Vec::new();
        for (n, port) in self.ports().into_iter().enumerate() {
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
        which
    }

    /// Reads what fits into port `n`'s FIFO (`revents` from poll); EOF or a dead fd ends that
    /// input. `buf` bounds one read.
    pub fn feed_input(&mut self, n: usize, revents: libc::c_short, buf: &mut [u8]) {
        let port = if n == 0 {
            Some(&mut self.com1)
        } else {
            self.com2.port.as_mut()
        };
        let Some(port) = port else { return };
        let room = lock(&port.dev).input_room().min(buf.len());
        let Some(fd) = port.input.as_ref() else {
            return;
        };
        // SAFETY: reading into a live buffer of at least `room` bytes from an owned fd.
        let got = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), room) };
        if got > 0 {
            let data = buf.get(..got as usize).unwrap_or_default();
            lock(&port.dev).enqueue_input(data);
        } else if got == 0 || revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            // EOF or a dead fd: stop reading this input.
            port.input = None;
        }
    }

    fn ports(&self) -> [Option<&SerialPort>; 2] {
        [Some(&self.com1), self.com2.port.as_ref()]
    }

    /// Ends the devices: flushes and stops both serial writers, then drops the virtio
    /// transports (each device's worker flushes what the guest queued, see docs/virtio.md);
    /// returns COM1's counters.
    pub fn finish(self) -> ConsoleStats {
        let DeviceManager {
            bus,
            com1,
            com2,
            i8042: _,
            virtio,
        } = self;
        com1.writer.finish();
        if let Some(port) = com2.port {
            port.writer.finish();
        }
        let stats = ConsoleStats {
            written: com1.stats.written.load(Ordering::Relaxed),
            dropped: com1.stats.dropped.load(Ordering::Relaxed),
        };
        drop(bus);
        drop(virtio);
        stats
    }
}
