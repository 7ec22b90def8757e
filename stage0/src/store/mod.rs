//! The local image store under `<dir>/cas`: content-addressed blobs (the uncompressed tar of
//! each image), the SQLite image index, the tree store of rendered images, and the flocks that
//! keep concurrent `rkt` processes from corrupting any of it.
//!
//! Layout (see docs/store.md):
//!
//! ```text
//! cas/blob/sha256/<2hex>/sha256-<64hex>   uncompressed tar, written tmp -> fsync -> link/rename
//! cas/db/index.sqlite                       image index (rollback journal, busy_timeout, PRAGMA user_version)
//! cas/tree/<treeid>/{rootfs,manifest,digest,rendered}
//! cas/tmp/                                  in-progress imports (O_TMPFILE or flocked temp files)
//! cas/locks/                                store.lock, image-<sha256hex>.lock, tree-<treeid>.lock
//! ```
//!
//! Locking: importing takes no lock while it downloads and hashes; it takes the image's
//! exclusive lock only to publish the blob and its index row. Removal takes the same exclusive
//! lock; rendering holds the shared lock of every image it reads. Store operations that write
//! take the store lock shared; nothing takes it exclusively yet: `image gc` removes an image
//! under that image's exclusive lock and a tree only when the tree's lock is free, and decides
//! from the pods' references read just before, so a pod created on a tree between that read and
//! the removal is not seen (the same holds for `image verify`'s re-render). Rendering marks
//! the images used, so within gc's grace period their trees stay.

pub mod aci;
mod blob;
pub mod datadir;
mod db;
pub mod digest;
pub mod export;
pub mod gc;
mod lock;
mod tree;
pub use tree::TreeCheck;

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use thiserror::Error;

pub(crate) use blob::DownloadDir;
pub use db::{Remote, SCHEMA_VERSION};
pub use lock::StoreLock;
pub use tree::{is_tree_id, rendered_rootfs, tree_id_for, Tree, TreeHold};

use crate::util::LockMode;

