//! Replay of HashiCorp Nomad's rkt task driver (`nomad-driver-rkt`) against the ns flavor; the
//! argv sequence and its checks live in `rkt_tests::nomad` (tests/src/nomad.rs), shared with
//! kvm_nomad.rs.

use rkt_tests::{nomad, E2e};

#[test]
fn ns_nomad_driver_replay() {
    let Some(e) = E2e::require("ns_nomad_driver_replay") else {
        return;
    };
    nomad::replay(&e);
}
