//! Reliability failures of issue 9, each reproduced and passing because it no longer
//! happens: exponential rendering of a doubling dependency graph and dependency cycles, a
//! fetch from a stalling server hanging forever, "database is locked" on a brand-new store
//! used in parallel, a full disk reported as an invalid image, a 256-byte image name failing
//! only at render, and `rkt run` flags that failed only inside the pod.
#![allow(clippy::unwrap_used)]

mod store_util;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use appc::aci::{AciBuilder, Compression};
use appc::schema::Dependency;
use appc::AcIdentifier;
use stage0::store::{ImportSource, Store};
use store_util::*;

fn skip(test: &str, reason: &str) {
    let line = format!("SKIP: {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// An image named `name` depending (by name) on `deps`, with one small file.
fn dep_image(name: &str, deps: &[String]) -> Vec<u8> {
    let mut m = manifest(name, &[], &[]);
    m.dependencies = deps
        .iter()
        .map(|d| Dependency {
            image_name: AcIdentifier::new(d.as_str()).unwrap(),
            image_id: None,
            labels: Vec::new(),
            size: None,
        })
        .collect();
    let file = format!("layers/{}", name.replace('/', "_"));
    build_aci(&m, &[(file.as_str(), name.as_bytes())], false)
}

fn import(store: &Store, aci: &[u8]) -> stage0::store::ImageRecord {
    store
        .import_aci(aci, &ImportSource::default(), &mut |_| {})
        .unwrap()
}

/// The index is one file (SQLite's rollback journal, stage0/src/store/db.rs): after many
/// writes there is no WAL nor shared-memory file beside it, and an index an older rkt left in
/// WAL mode is switched back, its rows kept, by the next open.
#[test]
fn the_index_is_one_file_and_leaves_wal_mode() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let index = data.join("cas/db/index.sqlite");
    let beside = |suffix: &str| index.with_file_name(format!("index.sqlite{suffix}"));
    {
        let store = Store::open(&data).unwrap();
        let mut rec = import(&store, &dep_image("example.com/one-file", &[]));
        for _ in 0..50 {
            rec.last_used = 0; // older than the resolution: written every time
            store.touch_last_used(&rec).unwrap();
        }
        for s in ["-wal", "-shm", "-journal"] {
            assert!(!beside(s).exists(), "{s} beside the index after writes");
        }
    }
    // An older rkt's index: WAL mode, a row written in it.
    let old = rusqlite::Connection::open(&index).unwrap();
    let mode: String = old
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    old.execute_batch("UPDATE images SET source = 'from-the-wal'")
        .unwrap();
    drop(old);
    let store = Store::open(&data).unwrap();
    let recs = store.list().unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].source.as_deref(), Some("from-the-wal"));
    let conn = rusqlite::Connection::open(&index).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete", "the index was not switched out of WAL mode");
}

#[test]
fn diamond_dependency_graph_renders_once_per_image() {
    // Level i has two images, each depending on both images of level i+1: 2^20 paths from
    // the top to the bottom, 41 images.
    const LEVELS: usize = 20;
    let t = tempfile::tempdir().unwrap();
    let store = Store::open(&t.path().join("data")).unwrap();
    let name = |l: usize, k: char| format!("example.com/d{l}{k}");
    for l in (0..LEVELS).rev() {
        let deps: Vec<String> = if l + 1 < LEVELS {
            vec![name(l + 1, 'a'), name(l + 1, 'b')]
        } else {
            Vec::new()
        };
        for k in ['a', 'b'] {
            import(&store, &dep_image(&name(l, k), &deps));
        }
    }
    let top = import(
        &store,
        &dep_image("example.com/top", &[name(0, 'a'), name(0, 'b')]),
    );
    let start = Instant::now();
    let layers = store.flatten_dependencies(&top).unwrap();
    assert_eq!(layers.len(), 2 * LEVELS + 1);
    let tree = store.render_tree(&top).unwrap();
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "rendering took {took:?}: not linear in the images"
    );
    for l in 0..LEVELS {
        for k in ['a', 'b'] {
            assert!(tree
                .rootfs
                .join(format!("layers/example.com_d{l}{k}"))
                .exists());
        }
    }
    // The bottom comes first, the top last.
    assert_eq!(
        layers.last().map(|r| r.name.as_str()),
        Some("example.com/top")
    );
    assert_eq!(
        layers.first().map(|r| r.name.as_str()),
        Some(name(LEVELS - 1, 'a').as_str())
    );
}

