//! `rkt image list|rm|cat-manifest|export|extract|render|gc|verify` with rkt's names and output
//! formats.

use std::path::PathBuf;

use anyhow::Context;
use stage0::duration::parse_go_duration;
use stage0::error::UsageError;
use stage0::format::{
    compact_json, format_time_nanos, humanize_time, ibytes, pretty_json, tabwrite, to_json_tabs,
};
use stage0::pod::layout::store_references;
use stage0::store::export::{self, ExtractOptions};
use stage0::store::gc::{self, GcEvent};
use stage0::store::{now_nanos, ImageRecord, Store, TreeCheck};

use super::{report, Globals};
use crate::outln;

/// `rkt image` and its subcommand: an `Args` so that the whole group is deferred with the other
/// commands (clap registers a nested `Subcommand` enum eagerly).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ImageCommand,
}

/// Image subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// List images in the local store.
    List(ListArgs),
    /// Remove one or more images from the local store.
    Rm(RmArgs),
    /// Print the manifest of an image.
    CatManifest(CatManifestArgs),
    /// Export an image from the store to an (uncompressed) ACI file.
    Export(ExportArgs),
    /// Extract an image's files (without dependencies) to a directory.
    Extract(ExtractArgs),
    /// Render an image with its dependencies (as seen by apps) to a directory.
    Render(ExtractArgs),
    /// Remove unused images and trees from the local store.
    Gc(GcArgs),
    /// Check that images' blobs and rendered trees are as stored; re-render a changed tree.
    Verify(VerifyArgs),
    /// Fetch image(s) and store them in the local store (same as `rkt fetch`).
    Fetch(super::fetch::Args),
}

/// `rkt image verify` arguments.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Images: IDs, ID prefixes or names.
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
}

/// `rkt image list` flags.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Comma-separated list of fields to display: id,name,size,importtime,lastused,signedby.
    #[arg(long, default_value = "id,name,size,importtime,lastused")]
    pub fields: String,
    /// Comma-separated sort fields: name,importtime,lastused,size.
    #[arg(long, default_value = "importtime")]
    pub sort: String,
    /// Sort order: asc or desc.
    #[arg(long, default_value = "asc", value_parser = ["asc", "desc"])]
    pub order: String,
    /// Suppress the legend.
    #[arg(long)]
    pub no_legend: bool,
    /// Use the long output format (full IDs, exact sizes and times).
    #[arg(long)]
    pub full: bool,
    /// Output format: json or json-pretty (default: a table).
    #[arg(long, value_parser = ["", "json", "json-pretty"], default_value = "")]
    pub format: String,
}

/// `rkt image rm` flags.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Image IDs (or prefixes) or names.
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<String>,
}

/// `rkt image cat-manifest` flags.
#[derive(Debug, clap::Args)]
pub struct CatManifestArgs {
    /// Pretty-print the manifest.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", require_equals = true, value_name = "BOOL",
          value_parser = super::gobool::value)]
    pub pretty_print: bool,
    /// Image ID (or prefix) or name.
    #[arg(value_name = "IMAGE")]
    pub image: String,
}

/// `rkt image export` flags.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Overwrite the output file if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Image ID (or prefix) or name.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Output ACI file (uncompressed).
    #[arg(value_name = "OUTPUT_ACI_FILE")]
    pub output: PathBuf,
}

/// `rkt image extract` / `rkt image render` flags.
#[derive(Debug, clap::Args)]
pub struct ExtractArgs {
    /// Write only the root filesystem (not the manifest) to the directory.
    #[arg(long)]
    pub rootfs_only: bool,
    /// Overwrite the output directory if it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Image ID (or prefix) or name.
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Output directory.
    #[arg(value_name = "OUTPUT_DIR")]
    pub output: PathBuf,
}

/// `rkt image gc` flags.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Remove images not used for this long (Go duration: 24h, 30m, 1h30m, 0s).
    #[arg(long, default_value = "24h")]
    pub grace_period: String,
}

/// Runs an image subcommand.
pub fn run(g: &Globals, c: ImageCommand) -> anyhow::Result<i32> {
    let c = match c {
        ImageCommand::Fetch(a) => return super::fetch::run(g, a),
        c => c,
    };
    let store =
        Store::open(&g.dir).with_context(|| format!("cannot open store in {}", g.dir.display()))?;
    match c {
        ImageCommand::List(a) => list(&store, a),
        ImageCommand::Rm(a) => rm(&store, a),
        ImageCommand::CatManifest(a) => cat_manifest(&store, a),
        ImageCommand::Export(a) => export(&store, a),
        ImageCommand::Extract(a) => extract(&store, a, false),
        ImageCommand::Render(a) => extract(&store, a, true),
        ImageCommand::Gc(a) => gc(&store, a),
        ImageCommand::Verify(a) => verify(&store, a),
        ImageCommand::Fetch(_) => Ok(0),
    }
}

