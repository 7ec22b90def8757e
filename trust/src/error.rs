//! Errors of the keystore and of signature verification.

use std::path::PathBuf;

use thiserror::Error;

/// Why an image is not trusted, or the keystore failed.
#[derive(Debug, Error)]
pub enum TrustError {
    /// The image has no detached signature (none beside the file, none at `URL.asc`).
    #[error("no signature found for {image} (looked for {looked}); sign it with `gpg --armor --detach-sign`, pass --signature=FILE, or skip verification with --insecure-options=image")]
    Unsigned {
        /// The image reference.
        image: String,
        /// Where the signature was looked for.
        looked: String,
    },
    /// The signature file is not an OpenPGP detached signature.
    #[error("the signature of {image} is not a valid OpenPGP detached signature: {reason}")]
    Malformed {
        /// The image reference or the signature's origin.
        image: String,
        /// What is wrong.
        reason: String,
    },
    /// No key trusted for the image name (or a prefix of it, or root) made the signature.
    #[error("image {name} is signed by {signers}, which is not trusted for {name} or any prefix of it; to trust the signer's key, run `rkt trust --prefix={name}` (discovers the key), or `rkt trust --prefix={name} KEYFILE`{trusted}")]
    UntrustedKey {
        /// The image name (from its manifest).
        name: String,
        /// The key IDs or fingerprints named in the signature, comma separated.
        signers: String,
        /// A note on which keys are trusted for the name (may be empty).
        trusted: String,
    },
    /// The signature does not match the image: the image or the signature was altered.
    #[error("bad signature on image {name} by key {key}: {reason}")]
    BadSignature {
        /// The image name.
        name: String,
        /// Fingerprint of the signing key.
        key: String,
        /// What failed.
        reason: String,
    },
    /// The signing key (or its certificate) is revoked.
    #[error("image {name} is signed by revoked key {key}: {reason}")]
    RevokedKey {
        /// The image name.
        name: String,
        /// Fingerprint of the signing key.
        key: String,
        /// The revocation reason, if any.
        reason: String,
    },
    /// The signing key (or its certificate) was expired when the signature was made.
    #[error("image {name} is signed by key {key}, which was expired or not yet valid when the signature was made: {reason}")]
    ExpiredKey {
        /// The image name.
        name: String,
        /// Fingerprint of the signing key.
        key: String,
        /// Sequoia's explanation.
        reason: String,
    },
    /// The key is not marked as signing-capable, or the policy rejects it or the signature
    /// (e.g. a SHA-1 signature, a too-weak key).
    #[error("signature on image {name} by key {key} is rejected by policy: {reason}")]
    Policy {
        /// The image name.
        name: String,
        /// Fingerprint of the signing key.
        key: String,
        /// What the policy rejected.
        reason: String,
    },
    /// A key file cannot be parsed, or holds no or several certificates.
    #[error("invalid public key {origin}: {reason}")]
    BadKey {
        /// File or URL of the key.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// A prefix is not a valid appc identifier.
    #[error("invalid prefix {0:?}: it must be an appc image name or name prefix such as example.com/app")]
    BadPrefix(String),
    /// A trusted key file's name is not the fingerprint of the key it holds.
    #[error("trusted key file {path} holds key {found}, not the key its name says")]
    FingerprintMismatch {
        /// The key file.
        path: PathBuf,
        /// The fingerprint of the key inside.
        found: String,
    },
    /// A filesystem operation on the keystore failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Coarse classes of [`TrustError`], which the CLI maps to exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No signature.
    Unsigned,
    /// The signature is malformed, does not match, or the key is revoked/expired/rejected.
    BadSignature,
    /// The signer is not trusted for the image name.
    UntrustedKey,
    /// Not a verdict on an image (keystore or key-file problem).
    Other,
}

impl TrustError {
    /// The class of this error.
    pub fn verdict(&self) -> Verdict {
        match self {
            TrustError::Unsigned { .. } => Verdict::Unsigned,
            TrustError::Malformed { .. }
            | TrustError::BadSignature { .. }
            | TrustError::RevokedKey { .. }
            | TrustError::ExpiredKey { .. }
            | TrustError::Policy { .. } => Verdict::BadSignature,
            TrustError::UntrustedKey { .. } => Verdict::UntrustedKey,
            _ => Verdict::Other,
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| TrustError::Io { op, path, source }
    }
}
