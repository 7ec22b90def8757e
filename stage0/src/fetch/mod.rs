//! Fetching images into the store: local files, `file://`, `http(s)://` (with ETag /
//! Last-Modified revalidation and Cache-Control max-age), image IDs, names (store lookup,
//! then appc meta discovery), OCI layouts and Docker archives, and `docker://` (a Docker
//! registry).

mod discovery;
mod docker;
mod http;
mod oci;
mod progress;
pub mod pubkeys;
mod signature;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use thiserror::Error;

use crate::store::{ImageRecord, ImportSource, NameRef, Store, StoreError};

pub use discovery::{discovery_urls, parse_meta_tags, render_template, DISCOVERY_PORT_ENV};
pub use http::{
    timeouts, Timeouts, TooSlow, CONNECT_TIMEOUT_ENV, CONNECT_TIMEOUT_SECS, MIN_BYTES_PER_WINDOW,
    READ_TIMEOUT_ENV, READ_TIMEOUT_SECS,
};
pub use signature::{keystore, warn_skipped};

/// Errors of fetching.
#[derive(Debug, Error)]
pub enum FetchError {
    /// A store operation failed (includes invalid archives and missing images).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A local image file cannot be opened.
    #[error("cannot open image file {0}")]
    File(PathBuf, #[source] io::Error),
    /// `--insecure-options` has an unknown value.
    #[error("invalid --insecure-options value {0:?} (allowed: none,http,image,tls,pubkey,capabilities,paths,seccomp,all-fetch,all-run,all)")]
    BadInsecureOption(String),
    /// `--pull-policy` has an unknown value.
    #[error("invalid --pull-policy value {0:?} (allowed: never, new, update)")]
    BadPullPolicy(String),
    /// Plain http without `--insecure-options=http`.
    #[error("refusing to fetch {0} over plain http: pass --insecure-options=http to allow it")]
    HttpNotAllowed(String),
    /// The URL scheme is not supported.
    #[error("unsupported image URL {0:?} (supported: file paths, file://, http://, https://, docker://, IDs, names, oci:DIR[:TAG], oci-archive:PATH[:TAG], docker-archive:PATH[:NAME:TAG])")]
    UnsupportedScheme(String),
    /// A malformed `docker://` reference.
    #[error("invalid image reference {0:?}: {1}")]
    BadDockerRef(String, String),
    /// A Docker registry wants credentials we do not have, or its token service failed.
    #[error("registry {registry} refused access: {why}")]
    DockerAuth {
        /// `host[:port]`.
        registry: String,
        /// What happened.
        why: String,
    },
    /// The image's signature is missing, invalid, or not by a trusted key.
    #[error(transparent)]
    Trust(#[from] trust::TrustError),
    /// The HTTP request failed (the reqwest error carries no URL; field 0 has it).
    #[error("request to {0} failed")]
    Http(String, #[source] reqwest::Error),
    /// The server did not answer in time.
    #[error("fetching {url} timed out: {what} for more than {secs} s (set {var} to change it)")]
    Timeout {
        /// The URL.
        url: String,
        /// `connecting` or `waiting for data`.
        what: &'static str,
        /// The timeout, in seconds.
        secs: f64,
        /// The environment variable that sets it.
        var: &'static str,
    },
    /// The server sent a body too slowly (see `http::MIN_BYTES_PER_WINDOW`).
    #[error("fetching {url} is too slow: {bytes} bytes in {secs:.1} s of waiting, fewer than {min} per window (the window is {var})", min = http::MIN_BYTES_PER_WINDOW)]
    TooSlow {
        /// The URL.
        url: String,
        /// Bytes received in the window.
        bytes: u64,
        /// Time waited in the window, in seconds.
        secs: f64,
        /// The environment variable that sets the window.
        var: &'static str,
    },
    /// A timeout environment variable is not a positive number of seconds.
    #[error("invalid {var}={value:?}: want a positive number of seconds")]
    BadTimeout {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// The server answered with an error status.
    #[error("cannot fetch {url}: server answered HTTP {status}")]
    HttpStatus {
        /// The URL.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// The image is not in the store and the pull policy forbids fetching it.
    #[error("image {0:?} is not in the store and the pull policy is \"never\"")]
    NotInStore(String),
    /// An OCI layout or Docker archive is invalid, hostile, or unreadable.
    #[error("cannot import the image")]
    Oci(#[from] oci_import::OciError),
    /// An OCI layout or Docker archive without `--insecure-options=image`.
    #[error("{0} cannot be verified: OCI and Docker archives carry no appc signature; pass --insecure-options=image to import it")]
    OciUnsigned(String),
    /// A dependency fetched by name is not the image its `imageID` names.
    #[error("discovery gave image {got}, not the {want} the dependency names")]
    DependencyId {
        /// The dependency's image ID.
        want: String,
        /// The fetched image's ID.
        got: String,
    },
    /// appc discovery found no image.
    #[error("cannot discover image {name:?}: {reason}")]
    Discovery {
        /// The name reference.
        name: String,
        /// What was tried.
        reason: String,
    },
}

impl FetchError {
    /// Whether the image (or file) does not exist (exit code IMAGE_NOT_FOUND).
    pub fn is_not_found(&self) -> bool {
        match self {
            FetchError::Store(e) => e.is_not_found(),
            FetchError::File(_, e) => e.kind() == io::ErrorKind::NotFound,
            FetchError::Oci(e) => e.is_not_found(),
            FetchError::NotInStore(_) | FetchError::Discovery { .. } => true,
            FetchError::HttpStatus { status, .. } => *status == 404 || *status == 410,
            _ => false,
        }
    }

    /// The class of a signature failure, if this is one (exit codes UNSIGNED_IMAGE,
    /// BAD_SIGNATURE, UNTRUSTED_KEY).
    pub fn trust_verdict(&self) -> Option<trust::Verdict> {
        match self {
            FetchError::Trust(t) => Some(t.verdict()),
            FetchError::OciUnsigned(_) => Some(trust::Verdict::Unsigned),
            _ => None,
        }
    }

    /// Whether the image is invalid or hostile (exit code BAD_IMAGE).
    pub fn is_bad_image(&self) -> bool {
        match self {
            FetchError::Store(e) => e.is_bad_image(),
            FetchError::Oci(e) => e.is_bad_image(),
            _ => false,
        }
    }

    /// Whether a flag value was wrong (exit code USAGE).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            FetchError::BadInsecureOption(_)
                | FetchError::BadPullPolicy(_)
                | FetchError::BadTimeout { .. }
                | FetchError::BadDockerRef(..)
                | FetchError::Oci(oci_import::OciError::BadReference(..))
                | FetchError::Store(StoreError::BadReference(_))
        )
    }
}

/// When to go to the network for an image that is already in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Only use the store.
    Never,
    /// Use the store if the image is there, else fetch.
    New,
    /// Revalidate remote images (ETag / Last-Modified / max-age) and fetch newer ones.
    #[default]
    Update,
}

impl FromStr for PullPolicy {
    type Err = FetchError;
    fn from_str(s: &str) -> Result<Self, FetchError> {
        match s {
            "never" => Ok(PullPolicy::Never),
            "new" => Ok(PullPolicy::New),
            "update" => Ok(PullPolicy::Update),
            _ => Err(FetchError::BadPullPolicy(s.to_string())),
        }
    }
}

/// Security features disabled by `--insecure-options`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InsecureOptions {
    /// Allow plain http (images, discovery).
    pub http: bool,
    /// Skip image signature verification.
    pub image: bool,
    /// Accept invalid TLS certificates.
    pub tls: bool,
    /// Accept unverified public keys.
    pub pubkey: bool,
    /// Do not restrict capabilities.
    pub capabilities: bool,
    /// Do not restrict access to paths.
    pub paths: bool,
    /// Do not apply seccomp.
    pub seccomp: bool,
}

impl InsecureOptions {
    /// Parses rkt's comma-separated list: none, http, image, tls, pubkey, capabilities, paths,
    /// seccomp, all-fetch (image,tls,http), all-run (capabilities,paths,seccomp), all.
    pub fn parse(s: &str) -> Result<Self, FetchError> {
        let mut o = InsecureOptions::default();
        for v in s.split(',').map(str::trim).filter(|v| !v.is_empty()) {
            match v {
                "none" => {}
                "http" => o.http = true,
                "image" => o.image = true,
                "tls" => o.tls = true,
                "pubkey" => o.pubkey = true,
                "capabilities" => o.capabilities = true,
                "paths" => o.paths = true,
                "seccomp" => o.seccomp = true,
                "all-fetch" => {
                    o.image = true;
                    o.tls = true;
                    o.http = true;
                }
                "all-run" => {
                    o.capabilities = true;
                    o.paths = true;
                    o.seccomp = true;
                }
                "all" => {
                    o = InsecureOptions {
                        http: true,
                        image: true,
                        tls: true,
                        pubkey: true,
                        capabilities: true,
                        paths: true,
                        seccomp: true,
                    }
                }
                _ => return Err(FetchError::BadInsecureOption(v.to_string())),
            }
        }
        Ok(o)
    }
}

/// How to fetch.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Disabled security features.
    pub insecure: InsecureOptions,
    /// Pull policy (rkt fetch defaults to update, rkt run to new).
    pub pull_policy: PullPolicy,
    /// Show a progress bar on stderr (only drawn when stderr is a terminal).
    pub progress: bool,
    /// Print debug messages on stderr.
    pub debug: bool,
    /// `--no-store`: ignore what the store has for remote images (always download).
    pub no_store: bool,
    /// Configuration (`auth.d`): `Authorization` headers for the hosts it names.
    pub config: crate::config::Config,
    /// Trusted keys (None: rkt's `/etc/rkt` and `/usr/lib/rkt`).
    pub keystore: Option<trust::Keystore>,
    /// `--signature`: the detached signature of a local image file (default `<file>.asc`).
    pub signature: Option<PathBuf>,
    /// `prepare --quiet`: no notes on stderr about verification (errors are still reported).
    pub quiet: bool,
    /// The image comes from a location trusted by configuration (a stage1 image installed
    /// beside rkt): it is not verified, and no warning is printed.
    pub trusted_location: bool,
}

/// What a reference string denotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// `sha512-...` / `sha256-...` (full or prefix).
    Id(String),
    /// A local file.
    File(PathBuf),
    /// An `http://` or `https://` URL.
    Url(String),
    /// `name[:version][,label=value...]`.
    Name(NameRef),
    /// `oci:DIR[:TAG]`, `oci-archive:PATH[:TAG]`, `docker-archive:PATH[:NAME:TAG]`.
    Oci(oci_import::Reference),
    /// `docker://[REGISTRY/]NAME[:TAG|@DIGEST]`.
    Docker(String),
}

