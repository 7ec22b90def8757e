//! `rkt image list|rm|cat-manifest|export|extract|render|gc` with rkt's names and output
//! formats.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use stage0::store::{now_nanos, ImageRecord, Store, StoreError};

use super::UsageError;
use crate::cli::Globals;

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
}

/// `rkt image list` flags.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Comma-separated list of fields to display: id,name,size,importtime,lastused.
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
          default_missing_value = "true", require_equals = true)]
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
    }
}

fn resolve(store: &Store, image: &str) -> anyhow::Result<ImageRecord> {
    store
        .resolve(image)
        .with_context(|| format!("cannot find image {image}"))
}

// ---------------------------------------------------------------------------------------------
// list

/// The fields `image list` can show, in rkt's option spelling.
const LIST_FIELDS: [&str; 5] = ["id", "name", "size", "importtime", "lastused"];

fn header(field: &str) -> &'static str {
    match field {
        "id" => "ID",
        "name" => "NAME",
        "size" => "SIZE",
        "importtime" => "IMPORT TIME",
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
                "name" => x.display_name().cmp(&y.display_name()),
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
    let mut out = io::stdout().lock();
    if a.format.starts_with("json") {
        let entries: Vec<ListEntry> = images
            .iter()
            .map(|r| ListEntry {
                id: r.id.clone(),
                name: r.display_name(),
                import_time: r.import_time,
                last_used_time: r.last_used,
                size: r.size,
            })
            .collect();
        let s = if a.format == "json-pretty" {
            to_json_tabs(&entries)?
        } else {
            serde_json::to_string(&entries)?
        };
        writeln!(out, "{s}")?;
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
                    "importtime" if a.full => full_time(r.import_time),
                    "importtime" => rel_time(now, r.import_time),
                    _ if a.full => full_time(r.last_used),
                    _ => rel_time(now, r.last_used),
                })
                .collect(),
        );
    }
    out.write_all(tabwrite(&rows).as_bytes())?;
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
}

/// JSON indented with tabs (Go's `json.MarshalIndent(v, "", "\t")`).
fn to_json_tabs(v: &impl serde::Serialize) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    v.serialize(&mut ser)?;
    Ok(String::from_utf8(buf)?)
}

/// rkt's short ID: `sha512-` plus the first 12 hex digits.
fn short_id(id: &str) -> String {
    match id.find('-') {
        Some(p) => id.get(..p + 13).unwrap_or(id).to_string(),
        None => id.to_string(),
    }
}

/// Go's text/tabwriter with minwidth 0, tabwidth 8, padding 1, padchar '\t' (what rkt uses).
fn tabwrite(rows: &[Vec<String>]) -> String {
    const TABWIDTH: usize = 8;
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; ncols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count() + 1);
            }
        }
    }
    for w in &mut widths {
        *w = w.div_ceil(TABWIDTH) * TABWIDTH;
    }
    let mut s = String::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            s.push_str(c);
            if i + 1 < r.len() {
                let w = widths.get(i).copied().unwrap_or(TABWIDTH);
                let tabs = (w.saturating_sub(c.chars().count()))
                    .div_ceil(TABWIDTH)
                    .max(1);
                s.push_str(&"\t".repeat(tabs));
            }
        }
        s.push('\n');
    }
    s
}

/// go-humanize `IBytes`: `82 B`, `1.5 KiB`, `12 MiB`.
fn ibytes(n: u64) -> String {
    const SIZES: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 10 {
        return format!("{n} B");
    }
    let f = n as f64;
    let e = f.log(1024.0).floor();
    let suffix = SIZES.get(e as usize).copied().unwrap_or("EiB");
    let val = (f / 1024f64.powf(e) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {suffix}")
    } else {
        format!("{val:.0} {suffix}")
    }
}

