//! `rkt attach` on the kvm flavor (`rkt_tests::attach`): the exec channel relays to the app's
//! multiplexer in the guest.

use rkt_tests::E2e;

#[test]
fn kvm_attach_streams_and_terminal() {
    let name = "kvm_attach_streams_and_terminal";
    let Some(e) = E2e::require_kvm(name) else {
        return;
    };
    if rkt_tests::static_busybox_or_skip(name).is_none() {
        return;
    }
    rkt_tests::attach::scenario(&e, "kvm");
}
