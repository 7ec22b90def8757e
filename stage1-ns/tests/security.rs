//! The pod boundary of the ns flavor, attacked from inside an app (hand-built pods, see
//! `common`; needs root). Each test performs the attack with `escape-probe` and passes only if
//! it fails: a root app holding `CAP_SYS_CHROOT` cannot climb out of its root into
//! guest-init's tree (the stage1 root the host later executes from), neither can its event
//! handlers, nor open the host-global kernel knobs under `/proc` for writing; an app running as `nobody` holds no capability and cannot write a root-owned
//! directory unless `os/linux/capabilities-retain-set` grants it.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{app, Pod};
use pod_abi::paths::PodPaths;

/// A file that exists only in guest-init's tree (the stage1 root), never in an app's.
const MARKER: &str = "/rkt/plan.json";
/// What escape-probe creates in whatever root its double chroot reached.
const WITNESS: &str = "escape-probe-was-here";
/// A host-global sysctl: a program the host kernel runs as root on a crash.
const CORE_PATTERN: &str = "/proc/sys/kernel/core_pattern";
/// Reboots (and worse) the host kernel.
const SYSRQ: &str = "/proc/sysrq-trigger";
/// `nobody`.
const NOBODY: &str = "65534";
/// A root-owned 0755 directory of the app image.
const ROOT_DIR: &str = "/rootdir";

/// An app that runs `/bin/escape-probe ARGS`.
fn probe_app(name: &str, args: &[&str]) -> pod_abi::plan::AppPlan {
    let mut a = app(name, &[]);
    a.exec = std::iter::once("/bin/escape-probe")
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    a
}

fn mask_hex(names: &[&str]) -> String {
    format!("{:016x}", linux_caps::mask(names).unwrap())
}

#[test]
fn root_app_cannot_chroot_out_of_its_root() {
    skip_unless_root!("root_app_cannot_chroot_out_of_its_root");
    let proc_root = format!("/proc/1/root{MARKER}");
    let mut a = probe_app(
        "a",
        &[
            "status",
            "chroot-escape",
            MARKER,
            "read",
            &proc_root,
            "open-write",
            CORE_PATTERN,
            "open-write",
            SYSRQ,
        ],
    );
    a.pre_start = Some(
        ["/bin/escape-probe", "chroot-escape", MARKER]
            .map(String::from)
            .to_vec(),
    );
    let mut pod = Pod::new(vec![a], 5);
    let out = pod.run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let caps = format!("CapEff={}", mask_hex(&linux_caps::DEFAULT));
    assert!(
        out.stdout.contains(&caps),
        "the attack needs rkt's default caps, CAP_SYS_CHROOT included: {}",
        out.stdout
    );
    assert_eq!(
        out.stdout.matches("chroot-escape: chroot: ok").count(),
        2,
        "app and pre-start handler both performed the double chroot: {}",
        out.stdout
    );
    assert_eq!(
        out.stdout
            .matches(&format!("chroot-escape: {MARKER}: absent"))
            .count(),
        2,
        "guest-init's tree must stay out of reach: {}",
        out.stdout
    );
    assert!(!out.stdout.contains("PRESENT"), "{}", out.stdout);
    assert!(
        !out.stdout.contains(&format!("read {proc_root}: ok")),
        "guest-init's root through /proc/1/root: {}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("open-write {CORE_PATTERN}: EROFS")),
        "host-global kernel knobs must be read-only: {}",
        out.stdout
    );
    // Kernels without CONFIG_MAGIC_SYSRQ have no trigger (ENOENT).
    assert!(
        !out.stdout.contains(&format!("open-write {SYSRQ}: ok")),
        "{}",
        out.stdout
    );
    let stage1_root = PodPaths::new(&pod.dir).stage1_rootfs();
    assert!(
        !stage1_root.join(WITNESS).exists(),
        "the app wrote into the stage1 root"
    );
    assert!(
        pod.app_rootfs("a").join(WITNESS).exists(),
        "the escape attempt's write lands in the app's own root"
    );
}

/// Builds a pod of probe apps running as `nobody` in images with a root-owned 0755
/// [`ROOT_DIR`], each trying to create a file there.
fn nobody_pod(apps: Vec<pod_abi::plan::AppPlan>) -> Pod {
    let mut apps = apps;
    for a in &mut apps {
        a.user = NOBODY.into();
        a.group = NOBODY.into();
    }
    let pod = Pod::new(apps, 5);
    for a in &pod.plan.apps {
        let d = pod
            .app_rootfs(&a.name)
            .join(ROOT_DIR.trim_start_matches('/'));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    pod
}

#[test]
fn nobody_holds_no_capability_and_cannot_write_root_dirs() {
    skip_unless_root!("nobody_holds_no_capability_and_cannot_write_root_dirs");
    let target = format!("{ROOT_DIR}/f");
    let plain = probe_app("plain", &["status", "create", &target]);
    // A remove-set shrinks the bounding set; it grants a non-root app nothing.
    let mut removed = probe_app("removed", &["status", "create", &target]);
    removed.capabilities.retain(|c| c != "CAP_MKNOD");
    let mut pod = nobody_pod(vec![plain, removed]);
    let out = pod.run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout
            .matches(&format!("uid={NOBODY} gid={NOBODY}"))
            .count(),
        2,
        "{}",
        out.stdout
    );
    let zero = "0".repeat(16);
    let expect = |bnd: &str| {
        format!("caps: CapInh={zero} CapPrm={zero} CapEff={zero} CapBnd={bnd} CapAmb={zero}")
    };
    assert!(
        out.stdout
            .contains(&expect(&mask_hex(&linux_caps::DEFAULT))),
        "nobody keeps only the bounding set: {}",
        out.stdout
    );
    let without_mknod: Vec<&str> = linux_caps::DEFAULT
        .iter()
        .copied()
        .filter(|c| *c != "CAP_MKNOD")
        .collect();
    assert!(
        out.stdout.contains(&expect(&mask_hex(&without_mknod))),
        "{}",
        out.stdout
    );
    assert_eq!(
        out.stdout
            .matches(&format!("create {target}: EACCES"))
            .count(),
        2,
        "{}",
        out.stdout
    );
    for app in ["plain", "removed"] {
        assert!(!pod
            .app_rootfs(app)
            .join(target.trim_start_matches('/'))
            .exists());
    }
}

#[test]
fn retain_set_grants_nobody_exactly_those_capabilities() {
    skip_unless_root!("retain_set_grants_nobody_exactly_those_capabilities");
    let target = format!("{ROOT_DIR}/f");
    let mut a = probe_app("a", &["status", "create", &target]);
    a.capabilities = vec!["CAP_DAC_OVERRIDE".into()];
    a.capabilities_retained = true;
    let mut pod = nobody_pod(vec![a]);
    let out = pod.run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let m = mask_hex(&["CAP_DAC_OVERRIDE"]);
    assert!(
        out.stdout.contains(&format!(
            "caps: CapInh={m} CapPrm={m} CapEff={m} CapBnd={m} CapAmb={m}"
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!("create {target}: ok")),
        "{}",
        out.stdout
    );
    assert!(pod
        .app_rootfs("a")
        .join(target.trim_start_matches('/'))
        .exists());
}
