//! appc's own conformance suite (the ACE validator, built by ci/ace.sh from the appc spec
//! sources) run as rkt ran it, under both stage1s: `rkt run --mds-register --volume database,kind=empty
//! ace-validator-main.aci ace-validator-sidekick.aci` against `rkt metadata-service`. Every
//! check must print OK (prestart, main, sidekick, poststop). Runs inside a network namespace
//! the test makes (`unshare --net`, lo only), so the service's port is never opened on the
//! machine's own network; `--net=host` then means that namespace.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use rkt_tests::{skip, stderr, stdout, wait_output, workspace_root, E2e};

/// The ACE images and actool built by ci/ace.sh, or None (with a SKIP line).
fn ace_dir(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("RKT_BUILD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("build"))
        .join("ace");
    if dir.join("ace-validator-main.aci").exists() {
        Some(dir)
    } else {
        skip(
            test,
            "no build/ace (ci/ace.sh builds the ACE validator images; run `make build`)",
        );
        None
    }
}

/// Runs `script` under `sh -e` in a new network namespace with lo up; `env` is exported.
fn in_test_netns(script: &str, env: &[(&str, String)]) -> std::process::Output {
    let mut c = Command::new("unshare");
    c.args([
        "--net",
        "--",
        "sh",
        "-ec",
        &format!("ip link set lo up\n{RKT_FN}{script}"),
    ]);
    for (k, v) in env {
        c.env(k, v);
    }
    let child = c
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_output(child, std::time::Duration::from_secs(120));
    eprintln!("--- stdout\n{}--- stderr\n{}", stdout(&o), stderr(&o));
    o
}

/// The pids whose environment holds `RKT_METADATA_SOCKET=<sock>` (services of this test).
fn services_of(sock: &Path) -> Vec<i32> {
    let needle = format!("RKT_METADATA_SOCKET={}", sock.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// The environment of a script run by [`in_test_netns`] whose `rkt` function runs rkt as
/// E2e does (`--dir`, `--insecure-options=image`).
fn rkt_env(e: &E2e) -> Vec<(&'static str, String)> {
    let c = e.rkt::<&str>(&[]);
    vec![
        ("RKT", c.get_program().to_string_lossy().into_owned()),
        ("RKTDIR", e.dir().display().to_string()),
        ("STAGE1", e.stage1_flag()),
        ("TMP", e.tmp.path().display().to_string()),
    ]
}

/// Defines `rkt` in the scripts.
const RKT_FN: &str = r#"rkt() { "$RKT" --dir="$RKTDIR" --insecure-options=image "$@"; }
"#;

/// The validator's checks all pass for a pod on `net`, against a service in the test's
/// network namespace; the service is gone after the script.
fn ace_passes(e: &E2e, ace: &Path, net: &str) {
    let o = run_ace(e, ace, net);
    let out = stdout(&o);
    for check in ["prestart OK", "main OK", "sidekick OK", "poststop OK"] {
        assert!(
            out.contains(check),
            "--net={net}: the ACE validator did not print {check:?}:\n{out}\n{}",
            stderr(&o)
        );
    }
    assert!(!out.contains("FAIL"), "{out}");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// Runs the validator's two images in a pod on `net` with a service in the test's network
/// namespace (gone after the script); the script's output.
fn run_ace(e: &E2e, ace: &Path, net: &str) -> std::process::Output {
    let sock = e.path(&format!("mds-{net}/metadata-svc.sock"));
    let script = r#"
        # Not through the `rkt` function: $! must be the service itself, and its stdio must not
        # hold the test's pipes open.
        "$RKT" metadata-service --listen-port=18112 >/dev/null 2>"$TMP/mds.log" &
        svc=$!
        i=0; while [ ! -S "$RKT_METADATA_SOCKET" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
        rc=0
        rkt run --net=$NET --mds-register $STAGE1 --volume database,kind=empty \
            "$ACE/ace-validator-main.aci" "$ACE/ace-validator-sidekick.aci" || rc=$?
        rkt gc --grace-period=0s >/dev/null 2>&1 || true
        kill $svc
        exit $rc
    "#;
    let mut env = rkt_env(e);
    env.push(("ACE", ace.display().to_string()));
    env.push(("NET", net.to_string()));
    env.push(("RKT_METADATA_SOCKET", sock.display().to_string()));
    let o = in_test_netns(script, &env);
    assert!(
        services_of(&sock).is_empty(),
        "the service outlived the test"
    );
    o
}

#[test]
fn ns_ace_validator_passes_with_the_metadata_service() {
    let t = "ns_ace_validator_passes_with_the_metadata_service";
    let Some(e) = E2e::require(t) else { return };
    let Some(ace) = ace_dir(t) else { return };
    // The host's loopback, then a CNI network whose host side (its gateway) serves the pod.
    ace_passes(&e, &ace, "host");
    ace_passes(&e, &ace, "default");
}

#[test]
fn kvm_ace_validator_passes_with_the_metadata_service() {
    let t = "kvm_ace_validator_passes_with_the_metadata_service";
    let Some(e) = E2e::require_kvm(t) else { return };
    let Some(ace) = ace_dir(t) else { return };
    // A KVM pod reaches the service over its virtio-net card and the CNI network's host side.
    if std::env::var_os("NESTED_KVM").is_none() {
        ace_passes(&e, &ace, "default");
        return;
    }
    // Under ci/nested-kvm the guest is emulated (TCG): its first TCP connection to the host
    // takes longer than the validator's fixed 100 ms HTTP timeout. Everything else must pass,
    // and `main` may fail only by that timeout.
    let o = run_ace(&e, &ace, "default");
    let (out, err) = (stdout(&o), stderr(&o));
    for check in ["prestart OK", "sidekick OK", "poststop OK"] {
        assert!(out.contains(check), "no {check:?}:\n{out}\n{err}");
    }
    if out.contains("main OK") {
        assert_eq!(o.status.code(), Some(0), "{err}");
        return;
    }
    let problems: Vec<&str> = err.lines().filter(|l| l.starts_with("==>")).collect();
    assert!(
        !problems.is_empty()
            && problems
                .iter()
                .all(|l| l.contains("Client.Timeout") || l.contains("i/o timeout")),
        "main failed for another reason than the 100 ms timeout:\n{out}\n{err}"
    );
    skip(
        t,
        &format!(
            "under TCG emulation the guest misses the validator's 100 ms HTTP timeout ({}); every other check passed",
            problems.join("; ")
        ),
    );
}

#[test]
fn ns_mds_register_starts_the_service_on_demand_and_gc_unregisters() {
    let t = "ns_mds_register_starts_the_service_on_demand_and_gc_unregisters";
    let Some(e) = E2e::require(t) else { return };
    let sock = e.path("mds/metadata-svc.sock");
    let probe = e.pod_check_image("mdsprobe.aci", |i| i);
    // No service yet: --mds-register starts one (in the test's namespace) and the pod gets
    // AC_METADATA_URL; --net=none has no route to it and is refused with rkt's reason.
    let script = r#"
        rc=0
        rkt run --net=none --mds-register $STAGE1 "$PROBE" 2>"$TMP/none.err" || rc=$?
        echo "none-rc=$rc"; cat "$TMP/none.err"
        rkt run --net=host --mds-register $STAGE1 --uuid-file-save="$TMP/uuid" "$PROBE" \
            -- --no-check --print-env | tee "$TMP/env"
        [ -S "$RKT_METADATA_SOCKET" ] && echo socket-up
        # The pod has exited: its registration is gone (404 for its token).
        url=$(sed -n 's/^AC_METADATA_URL=//p' "$TMP/env")
        python3 -c 'import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1] + "/acMetadata/v1/pod/uuid", headers={"Metadata-Flavor": "AppContainer"})
try: print("after-exit", urllib.request.urlopen(req, timeout=5).status)
except urllib.error.HTTPError as e: print("after-exit", e.code)' "$url"
        uuid=$(cat "$TMP/uuid")
        rkt gc --grace-period=0s >/dev/null 2>&1 || true
        rkt rm "$uuid" >/dev/null 2>&1 || true
        echo gc-done
    "#;
    let mut env = rkt_env(&e);
    env.push(("PROBE", probe.display().to_string()));
    env.push(("RKT_METADATA_SOCKET", sock.display().to_string()));
    let o = in_test_netns(script, &env);
    let out = stdout(&o);
    let started = services_of(&sock);
    for pid in &started {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::SIGTERM);
    }
    assert!(
        !out.contains("none-rc=0"),
        "--net=none with --mds-register must fail:\n{out}"
    );
    assert!(
        out.contains("metadata service needs a pod network that reaches the host"),
        "{out}"
    );
    assert!(
        out.contains("AC_METADATA_URL=http://127.0.0.1:18112/"),
        "the app did not get its AC_METADATA_URL:\n{out}"
    );
    assert!(out.contains("socket-up"), "{out}");
    assert!(
        out.contains("after-exit 404"),
        "the registration outlived the pod:\n{out}"
    );
    assert_eq!(
        started.len(),
        1,
        "exactly one service started on demand: {started:?}"
    );
}

#[test]
fn ns_manifests_and_images_rkt_writes_pass_actool_validate() {
    let t = "ns_manifests_and_images_rkt_writes_pass_actool_validate";
    let Some(e) = E2e::require(t) else { return };
    let Some(ace) = ace_dir(t) else { return };
    // appc's own actool judges the pod manifest (`rkt cat-manifest`), an image manifest
    // (`rkt image cat-manifest`), an exported pod app (`rkt export`) and an image exported
    // from the store (`rkt image export`).
    let probe = e.pod_check_image("validated.aci", |i| {
        i.env("K", "v").mount_point("data", "/data", false)
    });
    let script = r#"
        rkt run --net=none $STAGE1 --uuid-file-save="$TMP/uuid" --volume data,kind=empty \
            --set-env=X=y "$PROBE" --annotation=note=x -- --no-check --write /data/f >/dev/null
        uuid=$(cat "$TMP/uuid")
        rkt cat-manifest "$uuid" > "$TMP/pod.json"
        rkt image cat-manifest example.com/validated > "$TMP/image.json"
        rkt export "$uuid" "$TMP/exported.aci"
        rkt image export example.com/validated "$TMP/image.aci"
        "$ACTOOL" validate "$TMP/pod.json" "$TMP/image.json" "$TMP/exported.aci" "$TMP/image.aci"
        echo validated
    "#;
    let mut env = rkt_env(&e);
    env.push(("PROBE", probe.display().to_string()));
    env.push(("ACTOOL", ace.join("actool").display().to_string()));
    let o = in_test_netns(script, &env);
    assert!(
        stdout(&o).contains("validated") && o.status.success(),
        "actool refused what rkt wrote:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
}
