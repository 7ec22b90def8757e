//! Glue between the store and the `appc` crate's ACI reader and hardened extractor.

use std::io::{Read, Write};
use std::path::Path;

pub use appc::aci::{AciError, Imported};

/// One pass through `appc::aci::import` with the default limits: decompress, copy the tar to
/// `out`, hash (sha256 + sha512), validate every entry.
pub fn import<R: Read, W: Write>(
    input: R,
    out: W,
    progress: &mut dyn FnMut(u64),
) -> Result<Imported, AciError> {
    appc::aci::import(input, out, &appc::aci::Limits::default(), progress)
}

/// Extracts `rootfs/` of an uncompressed, already validated ACI tar into `dest` (hardened:
/// nothing is created outside `dest`, symlinks are never followed), keeping only `whitelist`
/// (absolute paths; empty = everything). Later entries overwrite earlier ones, so calling it
/// once per layer renders dependencies.
pub fn extract_rootfs<R: Read>(tar: R, dest: &Path, whitelist: &[String]) -> Result<(), AciError> {
    let opts = appc::aci::ExtractOptions {
        whitelist: whitelist.to_vec(),
        ..Default::default()
    };
    appc::aci::extract_rootfs(tar, dest, &opts)
}
