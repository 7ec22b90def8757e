//! The ACI layout and safety rules for tar entries, checked while streaming: exactly
//! `manifest` + `rootfs/...`, clean unique paths, links that stay inside rootfs/, no
//! entry below a symlink, no devices unless allowed.

use std::collections::HashMap;
use std::io::Read;

use tar::{Entry, EntryType};

use super::{AciError, EntryProblem, Limits};
use crate::schema::ImageManifest;

/// Longest accepted entry path, `rootfs/` included (bytes; Linux PATH_MAX). OCI layers are
/// held to it too (their paths get `rootfs/` in front).
pub const MAX_PATH_BYTES: usize = 4096;
/// Most components of an accepted entry path, `rootfs` included (count).
pub const MAX_PATH_DEPTH: usize = 1024;

/// What a path in the archive is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An explicit directory entry.
    Dir,
    /// A directory implied by a deeper entry.
    ImpliedDir,
    /// A regular file or hardlink.
    File,
    /// A symlink.
    Symlink,
    /// A device node or fifo.
    Special,
}

/// Normalize a tar path: drop empty and `.` components (so `./rootfs//a/` is `rootfs/a`),
/// reject `..`, absolute paths and NUL bytes. The archive root (`./`) gives an empty path.
pub(crate) fn clean_path(raw: &[u8]) -> Result<Vec<u8>, EntryProblem> {
    if raw.contains(&0) {
        return Err(EntryProblem::Malformed);
    }
    if raw.first() == Some(&b'/') {
        return Err(EntryProblem::Absolute);
    }
    let mut out = Vec::with_capacity(raw.len());
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(EntryProblem::DotDot),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(out)
}

/// Resolve a symlink `target` lexically from the symlink's directory `dir` (components
/// relative to rootfs). `None` if it climbs above the rootfs root.
fn resolve_inside(dir: &[u8], target: &[u8]) -> Option<()> {
    let mut depth: usize = if target.first() == Some(&b'/') || dir.is_empty() {
        0
    } else {
        dir.split(|&b| b == b'/').count()
    };
    for comp in target.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => depth = depth.checked_sub(1)?,
            _ => depth += 1,
        }
    }
    Some(())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Streaming checker for one archive.
pub(crate) struct LayoutChecker<'a> {
    limits: &'a Limits,
    seen: HashMap<Vec<u8>, Kind>,
    entries: u64,
    manifest: Option<Vec<u8>>,
}

impl<'a> LayoutChecker<'a> {
    /// A checker enforcing `limits`.
    pub(crate) fn new(limits: &'a Limits) -> Self {
        Self {
            limits,
            seen: HashMap::new(),
            entries: 0,
            manifest: None,
        }
    }

