//! Converting OCI image layouts (`oci:DIR[:TAG]`, `oci-archive:PATH[:TAG]`) and Docker
//! archives (`docker-archive:PATH[:NAME:TAG]`, the output of `docker save`) into one ACI tar,
//! streamed: the layers are applied top layer first (the first version of a path seen wins,
//! whiteouts and opaque directories hide what lies below them), every blob is checked against
//! its digest and size while it is read, and the image config becomes the appc manifest
//! (written last, once the image's own `/etc/passwd` is known). The output goes through
//! rkt's ACI importer, which validates it again.
//!
//! The output depends only on the uncompressed layers, the config's mapped fields and the
//! name and tag, so the OCI and Docker forms of one image convert to the same bytes.

mod blobs;
mod flatten;
mod mapping;
mod reference;
#[cfg(feature = "testutil")]
pub mod testutil;
mod verify;
mod zstd;

/// The only platform pods run on (OS, architecture as OCI and Docker name them); the entry
/// picked from a multi-platform image.
pub const PLATFORM: (&str, &str) = ("linux", "amd64");

use std::io::{self, Write};
use std::path::PathBuf;

use thiserror::Error;

pub use reference::{Format, Reference};

/// Errors of opening or converting an image.
#[derive(Debug, Error)]
pub enum OciError {
    /// The reference is malformed (e.g. `oci:` without a path).
    #[error("invalid image reference {0:?}: {1}")]
    BadReference(String, &'static str),
    /// The image file or directory cannot be read.
    #[error("cannot read {path}")]
    Open {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A blob or file the image names is not in the layout or archive.
    #[error("{0} is missing from the image")]
    Missing(String),
    /// No image in the layout or archive has the tag asked for.
    #[error("no image tagged {0:?} in the layout or archive")]
    NoSuchTag(String),
    /// A blob is a symlink, a directory or another non-regular file.
    #[error("{0} is not a regular file inside the image (symlinks are not followed)")]
    NotRegular(String),
    /// A blob's content does not match its digest.
    #[error("{what}: digest mismatch (want {want}, got {got})")]
    DigestMismatch {
        /// Which blob.
        what: String,
        /// The digest it was named by.
        want: String,
        /// What it hashed to.
        got: String,
    },
    /// A blob's size does not match its descriptor.
    #[error("{what}: size mismatch (descriptor says {want} bytes, got {got})")]
    SizeMismatch {
        /// Which blob.
        what: String,
        /// Size in the descriptor, bytes.
        want: u64,
        /// Bytes read (so far), bytes.
        got: u64,
    },
    /// A digest uses an algorithm other than sha256 or is malformed.
    #[error("unsupported or malformed digest {0:?} (only sha256 is accepted)")]
    BadDigest(String),
    /// A JSON document is larger than the limit.
    #[error("{what} is {size} bytes, more than the limit of {limit} bytes")]
    JsonTooBig {
        /// Which document.
        what: String,
        /// Its size, bytes.
        size: u64,
        /// The limit, bytes.
        limit: u64,
    },
    /// A JSON document does not parse.
    #[error("{what} is not valid: {reason}")]
    BadJson {
        /// Which document.
        what: String,
        /// The parser's message.
        reason: String,
    },
    /// The image is structurally wrong (tag not found, layer count mismatch, ...).
    #[error("invalid image: {0}")]
    Invalid(String),
    /// A layer entry's path is absolute or climbs out of the root.
    #[error("layer {layer}: entry {path:?} escapes the root file system")]
    PathEscape {
        /// Layer index, 0 = bottom.
        layer: usize,
        /// The entry path.
        path: String,
    },
    /// A layer is compressed with something other than gzip or zstd.
    #[error(
        "layer {0}: unsupported compression ({1}; gzip, zstd and uncompressed tar are supported)"
    )]
    Compression(usize, &'static str),
    /// A hardlink names a file that is not in its layer.
    #[error("layer {layer}: hardlink {path:?} names {target:?}, which is not in the same layer")]
    Hardlink {
        /// Layer index, 0 = bottom.
        layer: usize,
        /// The link.
        path: String,
        /// Its target.
        target: String,
    },
    /// Decompressed data exceeds a limit (a decompression bomb).
    #[error("layers expand to more than {limit} ({what})")]
    TooBig {
        /// Which limit.
        what: &'static str,
        /// The limit's value, with its unit.
        limit: String,
    },
    /// A layer tar is corrupt.
    #[error("layer {0}: corrupt tar")]
    CorruptLayer(usize, #[source] io::Error),
    /// Writing the ACI failed (e.g. the importer stopped reading).
    #[error("cannot write the converted image")]
    Write(#[source] io::Error),
    /// The mapped manifest is not a valid appc manifest.
    #[error("the converted manifest is invalid: {0}")]
    Manifest(String),
}

impl OciError {
    /// Whether the image itself is invalid or hostile (as opposed to an I/O problem).
    pub fn is_bad_image(&self) -> bool {
        !matches!(
            self,
            OciError::Open { .. }
                | OciError::Write(_)
                | OciError::BadReference(..)
                | OciError::NoSuchTag(_)
        )
    }

    /// Whether the image file or directory does not exist.
    pub fn is_not_found(&self) -> bool {
        match self {
            OciError::Open { source, .. } => source.kind() == io::ErrorKind::NotFound,
            OciError::NoSuchTag(_) => true,
            _ => false,
        }
    }
}

/// Resource limits of a conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest JSON document (index, manifest, config, manifest.json) accepted (bytes).
    pub max_json_bytes: u64,
    /// Largest total of decompressed layer bytes (bytes; default 16 GiB, as for ACIs).
    pub max_uncompressed_bytes: u64,
    /// Largest decompressed/compressed ratio (default 200, as for ACIs), enforced once more
    /// than `ratio_grace_bytes` are decompressed.
    pub max_ratio: u64,
    /// Decompressed bytes before the ratio applies (bytes; default 64 MiB).
    pub ratio_grace_bytes: u64,
    /// Most layer entries in all layers (count; default 1 000 000).
    pub max_entries: u64,
    /// Most entries in an `oci-archive`/`docker-archive` tar (count; default 100 000).
    pub max_archive_entries: u64,
    /// Most layers (count; default 1000).
    pub max_layers: usize,
    /// Most memory the flattening spends remembering paths: one tree node per path
    /// component (its name plus a fixed 96 per node) and the paths of files a higher layer
    /// replaced (bytes; default 512 MiB, room for 1 000 000 entries of ordinary paths).
    pub max_path_tree_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_json_bytes: 4 << 20,
            max_uncompressed_bytes: 16 << 30,
            max_ratio: 200,
            ratio_grace_bytes: 64 << 20,
            max_entries: 1_000_000,
            max_archive_entries: 100_000,
            max_layers: 1000,
            max_path_tree_bytes: 512 << 20,
        }
    }
}

