//! End-to-end: `rkt enter` and `rkt stop` of a kvm pod over the exec channel (guest-init's exec
//! service on vsock), and the same enter checks against an ns pod, so that both flavors are
//! held to one behaviour: exit codes, `--app`, stdin to EOF, 64 MiB byte-exact both ways, a
//! pty with a resize; kvm only: a forwarded signal, 100 enters without fd or memory growth in
//! the VMM, the stop report (an app that honours SIGTERM, one that ignores it), and stderr
//! without `\r`.
//!
//! One pod per flavor, shared by every check (under ci/nested-kvm a pod costs minutes). The kvm
//! test marks itself guest-booting (`E2e::require_kvm`): on a host whose KVM cannot boot Linux
//! it prints its SKIP line and ci/test.sh runs it under ci/nested-kvm.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rkt_tests::{stderr, stdout, uuid_of, wait_for_paths, wait_output, E2e, KVM_RUN_TIMEOUT_SECS};
use sha2::{Digest, Sha256};

/// Bytes pushed through `enter` each way: 64 MiB.
const BULK: usize = 64 << 20;
/// Enters in a row for the leak check.
const ROUNDS: usize = 100;
/// RSS growth of the VMM tolerated over [`ROUNDS`] enters (guest page cache lives in the
/// VMM's memory too), in KiB.
const RSS_SLACK_KB: i64 = 16 << 10;

/// Starts a pod of two pod-check apps that write `/mark/<app>` and sleep: `honour` (SIGTERM
/// ends it) and `ignore` (ignores SIGTERM). Returns `rkt run`, the UUID and the mark dir.
fn start_pod(e: &E2e) -> (Child, String, PathBuf) {
    let mark = e.path("mark");
    std::fs::create_dir(&mark).unwrap();
    let img = |f: &str| e.pod_check_image(f, |s| s.mount_point("mark", "/mark", false));
    let (honour, ignore) = (img("honour.aci"), img("ignore.aci"));
    let uuid_file = e.path("uuid");
    let args = vec![
        "run".to_string(),
        e.stage1_flag(),
        format!("--uuid-file-save={}", uuid_file.display()),
        format!("--volume=mark,kind=host,source={}", mark.display()),
        honour.display().to_string(),
        "--".into(),
        "--no-check".into(),
        "--write=/mark/honour".into(),
        "--sleep-ms=600000".into(),
        "---".into(),
        ignore.display().to_string(),
        "--".into(),
        "--no-check".into(),
        "--ignore-sigterm".into(),
        "--write=/mark/ignore".into(),
        "--sleep-ms=600000".into(),
    ];
    let child = e.spawn(&args);
    wait_for_paths(
        &[&mark.join("honour"), &mark.join("ignore")],
        Duration::from_secs(KVM_RUN_TIMEOUT_SECS),
        "the apps never started",
    );
    (child, uuid_of(&uuid_file), mark)
}

/// `rkt enter --app=APP UUID /bin/pod-check --no-check ARGS...`
fn enter_args(uuid: &str, app: &str, args: &[&str]) -> Vec<String> {
    let mut v = vec![
        "enter".to_string(),
        format!("--app={app}"),
        uuid.to_string(),
        "/bin/pod-check".into(),
        "--no-check".into(),
    ];
    v.extend(args.iter().map(|a| a.to_string()));
    v
}

