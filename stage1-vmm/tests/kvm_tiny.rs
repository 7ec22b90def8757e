//! KVM plumbing with tiny hand-made guests (a few instructions in 32-bit protected mode,
//! entered through the real PVH ELF path). They run on any working /dev/kvm, including this
//! host's PVM one; without /dev/kvm they skip loudly and ci/test.sh runs them inside
//! ci/nested-kvm (each is marked through `common::kvm_or_skip`).

mod common;

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use common::{asm, kvm_or_skip, linux_kvm_or_skip, pvh_elf, write_file, SharedBuf};
use stage1_vmm::{SerialBackend, VmConfig, VmOutcome, Vmm};

/// Guest memory of a tiny guest (MiB).
const TINY_MEM_MIB: u64 = 32;

/// A tiny guest: `code` on `cpus` vCPUs, stopped after `timeout`, its COM1 output going to the
/// returned buffer. The directory holds the kernel file: keep it until the VM has run.
fn tiny_vm(code: &[u8], cpus: u32, timeout: Duration) -> (Vmm, SharedBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = write_file(dir.path(), "tiny.elf", &pvh_elf(code));
    let out = SharedBuf::default();
    let mut cfg = VmConfig::new(kernel);
    cfg.linux_guest = false;
    cfg.mem_mib = TINY_MEM_MIB;
    cfg.cpus = cpus;
    cfg.timeout = Some(timeout);
    (
        Vmm::new(&cfg, console_to(&out)).expect("VM created"),
        out,
        dir,
    )
}

/// COM1 output into `out`, no input.
fn console_to(out: &SharedBuf) -> SerialBackend {
    SerialBackend {
        out: Box::new(out.clone()),
        input: None,
    }
}

/// Boots `code` as a tiny guest; returns the outcome, console text and run time.
fn run_tiny(
    code: &[u8],
    cpus: u32,
    timeout: Duration,
    com2: Option<SerialBackend>,
) -> (VmOutcome, String, Duration) {
    let (mut vmm, out, _dir) = tiny_vm(code, cpus, timeout);
    if let Some(b) = com2 {
        vmm.attach_com2(b).expect("COM2 attached");
    }
    let start = Instant::now();
    let (outcome, _stats) = vmm.run().expect("VM runs");
    (outcome, out.text(), start.elapsed())
}

#[test]
fn serial_output_then_i8042_reset() {
    if !kvm_or_skip("serial_output_then_i8042_reset") {
        return;
    }
    let mut code = asm::print(0x3f8, b"hello from L2\n");
    code.extend(asm::reset());
    let (outcome, text, _) = run_tiny(&code, 1, Duration::from_secs(30), None);
    assert_eq!(outcome, VmOutcome::Reset, "console: {text:?}");
    assert_eq!(text, "hello from L2\n");
}

#[test]
fn several_vcpus_are_created_and_torn_down() {
    if !kvm_or_skip("several_vcpus_are_created_and_torn_down") {
        return;
    }
    // The APs sit in wait-for-SIPI inside KVM_RUN; teardown must kick them out.
    let mut code = asm::print(0x3f8, b"bsp\n");
    code.extend(asm::reset());
    let (outcome, text, took) = run_tiny(&code, 4, Duration::from_secs(30), None);
    assert_eq!(outcome, VmOutcome::Reset);
    assert_eq!(text, "bsp\n");
    assert!(took < Duration::from_secs(10), "teardown took {took:?}");
}

#[test]
fn timeout_kicks_a_spinning_vcpu() {
    if !kvm_or_skip("timeout_kicks_a_spinning_vcpu") {
        return;
    }
    let (outcome, _, took) = run_tiny(&asm::spin(), 2, Duration::from_millis(500), None);
    assert_eq!(outcome, VmOutcome::Timeout);
    assert!(
        took < Duration::from_secs(5),
        "stopping a spinning vCPU took {took:?}"
    );
}

