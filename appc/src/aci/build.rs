//! Writing ACIs: [`AciBuilder`] (manifest + rootfs entries, plain or gzip) and
//! [`raw_tar_entry`], an unchecked escape hatch for building hostile test archives.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use flate2::write::GzEncoder;
use tar::{EntryType, Header};

use super::{AciError, Compression};
use crate::schema::ImageManifest;

/// gzip level used for new images (1-9; 6 is gzip's default trade-off).
const GZIP_LEVEL: u32 = 6;

/// The output, optionally gzip-compressed.
enum Sink<W: Write> {
    Plain(W),
    Gzip(Box<GzEncoder<W>>),
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Gzip(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
        }
    }
}

/// Builds an ACI: the manifest first, then rootfs entries in the order added.
///
/// Entries get uid/gid 0 and the builder's mtime (default 0, see [`AciBuilder::set_mtime`])
/// unless taken from the host.
pub struct AciBuilder<W: Write> {
    tar: tar::Builder<Sink<W>>,
    mtime: u64,
    /// Host (dev, inode) already added → its path in the archive, for hardlinks.
    links: HashMap<(u64, u64), String>,
}

/// Turn a path inside rootfs (`/usr/bin/x`, `usr/bin/x`) into the archive path
/// `rootfs/usr/bin/x`, refusing `..` and empty paths.
fn archive_path(p: &str) -> Result<String, AciError> {
    let mut out = String::from("rootfs");
    let mut any = false;
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(AciError::BadPath(p.to_string())),
            c if c.contains('\0') => return Err(AciError::BadPath(p.to_string())),
            c => {
                out.push('/');
                out.push_str(c);
                any = true;
            }
        }
    }
    if any {
        Ok(out)
    } else {
        Err(AciError::BadPath(p.to_string()))
    }
}

impl<W: Write> AciBuilder<W> {
    /// Start an image with a validated manifest (`c` is `None` or `Gzip`).
    pub fn new(out: W, c: Compression, manifest: &ImageManifest) -> Result<Self, AciError> {
        manifest
            .validate()
            .map_err(|e| AciError::Manifest(e.into()))?;
        Self::with_raw_manifest(out, c, &manifest.to_json_pretty())
    }

    /// Start an image with manifest bytes taken as-is (not validated; for tests).
    pub fn with_raw_manifest(out: W, c: Compression, manifest: &[u8]) -> Result<Self, AciError> {
        let sink = match c {
            Compression::None => Sink::Plain(out),
            Compression::Gzip => Sink::Gzip(Box::new(GzEncoder::new(
                out,
                flate2::Compression::new(GZIP_LEVEL),
            ))),
            other => return Err(AciError::UnsupportedCompression(other)),
        };
        let mut b = Self {
            tar: tar::Builder::new(sink),
            mtime: 0,
            links: HashMap::new(),
        };
        let h = b.header(EntryType::Regular, 0o644, manifest.len() as u64);
        b.append(h, "manifest", manifest)?;
        let h = b.header(EntryType::Directory, 0o755, 0);
        b.append(h, "rootfs", io::empty())?;
        Ok(b)
    }

    /// Modification time for entries added from now on (seconds since the epoch).
    pub fn set_mtime(&mut self, mtime: u64) {
        self.mtime = mtime;
    }