fn resolve(store: &Store, image: &str) -> anyhow::Result<ImageRecord> {
    store
        .resolve(image)
        .with_context(|| format!("cannot find image {image}"))
}

// ---------------------------------------------------------------------------------------------
// list

/// The fields `image list` can show, in rkt's option spelling (`signedby`: the key whose
/// signature was verified at fetch, or `-` for an image that was not verified).
const LIST_FIELDS: [&str; 6] = ["id", "name", "size", "importtime", "lastused", "signedby"];

fn header(field: &str) -> &'static str {
    match field {
        "id" => "ID",
        "name" => "NAME",
        "size" => "SIZE",
        "importtime" => "IMPORT TIME",
        "signedby" => "SIGNED BY",
        _ => "LAST USED",
    }
}

fn list(store: &Store, a: ListArgs) -> anyhow::Result<i32> {
    let fields: Vec<String> = a
        .fields
        .split(',')
        .map(|f| f.trim().to_ascii_lowercase())
        .collect();
    if let Some(bad) = fields.iter().find(|f| !LIST_FIELDS.contains(&f.as_str())) {
        return Err(UsageError(format!(
            "invalid --fields value {bad:?} (allowed: {})",
            LIST_FIELDS.join(",")
        ))
        .into());
    }
    let sort: Vec<String> = a
        .sort
        .split(',')
        .map(|f| f.trim().to_ascii_lowercase())
        .collect();
    if let Some(bad) = sort
        .iter()
        .find(|f| !["name", "importtime", "lastused", "size"].contains(&f.as_str()))
    {
        return Err(UsageError(format!(
            "invalid --sort value {bad:?} (allowed: name,importtime,lastused,size)"
        ))
        .into());
    }
    let mut images = store.list()?;
    images.sort_by(|x, y| {
        let mut o = std::cmp::Ordering::Equal;
        for f in &sort {
            o = o.then(match f.as_str() {
                "name" => x.name_version().cmp(&y.name_version()),
                "lastused" => x.last_used.cmp(&y.last_used),
                "size" => x.size.cmp(&y.size),
                _ => x.import_time.cmp(&y.import_time),
            });
        }
        if a.order == "desc" {
            o.reverse()
        } else {
            o
        }
    });
    if a.format.starts_with("json") {
        let entries: Vec<ListEntry> = images
            .iter()
            .map(|r| ListEntry {
                id: r.id.clone(),
                name: r.name_version(),
                import_time: r.import_time,
                last_used_time: r.last_used,
                size: r.size,
                verified: r.signed_by.is_some(),
                signed_by: r.signed_by.clone(),
            })
            .collect();
        let s = if a.format == "json-pretty" {
            to_json_tabs(&entries)?
        } else {
            serde_json::to_string(&entries)?
        };
        outln!("{s}")?;
        return Ok(0);
    }
    let now = now_nanos();
    let mut rows: Vec<Vec<String>> = Vec::new();
    if !a.no_legend {
        rows.push(fields.iter().map(|f| header(f).to_string()).collect());
    }
    for r in &images {
        rows.push(
            fields
                .iter()
                .map(|f| match f.as_str() {
                    "id" if a.full => r.id.clone(),
                    "id" => short_id(&r.id),
                    "name" => r.display_name(),
                    "size" if a.full => r.size.to_string(),
                    "size" => ibytes(r.size),
                    "importtime" if a.full => format_time_nanos(r.import_time),
                    "importtime" => humanize_time(now, r.import_time),
                    "signedby" => r.signed_by.clone().unwrap_or_else(|| "-".into()),
                    _ if a.full => format_time_nanos(r.last_used),
                    _ => humanize_time(now, r.last_used),
                })
                .collect(),
        );
    }
    super::out(tabwrite(&rows))?;
    Ok(0)
}

/// One `image list --format=json` entry (rkt's `lib.ImageListEntry`; times in Unix ns).
#[derive(Debug, serde::Serialize)]
struct ListEntry {
    id: String,
    name: String,
    import_time: i64,
    last_used_time: i64,
    size: u64,
    /// Whether its signature was verified when it entered the store (not in rkt's entry).
    verified: bool,
    /// The verifying key (hex), when verified (not in rkt's entry).
    #[serde(skip_serializing_if = "Option::is_none")]
    signed_by: Option<String>,
}

