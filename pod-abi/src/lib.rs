//! The contract between stage0 (`rkt`), the stage1 flavors (`stage1-ns`, `stage1-vmm`) and
//! guest-init: pod directory layout, stage1 entrypoint argv, the launch plan guest-init reads,
//! status files and exit codes. Serde types and pure functions only; no I/O policy lives here
//! beyond reading and writing the files this contract defines.
#![deny(missing_docs)]

pub mod exit;
pub mod paths;
pub mod plan;
pub mod stage1;
pub mod status;
