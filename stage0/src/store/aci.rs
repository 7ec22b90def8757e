//! Glue between the store and the `appc` crate's ACI reader/extractor.
//!
//! TEMPORARY: a minimal local implementation while `appc::aci` is being written; it is
//! replaced by thin calls into `appc::aci` (one-pass import, hardened extraction).

use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256, Sha512};
use thiserror::Error;

/// Errors reading or extracting an ACI.
#[derive(Debug, Error)]
pub enum AciError {
    /// Unknown compression.
    #[error("unknown archive format (not tar, gzip)")]
    UnknownFormat,
    /// A hostile or malformed entry.
    #[error("bad entry {0:?}: {1}")]
    BadEntry(String, &'static str),
    /// Manifest missing.
    #[error("no manifest in image")]
    NoManifest,
    /// Manifest invalid.
    #[error("invalid manifest")]
    Manifest(#[source] appc::ManifestError),
    /// I/O.
    #[error("read/write failed")]
    Io(#[from] io::Error),
}

/// The result of [`import`].
pub struct Imported {
    /// Parsed and validated manifest.
    pub manifest: appc::ImageManifest,
    /// The manifest bytes as found in the archive.
    pub manifest_json: Vec<u8>,
    /// Both digests of the uncompressed tar.
    pub digest: appc::id::ImageDigest,
    /// Uncompressed size in bytes.
    pub uncompressed_size: u64,
    /// Compressed size in bytes.
    pub compressed_size: u64,
}

struct Counting<'a, R> {
    inner: R,
    n: &'a std::cell::Cell<u64>,
    progress: &'a mut dyn FnMut(u64),
}
impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n.set(self.n.get() + k as u64);
        (self.progress)(self.n.get());
        Ok(k)
    }
}

struct Tee<R, W> {
    inner: R,
    out: W,
    s256: Sha256,
    s512: Sha512,
    n: u64,
}
impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        let d = buf.get(..k).unwrap_or_default();
        self.out.write_all(d)?;
        self.s256.update(d);
        self.s512.update(d);
        self.n += k as u64;
        Ok(k)
    }
}

/// One pass: decompress, copy the tar to `out`, hash, validate entries.
pub fn import<R: Read, W: Write>(
    input: R,
    out: W,
    progress: &mut dyn FnMut(u64),
) -> Result<Imported, AciError> {
    let consumed = std::cell::Cell::new(0u64);
    let mut counting = io::BufReader::with_capacity(
        1 << 20,
        Counting {
            inner: input,
            n: &consumed,
            progress,
        },
    );
    let head = io::BufRead::fill_buf(&mut counting)?;
    let gz = head.starts_with(&[0x1f, 0x8b]);
    let tar = head.get(257..262) == Some(b"ustar".as_slice());
    let dec: Box<dyn Read + '_> = if gz {
        Box::new(flate2::bufread::MultiGzDecoder::new(&mut counting))
    } else if tar {
        Box::new(&mut counting)
    } else {
        return Err(AciError::UnknownFormat);
    };
    let mut tee = Tee {
        inner: dec,
        out,
        s256: Sha256::new(),
        s512: Sha512::new(),
        n: 0,
    };
    let mut manifest_json = None;
    {
        let mut ar = tar::Archive::new(&mut tee);
        for e in ar.entries()? {
            let mut e = e?;
            let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let p = p.trim_start_matches("./").to_string();
            if p.starts_with('/') || p.split('/').any(|c| c == "..") {
                return Err(AciError::BadEntry(p, "path escapes the image"));
            }
            if p == "manifest" {
                let mut v = Vec::new();
                e.by_ref().take(1 << 20).read_to_end(&mut v)?;
                manifest_json = Some(v);
            } else if !(p == "rootfs" || p == "rootfs/" || p.starts_with("rootfs/")) {
                return Err(AciError::BadEntry(p, "outside manifest and rootfs/"));
            }
        }
    }
    io::copy(&mut tee, &mut io::sink())?;
    let manifest_json = manifest_json.ok_or(AciError::NoManifest)?;
    let manifest = appc::ImageManifest::from_json(&manifest_json).map_err(AciError::Manifest)?;
    let Tee {
        n: uncompressed_size,
        s256,
        s512,
        ..
    } = tee;
    let digest = appc::id::ImageDigest {
        sha256: s256.finalize().into(),
        sha512: s512.finalize().into(),
    };
    let compressed_size = consumed.get();
    Ok(Imported {
        manifest,
        manifest_json,
        digest,
        uncompressed_size,
        compressed_size,
    })
}

/// Extract `rootfs/` of an uncompressed tar into `dest`, keeping only `whitelist` (empty = all).
pub fn extract_rootfs<R: Read>(tar: R, dest: &Path, whitelist: &[String]) -> Result<(), AciError> {
    let mut ar = tar::Archive::new(tar);
    ar.set_preserve_permissions(true);
    ar.set_preserve_mtime(true);
    ar.set_overwrite(true);
    for e in ar.entries()? {
        let mut e = e?;
        let p = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let Some(rel) = p.trim_start_matches("./").strip_prefix("rootfs/") else {
            continue;
        };
        let rel = rel.trim_end_matches('/').to_string();
        if rel.is_empty() {
            continue;
        }
        if !whitelist.is_empty() && e.header().entry_type() != tar::EntryType::Directory {
            let abs = format!("/{rel}");
            if !whitelist.iter().any(|w| w == &abs) {
                continue;
            }
        }
        let target = dest.join(&rel);
        if e.header().entry_type() != tar::EntryType::Directory {
            if let Ok(md) = std::fs::symlink_metadata(&target) {
                if md.is_dir() && !md.file_type().is_symlink() {
                    let _ = std::fs::remove_dir_all(&target);
                } else {
                    let _ = std::fs::remove_file(&target);
                }
            }
        } else if std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
            let _ = std::fs::remove_file(&target);
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if e.header().entry_type() == tar::EntryType::Link {
            let Some(lt) = e.link_name()?.map(|l| l.into_owned()) else {
                continue;
            };
            let lt = lt.to_string_lossy().into_owned();
            let Some(lrel) = lt
                .trim_start_matches("./")
                .strip_prefix("rootfs/")
                .map(str::to_string)
            else {
                continue;
            };
            std::fs::hard_link(dest.join(lrel), &target)?;
            continue;
        }
        e.unpack(&target)?;
    }
    Ok(())
}
