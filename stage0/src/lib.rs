//! stage0 library: the image store (CAS blobs, SQLite index, tree store), fetching, pods
//! (lifecycle, manifest, layout, plan) and stage1 selection/exec. The `rkt` binary is a thin
//! command layer over this.

pub mod fetch;
pub mod pod;
pub mod stage1;
pub mod store;
pub mod util;
