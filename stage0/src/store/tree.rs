//! The tree store: `cas/tree/<treeid>/{rootfs,manifest,digest,rendered}`, each image rendered
//! once. `digest` is the tree's [`super::digest::tree_digest`] as rendered, which
//! `rkt image verify` compares with the tree as it is.
//!
//! The tree ID is `deps-sha512-<64 hex>`: the first 64 hex digits of the sha512 of the
//! comma-joined image IDs of the flattened dependency list (as rkt does). The `rendered` flag
//! is written last, after the tree is synced; a tree without it is partial and is re-rendered
//! from scratch under the tree's exclusive lock.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha512};

use super::digest::{tree_digest, DIGEST_FILE};
use super::{lock, now_nanos, ImageRecord, NameRef, Store, StoreError};
use crate::util::{write_atomic, LockMode};

/// Maximum nesting of dependencies (guards against cycles), count of levels.
pub(crate) const MAX_DEPENDENCY_DEPTH: usize = 32;

/// Name of the completion flag file.
const RENDERED: &str = "rendered";

/// A rendered image tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// `deps-sha512-<64 hex>`.
    pub id: String,
    /// The rendered root filesystem (use as a read-only overlayfs lower dir).
    pub rootfs: PathBuf,
    /// The top image's manifest file.
    pub manifest: PathBuf,
}

/// Tree ID for a flattened dependency list (sha512 image IDs, render order).
pub fn tree_id_for(ids: &[String]) -> String {
    let h = Sha512::digest(ids.join(",").as_bytes());
    let hex = hex::encode(h);
    format!("deps-sha512-{}", hex.get(..64).unwrap_or(&hex))
}

/// Dependencies depth-first in listed order, then the image itself (A->[B,C], C->[D] gives
/// B, D, C, A). Each image is visited once (an image reached again keeps its first position,
/// as in rkt), so a graph whose width doubles per level costs linear, not exponential, time.
/// A cycle is [`StoreError::DependencyCycle`].
pub(crate) fn flatten(store: &Store, top: &ImageRecord) -> Result<Vec<ImageRecord>, StoreError> {
    let mut walk = Walk {
        out: Vec::new(),
        done: HashSet::new(),
        path: HashSet::new(),
    };
    walk.visit(store, top, 0)?;
    Ok(walk.out)
}

/// State of one depth-first walk.
struct Walk {
    /// Render order so far.
    out: Vec<ImageRecord>,
    /// Images fully visited (in `out`).
    done: HashSet<String>,
    /// Images on the current path from the top (a dependency among them is a cycle).
    path: HashSet<String>,
}

impl Walk {
    fn visit(&mut self, store: &Store, rec: &ImageRecord, depth: usize) -> Result<(), StoreError> {
        if self.done.contains(&rec.id) {
            return Ok(());
        }
        if depth > MAX_DEPENDENCY_DEPTH || !self.path.insert(rec.id.clone()) {
            return Err(StoreError::DependencyCycle(rec.id.clone()));
        }
        let m = store.manifest(rec)?;
        for dep in &m.dependencies {
            let d = resolve_dependency(store, rec, dep)?;
            self.visit(store, &d, depth + 1)?;
        }
        self.path.remove(&rec.id);
        self.done.insert(rec.id.clone());
        self.out.push(rec.clone());
        Ok(())
    }
}

/// The store's image for one dependency of `rec` (by ID, else by name and labels).
fn resolve_dependency(
    store: &Store,
    rec: &ImageRecord,
    dep: &appc::schema::Dependency,
) -> Result<ImageRecord, StoreError> {
    let found = match &dep.image_id {
        Some(id) => match store.resolve(id) {
            Ok(r) => Some(r),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        },
        None => {
            let nr = NameRef {
                name: dep.image_name.as_str().to_string(),
                labels: dep
                    .labels
                    .iter()
                    .map(|l| (l.name.as_str().to_string(), l.value.clone()))
                    .collect(),
            };
            store.find_by_name(&nr)?
        }
    };
    found.ok_or_else(|| {
        let mut what = dep.image_name.as_str().to_string();
        if let Some(id) = &dep.image_id {
            what.push_str(&format!(" ({id})"));
        }
        StoreError::MissingDependency {
            image: rec.id.clone(),
            dependency: what,
        }
    })
}

fn tree_dir(store: &Store, id: &str) -> PathBuf {
    store.cas_dir().join("tree").join(id)
}

