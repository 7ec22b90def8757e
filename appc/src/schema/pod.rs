//! `PodManifest`: the apps, volumes and ports of a pod.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::app::App;
use super::common::{
    is_abs, is_hash, manifest_json, nullable, validate_annotations, validate_kind_and_version,
    validate_labels, UserMeta,
};
use super::{Annotation, Label, Port, AC_VERSION};
use crate::types::{
    index, join, validate_isolators, AcIdentifier, AcName, Invalid, Isolator, IsolatorScope,
    ValidationError,
};

/// Value of `acKind` for pod manifests.
pub const POD_MANIFEST_KIND: &str = "PodManifest";

/// A pod manifest (appc 0.8.11 `schema/pod.go`).
///
/// `volumes`, `isolators`, `annotations` and `ports` are always serialized (as Go does),
/// as `[]` when empty; `null` is accepted on input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodManifest {
    /// Spec version (semver).
    #[serde(default)]
    pub ac_version: String,
    /// Always `PodManifest`.
    #[serde(default)]
    pub ac_kind: String,
    /// The apps, names unique.
    #[serde(default, deserialize_with = "nullable")]
    pub apps: Vec<RuntimeApp>,
    /// Volumes that app mounts refer to.
    #[serde(default, deserialize_with = "nullable")]
    pub volumes: Vec<Volume>,
    /// Pod-level isolators.
    #[serde(default, deserialize_with = "nullable")]
    pub isolators: Vec<Isolator>,
    /// Pod annotations.
    #[serde(default, deserialize_with = "nullable")]
    pub annotations: Vec<Annotation>,
    /// Ports exposed on the host.
    #[serde(default, deserialize_with = "nullable")]
    pub ports: Vec<ExposedPort>,
    /// Free-form user annotations and labels.
    #[serde(flatten)]
    pub user_meta: UserMeta,
}

/// One app of a pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeApp {
    /// App name (ACName, unique in the pod).
    pub name: AcName,
    /// The image the app runs.
    pub image: RuntimeImage,
    /// Overrides the image's `app`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<App>,
    /// Mount the app's rootfs read-only.
    #[serde(
        rename = "readOnlyRootFS",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub read_only_root_fs: bool,
    /// Volumes mounted into the app.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub mounts: Vec<Mount>,
    /// Per-app annotations (win over the image's).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub annotations: Vec<Annotation>,
}

/// The image reference of a pod app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeImage {
    /// Image ID (`sha512-<hex>`); empty only in un-reified pod templates.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Image name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<AcIdentifier>,
    /// Image labels.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub labels: Vec<Label>,
}

/// A volume mounted into an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    /// Name of a pod volume (or of `app_volume`).
    pub volume: AcName,
    /// Absolute path inside the app.
    #[serde(default)]
    pub path: String,
    /// An inline volume private to this mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_volume: Option<Volume>,
}

/// A pod volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// Volume name (ACName).
    pub name: AcName,
    /// `empty` or `host`.
    #[serde(default)]
    pub kind: String,
    /// Absolute host path (host volumes only, required there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Recursive bind mount (host volumes; default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recursive: Option<bool>,
    /// Octal permissions of an empty volume (default `0755`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Owner uid of an empty volume (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Owner gid of an empty volume (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// A pod port exposed on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExposedPort {
    /// Name of an app port.
    pub name: AcName,
    /// Host port, 1..=65535.
    #[serde(default)]
    pub host_port: u32,
    /// Host IP to bind (default all).
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// Port inside the pod when not taken from an app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_port: Option<Port>,
}

/// Default mode of an empty volume (octal permission bits).
pub const DEFAULT_EMPTY_VOLUME_MODE: u32 = 0o755;

impl Volume {
    /// Validate this volume found at `path`.
    pub fn validate_at(&self, path: &str) -> Result<(), ValidationError> {
        self.name
            .check()
            .map_err(|e| e.under(&join(path, "name")))?;
        match self.kind.as_str() {
            "empty" => {
                if self.source.as_deref().is_some_and(|s| !s.is_empty()) {
                    return Err(ValidationError::new(
                        join(path, "source"),
                        Invalid::NotAllowed("for an empty volume"),
                    ));
                }
                if let Some(m) = &self.mode {
                    if parse_mode(m).is_none() {
                        return Err(ValidationError::new(
                            join(path, "mode"),
                            Invalid::Mode(m.clone()),
                        ));
                    }
                }
            }
            "host" => {
                let src = self.source.as_deref().unwrap_or_default();
                if src.is_empty() {
                    return Err(ValidationError::new(join(path, "source"), Invalid::Missing));
                }
                if !is_abs(src) {
                    return Err(ValidationError::new(
                        join(path, "source"),
                        Invalid::NotAbsolute(src.to_string()),
                    ));
                }
                for (key, set) in [
                    ("mode", self.mode.is_some()),
                    ("uid", self.uid.is_some()),
                    ("gid", self.gid.is_some()),
                ] {
                    if set {
                        return Err(ValidationError::new(
                            join(path, key),
                            Invalid::NotAllowed("for a host volume"),
                        ));
                    }
                }
            }
            "" => return Err(ValidationError::new(join(path, "kind"), Invalid::Missing)),
            other => {
                return Err(ValidationError::new(
                    join(path, "kind"),
                    Invalid::VolumeKind(other.to_string()),
                ))
            }
        }
        Ok(())
    }

    /// Permission bits of an empty volume (default 0755).
    pub fn effective_mode(&self) -> u32 {
        self.mode
            .as_deref()
            .and_then(parse_mode)
            .unwrap_or(DEFAULT_EMPTY_VOLUME_MODE)
    }