/// go-humanize `Time`: `now`, `3 minutes ago`, `6 days ago`, ...
fn rel_time(now_ns: i64, t_ns: i64) -> String {
    const S: i64 = 1;
    const MIN: i64 = 60 * S;
    const H: i64 = 60 * MIN;
    const D: i64 = 24 * H;
    const W: i64 = 7 * D;
    const MON: i64 = 30 * D;
    const Y: i64 = 12 * MON;
    let diff = (now_ns - t_ns) / 1_000_000_000;
    let (d, suffix) = if diff < 0 {
        (-diff, "from now")
    } else {
        (diff, "ago")
    };
    let table: [(i64, &str, i64); 15] = [
        (S, "now", 0),
        (2 * S, "1 second", 0),
        (MIN, "seconds", S),
        (2 * MIN, "1 minute", 0),
        (H, "minutes", MIN),
        (2 * H, "1 hour", 0),
        (D, "hours", H),
        (2 * D, "1 day", 0),
        (W, "days", D),
        (2 * W, "1 week", 0),
        (MON, "weeks", W),
        (2 * MON, "1 month", 0),
        (Y, "months", MON),
        (18 * MON, "1 year", 0),
        (2 * Y, "2 years", 0),
    ];
    for (lim, text, unit) in table {
        if d < lim {
            return match (text, unit) {
                ("now", _) => "now".to_string(),
                (t, 0) => format!("{t} {suffix}"),
                (t, u) => format!("{} {t} {suffix}", d / u),
            };
        }
    }
    format!("{} years {suffix}", d / Y)
}

/// Go's `2006-01-02 15:04:05.999 -0700 MST` in UTC.
fn full_time(t_ns: i64) -> String {
    let secs = t_ns.div_euclid(1_000_000_000);
    let ms = t_ns.rem_euclid(1_000_000_000) / 1_000_000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut frac = if ms == 0 {
        String::new()
    } else {
        format!(".{ms:03}")
    };
    while frac.ends_with('0') {
        frac.pop();
    }
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}{frac} +0000 UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
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
                let code = if e.is_not_found() {
                    pod_abi::exit::IMAGE_NOT_FOUND
                } else {
                    pod_abi::exit::FAILURE
                };
                super::print_error(
                    &anyhow::Error::new(e).context(format!("cannot remove image {img}")),
                );
                worst = worst.max(code);
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
    let mut out = io::stdout().lock();
    if a.pretty_print {
        out.write_all(&pretty_json(&json))?;
    } else {
        out.write_all(&compact_json(&json))?;
    }
    out.write_all(b"\n")?;
    Ok(0)
}

/// Removes insignificant whitespace from JSON, keeping key order and strings byte for byte.
fn compact_json(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len());
    let mut in_str = false;
    let mut escaped = false;
    for &c in src {
        if in_str {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
        } else if c.is_ascii_whitespace() {
            continue;
        }
        out.push(c);
    }
    out
}

