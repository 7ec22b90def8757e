//! End-to-end: the vsock channel of a kvm pod (docs/kvm-stage1.md, "The vsock channel"). A
//! running pod has `vsock.sock` in its pod directory, a unix socket only root can use (mode
//! 0600); a connection to a guest port nobody listens on is refused (the guest kernel resets
//! the REQUEST); the socket is gone once the pod has exited. The exec service that listens on
//! `pod_abi::vsock::EXEC_PORT` is tested with `rkt enter`.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use pod_abi::vsock::{connect, ConnectError, SOCKET};
use rkt_tests::{stderr, wait_output, E2e};

#[test]
fn kvm_pod_has_a_private_vsock_socket_that_goes_with_it() {
    let Some(e) = E2e::require_kvm("kvm_pod_has_a_private_vsock_socket_that_goes_with_it") else {
        return;
    };
    let (child, uuid) = e.start_sleeper("sleeper.aci", &[]);
    let pod = e.pod_dir(&uuid);
    let sock = pod.join(SOCKET);
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket(), "{}", sock.display());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0);

    // Nobody listens on port 4242 in the guest: refused, quickly.
    let asked = Instant::now();
    let r = connect(&pod, 4242, Duration::from_secs(30));
    assert!(matches!(r, Err(ConnectError::Refused(4242))), "{r:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );

    let s = e.run(&["stop", &uuid]);
    assert_eq!(s.status.code(), Some(0), "{}", stderr(&s));
    let o = wait_output(child, Duration::from_secs(120));
    assert_eq!(o.status.code(), Some(143), "{}", stderr(&o));
    assert!(!sock.exists(), "the socket outlived the pod");
}