/// Classifies a reference the way rkt does: URLs by scheme, IDs by prefix, paths when they
/// look like paths (absolute, `./`, `../`, `.aci` suffix) or exist, names otherwise; and
/// skopeo's `oci:`, `oci-archive:`, `docker-archive:` forms.
pub fn classify(reference: &str) -> Result<ImageRef, FetchError> {
    if let Some(r) = oci_import::Reference::parse(reference) {
        return Ok(ImageRef::Oci(r?));
    }
    if let Some(p) = reference.strip_prefix("file://") {
        return Ok(ImageRef::File(PathBuf::from(p)));
    }
    if reference.starts_with("http://") || reference.starts_with("https://") {
        return Ok(ImageRef::Url(reference.to_string()));
    }
    if reference.starts_with("docker://") {
        docker::DockerRef::parse(reference)?;
        return Ok(ImageRef::Docker(reference.to_string()));
    }
    if reference.contains("://") {
        return Err(FetchError::UnsupportedScheme(reference.to_string()));
    }
    if reference.starts_with("sha512-") || reference.starts_with("sha256-") {
        return Ok(ImageRef::Id(reference.to_string()));
    }
    let looks_like_path = reference.starts_with('/')
        || reference.starts_with("./")
        || reference.starts_with("../")
        || reference.ends_with(".aci")
        || Path::new(reference).is_file();
    if looks_like_path {
        return Ok(ImageRef::File(PathBuf::from(reference)));
    }
    NameRef::parse(reference)
        .map(ImageRef::Name)
        .ok_or_else(|| FetchError::Store(StoreError::BadReference(reference.to_string())))
}