#[test]
fn dependency_cycle_is_an_invalid_image() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("data");
    let a = write_file(
        t.path(),
        "a.aci",
        &dep_image("example.com/a", &["example.com/b".to_string()]),
    );
    let b = write_file(
        t.path(),
        "b.aci",
        &dep_image("example.com/b", &["example.com/a".to_string()]),
    );
    // --pull-policy=never: no discovery of the (missing) dependency on the network.
    for f in [&a, &b] {
        ok(&rkt(
            &dir,
            &[
                "--insecure-options=image",
                "fetch",
                "--pull-policy=never",
                f.to_str().unwrap(),
            ],
        ));
    }
    let start = Instant::now();
    let o = rkt(
        &dir,
        &[
            "image",
            "render",
            "example.com/a",
            t.path().join("out").to_str().unwrap(),
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(pod_abi::exit::BAD_IMAGE),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("cyclic"), "{}", stderr(&o));
    assert!(start.elapsed() < Duration::from_secs(20));
    let store = Store::open(&dir).unwrap();
    let rec = store.resolve("example.com/b").unwrap();
    let e = store.render_tree(&rec).unwrap_err();
    assert!(e.is_bad_image(), "{e}");
}

/// A TCP server on 127.0.0.1 that accepts connections, optionally sends `prefix`, then
/// never sends anything more (connections are kept open until the test ends).
fn stalling_server(prefix: Vec<u8>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = [0u8; 4096];
            let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
            let _ = c.read(&mut buf);
            let _ = c.write_all(&prefix);
            held.push(c);
        }
    });
    port
}

fn fetch_with_timeout(dir: &Path, url: &str, read_timeout: &str) -> (Output, Duration) {
    let start = Instant::now();
    let o = rkt_cmd(
        dir,
        &["--insecure-options=http,image", "fetch", "--no-store", url],
    )
    .env("RKT_HTTP_READ_TIMEOUT", read_timeout)
    .output()
    .unwrap();
    (o, start.elapsed())
}

#[test]
fn fetch_from_a_stalling_server_times_out() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("data");
    // A fetch of `url` with a 1 s read timeout fails within 15 s, saying it timed out, and
    // stores nothing; returns its stderr.
    let times_out = |url: String| {
        let (o, took) = fetch_with_timeout(&dir, &url, "1");
        assert_eq!(
            o.status.code(),
            Some(pod_abi::exit::FAILURE),
            "{url}: {}",
            stderr(&o)
        );
        assert!(took < Duration::from_secs(15), "{url}: took {took:?}");
        assert!(stderr(&o).contains("timed out"), "{url}: {}", stderr(&o));
        assert!(image_rows(&dir).is_empty());
        stderr(&o)
    };
    // Accepts, never answers.
    let silent = stalling_server(Vec::new());
    let err = times_out(format!("http://127.0.0.1:{silent}/x.aci"));
    assert!(err.contains("RKT_HTTP_READ_TIMEOUT"), "{err}");
    // The same silence from a Docker registry: the manifest request times out alike.
    times_out(format!("docker://127.0.0.1:{silent}/team/x:1"));
    // Sends the headers and part of the body, then stalls: not an "invalid image".
    let aci = simple_aci("example.com/stall", "1", "x");
    let mut prefix = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        aci.len() + 1000
    )
    .into_bytes();
    prefix.extend_from_slice(&aci[..aci.len() / 2]);
    let half = stalling_server(prefix);
    times_out(format!("http://127.0.0.1:{half}/x.aci"));
    // A registry whose answer stops half-way.
    times_out(format!("docker://127.0.0.1:{half}/team/x:1"));
    // A bad value is a usage error.
    let (o, _) = fetch_with_timeout(&dir, &format!("http://127.0.0.1:{silent}/x.aci"), "soon");
    assert_eq!(
        o.status.code(),
        Some(pod_abi::exit::USAGE),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("RKT_HTTP_READ_TIMEOUT"));
}

