//! `oci:DIR[:TAG]`, `oci-archive:PATH[:TAG]` and `docker-archive:PATH[:NAME:TAG]`: the
//! `oci-import` crate converts the image into an ACI tar on a thread, and the store's
//! single-pass importer reads it through a pipe, validates it again and publishes it. The
//! conversion must have succeeded before the image becomes visible (the importer's check).

use std::cell::RefCell;
use std::io::{self, BufWriter};

use oci_import::{Converted, Image, Limits, OciError, Reference};

use super::{FetchError, FetchOptions};
use crate::store::{ImageRecord, ImportSource, Store, StoreError};

/// Buffer between the converter and the pipe (bytes).
const PIPE_BUFFER: usize = 1 << 20;

/// Converts and imports the image `r` names. These formats carry no appc signature, so the
/// image is only accepted with `--insecure-options=image`.
pub(super) fn fetch_oci(
    store: &Store,
    r: &Reference,
    opts: &FetchOptions,
) -> Result<ImageRecord, FetchError> {
    if !(opts.insecure.image || opts.trusted_location) {
        return Err(FetchError::OciUnsigned(r.to_string()));
    }
    // Recorded as the image's source: the reference with the absolute path.
    let abs = Reference {
        path: pod_abi::paths::canonicalize(&r.path).unwrap_or_else(|_| r.path.clone()),
        ..r.clone()
    };
    let src = ImportSource {
        url: Some(abs.to_string()),
        ..Default::default()
    };
    import_layout(store, r, &r.to_string(), src, opts)
}

/// Converts and imports the image `r` names, recorded with `src`; `label` names the image in
/// warnings (the reference the user gave). The caller has checked `--insecure-options=image`.
pub(super) fn import_layout(
    store: &Store,
    r: &Reference,
    label: &str,
    src: ImportSource,
    opts: &FetchOptions,
) -> Result<ImageRecord, FetchError> {
    let image = Image::open(r, &Limits::default())?;
    let (rd, wr) = io::pipe().map_err(|e| FetchError::Store(StoreError::Read(e)))?;
    let outcome: RefCell<Option<Result<Converted, OciError>>> = RefCell::new(None);
    let imported = std::thread::scope(|s| {
        let image = &image;
        let mut handle =
            Some(s.spawn(move || image.write_aci(BufWriter::with_capacity(PIPE_BUFFER, wr))));
        let mut join = |h: std::thread::ScopedJoinHandle<'_, Result<Converted, OciError>>| {
            let res = h
                .join()
                .unwrap_or_else(|_| Err(OciError::Invalid("the converter panicked".into())));
            let failed = res.as_ref().err().map(|e| e.to_string());
            *outcome.borrow_mut() = Some(res);
            failed
        };
        let imported = store.import_aci_checked(rd, &src, &mut |_| {}, &mut |_| match handle
            .take()
            .map(&mut join)
        {
            Some(Some(e)) => Err(format!("conversion failed: {e}")),
            _ => Ok(None),
        });
        // The importer stopped early (it dropped the pipe): collect the converter's verdict.
        if let Some(h) = handle.take() {
            join(h);
        }
        imported
    });
    match (imported, outcome.into_inner()) {
        (Ok(rec), Some(Ok(conv))) => {
            for w in &conv.warnings {
                eprintln!(
                    "rkt: warning: {}: {}",
                    crate::format::escape_control(label),
                    crate::format::escape_control(w)
                );
            }
            if !opts.trusted_location && !opts.quiet {
                super::warn_skipped(label);
            }
            Ok(rec)
        }
        // A conversion error explains a failed import better than the importer's (which saw
        // a truncated stream), unless it is only the broken pipe the importer caused.
        (_, Some(Err(e))) if e.is_bad_image() => Err(FetchError::Oci(e)),
        (Err(e), _) => Err(FetchError::Store(e)),
        (Ok(_), _) => Err(FetchError::Oci(OciError::Invalid(
            "the conversion did not finish".into(),
        ))),
    }
}
