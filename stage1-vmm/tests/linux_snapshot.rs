//! Snapshot and restore of a real Linux guest (`stage1-vmm boot --snapshot-out` / `--restore`)
//! with the test init's `snapshot` mode (tests/guest/init.rs): it asks for a snapshot on the
//! snapshot port; each restore reads fresh entropy and the wall clock from the port, prints
//! them and reboots. Guest tests: they SKIP where this host's KVM cannot boot Linux; run them
//! under ci/nested-kvm (see linux_boot.rs). The vsock test runs its VMs confined (seccomp per
//! thread, the snapshot profiles) when built without debug assertions, as linux_vsock.rs says.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{initramfs, linux_kvm_or_skip, test_kernel};

/// Generous per-run limit: under nested TCG a boot takes seconds.
const TIMEOUT_SECS: &str = "180";

fn vmm(args: &[&std::ffi::OsStr]) -> (Output, Duration) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_stage1-vmm"))
        .arg("boot")
        .args(["--timeout", TIMEOUT_SECS, "--no-stdin"])
        .args(args)
        .output()
        .expect("spawn stage1-vmm");
    (out, start.elapsed())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output) -> String {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout
}

/// `KEY=value` from the `RESTORED` line.
fn field<'a>(stdout: &'a str, key: &str) -> Option<&'a str> {
    let line = stdout.lines().find(|l| l.starts_with("RESTORED "))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Boots the test init in `rkt_test=snapshot-seeded` mode (its CRNG seeded right before the
/// snapshot) with `--snapshot-out snap`; the boot's time.
fn make_snapshot(dir: &Path, snap: &Path) -> Duration {
    let (took, stdout) = make_snapshot_with(dir, snap, 1);
    assert!(stdout.contains("SNAPSHOT-POINT"), "stdout:\n{stdout}");
    // The guest's CRNG was ready and freshly reseeded at the snapshot, so restores start
    // inside its reseed interval (tests/guest/init.rs).
    assert!(
        stdout.contains("SNAPSHOT-SEEDED RESEED=0"),
        "stdout:\n{stdout}"
    );
    took
}

/// Boots as [`make_snapshot`] with `cpus` vCPUs; the boot's time and its console output.
/// With more than one vCPU the guest's last console lines may still be in its UART driver's
/// buffer at the snapshot (another CPU transmits them): they come out of the restored VMs.
fn make_snapshot_with(dir: &Path, snap: &Path, cpus: u32) -> (Duration, String) {
    let kernel = test_kernel();
    let initrd = initramfs::write_to(dir);
    let cpus = cpus.to_string();
    let (out, took) = vmm(&[
        "--kernel".as_ref(),
        kernel.as_os_str(),
        "--initramfs".as_ref(),
        initrd.as_os_str(),
        "--mem".as_ref(),
        "128".as_ref(),
        "--cpus".as_ref(),
        cpus.as_ref(),
        "--cmdline".as_ref(),
        "rkt_test=snapshot-seeded".as_ref(),
        "--snapshot-out".as_ref(),
        snap.as_os_str(),
    ]);
    let stdout = ok(&out);
    assert!(
        !stdout.contains("RESTORED"),
        "ran on past the snapshot:\n{stdout}"
    );
    assert!(
        snap.join("state").is_file() && snap.join("memory").is_file(),
        "no snapshot; stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    (took, stdout)
}

#[test]
fn two_restores_from_one_snapshot_get_fresh_entropy_and_clock() {
    let name = "two_restores_from_one_snapshot_get_fresh_entropy_and_clock";
    if !linux_kvm_or_skip(name) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("snap");
    let cold = make_snapshot(dir.path(), &snap);
    // Let the wall clock move on, so a restored guest that kept the snapshot's clock shows.
    std::thread::sleep(Duration::from_secs(3));

    let mut seen = Vec::new();
    for round in 0..2 {
        let before = now_secs();
        let (out, took) = vmm(&["--restore".as_ref(), snap.as_os_str()]);
        let after = now_secs();
        let stdout = ok(&out);
        assert!(
            !stdout.contains("SNAPSHOT-POINT"),
            "booted again:\n{stdout}"
        );
        let entropy = field(&stdout, "ENTROPY")
            .expect("RESTORED line")
            .to_string();
        let clock: u64 = field(&stdout, "CLOCK")
            .and_then(|c| c.parse().ok())
            .expect("CLOCK=");
        assert_eq!(field(&stdout, "RESEED"), Some("0"), "{stdout}");
        assert_eq!(field(&stdout, "SETTIME"), Some("0"), "{stdout}");
        assert_eq!(entropy.len(), 64, "{stdout}");
        assert_ne!(entropy, "0".repeat(64));
        assert!(
            (before..=after + 1).contains(&clock),
            "round {round}: guest clock {clock} not within [{before}, {after}]"
        );
        let drawn = field(&stdout, "URANDOM").expect("URANDOM=").to_string();
        assert_eq!(drawn.len(), 32, "{stdout}");
        eprintln!("restore {round}: {took:?} (cold boot to the snapshot point: {cold:?})");
        seen.push((entropy, drawn));
    }
    assert_ne!(seen[0].0, seen[1].0, "two restores got the same entropy");
    // What the guest's kernel hands out after the restore is its own, not the snapshot's.
    assert_ne!(
        seen[0].1, seen[1].1,
        "two restores drew the same random bytes from the guest kernel"
    );
}

/// A VM of two vCPUs is saved whole (the second vCPU, idle in the guest, is stopped and saved
/// by its own thread) and both run guest code after the restore: a thread pinned to each CPU
/// reports running there.
#[test]
fn a_two_vcpu_snapshot_restores_both_vcpus() {
    let name = "a_two_vcpu_snapshot_restores_both_vcpus";
    if !linux_kvm_or_skip(name) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("snap");
    let (cold, made) = make_snapshot_with(dir.path(), &snap, 2);
    for round in 0..2 {
        let (out, took) = vmm(&["--restore".as_ref(), snap.as_os_str()]);
        let stdout = ok(&out);
        // The guest asked once: the line is in the maker's output or still in flight there
        // (see make_snapshot_with), never printed by a guest that ran the request again.
        let asked = format!("{made}{stdout}").matches("SNAPSHOT-POINT").count();
        assert_eq!(asked, 1, "maker:\n{made}\nrestored:\n{stdout}");
        assert_eq!(field(&stdout, "CPUS"), Some("2"), "{stdout}");
        assert_eq!(field(&stdout, "RAN-ON"), Some("0,1"), "{stdout}");
        assert_eq!(field(&stdout, "SETTIME"), Some("0"), "{stdout}");
        eprintln!(
            "two vCPUs, restore {round}: {took:?} (cold boot to the snapshot point: {cold:?})"
        );
    }
}

#[test]
fn a_restored_vm_gets_a_fresh_vsock_backend_that_works() {
    // The snapshot's VM has a virtio-vsock device whose driver is live (DRIVER_OK, queues set
    // up); the restoring VM creates its own device on another socket directory. After the
    // restore the guest connects to host port 5678 through the restored transport.
    let name = "a_restored_vm_gets_a_fresh_vsock_backend_that_works";
    if !linux_kvm_or_skip(name) {
        return;
    }
    use stage1_vmm::snapshot::SnapshotMode;
    use stage1_vmm::{VmConfig, VmOutcome, VsockConfig};

    let dir = tempfile::tempdir().expect("tempdir");
    let snap = dir.path().join("snap");
    let (first, second) = (dir.path().join("pod1"), dir.path().join("pod2"));
    for d in [&first, &second] {
        std::fs::create_dir(d).expect("socket dir");
    }
    let run = |cfg: VmConfig| {
        let console = common::SharedBuf::default();
        let vm = common::vm::spawn_vm(cfg, console.clone());
        let (outcome, failure) = vm.join().expect("vm thread");
        (outcome, failure, console.text())
    };

    let mut cfg = VmConfig::new(test_kernel());
    cfg.initramfs = Some(initramfs::write_to(dir.path()));
    cfg.mem_mib = 128;
    cfg.timeout = Some(Duration::from_secs(300));
    cfg.cmdline = "rkt_test=snapshot-vsock".into();
    cfg.vsock = Some(VsockConfig {
        socket_dir: first.clone(),
    });
    cfg.snapshot = SnapshotMode::Make(snap.clone());
    let (outcome, failure, text) = run(cfg.clone());
    assert_eq!(outcome, Ok(VmOutcome::Snapshot), "{failure}\n{text}");
    // Confined (release-like builds): the snapshot profiles let the save through.
    assert!(failure.is_empty(), "{failure}");
    assert!(text.contains("SNAPSHOT-POINT"), "{text}");

    let host = common::vm::answer_guest_greeting(&second);
    cfg.vsock = Some(VsockConfig {
        socket_dir: second.clone(),
    });
    cfg.snapshot = SnapshotMode::Restore(snap);
    let (outcome, failure, text) = run(cfg);
    assert_eq!(outcome, Ok(VmOutcome::Reset), "{failure}\n{text}");
    assert!(failure.is_empty(), "{failure}");
    assert!(text.contains("VSOCK-HOST-GOT=hello-from-host"), "{text}");
    assert!(text.contains("RESTORED "), "{text}");
    assert_eq!(host.join().expect("host"), "hello-from-guest\n");
}

/// The static guest-init: `$RKT_TEST_BIN_DIR/guest-init`, else `<repo>/build/bin/guest-init`.
fn guest_init_bin() -> std::path::PathBuf {
    let p = std::env::var_os("RKT_TEST_BIN_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join("build/bin"))
        .join("guest-init");
    assert!(
        p.is_file(),
        "{} is missing: run ci/build.sh (or set RKT_TEST_BIN_DIR)",
        p.display()
    );
    p
}

#[test]
fn guest_init_snapshot_stage_restores_then_switches_to_the_root_share() {
    // guest-init from an initramfs stops at the port before any root exists (the snapshot's
    // VM shares an empty directory); the restored VM shares another directory holding
    // `rkt/init-args` but no plan: guest-init mounts it, moves it over `/` and goes on as the
    // pod's guest-init in the same process with those arguments, through the restored
    // virtio-fs transport. The share's `/init` (here the test init) is not executed: the
    // snapshot's key makes it the same binary.
    let name = "guest_init_snapshot_stage_restores_then_switches_to_the_root_share";
    if !linux_kvm_or_skip(name) {
        return;
    }
    use stage1_vmm::devices::virtio::fs::{Fs, FsConfig};
    use stage1_vmm::snapshot::SnapshotMode;
    use stage1_vmm::{SerialBackend, VmConfig, VmOutcome, Vmm};
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let gi = std::fs::read(guest_init_bin()).expect("read guest-init");
    let cpio = stage1_vmm::snapshot::initramfs::snapshot_stage(&gi);
    let initrd = dir.path().join("snapshot-initramfs.cpio");
    std::fs::write(&initrd, cpio).expect("write initramfs");

    let empty = dir.path().join("empty");
    let pod = dir.path().join("pod");
    std::fs::create_dir(&empty).expect("mkdir");
    for d in ["rkt", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(pod.join(d)).expect("mkdir");
    }
    let init = pod.join("init");
    std::fs::write(&init, initramfs::TEST_INIT).expect("write init");
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // `--trace-phases` shows that these arguments, not the snapshot's command line, reached
    // guest-init: its phase lines appear on the console.
    std::fs::write(pod.join("rkt/init-args"), "--flavor=kvm\n--trace-phases\n").expect("args");

    let snap = dir.path().join("snap");
    let run = |cfg: &VmConfig, share: &std::path::Path| {
        let console = common::SharedBuf::default();
        let mut vmm = Vmm::new(
            cfg,
            SerialBackend {
                out: Box::new(console.clone()),
                input: None,
            },
        )
        .expect("vmm");
        let mut fs = FsConfig::new(share);
        fs.tag = "rkt".into();
        vmm.add_virtio(Box::new(Fs::new(fs).expect("fs")))
            .expect("add fs");
        let (outcome, _) = vmm.run().expect("run");
        (outcome, console.text())
    };
    let mut cfg = VmConfig::new(test_kernel());
    cfg.initramfs = Some(initrd);
    cfg.mem_mib = 128;
    cfg.timeout = Some(Duration::from_secs(300));
    cfg.cmdline = "rkt_test=report -- --snapshot-stage".into();
    cfg.snapshot = SnapshotMode::Make(snap.clone());
    let (outcome, text) = run(&cfg, &empty);
    assert_eq!(outcome, VmOutcome::Snapshot, "{text}");
    assert!(!text.contains("RKT-TEST-INIT-MARKER"), "{text}");

    cfg.snapshot = SnapshotMode::Restore(snap);
    let (outcome, text) = run(&cfg, &pod);
    assert_eq!(outcome, VmOutcome::Reset, "{text}");
    assert!(!text.contains("RKT-TEST-INIT-MARKER"), "{text}");
    assert!(text.contains(" guest-init main"), "no phase line: {text}");
    // guest-init failed on the missing plan and recorded it in the share it had moved over `/`.
    let failure = std::fs::read_to_string(pod.join("rkt/failure")).expect("rkt/failure");
    assert!(failure.contains("plan file /rkt/plan.json"), "{failure}");
    assert!(!empty.join("rkt").exists());
}

#[test]
fn cold_boot_without_snapshot_mode_carries_on() {
    // The port is absent without --snapshot-out: the request is ignored and the guest reads
    // "cold boot" (0xff: nothing answers).
    let name = "cold_boot_without_snapshot_mode_carries_on";
    if !linux_kvm_or_skip(name) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = test_kernel();
    let initrd = initramfs::write_to(dir.path());
    let (out, _) = vmm(&[
        "--kernel".as_ref(),
        kernel.as_os_str(),
        "--initramfs".as_ref(),
        initrd.as_os_str(),
        "--cmdline".as_ref(),
        "rkt_test=snapshot".as_ref(),
    ]);
    let stdout = ok(&out);
    assert!(stdout.contains("SNAPSHOT-COLD STATUS=255"), "{stdout}");
}

#[test]
fn corrupt_or_missing_snapshots_fail_before_kvm() {
    // Runs everywhere: the state file is read and checked before /dev/kvm is opened.
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, _) = vmm(&["--restore".as_ref(), dir.path().as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot open the state file"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(dir.path().join("state"), b"RKTSNAP\0\x01\0\0\0garbage").expect("write");
    let (out, _) = vmm(&["--restore".as_ref(), dir.path().as_os_str()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("snapshot state"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
