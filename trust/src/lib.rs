//! Image trust as rkt had it: a keystore of OpenPGP certificates trusted per image-name
//! prefix ([`Keystore`]), and verification of a detached signature over an image while the
//! image streams past ([`StreamVerifier`]), on Sequoia's pure-Rust backend and standard
//! policy. See docs/trust.md.

mod error;
mod keystore;
mod verify;

pub use error::{TrustError, Verdict};
pub use keystore::{
    check_prefix, fingerprint_name, parse_cert, Keystore, Scope, TrustedKey, MAX_KEY_BYTES,
};
pub use verify::{StreamVerifier, Verified, VerifyingReader, MAX_SIGNATURES, MAX_SIGNATURE_BYTES};

/// Re-exported so callers (e.g. `rkt trust`) can print certificates and tests can make keys.
pub use sequoia_openpgp as openpgp;

/// A certificate's fingerprint in gpg's grouped form (`8B86 DE38 ... 2190`).
pub fn display_fingerprint(cert: &openpgp::Cert) -> String {
    cert.fingerprint().to_spaced_hex()
}

/// The user IDs of a certificate, as text.
pub fn user_ids(cert: &openpgp::Cert) -> Vec<String> {
    cert.userids()
        .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned())
        .collect()
}
