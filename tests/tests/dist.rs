//! The systemd units shipped in `dist/systemd` (as rkt shipped its own): `systemd-analyze
//! verify` finds nothing to say about them with the built `rkt` in their `ExecStart=` lines, and
//! every command they run is one `rkt` has.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use rkt_tests::{rkt_bin, skip, workspace_root};

#[test]
fn dist_systemd_units_verify() {
    let name = "dist_systemd_units_verify";
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        skip(name, "no systemd-analyze (package systemd)");
        return;
    }
    let Some(rkt) = rkt_bin() else {
        skip(name, "no rkt binary (set RKT_BIN or run `make build`)");
        return;
    };
    let src = workspace_root().join("dist/systemd");
    let dir = tempfile::tempdir().unwrap();
    let mut units = Vec::new();
    let mut commands = Vec::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        for l in text.lines() {
            if let Some(cmd) = l.strip_prefix("ExecStart=/usr/bin/rkt ") {
                commands.push(cmd.split_whitespace().next().unwrap().to_string());
            }
        }
        let out = dir.path().join(p.file_name().unwrap());
        std::fs::write(&out, text.replace("/usr/bin/rkt", rkt.to_str().unwrap())).unwrap();
        units.push(out);
    }
    assert!(units.len() >= 6, "{units:?}");
    let o = Command::new(analyze)
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && said.trim().is_empty(), "{said}");
    commands.sort();
    commands.dedup();
    assert_eq!(commands, ["api-service", "gc", "metadata-service"]);
    for c in commands {
        let o = Command::new(&rkt)
            .args([c.as_str(), "--help"])
            .output()
            .unwrap();
        assert!(o.status.success(), "rkt {c} --help");
    }
}