/// Whether `id` has the form of a tree ID (`deps-sha512-<64 lowercase hex>`), so that it can
/// be joined to a path without escaping `cas/tree`.
pub fn is_tree_id(id: &str) -> bool {
    id.strip_prefix("deps-sha512-").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The read-only rootfs of the fully rendered tree `id` under the data directory `data_dir`
/// (`<data_dir>/cas/tree/<id>/rootfs`), without opening the store; `None` when `id` is not a
/// tree ID or the tree is not (or no longer) completely rendered. stage1 entrypoints run from
/// here, never from a pod's `stage1/rootfs`, which the pod can write.
pub fn rendered_rootfs(data_dir: &Path, id: &str) -> Option<PathBuf> {
    if !is_tree_id(id) {
        return None;
    }
    let dir = data_dir.join("cas").join("tree").join(id);
    dir.join(RENDERED).is_file().then(|| dir.join("rootfs"))
}

/// A shared hold on a rendered tree (its lock, shared): while it lives, `image gc` and
/// `image verify` do not remove the tree. A pod keeps it from the render until its reference
/// to the tree (`stage1TreeStoreID`, `appsinfo/<app>/treeStoreID`) is written, after which
/// the reference keeps the tree.
#[derive(Debug)]
pub struct TreeHold {
    _lock: lock::StoreLock,
}

/// Attempts at finding a tree rendered under a shared hold: a tree can be removed between its
/// render (exclusive) and the hold (shared), flock offering no atomic downgrade.
const HOLD_ATTEMPTS: usize = 3;

/// Renders `top` if needed and holds its tree (see [`Store::hold_tree`]).
pub(crate) fn hold(store: &Store, top: &ImageRecord) -> Result<(Tree, TreeHold), StoreError> {
    let layers = flatten(store, top)?;
    let ids: Vec<String> = layers.iter().map(|r| r.id.clone()).collect();
    let id = tree_id_for(&ids);
    let dir = tree_dir(store, &id);
    let tree = Tree {
        id: id.clone(),
        rootfs: dir.join("rootfs"),
        manifest: dir.join("manifest"),
    };
    for _ in 0..HOLD_ATTEMPTS {
        {
            let _store_lock = store.lock_store(LockMode::Shared)?;
            let held = lock::tree(store.cas_dir(), &id, LockMode::Shared)?;
            if let Some(l) = held.filter(|_| dir.join(RENDERED).exists()) {
                touch_all(store, &layers)?;
                return Ok((tree, TreeHold { _lock: l }));
            }
        }
        render(store, top, &layers, &tree)?;
    }
    Err(StoreError::TreeRemoved(id))
}

/// Renders the tree of `layers` (`top` last) under the tree's exclusive lock, unless it is
/// rendered already.
fn render(
    store: &Store,
    top: &ImageRecord,
    layers: &[ImageRecord],
    tree: &Tree,
) -> Result<(), StoreError> {
    let id = &tree.id;
    let dir = tree_dir(store, id);
    let _store_lock = store.lock_store(LockMode::Shared)?;
    let _tree_lock = lock::tree(store.cas_dir(), id, LockMode::Exclusive)?;
    if dir.join(RENDERED).exists() {
        return Ok(());
    }
    // Partial leftovers of a killed renderer: we hold the lock, so nobody else uses them.
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(StoreError::io("remove partial tree", &dir))?;
    }
    // 0700 root:root, without the set-group-ID bit of cas/tree: the rootfs below it becomes
    // an app's root directory.
    super::datadir::make_private_dir(&dir).map_err(StoreError::io("create directory", &dir))?;
    fs::create_dir(&tree.rootfs).map_err(StoreError::io("create directory", &tree.rootfs))?;
    let whitelist = store.manifest(top)?.path_whitelist;
    for layer in layers {
        let _img = lock::image(store.cas_dir(), &layer.sha256_id, LockMode::Shared)?;
        let blob = store.open_blob(layer)?;
        let r = io::BufReader::with_capacity(1 << 20, blob);
        super::aci::extract_rootfs(r, &tree.rootfs, &whitelist)
            .map_err(|e| StoreError::Render(layer.id.clone(), e))?;
    }
    let manifest = store.manifest_json(top)?;
    write_atomic(&tree.manifest, &manifest, 0o644)
        .map_err(StoreError::io("write", &tree.manifest))?;
    let digest = tree_digest(&tree.rootfs).map_err(StoreError::io("digest", &tree.rootfs))?;
    write_atomic(&dir.join(DIGEST_FILE), digest.as_bytes(), 0o644)
        .map_err(StoreError::io("write", dir.join(DIGEST_FILE)))?;
    sync_fs(&dir)?;
    write_atomic(&dir.join(RENDERED), b"", 0o644)
        .map_err(StoreError::io("write", dir.join(RENDERED)))?;
    store.db().set_tree(id, &top.id, now_nanos())?;
    Ok(())
}

