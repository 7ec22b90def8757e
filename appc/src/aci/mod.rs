//! ACI archives: compression sniffing, one-pass import (decompress + hash + validate),
//! hardened rootfs extraction and building.
//!
//! An ACI is a tar (optionally gzip/bzip2/xz compressed) with exactly two top-level
//! entries: the `manifest` file and the `rootfs/` directory.

mod build;
mod error;
mod extract;
mod fsat;
mod import;
mod layout;
mod sniff;
mod targuard;

pub use build::{raw_tar_entry, AciBuilder};
pub use error::{AciError, EntryProblem};
pub use extract::{extract_rootfs, ExtractOptions};
pub use import::{import, read_manifest, read_manifest_from_tar, Imported, Limits};
pub use layout::{MAX_PATH_BYTES, MAX_PATH_DEPTH};
pub use sniff::{sniff, Compression, SNIFF_LEN};
pub use targuard::{TarExtensionTooBig, TarGuard, MAX_TAR_EXTENSION_BYTES};

#[cfg(test)]
mod extract_tests;
#[cfg(test)]
mod tests;
