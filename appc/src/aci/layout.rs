//! The ACI layout and safety rules for tar entries, checked while streaming: exactly
//! `manifest` + `rootfs/...`, clean unique paths, links that stay inside rootfs/, no
//! entry below a symlink, no devices unless allowed.

use std::collections::{BTreeMap, HashMap};
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

/// Most symlinks followed within one resolution (Linux's MAXSYMLINKS).
const MAX_LINK_NESTING: u32 = 40;

/// Where resolving a symlink leads.
#[derive(Clone, Copy)]
enum Resolved {
    /// Node `node`, then `virtual_depth` components that do not exist.
    At { node: u32, virtual_depth: u32 },
    /// A symlink loop: nothing can be reached through it.
    Loop,
    /// Being resolved (meeting it again is a loop).
    InProgress,
}

/// Resolves the symlink node `id` (see [`LayoutChecker::check_links`]); `None` if it climbs
/// above `rootfs` or nests more than [`MAX_LINK_NESTING`] symlinks.
fn resolve_link(
    tree: &mut Tree,
    rootfs: u32,
    id: u32,
    nesting: u32,
    memo: &mut HashMap<u32, Resolved>,
) -> Option<Resolved> {
    match memo.get(&id) {
        Some(Resolved::InProgress) => return Some(Resolved::Loop),
        Some(r) => return Some(*r),
        None => {}
    }
    if nesting > MAX_LINK_NESTING {
        return None;
    }
    memo.insert(id, Resolved::InProgress);
    let target = tree
        .links
        .get(&id)
        .map(|(_, t)| t.clone())
        .unwrap_or_default();
    let mut node = if target.first() == Some(&b'/') {
        rootfs
    } else {
        tree.parent(id)
    };
    let mut virtual_depth = 0u32;
    let mut result = None;
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." if virtual_depth > 0 => virtual_depth -= 1,
            b".." if node == rootfs => return None,
            b".." => node = tree.parent(node),
            _ if virtual_depth > 0 => virtual_depth += 1,
            name => match tree.child(node, name) {
                None => virtual_depth = 1,
                Some(n) if tree.kind(n) == Kind::Symlink => {
                    match resolve_link(tree, rootfs, n, nesting + 1, memo)? {
                        Resolved::At {
                            node: a,
                            virtual_depth: v,
                        } => {
                            node = a;
                            virtual_depth = v;
                        }
                        _ => {
                            result = Some(Resolved::Loop);
                            break;
                        }
                    }
                }
                Some(n) => node = n,
            },
        }
    }
    let r = result.unwrap_or(Resolved::At {
        node,
        virtual_depth,
    });
    memo.insert(id, r);
    Some(r)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Bytes a path-tree node costs besides its name (map slot at the table's lowest load,
/// key allocation and node; an estimate on the high side).
const NODE_OVERHEAD: u64 = 96;

/// The paths seen so far, as a tree keyed by (parent node, component): recording or looking
/// up an entry costs in proportion to its path's length, never to its square.
struct Tree {
    /// Kind of each node; node 0 is the archive root (the empty path).
    kinds: Vec<Kind>,
    /// Parent of each node (the root's is itself).
    parents: Vec<u32>,
    /// Each symlink node's entry path and target.
    links: BTreeMap<u32, LinkEntry>,
    /// Parent node id (4 bytes, little-endian) + component name -> node id.
    children: HashMap<Box<[u8]>, u32>,
    /// Bytes charged so far (names plus [`NODE_OVERHEAD`] per node).
    bytes: u64,
    /// Scratch key for lookups.
    key: Vec<u8>,
}

impl Tree {
    fn new() -> Self {
        Self {
            kinds: vec![Kind::Dir],
            parents: vec![0],
            links: BTreeMap::new(),
            children: HashMap::new(),
            bytes: 0,
            key: Vec::new(),
        }
    }

    fn child(&mut self, id: u32, name: &[u8]) -> Option<u32> {
        self.key.clear();
        self.key.extend_from_slice(&id.to_le_bytes());
        self.key.extend_from_slice(name);
        self.children.get(&self.key[..]).copied()
    }

    /// A new node of `kind` for `name`, whose key `child` just looked up in vain (it is in
    /// `self.key`); `None` past `limit` bytes.
    fn add(&mut self, parent: u32, name: &[u8], kind: Kind, limit: u64) -> Option<u32> {
        self.bytes = self.bytes.saturating_add(name.len() as u64 + NODE_OVERHEAD);
        if self.bytes > limit {
            return None;
        }
        let n = u32::try_from(self.kinds.len()).ok()?;
        self.kinds.push(kind);
        self.parents.push(parent);
        self.children.insert(Box::from(&self.key[..]), n);
        Some(n)
    }

    fn kind(&self, id: u32) -> Kind {
        // Ids come from `children` or are 0; both index `kinds`.
        self.kinds
            .get(id as usize)
            .copied()
            .unwrap_or(Kind::Special)
    }

    fn parent(&self, id: u32) -> u32 {
        self.parents.get(id as usize).copied().unwrap_or(0)
    }

    fn set(&mut self, id: u32, kind: Kind) {
        if let Some(k) = self.kinds.get_mut(id as usize) {
            *k = kind;
        }
    }

    /// The node of a clean path, if recorded.
    fn find(&mut self, p: &[u8]) -> Option<u32> {
        let mut id = 0;
        if p.is_empty() {
            return Some(id);
        }
        for c in p.split(|&b| b == b'/') {
            id = self.child(id, c)?;
        }
        Some(id)
    }
}

/// A symlink's entry path (as stored) and target.
type LinkEntry = (Box<[u8]>, Box<[u8]>);

/// Streaming checker for one archive.
pub(crate) struct LayoutChecker<'a> {
    limits: &'a Limits,
    seen: Tree,
    entries: u64,
    manifest: Option<Vec<u8>>,
}

