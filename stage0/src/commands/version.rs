//! `rkt version`: `rkt Version: X`, `appc Version: Y` (parsed by Nomad with regexes), then
//! `Features:` lines.

use super::Globals;
use crate::outln;

/// The appc spec version implemented.
pub const APPC_VERSION: &str = "0.8.11";

/// Flags of `rkt version`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs `rkt version`.
pub fn run(_g: &Globals, _a: Args) -> anyhow::Result<i32> {
    outln!("rkt Version: {}", env!("CARGO_PKG_VERSION"))?;
    outln!("appc Version: {APPC_VERSION}")?;
    outln!(
        "Rust Version: {}",
        option_env!("CARGO_PKG_RUST_VERSION").unwrap_or("unknown")
    )?;
    outln!(
        "Rust OS/Arch: {}/{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    )?;
    outln!("Features: -TPM +SDJOURNAL=no +stage1-kvm +stage1-ns +sqlite-store +appc-discovery")?;
    Ok(0)
}