    /// Check one entry (reading its data only if it is the manifest).
    pub(crate) fn check<R: Read>(&mut self, entry: &mut Entry<'_, R>) -> Result<(), AciError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(AciError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        let raw = entry.path_bytes().into_owned();
        let bad = |problem| AciError::Entry {
            path: lossy(&raw),
            problem,
        };
        let etype = entry.header().entry_type();
        let kind = match etype {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => Kind::File,
            EntryType::Link => Kind::File,
            EntryType::Directory => Kind::Dir,
            EntryType::Symlink => Kind::Symlink,
            EntryType::Char | EntryType::Block | EntryType::Fifo => Kind::Special,
            // Metadata for the whole archive (e.g. `git archive`'s comment): not a file.
            EntryType::XGlobalHeader => return Ok(()),
            other => {
                return Err(bad(EntryProblem::UnsupportedType(char::from(
                    other.as_byte(),
                ))))
            }
        };
        let path = clean_path(&raw).map_err(bad)?;
        if path.len() > MAX_PATH_BYTES {
            return Err(bad(EntryProblem::PathTooLong));
        }
        if path.is_empty() {
            // The archive root (`./`): only as a directory, and it adds nothing.
            return if kind == Kind::Dir {
                Ok(())
            } else {
                Err(bad(EntryProblem::Malformed))
            };
        }
        if path == b"manifest" {
            if etype != EntryType::Regular && etype != EntryType::Continuous {
                return Err(bad(EntryProblem::ManifestNotFile));
            }
            if self.manifest.is_some() {
                return Err(bad(EntryProblem::Duplicate));
            }
            let size = entry.header().size().map_err(AciError::CorruptTar)?;
            if size > self.limits.max_manifest_bytes {
                return Err(AciError::ManifestTooBig {
                    size,
                    limit: self.limits.max_manifest_bytes,
                });
            }
            let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            entry
                .take(self.limits.max_manifest_bytes)
                .read_to_end(&mut buf)
                .map_err(AciError::CorruptTar)?;
            let m = ImageManifest::from_json(&buf).map_err(AciError::Manifest)?;
            self.manifest = Some(buf);
            drop(m);
            return Ok(());
        }
        if path == b"rootfs" {
            if kind != Kind::Dir {
                return Err(bad(EntryProblem::RootfsNotDir));
            }
            return match self.seen.insert(path, Kind::Dir) {
                Some(Kind::Dir) => Err(bad(EntryProblem::Duplicate)),
                _ => Ok(()),
            };
        }
        let Some(rel) = path.strip_prefix(b"rootfs/") else {
            return Err(bad(EntryProblem::OutsideLayout));
        };
        if kind == Kind::Special && !self.limits.allow_devices {
            return Err(bad(EntryProblem::Device));
        }
        // Every parent must be a directory (explicit or implied), never a symlink. Walk up
        // only to the nearest known directory: its own ancestors were checked when it was
        // recorded, so each entry costs O(new directories), not O(depth^2).
        let mut missing = Vec::new();
        for (i, _) in path.iter().enumerate().rev().filter(|(_, &b)| b == b'/') {
            let Some(parent) = path.get(..i) else { break };
            match self.seen.get(parent) {
                None => missing.push(i),
                Some(Kind::Dir | Kind::ImpliedDir) => break,
                Some(Kind::Symlink) => {
                    return Err(bad(EntryProblem::ThroughSymlink(lossy(parent))))
                }
                Some(Kind::File | Kind::Special) => {
                    return Err(bad(EntryProblem::ParentNotDir(lossy(parent))))
                }
            }
        }
        for i in missing {
            if let Some(parent) = path.get(..i) {
                self.seen.insert(parent.to_vec(), Kind::ImpliedDir);
            }
        }
        match etype {
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad(EntryProblem::EmptyLinkTarget))?;
                if target.is_empty() {
                    return Err(bad(EntryProblem::EmptyLinkTarget));
                }
                let dir = rel.rsplit_once_byte(b'/').map(|(d, _)| d).unwrap_or(b"");
                if target.contains(&0) || resolve_inside(dir, &target).is_none() {
                    return Err(bad(EntryProblem::SymlinkEscapes(lossy(&target))));
                }
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad(EntryProblem::EmptyLinkTarget))?;
                let t = clean_path(&target)
                    .map_err(|_| bad(EntryProblem::HardlinkMissing(lossy(&target))))?;
                if !t.starts_with(b"rootfs/") {
                    return Err(bad(EntryProblem::HardlinkMissing(lossy(&target))));
                }
                match self.seen.get(&t) {
                    Some(Kind::File | Kind::Symlink | Kind::Special) => {}
                    Some(Kind::Dir | Kind::ImpliedDir) => {
                        return Err(bad(EntryProblem::HardlinkToDir(lossy(&target))))
                    }
                    None => return Err(bad(EntryProblem::HardlinkMissing(lossy(&target)))),
                }
            }
            _ => {}
        }
        match self.seen.get(&path) {
            None => {
                self.seen.insert(path, kind);
                Ok(())
            }
            // An explicit directory entry after its children is fine.
            Some(Kind::ImpliedDir) if kind == Kind::Dir => {
                self.seen.insert(path, kind);
                Ok(())
            }
            Some(_) => Err(bad(EntryProblem::Duplicate)),
        }
    }

    /// The validated manifest, once all entries are checked.
    pub(crate) fn finish(self) -> Result<(ImageManifest, Vec<u8>), AciError> {
        let json = self.manifest.ok_or(AciError::MissingManifest)?;
        let m = ImageManifest::from_json(&json).map_err(AciError::Manifest)?;
        Ok((m, json))
    }
}

/// `rsplit_once` for byte slices.
trait RsplitOnceByte {
    fn rsplit_once_byte(&self, b: u8) -> Option<(&[u8], &[u8])>;
}

impl RsplitOnceByte for [u8] {
    fn rsplit_once_byte(&self, b: u8) -> Option<(&[u8], &[u8])> {
        let i = self.iter().rposition(|&c| c == b)?;
        Some((self.get(..i)?, self.get(i + 1..)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean() {
        assert_eq!(
            clean_path(b"./rootfs//a/./b/").unwrap_or_default(),
            b"rootfs/a/b"
        );
        assert_eq!(clean_path(b"./").unwrap_or_default(), b"");
        assert_eq!(clean_path(b"rootfs/../x"), Err(EntryProblem::DotDot));
        assert_eq!(clean_path(b"/etc"), Err(EntryProblem::Absolute));
        assert_eq!(clean_path(b"a\0b"), Err(EntryProblem::Malformed));
    }

    #[test]
    fn symlink_resolution() {
        assert!(resolve_inside(b"a/b", b"../c").is_some());
        assert!(resolve_inside(b"a/b", b"../../c").is_some());
        assert!(resolve_inside(b"a/b", b"../../../c").is_none());
        assert!(resolve_inside(b"", b"..").is_none());
        assert!(resolve_inside(b"a", b"/etc/passwd").is_some());
        assert!(resolve_inside(b"a/b/c", b"/../x").is_none());
    }
}
