//! Import tests: valid images in every compression and a table of hostile archives.
#![allow(clippy::unwrap_used)]

use std::io::Write;

use sha2::{Digest, Sha256, Sha512};
use tar::EntryType;

use super::*;
use crate::schema::{App, ImageManifest};
use crate::types::AcIdentifier;

pub(crate) fn manifest() -> ImageManifest {
    let mut m = ImageManifest::new(AcIdentifier::new("example.com/test").unwrap());
    m.app = Some(App {
        exec: vec!["/bin/true".into()],
        user: "0".into(),
        group: "0".into(),
        ..App::default()
    });
    m
}

/// A small valid image as an uncompressed tar.
pub(crate) fn valid_tar() -> Vec<u8> {
    let mut b = AciBuilder::new(Vec::new(), Compression::None, &manifest()).unwrap();
    b.add_dir("/bin", 0o755).unwrap();
    b.add_file("/bin/true", 0o755, b"#!/bin/sh\n").unwrap();
    b.add_file("/etc/hosts", 0o644, b"127.0.0.1 localhost\n")
        .unwrap();
    b.add_symlink("/usr/bin", "../bin").unwrap();
    b.add_symlink("/bin/abs", "/etc/hosts").unwrap();
    b.add_hardlink("/bin/false", "/bin/true").unwrap();
    b.add_file(
        &format!("/deep/{}/file", "d".repeat(120)),
        0o600,
        &[7u8; 3000],
    )
    .unwrap();
    b.finish().unwrap()
}

fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
    match c {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Bzip2 => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Xz => {
            let mut e =
                lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(1))
                    .unwrap();
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
    }
}

fn run(input: &[u8], limits: &Limits) -> (Result<Imported, AciError>, Vec<u8>) {
    let mut out = Vec::new();
    let r = import(input, &mut out, limits, &mut |_| {});
    (r, out)
}

#[test]
fn imports_every_compression() {
    let tar = valid_tar();
    for c in [
        Compression::None,
        Compression::Gzip,
        Compression::Bzip2,
        Compression::Xz,
    ] {
        let input = compress(c, &tar);
        let mut out = Vec::new();
        let mut last = 0;
        let imp = import(&input[..], &mut out, &Limits::default(), &mut |n| last = n).unwrap();
        assert_eq!(out, tar, "{c:?}");
        assert_eq!(imp.compression, c);
        assert_eq!(imp.uncompressed_size, tar.len() as u64);
        assert_eq!(imp.compressed_size, input.len() as u64);
        assert_eq!(last, input.len() as u64);
        assert_eq!(imp.digest.sha512[..], Sha512::digest(&tar)[..]);
        assert_eq!(imp.digest.sha256[..], Sha256::digest(&tar)[..]);
        assert_eq!(imp.manifest, manifest());
        assert_eq!(
            ImageManifest::from_json(&imp.manifest_json).unwrap(),
            manifest()
        );
    }
    let (m, _) = read_manifest_from_tar(&tar[..]).unwrap();
    assert_eq!(m, manifest());
}

#[test]
fn gzip_builder_round_trips() {
    let mut b = AciBuilder::new(Vec::new(), Compression::Gzip, &manifest()).unwrap();
    b.add_file("etc/x", 0o644, b"x").unwrap();
    let gz = b.finish().unwrap();
    assert_eq!(sniff(&gz).unwrap(), Compression::Gzip);
    let (r, _) = run(&gz, &Limits::default());
    assert_eq!(r.unwrap().manifest.name.as_str(), "example.com/test");
}

#[test]
fn big_image_spans_many_chunks() {
    let mut b = AciBuilder::new(Vec::new(), Compression::None, &manifest()).unwrap();
    let data: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
    for i in 0..3 {
        b.add_file(&format!("/data/{i}"), 0o644, &data).unwrap();
    }
    let tar = b.finish().unwrap();
    let gz = compress(Compression::Gzip, &tar);
    let (r, out) = run(&gz, &Limits::default());
    let imp = r.unwrap();
    assert_eq!(out, tar);
    assert_eq!(imp.digest.sha512[..], Sha512::digest(&tar)[..]);
}

