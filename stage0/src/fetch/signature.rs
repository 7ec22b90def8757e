//! Image signature verification during the single-pass import (see docs/trust.md): the
//! detached signature is obtained first (beside a file, `--signature`, `URL.asc`, or the
//! discovered `{ext}=aci.asc` URL), every byte of the image is hashed as the importer reads
//! it, and the importer's pre-publish check verifies the signature against the keys trusted
//! for the manifest's name. A failed check leaves nothing in the store.

use std::cell::RefCell;
use std::io::Read;
use std::path::{Path, PathBuf};

use reqwest::blocking::Client;
use trust::{Keystore, StreamVerifier, TrustError, Verified, VerifyingReader};

use super::{FetchError, FetchOptions};
use crate::store::{ImageRecord, ImportSource, Store, StoreError};

/// The warning printed for every image fetched with `--insecure-options=image`.
/// `what` may carry image- or URL-derived text: control characters are escaped.
pub fn warn_skipped(what: &str) {
    eprintln!(
        "rkt: warning: signature verification has been disabled (--insecure-options=image): {} is not verified",
        crate::format::escape_control(what)
    );
}

/// The keystore of `opts` (rkt's defaults: `/etc/rkt`, `/usr/lib/rkt`).
pub fn keystore(opts: &FetchOptions) -> Keystore {
    opts.keystore
        .clone()
        .unwrap_or_else(|| Keystore::new(Path::new("/etc/rkt"), Path::new("/usr/lib/rkt")))
}

/// A verification in progress: the hashing verifier, the keystore, and the verdict.
pub(crate) struct Verification {
    verifier: RefCell<StreamVerifier>,
    keystore: Keystore,
    failure: RefCell<Option<TrustError>>,
    verified: RefCell<Option<Verified>>,
}

impl Verification {
    /// Starts verifying against `signature` (the `.asc` bytes; `origin` names it in errors).
    pub(crate) fn new(
        signature: &[u8],
        origin: &str,
        opts: &FetchOptions,
    ) -> Result<Verification, FetchError> {
        Ok(Verification {
            verifier: RefCell::new(StreamVerifier::new(signature, origin)?),
            keystore: keystore(opts),
            failure: RefCell::new(None),
            verified: RefCell::new(None),
        })
    }

    /// Checks the signature for the image named in `m` (the importer calls this after the
    /// last byte, before publishing).
    fn check(&self, m: &appc::ImageManifest) -> Result<(), String> {
        let name = m.name.as_str();
        let res = self
            .keystore
            .keys_for(name)
            .and_then(|keys| self.verifier.borrow().verify(&keys, name));
        match res {
            Ok(v) => {
                *self.verified.borrow_mut() = Some(v);
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                *self.failure.borrow_mut() = Some(e);
                Err(msg)
            }
        }
    }
}

/// Imports `r` through the store's single-pass importer, verifying `v` on the way when
/// given; `check` is the caller's own manifest check (discovery's name match), run first.
pub(crate) fn import(
    store: &Store,
    r: impl Read,
    src: &ImportSource,
    progress: &mut dyn FnMut(u64),
    check: &mut dyn FnMut(&appc::ImageManifest) -> Result<(), String>,
    v: Option<&Verification>,
) -> Result<(ImageRecord, Option<Verified>), StoreError> {
    let Some(v) = v else {
        return store
            .import_aci_checked(r, src, progress, &mut |m| check(m).map(|()| None))
            .map(|rec| (rec, None));
    };
    let mut both = |m: &appc::ImageManifest| {
        check(m)?;
        v.check(m)?;
        Ok(v.verified.borrow().as_ref().map(|x| x.signing_key.to_hex()))
    };
    let rec = store.import_aci_checked(
        VerifyingReader::new(r, &v.verifier),
        src,
        progress,
        &mut both,
    )?;
    Ok((rec, v.verified.borrow_mut().take()))
}

