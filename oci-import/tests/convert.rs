//! Conversion semantics (whiteouts, opaque directories, hardlinks, determinism) and the
//! hostile-image table, on layouts and archives built by `oci_import::testutil`.

use std::io::Read;
use std::path::Path;

use oci_import::testutil::{layer, write_docker, write_oci, Entry, Platforms, Tweaks};
use oci_import::{Image, Limits, OciError, Reference};

fn convert(reference: &str, limits: &Limits) -> Result<Vec<u8>, OciError> {
    let r = Reference::parse(reference).expect("an OCI reference")?;
    let img = Image::open(&r, limits)?;
    let mut out = Vec::new();
    img.write_aci(&mut out)?;
    Ok(out)
}

/// (path, type byte, link target, contents) of each entry.
fn entries(aci: &[u8]) -> Vec<(String, char, String, String)> {
    let mut ar = tar::Archive::new(aci);
    let mut v = Vec::new();
    for e in ar.entries().expect("tar") {
        let mut e = e.expect("entry");
        let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let t = char::from(e.header().entry_type().as_byte());
        let l = e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default();
        let mut s = String::new();
        let _ = e.read_to_string(&mut s);
        v.push((p, t, l, s));
    }
    v
}

fn base_layers() -> Vec<Vec<u8>> {
    vec![
        layer(&[
            Entry::Dir("etc/"),
            Entry::File(
                "etc/passwd",
                b"root:x:0:0::/:/bin/sh\nbob:x:7:9::/:/bin/sh\n",
            ),
            Entry::File("gone", b"x"),
            Entry::Dir("opq/"),
            Entry::File("opq/old", b"old"),
            Entry::Dir("d/"),
            Entry::File("d/under", b"u"),
            Entry::File("orig", b"first"),
            Entry::Hardlink("link", "orig"),
            Entry::File("keep", b"k"),
            Entry::File("nowdir", b"a file below, a directory above"),
        ]),
        layer(&[
            Entry::File(".wh.gone", b""),
            Entry::Dir("opq/"),
            Entry::File("opq/.wh..wh..opq", b""),
            Entry::File("opq/new", b"new"),
            Entry::Symlink("d", "etc"),
            Entry::File("orig", b"second"),
            Entry::File("keep", b"k2"),
            Entry::File("nowdir/x", b"x"),
        ]),
    ]
}

fn user_config() -> serde_json::Value {
    serde_json::json!({"Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"], "User": "bob",
                       "WorkingDir": "/opq", "Env": ["A=1"], "ExposedPorts": {"80/tcp": {}},
                       "Volumes": {"/data": {}}, "Labels": {"Maintainer": "me"}})
}

#[test]
fn layers_flatten_with_whiteouts_opaque_dirs_and_old_hardlink_targets() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("img");
    let tw = Tweaks {
        config: Some(user_config()),
        ..Default::default()
    };
    write_oci(&dir, "2.0", &base_layers(), &tw).expect("layout");
    let aci = convert(&format!("oci:{}:2.0", dir.display()), &Limits::default()).expect("converts");
    appc::aci::import(
        &aci[..],
        std::io::sink(),
        &appc::aci::Limits::default(),
        &mut |_| {},
    )
    .expect("the ACI importer accepts the output");
    let es = entries(&aci);
    let get = |p: &str| es.iter().find(|e| e.0 == p).cloned();
    assert!(
        get("rootfs/gone").is_none(),
        "whiteout hides the lower file"
    );
    assert!(
        get("rootfs/opq/old").is_none(),
        "opaque dir hides the lower content"
    );
    assert_eq!(get("rootfs/opq/new").map(|e| e.3), Some("new".into()));
    assert_eq!(
        get("rootfs/d").map(|e| (e.1, e.2)),
        Some(('2', "etc".into()))
    );
    assert!(
        get("rootfs/d/under").is_none(),
        "a symlink over a directory hides it"
    );
    assert_eq!(get("rootfs/orig").map(|e| e.3), Some("second".into()));
    assert_eq!(
        get("rootfs/link").map(|e| (e.1, e.3)),
        Some(('0', "first".into())),
        "a hardlink to a replaced file keeps the old content"
    );
    assert_eq!(get("rootfs/keep").map(|e| e.3), Some("k2".into()));
    assert!(
        get("rootfs/nowdir").is_none(),
        "a file below a higher layer's implied directory is hidden"
    );
    assert_eq!(get("rootfs/nowdir/x").map(|e| e.3), Some("x".into()));
    let (last, _, _, json) = es.last().cloned().expect("entries");
    assert_eq!(last, "manifest");
    let m = appc::ImageManifest::from_json(json.as_bytes()).expect("valid manifest");
    assert_eq!(m.name.as_str(), "img");
    assert_eq!(m.label("version"), Some("2.0"));
    let app = m.app.clone().expect("app");
    assert_eq!(app.exec, ["/bin/sh", "-c", "true"]);
    assert_eq!((app.user.as_str(), app.group.as_str()), ("bob", "9"));
    assert_eq!(app.working_directory.as_deref(), Some("/opq"));
    assert_eq!(app.ports.first().map(|p| p.port), Some(80));
    assert_eq!(
        app.mount_points.first().map(|p| p.path.as_str()),
        Some("/data")
    );
    assert_eq!(m.annotation("maintainer"), Some("me"));
}

