//! End-to-end: apps' system call filters in the ns flavor (needs root; otherwise a SKIP line).
//! Each test runs `escape-probe` (tests/src/bin/escape-probe.rs) as the app and makes the calls
//! a hostile app would:
//!
//! * by default an app gets rkt's blacklist with `EPERM`: a root app with the default
//!   capabilities can no longer create a user namespace (`unshare(CLONE_NEWUSER)` and
//!   `clone(CLONE_NEWUSER)` need no capability) or an io_uring, still starts threads, and runs
//!   with `Seccomp: 2` and `no_new_privs`; with
//!   `--insecure-options=seccomp` the same app can do both, so the attack is real here;
//! * `--seccomp mode=remove,errno=ENOSYS,...` replaces the default: the listed call gets
//!   `ENOSYS`, the default's calls are allowed again;
//! * rkt's `@docker/*` groups and the `@systemd/*` groups it passed on to systemd filter the
//!   calls they name;
//! * a retain-set without an errno kills the app by `SIGSYS` at its first call outside the set,
//!   and the pod's exit code says so (128 + 31); a missing program under such a set still gives
//!   127;
//! * an unknown system call, group or errno in `--seccomp` is a clear error.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use rkt_tests::{stderr, stdout, E2e};

/// `SIGSYS`'s exit code: 128 + 31.
const SIGSYS_CODE: i32 = 159;

fn probe_image(e: &E2e) -> PathBuf {
    let p = e.escape_probe();
    e.pod_check_image("seccomp-probe.aci", |s| {
        s.file("/bin/escape-probe", &p, 0o755)
    })
}

/// `rkt run [GLOBAL] <probe image> --exec=/bin/escape-probe [APP_FLAGS] -- ACTIONS`:
/// (exit code, stdout, stderr).
fn run_probe(
    e: &E2e,
    global: &[&str],
    app_flags: &[&str],
    actions: &[&str],
) -> (Option<i32>, String, String) {
    let img = probe_image(e);
    let mut args: Vec<String> = vec!["run".into(), e.stage1_flag(), "--net=none".into()];
    args.extend(global.iter().map(|s| s.to_string()));
    args.push(img.to_str().unwrap().to_string());
    args.push("--exec=/bin/escape-probe".into());
    args.extend(app_flags.iter().map(|s| s.to_string()));
    args.push("--".into());
    args.extend(actions.iter().map(|s| s.to_string()));
    let o = e.run(&args);
    (o.status.code(), stdout(&o), stderr(&o))
}

#[test]
fn ns_default_filter_denies_user_namespaces_and_io_uring() {
    let Some(e) = E2e::require("ns_default_filter_denies_user_namespaces_and_io_uring") else {
        return;
    };
    let actions = [
        "seccomp-status",
        "userns",
        "userns-clone",
        "io-uring",
        "thread",
    ];
    let (code, out, err) = run_probe(&e, &[], &[], &actions);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("seccomp: Seccomp=2 NoNewPrivs=1"), "{out}");
    assert!(out.contains("userns: EPERM"), "{out}");
    assert!(out.contains("userns-clone: EPERM"), "{out}");
    assert!(out.contains("io-uring: EPERM"), "{out}");
    assert!(out.contains("thread: ok"), "threads still start: {out}");

    // The same app without the filter: both calls work here, so the default is what stops them.
    let (code, out, err) = run_probe(&e, &["--insecure-options=image,seccomp"], &[], &actions);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("seccomp: Seccomp=0 NoNewPrivs=0"), "{out}");
    assert!(out.contains("userns: ok"), "{out}");
    assert!(out.contains("userns-clone: ok"), "{out}");
    assert!(
        out.contains("io-uring: ok") || out.contains("io-uring: ENOSYS"),
        "{out}"
    );
}

#[test]
fn ns_seccomp_flag_replaces_the_default() {
    let Some(e) = E2e::require("ns_seccomp_flag_replaces_the_default") else {
        return;
    };
    let (code, out, err) = run_probe(
        &e,
        &[],
        &["--seccomp=mode=remove,errno=ENOSYS,io_uring_setup"],
        &["io-uring", "userns"],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("io-uring: ENOSYS"), "{out}");
    assert!(out.contains("userns: ok"), "{out}");
}

