//! End-to-end: `rkt run --stage1=kvm` of real images (static hello / pod-check, and a static C
//! helper compiled here) in real KVM guests: app output without kernel noise, exit codes, the
//! in-pod checker, volumes (empty, host ro/rw), `rkt stop`, a guest kernel panic surfaced as a
//! pod failure, 10 MiB of output arriving whole, and memory sizing.
//!
//! Every test starts with `E2e::require_kvm`, which marks it as guest-booting: where this
//! host's KVM cannot boot Linux (PVM) it prints `SKIP: <name>: host KVM cannot boot Linux; runs
//! under ci/nested-kvm` and returns, and ci/test.sh runs it inside ci/nested-kvm,
//! single-threaded. Scratch space (`--dir` included) goes under `$NESTED_KVM_TMP` when set (a
//! plain tmpfs: overlayfs cannot use an overlay as upper).
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rkt_tests::{
    cc_static, skip, stderr, stdout, uuid_of, wait_output, E2e, ImageSpec, KVM_RUN_TIMEOUT_SECS,
};

/// Bytes of output the bulk test streams: 10 MiB.
const BULK_BYTES: usize = 10 << 20;
/// Line length of the bulk pattern (9 digits and a newline).
const BULK_LINE: usize = 10;

/// A static helper for what neither hello nor pod-check does: `emit N` writes N bytes of
/// numbered lines to stdout; `meminfo` prints MemTotal and MemAvailable (kB); `spin MS` busy-loops
/// for MS ms of wall time and prints `CPUFRAC=<x>`, the CPU time it got over that wall time;
/// `readahead PATH` prints `READAHEAD_KB=<n>`, the readahead of PATH's file system (sysfs);
/// `getrandom` prints `GETRANDOM_MS=<ms>`, how long a blocking 16-byte `getrandom(2)` took, and
/// `HWRNG=<name>`, the guest kernel's current hardware RNG (sysfs); `touch MIB` allocates MIB MiB
/// and writes every page, then prints `TOUCHED=<MIB>`; `escape MS` leaves the app's CPU limit
/// inside the guest (enters PID 1's cgroup namespace, its own being rooted at its cgroup, mounts
/// the guest kernel's cpu cgroup hierarchy and moves itself to its root: needs every capability,
/// to reach PID 1's namespace, and `mount`), prints `ESCAPED=1`, then does what `spin MS` does.
const HELPER_C: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/random.h>
#include <sys/mount.h>
static double secs(clockid_t c) {
    struct timespec t;
    clock_gettime(c, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}
static int put(const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(1, p, n);
        if (w < 0) { if (errno == EINTR) continue; return -1; }
        p += w; n -= (size_t)w;
    }
    return 0;
}
int main(int argc, char **argv) {
    if (argc >= 3 && strcmp(argv[1], "emit") == 0) {
        long total = atol(argv[2]), line = 0;
        static char buf[65536];
        size_t used = 0;
        while (total >= 10) {
            snprintf(buf + used, 11, "%09ld\n", line++);
            used += 10; total -= 10;
            if (used + 10 > sizeof buf) { if (put(buf, used)) return 1; used = 0; }
        }
        if (used && put(buf, used)) return 1;
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "meminfo") == 0) {
        FILE *f = fopen("/proc/meminfo", "r");
        char l[256];
        if (!f) { perror("/proc/meminfo"); return 1; }
        while (fgets(l, sizeof l, f))
            if (!strncmp(l, "MemTotal:", 9) || !strncmp(l, "MemAvailable:", 13)) fputs(l, stdout);
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "escape") == 0) {
        int ns = open("/proc/1/ns/cgroup", O_RDONLY);
        if (ns < 0 || setns(ns, CLONE_NEWCGROUP) != 0) { perror("enter PID 1's cgroup namespace"); return 1; }
        mkdir("/cg", 0700);
        if (mount("cgroup", "/cg", "cgroup", 0, "cpu") != 0 &&
            mount("cgroup2", "/cg", "cgroup2", 0, NULL) != 0) { perror("mount cgroup"); return 1; }
        FILE *t = fopen("/cg/tasks", "w");
        if (!t) t = fopen("/cg/cgroup.procs", "w");
        if (!t || fputs("0", t) < 0 || fclose(t) != 0) { perror("join the root cgroup"); return 1; }
        printf("ESCAPED=1\n");
        fflush(stdout);
        argv[1] = (char *)"spin";
    }
    if (argc >= 3 && strcmp(argv[1], "spin") == 0) {
        double wall = atol(argv[2]) / 1000.0;
        double w0 = secs(CLOCK_MONOTONIC), c0 = secs(CLOCK_PROCESS_CPUTIME_ID);
        volatile unsigned long n = 0;
        while (secs(CLOCK_MONOTONIC) - w0 < wall) n++;
        double w = secs(CLOCK_MONOTONIC) - w0, c = secs(CLOCK_PROCESS_CPUTIME_ID) - c0;
        printf("CPUFRAC=%.3f\n", c / w);
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "readahead") == 0) {
        struct stat st;
        char p[128], v[32];
        if (stat(argv[2], &st)) { perror(argv[2]); return 1; }
        snprintf(p, sizeof p, "/sys/class/bdi/%u:%u/read_ahead_kb", major(st.st_dev), minor(st.st_dev));
        FILE *f = fopen(p, "r");
        if (!f || !fgets(v, sizeof v, f)) { perror(p); return 1; }
        printf("READAHEAD_KB=%s", v);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "getrandom") == 0) {
        unsigned char b[16];
        double t0 = secs(CLOCK_MONOTONIC);
        if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) { perror("getrandom"); return 1; }
        printf("GETRANDOM_MS=%.1f\n", (secs(CLOCK_MONOTONIC) - t0) * 1e3);
        char v[64] = "none\n";
        FILE *f = fopen("/sys/class/misc/hw_random/rng_current", "r");
        if (f && !fgets(v, sizeof v, f)) strcpy(v, "unreadable\n");
        printf("HWRNG=%s", v);
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "touch") == 0) {
        long mib = atol(argv[2]);
        char *p = malloc((size_t)mib << 20);
        if (!p) { perror("malloc"); return 1; }
        for (long i = 0; i < (mib << 20); i += 4096) p[i] = 1;
        printf("TOUCHED=%ld\n", mib);
        return 0;
    }
    fprintf(stderr, "usage: helper emit N | meminfo | spin MS | readahead PATH | getrandom | touch MIB\n");
    return 2;
}
"#;

