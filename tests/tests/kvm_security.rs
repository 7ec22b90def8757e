//! The pod boundary of the kvm flavor, attacked from inside an app with `escape-probe`
//! (`rkt run --stage1=kvm` in real KVM guests; the ns flavor's versions are in
//! `stage1-ns/tests/security.rs`). Each test performs the attack and passes only if it fails:
//! a root app and its pre-start handler holding `CAP_SYS_CHROOT` cannot climb out of the app
//! root into guest-init's tree (the virtio-fs share, the pod's `stage1/rootfs` on the host);
//! an app running as `nobody` holds no capability and cannot write a root-owned directory;
//! `--caps-retain` grants a non-root app exactly the named capabilities; a root app runs under
//! the default seccomp filter and cannot create a user namespace (ns flavor:
//! `tests/tests/ns_seccomp.rs`).
//!
//! Like `kvm_pod.rs`: a host whose KVM cannot boot Linux prints a SKIP line (ci/test.sh runs
//! this binary inside ci/nested-kvm); scratch space goes under `$NESTED_KVM_TMP` when set.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Output;

use rkt_tests::{stderr, stdout, uuid_of, E2e, ImageSpec};

/// A file that exists only in guest-init's tree (the virtio-fs root), never in an app's.
const MARKER: &str = "/rkt/plan.json";
/// What escape-probe creates in whatever root its double chroot reached.
const WITNESS: &str = "escape-probe-was-here";
/// A kernel-global sysctl (read-only in apps).
const CORE_PATTERN: &str = "/proc/sys/kernel/core_pattern";
/// `nobody`.
const NOBODY: &str = "65534";

/// Everything a test needs and the probe image; `None` (after a SKIP line) when the host
/// cannot run it. A build without the probe is a failure, not a skip: these are security tests.
fn require(test: &str) -> Option<(E2e, PathBuf)> {
    let e = E2e::require_kvm(test)?;
    let probe = e.escape_probe();
    let img = e.path("probe.aci");
    ImageSpec::new("example.com/escape-probe", &["/bin/escape-probe"])
        .file("/bin/escape-probe", &probe, 0o755)
        .dir("/rootdir")
        .dir("/tmp")
        .event_handler("pre-start", &["/bin/escape-probe", "chroot-escape", MARKER])
        .build(&img);
    Some((e, img))
}

