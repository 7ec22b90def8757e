//! Replay of HashiCorp Nomad's rkt task driver: the exact command lines of `nomad-driver-rkt`
//! (`rkt/driver.go`, identical in what it runs to the in-tree `drivers/rkt` Nomad carried until
//! February 2020), in the driver's order, as recorded in `../shared/reference/nomad-contract.md`:
//! fingerprint (`version`), `prepare` with the driver's flags, `run-prepared` as the executor runs
//! it, `status --format=json` until networks appear, `cat-manifest`, `enter` (exec), `stop`, then
//! cleanup (`gc`). One home for both flavors: tests/tests/ns_nomad.rs and kvm_nomad.rs call
//! [`replay`] with their [`E2e`].
//!
//! The only additions to the driver's argv are two leading global flags that keep the test
//! off the host's state: `--dir` (a private data directory instead of `/var/lib/rkt`) and
//! `--local-config` (a private config directory whose `stage1.d` names the stage1 image under
//! test, the driver using the default stage1).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{stderr, stdout, wait_output, E2e};

/// Nomad's `minRktVersion`.
const MIN_RKT_VERSION: [u32; 3] = [1, 27, 0];
/// Nomad's allocation ID and task name in the volume names `<alloc>-<task>-{alloc,local,secrets}`.
const ALLOC: &str = "5c6f8bd0-7b9e-4e3f-a6b7-2d8f0c1e9a11";
const TASK: &str = "web";

struct Driver<'a> {
    e: &'a E2e,
    config_dir: std::path::PathBuf,
}