/// The static helper (compiled once per test binary with `cc -static`), or `None` after a SKIP.
fn helper(test: &str) -> Option<PathBuf> {
    static HELPER: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = HELPER.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("rkt-kvm-helper-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        cc_static(HELPER_C, &dir, "helper")
    });
    match r {
        Ok(p) => Some(p.clone()),
        Err(why) => {
            skip(test, &format!("cannot build the static helper: {why}"));
            None
        }
    }
}

/// A test's KVM and helper image, or `None` after a SKIP.
fn helper_pod(test: &str) -> Option<(E2e, PathBuf)> {
    let e = E2e::require_kvm(test)?;
    let h = helper(test)?;
    let img = helper_image(&e, &h);
    Some((e, img))
}

/// `rkt run` of the helper image `img` with `flags`, the helper getting `args`.
fn run_helper(e: &E2e, img: &Path, flags: &[&str], args: &[&str]) -> Output {
    let mut a = vec![
        "run".to_string(),
        e.stage1_flag(),
        img.to_str().unwrap().to_string(),
    ];
    a.extend(flags.iter().map(|f| f.to_string()));
    a.push("--".into());
    a.extend(args.iter().map(|f| f.to_string()));
    e.run(&a)
}

fn helper_image(e: &E2e, helper: &Path) -> PathBuf {
    let p = e.path("helper.aci");
    if !p.exists() {
        ImageSpec::new("example.com/helper", &["/bin/helper"])
            .file("/bin/helper", helper, 0o755)
            .dir("/proc")
            .build(&p);
    }
    p
}

/// `rkt run <stage1> FLAGS --uuid-file-save=UUID_FILE <hello image> [-- APP_ARGS]`.
fn hello_run(e: &E2e, uuid_file: &Path, flags: &[&str], app_args: &[&str]) -> Vec<String> {
    let mut args = vec!["run".to_string(), e.stage1_flag()];
    args.extend(flags.iter().map(|f| f.to_string()));
    args.push(format!("--uuid-file-save={}", uuid_file.display()));
    args.push(e.hello_image().to_str().unwrap().to_string());
    if !app_args.is_empty() {
        args.push("--".into());
        args.extend(app_args.iter().map(|a| a.to_string()));
    }
    args
}

#[test]
fn kvm_hello_output_and_exit_code() {
    let Some(e) = E2e::require_kvm("kvm_hello_output_and_exit_code") else {
        return;
    };
    let uuid_file = e.path("uuid");
    let args = hello_run(&e, &uuid_file, &[], &["first", "second"]);
    let o = e.run_env(&[("RKT_VMM_EXIT_STATS", "1")], &args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // stdout is exactly the app's output: no kernel or guest-init noise.
    let want = "Hello from a rkt-rs pod!\nargv: [\"/bin/hello\", \"first\", \"second\"]\nAC_APP_NAME=hello\n";
    assert_eq!(stdout(&o), want);
    // stderr has no kernel lines either (with `quiet` the kernel only speaks on trouble, and
    // the VMM keeps even that for failure reports).
    let err = stderr(&o);
    let noise: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("[ ") || l.starts_with("[0") || l.starts_with("[1"))
        .map(|l| l.trim())
        .collect();
    assert!(noise.is_empty(), "kernel lines on stderr: {noise:?}");
    // guest-init ended the VM on the i8042 reset line itself (pod_abi::reset): one write to
    // port 0x64 and no read of it, which the kernel's `reboot=k` path makes first.
    let i8042: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("exits:") && l.contains(" 0x64 "))
        .collect();
    assert!(
        i8042.len() == 1 && i8042[0].contains("pio-out") && i8042[0].contains(" 1  "),
        "{i8042:?}"
    );
    // KVM's own counters follow the table (stage1-vmm's kvm_stats, Linux 5.14 and later):
    // all exits, the ones handled in the kernel included, outnumber those that reached the VMM.
    if kernel_at_least(5, 14) {
        let count = |suffix: &str| -> Option<u64> {
            exit_lines(&err)
                .find(|(l, _)| l.trim_end().ends_with(suffix))
                .map(|(_, n)| n)
        };
        let (vmm, all) = (count(" VM exits"), count(" kvm exits"));
        assert!(
            matches!((vmm, all), (Some(v), Some(a)) if a > v && v > 0),
            "VMM exits {vmm:?}, KVM exits {all:?}:\n{err}"
        );
        assert!(count(" kvm insn_emulation").is_some(), "{err}");
    }
    let uuid = uuid_of(&uuid_file);
    let s = e.status(&uuid);
    assert!(
        s.contains("state=exited\n") && s.contains("app-hello=0"),
        "{s}"
    );
    assert!(e.pod_pid(&uuid) > 0);
    assert!(!e.pod_dir(&uuid).join("failure").exists());
}

