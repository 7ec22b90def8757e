//! The experimental `rkt app` commands end to end, shared by the ns and kvm tests: a sandbox
//! with no apps, two apps added, one started, entered, stopped and removed, the other still
//! working, bad requests that change nothing, then `rkt stop` and `rkt gc`.

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use pod_abi::paths::PodPaths;

use crate::{mounts_under, stderr, stdout, uuid_of, wait_for_paths, E2e};

/// `rkt ARGS` with `RKT_EXPERIMENT_APP=true`, run to completion (and printed).
pub fn app_cmd<S: AsRef<str>>(e: &E2e, args: &[S]) -> Output {
    e.run_env(&[("RKT_EXPERIMENT_APP", "true")], args)
}

/// Starts `rkt app sandbox` (in the background, as rktlet ran it) and waits until the pod
/// runs; returns the sandbox process and the pod's UUID.
pub fn start_sandbox(e: &E2e, flags: &[&str], limit: Duration) -> (Child, String) {
    let uuid_file = e.path("sandbox-uuid");
    let mut args = vec![
        "app".to_string(),
        "sandbox".into(),
        e.stage1_flag(),
        format!("--uuid-file-save={}", uuid_file.display()),
    ];
    args.extend(flags.iter().map(|f| f.to_string()));
    let child = e
        .rkt(&args)
        .env("RKT_EXPERIMENT_APP", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_paths(&[&uuid_file], limit, "the sandbox saved no UUID");
    let uuid = uuid_of(&uuid_file);
    let t0 = Instant::now();
    loop {
        let s = stdout(&e.rkt(&["status", &uuid]).output().unwrap());
        if s.contains("state=running") && s.contains("pid=") && !s.contains("pid=-1") {
            break;
        }
        assert!(t0.elapsed() < limit, "the sandbox did not start: {s}");
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, uuid)
}

/// `rkt app status UUID --app=APP --format=json` as JSON.
pub fn app_status(e: &E2e, uuid: &str, app: &str) -> serde_json::Value {
    let o = app_cmd(
        e,
        &[
            "app",
            "status",
            uuid,
            &format!("--app={app}"),
            "--format=json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The app names `rkt app list --format=json` reports, with their states.
pub fn app_list(e: &E2e, uuid: &str) -> Vec<(String, String)> {
    let o = app_cmd(e, &["app", "list", uuid, "--format=json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    v.iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap_or_default().to_string(),
                a["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The app's root as the host sees it in the pod directory.
pub fn app_root(e: &E2e, uuid: &str, app: &str) -> PathBuf {
    PodPaths::new(e.pod_dir(uuid)).app_rootfs(app)
}

/// Timings of the flow, for the report.
#[derive(Debug, Default)]
pub struct Timings {
    /// `rkt app add` of the first app.
    pub add: Duration,
    /// `rkt app start`.
    pub start: Duration,
    /// `rkt app stop` of a running app (it dies of SIGTERM).
    pub stop: Duration,
    /// `rkt app rm`.
    pub rm: Duration,
}

fn timed<S: AsRef<str>>(e: &E2e, args: &[S]) -> (Output, Duration) {
    let t0 = Instant::now();
    let o = app_cmd(e, args);
    (o, t0.elapsed())
}

fn ok(o: &Output) {
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(o), stderr(o));
}

fn wait_state(e: &E2e, uuid: &str, app: &str, state: &str, limit: Duration) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        let s = app_status(e, uuid, app);
        if s["state"] == state {
            return s;
        }
        assert!(t0.elapsed() < limit, "app {app} never became {state}: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The whole flow on a running sandbox `uuid` (its process `sandbox`): see the module doc.
pub fn app_flow(e: &E2e, mut sandbox: Child, uuid: &str, limit: Duration) -> Timings {
    let mut t = Timings::default();
    // Refused without the variable, nothing changes.
    let o = e.run(&["app", "list", uuid]);
    assert_eq!(o.status.code(), Some(pod_abi::exit::USAGE));
    assert!(
        stderr(&o).contains("RKT_EXPERIMENT_APP=true"),
        "{}",
        stderr(&o)
    );
    assert!(app_list(e, uuid).is_empty());

    let alpha = e.pod_check_image("alpha.aci", |s| s);
    let beta = e.pod_check_image("beta.aci", |s| s);
    let (o, d) = timed(
        e,
        &[
            "app",
            "add",
            uuid,
            alpha.to_str().unwrap(),
            "--name=alpha",
            "--",
            "--no-check",
            "--write=/tmp/alpha-started",
            "--sleep-ms=600000",
        ],
    );
    ok(&o);
    t.add = d;
    ok(&app_cmd(
        e,
        &[
            "app",
            "add",
            uuid,
            beta.to_str().unwrap(),
            "--name=beta",
            "--",
            "--no-check",
            "--write=/tmp/beta-started",
            "--sleep-ms=600000",
        ],
    ));
    assert_eq!(
        app_list(e, uuid),
        vec![
            ("alpha".to_string(), "created".to_string()),
            ("beta".to_string(), "created".to_string())
        ]
    );

    let (o, d) = timed(e, &["app", "start", uuid, "--app=alpha"]);
    ok(&o);
    t.start = d;
    let s = wait_state(e, uuid, "alpha", "running", limit);
    assert!(s["started_at"].as_i64().is_some(), "{s}");
    let root = app_root(e, uuid, "alpha");
    wait_for_paths(&[&root.join("tmp/alpha-started")], limit, "alpha never ran");
    assert_eq!(app_status(e, uuid, "beta")["state"], "created");

    // exec: as rkt enter --app, confined to the app's root.
    let o = app_cmd(
        e,
        &[
            "app",
            "exec",
            uuid,
            "--app=alpha",
            "--",
            "/bin/pod-check",
            "--no-check",
            "--write=/tmp/exec-ran",
            "--exit=7",
        ],
    );
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(
        root.join("tmp/exec-ran").exists(),
        "exec wrote in alpha's root"
    );

    let (o, d) = timed(e, &["app", "stop", uuid, "--app=alpha"]);
    ok(&o);
    t.stop = d;
    let s = app_status(e, uuid, "alpha");
    assert_eq!(s["state"], "exited", "{s}");
    assert_eq!(s["exit_code"], 143, "stopped by SIGTERM: {s}");
    assert!(s["finished_at"].as_i64().is_some(), "{s}");
    let st = stdout(&app_cmd(e, &["app", "status", uuid, "--app=alpha"]));
    assert!(
        st.contains("state=exited\n") && st.contains("exit_code=143\n"),
        "{st}"
    );

    let (o, d) = timed(e, &["app", "rm", uuid, "--app=alpha"]);
    ok(&o);
    t.rm = d;
    assert_eq!(
        app_list(e, uuid),
        vec![("beta".to_string(), "created".to_string())]
    );
    let pod = PodPaths::new(e.pod_dir(uuid));
    assert!(!pod.app_dir("alpha").exists());
    assert!(!pod.appsinfo("alpha").exists());
    assert!(!pod.app_status("alpha").exists());
    let m = stdout(&e.run(&["cat-manifest", uuid]));
    assert!(!m.contains("\"alpha\"") && m.contains("\"beta\""), "{m}");

    // The other app still works.
    ok(&app_cmd(e, &["app", "start", uuid, "--app=beta"]));
    wait_state(e, uuid, "beta", "running", limit);
    wait_for_paths(
        &[&app_root(e, uuid, "beta").join("tmp/beta-started")],
        limit,
        "beta never ran",
    );

    // Bad requests fail clearly and change nothing.
    let before = stdout(&e.run(&["cat-manifest", uuid]));
    let o = app_cmd(
        e,
        &[
            "app",
            "add",
            uuid,
            alpha.to_str().unwrap(),
            "--name=Bad_Name",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(pod_abi::exit::USAGE),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("Bad_Name"), "{}", stderr(&o));
    let o = app_cmd(e, &["app", "add", uuid, "example.com/no-such-image"]);
    assert_eq!(
        o.status.code(),
        Some(pod_abi::exit::IMAGE_NOT_FOUND),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("no-such-image"), "{}", stderr(&o));
    let o = app_cmd(
        e,
        &["app", "add", uuid, beta.to_str().unwrap(), "--name=beta"],
    );
    assert_ne!(o.status.code(), Some(0), "a second app named beta");
    let o = app_cmd(e, &["app", "start", uuid, "--app=../x"]);
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(stdout(&e.run(&["cat-manifest", uuid])), before);
    assert_eq!(
        app_list(e, uuid),
        vec![("beta".to_string(), "running".to_string())]
    );
    let stage2: Vec<String> = std::fs::read_dir(pod.stage2_dir())
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(stage2, vec!["beta".to_string()]);

    // rkt stop ends the sandbox; gc leaves nothing.
    let o = e.run(&["stop", uuid]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let t0 = Instant::now();
    while sandbox.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < limit, "the sandbox did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = app_status(e, uuid, "beta");
    assert_eq!(s["state"], "exited", "{s}");
    let o = e.run(&["gc", "--grace-period=0s"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let pods = e.dir().join("pods");
    assert!(mounts_under(&pods).is_empty(), "{:?}", mounts_under(&pods));
    for st in ["run", "exited-garbage", "garbage"] {
        assert!(!pods.join(st).join(uuid).exists(), "{st}");
    }
    assert!(!Path::new(&format!("/var/run/netns/rkt-{uuid}")).exists());
    t
}
