//! stage1-ns + guest-init end to end, on pods built by hand (see `common`): the appc
//! environment as seen by pod-check, exit codes, shared volumes, event handlers, setup
//! failures, stop (graceful, grace period, force), enter, cgroups and gc. Needs root.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{app, finish, handler, mount, wait_for, Pod};
use pod_abi::paths::PodPaths;

#[test]
fn environment_and_exit_code() {
    skip_unless_root!("environment_and_exit_code");
    // App "user": non-root user and group by name, supplementary gids, workdir, caps.
    let mut user = app(
        "user",
        &[
            "--expect-uid",
            "1000",
            "--expect-gid",
            "50",
            "--expect-groups",
            "60,70",
            "--expect-cwd",
            "/work",
            "--expect-env",
            "FOO=bar",
            "--expect-mount",
            "/db:rw",
            "--expect-mount",
            "/ro:ro",
            // A non-root app holds no capability without a retain-set isolator.
            "--expect-no-cap",
            "5",
            "--expect-no-cap",
            "21",
            "--expect-no-new-privs",
            "1",
            "--expect-file",
            "/db",
            "--expect-no-file",
            "/nope",
        ],
    );
    user.user = "user".into();
    user.group = "staff".into();
    user.supplementary_gids = vec![60, 70];
    user.working_directory = "/work".into();
    user.env.push(("FOO".into(), "bar".into()));
    user.no_new_privileges = true;
    user.mounts = vec![mount("db", "/db", false), mount("ro", "/ro", true)];
    user.ignored_isolators = vec!["resource/network-bandwidth".into()];
    // App "root": read-only root filesystem, exits 7.
    let mut root = app(
        "root",
        &[
            "--expect-ro-root",
            "--expect-uid",
            "0",
            "--expect-only-std-fds",
            "--expect-only-lo",
            "--exit",
            "7",
        ],
    );
    root.read_only_rootfs = true;
    let mut pod = Pod::new(vec![user, root], 5);
    std::fs::create_dir_all(pod.app_rootfs("user").join("work")).unwrap();
    let hostname = pod.plan.hostname.clone();
    pod.plan.apps[0]
        .exec
        .extend(["--expect-hostname".to_string(), hostname]);
    pod.write_plan();
    let out = pod.run();
    assert_eq!(
        out.stdout.matches("pod-check OK").count(),
        2,
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("FAIL"));
    assert_eq!(pod.status("user"), Some(0));
    assert_eq!(pod.status("root"), Some(7));
    assert_eq!(
        out.code, 7,
        "pod exit code is the first non-zero in app order"
    );
    assert!(
        out.stderr.contains("resource/network-bandwidth"),
        "ignored isolators are reported"
    );
    assert!(!pod.is_locked(), "the lock is released when the pod ends");
    let pid: i32 = std::fs::read_to_string(pod.dir.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid > 1);
}

#[test]
fn shared_volume_main_and_sidekick() {
    skip_unless_root!("shared_volume_main_and_sidekick");
    let mut main = app(
        "main",
        &[
            "--expect-mount",
            "/db:rw",
            "--write",
            "/db/main",
            "--wait-for",
            "/db/sidekick",
        ],
    );
    main.mounts = vec![mount("database", "/db", false)];
    let mut side = app(
        "sidekick",
        &["--write", "/db/sidekick", "--wait-for", "/db/main"],
    );
    side.mounts = vec![mount("database", "/db", false)];
    let mut pod = Pod::new(vec![main, side], 5);
    let out = pod.run();
    assert_eq!(out.code, 0);
    assert_eq!(pod.status("main"), Some(0));
    assert_eq!(pod.status("sidekick"), Some(0));
    assert!(pod.volume("database").join("main").exists());
    assert!(pod.volume("database").join("sidekick").exists());
}

