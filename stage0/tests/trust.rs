//! Image signatures end to end with the real `rkt` binary, real Sequoia keys made here and
//! real HTTP servers on 127.0.0.1: `rkt trust` (file, URL, discovery; review refused without
//! a terminal), verified fetches of files, URLs and discovered images, and every refusal
//! (unsigned, untrusted, other prefix, tampered, revoked, SHA-1) with its exit code and an
//! unchanged store.

mod store_util;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use store_util::*;
use trust::openpgp;

use openpgp::cert::prelude::*;
use openpgp::packet::signature::SignatureBuilder;
use openpgp::serialize::{Serialize, SerializeInto};
use openpgp::types::{HashAlgorithm, ReasonForRevocation, SignatureType};
use openpgp::Cert;

const UNSIGNED: i32 = 6;
const BAD_SIGNATURE: i32 = 7;
const UNTRUSTED_KEY: i32 = 8;

fn cert(uid: &str) -> Cert {
    CertBuilder::new()
        .add_userid(uid)
        .add_signing_subkey()
        .generate()
        .expect("generate key")
        .0
}

/// An armored detached signature of `data` by `cert`'s signing subkey.
fn sign_hash(cert: &Cert, data: &[u8], hash: HashAlgorithm) -> Vec<u8> {
    let ka = cert.keys().subkeys().secret().next().expect("subkey");
    let mut kp = ka.key().clone().into_keypair().expect("keypair");
    let sig = SignatureBuilder::new(SignatureType::Binary)
        .set_hash_algo(hash)
        .set_signature_creation_time(SystemTime::now())
        .expect("time")
        .sign_message(&mut kp, data)
        .expect("sign");
    let mut out = Vec::new();
    let mut w =
        openpgp::armor::Writer::new(&mut out, openpgp::armor::Kind::Signature).expect("armor");
    openpgp::Packet::from(sig)
        .serialize(&mut w)
        .expect("serialize");
    w.finalize().expect("finalize");
    out
}

fn sign(cert: &Cert, data: &[u8]) -> Vec<u8> {
    sign_hash(cert, data, HashAlgorithm::SHA256)
}

fn public_armored(cert: &Cert) -> Vec<u8> {
    cert.clone()
        .strip_secret_key_material()
        .armored()
        .to_vec()
        .expect("armor cert")
}