/// Resolve-or-fetch: a file path, `file://`, `http(s)://`, an ID, or a name (store lookup;
/// then appc discovery when the pull policy allows).
pub fn fetch_image(
    store: &Store,
    reference: &str,
    opts: &FetchOptions,
) -> Result<ImageRecord, FetchError> {
    let rec = match classify(reference)? {
        ImageRef::Id(id) => return Ok(store.resolve(&id)?),
        ImageRef::File(path) => fetch_file(store, &path, opts)?,
        ImageRef::Oci(r) => return oci::fetch_oci(store, &r, opts),
        ImageRef::Docker(r) => return docker::fetch_docker(store, &r, opts),
        ImageRef::Url(url) => {
            match http::fetch_url(store, &url, opts, &mut |_| Ok(()), &format!("{url}.asc"))? {
                http::Fetched::Cached(rec) => return Ok(rec),
                http::Fetched::Downloaded(rec) => rec,
            }
        }
        ImageRef::Name(nr) => {
            if !opts.no_store {
                if let Some(rec) = store.find_by_name(&nr)? {
                    return Ok(rec);
                }
            }
            if opts.pull_policy == PullPolicy::Never {
                return Err(FetchError::NotInStore(reference.to_string()));
            }
            discovery::fetch_by_name(store, &nr, opts)?
        }
    };
    fetch_dependencies(store, &rec, opts, 0);
    Ok(rec)
}

