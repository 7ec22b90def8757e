//! Guest-Linux test of the virtio devices: a real Linux kernel (the project's guest kernel) boots
//! in the real VMM with a busybox initramfs, mounts the virtio-fs share, writes to two virtio
//! consoles and to the share, and reboots. It checks what the Linux drivers see and do, which the
//! queue-level unit tests cannot.
//!
//! Guest-booting: on a host whose KVM cannot boot Linux it prints its SKIP line and ci/test.sh
//! runs it under ci/nested-kvm. The kernel is `$RKT_TEST_KERNEL` or `<repo>/build/kernel/vmlinux`;
//! busybox is the host's static `/usr/bin/busybox` (`$RKT_TEST_BUSYBOX`; ci/deps.sh installs
//! busybox-static).
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::initramfs::cpio::entry as cpio_entry;
use common::{linux_kvm_or_skip, test_kernel};
use stage1_vmm::devices::virtio::console::{nonblocking_fd, Console};
use stage1_vmm::devices::virtio::fs::{Fs, FsConfig};
use stage1_vmm::devices::virtio::rng::Rng;
use stage1_vmm::{SerialBackend, VmConfig, VmOutcome, Vmm};

/// Lines the guest writes to hvc0 after the file contents (count); `RKT_TEST_VIRTIO_SEQ`
/// overrides it (50 000 reproduces the nested stall in docs/virtio.md).
const SEQ_LINES: u32 = 2_000;

fn seq_lines() -> u32 {
    std::env::var("RKT_TEST_VIRTIO_SEQ")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SEQ_LINES)
}
const HELLO: &str = "hello from the host share\n";

/// The static busybox for the initramfs, or the reason to skip.
fn busybox() -> Result<PathBuf, String> {
    let busybox = std::env::var_os("RKT_TEST_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/busybox"));
    if !busybox.is_file() {
        return Err(format!(
            "no static busybox at {} (ci/deps.sh installs busybox-static)",
            busybox.display()
        ));
    }
    Ok(busybox)
}

const INIT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
echo E2E: init started > /dev/ttyS0
$B mount -t proc proc /proc
$B mount -t devtmpfs dev /dev
if ! $B mount -t virtiofs rkt /mnt; then
    echo "E2E: virtiofs mount failed" > /dev/ttyS0
    $B reboot -f
fi
echo E2E: virtiofs mounted > /dev/ttyS0
# hvc resets its termios when the last descriptor closes: keep one open, output raw.
exec 3> /dev/hvc0
$B stty -F /dev/hvc0 -opost
$B cat /mnt/hello.txt >&3
echo E2E: cat to hvc0 done > /dev/ttyS0
$B seq 1 SEQ_LINES >&3
exec 3>&-
echo E2E: seq to hvc0 done > /dev/ttyS0
exec 4> /dev/hvc1
$B stty -F /dev/hvc1 -opost
echo to-stderr >&4
echo "ls: $($B ls /mnt | $B tr '\n' ' ')" >&4
echo "link: $($B readlink /mnt/etc-link)" >&4
echo guest-wrote > /mnt/out.txt
echo E2E: consoles written > /dev/ttyS0
$B mkdir /mnt/newdir
$B mkdir /mnt/tmp && $B chmod 1777 /mnt/tmp
$B sync
echo E2E-DONE >&4
exec 4>&-
$B reboot -f
"#;

fn initramfs(dir: &Path, busybox: &Path) -> PathBuf {
    let init = INIT.replace("SEQ_LINES", &seq_lines().to_string());
    initramfs_with(dir, busybox, &init)
}