/// The checks both flavors pass.
fn common_checks(e: &E2e, uuid: &str) {
    // Exit codes, and a command that cannot be executed.
    let o = e.run(&enter_args(uuid, "honour", &["--exit", "7"]));
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let o = e.run(&enter_args(uuid, "honour", &[]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = e.run(&["enter", "--app=honour", uuid, "/bin/no-such-command"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("/bin/no-such-command"),
        "{}",
        stderr(&o)
    );

    // --app picks the app: its environment.
    for app in ["honour", "ignore"] {
        let o = e.run(&enter_args(uuid, app, &["--print-env"]));
        assert!(
            stdout(&o).contains(&format!("AC_APP_NAME={app}\n")),
            "{}",
            stdout(&o)
        );
    }
    let o = e.run(&["enter", uuid, "/bin/pod-check"]);
    assert_ne!(o.status.code(), Some(0), "two apps: --app is needed");

    // stdin to EOF, 64 MiB each way, byte-exact; stderr without `\r`.
    let data: Vec<u8> = {
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        (0..BULK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let mut child = e
        .rkt(&enter_args(uuid, "honour", &["--cat"]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut w = child.stdin.take().unwrap();
    let input = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&input).is_ok());
    let mut err = child.stderr.take().unwrap();
    let errs = std::thread::spawn(move || {
        let mut s = Vec::new();
        err.read_to_end(&mut s).unwrap();
        s
    });
    let mut back = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut back).unwrap();
    let status = child.wait().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    assert!(writer.join().unwrap());
    let errs = errs.join().unwrap();
    eprintln!(
        "FIGURE enter_cat_64MiB_secs {secs:.2} ({:.1} MiB/s each way)",
        64.0 / secs
    );
    assert_eq!(status.code(), Some(0), "{}", String::from_utf8_lossy(&errs));
    assert_eq!(back.len(), data.len());
    assert!(
        Sha256::digest(&back) == Sha256::digest(&data),
        "64 MiB came back changed"
    );
    assert_eq!(errs, format!("pod-check: cat {BULK} bytes\n").into_bytes());

    // A pty: the command's terminal has the host terminal's size, and follows a resize.
    pty_resize(e, uuid);
}

/// Runs `--winsize --wait-winsize 50x132` under a host pty of 24x80, resizes it once the first
/// size was printed (SIGWINCH to `rkt enter`, as the terminal would send it), and expects the
/// new size.
fn pty_resize(e: &E2e, uuid: &str) {
    let ws = |rows, cols| nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws(24, 80)), None).unwrap();
    let slave = std::fs::File::from(pty.slave);
    let mut child = e
        .rkt(&enter_args(
            uuid,
            "honour",
            &[
                "--winsize",
                "--wait-winsize",
                "50x132",
                "--timeout-ms",
                "120000",
            ],
        ))
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let master = std::fs::File::from(pty.master);
    let fd = master.as_raw_fd();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut m = master;
    std::thread::spawn(move || {
        let mut b = [0u8; 4096];
        while let Ok(n) = m.read(&mut b) {
            if n == 0 || tx.send(b[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let wait_for = |seen: &mut Vec<u8>, what: &str| {
        let t0 = Instant::now();
        while !String::from_utf8_lossy(seen).contains(what) {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "no {what:?} in {:?}",
                String::from_utf8_lossy(seen)
            );
            if let Ok(d) = rx.recv_timeout(Duration::from_millis(200)) {
                seen.extend_from_slice(&d);
            }
        }
    };
    wait_for(&mut seen, "winsize 24x80");
    let new = ws(50, 132);
    // SAFETY: TIOCSWINSZ reads the valid winsize passed, on the master we own.
    assert_eq!(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &new) }, 0);
    // SAFETY: kill takes a pid and a signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGWINCH) };
    wait_for(&mut seen, "winsize 50x132");
    let t0 = Instant::now();
    let st = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "enter did not end");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(st.code(), Some(0), "{:?}", String::from_utf8_lossy(&seen));
}

/// Open descriptors and resident memory (KiB) of `pid`.
/// The VMM's open descriptors (count of `/proc/PID/fd`).
fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The VMM's open descriptors once every closed connection is gone: the vsock device keeps a
/// closed connection up to its 3 s flush time, so this waits longer than that, and then up to
/// 10 s more for the count to reach `at_most` (a leaked descriptor never goes away).
fn settled_fds(pid: i32, at_most: usize) -> usize {
    std::thread::sleep(Duration::from_secs(4));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = fds(pid);
        if n <= at_most || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn fds_and_rss(pid: i32, at_most: usize) -> (usize, i64) {
    let fds = settled_fds(pid, at_most);
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let rss = rollup
        .lines()
        .find_map(|l| l.strip_prefix("Rss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    (fds, rss)
}

#[test]
fn kvm_enter_and_stop_over_the_exec_channel() {
    let Some(e) = E2e::require_kvm("kvm_enter_and_stop_over_the_exec_channel") else {
        return;
    };
    let (run, uuid, mark) = start_pod(&e);
    common_checks(&e, &uuid);

    // A signal to `rkt enter` reaches the command.
    let mut c = e
        .rkt(&enter_args(
            &uuid,
            "honour",
            &["--write=/mark/entered", "--sleep-ms=600000"],
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !mark.join("entered").exists() {
        assert!(t0.elapsed() < Duration::from_secs(120), "never entered");
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill takes a pid and a signal number.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    let st = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "SIGTERM not forwarded"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(st.code(), Some(143));

    // 100 enters: no fd or memory growth in the VMM.
    let vmm = e.pod_pid(&uuid);
    let once = || {
        let o = e.rkt(&enter_args(&uuid, "honour", &[])).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    };
    for _ in 0..5 {
        once();
    }
    let (fds0, rss0) = fds_and_rss(vmm, usize::MAX);
    let t0 = Instant::now();
    for _ in 0..ROUNDS {
        once();
    }
    let per = t0.elapsed() / ROUNDS as u32;
    let (fds1, rss1) = fds_and_rss(vmm, fds0);
    eprintln!(
        "FIGURE enter_ms {} vmm_fds {fds0}->{fds1} vmm_rss_kb {rss0}->{rss1}",
        per.as_millis()
    );
    assert!(
        fds1 <= fds0,
        "the VMM leaks descriptors: {fds0} -> {fds1} over {ROUNDS} enters"
    );
    assert!(
        rss1 - rss0 < RSS_SLACK_KB,
        "the VMM grew by {} KiB",
        rss1 - rss0
    );

    // Stop over the channel: the report says who honoured SIGTERM and who needed SIGKILL.
    let t0 = Instant::now();
    let s = e.run(&["stop", &uuid]);
    assert_eq!(s.status.code(), Some(0), "{}", stderr(&s));
    let report = stderr(&s);
    assert!(
        report.contains("app honour: stopped by SIGTERM, status 143"),
        "{report}"
    );
    assert!(
        report.contains("app ignore: killed with SIGKILL after the grace period, status 137"),
        "{report}"
    );
    assert!(
        t0.elapsed() >= Duration::from_secs(10),
        "the grace period was waited for"
    );
    let o = wait_output(run, Duration::from_secs(120));
    let err = o.stderr.clone();
    assert!(
        stderr(&o).contains("[guest-init]") && !err.contains(&b'\r'),
        "stderr of a kvm pod is byte-exact: {:?}",
        stderr(&o)
    );
    let st = e.status(&uuid);
    assert!(
        st.contains("app-honour=143") && st.contains("app-ignore=137"),
        "{st}"
    );
}

#[test]
fn ns_enter_behaves_as_kvm() {
    let Some(e) = E2e::require("ns_enter_behaves_as_kvm") else {
        return;
    };
    let (run, uuid, _mark) = start_pod(&e);
    common_checks(&e, &uuid);
    let s = e.run(&["stop", &uuid]);
    assert_eq!(s.status.code(), Some(0), "{}", stderr(&s));
    let o = wait_output(run, Duration::from_secs(60));
    assert!(!o.stderr.contains(&b'\r'), "{:?}", stderr(&o));
}