#[test]
fn triple_fault_is_a_failure() {
    if !kvm_or_skip("triple_fault_is_a_failure") {
        return;
    }
    // ud2 with an IDT that holds no gate for #UD: #GP, #DF, then shutdown.
    let (outcome, _, _) = run_tiny(&[0x0f, 0x0b], 1, Duration::from_secs(30), None);
    match outcome {
        VmOutcome::Failed(why) => assert!(
            why.contains("triple fault") || why.contains("internal error"),
            "unexpected reason {why}"
        ),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn panic_line_is_reported_even_if_the_guest_reboots() {
    if !kvm_or_skip("panic_line_is_reported_even_if_the_guest_reboots") {
        return;
    }
    let mut code = asm::print(0x3f8, b"[ 1.0] Kernel panic - not syncing: test panic\n");
    code.extend(asm::reset());
    let (outcome, _, _) = run_tiny(&code, 1, Duration::from_secs(30), None);
    assert_eq!(
        outcome,
        VmOutcome::Panic("Kernel panic - not syncing: test panic".into())
    );
    assert!(!outcome.is_success());
}

#[test]
fn unknown_ports_read_all_ones() {
    if !kvm_or_skip("unknown_ports_read_all_ones") {
        return;
    }
    // For each port: in al, dx (from the port); then out to COM1.
    let mut code = Vec::new();
    for port in [
        0x80u16, 0x71, 0xcfc, 0x2f8, /* COM2 with no backend floats */
    ] {
        code.extend(asm::mov_dx(port));
        code.push(asm::IN_AL_DX);
        code.extend(asm::mov_dx(0x3f8));
        code.push(asm::OUT_DX_AL);
    }
    // Writes to unknown ports are ignored.
    code.extend(asm::mov_dx(0x87));
    code.push(asm::OUT_DX_AL);
    code.extend(asm::reset());
    let (vmm, out, _dir) = tiny_vm(&code, 1, Duration::from_secs(30));
    let (outcome, _) = vmm.run().expect("runs");
    assert_eq!(outcome, VmOutcome::Reset);
    assert_eq!(*out.0.lock().expect("lock"), vec![0xff; 4]);
}

#[test]
fn com2_backend_carries_both_directions() {
    if !kvm_or_skip("com2_backend_carries_both_directions") {
        return;
    }
    // Guest: write "ping" to COM2; wait for a byte on COM2 (poll LSR bit 0); echo it to COM1.
    let mut code = asm::print(0x2f8, b"ping");
    code.extend(asm::mov_dx(0x2fd));
    code.extend([asm::IN_AL_DX, 0xa8, 0x01, 0x74, 0xfb]); // wait: in al,dx; test al,1; jz wait
    code.extend(asm::mov_dx(0x2f8));
    code.push(asm::IN_AL_DX);
    code.extend(asm::mov_dx(0x3f8));
    code.push(asm::OUT_DX_AL);
    code.extend(asm::reset());

    let (rd, wr) = nix_pipe();
    let com2_out = SharedBuf::default();
    let backend = SerialBackend {
        out: Box::new(com2_out.clone()),
        input: Some(rd),
    };
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::File::from(wr);
        std::thread::sleep(Duration::from_millis(200));
        std::io::Write::write_all(&mut f, b"Z").expect("write to pipe");
    });
    let (outcome, text, _) = run_tiny(&code, 1, Duration::from_secs(30), Some(backend));
    writer.join().expect("writer");
    assert_eq!(outcome, VmOutcome::Reset);
    assert_eq!(text, "Z");
    assert_eq!(com2_out.text(), "ping");
}

fn nix_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds into a valid array; we take ownership of both right after.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2");
    // SAFETY: both fds were just returned by pipe2 and are owned by nobody else.
    unsafe {
        use std::os::fd::FromRawFd;
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    }
}

/// A virtio-mmio stand-in: register 0 reads 0x5a; two queue-notify eventfds.
struct DummyVirtio {
    evts: Vec<vmm_sys_util::eventfd::EventFd>,
    _irq: vmm_sys_util::eventfd::EventFd,
}

impl stage1_vmm::bus::MmioDevice for DummyVirtio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == 0 {
            if let Some(b) = data.first_mut() {
                *b = 0x5a;
            }
        }
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

impl stage1_vmm::device_manager::VirtioMmio for DummyVirtio {
    fn queue_evts(&self) -> &[vmm_sys_util::eventfd::EventFd] {
        &self.evts
    }
}

