//! OCI and Docker image archives (`rkt fetch oci-archive:FILE`, `docker-archive:FILE`, and the
//! layouts `docker://` downloads) converted to an ACI: the first byte picks the form, the rest
//! is the archive. Opening and converting must return an image or a typed error within the
//! limits, never panic, hang or allocate without bound; what converts is an ACI whose manifest
//! reads back.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use oci_import::{Image, Limits, Reference};

fuzz_target!(|data: &[u8]| {
    let Some((form, archive)) = data.split_first() else {
        return;
    };
    let path = std::env::temp_dir().join(format!("rkt-fuzz-oci-{}", std::process::id()));
    let Ok(mut f) = std::fs::File::create(&path) else {
        return;
    };
    if f.write_all(archive).is_err() {
        return;
    }
    drop(f);
    let prefix = if form % 2 == 0 {
        "oci-archive"
    } else {
        "docker-archive"
    };
    let Some(Ok(r)) = Reference::parse(&format!("{prefix}:{}", path.display())) else {
        return;
    };
    let limits = Limits {
        max_json_bytes: 64 << 10,
        max_uncompressed_bytes: 8 << 20,
        ratio_grace_bytes: 1 << 20,
        max_entries: 10_000,
        max_archive_entries: 1_000,
        max_layers: 16,
        ..Default::default()
    };
    let Ok(image) = Image::open(&r, &limits) else {
        return;
    };
    let mut out = Vec::new();
    if image.write_aci(&mut out).is_ok() {
        appc::aci::read_manifest(&out[..]).expect("a converted image has its manifest");
    }
});
