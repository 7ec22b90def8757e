//! Attacks on the fetch path by hostile images and network peers (docs/security.md): each
//! test plays the attacker against the real `rkt` binary, with every peer a real HTTP server
//! on 127.0.0.1.

mod store_util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

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

/// Serves each plain-HTTP connection to 127.0.0.1:<port> with `serve` (given the request
/// head); a connection opening with a TLS handshake is counted in the returned counter and
/// closed at once, as an http-only server would. Returns the port and that counter.
fn raw_server(
    serve: impl Fn(&mut TcpStream, &str) + Send + Sync + 'static,
) -> (u16, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let serve = Arc::new(serve);
    let tls = Arc::new(AtomicU64::new(0));
    let tls2 = tls.clone();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let (serve, tls) = (serve.clone(), tls2.clone());
            thread::spawn(move || {
                let mut first = [0u8; 1];
                if c.peek(&mut first).is_err() {
                    return;
                }
                if first[0] == 0x16 {
                    tls.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match c.read(&mut b) {
                        Ok(1) => head.push(b[0]),
                        _ => return,
                    }
                }
                serve(&mut c, &String::from_utf8_lossy(&head));
            });
        }
    });
    (port, tls)
}

/// Runs `cmd`, killing it after `limit`; returns its output and how long it ran.
fn run_with_watchdog(mut cmd: Command, limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rkt");
    while child.try_wait().expect("wait").is_none() && start.elapsed() < limit {
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let o = child.wait_with_output().expect("output");
    (o, start.elapsed())
}

/// A discovery page that never ends: rkt stops reading at its page limit (256 KiB) and
/// says so, instead of buffering until memory runs out.
#[test]
fn endless_discovery_page_is_cut_off() {
    let sent = Arc::new(AtomicU64::new(0));
    let s = sent.clone();
    let (port, _) = raw_server(move |c, _| {
        if c.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n<html><head>",
        )
        .is_err()
        {
            return;
        }
        let filler = vec![b'x'; 64 << 10];
        while c.write_all(&filler).is_ok() {
            s.fetch_add(filler.len() as u64, Ordering::SeqCst);
        }
    });
    let t = tempfile::tempdir().expect("tempdir");
    let mut cmd = rkt_cmd(
        &t.path().join("store"),
        &["--insecure-options=http,image", "fetch", "127.0.0.1/app"],
    );
    cmd.env("RKT_DISCOVERY_PORT", port.to_string());
    let (o, took) = run_with_watchdog(cmd, Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(3), "took {took:?}: {}", stderr(&o));
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(
        stderr(&o).contains("page larger than 262144 bytes"),
        "{}",
        stderr(&o)
    );
    // The server could only push what fits in the socket buffers past the limit.
    let n = sent.load(Ordering::SeqCst);
    assert!(n < 64 << 20, "the server sent {n} bytes");
}

/// A server that announces a huge body and then drips one byte every half read timeout:
/// each read succeeds in time, but the fetch fails for lack of progress instead of hanging.
#[test]
fn dripping_server_fails_the_fetch() {
    let (port, _) = raw_server(|c, _| {
        if c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n")
            .is_err()
        {
            return;
        }
        while c.write_all(b"\x1f").is_ok() {
            thread::sleep(Duration::from_millis(500));
        }
    });
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let url = format!("http://127.0.0.1:{port}/x.aci");
    let mut cmd = rkt_cmd(&dir, &["--insecure-options=http,image", "fetch", &url]);
    cmd.env("RKT_HTTP_READ_TIMEOUT", "1");
    let (o, took) = run_with_watchdog(cmd, Duration::from_secs(30));
    assert_eq!(o.status.code(), Some(1), "took {took:?}: {}", stderr(&o));
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(stderr(&o).contains("too slow"), "{}", stderr(&o));
    assert!(image_rows(&dir).is_empty());
}

/// A dependency on `name` pinned to an image ID that no image has.
fn bogus_dependency(name: &str) -> Dependency {
    Dependency {
        image_name: AcIdentifier::new(name).expect("dep name"),
        image_id: Some(format!("sha512-{}", "0".repeat(128))),
        labels: Vec::new(),
        size: None,
    }
}

