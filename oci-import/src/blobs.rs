//! Reading an image's files: from a layout directory (each path opened beneath it, one
//! component at a time, never following a symlink) or from an uncompressed tar archive
//! (indexed once, then read in place). Finding the image: index.json (OCI) or manifest.json
//! (Docker), the image manifest, the config, the layers.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::Deserialize;

use crate::reference::{Format, Reference};
use crate::verify::{sha256_hex, Verified};
use crate::{lift, Limits, OciError, PLATFORM};

/// OCI annotation naming a manifest in an index (the tag).
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Where the image's files are.
pub(crate) enum Blobs {
    /// A layout directory (its open fd).
    Dir(OwnedFd),
    /// An uncompressed tar archive: path -> (data offset, size), both in bytes.
    Archive(Arc<File>, HashMap<String, (u64, u64)>),
}

/// One layer to apply.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    /// Its path in the layout or archive.
    pub(crate) path: String,
    /// Digest and size of the stored (possibly compressed) blob, when the format names them.
    pub(crate) blob: Option<(String, u64)>,
    /// The config's diff_id: sha256 of the uncompressed tar.
    pub(crate) diff_id: String,
}

/// What [`open`] found.
pub(crate) struct Found {
    pub(crate) config: ImageConfiguration,
    pub(crate) layers: Vec<Layer>,
    /// The tag or RepoTag the image was found under.
    pub(crate) ref_name: Option<String>,
}

