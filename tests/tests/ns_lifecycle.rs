//! End-to-end: stop of a running pod, enter, gc of exited pods (mounts and directory gone).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use rkt_tests::{mounts_under, stderr, stdout, E2e};

fn wait_running(e: &E2e, uuid_file: &std::path::Path) -> String {
    let t0 = Instant::now();
    loop {
        if let Ok(u) = std::fs::read_to_string(uuid_file) {
            let s = stdout(&e.rkt(&["status", &u]).output().unwrap());
            if s.contains("state=running") && !s.contains("pid=-1") {
                return u;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "pod did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ns_stop_enter_and_gc() {
    let Some(e) = E2e::require("ns_stop_enter_and_gc") else {
        return;
    };
    let img = e.pod_check_image("sleeper.aci", |s| {
        s.file("/bin/hello", &e.bins.join("hello"), 0o755)
    });
    let uuid_file = e.path("uuid");
    let mut child = e
        .rkt(&[
            "run",
            &e.stage1_flag(),
            &format!("--uuid-file-save={}", uuid_file.display()),
            img.to_str().unwrap(),
            "--",
            "--sleep-ms=60000",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let uuid = wait_running(&e, &uuid_file);

    let o = e.run(&["enter", &uuid, "/bin/hello", "--exit", "6"]);
    assert!(
        stdout(&o).contains("Hello from a rkt-rs pod!"),
        "{}",
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(6));

    let l = stdout(&e.run(&["list", "--no-legend"]));
    assert!(l.contains(&uuid[..8]) && l.contains("running"), "{l}");

    let o = e.run(&["stop", &uuid]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(20), "pod did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = stdout(&e.run(&["status", "--wait=10s", &uuid]));
    assert!(s.contains("state=exited\n"), "{s}");

    let pods = e.dir().join("pods");
    assert!(
        !mounts_under(&pods).is_empty(),
        "the exited pod keeps its mounts until gc"
    );
    let o = e.run(&["gc", "--grace-period=0s"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(mounts_under(&pods).is_empty(), "{:?}", mounts_under(&pods));
    for st in ["run", "exited-garbage"] {
        assert!(!pods.join(st).join(&uuid).exists());
    }
    assert_eq!(
        e.run(&["status", &uuid]).status.code(),
        Some(pod_abi::exit::POD_STATE)
    );
}
