//! `--no-overlay` and the automatic fallback to it: the image trees are copied into the pod,
//! app writes never reach the store's trees, and a data directory on a file system that
//! cannot hold overlay upper dirs (here an overlay mount made by the test) falls back with
//! one warning. A shell stage1 stands in for a real one: its `run` writes into the app's
//! rootfs as an app would.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use appc::aci::{AciBuilder, Compression};
use appc::schema::App;
use appc::{AcIdentifier, ImageManifest};
use pod_abi::paths::PodPaths;
use sha2::{Digest, Sha256};

mod stage1_util;
use stage1_util::{rkt, script_stage1};

/// The stage1 `run`: overwrite an image file, add one, set the app's exit status.
const RUN_SCRIPT: &str = r#"#!/bin/sh
mountpoint -q stage1/rootfs && echo yes > stage1-mounted
for d in stage1/rootfs/opt/stage2/*; do
  app=$(basename "$d")
  echo written-by-app > "$d/rootfs/etc/in-image" || exit 9
  echo new > "$d/rootfs/etc/new-file" || exit 9
  chmod 0600 "$d/rootfs/bin/app" || exit 9
  echo 0 > "stage1/rootfs/@STATUS_DIR@/$app"
done
exit 0
"#;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn skip(test: &str, reason: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("SKIP: {test}: {reason}\n").as_bytes());
}

/// Paths, kinds, modes, owners and contents of everything under `dir`, hashed.
fn tree_hash(dir: &Path) -> String {
    let mut h = Sha256::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut all = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            all.push((p, m));
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, m) in all {
        h.update(p.to_string_lossy().as_bytes());
        h.update(format!("{:o} {} {}", m.mode(), m.uid(), m.gid()).as_bytes());
        if m.is_file() {
            h.update(std::fs::read(&p).unwrap());
        }
    }
    hex::encode(h.finalize())
}

struct Env {
    tmp: tempfile::TempDir,
    data: PathBuf,
}

impl Env {
    fn new(data: Option<PathBuf>) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = data.unwrap_or_else(|| tmp.path().join("data"));
        Env { tmp, data }
    }
    fn rkt(&self, args: &[&str]) -> Output {
        rkt(&self.data, args)
    }
    fn stage1_flag(&self) -> String {
        let p = self.tmp.path().join("stage1-sh.aci");
        let run = RUN_SCRIPT.replace("@STATUS_DIR@", pod_abi::paths::STATUS_DIR_IN_STAGE1);
        script_stage1(&p, "example.com/stage1-sh", &[("run", run.as_bytes())]);
        format!("--stage1-path={}", p.display())
    }
    fn image(&self) -> String {
        let p = self.tmp.path().join("app.aci");
        let mut m = ImageManifest::new(AcIdentifier::new("example.com/app").unwrap());
        m.app = Some(App {
            exec: vec!["/bin/app".into()],
            user: "0".into(),
            group: "0".into(),
            ..Default::default()
        });
        let f = std::fs::File::create(&p).unwrap();
        let mut b = AciBuilder::new(f, Compression::Gzip, &m).unwrap();
        b.add_dir("/bin", 0o755).unwrap();
        b.add_file("/bin/app", 0o4755, b"#!/bin/sh\nexit 0\n")
            .unwrap();
        b.add_dir("/etc", 0o755).unwrap();
        b.add_file("/etc/in-image", 0o644, b"lower").unwrap();
        b.add_symlink("/etc/link", "in-image").unwrap();
        b.finish().unwrap();
        p.to_string_lossy().into_owned()
    }
    fn trees(&self) -> String {
        tree_hash(&self.data.join("cas/tree"))
    }
    fn pod(&self, uuid_file: &Path) -> PathBuf {
        let uuid = std::fs::read_to_string(uuid_file).unwrap();
        self.data.join("pods/run").join(uuid.trim())
    }
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the image once with `--no-overlay` (rendering the trees), then again with `flags`;
/// returns the second pod's directory and the second run's stderr, after checking that the store's trees did
/// not change and that the pod saw its own copy.
fn run_twice(e: &Env, flags: &[&str]) -> (PathBuf, String) {
    let (s1, img) = (e.stage1_flag(), e.image());
    let o = e.rkt(&["fetch", &img]);
    assert!(o.status.success(), "{}", err(&o));
    let uuid_file = e.tmp.path().join("uuid");
    let save = format!("--uuid-file-save={}", uuid_file.display());
    // A first pod renders the stage1 tree too.
    let o = e.rkt(&["run", &s1, "--no-overlay", &save, &img]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let before = e.trees();
    let mut args = vec!["run", s1.as_str(), save.as_str()];
    args.extend_from_slice(flags);
    args.push(&img);
    let o = e.rkt(&args);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(e.trees(), before, "an app's writes reached the store");
    let pd = e.pod(&uuid_file);
    let rootfs = PodPaths::new(&pd).app_rootfs("app");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/in-image")).unwrap(),
        "written-by-app\n"
    );
    assert!(std::fs::symlink_metadata(rootfs.join("etc/link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(
        !pd.join("stage1-mounted").exists(),
        "stage1 rootfs is a mount"
    );
    assert!(!pd.join("overlay-prepared").exists());
    let s = e.rkt(&["status", &std::fs::read_to_string(&uuid_file).unwrap()]);
    assert!(String::from_utf8_lossy(&s.stdout).contains("app-app=0"));
    (pd, err(&o))
}

#[test]
fn no_overlay_copies_trees_and_app_writes_stay_in_the_pod() {
    if !is_root() {
        skip(
            "no_overlay_copies_trees_and_app_writes_stay_in_the_pod",
            "needs root",
        );
        return;
    }
    for flag in ["--no-overlay=true", "--no-overlay"] {
        let e = Env::new(None);
        let (pd, _) = run_twice(&e, &[flag]);
        let o = e.rkt(&["gc", "--grace-period=0s"]);
        assert_eq!(o.status.code(), Some(0), "{}", err(&o));
        assert!(!pd.exists());
    }
    // prepare --no-overlay=true, then run-prepared: the copies are made by prepare.
    let e = Env::new(None);
    let img = e.image();
    let o = e.rkt(&["prepare", "--no-overlay=true", &e.stage1_flag(), &img]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let uuid = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let pd = e.data.join("pods/prepared").join(&uuid);
    let copied = PodPaths::new(&pd).app_rootfs("app").join("bin/app");
    assert_eq!(std::fs::metadata(&copied).unwrap().mode() & 0o7777, 0o4755);
    let o = e.rkt(&["run-prepared", "--debug=false", &uuid]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(
        std::fs::read_to_string(
            PodPaths::new(e.data.join("pods/run").join(&uuid))
                .app_rootfs("app")
                .join("etc/in-image")
        )
        .unwrap(),
        "written-by-app\n"
    );
    assert_eq!(e.rkt(&["gc", "--grace-period=0s"]).status.code(), Some(0));
}

/// A data directory on overlayfs cannot hold overlay upper dirs: `run` falls back to
/// copies with one warning.
#[test]
fn data_dir_on_overlayfs_falls_back_to_no_overlay() {
    if !is_root() {
        skip(
            "data_dir_on_overlayfs_falls_back_to_no_overlay",
            "needs root",
        );
        return;
    }
    let base = tempfile::tempdir().unwrap();
    for d in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir(base.path().join(d)).unwrap();
    }
    let merged = base.path().join("merged");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        base.path().join("lower").display(),
        base.path().join("upper").display(),
        base.path().join("work").display()
    );
    if let Err(e) = nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    ) {
        skip(
            "data_dir_on_overlayfs_falls_back_to_no_overlay",
            &format!("cannot mount an overlay: {e}"),
        );
        return;
    }
    let e = Env::new(Some(merged.join("data")));
    let (pd, warnings) = run_twice(&e, &[]);
    assert_eq!(
        warnings.matches("falling back to --no-overlay").count(),
        1,
        "{warnings}"
    );
    assert!(warnings.contains("overlayfs"), "{warnings}");
    assert!(!pd.join("overlay-prepared").exists());
    assert_eq!(e.rkt(&["gc", "--grace-period=0s"]).status.code(), Some(0));
    nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH).unwrap();
}