    fn header(&self, t: EntryType, mode: u32, size: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(t);
        h.set_mode(mode & 0o7777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(self.mtime);
        h.set_size(size);
        h
    }

    fn append(&mut self, mut h: Header, path: &str, data: impl io::Read) -> Result<(), AciError> {
        self.tar
            .append_data(&mut h, path, data)
            .map_err(AciError::Write)
    }

    /// Add a regular file at `path_in_rootfs` (e.g. `/etc/hosts`).
    pub fn add_file(
        &mut self,
        path_in_rootfs: &str,
        mode: u32,
        data: &[u8],
    ) -> Result<(), AciError> {
        let p = archive_path(path_in_rootfs)?;
        let h = self.header(EntryType::Regular, mode, data.len() as u64);
        self.append(h, &p, data)
    }

    /// Add a directory.
    pub fn add_dir(&mut self, path_in_rootfs: &str, mode: u32) -> Result<(), AciError> {
        let p = archive_path(path_in_rootfs)?;
        let h = self.header(EntryType::Directory, mode, 0);
        self.append(h, &p, io::empty())
    }

    /// Add a symlink pointing at `target` (absolute targets are rootfs-relative at runtime).
    pub fn add_symlink(&mut self, path_in_rootfs: &str, target: &str) -> Result<(), AciError> {
        let p = archive_path(path_in_rootfs)?;
        let mut h = self.header(EntryType::Symlink, 0o777, 0);
        self.tar
            .append_link(&mut h, &p, target)
            .map_err(AciError::Write)
    }

    /// Add a hardlink to the earlier entry `target_in_rootfs`.
    pub fn add_hardlink(
        &mut self,
        path_in_rootfs: &str,
        target_in_rootfs: &str,
    ) -> Result<(), AciError> {
        let p = archive_path(path_in_rootfs)?;
        let t = archive_path(target_in_rootfs)?;
        let mut h = self.header(EntryType::Link, 0o644, 0);
        self.tar
            .append_link(&mut h, &p, &t)
            .map_err(AciError::Write)
    }

    /// Add a host file, symlink or directory (recursively, sorted by name) at
    /// `path_in_rootfs`, keeping mode and mtime; owner becomes root. Files that share an
    /// inode on the host become hardlinks. Sockets are skipped; devices are refused.
    /// `path_in_rootfs` `/` with a host directory adds that directory's contents as the
    /// whole rootfs.
    pub fn add_path_from_host(
        &mut self,
        path_in_rootfs: &str,
        host_path: &Path,
    ) -> Result<(), AciError> {
        let host_err = |source| AciError::Host {
            path: host_path.display().to_string(),
            source,
        };
        if path_in_rootfs.split('/').all(|c| c.is_empty() || c == ".") {
            let md = fs::metadata(host_path).map_err(host_err)?;
            if !md.is_dir() {
                return Err(AciError::BadPath(path_in_rootfs.to_string()));
            }
            return self.add_children(path_in_rootfs, host_path);
        }
        let p = archive_path(path_in_rootfs)?;
        let md = fs::symlink_metadata(host_path).map_err(host_err)?;
        let ft = md.file_type();
        let mtime = u64::try_from(md.mtime()).unwrap_or(0);
        let mode = md.mode() & 0o7777;
        if ft.is_symlink() {
            let target = fs::read_link(host_path).map_err(host_err)?;
            let mut h = self.header(EntryType::Symlink, 0o777, 0);
            h.set_mtime(mtime);
            return self
                .tar
                .append_link(&mut h, &p, &target)
                .map_err(AciError::Write);
        }
        if ft.is_dir() {
            let mut h = self.header(EntryType::Directory, mode, 0);
            h.set_mtime(mtime);
            self.append(h, &p, io::empty())?;
            return self.add_children(path_in_rootfs, host_path);
        }
        if ft.is_file() {
            if md.nlink() > 1 {
                let key = (md.dev(), md.ino());
                if let Some(first) = self.links.get(&key) {
                    let mut h = self.header(EntryType::Link, mode, 0);
                    h.set_mtime(mtime);
                    let first = first.clone();
                    return self
                        .tar
                        .append_link(&mut h, &p, &first)
                        .map_err(AciError::Write);
                }
                self.links.insert(key, p.clone());
            }
            let f = File::open(host_path).map_err(host_err)?;
            let mut h = self.header(EntryType::Regular, mode, md.len());
            h.set_mtime(mtime);
            return self.append(h, &p, f);
        }
        if ft.is_socket() {
            return Ok(());
        }
        Err(host_err(io::Error::new(
            io::ErrorKind::Unsupported,
            "device nodes and fifos cannot be added",
        )))
    }

    /// Add every entry of host directory `host_dir` (sorted by name) under `path_in_rootfs`.
    fn add_children(&mut self, path_in_rootfs: &str, host_dir: &Path) -> Result<(), AciError> {
        let host_err = |source| AciError::Host {
            path: host_dir.display().to_string(),
            source,
        };
        let mut children: Vec<_> = fs::read_dir(host_dir)
            .map_err(host_err)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(host_err)?;
        children.sort();
        for name in children {
            let Some(name_str) = name.to_str() else {
                return Err(AciError::BadPath(name.to_string_lossy().into_owned()));
            };
            let child = format!("{}/{}", path_in_rootfs.trim_end_matches('/'), name_str);
            self.add_path_from_host(&child, &host_dir.join(&name))?;
        }
        Ok(())
    }

    /// Append an unchecked entry with the literal archive path `path` (see
    /// [`raw_tar_entry`]).
    pub fn raw_entry(
        &mut self,
        path: &[u8],
        t: EntryType,
        link: Option<&[u8]>,
        mode: u32,
        data: &[u8],
    ) -> Result<(), AciError> {
        raw_tar_entry(&mut self.tar, path, t, link, mode, data).map_err(AciError::Write)
    }

    /// Write the end-of-archive marker and the compression trailer; returns the output.
    pub fn finish(self) -> Result<W, AciError> {
        let sink = self.tar.into_inner().map_err(AciError::Write)?;
        match sink {
            Sink::Plain(w) => Ok(w),
            Sink::Gzip(g) => g.finish().map_err(AciError::Write),
        }
    }
}

/// Maximum length of a name/linkname stored directly in a tar header (bytes).
const RAW_NAME_MAX: usize = 100;

/// Append an entry whose path and link name are written verbatim into the header
/// (`..`, absolute paths, anything up to 100 bytes): for building hostile archives in
/// tests. Never use it for real images.
pub fn raw_tar_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &[u8],
    t: EntryType,
    link: Option<&[u8]>,
    mode: u32,
    data: &[u8],
) -> io::Result<()> {
    let too_long = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "raw tar name longer than 100 bytes",
        )
    };
    let mut h = Header::new_ustar();
    h.set_entry_type(t);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    h.set_device_major(0)?;
    h.set_device_minor(0)?;
    {
        let old = h.as_old_mut();
        if path.len() > RAW_NAME_MAX {
            return Err(too_long());
        }
        old.name.fill(0);
        old.name
            .get_mut(..path.len())
            .ok_or_else(too_long)?
            .copy_from_slice(path);
        if let Some(l) = link {
            if l.len() > RAW_NAME_MAX {
                return Err(too_long());
            }
            old.linkname.fill(0);
            old.linkname
                .get_mut(..l.len())
                .ok_or_else(too_long)?
                .copy_from_slice(l);
        }
    }
    h.set_cksum();
    tar.append(&h, data)
}
