//! `rkt fetch` end to end: IDs equal to `gzip -dc | sha256sum`, hostile archives rejected
//! with nothing stored, HTTP revalidation (ETag / Last-Modified / max-age), pull policies,
//! insecure options, appc discovery against a local server, exit codes.

mod store_util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use appc::aci::{raw_tar_entry, AciBuilder, Compression};
use store_util::*;
use tar::EntryType;

#[test]
fn fetch_file_prints_sha256_of_uncompressed_tar() {
    let t = tempfile::tempdir().expect("tempdir");
    let aci = write_file(
        t.path(),
        "hello.aci",
        &simple_aci("example.com/hello", "1.0", "hello"),
    );
    let dir = t.path().join("store");
    let o = rkt(
        &dir,
        &[
            "--insecure-options=image",
            "fetch",
            aci.to_str().expect("utf8"),
        ],
    );
    let id = ok(&o);
    assert_eq!(id, format!("sha256-{}", gunzip_digest(&aci, "sha256sum")));
    assert!(
        stderr(&o).contains("signature verification has been disabled"),
        "an insecure image is fetched with rkt's warning: {}",
        stderr(&o)
    );
    // The blob is the uncompressed tar at the seed's path.
    let blob = dir.join("cas/blob/sha256").join(&id[7..9]).join(&id);
    let blob_hex = store_util::gunzip_digest(&aci, "sha256sum");
    let o = std::process::Command::new("sha256sum")
        .arg(&blob)
        .output()
        .expect("sha256sum");
    assert!(String::from_utf8_lossy(&o.stdout).starts_with(&blob_hex));
    // --full prints the sha512 ID; file:// works; an unsigned image is refused by default.
    let url = format!("file://{}", aci.display());
    let o = rkt(&dir, &["fetch", "--full", &url]);
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(stderr(&o).contains("no signature found"), "{}", stderr(&o));
    let o = rkt(&dir, &["--insecure-options=image", "fetch", "--full", &url]);
    assert_eq!(
        ok(&o),
        format!("sha512-{}", gunzip_digest(&aci, "sha512sum"))
    );
    // Uncompressed ACIs work too, and give the plain tar's sha256.
    let m = manifest("example.com/plain", &[], &[]);
    let tar = write_file(t.path(), "plain.aci", &build_aci(&m, &[("a", b"a")], false));
    let o = rkt(
        &dir,
        &[
            "--insecure-options=image",
            "fetch",
            tar.to_str().expect("utf8"),
        ],
    );
    let sum = std::process::Command::new("sha256sum")
        .arg(&tar)
        .output()
        .expect("sha256sum");
    assert_eq!(
        ok(&o),
        format!(
            "sha256-{}",
            String::from_utf8_lossy(&sum.stdout)
                .split_whitespace()
                .next()
                .unwrap_or("")
        )
    );
    assert_eq!(image_rows(&dir).len(), 2);
}