/// An image whose own remove-set names one harmless call (so that, taken as it is, user
/// namespaces and io_uring would be open): the default filter's calls stay denied (with the
/// image's errno) and `rkt` says so; a set from the command line is the operator's and
/// replaces the default, as above.
#[test]
fn ns_an_image_cannot_loosen_the_default_filter() {
    let Some(e) = E2e::require("ns_an_image_cannot_loosen_the_default_filter") else {
        return;
    };
    let p = e.escape_probe();
    let img = e.pod_check_image("loose.aci", |s| {
        s.file("/bin/escape-probe", &p, 0o755).isolator(
            "os/linux/seccomp-remove-set",
            serde_json::json!({"set": ["chmod"], "errno": "EACCES"}),
        )
    });
    let run = |app_flags: &[&str]| {
        let mut args: Vec<String> = vec![
            "run".into(),
            e.stage1_flag(),
            "--net=none".into(),
            img.to_str().unwrap().into(),
            "--exec=/bin/escape-probe".into(),
        ];
        args.extend(app_flags.iter().map(|s| s.to_string()));
        args.extend(["--", "userns", "io-uring"].map(String::from));
        let o = e.run(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        (stdout(&o), stderr(&o))
    };
    let (out, err) = run(&[]);
    assert!(out.contains("userns: EACCES"), "{out}");
    assert!(out.contains("io-uring: EACCES"), "{out}");
    assert!(err.contains("rkt's default filter denies"), "{err}");
    // (A set equal to the image's own would count as the image's.)
    let (out, err) = run(&["--seccomp=mode=remove,errno=EACCES,chmod,fchmod"]);
    assert!(out.contains("userns: ok"), "{out}");
    assert!(!err.contains("default filter denies"), "{err}");
}

#[test]
fn ns_docker_and_systemd_groups_filter_what_they_name() {
    let Some(e) = E2e::require("ns_docker_and_systemd_groups_filter_what_they_name") else {
        return;
    };
    // rkt's @docker/default-blacklist (the same list as @rkt's) denies unshare but not fork.
    let (code, out, err) = run_probe(
        &e,
        &[],
        &["--seccomp=mode=remove,errno=EACCES,@docker/default-blacklist"],
        &["userns", "thread"],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("userns: EACCES"), "{out}");
    assert!(out.contains("thread: ok"), "{out}");
    // systemd's @process holds clone and fork themselves: the probe cannot even fork, while
    // io_uring, outside the group, works again (the isolator replaced the default).
    let (code, out, err) = run_probe(
        &e,
        &[],
        &["--seccomp=mode=remove,errno=EACCES,@systemd/process"],
        &["userns", "io-uring"],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("userns: fork: EACCES"), "{out}");
    assert!(
        out.contains("io-uring: ok") || out.contains("io-uring: ENOSYS"),
        "{out}"
    );
}

#[test]
fn ns_retain_set_kills_the_app_at_its_first_other_call() {
    let Some(e) = E2e::require("ns_retain_set_kills_the_app_at_its_first_other_call") else {
        return;
    };
    let (code, out, err) = run_probe(
        &e,
        &[],
        &["--seccomp=mode=retain,@rkt/default-whitelist"],
        &["seccomp-status", "userns"],
    );
    // The whitelist runs the probe (status line) and lacks unshare: the child dies by SIGSYS
    // (no `userns:` line); the probe itself exits 0.
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("seccomp: Seccomp=2"), "{out}");
    assert!(!out.contains("userns:"), "{out}");

    let (code, out, err) = run_probe(
        &e,
        &[],
        &["--seccomp=mode=retain,read,write"],
        &["seccomp-status"],
    );
    assert_eq!(code, Some(SIGSYS_CODE), "{out}\n{err}");
    assert!(!out.contains("seccomp:"), "{out}");

    // A program that is not there fails its execve under that filter too, which then does not
    // let the launcher write the report: the exit code alone says "not found".
    let img = probe_image(&e);
    let o = e.run(&[
        "run".into(),
        e.stage1_flag(),
        "--net=none".into(),
        img.to_str().unwrap().to_string(),
        "--exec=/bin/not-in-the-image".into(),
        "--seccomp=mode=retain,read".into(),
    ]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
}

#[test]
fn ns_unknown_seccomp_names_are_clear_errors() {
    let Some(e) = E2e::require("ns_unknown_seccomp_names_are_clear_errors") else {
        return;
    };
    for (flag, want) in [
        (
            "--seccomp=mode=remove,frobnicate",
            "unknown system call \"frobnicate\"",
        ),
        (
            "--seccomp=mode=remove,@docker/seccomp-default",
            "unknown system call group",
        ),
        (
            "--seccomp=mode=remove,errno=EBOGUS,reboot",
            "unknown errno \"EBOGUS\"",
        ),
    ] {
        let (code, out, err) = run_probe(&e, &[], &[flag], &["seccomp-status"]);
        assert_ne!(code, Some(0), "{flag}: {out}\n{err}");
        assert!(err.contains(want), "{flag}: {err}");
        assert!(
            !out.contains("seccomp:"),
            "{flag}: the app must not run: {out}"
        );
    }
}
