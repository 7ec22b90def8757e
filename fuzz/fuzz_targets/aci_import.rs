//! The hardened single-pass ACI importer over arbitrary (possibly compressed) streams: it must
//! return `Ok` or a typed error within its limits, never panic, hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = appc::aci::Limits {
        max_uncompressed_bytes: 8 << 20,
        ratio_grace_bytes: 1 << 20,
        max_entries: 10_000,
        max_manifest_bytes: 64 << 10,
        ..Default::default()
    };
    let mut out = Vec::new();
    let res = appc::aci::import(data, &mut out, &limits, &mut |_| {});
    if let Ok(imported) = res {
        // What was accepted is exactly what was written: the tar the store keeps.
        assert!(out.len() as u64 <= limits.max_uncompressed_bytes);
        let again = appc::aci::read_manifest(&out[..]).expect("the stored tar has its manifest");
        assert_eq!(again.1, imported.manifest_json);
    }
    let _ = appc::aci::read_manifest(data);
});
