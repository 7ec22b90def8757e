//! A stage1 image made of shell scripts, for tests that exercise stage0's side of the stage1
//! contract without a real stage1, and the `rkt` runner those tests use (shared by `pods.rs`
//! and `security.rs`).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use appc::aci::{AciBuilder, Compression};
use appc::schema::Annotation;
use appc::{AcIdentifier, ImageManifest};

/// Writes an ACI named `name` to `out` whose entrypoints are the given scripts: each
/// `(entrypoint, script)` becomes `/<entrypoint>` (mode 0755) named by the annotation
/// `coreos.com/rkt/stage1/<entrypoint>`; interface version 5; empty `/rkt` and `/opt`.
pub fn script_stage1(out: &Path, name: &str, scripts: &[(&str, &[u8])]) {
    script_stage1_version(out, name, 5, scripts)
}

/// [`script_stage1`] declaring stage1 interface version `version`.
pub fn script_stage1_version(out: &Path, name: &str, version: u32, scripts: &[(&str, &[u8])]) {
    let mut m = ImageManifest::new(AcIdentifier::new(name).unwrap());
    let mut anns: Vec<(String, String)> = scripts
        .iter()
        .map(|(e, _)| (format!("coreos.com/rkt/stage1/{e}"), format!("/{e}")))
        .collect();
    anns.push((
        pod_abi::stage1::ANN_INTERFACE_VERSION.to_string(),
        version.to_string(),
    ));
    for (k, v) in anns {
        m.annotations.push(Annotation {
            name: AcIdentifier::new(&k).unwrap(),
            value: v,
        });
    }
    let f = std::fs::File::create(out).unwrap();
    let mut b = AciBuilder::new(f, Compression::Gzip, &m).unwrap();
    for (e, script) in scripts {
        b.add_file(&format!("/{e}"), 0o755, script).unwrap();
    }
    b.add_dir("/rkt", 0o755).unwrap();
    b.add_dir("/opt", 0o755).unwrap();
    b.finish().unwrap();
}

/// Runs `rkt --dir=<dir> --insecure-options=image ARGS...` to completion and prints what
/// happened.
pub fn rkt(dir: &Path, args: &[&str]) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_rkt"))
        .arg(format!("--dir={}", dir.display()))
        .arg("--insecure-options=image")
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "$ rkt {}\n[{:?}]\n{}{}",
        args.join(" "),
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}