/// A gzip archive with a valid manifest and one raw (possibly hostile) entry.
fn hostile(path: &[u8], t: EntryType, link: Option<&[u8]>) -> Vec<u8> {
    let m = manifest("example.com/evil", &[], &[]);
    let mut b = AciBuilder::new(Vec::new(), Compression::Gzip, &m).expect("builder");
    b.add_dir("etc", 0o755).expect("dir");
    b.raw_entry(path, t, link, 0o644, b"evil")
        .expect("raw entry");
    b.finish().expect("finish")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

#[test]
fn hostile_archives_are_rejected_and_nothing_is_stored() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let mut no_manifest = tar::Builder::new(Vec::new());
    raw_tar_entry(
        &mut no_manifest,
        b"rootfs/",
        EntryType::Directory,
        None,
        0o755,
        b"",
    )
    .expect("entry");
    let no_manifest = gzip(&no_manifest.into_inner().expect("tar"));
    let mut bad_json = AciBuilder::with_raw_manifest(Vec::new(), Compression::Gzip, b"{not json")
        .expect("builder");
    bad_json.add_file("x", 0o644, b"x").expect("file");
    let bad_json = bad_json.finish().expect("finish");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            hostile(b"rootfs/../../etc/passwd", EntryType::Regular, None),
            "..",
        ),
        (
            "absolute",
            hostile(b"/etc/passwd", EntryType::Regular, None),
            "absolute",
        ),
        (
            "outside",
            hostile(b"other/file", EntryType::Regular, None),
            "rootfs",
        ),
        (
            "symlink-escape",
            hostile(
                b"rootfs/etc/evil",
                EntryType::Symlink,
                Some(b"../../../../etc/shadow"),
            ),
            "symlink",
        ),
        (
            "hardlink-missing",
            hostile(b"rootfs/etc/hl", EntryType::Link, Some(b"rootfs/nope")),
            "hardlink",
        ),
        (
            "through-symlink",
            {
                let m = manifest("example.com/evil", &[], &[]);
                let mut b = AciBuilder::new(Vec::new(), Compression::Gzip, &m).expect("builder");
                b.add_symlink("lnk", "/").expect("symlink");
                b.raw_entry(
                    b"rootfs/lnk/etc/passwd",
                    EntryType::Regular,
                    None,
                    0o644,
                    b"x",
                )
                .expect("raw");
                b.finish().expect("finish")
            },
            "symlink",
        ),
        ("no-manifest", no_manifest, "manifest"),
        ("bad-manifest", bad_json, "manifest"),
        (
            "garbage",
            b"this is not an image at all, not even close".repeat(20),
            "format",
        ),
        (
            "truncated",
            simple_aci("example.com/cut", "1", "x")[..60].to_vec(),
            "",
        ),
    ];
    for (name, data, needle) in cases {
        let f = write_file(t.path(), &format!("{name}.aci"), &data);
        let o = rkt(
            &dir,
            &[
                "--insecure-options=image",
                "fetch",
                f.to_str().expect("utf8"),
            ],
        );
        assert_eq!(
            o.status.code(),
            Some(4),
            "{name}: exit code; stderr: {}",
            stderr(&o)
        );
        assert!(
            stdout(&o).is_empty(),
            "{name}: stdout must be empty: {}",
            stdout(&o)
        );
        let err = stderr(&o).to_lowercase();
        assert!(err.contains("invalid image"), "{name}: {err}");
        assert!(err.contains(needle), "{name}: expected {needle:?} in {err}");
        assert!(image_rows(&dir).is_empty(), "{name}: an image was stored");
        assert!(
            blobs(&dir).is_empty(),
            "{name}: a blob was stored: {:?}",
            blobs(&dir)
        );
        let tmp: Vec<_> = std::fs::read_dir(dir.join("cas/tmp"))
            .expect("tmp")
            .flatten()
            .collect();
        assert!(tmp.is_empty(), "{name}: temp files left: {tmp:?}");
    }
}