/// Re-indents JSON with tabs, keeping the key order and string contents byte for byte.
fn pretty_json(src: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(src.len() * 2);
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    let mut iter = src.iter().copied().peekable();
    let newline = |out: &mut Vec<u8>, depth: usize| {
        out.push(b'\n');
        out.extend(std::iter::repeat_n(b'\t', depth));
    };
    while let Some(c) = iter.next() {
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_str = false;
            }
            continue;
        }
        match c {
            b'"' => {
                in_str = true;
                out.push(c);
            }
            b'{' | b'[' => {
                out.push(c);
                while iter.peek().is_some_and(|n| n.is_ascii_whitespace()) {
                    iter.next();
                }
                if iter.peek().is_some_and(|n| *n == b'}' || *n == b']') {
                    if let Some(n) = iter.next() {
                        out.push(n);
                    }
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            b',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            b':' => out.extend_from_slice(b": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

fn export(store: &Store, a: ExportArgs) -> anyhow::Result<i32> {
    let rec = resolve(store, &a.image)?;
    if a.output.exists() && !a.overwrite {
        bail!(
            "output file {} already exists (use --overwrite)",
            a.output.display()
        );
    }
    let mut blob = store.open_blob(&rec)?;
    let dir = a
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".rkt-export-{}.tmp", std::process::id()));
    let res = (|| -> io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        io::copy(&mut blob, &mut f)?;
        f.sync_all()?;
        fs::rename(&tmp, &a.output)
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", a.output.display()));
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------------
// extract, render

fn extract(store: &Store, a: ExtractArgs, render: bool) -> anyhow::Result<i32> {
    let rec = resolve(store, &a.image)?;
    if a.output.exists() {
        if !a.overwrite {
            bail!(
                "output directory {} already exists (use --overwrite)",
                a.output.display()
            );
        }
        fs::remove_dir_all(&a.output)
            .with_context(|| format!("cannot remove {}", a.output.display()))?;
    }
    let rootfs = if a.rootfs_only {
        a.output.clone()
    } else {
        a.output.join("rootfs")
    };
    fs::create_dir_all(&rootfs).with_context(|| format!("cannot create {}", rootfs.display()))?;
    if !a.rootfs_only {
        let m = store.manifest_json(&rec)?;
        fs::write(a.output.join("manifest"), m).context("cannot write manifest")?;
    }
    if render {
        let tree = store.render_tree(&rec)?;
        copy_tree(&tree.rootfs, &rootfs)
            .with_context(|| format!("cannot copy the rendered tree to {}", rootfs.display()))?;
    } else {
        let blob = store.open_blob(&rec)?;
        stage0::store::aci::extract_rootfs(io::BufReader::new(blob), &rootfs, &[])
            .map_err(|e| StoreError::Render(rec.id.clone(), e))?;
    }
    Ok(0)
}

/// Copies a directory tree preserving modes, symlinks, ownership (as root) and mtimes.
fn copy_tree(src: &Path, dst: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let md = fs::symlink_metadata(src)?;
    for e in fs::read_dir(src)? {
        let e = e?;
        let s = e.path();
        let d = dst.join(e.file_name());
        let m = fs::symlink_metadata(&s)?;
        let ft = m.file_type();
        if ft.is_dir() {
            fs::create_dir_all(&d)?;
            copy_tree(&s, &d)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&s)?, &d)?;
        } else if ft.is_file() {
            fs::copy(&s, &d)?;
        } else {
            mknod_like(&d, &m)?;
        }
        let _ = std::os::unix::fs::lchown(&d, Some(m.uid()), Some(m.gid()));
        if !ft.is_symlink() {
            fs::set_permissions(&d, fs::Permissions::from_mode(m.mode() & 0o7777))?;
        }
        set_mtime(&d, &m);
    }
    let _ = std::os::unix::fs::lchown(dst, Some(md.uid()), Some(md.gid()));
    fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))?;
    set_mtime(dst, &md);
    Ok(())
}

fn mknod_like(path: &Path, m: &fs::Metadata) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated path; mode and dev come from an existing node.
    let r = unsafe { libc::mknod(c.as_ptr(), m.mode(), m.rdev()) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_mtime(path: &Path, m: &fs::Metadata) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let ts = [
        libc::timespec {
            tv_sec: m.atime(),
            tv_nsec: m.atime_nsec(),
        },
        libc::timespec {
            tv_sec: m.mtime(),
            tv_nsec: m.mtime_nsec(),
        },
    ];
    // SAFETY: `c` is a valid path and `ts` two valid timespecs; failure is ignored (best effort).
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
}

// ---------------------------------------------------------------------------------------------
// gc

/// Parses a Go duration (`24h`, `30m0s`, `1h30m`, `1.5h`, `500ms`, `0`) into nanoseconds.
pub fn parse_go_duration(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let num: f64 = rest.get(..num_len)?.parse().ok()?;
        rest = rest.get(num_len..)?;
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = rest.get(..unit_len)?;
        rest = rest.get(unit_len..)?;
        let mult = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += num * mult;
    }
    Some(total as i64)
}

/// Image IDs and tree IDs referenced by any pod under `<dir>/pods`.
fn pod_references(dir: &Path) -> (HashSet<String>, HashSet<String>) {
    let mut images = HashSet::new();
    let mut trees = HashSet::new();
    let Ok(states) = fs::read_dir(dir.join("pods")) else {
        return (images, trees);
    };
    for state in states.flatten() {
        let Ok(pods) = fs::read_dir(state.path()) else {
            continue;
        };
        for pod in pods.flatten() {
            let p = pod.path();
            if let Ok(bytes) = fs::read(p.join("pod")) {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                    for app in v
                        .get("apps")
                        .and_then(|a| a.as_array())
                        .into_iter()
                        .flatten()
                    {
                        if let Some(id) = app
                            .get("image")
                            .and_then(|i| i.get("id"))
                            .and_then(|i| i.as_str())
                        {
                            images.insert(id.to_string());
                        }
                    }
                }
            }
            if let Ok(t) = fs::read_to_string(p.join("stage1TreeStoreID")) {
                trees.insert(t.trim().to_string());
            }
            if let Ok(apps) = fs::read_dir(p.join("appsinfo")) {
                for app in apps.flatten() {
                    if let Ok(t) = fs::read_to_string(app.path().join("treeStoreID")) {
                        trees.insert(t.trim().to_string());
                    }
                }
            }
        }
    }
    (images, trees)
}