/// A data dir plus private local and system config dirs.
struct Env {
    t: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            t: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn dir(&self) -> PathBuf {
        self.t.path().join("data")
    }
    fn etc(&self) -> PathBuf {
        self.t.path().join("etc")
    }
    fn path(&self) -> &Path {
        self.t.path()
    }
    fn rkt(&self, args: &[&str]) -> Output {
        let lc = format!("--local-config={}", self.etc().display());
        let sc = format!("--system-config={}", self.t.path().join("usr").display());
        let mut all = vec![lc.as_str(), sc.as_str()];
        all.extend_from_slice(args);
        rkt(&self.dir(), &all)
    }
    /// `rkt trust --skip-fingerprint-review PREFIX-OR-ROOT KEYFILE`.
    fn trust(&self, scope: &str, cert: &Cert) {
        let key = self.path().join(format!("{}.asc", cert.fingerprint()));
        std::fs::write(&key, public_armored(cert)).expect("write key");
        let k = key.to_str().expect("utf8");
        ok(&self.rkt(&["trust", scope, "--skip-fingerprint-review", k]));
    }
    /// (index rows, blob files, leftover temp files).
    fn store_state(&self) -> (usize, usize, usize) {
        let tmp = std::fs::read_dir(self.dir().join("cas/tmp"))
            .map(|d| d.count())
            .unwrap_or(0);
        let rows = if self.dir().join("cas").exists() {
            image_rows(&self.dir()).len()
        } else {
            0
        };
        (rows, blobs(&self.dir()).len(), tmp)
    }
    /// Runs a fetch that must fail with `code` and `needle` in stderr, leaving the store as
    /// it was.
    fn refused(&self, args: &[&str], code: i32, needle: &str) -> String {
        let before = self.store_state();
        let o = self.rkt(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: want {needle:?} in: {err}");
        assert_eq!(
            self.store_state(),
            before,
            "store changed by refused {args:?}"
        );
        err
    }
}

#[test]
fn file_images_verified_and_refused() {
    let e = Env::new();
    let alice = cert("Alice <alice@example.com>");
    let mallory = cert("Mallory");
    e.trust("--prefix=example.com/foo", &alice);
    let key_file = e
        .etc()
        .join("trustedkeys/prefix.d/example.com/foo")
        .join(alice.fingerprint().to_hex().to_lowercase());
    assert!(
        key_file.is_file(),
        "rkt trust stores the key in rkt's layout"
    );

    let aci = simple_aci("example.com/foo/bar", "1.0", "hello");
    let img = write_file(e.path(), "bar.aci", &aci);
    let img_s = img.to_str().expect("utf8");
    let asc = e.path().join("bar.aci.asc");

    // No signature beside it.
    let err = e.refused(&["fetch", img_s], UNSIGNED, "no signature found");
    assert!(err.contains("bar.aci.asc"), "{err}");
    // Signed by an untrusted key: names the key and the command to run.
    std::fs::write(&asc, sign(&mallory, &aci)).expect("write");
    let err = e.refused(
        &["fetch", img_s],
        UNTRUSTED_KEY,
        "rkt trust --prefix=example.com/foo/bar",
    );
    let msub = mallory
        .keys()
        .subkeys()
        .next()
        .expect("sub")
        .key()
        .fingerprint();
    assert!(err.contains(&msub.to_hex()), "{err}");
    // Tampered image.
    let mut other = aci.clone();
    let n = other.len();
    other[n - 10] ^= 1;
    std::fs::write(&asc, sign(&alice, &other)).expect("write");
    e.refused(&["fetch", img_s], BAD_SIGNATURE, "altered");
    // SHA-1.
    std::fs::write(&asc, sign_hash(&alice, &aci, HashAlgorithm::SHA1)).expect("write");
    e.refused(&["fetch", img_s], BAD_SIGNATURE, "SHA1");
    // Garbage signature.
    std::fs::write(&asc, b"not a signature").expect("write");
    e.refused(&["fetch", img_s], BAD_SIGNATURE, "not a valid OpenPGP");

    // Good: signed by alice's subkey, trusted for a prefix of the name.
    std::fs::write(&asc, sign(&alice, &aci)).expect("write");
    let o = e.rkt(&["fetch", img_s]);
    let id = ok(&o);
    assert!(id.starts_with("sha256-"), "{id}");
    assert!(stderr(&o).contains("signature verified"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    assert_eq!(e.store_state(), (1, 1, 0));

    // --signature=PATH elsewhere.
    let aci2 = simple_aci("example.com/foo/baz", "1.0", "two");
    let img2 = write_file(e.path(), "baz.aci", &aci2);
    let sig2 = write_file(e.path(), "elsewhere.sig", &sign(&alice, &aci2));
    let sig_flag = format!("--signature={}", sig2.display());
    ok(&e.rkt(&["fetch", &sig_flag, img2.to_str().expect("utf8")]));
    assert_eq!(e.store_state(), (2, 2, 0));

    // A key trusted for another prefix does not cover the name.
    let aci3 = simple_aci("example.org/foo", "1.0", "three");
    let img3 = write_file(e.path(), "three.aci", &aci3);
    write_file(e.path(), "three.aci.asc", &sign(&alice, &aci3));
    e.refused(
        &["fetch", img3.to_str().expect("utf8")],
        UNTRUSTED_KEY,
        "not trusted for example.org/foo",
    );
    // --insecure-options=image fetches it with rkt's warning.
    let o = e.rkt(&[
        "--insecure-options=image",
        "fetch",
        img3.to_str().expect("utf8"),
    ]);
    ok(&o);
    assert!(
        stderr(&o).contains("signature verification has been disabled"),
        "{}",
        stderr(&o)
    );
    let o = e.rkt(&[
        "--insecure-options=all",
        "fetch",
        "--no-store",
        img.to_str().expect("utf8"),
    ]);
    ok(&o);
    assert!(stderr(&o).contains("has been disabled"), "{}", stderr(&o));

    // `image list` says who vouched for each image (an insecure re-import keeps the signer);
    // removing an image leaves its key trusted.
    let asub = alice
        .keys()
        .subkeys()
        .next()
        .expect("sub")
        .key()
        .fingerprint()
        .to_hex();
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&e.rkt(&["image", "list", "--format=json"]))).expect("json");
    let entry = |name: &str| {
        listed
            .as_array()
            .expect("array")
            .iter()
            .find(|x| x["name"].as_str().is_some_and(|n| n.starts_with(name)))
            .cloned()
            .expect("listed")
    };
    let bar = entry("example.com/foo/bar");
    assert_eq!(bar["verified"], true, "{bar}");
    assert!(
        bar["signed_by"]
            .as_str()
            .is_some_and(|k| k.eq_ignore_ascii_case(&asub)),
        "{bar} (key {asub})"
    );
    let three = entry("example.org/foo");
    assert_eq!(three["verified"], false, "{three}");
    assert!(three.get("signed_by").is_none(), "{three}");
    let table = ok(&e.rkt(&["image", "list", "--fields=name,signedby", "--no-legend"]));
    assert!(
        table.lines().any(|l| l.starts_with("example.com/foo/bar")
            && l.to_ascii_uppercase().contains(&asub.to_ascii_uppercase())),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("example.org/foo") && l.trim_end().ends_with('-')),
        "{table}"
    );
    ok(&e.rkt(&["image", "rm", &id]));
    assert!(key_file.is_file(), "image rm must not remove trust");
}

