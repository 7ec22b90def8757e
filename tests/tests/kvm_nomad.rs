//! Replay of HashiCorp Nomad's rkt task driver (`nomad-driver-rkt`) against the kvm flavor:
//! the same argv sequence and checks as ns_nomad.rs (`rkt_tests::nomad`), with `rkt enter`
//! going over the exec channel. Guest-booting: on a host whose KVM cannot boot Linux it prints
//! its SKIP line and ci/test.sh runs it under ci/nested-kvm.

use rkt_tests::{nomad, E2e};

#[test]
fn kvm_nomad_driver_replay() {
    let Some(e) = E2e::require_kvm("kvm_nomad_driver_replay") else {
        return;
    };
    nomad::replay(&e);
}