/// A byte range of the archive file.
struct Slice {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl Read for Slice {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self
            .file
            .read_at(buf.get_mut(..want).unwrap_or_default(), self.pos)?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Clean an archive path (`./a//b` -> `a/b`); None for `..` or absolute paths.
fn clean(p: &str) -> Option<String> {
    if p.starts_with('/') {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

fn open_err(r: &Reference) -> impl FnOnce(io::Error) -> OciError + '_ {
    move |source| OciError::Open {
        path: r.path.clone(),
        source,
    }
}

/// `openat(dir, name, flags)`.
fn openat(dir: &OwnedFd, name: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string and `dir` an open fd for the call.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Blobs {
    /// Opens `path` of the image: (reader, size in bytes).
    fn open_path(&self, path: &str) -> Result<(Box<dyn Read>, u64), OciError> {
        let rel = clean(path).ok_or_else(|| OciError::Invalid(format!("bad path {path:?}")))?;
        match self {
            Blobs::Archive(file, index) => {
                let &(pos, size) = index
                    .get(&rel)
                    .ok_or_else(|| OciError::Missing(rel.clone()))?;
                let slice = Slice {
                    file: file.clone(),
                    pos,
                    end: pos.saturating_add(size),
                };
                Ok((Box::new(slice), size))
            }
            Blobs::Dir(root) => {
                let comps: Vec<&str> = rel.split('/').collect();
                let (last, dirs) = comps
                    .split_last()
                    .ok_or_else(|| OciError::Missing(rel.clone()))?;
                let classify = |e: io::Error| match e.raw_os_error() {
                    Some(libc::ENOENT) => OciError::Missing(rel.clone()),
                    Some(libc::ELOOP | libc::ENOTDIR) => OciError::NotRegular(rel.clone()),
                    _ => OciError::Open {
                        path: rel.clone().into(),
                        source: e,
                    },
                };
                let mut cur: Option<OwnedFd> = None;
                for d in dirs {
                    let parent = cur.as_ref().unwrap_or(root);
                    let fd = openat(
                        parent,
                        d,
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    )
                    .map_err(classify)?;
                    cur = Some(fd);
                }
                let parent = cur.as_ref().unwrap_or(root);
                let fd = openat(
                    parent,
                    last,
                    libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
                )
                .map_err(classify)?;
                let f = File::from(fd);
                let md = f.metadata().map_err(|e| OciError::Open {
                    path: rel.clone().into(),
                    source: e,
                })?;
                if !md.is_file() {
                    return Err(OciError::NotRegular(rel));
                }
                Ok((Box::new(f), md.len()))
            }
        }
    }

    /// Whether `path` exists as a regular file (checked before anything is written).
    fn check_exists(&self, path: &str) -> Result<(), OciError> {
        self.open_path(path).map(drop)
    }

    /// A blob of an OCI layout, checked against `digest` and `size` while read.
    pub(crate) fn open_blob(
        &self,
        digest: &str,
        size: u64,
        what: &str,
    ) -> Result<Verified<Box<dyn Read>>, OciError> {
        let hex = sha256_hex(digest)?;
        let (r, _) = self.open_path(&format!("blobs/sha256/{hex}"))?;
        Verified::new(r, what.to_string(), digest, Some(size))
    }

    /// A layer's stored bytes, checked against its blob digest when the format names one.
    pub(crate) fn open_layer(&self, l: &Layer, what: &str) -> Result<Box<dyn Read>, OciError> {
        match &l.blob {
            Some((digest, size)) => Ok(Box::new(self.open_blob(digest, *size, what)?)),
            None => Ok(self.open_path(&l.path)?.0),
        }
    }

    /// Reads a whole JSON document (at most `limit` bytes).
    fn read_json<T: for<'de> Deserialize<'de>>(
        mut r: impl Read,
        what: &str,
        limit: u64,
    ) -> Result<T, OciError> {
        let mut buf = Vec::new();
        r.by_ref()
            .take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(|e| {
                lift(e, |e| OciError::Open {
                    path: what.into(),
                    source: e,
                })
            })?;
        if buf.len() as u64 > limit {
            return Err(OciError::JsonTooBig {
                what: what.to_string(),
                size: buf.len() as u64,
                limit,
            });
        }
        // Read to EOF so a digest-checking reader gets to check.
        let mut rest = [0u8; 1];
        r.read(&mut rest).map_err(|e| {
            lift(e, |e| OciError::Open {
                path: what.into(),
                source: e,
            })
        })?;
        serde_json::from_slice(&buf).map_err(|e| OciError::BadJson {
            what: what.to_string(),
            reason: e.to_string(),
        })
    }

    fn json_path<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        limits: &Limits,
    ) -> Result<T, OciError> {
        let (r, size) = self.open_path(path)?;
        if size > limits.max_json_bytes {
            return Err(OciError::JsonTooBig {
                what: path.to_string(),
                size,
                limit: limits.max_json_bytes,
            });
        }
        Self::read_json(r, path, limits.max_json_bytes)
    }

    fn json_blob<T: for<'de> Deserialize<'de>>(
        &self,
        digest: &str,
        size: u64,
        what: &str,
        limits: &Limits,
    ) -> Result<T, OciError> {
        if size > limits.max_json_bytes {
            return Err(OciError::JsonTooBig {
                what: what.to_string(),
                size,
                limit: limits.max_json_bytes,
            });
        }
        Self::read_json(
            self.open_blob(digest, size, what)?,
            what,
            limits.max_json_bytes,
        )
    }
}

/// Indexes the regular files of an uncompressed tar archive.
fn index_archive(r: &Reference, limits: &Limits) -> Result<Blobs, OciError> {
    let file = Arc::new(File::open(&r.path).map_err(open_err(r))?);
    let mut index = HashMap::new();
    let mut ar = tar::Archive::new(appc::aci::TarGuard::new(&*file));
    let bad = |e: io::Error| {
        crate::lift(e, |e| {
            OciError::Invalid(format!("{} is not a tar archive: {e}", r.path.display()))
        })
    };
    let mut n = 0u64;
    for entry in ar.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        n += 1;
        if n > limits.max_archive_entries {
            return Err(OciError::Invalid(format!(
                "archive has more than {} entries",
                limits.max_archive_entries
            )));
        }
        let t = entry.header().entry_type();
        if t != tar::EntryType::Regular && t != tar::EntryType::Continuous {
            continue;
        }
        let raw = entry.path_bytes();
        let Some(p) = std::str::from_utf8(&raw).ok().and_then(clean) else {
            continue;
        };
        if index
            .insert(p.clone(), (entry.raw_file_position(), entry.size()))
            .is_some()
        {
            return Err(OciError::Invalid(format!("archive has {p:?} twice")));
        }
    }
    Ok(Blobs::Archive(file, index))
}

/// A `manifest.json` entry of a Docker archive.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The digest a Docker archive's file name implies (`<hex>.json`, `blobs/sha256/<hex>`).
fn digest_from_name(path: &str) -> Option<String> {
    let base = path
        .strip_prefix("blobs/sha256/")
        .or_else(|| path.strip_suffix(".json"))?;
    let d = format!("sha256:{base}");
    sha256_hex(&d).ok()?;
    Some(d)
}

/// Opens the image `r` names and reads its config.
pub(crate) fn open(r: &Reference, limits: &Limits) -> Result<(Blobs, Found), OciError> {
    let blobs = match r.format {
        Format::OciDir => {
            let f = File::open(&r.path).map_err(open_err(r))?;
            if !f.metadata().map_err(open_err(r))?.is_dir() {
                return Err(OciError::Invalid(format!(
                    "{} is not a directory",
                    r.path.display()
                )));
            }
            Blobs::Dir(OwnedFd::from(f))
        }
        Format::OciArchive | Format::DockerArchive => index_archive(r, limits)?,
    };
    let found = match r.format {
        Format::OciDir | Format::OciArchive => open_oci(&blobs, r, limits)?,
        Format::DockerArchive => open_docker(&blobs, r, limits)?,
    };
    if found.layers.len() > limits.max_layers {
        return Err(OciError::Invalid(format!(
            "more than {} layers",
            limits.max_layers
        )));
    }
    let diff_ids = found.config.rootfs().diff_ids();
    if diff_ids.len() != found.layers.len() {
        return Err(OciError::Invalid(format!(
            "the config names {} layers, the manifest {}",
            diff_ids.len(),
            found.layers.len()
        )));
    }
    for l in &found.layers {
        blobs.check_exists(&l.path)?;
        sha256_hex(&l.diff_id)?;
    }
    Ok((blobs, found))
}

fn open_oci(blobs: &Blobs, r: &Reference, limits: &Limits) -> Result<Found, OciError> {
    let layout: serde_json::Value = blobs.json_path("oci-layout", limits)?;
    if layout
        .get("imageLayoutVersion")
        .and_then(|v| v.as_str())
        .is_none()
    {
        return Err(OciError::Invalid(
            "oci-layout has no imageLayoutVersion".into(),
        ));
    }
    let index: ImageIndex = blobs.json_path("index.json", limits)?;
    let ref_of = |d: &oci_spec::image::Descriptor| {
        d.annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .cloned()
    };
    let picked: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| match &r.tag {
            Some(t) => ref_of(d).as_deref() == Some(t.as_str()),
            None => true,
        })
        .collect();
    let one = match (picked.as_slice(), &r.tag) {
        ([d], _) => *d,
        ([], Some(t)) => return Err(OciError::NoSuchTag(t.clone())),
        ([], None) => return Err(OciError::Invalid("the layout holds no image".into())),
        (many, tag) => {
            // Entries of one image for several platforms (as `docker buildx` writes them):
            // the platform pods run on, if all of them say their platform.
            match pick_platform(many)? {
                Some(d) => d,
                None if tag.is_some() => {
                    return Err(OciError::Invalid(format!(
                        "the layout holds several images tagged {}, not one per platform",
                        tag.as_deref().unwrap_or_default()
                    )))
                }
                None => {
                    return Err(OciError::Invalid(
                        "the layout holds several images: name one with :TAG".into(),
                    ))
                }
            }
        }
    };
    let mut desc = one.clone();
    // An image index (a multi-platform image, as `skopeo copy --all` keeps it): its entry for
    // the platform pods run on; one level deep, as registries serve them.
    if is_index(desc.media_type()) {
        let inner: ImageIndex =
            blobs.json_blob(desc.digest().as_ref(), desc.size(), "image index", limits)?;
        let entries: Vec<&Descriptor> = inner.manifests().iter().collect();
        desc = match pick_platform(&entries)? {
            Some(d) => d.clone(),
            None => {
                return Err(OciError::Invalid(format!(
                    "the image index {} has no {}/{} image among its {} entries",
                    desc.digest(),
                    PLATFORM.0,
                    PLATFORM.1,
                    entries.len()
                )))
            }
        };
        if is_index(desc.media_type()) {
            return Err(OciError::Invalid(format!(
                "{}: an index inside an index",
                desc.digest()
            )));
        }
    }
    let manifest: ImageManifest = blobs.json_blob(
        desc.digest().as_ref(),
        desc.size(),
        "image manifest",
        limits,
    )?;
    let cd = manifest.config();
    let config: ImageConfiguration =
        blobs.json_blob(cd.digest().as_ref(), cd.size(), "image config", limits)?;
    let diff_ids = config.rootfs().diff_ids().clone();
    let layers = manifest
        .layers()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let digest = d.digest().to_string();
            let hex = sha256_hex(&digest)?;
            Ok(Layer {
                path: format!("blobs/sha256/{hex}"),
                blob: Some((digest.clone(), d.size())),
                diff_id: diff_ids.get(i).cloned().unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>, OciError>>()?;
    Ok(Found {
        config,
        layers,
        ref_name: ref_of(one),
    })
}

/// Whether a descriptor's media type names an index (OCI's, or Docker's manifest list).
fn is_index(media: &MediaType) -> bool {
    matches!(media, MediaType::ImageIndex)
        || media.to_string() == "application/vnd.docker.distribution.manifest.list.v2+json"
}

/// Among descriptors that all name a platform, the one for [`PLATFORM`] (None if there is
/// none, or if some name no platform: then they are not one image's platforms). Two entries
/// for it are an error.
fn pick_platform<'a>(entries: &[&'a Descriptor]) -> Result<Option<&'a Descriptor>, OciError> {
    if entries.iter().any(|d| d.platform().is_none()) {
        return Ok(None);
    }
    let ours: Vec<&&Descriptor> = entries
        .iter()
        .filter(|d| {
            d.platform().as_ref().is_some_and(|p| {
                p.os().to_string() == PLATFORM.0 && p.architecture().to_string() == PLATFORM.1
            })
        })
        .collect();
    match ours.as_slice() {
        [] => Ok(None),
        [d] => Ok(Some(**d)),
        _ => Err(OciError::Invalid(format!(
            "{} entries for {}/{}",
            ours.len(),
            PLATFORM.0,
            PLATFORM.1
        ))),
    }
}

