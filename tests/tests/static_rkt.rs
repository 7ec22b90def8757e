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

/// ELF `e_type` of a file: 2 (`ET_EXEC`, a fixed address) or 3 (`ET_DYN`, position-independent).
fn elf_type(path: &std::path::Path) -> u16 {
    let head = std::fs::read(path).unwrap();
    assert_eq!(
        head.get(..4),
        Some(&b"\x7fELF"[..]),
        "{} is not ELF",
        path.display()
    );
    u16::from_le_bytes([head[16], head[17]])
}

/// The build's choice of addresses (ci/static-flags.sh): the VMM, which a guest faces through its
/// devices, and guest-init, which a pod's apps face, are position-independent, so the kernel
/// randomizes where their code and data are; rkt and stage1-ns are fixed-address executables,
/// which is sound only while no C code in rkt parses an image: the test fails if the C bzip2 or
/// liblzma decoders come back into rkt.
#[test]
fn build_randomizes_the_vmm_and_guest_init_and_links_no_c_decompressor_into_rkt() {
    let test = "build_randomizes_the_vmm_and_guest_init_and_links_no_c_decompressor_into_rkt";
    let Some(bins) = rkt_tests::test_bin_dir() else {
        skip(
            test,
            "no build/bin (set RKT_TEST_BIN_DIR or run `make build`)",
        );
        return;
    };
    let Some(rkt) = rkt_bin() else {
        skip(test, "no rkt binary (set RKT_BIN or run `make build`)");
        return;
    };
    for (name, want) in [("stage1-vmm", 3), ("guest-init", 3), ("stage1-ns", 2)] {
        let p = bins.join(name);
        if p.is_file() {
            assert_eq!(elf_type(&p), want, "{}: ELF type", p.display());
        } else {
            eprintln!("{test}: no {} to check", p.display());
        }
    }
    let nm = Command::new("nm").arg(&rkt).output().unwrap();
    assert!(nm.status.success(), "nm {}: {}", rkt.display(), stderr(&nm));
    let syms = String::from_utf8_lossy(&nm.stdout);
    for c_decoder in [
        "BZ2_bzDecompressInit",
        "BZ2_bzDecompress",
        "lzma_stream_decoder",
        "lzma_code",
    ] {
        assert!(
            !syms
                .lines()
                .any(|l| l.split_whitespace().last() == Some(c_decoder)),
            "{} links the C decoder {c_decoder}",
            rkt.display()
        );
    }
    assert!(
        syms.lines().any(|l| l.ends_with("_BZ2_bzDecompressInit")),
        "{}: nm shows no bzip2 decoder at all (stripped?): the check above proves nothing",
        rkt.display()
    );
}
