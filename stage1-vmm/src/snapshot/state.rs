//! A snapshot's state as plain data ([`SnapshotState`]: the machine's shape, the VM's and each
//! vCPU's KVM state, the legacy devices) and its encoding in the state file ([`super::format`]).
//! Guest memory is not here: it is its own file ([`super::memory`]).

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_fpu, kvm_irqchip, kvm_lapic_state,
    kvm_mp_state, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};

use super::format::{FormatError, Pod, Reader, Writer};

// The impls below: KVM's x86 ABI structures, `repr(C)` and made of integers, arrays of integers
// and unions of those, with explicit padding fields: every bit pattern is valid and no byte is
// implicit padding (bindgen's layout tests pin the sizes).
// SAFETY: see above.
unsafe impl Pod for kvm_regs {}
// SAFETY: see above.
unsafe impl Pod for kvm_sregs {}
// SAFETY: see above.
unsafe impl Pod for kvm_fpu {}
// SAFETY: see above (`extra` is zero-sized).
unsafe impl Pod for kvm_xsave {}
// SAFETY: see above.
unsafe impl Pod for kvm_xcrs {}
// SAFETY: see above.
unsafe impl Pod for kvm_lapic_state {}
// SAFETY: see above.
unsafe impl Pod for kvm_mp_state {}
// SAFETY: see above.
unsafe impl Pod for kvm_vcpu_events {}
// SAFETY: see above.
unsafe impl Pod for kvm_debugregs {}
// SAFETY: see above.
unsafe impl Pod for kvm_irqchip {}
// SAFETY: see above.
unsafe impl Pod for kvm_pit_state2 {}
// SAFETY: see above.
unsafe impl Pod for kvm_clock_data {}
// SAFETY: see above.
unsafe impl Pod for kvm_cpuid_entry2 {}

/// One vCPU's state, in the order [`super::kvm_state::restore_vcpu`] sets it.
#[derive(Debug, Default)]
pub struct VcpuState {
    /// CPUID as the vCPU had it (KVM_GET_CPUID2).
    pub cpuid: Vec<kvm_cpuid_entry2>,
    /// (index, value) of every MSR KVM lists and lets us read.
    pub msrs: Vec<(u32, u64)>,
    /// General registers.
    pub regs: kvm_regs,
    /// Segment and control registers.
    pub sregs: kvm_sregs,
    /// Legacy FPU state (XSAVE below supersedes it where the host has XSAVE).
    pub fpu: kvm_fpu,
    /// XSAVE area (4 KiB).
    pub xsave: kvm_xsave,
    /// Extended control registers.
    pub xcrs: kvm_xcrs,
    /// Local APIC registers.
    pub lapic: kvm_lapic_state,
    /// Multiprocessing state (runnable, halted...).
    pub mp_state: kvm_mp_state,
    /// Pending exceptions, interrupts, NMIs, SMIs.
    pub events: kvm_vcpu_events,
    /// Debug registers.
    pub debugregs: kvm_debugregs,
}

/// The VM-wide KVM state: the in-kernel irqchip, PIT and clock.
#[derive(Debug, Default)]
pub struct VmState {
    /// PIC master, PIC slave, IOAPIC (KVM_GET_IRQCHIP with chip ids 0, 1, 2).
    pub irqchips: [kvm_irqchip; 3],
    /// The PIT.
    pub pit: kvm_pit_state2,
    /// The KVM clock.
    pub clock: kvm_clock_data,
}

/// A UART's registers and input FIFO (vm-superio's `SerialState`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UartState {
    /// DLL, DLM, IER, IIR, LCR, LSR, MCR, MSR, SCR in that order.
    pub regs: [u8; 9],
    /// Bytes queued for the guest (at most the 64-byte FIFO).
    pub input: Vec<u8>,
}

/// The i8042's controller state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct I8042State {
    /// Controller configuration byte.
    pub ctr: u8,
    /// Output port.
    pub outp: u8,
    /// A command waiting for its data byte.
    pub cmd_pending: Option<u8>,
    /// Bytes queued for the guest.
    pub out: Vec<u8>,
    /// The last write was a command.
    pub last_was_cmd: bool,
}

/// The legacy devices' state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevicesState {
    /// COM1 (the console).
    pub com1: UartState,
    /// COM2, when a backend was attached.
    pub com2: Option<UartState>,
    /// The i8042.
    pub i8042: I8042State,
}

/// One virtio queue as the driver configured it, and the device's position in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueState {
    /// Queue size (entries).
    pub size: u16,
    /// QueueReady.
    pub ready: bool,
    /// Descriptor table (guest physical).
    pub desc: u64,
    /// Available ring (guest physical).
    pub avail: u64,
    /// Used ring (guest physical).
    pub used: u64,
    /// The device's next available-ring index.
    pub next_avail: u16,
    /// The device's next used-ring index.
    pub next_used: u16,
}