#[test]
fn revoked_key_and_root_key() {
    let e = Env::new();
    let c = cert("soon revoked");
    let aci = simple_aci("example.com/rev", "1.0", "r");
    let img = write_file(e.path(), "rev.aci", &aci);
    write_file(e.path(), "rev.aci.asc", &sign(&c, &aci));
    let mut kp = c
        .primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .expect("secret")
        .into_keypair()
        .expect("keypair");
    let rev = c
        .revoke(&mut kp, ReasonForRevocation::KeyCompromised, b"leaked")
        .expect("revoke");
    let revoked = c.clone().insert_packets(rev).expect("insert").0;
    e.trust("--root", &revoked);
    e.refused(
        &["fetch", img.to_str().expect("utf8")],
        BAD_SIGNATURE,
        "revoked",
    );
    // A root key (not revoked) trusts any name.
    let e2 = Env::new();
    e2.trust("--root", &c);
    ok(&e2.rkt(&["fetch", img.to_str().expect("utf8")]));
}

/// Serves `/img.aci`, `/img.aci.asc` (when signed), `/key.asc`, and discovery pages for
/// `localhost/team` announcing images and keys; records request paths in order.
fn server(
    aci: Vec<u8>,
    sig: Option<Vec<u8>>,
    key: Vec<u8>,
) -> (TestServer, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let port = Arc::new(AtomicUsize::new(0));
    let p = port.clone();
    let srv = TestServer::start(move |req| {
        l.lock()
            .expect("log")
            .push(format!("{} {}", req.method, req.url));
        let port = p.load(Ordering::SeqCst);
        let u = req.url.as_str();
        if u == "/team?ac-discovery=1" || u == "/team/app?ac-discovery=1" {
            return Reply::ok(
                format!(
                    "<html><head>\n<meta name=\"ac-discovery\" content=\"localhost/team http://127.0.0.1:{port}/images/{{name}}-{{version}}.{{ext}}\">\n\
                     <meta name=\"ac-discovery-pubkeys\" content=\"localhost/team http://127.0.0.1:{port}/key.asc\">\n</head></html>"
                )
                .into_bytes(),
            )
            .header("Content-Type", "text/html");
        }
        match u {
            "/img.aci" | "/images/localhost/team/app-1.0.aci" => Reply::ok(aci.clone()).download(),
            "/img.aci.asc" | "/images/localhost/team/app-1.0.aci.asc" => match &sig {
                Some(s) => Reply::ok(s.clone()),
                None => Reply::status(404),
            },
            "/key.asc" => Reply::ok(key.clone()),
            _ => Reply::status(404),
        }
    });
    port.store(usize::from(srv.port), Ordering::SeqCst);
    (srv, log)
}

