//! Attacks on the fetch path by hostile images and network peers (docs/security.md): each
//! test plays the attacker against the real `rkt` binary, with every peer a real HTTP server
//! on 127.0.0.1.

mod store_util;

use appc::schema::{Dependency, Label};
use appc::AcIdentifier;
use store_util::*;

/// Terminal escapes in an image's `version` label and in a dependency's labels never reach
/// stderr raw: not in the "not verified" warning, nor in the dependency warning.
#[test]
fn image_labels_are_escaped_on_stderr() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let evil = "1\u{1b}]0;pwned\u{7}\u{1b}[2K\rrkt: signature verified: \u{9b}2J";
    let mut m = manifest(
        "example.com/evil",
        &[("version", evil), ("os", "linux"), ("arch", "amd64")],
        &[],
    );
    // A dependency whose discovery fails (nothing answers https on this port).
    let srv = TestServer::start(|_| Reply::status(404));
    m.dependencies = vec![Dependency {
        image_name: AcIdentifier::new("127.0.0.1/dep").expect("dep name"),
        image_id: None,
        labels: vec![Label {
            name: AcIdentifier::new("version").expect("label"),
            value: evil.to_string(),
        }],
        size: None,
    }];
    let f = write_file(
        t.path(),
        "evil.aci",
        &build_aci(&m, &[("etc/x", b"x")], true),
    );
    let o = rkt_cmd(
        &dir,
        &[
            "--insecure-options=image",
            "fetch",
            f.to_str().expect("utf8"),
        ],
    )
    .env("RKT_DISCOVERY_PORT", srv.port.to_string())
    .output()
    .expect("rkt");
    let id = ok(&o);
    assert!(id.starts_with("sha256-"), "{id}");
    let err = &o.stderr;
    assert!(
        !err.contains(&0x1b) && !err.contains(&0x07) && !err.contains(&b'\r'),
        "{:?}",
        stderr(&o)
    );
    // C1 CSI (U+009B) in UTF-8.
    assert!(
        !err.windows(2).any(|w| w == [0xc2, 0x9b]),
        "{:?}",
        stderr(&o)
    );
    let s = stderr(&o);
    assert!(s.contains("example.com/evil:1\\x1b]0;pwned\\x07"), "{s}");
    assert!(
        s.contains("cannot fetch dependency 127.0.0.1/dep,version=1\\x1b]0;pwned"),
        "{s}"
    );
}
