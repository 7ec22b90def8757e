//! The guest-test mark: the line by which `ci/test.sh` knows that a test boots a guest and must
//! run inside ci/nested-kvm where this host cannot boot it (the same line as
//! `rkt_tests::guest_kvm_or_skip` prints). Uses nothing from this crate, so the unit tests in
//! `src/` can include it with `#[path]`.

use std::io::Write;

/// Marks `test` (its libtest name: the module path below the crate root, then the function) as
/// booting a guest; `unusable` says why this host's KVM cannot boot it, if it cannot.
///
/// Prints `GUEST-TEST: here <binary> <test>`, or `GUEST-TEST: nested <binary> <test>` and
/// returns `Err(unusable)`: then the caller prints its SKIP line and returns, and `ci/test.sh`
/// fails unless the test passes inside ci/nested-kvm.
pub fn mark(test: &str, unusable: Option<String>) -> Result<(), String> {
    let bin = std::env::current_exe().unwrap_or_default();
    let verdict = if unusable.is_some() { "nested" } else { "here" };
    let line = format!("GUEST-TEST: {verdict} {} {test}\n", bin.display());
    // One write(2) straight to stderr: not split by parallel tests, not captured by libtest.
    let _ = std::io::stderr().write_all(line.as_bytes());
    unusable.map_or(Ok(()), Err)
}
