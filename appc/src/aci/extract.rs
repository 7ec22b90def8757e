//! Hardened extraction of an ACI's `rootfs/` (placeholder, filled below).

use std::io::Read;
use std::path::Path;

use super::AciError;

/// Options of [`extract_rootfs`].
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// Absolute paths to keep (empty = everything).
    pub whitelist: Vec<String>,
    /// Create device nodes and fifos.
    pub allow_devices: bool,
}

/// Extract `rootfs/` of an uncompressed ACI tar into `dest`.
pub fn extract_rootfs<R: Read>(
    _tar: R,
    _dest: &Path,
    _opts: &ExtractOptions,
) -> Result<(), AciError> {
    Err(AciError::WorkerPanicked)
}