impl<'a> LayoutChecker<'a> {
    /// A checker enforcing `limits`.
    pub(crate) fn new(limits: &'a Limits) -> Self {
        Self {
            limits,
            seen: Tree::new(),
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
        if path.split(|&b| b == b'/').count() > MAX_PATH_DEPTH {
            return Err(bad(EntryProblem::PathTooDeep));
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
        let Some(rel) = path.strip_prefix(b"rootfs/") else {
            if path != b"rootfs" {
                return Err(bad(EntryProblem::OutsideLayout));
            }
            if kind != Kind::Dir {
                return Err(bad(EntryProblem::RootfsNotDir));
            }
            return self.record(&path, kind).map(drop).map_err(bad);
        };
        if kind == Kind::Special && !self.limits.allow_devices {
            return Err(bad(EntryProblem::Device));
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
                if target.contains(&0)
                    || target.len() > MAX_PATH_BYTES
                    || resolve_inside(dir, &target).is_none()
                {
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
                match self.seen.find(&t).map(|id| self.seen.kind(id)) {
                    Some(Kind::File | Kind::Symlink | Kind::Special) => {}
                    Some(Kind::Dir | Kind::ImpliedDir) => {
                        return Err(bad(EntryProblem::HardlinkToDir(lossy(&target))))
                    }
                    None => return Err(bad(EntryProblem::HardlinkMissing(lossy(&target)))),
                }
            }
            _ => {}
        }
        let id = self.record(&path, kind).map_err(bad)?;
        if etype == EntryType::Symlink {
            let target = entry.link_name_bytes().unwrap_or_default();
            let cost = (path.len() + target.len()) as u64 + NODE_OVERHEAD;
            self.seen.bytes = self.seen.bytes.saturating_add(cost);
            if self.seen.bytes > self.limits.max_path_tree_bytes {
                return Err(bad(EntryProblem::PathsTooBig(
                    self.limits.max_path_tree_bytes,
                )));
            }
            self.seen
                .links
                .insert(id, (Box::from(&raw[..]), Box::from(&target[..])));
        }
        Ok(())
    }

    /// Records `path` (clean, not empty) as `kind`: every parent must be a directory
    /// (explicit or implied, implied ones are added), never a symlink, and the path new
    /// (an explicit directory may follow its children).
    fn record(&mut self, path: &[u8], kind: Kind) -> Result<u32, EntryProblem> {
        let limit = self.limits.max_path_tree_bytes;
        let too_big = || EntryProblem::PathsTooBig(limit);
        let mut id = 0u32;
        let mut end = 0usize;
        let mut comps = path.split(|&b| b == b'/').peekable();
        while let Some(c) = comps.next() {
            let parent = path.get(..end.saturating_sub(1)).unwrap_or_default();
            match self.seen.kind(id) {
                Kind::Dir | Kind::ImpliedDir => {}
                Kind::Symlink => return Err(EntryProblem::ThroughSymlink(lossy(parent))),
                Kind::File | Kind::Special => {
                    return Err(EntryProblem::ParentNotDir(lossy(parent)))
                }
            }
            end += c.len() + 1;
            let last = comps.peek().is_none();
            id = match self.seen.child(id, c) {
                Some(n) if !last => n,
                Some(n) => {
                    return match self.seen.kind(n) {
                        Kind::ImpliedDir if kind == Kind::Dir => {
                            self.seen.set(n, kind);
                            Ok(n)
                        }
                        _ => Err(EntryProblem::Duplicate),
                    }
                }
                None if last => return self.seen.add(id, c, kind, limit).ok_or_else(too_big),
                None => self
                    .seen
                    .add(id, c, Kind::ImpliedDir, limit)
                    .ok_or_else(too_big)?,
            };
        }
        Ok(id)
    }

    /// Resolves every symlink through the symlinks of the finished tree, as the kernel
    /// would from inside rootfs: a target that climbs above rootfs is refused (e.g. `s -> .`
    /// with `l -> s/s/../..`, lexically inside). Each symlink is resolved once (memoized),
    /// so this is linear in the targets' lengths. Components that do not exist are taken
    /// lexically; a symlink loop cannot be followed, so it escapes nowhere.
    fn check_links(&mut self) -> Result<(), AciError> {
        let Some(rootfs) = self.seen.find(b"rootfs") else {
            return Ok(());
        };
        let ids: Vec<u32> = self.seen.links.keys().copied().collect();
        let mut memo = HashMap::new();
        for id in ids {
            if resolve_link(&mut self.seen, rootfs, id, 0, &mut memo).is_none() {
                let (path, target) = self.seen.links.get(&id).cloned().unwrap_or_default();
                return Err(AciError::Entry {
                    path: lossy(&path),
                    problem: EntryProblem::SymlinkEscapes(lossy(&target)),
                });
            }
        }
        Ok(())
    }

    /// The validated manifest, once all entries are checked.
    pub(crate) fn finish(mut self) -> Result<(ImageManifest, Vec<u8>), AciError> {
        self.check_links()?;
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