#[test]
fn event_handlers_run_in_order() {
    skip_unless_root!("event_handlers_run_in_order");
    let mut ok = app(
        "ok",
        &[
            "--no-check",
            "--expect-file",
            "/x",
            "--append",
            "/log/ok",
            "main",
        ],
    );
    ok.pre_start = handler(&["--no-check", "--append", "/log/ok", "pre-start"]);
    ok.post_stop = handler(&["--no-check", "--append", "/log/ok", "post-stop"]);
    ok.mounts = vec![mount("log", "/log", false)];
    let mut bad = app("bad", &["--no-check", "--append", "/log/bad", "main"]);
    bad.pre_start = handler(&[
        "--no-check",
        "--append",
        "/log/bad",
        "pre-start",
        "--exit",
        "3",
    ]);
    bad.post_stop = handler(&["--no-check", "--append", "/log/bad", "post-stop"]);
    bad.mounts = vec![mount("log", "/log", false)];
    let mut pod = Pod::new(vec![ok, bad], 5);
    let out = pod.run();
    let log = |n: &str| std::fs::read_to_string(pod.volume("log").join(n)).unwrap_or_default();
    assert_eq!(log("ok"), "pre-start\nmain\npost-stop\n");
    assert_eq!(
        log("bad"),
        "pre-start\npost-stop\n",
        "the app does not start after a failed pre-start"
    );
    assert_eq!(pod.status("ok"), Some(0));
    assert_eq!(pod.status("bad"), Some(pod_abi::status::SETUP_FAILED));
    assert_eq!(
        pod.error("bad").as_deref(),
        Some("pre-start handler exited with status 3\n")
    );
    assert_eq!(out.code, pod_abi::status::SETUP_FAILED);
}

#[test]
fn setup_failures_are_recorded() {
    skip_unless_root!("setup_failures_are_recorded");
    let mut missing = app("missing", &[]);
    missing.exec = vec!["/bin/foo".into()];
    let mut nopath = app("nopath", &[]);
    nopath.exec = vec!["foo".into()];
    let mut baduser = app("baduser", &[]);
    baduser.user = "nobody".into();
    let mut nowd = app("nowd", &[]);
    nowd.working_directory = "/nope".into();
    let mut noexec = app("noexec", &[]);
    noexec.exec = vec!["/etc/passwd".into()];
    let mut pod = Pod::new(
        vec![app("fine", &[]), missing, nopath, baduser, nowd, noexec],
        5,
    );
    let out = pod.run();
    assert_eq!(pod.status("fine"), Some(0));
    assert_eq!(pod.status("missing"), Some(127));
    assert_eq!(
        pod.error("missing").as_deref(),
        Some("exec /bin/foo: No such file or directory\n")
    );
    assert!(
        out.stderr
            .contains("exec /bin/foo: No such file or directory"),
        "printed on the console"
    );
    assert_eq!(pod.status("nopath"), Some(127));
    assert_eq!(
        pod.error("nopath").as_deref(),
        Some("exec \"foo\": executable file not found in $PATH\n")
    );
    assert_eq!(pod.status("baduser"), Some(254));
    assert_eq!(
        pod.error("baduser").as_deref(),
        Some("user \"nobody\" not found in the app's /etc/passwd\n")
    );
    assert_eq!(pod.status("nowd"), Some(254));
    assert_eq!(
        pod.error("nowd").as_deref(),
        Some("working directory /nope: No such file or directory\n")
    );
    assert_eq!(pod.status("noexec"), Some(126));
    assert_eq!(
        pod.error("noexec").as_deref(),
        Some("exec /etc/passwd: Permission denied\n")
    );
    assert_eq!(out.code, 127, "first non-zero status in app order");
}