/// A newc initramfs at `dir/initramfs.cpio` of busybox and the shell script `init`, with
/// empty `/dev`, `/proc`, `/sys` and `/mnt`.
fn initramfs_with(dir: &Path, busybox: &Path, init: &str) -> PathBuf {
    let bb = std::fs::read(busybox).unwrap();
    let mut out = Vec::new();
    cpio_entry(&mut out, 1, "bin", 0o040755, (0, 0), &[]);
    cpio_entry(&mut out, 2, "dev", 0o040755, (0, 0), &[]);
    cpio_entry(&mut out, 3, "dev/console", 0o020600, (5, 1), &[]);
    cpio_entry(&mut out, 4, "proc", 0o040755, (0, 0), &[]);
    cpio_entry(&mut out, 5, "mnt", 0o040755, (0, 0), &[]);
    cpio_entry(&mut out, 6, "bin/busybox", 0o100755, (0, 0), &bb);
    cpio_entry(&mut out, 7, "init", 0o100755, (0, 0), init.as_bytes());
    cpio_entry(&mut out, 8, "sys", 0o040755, (0, 0), &[]);
    cpio_entry(&mut out, 9, "TRAILER!!!", 0, (0, 0), &[]);
    let path = dir.join("initramfs.cpio");
    std::fs::write(&path, out).unwrap();
    path
}

/// A `Write` into a shared buffer that also echoes to stderr (the serial console, for
/// diagnostics: under ci/nested-kvm stderr ends up in the L1 console log).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Prints log records to stderr, so device warnings show up in the test output.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Debug && m.target().starts_with("stage1_vmm")
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("[{} {}] {}", r.level(), r.target(), r.args());
        }
    }
    fn flush(&self) {}
}

static LOGGER: StderrLog = StderrLog;

/// The static busybox if this host can boot a Linux guest and has one; else prints the test's
/// SKIP line and returns `None`.
fn busybox_or_skip(name: &str) -> Option<PathBuf> {
    if !linux_kvm_or_skip(name) {
        return None;
    }
    match busybox() {
        Ok(p) => Some(p),
        Err(why) => {
            eprintln!("SKIP: {name}: {why}");
            None
        }
    }
}

/// A VMM for a test guest: `initrd` as the initramfs, 256 MiB, a 150 s timeout, COM1 into the
/// returned buffer; `RKT_TEST_CMDLINE` adds kernel arguments for diagnosis (e.g.
/// `loglevel=7`).
fn test_vmm(initrd: PathBuf) -> (Vmm, Captured) {
    let serial = Captured::default();
    let mut cfg = VmConfig::new(test_kernel());
    cfg.initramfs = Some(initrd);
    cfg.mem_mib = 256;
    cfg.cmdline = std::env::var("RKT_TEST_CMDLINE").unwrap_or_default();
    cfg.timeout = Some(Duration::from_secs(150));
    let console = SerialBackend {
        out: Box::new(serial.clone()),
        input: None,
    };
    (Vmm::new(&cfg, console).unwrap(), serial)
}

#[test]
fn linux_mounts_virtiofs_and_writes_both_consoles() {
    let name = "linux_mounts_virtiofs_and_writes_both_consoles";
    let Some(busybox) = busybox_or_skip(name) else {
        return;
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Debug);
    }
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::create_dir_all(dir.path().join("outside")).unwrap();
    std::fs::write(share.join("hello.txt"), HELLO).unwrap();
    std::os::unix::fs::symlink("/etc", share.join("etc-link")).unwrap();
    let initrd = initramfs(dir.path(), &busybox);

    // hvc0: a pipe read by a slowish thread; hvc1: a regular file.
    let (r, w) = std::io::pipe().unwrap();
    let r = File::from(OwnedFd::from(r));
    let w = File::from(OwnedFd::from(w));
    let stdout_fd = nonblocking_fd(w.as_fd(), true).unwrap();
    drop(w);
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = (&r).read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            thread::sleep(Duration::from_micros(50));
        }
        got
    });
    let stderr_path = dir.path().join("stderr");
    let stderr_fd = OwnedFd::from(File::create(&stderr_path).unwrap());

    let (mut vmm, serial) = test_vmm(initrd);
    let fs_dev = Fs::new(FsConfig::new(&share)).unwrap();
    vmm.add_virtio(Box::new(fs_dev)).unwrap();
    vmm.add_virtio(Box::new(Console::new(Some(stdout_fd), None)))
        .unwrap();
    vmm.add_virtio(Box::new(Console::new(Some(stderr_fd), None)))
        .unwrap();
    eprintln!("{name}: booting {}", vmm.cmdline());
    let (outcome, _) = vmm.run().unwrap();
    eprintln!("{name}: VM ended: {outcome:?}");
    let serial = String::from_utf8_lossy(&serial.0.lock().unwrap()).into_owned();
    let stdout = reader.join().unwrap();
    let tail = stdout.len().saturating_sub(40);
    eprintln!(
        "{name}: hvc0 got {} bytes, ending {:?}",
        stdout.len(),
        String::from_utf8_lossy(stdout.get(tail..).unwrap_or_default())
    );
    assert_eq!(outcome, VmOutcome::Reset, "serial console:\n{serial}");

    let mut want = HELLO.to_string();
    for i in 1..=seq_lines() {
        want.push_str(&format!("{i}\n"));
    }
    assert_eq!(stdout.len(), want.len(), "hvc0 length; serial:\n{serial}");
    assert!(stdout == want.as_bytes(), "hvc0 content differs");

    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(stderr.starts_with("to-stderr\n"), "hvc1: {stderr}");
    assert!(
        stderr.contains("ls: etc-link hello.txt \n"),
        "hvc1: {stderr}"
    );
    assert!(stderr.contains("link: /etc\n"), "hvc1: {stderr}");
    assert!(stderr.ends_with("E2E-DONE\n"), "hvc1: {stderr}");
    assert_eq!(
        std::fs::read_to_string(share.join("out.txt")).unwrap(),
        "guest-wrote\n"
    );
    assert!(share.join("newdir").is_dir());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(share.join("tmp"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o7777,
        0o1777,
        "guest chmod reached the host exactly"
    );
}

