//! The static `rkt` (`build/bin/rkt`, glibc `crt-static`) on a host whose NSS configuration
//! names modules glibc would have to `dlopen`, as Debian's `group: files systemd`: a static
//! binary cannot load them safely (it crashed in `libnss_systemd` looking up its `rkt` group),
//! so rkt reads `/etc/group` itself. The test runs rkt in a private mount namespace whose
//! `/etc/group` has no `rkt` line and whose `/etc/nsswitch.conf` names `systemd`, and passes
//! only if rkt opens its store and exits 0.
#![allow(clippy::unwrap_used)]

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use rkt_tests::{is_root, rkt_bin, scratch_base, skip, stderr};

/// Debian's NSS module that crashed the static rkt; without it the test checks less.
const NSS_SYSTEMD: &str = "/usr/lib/x86_64-linux-gnu/libnss_systemd.so.2";

#[test]
fn static_rkt_looks_up_its_group_without_nss_modules() {
    let test = "static_rkt_looks_up_its_group_without_nss_modules";
    if !is_root() {
        skip(test, "needs root (a private mount namespace)");
        return;
    }
    let Some(rkt) = rkt_bin() else {
        skip(test, "no rkt binary (set RKT_BIN or run `make build`)");
        return;
    };
    if !std::path::Path::new(NSS_SYSTEMD).exists() {
        eprintln!("{test}: {NSS_SYSTEMD} is absent: glibc cannot load it, so this only checks the group file path");
    }
    // A copy of /etc over /etc: rkt may run groupadd, whose writes must stay in the copy.
    let tmp = tempfile::tempdir_in(scratch_base()).unwrap();
    let etc = tmp.path().join("etc");
    let cp = Command::new("cp")
        .arg("-a")
        .arg("/etc")
        .arg(&etc)
        .status()
        .unwrap();
    assert!(cp.success(), "cp -a /etc failed");
    let host_group = std::fs::read_to_string(etc.join("group")).unwrap();
    let without_rkt: String = host_group
        .lines()
        .filter(|l| !l.starts_with("rkt:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(etc.join("group"), without_rkt).unwrap();
    std::fs::write(
        etc.join("nsswitch.conf"),
        "passwd: files systemd\ngroup: files systemd\nhosts: files dns\n",
    )
    .unwrap();
    let data = tmp.path().join("data");
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$1\" /etc && shift && exec \"$@\"")
        .arg("sh")
        .arg(&etc)
        .arg(&rkt)
        .arg(format!("--dir={}", data.display()))
        .args(["image", "list"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(
        (out.status.code(), out.status.signal()),
        (Some(0), None),
        "rkt image list under `group: files systemd` without a rkt group: {err}"
    );
    assert!(data.join("cas").is_dir(), "the store was not opened: {err}");
}