/// Phase tracing (`RKT_TRACE_PHASES=1`) reaches rkt's stderr from inside the guest, app exec
/// and guest-init's last phase included, without going through the serial console: guest-init
/// sends its lines to the apps' stderr console once that is open, so only its first line costs
/// COM1 writes (two VM exits a byte; ~270 writes when every line went there). stdout stays
/// the app's alone. A pod without network cards gets no `rkt/net.json`.
#[test]
fn kvm_phase_lines_leave_the_serial_console() {
    let Some(e) = E2e::require_kvm("kvm_phase_lines_leave_the_serial_console") else {
        return;
    };
    let uuid_file = e.path("uuid");
    let args = hello_run(&e, &uuid_file, &["--net=none"], &[]);
    let o = e.run_env(
        &[("RKT_TRACE_PHASES", "1"), ("RKT_VMM_EXIT_STATS", "1")],
        &args,
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        stdout(&o).starts_with("Hello from a rkt-rs pod!\n"),
        "{}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains("rkt-phase"), "{}", stdout(&o));
    for phase in [
        "stage1-vmm vcpus-started",
        "guest-init main",
        "guest-init prepared",
        "app exec",
        "guest-init synced",
    ] {
        assert!(
            err.lines()
                .any(|l| l.starts_with("rkt-phase ") && l.ends_with(phase)),
            "no {phase:?} phase line:\n{err}"
        );
    }
    let com1_writes: u64 = exit_lines(&err)
        .filter(|(l, _)| l.contains("pio-out") && l.contains(" 0x3f8 "))
        .map(|(_, n)| n)
        .sum();
    assert!(
        com1_writes < 100,
        "{com1_writes} COM1 data writes: phase lines went to the serial console\n{err}"
    );
    // Without a network card there is no guest network configuration to write or parse.
    let net_json = pod_abi::paths::PodPaths::new(e.pod_dir(&uuid_of(&uuid_file)))
        .stage1_rootfs()
        .join(pod_abi::paths::NET_IN_STAGE1);
    assert!(!net_json.exists(), "{} written", net_json.display());
}

/// A VM cannot share the host's IPC namespace: `--ipc=parent` is refused before the VM exists,
/// with a message that says why, and the app never runs.
#[test]
fn kvm_pod_refuses_the_hosts_ipc_namespace() {
    let Some(e) = E2e::require_kvm("kvm_pod_refuses_the_hosts_ipc_namespace") else {
        return;
    };
    let img = e.hello_image();
    let o = e.run(&[
        "run".to_string(),
        e.stage1_flag(),
        "--net=none".into(),
        "--ipc=parent".into(),
        img.to_str().unwrap().to_string(),
    ]);
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--ipc=parent: a KVM pod cannot share the host's IPC namespace"),
        "{}",
        stderr(&o)
    );
    assert!(!stdout(&o).contains("Hello"), "{}", stdout(&o));
}