/// `docker.io/library/x` and `docker.io/x` -> `x`, as docker shows them.
fn familiar(tag: &str) -> &str {
    tag.strip_prefix("docker.io/library/")
        .or_else(|| tag.strip_prefix("docker.io/"))
        .unwrap_or(tag)
}

fn open_docker(blobs: &Blobs, r: &Reference, limits: &Limits) -> Result<Found, OciError> {
    let entries: Vec<DockerManifest> = blobs.json_path("manifest.json", limits)?;
    let tags = |m: &DockerManifest| m.repo_tags.clone().unwrap_or_default();
    let picked: Vec<&DockerManifest> = entries
        .iter()
        .filter(|m| match &r.tag {
            Some(t) => tags(m).iter().any(|x| familiar(x) == familiar(t)),
            None => true,
        })
        .collect();
    let m = match picked.as_slice() {
        [m] => *m,
        [] => {
            return Err(match &r.tag {
                Some(t) => OciError::NoSuchTag(t.clone()),
                None => OciError::Invalid("the archive holds no image".into()),
            })
        }
        _ => {
            return Err(OciError::Invalid(
                "the archive holds several images: name one with :NAME:TAG".into(),
            ))
        }
    };
    let cpath =
        clean(&m.config).ok_or_else(|| OciError::Invalid(format!("bad path {:?}", m.config)))?;
    let digest = digest_from_name(&cpath).ok_or_else(|| {
        OciError::Invalid(format!(
            "config {cpath:?} is not named by its digest (<hex>.json or blobs/sha256/<hex>)"
        ))
    })?;
    let (cr, size) = blobs.open_path(&cpath)?;
    if size > limits.max_json_bytes {
        return Err(OciError::JsonTooBig {
            what: cpath,
            size,
            limit: limits.max_json_bytes,
        });
    }
    let cr = Verified::new(cr, "image config".into(), &digest, Some(size))?;
    let config: ImageConfiguration = Blobs::read_json(cr, "image config", limits.max_json_bytes)?;
    let diff_ids = config.rootfs().diff_ids().clone();
    let layers = m
        .layers
        .iter()
        .enumerate()
        .map(|(i, p)| Layer {
            path: p.clone(),
            blob: None,
            diff_id: diff_ids.get(i).cloned().unwrap_or_default(),
        })
        .collect();
    let ref_name = match &r.tag {
        Some(t) => Some(t.clone()),
        None => tags(m).first().cloned(),
    };
    Ok(Found {
        config,
        layers,
        ref_name: ref_name.map(|t| familiar(&t).to_string()),
    })
}