/// Maximum nesting of dependencies fetched, count of levels.
const MAX_DEPENDENCY_DEPTH: usize = 32;

/// Maximum number of dependencies fetched for one image, all levels together, count.
const MAX_DEPENDENCY_FETCHES: usize = 256;

/// One dependency as asked for: name, labels, image ID.
type DependencyKey = (String, Vec<(String, String)>, Option<String>);

/// What one image's dependency walk has done: every dependency attempted (so a repeat, in
/// the same list or further down, is not fetched again) and how many fetches it made.
#[derive(Default)]
struct DependencyWalk {
    attempted: std::collections::HashSet<DependencyKey>,
    fetches: usize,
    warned_cap: bool,
}

/// Fetches (by discovery) the dependencies of a newly fetched image that are not in the store
/// yet, each distinct dependency once and at most [`MAX_DEPENDENCY_FETCHES`] in all. Failures
/// only warn: rendering reports a dependency that is still missing.
fn fetch_dependencies(store: &Store, rec: &ImageRecord, opts: &FetchOptions, depth: usize) {
    let mut walk = DependencyWalk::default();
    walk_dependencies(store, rec, opts, depth, &mut walk);
}

/// Prints `rkt: warning: ...` for dependency `nr` of `rec`, with `e`'s causes.
fn warn_dependency(nr: &NameRef, rec: &ImageRecord, e: &dyn std::error::Error) {
    let mut msg = format!(
        "rkt: warning: cannot fetch dependency {nr} of {}: {e}",
        rec.display_name()
    );
    let mut cur = e.source();
    while let Some(c) = cur {
        msg.push_str(&format!(": {c}"));
        cur = c.source();
    }
    eprintln!("{}", crate::format::escape_control(&msg));
}

fn walk_dependencies(
    store: &Store,
    rec: &ImageRecord,
    opts: &FetchOptions,
    depth: usize,
    walk: &mut DependencyWalk,
) {
    if depth >= MAX_DEPENDENCY_DEPTH || opts.pull_policy == PullPolicy::Never {
        return;
    }
    let Ok(m) = store.manifest(rec) else { return };
    for dep in &m.dependencies {
        let nr = NameRef {
            name: dep.image_name.as_str().to_string(),
            labels: dep
                .labels
                .iter()
                .map(|l| (l.name.as_str().to_string(), l.value.clone()))
                .collect(),
        };
        let present = match &dep.image_id {
            Some(id) => store.resolve(id).is_ok(),
            None => store.find_by_name(&nr).ok().flatten().is_some(),
        };
        if present {
            continue;
        }
        let key = (nr.name.clone(), nr.labels.clone(), dep.image_id.clone());
        if !walk.attempted.insert(key) {
            continue;
        }
        if walk.fetches >= MAX_DEPENDENCY_FETCHES {
            if !walk.warned_cap {
                walk.warned_cap = true;
                eprintln!(
                    "rkt: warning: {} needs more than {MAX_DEPENDENCY_FETCHES} dependencies fetched; not fetching more",
                    rec.display_name()
                );
            }
            return;
        }
        walk.fetches += 1;
        match discovery::fetch_by_name(store, &nr, opts) {
            Ok(d) => match &dep.image_id {
                Some(id) if !id_matches(id, &d) => warn_dependency(
                    &nr,
                    rec,
                    &FetchError::DependencyId {
                        want: id.clone(),
                        got: d.id.clone(),
                    },
                ),
                _ => walk_dependencies(store, &d, opts, depth + 1, walk),
            },
            Err(e) => warn_dependency(&nr, rec, &e),
        }
    }
}