#[test]
fn kvm_exit_code_is_first_non_zero_in_app_order() {
    let Some(e) = E2e::require_kvm("kvm_exit_code_is_first_non_zero_in_app_order") else {
        return;
    };
    let img = e.hello_image();
    let img = img.to_str().unwrap();
    let uuid_file = e.path("uuid");
    let o = e.run(&[
        "run",
        &e.stage1_flag(),
        &format!("--uuid-file-save={}", uuid_file.display()),
        img,
        "--name=a",
        "---",
        img,
        "--name=b",
        "--",
        "--exit",
        "5",
        "---",
        img,
        "--name=c",
        "--",
        "--exit",
        "7",
    ]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(stdout(&o).matches("Hello from a rkt-rs pod!").count(), 3);
    let uuid = uuid_of(&uuid_file);
    let s = e.status(&uuid);
    for l in ["state=exited", "app-a=0", "app-b=5", "app-c=7"] {
        assert!(s.contains(l), "{l} in {s}");
    }
    // The copy the jailed VMM leaves for `rkt` group members.
    let published =
        std::fs::read_to_string(e.pod_dir(&uuid).join(pod_abi::paths::POD_APP_STATUSES)).unwrap();
    assert_eq!(published, "a=0\nb=5\nc=7\n");
}

#[test]
fn kvm_pod_check_with_overrides_and_two_apps_sharing_a_volume() {
    let Some(e) = E2e::require_kvm("kvm_pod_check_with_overrides_and_two_apps_sharing_a_volume")
    else {
        return;
    };
    // The in-pod checker, as in the ns flavor's test, plus a second app that rendezvouses
    // with the first through the empty volume (mode 0777: the checker runs as uid 1000, the
    // sidekick as root).
    let side = e.pod_check_image("sidekick.aci", |s| s.mount_point("db", "/db", false));
    let side = side.to_str().unwrap();
    let o = e.run(&e.overrides_check_args(
        "db",
        "kind=empty,mode=0777",
        &[
            "--write=/db/main",
            "--wait-for=/db/sidekick",
            "--timeout-ms=60000",
            "---",
            side,
            // rktlet's QoS flags: the guest kernel's oom_score_adj and the app's guest cgroup.
            "--cpu-shares=512",
            "--oom-score-adj=-500",
            "--",
            // guest-init is root with every capability in the guest: it may lower it.
            "--expect-oom-score-adj=-500",
            "--write=/db/sidekick",
            "--wait-for=/db/main",
            "--timeout-ms=60000",
        ],
    ));
    assert_eq!(
        stdout(&o).matches("pod-check OK").count(),
        2,
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn kvm_host_volumes_read_only_and_read_write() {
    let Some(e) = E2e::require_kvm("kvm_host_volumes_read_only_and_read_write") else {
        return;
    };
    let img = e.pod_check_image("vols.aci", |s| {
        s.mount_point("ro", "/ro", true)
            .mount_point("rw", "/rw", false)
    });
    let ro = e.path("ro");
    let rw = e.path("rw");
    std::fs::create_dir(&ro).unwrap();
    std::fs::create_dir(&rw).unwrap();
    std::fs::write(ro.join("from-host"), b"hi").unwrap();
    let o = e.run(&[
        "run",
        &e.stage1_flag(),
        &format!(
            "--volume=ro,kind=host,source={},readOnly=true",
            ro.display()
        ),
        &format!("--volume=rw,kind=host,source={}", rw.display()),
        img.to_str().unwrap(),
        "--name=writer",
        "--",
        "--expect-mount=/ro:ro",
        "--expect-mount=/rw:rw",
        "--expect-file=/ro/from-host",
        "--append",
        "/rw/from-guest",
        "written in the VM",
        "---",
        img.to_str().unwrap(),
        "--name=denied",
        "--",
        "--no-check",
        "--append",
        "/ro/denied",
        "x",
    ]);
    let out = stdout(&o);
    assert!(out.contains("pod-check OK"), "{out}{}", stderr(&o));
    assert!(
        out.contains("append to /ro/denied") && out.contains("Read-only file system"),
        "{out}"
    );
    // The first app passed; the second failed its write: the pod's code is the second's.
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(rw.join("from-guest")).unwrap(),
        "written in the VM\n"
    );
    assert!(!ro.join("denied").exists());
}

#[test]
fn kvm_rkt_stop_ends_a_running_pod() {
    let Some(e) = E2e::require_kvm("kvm_rkt_stop_ends_a_running_pod") else {
        return;
    };
    let (child, uuid) = e.start_sleeper("sleeper.aci", &[]);
    assert!(e.status(&uuid).contains("state=running"));
    // The stop goes over the exec channel (tests/tests/kvm_exec.rs covers enter).
    let stopped = Instant::now();
    let s = e.run(&["stop", &uuid]);
    assert_eq!(s.status.code(), Some(0), "{}", stderr(&s));
    assert!(
        stderr(&s).contains("app sleeper: stopped by SIGTERM, status 143"),
        "rkt stop reports what happened: {}",
        stderr(&s)
    );
    let o = wait_output(child, Duration::from_secs(120));
    eprintln!(
        "rkt run after stop: exit {:?} in {:.1?}\n{}",
        o.status.code(),
        stopped.elapsed(),
        stderr(&o)
    );
    // SIGTERM reached the app (128 + 15) through guest-init; the pod exited normally.
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    let st = e.status(&uuid);
    assert!(
        st.contains("state=exited") && st.contains("app-sleeper=143"),
        "{st}"
    );
    assert!(!e.pod_dir(&uuid).join("failure").exists());
}

#[test]
fn kvm_second_sigterm_ends_the_vm_at_once() {
    let Some(e) = E2e::require_kvm("kvm_second_sigterm_ends_the_vm_at_once") else {
        return;
    };
    // The app ignores SIGTERM, so the graceful stop would take the whole grace period; a
    // second signal to the VMM ends the VM at once and says so.
    let (child, uuid) = e.start_sleeper("stubborn.aci", &["--ignore-sigterm"]);
    let pid = e.pod_pid(&uuid);
    let stopped = Instant::now();
    for _ in 0..2 {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let o = wait_output(child, Duration::from_secs(60));
    eprintln!(
        "two SIGTERMs: exit {:?} after {:.1?}\n{}",
        o.status.code(),
        stopped.elapsed(),
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(pod_abi::exit::STAGE1_FAILED));
    assert!(stopped.elapsed() < Duration::from_secs(10), "not at once");
    let failure = std::fs::read_to_string(e.pod_dir(&uuid).join("failure")).unwrap();
    assert_eq!(failure, "stopped by a second signal\n");
    assert!(e.status(&uuid).contains("state=exited"));
}

/// A `/proc/<pid>/status` (or task status) field's value.
fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {field} in\n{status}"))
}

/// The VMM of a running pod runs with least privilege (issue 9, item 5): no new privileges, a
/// seccomp filter on every thread, no capability (effective, permitted, bounding, ambient) on
/// any thread but the virtio-fs worker, which keeps only what the passthrough file system needs.
#[test]
fn kvm_vmm_runs_with_least_privilege() {
    let Some(e) = E2e::require_kvm("kvm_vmm_runs_with_least_privilege") else {
        return;
    };
    // CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID SETGID SETUID; no MKNOD
    // (stage1-vmm/src/confine/caps.rs).
    let fs_caps = "00000000000000df";
    let none = "0000000000000000";
    let (child, uuid) = e.start_sleeper("confined.aci", &[]);
    let pid = e.pod_pid(&uuid);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    eprintln!("VMM /proc/{pid}/status:\n{status}");
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(status_field(&status, "Seccomp"), "2");
    assert_eq!(status_field(&status, "CapEff"), none);
    assert_eq!(status_field(&status, "CapPrm"), none);
    assert_eq!(status_field(&status, "CapBnd"), none);
    let mut kinds = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = t.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap();
        let comm = comm.trim().to_string();
        let st = std::fs::read_to_string(dir.join("status")).unwrap();
        let eff = status_field(&st, "CapEff");
        eprintln!(
            "thread {comm}: Seccomp {} CapEff {eff}",
            status_field(&st, "Seccomp")
        );
        assert_eq!(status_field(&st, "Seccomp"), "2", "thread {comm}");
        assert_eq!(status_field(&st, "NoNewPrivs"), "1", "thread {comm}");
        let want = if comm == "virtio-fs" { fs_caps } else { none };
        assert_eq!(eff, want, "thread {comm} CapEff");
        assert_eq!(status_field(&st, "CapPrm"), want, "thread {comm} CapPrm");
        assert_eq!(status_field(&st, "CapAmb"), none, "thread {comm} CapAmb");
        assert_eq!(status_field(&st, "CapBnd"), want, "thread {comm} CapBnd");
        kinds.push(comm);
    }
    // The virtio-fs device keeps one descriptor per inode the guest has looked up and per open
    // handle: the VMM set its open-file limits to its budget, 65 536 + 1024 (`DEFAULT_MAX_FDS`
    // + `FD_RESERVE` in stage1-vmm/src/devices/virtio/fs.rs), at most `nr_open`, while it still
    // had CAP_SYS_RESOURCE (in the L1 the hard limit it started with is 4096): a pod root of more
    // files does not end in EMFILE, and a guest cannot pin more of the host's file table.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let files: Vec<u64> = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .unwrap_or_else(|| panic!("no open-file limit in\n{limits}"))
        .split_whitespace()
        .take(2)
        .map(|v| v.parse().unwrap())
        .collect();
    let budget = nr_open.min(65_536 + 1024);
    assert_eq!(
        files,
        [budget, budget],
        "soft and hard open-file limits:\n{limits}"
    );
    for k in [
        "vcpu0",
        "virtio-fs",
        "virtio-console",
        "console-out",
        "signals",
    ] {
        assert!(kinds.iter().any(|c| c == k), "no {k} thread in {kinds:?}");
    }
    // The jail's /pod and every mount below it (the guest's share among them) are
    // nosuid,nodev: a device node the guest makes in its share is never opened on the host.
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let pod_mounts: Vec<&str> = mountinfo
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|m| m == "/pod" || m.starts_with("/pod/"))
        })
        .collect();
    assert!(pod_mounts.len() >= 2, "{mountinfo}");
    for l in &pod_mounts {
        let opts: Vec<&str> = l.split(' ').nth(5).unwrap_or("").split(',').collect();
        assert!(opts.contains(&"nosuid") && opts.contains(&"nodev"), "{l}");
    }
    let s = e.run(&["stop", &uuid]);
    assert_eq!(s.status.code(), Some(0), "{}", stderr(&s));
    assert!(
        stderr(&s).contains("app confined: stopped by SIGTERM, status 143"),
        "rkt stop reports what happened: {}",
        stderr(&s)
    );
    let o = wait_output(child, Duration::from_secs(120));
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    assert!(!e.pod_dir(&uuid).join("failure").exists());
}

