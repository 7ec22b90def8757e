//! `rkt fetch`.

use crate::cli::Globals;

/// Flags of `rkt fetch`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `rkt fetch`.
pub fn run(_g: &Globals, _a: Args) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}
