//! `rkt image gc`: removes images not used within the grace period and not referenced by a
//! pod (keeping everything a kept image is rendered on), then unreferenced trees and blobs
//! that no index row names.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use super::{now_nanos, ImageRecord, Store, StoreError};

/// Images and trees that pods use (they are never collected).
#[derive(Debug, Clone, Default)]
pub struct PodReferences {
    /// Image IDs (`sha512-...`) named by pod manifests.
    pub images: HashSet<String>,
    /// Tree IDs the pods' overlays are built on.
    pub trees: HashSet<String>,
}

/// What `collect` does, in order.
#[derive(Debug)]
pub enum GcEvent {
    /// An image was removed.
    RemovedImage(String),
    /// Removing an image failed (collection goes on).
    RemoveFailed(String, StoreError),
    /// A rendered tree was removed.
    RemovedTree(String),
    /// A blob without an index row was removed.
    RemovedBlob(PathBuf),
}

/// Collects garbage in `store`: images last used more than `grace` ago that the pods'
/// references (`pod_refs`) do not name (nor any kept image depends on), trees of no live image
/// that no pod names, orphan blobs. Returns the number of images removed. `pod_refs` is read
/// once, then again for each tree under the tree's exclusive lock (a pod being created holds
/// its trees until its references are written: [`Store::hold_tree`]).
pub fn collect(
    store: &Store,
    grace: Duration,
    pod_refs: &dyn Fn() -> PodReferences,
    on: &mut dyn FnMut(GcEvent),
) -> Result<usize, StoreError> {
    let refs = pod_refs();
    let mut keep_images = refs.images.clone();
    for t in &refs.trees {
        if let Some(img) = store.tree_image(t)? {
            keep_images.insert(img);
        }
    }
    let grace_ns = i64::try_from(grace.as_nanos()).unwrap_or(i64::MAX);
    let cutoff = now_nanos().saturating_sub(grace_ns);
    let images = store.list()?;
    // Keep recently used and referenced images, and everything they are rendered on top of.
    let roots: Vec<&ImageRecord> = images
        .iter()
        .filter(|r| r.last_used >= cutoff || keep_images.contains(&r.id))
        .collect();
    for rec in roots {
        keep_images.insert(rec.id.clone());
        if let Ok(deps) = store.flatten_dependencies(rec) {
            keep_images.extend(deps.into_iter().map(|d| d.id));
        }
    }
    let mut removed = 0;
    for rec in images {
        if keep_images.contains(&rec.id) {
            continue;
        }
        match store.remove(&rec) {
            Ok(()) => {
                on(GcEvent::RemovedImage(rec.id));
                removed += 1;
            }
            Err(e) => on(GcEvent::RemoveFailed(rec.id, e)),
        }
    }
    for t in store.tree_ids()? {
        if refs.trees.contains(&t) {
            continue;
        }
        let alive = match store.tree_image(&t)? {
            Some(img) => store.get(&img)?.is_some(),
            None => false,
        };
        if !alive && store.remove_tree(&t, &mut || pod_refs().trees.contains(&t))? {
            on(GcEvent::RemovedTree(t));
        }
    }
    for b in store.remove_orphan_blobs()? {
        on(GcEvent::RemovedBlob(b));
    }
    Ok(removed)
}