#[test]
fn http_images_signature_first() {
    let e = Env::new();
    let c = cert("web");
    e.trust("--prefix=example.com", &c);
    let aci = simple_aci("example.com/web", "1.0", "w");
    let (srv, log) = server(aci.clone(), Some(sign(&c, &aci)), public_armored(&c));
    let url = srv.url("/img.aci");
    let o = e.rkt(&["--insecure-options=http", "fetch", &url]);
    ok(&o);
    assert!(stderr(&o).contains("signature verified"), "{}", stderr(&o));
    let seen = log.lock().expect("log").clone();
    assert_eq!(
        seen,
        vec!["GET /img.aci.asc", "GET /img.aci"],
        "signature fetched first"
    );

    // Unsigned on the server: refused before the image is downloaded.
    let e2 = Env::new();
    e2.trust("--prefix=example.com", &c);
    let (srv2, log2) = server(aci.clone(), None, Vec::new());
    let url2 = srv2.url("/img.aci");
    e2.refused(
        &["--insecure-options=http", "fetch", &url2],
        UNSIGNED,
        "img.aci.asc",
    );
    let seen = log2.lock().expect("log").clone();
    assert!(
        !seen.contains(&"GET /img.aci".to_string()),
        "image not downloaded without a signature: {seen:?}"
    );
    // Tampered on the server.
    let (srv3, _) = server(aci.clone(), Some(sign(&c, b"other bytes")), Vec::new());
    let url3 = srv3.url("/img.aci");
    e2.refused(
        &["--insecure-options=http", "fetch", &url3],
        BAD_SIGNATURE,
        "bad signature",
    );
}

#[test]
fn trust_by_url_and_discovery_then_discovered_fetch() {
    let c = cert("Team <team@localhost>");
    let aci = simple_aci("localhost/team/app", "1.0", "d");
    let (srv, _) = server(aci.clone(), Some(sign(&c, &aci)), public_armored(&c));
    let port = srv.port.to_string();

    // By URL: plain http needs --insecure-allow-http.
    let e = Env::new();
    let key_url = srv.url("/key.asc");
    let o = e.rkt(&[
        "trust",
        "--prefix=localhost/team",
        "--skip-fingerprint-review",
        &key_url,
    ]);
    assert!(
        !o.status.success(),
        "http key without --insecure-allow-http"
    );
    assert!(
        stderr(&o).contains("--insecure-allow-http"),
        "{}",
        stderr(&o)
    );
    let o = e.rkt(&[
        "trust",
        "--prefix=localhost/team",
        "--skip-fingerprint-review",
        "--insecure-allow-http",
        &key_url,
    ]);
    ok(&o);
    let err = stderr(&o);
    assert!(err.contains(&c.fingerprint().to_spaced_hex()), "{err}");
    assert!(
        err.contains("Added key for prefix \"localhost/team\""),
        "{err}"
    );

    // By discovery (no key argument).
    let e = Env::new();
    let mut cmd = rkt_cmd(
        &e.dir(),
        &[
            &format!("--local-config={}", e.etc().display()),
            "trust",
            "--prefix=localhost/team/app",
            "--skip-fingerprint-review",
            "--insecure-allow-http",
        ],
    );
    cmd.env("RKT_DISCOVERY_PORT", &port);
    let o = cmd.output().expect("run");
    ok(&o);
    let stored = e
        .etc()
        .join("trustedkeys/prefix.d/localhost/team/app")
        .join(c.fingerprint().to_hex().to_lowercase());
    assert!(stored.is_file(), "{}", stderr(&o));

    // The discovered image verifies with the discovered signature.
    let mut cmd = rkt_cmd(
        &e.dir(),
        &[
            &format!("--local-config={}", e.etc().display()),
            "--insecure-options=http",
            "fetch",
            "localhost/team/app:1.0",
        ],
    );
    cmd.env("RKT_DISCOVERY_PORT", &port);
    let o = cmd.output().expect("run");
    ok(&o);
    assert!(stderr(&o).contains("signature verified"), "{}", stderr(&o));
}

