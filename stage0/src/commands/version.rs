//! `rkt version`: `rkt Version: X` and `appc Version: Y` (parsed by Nomad with regexes:
//! `rkt [vV]ersion[:]? (\d[.\d]+)`, at least 1.27.0), this project's own version, the
//! toolchain and `Features:` lines.

use super::Globals;
use crate::outln;

/// The rkt CLI level this runtime implements (what `rkt Version:` reports).
pub const RKT_CLI_VERSION: &str = "1.30.0";
/// The appc spec version implemented.
pub const APPC_VERSION: &str = appc::schema::AC_VERSION;

/// Flags of `rkt version`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Go's name for the architecture (`GOARCH`), as rkt printed it on `Go OS/Arch:`.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64",
        a => a,
    }
}

/// Runs `rkt version`.
pub fn run(_g: &Globals, _a: Args) -> anyhow::Result<i32> {
    outln!("rkt Version: {RKT_CLI_VERSION}")?;
    outln!("appc Version: {APPC_VERSION}")?;
    outln!("rkt-rs Version: {}", env!("CARGO_PKG_VERSION"))?;
    outln!(
        "Rust Version: {}",
        option_env!("CARGO_PKG_RUST_VERSION").unwrap_or("unknown")
    )?;
    outln!("Go OS/Arch: {}/{}", std::env::consts::OS, go_arch())?;
    outln!("Features: -TPM +SDJOURNAL=no +stage1-kvm +stage1-ns +sqlite-store +appc-discovery")?;
    Ok(0)
}
