//! Builders of OCI layouts and Docker archives from layer tars, for tests (feature
//! `testutil`): well-formed by default, each [`Tweaks`] field breaks one rule.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};
use tar::EntryType;

/// One layer entry. Paths are written verbatim (hostile ones too).
#[derive(Debug, Clone)]
pub enum Entry {
    /// A regular file with contents.
    File(&'static str, &'static [u8]),
    /// A directory.
    Dir(&'static str),
    /// A symlink (path, target).
    Symlink(&'static str, &'static str),
    /// A hardlink (path, target).
    Hardlink(&'static str, &'static str),
    /// A regular file of `n` zero bytes.
    Zeros(&'static str, usize),
}

/// An uncompressed layer tar of `entries`, in order.
pub fn layer(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let r = match e {
            Entry::File(p, d) => {
                appc::aci::raw_tar_entry(&mut b, p.as_bytes(), EntryType::Regular, None, 0o644, d)
            }
            Entry::Dir(p) => appc::aci::raw_tar_entry(
                &mut b,
                p.as_bytes(),
                EntryType::Directory,
                None,
                0o755,
                b"",
            ),
            Entry::Symlink(p, t) => appc::aci::raw_tar_entry(
                &mut b,
                p.as_bytes(),
                EntryType::Symlink,
                Some(t.as_bytes()),
                0o777,
                b"",
            ),
            Entry::Hardlink(p, t) => appc::aci::raw_tar_entry(
                &mut b,
                p.as_bytes(),
                EntryType::Link,
                Some(t.as_bytes()),
                0o644,
                b"",
            ),
            Entry::Zeros(p, n) => appc::aci::raw_tar_entry(
                &mut b,
                p.as_bytes(),
                EntryType::Regular,
                None,
                0o644,
                &vec![0u8; *n],
            ),
        };
        r.unwrap_or_else(|e| panic!("layer entry {e}"));
    }
    b.into_inner().unwrap_or_default()
}

/// gzip of `b`.
pub fn gzip(b: &[u8]) -> Vec<u8> {
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = g.write_all(b);
    g.finish().unwrap_or_default()
}

/// `sha256:<hex>` of `b`.
pub fn digest(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// zstd of `b` (one frame), between two skippable frames as zstd:chunked has them.
pub fn zstd(b: &[u8]) -> Vec<u8> {
    let skippable = |payload: &[u8]| {
        let mut v = 0x184D_2A50u32.to_le_bytes().to_vec();
        v.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(0).to_le_bytes());
        v.extend_from_slice(payload);
        v
    };
    let mut v = skippable(b"head");
    v.extend(ruzstd::encoding::compress_to_vec(
        b,
        ruzstd::encoding::CompressionLevel::Fastest,
    ));
    v.extend(skippable(b"table of contents"));
    v
}

/// Where a multi-platform image's entries are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platforms {
    /// index.json names an image index blob, which lists one manifest per platform.
    Nested,
    /// index.json itself lists one manifest per platform, all under the tag.
    TopLevel,
    /// As `Nested`, but no entry is for linux/amd64.
    NestedWithoutOurs,
    /// index.json names an index whose linux/amd64 entry is itself an index.
    IndexInIndex,
}

/// Ways to break an image.
#[derive(Debug, Clone, Default)]
pub struct Tweaks {
    /// Store layers uncompressed (default gzip).
    pub uncompressed: bool,
    /// Store layers zstd-compressed (default gzip).
    pub zstd: bool,
    /// Make the image one platform of several (an arm64 entry beside it, whose manifest is
    /// absent: picking it fails).
    pub platforms: Option<Platforms>,
    /// Layer 0's blob holds another valid layer (its digest no longer matches).
    pub corrupt_layer: bool,
    /// Layer 0's descriptor says one byte less than the blob has.
    pub short_size: bool,
    /// Layer 0's blob is absent.
    pub missing_layer: bool,
    /// The config names one more diff_id than there are layers.
    pub extra_diff_id: bool,
    /// Layer 0's diff_id is wrong (the uncompressed tar does not match).
    pub wrong_diff_id: bool,
    /// Layer 0's blob is a symlink to this path (outside the layout).
    pub symlink_layer_to: Option<std::path::PathBuf>,
    /// Pad the config with this many spaces (an oversized JSON document).
    pub config_padding: usize,
    /// The image config's `config` section (default: a busybox-like app).
    pub config: Option<serde_json::Value>,
}

/// The layer a corrupted blob is replaced by.
fn substitute() -> Vec<u8> {
    layer(&[Entry::File("evil", b"evil")])
}

fn config_json(layers: &[Vec<u8>], t: &Tweaks) -> Vec<u8> {
    let mut diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
    if t.wrong_diff_id {
        if let Some(d) = diff_ids.first_mut() {
            *d = digest(b"something else");
        }
    }
    if t.extra_diff_id {
        diff_ids.push(digest(b"no such layer"));
    }
    let c = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": t.config.clone().unwrap_or_else(|| json!({
            "Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"], "User": "0:0"
        })),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let mut v = serde_json::to_vec(&c).unwrap_or_default();
    v.extend(std::iter::repeat_n(b' ', t.config_padding));
    v
}

