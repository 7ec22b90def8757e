//! End-to-end: an OCI image made at test time with Debian's umoci and skopeo
//! (`tests/fixtures/oci-image.sh`: two layers, a whiteout, an opaque directory, a user by
//! name, entrypoint + cmd) imports from `oci:`, `oci-archive:` and `docker-archive:` to one ID
//! and runs under stage1-ns (and stage1-kvm) with the expected output, user and working
//! directory.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use rkt_tests::{skip, stderr, stdout, workspace_root, E2e};

/// What the fixture's app prints.
const WANT: &[&str] = &[
    "args:one two\n",
    "uid=1000 gid=1001\n",
    "cwd=/work\n",
    "opq=new.txt \n",
    "keep=a.txt b.txt \n",
    "gone=absent\n",
    "greeting=hello\n",
];

/// Builds the fixture under the test's scratch directory, or prints SKIP and returns None.
fn fixture(e: &E2e, test: &str) -> Option<PathBuf> {
    let have = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    for tool in ["umoci", "skopeo"] {
        if !have(tool) {
            skip(
                test,
                &format!("{tool} is not installed (ci/deps.sh installs it)"),
            );
            return None;
        }
    }
    if !std::path::Path::new("/bin/busybox").is_file() {
        skip(
            test,
            "no static /bin/busybox (busybox-static; ci/deps.sh installs it)",
        );
        return None;
    }
    let out = e.path("fixture");
    let o = Command::new("bash")
        .arg(workspace_root().join("tests/fixtures/oci-image.sh"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "fixture: {}", stderr(&o));
    Some(out)
}

fn check_output(o: &std::process::Output) {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    let out = stdout(o);
    for line in WANT {
        assert!(out.contains(line), "want {line:?} in {out:?}");
    }
}

#[test]
fn ns_oci_forms_share_an_id_and_run() {
    let test = "ns_oci_forms_share_an_id_and_run";
    let Some(e) = E2e::require(test) else {
        return;
    };
    let Some(fx) = fixture(&e, test) else {
        return;
    };
    let forms = [
        format!("oci:{}:1.0", fx.join("oci-test").display()),
        format!("oci-archive:{}:1.0", fx.join("oci-test.tar").display()),
        format!("docker-archive:{}", fx.join("docker.tar").display()),
    ];
    let ids: Vec<String> = forms
        .iter()
        .map(|f| {
            let o = e.run(&["fetch", f.as_str()]);
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            stdout(&o).trim().to_string()
        })
        .collect();
    assert!(ids[0].starts_with("sha256-"), "{ids:?}");
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    let o = e.run(&["image", "list", "--no-legend", "--fields=name"]);
    assert_eq!(stdout(&o).trim(), "oci-test:1.0");
    for f in [&forms[2], &"oci-test:1.0".to_string()] {
        let o = e.run(&["run", &e.stage1_flag(), f.as_str()]);
        check_output(&o);
    }
}

#[test]
fn kvm_oci_archive_runs() {
    let test = "kvm_oci_archive_runs";
    let Some(e) = E2e::require_kvm(test) else {
        return;
    };
    let Some(fx) = fixture(&e, test) else {
        return;
    };
    let f = format!("docker-archive:{}", fx.join("docker.tar").display());
    let o = e.run(&["run", &e.stage1_flag(), f.as_str()]);
    check_output(&o);
}
