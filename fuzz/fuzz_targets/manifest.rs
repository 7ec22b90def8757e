//! Image and pod manifest parsing and validation: any input gives `Ok` or a typed error, and a
//! manifest that parses serializes to JSON that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = appc::ImageManifest::from_json(data) {
        let again = serde_json::to_vec(&m).expect("a parsed image manifest serializes");
        let m2 = appc::ImageManifest::from_json(&again)
            .expect("re-parse of a serialized image manifest");
        assert_eq!(m, m2);
    }
    if let Ok(p) = appc::PodManifest::from_json(data) {
        let again = serde_json::to_vec(&p).expect("a parsed pod manifest serializes");
        let p2 =
            appc::PodManifest::from_json(&again).expect("re-parse of a serialized pod manifest");
        assert_eq!(p, p2);
    }
});