    /// Whether the volume is read-only (default false).
    pub fn is_read_only(&self) -> bool {
        self.read_only.unwrap_or(false)
    }

    /// Whether a host volume is bind-mounted recursively (default true).
    pub fn is_recursive(&self) -> bool {
        self.recursive.unwrap_or(true)
    }
}

/// Parse an octal mode string (`0755`, `755`); at most 0o7777.
fn parse_mode(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 5 {
        return None;
    }
    u32::from_str_radix(s, 8).ok().filter(|m| *m <= 0o7777)
}

manifest_json!(PodManifest);

impl PodManifest {
    /// An empty pod manifest with the current acVersion.
    pub fn new() -> Self {
        Self {
            ac_version: AC_VERSION.to_string(),
            ac_kind: POD_MANIFEST_KIND.to_string(),
            apps: Vec::new(),
            volumes: Vec::new(),
            isolators: Vec::new(),
            annotations: Vec::new(),
            ports: Vec::new(),
            user_meta: UserMeta::default(),
        }
    }

    /// Check every rule of the spec (a pod template may leave `image.id` empty; see
    /// [`PodManifest::validate_reified`]).
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_kind_and_version(&self.ac_kind, POD_MANIFEST_KIND, &self.ac_version)?;
        let mut vols = BTreeSet::new();
        for (i, v) in self.volumes.iter().enumerate() {
            let vp = index("volumes", i);
            v.validate_at(&vp)?;
            if !vols.insert(v.name.as_str()) {
                return Err(ValidationError::new(
                    join(&vp, "name"),
                    Invalid::Duplicate(v.name.to_string()),
                ));
            }
        }
        let mut names = BTreeSet::new();
        for (i, a) in self.apps.iter().enumerate() {
            let ap = index("apps", i);
            a.name.check().map_err(|e| e.under(&join(&ap, "name")))?;
            if !names.insert(a.name.as_str()) {
                return Err(ValidationError::new(
                    join(&ap, "name"),
                    Invalid::Duplicate(a.name.to_string()),
                ));
            }
            let ip = join(&ap, "image");
            if !a.image.id.is_empty() && !is_hash(&a.image.id) {
                return Err(ValidationError::new(
                    join(&ip, "id"),
                    Invalid::Hash(a.image.id.clone()),
                ));
            }
            if let Some(n) = &a.image.name {
                n.check().map_err(|e| e.under(&join(&ip, "name")))?;
            }
            validate_labels(&a.image.labels, &join(&ip, "labels"))?;
            if let Some(app) = &a.app {
                app.validate_at(&join(&ap, "app"))?;
            }
            let mut paths = BTreeSet::new();
            for (j, m) in a.mounts.iter().enumerate() {
                let mp = index(&join(&ap, "mounts"), j);
                m.volume
                    .check()
                    .map_err(|e| e.under(&join(&mp, "volume")))?;
                if m.path.is_empty() {
                    return Err(ValidationError::new(join(&mp, "path"), Invalid::Missing));
                }
                if !is_abs(&m.path) {
                    return Err(ValidationError::new(
                        join(&mp, "path"),
                        Invalid::NotAbsolute(m.path.clone()),
                    ));
                }
                if !paths.insert(m.path.as_str()) {
                    return Err(ValidationError::new(
                        join(&mp, "path"),
                        Invalid::Duplicate(m.path.clone()),
                    ));
                }
                match &m.app_volume {
                    Some(v) => v.validate_at(&join(&mp, "appVolume"))?,
                    None if !vols.contains(m.volume.as_str()) => {
                        return Err(ValidationError::new(
                            join(&mp, "volume"),
                            Invalid::UnknownVolume(m.volume.to_string()),
                        ));
                    }
                    None => {}
                }
            }
            validate_annotations(&a.annotations, &join(&ap, "annotations"))?;
        }
        validate_isolators(&self.isolators, "isolators", IsolatorScope::Pod)?;
        validate_annotations(&self.annotations, "annotations")?;
        let mut ports = BTreeSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            let pp = index("ports", i);
            p.name.check().map_err(|e| e.under(&join(&pp, "name")))?;
            if p.host_port == 0 || p.host_port > 65_535 {
                return Err(ValidationError::new(
                    join(&pp, "hostPort"),
                    Invalid::Port(u64::from(p.host_port)),
                ));
            }
            if let Some(ip) = &p.host_ip {
                if ip.parse::<std::net::IpAddr>().is_err() {
                    return Err(ValidationError::new(
                        join(&pp, "hostIP"),
                        Invalid::Value(ip.clone()),
                    ));
                }
            }
            if let Some(pp2) = &p.pod_port {
                pp2.validate_at(&join(&pp, "podPort"))?;
            }
            if !ports.insert(p.name.as_str()) {
                return Err(ValidationError::new(
                    join(&pp, "name"),
                    Invalid::Duplicate(p.name.to_string()),
                ));
            }
        }
        Ok(())
    }

    /// [`validate`](Self::validate) plus: every app references its image by a full ID.
    pub fn validate_reified(&self) -> Result<(), ValidationError> {
        self.validate()?;
        for (i, a) in self.apps.iter().enumerate() {
            if a.image.id.is_empty() {
                return Err(ValidationError::new(
                    join(&index("apps", i), "image.id"),
                    Invalid::Missing,
                ));
            }
        }
        Ok(())
    }

    /// The app named `name`.
    pub fn app(&self, name: &str) -> Option<&RuntimeApp> {
        self.apps.iter().find(|a| a.name == name)
    }

    /// The volume named `name`.
    pub fn volume(&self, name: &str) -> Option<&Volume> {
        self.volumes.iter().find(|v| v.name == name)
    }
}

impl Default for PodManifest {
    fn default() -> Self {
        Self::new()
    }
}
