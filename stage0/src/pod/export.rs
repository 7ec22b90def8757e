//! `rkt export`: an exited pod's app as an (uncompressed) ACI — the app's image manifest and
//! its root filesystem as the app left it (the image tree with the pod's changes on top).
//!
//! The rootfs is pod-written: it is read without following symlinks (they are archived as
//! symlinks), regular files are opened with `O_NOFOLLOW | O_NONBLOCK` and checked to be the
//! file just listed, FIFOs and devices become archive entries and are never opened, and each
//! file contributes exactly the size listed. The rootfs is read in a mount namespace private
//! to this process, without the pod's volumes (host files never reach the image): with
//! overlay, the app's layers are mounted again read-only (the pod's upper dir over the image
//! tree) at a temporary directory; without, the volume mounts are detached there.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use pod_abi::userns::IdRange;
use tar::{EntryType, Header};

use super::layout;
use super::{Pod, PodError, PodState};

/// Errors of `rkt export`.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The pod, app or output is not what export needs.
    #[error("{0}")]
    Refused(String),
    /// A pod operation failed.
    #[error(transparent)]
    Pod(#[from] PodError),
    /// Reading the rootfs or writing the archive failed.
    #[error("cannot {0} {1}")]
    Io(&'static str, PathBuf, #[source] io::Error),
}

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// `--app`: required when the pod has several apps.
    pub app: Option<String>,
    /// The ACI file to write.
    pub output: PathBuf,
    /// `--overwrite`: replace an existing output file.
    pub overwrite: bool,
}

/// Exports an app of the exited pod `pod` (data directory `data_dir`) to an ACI file.
pub fn export_app(pod: &Pod, data_dir: &Path, o: &ExportOptions) -> Result<(), ExportError> {
    if !matches!(pod.state(), PodState::Exited | PodState::ExitedGarbage) {
        return Err(ExportError::Refused(format!(
            "pod {} is {}; only exited pods can be exported",
            pod.uuid(),
            pod.state()
        )));
    }
    if o.output.exists() && !o.overwrite {
        return Err(ExportError::Refused(format!(
            "{} exists (pass --overwrite to replace it)",
            o.output.display()
        )));
    }
    let pm = super::launch::read_pod_manifest(pod)?;
    let app = match (&o.app, pm.apps.as_slice()) {
        (Some(a), _) => pm
            .app(a)
            .map(|ra| ra.name.as_str().to_string())
            .ok_or_else(|| ExportError::Refused(format!("pod {} has no app {a:?}", pod.uuid())))?,
        (None, [one]) => one.name.as_str().to_string(),
        (None, _) => {
            return Err(ExportError::Refused(format!(
                "pod {} has several apps: pass --app",
                pod.uuid()
            )))
        }
    };
    let paths = pod.paths();
    let info = paths.appsinfo(&app);
    let manifest = pod_abi::podfile::read_beneath(
        &info,
        Path::new("manifest"),
        pod_abi::podfile::MANIFEST_MAX,
    )
    .map_err(|e| ExportError::Refused(format!("cannot read the manifest of app {app}: {e}")))?;
    appc::ImageManifest::from_json(&manifest)
        .map_err(|e| ExportError::Refused(format!("the manifest of app {app} is invalid: {e}")))?;
    let mut rootfs = paths.app_rootfs(&app);
    let mut scratch = None;
    // Volumes are bind mounts in the app's rootfs: a private mount namespace sees the rootfs
    // without them (host files never reach the image).
    private_mount_namespace(&rootfs)?;
    if layout::uses_overlay(&paths) {
        let d = std::env::temp_dir().join(format!("rkt-export-{}", std::process::id()));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&d)
            .map_err(|e| ExportError::Io("create", d.clone(), e))?;
        scratch = Some(d.clone());
        if let Err(e) = remount_read_only_overlay(pod, data_dir, &app, &d) {
            let _ = fs::remove_dir(&d);
            return Err(e);
        }
        rootfs = d;
    } else {
        for m in layout::mounts_under(&rootfs)? {
            nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH).map_err(|e| {
                PodError::Mount {
                    what: "private unmount of a volume".into(),
                    target: m.clone(),
                    source: e,
                }
            })?;
        }
    }
    // A --private-users pod's files belong to its host range: the image gets pod IDs back.
    let shift = layout::private_users(&paths)?;
    let res = write_output(&manifest, &rootfs, shift, o);
    if let Some(d) = scratch {
        let _ = nix::mount::umount2(&d, nix::mount::MntFlags::MNT_DETACH);
        let _ = fs::remove_dir(&d);
    }
    res
}

