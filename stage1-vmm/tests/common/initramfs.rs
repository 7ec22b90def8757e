//! The test initramfs: a newc cpio with /dev/console, /dev/urandom, /dev/port, /proc and the static test init
//! (tests/guest/init.rs, built by build.rs). Shared by the guest-Linux tests and the
//! `mk_test_initramfs` example that bench/boot.sh uses.

use std::path::{Path, PathBuf};

#[path = "cpio.rs"]
pub mod cpio;
use cpio::entry;

/// The static test init, built by build.rs (empty if that failed).
pub const TEST_INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/test-init"));

use stage1_vmm::boot::newc::{S_IFCHR, S_IFDIR, S_IFREG};

/// The initramfs bytes.
pub fn build() -> Vec<u8> {
    assert!(
        !TEST_INIT.is_empty(),
        "the static test init was not built (see the build.rs warning; needs static glibc, libc6-dev)"
    );
    let mut out = Vec::new();
    entry(&mut out, 1, "dev", S_IFDIR | 0o755, (0, 0), &[]);
    entry(&mut out, 2, "dev/console", S_IFCHR | 0o600, (5, 1), &[]);
    entry(&mut out, 3, "proc", S_IFDIR | 0o755, (0, 0), &[]);
    entry(&mut out, 4, "init", S_IFREG | 0o755, (0, 0), TEST_INIT);
    entry(&mut out, 5, "dev/urandom", S_IFCHR | 0o644, (1, 9), &[]);
    entry(&mut out, 6, "dev/port", S_IFCHR | 0o600, (1, 4), &[]);
    entry(&mut out, 0, "TRAILER!!!", 0, (0, 0), &[]);
    out
}

/// Writes the initramfs to `dir/initramfs.cpio` and returns the path.
pub fn write_to(dir: &Path) -> PathBuf {
    let p = dir.join("initramfs.cpio");
    std::fs::write(&p, build()).expect("write initramfs");
    p
}