#[test]
fn trust_review_and_usage() {
    let e = Env::new();
    let c = cert("x");
    let key = write_file(e.path(), "k.asc", &public_armored(&c));
    let k = key.to_str().expect("utf8");
    // stdin is not a terminal (the helper closes it) and review is not skipped: refused.
    let o = e.rkt(&["trust", "--prefix=example.com", k]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--skip-fingerprint-review"),
        "{}",
        stderr(&o)
    );
    assert!(!e.etc().join("trustedkeys").exists(), "nothing stored");
    // Usage errors.
    for args in [
        vec!["trust", k],
        vec!["trust", "--root"],
        vec!["trust", "--prefix=Bad Prefix", k],
    ] {
        let o = e.rkt(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    // Several certificates in one file are refused.
    let mut two = public_armored(&c);
    two.extend(public_armored(&cert("y")));
    let both = write_file(e.path(), "two.asc", &two);
    let o = e.rkt(&[
        "trust",
        "--prefix=example.com",
        "--skip-fingerprint-review",
        both.to_str().expect("utf8"),
    ]);
    assert!(!o.status.success());
    // Modes as rkt: 0644 files in 0755 dirs.
    e.trust("--prefix=example.com/a", &c);
    use std::os::unix::fs::PermissionsExt;
    let f = e
        .etc()
        .join("trustedkeys/prefix.d/example.com/a")
        .join(c.fingerprint().to_hex().to_lowercase());
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&f), 0o644);
    assert_eq!(mode(f.parent().expect("dir")), 0o755);
    // A user ID holding terminal sequences that would move the cursor up and rewrite the
    // fingerprint line shown for review: printed escaped.
    let forged = cert("\x1b[2A\r\x1b[2KGPG key fingerprint is: 0000 1111\x1b]0;x\x07");
    let key = write_file(e.path(), "forged.asc", &public_armored(&forged));
    let o = e.rkt(&[
        "trust",
        "--prefix=example.com/f",
        "--skip-fingerprint-review",
        key.to_str().expect("utf8"),
    ]);
    ok(&o);
    let err = stderr(&o);
    assert!(!err.contains('\x1b') && !err.contains('\x07'), "{err:?}");
    assert!(err.contains("\\x1b[2A"), "{err}");
}

#[test]
fn nomad_trust_command() {
    let e = Env::new();
    // Nomad runs exactly: rkt trust --skip-fingerprint-review=true --prefix=<P> --debug=false
    // (no key: discovery). Go-style `=BOOL` flags come from the CLI-contract work.
    let probe = e.rkt(&["--debug=false", "version"]);
    if !probe.status.success() {
        eprintln!("SKIP: nomad_trust_command: this build does not take Go-style --flag=BOOL yet");
        return;
    }
    let c = cert("nomad");
    let aci = simple_aci("localhost/team/app", "1.0", "n");
    let (srv, _) = server(aci, None, public_armored(&c));
    let mut cmd = rkt_cmd(
        &e.dir(),
        &[
            &format!("--local-config={}", e.etc().display()),
            "--insecure-options=http",
            "trust",
            "--skip-fingerprint-review=true",
            "--prefix=localhost/team",
            "--insecure-allow-http",
            "--debug=false",
        ],
    );
    cmd.env("RKT_DISCOVERY_PORT", srv.port.to_string());
    ok(&cmd.output().expect("run"));
    assert!(e
        .etc()
        .join("trustedkeys/prefix.d/localhost/team")
        .join(c.fingerprint().to_hex().to_lowercase())
        .is_file());
}

#[test]
fn killed_mid_fetch_leaves_nothing_visible() {
    let e = Env::new();
    let c = cert("slow");
    e.trust("--prefix=example.com", &c);
    // 1 MiB of incompressible (xorshift) content, served slowly: 16 KiB every 50 ms (~3 s).
    let m = manifest("example.com/slow", &[("version", "1.0")], &[]);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let big: Vec<u8> = (0..(1u32 << 20))
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let aci = build_aci(&m, &[("data", &big)], true);
    let sig = sign(&c, &aci);
    let body = aci.clone();
    let srv = TestServer::start(move |req| match req.url.as_str() {
        "/slow.aci.asc" | "/fast.aci.asc" => Reply::ok(sig.clone()),
        "/fast.aci" => Reply::ok(body.clone()).download(),
        "/slow.aci" => {
            let mut r = Reply::ok(body.clone()).download();
            r.slow = Some((16 << 10, std::time::Duration::from_millis(50)));
            r
        }
        _ => Reply::status(404),
    });
    let url = srv.url("/slow.aci");
    let lc = format!("--local-config={}", e.etc().display());
    let mut child = rkt_cmd(&e.dir(), &[&lc, "--insecure-options=http", "fetch", &url])
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_millis(800));
    child.kill().expect("kill");
    let _ = child.wait();
    let (rows, blobs, _tmp) = e.store_state();
    assert_eq!(
        (rows, blobs),
        (0, 0),
        "nothing visible after a killed fetch"
    );
    // The next fetch completes, verifies, and leaves no temporary files.
    ok(&e.rkt(&["--insecure-options=http", "fetch", &srv.url("/fast.aci")]));
    assert_eq!(e.store_state(), (1, 1, 0));
}
