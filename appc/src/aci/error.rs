//! Errors of reading, extracting and building ACIs.

use std::io;

use thiserror::Error;

use crate::schema::ManifestError;

/// Why an ACI was rejected or could not be processed.
#[derive(Debug, Error)]
pub enum AciError {
    /// The input could not be read.
    #[error("reading the image")]
    Read(#[source] io::Error),
    /// The output could not be written.
    #[error("writing the image")]
    Write(#[source] io::Error),
    /// Not gzip, bzip2, xz or a ustar archive.
    #[error("unrecognized image format (not gzip, bzip2, xz or tar)")]
    UnknownFormat,
    /// The compressed stream is damaged or cut short.
    #[error("corrupt {0} stream")]
    Corrupt(&'static str, #[source] io::Error),
    /// The tar stream is damaged.
    #[error("corrupt tar archive")]
    CorruptTar(#[source] io::Error),
    /// A GNU long-name/long-link entry or PAX header larger than the limit.
    #[error(transparent)]
    TarExtensionTooBig(#[from] super::TarExtensionTooBig),
    /// The tar ends without its end-of-archive marker.
    #[error("truncated tar archive")]
    Truncated,
    /// More uncompressed bytes than allowed.
    #[error("uncompressed size exceeds the limit of {limit} bytes")]
    TooBig {
        /// The limit in bytes.
        limit: u64,
    },
    /// Compression ratio beyond the limit (decompression bomb).
    #[error("compression ratio exceeds the limit of {limit}:1")]
    Ratio {
        /// The ratio limit (uncompressed/compressed).
        limit: u64,
    },
    /// More tar entries than allowed.
    #[error("more than {limit} entries")]
    TooManyEntries {
        /// The limit (count).
        limit: u64,
    },
    /// One entry breaks the ACI layout or safety rules.
    #[error("entry {path:?}: {problem}")]
    Entry {
        /// The entry's path as stored in the archive (lossy UTF-8).
        path: String,
        /// What is wrong.
        problem: EntryProblem,
    },
    /// The manifest entry is bigger than allowed.
    #[error("manifest is {size} bytes, more than the limit of {limit}")]
    ManifestTooBig {
        /// Its size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// No `manifest` entry.
    #[error("image has no manifest")]
    MissingManifest,
    /// The manifest does not parse or validate.
    #[error("invalid image manifest")]
    Manifest(#[source] ManifestError),
    /// Building supports only no compression and gzip.
    #[error("cannot write {0:?} compression")]
    UnsupportedCompression(super::Compression),
    /// A path given to the builder is not a clean relative path.
    #[error("bad path {0:?} for the image")]
    BadPath(String),
    /// A host file could not be added to an image.
    #[error("adding host path {path:?}")]
    Host {
        /// The host path.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A filesystem operation failed while extracting.
    #[error("extracting {path:?}: {op} failed")]
    Extract {
        /// The entry's path inside rootfs.
        path: String,
        /// The operation (`mkdirat`, `openat`, ...).
        op: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The hashing/validation thread panicked.
    #[error("image validation thread panicked")]
    WorkerPanicked,
}

impl AciError {
    /// An error of reading a tar stream: [`AciError::TarExtensionTooBig`] if the
    /// [`super::TarGuard`] refused the stream, [`AciError::CorruptTar`] otherwise.
    pub fn tar(e: io::Error) -> AciError {
        if super::TarExtensionTooBig::inside(&e).is_none() {
            return AciError::CorruptTar(e);
        }
        match e
            .into_inner()
            .map(|b| b.downcast::<super::TarExtensionTooBig>())
        {
            Some(Ok(x)) => AciError::TarExtensionTooBig(*x),
            Some(Err(b)) => AciError::CorruptTar(io::Error::other(b)),
            None => AciError::CorruptTar(io::Error::other("unreadable tar")),
        }
    }
}

/// What is wrong with one tar entry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EntryProblem {
    /// A `..` component.
    #[error("path contains \"..\"")]
    DotDot,
    /// An absolute path.
    #[error("absolute path")]
    Absolute,
    /// A NUL byte or empty path.
    #[error("malformed path")]
    Malformed,
    /// A path longer than PATH_MAX (4096 bytes).
    #[error("path longer than 4096 bytes")]
    PathTooLong,
    /// A path of more than 1024 components.
    #[error("path of more than 1024 components")]
    PathTooDeep,
    /// Remembering the archive's paths would take more than the limit (bytes).
    #[error("the archive's paths take more than {0} bytes to check")]
    PathsTooBig(u64),
    /// The path was already in the archive.
    #[error("duplicate entry")]
    Duplicate,
    /// A top-level entry other than `manifest` and `rootfs/`.
    #[error("not under rootfs/ and not the manifest")]
    OutsideLayout,
    /// `manifest` is not a regular file.
    #[error("manifest is not a regular file")]
    ManifestNotFile,
    /// `rootfs` is not a directory.
    #[error("rootfs is not a directory")]
    RootfsNotDir,
    /// A symlink whose target leaves rootfs/.
    #[error("symlink target {0:?} resolves outside rootfs")]
    SymlinkEscapes(String),
    /// An empty link target.
    #[error("empty link target")]
    EmptyLinkTarget,
    /// A parent directory of the entry is a symlink in the archive.
    #[error("parent {0:?} is a symlink")]
    ThroughSymlink(String),
    /// A parent of the entry is not a directory.
    #[error("parent {0:?} is not a directory")]
    ParentNotDir(String),
    /// A hardlink to an entry not (yet) in the archive or outside rootfs/.
    #[error("hardlink target {0:?} is not an earlier entry in rootfs")]
    HardlinkMissing(String),
    /// A hardlink to a directory.
    #[error("hardlink target {0:?} is a directory")]
    HardlinkToDir(String),
    /// A device node or fifo, not allowed by the limits.
    #[error("device nodes and fifos are not allowed")]
    Device,
    /// A tar entry type the ACI format has no use for.
    #[error("unsupported entry type {0:?}")]
    UnsupportedType(char),
    /// The entry's data could not be read.
    #[error("unreadable entry data")]
    Unreadable,
}
