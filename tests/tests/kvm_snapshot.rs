//! End-to-end: `rkt run --stage1=kvm --kvm-snapshot` (docs/snapshot.md): the first pod makes
//! the snapshot (a child stage1-vmm with no pod), later pods of the same shape restore it; both
//! run their app and exit with its status; a pod without the flag boots cold; a pod's app can
//! neither see nor change the snapshot's files; a tampered cache entry means a cold boot with a
//! warning, and is removed so that the next pod makes it afresh.
//!
//! Pods here run with `--cpu=1` (the harness's L1 has one CPU; a snapshot of two vCPUs is
//! tested at the VMM level, stage1-vmm/tests/linux_snapshot.rs) and `--net=none`, but for the
//! network test. Each test gives its app a different `--memory`, so that each has its own cache
//! entry (the KVM tests of a binary share one data directory, hence one cache).
//!
//! Every test starts with `E2e::require_kvm` (guest-booting: SKIP here, run under
//! ci/nested-kvm).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pod_abi::snapshot::{file_id_of, Source, CACHE_IN_DATA_DIR, PORT_STATUS, SOURCE_FILE};
use rkt_tests::{cc_static, skip, stderr, stdout, uuid_of, E2e, ImageSpec, BUSYBOX};
use sha2::{Digest, Sha256};

/// The snapshot cache of `e`'s data directory (stage1-vmm's `snapshot_start::cache_root`).
fn cache(e: &E2e) -> PathBuf {
    e.dir().join(CACHE_IN_DATA_DIR)
}

/// The complete snapshot directories in the cache (those with a `state` file).
fn snapshots(e: &E2e) -> BTreeSet<PathBuf> {
    std::fs::read_dir(cache(e))
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path())
        .filter(|p| p.join("state").is_file())
        .collect()
}

/// SHA-256 (hex) of a file.
fn sha256(p: &Path) -> String {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    hex::encode(Sha256::digest(&b))
}

/// `rkt run` of `image` as a snapshot-capable pod (`--net=none`, one vCPU, `--memory=mem`),
/// with `--kvm-snapshot` when `snapshot`, `--debug`, and `args` for the app.
fn run_pod(
    e: &E2e,
    snapshot: bool,
    image: &Path,
    mem: &str,
    args: &[&str],
) -> (std::process::Output, String) {
    let uuid_file = e.path("uuid");
    let _ = std::fs::remove_file(&uuid_file);
    let mut a = vec![
        "run".to_string(),
        "--debug".to_string(),
        e.stage1_flag(),
        "--net=none".to_string(),
        format!("--uuid-file-save={}", uuid_file.display()),
    ];
    if snapshot {
        a.push("--kvm-snapshot".into());
    }
    a.push(image.display().to_string());
    a.push("--cpu=1".into());
    a.push(format!("--memory={mem}"));
    if !args.is_empty() {
        a.push("--".into());
        a.extend(args.iter().map(|s| s.to_string()));
    }
    let o = e.run(&a);
    let uuid = uuid_of(&uuid_file);
    (o, uuid)
}

