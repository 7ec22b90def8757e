//! The SQLite image index at `cas/db/index.sqlite` (rollback journal, busy_timeout, versioned
//! schema).
//!
//! The index keeps SQLite's rollback journal (`journal_mode=DELETE`), not a WAL: every rkt
//! process is a short-lived sole connection, and most of them (`rkt run` by its exec of the
//! stage1) never close it, so a WAL's shared-memory index was rebuilt from the WAL at every
//! open (`-shm` truncated and re-grown, the frames read: ~0.13 ms of every `rkt run`), and a
//! WAL database cannot be read at all by a `rkt` group member, who may not create or write
//! its `-wal`/`-shm` files. A reader now takes a shared lock on the one file and reads; a
//! writer's commit waits for the readers of the moment (`busy_timeout`). An index that an
//! older rkt left in WAL mode is switched back by the first opener that can write it.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};

use super::datadir::{self, Owner};
use super::{lock, ImageRecord, StoreError};
use crate::util::LockMode;

/// Schema version stored in `PRAGMA user_version`: 1 the tables below, 2 adds
/// `images.signed_by` (the verifying key, hex; NULL when not verified).
pub const SCHEMA_VERSION: i64 = 2;

/// How long a writer waits for another process's transaction (and a reader for a commit in
/// progress), in milliseconds.
const BUSY_TIMEOUT_MS: u64 = 60_000;

/// The index's journal mode (see the module docs).
const JOURNAL_MODE: &str = "delete";

const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS images (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,      -- sha512-<128 hex>
    sha256_id   TEXT NOT NULL UNIQUE,      -- sha256-<64 hex>, the blob key
    name        TEXT NOT NULL,
    labels      TEXT NOT NULL,             -- JSON [[name, value], ...]
    size        INTEGER NOT NULL,          -- uncompressed bytes
    import_time INTEGER NOT NULL,          -- unix ns
    last_used   INTEGER NOT NULL,          -- unix ns
    source      TEXT,
    manifest    BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS images_name ON images(name);
CREATE TABLE IF NOT EXISTS remotes (
    url           TEXT PRIMARY KEY,
    image_id      TEXT NOT NULL,           -- sha512 id
    etag          TEXT,
    last_modified TEXT,
    max_age       INTEGER,                 -- seconds
    download_time INTEGER NOT NULL         -- unix ns of the last download or revalidation
);
CREATE TABLE IF NOT EXISTS trees (
    tree_id  TEXT PRIMARY KEY,
    image_id TEXT NOT NULL,                -- top image, sha512 id
    rendered INTEGER NOT NULL              -- unix ns
);
";

/// HTTP caching data for one URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The URL fetched.
    pub url: String,
    /// sha512 ID of the image it served.
    pub image_id: String,
    /// `ETag` response header.
    pub etag: Option<String>,
    /// `Last-Modified` response header.
    pub last_modified: Option<String>,
    /// `Cache-Control: max-age`, seconds.
    pub max_age: Option<u64>,
    /// Unix ns of the last download or successful revalidation.
    pub download_time: i64,
}

/// An open index.
pub(crate) struct Db {
    conn: Connection,
}

/// Version 1 to 2.
const SCHEMA_V2: &str = "ALTER TABLE images ADD COLUMN signed_by TEXT;";

const IMAGE_COLS: &str =
    "id, sha256_id, name, labels, size, import_time, last_used, source, signed_by";

fn row_to_record(r: &Row<'_>) -> rusqlite::Result<ImageRecord> {
    let labels: String = r.get(3)?;
    let size: i64 = r.get(4)?;
    Ok(ImageRecord {
        id: r.get(0)?,
        sha256_id: r.get(1)?,
        name: r.get(2)?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        size: u64::try_from(size).unwrap_or(0),
        import_time: r.get(5)?,
        last_used: r.get(6)?,
        source: r.get(7)?,
        signed_by: r.get(8)?,
    })
}

/// Whether the index is in [`JOURNAL_MODE`], and its schema version.
fn state(conn: &Connection) -> Result<(bool, i64), StoreError> {
    let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    Ok((mode.eq_ignore_ascii_case(JOURNAL_MODE), v))
}

