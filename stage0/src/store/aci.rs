//! Glue between the store and the `appc` crate's ACI reader/extractor.
//!
//! TEMPORARY: extraction is a minimal local implementation until `appc::aci::extract_rootfs`
//! (hardened) is finished.

use std::io::{self, Read, Write};
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

/// Extract `rootfs/` of an uncompressed tar into `dest`, keeping only `whitelist` (empty = all).
pub fn extract_rootfs<R: Read>(tar: R, dest: &Path, whitelist: &[String]) -> Result<(), AciError> {
    extract_local(tar, dest, whitelist).map_err(AciError::Write)
}

fn extract_local<R: Read>(tar: R, dest: &Path, whitelist: &[String]) -> io::Result<()> {
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
