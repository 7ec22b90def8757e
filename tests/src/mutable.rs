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

/// `rkt app add UUID IMG --name=NAME FLAGS...` (experiment variable set).
pub fn add_app(e: &E2e, uuid: &str, img: &Path, name: &str, flags: &[&str]) -> Output {
    let mut args: Vec<String> = vec![
        "app".into(),
        "add".into(),
        uuid.into(),
        img.display().to_string(),
        format!("--name={name}"),
    ];
    args.extend(flags.iter().map(|s| s.to_string()));
    app_cmd(e, &args)
}

/// A running `rkt app sandbox` (the process rkt became: the stage1's `run`). Dropped while it
/// still runs — a test that failed half-way — it kills the pod's stage1 process (guest-init,
/// or the VMM) and itself, so that no pod outlives its test holding the test's output.
#[derive(Debug)]
pub struct Sandbox {
    /// The process.
    pub child: Child,
    /// The pod's `pid` file.
    pid_file: PathBuf,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        crate::kill_pod_process(&self.pid_file);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `rkt app sandbox` (in the background, as rktlet ran it; its output, the apps', in
/// `sandbox.out`) and waits until the pod runs; returns the sandbox and the pod's UUID.
pub fn start_sandbox(e: &E2e, flags: &[&str], limit: Duration) -> (Sandbox, String) {
    let uuid_file = e.path("sandbox-uuid");
    // An earlier sandbox's.
    let _ = std::fs::remove_file(&uuid_file);
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
        .stdout(std::fs::File::create(e.path("sandbox.out")).unwrap())
        .spawn()
        .unwrap();
    let mut sandbox = Sandbox {
        child,
        pid_file: PathBuf::new(),
    };
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
    // Only now: the UUID is saved while the pod is still being prepared (`prepare/`).
    sandbox.pid_file = PodPaths::new(e.pod_dir(&uuid)).pid();
    (sandbox, uuid)
}

/// `rkt stop UUID` of a sandbox, then waits (at most `limit`) for its `rkt app sandbox`
/// process to end.
pub fn stop_sandbox(e: &E2e, sandbox: &mut Sandbox, uuid: &str, limit: Duration) {
    let o = e.run(&["stop", uuid]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let t0 = Instant::now();
    while sandbox.child.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < limit, "the sandbox did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
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

/// Waits (at most `limit`) until app `app` of pod `uuid` is in `state`; its status.
pub fn wait_state(
    e: &E2e,
    uuid: &str,
    app: &str,
    state: &str,
    limit: Duration,
) -> serde_json::Value {
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
pub fn app_flow(e: &E2e, mut sandbox: Sandbox, uuid: &str, limit: Duration) -> Timings {
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
    stop_sandbox(e, &mut sandbox, uuid, limit);
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

/// The host's mount points (from /proc/self/mountinfo), sorted.
/// The host's mount points, but those of other pods (`.../pods/<state>/<other uuid>/...`) and
/// other network namespaces (`/run/netns/...` not named after pod `uuid`): tests running beside
/// this one start, stop and collect pods and make their own "host" namespaces meanwhile.
fn host_mount_points(uuid: &str) -> Vec<String> {
    let mut v: Vec<String> =
        String::from_utf8_lossy(&std::fs::read("/proc/self/mountinfo").unwrap())
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| {
                if m.contains("/pods/") || m.starts_with("/run/netns/") {
                    m.contains(uuid)
                } else {
                    true
                }
            })
            .collect();
    v.sort();
    v
}

/// `rkt app add --mnt-volume` (rkt's per-app volumes, as rktlet passed a container's mounts)
/// on a running sandbox `uuid`: a host volume read-write, one read-only, an image mount point
/// given an implicit empty volume, and a target reached through the image's symlink to a host
/// path, which must land inside the app's root. The app checks them from the inside and writes
/// through the first; the host's mount table does not change; `rkt app rm` removes the app's
/// tree without reaching into the volumes; a missing source fails and changes nothing. Ends
/// with `rkt stop` and `rkt gc`.
pub fn mnt_volume_flow(e: &E2e, mut sandbox: Sandbox, uuid: &str, limit: Duration) {
    let rw = e.path("vol-rw");
    let ro = e.path("vol-ro");
    let host_target = e.path("not-here");
    for d in [&rw, &ro, &host_target] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(rw.join("from-host"), b"rw").unwrap();
    // Writable for a `--private-users` pod's root too (a host ID of the pod's range).
    std::fs::set_permissions(&rw, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::write(ro.join("ro-file"), b"ro").unwrap();
    let img = e.pod_check_image("vol.aci", |s| {
        s.mount_point("cache", "/cache", false)
            .symlink("/link", host_target.to_str().unwrap())
    });
    let before = host_mount_points(uuid);
    let add = |extra: &[&str], name: &str| add_app(e, uuid, &img, name, extra);
    let data = format!(
        "--mnt-volume=name=data,kind=host,source={},target=/data",
        rw.display()
    );
    let conf = format!(
        "--mnt-volume=name=conf,kind=host,source={},target=/conf,readOnly=true",
        ro.display()
    );
    let via_link = format!(
        "--mnt-volume=name=data,kind=host,source={},target=/link/in",
        rw.display()
    );
    let o = add(
        &[
            &data,
            &conf,
            &via_link,
            "--",
            "--expect-file=/data/from-host",
            "--expect-file=/conf/ro-file",
            "--expect-file=/link/in/from-host",
            "--expect-mount=/data:rw",
            "--expect-mount=/conf:ro",
            "--expect-mount=/cache:rw",
            "--write=/data/from-app",
            "--write=/cache/scratch",
        ],
        "vol",
    );
    ok(&o);
    assert!(
        stderr(&o).contains("mount point \"cache\""),
        "the implicit volume is reported: {}",
        stderr(&o)
    );
    let m: serde_json::Value =
        serde_json::from_str(&stdout(&e.run(&["cat-manifest", uuid]))).unwrap();
    let app = m["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "vol")
        .unwrap()
        .clone();
    let mounts = app["mounts"].as_array().unwrap();
    let kinds: Vec<(String, String, String)> = mounts
        .iter()
        .map(|m| {
            (
                m["path"].as_str().unwrap().to_string(),
                m["volume"].as_str().unwrap().to_string(),
                m["appVolume"]["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = |p: &str, v: &str, k: &str| (p.to_string(), v.to_string(), k.to_string());
    assert_eq!(
        kinds,
        vec![
            want("/data", "data", "host"),
            want("/conf", "conf", "host"),
            want("/link/in", "data", "host"),
            want("/cache", "cache", "empty"),
        ],
        "{app}"
    );
    // Nothing was mounted in the host's namespace.
    assert_eq!(host_mount_points(uuid), before);

    ok(&app_cmd(e, &["app", "start", uuid, "--app=vol"]));
    let st = wait_state(e, uuid, "vol", "exited", limit);
    let out = std::fs::read_to_string(e.path("sandbox.out")).unwrap_or_default();
    assert_eq!(st["exit_code"], 0, "{st}\n{out}");
    assert_eq!(std::fs::read(rw.join("from-app")).unwrap(), b"pod-check\n");
    // The symlink to a host path led inside the app's root, not to the host's directory.
    assert_eq!(std::fs::read_dir(&host_target).unwrap().count(), 0);
    let inside = app_root(e, uuid, "vol").join(host_target.strip_prefix("/").unwrap());
    assert!(inside.join("in").is_dir(), "{}", inside.display());
    assert!(PodPaths::new(e.pod_dir(uuid))
        .shared_volume("cache")
        .join("scratch")
        .is_file());

    // A missing source: refused, nothing changes.
    let manifest = stdout(&e.run(&["cat-manifest", uuid]));
    let gone = format!(
        "--mnt-volume=name=gone,kind=host,source={},target=/gone",
        e.path("no-such-dir").display()
    );
    let o = add(&[&gone], "other");
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("no-such-dir"), "{}", stderr(&o));
    assert_eq!(stdout(&e.run(&["cat-manifest", uuid])), manifest);
    assert!(!PodPaths::new(e.pod_dir(uuid)).app_dir("other").exists());

    // rm removes the app's tree, never what its volumes hold.
    ok(&app_cmd(e, &["app", "rm", uuid, "--app=vol"]));
    assert!(!PodPaths::new(e.pod_dir(uuid)).app_dir("vol").exists());
    assert!(rw.join("from-host").is_file() && rw.join("from-app").is_file());
    assert!(ro.join("ro-file").is_file());
    assert_eq!(host_mount_points(uuid), before);

    stop_sandbox(e, &mut sandbox, uuid, limit);
    let o = e.run(&["gc", "--grace-period=0s"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(rw.join("from-host").is_file() && rw.join("from-app").is_file());
}

/// Starts a sandbox with rkt's `k8s-plain` log mode and a fresh log directory, then runs
/// [`k8s_log_flow`] in it.
pub fn k8s_log_sandbox_flow(e: &E2e, limit: Duration) {
    let dir = e.path("pod-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let (sandbox, uuid) = start_sandbox(
        e,
        &[
            "--net=none",
            "--annotation=coreos.com/rkt/experiment/logmode=k8s-plain",
            &format!(
                "--annotation=coreos.com/rkt/experiment/kubernetes-log-dir={}",
                dir.display()
            ),
        ],
        limit,
    );
    k8s_log_flow(e, sandbox, &uuid, &dir, limit);
}

/// rkt's experimental CRI logs (rktlet's): the caller started `sandbox` with the pod
/// annotations `coreos.com/rkt/experiment/logmode=k8s-plain` and `...kubernetes-log-dir=` `dir`.
/// An app added with `stream` stdout and stderr and a `kubernetes-log-path` gets its output in
/// that host file, one timestamped line per line; adds without the path, with a path climbing
/// out of the directory, through a symlink in it, or naming a FIFO, are refused with nothing
/// written or added; `app rm` leaves the log; `rkt stop` ends the sandbox.
pub fn k8s_log_flow(e: &E2e, mut sandbox: Sandbox, uuid: &str, dir: &Path, limit: Duration) {
    use std::os::unix::fs::PermissionsExt;
    const PATH_ANN: &str = "--annotation=coreos.com/rkt/experiment/kubernetes-log-path=";
    let img = e.pod_check_image("logger.aci", |s| s);
    let outside = e.path("log-outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("evil")).unwrap();
    nix::unistd::mkfifo(
        &dir.join("fifo.log"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let add = |name: &str, extra: &[&str]| {
        let mut flags = vec!["--stdout=stream", "--stderr=stream"];
        flags.extend_from_slice(extra);
        flags.extend(["--", "--cat"]);
        add_app(e, uuid, &img, name, &flags)
    };
    // Refused: no path, a climbing path, a symlink on the way (the attack: a log written
    // through a link to a directory outside the log directory).
    let o = add("nopath", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("kubernetes-log-path"), "{}", stderr(&o));
    // A FIFO where the log should be: refused at once, not waited on.
    for (path, why) in [
        ("../up.log", "without . or .."),
        ("evil/x.log", "log file"),
        ("fifo.log", "log file"),
    ] {
        let o = add("bad", &[&format!("{PATH_ANN}{path}")]);
        assert_ne!(o.status.code(), Some(0), "{path}");
        assert!(stderr(&o).contains(why), "{path}: {}", stderr(&o));
    }
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    assert!(!dir.parent().unwrap().join("up.log").exists());
    assert!(app_list(e, uuid).is_empty(), "{:?}", app_list(e, uuid));

    ok(&add("logger", &[&format!("{PATH_ANN}logger_0.log")]));
    ok(&app_cmd(e, &["app", "start", uuid, "--app=logger"]));
    let st = wait_state(e, uuid, "logger", "exited", limit);
    assert_eq!(st["exit_code"], 0, "{st}");
    // The multiplexer writes its last lines as the app's output ends: wait for them.
    let log = dir.join("logger_0.log");
    let text = crate::wait_for_text(&log, limit, |t| {
        t.contains(" stderr ") && t.contains(" stdout ")
    });
    let lines: Vec<(&str, &str)> = text
        .lines()
        .map(|l| l.split_once(' ').unwrap_or((l, "")))
        .collect();
    for (time, _) in &lines {
        // RFC 3339 in UTC, Go's RFC3339Nano: 2006-01-02T15:04:05.999999999Z.
        assert!(
            time.len() >= 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
            "{text}"
        );
    }
    let rest: Vec<&str> = lines.iter().map(|(_, r)| *r).collect();
    assert!(rest.contains(&"stdout pod-check OK"), "{text}");
    assert!(rest.contains(&"stderr pod-check: cat 0 bytes"), "{text}");
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o640
    );
    ok(&app_cmd(e, &["app", "rm", uuid, "--app=logger"]));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), text);
    stop_sandbox(e, &mut sandbox, uuid, limit);
}