/// Build an archive: the valid manifest, then `f` adds raw entries.
fn hostile(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut t = tar::Builder::new(Vec::new());
    let m = manifest().to_json();
    raw_tar_entry(&mut t, b"manifest", EntryType::Regular, None, 0o644, &m).unwrap();
    raw_tar_entry(&mut t, b"rootfs/", EntryType::Directory, None, 0o755, b"").unwrap();
    f(&mut t);
    t.into_inner().unwrap()
}

fn file(t: &mut tar::Builder<Vec<u8>>, p: &str) {
    raw_tar_entry(t, p.as_bytes(), EntryType::Regular, None, 0o644, b"data").unwrap();
}

fn link(t: &mut tar::Builder<Vec<u8>>, kind: EntryType, p: &str, target: &str) {
    raw_tar_entry(t, p.as_bytes(), kind, Some(target.as_bytes()), 0o777, b"").unwrap();
}

/// (name, archive bytes, limits, expected error message)
pub(crate) fn hostile_cases() -> Vec<(&'static str, Vec<u8>, Limits, String)> {
    let d = Limits::default;
    let mut cases = vec![
        ("dotdot", hostile(|t| file(t, "rootfs/../evil")), d(), r#"entry "rootfs/../evil": path contains "..""#.to_string()),
        ("absolute", hostile(|t| file(t, "/etc/evil")), d(), r#"entry "/etc/evil": absolute path"#.into()),
        ("symlink escape", hostile(|t| link(t, EntryType::Symlink, "rootfs/a/l", "../../etc")), d(),
            r#"entry "rootfs/a/l": symlink target "../../etc" resolves outside rootfs"#.into()),
        ("symlink escape through a dot link", hostile(|t| { link(t, EntryType::Symlink, "rootfs/s", "."); link(t, EntryType::Symlink, "rootfs/l", "s/s/s/../../.."); }), d(),
            r#"entry "rootfs/l": symlink target "s/s/s/../../.." resolves outside rootfs"#.into()),
        ("symlink escape through a later dot link", hostile(|t| { link(t, EntryType::Symlink, "rootfs/a/l", "../s/s/../.."); link(t, EntryType::Symlink, "rootfs/s", "/"); }), d(),
            r#"entry "rootfs/a/l": symlink target "../s/s/../.." resolves outside rootfs"#.into()),
        ("symlink escape through a chain", hostile(|t| { link(t, EntryType::Symlink, "rootfs/a/b/up", "../.."); link(t, EntryType::Symlink, "rootfs/a/b/l", "up/.."); }), d(),
            r#"entry "rootfs/a/b/l": symlink target "up/.." resolves outside rootfs"#.into()),
        ("through symlinked dir", hostile(|t| { link(t, EntryType::Symlink, "rootfs/a", "/etc"); file(t, "rootfs/a/passwd"); }), d(),
            r#"entry "rootfs/a/passwd": parent "rootfs/a" is a symlink"#.into()),
        ("hardlink outside", hostile(|t| link(t, EntryType::Link, "rootfs/h", "/etc/passwd")), d(),
            r#"entry "rootfs/h": hardlink target "/etc/passwd" is not an earlier entry in rootfs"#.into()),
        ("hardlink dotdot", hostile(|t| link(t, EntryType::Link, "rootfs/h", "rootfs/../../x")), d(),
            r#"entry "rootfs/h": hardlink target "rootfs/../../x" is not an earlier entry in rootfs"#.into()),
        ("hardlink missing", hostile(|t| link(t, EntryType::Link, "rootfs/h", "rootfs/nothere")), d(),
            r#"entry "rootfs/h": hardlink target "rootfs/nothere" is not an earlier entry in rootfs"#.into()),
        ("hardlink later", hostile(|t| { link(t, EntryType::Link, "rootfs/h", "rootfs/f"); file(t, "rootfs/f"); }), d(),
            r#"entry "rootfs/h": hardlink target "rootfs/f" is not an earlier entry in rootfs"#.into()),
        ("hardlink to manifest", hostile(|t| link(t, EntryType::Link, "rootfs/h", "manifest")), d(),
            r#"entry "rootfs/h": hardlink target "manifest" is not an earlier entry in rootfs"#.into()),
        ("hardlink to dir", hostile(|t| { file(t, "rootfs/d/f"); link(t, EntryType::Link, "rootfs/h", "rootfs/d"); }), d(),
            r#"entry "rootfs/h": hardlink target "rootfs/d" is a directory"#.into()),
        ("duplicate file", hostile(|t| { file(t, "rootfs/f"); file(t, "./rootfs//f"); }), d(), r#"entry "./rootfs//f": duplicate entry"#.into()),
        ("dir replaced by symlink", hostile(|t| { file(t, "rootfs/d/f"); link(t, EntryType::Symlink, "rootfs/d", "/etc"); }), d(),
            r#"entry "rootfs/d": duplicate entry"#.into()),
        ("duplicate manifest", hostile(|t| file(t, "manifest")), d(), r#"entry "manifest": duplicate entry"#.into()),
        ("duplicate rootfs", hostile(|t| raw_tar_entry(t, b"rootfs", EntryType::Directory, None, 0o755, b"").unwrap()), d(),
            r#"entry "rootfs": duplicate entry"#.into()),
        ("char device", hostile(|t| raw_tar_entry(t, b"rootfs/dev/mem", EntryType::Char, None, 0o600, b"").unwrap()), d(),
            r#"entry "rootfs/dev/mem": device nodes and fifos are not allowed"#.into()),
        ("block device", hostile(|t| raw_tar_entry(t, b"rootfs/dev/sda", EntryType::Block, None, 0o600, b"").unwrap()), d(),
            r#"entry "rootfs/dev/sda": device nodes and fifos are not allowed"#.into()),
        ("fifo", hostile(|t| raw_tar_entry(t, b"rootfs/fifo", EntryType::Fifo, None, 0o600, b"").unwrap()), d(),
            r#"entry "rootfs/fifo": device nodes and fifos are not allowed"#.into()),
        ("extra top-level", hostile(|t| file(t, "etc/passwd")), d(), r#"entry "etc/passwd": not under rootfs/ and not the manifest"#.into()),
        ("rootfs prefix trick", hostile(|t| file(t, "rootfsx/passwd")), d(), r#"entry "rootfsx/passwd": not under rootfs/ and not the manifest"#.into()),
        ("parent is a file", hostile(|t| { file(t, "rootfs/f"); file(t, "rootfs/f/x"); }), d(), r#"entry "rootfs/f/x": parent "rootfs/f" is not a directory"#.into()),
        ("empty symlink", hostile(|t| link(t, EntryType::Symlink, "rootfs/l", "")), d(), r#"entry "rootfs/l": empty link target"#.into()),
        ("unsupported type", hostile(|t| raw_tar_entry(t, b"rootfs/v", EntryType::new(b'V'), None, 0o600, b"").unwrap()), d(),
            r#"entry "rootfs/v": unsupported entry type 'V'"#.into()),
        ("deep path", hostile(|t| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(EntryType::Regular);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(0);
            let deep = format!("rootfs/{}x", "a/".repeat(3000));
            t.append_data(&mut h, deep, &b""[..]).unwrap();
        }), d(), format!(r#"entry "rootfs/{}x": path longer than 4096 bytes"#, "a/".repeat(3000))),
        ("too many entries", hostile(|t| { for i in 0..10 { file(t, &format!("rootfs/{i}")); } }), Limits { max_entries: 5, ..d() },
            "more than 5 entries".into()),
    ];
    // Layout problems with the manifest itself.
    let mut t = tar::Builder::new(Vec::new());
    raw_tar_entry(&mut t, b"rootfs/", EntryType::Directory, None, 0o755, b"").unwrap();
    file(&mut t, "rootfs/x");
    cases.push((
        "missing manifest",
        t.into_inner().unwrap(),
        d(),
        "image has no manifest".into(),
    ));

    let mut t = tar::Builder::new(Vec::new());
    raw_tar_entry(&mut t, b"manifest/", EntryType::Directory, None, 0o755, b"").unwrap();
    cases.push((
        "manifest is a dir",
        t.into_inner().unwrap(),
        d(),
        r#"entry "manifest/": manifest is not a regular file"#.into(),
    ));

    let mut t = tar::Builder::new(Vec::new());
    raw_tar_entry(
        &mut t,
        b"manifest",
        EntryType::Regular,
        None,
        0o644,
        &manifest().to_json(),
    )
    .unwrap();
    file(&mut t, "rootfs");
    cases.push((
        "rootfs is a file",
        t.into_inner().unwrap(),
        d(),
        r#"entry "rootfs": rootfs is not a directory"#.into(),
    ));

    let mut big = manifest();
    big.annotations.push(crate::schema::Annotation {
        name: AcIdentifier::new("padding").unwrap(),
        value: "x".repeat(3000),
    });
    let tar = AciBuilder::new(Vec::new(), Compression::None, &big)
        .unwrap()
        .finish()
        .unwrap();
    cases.push((
        "manifest too big",
        tar,
        Limits {
            max_manifest_bytes: 2048,
            ..d()
        },
        format!(
            "manifest is {} bytes, more than the limit of 2048",
            big.to_json_pretty().len()
        ),
    ));

    let bad = br#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"Bad Name"}"#;
    let tar = AciBuilder::with_raw_manifest(Vec::new(), Compression::None, bad)
        .unwrap()
        .finish()
        .unwrap();
    cases.push((
        "invalid manifest",
        tar,
        d(),
        "invalid image manifest".into(),
    ));

    // Decompression bombs: 3 MiB of zeros compresses ~1000:1.
    let mut b = AciBuilder::new(Vec::new(), Compression::Gzip, &manifest()).unwrap();
    b.add_file("/zeros", 0o644, &vec![0u8; 3 << 20]).unwrap();
    let bomb = b.finish().unwrap();
    cases.push((
        "ratio bomb",
        bomb.clone(),
        Limits {
            ratio_grace_bytes: 1 << 20,
            ..d()
        },
        "compression ratio exceeds the limit of 200:1".into(),
    ));
    cases.push((
        "size bomb",
        bomb,
        Limits {
            max_uncompressed_bytes: 2 << 20,
            ..d()
        },
        "uncompressed size exceeds the limit of 2097152 bytes".into(),
    ));

    // Truncated and corrupt streams.
    let tar = valid_tar();
    let gz = compress(Compression::Gzip, &tar);
    cases.push((
        "truncated gzip",
        gz.get(..gz.len() / 2).unwrap().to_vec(),
        d(),
        "corrupt gzip stream".into(),
    ));
    let mut corrupt = gz.clone();
    for b in corrupt.iter_mut().skip(20).take(40) {
        *b ^= 0x5a;
    }
    cases.push(("corrupt gzip", corrupt, d(), "corrupt gzip stream".into()));
    let xz = compress(Compression::Xz, &tar);
    cases.push((
        "truncated xz",
        xz.get(..xz.len() - 10).unwrap().to_vec(),
        d(),
        "corrupt xz stream".into(),
    ));
    let bz = compress(Compression::Bzip2, &tar);
    cases.push((
        "truncated bzip2",
        bz.get(..bz.len() - 10).unwrap().to_vec(),
        d(),
        "corrupt bzip2 stream".into(),
    ));
    // Cut in the middle of an entry's data, and exactly before the end-of-archive marker.
    cases.push((
        "truncated tar data",
        tar.get(..2048 + 700).unwrap().to_vec(),
        d(),
        "corrupt tar archive".into(),
    ));
    let cut = tar.len() - 1024;
    assert!(tar.get(cut..).unwrap().iter().all(|&b| b == 0));
    let no_end: Vec<u8> = tar.get(..cut).unwrap().to_vec();
    cases.push((
        "tar without end marker",
        no_end,
        d(),
        "truncated tar archive".into(),
    ));
    let mut bad_sum = tar.clone();
    bad_sum[2048 + 3] ^= 1; // a header name byte of a later entry: checksum mismatch
    cases.push((
        "bad header checksum",
        bad_sum,
        d(),
        "corrupt tar archive".into(),
    ));
    cases.push((
        "not an image",
        b"hello world, this is not an archive".to_vec(),
        d(),
        "unrecognized image format (not gzip, bzip2, xz or tar)".into(),
    ));
    cases.push((
        "empty input",
        Vec::new(),
        d(),
        "unrecognized image format (not gzip, bzip2, xz or tar)".into(),
    ));
    cases
}

/// Every file and directory under `dir` (relative paths, sorted).
pub(crate) fn listing(dir: &std::path::Path) -> Vec<String> {
    fn walk(base: &std::path::Path, d: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn hostile_archives_are_rejected() {
    for (name, input, limits, want) in hostile_cases() {
        // The archive is a real file in a tempdir; the tar goes to a file in `out/`.
        let tmp = tempfile::tempdir().unwrap();
        let aci = tmp.path().join("in.aci");
        std::fs::write(&aci, &input).unwrap();
        std::fs::create_dir(tmp.path().join("out")).unwrap();
        let out = std::fs::File::create(tmp.path().join("out/image.tar")).unwrap();
        let file = std::fs::File::open(&aci).unwrap();
        match import(file, out, &limits, &mut |_| {}) {
            Err(e) => assert_eq!(e.to_string(), want, "{name}"),
            Ok(_) => panic!("{name}: accepted"),
        }
        assert_eq!(
            listing(tmp.path()),
            ["in.aci", "out", "out/image.tar"],
            "{name}"
        );
        // The same archive gzip-compressed fails the same way (unless it is about the stream).
        let plain = sniff(&input).ok() == Some(Compression::None);
        if plain && !want.starts_with("truncated") && !name.contains("checksum") {
            let (r, _) = run(&compress(Compression::Gzip, &input), &limits);
            assert_eq!(r.err().map(|e| e.to_string()), Some(want), "{name} (gzip)");
        }
        // Extracting it anyway (skipping validation) never writes outside the destination.
        if plain {
            let dest = tmp.path().join("dest");
            std::fs::create_dir(&dest).unwrap();
            let o = ExtractOptions {
                allow_devices: limits.allow_devices,
                ..ExtractOptions::default()
            };
            let _ = extract_rootfs(&input[..], &dest, &o);
            let outside: Vec<String> = listing(tmp.path())
                .into_iter()
                .filter(|p| !p.starts_with("dest"))
                .collect();
            assert_eq!(
                outside,
                ["in.aci", "out", "out/image.tar"],
                "{name} (extract)"
            );
        }
    }
}

#[test]
fn devices_allowed_when_asked() {
    let tar = hostile(|t| {
        raw_tar_entry(t, b"rootfs/dev/null", EntryType::Char, None, 0o666, b"").unwrap()
    });
    let (r, _) = run(
        &tar,
        &Limits {
            allow_devices: true,
            ..Limits::default()
        },
    );
    assert!(r.is_ok());
}

#[test]
fn root_entry_and_dot_prefix_accepted() {
    let mut t = tar::Builder::new(Vec::new());
    raw_tar_entry(&mut t, b"./", EntryType::Directory, None, 0o755, b"").unwrap();
    raw_tar_entry(
        &mut t,
        b"./manifest",
        EntryType::Regular,
        None,
        0o644,
        &manifest().to_json(),
    )
    .unwrap();
    raw_tar_entry(&mut t, b"./rootfs/", EntryType::Directory, None, 0o755, b"").unwrap();
    file(&mut t, "./rootfs/a/b");
    raw_tar_entry(
        &mut t,
        b"./rootfs/a/",
        EntryType::Directory,
        None,
        0o755,
        b"",
    )
    .unwrap();
    let tar = t.into_inner().unwrap();
    let (r, _) = run(&tar, &Limits::default());
    assert!(r.is_ok(), "{r:?}");
}

/// A reader that is not `Send` and returns at most 7 bytes per call.
struct Dribble {
    data: std::rc::Rc<Vec<u8>>,
    pos: usize,
}

impl std::io::Read for Dribble {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let n = rest.len().min(buf.len()).min(7);
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// A writer that is not `Send` and fails after `limit` bytes.
struct FailingWriter {
    _not_send: std::rc::Rc<()>,
    written: usize,
    limit: usize,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() > self.limit {
            return Err(std::io::Error::other("disk full"));
        }
        self.written += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn non_send_dribbling_reader_and_failing_writer() {
    let tar = valid_tar();
    let gz = compress(Compression::Gzip, &tar);
    let input = Dribble {
        data: std::rc::Rc::new(gz.clone()),
        pos: 0,
    };
    let mut calls = 0u64;
    let mut last = 0;
    let imp = import(input, Vec::new(), &Limits::default(), &mut |n| {
        assert!(n >= last);
        last = n;
        calls += 1;
    })
    .unwrap();
    assert_eq!(imp.digest.sha512[..], Sha512::digest(&tar)[..]);
    assert_eq!(last, gz.len() as u64);
    assert!(calls > 10);

    let out = FailingWriter {
        _not_send: std::rc::Rc::new(()),
        written: 0,
        limit: 1000,
    };
    let err = import(&gz[..], out, &Limits::default(), &mut |_| {}).unwrap_err();
    assert_eq!(err.to_string(), "writing the image");
}

#[test]
fn read_manifest_from_compressed_images() {
    let tar = valid_tar();
    for c in [
        Compression::None,
        Compression::Gzip,
        Compression::Bzip2,
        Compression::Xz,
    ] {
        let (m, json) = read_manifest(&compress(c, &tar)[..]).unwrap();
        assert_eq!(m, manifest(), "{c:?}");
        assert_eq!(ImageManifest::from_json(&json).unwrap(), m);
    }
    assert!(matches!(
        read_manifest(&b"nope"[..]),
        Err(AciError::UnknownFormat)
    ));
}

/// xorshift64: a tiny deterministic PRNG for the mutation test.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn random_corruption_never_panics_or_escapes() {
    let base = valid_tar();
    let gz = compress(Compression::Gzip, &base);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("dest");
    for round in 0..300u32 {
        let src = if round.is_multiple_of(3) { &gz } else { &base };
        let mut data = src.clone();
        let flips = 1 + next(&mut seed) % 8;
        for _ in 0..flips {
            let i = (next(&mut seed) % data.len() as u64) as usize;
            data[i] = next(&mut seed) as u8;
        }
        if next(&mut seed).is_multiple_of(4) {
            let cut = (next(&mut seed) % data.len() as u64) as usize;
            data.truncate(cut);
        }
        let (r, out) = run(&data, &Limits::default());
        if let Ok(imp) = r {
            // Accepted: the output is exactly what was hashed.
            assert_eq!(
                imp.digest.sha512[..],
                Sha512::digest(&out)[..],
                "round {round}"
            );
        }
        if sniff(&data).ok() == Some(Compression::None) {
            let _ = std::fs::remove_dir_all(&dest);
            std::fs::create_dir(&dest).unwrap();
            let _ = extract_rootfs(&data[..], &dest, &ExtractOptions::default());
            assert_eq!(
                listing(tmp.path())
                    .iter()
                    .filter(|p| !p.starts_with("dest"))
                    .count(),
                0,
                "round {round}"
            );
        }
    }
}

#[test]
fn images_made_by_gnu_tar_import_and_extract() {
    use std::process::Command;
    if Command::new("tar").arg("--version").output().is_err() {
        eprintln!("SKIP: images_made_by_gnu_tar_import_and_extract: no tar binary");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("rootfs/usr/bin")).unwrap();
    std::fs::write(src.join("manifest"), manifest().to_json_pretty()).unwrap();
    std::fs::write(src.join("rootfs/usr/bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    std::os::unix::fs::symlink("usr/bin", src.join("rootfs/bin")).unwrap();
    std::fs::write(
        src.join(format!("rootfs/{}", "long-name-".repeat(20))),
        b"x",
    )
    .unwrap();
    for (i, args) in [
        vec!["-czf", "a.aci", "-C", "src", "manifest", "rootfs"],
        vec!["-cJf", "b.aci", "-C", "src", "."],
        vec![
            "--format=posix",
            "-cjf",
            "c.aci",
            "-C",
            "src",
            "manifest",
            "rootfs",
        ],
        vec![
            "--format=ustar",
            "-cf",
            "d.aci",
            "-C",
            "src",
            "manifest",
            "rootfs",
        ],
    ]
    .into_iter()
    .enumerate()
    {
        let st = Command::new("tar")
            .args(&args)
            .current_dir(tmp.path())
            .status()
            .unwrap();
        if !st.success() {
            // ustar cannot store the 200-byte name: expected for that format only.
            assert_eq!(i, 3, "tar {args:?} failed");
            continue;
        }
        let aci = std::fs::read(
            tmp.path()
                .join(args[args.iter().position(|a| a.ends_with(".aci")).unwrap()]),
        )
        .unwrap();
        let (r, tar) = run(&aci, &Limits::default());
        let imp = r.unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(imp.manifest, manifest());
        let dest = tmp.path().join(format!("dest{i}"));
        std::fs::create_dir(&dest).unwrap();
        extract_rootfs(&tar[..], &dest, &ExtractOptions::default()).unwrap();
        assert_eq!(
            std::fs::read(dest.join("bin/tool")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert!(dest.join("long-name-".repeat(20)).exists());
    }
}

/// Address space of an attack's child process (bytes).
const CHILD_AS_BYTES: u64 = 512 << 20;
/// Set in the child: run the attack instead of spawning.
const CHILD_ENV: &str = "APPC_BOUNDED_CHILD";

/// Runs `attack` (which returns the import's outcome as text) in a child process running
/// only the test `test` (its full path, e.g. `aci::tests::x`), with [`CHILD_AS_BYTES`] of
/// address space and `deadline`; returns the text it reported.
pub(crate) fn bounded(
    test: &str,
    deadline: std::time::Duration,
    attack: impl FnOnce() -> String,
) -> String {
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
    let start = std::time::Instant::now();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let took = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{test}: child failed ({:?}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < deadline, "{test}: took {took:?}");
    stdout
        .lines()
        .find_map(|l| l.split_once("ATTACK-RESULT: ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("{test}: no result in {stdout}"))
        .to_string()
}

/// The outcome of importing `input`: `ok` or the error with its causes.
fn outcome(input: impl std::io::Read, limits: &Limits) -> String {
    match import(input, std::io::sink(), limits, &mut |_| {}) {
        Ok(_) => "ok".into(),
        Err(e) => {
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

/// A tar (no end marker) of directories at the `paths` (`tar::Builder` writes GNU long
/// names for long ones).
fn dirs_tar(paths: impl Iterator<Item = String>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for p in paths {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, p, std::io::empty()).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn many_deep_entries_hit_the_path_memory_limit() {
    // 4000 entries of 1000 new components each (just under the depth limit): the old check
    // stored every prefix, ~1 MB an entry (4 GB in all); now ~100 KB of tree nodes an
    // entry, and the limit (64 MiB here) ends it.
    let got = bounded(
        "aci::tests::many_deep_entries_hit_the_path_memory_limit",
        std::time::Duration::from_secs(60),
        || {
            let tar = dirs_tar((0..4000).map(|i| format!("rootfs/{i:04}/{}", "a/".repeat(1000))));
            let limits = Limits {
                max_path_tree_bytes: 64 << 20,
                ..Limits::default()
            };
            outcome(&tar[..], &limits)
        },
    );
    assert!(got.contains("paths take more than 67108864 bytes"), "{got}");
}

#[test]
fn too_deep_paths_are_refused_and_ordinary_trees_fit_the_path_memory_limit() {
    let deep = hostile(|t| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        t.append_data(
            &mut h,
            format!("rootfs/{}", "a/".repeat(1100)),
            std::io::empty(),
        )
        .unwrap();
    });
    let got = outcome(&deep[..], &Limits::default());
    assert!(got.contains("more than 1024 components"), "{got}");
    // 100 000 files in 1000 directories, as in a distribution's tree, within a tenth of the
    // default limit: 1 000 000 such entries fit the default.
    let mut b = tar::Builder::new(Vec::new());
    let m = manifest().to_json();
    let mut h = tar::Header::new_gnu();
    h.set_size(m.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "manifest", &m[..]).unwrap();
    for i in 0..100_000u32 {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o644);
        let p = format!("rootfs/usr/share/package-{:03}/file-{i:06}.txt", i / 100);
        b.append_data(&mut h, p, std::io::empty()).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let limits = Limits {
        max_path_tree_bytes: Limits::default().max_path_tree_bytes / 10,
        ..Limits::default()
    };
    assert_eq!(outcome(&tar[..], &limits), "ok");
}

/// Counts the bytes read through it.
struct Counted<R> {
    inner: R,
    n: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// A tar stream made as it is read, never held: a GNU long-name (`L`) entry claiming `size`
/// bytes and that many `a`s, a directory entry it names, the end marker; and the counter of
/// bytes read from it.
pub(crate) fn long_name_bomb(
    size: u64,
) -> (
    impl std::io::Read,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use std::io::Read as _;
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(EntryType::GNULongName);
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    h.set_mode(0o644);
    h.set_size(size);
    h.set_cksum();
    let pad = (512 - size % 512) % 512;
    let mut d = tar::Header::new_gnu();
    d.set_entry_type(EntryType::Directory);
    d.set_path("rootfs/aaaa").unwrap();
    d.set_mode(0o755);
    d.set_size(0);
    d.set_cksum();
    let mut tail = vec![0u8; pad as usize];
    tail.extend_from_slice(d.as_bytes());
    tail.extend_from_slice(&[0u8; 1024]);
    let n = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stream = std::io::Cursor::new(h.as_bytes().to_vec())
        .chain(std::io::repeat(b'a').take(size))
        .chain(std::io::Cursor::new(tail));
    (
        Counted {
            inner: stream,
            n: n.clone(),
        },
        n,
    )
}

#[test]
fn a_one_gib_long_name_is_refused_without_buffering_it() {
    // The tar crate read a long name whole before anyone saw it: 1 GiB in memory.
    let got = bounded(
        "aci::tests::a_one_gib_long_name_is_refused_without_buffering_it",
        std::time::Duration::from_secs(30),
        || {
            let (bomb, read) = long_name_bomb(1 << 30);
            let import = outcome(bomb, &Limits::default());
            let read = read.load(std::sync::atomic::Ordering::Relaxed);
            assert!(read < 64 << 20, "import read {read} bytes");
            let (bomb, read) = long_name_bomb(1 << 30);
            let dest = tempfile::tempdir().unwrap();
            let extract = extract_rootfs(bomb, dest.path(), &ExtractOptions::default())
                .map(|_| "ok".to_string())
                .unwrap_or_else(|e| e.to_string());
            let read = read.load(std::sync::atomic::Ordering::Relaxed);
            assert!(read < 64 << 20, "extract read {read} bytes");
            let (bomb, _) = long_name_bomb(1 << 30);
            let manifest = read_manifest_from_tar(bomb)
                .map(|_| "ok".to_string())
                .unwrap_or_else(|e| e.to_string());
            format!("{import} | {extract} | {manifest}")
        },
    );
    let want = "tar GNU long name of 1073741824 bytes, more than the limit of 1048576";
    assert_eq!(got.matches(want).count(), 3, "{got}");
    // Within the limit, the same stream is an ordinary (if odd) entry.
    let (small, _) = long_name_bomb(1000);
    let got = outcome(small, &Limits::default());
    assert!(got.contains("aaaa"), "{got}");
}

#[test]
fn symlinks_resolved_through_symlinks_inside_rootfs_are_accepted() {
    let ok = hostile(|t| {
        link(t, EntryType::Symlink, "rootfs/s", ".");
        link(t, EntryType::Symlink, "rootfs/usr/bin", "../bin");
        link(t, EntryType::Symlink, "rootfs/usr/lib64", "/lib");
        link(t, EntryType::Symlink, "rootfs/a/up", "..");
        // Through s and up, and back down: never above rootfs.
        link(
            t,
            EntryType::Symlink,
            "rootfs/a/l",
            "up/s/usr/bin/../usr/lib64/..",
        );
        // Missing components are taken as written.
        link(t, EntryType::Symlink, "rootfs/m", "no/such/../..");
        // A loop resolves nowhere.
        link(t, EntryType::Symlink, "rootfs/x", "y/..");
        link(t, EntryType::Symlink, "rootfs/y", "x/..");
    });
    let (r, _) = run(&ok, &Limits::default());
    r.unwrap();
    // A chain deeper than Linux follows is refused.
    let deep = hostile(|t| {
        for i in 0..50 {
            link(
                t,
                EntryType::Symlink,
                &format!("rootfs/c{i}"),
                &format!("c{}", i + 1),
            );
        }
        file(t, "rootfs/c50");
    });
    let (r, _) = run(&deep, &Limits::default());
    assert!(r
        .unwrap_err()
        .to_string()
        .contains("resolves outside rootfs"));
}
