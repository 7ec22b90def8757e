//! stage0 library: the image store (CAS blobs, SQLite index, tree store, export, gc),
//! fetching, pods (lifecycle, manifest, layout, plan, launch, operations) and stage1
//! selection/exec, the KVM snapshot cache's upkeep (`snapshots`), with one usage error, one exit-code mapping (`error`), one Go-duration
//! parser (`duration`), one Go-boolean parser (`gobool`) and rkt's text output formats
//! (`format`). The `rkt` binary is argument handling and printing over this.

pub mod api;
pub mod config;
pub mod duration;
pub mod error;
pub mod fetch;
pub mod format;
pub mod gobool;
pub mod pod;
pub mod snapshots;
pub mod stage1;
pub mod store;
pub mod util;
pub mod xattr;