/// Writes the ACI next to the output file, then renames it into place.
fn write_output(
    manifest: &[u8],
    rootfs: &Path,
    shift: Option<IdRange>,
    o: &ExportOptions,
) -> Result<(), ExportError> {
    let dir = o.output.parent().filter(|d| !d.as_os_str().is_empty());
    let tmp = dir
        .unwrap_or(Path::new("."))
        .join(format!(".rkt-export.{}.tmp", std::process::id()));
    let res = write_aci(&tmp, manifest, rootfs, shift).and_then(|()| {
        fs::rename(&tmp, &o.output).map_err(|e| ExportError::Io("rename", tmp.clone(), e))
    });
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Moves this process to a mount namespace of its own, with no propagation to the host's.
fn private_mount_namespace(rootfs: &Path) -> Result<(), ExportError> {
    let m = |e: nix::errno::Errno, what: &str| PodError::Mount {
        what: what.to_string(),
        target: rootfs.to_path_buf(),
        source: e,
    };
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| m(e, "private mount namespace"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| m(e, "private mount propagation"))?;
    Ok(())
}

/// Mounts the app's overlay again at `rootfs`, read-only (upper dir over the image tree,
/// both as lower layers); the caller is in a private mount namespace.
fn remount_read_only_overlay(
    pod: &Pod,
    data_dir: &Path,
    app: &str,
    rootfs: &Path,
) -> Result<(), ExportError> {
    let paths = pod.paths();
    let info = paths.appsinfo(app);
    let id = pod_abi::podfile::read_line_beneath(
        &info,
        Path::new(layout::APP_TREE_ID),
        pod_abi::podfile::SMALL_FILE_MAX,
    )
    .map_err(|e| ExportError::Refused(format!("cannot read the tree ID of app {app}: {e}")))?;
    let tree = crate::store::rendered_rootfs(data_dir, &id).ok_or_else(|| {
        ExportError::Refused(format!(
            "the image tree {id:?} of app {app} is not in the store"
        ))
    })?;
    let upper = paths
        .root()
        .join(pod_abi::paths::OVERLAY_DIR)
        .join(id)
        .join(app)
        .join("upper");
    for p in [&tree, &upper, &rootfs.to_path_buf()] {
        if p.to_string_lossy().contains([',', ':', '\\']) {
            return Err(ExportError::Refused(format!(
                "path {} cannot be used in overlay options",
                p.display()
            )));
        }
    }
    let m = |e: nix::errno::Errno, what: &str| PodError::Mount {
        what: what.to_string(),
        target: rootfs.to_path_buf(),
        source: e,
    };
    let opts = format!("lowerdir={}:{}", upper.display(), tree.display());
    mount(
        Some("overlay"),
        rootfs,
        Some("overlay"),
        MsFlags::MS_RDONLY,
        Some(opts.as_str()),
    )
    .map_err(|e| m(e, "read-only overlay"))?;
    Ok(())
}

/// Writes the ACI: `manifest`, `rootfs/`, then the tree (owners less `shift`'s base).
fn write_aci(
    out: &Path,
    manifest: &[u8],
    rootfs: &Path,
    shift: Option<IdRange>,
) -> Result<(), ExportError> {
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(out)
        .map_err(|e| ExportError::Io("create", out.to_path_buf(), e))?;
    let mut w = Writer {
        tar: tar::Builder::new(io::BufWriter::with_capacity(1 << 20, f)),
        links: HashMap::new(),
        out: out.to_path_buf(),
        shift,
    };
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(crate::store::now_nanos().max(0) as u64 / 1_000_000_000);
    h.set_size(manifest.len() as u64);
    w.append(h, Path::new("manifest"), manifest)?;
    w.walk(rootfs, Path::new("rootfs"))?;
    let buf = w
        .tar
        .into_inner()
        .map_err(|e| ExportError::Io("write", out.to_path_buf(), e))?;
    let f = buf
        .into_inner()
        .map_err(|e| ExportError::Io("write", out.to_path_buf(), e.into_error()))?;
    f.sync_all()
        .map_err(|e| ExportError::Io("sync", out.to_path_buf(), e))
}

struct Writer {
    tar: tar::Builder<io::BufWriter<File>>,
    /// (dev, ino) of multiply-linked files already archived → their archive path.
    links: HashMap<(u64, u64), PathBuf>,
    out: PathBuf,
    /// A `--private-users` pod's range: host IDs in it are archived as pod IDs.
    shift: Option<IdRange>,
}

impl Writer {
    /// The image's ID for host ID `id`: unchanged without a range; a host ID outside the
    /// pod's range (a file the pod could not have made) becomes 0.
    fn image_id(&self, id: u32) -> u32 {
        match self.shift {
            None => id,
            Some(r) => id
                .checked_sub(r.shift)
                .filter(|n| *n < r.count)
                .unwrap_or(0),
        }
    }

    fn append(&mut self, mut h: Header, path: &Path, data: impl Read) -> Result<(), ExportError> {
        self.tar
            .append_data(&mut h, path, data)
            .map_err(|e| ExportError::Io("write", self.out.clone(), e))
    }

    /// Archives `host` (not following a symlink) at `name`, directories recursively in
    /// name order.
    fn walk(&mut self, host: &Path, name: &Path) -> Result<(), ExportError> {
        let rd = |e| ExportError::Io("read", host.to_path_buf(), e);
        let md = fs::symlink_metadata(host).map_err(rd)?;
        let ft = md.file_type();
        let mut h = Header::new_gnu();
        h.set_mode(md.mode() & 0o7777);
        h.set_uid(u64::from(self.image_id(md.uid())));
        h.set_gid(u64::from(self.image_id(md.gid())));
        h.set_mtime(u64::try_from(md.mtime()).unwrap_or(0));
        h.set_size(0);
        if ft.is_dir() {
            h.set_entry_type(EntryType::Directory);
            self.append(h, name, io::empty())?;
            let mut names: Vec<_> = fs::read_dir(host)
                .map_err(rd)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<io::Result<_>>()
                .map_err(rd)?;
            names.sort();
            for n in names {
                self.walk(&host.join(&n), &name.join(&n))?;
            }
            return Ok(());
        }
        if ft.is_symlink() {
            let target = fs::read_link(host).map_err(rd)?;
            h.set_entry_type(EntryType::Symlink);
            return self
                .tar
                .append_link(&mut h, name, target)
                .map_err(|e| ExportError::Io("write", self.out.clone(), e));
        }
        if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = self.links.get(&(md.dev(), md.ino())).cloned() {
                    h.set_entry_type(EntryType::Link);
                    return self
                        .tar
                        .append_link(&mut h, name, first)
                        .map_err(|e| ExportError::Io("write", self.out.clone(), e));
                }
                self.links.insert((md.dev(), md.ino()), name.to_path_buf());
            }
            let f = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(host)
                .map_err(rd)?;
            let fmd = f.metadata().map_err(rd)?;
            if !fmd.is_file() || fmd.ino() != md.ino() || fmd.dev() != md.dev() {
                return Err(ExportError::Refused(format!(
                    "{} changed while being exported",
                    host.display()
                )));
            }
            h.set_entry_type(EntryType::Regular);
            h.set_size(md.len());
            let mut data = f.take(md.len());
            self.append(h, name, &mut data)?;
            if data.limit() != 0 {
                return Err(ExportError::Refused(format!(
                    "{} shrank while being exported",
                    host.display()
                )));
            }
            return Ok(());
        }
        let kind = if ft.is_char_device() {
            EntryType::Char
        } else if ft.is_block_device() {
            EntryType::Block
        } else if ft.is_fifo() {
            EntryType::Fifo
        } else {
            // Sockets have no archive form.
            return Ok(());
        };
        h.set_entry_type(kind);
        let rdev = md.rdev();
        h.set_device_major(libc::major(rdev))
            .map_err(|e| ExportError::Io("write", self.out.clone(), e))?;
        h.set_device_minor(libc::minor(rdev))
            .map_err(|e| ExportError::Io("write", self.out.clone(), e))?;
        self.append(h, name, io::empty())
    }
}
