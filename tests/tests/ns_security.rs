//! End-to-end attacks and failures on the ns flavor's `enter`, start and launcher (needs root;
//! otherwise a SKIP line). Each test performs the attack or the failure and passes only if the
//! pod boundary and the pod's state stay right:
//!
//! * `rkt enter` runs image-controlled code (`/bin/escape-probe` of the image) confined like
//!   the app: the double chroot ends in the app root (never guest-init's `/rkt/plan.json`,
//!   i.e. the stage1 root on the host), `/proc/1/root` is refused, the capability sets are the
//!   app's (bounding set = the plan's list; `nobody` holds none and cannot write a root-owned
//!   directory), and the user, group and environment are the app's;
//! * `rkt enter` right after the pod's `pid` appears works every time and finds the app's
//!   complete environment (no window in which `pid` names a process that is not yet guest-init
//!   in the stage1 root, or an app root that guest-init has not set up yet);
//! * SIGKILL of the launcher (`rkt run`, which became stage1-ns) ends the whole pod: no process
//!   of it survives, `rkt status` says exited, `rkt gc` cleans it;
//! * a FIFO planted where the host reads an app status neither hangs `rkt status` nor breaks
//!   `rkt stop`;
//! * `--insecure-options=capabilities` lifts a root app's bounding set to all the host gave rkt,
//!   and without it `--caps-retain` bounds the set;
//! * a pod has an IPC namespace of its own unless `--ipc=parent` asks for the host's;
//! * with `--private-users`, root in an app is a host ID of the pod's range: a host volume's
//!   root-only file cannot be read, a file it makes belongs to that ID, `rkt enter` runs in the
//!   same mapping and `rkt export` gives the image its IDs back;
//! * an app that renames a directory above one of its host-side mounts to a name that is not
//!   UTF-8 (which the host's mount table then shows raw) cannot make `rkt rm` of another,
//!   exited pod remove files through that pod's still-mounted host volume.
#![allow(clippy::unwrap_used)]

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rkt_tests::{mounts_under, stderr, stdout, uuid_of, E2e, ImageSpec, BUSYBOX};

/// A file that exists only in guest-init's tree (the stage1 root), never in an app's.
const MARKER: &str = "/rkt/plan.json";
/// What escape-probe creates in whatever root its double chroot reached.
const WITNESS: &str = "escape-probe-was-here";
/// `nobody`.
const NOBODY: &str = "65534";
/// How long a pod may take to start or to go away, in seconds.
const SETTLE_SECS: u64 = 20;
/// How long the pod may outlive its killed launcher, in seconds.
const DIE_WITH_LAUNCHER_SECS: u64 = 5;
/// `rkt enter` right after start: attempts.
const ENTER_RACE_ROUNDS: usize = 20;
/// `rkt enter`s while the app snoops on newcomers.
const SNOOP_ENTERS: usize = 40;
/// How long the snooping app runs, in seconds.
const SNOOP_SECS: u64 = 15;

/// A pod-check image that also holds escape-probe and a root-owned 0755 `/rootdir`.
fn probe_image(e: &E2e) -> PathBuf {
    let p = e.escape_probe();
    e.pod_check_image("probe.aci", |s| {
        s.file("/bin/escape-probe", &p, 0o755)
            .file("/bin/hello", &e.bins.join("hello"), 0o755)
            .dir("/rootdir")
            .env("PROBE_ENV", "from-image")
    })
}

/// Starts `rkt run ARGS` in the background; returns the child and its `--uuid-file-save`.
fn start(e: &E2e, name: &str, args: &[&str]) -> (Child, PathBuf) {
    let uuid_file = e.path(&format!("{name}.uuid"));
    let mut all = vec![
        "run".to_string(),
        e.stage1_flag(),
        format!("--uuid-file-save={}", uuid_file.display()),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let child = e
        .rkt(&all)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, uuid_file)
}

/// Starts `rkt run` of `img` (a probe or `pod-check` image) sleeping for a minute, as
/// [`start`] does.
fn start_sleeping(e: &E2e, name: &str, img: &Path) -> (Child, PathBuf) {
    let img = img.to_str().unwrap();
    start(e, name, &[img, "--", "--no-check", "--sleep-ms=60000"])
}