#[test]
fn kvm_snapshot_pods_make_then_restore_and_carry_the_exit_status() {
    let Some(e) = E2e::require_kvm("kvm_snapshot_pods_make_then_restore_and_carry_the_exit_status")
    else {
        return;
    };
    let img = e.hello_image();
    let before = snapshots(&e);

    // The first pod makes the snapshot, then restores it like every later one.
    let (o, uuid) = run_pod(&e, true, &img, "64Mi", &["--exit", "3"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("Hello from a rkt-rs pod!"),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("--kvm-snapshot: made snapshot"),
        "{}",
        stderr(&o)
    );
    let s = e.status(&uuid);
    assert!(
        s.contains("state=exited\n") && s.contains("app-hello=3"),
        "{s}"
    );
    let made: Vec<PathBuf> = snapshots(&e).difference(&before).cloned().collect();
    assert_eq!(made.len(), 1, "one new snapshot: {made:?}");
    let state = made[0].join("state");
    let sum = sha256(&state);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(cache(&e)).unwrap().permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the cache is root-only: {mode:o}");

    // The second restores the same snapshot: no new one, the old one untouched.
    let (o, uuid) = run_pod(&e, true, &img, "64Mi", &["--exit", "3", "again"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"again\""), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("--kvm-snapshot: found snapshot"),
        "{}",
        stderr(&o)
    );
    assert!(e.status(&uuid).contains("app-hello=3"));
    assert_eq!(snapshots(&e).difference(&before).count(), 1);
    assert_eq!(sha256(&state), sum);

    // Without the flag the same pod boots cold and nothing is made.
    let (o, _) = run_pod(&e, false, &img, "64Mi", &["--exit", "4"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(!stderr(&o).contains("--kvm-snapshot"), "{}", stderr(&o));
    assert_eq!(snapshots(&e).difference(&before).count(), 1);
}

/// A static probe: first reads the snapshot port's status byte with an `in` instruction and
/// prints `PORT 0x5e1 read <v>` or, when the kernel refuses it (SIGSEGV), `PORT 0x5e1 denied`;
/// then, for each path argument, tries to read it, then to create its directories and overwrite
/// it, and prints `READ <path> ok|<errno>` and `WRITE <path> ok|<errno>`.
const PROBE_C: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
static sigjmp_buf port_jmp;
static void on_segv(int s) { (void)s; siglongjmp(port_jmp, 1); }
static void probe_port(unsigned short port) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_segv;
    sigaction(SIGSEGV, &sa, 0);
    if (sigsetjmp(port_jmp, 1) == 0) {
        unsigned char v;
        __asm__ volatile("inb %w1, %b0" : "=a"(v) : "Nd"(port));
        printf("PORT %#x read %u\n", port, v);
    } else {
        printf("PORT %#x denied\n", port);
    }
    signal(SIGSEGV, SIG_DFL);
    fflush(stdout);
}
static void mkparents(const char *p) {
    char b[4096];
    snprintf(b, sizeof b, "%s", p);
    for (char *s = b + 1; *s; s++)
        if (*s == '/') { *s = 0; mkdir(b, 0755); *s = '/'; }
}
int main(int argc, char **argv) {
    probe_port(0x5e1);
    for (int i = 1; i < argc; i++) {
        char buf[16];
        int fd = open(argv[i], O_RDONLY);
        if (fd >= 0 && read(fd, buf, sizeof buf) >= 0) printf("READ %s ok\n", argv[i]);
        else printf("READ %s %s\n", argv[i], strerror(errno));
        if (fd >= 0) close(fd);
        mkparents(argv[i]);
        fd = open(argv[i], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0 && write(fd, "tampered", 8) == 8) printf("WRITE %s ok\n", argv[i]);
        else printf("WRITE %s %s\n", argv[i], strerror(errno));
        if (fd >= 0) close(fd);
    }
    return 0;
}
"#;

/// The probe image (the probe compiled with `cc -static`), or `None` after a SKIP.
fn probe_image(e: &E2e, test: &str) -> Option<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let bin = BIN.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("rkt-snapshot-probe-")
            .tempdir()
            .map_err(|e| e.to_string())?
            .keep();
        cc_static(PROBE_C, &dir, "probe")
    });
    match bin {
        Ok(b) => {
            let p = e.path("probe.aci");
            ImageSpec::new("example.com/probe", &["/bin/probe"])
                .file("/bin/probe", b, 0o755)
                .build(&p);
            Some(p)
        }
        Err(why) => {
            skip(test, &format!("cannot build the static probe: {why}"));
            None
        }
    }
}

