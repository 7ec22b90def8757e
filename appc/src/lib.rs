//! The App Container (appc 0.8.11) specification: manifests, names, labels, isolators,
//! image IDs and ACI archives.
//!
//! * [`schema`]: serde types for `ImageManifest` and `PodManifest` plus validation.
//! * [`types`]: validated names (`ACName`, `ACIdentifier`), resource quantities, isolators.
//! * [`id`]: image digests and image ID references.
//! * [`aci`]: reading (one streaming pass), extracting and building ACI archives.

pub mod aci;
pub mod id;
pub mod schema;
pub mod types;

pub use schema::{ImageManifest, ManifestError, PodManifest};
pub use types::{AcIdentifier, AcName, ValidationError};