/// One virtio-mmio transport ([`crate::devices::virtio::mmio::snapshot`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportState {
    /// The virtio device type (must match the restoring VM's device in that slot).
    pub device_type: u32,
    /// The status register.
    pub status_reg: u32,
    /// Features the driver accepted.
    pub driver_features: u64,
    /// DeviceFeaturesSel.
    pub device_features_sel: u32,
    /// DriverFeaturesSel.
    pub driver_features_sel: u32,
    /// QueueSel.
    pub queue_sel: u32,
    /// InterruptStatus.
    pub interrupt_status: u32,
    /// ConfigGeneration.
    pub config_generation: u32,
    /// The queues, in order.
    pub queues: Vec<QueueState>,
}

/// Everything in the state file.
#[derive(Debug, Default)]
pub struct SnapshotState {
    /// Guest RAM (bytes); the memory file has exactly this length.
    pub mem_size: u64,
    /// The VM's state.
    pub vm: VmState,
    /// One entry per vCPU.
    pub vcpus: Vec<VcpuState>,
    /// The legacy devices.
    pub devices: DevicesState,
    /// The virtio-mmio transports, in slot order.
    pub virtio: Vec<TransportState>,
}

/// Most MSRs or CPUID entries one vCPU may carry (KVM's own limits are 256 and 80).
const MAX_LIST: usize = 1024;
/// Most vCPUs a snapshot may carry.
const MAX_VCPUS: usize = 255;
/// Most virtio transports (the MMIO slots' GSIs) and queues per transport.
const MAX_VIRTIO: usize = 64;

fn put_transport(w: &mut Writer, t: &TransportState) {
    for v in [
        t.device_type,
        t.status_reg,
        t.device_features_sel,
        t.driver_features_sel,
        t.queue_sel,
        t.interrupt_status,
        t.config_generation,
    ] {
        w.u32(v);
    }
    w.u64(t.driver_features);
    w.u32(t.queues.len() as u32);
    for q in &t.queues {
        w.u32(u32::from(q.size));
        w.u8(u8::from(q.ready));
        w.u64(q.desc);
        w.u64(q.avail);
        w.u64(q.used);
        w.u32(u32::from(q.next_avail));
        w.u32(u32::from(q.next_used));
    }
}

fn get_u16(r: &mut Reader<'_>, what: &'static str) -> Result<u16, FormatError> {
    u16::try_from(r.u32(what)?).map_err(|_| FormatError::BadField(what))
}

fn get_transport(r: &mut Reader<'_>) -> Result<TransportState, FormatError> {
    let device_type = r.u32("virtio device type")?;
    let status_reg = r.u32("virtio status")?;
    let device_features_sel = r.u32("virtio features sel")?;
    let driver_features_sel = r.u32("virtio features sel")?;
    let queue_sel = r.u32("virtio queue sel")?;
    let interrupt_status = r.u32("virtio interrupt status")?;
    let config_generation = r.u32("virtio config generation")?;
    let driver_features = r.u64("virtio driver features")?;
    let n = r.count("virtio queue count", 37)?;
    if n > MAX_VIRTIO {
        return Err(FormatError::BadField("virtio queue count"));
    }
    let mut queues = Vec::with_capacity(n);
    for _ in 0..n {
        let size = get_u16(r, "queue size")?;
        let ready = match r.u8("queue ready")? {
            0 => false,
            1 => true,
            _ => return Err(FormatError::BadField("queue ready")),
        };
        queues.push(QueueState {
            size,
            ready,
            desc: r.u64("queue desc")?,
            avail: r.u64("queue avail")?,
            used: r.u64("queue used")?,
            next_avail: get_u16(r, "queue next avail")?,
            next_used: get_u16(r, "queue next used")?,
        });
    }
    Ok(TransportState {
        device_type,
        status_reg,
        driver_features,
        device_features_sel,
        driver_features_sel,
        queue_sel,
        interrupt_status,
        config_generation,
        queues,
    })
}

fn put_uart(w: &mut Writer, u: &UartState) {
    w.bytes(&u.regs);
    w.bytes(&u.input);
}

fn get_uart(r: &mut Reader<'_>) -> Result<UartState, FormatError> {
    let regs: [u8; 9] = r
        .bytes("uart registers")?
        .try_into()
        .map_err(|_| FormatError::BadField("uart registers"))?;
    let input = r.bytes("uart input")?;
    if input.len() > 64 {
        return Err(FormatError::BadField("uart input"));
    }
    Ok(UartState {
        regs,
        input: input.to_vec(),
    })
}

