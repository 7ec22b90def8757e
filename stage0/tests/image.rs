//! `rkt image list|rm|cat-manifest|export|extract|render|gc|verify` end to end with real ACIs.

mod store_util;

use std::fs;
use std::path::Path;

use store_util::*;

fn fetch(dir: &Path, file: &Path) -> String {
    ok(&rkt(
        dir,
        &[
            "--insecure-options=image",
            "fetch",
            file.to_str().expect("utf8"),
        ],
    ))
}

#[test]
fn list_formats() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let f = write_file(
        t.path(),
        "a.aci",
        &simple_aci("example.com/list", "1.2", "x"),
    );
    fetch(&dir, &f);
    let full = format!("sha512-{}", gunzip_digest(&f, "sha512sum"));
    let out = ok(&rkt(&dir, &["image", "list"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let header: Vec<&str> = lines[0].split('\t').filter(|c| !c.is_empty()).collect();
    assert_eq!(header, ["ID", "NAME", "SIZE", "IMPORT TIME", "LAST USED"]);
    let row: Vec<&str> = lines[1].split('\t').filter(|c| !c.is_empty()).collect();
    assert_eq!(row[0], &full[..19], "short ID is sha512- plus 12 hex");
    assert_eq!(row[1], "example.com/list:1.2");
    assert!(row[2].ends_with("KiB"), "{row:?}");
    assert!(row[3] == "now" || row[3].ends_with("ago"), "{row:?}");
    // --no-legend --full: full ID and byte size.
    let out = ok(&rkt(&dir, &["image", "list", "--no-legend", "--full"]));
    let row: Vec<&str> = out.split('\t').filter(|c| !c.is_empty()).collect();
    assert_eq!(row[0], full);
    let size = fs::metadata(blobs(&dir)[0].clone()).expect("blob").len();
    assert_eq!(row[2], size.to_string());
    // --fields.
    let out = ok(&rkt(
        &dir,
        &["image", "list", "--no-legend", "--fields=name,id", "--full"],
    ));
    assert_eq!(
        out.split('\t')
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>(),
        ["example.com/list:1.2", full.as_str()]
    );
    // JSON.
    let out = ok(&rkt(&dir, &["image", "list", "--format=json"]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v[0]["id"], full.as_str());
    assert_eq!(v[0]["name"], "example.com/list:1.2");
    assert_eq!(v[0]["size"], size);
    assert!(v[0]["import_time"]
        .as_i64()
        .is_some_and(|t| t > 1_500_000_000_000_000_000));
    let pretty = ok(&rkt(&dir, &["image", "list", "--format=json-pretty"]));
    assert!(pretty.contains("\n\t{"), "{pretty}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&pretty).expect("json"),
        v
    );
    let o = rkt(&dir, &["image", "list", "--fields=bogus"]);
    assert_eq!(o.status.code(), Some(2));
    let o = rkt(&dir, &["image", "list", "--format=yaml"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn cat_manifest_export_rm() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let f = write_file(t.path(), "a.aci", &simple_aci("example.com/cat", "1", "x"));
    let id = fetch(&dir, &f);
    let out = ok(&rkt(&dir, &["image", "cat-manifest", "example.com/cat"]));
    assert!(
        out.starts_with("{\n\t\"acKind\": \"ImageManifest\""),
        "{out}"
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["name"], "example.com/cat");
    let compact = ok(&rkt(
        &dir,
        &["image", "cat-manifest", "--pretty-print=false", &id],
    ));
    assert!(!compact.contains('\n'));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&compact).expect("json"),
        v
    );
    // export writes the uncompressed ACI: byte-identical to gzip -dc.
    let out = t.path().join("out.aci");
    ok(&rkt(
        &dir,
        &["image", "export", &id, out.to_str().expect("utf8")],
    ));
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc '{}' | cmp - '{}'",
            f.display(),
            out.display()
        ))
        .status()
        .expect("cmp");
    assert!(o.success(), "export differs from gzip -dc");
    let o = rkt(&dir, &["image", "export", &id, out.to_str().expect("utf8")]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--overwrite"), "{}", stderr(&o));
    ok(&rkt(
        &dir,
        &[
            "image",
            "export",
            "--overwrite",
            &id,
            out.to_str().expect("utf8"),
        ],
    ));
    // The exported ACI imports again with the same ID.
    assert_eq!(fetch(&dir, &out), id);
    // rm removes the row and the blob; a second rm says not found (exit 3).
    let o = rkt(&dir, &["image", "rm", &id]);
    ok(&o);
    assert!(
        stderr(&o).contains("successfully removed"),
        "{}",
        stderr(&o)
    );
    assert!(image_rows(&dir).is_empty());
    assert!(blobs(&dir).is_empty());
    let o = rkt(&dir, &["image", "rm", &id]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let o = rkt(&dir, &["image", "cat-manifest", "example.com/cat"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

#[test]
fn extract_and_render_with_dependencies_and_whitelist() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let base_m = manifest("example.com/base", &[], &[]);
    let mut b = appc::aci::AciBuilder::new(Vec::new(), appc::aci::Compression::Gzip, &base_m)
        .expect("builder");
    b.add_file("etc/layer", 0o644, b"base").expect("file");
    b.add_file("bin/tool", 0o755, b"#!/bin/sh\n").expect("file");
    b.add_symlink("etc/link", "layer").expect("symlink");
    let base = write_file(t.path(), "base.aci", &b.finish().expect("finish"));
    let top_m = manifest("example.com/top", &[], &["example.com/base"]);
    let top = write_file(
        t.path(),
        "top.aci",
        &build_aci(&top_m, &[("etc/layer", b"top"), ("etc/top", b"t")], true),
    );
    fetch(&dir, &base);
    let top_id = fetch(&dir, &top);

    // extract: only the image's own files, with the manifest.
    let ex = t.path().join("ex");
    ok(&rkt(
        &dir,
        &["image", "extract", &top_id, ex.to_str().expect("utf8")],
    ));
    assert!(ex.join("manifest").is_file());
    assert_eq!(
        fs::read(ex.join("rootfs/etc/layer")).expect("layer"),
        b"top"
    );
    // As root the output keeps the image's owners and setuid bits: only root may enter it.
    let dir_mode = |p: &std::path::Path| {
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(p).expect("stat").permissions())
            & 0o777
    };
    if nix::unistd::geteuid().is_root() {
        assert_eq!(dir_mode(&ex), 0o700);
    }
    assert!(!ex.join("rootfs/bin/tool").exists());
    let o = rkt(
        &dir,
        &["image", "extract", &top_id, ex.to_str().expect("utf8")],
    );
    assert!(!o.status.success(), "existing dir needs --overwrite");
    ok(&rkt(
        &dir,
        &[
            "image",
            "extract",
            "--overwrite",
            "--rootfs-only",
            &top_id,
            ex.to_str().expect("utf8"),
        ],
    ));
    assert!(ex.join("etc/top").is_file() && !ex.join("manifest").exists());

    // render: dependencies first, later files overwrite.
    let rd = t.path().join("rd");
    ok(&rkt(
        &dir,
        &[
            "image",
            "render",
            "--rootfs-only",
            "example.com/top",
            rd.to_str().expect("utf8"),
        ],
    ));
    assert_eq!(fs::read(rd.join("etc/layer")).expect("layer"), b"top");
    if nix::unistd::geteuid().is_root() {
        assert_eq!(dir_mode(&rd), 0o700, "the rendered root, too");
    }
    assert_eq!(
        fs::read_link(rd.join("etc/link")).expect("link").to_str(),
        Some("layer")
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(rd.join("bin/tool"))
            .expect("tool")
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    // The tree store holds one rendered tree with the flag written last.
    let trees: Vec<_> = fs::read_dir(dir.join("cas/tree"))
        .expect("trees")
        .flatten()
        .collect();
    assert_eq!(trees.len(), 1);
    let tree = trees[0].path();
    assert!(tree
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("deps-sha512-")));
    assert!(tree.join("rendered").is_file() && tree.join("manifest").is_file());

    // pathWhitelist of the top image filters the rendered tree.
    let mut wl = manifest("example.com/wl", &[], &["example.com/base"]);
    wl.path_whitelist = vec!["/etc/layer".into(), "/etc/wl".into()];
    let wlf = write_file(
        t.path(),
        "wl.aci",
        &build_aci(&wl, &[("etc/wl", b"w"), ("etc/dropped", b"d")], true),
    );
    fetch(&dir, &wlf);
    let rw = t.path().join("rw");
    ok(&rkt(
        &dir,
        &[
            "image",
            "render",
            "example.com/wl",
            rw.to_str().expect("utf8"),
        ],
    ));
    assert_eq!(
        fs::read(rw.join("rootfs/etc/layer")).expect("layer"),
        b"base"
    );
    assert!(rw.join("rootfs/etc/wl").is_file());
    assert!(!rw.join("rootfs/etc/dropped").exists());
    assert!(!rw.join("rootfs/bin/tool").exists());

    // A missing dependency is "image not found".
    let orphan_m = manifest("example.com/orphan", &[], &["nothere.invalid/dep"]);
    let of = write_file(
        t.path(),
        "orphan.aci",
        &build_aci(&orphan_m, &[("x", b"x")], true),
    );
    fetch(&dir, &of);
    let o = rkt(
        &dir,
        &[
            "image",
            "render",
            "example.com/orphan",
            t.path().join("ro").to_str().expect("utf8"),
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothere.invalid/dep"), "{}", stderr(&o));
}

#[test]
fn gc_removes_unused_images_and_orphaned_trees() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let base_m = manifest("example.com/usedbase", &[], &[]);
    let base = write_file(
        t.path(),
        "base.aci",
        &build_aci(&base_m, &[("etc/b", b"b")], true),
    );
    let used_m = manifest(
        "example.com/used",
        &[("version", "1")],
        &["example.com/usedbase"],
    );
    let used = write_file(
        t.path(),
        "used.aci",
        &build_aci(&used_m, &[("etc/u", b"u")], true),
    );
    let unused = write_file(
        t.path(),
        "unused.aci",
        &simple_aci("example.com/unused", "1", "n"),
    );
    fetch(&dir, &base);
    fetch(&dir, &used);
    fetch(&dir, &unused);
    let used_full = ok(&rkt(&dir, &["fetch", "--full", "example.com/used"]));
    ok(&rkt(
        &dir,
        &[
            "image",
            "render",
            "example.com/unused",
            t.path().join("r1").to_str().expect("utf8"),
        ],
    ));
    // A pod references the "used" image.
    let pod = dir.join("pods/exited-garbage/6a1a2d4c-0000-4000-8000-000000000001");
    fs::create_dir_all(&pod).expect("pod dir");
    let pm = serde_json::json!({
        "acVersion": "0.8.11", "acKind": "PodManifest",
        "apps": [{"name": "used", "image": {"id": used_full}}]
    });
    fs::write(pod.join("pod"), pm.to_string()).expect("pod manifest");
    // Within the grace period nothing goes.
    ok(&rkt(&dir, &["image", "gc"]));
    assert_eq!(image_rows(&dir).len(), 3);
    let o = rkt(&dir, &["image", "gc", "--grace-period=0s"]);
    ok(&o);
    let rows = image_rows(&dir);
    assert_eq!(
        rows.len(),
        2,
        "the referenced image and its dependency stay: {rows:?}"
    );
    assert!(
        rows.iter().all(|r| !r.contains("example.com/unused")),
        "{rows:?}"
    );
    assert_eq!(blobs(&dir).len(), 2);
    assert!(stderr(&o).contains("removed treestore"), "{}", stderr(&o));
    let trees: Vec<_> = fs::read_dir(dir.join("cas/tree"))
        .expect("trees")
        .flatten()
        .collect();
    assert!(trees.is_empty(), "{trees:?}");
    let o = rkt(&dir, &["image", "gc", "--grace-period=soon"]);
    assert_eq!(o.status.code(), Some(2));
}

/// Issue 9: an image whose version label carries terminal escapes and a newline cannot break
/// `rkt image list`'s table or drive the terminal reading it.
#[test]
fn list_escapes_control_characters_from_images() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let f = write_file(
        t.path(),
        "evil.aci",
        &simple_aci("example.com/evil", "1\u{1b}]0;owned\u{7}\nFAKE\trow", "x"),
    );
    fetch(&dir, &f);
    let out = ok(&rkt(&dir, &["image", "list"]));
    assert_eq!(out.lines().count(), 2, "one header, one row: {out:?}");
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
    assert!(out.contains("1\\x1b]0;owned\\x07\\nFAKE\\trow"), "{out:?}");
}

/// The one tree of `dir`'s store.
fn only_tree(dir: &Path) -> std::path::PathBuf {
    let trees: Vec<_> = fs::read_dir(dir.join("cas/tree"))
        .expect("trees")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(trees.len(), 1, "{trees:?}");
    trees[0].clone()
}

/// `rkt image verify`: an intact tree verifies; a tree changed behind rkt's back is found and
/// rendered again; a tree pods are built on is reported and left alone; a damaged blob is an
/// error; an image not rendered yet is rendered.
#[test]
fn verify_finds_changed_trees_and_damaged_blobs() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("store");
    let f = write_file(
        t.path(),
        "v.aci",
        &simple_aci("example.com/verify", "1", "original"),
    );
    fetch(&dir, &f);
    // Not rendered yet: verify renders it.
    let out = ok(&rkt(&dir, &["image", "verify", "example.com/verify"]));
    assert!(out.contains("not rendered; rebuilding"), "{out}");
    assert!(out.contains("successfully verified checksum"), "{out}");
    let tree = only_tree(&dir);
    let digest = fs::read_to_string(tree.join("digest")).expect("digest recorded");
    assert!(digest.starts_with("sha256-"), "{digest}");
    let out = ok(&rkt(&dir, &["image", "verify", "example.com/verify"]));
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with(
            "successfully verified checksum for image: \"example.com/verify\" (\"sha512-"
        ),
        "{out}"
    );

    // A file of the tree changed: found, and the tree is rendered again from the blob.
    let content = tree.join("rootfs/etc/content");
    fs::write(&content, b"tampered").expect("tamper");
    let out = ok(&rkt(&dir, &["image", "verify", "example.com/verify"]));
    assert!(
        out.contains("the tree changed since it was rendered"),
        "{out}"
    );
    assert!(out.contains("successfully verified checksum"), "{out}");
    assert_eq!(fs::read(&content).expect("content"), b"original");

    // A tree a pod is built on is not rendered again under it.
    fs::write(&content, b"tampered again").expect("tamper");
    let pod = dir.join("pods/run/6a1a2d4c-0000-4000-8000-000000000002");
    fs::create_dir_all(pod.join("appsinfo/app")).expect("pod dir");
    let tree_id = tree
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    fs::write(pod.join("appsinfo/app/treeStoreID"), &tree_id).expect("tree id");
    let o = rkt(&dir, &["image", "verify", "example.com/verify"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("pods are built on it"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read(&content).expect("content"), b"tampered again");
    fs::remove_dir_all(dir.join("pods")).expect("rm pods");

    // A flipped byte in the blob: an error that says what to do, and the tree is left alone.
    let blob = blobs(&dir)[0].clone();
    let mut b = fs::read(&blob).expect("blob");
    let last = b.len() - 1;
    b[last] ^= 1;
    fs::write(&blob, b).expect("damage blob");
    let o = rkt(&dir, &["image", "verify", "example.com/verify"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no longer hashes to its ID"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("rkt image rm"), "{}", stderr(&o));
    assert_eq!(fs::read(&content).expect("content"), b"tampered again");

    // An unknown image is an error; no argument is a usage error.
    assert!(!rkt(&dir, &["image", "verify", "example.com/none"])
        .status
        .success());
    assert_eq!(rkt(&dir, &["image", "verify"]).status.code(), Some(2));
}
