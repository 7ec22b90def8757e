//! `rkt fetch IMAGE...`: prints one `sha256-<64 hex>` ID per image on stdout (the sha512 ID
//! with `--full`); everything else goes to stderr.

use anyhow::Context;
use stage0::fetch::{fetch_image, FetchOptions, InsecureOptions, PullPolicy};
use stage0::store::Store;

use super::Globals;
use crate::outln;

/// Flags of `rkt fetch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Local signature file of an image file (default `IMAGE.asc`); give one per image, in
    /// the order of the images.
    #[arg(long)]
    pub signature: Vec<std::path::PathBuf>,
    /// Use only images from the store (same as --pull-policy=never).
    #[arg(long)]
    pub store_only: bool,
    /// Fetch images ignoring the store (always download).
    #[arg(long, conflicts_with = "store_only")]
    pub no_store: bool,
    /// Print the full image ID (sha512).
    #[arg(long)]
    pub full: bool,
    /// When to fetch: never (store only), new (only if not in the store), update (revalidate).
    #[arg(long, default_value = "update", value_parser = ["never", "new", "update"])]
    pub pull_policy: String,
    // The help is an attribute, not a doc comment: rustdoc would read `[,label=value]` as a link.
    #[arg(
        required = true,
        value_name = "IMAGE_URL",
        help = "Images: file paths, file://, http(s):// URLs, IDs, or names (name[:version][,label=value])"
    )]
    pub images: Vec<String>,
}

/// Builds FetchOptions from `--insecure-options`, `--debug` and `--pull-policy` values.
pub fn options(insecure: &str, debug: bool, policy: &str) -> anyhow::Result<FetchOptions> {
    Ok(FetchOptions {
        insecure: InsecureOptions::parse(insecure)?,
        pull_policy: policy.parse::<PullPolicy>()?,
        progress: true,
        debug,
        no_store: false,
        ..Default::default()
    })
}

/// The keystore of `--local-config` and `--system-config`.
pub fn keystore(g: &Globals) -> trust::Keystore {
    trust::Keystore::new(&g.local_config, &g.system_config)
}

/// Runs `rkt fetch`.
pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let mut opts = options(&g.insecure_options, g.debug, &a.pull_policy)?;
    if a.store_only {
        opts.pull_policy = PullPolicy::Never;
    }
    opts.no_store = a.no_store;
    opts.config = super::config::load(g)?;
    opts.keystore = Some(keystore(g));
    if !a.signature.is_empty() && a.signature.len() != a.images.len() {
        return Err(stage0::error::UsageError(format!(
            "{} --signature flags for {} images: give one per image, in order",
            a.signature.len(),
            a.images.len()
        ))
        .into());
    }
    let store =
        Store::open(&g.dir).with_context(|| format!("cannot open store in {}", g.dir.display()))?;
    for (i, img) in a.images.iter().enumerate() {
        opts.signature = a.signature.get(i).cloned();
        let rec =
            fetch_image(&store, img, &opts).with_context(|| format!("cannot fetch image {img}"))?;
        outln!("{}", if a.full { &rec.id } else { &rec.sha256_id })?;
    }
    Ok(0)
}
