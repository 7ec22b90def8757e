//! End-to-end: the in-pod checker with volumes, environment, user and working-directory
//! overrides; two apps sharing an empty volume; event handler order; `--cpu-shares` and
//! `--oom-score-adj`.
#![allow(clippy::unwrap_used)]

use pod_abi::proccgroup::V2_INIT_CGROUP;
use rkt_tests::{stderr, stdout, E2e};

#[test]
fn ns_pod_check_with_overrides() {
    let Some(e) = E2e::require("ns_pod_check_with_overrides") else {
        return;
    };
    let o = e.run(&e.overrides_check_args("scratch", "kind=empty", &[]));
    assert!(
        stdout(&o).contains("pod-check OK"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn ns_two_apps_share_an_empty_volume() {
    let Some(e) = E2e::require("ns_two_apps_share_an_empty_volume") else {
        return;
    };
    let main = e.pod_check_image("main.aci", |s| s.mount_point("db", "/db", false));
    let side = e.pod_check_image("sidekick.aci", |s| s.mount_point("db", "/db", false));
    let o = e.run(&[
        "run",
        &e.stage1_flag(),
        "--volume=db,kind=empty",
        main.to_str().unwrap(),
        "--",
        "--expect-mount=/db:rw",
        "--write=/db/main",
        "--wait-for=/db/sidekick",
        "---",
        side.to_str().unwrap(),
        "--",
        "--write=/db/sidekick",
        "--wait-for=/db/main",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        stdout(&o).matches("pod-check OK").count(),
        2,
        "{}",
        stdout(&o)
    );
}

#[test]
fn ns_event_handlers_run_in_order() {
    let Some(e) = E2e::require("ns_event_handlers_run_in_order") else {
        return;
    };
    let log = e.path("log");
    std::fs::create_dir(&log).unwrap();
    let img = e.pod_check_image("hooks.aci", |s| {
        s.mount_point("log", "/log", false)
            .event_handler(
                "pre-start",
                &[
                    "/bin/pod-check",
                    "--no-check",
                    "--append",
                    "/log/order",
                    "pre-start",
                ],
            )
            .event_handler(
                "post-stop",
                &[
                    "/bin/pod-check",
                    "--no-check",
                    "--append",
                    "/log/order",
                    "post-stop",
                ],
            )
    });
    let o = e.run(&[
        "run",
        &e.stage1_flag(),
        &format!("--volume=log,kind=host,source={}", log.display()),
        img.to_str().unwrap(),
        "--",
        "--append",
        "/log/order",
        "main",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let order = std::fs::read_to_string(log.join("order")).unwrap();
    let words: Vec<&str> = order.split_whitespace().collect();
    assert_eq!(words, vec!["pre-start", "main", "post-stop"], "{order:?}");
}

/// `--cpu-shares` and `--oom-score-adj` (rktlet's QoS flags) take effect: the app's
/// `oom_score_adj`, and its cgroup's `cpu.weight` (v2) or `cpu.shares` (v1) on the host, read
/// while it runs (the app itself sees its cgroups as `/`: a cgroup namespace of its own); an image's own negative `oom-score-adj` is not honoured (the attack: an
/// image making its app the last the host's OOM killer picks), the command line's is.
#[test]
fn ns_cpu_shares_and_oom_score_adj_apply() {
    let Some(e) = E2e::require("ns_cpu_shares_and_oom_score_adj_apply") else {
        return;
    };
    let vol = e.path("qos-vol");
    std::fs::create_dir_all(&vol).unwrap();
    let img = e.pod_check_image("qos.aci", |s| s.mount_point("v", "/v", false));
    let out = e.path("qos.out");
    let uuid_file = e.path("qos.uuid");
    let mut child = e
        .rkt(&[
            "run".to_string(),
            e.stage1_flag(),
            format!("--uuid-file-save={}", uuid_file.display()),
            "--net=none".into(),
            format!("--volume=v,kind=host,source={}", vol.display()),
            img.display().to_string(),
            "--cpu-shares=512".into(),
            "--oom-score-adj=500".into(),
            "--".into(),
            "--expect-oom-score-adj=500".into(),
            "--print-cgroup".into(),
            "--wait-for=/v/done".into(),
            "--timeout-ms=30000".into(),
        ])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let text = rkt_tests::wait_for_text(&out, std::time::Duration::from_secs(30), |t| {
        t.contains("cgroup ")
    });
    // The app sees its own cgroups as the root of its cgroup namespace; the host finds them
    // below the pod's (guest-init's own, on cgroup v2, aside).
    for l in text.lines().filter_map(|l| l.strip_prefix("cgroup ")) {
        assert!(l.ends_with(":/"), "the app sees a cgroup path: {l}");
    }
    let uuid = std::fs::read_to_string(&uuid_file).unwrap();
    let listed = std::fs::read_to_string(e.pod_dir(uuid.trim()).join("stage1-cgroups")).unwrap();
    let mut checked = false;
    for dir in listed.lines() {
        let subs = std::fs::read_dir(dir).into_iter().flatten().flatten();
        for sub in subs.filter(|d| d.path().is_dir() && d.file_name() != V2_INIT_CGROUP) {
            for (file, want) in [("cpu.shares", "512"), ("cpu.weight", "20")] {
                if let Ok(v) = std::fs::read_to_string(sub.path().join(file)) {
                    assert_eq!(v.trim(), want, "{}", sub.path().join(file).display());
                    checked = true;
                }
            }
        }
    }
    std::fs::write(vol.join("done"), b"").unwrap();
    let st = child.wait().unwrap();
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        checked,
        "no cgroup with CPU weight found for the app:\n{text}"
    );
    assert!(text.contains("pod-check OK"), "{text}");
    assert_eq!(st.code(), Some(0), "{text}");

    let img = e.pod_check_image("oom-image.aci", |s| {
        s.isolator("os/linux/oom-score-adj", serde_json::json!(-900))
    });
    let img = img.to_str().unwrap();
    let o = e.run(&[
        "run",
        &e.stage1_flag(),
        "--net=none",
        img,
        "--",
        "--expect-oom-score-adj=0",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("oom-score-adj -900 of the image"),
        "{}",
        stderr(&o)
    );
    // The command line's negative value, where rkt may lower the score (CAP_SYS_RESOURCE);
    // without it the app keeps the inherited score and the pod says why.
    let may_lower = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0);
    let want = if may_lower { "-100" } else { "0" };
    let o = e.run(&[
        "run",
        &e.stage1_flag(),
        "--net=none",
        img,
        "--oom-score-adj=-100",
        "--",
        &format!("--expect-oom-score-adj={want}"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(
        !may_lower,
        format!("{}{}", stdout(&o), stderr(&o)).contains("oom_score_adj -100 not permitted"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
}
