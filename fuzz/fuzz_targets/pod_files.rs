//! Files a pod (or a KVM guest, through its share) writes and the host reads back: an app's
//! exit status (`rkt status`, `rkt list`), the launch plan in the pod's stage1 root (`rkt
//! stop`'s grace period, the `rkt app` commands), the pod's network list (`netinfo`) and a
//! snapshot's source record and fresh-data record. Any bytes give a value or a typed error,
//! never a panic; what parses writes back to bytes that parse to the same value; and the
//! grace period a host process waits for stays within its bound whatever the plan says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_abi::plan::{Plan, MAX_STOP_GRACE_SECS};
use pod_abi::snapshot::{Fresh, Source, FRESH_LEN};

fuzz_target!(|data: &[u8]| {
    if let Some(code) = pod_abi::status::parse_status(&String::from_utf8_lossy(data)) {
        assert_eq!(pod_abi::status::parse_status(&code.to_string()), Some(code));
    }
    if let Ok(p) = Plan::from_json(data) {
        assert!(p.host_stop_grace_secs() <= MAX_STOP_GRACE_SECS);
        let again = serde_json::to_vec(&p).expect("a parsed plan serializes");
        assert_eq!(Plan::from_json(&again).expect("re-parse of a plan"), p);
    }
    if let Ok(nets) = pod_abi::netinfo::from_json(data) {
        let again = serde_json::to_vec(&nets).expect("a parsed network list serializes");
        assert_eq!(
            pod_abi::netinfo::from_json(&again).expect("re-parse of a network list"),
            nets
        );
    }
    if let Ok(s) = Source::parse(data) {
        // Re-encoding may escape differently and outgrow the bound: an error, never a panic.
        if let Ok(again) = s.encode() {
            assert_eq!(
                Source::parse(&again).expect("re-parse of a source record"),
                s
            );
        }
    }
    if let Some(b) = data
        .get(..FRESH_LEN)
        .and_then(|b| <&[u8; FRESH_LEN]>::try_from(b).ok())
    {
        if let Some(f) = Fresh::decode(b) {
            assert!(f.nanos < 1_000_000_000);
            assert_eq!(Fresh::decode(&f.encode()), Some(f));
        }
    }
});
