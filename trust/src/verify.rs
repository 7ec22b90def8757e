//! Streaming verification of a detached OpenPGP signature over an image as it is fetched:
//! [`StreamVerifier::new`] parses the signature before the image is read, [`update`] hashes
//! each chunk of image bytes as it passes, and [`verify`] checks the result against the keys
//! trusted for the image name, with Sequoia's standard policy (SHA-1 rejected): the key must
//! be bound and signing-capable, neither it nor its certificate revoked or expired at the
//! signature's creation time, and the signature itself alive now.
//!
//! [`update`]: StreamVerifier::update
//! [`verify`]: StreamVerifier::verify

use std::io;

use sequoia_openpgp as openpgp;

use openpgp::cert::amalgamation::{ValidAmalgamation, ValidateAmalgamation};
use openpgp::crypto::hash::Context;
use openpgp::packet::Signature;
use openpgp::parse::{PacketParser, PacketParserResult, Parse};
use openpgp::policy::{HashAlgoSecurity, Policy, StandardPolicy};
use openpgp::types::{RevocationStatus, SignatureType};
use openpgp::{Fingerprint, KeyHandle, Packet};

use crate::keystore::{Scope, TrustedKey};
use crate::TrustError;

/// Largest signature file accepted, in bytes.
pub const MAX_SIGNATURE_BYTES: usize = 64 * 1024;
/// Most signatures accepted in one file (each costs one hash pass over the image).
pub const MAX_SIGNATURES: usize = 8;

/// Who vouched for an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Fingerprint of the trusted certificate (its primary key).
    pub cert: Fingerprint,
    /// Fingerprint of the key that made the signature (the primary key or a subkey).
    pub signing_key: Fingerprint,
    /// The scope the certificate is trusted in.
    pub scope: Scope,
    /// The certificate's primary user ID, if any.
    pub user_id: Option<String>,
}

/// Hashes image bytes for each signature of a detached signature file.
pub struct StreamVerifier {
    sigs: Vec<(Signature, Context)>,
    bytes: u64,
}

