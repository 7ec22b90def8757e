//! End-to-end: the in-pod checker with volumes, environment, user and working-directory
//! overrides; two apps sharing an empty volume; event handler order.
#![allow(clippy::unwrap_used)]

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
