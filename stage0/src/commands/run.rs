//! `rkt run`, `rkt prepare`, `rkt run-prepared`.

use crate::cli::Globals;

/// Flags of `rkt run` (rkt's per-image flags follow images; parsed by hand).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Images, per-app flags and `-- args ---` separators.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Flags of `rkt prepare`.
#[derive(Debug, clap::Args)]
pub struct PrepareArgs {
    /// Images, per-app flags and `-- args ---` separators.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Flags of `rkt run-prepared`.
#[derive(Debug, clap::Args)]
pub struct RunPreparedArgs {
    /// Pod UUID.
    pub uuid: String,
}

/// Runs `rkt run`.
pub fn run(_g: &Globals, _a: Args) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}
/// Runs `rkt prepare`.
pub fn prepare(_g: &Globals, _a: PrepareArgs) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}
/// Runs `rkt run-prepared`.
pub fn run_prepared(_g: &Globals, _a: RunPreparedArgs) -> anyhow::Result<i32> {
    anyhow::bail!("not implemented yet")
}
