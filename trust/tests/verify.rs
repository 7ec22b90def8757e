//! Verification against real Sequoia keys made here: good signatures (prefix key, root key,
//! signing subkey), and every refusal (untrusted, other prefix, tampered image, tampered
//! signature, revoked, expired, SHA-1, not signing-capable, masked), plus keystore layering.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use trust::openpgp;
use trust::{Keystore, Scope, StreamVerifier, TrustError, Verdict};

use openpgp::cert::prelude::*;
use openpgp::packet::signature::SignatureBuilder;
use openpgp::serialize::Serialize;
use openpgp::types::{HashAlgorithm, ReasonForRevocation, SignatureType};
use openpgp::Cert;

const NAME: &str = "example.com/foo/bar";

fn cert(uid: &str) -> Cert {
    CertBuilder::new()
        .add_userid(uid)
        .add_signing_subkey()
        .generate()
        .unwrap()
        .0
}

/// A signing keypair of `cert`: its first subkey (`sub`) or its primary key.
fn keypair(cert: &Cert, sub: bool) -> openpgp::crypto::KeyPair {
    if sub {
        let ka = cert.keys().subkeys().secret().next().unwrap();
        ka.key().clone().into_keypair().unwrap()
    } else {
        cert.primary_key()
            .key()
            .clone()
            .parts_into_secret()
            .unwrap()
            .into_keypair()
            .unwrap()
    }
}

fn sign_with(
    kp: &mut openpgp::crypto::KeyPair,
    data: &[u8],
    hash: HashAlgorithm,
    t: SystemTime,
) -> Vec<u8> {
    let sig = SignatureBuilder::new(SignatureType::Binary)
        .set_hash_algo(hash)
        .set_signature_creation_time(t)
        .unwrap()
        .sign_message(kp, data)
        .unwrap();
    let mut out = Vec::new();
    {
        let mut w = openpgp::armor::Writer::new(&mut out, openpgp::armor::Kind::Signature).unwrap();
        openpgp::Packet::from(sig).serialize(&mut w).unwrap();
        w.finalize().unwrap();
    }
    out
}

fn sign(cert: &Cert, data: &[u8]) -> Vec<u8> {
    sign_with(
        &mut keypair(cert, true),
        data,
        HashAlgorithm::SHA256,
        SystemTime::now(),
    )
}

fn store_for(dir: &Path) -> Keystore {
    Keystore::new(&dir.join("etc"), &dir.join("usr"))
}

/// Streams `data` in odd-sized chunks through a verifier of `sig` and verifies it for `name`.
fn check(
    ks: &Keystore,
    name: &str,
    data: &[u8],
    sig: &[u8],
) -> Result<trust::Verified, TrustError> {
    let mut v = StreamVerifier::new(sig, "test")?;
    for c in data.chunks(7777) {
        v.update(c);
    }
    v.verify(&ks.keys_for(name)?, name)
}

