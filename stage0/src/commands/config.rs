//! `rkt config`: the merged stage0 configuration as JSON (rkt 1.30's format), and the one
//! place commands load it (`--system-config`, `--local-config`, `--user-config`).

use anyhow::Context;
use stage0::config::Config;

use super::Globals;
use crate::outln;

/// Flags of `rkt config`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Indent the output.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", require_equals = true, value_name = "BOOL",
          value_parser = super::gobool::value)]
    pub pretty_print: bool,
}

/// Reads the configuration directories named by the global flags, in order.
pub fn load(g: &Globals) -> anyhow::Result<Config> {
    let mut dirs = vec![g.system_config.as_path(), g.local_config.as_path()];
    if let Some(u) = &g.user_config {
        dirs.push(u.as_path());
    }
    Config::load(&dirs).context("cannot load the configuration")
}

/// Runs `rkt config`.
pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let c = load(g)?;
    let stage1 = stage0::stage1::find_flavor_aci(stage0::stage1::DEFAULT_FLAVOR)
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let v = c.to_json(&g.dir.display().to_string(), &stage1);
    let s = if a.pretty_print {
        serde_json::to_string_pretty(&v)?
    } else {
        serde_json::to_string(&v)?
    };
    outln!("{s}")?;
    Ok(0)
}
