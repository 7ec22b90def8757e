//! Cross-implementation check: keys and detached armored signatures made by GnuPG (what
//! image publishers use), judged by us, by `gpgv` and by `sqv` (Debian's gnupg and sqv).
//! Our verdict must equal sqv's on every file, and gpgv's except where gpgv accepts what the
//! issue requires us to refuse (SHA-1 signatures, revoked keys: gpgv only warns).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use trust::{Keystore, Scope, StreamVerifier};

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

struct Gpg {
    home: PathBuf,
    dir: PathBuf,
}

impl Gpg {
    fn run(&self, args: &[&str]) -> std::process::Output {
        let o = Command::new("gpg")
            .env("GNUPGHOME", &self.home)
            .current_dir(&self.dir)
            .args([
                "--batch",
                "--quiet",
                "--passphrase",
                "",
                "--pinentry-mode",
                "loopback",
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// Makes a key; returns its fingerprint.
    fn gen(&self, uid: &str, algo: &str, usage: &str) -> String {
        self.run(&["--quick-gen-key", uid, algo, usage, "1y"]);
        let o = self.run(&["--with-colons", "--list-keys", uid]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("fpr:::::::::"))
            .unwrap()
            .trim_end_matches(':')
            .to_string()
    }

    fn sign(&self, key: &str, file: &str, out: &str, extra: &[&str]) {
        let mut a = vec!["--armor", "--detach-sign", "-u", key, "-o", out];
        a.extend_from_slice(extra);
        a.push(file);
        self.run(&a);
    }

    fn export(&self, key: &str, out: &str) -> PathBuf {
        self.run(&["--export", "-o", out, key]);
        self.dir.join(out)
    }
}

/// (ours, gpgv, sqv): whether each accepts `sig` over `file` by the key in `keyring`.
fn verdicts(dir: &Path, keyring: &Path, sig: &str, file: &str) -> (bool, bool, bool) {
    let d = tempfile::tempdir().unwrap();
    let ks = Keystore::new(&d.path().join("etc"), &d.path().join("usr"));
    let cert = trust::parse_cert(&std::fs::read(keyring).unwrap(), "keyring").unwrap();
    ks.store(&Scope::Root, &cert).unwrap();
    let ours = StreamVerifier::new(&std::fs::read(dir.join(sig)).unwrap(), sig)
        .and_then(|mut v| {
            v.update(&std::fs::read(dir.join(file)).unwrap());
            v.verify(&ks.keys_for("example.com/app")?, "example.com/app")
        })
        .is_ok();
    let gpgv = Command::new("gpgv")
        .current_dir(dir)
        .arg("--keyring")
        .arg(keyring)
        .args([sig, file])
        .output()
        .unwrap()
        .status
        .success();
    let sqv = Command::new("sqv")
        .current_dir(dir)
        .arg("--keyring")
        .arg(keyring)
        .args([sig, file])
        .output()
        .unwrap()
        .status
        .success();
    (ours, gpgv, sqv)
}

#[test]
fn same_verdict_as_gpgv_and_sqv() {
    for tool in ["gpg", "gpgv", "sqv"] {
        if !have(tool) {
            eprintln!(
                "SKIP: same_verdict_as_gpgv_and_sqv: {tool} not installed (ci/deps.sh installs it)"
            );
            return;
        }
    }
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("gnupg");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let g = Gpg {
        home,
        dir: t.path().to_path_buf(),
    };
    let img: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(t.path().join("img.aci"), &img).unwrap();
    let mut tampered = img.clone();
    tampered[150_000] ^= 0x10;
    std::fs::write(t.path().join("tampered.aci"), &tampered).unwrap();

    // A certification-only primary with a signing subkey.
    let sub = g.gen("Sub <sub@example.com>", "ed25519", "cert");
    g.run(&["--quick-add-key", &sub, "ed25519", "sign", "1y"]);
    g.sign(&sub, "img.aci", "sub.asc", &[]);
    let sub_ring = g.export(&sub, "sub.gpg");
    // A signing primary.
    let prim = g.gen("Prim <prim@example.com>", "ed25519", "sign");
    g.sign(&prim, "img.aci", "prim.asc", &[]);
    let prim_ring = g.export(&prim, "prim.gpg");
    // RSA with SHA-256 and with SHA-1.
    let rsa = g.gen("Rsa <rsa@example.com>", "rsa2048", "sign");
    g.sign(&rsa, "img.aci", "rsa.asc", &["--digest-algo", "SHA256"]);
    g.sign(&rsa, "img.aci", "sha1.asc", &["--digest-algo", "SHA1"]);
    let rsa_ring = g.export(&rsa, "rsa.gpg");
    // A key revoked after signing (gpg's own revocation certificate).
    let rev = g.gen("Rev <rev@example.com>", "ed25519", "sign");
    g.sign(&rev, "img.aci", "rev.asc", &[]);
    let rc = std::fs::read_to_string(g.home.join("openpgp-revocs.d").join(format!("{rev}.rev")))
        .unwrap()
        .replace(":-----BEGIN", "-----BEGIN");
    std::fs::write(t.path().join("rev.rev"), rc).unwrap();
    g.run(&["--import", "rev.rev"]);
    let rev_ring = g.export(&rev, "rev.gpg");

    let d = t.path();
    //            (case, keyring, sig, file, ours, gpgv, sqv)
    let cases: [(&str, &Path, &str, &str, bool, bool, bool); 8] = [
        (
            "signing subkey",
            &sub_ring,
            "sub.asc",
            "img.aci",
            true,
            true,
            true,
        ),
        (
            "signing primary",
            &prim_ring,
            "prim.asc",
            "img.aci",
            true,
            true,
            true,
        ),
        (
            "rsa sha256",
            &rsa_ring,
            "rsa.asc",
            "img.aci",
            true,
            true,
            true,
        ),
        (
            "tampered image",
            &sub_ring,
            "sub.asc",
            "tampered.aci",
            false,
            false,
            false,
        ),
        (
            "wrong key",
            &prim_ring,
            "sub.asc",
            "img.aci",
            false,
            false,
            false,
        ),
        ("sha1", &rsa_ring, "sha1.asc", "img.aci", false, true, false),
        (
            "revoked key",
            &rev_ring,
            "rev.asc",
            "img.aci",
            false,
            true,
            false,
        ),
        (
            "tampered image rsa",
            &rsa_ring,
            "rsa.asc",
            "tampered.aci",
            false,
            false,
            false,
        ),
    ];
    for (case, ring, sig, file, ours, gpgv, sqv) in cases {
        let got = verdicts(d, ring, sig, file);
        assert_eq!(got, (ours, gpgv, sqv), "{case}: (ours, gpgv, sqv)");
        assert_eq!(got.0, got.2, "{case}: we must agree with sqv");
    }
}
