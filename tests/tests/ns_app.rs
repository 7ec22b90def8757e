//! End-to-end: the experimental `rkt app` commands with the ns stage1 (issue 14, item 5):
//! refused without `RKT_EXPERIMENT_APP=true`; sandbox -> add two apps -> start, exec, stop,
//! rm one -> the other still works -> bad adds change nothing -> `rkt stop` + `rkt gc` leave
//! nothing (`rkt_tests::mutable::app_flow`); `rkt app add --mnt-volume`
//! (`rkt_tests::mutable::mnt_volume_flow`).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use rkt_tests::mutable::{app_flow, k8s_log_sandbox_flow, mnt_volume_flow, start_sandbox};
use rkt_tests::E2e;

#[test]
fn ns_app_sandbox_add_start_exec_stop_rm() {
    let Some(e) = E2e::require("ns_app_sandbox_add_start_exec_stop_rm") else {
        return;
    };
    let limit = Duration::from_secs(30);
    let (sandbox, uuid) = start_sandbox(
        &e,
        &[
            "--net=none",
            "--hostname=sandbox",
            "--user-label=tier=web",
            "--annotation=example.com/team=infra",
        ],
        limit,
    );
    // The sandbox's labels and annotations are the pod's (rktlet's pod metadata).
    let m = rkt_tests::stdout(&e.run(&["cat-manifest", &uuid]));
    let m: serde_json::Value = serde_json::from_str(&m).unwrap();
    assert_eq!(m["userLabels"]["tier"], "web", "{m}");
    assert!(
        m["annotations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "example.com/team" && a["value"] == "infra"),
        "{m}"
    );
    let t = app_flow(&e, sandbox, &uuid, limit);
    eprintln!(
        "TIMING app add {:?}, app start {:?}, app stop {:?}, app rm {:?}",
        t.add, t.start, t.stop, t.rm
    );
}

#[test]
fn ns_app_add_mnt_volume() {
    let Some(e) = E2e::require("ns_app_add_mnt_volume") else {
        return;
    };
    let limit = Duration::from_secs(30);
    let (sandbox, uuid) = start_sandbox(&e, &["--net=none"], limit);
    mnt_volume_flow(&e, sandbox, &uuid, limit);
}

/// The same in a `--private-users` sandbox: the apps' user namespace gets the pod's mounts
/// (the attached volumes included) locked, as for `rkt run`'s.
#[test]
fn ns_app_add_mnt_volume_private_users() {
    let Some(e) = E2e::require("ns_app_add_mnt_volume_private_users") else {
        return;
    };
    let limit = Duration::from_secs(30);
    let (sandbox, uuid) = start_sandbox(&e, &["--net=none", "--private-users"], limit);
    mnt_volume_flow(&e, sandbox, &uuid, limit);
}

/// rkt's experimental CRI logs (`logmode=k8s-plain`, rktlet's `kubernetes-log-dir` and
/// `-path` annotations).
#[test]
fn ns_app_k8s_plain_logs() {
    let Some(e) = E2e::require("ns_app_k8s_plain_logs") else {
        return;
    };
    k8s_log_sandbox_flow(&e, Duration::from_secs(30));
}

#[test]
fn ns_app_commands_need_the_experiment_variable() {
    let Some(e) = E2e::require("ns_app_commands_need_the_experiment_variable") else {
        return;
    };
    for args in [
        &["app", "sandbox", "--net=none"][..],
        &["app", "list", "abcd"],
        &["app", "add", "abcd", "img.aci"],
    ] {
        let o = e.run(args);
        assert_eq!(o.status.code(), Some(pod_abi::exit::USAGE), "{args:?}");
        assert!(
            rkt_tests::stderr(&o).contains("RKT_EXPERIMENT_APP=true"),
            "{}",
            rkt_tests::stderr(&o)
        );
    }
    assert!(
        !e.dir().join("pods/run").exists()
            || std::fs::read_dir(e.dir().join("pods/run"))
                .unwrap()
                .next()
                .is_none()
    );
}