fn put_vcpu(w: &mut Writer, v: &VcpuState) {
    w.u32(v.cpuid.len() as u32);
    for e in &v.cpuid {
        w.pod(e);
    }
    w.u32(v.msrs.len() as u32);
    for (i, d) in &v.msrs {
        w.u32(*i);
        w.u64(*d);
    }
    w.pod(&v.regs);
    w.pod(&v.sregs);
    w.pod(&v.fpu);
    w.pod(&v.xsave);
    w.pod(&v.xcrs);
    w.pod(&v.lapic);
    w.pod(&v.mp_state);
    w.pod(&v.events);
    w.pod(&v.debugregs);
}

fn get_vcpu(r: &mut Reader<'_>) -> Result<VcpuState, FormatError> {
    let n = r.count("cpuid count", 4)?;
    if n > MAX_LIST {
        return Err(FormatError::BadField("cpuid count"));
    }
    let cpuid = (0..n)
        .map(|_| r.pod("cpuid entry"))
        .collect::<Result<_, _>>()?;
    let n = r.count("msr count", 12)?;
    if n > MAX_LIST {
        return Err(FormatError::BadField("msr count"));
    }
    let msrs = (0..n)
        .map(|_| Ok((r.u32("msr index")?, r.u64("msr value")?)))
        .collect::<Result<_, FormatError>>()?;
    Ok(VcpuState {
        cpuid,
        msrs,
        regs: r.pod("regs")?,
        sregs: r.pod("sregs")?,
        fpu: r.pod("fpu")?,
        xsave: r.pod("xsave")?,
        xcrs: r.pod("xcrs")?,
        lapic: r.pod("lapic")?,
        mp_state: r.pod("mp_state")?,
        events: r.pod("vcpu_events")?,
        debugregs: r.pod("debugregs")?,
    })
}