fn write_blob(dir: &Path, b: &[u8]) -> io::Result<String> {
    let d = digest(b);
    fs::write(
        dir.join("blobs/sha256")
            .join(d.trim_start_matches("sha256:")),
        b,
    )?;
    Ok(d)
}

/// Writes an OCI layout of `layers` (uncompressed tars, bottom first) tagged `tag` at `dir`.
pub fn write_oci(dir: &Path, tag: &str, layers: &[Vec<u8>], t: &Tweaks) -> io::Result<()> {
    fs::create_dir_all(dir.join("blobs/sha256"))?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let config = config_json(layers, t);
    let cd = write_blob(dir, &config)?;
    let mut descs = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let mut stored = if t.uncompressed {
            l.clone()
        } else if t.zstd {
            zstd(l)
        } else {
            gzip(l)
        };
        let d = digest(&stored);
        let mut size = stored.len() as u64;
        if i == 0 && t.corrupt_layer {
            stored = substitute();
            if !t.uncompressed {
                stored = gzip(&stored);
            }
            size = stored.len() as u64;
        }
        if i == 0 && t.short_size {
            size -= 1;
        }
        let path = dir
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"));
        match (&t.symlink_layer_to, i == 0 && t.missing_layer) {
            (_, true) => {}
            (Some(target), false) if i == 0 => {
                fs::write(target, &stored)?;
                std::os::unix::fs::symlink(target, &path)?;
            }
            _ => fs::write(&path, &stored)?,
        }
        let media = if t.uncompressed {
            "application/vnd.oci.image.layer.v1.tar"
        } else if t.zstd {
            "application/vnd.oci.image.layer.v1.tar+zstd"
        } else {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        };
        descs.push(json!({"mediaType": media, "digest": d, "size": size}));
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs,
    }))
    .unwrap_or_default();
    let md = write_blob(dir, &manifest)?;
    const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    let entry = |media: &str, d: &str, size: usize, arch: Option<&str>| {
        let mut e = json!({"mediaType": media, "digest": d, "size": size});
        if let Some(a) = arch {
            e["platform"] = json!({"os": "linux", "architecture": a});
        }
        e
    };
    let absent = digest(b"the arm64 manifest, absent");
    let arm = entry(MANIFEST, &absent, 10, Some("arm64"));
    let tagged = |mut e: serde_json::Value| {
        e["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        e
    };
    let index_blob = |entries: Vec<serde_json::Value>| -> io::Result<(String, usize)> {
        let b = serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}),
        )
        .unwrap_or_default();
        Ok((write_blob(dir, &b)?, b.len()))
    };
    let manifests = match t.platforms {
        None => vec![tagged(entry(MANIFEST, &md, manifest.len(), None))],
        Some(Platforms::TopLevel) => vec![
            tagged(arm.clone()),
            tagged(entry(MANIFEST, &md, manifest.len(), Some("amd64"))),
        ],
        Some(p) => {
            let ours = match p {
                Platforms::NestedWithoutOurs => {
                    entry(MANIFEST, &md, manifest.len(), Some("riscv64"))
                }
                Platforms::IndexInIndex => {
                    let (d, n) = index_blob(vec![entry(MANIFEST, &md, manifest.len(), None)])?;
                    entry(INDEX, &d, n, Some("amd64"))
                }
                _ => entry(MANIFEST, &md, manifest.len(), Some("amd64")),
            };
            let (d, n) = index_blob(vec![arm.clone(), ours])?;
            vec![tagged(entry(INDEX, &d, n, None))]
        }
    };
    let index = json!({"schemaVersion": 2, "manifests": manifests});
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).unwrap_or_default(),
    )
}

/// Writes a Docker archive of `layers` (uncompressed tars, bottom first) with RepoTag
/// `repo_tag` to `file`.
pub fn write_docker(file: &Path, repo_tag: &str, layers: &[Vec<u8>], t: &Tweaks) -> io::Result<()> {
    let mut b = tar::Builder::new(fs::File::create(file)?);
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o444);
        h.set_size(data.len() as u64);
        h.set_entry_type(EntryType::Regular);
        b.append_data(&mut h, name, data)
    };
    let config = config_json(layers, t);
    let cname = format!("{}.json", digest(&config).trim_start_matches("sha256:"));
    add(&cname, &config)?;
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let name = format!("{}.tar", digest(l).trim_start_matches("sha256:"));
        if !(i == 0 && t.missing_layer) {
            let l = if i == 0 && t.corrupt_layer {
                substitute()
            } else {
                l.clone()
            };
            add(&name, &l)?;
        }
        names.push(name);
    }
    let m = json!([{"Config": cname, "RepoTags": [repo_tag], "Layers": names}]);
    add("manifest.json", &serde_json::to_vec(&m).unwrap_or_default())?;
    b.into_inner()?.flush()
}
