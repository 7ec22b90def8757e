//! Attacks on the host through stage0, each performed for real and passing because it fails
//! (issue 9): a host user reaching a setuid-root file of a rendered image or a pod tree under
//! `--dir`; a write through a read-only volume into a filesystem mounted inside its source;
//! a volume source reached through a symlinked directory; nested volume targets; volume errors
//! after the pod exists.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use appc::aci::{AciBuilder, Compression};
use appc::schema::App;
use appc::{AcIdentifier, ImageManifest};
use pod_abi::paths::PodPaths;
use stage0::store::datadir;

mod stage1_util;
use stage1_util::{rkt, script_stage1};

/// The unprivileged user and group of the attacks (`nobody`).
const NOBODY: u32 = 65534;

/// Prints a SKIP line past the harness's output capture (one write).
fn skip(test: &str, reason: &str) {
    use std::io::Write;
    let line = format!("SKIP: {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A temporary directory that every user may traverse (tempfile makes them 0700, which
/// would stop the attacks for the wrong reason).
fn open_tempdir() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    t
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A stage1 whose entrypoints are shell scripts: `run` exits 0 leaving the mounts in place.
fn shell_stage1(dir: &Path) -> PathBuf {
    let p = dir.join("stage1-sh.aci");
    let ok: &[u8] = b"#!/bin/sh\nexit 0\n";
    script_stage1(
        &p,
        "example.com/stage1-sh",
        &[("run", ok), ("stop", ok), ("gc", ok)],
    );
    p
}

/// An app image with `/etc/in-image` and, when `probe` is given, a setuid-root copy of it
/// at `/probe`.
fn app_image(dir: &Path, probe: Option<&[u8]>) -> PathBuf {
    let p = dir.join("app.aci");
    let mut m = ImageManifest::new(AcIdentifier::new("example.com/app").unwrap());
    m.app = Some(App {
        exec: vec!["/bin/app".into()],
        user: "0".into(),
        group: "0".into(),
        ..Default::default()
    });
    let f = std::fs::File::create(&p).unwrap();
    let mut b = AciBuilder::new(f, Compression::Gzip, &m).unwrap();
    b.add_dir("/etc", 0o755).unwrap();
    b.add_file("/etc/in-image", 0o644, b"lower").unwrap();
    if let Some(bin) = probe {
        b.add_file("/probe", 0o4755, bin).unwrap();
    }
    b.finish().unwrap();
    p
}

/// Pod UUIDs in any state directory under `<dir>/pods`.
fn pods_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for s in pod_abi::paths::PodDirState::ALL {
        if let Ok(rd) = std::fs::read_dir(dir.join("pods").join(s.dir_name())) {
            out.extend(
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
    }
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

/// Executes `path` as nobody (no supplementary groups): the spawn error, if any.
fn exec_as_nobody(path: &Path) -> std::io::Result<Output> {
    Command::new(path).uid(NOBODY).gid(NOBODY).output()
}

fn find_tree_probe(dir: &Path) -> PathBuf {
    let trees = dir.join("cas/tree");
    std::fs::read_dir(&trees)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("rootfs/probe"))
        .find(|p| p.exists())
        .expect("a rendered tree with the probe")
}

#[test]
fn host_users_cannot_reach_setuid_files_under_the_data_dir() {
    const T: &str = "host_users_cannot_reach_setuid_files_under_the_data_dir";
    if !is_root() {
        skip(T, "needs root");
        return;
    }
    let t = open_tempdir();
    let probe_bin = std::fs::read("/usr/bin/id").unwrap();
    let img = app_image(t.path(), Some(&probe_bin));
    let s1 = shell_stage1(t.path());
    let dir = t.path().join("data");
    let uuid_file = t.path().join("uuid");
    let o = rkt(
        &dir,
        &[
            "run",
            &format!("--stage1-path={}", s1.display()),
            &format!("--uuid-file-save={}", uuid_file.display()),
            img.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let uuid = std::fs::read_to_string(&uuid_file).unwrap();

    // The modes rkt gave its data directory.
    let gid = datadir::lookup_group(datadir::GROUP).unwrap_or(0);
    let md = std::fs::metadata(&dir).unwrap();
    assert_eq!((md.mode() & 0o7777, md.uid(), md.gid()), (0o2750, 0, gid));
    assert_eq!(mode(&dir.join("cas/tree")), 0o2700);
    assert_eq!(mode(&dir.join("pods")), 0o2750);
    assert_eq!(mode(&dir.join("cas/db/index.sqlite")), 0o640);

    // The attack targets exist, setuid root, under --dir.
    let tree_probe = find_tree_probe(&dir);
    let pd = dir.join("pods/run").join(&uuid);
    let pod_probe = PodPaths::new(&pd).app_rootfs("app").join("probe");
    for p in [&tree_probe, &pod_probe] {
        let m = std::fs::metadata(p).unwrap();
        assert_eq!((m.mode() & 0o4000, m.uid()), (0o4000, 0), "{}", p.display());
    }
    // A setuid copy outside --dir runs as nobody: the probe itself is a working attack.
    let open = t.path().join("open-probe");
    std::fs::write(&open, &probe_bin).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let control = exec_as_nobody(&open).expect("control probe runs as nobody");
    assert!(control.status.success());
    // Through --dir it cannot even be reached.
    for p in [&tree_probe, &pod_probe] {
        let e = exec_as_nobody(p).expect_err("probe under --dir reachable by nobody");
        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{}: {e}", p.display());
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
            .arg(p)
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    }
    // Members of the rkt group may list pods, but reach neither a rendered tree nor a pod's
    // writable trees.
    if gid != 0 {
        let as_member = |args: &[&str]| {
            Command::new("setpriv")
                .args([
                    "--reuid=65534".to_string(),
                    "--regid=65534".to_string(),
                    format!("--groups={gid}"),
                ])
                .args(args)
                .output()
                .unwrap()
        };
        let ls = as_member(&["ls", dir.join("pods/run").to_str().unwrap()]);
        assert!(ls.status.success(), "{}", stderr(&ls));
        assert!(String::from_utf8_lossy(&ls.stdout).contains(uuid.trim()));
        for p in [&tree_probe, &pod_probe] {
            // Through a shell: setpriv itself still holds root's capabilities when it execs
            // its argument; the shell it starts as nobody holds none.
            let o = as_member(&["sh", "-c", "exec \"$0\"", p.to_str().unwrap()]);
            assert!(!o.status.success(), "rkt group member ran {}", p.display());
            assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
        }
    } else {
        skip(T, "(rkt group part) group rkt could not be created");
    }

    // Loosened directories are tightened again on the next open.
    for p in ["", "cas", "cas/tree", "pods", "pods/run"] {
        std::fs::set_permissions(dir.join(p), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(
        dir.join("cas/db/index.sqlite"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    assert_eq!(rkt(&dir, &["image", "list"]).status.code(), Some(0));
    assert_eq!(rkt(&dir, &["list"]).status.code(), Some(0));
    assert_eq!(mode(&dir), 0o2750);
    assert_eq!(mode(&dir.join("cas/tree")), 0o2700);
    assert_eq!(mode(&dir.join("pods")), 0o2750);
    assert_eq!(mode(&dir.join("pods/run")), 0o750);
    assert_eq!(mode(&dir.join("cas/db/index.sqlite")), 0o640);
    assert_eq!(
        exec_as_nobody(&tree_probe).unwrap_err().raw_os_error(),
        Some(libc::EACCES)
    );
    assert_eq!(
        rkt(&dir, &["gc", "--grace-period=0s"]).status.code(),
        Some(0)
    );
}

/// A host directory with a tmpfs mounted at `sub/`; unmounted on drop.
struct SourceWithSubmount {
    src: PathBuf,
}

impl SourceWithSubmount {
    fn new(parent: &Path) -> Self {
        let src = parent.join("hostvol");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("top-file"), b"x").unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &src.join("sub"),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .unwrap();
        std::fs::write(src.join("sub/in-tmpfs"), b"x").unwrap();
        SourceWithSubmount { src }
    }
}

impl Drop for SourceWithSubmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.src.join("sub"), nix::mount::MntFlags::MNT_DETACH);
    }
}

fn assert_erofs(p: &Path) {
    let e = std::fs::write(p, b"attack").expect_err("write through a read-only volume");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{}: {e}", p.display());
}

#[test]
fn read_only_volume_keeps_its_submounts_read_only() {
    const T: &str = "read_only_volume_keeps_its_submounts_read_only";
    if !is_root() {
        skip(T, "needs root");
        return;
    }
    let t = open_tempdir();
    let img = app_image(t.path(), None);
    let s1 = shell_stage1(t.path());
    let vol = SourceWithSubmount::new(t.path());
    let dir = t.path().join("data");
    let uuid_file = t.path().join("uuid");
    let o = rkt(
        &dir,
        &[
            "run",
            &format!("--stage1-path={}", s1.display()),
            &format!("--uuid-file-save={}", uuid_file.display()),
            &format!(
                "--volume=hv,kind=host,source={},readOnly=true",
                vol.src.display()
            ),
            "--mount=volume=hv,target=/mnt/host",
            img.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let uuid = std::fs::read_to_string(&uuid_file).unwrap();
    let target = PodPaths::new(dir.join("pods/run").join(&uuid))
        .app_rootfs("app")
        .join("mnt/host");
    // The submount is there, seen through the volume ...
    assert!(target.join("sub/in-tmpfs").exists());
    // ... and neither it nor the top can be written through the pod.
    assert_erofs(&target.join("top-new"));
    assert_erofs(&target.join("sub/new"));
    assert_erofs(&target.join("sub/in-tmpfs"));
    // The host's own mounts stay writable: only the pod's view is read-only.
    std::fs::write(vol.src.join("sub/host-write"), b"ok").unwrap();
    assert!(target.join("sub/host-write").exists());
    assert_eq!(
        rkt(&dir, &["gc", "--grace-period=0s"]).status.code(),
        Some(0)
    );
}

#[test]
fn remount_fallback_makes_submounts_read_only() {
    const T: &str = "remount_fallback_makes_submounts_read_only";
    if !is_root() {
        skip(T, "needs root");
        return;
    }
    let t = open_tempdir();
    let vol = SourceWithSubmount::new(t.path());
    let target = t.path().join("target");
    std::fs::create_dir(&target).unwrap();
    nix::mount::mount(
        Some(&vol.src),
        &target,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
        None::<&str>,
    )
    .unwrap();
    let r = stage0::pod::layout::remount_read_only_tree(&target, true);
    let writes = (
        std::fs::write(target.join("x"), b"x"),
        std::fs::write(target.join("sub/x"), b"x"),
    );
    // Unmount before asserting, so a failure leaves nothing mounted.
    for _ in 0..4 {
        let _ = nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH);
    }
    r.unwrap();
    assert_eq!(writes.0.unwrap_err().raw_os_error(), Some(libc::EROFS));
    assert_eq!(writes.1.unwrap_err().raw_os_error(), Some(libc::EROFS));
    std::fs::write(vol.src.join("sub/host-write"), b"ok").unwrap();
}

#[test]
fn volume_errors_come_before_the_pod_exists() {
    let t = open_tempdir();
    let img = app_image(t.path(), None);
    let s1 = shell_stage1(t.path());
    let dir = t.path().join("data");
    let s1flag = format!("--stage1-path={}", s1.display());
    // A symlink in the middle of the source path (the last component is a real directory).
    let real = t.path().join("real");
    std::fs::create_dir_all(real.join("sub")).unwrap();
    let link = t.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let o = rkt(
        &dir,
        &[
            "prepare",
            &s1flag,
            &format!("--volume=v,kind=host,source={}/sub", link.display()),
            "--mount=volume=v,target=/v",
            img.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{} is a symlink", link.display())),
        "the error names the symlink: {err}"
    );
    assert_eq!(pods_in(&dir), Vec::<String>::new(), "no pod was created");
    // A missing source.
    let o = rkt(
        &dir,
        &[
            "prepare",
            &s1flag,
            "--volume=v,kind=host,source=/no/such/dir",
            "--mount=volume=v,target=/v",
            img.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/no/such/dir") && stderr(&o).contains("does not exist"));
    // Nested targets: /a/b inside /a.
    let o = rkt(
        &dir,
        &[
            "prepare",
            &s1flag,
            &format!("--volume=v,kind=host,source={}", real.display()),
            "--volume=w,kind=empty",
            "--mount=volume=v,target=/a",
            "--mount=volume=w,target=/a/b",
            img.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("/a/b is inside volume target /a") && err.contains("nested"),
        "{err}"
    );
    assert_eq!(pods_in(&dir), Vec::<String>::new(), "no pod was created");
    // The real path is accepted.
    let o = rkt(
        &dir,
        &[
            "prepare",
            &s1flag,
            &format!("--volume=v,kind=host,source={}/sub", real.display()),
            "--mount=volume=v,target=/v",
            img.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(pods_in(&dir).len(), 1);
}

#[test]
fn volume_over_a_non_empty_image_directory_warns() {
    const T: &str = "volume_over_a_non_empty_image_directory_warns";
    if !is_root() {
        skip(T, "needs root");
        return;
    }
    let t = open_tempdir();
    let img = app_image(t.path(), None);
    let s1 = shell_stage1(t.path());
    let dir = t.path().join("data");
    let o = rkt(
        &dir,
        &[
            "run",
            &format!("--stage1-path={}", s1.display()),
            "--volume=e,kind=empty",
            "--volume=f,kind=empty",
            "--mount=volume=e,target=/etc",
            "--mount=volume=f,target=/fresh",
            img.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("hides")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].starts_with("rkt: warning: volume e hides the non-empty directory /etc"),
        "{err}"
    );
    assert_eq!(
        rkt(&dir, &["gc", "--grace-period=0s"]).status.code(),
        Some(0)
    );
}

/// A stage1 whose `stop` and `gc` entrypoints record that they ran from the image (into
/// `marks/`), and whose `run` holds the pod lock in a `sleep` until stopped.
fn marking_stage1(dir: &Path, marks: &Path) -> PathBuf {
    let p = dir.join("stage1-mark.aci");
    let m = marks.display();
    let stop = format!("#!/bin/sh\necho image > {m}/stop\nkill $(cat pid)\n");
    let gc = format!("#!/bin/sh\necho image > {m}/gc\n");
    script_stage1(
        &p,
        "example.com/stage1-mark",
        &[
            ("run", b"#!/bin/sh\necho $$ > pid\nexec sleep 60\n"),
            ("stop", stop.as_bytes()),
            ("gc", gc.as_bytes()),
        ],
    );
    p
}

/// Issue 9 item 1: a pod (or a KVM guest, whose virtio-fs root is the same tree) rewrites the
/// stage1 entrypoints in its writable `stage1/rootfs`; `rkt stop` and `rkt rm` still run the
/// stage1 image's own entrypoints from the store's read-only tree, never the planted ones.
#[test]
fn pod_planted_stage1_entrypoints_are_never_executed_by_the_host() {
    const T: &str = "pod_planted_stage1_entrypoints_are_never_executed_by_the_host";
    if !is_root() {
        skip(T, "needs root");
        return;
    }
    let t = open_tempdir();
    let marks = t.path().join("marks");
    std::fs::create_dir(&marks).unwrap();
    let s1 = marking_stage1(t.path(), &marks);
    let img = app_image(t.path(), None);
    let dir = t.path().join("data");
    let uuid_file = t.path().join("uuid");
    let mut run = Command::new(env!("CARGO_BIN_EXE_rkt"))
        .arg(format!("--dir={}", dir.display()))
        .args([
            "--insecure-options=image",
            "run",
            &format!("--stage1-path={}", s1.display()),
            &format!("--uuid-file-save={}", uuid_file.display()),
            img.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    let mut pd = None;
    for _ in 0..200 {
        if let Ok(u) = std::fs::read_to_string(&uuid_file) {
            let p = dir.join("pods/run").join(u.trim());
            if p.join("pid").exists() {
                pd = Some((u.trim().to_string(), p));
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (uuid, pd) = pd.expect("the pod started");
    // The attack: what the pod can write, the host would run as root.
    let rootfs = PodPaths::new(&pd).stage1_rootfs();
    for e in ["stop", "gc", "enter"] {
        let f = rootfs.join(e);
        let _ = std::fs::remove_file(&f);
        std::fs::write(
            &f,
            format!("#!/bin/sh\necho pwned > {}/pwned-{e}\n", marks.display()),
        )
        .unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let o = rkt(&dir, &["stop", &uuid]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let _ = run.wait().unwrap();
    let o = rkt(&dir, &["rm", &uuid]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut found: Vec<String> = std::fs::read_dir(&marks)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    assert_eq!(found, ["gc", "stop"], "planted entrypoints ran on the host");
}

/// Runs the test's `rkt` as nobody with the supplementary group `gid` (a member of the `rkt`
/// group), through a shell that holds no capability.
fn rkt_as_member(gid: u32, dir: &Path, args: &[&str]) -> Output {
    let o = Command::new("setpriv")
        .args([
            "--reuid=65534".to_string(),
            "--regid=65534".to_string(),
            format!("--groups={gid}"),
            "sh".into(),
            "-c".into(),
            "exec \"$@\"".into(),
            "sh".into(),
            env!("CARGO_BIN_EXE_rkt").into(),
            format!("--dir={}", dir.display()),
            "--insecure-options=image".into(),
        ])
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "$ (rkt group member) rkt {}\n[{:?}]\n{}{}",
        args.join(" "),
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    o
}

/// Members of the `rkt` group read the store (`image list`, `image cat-manifest`, `image
/// export`) and list pods, but change nothing: a fetch fails with a line saying who may, and the store is as it
/// was. An index an older rkt left in WAL mode (whose `-shm` a member cannot write) gets a
/// clear error until root's next command switches it to the rollback journal.
#[test]
fn rkt_group_members_read_the_store_and_change_nothing() {
    const T: &str = "rkt_group_members_read_the_store_and_change_nothing";
    if !is_root() {
        skip(T, "needs root");
        return;
    }
    let t = open_tempdir();
    let img = app_image(t.path(), None);
    let dir = t.path().join("data");
    assert_eq!(
        rkt(&dir, &["fetch", img.to_str().unwrap()]).status.code(),
        Some(0)
    );
    let Some(gid) = datadir::lookup_group(datadir::GROUP) else {
        skip(T, "group rkt could not be created");
        return;
    };
    let index = dir.join("cas/db/index.sqlite");
    let before = std::fs::read(&index).unwrap();

    let o = rkt_as_member(gid, &dir, &["image", "list", "--no-legend"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("example.com/app"));
    let o = rkt_as_member(gid, &dir, &["image", "cat-manifest", "example.com/app"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"example.com/app\""));
    let o = rkt_as_member(gid, &dir, &["list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = t.path().join("member-out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    let exported = out.join("app.aci");
    let o = rkt_as_member(
        gid,
        &dir,
        &[
            "image",
            "export",
            "example.com/app",
            exported.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::metadata(&exported).unwrap().len() > 0);

    // Changing the store is root's.
    std::fs::create_dir(t.path().join("again")).unwrap();
    let again = app_image(&t.path().join("again"), None);
    let o = rkt_as_member(gid, &dir, &["fetch", again.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("only root may change the data directory"),
        "{}",
        stderr(&o)
    );
    let o = rkt_as_member(gid, &dir, &["image", "rm", "example.com/app"]);
    assert!(!o.status.success());
    assert_eq!(std::fs::read(&index).unwrap(), before, "the index changed");
    let list = rkt(&dir, &["image", "list", "--no-legend"]);
    assert_eq!(
        String::from_utf8_lossy(&list.stdout).lines().count(),
        1,
        "the store lost or gained an image"
    );

    // An older rkt's WAL-mode index: a clear error for the member, then root's command
    // switches it back.
    let old = rusqlite::Connection::open(&index).unwrap();
    let mode: String = old
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(old);
    let o = rkt_as_member(gid, &dir, &["image", "list"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("run a `rkt` command as root once"),
        "{}",
        stderr(&o)
    );
    assert_eq!(rkt(&dir, &["image", "list"]).status.code(), Some(0));
    let o = rkt_as_member(gid, &dir, &["image", "list", "--no-legend"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("example.com/app"));
}