/// Errors of the image store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// No image matches the reference.
    #[error("image {0:?} not found in the store")]
    NotFound(String),
    /// A tree was removed (`image gc`, `image verify`) each time right after it was rendered.
    #[error("tree {0} was removed again each time it was rendered (is `rkt image gc` running in a loop?)")]
    TreeRemoved(String),
    /// An ID prefix matches several images.
    #[error("image reference {reference:?} is ambiguous: matches {candidates}")]
    Ambiguous {
        /// The reference as given.
        reference: String,
        /// The matching IDs, comma separated.
        candidates: String,
    },
    /// The reference is neither an ID nor a valid image name.
    #[error("invalid image reference {0:?}")]
    BadReference(String),
    /// The archive is not a valid (or is a hostile) ACI.
    #[error("invalid image")]
    BadImage(#[source] aci::AciError),
    /// The image is valid but not the one asked for (e.g. another name than discovered).
    #[error("image rejected: {0}")]
    Rejected(String),
    /// The manifest stored in the index cannot be parsed.
    #[error("stored manifest of {0} is invalid")]
    BadManifest(String, #[source] appc::ManifestError),
    /// A dependency cannot be found in the store.
    #[error("dependency {dependency} of image {image} is not in the store")]
    MissingDependency {
        /// The image that needs it.
        image: String,
        /// The dependency's name (and labels) or ID.
        dependency: String,
    },
    /// The dependency graph is too deep or cyclic (an invalid image).
    #[error("dependencies of image {0} are cyclic or nested deeper than {max}", max = tree::MAX_DEPENDENCY_DEPTH)]
    DependencyCycle(String),
    /// The file system holding the data directory is full (ENOSPC or EDQUOT).
    #[error("no space left on the disk under {dir} (the file system holding the rkt data directory is full); free space, e.g. with `rkt image gc` and `rkt gc`")]
    NoSpace {
        /// The data directory (`--dir`).
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The image could not be read from its source (file or network).
    #[error("cannot read the image from its source")]
    Read(#[source] io::Error),
    /// Rendering the tree failed.
    #[error("cannot render image {0}")]
    Render(String, #[source] aci::AciError),
    /// The SQLite index failed.
    #[error("image index error")]
    Db(#[from] rusqlite::Error),
    /// The index can be read but not written by this process (a member of the `rkt` group),
    /// and SQLite cannot read it as it is.
    #[error("cannot read the image index {path} without writing it ({why}): run a `rkt` command as root once (e.g. `rkt image list`)")]
    ReadOnlyIndex {
        /// The index file.
        path: PathBuf,
        /// Why it cannot be read as it is.
        why: &'static str,
    },
    /// The index was written by a newer version of rkt.
    #[error("image index schema version {found} is newer than supported version {supported}")]
    SchemaTooNew {
        /// The version in the database.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// `image export`/`extract` would replace an existing output without `--overwrite`.
    #[error("output {0} {1} already exists (use --overwrite)")]
    OutputExists(&'static str, PathBuf),
    /// A filesystem operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    /// Wraps an io error with the operation and path.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }

    /// Whether this error means "no such image" (exit code IMAGE_NOT_FOUND).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StoreError::NotFound(_) | StoreError::MissingDependency { .. }
        )
    }

    /// Whether this error means "the archive is invalid or hostile" (exit code BAD_IMAGE).
    pub fn is_bad_image(&self) -> bool {
        matches!(
            self,
            StoreError::BadImage(_)
                | StoreError::BadManifest(..)
                | StoreError::Rejected(_)
                | StoreError::DependencyCycle(_)
        )
    }

    /// Whether the disk under the data directory is full.
    pub fn is_no_space(&self) -> bool {
        matches!(self, StoreError::NoSpace { .. })
    }
}

/// Whether `e` means "no space left on the device" (ENOSPC, or EDQUOT: quota exhausted).
pub fn is_no_space_io(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Whether a SQLite error means the disk is full.
fn is_no_space_db(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DiskFull))
}

/// One image in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    /// The appc image ID, `sha512-<128 hex>` (written into pod manifests).
    pub id: String,
    /// `sha256-<64 hex>` of the same uncompressed tar (what `rkt fetch` prints; the blob key).
    pub sha256_id: String,
    /// Image name from the manifest.
    pub name: String,
    /// Labels from the manifest, in manifest order.
    pub labels: Vec<(String, String)>,
    /// Size of the uncompressed tar in bytes.
    pub size: u64,
    /// Import time, Unix time in nanoseconds.
    pub import_time: i64,
    /// Last use (import, run, render), Unix time in nanoseconds.
    pub last_used: i64,
    /// Where it came from: a URL, `file:///abs/path`, or None.
    pub source: Option<String>,
    /// The key whose signature was verified when the image entered the store (hex), or None
    /// when it was not verified (`--insecure-options=image`, a stage1 beside rkt).
    pub signed_by: Option<String>,
}

impl ImageRecord {
    /// Value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `name:version` when the image has a version label, else `name`, as stored (for data
    /// output such as JSON).
    pub fn name_version(&self) -> String {
        match self.label("version") {
            Some(v) => format!("{}:{v}", self.name),
            None => self.name.clone(),
        }
    }

    /// [`ImageRecord::name_version`] with control characters escaped (labels are the
    /// image's), for printing.
    pub fn display_name(&self) -> String {
        crate::format::escape_control(&self.name_version()).into_owned()
    }
}

/// Where an imported image came from, and the HTTP caching data to remember for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSource {
    /// URL (`https://...`, `file:///...`) or None.
    pub url: Option<String>,
    /// HTTP `ETag` of the response.
    pub etag: Option<String>,
    /// HTTP `Last-Modified` of the response.
    pub last_modified: Option<String>,
    /// `Cache-Control: max-age` in seconds (0 = always revalidate).
    pub max_age: Option<u64>,
}

impl ImportSource {
    /// A local file (recorded as `file://<canonical path>`).
    pub fn file(path: &Path) -> Self {
        let abs = pod_abi::paths::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        ImportSource {
            url: Some(format!("file://{}", abs.display())),
            ..Default::default()
        }
    }
}

/// The image store. Cheap to open; `Send + Sync` (the SQLite connection sits behind a mutex).
pub struct Store {
    dir: PathBuf,
    cas: PathBuf,
    db: Mutex<db::Db>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

/// Resolution of an image's last-used time, in nanoseconds (one minute; `image gc` grace
/// periods are hours).
pub const LAST_USED_RESOLUTION_NS: i64 = 60 * 1_000_000_000;

pub use pod_abi::time::now_nanos;

impl Store {
    /// Opens (creating if needed) the store under `<dir>/cas`, with rkt's ownership and
    /// modes (see [`datadir`]; existing directories are tightened).
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let owner =
            datadir::secure_data_dir(dir).map_err(StoreError::io("create data directory", dir))?;
        let cas = dir.join("cas");
        for (sub, mode) in [
            ("", datadir::DATA_DIR_MODE),
            ("blob", datadir::DATA_DIR_MODE),
            ("blob/sha256", datadir::DATA_DIR_MODE),
            ("db", datadir::DATA_DIR_MODE),
            ("locks", datadir::DATA_DIR_MODE),
            ("tree", datadir::TREE_DIR_MODE),
            ("tmp", datadir::TREE_DIR_MODE),
        ] {
            let p = if sub.is_empty() {
                cas.clone()
            } else {
                cas.join(sub)
            };
            datadir::ensure_dir(&p, mode, owner)
                .map_err(|e| Self::no_space_or(dir, e, StoreError::io("create directory", &p)))?;
        }
        let db =
            db::Db::open(&cas.join("db").join("index.sqlite"), &cas, owner).map_err(
                |e| match e {
                    StoreError::Db(ref d) if is_no_space_db(d) => StoreError::NoSpace {
                        dir: dir.to_path_buf(),
                        source: io::Error::from_raw_os_error(libc::ENOSPC),
                    },
                    e => e,
                },
            )?;
        Ok(Store {
            dir: dir.to_path_buf(),
            cas,
            db: Mutex::new(db),
        })
    }

    /// [`StoreError::NoSpace`] if `e` is ENOSPC/EDQUOT, else `other(e)`.
    fn no_space_or(
        dir: &Path,
        e: io::Error,
        other: impl FnOnce(io::Error) -> StoreError,
    ) -> StoreError {
        if is_no_space_io(&e) {
            StoreError::NoSpace {
                dir: dir.to_path_buf(),
                source: e,
            }
        } else {
            other(e)
        }
    }

    /// Rewrites an error whose cause is a full disk (I/O or SQLite) as [`StoreError::NoSpace`].
    pub(crate) fn classify_no_space(&self, e: StoreError) -> StoreError {
        let full = match &e {
            StoreError::Io { source, .. } => is_no_space_io(source),
            StoreError::Db(d) => is_no_space_db(d),
            StoreError::Render(_, aci::AciError::Extract { source, .. }) => is_no_space_io(source),
            _ => false,
        };
        if !full {
            return e;
        }
        let source = match e {
            StoreError::Io { source, .. }
            | StoreError::Render(_, aci::AciError::Extract { source, .. }) => source,
            _ => io::Error::from_raw_os_error(libc::ENOSPC),
        };
        StoreError::NoSpace {
            dir: self.dir.clone(),
            source,
        }
    }

    /// The rkt data directory (`--dir`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<dir>/cas`.
    pub fn cas_dir(&self) -> &Path {
        &self.cas
    }

    fn db(&self) -> MutexGuard<'_, db::Db> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back on drop), so a poisoned mutex is still usable.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Path of an image's blob (the uncompressed tar).
    pub fn blob_path(&self, sha256_id: &str) -> PathBuf {
        blob::blob_path(&self.cas, sha256_id)
    }

    /// Takes the store-wide lock (shared for normal writers, exclusive for gc).
    pub fn lock_store(&self, mode: LockMode) -> Result<StoreLock, StoreError> {
        lock::acquire(&self.cas, "store", mode, true)?
            .ok_or_else(|| StoreError::NotFound("store lock".into()))
    }

    /// Import an ACI from a reader (file or HTTP body) in one streaming pass: decompress, write
    /// the uncompressed tar to a temp file in `cas/tmp`, hash it (sha256 and sha512) and
    /// validate every entry; then publish the blob (fsync, link/rename) and index it.
    /// `progress` receives the number of compressed bytes consumed so far.
    pub fn import_aci(
        &self,
        r: impl Read,
        src: &ImportSource,
        progress: &mut dyn FnMut(u64),
    ) -> Result<ImageRecord, StoreError> {
        self.import_aci_checked(r, src, progress, &mut |_| Ok(None))
    }

    /// Like [`Store::import_aci`], but `check` may reject the image (after validation, before it
    /// becomes visible in the store), e.g. because discovery asked for another name or its
    /// signature does not verify; it returns the verifying key (hex) when there is one, which
    /// the index records with the image.
    pub fn import_aci_checked(
        &self,
        r: impl Read,
        src: &ImportSource,
        progress: &mut dyn FnMut(u64),
        check: &mut dyn FnMut(&appc::ImageManifest) -> Result<Option<String>, String>,
    ) -> Result<ImageRecord, StoreError> {
        self.import_inner(r, src, progress, check)
            .map_err(|e| self.classify_no_space(e))
    }

    fn import_inner(
        &self,
        r: impl Read,
        src: &ImportSource,
        progress: &mut dyn FnMut(u64),
        check: &mut dyn FnMut(&appc::ImageManifest) -> Result<Option<String>, String>,
    ) -> Result<ImageRecord, StoreError> {
        let _store_lock = self.lock_store(LockMode::Shared)?;
        blob::cleanup_tmp(&self.cas);
        let mut tmp = blob::TempBlob::create(&self.cas)?;
        let imported = {
            let mut w = io::BufWriter::with_capacity(blob::WRITE_BUFFER_BYTES, tmp.file());
            let imported = aci::import(r, &mut w, progress).map_err(|e| match e {
                // The source (file, network) or our disk failed, not the image.
                aci::AciError::Read(e) => StoreError::Read(e),
                aci::AciError::Write(e) => StoreError::io("write", tmp.path())(e),
                e => StoreError::BadImage(e),
            })?;
            io::Write::flush(&mut w).map_err(StoreError::io("write", tmp.path()))?;
            imported
        };
        let signer = check(&imported.manifest).map_err(StoreError::Rejected)?;
        tmp.sync()?;
        let sha256_id = imported.digest.sha256_id();
        let id = imported.digest.sha512_id();
        let _img_lock = lock::image(&self.cas, &sha256_id, LockMode::Exclusive)?;
        let dest = self.blob_path(&sha256_id);
        let now = now_nanos();
        let mut db = self.db();
        let existing = db.get_by_id(&id)?;
        if existing.is_none() || !dest.exists() {
            tmp.publish(&dest)?;
        }
        drop(tmp);
        let rec = ImageRecord {
            id: id.clone(),
            sha256_id,
            name: imported.manifest.name.as_str().to_string(),
            labels: imported
                .manifest
                .labels
                .iter()
                .map(|l| (l.name.as_str().to_string(), l.value.clone()))
                .collect(),
            size: imported.uncompressed_size,
            import_time: existing.as_ref().map(|e| e.import_time).unwrap_or(now),
            last_used: now,
            source: src
                .url
                .clone()
                .or_else(|| existing.as_ref().and_then(|e| e.source.clone())),
            signed_by: signer.or_else(|| existing.as_ref().and_then(|e| e.signed_by.clone())),
        };
        db.upsert_image(&rec, &imported.manifest_json, existing.is_none())?;
        if let Some(url) = &src.url {
            db.set_remote(&Remote {
                url: url.clone(),
                image_id: id,
                etag: src.etag.clone(),
                last_modified: src.last_modified.clone(),
                max_age: src.max_age,
                download_time: now,
            })?;
        }
        Ok(rec)
    }

    /// Resolve an image reference: a `sha512-`/`sha256-` ID or unambiguous prefix (at least
    /// [`appc::id::MIN_ID_PREFIX_HEX`] hex digits), or `name[:version][,label=value...]`
    /// (the most recently imported match wins; `version=latest` matches any version).
    pub fn resolve(&self, reference: &str) -> Result<ImageRecord, StoreError> {
        if let Some(r) = appc::id::parse_id_ref(reference) {
            let (col, hex) = match &r {
                appc::id::IdRef::Sha256(h) => ("sha256_id", format!("sha256-{h}")),
                appc::id::IdRef::Sha512(h) => ("id", format!("sha512-{h}")),
            };
            let found = self.db().find_by_prefix(col, &hex)?;
            return match found.len() {
                0 => Err(StoreError::NotFound(reference.to_string())),
                1 => found
                    .into_iter()
                    .next()
                    .ok_or_else(|| StoreError::NotFound(reference.to_string())),
                _ => Err(StoreError::Ambiguous {
                    reference: reference.to_string(),
                    candidates: found
                        .iter()
                        .map(|r| r.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            };
        }
        if reference.starts_with("sha256-") || reference.starts_with("sha512-") {
            return Err(StoreError::BadReference(reference.to_string()));
        }
        let nr = NameRef::parse(reference)
            .ok_or_else(|| StoreError::BadReference(reference.to_string()))?;
        self.find_by_name(&nr)?
            .ok_or_else(|| StoreError::NotFound(reference.to_string()))
    }

    /// The most recently imported image whose name is `nr.name` and whose labels match.
    pub fn find_by_name(&self, nr: &NameRef) -> Result<Option<ImageRecord>, StoreError> {
        let cands = self.db().find_by_name(&nr.name)?;
        Ok(cands.into_iter().find(|rec| nr.matches(rec)))
    }

    /// All images, oldest import first.
    pub fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        self.db().list()
    }

    /// The image's manifest (cached in the index; parsed and validated).
    pub fn manifest(&self, rec: &ImageRecord) -> Result<appc::ImageManifest, StoreError> {
        let json = self.manifest_json(rec)?;
        appc::ImageManifest::from_json(&json)
            .map_err(|e| StoreError::BadManifest(rec.id.clone(), e))
    }

    /// The image's manifest exactly as stored in the ACI.
    pub fn manifest_json(&self, rec: &ImageRecord) -> Result<Vec<u8>, StoreError> {
        self.db()
            .manifest_json(&rec.id)?
            .ok_or_else(|| StoreError::NotFound(rec.id.clone()))
    }

    /// Opens the image's blob (the uncompressed tar).
    pub fn open_blob(&self, rec: &ImageRecord) -> Result<File, StoreError> {
        let p = self.blob_path(&rec.sha256_id);
        File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::NotFound(rec.id.clone())
            } else {
                StoreError::io("open blob", &p)(e)
            }
        })
    }

    /// Render the image's rootfs once into the tree store (dependencies depth-first in listed
    /// order, resolved from the store; later files overwrite; the top image's pathWhitelist
    /// applied). Marked complete (`rendered`) only after the tree is synced; concurrent
    /// callers wait on the tree lock and reuse the result.
    pub fn render_tree(&self, rec: &ImageRecord) -> Result<Tree, StoreError> {
        self.hold_tree(rec).map(|(t, _)| t)
    }

    /// [`Store::render_tree`], and a shared hold on the tree that keeps `image gc` and
    /// `image verify` from removing it until dropped: a pod keeps it until its reference to
    /// the tree is written.
    pub fn hold_tree(&self, rec: &ImageRecord) -> Result<(Tree, TreeHold), StoreError> {
        tree::hold(self, rec).map_err(|e| self.classify_no_space(e))
    }

    /// Compares the image's tree with the digest recorded when it was rendered
    /// (`rkt image verify`): the tree ID and what was found.
    pub fn check_tree(&self, rec: &ImageRecord) -> Result<(String, TreeCheck), StoreError> {
        tree::check(self, rec)
    }

    /// Whether the image's blob still hashes to its ID (SHA-512 of the whole blob, read under
    /// the image's shared lock).
    pub fn blob_matches_id(&self, rec: &ImageRecord) -> Result<bool, StoreError> {
        let _img = lock::image(&self.cas, &rec.sha256_id, LockMode::Shared)?;
        let mut f = self.open_blob(rec)?;
        let mut h = <sha2::Sha512 as sha2::Digest>::new();
        io::copy(&mut f, &mut h)
            .map_err(StoreError::io("read blob", self.blob_path(&rec.sha256_id)))?;
        let hex = hex::encode(sha2::Digest::finalize(h));
        Ok(rec.id.strip_prefix("sha512-") == Some(hex.as_str()))
    }

    /// The image's dependencies flattened in render order, the image itself last.
    pub fn flatten_dependencies(&self, rec: &ImageRecord) -> Result<Vec<ImageRecord>, StoreError> {
        tree::flatten(self, rec)
    }

    /// Removes the image's index row and blob (trees are removed by `image gc`).
    pub fn remove(&self, rec: &ImageRecord) -> Result<(), StoreError> {
        let _store_lock = self.lock_store(LockMode::Shared)?;
        let _img = lock::image(&self.cas, &rec.sha256_id, LockMode::Exclusive)?;
        let removed = self.db().remove_image(&rec.id)?;
        let p = self.blob_path(&rec.sha256_id);
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !removed {
                    return Err(StoreError::NotFound(rec.id.clone()));
                }
            }
            Err(e) => return Err(StoreError::io("remove blob", &p)(e)),
        }
        Ok(())
    }

    /// Records that the image was used now (for `image gc` and `image list`), to within
    /// [`LAST_USED_RESOLUTION_NS`]: a record used more recently than that is not written again,
    /// so that starting pods of an already-rendered image writes nothing to the store.
    pub fn touch_last_used(&self, rec: &ImageRecord) -> Result<(), StoreError> {
        let now = now_nanos();
        if now.saturating_sub(rec.last_used) < LAST_USED_RESOLUTION_NS {
            return Ok(());
        }
        self.db().touch(&rec.id, now)
    }

    /// HTTP caching data remembered for `url`, if any.
    pub fn remote(&self, url: &str) -> Result<Option<Remote>, StoreError> {
        self.db().get_remote(url)
    }

    /// Records a successful revalidation (HTTP 304) of `url`.
    pub fn revalidated(&self, url: &str, max_age: Option<u64>) -> Result<(), StoreError> {
        self.db().revalidated(url, max_age, now_nanos())
    }

    /// Image by exact sha512 ID, if present.
    pub fn get(&self, id: &str) -> Result<Option<ImageRecord>, StoreError> {
        self.db().get_by_id(id)
    }

    /// IDs of every rendered or partially rendered tree in `cas/tree`.
    pub fn tree_ids(&self) -> Result<Vec<String>, StoreError> {
        tree::list_ids(self)
    }

    /// Removes a tree unless someone holds it or, asked under the tree's exclusive lock,
    /// `in_use` says a pod names it; returns whether it was removed.
    pub fn remove_tree(
        &self,
        tree_id: &str,
        in_use: &mut dyn FnMut() -> bool,
    ) -> Result<bool, StoreError> {
        tree::remove(self, tree_id, in_use)
    }

    /// The sha512 image ID a tree was rendered for (its top image), if known.
    pub fn tree_image(&self, tree_id: &str) -> Result<Option<String>, StoreError> {
        self.db().tree_image(tree_id)
    }

    /// Removes blobs without an index row and stale temp files (part of `image gc`).
    pub fn remove_orphan_blobs(&self) -> Result<Vec<PathBuf>, StoreError> {
        let ids: std::collections::HashSet<String> =
            self.list()?.into_iter().map(|r| r.sha256_id).collect();
        blob::cleanup_tmp(&self.cas);
        let mut removed = Vec::new();
        for (sha256_id, path) in blob::list_blobs(&self.cas) {
            if ids.contains(&sha256_id) {
                continue;
            }
            let lock = lock::acquire(
                &self.cas,
                &lock::image_lock_name(&sha256_id),
                LockMode::Exclusive,
                false,
            )?;
            if lock.is_some()
                && self.db().get_by_sha256(&sha256_id)?.is_none()
                && fs::remove_file(&path).is_ok()
            {
                removed.push(path);
            }
        }
        Ok(removed)
    }
}

