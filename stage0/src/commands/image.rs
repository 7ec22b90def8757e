//! `rkt image ...`.

use crate::cli::Globals;

/// Image subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// List images in the local store.
    List,
}

/// Runs an image subcommand.
pub fn run(_g: &Globals, _c: ImageCommand) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}