/// Whether image ID `id` (`sha512-...` or `sha256-...`, full or a prefix) names `rec`.
fn id_matches(id: &str, rec: &ImageRecord) -> bool {
    id.strip_prefix("sha512-").is_some_and(|h| {
        !h.is_empty()
            && rec
                .id
                .strip_prefix("sha512-")
                .is_some_and(|r| r.starts_with(h))
    }) || id.strip_prefix("sha256-").is_some_and(|h| {
        !h.is_empty()
            && rec
                .sha256_id
                .strip_prefix("sha256-")
                .is_some_and(|r| r.starts_with(h))
    })
}

/// Imports a local file (always read: the file may have changed), verifying its signature
/// (`--signature` or `<file>.asc`) unless `--insecure-options=image`.
fn fetch_file(store: &Store, path: &Path, opts: &FetchOptions) -> Result<ImageRecord, FetchError> {
    let f = File::open(path).map_err(|e| FetchError::File(path.to_path_buf(), e))?;
    let verification = if opts.insecure.image || opts.trusted_location {
        None
    } else {
        let (sig, sig_path) = signature::read_local(path, opts.signature.as_deref())?;
        Some(signature::Verification::new(
            &sig,
            &sig_path.display().to_string(),
            opts,
        )?)
    };
    let total = f.metadata().ok().map(|m| m.len());
    let mut bar = progress::Bar::new(opts.progress, &path.display().to_string(), total);
    let v = verification.as_ref();
    let (rec, verified) = signature::import(
        store,
        f,
        &ImportSource::file(path),
        &mut |n| bar.update(n),
        &mut |_| Ok(()),
        v,
    )
    .map_err(|e| signature::map_import_error(e, v))?;
    bar.finish();
    signature::finished(&rec, verified.as_ref(), opts);
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_options() {
        let o = InsecureOptions::parse("all-fetch").expect("valid");
        assert!(o.http && o.image && o.tls && !o.seccomp);
        let o = InsecureOptions::parse("http,seccomp").expect("valid");
        assert!(o.http && o.seccomp && !o.image);
        assert_eq!(
            InsecureOptions::parse("none").expect("valid"),
            InsecureOptions::default()
        );
        assert!(InsecureOptions::parse("htp").is_err());
    }

    #[test]
    fn classify_refs() {
        assert!(matches!(classify("https://x/y.aci"), Ok(ImageRef::Url(_))));
        assert!(matches!(classify("file:///x.aci"), Ok(ImageRef::File(_))));
        assert!(matches!(classify("/no/such.aci"), Ok(ImageRef::File(_))));
        assert!(matches!(classify("x.aci"), Ok(ImageRef::File(_))));
        assert!(matches!(
            classify("sha512-0123456789ab"),
            Ok(ImageRef::Id(_))
        ));
        assert!(matches!(
            classify("example.com/app:1.0"),
            Ok(ImageRef::Name(_))
        ));
        assert!(matches!(
            classify("docker://busybox"),
            Ok(ImageRef::Docker(_))
        ));
        assert!(matches!(
            classify("docker://Busybox"),
            Err(FetchError::BadDockerRef(..))
        ));
        assert!(matches!(
            classify("ftp://x/y"),
            Err(FetchError::UnsupportedScheme(_))
        ));
        assert!(classify("Bad Name").is_err());
        assert!(matches!(classify("oci:/x:1.0"), Ok(ImageRef::Oci(_))));
        assert!(matches!(
            classify("oci-archive:x.tar"),
            Ok(ImageRef::Oci(_))
        ));
        assert!(matches!(
            classify("docker-archive:x.tar:n:t"),
            Ok(ImageRef::Oci(_))
        ));
    }
}