/// rkt's short ID: `sha512-` plus the first 12 hex digits.
fn short_id(id: &str) -> String {
    match id.find('-') {
        Some(p) => id.get(..p + 13).unwrap_or(id).to_string(),
        None => id.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// rm, cat-manifest, export

fn rm(store: &Store, a: RmArgs) -> anyhow::Result<i32> {
    let mut removed = 0;
    let mut worst = 0;
    for img in &a.images {
        let res = store
            .resolve(img)
            .and_then(|rec| store.remove(&rec).map(|()| rec));
        match res {
            Ok(rec) => {
                eprintln!("rkt: successfully removed aci for image ID: {:?}", rec.id);
                removed += 1;
            }
            Err(e) => {
                let e = anyhow::Error::new(e).context(format!("cannot remove image {img}"));
                worst = worst.max(report(e));
            }
        }
    }
    if removed > 0 {
        eprintln!("rkt: {removed} image(s) successfully removed");
    }
    Ok(worst)
}

fn cat_manifest(store: &Store, a: CatManifestArgs) -> anyhow::Result<i32> {
    let rec = resolve(store, &a.image)?;
    let json = store.manifest_json(&rec)?;
    let mut out = if a.pretty_print {
        pretty_json(&json)
    } else {
        compact_json(&json)
    };
    out.push(b'\n');
    super::out(out)?;
    Ok(0)
}

fn export(store: &Store, a: ExportArgs) -> anyhow::Result<i32> {
    let rec = resolve(store, &a.image)?;
    export::export_aci(store, &rec, &a.output, a.overwrite)?;
    Ok(0)
}

fn extract(store: &Store, a: ExtractArgs, render: bool) -> anyhow::Result<i32> {
    let rec = resolve(store, &a.image)?;
    let opts = ExtractOptions {
        render,
        rootfs_only: a.rootfs_only,
        overwrite: a.overwrite,
    };
    export::extract(store, &rec, &a.output, opts)?;
    Ok(0)
}

fn gc(store: &Store, a: GcArgs) -> anyhow::Result<i32> {
    let grace = parse_go_duration(&a.grace_period)?;
    let refs = || store_references(store.dir());
    let removed = gc::collect(store, grace, &refs, &mut |ev| match ev {
        GcEvent::RemovedImage(id) => {
            eprintln!("rkt: successfully removed aci for image ID: {id:?}")
        }
        GcEvent::RemoveFailed(id, e) => {
            report(anyhow::Error::new(e).context(format!("cannot remove image {id}")));
        }
        GcEvent::RemovedTree(t) => eprintln!("rkt: removed treestore {t:?}"),
        GcEvent::RemovedBlob(b) => eprintln!("rkt: removed orphaned blob {}", b.display()),
    })?;
    eprintln!("rkt: {removed} image(s) successfully removed");
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// verify

/// `rkt image verify`: for each image, every layer's blob against its ID, then the rendered
/// tree against the digest recorded when it was rendered. A tree that changed (or has no
/// digest, or is not rendered) is rendered again, as rkt's does, unless a pod's overlays are
/// built on it: then it is an error and the tree is left alone.
fn verify(store: &Store, a: VerifyArgs) -> anyhow::Result<i32> {
    let mut worst = 0;
    for img in &a.images {
        if let Err(e) = verify_one(store, img) {
            worst = worst.max(report(e.context(format!("cannot verify image {img}"))));
        }
    }
    Ok(worst)
}

fn verify_one(store: &Store, img: &str) -> anyhow::Result<()> {
    let rec = resolve(store, img)?;
    for layer in store.flatten_dependencies(&rec)? {
        if !store.blob_matches_id(&layer)? {
            anyhow::bail!(
                "the stored image {} no longer hashes to its ID: remove it (rkt image rm) and fetch it again",
                layer.id
            );
        }
    }
    let verified = || {
        outln!(
            "successfully verified checksum for image: {img:?} ({:?})",
            rec.id
        )
    };
    let (tree, found) = store.check_tree(&rec)?;
    let why = match found {
        TreeCheck::Intact => return Ok(verified()?),
        TreeCheck::NotRendered => "not rendered".to_string(),
        TreeCheck::NoDigest => "no digest was recorded when it was rendered".to_string(),
        TreeCheck::Damaged { recorded, now } => {
            format!("the tree changed since it was rendered ({recorded}, now {now})")
        }
    };
    if store_references(store.dir()).trees.contains(&tree) {
        anyhow::bail!(
            "tree {tree}: {why}; pods are built on it, so it is not rendered again: remove them (rkt gc) and verify again"
        );
    }
    outln!("tree cache verification failed for image {img}: {why}; rebuilding...")?;
    if !store.remove_tree(&tree, &mut || {
        store_references(store.dir()).trees.contains(&tree)
    })? {
        anyhow::bail!("tree {tree} is in use (a pod is being created on it): try again");
    }
    store.render_tree(&rec)?;
    match store.check_tree(&rec)? {
        (_, TreeCheck::Intact) => Ok(verified()?),
        (_, other) => anyhow::bail!("tree {tree} rendered again, and still: {other:?}"),
    }
}