fn data() -> Vec<u8> {
    (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn good_signature_by_prefix_key_and_subkey() {
    let d = tempfile::tempdir().unwrap();
    let ks = store_for(d.path());
    let c = cert("Alice <alice@example.com>");
    let path = ks
        .store(&Scope::Prefix("example.com/foo".into()), &c)
        .unwrap();
    assert_eq!(
        path,
        d.path()
            .join("etc/trustedkeys/prefix.d/example.com/foo")
            .join(c.fingerprint().to_hex().to_lowercase())
    );
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    assert_eq!(
        fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    let img = data();
    let v = check(&ks, NAME, &img, &sign(&c, &img)).unwrap();
    assert_eq!(v.cert, c.fingerprint());
    assert_ne!(v.signing_key, c.fingerprint(), "signed by the subkey");
    assert_eq!(v.scope, Scope::Prefix("example.com/foo".into()));
    assert_eq!(v.user_id.as_deref(), Some("Alice <alice@example.com>"));
    // The prefix itself is covered too; a sibling name is not.
    check(&ks, "example.com/foo", &img, &sign(&c, &img)).unwrap();
    let e = check(&ks, "example.com/foobar", &img, &sign(&c, &img)).unwrap_err();
    assert_eq!(e.verdict(), Verdict::UntrustedKey, "{e}");
}

#[test]
fn root_key_trusts_everything() {
    let d = tempfile::tempdir().unwrap();
    let ks = store_for(d.path());
    let c = cert("root");
    ks.store(&Scope::Root, &c).unwrap();
    let img = data();
    let v = check(&ks, "other.org/x", &img, &sign(&c, &img)).unwrap();
    assert_eq!(v.scope, Scope::Root);
}

#[test]
fn untrusted_and_other_prefix_refused_with_the_command_to_run() {
    let d = tempfile::tempdir().unwrap();
    let ks = store_for(d.path());
    let c = cert("a");
    let other = cert("b");
    ks.store(&Scope::Prefix("example.com/other".into()), &c)
        .unwrap();
    ks.store(&Scope::Prefix("example.com/foo".into()), &other)
        .unwrap();
    let img = data();
    let e = check(&ks, NAME, &img, &sign(&c, &img)).unwrap_err();
    assert_eq!(e.verdict(), Verdict::UntrustedKey);
    let msg = e.to_string();
    assert!(
        msg.contains("rkt trust --prefix=example.com/foo/bar"),
        "{msg}"
    );
    let sub = c
        .keys()
        .subkeys()
        .next()
        .unwrap()
        .key()
        .fingerprint()
        .to_hex();
    assert!(msg.contains(&sub), "names the signing key: {msg}");
    assert!(
        msg.contains(&other.fingerprint().to_hex()),
        "lists trusted keys: {msg}"
    );
    // Empty keystore.
    let d2 = tempfile::tempdir().unwrap();
    let e = check(&store_for(d2.path()), NAME, &img, &sign(&c, &img)).unwrap_err();
    assert_eq!(e.verdict(), Verdict::UntrustedKey);
}

#[test]
fn tampered_image_and_signature_refused() {
    let d = tempfile::tempdir().unwrap();
    let ks = store_for(d.path());
    let c = cert("a");
    ks.store(&Scope::Prefix("example.com".into()), &c).unwrap();
    let img = data();
    let sig = sign(&c, &img);
    let mut bad = img.clone();
    bad[100_000] ^= 1;
    let e = check(&ks, NAME, &bad, &sig).unwrap_err();
    assert!(matches!(e, TrustError::BadSignature { .. }), "{e}");
    assert_eq!(e.verdict(), Verdict::BadSignature);
    // Truncated image.
    let e = check(&ks, NAME, &img[..img.len() - 1], &sig).unwrap_err();
    assert_eq!(e.verdict(), Verdict::BadSignature, "{e}");
    // A tampered signature: armor garbage, or a flipped bit in the signature MPIs.
    let e = check(
        &ks,
        NAME,
        &img,
        b"-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n",
    )
    .unwrap_err();
    assert_eq!(e.verdict(), Verdict::BadSignature, "{e}");
    let e = StreamVerifier::new(b"", "x").unwrap_err();
    assert!(matches!(e, TrustError::Malformed { .. }), "{e}");
    let mut raw = Vec::new();
    {
        use openpgp::parse::Parse;
        let p = openpgp::Packet::from_bytes(&sig).unwrap();
        p.serialize(&mut raw).unwrap();
    }
    let n = raw.len();
    raw[n - 5] ^= 0x40;
    match check(&ks, NAME, &img, &raw) {
        Ok(_) => panic!("tampered signature accepted"),
        Err(e) => assert_eq!(e.verdict(), Verdict::BadSignature, "{e}"),
    }
}

#[test]
fn revoked_key_refused() {
    let d = tempfile::tempdir().unwrap();
    let ks = store_for(d.path());
    let c = cert("a");
    let img = data();
    let sig = sign(&c, &img);
    let mut signer = keypair(&c, false);
    let rev = c
        .revoke(&mut signer, ReasonForRevocation::KeyCompromised, b"stolen")
        .unwrap();
    let revoked = c.insert_packets(rev).unwrap().0;
    ks.store(&Scope::Prefix("example.com".into()), &revoked)
        .unwrap();
    let e = check(&ks, NAME, &img, &sig).unwrap_err();
    assert!(matches!(e, TrustError::RevokedKey { .. }), "{e}");
    assert!(e.to_string().contains("stolen"), "{e}");
}

#[test]
fn expired_key_refused() {
    let d = tempfile::tempdir().unwrap();
    let ks = store_for(d.path());
    let day = Duration::from_secs(86_400);
    let c = CertBuilder::new()
        .add_userid("old")
        .add_signing_subkey()
        .set_creation_time(SystemTime::now() - 3 * day)
        .set_validity_period(day)
        .generate()
        .unwrap()
        .0;
    ks.store(&Scope::Prefix("example.com".into()), &c).unwrap();
    let img = data();
    let sig = sign_with(
        &mut keypair(&c, true),
        &img,
        HashAlgorithm::SHA256,
        SystemTime::now(),
    );
    let e = check(&ks, NAME, &img, &sig).unwrap_err();
    assert!(matches!(e, TrustError::ExpiredKey { .. }), "{e}");
    // Signed while the key was valid: still good (as gpgv and sqv judge it).
    let sig = sign_with(
        &mut keypair(&c, true),
        &img,
        HashAlgorithm::SHA256,
        SystemTime::now() - 3 * day + Duration::from_secs(3600),
    );
    check(&ks, NAME, &img, &sig).unwrap();
}

#[test]
fn sha1_signature_refused() {
    let d = tempfile::tempdir().unwrap();
    let ks = store_for(d.path());
    let c = cert("a");
    ks.store(&Scope::Prefix("example.com".into()), &c).unwrap();
    let img = data();
    let sig = sign_with(
        &mut keypair(&c, true),
        &img,
        HashAlgorithm::SHA1,
        SystemTime::now(),
    );
    let e = check(&ks, NAME, &img, &sig).unwrap_err();
    assert!(matches!(e, TrustError::Policy { .. }), "{e}");
    assert!(e.to_string().contains("SHA1"), "{e}");
}

#[test]
fn certification_only_primary_refused() {
    let d = tempfile::tempdir().unwrap();
    let ks = store_for(d.path());
    let c = cert("a");
    ks.store(&Scope::Prefix("example.com".into()), &c).unwrap();
    let img = data();
    let sig = sign_with(
        &mut keypair(&c, false),
        &img,
        HashAlgorithm::SHA256,
        SystemTime::now(),
    );
    let e = check(&ks, NAME, &img, &sig).unwrap_err();
    assert!(e.to_string().contains("signing-capable"), "{e}");
}

#[test]
fn layers_mask_and_fingerprint_names() {
    let d = tempfile::tempdir().unwrap();
    let ks = store_for(d.path());
    let c = cert("vendor");
    // A vendor key in the system layer.
    let sys = Keystore {
        local: ks.system.clone(),
        system: d.path().join("none"),
    };
    let p = sys.store(&Scope::Prefix("example.com".into()), &c).unwrap();
    let img = data();
    let sig = sign(&c, &img);
    check(&ks, NAME, &img, &sig).unwrap();
    // An empty local file of the same name masks it.
    let mask = ks
        .local_dir(&Scope::Prefix("example.com".into()))
        .join(p.file_name().unwrap());
    fs::create_dir_all(mask.parent().unwrap()).unwrap();
    fs::write(&mask, b"").unwrap();
    let e = check(&ks, NAME, &img, &sig).unwrap_err();
    assert_eq!(e.verdict(), Verdict::UntrustedKey, "{e}");
    // A key file not named by its fingerprint is an error, not silently trusted.
    fs::remove_file(&mask).unwrap();
    let wrong = ks.local_dir(&Scope::Root).join("0123");
    fs::create_dir_all(wrong.parent().unwrap()).unwrap();
    fs::copy(&p, &wrong).unwrap();
    assert!(matches!(
        ks.keys_for(NAME),
        Err(TrustError::FingerprintMismatch { .. })
    ));
}

#[test]
fn bad_prefixes_and_key_files() {
    assert!(trust::check_prefix("example.com/foo").is_ok());
    for p in ["", "/abs", "a/../b", "a//b", "Upper.com", "a/"] {
        assert!(trust::check_prefix(p).is_err(), "{p:?}");
    }
    assert!(trust::parse_cert(b"not a key", "x").is_err());
    let a = cert("a");
    let b = cert("b");
    let mut two = Vec::new();
    a.serialize(&mut two).unwrap();
    b.serialize(&mut two).unwrap();
    assert!(trust::parse_cert(&two, "x").is_err());
    // Secrets are never stored.
    let d = tempfile::tempdir().unwrap();
    let ks = store_for(d.path());
    let p = ks.store(&Scope::Root, &a).unwrap();
    let stored = fs::read_to_string(p).unwrap();
    assert!(
        stored.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"),
        "{stored}"
    );
}