impl Driver<'_> {
    /// `rkt --dir=… --local-config=… ARGV` (the driver's argv after the two private flags).
    fn cmd(&self, argv: &[String]) -> Command {
        let mut c = Command::new(&self.e.rkt);
        c.arg(format!("--dir={}", self.e.dir().display()))
            .arg(format!("--local-config={}", self.config_dir.display()))
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The pod's CNI network lives in the test's own "host" namespace.
        if let Some(ns) = &self.e.host_ns {
            ns.enter(&mut c);
        }
        c
    }

    /// Runs one driver command to its end (the flavor's time limit) and prints what happened.
    fn run(&self, argv: &[String]) -> Output {
        let o = wait_output(self.cmd(argv).spawn().unwrap(), self.e.timeout);
        eprintln!(
            "$ rkt {}\n[exit {:?}]\n--- stdout\n{}--- stderr\n{}",
            argv.join(" "),
            o.status.code(),
            stdout(&o),
            stderr(&o)
        );
        o
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The first `(\d[.\d]+)` after `<word> [vV]ersion[:]? ` on any line, as numbers.
fn version_after(out: &str, word: &str) -> Option<Vec<u32>> {
    out.lines().find_map(|l| {
        let rest = l.strip_prefix(word)?.strip_prefix(' ')?;
        let rest = rest
            .strip_prefix("Version")
            .or_else(|| rest.strip_prefix("version"))?;
        let rest = rest.strip_prefix(':').unwrap_or(rest).strip_prefix(' ')?;
        let v: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        v.split('.')
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().ok())
            .collect()
    })
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Replays the driver's command lines against `e`'s stage1 (ns or kvm), asserting what the
/// driver relies on at each step. Panics on the first step that breaks the contract.
pub fn replay(e: &E2e) {
    let config_dir = e.path("etc-rkt");
    std::fs::create_dir_all(config_dir.join("stage1.d")).unwrap();
    std::fs::write(
        config_dir.join("stage1.d/stage1.json"),
        serde_json::json!({"rktKind": "stage1", "rktVersion": "v1",
            "location": e.stage1.display().to_string()})
        .to_string(),
    )
    .unwrap();
    let d = Driver { e, config_dir };
    let debug = "--debug=false";

    // Fingerprint: `rkt version`, matched with `rkt [vV]ersion[:]? (\d[.\d]+)` and
    // `appc [vV]ersion[:]? (\d[.\d]+)`; healthy only from rkt 1.27.0 on.
    let o = d.run(&s(&["version"]));
    assert_eq!(o.status.code(), Some(0));
    let rkt_version = version_after(&stdout(&o), "rkt").expect("rkt version line");
    assert!(rkt_version >= MIN_RKT_VERSION.to_vec(), "{rkt_version:?}");
    assert!(
        version_after(&stdout(&o), "appc").is_some(),
        "{}",
        stdout(&o)
    );

    // Start, step 1: no trust_prefix in the job, so `--insecure-options=all` instead of
    // `rkt trust --skip-fingerprint-review=true --prefix=<P> --debug=B`.
    // Step 2: prepare, with the task's volumes, env, resources, user/group and args.
    let alloc_dirs: Vec<(&str, std::path::PathBuf)> = ["alloc", "local", "secrets"]
        .iter()
        .map(|n| (*n, e.path(&format!("taskdir-{n}"))))
        .collect();
    let mut argv = s(&[
        "--insecure-options=all",
        debug,
        "prepare",
        "--no-overlay=true",
    ]);
    for (name, dir) in &alloc_dirs {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let vol = format!("{ALLOC}-{TASK}-{name}");
        argv.push(format!("--volume={vol},kind=host,source={}", dir.display()));
        argv.push(format!("--mount=volume={vol},target=/{name}"));
    }
    for (k, v) in [("NOMAD_TASK_NAME", TASK), ("NOMAD_ALLOC_DIR", "/alloc")] {
        argv.push(format!("--set-env={k}={v}"));
    }
    let image = e.pod_check_image("nomad-task.aci", |i| i);
    argv.push(image.display().to_string());
    argv.extend(s(&[
        "--exec=/bin/pod-check",
        "--memory=268435456",
        "--cpu=100",
        "--user=1000",
        "--group=1000",
        "--",
        "--expect-env",
        "NOMAD_TASK_NAME=web",
        "--expect-uid",
        "1000",
        "--expect-gid",
        "1000",
        "--expect-mount",
        "/alloc:rw",
        "--expect-mount",
        "/local:rw",
        "--expect-mount",
        "/secrets:rw",
        "--write",
        "/alloc/started",
        "--sleep-ms",
        "60000",
    ]));
    let o = d.run(&argv);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // stdout, trimmed, is the UUID: nothing else may be printed there.
    let uuid = stdout(&o).trim().to_string();
    assert!(
        is_uuid(&uuid),
        "prepare's stdout is not just a UUID: {:?}",
        stdout(&o)
    );

    // Step 3: run-prepared under Nomad's executor (its exit status is the task's).
    let run_argv = vec![
        "run-prepared".to_string(),
        "--dns=10.0.0.53".into(),
        "--dns-search=service.nomad".into(),
        "--net=default".into(),
        debug.into(),
        uuid.clone(),
    ];
    eprintln!("$ rkt {} &", run_argv.join(" "));
    let child = d.cmd(&run_argv).spawn().unwrap();

    // Step 4: `status --format=json` until the pod runs (the driver polls up to a minute;
    // a kvm pod under the nested harness's emulation gets the flavor's longer limit).
    let deadline = Instant::now() + e.timeout.max(Duration::from_secs(60));
    let started = alloc_dirs[0].1.join("started");
    loop {
        let o = wait_output(
            d.cmd(&s(&["status", "--format=json", &uuid]))
                .spawn()
                .unwrap(),
            Duration::from_secs(30),
        );
        let st: serde_json::Value = serde_json::from_str(stdout(&o).trim())
            .unwrap_or_else(|_| panic!("status is not JSON: {}", stdout(&o)));
        // Nomad waits for `networks[].ip` to hold a global unicast address.
        let ip = st["networks"]
            .as_array()
            .and_then(|n| n.iter().find_map(|x| x["ip"].as_str()))
            .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
            .filter(|ip| !ip.is_loopback() && !ip.is_unspecified() && !ip.is_link_local());
        if st["state"] == "running" && started.exists() && ip.is_some() {
            break;
        }
        assert!(
            st["state"] != "exited" && Instant::now() < deadline,
            "pod did not start: {st}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // `cat-manifest` supplies the app's declared ports (single-app pods only).
    let o = d.run(&s(&["cat-manifest", &uuid]));
    assert_eq!(o.status.code(), Some(0));
    let pm: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(pm["apps"].as_array().map(Vec::len), Some(1));
    assert!(pm["apps"][0]["app"].is_object(), "{pm}");

    // Exec (`nomad alloc exec`): `rkt enter <UUID> <cmd> <args…>`.
    let o = d.run(&s(&[
        "enter",
        &uuid,
        "/bin/pod-check",
        "--no-check",
        "--write",
        "/local/exec-ran",
    ]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(alloc_dirs[1].1.join("exec-ran").exists());

    // Stop: `rkt stop <UUID>`; run-prepared then ends (the executor's signal to it is
    // Nomad's side), and cleanup collects the pod.
    let o = d.run(&s(&["stop", &uuid]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = wait_output(child, e.timeout);
    eprintln!(
        "run-prepared ended: {:?}\n{}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("pod-check OK"), "{}", stdout(&out));
    let o = d.run(&s(&["status", "--format=json", &uuid]));
    let st: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(st["state"], "exited", "{st}");
    let o = d.run(&s(&["gc", "--grace-period=0s"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = d.run(&s(&["status", &uuid]));
    assert_ne!(o.status.code(), Some(0), "pod still there after gc");
}