/// Runs the image `img` with `rkt run --interactive`, a pty as its terminal, the app getting
/// `app_args`; `input` is typed after `delay`. Returns the exit code, what the terminal showed,
/// and whether the terminal is cooked (ICANON|ECHO) afterwards.
fn run_on_pty(
    e: &E2e,
    img: &Path,
    app_args: &[&str],
    input: &[u8],
    delay: Duration,
) -> (Option<i32>, String, bool) {
    use nix::sys::termios::{tcgetattr, LocalFlags};
    use std::io::Write;
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = pty.slave;
    let mut args = vec![
        "run".to_string(),
        e.stage1_flag(),
        "--interactive".into(),
        img.display().to_string(),
        "--".into(),
    ];
    args.extend(app_args.iter().map(|a| a.to_string()));
    let mut child = e
        .rkt(&args)
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()))
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(pty.master);
    let mut reader = master.try_clone().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        let mut b = [0u8; 4096];
        while let Ok(n) = reader.read(&mut b) {
            if n == 0 {
                break;
            }
            s2.lock().unwrap().extend_from_slice(&b[..n]);
        }
    });
    std::thread::sleep(delay);
    master.write_all(input).unwrap();
    let deadline = Instant::now() + Duration::from_secs(KVM_RUN_TIMEOUT_SECS);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(300));
    let cooked = tcgetattr(&slave)
        .map(|t| {
            t.local_flags
                .contains(LocalFlags::ICANON | LocalFlags::ECHO)
        })
        .unwrap_or(false);
    let text = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    eprintln!(
        "$ rkt {} (on a pty)\n[exit {:?}]\n{text}",
        args.join(" "),
        status.code()
    );
    (status.code(), text, cooked)
}

