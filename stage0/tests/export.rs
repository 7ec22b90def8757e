//! `rkt export UUID OUT.aci`: an exited pod's app, with the changes the app made, as an ACI
//! that `rkt fetch` takes back; with overlay (mounted, or no longer mounted as after a
//! reboot) and with `--no-overlay`. A shell stage1 plays the app: its `run` writes into the
//! app's rootfs.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Output;

use appc::aci::{AciBuilder, Compression};
use appc::schema::App;
use appc::{AcIdentifier, ImageManifest};

mod stage1_util;
use stage1_util::{rkt, script_stage1};

const RUN_SCRIPT: &str = r#"#!/bin/sh
for d in stage1/rootfs/opt/stage2/*; do
  app=$(basename "$d")
  echo changed > "$d/rootfs/etc/in-image"
  echo new > "$d/rootfs/etc/new-file"
  chown 7:8 "$d/rootfs/etc/new-file"
  rm "$d/rootfs/etc/removed"
  ln -s new-file "$d/rootfs/etc/link"
  echo 0 > "stage1/rootfs/@STATUS_DIR@/$app"
done
exit 0
"#;

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Entries of an uncompressed ACI: (path, kind, uid, contents).
fn entries(aci: &Path) -> Vec<(String, u8, u64, Vec<u8>)> {
    let mut a = tar::Archive::new(std::fs::File::open(aci).unwrap());
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let (k, uid) = (e.header().entry_type().as_byte(), e.header().uid().unwrap());
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (p, k, uid, data)
        })
        .collect()
}

struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }
    fn rkt(&self, args: &[&str]) -> Output {
        rkt(&self.data(), args)
    }
    /// Runs the pod (with `flags`) to its end; returns its UUID.
    fn run(&self, flags: &[&str]) -> String {
        let s1 = self.tmp.path().join("stage1-sh.aci");
        let run = RUN_SCRIPT.replace("@STATUS_DIR@", pod_abi::paths::STATUS_DIR_IN_STAGE1);
        script_stage1(&s1, "example.com/stage1-sh", &[("run", run.as_bytes())]);
        let img = self.tmp.path().join("app.aci");
        let mut m = ImageManifest::new(AcIdentifier::new("example.com/app").unwrap());
        m.app = Some(App {
            exec: vec!["/bin/app".into()],
            user: "0".into(),
            group: "0".into(),
            ..Default::default()
        });
        let mut b =
            AciBuilder::new(std::fs::File::create(&img).unwrap(), Compression::Gzip, &m).unwrap();
        b.add_dir("/etc", 0o755).unwrap();
        b.add_file("/etc/in-image", 0o644, b"lower").unwrap();
        b.add_file("/etc/removed", 0o644, b"gone").unwrap();
        b.finish().unwrap();
        let uuid_file = self.tmp.path().join("uuid");
        let mut args = vec![
            "run".to_string(),
            format!("--stage1-path={}", s1.display()),
            format!("--uuid-file-save={}", uuid_file.display()),
        ];
        args.extend(flags.iter().map(|s| s.to_string()));
        args.push(img.display().to_string());
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = self.rkt(&a);
        assert_eq!(o.status.code(), Some(0), "{}", err(&o));
        std::fs::read_to_string(uuid_file).unwrap()
    }
}

/// The exported rootfs shows the app's changes and takes `rkt fetch`.
fn check_export(e: &Env, uuid: &str, out: &Path) {
    let o = e.rkt(&["export", uuid, out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let ents = entries(out);
    let get = |p: &str| ents.iter().find(|x| x.0.trim_end_matches('/') == p);
    assert_eq!(ents[0].0, "manifest");
    let m: serde_json::Value = serde_json::from_slice(&ents[0].3).unwrap();
    assert_eq!(m["name"], "example.com/app");
    assert_eq!(get("rootfs/etc/in-image").unwrap().3, b"changed\n");
    let new = get("rootfs/etc/new-file").unwrap();
    assert_eq!((new.2, new.3.as_slice()), (7, &b"new\n"[..]));
    assert_eq!(get("rootfs/etc/link").unwrap().1, b'2', "symlink entry");
    assert!(get("rootfs/etc/removed").is_none(), "{ents:?}");
    assert!(
        !ents.iter().any(|x| x.0.contains("host-secret")),
        "a host volume's file reached the image"
    );
    // `rkt image fetch` is `rkt fetch`.
    let o = e.rkt(&["image", "fetch", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("sha256-"));
}

#[test]
fn export_an_exited_pods_app() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: export_an_exited_pods_app: needs root");
        return;
    }
    for flags in [&[][..], &["--no-overlay=true"][..]] {
        let e = Env {
            tmp: tempfile::tempdir().unwrap(),
        };
        // A host volume in the app: its files must not reach the image.
        let host = e.tmp.path().join("hostvol");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("host-secret"), b"x").unwrap();
        let mut all = vec![
            format!("--volume=hv,kind=host,source={}", host.display()),
            "--mount=volume=hv,target=/mnt/host".to_string(),
        ];
        all.extend(flags.iter().map(|f| f.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let uuid = e.run(&all);
        // cat-manifest as scripts use it: pretty by default, one line with
        // --pretty-print=false, the UUID from --uuid-file.
        let o = e.rkt(&["cat-manifest", &uuid]);
        assert!(String::from_utf8_lossy(&o.stdout).lines().count() > 1);
        let uf = format!("--uuid-file={}", e.tmp.path().join("uuid").display());
        let o = e.rkt(&["cat-manifest", "--pretty-print=false", &uf]);
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(s.lines().count(), 1, "{s}");
        let pm: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(pm["apps"][0]["name"], "app");
        let out = e.tmp.path().join("out.aci");
        check_export(&e, &uuid, &out);
        // An existing output needs --overwrite.
        let o = e.rkt(&["export", &uuid, out.to_str().unwrap()]);
        assert_ne!(o.status.code(), Some(0));
        assert!(err(&o).contains("--overwrite"), "{}", err(&o));
        // After a reboot nothing is mounted any more: export mounts what it needs privately.
        let pd = e.data().join("pods/run").join(&uuid);
        for m in stage0::pod::layout::mounts_under(&pd).unwrap() {
            nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH).unwrap();
        }
        std::fs::remove_file(&out).unwrap();
        check_export(&e, &uuid, &out);
        assert!(stage0::pod::layout::mounts_under(&pd).unwrap().is_empty());
        let o = e.rkt(&[
            "export",
            "--overwrite",
            "--app=nope",
            &uuid,
            out.to_str().unwrap(),
        ]);
        assert!(err(&o).contains("no app"), "{}", err(&o));
        assert_eq!(e.rkt(&["gc", "--grace-period=0s"]).status.code(), Some(0));
    }
}
