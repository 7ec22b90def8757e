//! Extraction tests: a real image, layering, whitelist, and hostile archives that must not
//! touch anything outside the destination.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use tar::EntryType;

use super::tests::{manifest, valid_tar};
use super::*;

fn opts() -> ExtractOptions {
    ExtractOptions::default()
}

#[test]
fn extracts_a_valid_image() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("rootfs");
    fs::create_dir(&dest).unwrap();
    extract_rootfs(&valid_tar()[..], &dest, &opts()).unwrap();
    assert_eq!(fs::read(dest.join("bin/true")).unwrap(), b"#!/bin/sh\n");
    let md = fs::metadata(dest.join("bin/true")).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o755);
    assert_eq!(md.mtime(), 0);
    assert_eq!(
        fs::read_link(dest.join("usr/bin")).unwrap(),
        Path::new("../bin")
    );
    assert_eq!(
        fs::read_link(dest.join("bin/abs")).unwrap(),
        Path::new("/etc/hosts")
    );
    assert_eq!(
        fs::metadata(dest.join("bin/false")).unwrap().ino(),
        md.ino()
    );
    assert_eq!(fs::metadata(dest.join("bin")).unwrap().mtime(), 0);
    let deep = dest.join(format!("deep/{}/file", "d".repeat(120)));
    assert_eq!(fs::read(deep).unwrap(), vec![7u8; 3000]);
    assert!(!dest.join("manifest").exists());
}

#[test]
fn keeps_modes_owners_and_read_only_dirs() {
    let mut b = AciBuilder::new(Vec::new(), Compression::None, &manifest()).unwrap();
    b.set_mtime(1_000_000);
    b.add_dir("/ro", 0o555).unwrap();
    b.add_file("/ro/suid", 0o4755, b"x").unwrap();
    let mut tar = b.finish().unwrap();
    // Re-own one entry: rebuild with a raw header carrying uid/gid 1234.
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o640);
    h.set_uid(1234);
    h.set_gid(4321);
    h.set_size(2);
    h.set_mtime(42);
    t.append_data(&mut h, "rootfs/owned", &b"hi"[..]).unwrap();
    tar.truncate(tar.len() - 1024);
    tar.extend(t.into_inner().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    extract_rootfs(&tar[..], tmp.path(), &opts()).unwrap();
    let ro = fs::metadata(tmp.path().join("ro")).unwrap();
    assert_eq!(ro.permissions().mode() & 0o7777, 0o555);
    assert_eq!(ro.mtime(), 1_000_000);
    let suid = fs::metadata(tmp.path().join("ro/suid")).unwrap();
    assert_eq!(suid.permissions().mode() & 0o7777, 0o4755);
    let owned = fs::metadata(tmp.path().join("owned")).unwrap();
    assert_eq!(owned.mtime(), 42);
    if opts().preserve_owner {
        assert_eq!((owned.uid(), owned.gid()), (1234, 4321));
    } else {
        eprintln!("SKIP: keeps_modes_owners_and_read_only_dirs (owner part): not root");
    }
}

#[test]
fn later_layers_replace_symlinks_instead_of_following_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("d");
    fs::create_dir(&dest).unwrap();
    let mut b = AciBuilder::new(Vec::new(), Compression::None, &manifest()).unwrap();
    b.add_file("/usr/lib/x", 0o644, b"x").unwrap();
    b.add_symlink("/lib", "usr/lib").unwrap();
    b.add_file("/f", 0o644, b"old").unwrap();
    extract_rootfs(&b.finish().unwrap()[..], &dest, &opts()).unwrap();
    let mut b = AciBuilder::new(Vec::new(), Compression::None, &manifest()).unwrap();
    b.add_dir("/lib", 0o755).unwrap();
    b.add_file("/lib/y", 0o644, b"y").unwrap();
    b.add_dir("/f", 0o700).unwrap();
    b.add_file("/usr/lib/x", 0o600, b"new").unwrap();
    extract_rootfs(&b.finish().unwrap()[..], &dest, &opts()).unwrap();
    assert!(fs::symlink_metadata(dest.join("lib")).unwrap().is_dir());
    assert_eq!(fs::read(dest.join("lib/y")).unwrap(), b"y");
    assert!(!dest.join("usr/lib/y").exists());
    assert_eq!(fs::read(dest.join("usr/lib/x")).unwrap(), b"new");
    assert!(fs::symlink_metadata(dest.join("f")).unwrap().is_dir());
}

#[test]
fn whitelist_filters() {
    let mut b = AciBuilder::new(Vec::new(), Compression::None, &manifest()).unwrap();
    b.add_dir("/etc", 0o755).unwrap();
    b.add_file("/etc/keep", 0o644, b"k").unwrap();
    b.add_file("/etc/drop", 0o644, b"d").unwrap();
    b.add_dir("/opt", 0o755).unwrap();
    b.add_dir("/opt/app", 0o755).unwrap();
    b.add_file("/opt/app/bin", 0o755, b"b").unwrap();
    b.add_file("/root.txt", 0o644, b"r").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let o = ExtractOptions {
        whitelist: vec!["/etc/keep".into(), "/opt/app/".into()],
        ..opts()
    };
    extract_rootfs(&b.finish().unwrap()[..], tmp.path(), &o).unwrap();
    assert!(tmp.path().join("etc/keep").exists());
    assert!(!tmp.path().join("etc/drop").exists());
    assert!(tmp.path().join("opt/app/bin").exists());
    assert!(!tmp.path().join("root.txt").exists());
}

