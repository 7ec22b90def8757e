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
    for flags in [
        &["--stage1=ns"][..],
        &[][..],
        &["--stage1-from-dir=stage1-ns.aci"][..],
    ] {
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

/// `rkt run --pod-manifest`: the pod is the appc pod manifest as written (its app section
/// replacing the image's: exec, environment, user; its host volume and mount, and a mount with
/// its own `appVolume`; the image by ID from the store), and a manifest rkt refuses fails before any pod exists.
#[test]
fn ns_pod_manifest_runs_the_manifest_as_written() {
    let Some(e) = E2e::require("ns_pod_manifest_runs_the_manifest_as_written") else {
        return;
    };
    let img = e.pod_check_image("pm.aci", |s| s.env("IMG", "image"));
    let o = e.run(&["fetch", img.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    assert!(id.starts_with("sha256-"), "{id}");
    let host = e.path("hostdir");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("from-host"), b"hi").unwrap();
    let manifest = |image_id: &str, exit: &str| {
        serde_json::json!({
            "acKind": "PodManifest",
            "acVersion": "0.8.11",
            "apps": [{
                "name": "checker",
                "image": { "id": image_id },
                "app": {
                    "exec": ["/bin/pod-check", "--expect-env", "FROM=manifest",
                             "--expect-file", "/data/from-host",
                             "--expect-mount", "/data:ro", "--expect-mount", "/own:rw",
                             "--write", "/own/w", "--expect-uid", "0", "--exit", exit],
                    "user": "0",
                    "group": "0",
                    "environment": [{ "name": "FROM", "value": "manifest" }]
                },
                "mounts": [
                    { "volume": "data", "path": "/data" },
                    { "volume": "own", "path": "/own",
                      "appVolume": { "name": "own", "kind": "empty", "mode": "0700" } }
                ]
            }],
            "volumes": [{
                "name": "data", "kind": "host", "source": host.to_str().unwrap(), "readOnly": true
            }]
        })
        .to_string()
    };
    let pm = e.path("pod.json");
    // The short ID a user would copy from `rkt image list` is resolved in the store.
    std::fs::write(&pm, manifest(&id[..19], "5")).unwrap();
    let uuid_file = e.path("uuid");
    let o = e.run(&[
        "run",
        &e.stage1_flag(),
        &format!("--uuid-file-save={}", uuid_file.display()),
        &format!("--pod-manifest={}", pm.display()),
    ]);
    let out = stdout(&o);
    assert!(out.contains("pod-check OK"), "{out}\n{}", stderr(&o));
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    let uuid = rkt_tests::uuid_of(&uuid_file);
    let s = e.status(&uuid);
    assert!(s.contains("app-checker=5"), "{s}");
    let o = e.run(&["cat-manifest", &uuid]);
    let written: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let full = written["apps"][0]["image"]["id"].as_str().unwrap();
    assert!(
        full.starts_with("sha512-") && full.len() == 7 + 128,
        "the pod's manifest names the store's full ID: {full}"
    );
    assert_eq!(written["apps"][0]["image"]["name"], "example.com/pm");
    let own = pod_abi::paths::PodPaths::new(e.pod_dir(&uuid)).shared_volume("own");
    assert!(own.join("w").is_file(), "{}", own.display());

    // Refused before a pod exists: an image not in the store, a manifest beside an image,
    // an exposed port no app declares, a volume target climbing out with "..", a file that is
    // not a pod manifest.
    let before = e.run(&["list", "--no-legend"]);
    let missing = format!("sha256-{}", "0".repeat(64));
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_str(&manifest(&id, "0")).unwrap();
        f(&mut v);
        v.to_string()
    };
    let cases: [(String, &[&str], &str); 5] = [
        (manifest(&missing, "0"), &[], &missing[..20]),
        (
            manifest(&id, "0"),
            &[img.to_str().unwrap()],
            "conflicting flags set with --pod-manifest: images",
        ),
        (
            edit(&|v| v["ports"] = serde_json::json!([{ "name": "http", "hostPort": 8080 }])),
            &[],
            "no app declares the exposed port \"http\"",
        ),
        (
            edit(&|v| v["apps"][0]["mounts"][0]["path"] = "/../../etc".into()),
            &[],
            "must not contain \"..\"",
        ),
        (
            r#"{"acKind": "ImageManifest"}"#.to_string(),
            &[],
            "--pod-manifest",
        ),
    ];
    for (text, more, want) in cases {
        std::fs::write(&pm, &text).unwrap();
        let mut args = vec![
            "run".to_string(),
            e.stage1_flag(),
            format!("--pod-manifest={}", pm.display()),
        ];
        args.extend(more.iter().map(|m| m.to_string()));
        let o = e.run(&args);
        assert_ne!(o.status.code(), Some(0), "{text}");
        assert!(stderr(&o).contains(want), "{want}: {}", stderr(&o));
    }
    let after = e.run(&["list", "--no-legend"]);
    assert_eq!(stdout(&before), stdout(&after), "no pod was left behind");
}
