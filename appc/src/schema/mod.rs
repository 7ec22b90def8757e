//! Serde types for the appc `ImageManifest` and `PodManifest` (spec 0.8.11), JSON keys
//! exactly as the spec, plus validation reporting the bad field's path.
//!
//! Go's encoder writes some empty lists as `null`; every list and map here accepts `null`.

mod app;
mod common;
mod image;
mod pod;

use thiserror::Error;

pub use app::{App, EventHandler, MountPoint, Port};
pub use common::{Annotation, EnvVar, Label, UserMeta, ValidOsArch, VALID_OS_ARCH};
pub use image::{Dependency, ImageManifest, IMAGE_MANIFEST_KIND};
pub use pod::{
    ExposedPort, Mount, PodManifest, RuntimeApp, RuntimeImage, Volume, POD_MANIFEST_KIND,
};

pub use crate::types::ValidationError;

/// The appc spec version this crate writes into new manifests.
pub const AC_VERSION: &str = "0.8.11";

/// A manifest could not be read.
#[derive(Debug, Error)]
pub enum ManifestError {
    /// Not JSON, or JSON of the wrong shape.
    #[error("malformed manifest JSON")]
    Json(#[source] serde_json::Error),
    /// Well-formed but violates the spec.
    #[error("invalid manifest")]
    Invalid(#[source] ValidationError),
}

impl From<ValidationError> for ManifestError {
    fn from(e: ValidationError) -> Self {
        ManifestError::Invalid(e)
    }
}

#[cfg(test)]
mod tests;