/// An opened image: its config is read and checked, its layers are named; nothing is
/// decompressed yet.
pub struct Image {
    blobs: blobs::Blobs,
    layers: Vec<blobs::Layer>,
    config: oci_spec::image::ImageConfiguration,
    name: appc::AcIdentifier,
    version: String,
    limits: Limits,
    /// Warnings found so far (lossy mappings), one line each.
    warnings: Vec<String>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("layers", &self.layers.len())
            .finish()
    }
}

/// What a conversion produced besides the tar.
#[derive(Debug, Clone, Default)]
pub struct Converted {
    /// Every lossy mapping, one line each (the caller prints them).
    pub warnings: Vec<String>,
    /// Layer entries written (count).
    pub entries: u64,
}

impl Image {
    /// Opens the image `r` names: reads the index or `manifest.json`, the image manifest and
    /// the config (each bounded and digest-checked).
    pub fn open(r: &Reference, limits: &Limits) -> Result<Image, OciError> {
        let (blobs, found) = blobs::open(r, limits)?;
        let mut warnings = Vec::new();
        let (name, version) =
            mapping::name_and_version(r, found.ref_name.as_deref(), &mut warnings);
        Ok(Image {
            blobs,
            layers: found.layers,
            config: found.config,
            name,
            version,
            limits: limits.clone(),
            warnings,
        })
    }

    /// The appc name the image gets.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The `version` label the image gets.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Writes the ACI (uncompressed tar: `rootfs/` entries, then `manifest`) to `out`.
    pub fn write_aci<W: Write>(&self, out: W) -> Result<Converted, OciError> {
        let mut warnings = self.warnings.clone();
        let mut tar = tar::Builder::new(out);
        let flat = flatten::write_rootfs(&self.blobs, &self.layers, &self.limits, &mut tar)?;
        warnings.extend(flat.warnings);
        let manifest = mapping::manifest(
            &self.config,
            &self.name,
            &self.version,
            flat.passwd.as_deref(),
            &mut warnings,
        )?;
        let json =
            serde_json::to_vec_pretty(&manifest).map_err(|e| OciError::Manifest(e.to_string()))?;
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(json.len() as u64);
        h.set_mtime(0);
        tar.append_data(&mut h, "manifest", &json[..])
            .map_err(OciError::Write)?;
        tar.into_inner().map_err(OciError::Write)?;
        Ok(Converted {
            warnings,
            entries: flat.entries,
        })
    }
}

/// Recovers an [`OciError`] carried inside an `io::Error` by the checking readers.
/// A long-name, long-link or PAX entry over [`appc::aci::MAX_TAR_EXTENSION_BYTES`] (refused by
/// the [`appc::aci::TarGuard`] in front of every tar read here) is [`OciError::Invalid`],
/// saying so.
pub(crate) fn lift(e: io::Error, otherwise: impl FnOnce(io::Error) -> OciError) -> OciError {
    if let Some(x) = appc::aci::TarExtensionTooBig::inside(&e) {
        return OciError::Invalid(x.to_string());
    }
    if e.get_ref().is_some_and(|r| r.is::<OciError>()) {
        match e.into_inner().map(|b| b.downcast::<OciError>()) {
            Some(Ok(o)) => *o,
            Some(Err(b)) => otherwise(io::Error::other(b)),
            None => otherwise(io::Error::other("unknown")),
        }
    } else {
        otherwise(e)
    }
}
