//! Store robustness end to end: parallel fetches of one image, SIGKILL in the middle of a
//! download, fetch racing `image rm`, the on-disk layout and the SQLite index.

mod store_util;

use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use store_util::*;

/// A gzip ACI with `size` bytes of incompressible content.
fn big_aci(name: &str, size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let m = manifest(name, &[("version", "1")], &[]);
    build_aci(&m, &[("big.bin", &data), ("etc/hostname", b"big\n")], true)
}

#[test]
fn parallel_fetches_of_the_same_image() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let aci_bytes = big_aci("example.com/par", 1 << 20);
    let file = write_file(t.path(), "par.aci", &aci_bytes);
    let srv = TestServer::start(move |_| Reply::ok(aci_bytes.clone()).download());
    let url = srv.url("/par.aci");
    // 8 processes at once: 4 from the file, 4 from the URL.
    let children: Vec<_> = (0..8)
        .map(|i| {
            let src = if i % 2 == 0 {
                file.to_str().expect("utf8").to_string()
            } else {
                url.clone()
            };
            rkt_cmd(&dir, &["--insecure-options=http,image", "fetch", &src])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    let ids: Vec<String> = children
        .into_iter()
        .map(|c| ok(&c.wait_with_output().expect("wait")))
        .collect();
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    assert_eq!(
        ids[0],
        format!("sha256-{}", gunzip_digest(&file, "sha256sum"))
    );
    assert_eq!(blobs(&dir).len(), 1, "exactly one blob");
    assert_eq!(image_rows(&dir).len(), 1, "exactly one index row");
    let tmp: Vec<_> = std::fs::read_dir(dir.join("cas/tmp"))
        .expect("tmp")
        .flatten()
        .collect();
    assert!(tmp.is_empty(), "temp files left: {tmp:?}");
    // The index is a real SQLite database with the versioned schema.
    let db = rusqlite::Connection::open(dir.join("cas/db/index.sqlite")).expect("open db");
    let v: i64 = db
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("version");
    assert_eq!(v, stage0::store::SCHEMA_VERSION);
    let (n, sha256): (i64, String) = db
        .query_row("SELECT count(*), max(sha256_id) FROM images", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("row");
    assert_eq!((n, sha256), (1, ids[0].clone()));
    let remotes: i64 = db
        .query_row("SELECT count(*) FROM remotes", [], |r| r.get(0))
        .expect("remotes");
    assert_eq!(
        remotes, 2,
        "the URL and the file source are both remembered"
    );
}

#[test]
fn sigkill_mid_fetch_leaves_nothing_visible() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let aci = big_aci("example.com/slow", 4 << 20);
    let total = aci.len();
    let body = aci.clone();
    // 64 KiB every 50 ms: about 3 s for the whole image.
    let srv = TestServer::start(move |req| {
        let mut r = Reply::ok(body.clone()).download();
        if req.url == "/slow.aci" {
            r.slow = Some((64 << 10, Duration::from_millis(50)));
        }
        r
    });
    let mut child = rkt_cmd(
        &dir,
        &[
            "--insecure-options=http,image",
            "fetch",
            &srv.url("/slow.aci"),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    // Wait until the download is well under way, then SIGKILL.
    let start = Instant::now();
    while srv.request_count() == 0 && start.elapsed() < Duration::from_secs(10) {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(srv.request_count(), 1, "fetch never reached the server");
    thread::sleep(Duration::from_millis(600));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "fetch of {total} bytes finished too early"
    );
    child.kill().expect("SIGKILL");
    let st = child.wait().expect("wait");
    assert!(!st.success());
    assert!(image_rows(&dir).is_empty(), "no image after SIGKILL");
    assert!(
        blobs(&dir).is_empty(),
        "no blob after SIGKILL: {:?}",
        blobs(&dir)
    );
    // A new fetch (fast this time) works and gives the right ID.
    let file = write_file(t.path(), "slow.aci", &aci);
    let o = rkt(
        &dir,
        &[
            "--insecure-options=http,image",
            "fetch",
            &srv.url("/fast.aci"),
        ],
    );
    assert_eq!(
        ok(&o),
        format!("sha256-{}", gunzip_digest(&file, "sha256sum"))
    );
    assert_eq!(blobs(&dir).len(), 1);
    let tmp: Vec<_> = std::fs::read_dir(dir.join("cas/tmp"))
        .expect("tmp")
        .flatten()
        .collect();
    assert!(tmp.is_empty(), "temp files left: {tmp:?}");
}

#[test]
fn fetch_racing_image_rm_stays_consistent() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let file = write_file(
        t.path(),
        "race.aci",
        &big_aci("example.com/race", 256 << 10),
    );
    let f = file.to_str().expect("utf8").to_string();
    let id = ok(&rkt(&dir, &["--insecure-options=image", "fetch", &f]));
    for _ in 0..5 {
        let d1 = dir.clone();
        let f1 = f.clone();
        let fetcher = thread::spawn(move || rkt(&d1, &["--insecure-options=image", "fetch", &f1]));
        let rm = rkt(&dir, &["image", "rm", &id]);
        let fo = fetcher.join().expect("join");
        assert!(fo.status.success(), "fetch failed: {}", stderr(&fo));
        assert!(
            rm.status.success() || rm.status.code() == Some(3),
            "rm: {}",
            stderr(&rm)
        );
        // Either the image is fully there (row + blob) or fully gone.
        let rows = image_rows(&dir).len();
        let blob_count = blobs(&dir).len();
        assert_eq!(
            rows, blob_count,
            "index and blobs disagree: {rows} rows, {blob_count} blobs"
        );
        if rows == 1 {
            ok(&rkt(
                &dir,
                &[
                    "image",
                    "export",
                    "--overwrite",
                    &id,
                    t.path().join("x.aci").to_str().expect("utf8"),
                ],
            ));
        }
        // Make sure it is there for the next round.
        ok(&rkt(&dir, &["--insecure-options=image", "fetch", &f]));
    }
}

#[test]
fn resolve_by_id_prefixes_and_names() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let f1 = write_file(
        t.path(),
        "a1.aci",
        &simple_aci("example.com/app", "1.0", "one"),
    );
    let f2 = write_file(
        t.path(),
        "a2.aci",
        &simple_aci("example.com/app", "2.0", "two"),
    );
    let id1 = ok(&rkt(
        &dir,
        &[
            "--insecure-options=image",
            "fetch",
            f1.to_str().expect("utf8"),
        ],
    ));
    let id2 = ok(&rkt(
        &dir,
        &[
            "--insecure-options=image",
            "fetch",
            f2.to_str().expect("utf8"),
        ],
    ));
    let full1 = format!("sha512-{}", gunzip_digest(&f1, "sha512sum"));
    // Every ID form resolves to the same image.
    for r in [
        id1.clone(),
        id1[..19].to_string(),
        full1.clone(),
        full1[..19].to_string(),
    ] {
        assert_eq!(
            ok(&rkt(&dir, &["fetch", "--full", "--pull-policy=never", &r])),
            full1,
            "{r}"
        );
    }
    // Names: version picks, no version = latest import.
    assert_eq!(ok(&rkt(&dir, &["fetch", "example.com/app:1.0"])), id1);
    assert_eq!(ok(&rkt(&dir, &["fetch", "example.com/app"])), id2);
    assert_eq!(
        ok(&rkt(
            &dir,
            &["fetch", "example.com/app,version=2.0,os=linux"]
        )),
        id2
    );
    let o = rkt(
        &dir,
        &["fetch", "--pull-policy=never", "example.com/app:3.0"],
    );
    assert_eq!(o.status.code(), Some(3));
}

#[test]
fn version_1_index_is_upgraded_in_place() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let img = write_file(
        t.path(),
        "old.aci",
        &simple_aci("example.com/old", "1", "old"),
    );
    ok(&rkt(
        &dir,
        &[
            "--insecure-options=image",
            "fetch",
            img.to_str().expect("utf8"),
        ],
    ));
    // Make the index what a version-1 rkt-rs left: no signed_by column, user_version 1.
    {
        let db = rusqlite::Connection::open(dir.join("cas/db/index.sqlite")).expect("open db");
        db.execute_batch("ALTER TABLE images DROP COLUMN signed_by; PRAGMA user_version = 1;")
            .expect("downgrade");
    }
    let listed = ok(&rkt(&dir, &["image", "list", "--format=json"]));
    assert!(
        listed.contains("example.com/old") && listed.contains("\"verified\":false"),
        "{listed}"
    );
    let db = rusqlite::Connection::open(dir.join("cas/db/index.sqlite")).expect("open db");
    let v: i64 = db
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("version");
    assert_eq!(v, stage0::store::SCHEMA_VERSION);
    let n: i64 = db
        .query_row(
            "SELECT count(*) FROM images WHERE signed_by IS NULL",
            [],
            |r| r.get(0),
        )
        .expect("column");
    assert_eq!(n, 1);
}