#[test]
fn graceful_stop_then_kill_after_grace() {
    skip_unless_root!("graceful_stop_then_kill_after_grace");
    let mut term = app("term", &["--write", "/v/term", "--sleep-ms", "60000"]);
    term.mounts = vec![mount("v", "/v", false)];
    let mut stubborn = app(
        "stubborn",
        &[
            "--ignore-sigterm",
            "--write",
            "/v/stubborn",
            "--sleep-ms",
            "60000",
        ],
    );
    stubborn.mounts = vec![mount("v", "/v", false)];
    let grace = 2;
    let mut pod = Pod::new(vec![term, stubborn], grace);
    let child = pod.spawn();
    pod.release_test_lock();
    wait_for(&pod.volume("v").join("term"), Duration::from_secs(20));
    wait_for(&pod.volume("v").join("stubborn"), Duration::from_secs(20));
    assert!(
        pod.is_locked(),
        "the pod counts as running while stage1-ns holds the lock"
    );
    let t0 = Instant::now();
    let stop = pod.entrypoint(&["stop", &pod.uuid]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let out = finish(child);
    let took = t0.elapsed();
    assert_eq!(
        pod.status("term"),
        Some(128 + 15),
        "SIGTERM reached the app"
    );
    assert_eq!(
        pod.status("stubborn"),
        Some(128 + 9),
        "SIGKILL after the grace period"
    );
    assert!(
        took >= Duration::from_secs(u64::from(grace)),
        "grace respected: {took:?}"
    );
    assert!(
        took < Duration::from_secs(u64::from(grace) + 8),
        "killed promptly: {took:?}"
    );
    assert_eq!(out.code, 143);
    assert!(!pod.is_locked());
}

#[test]
fn force_stop_kills_the_pod() {
    skip_unless_root!("force_stop_kills_the_pod");
    let mut a = app(
        "a",
        &["--ignore-sigterm", "--write", "/v/a", "--sleep-ms", "60000"],
    );
    a.mounts = vec![mount("v", "/v", false)];
    let mut pod = Pod::new(vec![a], 30);
    let child = pod.spawn();
    pod.release_test_lock();
    wait_for(&pod.volume("v").join("a"), Duration::from_secs(20));
    let t0 = Instant::now();
    let stop = pod.entrypoint(&["stop", "--force", &pod.uuid]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let out = finish(child);
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(pod.status("a"), None);
    assert_eq!(
        out.code,
        pod_abi::status::SETUP_FAILED,
        "no status: counts as not reported"
    );
    let failure = std::fs::read_to_string(pod.dir.join("failure")).unwrap();
    assert!(failure.contains("SIGKILL"), "{failure}");
    // A stale pid file must not make stop signal someone else.
    let again = pod.entrypoint(&["stop", &pod.uuid]);
    assert!(again.status.success());
}

#[test]
fn stop_refuses_a_foreign_pid() {
    skip_unless_root!("stop_refuses_a_foreign_pid");
    let pod = Pod::new(vec![app("a", &[])], 1);
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    std::fs::write(pod.dir.join("pid"), format!("{}\n", sleeper.id())).unwrap();
    let out = pod.entrypoint(&["stop", "--force", &pod.uuid]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not guest-init"));
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "the foreign process was not signalled"
    );
    sleeper.kill().unwrap();
    let _ = sleeper.wait();

    // PID 1 of another PID namespace (guest-init is one) that is not this pod's: refused by
    // the plan in its root.
    let mut outer = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "sleep", "30"])
        .spawn()
        .unwrap();
    let children = format!("/proc/{0}/task/{0}/children", outer.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let inner = loop {
        let c = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(p) = c.split_whitespace().next() {
            break p.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "unshare started no child"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::fs::write(pod.dir.join("pid"), format!("{inner}\n")).unwrap();
    let out = pod.entrypoint(&["stop", "--force", &pod.uuid]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot read its plan"), "{err}");
    assert!(
        outer.try_wait().unwrap().is_none(),
        "the foreign PID 1 was not signalled"
    );
    outer.kill().unwrap();
    let _ = outer.wait();
}

#[test]
fn enter_cgroups_and_gc() {
    skip_unless_root!("enter_cgroups_and_gc");
    let mut a = app("main", &["--write", "/v/ready", "--sleep-ms", "60000"]);
    a.mounts = vec![mount("v", "/v", false)];
    a.memory_limit = Some(64 << 20);
    a.cpu_limit_millis = Some(500);
    a.env.push(("ENTERED".into(), "yes".into()));
    let mut pod = Pod::new(vec![a], 1);
    std::fs::write(pod.app_rootfs("main").join("marker"), "m").unwrap();
    let child = pod.spawn();
    pod.release_test_lock();
    wait_for(&pod.volume("v").join("ready"), Duration::from_secs(20));
    let pid = pod.pid();
    let enter = pod.entrypoint(&[
        "enter",
        &format!("--pid={pid}"),
        "--appname=main",
        "--",
        "/bin/pod-check",
        "--expect-file",
        "/marker",
        "--expect-env",
        "ENTERED=yes",
        "--expect-hostname",
        &pod.plan.hostname,
        "--exit",
        "5",
    ]);
    let stdout = String::from_utf8_lossy(&enter.stdout);
    assert!(
        stdout.contains("pod-check OK"),
        "{stdout}{}",
        String::from_utf8_lossy(&enter.stderr)
    );
    assert_eq!(enter.status.code(), Some(5));
    let missing = pod.entrypoint(&[
        "enter",
        &format!("--pid={pid}"),
        "--appname=main",
        "--",
        "/bin/nope",
    ]);
    assert_eq!(missing.status.code(), Some(127));

    let cgroups =
        std::fs::read_to_string(pod.dir.join(stage1_common::cgroup::CGROUPS_FILE)).unwrap();
    let dirs: Vec<&str> = cgroups.lines().collect();
    // guest-init is in every pod cgroup and the app in its limit cgroups below them (on cgroup
    // v1 each joined by its one thread moving itself, `tasks`): whole processes, so each
    // cgroup's `cgroup.procs` lists them.
    // Its children: the apps' reaper (guest-init/src/pidns.rs) and the app.
    let app_pid: i32 = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap()
        .split_whitespace()
        .map(|c| c.parse().unwrap())
        .find(|c: &i32| {
            std::fs::read_to_string(format!("/proc/{c}/comm"))
                .is_ok_and(|n| n.trim() == "pod-check")
        })
        .expect("the app runs under guest-init");
    for d in &dirs {
        let procs = |dir: &str| std::fs::read_to_string(format!("{dir}/cgroup.procs")).unwrap();
        let has = |dir: &str, p: i32| procs(dir).lines().any(|l| l.trim() == p.to_string());
        if d.contains("/memory/") || d.contains("/cpu/") {
            assert!(has(d, pid), "guest-init {pid} not in {d}: {}", procs(d));
            let app_cg = format!("{d}/main");
            assert!(has(&app_cg, app_pid), "app {app_pid} not in {app_cg}");
        }
    }
    // guest-init runs in stage1-ns's forked child: it holds no fd of its launcher but stdio,
    // its sockets and its signalfd (no pod lock, pod directory, network namespace file or
    // report pipe).
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let e = e.unwrap();
        let fd: i32 = e.file_name().to_string_lossy().parse().unwrap();
        let target = std::fs::read_link(e.path()).unwrap();
        let t = target.to_string_lossy();
        assert!(
            fd <= 2 || t.starts_with("socket:") || t.starts_with("anon_inode:"),
            "guest-init holds fd {fd} -> {t}"
        );
    }
    // The app is in the pod and alive, but not guest-init: a `pid` naming it is refused.
    std::fs::write(pod.dir.join("pid"), format!("{app_pid}\n")).unwrap();
    let refused = pod.entrypoint(&["stop", "--force", &pod.uuid]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(err.contains("not PID 1"), "{err}");
    assert!(std::path::Path::new(&format!("/proc/{app_pid}")).exists());
    std::fs::write(pod.dir.join("pid"), format!("{pid}\n")).unwrap();

    if let Some(mem) = dirs.iter().find(|d| d.contains("/memory/")) {
        let limit = std::fs::read_to_string(format!("{mem}/main/memory.limit_in_bytes")).unwrap();
        assert_eq!(limit.trim(), (64u64 << 20).to_string());
    } else {
        eprintln!("SKIP: enter_cgroups_and_gc: memory limit check: no cgroup v1 memory hierarchy");
    }
    if let Some(cpu) = dirs.iter().find(|d| d.contains("/cpu/")) {
        let q = std::fs::read_to_string(format!("{cpu}/main/cpu.cfs_quota_us")).unwrap();
        assert_eq!(q.trim(), "50000");
    }
    let stop = pod.entrypoint(&["stop", &pod.uuid]);
    assert!(stop.status.success());
    let out = finish(child);
    assert_eq!(out.code, 143);
    for d in &dirs {
        assert!(
            !std::path::Path::new(d).exists(),
            "{d} removed when the pod ended"
        );
    }
    let gc = pod.entrypoint(&["gc", &pod.uuid]);
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
    for d in dirs {
        assert!(!std::path::Path::new(d).exists(), "{d} removed by gc");
    }
}

/// Reads everything from a pty master until the slave side is gone.
fn drain(master: std::os::fd::OwnedFd) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut out = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match std::io::Read::read(&mut f, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    })
}

#[test]
fn interactive_console_and_escape() {
    skip_unless_root!("interactive_console_and_escape");
    // 1. The app gets the terminal as its controlling tty; its exit code comes back.
    let mut a = app("tty", &["--expect-tty", "--exit", "4"]);
    a.mounts = vec![mount("v", "/v", false)];
    let mut pod = Pod::new(vec![a], 1);
    pod.plan.interactive = true;
    pod.write_plan();
    let pty = nix::pty::openpty(None, None).unwrap();
    let child = pod.spawn_with(Some(&pty.slave));
    pod.release_test_lock();
    drop(pty.slave);
    let reader = drain(pty.master);
    let st = finish(child);
    let text = reader.join().unwrap();
    assert!(text.contains("pod-check OK"), "{text}");
    assert_eq!(st.code, 4);
    assert_eq!(pod.status("tty"), Some(4));

    // 2. ^] three times within a second kills the pod.
    let mut a = app("tty", &["--write", "/v/ready", "--sleep-ms", "60000"]);
    a.mounts = vec![mount("v", "/v", false)];
    let mut pod = Pod::new(vec![a], 30);
    pod.plan.interactive = true;
    pod.write_plan();
    let pty = nix::pty::openpty(None, None).unwrap();
    let child = pod.spawn_with(Some(&pty.slave));
    pod.release_test_lock();
    drop(pty.slave);
    wait_for(&pod.volume("v").join("ready"), Duration::from_secs(20));
    let writer = pty.master.try_clone().unwrap();
    let reader = drain(pty.master);
    let t0 = Instant::now();
    nix::unistd::write(&writer, b"\x1d\x1d\x1d").unwrap();
    let st = finish(child);
    drop(writer);
    let text = reader.join().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(text.contains("pod killed"), "{text}");
    assert_eq!(pod.status("tty"), None);
    assert_eq!(st.code, pod_abi::status::SETUP_FAILED);
}

#[test]
fn second_stop_does_not_wait_for_the_grace_period() {
    skip_unless_root!("second_stop_does_not_wait_for_the_grace_period");
    let mut a = app(
        "a",
        &["--ignore-sigterm", "--write", "/v/a", "--sleep-ms", "60000"],
    );
    a.mounts = vec![mount("v", "/v", false)];
    let mut pod = Pod::new(vec![a], 60);
    let child = pod.spawn();
    pod.release_test_lock();
    wait_for(&pod.volume("v").join("a"), Duration::from_secs(20));
    let t0 = Instant::now();
    assert!(pod.entrypoint(&["stop", &pod.uuid]).status.success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(pod.entrypoint(&["stop", &pod.uuid]).status.success());
    let out = finish(child);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(pod.status("a"), Some(128 + 9));
    assert_eq!(out.code, 137);
}

/// guest-init's kvm flavor, run as PID 1 of a PID namespace on the host (no VM needed):
/// its own early mounts, kvm-style volumes (plain directories bound onto themselves), the
/// hostname from the plan, `stop` on the control channel, and the final `reboot(RB_AUTOBOOT)`,
/// which in a non-initial PID namespace ends the namespace with SIGHUP instead of rebooting.
#[test]
fn guest_init_kvm_flavor_in_a_pid_namespace() {
    use std::os::unix::process::ExitStatusExt;
    skip_unless_root!("guest_init_kvm_flavor_in_a_pid_namespace");
    if std::process::Command::new("unshare")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: guest_init_kvm_flavor_in_a_pid_namespace: util-linux unshare missing");
        return;
    }
    let mut a = app(
        "a",
        &[
            "--expect-mount",
            "/v:rw",
            "--write",
            "/v/ready",
            "--sleep-ms",
            "60000",
        ],
    );
    a.mounts = vec![mount("v", "/v", false)];
    let mut pod = Pod::new(vec![a], 5);
    let hostname = "kvm-flavor-test".to_string();
    pod.plan.hostname = hostname.clone();
    pod.plan.apps[0]
        .exec
        .extend(["--expect-hostname".to_string(), hostname]);
    pod.write_plan();
    let root = PodPaths::new(&pod.dir).stage1_rootfs();
    let ctl = root.join("rkt/ctl");
    nix::unistd::mkfifo(&ctl, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // The root is bound onto itself first: as in a VM, guest-init's root is then the root of
    // a mount, which `pivot_root` into each app needs.
    let child = std::process::Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount",
            "--propagation",
            "private",
            "--uts",
            "--ipc",
        ])
        .args([
            "sh",
            "-c",
            "mount --rbind \"$0\" \"$0\" && exec chroot \"$0\" \"$@\"",
        ])
        .arg(&root)
        .arg(pod_abi::paths::GUEST_INIT_PATH)
        .args(
            pod_abi::init::InitArgs {
                control: Some("/rkt/ctl".into()),
                ..pod_abi::init::InitArgs::new(pod_abi::plan::Flavor::Kvm)
            }
            .to_args(),
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ready = pod.app_rootfs("a").join("v/ready");
    wait_for(&ready, Duration::from_secs(20));
    std::fs::write(&ctl, pod_abi::control::ControlMsg::Stop.line()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("stdout:\n{stdout}stderr:\n{stderr}");
    assert!(stdout.contains("pod-check OK"), "{stdout}");
    assert!(
        stderr.contains("stop requested on the control channel"),
        "{stderr}"
    );
    assert_eq!(pod.status("a"), Some(128 + 15));
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGHUP),
        "ended by reboot(RB_AUTOBOOT)"
    );
}

#[test]
fn stop_during_pre_start_skips_the_app() {
    skip_unless_root!("stop_during_pre_start_skips_the_app");
    let mut a = app("a", &["--no-check", "--write", "/v/main"]);
    a.pre_start = handler(&["--no-check", "--write", "/v/pre", "--sleep-ms", "60000"]);
    a.post_stop = handler(&["--no-check", "--write", "/v/post"]);
    a.mounts = vec![mount("v", "/v", false)];
    let mut pod = Pod::new(vec![a], 5);
    let child = pod.spawn();
    pod.release_test_lock();
    wait_for(&pod.volume("v").join("pre"), Duration::from_secs(20));
    assert!(pod.entrypoint(&["stop", &pod.uuid]).status.success());
    let out = finish(child);
    assert_eq!(pod.status("a"), Some(128 + 15));
    assert_eq!(out.code, 143);
    assert!(
        !pod.volume("v").join("main").exists(),
        "the app must not start after a stop"
    );
    assert!(
        pod.volume("v").join("post").exists(),
        "post-stop still runs"
    );
}

#[test]
fn read_only_root_keeps_volumes_writable() {
    skip_unless_root!("read_only_root_keeps_volumes_writable");
    let mut a = app(
        "a",
        &[
            "--expect-ro-root",
            "--expect-mount",
            "/db:rw",
            "--expect-mount",
            "/cfg:ro",
            "--write",
            "/db/x",
        ],
    );
    a.read_only_rootfs = true;
    a.mounts = vec![mount("db", "/db", false), mount("cfg", "/cfg", true)];
    let mut pod = Pod::new(vec![a], 5);
    let out = pod.run();
    assert!(out.stdout.contains("pod-check OK"), "{}", out.stdout);
    assert_eq!(out.code, 0);
    assert!(pod.volume("db").join("x").exists());
}

/// Issue 9: a pod that plants a FIFO, or a symlink to a host file, where guest-init's failure
/// reason goes. stage1-ns must neither hang on the FIFO (holding the pod lock forever) nor copy
/// the host file into the pod's `failure` file; the pod fails with a clear reason.
#[test]
fn pod_planted_failure_file_is_refused() {
    skip_unless_root!("pod_planted_failure_file_is_refused");
    for plant in ["fifo", "symlink"] {
        let mut pod = Pod::new(vec![app("a", &[])], 1);
        let failure = pod_abi::paths::PodPaths::new(&pod.dir).guest_failure();
        let secret = pod.dir.join("host-secret");
        std::fs::write(&secret, "host secret\n").unwrap();
        if plant == "fifo" {
            nix::unistd::mkfifo(&failure, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        } else {
            std::os::unix::fs::symlink(&secret, &failure).unwrap();
        }
        let mut child = pod.spawn();
        pod.release_test_lock();
        let t0 = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("{plant}: stage1-ns hangs on the planted failure file");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = finish(child);
        assert_eq!(out.code, pod_abi::exit::STAGE1_FAILED, "{plant}");
        let f = std::fs::read_to_string(pod.dir.join("failure")).unwrap();
        assert!(!f.contains("host secret"), "{plant}: {f}");
        let why = if plant == "fifo" {
            "not a regular file"
        } else {
            "symbolic link"
        };
        assert!(f.contains(why), "{plant}: {f}");
    }
}