/// A reference by name: `name[:version][,label=value...]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRef {
    /// The image name (an ACIdentifier).
    pub name: String,
    /// Requested labels; `version` included when given as `:version`.
    pub labels: Vec<(String, String)>,
}

impl NameRef {
    /// Parses `name[:version][,label=value...]`; None if the name is not an ACIdentifier.
    pub fn parse(s: &str) -> Option<NameRef> {
        let mut parts = s.split(',');
        let head = parts.next()?;
        let (name, version) = match head.split_once(':') {
            Some((n, v)) => (n, Some(v)),
            None => (head, None),
        };
        if !appc::AcIdentifier::is_valid(name) {
            return None;
        }
        let mut labels = Vec::new();
        if let Some(v) = version {
            if v.is_empty() {
                return None;
            }
            labels.push(("version".to_string(), v.to_string()));
        }
        for p in parts {
            let (k, v) = p.split_once('=')?;
            if !appc::AcIdentifier::is_valid(k) || k == "name" {
                return None;
            }
            labels.retain(|(ek, _)| ek != k);
            labels.push((k.to_string(), v.to_string()));
        }
        Some(NameRef {
            name: name.to_string(),
            labels,
        })
    }

    /// Value of requested label `k`.
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    /// Whether `rec` satisfies this reference (appc label matching; `version=latest` matches
    /// any version).
    pub fn matches(&self, rec: &ImageRecord) -> bool {
        rec.name == self.name
            && self.labels.iter().all(|(k, v)| {
                (k == "version" && v == "latest" && rec.label("version") != Some("latest"))
                    || rec.label(k) == Some(v.as_str())
            })
    }
}

