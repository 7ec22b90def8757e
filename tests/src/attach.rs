//! The `rkt attach` scenario both flavors run (`ns_attach.rs`, `kvm_attach.rs`): an app with
//! its three streams in `stream` mode, attached by two attachers at once (one to stdout only,
//! one to everything), an app with its own terminal, and the refusals.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{stderr, stdout, wait_output, E2e, ImageSpec, BUSYBOX};

/// The variable that enables `rkt attach`.
const EXPERIMENT: (&str, &str) = ("RKT_EXPERIMENT_ATTACH", "true");

/// A busybox image whose exec is `/bin/sh -c`.
fn image(e: &E2e) -> PathBuf {
    let out = e.path("attach-sh.aci");
    let mut img = ImageSpec::new("example.com/attach-sh", &["/bin/sh", "-c"])
        .file("/bin/busybox", Path::new(BUSYBOX), 0o755)
        .dir("/proc")
        .dir("/dev")
        .dir("/sys");
    for a in ["sh", "tty", "echo", "sleep"] {
        img = img.symlink(&format!("/bin/{a}"), "busybox");
    }
    img.build(&out);
    out
}

/// Starts `rkt run` of `img` with `app_args` after it in the background; returns the child
/// and the pod's UUID once it runs.
fn start(e: &E2e, name: &str, img: &Path, app_args: &[&str]) -> (Child, String) {
    let uuid_file = e.path(&format!("{name}.uuid"));
    let mut args = vec![
        "run".to_string(),
        e.stage1_flag(),
        "--net=none".into(),
        format!("--uuid-file-save={}", uuid_file.display()),
        img.display().to_string(),
    ];
    args.extend(app_args.iter().map(|a| a.to_string()));
    let mut child = e.spawn(&args);
    let t0 = Instant::now();
    while t0.elapsed() < e.timeout() {
        if let Ok(u) = std::fs::read_to_string(&uuid_file) {
            let s = stdout(&e.rkt(&["status", u.trim()]).output().unwrap());
            if s.contains("state=running") && !s.contains("pid=-1") {
                return (child, u.trim().to_string());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!("pod {name} did not start: {}", stderr(&out));
}

/// `rkt attach ARGS` with piped stdio, its stdout collected on a thread.
struct Attacher {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
}

impl Attacher {
    fn spawn(e: &E2e, args: &[&str]) -> Attacher {
        let mut all = vec!["attach"];
        all.extend_from_slice(args);
        let mut child = e
            .rkt(&all)
            .env(EXPERIMENT.0, EXPERIMENT.1)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let collect = |r: Option<Box<dyn Read + Send>>| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let b = Arc::clone(&buf);
            std::thread::spawn(move || {
                let Some(mut r) = r else { return };
                let mut chunk = [0u8; 4096];
                while let Ok(n) = r.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    b.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            });
            buf
        };
        let out = collect(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let err = collect(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        Attacher { child, out, err }
    }

    fn out(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    fn err(&self) -> String {
        String::from_utf8_lossy(&self.err.lock().unwrap()).into_owned()
    }

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        if let Err(e) = stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
        {
            std::thread::sleep(Duration::from_millis(200));
            panic!(
                "attacher gone ({e}): status {:?}, stdout {:?}, stderr {:?}",
                self.child.try_wait(),
                self.out(),
                self.err()
            );
        }
    }

    /// Waits for the attacher to end; its exit code.
    fn wait(mut self, limit: Duration) -> (Option<i32>, String, String) {
        drop(self.child.stdin.take());
        let t0 = Instant::now();
        let code = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st.code();
            }
            if t0.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        std::thread::sleep(Duration::from_millis(100));
        (code, self.out(), self.err())
    }
}

/// Sends `ping N` lines through `to` until `watch`'s output shows the answer to one (both
/// attached and flowing), at most until `limit`.
fn until_both_see(to: &mut Attacher, watch: &Attacher, limit: Duration) {
    let t0 = Instant::now();
    let mut n = 0;
    while !watch.out().contains("out ping") {
        assert!(
            t0.elapsed() < limit,
            "no output reached the stdout attacher: {:?} / {:?}",
            watch.out(),
            to.out()
        );
        n += 1;
        to.send(&format!("ping {n}\n"));
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The whole scenario on `e`'s flavor; `name` prefixes the scratch files.
pub fn scenario(e: &E2e, name: &str) {
    let img = image(e);
    let limit = e.timeout();

    // Three streams, two attachers.
    let script = "echo early; while read l; do echo \"out $l\"; echo \"err $l\" >&2; \
                  [ \"$l\" = quit ] && exit 7; done";
    let (run, uuid) = start(
        e,
        &format!("{name}-streams"),
        &img,
        &[
            "--stdin=stream",
            "--stdout=stream",
            "--stderr=stream",
            "--",
            script,
        ],
    );
    let list = e.run_env(&[EXPERIMENT], &["attach", "--mode=list", &uuid]);
    assert_eq!(list.status.code(), Some(0), "{}", stderr(&list));
    assert_eq!(stdout(&list), "stdin\nstdout\nstderr\n");
    let watcher = Attacher::spawn(e, &["--mode=stdout", &uuid]);
    let mut talker = Attacher::spawn(e, &[&uuid]);
    until_both_see(&mut talker, &watcher, limit);
    talker.send("quit\n");
    let (code, out, err) = talker.wait(limit);
    assert_eq!(code, Some(0), "attacher: {out} / {err}");
    assert!(out.contains("out quit"), "{out}");
    assert!(err.contains("err quit"), "{err}");
    let (code, out, err) = watcher.wait(limit);
    assert_eq!(code, Some(0), "stdout attacher: {out} / {err}");
    assert!(out.contains("out quit") && !out.contains("err "), "{out}");
    let run = wait_output(run, limit);
    assert_eq!(run.status.code(), Some(7), "{}", stderr(&run));
    assert!(e.status(&uuid).contains("app-attach-sh=7"));

    // A terminal of the app's own.
    let (run, uuid) = start(
        e,
        &format!("{name}-tty"),
        &img,
        &[
            "--stdin=tty",
            "--stdout=tty",
            "--stderr=tty",
            "--",
            "while read l; do tty; [ \"$l\" = quit ] && exit 3; done",
        ],
    );
    let list = e.run_env(&[EXPERIMENT], &["attach", "--mode=list", &uuid]);
    assert_eq!(stdout(&list), "tty\n");
    let refused = e.run_env(&[EXPERIMENT], &["attach", "--mode=stdout", &uuid]);
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        stderr(&refused).contains("has no stdout to attach to"),
        "{}",
        stderr(&refused)
    );
    let mut t = Attacher::spawn(e, &["--mode=tty", &uuid]);
    t.send("one\n");
    t.send("quit\n");
    let (code, out, err) = t.wait(limit);
    assert_eq!(code, Some(0), "tty attacher: {out} / {err}");
    assert!(
        out.contains("/dev/pts/"),
        "the app's stdin is not a terminal: {out}"
    );
    assert!(!out.contains("not a tty"), "{out}");
    let run = wait_output(run, limit);
    assert_eq!(run.status.code(), Some(3), "{}", stderr(&run));

    // An app added to a running mutable pod (`rkt app add`) gets its streams too.
    let (mut sandbox, uuid) = crate::mutable::start_sandbox(e, &["--net=none"], limit);
    let add = crate::mutable::app_cmd(
        e,
        &[
            "app",
            "add",
            &uuid,
            img.to_str().unwrap(),
            "--name=talk",
            "--stdin=stream",
            "--stdout=stream",
            "--",
            "while read l; do echo \"got $l\"; [ \"$l\" = quit ] && exit 5; done",
        ],
    );
    assert_eq!(add.status.code(), Some(0), "{}", stderr(&add));
    let started = crate::mutable::app_cmd(e, &["app", "start", &uuid, "--app=talk"]);
    assert_eq!(started.status.code(), Some(0), "{}", stderr(&started));
    let mut t = Attacher::spawn(e, &["--app=talk", &uuid]);
    t.send("hi\n");
    let t0 = Instant::now();
    while !t.out().contains("got hi") {
        assert!(
            t0.elapsed() < limit,
            "no answer from the added app: {:?}",
            t.err()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    t.send("quit\n");
    let (code, out, err) = t.wait(limit);
    assert_eq!(code, Some(0), "added app's attacher: {out} / {err}");
    let st = crate::mutable::app_status(e, &uuid, "talk");
    assert_eq!(st["exit_code"], 5, "{st}");
    crate::mutable::stop_sandbox(e, &mut sandbox, &uuid, limit);

    // Not attachable, not enabled.
    let (run, uuid) = start(e, &format!("{name}-plain"), &img, &["--", "sleep 30"]);
    let o = e.run_env(&[EXPERIMENT], &["attach", &uuid]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("no endpoint to attach to"),
        "{}",
        stderr(&o)
    );
    let o = e.run(&["attach", &uuid]);
    assert!(
        stderr(&o).contains("RKT_EXPERIMENT_ATTACH"),
        "{}",
        stderr(&o)
    );
    let _ = e.run(&["stop", "--force", &uuid]);
    let _ = wait_output(run, limit);
}