impl SnapshotState {
    /// The state file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u64(self.mem_size);
        for c in &self.vm.irqchips {
            w.pod(c);
        }
        w.pod(&self.vm.pit);
        w.pod(&self.vm.clock);
        w.u32(self.vcpus.len() as u32);
        for v in &self.vcpus {
            put_vcpu(&mut w, v);
        }
        let d = &self.devices;
        put_uart(&mut w, &d.com1);
        match &d.com2 {
            Some(u) => {
                w.u8(1);
                put_uart(&mut w, u);
            }
            None => w.u8(0),
        }
        let k = &d.i8042;
        w.u8(k.ctr);
        w.u8(k.outp);
        match k.cmd_pending {
            Some(c) => {
                w.u8(1);
                w.u8(c);
            }
            None => {
                w.u8(0);
                w.u8(0);
            }
        }
        w.bytes(&k.out);
        w.u8(u8::from(k.last_was_cmd));
        w.u32(self.virtio.len() as u32);
        for t in &self.virtio {
            put_transport(&mut w, t);
        }
        w.finish()
    }

    /// Parses a state file; every error names the field.
    pub fn decode(file: &[u8]) -> Result<SnapshotState, FormatError> {
        let mut r = Reader::open(file)?;
        let mem_size = r.u64("memory size")?;
        if !(crate::memory::MIN_MEM_SIZE..=crate::memory::MAX_MEM_SIZE).contains(&mem_size)
            || mem_size % crate::memory::MIB != 0
        {
            return Err(FormatError::BadField("memory size"));
        }
        let irqchips = [r.pod("pic master")?, r.pod("pic slave")?, r.pod("ioapic")?];
        let vm = VmState {
            irqchips,
            pit: r.pod("pit")?,
            clock: r.pod("clock")?,
        };
        let n = r.count("vcpu count", 1)?;
        if n == 0 || n > MAX_VCPUS {
            return Err(FormatError::BadField("vcpu count"));
        }
        let vcpus = (0..n).map(|_| get_vcpu(&mut r)).collect::<Result<_, _>>()?;
        let com1 = get_uart(&mut r)?;
        let com2 = match r.u8("com2 present")? {
            0 => None,
            1 => Some(get_uart(&mut r)?),
            _ => return Err(FormatError::BadField("com2 present")),
        };
        let ctr = r.u8("i8042 ctr")?;
        let outp = r.u8("i8042 outp")?;
        let has_cmd = r.u8("i8042 pending")?;
        let cmd = r.u8("i8042 pending")?;
        let cmd_pending = match has_cmd {
            0 => None,
            1 => Some(cmd),
            _ => return Err(FormatError::BadField("i8042 pending")),
        };
        let out = r.bytes("i8042 queue")?;
        if out.len() > 16 {
            return Err(FormatError::BadField("i8042 queue"));
        }
        let last_was_cmd = match r.u8("i8042 last")? {
            0 => false,
            1 => true,
            _ => return Err(FormatError::BadField("i8042 last")),
        };
        let n = r.count("virtio count", 40)?;
        if n > MAX_VIRTIO {
            return Err(FormatError::BadField("virtio count"));
        }
        let virtio = (0..n)
            .map(|_| get_transport(&mut r))
            .collect::<Result<_, _>>()?;
        r.end()?;
        Ok(SnapshotState {
            virtio,
            mem_size,
            vm,
            vcpus,
            devices: DevicesState {
                com1,
                com2,
                i8042: I8042State {
                    ctr,
                    outp,
                    cmd_pending,
                    out: out.to_vec(),
                    last_was_cmd,
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SnapshotState {
        let mut v = VcpuState {
            cpuid: vec![kvm_cpuid_entry2 {
                function: 1,
                eax: 0x806f8,
                ..Default::default()
            }],
            msrs: vec![(0x10, 12345), (0xc000_0082, 0xffff_ffff_8100_0000)],
            ..Default::default()
        };
        v.regs.rip = 0xffff_ffff_8100_1234;
        v.sregs.cr3 = 0x1000;
        v.xsave.region[3] = 42;
        v.lapic.regs[0x20] = 1;
        v.mp_state.mp_state = 0;
        v.events.exception.nr = 3;
        let mut vm = VmState::default();
        vm.irqchips[2].chip_id = 2;
        vm.pit.channels[0].count = 0x1234;
        vm.clock.clock = 987_654_321;
        SnapshotState {
            mem_size: 128 << 20,
            vm,
            vcpus: vec![v],
            devices: DevicesState {
                com1: UartState {
                    regs: [1, 0, 3, 0xc1, 3, 0x60, 8, 0xb0, 0],
                    input: b"ab".to_vec(),
                },
                com2: None,
                i8042: I8042State {
                    ctr: 0x45,
                    outp: 1,
                    cmd_pending: Some(0x60),
                    out: vec![0x55],
                    last_was_cmd: true,
                },
            },
            virtio: vec![TransportState {
                device_type: 26,
                status_reg: 15,
                driver_features: 1 << 32,
                queues: vec![QueueState {
                    size: 128,
                    ready: true,
                    desc: 0x1000,
                    avail: 0x2000,
                    used: 0x3000,
                    next_avail: 5,
                    next_used: 5,
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let f = s.encode();
        let back = SnapshotState::decode(&f).expect("decodes");
        assert_eq!(back.encode(), f, "re-encoding is identical");
        assert_eq!(back.mem_size, 128 << 20);
        assert_eq!(back.vcpus.len(), 1);
        let v = &back.vcpus[0];
        assert_eq!(v.regs.rip, 0xffff_ffff_8100_1234);
        assert_eq!(v.xsave.region[3], 42);
        assert_eq!(
            v.msrs,
            vec![(0x10, 12345), (0xc000_0082, 0xffff_ffff_8100_0000)]
        );
        assert_eq!(v.cpuid[0].eax, 0x806f8);
        assert_eq!(back.vm.clock.clock, 987_654_321);
        assert_eq!(back.vm.pit.channels[0].count, 0x1234);
        assert_eq!(back.devices, s.devices);
        assert_eq!(back.virtio, s.virtio);
    }

    #[test]
    fn truncated_or_corrupt_files_are_errors_not_panics() {
        let f = sample().encode();
        // Every truncation (a sample of lengths: the file is ~10 KiB) and flipped bytes.
        for n in (0..f.len()).step_by(7) {
            assert!(SnapshotState::decode(&f[..n]).is_err(), "len {n}");
        }
        for i in (0..f.len()).step_by(13) {
            let mut g = f.clone();
            g[i] = g[i].wrapping_add(1);
            assert!(SnapshotState::decode(&g).is_err(), "byte {i}");
        }
        assert!(SnapshotState::decode(&[]).is_err());
    }

    #[test]
    fn well_formed_files_with_bad_values_are_refused() {
        let mut s = sample();
        s.mem_size = 3; // below the minimum
        assert_eq!(
            SnapshotState::decode(&s.encode()).err(),
            Some(FormatError::BadField("memory size"))
        );
        let mut s = sample();
        s.vcpus.clear();
        assert_eq!(
            SnapshotState::decode(&s.encode()).err(),
            Some(FormatError::BadField("vcpu count"))
        );
        let mut s = sample();
        s.devices.com1.input = vec![0; 65];
        assert_eq!(
            SnapshotState::decode(&s.encode()).err(),
            Some(FormatError::BadField("uart input"))
        );
    }
}