/// `name,label=value,...` with control characters escaped (labels may come from an image's
/// dependency list).
impl std::fmt::Display for NameRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::format::escape_control;
        f.write_str(&escape_control(&self.name))?;
        for (k, v) in &self.labels {
            write!(f, ",{}={}", escape_control(k), escape_control(v))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_refs() {
        let r = NameRef::parse("example.com/app:1.0,os=linux").expect("parses");
        assert_eq!(r.name, "example.com/app");
        assert_eq!(r.label("version"), Some("1.0"));
        assert_eq!(r.label("os"), Some("linux"));
        assert!(NameRef::parse("Example.com/app").is_none());
        assert!(NameRef::parse("example.com/app:").is_none());
        assert!(NameRef::parse("a,name=b").is_none());
        let rec = ImageRecord {
            id: String::new(),
            sha256_id: String::new(),
            name: "example.com/app".into(),
            labels: vec![("version".into(), "2.0".into())],
            size: 0,
            import_time: 0,
            last_used: 0,
            source: None,
            signed_by: None,
        };
        assert!(NameRef::parse("example.com/app").is_some_and(|r| r.matches(&rec)));
        assert!(NameRef::parse("example.com/app:latest").is_some_and(|r| r.matches(&rec)));
        assert!(!NameRef::parse("example.com/app:1.0").is_some_and(|r| r.matches(&rec)));
        assert!(!NameRef::parse("example.com/app,os=linux").is_some_and(|r| r.matches(&rec)));
    }
}