/// Everything under `dir`, as sorted relative paths.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn hostile_archives_stay_inside_dest() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    let dest = tmp.path().join("dest");
    let o = outside.display().to_string();
    type Build = Box<dyn Fn(&mut tar::Builder<Vec<u8>>)>;
    let f = |p: String| -> Build {
        Box::new(move |t| {
            raw_tar_entry(t, p.as_bytes(), EntryType::Regular, None, 0o644, b"pwned").unwrap()
        })
    };
    let l = |kind: EntryType, p: &'static str, target: String| -> Build {
        Box::new(move |t| {
            raw_tar_entry(t, p.as_bytes(), kind, Some(target.as_bytes()), 0o777, b"").unwrap()
        })
    };
    // (name, entries, expected error or None when extraction safely succeeds)
    let cases: Vec<(&str, Vec<Build>, Option<String>)> = vec![
        ("dotdot", vec![f("rootfs/../outside/pwned".into())], Some(r#"entry "rootfs/../outside/pwned": path contains "..""#.into())),
        ("absolute", vec![f(format!("{o}/pwned"))], Some(format!(r#"entry "{o}/pwned": absolute path"#))),
        ("outside layout", vec![f("etc/pwned".into())], Some(r#"entry "etc/pwned": not under rootfs/ and not the manifest"#.into())),
        ("symlinked dir then file", vec![l(EntryType::Symlink, "rootfs/a", o.clone()), f("rootfs/a/pwned".into())], None),
        ("relative escape then file", vec![l(EntryType::Symlink, "rootfs/l", "../../outside".into()), f("rootfs/l/pwned".into())], None),
        ("file over symlink to outside file", vec![l(EntryType::Symlink, "rootfs/v", format!("{o}/victim")), f("rootfs/v".into())], None),
        ("hardlink absolute", vec![l(EntryType::Link, "rootfs/h", format!("{o}/victim"))],
            Some(format!(r#"entry "rootfs/h": hardlink target "{o}/victim" is not an earlier entry in rootfs"#))),
        ("hardlink dotdot", vec![l(EntryType::Link, "rootfs/h", "rootfs/../../outside/victim".into())],
            Some(r#"entry "rootfs/h": hardlink target "rootfs/../../outside/victim" is not an earlier entry in rootfs"#.into())),
        ("hardlink through symlink", vec![l(EntryType::Symlink, "rootfs/s", o.clone()), l(EntryType::Link, "rootfs/h", "rootfs/s/victim".into())],
            Some(r#"extracting "h": openat failed"#.into())),
        ("hardlink missing", vec![l(EntryType::Link, "rootfs/h", "rootfs/nope".into())],
            Some(r#"entry "rootfs/h": hardlink target "rootfs/nope" is not an earlier entry in rootfs"#.into())),
        ("device", vec![Box::new(|t: &mut tar::Builder<Vec<u8>>| raw_tar_entry(t, b"rootfs/mem", EntryType::Char, None, 0o600, b"").unwrap())],
            Some(r#"entry "rootfs/mem": device nodes and fifos are not allowed"#.into())),
    ];
    for (name, entries, want) in cases {
        let _ = fs::remove_dir_all(&outside);
        let _ = fs::remove_dir_all(&dest);
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("victim"), b"original").unwrap();
        fs::create_dir(&dest).unwrap();
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
        for e in &entries {
            e(&mut t);
        }
        let tar = t.into_inner().unwrap();
        let r = extract_rootfs(&tar[..], &dest, &opts());
        match (&r, &want) {
            (Err(e), Some(w)) => assert_eq!(&e.to_string(), w, "{name}"),
            (Ok(()), None) => {}
            _ => panic!("{name}: got {r:?}, want {want:?}"),
        }
        assert_eq!(listing(&outside), ["victim"], "{name}: wrote outside dest");
        assert_eq!(
            fs::read(outside.join("victim")).unwrap(),
            b"original",
            "{name}"
        );
        assert_eq!(
            fs::metadata(outside.join("victim")).unwrap().nlink(),
            1,
            "{name}"
        );
        assert_eq!(
            listing(tmp.path())
                .iter()
                .filter(|p| !p.starts_with("dest") && !p.starts_with("outside"))
                .count(),
            0,
            "{name}"
        );
    }
    // The safe outcomes: symlinks were replaced by directories / files inside dest.
    let _ = fs::remove_dir_all(&dest);
    fs::create_dir(&dest).unwrap();
    let mut t = tar::Builder::new(Vec::new());
    raw_tar_entry(
        &mut t,
        b"rootfs/a",
        EntryType::Symlink,
        Some(o.as_bytes()),
        0o777,
        b"",
    )
    .unwrap();
    raw_tar_entry(
        &mut t,
        b"rootfs/a/pwned",
        EntryType::Regular,
        None,
        0o644,
        b"pwned",
    )
    .unwrap();
    extract_rootfs(&t.into_inner().unwrap()[..], &dest, &opts()).unwrap();
    assert!(fs::symlink_metadata(dest.join("a")).unwrap().is_dir());
    assert_eq!(fs::read(dest.join("a/pwned")).unwrap(), b"pwned");
}

#[test]
fn devices_when_allowed() {
    if !opts().preserve_owner {
        eprintln!("SKIP: devices_when_allowed: mknod needs root");
        return;
    }
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(EntryType::Char);
    h.set_mode(0o666);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(0);
    t.append_data(&mut h, "rootfs/dev/null", &b""[..]).unwrap();
    raw_tar_entry(&mut t, b"rootfs/fifo", EntryType::Fifo, None, 0o600, b"").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let o = ExtractOptions {
        allow_devices: true,
        ..opts()
    };
    extract_rootfs(&t.into_inner().unwrap()[..], tmp.path(), &o).unwrap();
    let md = fs::metadata(tmp.path().join("dev/null")).unwrap();
    assert_eq!(md.rdev(), libc::makedev(1, 3));
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::symlink_metadata(tmp.path().join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn host_tree_round_trips_through_builder_import_and_extract() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host");
    fs::create_dir_all(host.join("sub/deeper")).unwrap();
    fs::write(host.join("a.txt"), b"alpha").unwrap();
    fs::set_permissions(host.join("a.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::write(host.join("sub/deeper/b.bin"), vec![9u8; 70_000]).unwrap();
    fs::hard_link(host.join("a.txt"), host.join("sub/a-link")).unwrap();
    symlink("../a.txt", host.join("sub/rel")).unwrap();
    let mut b = AciBuilder::new(Vec::new(), Compression::Gzip, &manifest()).unwrap();
    b.add_path_from_host("/opt/app", &host).unwrap();
    let gz = b.finish().unwrap();
    // `/` adds the directory's contents as the rootfs itself.
    let mut whole = AciBuilder::new(Vec::new(), Compression::None, &manifest()).unwrap();
    whole.add_path_from_host("/", &host).unwrap();
    let whole = whole.finish().unwrap();
    let mut sink = Vec::new();
    import(&whole[..], &mut sink, &Limits::default(), &mut |_| {}).unwrap();
    let wdest = tmp.path().join("whole");
    fs::create_dir(&wdest).unwrap();
    extract_rootfs(&whole[..], &wdest, &opts()).unwrap();
    assert_eq!(fs::read(wdest.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(
        fs::read_link(wdest.join("sub/rel")).unwrap(),
        Path::new("../a.txt")
    );

    let mut tar = Vec::new();
    let imp = import(&gz[..], &mut tar, &Limits::default(), &mut |_| {}).unwrap();
    assert_eq!(imp.uncompressed_size, tar.len() as u64);
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    extract_rootfs(&tar[..], &dest, &opts()).unwrap();
    let app = dest.join("opt/app");
    assert_eq!(fs::read(app.join("a.txt")).unwrap(), b"alpha");
    assert_eq!(
        fs::metadata(app.join("a.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    assert_eq!(
        fs::read(app.join("sub/deeper/b.bin")).unwrap(),
        vec![9u8; 70_000]
    );
    assert_eq!(
        fs::metadata(app.join("sub/a-link")).unwrap().ino(),
        fs::metadata(app.join("a.txt")).unwrap().ino()
    );
    assert_eq!(
        fs::read_link(app.join("sub/rel")).unwrap(),
        Path::new("../a.txt")
    );
    assert_eq!(
        fs::metadata(app.join("sub")).unwrap().mtime(),
        fs::metadata(host.join("sub")).unwrap().mtime()
    );
}

#[test]
fn xattrs_are_restored() {
    let tmp = tempfile::tempdir().unwrap();
    // Probe: does this filesystem take user xattrs?
    let probe = tmp.path().join("probe");
    fs::write(&probe, b"").unwrap();
    let f = fs::File::open(&probe).unwrap();
    use std::os::fd::AsFd;
    if super::fsat::set_xattr_fd(f.as_fd(), b"user.probe", b"1").is_err() {
        eprintln!(
            "SKIP: xattrs_are_restored: no user xattrs on {}",
            tmp.path().display()
        );
        return;
    }
    let mut t = tar::Builder::new(Vec::new());
    t.append_pax_extensions([("SCHILY.xattr.user.color", &b"blue"[..])])
        .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(1);
    t.append_data(&mut h, "rootfs/x", &b"x"[..]).unwrap();
    let dest = tmp.path().join("d");
    fs::create_dir(&dest).unwrap();
    extract_rootfs(&t.into_inner().unwrap()[..], &dest, &opts()).unwrap();
    let path = std::ffi::CString::new(dest.join("x").to_str().unwrap()).unwrap();
    let mut buf = [0u8; 16];
    // SAFETY: valid C strings and a writable buffer of the given length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"user.color".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert_eq!(n, 4);
    assert_eq!(&buf[..4], b"blue");
}