#[test]
fn kvm_interactive_terminal_and_escape() {
    let Some(e) = E2e::require_kvm("kvm_interactive_terminal_and_escape") else {
        return;
    };
    let img = e.pod_check_image("tty.aci", |s| s);
    // The app's stdin and stdout are a terminal that is its controlling terminal.
    let (code, text, cooked) = run_on_pty(&e, &img, &["--expect-tty"], b"", Duration::ZERO);
    assert!(text.contains("pod-check OK"), "{text}");
    assert_eq!(code, Some(0));
    assert!(cooked, "the terminal was not restored");
    // ^] three times within a second kills the VM and restores the terminal.
    let (code, text, cooked) = run_on_pty(
        &e,
        &img,
        &["--sleep-ms=600000"],
        b"\x1d\x1d\x1d",
        Duration::from_secs(3),
    );
    assert_eq!(code, Some(pod_abi::exit::STAGE1_FAILED), "{text}");
    assert!(text.contains("killed from the terminal"), "{text}");
    assert!(cooked, "the terminal was not restored");
}

#[test]
fn kvm_guest_kernel_panic_is_a_pod_failure() {
    let Some(e) = E2e::require_kvm("kvm_guest_kernel_panic_is_a_pod_failure") else {
        return;
    };
    // The app crashes the guest kernel through sysrq (writable only with
    // --insecure-options=paths); the VMM sees the panic line.
    let img = e.pod_check_image("crash.aci", |s| s);
    let uuid_file = e.path("uuid");
    let o = e.run(&[
        "run",
        "--insecure-options=image,paths",
        &e.stage1_flag(),
        &format!("--uuid-file-save={}", uuid_file.display()),
        img.to_str().unwrap(),
        "--",
        "--no-check",
        "--append",
        "/proc/sysrq-trigger",
        "c",
        "--sleep-ms=60000",
    ]);
    assert_eq!(
        o.status.code(),
        Some(pod_abi::exit::STAGE1_FAILED),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("guest kernel panic"), "{}", stderr(&o));
    let uuid = uuid_of(&uuid_file);
    let failure = std::fs::read_to_string(e.pod_dir(&uuid).join("failure")).unwrap();
    assert!(failure.starts_with("guest kernel panic"), "{failure}");
    assert_eq!(failure.lines().count(), 1, "{failure}");
    assert!(e.status(&uuid).contains("state=exited"));
}

#[test]
fn kvm_ten_mib_of_output_arrive_whole() {
    let Some((e, img)) = helper_pod("kvm_ten_mib_of_output_arrive_whole") else {
        return;
    };
    let n = BULK_BYTES.to_string();
    let t0 = Instant::now();
    let o = run_helper(&e, &img, &[], &["emit", &n]);
    let took = t0.elapsed();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(o.stdout.len(), BULK_BYTES, "bytes received");
    let mut want = String::with_capacity(BULK_BYTES);
    for i in 0..BULK_BYTES / BULK_LINE {
        want.push_str(&format!("{i:09}\n"));
    }
    assert!(
        o.stdout == want.as_bytes(),
        "the output is not the emitted sequence"
    );
    eprintln!("10 MiB through hvc0 in {took:.1?} (boot included)");
}