#[test]
fn missing_files_and_bad_flags() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let o = rkt(&dir, &["fetch", "/nonexistent/image.aci"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot open image file /nonexistent/image.aci"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("No such file"), "{}", stderr(&o));
    let o = rkt(&dir, &["fetch", "sha512-0123456789abcdef"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    let o = rkt(
        &dir,
        &["fetch", "--pull-policy=never", "example.com/unknown:1.0"],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    for args in [
        vec!["fetch", "--no-such-flag", "x.aci"],
        vec!["fetch", "--pull-policy=sometimes", "x.aci"],
        vec!["fetch"],
        vec!["--insecure-options=bogus", "fetch", "x.aci"],
        vec!["fetch", "Not A Valid Name"],
        vec!["fetch", "sha512-0123"],
    ] {
        let o = rkt(&dir, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).is_empty());
    }
}

#[test]
fn http_requires_insecure_option() {
    let aci = simple_aci("example.com/web", "1.0", "web");
    let srv = TestServer::start(move |req| {
        if req.url == "/web.aci" {
            Reply::ok(aci.clone()).download()
        } else {
            Reply::status(404)
        }
    });
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let o = rkt(&dir, &["fetch", &srv.url("/web.aci")]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--insecure-options=http"),
        "{}",
        stderr(&o)
    );
    assert_eq!(srv.request_count(), 0, "no request may be made");
    let o = rkt(
        &dir,
        &[
            "--insecure-options=http,image",
            "fetch",
            &srv.url("/web.aci"),
        ],
    );
    assert!(ok(&o).starts_with("sha256-"));
    let o = rkt(
        &dir,
        &["--insecure-options=http", "fetch", &srv.url("/missing.aci")],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("HTTP 404"), "{}", stderr(&o));
}

/// Serves one image whose content the test can change, with ETag and Last-Modified support.
struct Versioned {
    srv: TestServer,
    current: Arc<Mutex<(Vec<u8>, String)>>,
}

fn versioned(extra: Vec<(String, String)>, use_etag: bool) -> Versioned {
    let current = Arc::new(Mutex::new((
        simple_aci("example.com/v", "1", "v1"),
        "\"v1\"".to_string(),
    )));
    let c = current.clone();
    let srv = TestServer::start(move |req| {
        let (body, tag) = c.lock().expect("lock").clone();
        let lm = format!("Mon, 01 Jan 2024 00:00:0{} GMT", tag.len() % 10);
        let matches = if use_etag {
            req.header("if-none-match") == Some(tag.as_str())
        } else {
            req.header("if-modified-since") == Some(lm.as_str())
        };
        let mut r = if matches {
            Reply::status(304)
        } else {
            Reply::ok(body).download()
        };
        if use_etag {
            r = r.header("ETag", &tag);
        } else {
            r = r.header("Last-Modified", &lm);
        }
        for (k, v) in &extra {
            r = r.header(k, v);
        }
        r
    });
    Versioned { srv, current }
}

#[test]
fn etag_revalidation_downloads_nothing_on_304() {
    let v = versioned(vec![], true);
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let url = v.srv.url("/v.aci");
    let args = ["--insecure-options=http,image", "fetch", url.as_str()];
    let id1 = ok(&rkt(&dir, &args));
    let id2 = ok(&rkt(&dir, &args));
    assert_eq!(id1, id2);
    assert_eq!(v.srv.request_count(), 2, "second fetch revalidates");
    assert_eq!(v.srv.download_count(), 1, "304: nothing downloaded");
    // A new version behind the same URL is downloaded.
    *v.current.lock().expect("lock") =
        (simple_aci("example.com/v", "2", "v2"), "\"v2-new\"".into());
    let id3 = ok(&rkt(&dir, &args));
    assert_ne!(id3, id1);
    assert_eq!(v.srv.download_count(), 2);
    // --pull-policy=new never asks the server; --no-store always downloads.
    ok(&rkt(
        &dir,
        &[
            "--insecure-options=http,image",
            "fetch",
            "--pull-policy=new",
            url.as_str(),
        ],
    ));
    assert_eq!(v.srv.request_count(), 3);
    ok(&rkt(
        &dir,
        &[
            "--insecure-options=http,image",
            "fetch",
            "--no-store",
            url.as_str(),
        ],
    ));
    assert_eq!(v.srv.download_count(), 3);
    assert_eq!(image_rows(&dir).len(), 2);
}

#[test]
fn last_modified_revalidation() {
    let v = versioned(vec![], false);
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let url = v.srv.url("/v.aci");
    let args = ["--insecure-options=http,image", "fetch", url.as_str()];
    assert_eq!(ok(&rkt(&dir, &args)), ok(&rkt(&dir, &args)));
    assert_eq!(v.srv.request_count(), 2);
    assert_eq!(v.srv.download_count(), 1);
}

#[test]
fn max_age_avoids_requests() {
    let v = versioned(
        vec![("Cache-Control".into(), "public, max-age=3600".into())],
        true,
    );
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let url = v.srv.url("/v.aci");
    let args = ["--insecure-options=http,image", "fetch", url.as_str()];
    let id = ok(&rkt(&dir, &args));
    for _ in 0..3 {
        assert_eq!(ok(&rkt(&dir, &args)), id);
    }
    assert_eq!(
        v.srv.request_count(),
        1,
        "within max-age: no request at all"
    );
    // max-age=0 / no-cache: revalidate every time.
    let v0 = versioned(vec![("Cache-Control".into(), "no-cache".into())], true);
    let url0 = v0.srv.url("/v.aci");
    let args0 = ["--insecure-options=http,image", "fetch", url0.as_str()];
    ok(&rkt(&dir, &args0));
    ok(&rkt(&dir, &args0));
    assert_eq!(v0.srv.request_count(), 2);
    assert_eq!(v0.srv.download_count(), 1);
}

/// Discovery server: `host/team/app` discovers via the `/team` prefix page (the app page is
/// 404, so the client must walk up), images under /images/.
fn discovery_server(served_name: &'static str) -> TestServer {
    let aci = simple_aci(served_name, "1.0", "discovered");
    let port = Arc::new(AtomicUsize::new(0));
    let p = port.clone();
    let srv = TestServer::start(move |req| {
        let port = p.load(Ordering::SeqCst);
        match req.url.as_str() {
            "/team?ac-discovery=1" => Reply::ok(
                format!(
                    "<html><head>\n<meta name=\"ac-discovery\" content=\"localhost/other https://example.invalid/{{name}}.{{ext}}\">\n\
                     <meta name=\"ac-discovery\" content=\"localhost/team http://127.0.0.1:{port}/images/{{name}}-{{version}}-{{os}}-{{arch}}.{{ext}}\">\n\
                     </head></html>"
                )
                .into_bytes(),
            )
            .header("Content-Type", "text/html"),
            u if u.starts_with("/images/localhost/team/app-1.0-linux-") && u.ends_with(".aci") => {
                Reply::ok(aci.clone()).download()
            }
            _ => Reply::status(404),
        }
    });
    port.store(usize::from(srv.port), Ordering::SeqCst);
    srv
}

#[test]
fn appc_discovery_with_local_server() {
    if std::env::consts::ARCH != "x86_64" {
        eprintln!(
            "SKIP: appc_discovery_with_local_server: template arch is amd64 only in this test"
        );
        return;
    }
    let srv = discovery_server("localhost/team/app");
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let port = srv.port.to_string();
    let run = |args: &[&str]| {
        rkt_cmd(&dir, args)
            .env("RKT_DISCOVERY_PORT", &port)
            .output()
            .expect("rkt")
    };
    // Without http allowed, discovery only tries https and fails: image not found.
    let o = run(&["fetch", "localhost/team/app:1.0"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot discover"), "{}", stderr(&o));
    assert_eq!(srv.download_count(), 0);
    let o = run(&[
        "--insecure-options=http,image",
        "fetch",
        "localhost/team/app:1.0",
    ]);
    let id = ok(&o);
    assert!(id.starts_with("sha256-"), "{id}");
    assert_eq!(srv.download_count(), 1);
    // Now it is in the store: resolved by name without any request.
    let before = srv.request_count();
    let o = run(&[
        "--insecure-options=http,image",
        "fetch",
        "localhost/team/app:1.0",
    ]);
    assert_eq!(ok(&o), id);
    assert_eq!(srv.request_count(), before);
    let rows = image_rows(&dir);
    assert_eq!(rows.len(), 1);
    assert!(rows[0].contains("localhost/team/app:1.0"), "{rows:?}");
}

#[test]
fn discovery_rejects_image_with_other_name() {
    let srv = discovery_server("localhost/team/impostor");
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let o = rkt_cmd(
        &dir,
        &[
            "--insecure-options=http,image",
            "fetch",
            "localhost/team/app:1.0",
        ],
    )
    .env("RKT_DISCOVERY_PORT", srv.port.to_string())
    .output()
    .expect("rkt");
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("impostor"), "{}", stderr(&o));
    assert!(image_rows(&dir).is_empty());
    assert!(blobs(&dir).is_empty());
}

#[test]
fn version_output_matches_nomad_regexes() {
    let t = tempfile::tempdir().expect("tempdir");
    let o = rkt(t.path(), &["version"]);
    let out = ok(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "rkt Version: 1.30.0");
    assert_eq!(lines[1], "appc Version: 0.8.11");
    assert_eq!(
        lines[2],
        format!("rkt-rs Version: {}", env!("CARGO_PKG_VERSION"))
    );
    assert!(lines.iter().any(|l| l.starts_with("Features: ")));
}

#[test]
fn fetch_also_fetches_missing_dependencies_by_discovery() {
    if std::env::consts::ARCH != "x86_64" {
        eprintln!("SKIP: fetch_also_fetches_missing_dependencies_by_discovery: template arch is amd64 only in this test");
        return;
    }
    let base = build_aci(
        &manifest("localhost/team/base", &[], &[]),
        &[("etc/base", b"b")],
        true,
    );
    let top = build_aci(
        &manifest("localhost/team/top", &[], &["localhost/team/base"]),
        &[("etc/top", b"t")],
        true,
    );
    let port = Arc::new(AtomicUsize::new(0));
    let p = port.clone();
    let srv = TestServer::start(move |req| {
        let port = p.load(Ordering::SeqCst);
        match req.url.as_str() {
            "/team/base?ac-discovery=1" => Reply::ok(
                format!("<meta name=\"ac-discovery\" content=\"localhost/team http://127.0.0.1:{port}/i/{{name}}-{{version}}.{{ext}}\">")
                    .into_bytes(),
            ),
            "/i/localhost/team/base-latest.aci" => Reply::ok(base.clone()).download(),
            _ => Reply::status(404),
        }
    });
    port.store(usize::from(srv.port), Ordering::SeqCst);
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let f = write_file(t.path(), "top.aci", &top);
    let o = rkt_cmd(
        &dir,
        &[
            "--insecure-options=http,image",
            "fetch",
            f.to_str().expect("utf8"),
        ],
    )
    .env("RKT_DISCOVERY_PORT", srv.port.to_string())
    .output()
    .expect("rkt");
    ok(&o);
    assert_eq!(srv.download_count(), 1, "{}", stderr(&o));
    assert_eq!(image_rows(&dir).len(), 2);
    let out = t.path().join("r");
    ok(&rkt(
        &dir,
        &[
            "image",
            "render",
            "--rootfs-only",
            "localhost/team/top",
            out.to_str().expect("utf8"),
        ],
    ));
    assert!(out.join("etc/base").is_file() && out.join("etc/top").is_file());
}

#[test]
fn progress_bar_only_on_a_terminal() {
    let t = tempfile::tempdir().expect("tempdir");
    let f = write_file(
        t.path(),
        "p.aci",
        &simple_aci("example.com/progress", "1", "p"),
    );
    // Not a terminal: no bar, no carriage returns.
    let o = rkt(
        &t.path().join("s1"),
        &[
            "--insecure-options=image",
            "fetch",
            f.to_str().expect("utf8"),
        ],
    );
    ok(&o);
    assert!(
        !stderr(&o).contains('\r') && !stderr(&o).contains("MiB"),
        "{}",
        stderr(&o)
    );
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: progress_bar_only_on_a_terminal: util-linux `script` (pty) not available");
        return;
    }
    // Under a pty (util-linux script): the bar is drawn on stderr.
    let cmd = format!(
        "{} --dir={} --insecure-options=image fetch {}",
        rkt_bin(),
        t.path().join("s2").display(),
        f.display()
    );
    let o = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("MiB") && out.contains("[="),
        "no progress bar: {out:?}"
    );
    assert!(out.contains("sha256-"), "{out:?}");
}
