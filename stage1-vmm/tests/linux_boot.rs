//! Guest-Linux tests: the real `stage1-vmm boot` binary boots the project's kernel with the test
//! initramfs (tests/guest/init.rs). They need a KVM that can boot Linux: on a PVM host they
//! print `SKIP:` and return; run them inside the harness:
//! `ci/nested-kvm /work/tgt/vmm/debug/deps/linux_boot-<hash> --test-threads=1`.
//! The kernel is `$RKT_TEST_KERNEL` or `<repo>/build/kernel/vmlinux` (kernel-config/build.sh).

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{initramfs, linux_kvm_or_skip, test_kernel};

/// Generous per-boot limit: under nested TCG a boot takes a few seconds.
const BOOT_TIMEOUT_SECS: &str = "180";
/// Printed by the test init first thing.
const MARKER: &str = "RKT-TEST-INIT-MARKER";

fn boot(kernel: &Path, extra: &[&str]) -> (Output, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let initrd = initramfs::write_to(dir.path());
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_stage1-vmm"))
        .arg("boot")
        .arg("--kernel")
        .arg(kernel)
        .arg("--initramfs")
        .arg(&initrd)
        .args(["--timeout", BOOT_TIMEOUT_SECS, "--no-stdin"])
        .args(extra)
        .output()
        .expect("spawn stage1-vmm");
    (out, start.elapsed())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn value(stdout: &str, key: &str) -> Option<u64> {
    stdout.lines().find_map(|l| {
        l.trim()
            .strip_prefix(key)?
            .strip_prefix('=')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn boots_to_init_and_reboots_with_two_vcpus() {
    if !linux_kvm_or_skip("boots_to_init_and_reboots_with_two_vcpus") {
        return;
    }
    let kernel = test_kernel();
    let (out, took) = boot(
        &kernel,
        &[
            "--cpus",
            "2",
            "--mem",
            "256",
            "--cmdline",
            "rkt_test=report",
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains(MARKER), "no marker in:\n{stdout}");
    assert_eq!(value(&stdout, "NCPUS"), Some(2), "stdout:\n{stdout}");
    let kb = value(&stdout, "MEMTOTAL_KB").expect("MemTotal reported");
    assert!(
        (200 * 1024..=256 * 1024).contains(&kb),
        "MemTotal {kb} kB for 256 MiB"
    );
    eprintln!("boot with 2 vCPUs / 256 MiB took {took:?}");
}

#[test]
fn memory_above_the_mmio_gap_is_seen() {
    if !linux_kvm_or_skip("memory_above_the_mmio_gap_is_seen") {
        return;
    }
    let kernel = test_kernel();
    // 3.5 GiB: 3.25 GiB below the gap, 256 MiB from 4 GiB up.
    let (out, _) = boot(&kernel, &["--mem", "3584", "--cmdline", "rkt_test=report"]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    let kb = value(&stdout, "MEMTOTAL_KB").expect("MemTotal reported");
    assert!(
        kb > 3300 * 1024 && kb <= 3584 * 1024,
        "MemTotal {kb} kB for 3584 MiB"
    );
}

#[test]
fn bzimage_boots_through_the_64bit_entry() {
    if !linux_kvm_or_skip("bzimage_boots_through_the_64bit_entry") {
        return;
    }
    let kernel = test_kernel();
    let bz = kernel.with_file_name("bzImage");
    assert!(
        bz.is_file(),
        "{} is missing: run kernel-config/build.sh",
        bz.display()
    );
    let (out, _) = boot(&bz, &["--cmdline", "rkt_test=quick"]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains(MARKER));
}

#[test]
fn guest_panic_is_a_failure_with_the_reason() {
    if !linux_kvm_or_skip("guest_panic_is_a_failure_with_the_reason") {
        return;
    }
    let kernel = test_kernel();
    let (out, _) = boot(&kernel, &["--cmdline", "rkt_test=exit"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "stderr:\n{stderr}");
    assert!(text(&out.stdout).contains("RKT-TEST-INIT-EXITING"));
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("guest kernel panic: Kernel panic - not syncing: Attempted to kill init!"),
        "stderr:\n{stderr}"
    );
}

#[test]
fn missing_kernel_fails_before_kvm() {
    // Runs everywhere: the file check comes before /dev/kvm is opened.
    let out = Command::new(env!("CARGO_BIN_EXE_stage1-vmm"))
        .args(["boot", "--kernel", "/nonexistent/vmlinux", "--no-stdin"])
        .output()
        .expect("spawn stage1-vmm");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("cannot open kernel /nonexistent/vmlinux"),
        "stderr: {stderr}"
    );
    assert!(!stderr.contains("PVM"));
}

#[test]
fn pvm_host_is_refused_at_once() {
    if !stage1_vmm::pvm::host_is_pvm() {
        eprintln!("SKIP: pvm_host_is_refused_at_once: this host's KVM is not PVM");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // Any existing file will do: the PVM check comes before the kernel is parsed.
    let kernel = common::write_file(dir.path(), "k", b"not a kernel");
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_stage1-vmm"))
        .args(["boot", "--no-stdin", "--kernel"])
        .arg(&kernel)
        .env_remove(stage1_vmm::pvm::ALLOW_PVM_ENV)
        .output()
        .expect("spawn stage1-vmm");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("PVM") && stderr.contains("ci/nested-kvm"),
        "stderr: {stderr}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}