#[test]
fn virtio_mmio_slot_is_on_the_bus_the_cmdline_and_ioeventfds() {
    if !kvm_or_skip("virtio_mmio_slot_is_on_the_bus_the_cmdline_and_ioeventfds") {
        return;
    }
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
    // mov eax, [0xd0000000]; out to COM1; mov dword [0xd0000050], 1 (notify queue 1); reset.
    let mut code = vec![0xa1, 0x00, 0x00, 0x00, 0xd0];
    code.extend(asm::mov_dx(0x3f8));
    code.push(asm::OUT_DX_AL);
    code.extend([0xc7, 0x05, 0x50, 0x00, 0x00, 0xd0, 0x01, 0x00, 0x00, 0x00]);
    code.extend(asm::reset());

    let (mut vmm, out, _dir) = tiny_vm(&code, 1, Duration::from_secs(30));
    // A device that fails to build takes no slot and leaves the command line alone.
    let before = vmm.cmdline();
    let failed = vmm.add_virtio_transport(|_mem, _irq| -> Result<DummyVirtio, _> {
        Err(stage1_vmm::device_manager::DeviceError::NoVirtioSlot)
    });
    assert!(failed.is_err());
    assert_eq!(vmm.cmdline(), before);
    let q0 = EventFd::new(EFD_NONBLOCK).expect("eventfd");
    let q1 = EventFd::new(EFD_NONBLOCK).expect("eventfd");
    let (q0c, q1c) = (
        q0.try_clone().expect("clone"),
        q1.try_clone().expect("clone"),
    );
    let slot = vmm
        .add_virtio_transport(move |_mem, irq| {
            Ok(DummyVirtio {
                evts: vec![q0c, q1c],
                _irq: irq,
            })
        })
        .expect("registered");
    assert_eq!(slot.base, 0xd000_0000);
    assert_eq!(slot.gsi, 5);
    assert!(
        vmm.cmdline().contains("virtio_mmio.device=4K@0xd0000000:5"),
        "{}",
        vmm.cmdline()
    );
    let slot2 = vmm
        .add_virtio_transport(|_mem, irq| {
            Ok(DummyVirtio {
                evts: vec![],
                _irq: irq,
            })
        })
        .expect("second slot");
    assert_eq!((slot2.base, slot2.gsi), (0xd000_1000, 6));
    assert!(vmm.cmdline().contains("virtio_mmio.device=4K@0xd0001000:6"));
    // A real device goes through the same step.
    let slot3 = vmm
        .add_virtio(Box::new(
            stage1_vmm::devices::virtio::console::Console::new(None, None),
        ))
        .expect("console slot");
    assert_eq!((slot3.base, slot3.gsi), (0xd000_2000, 7));
    assert!(vmm.cmdline().contains("virtio_mmio.device=4K@0xd0002000:7"));

    let (outcome, _) = vmm.run().expect("runs");
    assert_eq!(outcome, VmOutcome::Reset);
    assert_eq!(*out.0.lock().expect("lock"), vec![0x5a]);
    assert_eq!(q1.read().expect("queue 1 notified"), 1);
    assert!(q0.read().is_err(), "queue 0 must not be notified");
}

#[test]
fn multi_page_kernel_loads() {
    if !kvm_or_skip("multi_page_kernel_loads") {
        return;
    }
    // Three pages of NOPs, then the code that prints and resets, then a partial page: the
    // loader maps the whole pages from the file and copies the tail.
    let mut code = vec![0x90u8; 3 * 4096];
    code.extend(asm::print(0x3f8, b"mapped\n"));
    code.extend(asm::reset());
    let (outcome, text, _) = run_tiny(&code, 1, Duration::from_secs(60), None);
    assert_eq!(outcome, VmOutcome::Reset, "console: {text:?}");
    assert_eq!(text, "mapped\n");
}