/// Turns an import error into the trust error stashed by the check, if that is what failed.
pub(crate) fn map_import_error(e: StoreError, v: Option<&Verification>) -> FetchError {
    if let (StoreError::Rejected(_), Some(v)) = (&e, v) {
        if let Some(t) = v.failure.borrow_mut().take() {
            return FetchError::Trust(t);
        }
    }
    FetchError::Store(e)
}

/// The verification of a download of `url` whose signature is at `sig_url`: None with
/// `--insecure-options=image` or for a stage1 from a trusted location.
pub(crate) fn for_download(
    client: &Client,
    url: &str,
    sig_url: &str,
    opts: &FetchOptions,
) -> Result<Option<Verification>, FetchError> {
    if opts.insecure.image || opts.trusted_location {
        return Ok(None);
    }
    if sig_url.starts_with("http://") && !opts.insecure.http {
        return Err(FetchError::HttpNotAllowed(sig_url.to_string()));
    }
    if opts.debug {
        eprintln!(
            "rkt: fetching signature {}",
            crate::format::escape_control(sig_url)
        );
    }
    let bytes = match download(client, sig_url, url) {
        Ok(b) => b,
        Err(e @ FetchError::Trust(_)) => {
            // No signature: if the image itself is missing, say that instead.
            if let Ok(r) = client.head(url).send() {
                let status = r.status().as_u16();
                if status == 404 || status == 410 {
                    return Err(FetchError::HttpStatus {
                        url: url.to_string(),
                        status,
                    });
                }
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    Verification::new(&bytes, sig_url, opts).map(Some)
}

/// After a new import: reports the signer, or warns that verification was skipped.
pub(crate) fn finished(rec: &ImageRecord, v: Option<&Verified>, opts: &FetchOptions) {
    if opts.quiet {
        return;
    }
    match v {
        Some(v) => report(rec, v, opts),
        None if opts.trusted_location => {}
        None => warn_skipped(&format!("image {} ({})", rec.display_name(), rec.sha256_id)),
    }
}

/// Prints who vouched for an image (stderr).
fn report(rec: &ImageRecord, v: &Verified, opts: &FetchOptions) {
    let who = v
        .user_id
        .as_deref()
        .map(|u| format!(" ({})", crate::format::escape_control(u)))
        .unwrap_or_default();
    eprintln!(
        "rkt: signature verified: {} signed by key {}{who}, trusted for {}",
        rec.display_name(),
        v.signing_key.to_hex(),
        v.scope
    );
    if opts.debug {
        eprintln!("rkt: certificate {}", v.cert.to_hex());
    }
}

/// The signature of a local image file: `--signature` or `<file>.asc`. None when absent.
pub(crate) fn read_local(
    image: &Path,
    explicit: Option<&Path>,
) -> Result<(Vec<u8>, PathBuf), FetchError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let mut s = image.as_os_str().to_owned();
            s.push(".asc");
            PathBuf::from(s)
        }
    };
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FetchError::Trust(TrustError::Unsigned {
                image: image.display().to_string(),
                looked: path.display().to_string(),
            }))
        }
        Err(e) => return Err(FetchError::File(path, e)),
    };
    let mut buf = Vec::new();
    f.take(trust::MAX_SIGNATURE_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| FetchError::File(path.clone(), e))?;
    Ok((buf, path))
}

/// Downloads a signature (before the image: rkt #573). 404/410 mean "unsigned".
pub(crate) fn download(client: &Client, url: &str, image: &str) -> Result<Vec<u8>, FetchError> {
    let resp = client
        .get(url)
        .send()
        .map_err(|e| FetchError::Http(url.to_string(), e.without_url()))?;
    let status = resp.status().as_u16();
    if status == 404 || status == 410 {
        return Err(FetchError::Trust(TrustError::Unsigned {
            image: image.to_string(),
            looked: url.to_string(),
        }));
    }
    if !resp.status().is_success() {
        return Err(FetchError::HttpStatus {
            url: url.to_string(),
            status,
        });
    }
    let mut buf = Vec::new();
    super::http::Progress::new(resp)
        .take(trust::MAX_SIGNATURE_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| super::http::body_error(url, e))?;
    Ok(buf)
}