/// Image A and the image discovery serves for `localhost/b` both list `localhost/b` twice,
/// pinned to an ID nothing has: every fetch of b used to recurse into b's own list (2^32
/// fetches). Now each distinct dependency is fetched once, a fetched image with another ID
/// is not walked, and the fetch ends with a warning.
#[test]
fn repeated_unmatchable_dependencies_are_fetched_once() {
    let deps = vec![
        bogus_dependency("localhost/b"),
        bogus_dependency("localhost/b"),
    ];
    let mut mb = manifest("localhost/b", &[("os", "linux"), ("arch", "amd64")], &[]);
    mb.dependencies = deps.clone();
    let b = build_aci(&mb, &[("etc/b", b"b")], true);
    let port = Arc::new(AtomicU64::new(0));
    let p = port.clone();
    let srv = TestServer::start(move |req| match req.url.as_str() {
        "/b?ac-discovery=1" => Reply::ok(
            format!(
                "<meta name=\"ac-discovery\" content=\"localhost/b http://127.0.0.1:{}/b.aci\">",
                p.load(Ordering::SeqCst)
            )
            .into_bytes(),
        ),
        "/b.aci" => Reply::ok(b.clone()).download(),
        _ => Reply::status(404),
    });
    port.store(u64::from(srv.port), Ordering::SeqCst);
    let t = tempfile::tempdir().expect("tempdir");
    let mut ma = manifest("example.com/a", &[("os", "linux"), ("arch", "amd64")], &[]);
    ma.dependencies = deps;
    let a = write_file(t.path(), "a.aci", &build_aci(&ma, &[("etc/a", b"a")], true));
    let mut cmd = rkt_cmd(
        &t.path().join("store"),
        &[
            "--insecure-options=http,image",
            "fetch",
            a.to_str().expect("utf8"),
        ],
    );
    cmd.env("RKT_DISCOVERY_PORT", srv.port.to_string());
    let (o, took) = run_with_watchdog(cmd, Duration::from_secs(60));
    let id = ok(&o);
    assert!(id.starts_with("sha256-"), "took {took:?}: {id}");
    // One discovery page and one download of b.
    assert_eq!(srv.request_count(), 2, "{}", stderr(&o));
    assert_eq!(srv.download_count(), 1);
    assert!(
        stderr(&o).contains(
            "cannot fetch dependency localhost/b of example.com/a: discovery gave image sha512-"
        ),
        "{}",
        stderr(&o)
    );
}

/// A `dockerAuth` file for `registries` (user `alice`, password `s3cret`) in a new config
/// directory under `dir`; returns the `--local-config` flag.
fn docker_auth(dir: &std::path::Path, registries: &[&str]) -> String {
    let conf = dir.join("conf");
    std::fs::create_dir_all(conf.join("auth.d")).expect("auth.d");
    std::fs::write(
        conf.join("auth.d/registry.json"),
        format!(
            r#"{{"rktKind": "dockerAuth", "rktVersion": "v1", "registries": {registries:?}, "credentials": {{"user": "alice", "password": "s3cret"}}}}"#
        ),
    )
    .expect("write auth");
    format!("--local-config={}", conf.display())
}

/// The `Authorization` header of an HTTP request head, if any.
fn authorization(head: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("authorization")
            .then(|| v.trim().to_string())
    })
}

/// Registry A's Bearer challenge names a token service on server B (another host:port): B
/// must not receive A's `dockerAuth` credentials, and the error names B. Listing B in the same
/// `dockerAuth` entry sends them.
#[test]
fn bearer_realm_elsewhere_gets_no_credentials() {
    let seen: Arc<std::sync::Mutex<Vec<Option<String>>>> = Arc::default();
    let s = seen.clone();
    let (b, _) = raw_server(move |c, head| {
        s.lock().expect("lock").push(authorization(head));
        let _ = c
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    });
    let (a, _) = raw_server(move |c, _| {
        let _ = c.write_all(
            format!(
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{b}/token\",service=\"reg\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
    });
    let t = tempfile::tempdir().expect("tempdir");
    let registry = format!("127.0.0.1:{a}");
    let url = format!("docker://{registry}/team/x");
    let conf = docker_auth(t.path(), &[&registry]);
    let store = t.path().join("store");
    let o = rkt(
        &store,
        &[&conf, "--insecure-options=image,http", "fetch", &url],
    );
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    let got = seen.lock().expect("lock").clone();
    assert_eq!(got, vec![None], "B saw: {got:?}; {}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "its token service 127.0.0.1:{b} is not the registry's host"
        )),
        "{err}"
    );
    // The same entry lists B: B gets them (over http, with --insecure-options=http, warned).
    let conf = docker_auth(t.path(), &[&registry, &format!("127.0.0.1:{b}")]);
    let o = rkt(
        &store,
        &[&conf, "--insecure-options=image,http", "fetch", &url],
    );
    assert_ne!(o.status.code(), Some(0));
    let got = seen.lock().expect("lock").clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[1].as_deref().is_some_and(|a| a.starts_with("Basic ")),
        "{got:?}"
    );
    assert!(stderr(&o).contains("over plain http"), "{}", stderr(&o));
}

