//! Resource-exhaustion attacks on the conversion: each runs in a child process of this test
//! binary whose address space is limited (`RLIMIT_AS`), and must end quickly with the typed
//! error, not an allocation failure, an abort or a hang.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use oci_import::testutil::{layer, write_oci, Entry, Tweaks};
use oci_import::{Image, Limits, Reference};
use tar::{EntryType, Header};

/// Address space of an attack's child process (bytes).
const CHILD_AS_BYTES: u64 = 512 << 20;
/// Longest an attack may take (the child's whole run, build of the image included).
const DEADLINE: Duration = Duration::from_secs(60);
/// Set in the child: run the attack instead of spawning.
const CHILD_ENV: &str = "OCI_IMPORT_BOUNDED_CHILD";

/// Runs `attack` (which returns the conversion's error text) in a child process running only
/// the test `test`, with [`CHILD_AS_BYTES`] of address space; returns the text it reported.
fn bounded(test: &str, attack: impl FnOnce() -> String) -> String {
    if std::env::var_os(CHILD_ENV).is_some() {
        let lim = libc::rlimit {
            rlim_cur: CHILD_AS_BYTES,
            rlim_max: CHILD_AS_BYTES,
        };
        // SAFETY: setrlimit reads the struct it is given; no memory is shared.
        let rc = unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) };
        assert_eq!(rc, 0, "setrlimit");
        let text = attack();
        println!("ATTACK-RESULT: {text}");
        std::process::exit(0);
    }
    let start = Instant::now();
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("spawn the child");
    let took = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{test}: child failed ({:?}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < DEADLINE, "{test}: took {took:?}");
    stdout
        .lines()
        .find_map(|l| l.split_once("ATTACK-RESULT: ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("{test}: no result in {stdout}"))
        .to_string()
}

/// Converts the OCI layout `layers` make (under `dir`) and returns the error's text with
/// its causes; panics if it converts.
fn convert_err(dir: &Path, layers: &[Vec<u8>], limits: &Limits) -> String {
    write_oci(dir, "1", layers, &Tweaks::default()).expect("layout");
    let r = Reference::parse(&format!("oci:{}", dir.display()))
        .expect("a reference")
        .expect("valid");
    let res = Image::open(&r, limits).and_then(|img| img.write_aci(std::io::sink()));
    match res {
        Ok(_) => "converted".into(),
        Err(e) => {
            assert!(e.is_bad_image(), "{e}");
            let mut s = e.to_string();
            let mut cur = std::error::Error::source(&e);
            while let Some(c) = cur {
                s.push_str(&format!(": {c}"));
                cur = c.source();
            }
            s
        }
    }
}

/// A layer of one entry written by `tar::Builder`, which stores a long path or link target
/// in a GNU long-name/long-link entry.
fn long_layer(path: &str, t: EntryType, link: Option<&str>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_entry_type(t);
    h.set_mode(0o755);
    h.set_size(0);
    match link {
        Some(l) => b.append_link(&mut h, path, l).expect("append"),
        None => b
            .append_data(&mut h, path, std::io::empty())
            .expect("append"),
    }
    b.into_inner().expect("tar")
}

#[test]
fn a_long_deep_path_in_a_layer_is_refused_before_per_prefix_work() {
    // 60 000 bytes, 30 000 components: the old code stored every prefix (~900 MB) and
    // hashed as much again per lookup.
    let got = bounded(
        "a_long_deep_path_in_a_layer_is_refused_before_per_prefix_work",
        || {
            let t = tempfile::tempdir().expect("tempdir");
            let deep = "a/".repeat(30_000);
            convert_err(
                t.path(),
                &[long_layer(&deep, EntryType::Directory, None)],
                &Limits::default(),
            )
        },
    );
    assert!(got.contains("bytes long, more than 4089"), "{got}");
}

#[test]
fn overlong_paths_depths_and_link_targets_are_refused() {
    let t = tempfile::tempdir().expect("tempdir");
    let lim = Limits::default();
    let cases = [
        (
            "depth",
            long_layer(&"a/".repeat(1500), EntryType::Directory, None),
            "has 1500 components, more than 1023",
        ),
        (
            "symlink-target",
            long_layer("l", EntryType::Symlink, Some(&"b".repeat(5000))),
            "target of 5000 bytes",
        ),
        (
            "hardlink-target",
            long_layer("l", EntryType::Link, Some(&"b/".repeat(3000))),
            "hardlink target",
        ),
        (
            "at-the-limit",
            long_layer(&"b".repeat(4089), EntryType::Regular, None),
            "converted",
        ),
    ];
    for (name, l, want) in cases {
        let got = convert_err(&t.path().join(name), &[l], &lim);
        assert!(got.contains(want), "{name}: {got}");
    }
}

#[test]
fn many_deep_paths_hit_the_path_memory_limit() {
    // 200 entries of 1000 new components each: ~13 MB of tree nodes against a 4 MiB limit.
    let got = bounded("many_deep_paths_hit_the_path_memory_limit", || {
        let t = tempfile::tempdir().expect("tempdir");
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..200 {
            let mut h = Header::new_gnu();
            h.set_entry_type(EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            let p = format!("{i}/{}", "a/".repeat(1000));
            b.append_data(&mut h, p, std::io::empty()).expect("append");
        }
        let lim = Limits {
            max_path_tree_bytes: 4 << 20,

            ..Limits::default()
        };
        convert_err(t.path(), &[b.into_inner().expect("tar")], &lim)
    });
    assert!(got.contains("memory for the layers' paths"), "{got}");
    // An ordinary layer converts within the default limit.
    let t = tempfile::tempdir().expect("tempdir");
    let ok = layer(&[Entry::Dir("x/"), Entry::File("x/y", b"y")]);
    assert_eq!(
        convert_err(t.path(), &[ok], &Limits::default()),
        "converted"
    );
}

/// A GNU long-name (`L`) header claiming `size` bytes.
fn long_name_header(size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::GNULongName);
    if let Some(g) = h.as_gnu_mut() {
        g.name[..13].copy_from_slice(b"././@LongLink");
    }
    h.set_mode(0o644);
    h.set_size(size);
    h.set_cksum();
    h
}

#[test]
fn a_one_gib_long_name_in_an_archive_is_refused_without_buffering_it() {
    // An oci-archive whose first entry is a 1 GiB long name (a sparse file: no disk used).
    // The tar crate read it whole while indexing the archive.
    let got = bounded(
        "a_one_gib_long_name_in_an_archive_is_refused_without_buffering_it",
        || {
            let t = tempfile::tempdir().expect("tempdir");
            let path = t.path().join("bomb.tar");
            let f = std::fs::File::create(&path).expect("create");
            std::io::Write::write_all(&mut &f, long_name_header(1 << 30).as_bytes())
                .expect("write");
            f.set_len(512 + (1 << 30) + 1024).expect("set_len");
            let r = Reference::parse(&format!("oci-archive:{}", path.display()))
                .expect("a reference")
                .expect("valid");
            let start = Instant::now();
            let e = Image::open(&r, &Limits::default()).expect_err("refused");
            assert!(start.elapsed() < Duration::from_secs(5), "{e}");
            assert!(e.is_bad_image(), "{e}");
            e.to_string()
        },
    );
    assert!(
        got.contains("tar GNU long name of 1073741824 bytes, more than the limit of 1048576"),
        "{got}"
    );
}

#[test]
fn a_long_name_over_the_limit_in_a_layer_is_refused() {
    // 2 MiB of long name (gzipped to a few KB: within the ratio grace, so no other limit
    // stops it).
    let t = tempfile::tempdir().expect("tempdir");
    let mut l = long_name_header(2 << 20).as_bytes().to_vec();
    l.resize(l.len() + (2 << 20), b'a');
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Directory);
    h.set_path("d").expect("path");
    h.set_mode(0o755);
    h.set_size(0);
    h.set_cksum();
    l.extend_from_slice(h.as_bytes());
    l.resize(l.len() + 1024, 0);
    let got = convert_err(t.path(), &[l], &Limits::default());
    assert!(
        got.contains("tar GNU long name of 2097152 bytes, more than the limit of 1048576"),
        "{got}"
    );
}

