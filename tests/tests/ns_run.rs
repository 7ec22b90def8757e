//! End-to-end: `rkt run --stage1=ns` of real images (static hello / pod-check) in real
//! namespaces: output, exit-code propagation, missing binaries, prepare + run-prepared,
//! status in JSON.
#![allow(clippy::unwrap_used)]

use rkt_tests::{stderr, stdout, E2e, ImageSpec};

#[test]
fn ns_hello_output_and_exit_code() {
    let Some(e) = E2e::require("ns_hello_output_and_exit_code") else {
        return;
    };
    let img = e.hello_image();
    let uuid_file = e.path("uuid");
    let o = e.run(&[
        "run",
        &e.stage1_flag(),
        &format!("--uuid-file-save={}", uuid_file.display()),
        img.to_str().unwrap(),
        "--",
        "first",
        "second",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(out.contains("Hello from a rkt-rs pod!"), "{out}");
    assert!(
        out.contains(r#"["/bin/hello", "first", "second"]"#),
        "{out}"
    );
    assert!(out.contains("AC_APP_NAME=hello"), "{out}");
    let uuid = std::fs::read_to_string(&uuid_file).unwrap();
    let o = e.run(&["status", &uuid]);
    let s = stdout(&o);
    assert!(
        s.contains("state=exited\n") && s.contains("app-hello=0"),
        "{s}"
    );

    // --exec and args: the pod's status is rkt's exit code.
    let o = e.run(&[
        "run",
        &e.stage1_flag(),
        img.to_str().unwrap(),
        "--exec=/bin/hello",
        "--name=x",
        "--",
        "--exit",
        "3",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stdout(&o).contains("AC_APP_NAME=x"));
}

#[test]
fn ns_missing_app_binary_is_127() {
    let Some(e) = E2e::require("ns_missing_app_binary_is_127") else {
        return;
    };
    let img = e.path("nobin.aci");
    ImageSpec::new("example.com/nobin", &["/bin/does-not-exist"])
        .dir("/bin")
        .build(&img);
    let uuid_file = e.path("uuid");
    let o = e.run(&[
        "run",
        &e.stage1_flag(),
        &format!("--uuid-file-save={}", uuid_file.display()),
        img.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(pod_abi::exit::APP_NOT_FOUND),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("does-not-exist"),
        "the error names the binary: {}",
        stderr(&o)
    );
    let uuid = std::fs::read_to_string(&uuid_file).unwrap();
    let s = stdout(&e.run(&["status", &uuid]));
    assert!(
        s.contains("state=exited\n") && s.contains("app-nobin=127"),
        "{s}"
    );
}

#[test]
fn ns_prepare_run_prepared_status_json() {
    let Some(e) = E2e::require("ns_prepare_run_prepared_status_json") else {
        return;
    };
    let img = e.hello_image();
    let o = e.run(&[
        "prepare",
        &e.stage1_flag(),
        img.to_str().unwrap(),
        "--",
        "--exit",
        "4",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let uuid = stdout(&o).trim().to_string();
    assert_eq!(uuid.len(), 36, "prepare prints only the UUID: {uuid:?}");
    let j: serde_json::Value =
        serde_json::from_slice(&e.run(&["status", "--format=json", &uuid]).stdout).unwrap();
    assert_eq!(j["state"], "prepared");
    let o = e.run(&["run-prepared", &uuid[..8]]);
    assert_eq!(o.status.code(), Some(4));
    assert!(stdout(&o).contains("Hello from a rkt-rs pod!"));
    let j: serde_json::Value =
        serde_json::from_slice(&e.run(&["status", "--format=json", &uuid]).stdout).unwrap();
    assert_eq!(j["name"], uuid.as_str());
    assert_eq!(j["state"], "exited");
    assert_eq!(j["apps"][0]["exit_code"], 4);
    assert!(j["started_at"].as_i64().unwrap() >= j["created_at"].as_i64().unwrap());
    // Running it again is refused.
    assert_eq!(
        e.run(&["run-prepared", &uuid]).status.code(),
        Some(pod_abi::exit::POD_STATE)
    );
}

#[test]
fn ns_default_stage1_is_found_next_to_rkt() {
    let Some(e) = E2e::require("ns_default_stage1_is_found_next_to_rkt") else {
        return;
    };
    let exe_dir = e.rkt.parent().unwrap();
    let found = [
        exe_dir.join("../stage1-ns.aci"),
        exe_dir.join("stage1-ns.aci"),
    ]
    .iter()
    .any(|p| p.is_file());
    if !found {
        rkt_tests::skip(
            "ns_default_stage1_is_found_next_to_rkt",
            "no stage1-ns.aci next to the rkt binary",
        );
        return;
    }
    let img = e.hello_image();
    for flags in [&["--stage1=ns"][..], &[][..]] {
        let mut args = vec!["run"];
        args.extend_from_slice(flags);
        args.push(img.to_str().unwrap());
        let o = e.run(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stdout(&o).contains("Hello from a rkt-rs pod!"));
    }
    // The stage1 file was imported once and is reused.
    assert!(e.dir().join("stage1-images.json").is_file());
}