#[test]
fn oci_layout_and_docker_archive_convert_to_the_same_bytes() {
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path().join("same");
    let tw = Tweaks {
        config: Some(user_config()),
        ..Default::default()
    };
    write_oci(&dir, "1", &base_layers(), &tw).expect("layout");
    let dock = t.path().join("d.tar");
    write_docker(&dock, "docker.io/library/same:1", &base_layers(), &tw).expect("archive");
    let a = convert(&format!("oci:{}:1", dir.display()), &Limits::default()).expect("oci");
    let b = convert(
        &format!("docker-archive:{}", dock.display()),
        &Limits::default(),
    )
    .expect("docker");
    assert!(a == b, "same image, same bytes");
}

#[test]
fn zstd_layers_and_multi_platform_layouts_convert_to_the_same_bytes() {
    let t = tempfile::tempdir().expect("tempdir");
    let tw = Tweaks {
        config: Some(user_config()),
        ..Default::default()
    };
    let make = |name: &str, tw: Tweaks| {
        // The image's name is the layout directory's: one name for all.
        let dir = t.path().join(name).join("img");
        write_oci(&dir, "1", &base_layers(), &tw).expect("layout");
        convert(&format!("oci:{}:1", dir.display()), &Limits::default())
    };
    let want = make("gzip", tw.clone()).expect("gzip");
    let zstd = make(
        "zstd",
        Tweaks {
            zstd: true,
            ..tw.clone()
        },
    );
    assert!(zstd.expect("zstd") == want, "zstd layers, same bytes");
    for p in [Platforms::Nested, Platforms::TopLevel] {
        let got = make(
            &format!("{p:?}"),
            Tweaks {
                platforms: Some(p),
                ..tw.clone()
            },
        );
        // The arm64 entry's manifest is absent: converting at all shows it was not picked.
        assert!(got.expect("multi-platform") == want, "{p:?}: same bytes");
    }
    for (p, text) in [
        (
            Platforms::NestedWithoutOurs,
            "no linux/amd64 image among its 2 entries",
        ),
        (Platforms::IndexInIndex, "an index inside an index"),
    ] {
        let e = make(
            &format!("{p:?}"),
            Tweaks {
                platforms: Some(p),
                ..tw.clone()
            },
        )
        .expect_err("no image to pick");
        assert!(e.to_string().contains(text), "{p:?}: {e}");
        assert!(e.is_bad_image(), "{p:?}: {e}");
    }
}

/// Writes one hostile OCI layout and returns the conversion's error text.
fn hostile(t: &Path, name: &str, layers: &[Vec<u8>], tw: &Tweaks, limits: &Limits) -> String {
    let dir = t.join(name);
    write_oci(&dir, "1", layers, tw).expect("layout");
    match convert(&format!("oci:{}", dir.display()), limits) {
        Ok(_) => panic!("{name}: hostile image converted"),
        Err(e) => {
            let mut s = e.to_string();
            let mut cur = std::error::Error::source(&e);
            while let Some(c) = cur {
                s.push_str(&format!(": {c}"));
                cur = c.source();
            }
            assert!(e.is_bad_image(), "{name}: {s} is not a bad-image error");
            s
        }
    }
}

