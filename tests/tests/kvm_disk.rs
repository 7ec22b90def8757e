//! A pod's disk limit (`rkt run --disk-limit`, an XFS project quota on the pod's directory),
//! in both flavors. These run inside ci/nested-kvm, whose L1 kernel has XFS with quotas (the
//! machine's own kernel has XFS without them): the test makes an XFS file system on a loop
//! device, mounts it with `prjquota` and keeps rkt's data there.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use rkt_tests::{stderr, stdout, E2e};

/// An XFS file system with project quotas on a loop device, unmounted when dropped.
struct Xfs {
    mnt: PathBuf,
}

impl Xfs {
    /// Makes a `mib` MiB image at `img` and mounts it at `mnt`.
    fn new(img: &Path, mnt: &Path, mib: u64) -> Xfs {
        let f = std::fs::File::create(img).unwrap();
        f.set_len(mib << 20).unwrap();
        let run = |c: &mut Command| {
            let o = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
            assert!(o.status.success(), "{c:?}: {}", stderr(&o));
        };
        run(Command::new("mkfs.xfs").args(["-q", "-f"]).arg(img));
        std::fs::create_dir_all(mnt).unwrap();
        run(Command::new("mount")
            .args(["-o", "loop,prjquota"])
            .arg(img)
            .arg(mnt));
        Xfs {
            mnt: mnt.to_path_buf(),
        }
    }

    /// Free bytes of the file system.
    fn free(&self) -> u64 {
        let st = nix::sys::statvfs::statvfs(&self.mnt).unwrap();
        st.blocks_available() * st.fragment_size()
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn probe_image(e: &E2e) -> PathBuf {
    let p = e.escape_probe();
    e.pod_check_image("probe.aci", |s| s.file("/bin/escape-probe", &p, 0o755))
}

/// Runs the probe with `actions` in a pod of `stage1` limited to 32 MiB; its output.
fn limited_pod(e: &E2e, stage1: &str, extra: &[&str], actions: &[&str]) -> String {
    let img = probe_image(e);
    let mut args = vec!["--debug", "run", stage1, "--net=none", "--disk-limit=32Mi"];
    args.extend(extra);
    args.extend([img.to_str().unwrap(), "--exec=/bin/escape-probe", "--"]);
    args.extend(actions);
    let o = e.run(&args);
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert!(o.status.success(), "{text}");
    text
}

/// The MiB a `fill` line says were written, and whether it stopped at the limit (XFS reports a
/// project's limit as `ENOSPC`, a full disk, as `df` in the pod would show).
fn filled(text: &str, path: &str) -> (u64, bool) {
    let prefix = format!("fill {path}: ");
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no fill line for {path}: {text}"));
    let mib = line.split(' ').next().unwrap().parse().unwrap();
    (
        mib,
        line.ends_with("then ENOSPC") || line.ends_with("then EDQUOT"),
    )
}

/// A root app of an ns pod limited to 32 MiB (rkt's default capabilities, so it owns every file
/// it makes and holds `CAP_FOWNER`) tries to set its file's project ID to 0, which would take
/// it out of the pod's quota, then writes 64 MiB into it: the filter refuses the first, XFS
/// the write past the limit (`ENOSPC`), while the file system has plenty of room. Without the filter
/// (`--insecure-options=seccomp`) the project change works and the file outgrows the limit: the attack is real where allowed.
/// A KVM pod's guest writes through its virtio-fs share and meets the same limit (its file
/// requests carry no ioctl). `rkt gc` removes both pods.
#[test]
fn kvm_a_pod_cannot_write_past_its_disk_limit() {
    let Some(e) = E2e::require_kvm("kvm_a_pod_cannot_write_past_its_disk_limit") else {
        return;
    };
    let ns_aci = rkt_tests::stage1_ns_aci().expect("stage1-ns.aci beside stage1-kvm.aci");
    let xfs = Xfs::new(&e.path("xfs.img"), &e.path("xfs"), 512);
    let e = e.with_dir(xfs.mnt.join("rkt"));
    let ns = format!("--stage1-path={}", ns_aci.display());

    let text = limited_pod(
        &e,
        &ns,
        &[],
        &["set-project", "/big", "0", "fill", "/big", "64"],
    );
    assert!(text.contains("set-project /big: EPERM"), "{text}");
    let (mib, stopped) = filled(&text, "/big");
    assert!((24..32).contains(&mib) && stopped, "{mib} MiB: {text}");
    assert!(text.contains("XFS project "), "{text}");
    assert!(
        xfs.free() > 300 << 20,
        "the file system itself was not full"
    );

    let text = limited_pod(
        &e,
        &ns,
        &["--insecure-options=image,seccomp"],
        &["set-project", "/big", "0", "fill", "/big", "40"],
    );
    assert!(text.contains("set-project /big: ok"), "{text}");
    assert_eq!(filled(&text, "/big"), (40, false), "{text}");

    let kvm = e.stage1_flag();
    let text = limited_pod(
        &e,
        &kvm,
        &[],
        &["set-project", "/big", "0", "fill", "/big", "64"],
    );
    assert!(!text.contains("set-project /big: ok"), "{text}");
    let (mib, stopped) = filled(&text, "/big");
    assert!((24..32).contains(&mib) && stopped, "kvm: {mib} MiB: {text}");

    let before = xfs.free();
    let o = e.run(&["gc", "--grace-period=0s"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let left: Vec<_> = std::fs::read_dir(e.dir().join("pods/exited-garbage"))
        .map(|rd| rd.flatten().map(|d| d.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "pods left after gc: {left:?}");
    let after = xfs.free();
    // A data directory that passes on a project of its own (an administrator's): refused,
    // since XFS would refuse to move the pod's directory between the state directories.
    let shared = xfs.mnt.join("shared");
    std::fs::create_dir_all(shared.join("pods")).unwrap();
    let o = Command::new("xfs_io")
        .args(["-c", "chproj 77", "-c", "chattr +P"])
        .arg(shared.join("pods"))
        .output()
        .unwrap();
    assert!(o.status.success(), "xfs_io: {}", stderr(&o));
    let o = Command::new(&e.rkt)
        .arg(format!("--dir={}", shared.display()))
        .args(["--insecure-options=image", "run", &kvm, "--disk-limit=32Mi"])
        .arg(probe_image(&e))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("passes on project 77"),
        "{}",
        stderr(&o)
    );
    assert!(
        after >= before + (56 << 20),
        "gc gave back the two full pods' 62 MiB: {before} -> {after} bytes free"
    );
}