/// Refuses an index written by a newer rkt.
fn check_version(v: i64) -> Result<(), StoreError> {
    if v > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: v,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Db {
    /// Opens or creates the index (mode [`datadir::INDEX_FILE_MODE`], owned by `owner`) and
    /// migrates it to [`SCHEMA_VERSION`]. A new or outdated index is set up (journal mode,
    /// schema) under the exclusive lock `cas/locks/index.lock`, so that the first parallel
    /// users of a brand-new store serialize; an index already set up is opened without that
    /// lock. A process that may read but not write the index (a member of the `rkt` group) gets
    /// a read-only connection ([`Db::open_read_only`]).
    pub(crate) fn open(path: &Path, cas: &Path, owner: Owner) -> Result<Db, StoreError> {
        // Create the file ourselves so that it never exists with SQLite's default 0644;
        // the journal SQLite creates beside it copies its mode and owner.
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(datadir::INDEX_FILE_MODE)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && path.exists() => {
                return Self::open_read_only(path);
            }
            Err(e) => return Err(StoreError::io("create", path)(e)),
        }
        datadir::secure_file(path, datadir::INDEX_FILE_MODE, owner)
            .map_err(StoreError::io("set the mode of", path))?;
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let (mut mode_ok, mut v) = state(&conn)?;
        if !mode_ok || v < SCHEMA_VERSION {
            let _init = lock::acquire(cas, "index", LockMode::Exclusive, true)?;
            (mode_ok, v) = state(&conn)?;
            if !mode_ok {
                // Leaving WAL needs every other connection gone: one still open (another rkt
                // that has not exited yet) keeps the WAL until a later open switches it.
                if let Err(e) = conn.pragma_update(None, "journal_mode", JOURNAL_MODE) {
                    log::debug!("index journal mode not switched yet: {e}");
                }
            }
            if v < SCHEMA_VERSION {
                // One immediate transaction: openers without the lock (older rkt) serialize
                // here too.
                let steps = if v < 1 {
                    format!("{SCHEMA_V1} {SCHEMA_V2}")
                } else {
                    SCHEMA_V2.to_string()
                };
                conn.execute_batch(&format!(
                    "BEGIN IMMEDIATE; {steps} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                ))?;
                v = SCHEMA_VERSION;
            }
        }
        check_version(v)?;
        Ok(Db { conn })
    }

    /// Opens the index for reading only: its schema must be current (only a writer migrates
    /// it) and it must not be in WAL mode (whose `-shm` a reader that may not write cannot
    /// use); [`StoreError::ReadOnlyIndex`] says what to run otherwise.
    fn open_read_only(path: &Path) -> Result<Db, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
        let read_only = |why: &'static str| StoreError::ReadOnlyIndex {
            path: path.to_path_buf(),
            why,
        };
        // The header's read and write versions are 2 in WAL mode (the file's bytes 18 and 19),
        // and a WAL database cannot be opened at all without its -shm: ask the file first.
        let mut header = [0u8; 20];
        let f = std::fs::File::open(path).map_err(StoreError::io("open", path))?;
        if std::os::unix::fs::FileExt::read_exact_at(&f, &mut header, 0).is_ok()
            && header.get(18..20) == Some(&[2, 2])
        {
            return Err(read_only("it is in WAL mode (an older rkt's)"));
        }
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen) => {
                    read_only("SQLite needs to write it first")
                }
                _ => StoreError::Db(e),
            })?;
        check_version(v)?;
        if v < SCHEMA_VERSION {
            return Err(read_only("its schema is older than this rkt's"));
        }
        Ok(Db { conn })
    }

    pub(crate) fn get_by_id(&self, id: &str) -> Result<Option<ImageRecord>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {IMAGE_COLS} FROM images WHERE id = ?1"),
                [id],
                row_to_record,
            )
            .optional()?)
    }

    pub(crate) fn get_by_sha256(&self, id: &str) -> Result<Option<ImageRecord>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {IMAGE_COLS} FROM images WHERE sha256_id = ?1"),
                [id],
                row_to_record,
            )
            .optional()?)
    }

    /// Images whose `col` (`id` or `sha256_id`) starts with `prefix` (hex lower-case).
    pub(crate) fn find_by_prefix(
        &self,
        col: &str,
        prefix: &str,
    ) -> Result<Vec<ImageRecord>, StoreError> {
        let col = if col == "id" { "id" } else { "sha256_id" };
        // IDs contain only [a-z0-9-], so no LIKE escaping is needed; substr keeps it exact.
        let mut st = self.conn.prepare(&format!(
            "SELECT {IMAGE_COLS} FROM images WHERE substr({col}, 1, length(?1)) = ?1 ORDER BY seq"
        ))?;
        let rows = st.query_map([prefix], row_to_record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Images named `name`, most recently imported first.
    pub(crate) fn find_by_name(&self, name: &str) -> Result<Vec<ImageRecord>, StoreError> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {IMAGE_COLS} FROM images WHERE name = ?1 ORDER BY import_time DESC, seq DESC"
        ))?;
        let rows = st.query_map([name], row_to_record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub(crate) fn list(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {IMAGE_COLS} FROM images ORDER BY import_time, seq"
        ))?;
        let rows = st.query_map([], row_to_record)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub(crate) fn manifest_json(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT manifest FROM images WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Inserts the image, or (re-import) updates its last use and source.
    pub(crate) fn upsert_image(
        &mut self,
        rec: &ImageRecord,
        manifest: &[u8],
        new: bool,
    ) -> Result<(), StoreError> {
        let labels = serde_json::to_string(&rec.labels).unwrap_or_else(|_| "[]".into());
        if new {
            self.conn.execute(
                "INSERT INTO images (id, sha256_id, name, labels, size, import_time, last_used, source, manifest, signed_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT(id) DO UPDATE SET last_used = excluded.last_used,
                    source = COALESCE(excluded.source, images.source),
                    signed_by = COALESCE(excluded.signed_by, images.signed_by)",
                params![
                    rec.id,
                    rec.sha256_id,
                    rec.name,
                    labels,
                    to_i64(rec.size),
                    rec.import_time,
                    rec.last_used,
                    rec.source,
                    manifest,
                    rec.signed_by
                ],
            )?;
        } else {
            self.conn.execute(
                "UPDATE images SET last_used = ?2, source = COALESCE(?3, source),
                    signed_by = COALESCE(?4, signed_by) WHERE id = ?1",
                params![rec.id, rec.last_used, rec.source, rec.signed_by],
            )?;
        }
        Ok(())
    }

    /// Deletes the image row and its remotes; returns whether a row existed.
    pub(crate) fn remove_image(&mut self, id: &str) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        let n = tx.execute("DELETE FROM images WHERE id = ?1", [id])?;
        tx.execute("DELETE FROM remotes WHERE image_id = ?1", [id])?;
        tx.commit()?;
        Ok(n > 0)
    }

    /// Sets an image's last-used time (at most once a minute per image on the start path of
    /// pods, see `Store::touch_last_used`).
    pub(crate) fn touch(&self, id: &str, now: i64) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE images SET last_used = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        Ok(())
    }

    pub(crate) fn get_remote(&self, url: &str) -> Result<Option<Remote>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT url, image_id, etag, last_modified, max_age, download_time FROM remotes WHERE url = ?1",
                [url],
                |r| {
                    let max_age: Option<i64> = r.get(4)?;
                    Ok(Remote {
                        url: r.get(0)?,
                        image_id: r.get(1)?,
                        etag: r.get(2)?,
                        last_modified: r.get(3)?,
                        max_age: max_age.and_then(|m| u64::try_from(m).ok()),
                        download_time: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    pub(crate) fn set_remote(&self, r: &Remote) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO remotes (url, image_id, etag, last_modified, max_age, download_time)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(url) DO UPDATE SET image_id = excluded.image_id, etag = excluded.etag,
                last_modified = excluded.last_modified, max_age = excluded.max_age,
                download_time = excluded.download_time",
            params![
                r.url,
                r.image_id,
                r.etag,
                r.last_modified,
                r.max_age.map(to_i64),
                r.download_time
            ],
        )?;
        Ok(())
    }

    pub(crate) fn revalidated(
        &self,
        url: &str,
        max_age: Option<u64>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE remotes SET max_age = ?2, download_time = ?3 WHERE url = ?1",
            params![url, max_age.map(to_i64), now],
        )?;
        Ok(())
    }

    pub(crate) fn set_tree(
        &self,
        tree_id: &str,
        image_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO trees (tree_id, image_id, rendered) VALUES (?1, ?2, ?3)
             ON CONFLICT(tree_id) DO UPDATE SET image_id = excluded.image_id, rendered = excluded.rendered",
            params![tree_id, image_id, now],
        )?;
        Ok(())
    }

    pub(crate) fn remove_tree(&self, tree_id: &str) -> Result<(), StoreError> {
        self.conn
            .execute("DELETE FROM trees WHERE tree_id = ?1", [tree_id])?;
        Ok(())
    }

    pub(crate) fn tree_image(&self, tree_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT image_id FROM trees WHERE tree_id = ?1",
                [tree_id],
                |r| r.get(0),
            )
            .optional()?)
    }
}