/// The entropy device's guest side: what Linux's hwrng core and virtio-rng driver make of it.
const RNG_INIT: &str = r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t devtmpfs dev /dev
$B mount -t sysfs sys /sys
if $B dmesg | $B grep -q "crng init done"; then
    echo "RNG: crng ready at init" > /dev/ttyS0
else
    echo "RNG: crng not ready at init" > /dev/ttyS0
fi
echo "RNG: current=$($B cat /sys/class/misc/hw_random/rng_current)" > /dev/ttyS0
for n in a b; do
    echo "RNG: $n=$($B head -c 64 /dev/hwrng | $B od -An -tx1 | $B tr -d ' \n')" > /dev/ttyS0
done
echo "RNG: done" > /dev/ttyS0
$B reboot -f
"#;

/// A guest with the entropy device: Linux binds its virtio-rng driver and makes it the current
/// hwrng, its CRNG is ready before `/init` runs (the hwrng thread credited the host's bytes
/// during the boot; under the nested harness the guest has no RDRAND, and without the device
/// the CRNG is still waiting for jitter entropy there), and `/dev/hwrng` hands out fresh bytes.
#[test]
fn linux_seeds_its_rng_from_the_host_through_virtio_rng() {
    let name = "linux_seeds_its_rng_from_the_host_through_virtio_rng";
    let Some(busybox) = busybox_or_skip(name) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let initrd = initramfs_with(dir.path(), &busybox, RNG_INIT);
    let (mut vmm, serial) = test_vmm(initrd);
    let rng = Rng::new();
    let stats = rng.stats();
    if std::env::var_os("RKT_TEST_NO_RNG").is_none() {
        vmm.add_virtio(Box::new(rng)).unwrap();
    }
    let (outcome, _) = vmm.run().unwrap();
    let serial = String::from_utf8_lossy(&serial.0.lock().unwrap()).into_owned();
    assert_eq!(outcome, VmOutcome::Reset, "serial console:\n{serial}");
    let line = |key: &str| -> String {
        serial
            .lines()
            .find_map(|l| l.trim_end().strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key:?} line; serial:\n{serial}"))
            .to_string()
    };
    assert!(serial.contains("RNG: done"), "serial:\n{serial}");
    assert_eq!(line("RNG: current="), "virtio_rng.0", "serial:\n{serial}");
    assert!(
        serial.contains("RNG: crng ready at init"),
        "serial:\n{serial}"
    );
    let (a, b) = (line("RNG: a="), line("RNG: b="));
    assert_eq!(a.len(), 128, "64 bytes in hex: {a:?}");
    assert_ne!(a, b, "two reads of /dev/hwrng, two draws");
    let drawn = stats.bytes.load(std::sync::atomic::Ordering::Relaxed);
    assert!(drawn >= 128, "the host served {drawn} bytes");
    eprintln!("{name}: the host served {drawn} random bytes");
}
