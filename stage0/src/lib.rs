//! stage0 library: store, fetch, pods, stage1 selection.