#[test]
fn parallel_first_use_of_a_new_store_succeeds() {
    const PARALLEL: usize = 20;
    const ROUNDS: usize = 3;
    let t = tempfile::tempdir().unwrap();
    let acis: Vec<PathBuf> = (0..PARALLEL)
        .map(|i| {
            write_file(
                t.path(),
                &format!("p{i}.aci"),
                &simple_aci(&format!("example.com/p{i}"), "1", &i.to_string()),
            )
        })
        .collect();
    for round in 0..ROUNDS {
        let dir = t.path().join(format!("data{round}"));
        let children: Vec<_> = acis
            .iter()
            .map(|a| {
                rkt_cmd(
                    &dir,
                    &["--insecure-options=image", "fetch", a.to_str().unwrap()],
                )
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
            })
            .collect();
        for c in children {
            let o = c.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "round {round}: {:?}: {}",
                o.status,
                stderr(&o)
            );
        }
        assert_eq!(image_rows(&dir).len(), PARALLEL);
    }
}

/// A tmpfs of `size` at `dir`, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .unwrap();
        SmallDisk(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// `n` bytes that do not compress (xorshift).
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn full_disk_during_fetch_is_reported_as_such() {
    const T: &str = "full_disk_during_fetch_is_reported_as_such";
    if !is_root() {
        skip(T, "needs root (mounts a tmpfs)");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let m = manifest("example.com/big", &[], &[]);
    let data = noise(4 << 20);
    let aci = write_file(
        t.path(),
        "big.aci",
        &build_aci(&m, &[("big", data.as_slice())], true),
    );
    let disk = SmallDisk::mount(&t.path().join("small"), "2m");
    let dir = disk.0.join("data");
    let o = rkt(
        &dir,
        &["--insecure-options=image", "fetch", aci.to_str().unwrap()],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(pod_abi::exit::FAILURE), "{err}");
    assert!(
        err.contains(&format!(
            "no space left on the disk under {}",
            dir.display()
        )),
        "{err}"
    );
    assert!(!err.contains("invalid image"), "{err}");
    assert!(image_rows(&dir).is_empty());
    // Space freed (nothing was left behind): a small image still fits.
    let small = write_file(t.path(), "s.aci", &simple_aci("example.com/s", "1", "s"));
    ok(&rkt(
        &dir,
        &["--insecure-options=image", "fetch", small.to_str().unwrap()],
    ));
}

/// An uncompressed ACI whose manifest names the image `name` (not validated).
fn raw_named_aci(name: &str) -> Vec<u8> {
    let json = serde_json::json!({
        "acKind": "ImageManifest", "acVersion": "0.8.11", "name": name,
    });
    let mut b =
        AciBuilder::with_raw_manifest(Vec::new(), Compression::None, json.to_string().as_bytes())
            .unwrap();
    b.add_file("etc/x", 0o644, b"x").unwrap();
    b.finish().unwrap()
}

#[test]
fn image_name_longer_than_255_bytes_is_refused_at_fetch() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("data");
    let long = format!("example.com/{}", "a".repeat(256 - "example.com/".len()));
    assert_eq!(long.len(), 256);
    let f = write_file(t.path(), "long.aci", &raw_named_aci(&long));
    let o = rkt(
        &dir,
        &["--insecure-options=image", "fetch", f.to_str().unwrap()],
    );
    assert_eq!(
        o.status.code(),
        Some(pod_abi::exit::BAD_IMAGE),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("256 bytes"), "{}", stderr(&o));
    assert!(image_rows(&dir).is_empty());
    let ok255 = &long[..255];
    let f = write_file(t.path(), "ok.aci", &raw_named_aci(ok255));
    ok(&rkt(
        &dir,
        &["--insecure-options=image", "fetch", f.to_str().unwrap()],
    ));
    ok(&rkt(
        &dir,
        &[
            "image",
            "render",
            ok255,
            t.path().join("out").to_str().unwrap(),
        ],
    ));
}

#[test]
fn bad_run_flags_fail_before_the_pod_exists() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("data");
    let mut m = manifest("example.com/app", &[], &[]);
    m.app = Some(appc::schema::App {
        exec: vec!["/bin/app".into()],
        user: "0".into(),
        group: "0".into(),
        ..Default::default()
    });
    let img = write_file(
        t.path(),
        "app.aci",
        &build_aci(&m, &[("bin/app", b"x")], true),
    );
    let img = img.to_str().unwrap();
    let pods = |dir: &Path| -> usize {
        pod_abi::paths::PodDirState::ALL
            .iter()
            .filter_map(|s| std::fs::read_dir(dir.join("pods").join(s.dir_name())).ok())
            .map(|rd| rd.count())
            .sum()
    };
    for (flags, what) in [
        (vec!["--hostname=a\nb", img], "--hostname"),
        (vec!["--hostname=\u{1b}[31mred", img], "--hostname"),
        (vec![img, "--cpu=1e9"], "--cpu"),
        (vec![img, "--memory=0"], "--memory"),
        // Not XFS with project quotas (the test's temporary directory).
        (vec!["--disk-limit=32Mi", img], "--disk-limit needs"),
    ] {
        let mut args = vec!["--insecure-options=image", "prepare"];
        args.extend(flags);
        let o = rkt(&dir, &args);
        assert_eq!(
            o.status.code(),
            Some(pod_abi::exit::USAGE),
            "{}",
            stderr(&o)
        );
        assert!(stderr(&o).contains(what), "{}", stderr(&o));
        assert_eq!(pods(&dir), 0);
    }
    // An endless --set-env-file fails fast.
    let start = Instant::now();
    let o = rkt(
        &dir,
        &[
            "--insecure-options=image",
            "prepare",
            "--set-env-file=/dev/zero",
            img,
        ],
    );
    assert!(!o.status.success());
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(stderr(&o).contains("larger than"), "{}", stderr(&o));
    assert_eq!(pods(&dir), 0);
}

