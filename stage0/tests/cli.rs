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