impl std::fmt::Debug for StreamVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamVerifier")
            .field("signatures", &self.sigs.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// Upper-case hex of a key handle (what gpg prints).
fn handle_hex(h: &KeyHandle) -> String {
    match h {
        KeyHandle::Fingerprint(f) => f.to_hex(),
        KeyHandle::KeyID(k) => k.to_hex(),
    }
}

impl StreamVerifier {
    /// Parses a detached signature file (ASCII-armored or binary) naming `origin` in errors.
    pub fn new(signature: &[u8], origin: &str) -> Result<StreamVerifier, TrustError> {
        let bad = |reason: String| TrustError::Malformed {
            image: origin.to_string(),
            reason,
        };
        if signature.len() > MAX_SIGNATURE_BYTES {
            return Err(bad(format!("larger than {MAX_SIGNATURE_BYTES} bytes")));
        }
        let mut sigs = Vec::new();
        let mut ppr = PacketParser::from_bytes(signature).map_err(|e| bad(e.to_string()))?;
        while let PacketParserResult::Some(pp) = ppr {
            let (packet, next) = pp.next().map_err(|e| bad(e.to_string()))?;
            ppr = next;
            match packet {
                Packet::Signature(sig) => {
                    if sig.typ() != SignatureType::Binary {
                        return Err(bad(format!(
                            "a {} signature, not a signature of a binary document",
                            sig.typ()
                        )));
                    }
                    if sigs.len() == MAX_SIGNATURES {
                        return Err(bad(format!("more than {MAX_SIGNATURES} signatures")));
                    }
                    let mut ctx = sig
                        .hash_algo()
                        .context()
                        .map_err(|e| bad(e.to_string()))?
                        .for_signature(sig.version());
                    if let Signature::V6(s6) = &sig {
                        ctx.update(s6.salt());
                    }
                    sigs.push((sig, ctx));
                }
                Packet::Marker(_) => {}
                p => return Err(bad(format!("unexpected {} packet", p.tag()))),
            }
        }
        if sigs.is_empty() {
            return Err(bad("no signature packet in it".into()));
        }
        Ok(StreamVerifier { sigs, bytes: 0 })
    }

    /// Hashes the next chunk of the signed data.
    pub fn update(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        for (_, ctx) in &mut self.sigs {
            ctx.update(data);
        }
    }

    /// Number of data bytes hashed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Key IDs / fingerprints the signatures name as their issuers, comma separated.
    pub fn signers(&self) -> String {
        let mut v: Vec<String> = self
            .sigs
            .iter()
            .flat_map(|(s, _)| s.get_issuers())
            .map(|h| handle_hex(&h))
            .collect();
        v.dedup();
        if v.is_empty() {
            "an unnamed key".into()
        } else {
            format!("key {}", v.join(", "))
        }
    }

    /// Checks the hashed data against `keys` (those trusted for image `name`). Succeeds if
    /// any signature is good; otherwise reports the most telling failure (a bad, revoked,
    /// expired or rejected signature by a trusted key before "untrusted key").
    pub fn verify(&self, keys: &[TrustedKey], name: &str) -> Result<Verified, TrustError> {
        let policy = StandardPolicy::new();
        let mut failure: Option<TrustError> = None;
        for (sig, ctx) in &self.sigs {
            match check_one(&policy, sig, ctx, keys, name) {
                Ok(v) => return Ok(v),
                Err(Some(e)) => {
                    failure.get_or_insert(e);
                }
                Err(None) => {}
            }
        }
        Err(failure.unwrap_or_else(|| {
            let trusted = if keys.is_empty() {
                String::new()
            } else {
                format!(
                    " (trusted for it now: {})",
                    keys.iter()
                        .map(|k| format!("{} for {}", k.cert.fingerprint().to_hex(), k.scope))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            };
            TrustError::UntrustedKey {
                name: name.to_string(),
                signers: self.signers(),
                trusted,
            }
        }))
    }
}

/// One signature against the trusted keys: Ok if good, Err(None) if no trusted key made it,
/// Err(Some) if a trusted key made it but it does not hold.
fn check_one(
    policy: &StandardPolicy,
    sig: &Signature,
    ctx: &Context,
    keys: &[TrustedKey],
    name: &str,
) -> Result<Verified, Option<TrustError>> {
    let issuers = sig.get_issuers();
    if issuers.is_empty() {
        return Err(None);
    }
    let Some(sig_time) = sig.signature_creation_time() else {
        return Err(Some(TrustError::Malformed {
            image: name.to_string(),
            reason: "the signature has no creation time".into(),
        }));
    };
    let mut failure = None;
    for tk in keys {
        for ka in tk.cert.keys().key_handles(issuers.iter()) {
            let key = ka.key().fingerprint().to_hex();
            let ka = match ka.with_policy(policy, sig_time) {
                Ok(ka) => ka,
                Err(e) => {
                    // Not bound at that time (e.g. created later), expired, or rejected.
                    failure.get_or_insert(classify_key_error(name, &key, &e));
                    continue;
                }
            };
            let err = if let Err(e) = ka.valid_cert().alive() {
                Some(TrustError::ExpiredKey {
                    name: name.into(),
                    key,
                    reason: format!("certificate: {e}"),
                })
            } else if let Err(e) = ka.alive() {
                Some(TrustError::ExpiredKey {
                    name: name.into(),
                    key,
                    reason: e.to_string(),
                })
            } else if let RevocationStatus::Revoked(revs) = ka.valid_cert().revocation_status() {
                Some(TrustError::RevokedKey {
                    name: name.into(),
                    key,
                    reason: revocation_reason(&revs),
                })
            } else if let RevocationStatus::Revoked(revs) = ka.revocation_status() {
                Some(TrustError::RevokedKey {
                    name: name.into(),
                    key,
                    reason: revocation_reason(&revs),
                })
            } else if !ka.for_signing() {
                Some(TrustError::Policy {
                    name: name.into(),
                    key,
                    reason: "the key is not marked as signing-capable".into(),
                })
            } else if let Err(e) = policy.signature(sig, HashAlgoSecurity::CollisionResistance) {
                Some(TrustError::Policy {
                    name: name.into(),
                    key,
                    reason: chain(&e),
                })
            } else if let Err(e) = sig.signature_alive(None, None) {
                Some(TrustError::BadSignature {
                    name: name.into(),
                    key,
                    reason: chain(&e),
                })
            } else if let Err(e) = sig.verify_hash(ka.key(), ctx.clone()) {
                Some(TrustError::BadSignature {
                    name: name.into(),
                    key,
                    reason: format!("the image or its signature was altered ({})", chain(&e)),
                })
            } else {
                return Ok(Verified {
                    cert: tk.cert.fingerprint(),
                    signing_key: ka.key().fingerprint(),
                    scope: tk.scope.clone(),
                    user_id: ka
                        .valid_cert()
                        .primary_userid()
                        .ok()
                        .map(|u| String::from_utf8_lossy(u.userid().value()).into_owned()),
                });
            };
            if let Some(e) = err {
                failure.get_or_insert(e);
            }
        }
    }
    Err(failure)
}

/// Sequoia's reason for refusing a key at the signature's time, as one of our errors.
fn classify_key_error(name: &str, key: &str, e: &openpgp::anyhow::Error) -> TrustError {
    let reason = chain(e);
    let lower = reason.to_ascii_lowercase();
    if lower.contains("expired") || lower.contains("not yet") || lower.contains("not live") {
        TrustError::ExpiredKey {
            name: name.into(),
            key: key.into(),
            reason,
        }
    } else if lower.contains("revoked") {
        TrustError::RevokedKey {
            name: name.into(),
            key: key.into(),
            reason,
        }
    } else {
        TrustError::Policy {
            name: name.into(),
            key: key.into(),
            reason,
        }
    }
}

/// An error and its causes joined with ": ".
fn chain(e: &openpgp::anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

fn revocation_reason(revs: &[&Signature]) -> String {
    revs.iter()
        .filter_map(|r| r.reason_for_revocation())
        .map(|(code, msg)| {
            let msg = String::from_utf8_lossy(msg);
            if msg.is_empty() {
                code.to_string()
            } else {
                format!("{code}: {msg}")
            }
        })
        .next()
        .unwrap_or_else(|| "no reason given".into())
}

impl io::Write for StreamVerifier {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader that feeds every byte it reads from `inner` to a verifier (the single-pass
/// importer reads the image through it).
pub struct VerifyingReader<'a, R> {
    inner: R,
    verifier: &'a std::cell::RefCell<StreamVerifier>,
}

impl<'a, R> VerifyingReader<'a, R> {
    /// Wraps `inner`.
    pub fn new(inner: R, verifier: &'a std::cell::RefCell<StreamVerifier>) -> Self {
        VerifyingReader { inner, verifier }
    }
}

impl<R: io::Read> io::Read for VerifyingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(data) = buf.get(..n) {
            self.verifier.borrow_mut().update(data);
        }
        Ok(n)
    }
}