/// `rkt run --stage1-path=<kvm> --uuid-file-save=<uuid> ARGS...` (killed after the kvm time
/// limit); returns the output and the pod's UUID.
fn run_pod(e: &E2e, args: &[&str]) -> (Output, String) {
    let uuid_file = e.path("uuid");
    let mut all = vec![
        "run".to_string(),
        e.stage1_flag(),
        format!("--uuid-file-save={}", uuid_file.display()),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let out = e.run(&all);
    (out, uuid_of(&uuid_file))
}

fn mask_hex(names: &[&str]) -> String {
    let m = names
        .iter()
        .map(|n| linux_number(n))
        .fold(0u64, |m, n| m | (1 << n));
    format!("{m:016x}")
}

/// Capability number of a canonical name, from appc's table (the shared `linux-caps` one).
fn linux_number(name: &str) -> u32 {
    appc::types::KNOWN_CAPABILITIES
        .iter()
        .position(|c| *c == name)
        .unwrap() as u32
}

#[test]
fn kvm_root_app_cannot_chroot_out_of_its_root() {
    let Some((e, img)) = require("kvm_root_app_cannot_chroot_out_of_its_root") else {
        return;
    };
    let proc_root = format!("/proc/1/root{MARKER}");
    let (o, uuid) = run_pod(
        &e,
        &[
            img.to_str().unwrap(),
            "--",
            "status",
            "chroot-escape",
            MARKER,
            "read",
            &proc_root,
            "open-write",
            CORE_PATTERN,
        ],
    );
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let caps = format!("CapEff={}", mask_hex(&appc::types::DEFAULT_CAPABILITIES));
    assert!(
        out.contains(&caps),
        "the attack needs CAP_SYS_CHROOT: {out}"
    );
    assert_eq!(
        out.matches("chroot-escape: chroot: ok").count(),
        2,
        "app and pre-start handler both performed the double chroot: {out}"
    );
    assert_eq!(
        out.matches(&format!("chroot-escape: {MARKER}: absent"))
            .count(),
        2,
        "guest-init's tree must stay out of reach: {out}"
    );
    assert!(!out.contains("PRESENT"), "{out}");
    assert!(!out.contains(&format!("read {proc_root}: ok")), "{out}");
    // EROFS; ENOENT when the guest kernel has no core dumps (the default guest kernel).
    assert!(
        !out.contains(&format!("open-write {CORE_PATTERN}: ok")),
        "{out}"
    );
    assert!(
        !pod_abi::paths::PodPaths::new(e.pod_dir(&uuid))
            .stage1_rootfs()
            .join(WITNESS)
            .exists(),
        "the app wrote into the share the host executes from"
    );
}

#[test]
fn kvm_nobody_holds_no_capability_unless_retained() {
    let Some((e, img)) = require("kvm_nobody_holds_no_capability_unless_retained") else {
        return;
    };
    let img = img.to_str().unwrap();
    let user = format!("--user={NOBODY}");
    let group = format!("--group={NOBODY}");
    let (o, _) = run_pod(
        &e,
        &[
            img,
            "--name=plain",
            &user,
            &group,
            "--",
            "status",
            "create",
            "/rootdir/plain",
            "---",
            img,
            "--name=kept",
            &user,
            &group,
            "--caps-retain=CAP_DAC_OVERRIDE",
            "--",
            "status",
            "create",
            "/rootdir/kept",
        ],
    );
    let out = stdout(&o);
    assert_eq!(
        out.matches(&format!("uid={NOBODY} gid={NOBODY}")).count(),
        2,
        "{out}{}",
        stderr(&o)
    );
    let zero = "0".repeat(16);
    let bnd = mask_hex(&appc::types::DEFAULT_CAPABILITIES);
    assert!(
        out.contains(&format!(
            "caps: CapInh={zero} CapPrm={zero} CapEff={zero} CapBnd={bnd} CapAmb={zero}"
        )),
        "nobody keeps only the bounding set: {out}"
    );
    assert!(out.contains("create /rootdir/plain: EACCES"), "{out}");
    let m = mask_hex(&["CAP_DAC_OVERRIDE"]);
    assert!(
        out.contains(&format!(
            "caps: CapInh={m} CapPrm={m} CapEff={m} CapBnd={m} CapAmb={m}"
        )),
        "--caps-retain grants exactly the named capabilities, ambient included: {out}"
    );
    // Whether CAP_DAC_OVERRIDE also lets the guest create the file depends on the virtio-fs
    // server, which acts with the caller's fsuid on the host: only report it.
    assert!(out.contains("create /rootdir/kept: "), "{out}");
}

#[test]
fn kvm_default_seccomp_filter_holds_in_the_guest() {
    let Some((e, img)) = require("kvm_default_seccomp_filter_holds_in_the_guest") else {
        return;
    };
    let (o, _) = run_pod(
        &e,
        &[
            img.to_str().unwrap(),
            "--",
            "seccomp-status",
            "userns",
            "userns-clone",
            "io-uring",
            "thread",
        ],
    );
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("seccomp: Seccomp=2 NoNewPrivs=1"), "{out}");
    assert!(out.contains("userns: EPERM"), "{out}");
    assert!(out.contains("userns-clone: EPERM"), "{out}");
    assert!(out.contains("io-uring: EPERM"), "{out}");
    assert!(out.contains("thread: ok"), "{out}");
}

/// `--private-users` in the kvm flavor: the same attack and checks as the ns flavor's
/// ([`E2e::check_private_users`]), in the guest's user namespaces over the virtio-fs share.
#[test]
fn kvm_private_users_make_app_root_a_host_id_of_the_pods_range() {
    if let Some(e) = E2e::require_kvm("kvm_private_users_make_app_root_a_host_id_of_the_pods_range")
    {
        e.check_private_users();
    }
}