/// `image gc` racing a pod's creation: a pod holds each tree from its render until its
/// reference to the tree is written (`Store::hold_tree`), and gc asks for the pods'
/// references again under the tree's exclusive lock. Before, gc decided from references read
/// before it removed, so a tree rendered for a pod in that window was deleted under it.
#[test]
fn image_gc_leaves_a_tree_a_pod_is_being_created_on() {
    use stage0::store::gc::{collect, PodReferences};
    use std::cell::Cell;
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let store = Store::open(&data).unwrap();
    let rec = import(&store, &dep_image("example.com/held", &[]));
    let none = || PodReferences::default();

    // A pod between its render and its reference: the image goes (grace 0, no pod names
    // it), the tree it holds stays rendered.
    let (tree, hold) = store.hold_tree(&rec).unwrap();
    assert_eq!(
        collect(&store, Duration::ZERO, &none, &mut |_| {}).unwrap(),
        1
    );
    assert!(stage0::store::rendered_rootfs(&data, &tree.id).is_some());
    assert!(tree.rootfs.join("layers/example.com_held").is_file());
    drop(hold);

    // The pod wrote its reference after gc's first read and released the tree before gc
    // took the tree's lock: the second read, under the lock, sees it.
    let reads = Cell::new(0);
    let late = || {
        reads.set(reads.get() + 1);
        let mut r = PodReferences::default();
        if reads.get() > 1 {
            r.trees.insert(tree.id.clone());
        }
        r
    };
    collect(&store, Duration::ZERO, &late, &mut |_| {}).unwrap();
    assert!(reads.get() >= 2, "gc did not ask again under the lock");
    assert!(stage0::store::rendered_rootfs(&data, &tree.id).is_some());

    // No pod, no hold: the tree of the removed image goes.
    collect(&store, Duration::ZERO, &none, &mut |_| {}).unwrap();
    assert!(stage0::store::rendered_rootfs(&data, &tree.id).is_none());
    assert!(!tree.rootfs.exists());
}
