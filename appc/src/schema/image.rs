//! `ImageManifest`: the `manifest` file at the root of an ACI.

use serde::{Deserialize, Serialize};

use super::common::{
    is_abs, is_hash, manifest_json, nullable, validate_annotations, validate_kind_and_version,
    validate_labels,
};
use super::{Annotation, App, Label, AC_VERSION};
use crate::types::{index, join, AcIdentifier, Invalid, ValidationError};

/// Value of `acKind` for image manifests.
pub const IMAGE_MANIFEST_KIND: &str = "ImageManifest";

/// An image manifest (appc 0.8.11 `schema/image.go`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always `ImageManifest`.
    #[serde(default)]
    pub ac_kind: String,
    /// Spec version (semver).
    #[serde(default)]
    pub ac_version: String,
    /// Image name.
    pub name: AcIdentifier,
    /// Labels (`version`, `os`, `arch`, ...).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub labels: Vec<Label>,
    /// Default app; absent for dependency-only images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<App>,
    /// Images rendered underneath this one, in order.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub dependencies: Vec<Dependency>,
    /// Absolute paths kept when rendering (empty = everything).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub path_whitelist: Vec<String>,
    /// Annotations (`created`, `authors`, `homepage`, ...).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub annotations: Vec<Annotation>,
}

/// A dependency of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    /// Name of the dependency image.
    pub image_name: AcIdentifier,
    /// Exact image ID (`sha512-...`), if pinned.
    #[serde(rename = "imageID", default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Labels to discover/match the dependency.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub labels: Vec<Label>,
    /// Expected uncompressed size in bytes, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

manifest_json!(ImageManifest);

impl ImageManifest {
    /// A minimal valid manifest named `name` (current acVersion, no app).
    pub fn new(name: AcIdentifier) -> Self {
        Self {
            ac_kind: IMAGE_MANIFEST_KIND.to_string(),
            ac_version: AC_VERSION.to_string(),
            name,
            labels: Vec::new(),
            app: None,
            dependencies: Vec::new(),
            path_whitelist: Vec::new(),
            annotations: Vec::new(),
        }
    }

    /// Check every rule of the spec; the error names the first bad field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_kind_and_version(&self.ac_kind, IMAGE_MANIFEST_KIND, &self.ac_version)?;
        if self.name.as_str().is_empty() {
            return Err(ValidationError::new("name", Invalid::Missing));
        }
        self.name.check().map_err(|e| e.under("name"))?;
        validate_labels(&self.labels, "labels")?;
        if let Some(app) = &self.app {
            app.validate_at("app")?;
        }
        for (i, d) in self.dependencies.iter().enumerate() {
            let dp = index("dependencies", i);
            d.image_name
                .check()
                .map_err(|e| e.under(&join(&dp, "imageName")))?;
            if let Some(id) = &d.image_id {
                if !is_hash(id) {
                    return Err(ValidationError::new(
                        join(&dp, "imageID"),
                        Invalid::Hash(id.clone()),
                    ));
                }
            }
            validate_labels(&d.labels, &join(&dp, "labels"))?;
        }
        for (i, p) in self.path_whitelist.iter().enumerate() {
            if !is_abs(p) {
                return Err(ValidationError::new(
                    index("pathWhitelist", i),
                    Invalid::NotAbsolute(p.clone()),
                ));
            }
        }
        validate_annotations(&self.annotations, "annotations")
    }

    /// Value of label `name` (`version`, `os`, `arch`, ...).
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_str())
    }

    /// Value of annotation `name`.
    pub fn annotation(&self, name: &str) -> Option<&str> {
        self.annotations
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.as_str())
    }
}