/// stage1-vmm/tests/guest/pit_replay.S, assembled (its header says how).
const PIT_REPLAY_GUEST: &[u8] = &[
    0xfa, 0xbc, 0x00, 0x70, 0x00, 0x00, 0xb8, 0x10, 0x01, 0x10, 0x00, 0x66, 0xa3, 0x00, 0x81, 0x00,
    0x00, 0x66, 0x8c, 0xcb, 0x66, 0x89, 0x1d, 0x02, 0x81, 0x00, 0x00, 0x66, 0xc7, 0x05, 0x04, 0x81,
    0x00, 0x00, 0x00, 0x8e, 0xc1, 0xe8, 0x10, 0x66, 0xa3, 0x06, 0x81, 0x00, 0x00, 0x0f, 0x01, 0x1d,
    0x20, 0x01, 0x10, 0x00, 0xc7, 0x05, 0x00, 0x90, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xb0, 0x11,
    0xe6, 0x20, 0xb0, 0x20, 0xe6, 0x21, 0xb0, 0x04, 0xe6, 0x21, 0xb0, 0x01, 0xe6, 0x21, 0xb0, 0xfe,
    0xe6, 0x21, 0xb0, 0xff, 0xe6, 0xa1, 0xb0, 0x34, 0xe6, 0x43, 0xb0, 0xa9, 0xe6, 0x40, 0xb0, 0x04,
    0xe6, 0x40, 0xfb, 0x8b, 0x35, 0x00, 0x90, 0x00, 0x00, 0xbb, 0x00, 0x84, 0xd7, 0x17, 0xe8, 0x6c,
    0x00, 0x00, 0x00, 0x8b, 0x3d, 0x00, 0x90, 0x00, 0x00, 0x29, 0xf7, 0xfa, 0xbb, 0x00, 0x84, 0xd7,
    0x17, 0xe8, 0x59, 0x00, 0x00, 0x00, 0x8b, 0x35, 0x00, 0x90, 0x00, 0x00, 0xfb, 0xbb, 0x80, 0xf0,
    0xfa, 0x02, 0xe8, 0x48, 0x00, 0x00, 0x00, 0xfa, 0x8b, 0x2d, 0x00, 0x90, 0x00, 0x00, 0x29, 0xf5,
    0xb0, 0x50, 0xe8, 0x45, 0x00, 0x00, 0x00, 0xb0, 0x49, 0xe8, 0x3e, 0x00, 0x00, 0x00, 0xb0, 0x54,
    0xe8, 0x37, 0x00, 0x00, 0x00, 0xb0, 0x20, 0xe8, 0x30, 0x00, 0x00, 0x00, 0x89, 0xfb, 0xe8, 0x2f,
    0x00, 0x00, 0x00, 0xb0, 0x20, 0xe8, 0x22, 0x00, 0x00, 0x00, 0x89, 0xeb, 0xe8, 0x21, 0x00, 0x00,
    0x00, 0xb0, 0x0a, 0xe8, 0x14, 0x00, 0x00, 0x00, 0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd, 0x0f,
    0x31, 0x89, 0xc1, 0x0f, 0x31, 0x29, 0xc8, 0x39, 0xd8, 0x72, 0xf8, 0xc3, 0x66, 0xba, 0xf8, 0x03,
    0xee, 0xc3, 0xb9, 0x08, 0x00, 0x00, 0x00, 0xc1, 0xc3, 0x04, 0x88, 0xd8, 0x24, 0x0f, 0x04, 0x30,
    0x3c, 0x39, 0x76, 0x02, 0x04, 0x07, 0x51, 0xe8, 0xe0, 0xff, 0xff, 0xff, 0x59, 0xe2, 0xe8, 0xc3,
    0x50, 0xff, 0x05, 0x00, 0x90, 0x00, 0x00, 0xb0, 0x20, 0xe6, 0x20, 0x58, 0xcf, 0x8d, 0x76, 0x00,
    0xff, 0x07, 0x00, 0x80, 0x00, 0x00,
];

#[test]
fn pit_drops_ticks_missed_while_interrupts_are_off() {
    // This host's PVM KVM stops the guest with an emulation error (KVM_EXIT_INTERNAL_ERROR),
    // so it runs where KVM boots unmodified guests (ci/nested-kvm here).
    if !linux_kvm_or_skip("pit_drops_ticks_missed_while_interrupts_are_off") {
        return;
    }
    // The guest counts the PIT's ~1 kHz ticks in one window with interrupts on (`on`), then
    // keeps them off for a window and counts what arrives in the eighth of a window after
    // (`after`). KVM's default replays every missed tick once interrupts are back (`after` ~ 9/8
    // of `on`); the VMM turns that off, so `after` is about an eighth of `on`.
    let (outcome, text, _) = run_tiny(PIT_REPLAY_GUEST, 1, Duration::from_secs(120), None);
    assert_eq!(outcome, VmOutcome::Reset, "console: {text}");
    let counts: Vec<u32> = text
        .lines()
        .find_map(|l| l.strip_prefix("PIT "))
        .unwrap_or_else(|| panic!("no PIT line in {text:?}"))
        .split(' ')
        .map(|h| u32::from_str_radix(h.trim(), 16).expect("hex count"))
        .collect();
    let (on, after) = (counts[0], counts[1]);
    eprintln!("PIT ticks in a window with interrupts on: {on}; in an eighth of one after a window with them off: {after}");
    assert!(
        on >= 16,
        "too few PIT ticks ({on}) in a window to tell anything"
    );
    assert!(
        after * 2 < on,
        "the PIT replayed missed ticks: {after} arrived in an eighth of a window after \
         interrupts came back, against {on} in a whole window"
    );
}