#[test]
fn kvm_snapshot_files_are_out_of_a_pods_reach() {
    let name = "kvm_snapshot_files_are_out_of_a_pods_reach";
    let Some(e) = E2e::require_kvm(name) else {
        return;
    };
    let Some(img) = probe_image(&e, name) else {
        return;
    };
    let hello = e.hello_image();
    let before = snapshots(&e);
    let (o, _) = run_pod(&e, true, &hello, "72Mi", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let made: Vec<PathBuf> = snapshots(&e).difference(&before).cloned().collect();
    assert_eq!(made.len(), 1, "{made:?}");
    let (state, memory) = (made[0].join("state"), made[0].join("memory"));
    let sums = (sha256(&state), sha256(&memory));

    // A pod restored from that snapshot is given the host paths of its files.
    let (s, m) = (state.display().to_string(), memory.display().to_string());
    let (o, _) = run_pod(&e, true, &img, "72Mi", &[&s, &m]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--kvm-snapshot: found snapshot"),
        "{}",
        stderr(&o)
    );
    let out = stdout(&o);
    for p in [&s, &m] {
        // The guest has no such file: the host's cache is not in it.
        assert!(out.contains(&format!("READ {p} No such file")), "{out}");
    }
    // The snapshot stage's port access (`ioperm`, which fork and exec pass on) ended with it:
    // the app cannot reach the VMM's snapshot port.
    // (The probe's 0x5e1 is `PORT_STATUS`.)
    assert!(
        out.contains(&format!("PORT {PORT_STATUS:#x} denied")),
        "{out}"
    );
    // Whatever the app wrote went into its own root, not the host's files.
    assert_eq!((sha256(&state), sha256(&memory)), sums);
    assert_eq!(snapshots(&e).difference(&before).count(), 1);
}

#[test]
fn kvm_snapshot_tampered_cache_entry_boots_cold() {
    let Some(e) = E2e::require_kvm("kvm_snapshot_tampered_cache_entry_boots_cold") else {
        return;
    };
    let img = e.hello_image();
    let before = snapshots(&e);
    let (o, _) = run_pod(&e, true, &img, "80Mi", &["--exit", "6"]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    let made: Vec<PathBuf> = snapshots(&e).difference(&before).cloned().collect();
    assert_eq!(made.len(), 1, "{made:?}");

    // Flip a byte in the middle of the state file: its checksum no longer matches.
    let state = made[0].join("state");
    let mut b = std::fs::read(&state).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x5a;
    std::fs::write(&state, &b).unwrap();
    let (o, _) = run_pod(&e, true, &img, "80Mi", &["--exit", "6"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(6), "{err}");
    assert!(
        stdout(&o).contains("Hello from a rkt-rs pod!"),
        "{}",
        stdout(&o)
    );
    assert!(
        err.contains("is unusable") && err.contains("booting cold") && err.contains("removed it"),
        "{err}"
    );
    // The damaged entry is gone: the next pod makes it afresh, in the same place.
    assert!(std::fs::symlink_metadata(&made[0]).is_err(), "{err}");
    let (o, _) = run_pod(&e, true, &img, "80Mi", &["--exit", "6"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(6), "{err}");
    assert!(err.contains("--kvm-snapshot: made snapshot"), "{err}");
    assert!(made[0].join("state").is_file(), "{err}");

    // A truncated memory file too.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(made[0].join("memory"))
        .unwrap();
    f.set_len(4096).unwrap();
    let (o, _) = run_pod(&e, true, &img, "80Mi", &["--exit", "6"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(6), "{err}");
    assert!(
        err.contains("is unusable") && err.contains("removed it"),
        "{err}"
    );
    assert!(std::fs::symlink_metadata(&made[0]).is_err(), "{err}");
}

#[test]
fn kvm_snapshot_pod_takes_enter_stop_and_gc() {
    // After the restore the pod is a cold pod's twin: `rkt enter` over vsock, `rkt stop`
    // (exec channel, then COM2/SIGTERM), `rkt gc`.
    let Some(e) = E2e::require_kvm("kvm_snapshot_pod_takes_enter_stop_and_gc") else {
        return;
    };
    let img = e.hello_image();
    let (o, _) = run_pod(&e, true, &img, "88Mi", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let mark = e.path("mark");
    std::fs::create_dir(&mark).unwrap();
    let sleeper = e.pod_check_image("sleeper.aci", |s| s.mount_point("mark", "/mark", false));
    let uuid_file = e.path("uuid-sleeper");
    let args = vec![
        "run".to_string(),
        "--debug".into(),
        e.stage1_flag(),
        "--net=none".into(),
        "--kvm-snapshot".into(),
        format!("--uuid-file-save={}", uuid_file.display()),
        format!("--volume=mark,kind=host,source={}", mark.display()),
        sleeper.display().to_string(),
        "--cpu=1".into(),
        "--memory=88Mi".into(),
        "--".into(),
        "--no-check".into(),
        "--write=/mark/started".into(),
        "--sleep-ms=600000".into(),
    ];
    let run = e.spawn(&args);
    rkt_tests::wait_for_paths(
        &[&mark.join("started")],
        e.timeout(),
        "the restored pod's app never started",
    );
    let uuid = uuid_of(&uuid_file);
    let o = e.run(&[
        "enter",
        &uuid,
        "/bin/pod-check",
        "--no-check",
        "--exit",
        "7",
    ]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let s = e.run(&["stop", &uuid]);
    assert_eq!(s.status.code(), Some(0), "{}", stderr(&s));
    let out = rkt_tests::wait_output(run, e.timeout());
    assert!(
        stderr(&out).contains("--kvm-snapshot: found snapshot"),
        "{}",
        stderr(&out)
    );
    let st = e.status(&uuid);
    assert!(st.contains("state=exited"), "{st}");
    let g = e.run(&["gc", "--grace-period=0s"]);
    assert_eq!(g.status.code(), Some(0), "{}", stderr(&g));
    assert!(
        !e.dir().join("pods/run").join(&uuid).exists(),
        "gc left the pod among the running ones"
    );
    // The cache is not a pod's: gc keeps its fresh entries, whose source records name the
    // stage1 image's kernel and guest-init as they are.
    let kept = snapshots(&e);
    assert!(!kept.is_empty());
    assert!(!stdout(&g).contains("Removed snapshot"), "{}", stdout(&g));
    for d in &kept {
        let b = std::fs::read(d.join(SOURCE_FILE)).unwrap();
        let s = Source::parse(&b).unwrap();
        assert_eq!(file_id_of(&s.kernel).unwrap(), s.kernel_id, "{s:?}");
        assert_eq!(file_id_of(&s.guest_init).unwrap(), s.guest_init_id, "{s:?}");
    }
}

/// A static probe printing what must differ between two VMs restored from one snapshot: 16
/// bytes of `getrandom(2)` (`GETRANDOM <hex>`), the kernel's 16 `AT_RANDOM` bytes given to the
/// process at exec, which seed its stack protector and pointer guard (`AT_RANDOM <hex>`), and
/// where its stack landed (`STACK <address>`).
const RANDOM_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/auxv.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
static void hex(const char *name, const unsigned char *b) {
    printf("%s ", name);
    for (int i = 0; i < 16; i++) printf("%02x", b[i]);
    printf("\n");
}
int main(void) {
    unsigned char b[16];
    if (getrandom(b, sizeof b, 0) != (long)sizeof b) { perror("getrandom"); return 1; }
    hex("GETRANDOM", b);
    hex("AT_RANDOM", (const unsigned char *)getauxval(AT_RANDOM));
    int local;
    printf("STACK %p\n", (void *)&local);
    /* A root app may make the hwrng node (CAP_MKNOD is in the default set). */
    if (mknod("/dev/hwrng", S_IFCHR | 0600, makedev(10, 183))) { perror("mknod"); return 1; }
    int fd = open("/dev/hwrng", O_RDONLY);
    if (fd < 0 || read(fd, b, sizeof b) != (long)sizeof b) { perror("/dev/hwrng"); return 1; }
    hex("HWRNG", b);
    return 0;
}
"#;

#[test]
fn kvm_snapshot_restored_pods_draw_their_own_random_numbers() {
    // Every VM restored from one snapshot starts with the snapshot's kernel random state: unless
    // the guest reseeds its CRNG from the fresh entropy, two pods restored from one snapshot hand
    // their apps the same getrandom() bytes, stack canaries and address layout; and unless it
    // drains what its entropy device's driver held at the snapshot, the first read of
    // /dev/hwrng (a node a root app can make) returns the same bytes in each.
    let name = "kvm_snapshot_restored_pods_draw_their_own_random_numbers";
    let Some(e) = E2e::require_kvm(name) else {
        return;
    };
    let bin = match tempfile::Builder::new()
        .prefix("rkt-snapshot-random-")
        .tempdir()
        .map_err(|e| e.to_string())
        .and_then(|d| cc_static(RANDOM_C, &d.keep(), "random"))
    {
        Ok(b) => b,
        Err(why) => return skip(name, &format!("cannot build the static probe: {why}")),
    };
    let img = e.path("random.aci");
    ImageSpec::new("example.com/random", &["/bin/random"])
        .file("/bin/random", &bin, 0o755)
        .build(&img);
    let field = |out: &str, key: &str| -> String {
        out.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {key} line: {out}"))
            .to_string()
    };
    let mut seen: Vec<[String; 4]> = Vec::new();
    for i in 0..3 {
        let (o, _) = run_pod(&e, true, &img, "96Mi", &[]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{err}");
        let want = if i == 0 {
            "made snapshot"
        } else {
            "found snapshot"
        };
        assert!(err.contains(&format!("--kvm-snapshot: {want}")), "{err}");
        let out = stdout(&o);
        seen.push(["GETRANDOM", "AT_RANDOM", "STACK", "HWRNG"].map(|k| field(&out, k)));
    }
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        for k in 0..4 {
            assert_ne!(
                seen[a][k], seen[b][k],
                "restored pods {a} and {b} drew the same value: {seen:?}"
            );
        }
    }
}

/// Pods on a network restore too: the maker's VM has as many cards (on taps of its own), the
/// restored pod's cards get the pod's taps and guest-init gives the interface the pod's MAC
/// (the CNI interface's), then the app reaches a server in the test's "host" namespace through
/// the pod's gateway, in the pod that made the snapshot and in one that restored it.
#[test]
fn kvm_snapshot_pods_on_a_network_restore_and_reach_the_host() {
    let name = "kvm_snapshot_pods_on_a_network_restore_and_reach_the_host";
    let Some(e) = E2e::require_kvm_net(name) else {
        return;
    };
    let ns = e.host();
    let img = e.path("snap-nc.aci");
    let mut spec = ImageSpec::new("example.com/kvm-snap-nc", &["/bin/sh", "-c"])
        .file("/bin/busybox", Path::new(BUSYBOX), 0o755)
        .dir("/proc");
    for a in ["sh", "ip", "nc"] {
        spec = spec.symlink(&format!("/bin/{a}"), "busybox");
    }
    spec.build(&img);
    let before = snapshots(&e);
    for (round, found) in [(0, "made"), (1, "found")] {
        let server = ns.thread(|| {
            let l = std::net::TcpListener::bind("0.0.0.0:7778").unwrap();
            let (mut c, _) = l.accept().unwrap();
            let mut got = String::new();
            std::io::Read::read_to_string(&mut c, &mut got).unwrap();
            got
        });
        let uuid_file = e.path("uuid-net");
        let _ = std::fs::remove_file(&uuid_file);
        let script =
            format!("ip -o link show eth0; echo hello-{round} | nc -w 20 172.16.28.1 7778");
        let o = e.run(&[
            "run",
            "--debug",
            &e.stage1_flag(),
            "--net=default",
            "--kvm-snapshot",
            &format!("--uuid-file-save={}", uuid_file.display()),
            img.to_str().unwrap(),
            "--cpu=1",
            "--memory=72Mi",
            "--",
            &script,
        ]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{err}");
        assert!(
            err.contains(&format!("--kvm-snapshot: {found} snapshot")),
            "{err}"
        );
        assert!(!err.contains("no interface with MAC"), "{err}");
        assert_eq!(server.join().unwrap(), format!("hello-{round}\n"));
        // The guest's interface has the pod's MAC: its CNI interface's, in the pod's netns.
        let uuid = uuid_of(&uuid_file);
        let netns = format!("rkt-{uuid}");
        let o = ns.exec("ip", &["-n", &netns, "-o", "link", "show", "eth0"]);
        let cni = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let mac = cni
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no MAC in {cni:?}"))
            .to_string();
        let guest = stdout(&o);
        assert!(
            guest.contains(&format!("link/ether {mac}")),
            "guest: {guest}\nCNI interface: {cni}"
        );
    }
    assert_eq!(snapshots(&e).difference(&before).count(), 1);
    let g = e.run(&["gc", "--grace-period=0s"]);
    assert_eq!(g.status.code(), Some(0), "{}", stderr(&g));
}

/// Pods of two vCPUs (`RKT_VMM_CPUS=2`: the harness's L1 has one CPU, so sizing alone gives
/// one): a cold pod, then one making a snapshot of two vCPUs and one restoring it, each app
/// sees two CPUs and the pod exits with its status. Before 2026-12-05 every such pod ended in
/// the VMM's seccomp filter (a kicked vCPU read its registers) and exited 125.
#[test]
fn kvm_pods_of_two_vcpus_run_cold_and_restored() {
    let name = "kvm_pods_of_two_vcpus_run_cold_and_restored";
    let Some(e) = E2e::require_kvm(name) else {
        return;
    };
    if rkt_tests::static_busybox_or_skip(name).is_none() {
        return;
    }
    let img = e.path("smp.aci");
    ImageSpec::new(
        "example.com/kvm-smp",
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "echo CPUS=$(/bin/busybox nproc); exit 5",
        ],
    )
    .file("/bin/busybox", Path::new(BUSYBOX), 0o755)
    .dir("/proc")
    .build(&img);
    let before = snapshots(&e);
    for (snapshot, found) in [(false, ""), (true, "made"), (true, "found")] {
        let mut a = vec![
            "run".to_string(),
            "--debug".into(),
            e.stage1_flag(),
            "--net=none".into(),
        ];
        if snapshot {
            a.push("--kvm-snapshot".into());
        }
        a.push(img.display().to_string());
        a.push("--memory=104Mi".into());
        let o = e.run_env(&[("RKT_VMM_CPUS", "2")], &a);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(5), "{err}");
        assert!(stdout(&o).contains("CPUS=2"), "{}\n{err}", stdout(&o));
        assert!(
            err.contains("RKT_VMM_CPUS=2: the VM gets 2 vCPU(s)"),
            "{err}"
        );
        assert!(!err.contains("seccomp"), "{err}");
        if snapshot {
            assert!(
                err.contains(&format!("--kvm-snapshot: {found} snapshot")),
                "{err}"
            );
        }
    }
    assert_eq!(snapshots(&e).difference(&before).count(), 1);
}