/// `--insecure-options=http` no longer means "plain http only": rkt opens https first and
/// falls back to http only because the handshake fails; the registry's Basic challenge is
/// then answered over http (the user allowed it), with a warning.
#[test]
fn docker_tries_https_before_plain_http() {
    let seen: Arc<std::sync::Mutex<Vec<Option<String>>>> = Arc::default();
    let s = seen.clone();
    let (a, tls) = raw_server(move |c, head| {
        s.lock().expect("lock").push(authorization(head));
        let _ = c.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    });
    let t = tempfile::tempdir().expect("tempdir");
    let registry = format!("127.0.0.1:{a}");
    let conf = docker_auth(t.path(), &[&registry]);
    let url = format!("docker://{registry}/team/x");
    let store = t.path().join("store");
    // Without http allowed: https only, and no credentials went anywhere.
    let o = rkt(&store, &[&conf, "--insecure-options=image", "fetch", &url]);
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(tls.load(Ordering::SeqCst), 1, "{}", stderr(&o));
    assert!(seen.lock().expect("lock").is_empty());
    // all-fetch: https first, then http.
    let o = rkt(
        &store,
        &[&conf, "--insecure-options=all-fetch", "fetch", &url],
    );
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(tls.load(Ordering::SeqCst), 2, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("does not answer https; using plain http"),
        "{err}"
    );
    assert!(err.contains("over plain http"), "{err}");
    let got = seen.lock().expect("lock").clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], None);
}

/// The store holds image `localhost/n2`, fetched from URL U; discovery of `localhost/n1`
/// answers U. Served from the store (pull policy `new`, or a `304` under `update`), it used to
/// be returned as n1 unchecked; now it is rejected as a download would be (exit 4).
#[test]
fn cached_discovered_image_must_carry_the_name() {
    let n2 = simple_aci("localhost/n2", "1.0", "n2");
    let port = Arc::new(AtomicU64::new(0));
    let p = port.clone();
    let srv = TestServer::start(move |req| match req.url.as_str() {
        "/n1?ac-discovery=1" => Reply::ok(
            format!(
                "<meta name=\"ac-discovery\" content=\"localhost/n1 http://127.0.0.1:{}/n2.aci\">",
                p.load(Ordering::SeqCst)
            )
            .into_bytes(),
        ),
        "/n2.aci" if req.header("if-none-match") == Some("\"n2\"") => Reply::status(304),
        "/n2.aci" => Reply::ok(n2.clone()).header("ETag", "\"n2\"").download(),
        _ => Reply::status(404),
    });
    port.store(u64::from(srv.port), Ordering::SeqCst);
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let run = |args: &[&str]| {
        rkt_cmd(&dir, args)
            .env("RKT_DISCOVERY_PORT", srv.port.to_string())
            .output()
            .expect("rkt")
    };
    let n2_id = ok(&run(&[
        "--insecure-options=http,image",
        "fetch",
        &srv.url("/n2.aci"),
    ]));
    for policy in ["--pull-policy=new", "--pull-policy=update"] {
        let o = run(&[
            "--insecure-options=http,image",
            "fetch",
            policy,
            "localhost/n1",
        ]);
        assert_eq!(o.status.code(), Some(4), "{policy}: {}", stderr(&o));
        assert!(!stdout(&o).contains(&n2_id), "{policy}");
        assert!(
            stderr(&o).contains("holds image \"localhost/n2\", not \"localhost/n1\""),
            "{policy}: {}",
            stderr(&o)
        );
    }
    // One download; the update policy's revalidation was a 304.
    assert_eq!(srv.download_count(), 1);
}

/// A registry redirects to storage B, which answers 401 with its own Bearer challenge: only
/// the registry's challenges are answered, so rkt never goes to B's token service (the
/// fetch fails on B's 401).
#[test]
fn challenges_from_a_redirect_target_are_not_answered() {
    let paths: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let ps = paths.clone();
    let (b, _) = raw_server(move |c, head| {
        let path = head
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string();
        ps.lock().expect("lock").push(path);
        let port = c.local_addr().map(|a| a.port()).unwrap_or(0);
        let _ = c.write_all(
            format!(
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
    });
    let (a, _) = raw_server(move |c, _| {
        let _ = c.write_all(
            format!(
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{b}/storage\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
    });
    let t = tempfile::tempdir().expect("tempdir");
    let registry = format!("127.0.0.1:{a}");
    let conf = docker_auth(t.path(), &[&registry, &format!("127.0.0.1:{b}")]);
    let url = format!("docker://{registry}/team/x");
    let o = rkt(
        &t.path().join("store"),
        &[&conf, "--insecure-options=image,http", "fetch", &url],
    );
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("HTTP 401"), "{}", stderr(&o));
    let got = paths.lock().expect("lock").clone();
    assert_eq!(got, vec!["/storage".to_string()], "{}", stderr(&o));
}
