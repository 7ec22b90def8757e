//! `rkt version`.

use crate::cli::Globals;

/// Flags of `rkt version`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `rkt version`.
pub fn run(_g: &Globals, _a: Args) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}
