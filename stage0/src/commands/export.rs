//! `rkt export [--app=NAME] UUID OUTPUT_ACI_FILE`: an exited pod's app as an ACI.

use std::path::PathBuf;

use stage0::pod::export::{export_app, ExportOptions};
use stage0::pod::PodsDir;

use super::Globals;

/// Flags of `rkt export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app to export (required for multi-app pods).
    #[arg(long)]
    pub app: Option<String>,
    /// Overwrite the output file if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Pod UUID (or unambiguous prefix).
    pub uuid: String,
    /// Output ACI file (uncompressed).
    #[arg(value_name = "OUTPUT_ACI_FILE")]
    pub output: PathBuf,
}

/// Runs `rkt export`.
pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    // Absolute: the image tree may become an overlay lower dir.
    let dir = pod_abi::paths::canonicalize(&g.dir).unwrap_or_else(|_| g.dir.clone());
    let pods = PodsDir::open(&dir)?;
    let pod = pods.open_pod(&a.uuid)?;
    let opts = ExportOptions {
        app: a.app,
        output: a.output,
        overwrite: a.overwrite,
    };
    export_app(&pod, &dir, &opts)?;
    Ok(0)
}