fn gc(store: &Store, a: GcArgs) -> anyhow::Result<i32> {
    let grace = parse_go_duration(&a.grace_period).ok_or_else(|| {
        UsageError(format!(
            "invalid --grace-period {:?} (e.g. 24h, 30m, 0s)",
            a.grace_period
        ))
    })?;
    let (pod_images, pod_trees) = pod_references(store.dir());
    let mut keep_images = pod_images;
    for t in &pod_trees {
        if let Some(img) = store.tree_image(t)? {
            keep_images.insert(img);
        }
    }
    let cutoff = now_nanos().saturating_sub(grace);
    let images = store.list()?;
    // Keep recently used and referenced images, and everything they are rendered on top of.
    let roots: Vec<&ImageRecord> = images
        .iter()
        .filter(|r| r.last_used >= cutoff || keep_images.contains(&r.id))
        .collect();
    for rec in roots {
        keep_images.insert(rec.id.clone());
        if let Ok(deps) = store.flatten_dependencies(rec) {
            keep_images.extend(deps.into_iter().map(|d| d.id));
        }
    }
    let mut removed = 0;
    for rec in images {
        if keep_images.contains(&rec.id) {
            continue;
        }
        match store.remove(&rec) {
            Ok(()) => {
                eprintln!("rkt: successfully removed aci for image ID: {:?}", rec.id);
                removed += 1;
            }
            Err(e) => super::print_error(
                &anyhow::Error::new(e).context(format!("cannot remove image {}", rec.id)),
            ),
        }
    }
    for t in store.tree_ids()? {
        if pod_trees.contains(&t) {
            continue;
        }
        let alive = match store.tree_image(&t)? {
            Some(img) => store.get(&img)?.is_some(),
            None => false,
        };
        if alive {
            continue;
        }
        if store.remove_tree(&t)? {
            eprintln!("rkt: removed treestore {t:?}");
        }
    }
    for b in store.remove_orphan_blobs()? {
        eprintln!("rkt: removed orphaned blob {}", b.display());
    }
    eprintln!("rkt: {removed} image(s) successfully removed");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(ibytes(5), "5 B");
        assert_eq!(ibytes(82), "82 B");
        assert_eq!(ibytes(1536), "1.5 KiB");
        assert_eq!(ibytes(12 * 1024 * 1024), "12 MiB");
        let s = 1_000_000_000;
        assert_eq!(rel_time(100 * s, 100 * s), "now");
        assert_eq!(rel_time(100 * s, 99 * s), "1 second ago");
        assert_eq!(rel_time(1000 * s, 820 * s), "3 minutes ago");
        assert_eq!(rel_time(10 * 86_400 * s, 4 * 86_400 * s), "6 days ago");
        assert_eq!(full_time(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(
            full_time(1_442_496_424_240_000_000),
            "2015-09-17 13:27:04.24 +0000 UTC"
        );
        assert_eq!(short_id("sha512-0123456789abcdef"), "sha512-0123456789ab");
        assert_eq!(parse_go_duration("24h"), Some(86_400 * s));
        assert_eq!(parse_go_duration("30m0s"), Some(1800 * s));
        assert_eq!(parse_go_duration("0s"), Some(0));
        assert_eq!(parse_go_duration("1x"), None);
        let t = tabwrite(&[
            vec!["ID".into(), "NAME".into()],
            vec!["sha512-0123456789ab".into(), "x".into()],
        ]);
        assert_eq!(t, "ID\t\t\tNAME\nsha512-0123456789ab\tx\n");
        let p = pretty_json(br#"{"b":[1, {}],"a":"x,\"{y"}"#);
        assert_eq!(
            String::from_utf8_lossy(&p),
            "{\n\t\"b\": [\n\t\t1,\n\t\t{}\n\t],\n\t\"a\": \"x,\\\"{y\"\n}"
        );
    }
}
