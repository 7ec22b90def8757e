//! `rkt attach` on the ns flavor (`rkt_tests::attach`): apps with their streams or a terminal
//! of their own, attached to while they run.

use rkt_tests::E2e;

#[test]
fn ns_attach_streams_and_terminal() {
    let name = "ns_attach_streams_and_terminal";
    let Some(e) = E2e::require(name) else {
        return;
    };
    if rkt_tests::static_busybox_or_skip(name).is_none() {
        return;
    }
    rkt_tests::attach::scenario(&e, "ns");
}