#[test]
fn kvm_share_reads_ahead_one_fuse_request() {
    let Some((e, img)) = helper_pod("kvm_share_reads_ahead_one_fuse_request") else {
        return;
    };
    let o = run_helper(&e, &img, &[], &["readahead", "/"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // guest-init raised the share's readahead from FUSE's 128 KiB to one 1 MiB request, so an
    // app's binary arrives in a few READs rather than one per 128 KiB.
    assert_eq!(stdout(&o), "READAHEAD_KB=1024\n");
}

#[test]
fn kvm_apps_get_random_numbers_without_waiting() {
    // A guest whose CPU offers no RDRAND (the nested harness's) had no ready CRNG when its apps
    // started, and an app's first blocking getrandom() waited for the kernel's jitter entropy:
    // 2.5 s of guest time under the harness. The entropy device (virtio-rng) makes it ready
    // during the boot, and guest-init starts no app before it is.
    let name = "kvm_apps_get_random_numbers_without_waiting";
    let Some((e, img)) = helper_pod(name) else {
        return;
    };
    let o = e.run(&[
        "run".to_string(),
        e.stage1_flag(),
        "--net=none".into(),
        img.to_str().unwrap().to_string(),
        "--".into(),
        "getrandom".into(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let ms: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("GETRANDOM_MS="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no GETRANDOM_MS line: {out}"));
    eprintln!("{name}: the app's first getrandom() took {ms} ms");
    assert!(
        ms < 500.0,
        "getrandom() waited {ms} ms for the guest's CRNG"
    );
    assert!(
        out.contains("HWRNG=virtio_rng.0\n"),
        "the guest's hwrng is not the entropy device: {out}"
    );
}

#[test]
fn kvm_memory_limit_sizes_the_vm() {
    let Some((e, img)) = helper_pod("kvm_memory_limit_sizes_the_vm") else {
        return;
    };
    let kb = |out: &str, key: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {out:?}"))
    };
    // With a 256 MiB limit the guest has at least that much.
    let o = run_helper(&e, &img, &["--memory=256Mi"], &["meminfo"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let (total, avail) = (kb(&out, "MemTotal:"), kb(&out, "MemAvailable:"));
    eprintln!("--memory=256Mi: MemTotal {total} kB, MemAvailable {avail} kB");
    assert!(total >= 256 * 1024, "MemTotal {total} kB < 256 MiB");
    assert!(avail >= 256 * 1024, "MemAvailable {avail} kB < 256 MiB");
    // Without a limit: the default per-app amount, far below rkt's old 512 MiB floor.
    let o = run_helper(&e, &img, &[], &["meminfo"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let (total, avail) = (kb(&out, "MemTotal:"), kb(&out, "MemAvailable:"));
    eprintln!("no limit: MemTotal {total} kB, MemAvailable {avail} kB");
    assert!(
        (128 * 1024..512 * 1024).contains(&total),
        "MemTotal {total} kB"
    );
}

#[test]
fn kvm_cpu_limit_is_enforced() {
    let Some((e, img)) = helper_pod("kvm_cpu_limit_is_enforced") else {
        return;
    };
    // `resource/cpu` 500m: the guest kernel's CFS bandwidth control holds a busy loop to about
    // half a CPU over 3 s of guest time (the vCPU count alone could not: it is whole CPUs).
    let o = run_helper(&e, &img, &["--cpu=500m"], &["spin", "3000"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        !err.contains("not enforcing resource/cpu"),
        "the guest could not enforce the CPU limit: {err}"
    );
    let frac: f64 = stdout(&o)
        .lines()
        .find_map(|l| l.strip_prefix("CPUFRAC="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no CPUFRAC in {:?}", stdout(&o)));
    eprintln!("--cpu=500m: a busy loop got {frac:.3} of a CPU");
    assert!(
        (0.3..0.7).contains(&frac),
        "a 500m limit gave the loop {frac:.3} of a CPU"
    );
}

#[test]
fn kvm_vmm_runs_in_its_pod_cgroup_bounded_by_the_vm_size() {
    let test = "kvm_vmm_runs_in_its_pod_cgroup_bounded_by_the_vm_size";
    let Some((e, img)) = helper_pod(test) else {
        return;
    };
    // A guest that writes 56 MiB of its RAM: its memory is the VMM's, charged to the pod's host
    // cgroup, whose limits are the VM's size (memory: RAM + the VMM's allowance; CPU: its vCPUs).
    let uuid_file = e.path("uuid-cgroup");
    let uuid_flag = format!("--uuid-file-save={}", uuid_file.display());
    let o = e.run(&[
        "run",
        &e.stage1_flag(),
        &uuid_flag,
        img.to_str().unwrap(),
        "--memory=64Mi",
        "--cpu=500m",
        "--",
        "touch",
        "56",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("TOUCHED=56"), "{}", stdout(&o));
    let uuid = uuid_of(&uuid_file);
    let listed =
        std::fs::read_to_string(e.pod_dir(&uuid).join(stage1_common::cgroup::CGROUPS_FILE))
            .expect("the pod lists its host cgroups");
    let dirs: Vec<PathBuf> = listed.lines().map(PathBuf::from).collect();
    assert!(!dirs.is_empty(), "no host cgroup for the VMM");
    let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).map(|s| s.trim().to_string());
    // The VM: 64 MiB for the app + the guest's base + per-page overhead, one vCPU.
    let vm_mib = 64 + stage1_vmm::pod::sizing::GUEST_BASE_MIB + 2;
    let want_mem = (vm_mib + stage1_vmm::pod::sizing::VMM_ALLOWANCE_MIB) << 20;
    for d in &dirs {
        assert!(
            d.file_name().unwrap().to_string_lossy() == format!("rkt-{uuid}"),
            "{}",
            d.display()
        );
        if let Ok(max) = read(d, "memory.max") {
            // cgroup v2 (the harness's L1).
            assert_eq!(max, want_mem.to_string(), "memory.max of {}", d.display());
            // 500m for the app and the VMM's 250m.
            assert_eq!(read(d, "cpu.max").unwrap(), "75000 100000");
            let peak: u64 = read(d, "memory.peak").unwrap().parse().unwrap();
            let usage = read(d, "cpu.stat").unwrap();
            eprintln!(
                "pod cgroup {}: memory.peak {} MiB of {} MiB; {}",
                d.display(),
                peak >> 20,
                want_mem >> 20,
                usage.lines().next().unwrap_or("")
            );
            // The guest's 56 MiB are charged here: the VMM (and so its guest RAM) was in it.
            assert!(
                peak >= 56 << 20,
                "memory.peak {peak}: the guest's RAM was not charged"
            );
            assert!(
                peak < want_mem,
                "memory.peak {peak} reached the limit {want_mem}"
            );
        } else if let Ok(max) = read(d, "memory.limit_in_bytes") {
            assert_eq!(max, want_mem.to_string());
            let peak: u64 = read(d, "memory.max_usage_in_bytes")
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                peak >= 56 << 20,
                "memory peak {peak}: the guest's RAM was not charged"
            );
        } else if let Ok(q) = read(d, "cpu.cfs_quota_us") {
            assert_eq!(q, "75000");
        }
    }
    // gc removes them.
    let o = e.run(&["gc", "--grace-period=0s"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for d in &dirs {
        assert!(!d.exists(), "gc left the pod cgroup {}", d.display());
    }
}

/// CPU time (µs) and throttled periods of the pod cgroups listed in `listed` (cgroup v2:
/// `cpu.stat`'s `usage_usec` and `nr_throttled`; v1: `cpuacct.usage` in ns, `cpu.stat`).
fn pod_cgroup_cpu(listed: &str) -> (Option<u64>, Option<u64>) {
    let field = |text: &str, key: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
    };
    let (mut usage_us, mut throttled) = (None, None);
    for d in listed.lines().map(Path::new) {
        if let Ok(st) = std::fs::read_to_string(d.join("cpu.stat")) {
            throttled = throttled.or(field(&st, "nr_throttled "));
            usage_us = usage_us.or(field(&st, "usage_usec "));
        }
        if let Some(ns) = std::fs::read_to_string(d.join("cpuacct.usage"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
        {
            usage_us = usage_us.or(Some(ns / 1000));
        }
    }
    (usage_us, throttled)
}

#[test]
fn kvm_app_out_of_its_guest_cgroup_is_held_by_the_host() {
    let test = "kvm_app_out_of_its_guest_cgroup_is_held_by_the_host";
    let Some((e, img)) = helper_pod(test) else {
        return;
    };
    // The attack: a root app given every capability and `mount` (no seccomp filter) enters PID
    // 1's cgroup namespace (its own is rooted at its cgroup, so `CAP_SYS_ADMIN` alone no longer
    // reaches further), leaves the guest cgroup that holds it to its 200m, then spins for 6 s. The guest kernel no longer
    // limits it; the pod's host cgroup must (200m + the VMM's 250m). The VM's CPU use is
    // sampled over 3 s of that spin.
    let uuid_file = e.path("uuid-escape");
    let uuid_flag = format!("--uuid-file-save={}", uuid_file.display());
    let mut child = e.spawn(&[
        "run",
        "--insecure-options=image,seccomp,capabilities",
        &e.stage1_flag(),
        &uuid_flag,
        img.to_str().unwrap(),
        "--cpu=200m",
        "--",
        "escape",
        "6000",
    ]);
    let pipe = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(pipe)).map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    let deadline = Instant::now() + e.timeout();
    let escaped = loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(l) if l == "ESCAPED=1" => break true,
            Ok(_) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(_) => break false,
        }
    };
    let window = Duration::from_secs(3);
    let sample = if escaped {
        let uuid = uuid_of(&uuid_file);
        let listed =
            std::fs::read_to_string(e.pod_dir(&uuid).join(stage1_common::cgroup::CGROUPS_FILE))
                .expect("the pod lists its host cgroups");
        let t0 = Instant::now();
        let first = pod_cgroup_cpu(&listed);
        std::thread::sleep(window);
        let last = pod_cgroup_cpu(&listed);
        Some((first, last, t0.elapsed()))
    } else {
        None
    };
    let o = wait_output(child, e.timeout());
    let out = reader.join().unwrap();
    eprintln!("--- stdout\n{out}--- stderr\n{}", stderr(&o));
    assert_eq!(o.status.code(), Some(0));
    let ((Some(u0), Some(n0)), (Some(u1), Some(n1)), took) =
        sample.expect("the app did not leave its guest cgroup")
    else {
        panic!("no CPU usage or throttling figures in the pod's host cgroups");
    };
    let frac = (u1 - u0) as f64 / took.as_micros() as f64;
    eprintln!(
        "escaped app (guest: {}): the pod's VM used {frac:.3} of a CPU over {took:.1?}, \
         throttled {} times",
        out.lines()
            .find(|l| l.starts_with("CPUFRAC"))
            .unwrap_or("-"),
        n1 - n0
    );
    assert!(n1 > n0, "the host never throttled the escaped app's VM");
    assert!(
        frac < 0.6,
        "the VM took {frac:.3} of a CPU against its 0.45 (200m + 250m)"
    );
}

/// The exit profile's lines in a VMM's stderr (`stage1-vmm: exits: <count>  ...`, the VMM's
/// table and KVM's counters), each with its count.
fn exit_lines(err: &str) -> impl Iterator<Item = (&str, u64)> {
    err.lines().filter_map(|l| {
        let n = l
            .split("exits:")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some((l, n))
    })
}

/// Whether the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let have = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    have >= (major, minor)
}
