//! The default stage1 from the configuration: `paths.d`'s `stage1-images` directory
//! (`stage1-<flavor>.aci`) and `stage1.d`'s `location`.
#![allow(clippy::unwrap_used)]

use appc::aci::{AciBuilder, Compression};
use appc::schema::App;
use appc::{AcIdentifier, ImageManifest};

mod stage1_util;
use stage1_util::{rkt, script_stage1};

#[test]
fn default_stage1_comes_from_the_configuration() {
    let t = tempfile::tempdir().unwrap();
    let images = t.path().join("stage1-images");
    std::fs::create_dir(&images).unwrap();
    script_stage1(
        &images.join("stage1-ns.aci"),
        "example.com/stage1-sh",
        &[("run", b"#!/bin/sh\nexit 0\n")],
    );
    let img = t.path().join("app.aci");
    let mut m = ImageManifest::new(AcIdentifier::new("example.com/app").unwrap());
    m.app = Some(App {
        exec: vec!["/bin/app".into()],
        user: "0".into(),
        group: "0".into(),
        ..Default::default()
    });
    let mut b =
        AciBuilder::new(std::fs::File::create(&img).unwrap(), Compression::Gzip, &m).unwrap();
    b.add_dir("/bin", 0o755).unwrap();
    b.finish().unwrap();
    let data = t.path().join("data");
    let prepare = |cfg: &std::path::Path| {
        let c = format!("--local-config={}", cfg.display());
        let s = format!("--system-config={}", t.path().join("none").display());
        rkt(&data, &[&c, &s, "prepare", img.to_str().unwrap()])
    };
    // The pod's stage1 is the configured one.
    let stage1_name = |o: &std::process::Output| {
        let uuid = String::from_utf8_lossy(&o.stdout).trim().to_string();
        let m = std::fs::read(
            data.join("pods/prepared")
                .join(uuid)
                .join("stage1/manifest"),
        );
        let v: serde_json::Value = serde_json::from_slice(&m.unwrap()).unwrap();
        v["name"].as_str().unwrap().to_string()
    };
    let paths = t.path().join("paths");
    std::fs::create_dir_all(paths.join("paths.d")).unwrap();
    std::fs::write(
        paths.join("paths.d/p.json"),
        serde_json::json!({"rktKind": "paths", "rktVersion": "v1",
            "stage1-images": images.display().to_string()})
        .to_string(),
    )
    .unwrap();
    let o = prepare(&paths);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stage1_name(&o), "example.com/stage1-sh");
    // --stage1-from-dir names a file of that directory.
    script_stage1(
        &images.join("custom.aci"),
        "example.com/stage1-custom",
        &[("run", b"#!/bin/sh\nexit 0\n")],
    );
    let from_dir = |name: &str| {
        let c = format!("--local-config={}", paths.display());
        let s = format!("--system-config={}", t.path().join("none").display());
        let f = format!("--stage1-from-dir={name}");
        rkt(&data, &[&c, &s, "prepare", &f, img.to_str().unwrap()])
    };
    let o = from_dir("custom.aci");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stage1_name(&o), "example.com/stage1-custom");
    let o = from_dir("missing.aci");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("missing.aci"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let loc = t.path().join("loc");
    std::fs::create_dir_all(loc.join("stage1.d")).unwrap();
    std::fs::write(
        loc.join("stage1.d/s.json"),
        serde_json::json!({"rktKind": "stage1", "rktVersion": "v1",
            "location": images.join("stage1-ns.aci").display().to_string()})
        .to_string(),
    )
    .unwrap();
    let o = prepare(&loc);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(stage1_name(&o), "example.com/stage1-sh");
}