/// (name, layers, tweaks, limits, expected error text).
type Case = (&'static str, Vec<Vec<u8>>, Tweaks, Limits, &'static str);

#[test]
fn hostile_images_are_rejected() {
    let t = tempfile::tempdir().expect("tempdir");
    let ok = vec![
        layer(&[Entry::File("a", b"a")]),
        layer(&[Entry::File("b", b"b")]),
    ];
    let d = Tweaks::default;
    let lim = Limits::default();
    let escape = vec![layer(&[Entry::File("../../escaped", b"x")])];
    let outside = t.path().join("outside-blob");
    let small_grace = Limits {
        ratio_grace_bytes: 64 << 10,
        max_ratio: 20,
        ..Limits::default()
    };
    let small_total = Limits {
        max_uncompressed_bytes: 256 << 10,
        ..Limits::default()
    };
    let cases: Vec<Case> = vec![
        ("path-escape", escape, d(), lim.clone(), "escapes the root"),
        (
            "corrupt-layer",
            ok.clone(),
            Tweaks {
                corrupt_layer: true,
                ..d()
            },
            lim.clone(),
            "digest mismatch",
        ),
        (
            "short-size",
            ok.clone(),
            Tweaks {
                short_size: true,
                ..d()
            },
            lim.clone(),
            "size mismatch",
        ),
        (
            "wrong-diff-id",
            ok.clone(),
            Tweaks {
                wrong_diff_id: true,
                ..d()
            },
            lim.clone(),
            "diff_id: digest mismatch",
        ),
        (
            "missing-layer",
            ok.clone(),
            Tweaks {
                missing_layer: true,
                ..d()
            },
            lim.clone(),
            "is missing",
        ),
        (
            "extra-diff-id",
            ok.clone(),
            Tweaks {
                extra_diff_id: true,
                ..d()
            },
            lim.clone(),
            "the config names 3 layers",
        ),
        (
            "symlinked-blob",
            ok.clone(),
            Tweaks {
                symlink_layer_to: Some(outside),
                ..d()
            },
            lim.clone(),
            "not a regular file",
        ),
        (
            "big-config",
            ok.clone(),
            Tweaks {
                config_padding: 5 << 20,
                ..d()
            },
            lim.clone(),
            "more than the limit",
        ),
        (
            "bomb",
            vec![layer(&[Entry::Zeros("zero", 1 << 20)])],
            d(),
            small_grace,
            "compression ratio",
        ),
        (
            "total",
            vec![layer(&[Entry::Zeros("zero", 512 << 10)])],
            Tweaks {
                uncompressed: true,
                ..d()
            },
            small_total,
            "total size",
        ),
        (
            "cross-layer-hardlink",
            vec![
                layer(&[Entry::File("a", b"a")]),
                layer(&[Entry::Hardlink("b", "a")]),
            ],
            d(),
            lim.clone(),
            "not in the same layer",
        ),
        (
            "hardlink-escape",
            vec![layer(&[Entry::Hardlink("b", "../../etc/shadow")])],
            d(),
            lim.clone(),
            "escapes the root",
        ),
    ];
    for (name, layers, tw, limits, want) in cases {
        let got = hostile(t.path(), name, &layers, &tw, &limits);
        assert!(got.contains(want), "{name}: got {got:?}, want {want:?}");
    }
}

#[test]
fn docker_archive_with_a_corrupt_layer_or_a_missing_one_is_rejected() {
    let t = tempfile::tempdir().expect("tempdir");
    let ok = vec![layer(&[Entry::File("a", b"a")])];
    for (tw, want) in [
        (
            Tweaks {
                corrupt_layer: true,
                ..Default::default()
            },
            "digest mismatch",
        ),
        (
            Tweaks {
                missing_layer: true,
                ..Default::default()
            },
            "is missing",
        ),
    ] {
        let f = t.path().join("d.tar");
        write_docker(&f, "x:1", &ok, &tw).expect("archive");
        let e = convert(
            &format!("docker-archive:{}", f.display()),
            &Limits::default(),
        )
        .expect_err("hostile archive converted");
        assert!(e.to_string().contains(want), "{e}");
    }
}
