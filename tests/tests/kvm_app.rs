//! End-to-end under the kvm stage1 (inside `ci/nested-kvm`): the experimental `rkt app`
//! commands over the vsock exec channel, the same flow as `ns_app.rs`
//! (`rkt_tests::mutable::app_flow`) in one KVM pod, and `rkt app add --mnt-volume`
//! (`rkt_tests::mutable::mnt_volume_flow`), whose volumes the host attaches beneath the VM's
//! share in the jailed VMM's mount namespace, and rkt's experimental CRI logs
//! (`rkt_tests::mutable::k8s_log_flow`), whose host file the guest's multiplexer writes
//! through the share.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use rkt_tests::mutable::{app_flow, k8s_log_sandbox_flow, mnt_volume_flow, start_sandbox};
use rkt_tests::{E2e, KVM_RUN_TIMEOUT_SECS};

#[test]
fn kvm_app_sandbox_add_start_exec_stop_rm() {
    let Some(e) = E2e::require_kvm("kvm_app_sandbox_add_start_exec_stop_rm") else {
        return;
    };
    let limit = Duration::from_secs(KVM_RUN_TIMEOUT_SECS);
    let (sandbox, uuid) = start_sandbox(&e, &["--net=none"], limit);
    let t = app_flow(&e, sandbox, &uuid, limit);
    eprintln!(
        "TIMING kvm app add {:?}, app start {:?}, app stop {:?}, app rm {:?}",
        t.add, t.start, t.stop, t.rm
    );
}

#[test]
fn kvm_app_add_mnt_volume() {
    let Some(e) = E2e::require_kvm("kvm_app_add_mnt_volume") else {
        return;
    };
    let limit = Duration::from_secs(KVM_RUN_TIMEOUT_SECS);
    let (sandbox, uuid) = start_sandbox(&e, &["--net=none"], limit);
    mnt_volume_flow(&e, sandbox, &uuid, limit);
}

#[test]
fn kvm_app_k8s_plain_logs() {
    let Some(e) = E2e::require_kvm("kvm_app_k8s_plain_logs") else {
        return;
    };
    k8s_log_sandbox_flow(&e, Duration::from_secs(KVM_RUN_TIMEOUT_SECS));
}
