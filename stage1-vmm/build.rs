//! Builds the guest-Linux tests' init (tests/guest/init.rs) as a static binary into OUT_DIR, so
//! test binaries and the `mk_test_initramfs` example can embed it and run inside ci/nested-kvm
//! without a toolchain. If this fails (no static glibc), an empty file is written and the
//! guest-Linux tests fail saying so; the library itself never uses it.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "tests/guest/init.rs";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../pod-abi/src/snapshot_port.rs");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("test-init");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2021",
            "-C",
            "opt-level=2",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        .args([
            "-C",
            "target-feature=+crt-static",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .arg("-o")
        .arg(&out)
        .arg(src)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => {
            println!("cargo:warning=cannot build the static test init ({other:?}); guest-Linux tests will fail");
            let _ = std::fs::write(&out, b"");
        }
    }
}
