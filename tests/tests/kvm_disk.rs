//! A pod's disk limit (`rkt run --disk-limit`, an XFS project quota on the pod's directory),
//! in both flavors. These run inside ci/nested-kvm, whose L1 kernel has XFS with quotas (the
//! machine's own kernel has XFS without them): the test makes an XFS file system on a loop
//! device, mounts it with `prjquota` and keeps rkt's data there.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rkt_tests::mutable::{add_app, app_cmd, start_sandbox, stop_sandbox, wait_state};
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

/// The XFS project `rkt --debug` named for a limited pod's directory.
fn project_of(text: &str) -> u32 {
    text.split("XFS project ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no XFS project in: {text}"))
}

/// Gives directory `dir` project `id`, passed on to what is made in it (`xfs_io`, as an
/// administrator would).
fn pass_on_project(dir: &Path, id: u32) {
    let o = Command::new("xfs_io")
        .args(["-c", &format!("chproj {id}"), "-c", "chattr +P"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "xfs_io: {}", stderr(&o));
}

/// Writes `mib` MiB into a new directory of the file system that passes on project `id`;
/// whether all of it was written (a project still limited to 32 MiB stops the write).
fn write_in_project(xfs: &Xfs, id: u32, mib: usize) -> bool {
    let dir = xfs.mnt.join(format!("project-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    pass_on_project(&dir, id);
    let ok = std::fs::write(dir.join("f"), vec![7u8; mib << 20]).is_ok();
    let _ = std::fs::remove_dir_all(&dir);
    ok
}

/// `rkt app sandbox --disk-limit=32Mi` (ns flavor) with an added app that tries to take its
/// file out of the pod's project and writes 64 MiB: refused, and stopped by the limit, as in
/// `rkt run` (the added app's tree, copied into the pod, counts too). Stopped, not removed.
fn limited_sandbox(e: &mut E2e, ns_aci: &Path) {
    let kvm_aci = std::mem::replace(&mut e.stage1, ns_aci.to_path_buf());
    let limit = Duration::from_secs(120);
    let (mut sandbox, uuid) = start_sandbox(e, &["--net=none", "--disk-limit=32Mi"], limit);
    let img = probe_image(e);
    let o = add_app(
        e,
        &uuid,
        &img,
        "filler",
        &[
            "--exec=/bin/escape-probe",
            "--",
            "set-project",
            "/big",
            "0",
            "fill",
            "/big",
            "64",
        ],
    );
    assert!(o.status.success(), "app add: {}", stderr(&o));
    let o = app_cmd(e, &["app", "start", &uuid, "--app=filler"]);
    assert!(o.status.success(), "app start: {}", stderr(&o));
    wait_state(e, &uuid, "filler", "exited", limit);
    stop_sandbox(e, &mut sandbox, &uuid, limit);
    let text = std::fs::read_to_string(e.path("sandbox.out")).unwrap();
    assert!(text.contains("set-project /big: EPERM"), "sandbox: {text}");
    let (mib, stopped) = filled(&text, "/big");
    assert!(
        (16..32).contains(&mib) && stopped,
        "sandbox: {mib} MiB: {text}"
    );
    eprintln!("sandbox: the added app stopped at {mib} MiB");
    e.stage1 = kvm_aci;
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
    let Some(mut e) = E2e::require_kvm("kvm_a_pod_cannot_write_past_its_disk_limit") else {
        return;
    };
    let ns_aci = rkt_tests::stage1_ns_aci().expect("stage1-ns.aci beside stage1-kvm.aci");
    let xfs = Xfs::new(&e.path("xfs.img"), &e.path("xfs"), 512);
    e = e.with_dir(xfs.mnt.join("rkt"));
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
    let mut projects = vec![project_of(&text)];
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
    projects.push(project_of(&text));

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
    projects.push(project_of(&text));
    // While limited, a project holds anything of its ID to 32 MiB (the check below means
    // something).
    assert!(!write_in_project(&xfs, projects[0], 40));

    limited_sandbox(&mut e, &ns_aci);

    let before = xfs.free();
    let o = e.run(&["gc", "--grace-period=0s"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let left: Vec<_> = std::fs::read_dir(e.dir().join("pods/exited-garbage"))
        .map(|rd| rd.flatten().map(|d| d.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "pods left after gc: {left:?}");
    let after = xfs.free();
    // gc lifted each pod's limit: its project ID holds 40 MiB again.
    for id in &projects {
        assert!(
            write_in_project(&xfs, *id, 40),
            "project {id} still limited after gc"
        );
    }
    // A data directory that passes on a project of its own (an administrator's): refused,
    // since XFS would refuse to move the pod's directory between the state directories.
    let shared = xfs.mnt.join("shared");
    std::fs::create_dir_all(shared.join("pods")).unwrap();
    pass_on_project(&shared.join("pods"), 77);
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
