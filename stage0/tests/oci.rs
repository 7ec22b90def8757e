//! `oci:`, `oci-archive:` and `docker-archive:` through the store: the same image in each
//! form gets one ID, a hostile one leaves the store as it was, an unsigned one needs
//! `--insecure-options=image`.

use std::path::Path;

use oci_import::testutil::{layer, write_docker, write_oci, Entry, Tweaks};
use stage0::fetch::{fetch_image, FetchOptions, InsecureOptions};
use stage0::store::Store;

fn opts() -> FetchOptions {
    FetchOptions {
        insecure: InsecureOptions {
            image: true,
            ..Default::default()
        },
        quiet: true,
        ..Default::default()
    }
}

/// Files under `dir`, recursively (count).
fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

fn layers() -> Vec<Vec<u8>> {
    vec![
        layer(&[Entry::Dir("etc/"), Entry::File("etc/hostname", b"x\n")]),
        layer(&[
            Entry::File("etc/.wh.hostname", b""),
            Entry::File("app", b"a"),
        ]),
    ]
}

#[test]
fn oci_forms_share_one_id_and_need_insecure_image() {
    let t = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&t.path().join("data")).expect("store");
    let dir = t.path().join("app");
    write_oci(&dir, "1.0", &layers(), &Tweaks::default()).expect("layout");
    let dock = t.path().join("app.tar");
    write_docker(&dock, "app:1.0", &layers(), &Tweaks::default()).expect("archive");
    let oci_ref = format!("oci:{}:1.0", dir.display());
    let unsigned = fetch_image(&store, &oci_ref, &FetchOptions::default())
        .expect_err("needs --insecure-options=image");
    assert!(unsigned.to_string().contains("--insecure-options=image"));
    let a = fetch_image(&store, &oci_ref, &opts()).expect("oci import");
    let b = fetch_image(
        &store,
        &format!("docker-archive:{}", dock.display()),
        &opts(),
    )
    .expect("docker import");
    assert_eq!(a.id, b.id);
    assert_eq!(a.display_name(), "app:1.0");
    assert_eq!(store.list().expect("list").len(), 1);
    let e = fetch_image(&store, &format!("oci:{}:2.0", dir.display()), &opts())
        .expect_err("no such tag");
    assert!(e.is_not_found(), "{e}");
}

#[test]
fn hostile_oci_images_leave_the_store_unchanged() {
    let t = tempfile::tempdir().expect("tempdir");
    let data = t.path().join("data");
    let store = Store::open(&data).expect("store");
    let ok = layers();
    let cases = [
        (
            "escape",
            vec![layer(&[Entry::File("../x", b"x")])],
            Tweaks::default(),
        ),
        (
            "digest",
            ok.clone(),
            Tweaks {
                corrupt_layer: true,
                ..Default::default()
            },
        ),
        (
            "missing",
            ok.clone(),
            Tweaks {
                extra_diff_id: true,
                ..Default::default()
            },
        ),
        (
            // The top layer is fine and converted first; the bottom one fails late.
            "late-failure",
            ok.clone(),
            Tweaks {
                wrong_diff_id: true,
                ..Default::default()
            },
        ),
    ];
    for (name, l, tw) in cases {
        let dir = t.path().join(name);
        write_oci(&dir, "1", &l, &tw).expect("layout");
        let e = fetch_image(&store, &format!("oci:{}", dir.display()), &opts())
            .expect_err("hostile image imported");
        assert!(e.is_bad_image(), "{name}: {e} is not a bad-image error");
        assert!(store.list().expect("list").is_empty(), "{name}: indexed");
        assert_eq!(
            files_under(&data.join("cas/blob")),
            0,
            "{name}: a blob was published"
        );
        assert_eq!(
            files_under(&data.join("cas/tmp")),
            0,
            "{name}: a temp file remains"
        );
    }
}
