//! rkt's command-line contract for scripts and orchestrators: Go-style booleans on every
//! command, `rkt version` as Nomad's driver parses it.

mod store_util;

use store_util::*;

/// Nomad's fingerprint: `rkt [vV]ersion[:]? (\d[.\d]+)`, at least 1.27.0.
#[test]
fn version_satisfies_nomad_fingerprint() {
    let t = tempfile::tempdir().expect("tempdir");
    let out = ok(&rkt(t.path(), &["--debug=false", "version"]));
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("rkt Version: "))
        .expect("rkt Version line");
    let v: Vec<u32> = line
        .split('.')
        .map(|x| x.parse().expect("number"))
        .collect();
    assert!(v >= vec![1, 27, 0], "{line}");
    assert!(out.lines().any(|l| l == "appc Version: 0.8.11"), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("rkt-rs Version: ")),
        "{out}"
    );
}

/// Every boolean flag takes `--flag`, `--flag=<strconv.ParseBool value>`, and refuses
/// anything else with a usage error naming the value.
#[test]
fn go_style_booleans_everywhere() {
    let t = tempfile::tempdir().expect("tempdir");
    let d = t.path();
    for v in [
        "", "=true", "=false", "=1", "=0", "=t", "=f", "=TRUE", "=FALSE", "=True", "=F",
    ] {
        for args in [
            vec![format!("--debug{v}"), "version".into()],
            vec![
                "list".into(),
                format!("--full{v}"),
                format!("--no-legend{v}"),
            ],
            vec!["gc".into(), format!("--mark-only{v}")],
            vec!["image".into(), "list".into(), format!("--no-legend{v}")],
            vec![format!("--trust-keys-from-https{v}"), "list".into()],
        ] {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let o = rkt(d, &a);
            assert!(o.status.success(), "{a:?}: {}", stderr(&o));
        }
    }
    // `--no-legend=false` keeps the legend, `=1` drops it.
    assert!(ok(&rkt(d, &["list", "--no-legend=false"])).starts_with("UUID"));
    assert_eq!(ok(&rkt(d, &["list", "--no-legend=1"])), "");
    for bad in ["=yes", "=no", "=", "=2", "=on"] {
        let o = rkt(d, &[&format!("--debug{bad}"), "version"]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(stderr(&o).contains("invalid boolean"), "{}", stderr(&o));
    }
    // Inside run/prepare's hand-parsed flags too.
    let o = rkt(d, &["prepare", "--no-overlay=maybe", "x.aci"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--no-overlay"), "{}", stderr(&o));
}

/// `run-prepared` takes rkt 1.30's pod-level flags (Nomad passes `--dns`, `--dns-search`,
/// `--net`, `--debug=B`); unknown ones are usage errors. The pod does not exist, so a
/// parsed command line ends with a pod-state error, not a usage error.
#[test]
fn run_prepared_accepts_pod_flags() {
    let t = tempfile::tempdir().expect("tempdir");
    let o = rkt(
        t.path(),
        &[
            "run-prepared",
            "--dns=10.0.0.1",
            "--dns-search=example.com",
            "--dns-opt=ndots:1",
            "--dns-domain=example.com",
            "--hosts-entry=10.0.0.2=db",
            "--mds-register=false",
            "--ipc=auto",
            "--interactive=false",
            "--hostname=web",
            "--net=none",
            "--debug=false",
            "0123abcd",
        ],
    );
    assert_ne!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!stderr(&o).contains("unknown flag"), "{}", stderr(&o));
    let o = rkt(t.path(), &["run-prepared", "--exec=/bin/sh", "0123abcd"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--exec"), "{}", stderr(&o));
}

/// Writes `<dir>/auth.d/<name>` (an `auth` of type basic for `domains`).
fn basic_auth_config(dir: &std::path::Path, domains: &[&str], user: &str, password: &str) {
    let d = dir.join("auth.d");
    std::fs::create_dir_all(&d).expect("mkdir");
    let body = serde_json::json!({
        "rktKind": "auth", "rktVersion": "v1", "domains": domains, "type": "basic",
        "credentials": {"user": user, "password": password},
    });
    std::fs::write(d.join("test.json"), body.to_string()).expect("write");
}

/// `auth.d` basic credentials reach the host they name as an `Authorization` header, and
/// never another host, not even through a redirect.
#[test]
fn fetch_sends_configured_basic_auth_to_its_host_only() {
    use std::sync::{Arc, Mutex};
    let aci = simple_aci("example.com/private", "1.0", "secret");
    // "localhost" is another host than "127.0.0.1" to the client.
    let other_seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let seen = other_seen.clone();
    let body = aci.clone();
    let other = TestServer::start(move |req| {
        seen.lock()
            .expect("lock")
            .push(req.header("authorization").map(str::to_string));
        Reply::ok(body.clone()).download()
    });
    let other_url = format!("http://localhost:{}/private.aci", other.port);
    let srv = TestServer::start(move |req| {
        // base64("alice:s3cret")
        if req.header("authorization") != Some("Basic YWxpY2U6czNjcmV0") {
            return Reply::status(401);
        }
        match req.url.as_str() {
            "/private.aci" => Reply::ok(aci.clone()).download(),
            "/moved.aci" => Reply::status(302).header("Location", &other_url),
            _ => Reply::status(404),
        }
    });
    let t = tempfile::tempdir().expect("tempdir");
    let (sys, local) = (t.path().join("sys"), t.path().join("local"));
    basic_auth_config(&local, &["127.0.0.1"], "alice", "s3cret");
    let cfg = [
        format!("--system-config={}", sys.display()),
        format!("--local-config={}", local.display()),
    ];
    let fetch = |dir: &str, cfg: &[&str], url: &str| {
        let mut a = vec!["--insecure-options=http,image"];
        a.extend_from_slice(cfg);
        a.extend(["fetch", "--no-store", url]);
        rkt(&t.path().join(dir), &a)
    };
    let with: Vec<&str> = cfg.iter().map(String::as_str).collect();
    let empty = format!("--local-config={}", t.path().join("none").display());
    let without = [with[0], empty.as_str()];
    let o = fetch("a", &without, &srv.url("/private.aci"));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("401"), "{}", stderr(&o));
    let o = fetch("a", &with, &srv.url("/private.aci"));
    assert!(ok(&o).starts_with("sha256-"));
    // The redirect target is another host: it gets no credentials.
    let o = fetch("b", &with, &srv.url("/moved.aci"));
    assert!(ok(&o).starts_with("sha256-"));
    // A host the configuration does not name gets none either.
    let o = fetch(
        "c",
        &with,
        &other.url("/private.aci").replace("127.0.0.1", "localhost"),
    );
    assert!(ok(&o).starts_with("sha256-"));
    let seen = other_seen.lock().expect("lock").clone();
    assert_eq!(seen, vec![None, None], "credentials leaked to another host");
}

/// `rkt config` prints the merged configuration as rkt 1.30 did; a malformed file is an
/// error naming it.
#[test]
fn config_prints_merged_stage0_configuration() {
    let t = tempfile::tempdir().expect("tempdir");
    let (sys, local) = (t.path().join("sys"), t.path().join("local"));
    basic_auth_config(&sys, &["example.com"], "u", "p");
    std::fs::create_dir_all(local.join("paths.d")).expect("mkdir");
    std::fs::write(
        local.join("paths.d/paths.json"),
        r#"{"rktKind":"paths","rktVersion":"v1","data":"/srv/rkt-data"}"#,
    )
    .expect("write");
    let cmd = |extra: &[&str]| {
        let mut c = std::process::Command::new(rkt_bin());
        c.arg(format!("--system-config={}", sys.display()))
            .arg(format!("--local-config={}", local.display()))
            .arg("config")
            .args(extra);
        c.output().expect("rkt")
    };
    let o = cmd(&["--pretty-print=false"]);
    let out = ok(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let s0 = v["stage0"].as_array().expect("stage0");
    assert_eq!(s0[0]["rktKind"], "auth");
    assert_eq!(s0[0]["domains"][0], "example.com");
    assert_eq!(s0[0]["type"], "basic");
    assert_eq!(s0[0]["credentials"]["user"], "u");
    // paths.d's data directory is the default `--dir`.
    assert_eq!(s0[1]["rktKind"], "paths");
    assert_eq!(s0[1]["data"], "/srv/rkt-data");
    assert_eq!(s0[2]["rktKind"], "stage1");
    assert!(ok(&cmd(&[])).lines().count() > 1, "pretty by default");
    std::fs::write(local.join("paths.d/broken.json"), "{").expect("write");
    let o = cmd(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("broken.json"), "{}", stderr(&o));
}

/// `rkt completion` (bash by default, as rkt's): the script is valid bash, and bash, given it,
/// completes commands, a deferred subcommand's flags and the hand-parsed flags of `run`; the
/// other shells' scripts are generated too.
#[test]
fn completion_completes_commands_and_flags_in_bash() {
    let t = tempfile::tempdir().expect("tempdir");
    let script = ok(&rkt(t.path(), &["completion"]));
    assert_eq!(script, ok(&rkt(t.path(), &["completion", "bash"])));
    let file = t.path().join("rkt.bash");
    std::fs::write(&file, &script).expect("write script");
    let complete = |words: &[&str]| -> Vec<String> {
        let line = format!(
            "source {}; COMP_WORDS=({}); COMP_CWORD={}; _rkt rkt {} {}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display(),
            words.join(" "),
            words.len() - 1,
            words[words.len() - 1],
            words[words.len() - 2],
        );
        let o = std::process::Command::new("bash")
            .args(["-c", &line])
            .output()
            .expect("bash");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let c = complete(&["rkt", "ru"]);
    assert!(
        c.contains(&"run".into()) && c.contains(&"run-prepared".into()),
        "{c:?}"
    );
    let c = complete(&["rkt", "list", "--no-l"]);
    assert_eq!(c, ["--no-legend"], "{c:?}");
    let c = complete(&["rkt", "run", "--pod-m"]);
    assert_eq!(c, ["--pod-manifest"], "{c:?}");
    let c = complete(&["rkt", "prepare", "--stage1-f"]);
    assert_eq!(c, ["--stage1-from-dir"], "{c:?}");
    for shell in ["zsh", "fish"] {
        let s = ok(&rkt(t.path(), &["completion", shell]));
        assert!(s.contains("pod-manifest"), "{shell}: {s}");
    }
    let o = rkt(t.path(), &["completion", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
}