/// Appends a regular file or a hardlink (no data) to `b`.
fn append(b: &mut tar::Builder<Vec<u8>>, path: &str, link: Option<&str>, data: &[u8]) {
    let mut h = Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    match link {
        Some(l) => {
            h.set_entry_type(EntryType::Link);
            b.append_link(&mut h, path, l).expect("link");
        }
        None => {
            h.set_entry_type(EntryType::Regular);
            b.append_data(&mut h, path, data).expect("file");
        }
    }
}

/// Converts `layers` (uncompressed in the layout) to an ACI tar.
fn convert_ok(dir: &Path, layers: &[Vec<u8>], limits: &Limits) -> Result<Vec<u8>, String> {
    let tw = Tweaks {
        uncompressed: true,
        ..Tweaks::default()
    };
    write_oci(dir, "1", layers, &tw).expect("layout");
    let r = Reference::parse(&format!("oci:{}", dir.display()))
        .expect("a reference")
        .expect("valid");
    let mut out = Vec::new();
    Image::open(&r, limits)
        .and_then(|img| img.write_aci(&mut out))
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[test]
fn many_hardlinks_to_replaced_files_read_their_layer_twice_at_most() {
    // The lower layer: N files, then a hardlink to each (and a link to a link, a second link
    // to one file); the upper layer makes their directory opaque, so every target is
    // replaced. Each link re-read the layer up to its target: N²/2 entries (2·10⁸ here).
    const N: usize = 20_000;
    let t = tempfile::tempdir().expect("tempdir");
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..N {
        append(&mut b, &format!("d/f{i}"), None, &[b'a' + (i % 26) as u8]);
    }
    for i in 0..N {
        append(&mut b, &format!("e/h{i}"), Some(&format!("d/f{i}")), b"");
    }
    append(&mut b, "e/x", Some("e/h0"), b"");
    append(&mut b, "e/y", Some("d/f0"), b"");
    let lower = b.into_inner().expect("tar");
    let upper = layer(&[Entry::Dir("d/"), Entry::File("d/.wh..wh..opq", b"")]);
    let start = Instant::now();
    let aci = convert_ok(t.path(), &[lower, upper], &Limits::default()).expect("converts");
    let took = start.elapsed();
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let mut files = 0;
    let mut links = Vec::new();
    for e in tar::Archive::new(&aci[..]).entries().expect("tar") {
        let mut e = e.expect("entry");
        let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let Some(i) = p.strip_prefix("rootfs/e/") else {
            assert!(!p.starts_with("rootfs/d/f"), "{p} is hidden");
            continue;
        };
        match e.header().entry_type() {
            EntryType::Regular => {
                let n: usize = i.trim_start_matches('h').parse().expect("h<i>");
                let mut d = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut d).expect("data");
                assert_eq!(d, [b'a' + (n % 26) as u8], "{p}");
                files += 1;
            }
            _ => {
                let l = e.link_name_bytes().expect("target").into_owned();
                links.push((p, String::from_utf8_lossy(&l).into_owned()));
            }
        }
    }
    assert_eq!(files, N);
    assert_eq!(
        links,
        [
            ("rootfs/e/x".to_string(), "rootfs/e/h0".to_string()),
            ("rootfs/e/y".to_string(), "rootfs/e/h0".to_string())
        ]
    );
    appc::aci::import(
        &aci[..],
        std::io::sink(),
        &appc::aci::Limits::default(),
        &mut |_| {},
    )
    .expect("the ACI importer accepts the output");
}

#[test]
fn the_second_pass_over_a_layer_counts_toward_the_total_limit() {
    // 3 MiB read once fits a 5 MiB total; read again for the hardlink, it does not (each
    // re-read used to start from zero).
    let t = tempfile::tempdir().expect("tempdir");
    let big = vec![0u8; 3 << 20];
    let mut b = tar::Builder::new(Vec::new());
    append(&mut b, "big", None, &big);
    append(&mut b, "big2", Some("big"), b"");
    let lower = b.into_inner().expect("tar");
    let upper = layer(&[Entry::File("big", b"new")]);
    let lim = Limits {
        max_uncompressed_bytes: 5 << 20,
        ..Limits::default()
    };
    let got = convert_ok(t.path(), &[lower.clone(), upper.clone()], &lim).expect_err("too big");
    assert!(got.contains("total size"), "{got}");
    let lim = Limits {
        max_uncompressed_bytes: 7 << 20,
        ..Limits::default()
    };
    convert_ok(&t.path().join("fits"), &[lower, upper], &lim).expect("two passes fit");
}