/// What `rkt image verify` found of an image's tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeCheck {
    /// The tree is as rendered.
    Intact,
    /// The tree is not (completely) rendered.
    NotRendered,
    /// The tree has no recorded digest (rendered by an rkt that did not record one).
    NoDigest,
    /// The tree changed since it was rendered: the recorded and the current digest.
    Damaged {
        /// The digest recorded at render time.
        recorded: String,
        /// The digest of the tree as it is.
        now: String,
    },
}

/// Checks the tree of `top` against the digest recorded when it was rendered, under the
/// tree's lock (shared: no renderer changes it meanwhile). Returns the tree ID and the finding.
pub(crate) fn check(store: &Store, top: &ImageRecord) -> Result<(String, TreeCheck), StoreError> {
    let layers = flatten(store, top)?;
    let ids: Vec<String> = layers.iter().map(|r| r.id.clone()).collect();
    let id = tree_id_for(&ids);
    let dir = tree_dir(store, &id);
    let _store_lock = store.lock_store(LockMode::Shared)?;
    let _tree_lock = lock::tree(store.cas_dir(), &id, LockMode::Shared)?;
    if !dir.join(RENDERED).is_file() {
        return Ok((id, TreeCheck::NotRendered));
    }
    let path = dir.join(DIGEST_FILE);
    let recorded = match crate::util::read_bounded(&path, 128) {
        Ok(b) => String::from_utf8_lossy(&b).trim().to_string(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((id, TreeCheck::NoDigest)),
        Err(e) => return Err(StoreError::io("read", &path)(e)),
    };
    let rootfs = dir.join("rootfs");
    let now = tree_digest(&rootfs).map_err(StoreError::io("digest", &rootfs))?;
    let found = if now == recorded {
        TreeCheck::Intact
    } else {
        TreeCheck::Damaged { recorded, now }
    };
    Ok((id, found))
}

/// Marks every layer of a tree as used now.
fn touch_all(store: &Store, layers: &[ImageRecord]) -> Result<(), StoreError> {
    for l in layers {
        store.touch_last_used(l)?;
    }
    Ok(())
}

/// syncfs(2) on the filesystem holding `dir`: every file of the tree reaches the disk.
fn sync_fs(dir: &Path) -> Result<(), StoreError> {
    let f = fs::File::open(dir).map_err(StoreError::io("open", dir))?;
    // SAFETY: syncfs on a valid open fd owned by `f`; the return value is checked.
    let r = unsafe { libc::syncfs(f.as_raw_fd()) };
    if r != 0 {
        return Err(StoreError::io("syncfs", dir)(io::Error::last_os_error()));
    }
    Ok(())
}

/// IDs of all trees (complete or partial).
pub(crate) fn list_ids(store: &Store) -> Result<Vec<String>, StoreError> {
    let root = store.cas_dir().join("tree");
    let rd = fs::read_dir(&root).map_err(StoreError::io("read directory", &root))?;
    Ok(rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("deps-"))
        .collect())
}

/// Removes a tree unless its lock is held or, asked under the tree's exclusive lock,
/// `in_use` says a pod names it.
pub(crate) fn remove(
    store: &Store,
    id: &str,
    in_use: &mut dyn FnMut() -> bool,
) -> Result<bool, StoreError> {
    if id.contains('/') || id.starts_with('.') {
        return Err(StoreError::BadReference(id.to_string()));
    }
    let Some(_l) = lock::acquire(
        store.cas_dir(),
        &lock::tree_lock_name(id),
        LockMode::Exclusive,
        false,
    )?
    else {
        return Ok(false);
    };
    // Asked now, not before the lock: a pod writes its reference while it holds the tree
    // (shared), so a reference written before this point is seen here, and a pod that comes
    // later finds the tree gone and renders it again.
    if in_use() {
        return Ok(false);
    }
    let dir = tree_dir(store, id);
    // Drop the completion flag first so a crash mid-removal leaves a tree marked partial.
    let _ = fs::remove_file(dir.join(RENDERED));
    match fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io("remove tree", &dir)(e)),
    }
    store.db().remove_tree(id)?;
    Ok(true)
}