/// Waits until the pod is running with a pid; returns its UUID.
fn wait_running(e: &E2e, uuid_file: &Path) -> String {
    let t0 = Instant::now();
    loop {
        if let Ok(u) = std::fs::read_to_string(uuid_file) {
            let s = stdout(&e.rkt(&["status", u.trim()]).output().unwrap());
            if s.contains("state=running") && !s.contains("pid=-1") {
                return u.trim().to_string();
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(SETTLE_SECS),
            "pod did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops the pod (forced) and waits for its launcher.
fn stop_and_wait(e: &E2e, uuid: &str, mut child: Child) {
    let _ = e.run(&["stop", "--force", uuid]);
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > Duration::from_secs(SETTLE_SECS) {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The capability mask of `names` as `/proc/<pid>/status` prints it.
fn mask_hex(names: &[&str]) -> String {
    let m = names
        .iter()
        .map(|n| {
            appc::types::KNOWN_CAPABILITIES
                .iter()
                .position(|c| c == n)
                .unwrap()
        })
        .fold(0u64, |m, n| m | (1 << n));
    format!("{m:016x}")
}

#[test]
fn ns_enter_is_confined_like_the_app() {
    let Some(e) = E2e::require("ns_enter_is_confined_like_the_app") else {
        return;
    };
    let img = probe_image(&e);
    let img = img.to_str().unwrap();
    let (child, uuid_file) = start(
        &e,
        "confined",
        &[
            img,
            "--name=boss",
            "--",
            "--no-check",
            "--sleep-ms=60000",
            "---",
            img,
            "--name=plain",
            &format!("--user={NOBODY}"),
            &format!("--group={NOBODY}"),
            "--",
            "--no-check",
            "--sleep-ms=60000",
        ],
    );
    let uuid = wait_running(&e, &uuid_file);
    let stage1_root = pod_abi::paths::PodPaths::new(e.pod_dir(&uuid)).stage1_rootfs();
    let proc_root = format!("/proc/1/root{MARKER}");

    // The entered command is the image's own code, run by the host's root through rkt.
    let o = e.run(&[
        "enter",
        "--app=boss",
        &uuid,
        "/bin/escape-probe",
        "status",
        "chroot-escape",
        MARKER,
        "read",
        &proc_root,
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    let dflt = mask_hex(&appc::types::DEFAULT_CAPABILITIES);
    assert!(out.contains("uid=0 gid=0"), "{out}");
    assert!(
        out.contains(&format!(
            "CapPrm={dflt} CapEff={dflt} CapBnd={dflt} CapAmb={}",
            "0".repeat(16)
        )),
        "the entered root process holds exactly the app's capabilities (no CAP_SYS_ADMIN, \
         so no mount; the bounding set is the app's): {out}"
    );
    assert!(
        out.contains("chroot-escape: chroot: ok"),
        "the attack needs CAP_SYS_CHROOT, which the app keeps: {out}"
    );
    assert!(
        out.contains(&format!("chroot-escape: {MARKER}: absent")),
        "the double chroot of an entered command reached guest-init's tree: {out}"
    );
    assert!(!out.contains("PRESENT"), "{out}");
    assert!(!out.contains(&format!("read {proc_root}: ok")), "{out}");
    assert!(
        !stage1_root.join(WITNESS).exists(),
        "the entered command wrote into the stage1 root the host executes from"
    );

    // The app's environment (not stage0's) and its whole execution environment.
    let o = e.run(&[
        "enter",
        "--app=boss",
        &uuid,
        "/bin/pod-check",
        "--expect-env=PROBE_ENV=from-image",
        "--expect-env=AC_APP_NAME=boss",
        "--expect-uid=0",
        "--expect-cwd=/",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("pod-check OK"), "{out}");

    // A non-root app: the entered command runs as that user with no capability.
    let o = e.run(&[
        "enter",
        "--app=plain",
        &uuid,
        "/bin/escape-probe",
        "status",
        "create",
        "/rootdir/entered",
        "chroot-escape",
        MARKER,
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    let zero = "0".repeat(16);
    assert!(out.contains(&format!("uid={NOBODY} gid={NOBODY}")), "{out}");
    assert!(
        out.contains(&format!(
            "caps: CapInh={zero} CapPrm={zero} CapEff={zero} CapBnd={dflt} CapAmb={zero}"
        )),
        "a non-root app's entered command holds no capability: {out}"
    );
    assert!(out.contains("create /rootdir/entered: EACCES"), "{out}");
    // No CAP_SYS_CHROOT (and no directory to chroot into: EACCES first).
    assert!(out.contains("chroot-escape: chroot: "), "{out}");
    assert!(!out.contains("chroot-escape: chroot: ok"), "{out}");

    stop_and_wait(&e, &uuid, child);
}

#[test]
fn ns_enter_right_after_start() {
    let Some(e) = E2e::require("ns_enter_right_after_start") else {
        return;
    };
    let img = e.pod_check_image("sleeper.aci", |s| s);
    for round in 0..ENTER_RACE_ROUNDS {
        let name = format!("race{round}");
        let (child, uuid_file) = start_sleeping(&e, &name, &img);
        // Enter the moment `pid` appears, as a script that starts a pod and enters it would.
        let t0 = Instant::now();
        let uuid = loop {
            if let Ok(u) = std::fs::read_to_string(&uuid_file) {
                let u = u.trim().to_string();
                if e.dir().join("pods/run").join(&u).join("pid").exists() {
                    break u;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(SETTLE_SECS),
                "round {round}: no pid"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        // pod-check's full checks: the app's /proc, /sys and /dev are there already.
        let o = e.run(&["enter", &uuid, "/bin/pod-check", "--exit", "7"]);
        assert_eq!(
            o.status.code(),
            Some(7),
            "round {round}: enter right after start: {}{}",
            stdout(&o),
            stderr(&o)
        );
        stop_and_wait(&e, &uuid, child);
    }
}

/// `rkt enter` over and over while a root app (the default capabilities, as the entered
/// command gets) watches for newcomers and reads their `/proc/PID/environ` as fast as it can:
/// between taking the app's identity and its `execve` the entering process still holds its
/// launcher's memory (stage1-ns, with the host's environment of `rkt enter`, where the test puts
/// a secret), and the app could read it, or write it through `/proc/PID/mem` (runc's
/// CVE-2016-9962). The entering process is not dumpable until its `execve`, so no app reaches
/// it; the commands themselves, once they are the app's, stay readable (the probe proves it
/// watched).
#[test]
fn ns_an_app_cannot_read_an_entering_process_before_its_exec() {
    let test = "ns_an_app_cannot_read_an_entering_process_before_its_exec";
    let Some(e) = E2e::require(test) else {
        return;
    };
    let img = probe_image(&e);
    let secret = format!("host-secret-{}", std::process::id());
    let out_file = e.path("snoop.out");
    let uuid_file = e.path("snoop.uuid");
    let mut child = e
        .rkt(&[
            "run".to_string(),
            e.stage1_flag(),
            "--net=none".into(),
            format!("--uuid-file-save={}", uuid_file.display()),
            img.to_str().unwrap().into(),
            "--exec=/bin/escape-probe".into(),
            "--".into(),
            "snoop".into(),
            secret.clone(),
            SNOOP_SECS.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let uuid = wait_running(&e, &uuid_file);
    let entered = enter_while_watched(|| {
        let mut c = e.rkt(&[
            "enter",
            &uuid,
            "/bin/pod-check",
            "--no-check",
            "--sleep-ms=30",
        ]);
        c.env("RKT_TEST_HOST_SECRET", &secret);
        c
    });
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(SNOOP_SECS + SETTLE_SECS),
            "the probe did not end"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = e.run(&["gc", "--grace-period=0s"]);
    let out = std::fs::read_to_string(&out_file).unwrap();
    assert!(
        !out.contains("snoop: MARKER"),
        "the app read the host environment of an entering process: {out}"
    );
    let numbers = summary_numbers(&out, "snoop: done, ");
    // Each enter is at least one newcomer; a probe descheduled on a loaded machine may miss
    // a 30 ms command, and what it must show is that it watched the enters, most of them.
    assert!(
        numbers.first().is_some_and(|n| *n * 2 >= entered),
        "the probe saw fewer than half of the {entered} enters as newcomers: {out}"
    );
    assert!(
        numbers.get(1).is_some_and(|n| *n > 0),
        "the probe could read no entered command at all, so it proves nothing: {out}"
    );
}

/// Runs the `rkt enter` commands `enter` makes, one after another (each must exit 0), while a
/// probe started with `SNOOP_SECS` surely still watches: at most [`SNOOP_ENTERS`], and at least
/// a quarter of them (on a loaded machine 40 can take longer than the probe's window). Waits
/// first for the probe to list the processes that were there before it. How many ran.
fn enter_while_watched(enter: impl Fn() -> std::process::Command) -> usize {
    std::thread::sleep(Duration::from_millis(500));
    let window = Instant::now();
    let mut entered = 0;
    while entered < SNOOP_ENTERS && window.elapsed() <= Duration::from_secs(SNOOP_SECS - 3) {
        let o = enter().output().unwrap();
        assert_eq!(o.status.code(), Some(0), "enter {entered}: {}", stderr(&o));
        entered += 1;
    }
    assert!(
        entered >= SNOOP_ENTERS / 4,
        "only {entered} enters within the probe's {SNOOP_SECS} s"
    );
    entered
}

/// The numbers of the probe's summary line starting with `prefix` in `out`, in order.
fn summary_numbers(out: &str, prefix: &str) -> Vec<usize> {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no summary from the probe: {out}"))
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

/// `rkt enter` with a host file as its stdin (opened read-only) and another as its stdout
/// (append): the command, image code, reopens both through `/proc/self/fd`, for writing and
/// for reading. Given the host's descriptors it could write the input file and read what the
/// output file held before; it gets pipes, and the host files stay as they were.
#[test]
fn ns_enter_gives_the_command_no_host_file_to_reopen() {
    let Some(e) = E2e::require("ns_enter_gives_the_command_no_host_file_to_reopen") else {
        return;
    };
    let img = probe_image(&e);
    let (child, uuid_file) = start_sleeping(&e, "reopen", &img);
    let uuid = wait_running(&e, &uuid_file);
    let input = e.path("host-input");
    std::fs::write(&input, "host input\n").unwrap();
    let output = e.path("host-output");
    std::fs::write(&output, "earlier host output\n").unwrap();
    let o = e
        .rkt(&[
            "enter",
            &uuid,
            "/bin/escape-probe",
            "reopen",
            "0",
            "w",
            "reopen",
            "1",
            "r",
            "link",
            "/proc/self/fd/0",
        ])
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&output)
                .unwrap(),
        )
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    stop_and_wait(&e, &uuid, child);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&input).unwrap(),
        "host input\n",
        "the pod wrote the host file given as stdin"
    );
    let out = std::fs::read_to_string(&output).unwrap();
    assert!(out.starts_with("earlier host output\n"), "{out}");
    let line = |p: &str| {
        out.lines()
            .find(|l| l.starts_with(p))
            .unwrap_or_else(|| panic!("no {p:?} line: {out}"))
            .to_string()
    };
    assert!(
        !line("reopen 1 r:").contains("earlier host output"),
        "the pod read the host file given as stdout: {out}"
    );
    assert!(line("link /proc/self/fd/0:").contains("pipe:"), "{out}");
}

/// `rkt enter` from a terminal: the command gets a terminal of its own, not the operator's
/// (which an app of the pod could otherwise keep reading after the command ended), and its
/// output and exit code come back through ours.
#[test]
fn ns_enter_from_a_terminal_gets_a_terminal_of_its_own() {
    let Some(e) = E2e::require("ns_enter_from_a_terminal_gets_a_terminal_of_its_own") else {
        return;
    };
    let img = probe_image(&e);
    let (child, uuid_file) = start_sleeping(&e, "tty", &img);
    let uuid = wait_running(&e, &uuid_file);
    let mut cmd = e.rkt(&[
        "enter",
        &uuid,
        "/bin/escape-probe",
        "rdev",
        "0",
        "rdev",
        "2",
    ]);
    let (code, text) = on_a_terminal(&mut cmd, &["0", "2"]);
    stop_and_wait(&e, &uuid, child);
    assert_eq!(code, Some(0), "{text}");
}

/// `rkt run` with its stdout a host file opened for appending: the app reopens it for reading
/// through `/proc/self/fd/1` (it would read what the file held before); then `rkt run` on a
/// terminal (stdin, stdout and stderr): the app checks which terminal it holds and which its
/// `/dev/console` is. It gets a pipe and a pseudo-terminal of the
/// pod's, relayed: its output still reaches the file and the terminal.
#[test]
fn ns_apps_get_no_host_file_or_terminal_of_rkt_run() {
    let Some(e) = E2e::require("ns_apps_get_no_host_file_or_terminal_of_rkt_run") else {
        return;
    };
    let img = probe_image(&e);
    let img = img.to_str().unwrap();
    let output = e.path("run-output");
    std::fs::write(&output, "earlier host output\n").unwrap();
    let run = |probe: &[&str]| {
        let mut args = vec![
            "run".to_string(),
            e.stage1_flag(),
            "--net=none".into(),
            img.into(),
            "--exec=/bin/escape-probe".into(),
            "--".into(),
        ];
        args.extend(probe.iter().map(|a| a.to_string()));
        e.rkt(&args)
    };
    let o = run(&["reopen", "1", "r", "link", "/proc/self/fd/1"])
        .stdin(Stdio::null())
        .stdout(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&output)
                .unwrap(),
        )
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = std::fs::read_to_string(&output).unwrap();
    assert!(out.starts_with("earlier host output\n"), "{out}");
    let reopened = out
        .lines()
        .find(|l| l.starts_with("reopen 1 r:"))
        .unwrap_or_else(|| panic!("the app's output did not reach the file: {out}"));
    assert!(
        !reopened.contains("earlier host output"),
        "the app read the host file given as rkt run's stdout: {out}"
    );
    assert!(out.contains("link /proc/self/fd/1: pipe:"), "{out}");

    // As from an operator's terminal: stdin too (which the pod's `/dev/console` once followed).
    let mut cmd = run(&["rdev", "1", "rdev", "2", "rdev", "/dev/console"]);
    let (code, text) = on_a_terminal(&mut cmd, &["1", "2", "/dev/console"]);
    assert_eq!(code, Some(0), "{text}");
}

/// Runs `cmd` with a new pseudo-terminal as its stdin, stdout and stderr (an operator's
/// terminal), reads what it prints there until it is done, and checks that each of `seen`,
/// printed by escape-probe's `rdev`, is a terminal but not that one. Returns the exit code
/// and the text.
fn on_a_terminal(cmd: &mut std::process::Command, seen: &[&str]) -> (Option<i32>, String) {
    let pty = nix::pty::openpty(None, None).unwrap();
    let st = nix::sys::stat::fstat(pty.slave.as_raw_fd()).unwrap();
    let ours = format!(
        "{}:{}",
        nix::sys::stat::major(st.st_rdev),
        nix::sys::stat::minor(st.st_rdev)
    );
    let slave = std::fs::File::from(pty.slave);
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    let mut child = cmd.spawn().unwrap();
    // Our copies of the slave go with the command's setup: EIO on the master once it is done.
    let _ = std::mem::replace(cmd, std::process::Command::new("true"));
    let mut master = std::fs::File::from(pty.master);
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
        String::from_utf8_lossy(&got).into_owned()
    });
    let code = child.wait().unwrap().code();
    let text = reader.join().unwrap();
    for what in seen {
        let l = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("rdev {what}: ")))
            .unwrap_or_else(|| panic!("no rdev line for {what}: {text}"));
        assert_ne!(l, ours, "it got the operator's terminal as {what}: {text}");
        assert!(l.starts_with("136:"), "{what} is not a terminal: {text}");
    }
    (code, text)
}

/// A root app holds `CAP_MKNOD` (rkt's default set): it makes a device node of the host's
/// kernel log (on a host, its disk's would do) in `/dev`, in its root and in a volume, and
/// opens each. Every place it can write is `nodev`, so none opens; the usual `/dev` nodes
/// still work.
#[test]
fn ns_device_nodes_an_app_makes_do_not_open() {
    let Some(e) = E2e::require("ns_device_nodes_an_app_makes_do_not_open") else {
        return;
    };
    let p = e.escape_probe();
    let img = e.pod_check_image("mknod.aci", |s| {
        s.file("/bin/escape-probe", &p, 0o755)
            .dir("/rootdir")
            .mount_point("vol", "/vol", false)
    });
    let o = e.run(&[
        "run",
        &e.stage1_flag(),
        "--net=none",
        "--volume=vol,kind=empty",
        img.to_str().unwrap(),
        "--exec=/bin/escape-probe",
        "--",
        "mknod-open",
        "/dev/hostlog",
        "c",
        "1",
        "11",
        "mknod-open",
        "/rootdir/hostlog",
        "c",
        "1",
        "11",
        "mknod-open",
        "/vol/hostlog",
        "c",
        "1",
        "11",
        "open-write",
        "/dev/null",
        "open-write",
        "/dev/full",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for path in ["/dev/hostlog", "/rootdir/hostlog", "/vol/hostlog"] {
        assert!(
            out.contains(&format!("mknod-open {path}: made, open EACCES")),
            "the app opened a device node it made at {path}: {out}"
        );
    }
    assert!(out.contains("open-write /dev/null: ok"), "{out}");
    assert!(out.contains("open-write /dev/full: ok"), "{out}");
}

/// An app reads what the host kernel tells about everyone: `/proc/timer_list` (the timers of
/// every host process, with names and PIDs), `/proc/keys`, and lists `/sys/firmware`. They are
/// masked (empty) unless `--insecure-options=paths`, which shows them as the host sees them.
#[test]
fn ns_host_wide_proc_and_sys_entries_are_masked() {
    let Some(e) = E2e::require("ns_host_wide_proc_and_sys_entries_are_masked") else {
        return;
    };
    let files: Vec<&str> = ["/proc/timer_list", "/proc/keys", "/proc/sched_debug"]
        .into_iter()
        .filter(|p| std::fs::read(p).is_ok_and(|b| !b.is_empty()))
        .collect();
    let dirs: Vec<&str> = [
        "/sys/firmware",
        "/proc/acpi",
        "/sys/devices/virtual/powercap",
    ]
    .into_iter()
    .filter(|p| std::fs::read_dir(p).is_ok_and(|d| d.count() > 0))
    .collect();
    if files.is_empty() && dirs.is_empty() {
        println!(
            "SKIP: ns_host_wide_proc_and_sys_entries_are_masked: this kernel shows none of them"
        );
        return;
    }
    let img = probe_image(&e);
    let run = |insecure: &str| {
        let mut args = vec![
            "run".to_string(),
            e.stage1_flag(),
            "--net=none".into(),
            insecure.into(),
            img.to_str().unwrap().into(),
            "--exec=/bin/escape-probe".into(),
            "--".into(),
        ];
        for f in &files {
            args.extend(["size".to_string(), f.to_string()]);
        }
        for d in &dirs {
            args.extend(["entries".to_string(), d.to_string()]);
        }
        let o = e.run(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        stdout(&o)
    };
    let masked = run("--insecure-options=image");
    let open = run("--insecure-options=image,paths");
    for f in &files {
        assert!(
            masked.contains(&format!("size {f}: 0\n")),
            "{f} not masked: {masked}"
        );
        assert!(
            !open.contains(&format!("size {f}: 0\n")),
            "{f} masked with paths: {open}"
        );
    }
    for d in &dirs {
        assert!(
            masked.contains(&format!("entries {d}: 0\n")),
            "{d} not masked: {masked}"
        );
        assert!(
            !open.contains(&format!("entries {d}: 0\n")),
            "{d} masked with paths: {open}"
        );
    }
}

/// Start time (field 22 of `/proc/<pid>/stat`) of `pid`, if it exists: tells a process from a
/// later one that reuses its pid.
fn start_time(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The parent pid of `pid`.
fn ppid(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The children of `parent` (host pids).
fn children(parent: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|d| d.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| ppid(*p) == Some(parent))
        .collect()
}

/// SIGKILLs what is left of a pod (guest-init ends its PID namespace) if a test failed.
struct Reaper(Vec<(i32, u64)>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for (pid, t) in &self.0 {
            if start_time(*pid) == Some(*t) {
                // SAFETY: kill with a pid and a signal; the start time says it is the pod's.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
        }
    }
}

#[test]
fn ns_sigkill_of_run_ends_the_pod() {
    let Some(e) = E2e::require("ns_sigkill_of_run_ends_the_pod") else {
        return;
    };
    let img = e.pod_check_image("sleeper.aci", |s| s);
    let (mut child, uuid_file) = start_sleeping(&e, "killed", &img);
    let uuid = wait_running(&e, &uuid_file);
    let init = e.pod_pid(&uuid);
    let t0 = Instant::now();
    let app = loop {
        if let Some(p) = children(init).first() {
            break *p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(SETTLE_SECS),
            "the app did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let pod: Vec<(i32, u64)> = [init, app]
        .iter()
        .filter_map(|p| Some((*p, start_time(*p)?)))
        .collect();
    assert_eq!(pod.len(), 2, "guest-init {init} and app {app}");
    let _reaper = Reaper(pod.clone());

    // The launcher dies without any chance to clean up.
    child.kill().unwrap();
    child.wait().unwrap();
    let t0 = Instant::now();
    while pod.iter().any(|(p, t)| start_time(*p) == Some(*t)) {
        assert!(
            t0.elapsed() < Duration::from_secs(DIE_WITH_LAUNCHER_SECS),
            "the pod outlived its launcher (guest-init {init}, app {app}) while rkt says: {}",
            e.status(&uuid)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = e.status(&uuid);
    assert!(s.contains("state=exited\n"), "{s}");
    let o = e.run(&["gc", "--grace-period=0s"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let pods = e.dir().join("pods");
    assert!(mounts_under(&pods).is_empty(), "{:?}", mounts_under(&pods));
    assert_eq!(
        e.run(&["status", &uuid]).status.code(),
        Some(pod_abi::exit::POD_STATE),
        "gc removed the pod"
    );
}

#[test]
fn ns_planted_fifo_status_neither_hangs_status_nor_breaks_stop() {
    let Some(e) = E2e::require("ns_planted_fifo_status_neither_hangs_status_nor_breaks_stop")
    else {
        return;
    };
    let img = e.pod_check_image("sleeper.aci", |s| s);
    let (mut child, uuid_file) = start_sleeping(&e, "fifo", &img);
    let uuid = wait_running(&e, &uuid_file);
    let status_dir = pod_abi::paths::PodPaths::new(e.pod_dir(&uuid)).status_dir();
    std::fs::create_dir_all(&status_dir).unwrap();
    let fifo = status_dir.join("sleeper");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let t0 = Instant::now();
    let s = e.status(&uuid);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "status hung on a FIFO"
    );
    assert!(s.contains("state=running"), "{s}");
    let o = e.run(&["stop", &uuid]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(SETTLE_SECS),
            "pod did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = stdout(&e.run(&["status", "--wait=10s", &uuid]));
    assert!(s.contains("state=exited\n"), "{s}");
    let _ = uuid_of(&uuid_file);
}

/// `--insecure-options=capabilities` (rkt's `--disable-capabilities-restriction`): a root app's
/// bounding set is every capability, its `--caps-retain` notwithstanding; without the option the
/// same flag bounds it.
#[test]
fn ns_insecure_capabilities_lift_the_bounding_set() {
    let Some(e) = E2e::require("ns_insecure_capabilities_lift_the_bounding_set") else {
        return;
    };
    let img = probe_image(&e);
    let run = |global: &str| {
        let o = e.run(&[
            "run",
            &e.stage1_flag(),
            "--net=none",
            global,
            img.to_str().unwrap(),
            "--exec=/bin/escape-probe",
            "--caps-retain=CAP_CHOWN",
            "--",
            "status",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        stdout(&o)
    };
    let chown = mask_hex(&["CAP_CHOWN"]);
    let out = run("--insecure-options=image");
    assert!(out.contains(&format!("CapBnd={chown}")), "{out}");
    // Every capability the host gave rkt: this test's own bounding set (a container running
    // the suite may lack some, e.g. CAP_SYS_RESOURCE).
    let all = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_string();
    let out = run("--insecure-options=image,capabilities");
    assert!(out.contains(&format!("CapEff={all} CapBnd={all}")), "{out}");
}

/// An image whose own retain set asks for `CAP_SYS_ADMIN` and `CAP_SYS_MODULE` (on an ns host,
/// the host) besides `CAP_CHOWN`: its root app holds only `CAP_CHOWN`, and `rkt` says what it
/// did not grant; `--caps-retain` naming them grants them.
#[test]
fn ns_an_image_cannot_grant_itself_capabilities_beyond_the_default_set() {
    let Some(e) =
        E2e::require("ns_an_image_cannot_grant_itself_capabilities_beyond_the_default_set")
    else {
        return;
    };
    let p = e.escape_probe();
    let img = e.pod_check_image("wide.aci", |s| {
        s.file("/bin/escape-probe", &p, 0o755).isolator(
            "os/linux/capabilities-retain-set",
            serde_json::json!({"set": ["CAP_SYS_ADMIN", "CAP_CHOWN", "CAP_SYS_MODULE"]}),
        )
    });
    let run = |caps: Option<&str>| {
        let mut args = vec![
            "run".to_string(),
            e.stage1_flag(),
            "--net=none".into(),
            img.to_str().unwrap().into(),
            "--exec=/bin/escape-probe".into(),
        ];
        args.extend(caps.map(|c| format!("--caps-retain={c}")));
        args.extend(["--".to_string(), "status".into()]);
        let o = e.run(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        o
    };
    let o = run(None);
    let chown = mask_hex(&["CAP_CHOWN"]);
    assert!(
        stdout(&o).contains(&format!("CapBnd={chown}")),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("CAP_SYS_ADMIN, CAP_SYS_MODULE not granted"),
        "{}",
        stderr(&o)
    );
    let o = run(Some("CAP_SYS_ADMIN,CAP_CHOWN"));
    let both = mask_hex(&["CAP_SYS_ADMIN", "CAP_CHOWN"]);
    assert!(
        stdout(&o).contains(&format!("CapBnd={both}")),
        "{}",
        stdout(&o)
    );
    assert!(!stderr(&o).contains("not granted"), "{}", stderr(&o));
}

#[test]
fn ns_pods_get_their_own_ipc_namespace_unless_ipc_parent() {
    let Some(e) = E2e::require("ns_pods_get_their_own_ipc_namespace_unless_ipc_parent") else {
        return;
    };
    let img = probe_image(&e);
    let host = std::fs::read_link("/proc/self/ns/ipc").unwrap();
    let host_line = format!("ns ipc: {}", host.display());
    let run = |ipc: Option<&str>| {
        let mut args = vec!["run".to_string(), e.stage1_flag(), "--net=none".into()];
        args.extend(ipc.map(str::to_string));
        args.extend([
            img.to_str().unwrap().to_string(),
            "--exec=/bin/escape-probe".into(),
            "--".into(),
            "ns".into(),
            "ipc".into(),
        ]);
        e.run(&args)
    };
    // The default, `auto` and `private`: System V IPC and message queues of its own.
    for ipc in [None, Some("--ipc=auto"), Some("--ipc=private")] {
        let o = run(ipc);
        assert_eq!(o.status.code(), Some(0), "{ipc:?}: {}", stderr(&o));
        let out = stdout(&o);
        assert!(out.contains("ns ipc: ipc:["), "{ipc:?}: {out}");
        assert!(!out.contains(&host_line), "{ipc:?}: the host's: {out}");
    }
    // `parent`: the host's.
    let o = run(Some("--ipc=parent"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains(&host_line), "{}", stdout(&o));
    // Anything else is a usage error before any pod exists.
    let o = run(Some("--ipc=host"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("invalid --ipc value"), "{}", stderr(&o));
}

/// `--private-users` in the ns flavor (the attack and what must still work:
/// [`E2e::check_private_users`], shared with the kvm flavor's test).
#[test]
fn ns_private_users_make_app_root_a_host_id_of_the_pods_range() {
    if let Some(e) = E2e::require("ns_private_users_make_app_root_a_host_id_of_the_pods_range") {
        e.check_private_users();
    }
}

/// The attack: pod A's image declares a mount point `/a/b` whose parent it lacks (rkt gives it
/// an empty volume, bind-mounted on the host side at `.../rootfs/a/b`); its root app renames
/// `/a` to `/\xff`, so every line of the host's `/proc/self/mountinfo` after it holds a byte
/// that is not UTF-8. Pod B, exited, still has its host volume (a victim directory) mounted
/// until it is removed. `rkt rm B` must unmount it first and leave the victim's file alone
/// (before the fix rkt read the table as text, took the error for "nothing mounted" and
/// removed B's tree through the live bind mount).
#[test]
fn ns_a_pod_mangling_the_mount_table_cannot_make_rm_empty_a_volume() {
    let test = "ns_a_pod_mangling_the_mount_table_cannot_make_rm_empty_a_volume";
    let Some(e) = E2e::require(test) else {
        return;
    };
    if rkt_tests::static_busybox_or_skip(test).is_none() {
        return;
    }
    // Pod B: a host volume holding the victim's file; it exits at once.
    let victim = e.path("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("precious"), b"keep me").unwrap();
    let img_b = e.pod_check_image("b.aci", |s| s.mount_point("v", "/v", false));
    let b_uuid_file = e.path("b.uuid");
    let o = e.run(&[
        "run",
        &e.stage1_flag(),
        &format!("--uuid-file-save={}", b_uuid_file.display()),
        &format!("--volume=v,kind=host,source={}", victim.display()),
        img_b.to_str().unwrap(),
        "--",
        "--no-check",
        "--expect-file=/v/precious",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let b = uuid_of(&b_uuid_file);
    assert!(
        !mounts_under(&e.pod_dir(&b)).is_empty(),
        "an exited pod keeps its mounts until it is removed"
    );
    // Pod A: renames the directory above its volume's mount point, then waits.
    let img_a = e.path("a.aci");
    let mut spec = ImageSpec::new(
        "example.com/mangler",
        &["/bin/sh", "-c", "mv /a \"$(printf '/\\377')\" && sleep 600"],
    )
    .file("/bin/busybox", Path::new(BUSYBOX), 0o755)
    .mount_point("b", "/a/b", false);
    for a in ["sh", "mv", "printf", "sleep"] {
        spec = spec.symlink(&format!("/bin/{a}"), "busybox");
    }
    spec.build(&img_a);
    let (child, a_uuid_file) = start(&e, "mangler", &[img_a.to_str().unwrap()]);
    let a = wait_running(&e, &a_uuid_file);
    let t0 = Instant::now();
    while !std::fs::read("/proc/self/mountinfo")
        .unwrap()
        .contains(&0xff)
    {
        assert!(
            t0.elapsed() < Duration::from_secs(SETTLE_SECS),
            "the app's rename never showed in the host's mount table"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = e.run(&["rm", &b]);
    let survived = victim.join("precious").is_file();
    stop_and_wait(&e, &a, child);
    let _ = e.run(&["gc", "--grace-period=0s"]);
    assert!(
        survived,
        "rkt rm emptied pod B's host volume: {}",
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_ne!(
        e.run(&["status", &b]).status.code(),
        Some(0),
        "pod B is removed"
    );
}

/// The pod's task limit, on the host's cgroups: a `pids` v1 hierarchy, or the v2 one with the
/// `pids` controller.
fn host_has_pids_cgroup() -> bool {
    Path::new("/sys/fs/cgroup/pids/cgroup.procs").exists()
        || std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|n| n == "pids"))
}

/// Attack: a fork bomb. An ns pod's processes are the host's, so with no limit a pod takes the
/// host's last PIDs (`pid_max`) and nothing on the host can fork any more. The probe stops at
/// the default limit + 200 so that the attack stays harmless here (before the limit all of them
/// lived); now it gets `EAGAIN` just below the limit, with `--pids-limit=32` below 32, and
/// `--pids-limit=max` lifts the limit; a `rkt enter` command is held by the same limit.
#[test]
fn ns_a_fork_bomb_stops_at_the_pods_task_limit() {
    let Some(e) = E2e::require("ns_a_fork_bomb_stops_at_the_pods_task_limit") else {
        return;
    };
    if !host_has_pids_cgroup() {
        println!("SKIP: ns_a_fork_bomb_stops_at_the_pods_task_limit: the host has no pids cgroup");
        return;
    }
    let img = probe_image(&e);
    let forks = |flag: Option<&str>, n: u64| {
        let mut args = vec!["run".to_string(), e.stage1_flag(), "--net=none".into()];
        args.extend(flag.map(str::to_string));
        args.extend([
            img.to_str().unwrap().into(),
            "--exec=/bin/escape-probe".into(),
            "--".into(),
            "forks".into(),
            n.to_string(),
        ]);
        let o = e.run(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        forks_alive(&stdout(&o))
    };
    let limit = pod_abi::plan::DEFAULT_PIDS_LIMIT;
    // guest-init and the probe are two of the pod's tasks.
    let (alive, line) = forks(None, limit + 200);
    assert!(
        line.ends_with("then EAGAIN") && alive < limit && alive + 16 > limit,
        "default limit {limit}: {line}"
    );
    let (alive, line) = forks(Some("--pids-limit=32"), 100);
    assert!(
        line.ends_with("then EAGAIN") && alive < 32 && alive + 16 > 32,
        "--pids-limit=32: {line}"
    );
    let (alive, line) = forks(Some("--pids-limit=max"), limit + 200);
    assert_eq!(alive, limit + 200, "--pids-limit=max: {line}");
    // The same bomb in a `rkt enter` command (image code the operator runs): it is in its
    // app's cgroups, so under the pod's limit too (before, it stayed in the caller's).
    let (child, uuid_file) = start(
        &e,
        "bomb",
        &[
            "--pids-limit=32",
            img.to_str().unwrap(),
            "--",
            "--no-check",
            "--sleep-ms=60000",
        ],
    );
    let uuid = wait_running(&e, &uuid_file);
    let o = e
        .rkt(&["enter", &uuid, "/bin/escape-probe", "forks", "100"])
        .output()
        .unwrap();
    stop_and_wait(&e, &uuid, child);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (alive, line) = forks_alive(&stdout(&o));
    assert!(
        line.ends_with(" alive, then EAGAIN") && alive < 32,
        "rkt enter's bomb was not stopped: {line}"
    );
}

/// The probe's `forks` line in `out` (without its `forks: ` prefix) and the children it had
/// alive.
fn forks_alive(out: &str) -> (u64, String) {
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("forks: "))
        .unwrap_or_else(|| panic!("no forks line: {out}"))
        .to_string();
    let alive: u64 = line
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    (alive, line)
}

/// Attack: an app reads `/proc/self/cgroup`, which without a cgroup namespace of its own shows
/// its cgroups' host paths: the pod's UUID and the host's own layout (a service manager's or
/// another runtime's cgroup the host runs rkt in). Now each app process is in a cgroup
/// namespace rooted at its cgroups, so every line ends in `/`; and so does a `rkt enter`
/// command's.
#[test]
fn ns_apps_see_their_cgroups_as_the_root() {
    let Some(e) = E2e::require("ns_apps_see_their_cgroups_as_the_root") else {
        return;
    };
    let img = probe_image(&e);
    let lines = |out: &str| -> Vec<String> {
        let prefix = "print-all /proc/self/cgroup: ";
        let l: Vec<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(str::to_string)
            .collect();
        assert!(!l.is_empty(), "no cgroup lines: {out}");
        l
    };
    let o = e.run(&[
        "run",
        &e.stage1_flag(),
        "--net=none",
        img.to_str().unwrap(),
        "--memory=64M",
        "--exec=/bin/escape-probe",
        "--",
        "print-all",
        "/proc/self/cgroup",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for l in lines(&stdout(&o)) {
        assert!(l.ends_with(":/"), "the app sees a cgroup path: {l}");
    }
    let (child, uuid_file) = start_sleeping(&e, "cgroupns", &img);
    let uuid = wait_running(&e, &uuid_file);
    let o = e
        .rkt(&[
            "enter",
            &uuid,
            "/bin/escape-probe",
            "print-all",
            "/proc/self/cgroup",
        ])
        .output()
        .unwrap();
    stop_and_wait(&e, &uuid, child);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for l in lines(&stdout(&o)) {
        assert!(
            l.ends_with(":/"),
            "a rkt enter command sees a cgroup path: {l}"
        );
    }
}

/// Attack: an app makes a chain of 3000 nested directories in its root, one `mkdir` and
/// `chdir` at a time (any user can, in any directory it may write). `rkt gc` kept one descriptor per
/// level while removing the pod, so with an open-file limit below the depth (1024 here, a
/// common default) it failed on that pod every time, printing a path thousands of levels
/// long, and the pod's disk was never freed. Now it is removed like any other.
#[test]
fn ns_a_pod_with_a_deep_directory_chain_is_still_collected() {
    let Some(e) = E2e::require("ns_a_pod_with_a_deep_directory_chain_is_still_collected") else {
        return;
    };
    let img = probe_image(&e);
    let uuid_file = e.path("deep.uuid");
    let o = e.run(&[
        "run",
        &e.stage1_flag(),
        "--net=none",
        &format!("--uuid-file-save={}", uuid_file.display()),
        img.to_str().unwrap(),
        "--exec=/bin/escape-probe",
        "--",
        "deep",
        "3000",
    ]);
    assert!(
        stdout(&o).contains("deep: 3000 levels"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let uuid = std::fs::read_to_string(&uuid_file).unwrap();
    let pod = e.pod_dir(uuid.trim());
    let mut gc = e.rkt(&["gc", "--grace-period=0s"]);
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut gc, || {
            let lim = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let o = gc.output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !pod.exists()
            && !e
                .dir()
                .join("pods/exited-garbage")
                .join(uuid.trim())
                .exists(),
        "the pod is still there after gc: {}",
        stderr(&o)
    );
}

/// A variable only the host's `rkt` holds: seen in a process's environment, that process still
/// carries the operator's environment (guest-init, forked from stage1-ns).
const OPERATOR_SECRET: &str = "RKT_TEST_OPERATOR_SECRET";
const SECRET_VALUE: &str = "operator-secret-7f3a9c";

/// `CAP_SYS_ADMIN`'s bit in a capability mask: every stage1 process holds it, no app by default.
const CAP_SYS_ADMIN_BIT: u32 = 21;

/// The probe's `proc` lines: (pid, comm, effective capabilities, the rest of the line).
fn proc_lines(out: &str) -> Vec<(u32, String, u64, String)> {
    out.lines()
        .filter_map(|l| l.strip_prefix("proc "))
        .map(|l| {
            let mut w = l.split(' ');
            let pid = w.next().unwrap().parse().unwrap();
            let comm = w.next().unwrap().trim_start_matches("comm=").to_string();
            let cap = w.next().unwrap().trim_start_matches("capeff=");
            (
                pid,
                comm,
                u64::from_str_radix(cap, 16).unwrap(),
                l.to_string(),
            )
        })
        .collect()
}

/// What a tracer saw, checked: no process carrying the operator's environment, none holding
/// `CAP_SYS_ADMIN`, and the probe's other app attached (so `ptrace` did work for it).
fn assert_no_stage1_process(out: &str, who: &str) {
    let procs = proc_lines(out);
    assert!(
        procs.iter().any(
            |(_, comm, _, l)| (comm == "escape-probe" || comm == "pod-check")
                && l.ends_with("attach=ok")
        ),
        "{who}: the probe attached to no app of its pod, so the test proves nothing: {out}"
    );
    for (pid, comm, cap, line) in &procs {
        assert!(
            !line.contains(&format!("environ={SECRET_VALUE}")),
            "{who}: process {pid} ({comm}) holds the operator's environment: {line}"
        );
        assert!(
            cap & (1 << CAP_SYS_ADMIN_BIT) == 0,
            "{who}: process {pid} ({comm}), holding CAP_SYS_ADMIN, is in the apps' sight: {line}"
        );
    }
}

/// Runs a pod of two apps without system call filters, an attachable one (so a multiplexer
/// exists), then `tracer` (with `caps`, its capability flags), which prints its capabilities
/// and every process it sees (the probe's `procs`; rkt holds [`OPERATOR_SECRET`]); returns
/// the pod's output.
fn procs_in_a_pod(e: &E2e, img: &str, caps: &[&str]) -> String {
    let mut args: Vec<String> = vec![
        "run".into(),
        e.stage1_flag(),
        "--net=none".into(),
        "--insecure-options=image,seccomp".into(),
    ];
    // The attachable app first: its multiplexer and process exist when the tracer looks.
    args.extend(
        [
            img,
            "--name=attachable",
            "--stdin=stream",
            "--",
            "--no-check",
            "--sleep-ms=1500",
        ]
        .map(String::from),
    );
    args.extend(["---", img, "--name=tracer"].map(String::from));
    args.extend(caps.iter().map(|c| c.to_string()));
    args.extend(
        [
            "--exec=/bin/escape-probe",
            "--",
            "status",
            "procs",
            SECRET_VALUE,
        ]
        .map(String::from),
    );
    let o = e.run_env(&[(OPERATOR_SECRET, SECRET_VALUE)], &args);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    out
}

/// A root app the operator gave `CAP_SYS_PTRACE` and no system call filter (what `strace` or
/// `gdb` in a pod needs) may trace every process it sees. guest-init, an ns pod's PID 1, holds
/// every capability on the host, as do its attach multiplexers and exec service: one traced
/// would run the app's code as the host's root. The apps have a PID namespace of their own
/// below guest-init's, whose init is a reaper holding nothing; before, the probe attached to
/// guest-init (all capabilities, the operator's environment in `/proc/1/environ`) and to the
/// other app's multiplexer. Checked for an app and for a `rkt enter` command.
#[test]
fn ns_a_ptrace_capable_app_sees_no_stage1_process() {
    let Some(e) = E2e::require("ns_a_ptrace_capable_app_sees_no_stage1_process") else {
        return;
    };
    let img = probe_image(&e);
    let img = img.to_str().unwrap();
    let out = procs_in_a_pod(
        &e,
        img,
        &["--caps-retain=CAP_SYS_PTRACE,CAP_SETUID,CAP_SETGID"],
    );
    assert!(
        out.contains("CapEff=0000000000080"),
        "the tracer holds CAP_SYS_PTRACE: {out}"
    );
    assert_no_stage1_process(&out, "the app");

    // The same look from a `rkt enter` command into the tracer (its capabilities).
    let attachable = [img, "--name=attachable", "--stdin=stream", "--"];
    let tracer = [
        img,
        "--name=tracer",
        "--caps-retain=CAP_SYS_PTRACE,CAP_SETUID,CAP_SETGID",
    ];
    let uuid_file = e.path("tracer.uuid");
    let mut all = vec![
        "run".to_string(),
        e.stage1_flag(),
        "--net=none".into(),
        "--insecure-options=image,seccomp".into(),
        format!("--uuid-file-save={}", uuid_file.display()),
    ];
    all.extend(attachable.iter().map(|s| s.to_string()));
    all.extend(["--no-check", "--sleep-ms=60000", "---"].map(String::from));
    all.extend(tracer.iter().map(|s| s.to_string()));
    all.extend(["--", "--no-check", "--sleep-ms=60000"].map(String::from));
    let child = e
        .rkt(&all)
        .env(OPERATOR_SECRET, SECRET_VALUE)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let uuid = wait_running(&e, &uuid_file);
    let o = e
        .rkt(&[
            "enter",
            "--app=tracer",
            &uuid,
            "/bin/escape-probe",
            "status",
            "procs",
            SECRET_VALUE,
        ])
        .env(OPERATOR_SECRET, SECRET_VALUE)
        .output()
        .unwrap();
    stop_and_wait(&e, &uuid, child);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert_no_stage1_process(&out, "rkt enter");
}

/// The race `ns_a_ptrace_capable_app_sees_no_stage1_process` leaves open if a launcher is
/// born among the apps: a root app with `CAP_SYS_PTRACE` and no filter watches for newcomers
/// while the host runs `rkt enter` into the pod's other app, reads each one's capabilities as
/// fast as it can and attaches to any that holds `CAP_SYS_ADMIN` (a launcher that has not yet
/// become the app's: one attached there would run the tracer's code with the launcher's
/// capabilities, outside the app's root). Launchers are born out of the apps' sight and their
/// commands among the apps only once they hold the app's identity, so the tracer sees none.
#[test]
fn ns_a_ptrace_capable_app_never_sees_a_privileged_newcomer() {
    let test = "ns_a_ptrace_capable_app_never_sees_a_privileged_newcomer";
    let Some(e) = E2e::require(test) else {
        return;
    };
    let img = probe_image(&e);
    let img = img.to_str().unwrap();
    let out_file = e.path("snoop-caps.out");
    let uuid_file = e.path("snoop-caps.uuid");
    let child = e
        .rkt(&[
            "run".to_string(),
            e.stage1_flag(),
            "--net=none".into(),
            "--insecure-options=image,seccomp".into(),
            format!("--uuid-file-save={}", uuid_file.display()),
            img.into(),
            "--name=target".into(),
            "--".into(),
            "--no-check".into(),
            "--sleep-ms=60000".into(),
            "---".into(),
            img.into(),
            "--name=tracer".into(),
            "--caps-retain=CAP_SYS_PTRACE".into(),
            "--exec=/bin/escape-probe".into(),
            "--".into(),
            "snoop-caps".into(),
            SNOOP_SECS.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let uuid = wait_running(&e, &uuid_file);
    let entered = enter_while_watched(|| e.rkt(&["enter", "--app=target", &uuid, "/bin/hello"]));
    // The tracer ends after SNOOP_SECS; the target sleeps on.
    let t0 = Instant::now();
    let out = loop {
        let out = std::fs::read_to_string(&out_file).unwrap();
        if out.contains("snoop-caps: done")
            || t0.elapsed() > Duration::from_secs(SNOOP_SECS + SETTLE_SECS)
        {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    stop_and_wait(&e, &uuid, child);
    let _ = e.run(&["gc", "--grace-period=0s"]);
    let numbers = summary_numbers(&out, "snoop-caps: done, ");
    assert!(
        numbers.first().is_some_and(|n| *n * 2 >= entered),
        "the probe saw fewer than half of the {entered} entered commands: {out}"
    );
    assert_eq!(
        numbers.get(1..),
        Some(&[0usize, 0][..]),
        "a newcomer held CAP_SYS_ADMIN in the apps' sight: {out}"
    );
}

/// Why a pod whose apps hold no `CAP_SYS_PTRACE` keeps one PID namespace with guest-init
/// (`app_confine::pidns::apps_apart`): a root app with rkt's default capabilities and no
/// system call filter sees guest-init and its multiplexer, but cannot attach to them, read
/// their environment or open their root (the kernel wants a tracer's capabilities to be a
/// superset of the traced process's, or `CAP_SYS_PTRACE`).
#[test]
fn ns_a_default_app_cannot_trace_guest_init() {
    let Some(e) = E2e::require("ns_a_default_app_cannot_trace_guest_init") else {
        return;
    };
    let img = probe_image(&e);
    let img = img.to_str().unwrap();
    let out = procs_in_a_pod(&e, img, &[]);
    let procs = proc_lines(&out);
    assert!(
        procs
            .iter()
            .any(|(pid, _, cap, _)| *pid == 1 && cap & (1 << CAP_SYS_ADMIN_BIT) != 0),
        "guest-init is PID 1 of the apps' namespace here: {out}"
    );
    for (pid, comm, cap, line) in &procs {
        if cap & (1 << CAP_SYS_ADMIN_BIT) == 0 {
            continue;
        }
        for reached in [
            format!("environ={SECRET_VALUE}"),
            "root=ok".into(),
            "attach=ok".into(),
        ] {
            assert!(
                !line.contains(&reached),
                "a default app reached process {pid} ({comm}), which holds CAP_SYS_ADMIN: {line}"
            );
        }
    }
}
