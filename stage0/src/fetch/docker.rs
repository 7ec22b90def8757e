//! `docker://[REGISTRY/]NAME[:TAG|@DIGEST]`: images from a Docker registry over the registry
//! HTTP API v2 (what rkt fetched through docker2aci). The image manifest is picked (an index or
//! manifest list: its `linux`/`amd64` entry), then the manifest, config and layers are
//! downloaded into a temporary OCI image layout in the store's `cas/tmp`, each checked against
//! its sha256 digest and size while it streams, and the layout goes through the same
//! conversion and import as `oci:DIR` (`super::oci`). The registry's answers are bounded: JSON
//! documents at most [`oci_import::Limits`]' size, blobs at most the size their descriptor
//! gives, all blobs together at most the decompressed size an image may have.
//!
//! Authentication, as Docker's clients do it: a `401` from the registry itself with a `Bearer`
//! challenge sends the client to the challenge's realm for a token (with the `dockerAuth`
//! credentials of the registry when `auth.d` has some and the realm is the registry's host,
//! domain or listed in the same entry, anonymously otherwise); a `Basic` challenge is
//! answered with those credentials. https is tried first; plain `http` only after it fails to
//! connect, with `--insecure-options=http`. The images carry no appc signature, so they need
//! `--insecure-options=image`, as rkt's `docker://` did.
//!
//! The store remembers the manifest's digest for the reference (`remote` record, as an ETag):
//! `--pull-policy=new` uses a stored image as it is; `update` (the default of `rkt fetch`) asks
//! the registry for the manifest again and downloads nothing more when the digest is unchanged.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use oci_import::{Format, Reference, PLATFORM};
use reqwest::blocking::{Client, Response};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use super::{progress, FetchError, FetchOptions, PullPolicy};
use crate::store::{ImageRecord, ImportSource, Store, StoreError};

/// Docker Hub's registry host, for references without one.
pub const DOCKER_HUB: &str = "registry-1.docker.io";
/// Names Docker Hub goes by in references and `dockerAuth` entries.
const DOCKER_HUB_ALIASES: [&str; 3] = ["docker.io", "index.docker.io", DOCKER_HUB];
/// The manifest media types asked for, image manifests first.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json";
/// Largest token answer accepted (bytes).
const TOKEN_MAX: u64 = 1 << 20;

/// A parsed `docker://` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerRef {
    /// `host[:port]` (Docker Hub's is [`DOCKER_HUB`]).
    pub registry: String,
    /// The repository (`library/busybox`).
    pub name: String,
    /// A tag, or a digest (`sha256:<64 hex>`).
    pub reference: String,
}

impl DockerRef {
    /// Parses `docker://...` as Docker does: the first component is a registry when it has a
    /// `.` or a `:` or is `localhost`, else the image is on Docker Hub (`library/` before a
    /// one-component name); the tag defaults to `latest`.
    pub fn parse(s: &str) -> Result<DockerRef, FetchError> {
        let bad = |why: &str| FetchError::BadDockerRef(s.to_string(), why.to_string());
        let rest = s
            .strip_prefix("docker://")
            .ok_or_else(|| bad("no docker:// prefix"))?;
        let (rest, digest) = match rest.split_once('@') {
            Some((r, d)) => (r, Some(d)),
            None => (rest, None),
        };
        let (registry, path) = match rest.split_once('/') {
            Some((first, p))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_ascii_lowercase(), p)
            }
            _ => (DOCKER_HUB.to_string(), rest),
        };
        let registry = if DOCKER_HUB_ALIASES.contains(&registry.as_str()) {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        let (name, tag) = match path.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t)),
            _ => (path, None),
        };
        let name = if registry == DOCKER_HUB && !name.contains('/') {
            format!("library/{name}")
        } else {
            name.to_string()
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        };
        if !name.split('/').all(component_ok) || name.len() > 255 {
            return Err(bad(
                "the repository name is lower-case letters, digits and . _ - between slashes",
            ));
        }
        if !registry_ok(&registry) {
            return Err(bad("bad registry host"));
        }
        let reference = match (tag, digest) {
            (_, Some(d)) => {
                if !is_sha256_digest(d) {
                    return Err(bad("the digest must be sha256:<64 hex digits>"));
                }
                d.to_string()
            }
            (Some(t), None) => {
                let ok = t.len() <= 128
                    && t.bytes()
                        .next()
                        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
                if !ok {
                    return Err(bad("bad tag"));
                }
                t.to_string()
            }
            (None, None) => "latest".to_string(),
        };
        Ok(DockerRef {
            registry,
            name,
            reference,
        })
    }

    /// Whether the reference is a digest.
    fn by_digest(&self) -> bool {
        self.reference.starts_with("sha256:")
    }

    /// The canonical form, recorded as the image's source.
    pub fn url(&self) -> String {
        let sep = if self.by_digest() { '@' } else { ':' };
        format!(
            "docker://{}/{}{sep}{}",
            self.registry, self.name, self.reference
        )
    }

    /// `NAME:VERSION` for the appc manifest (`registry/name`, and the tag or the digest as
    /// `sha256-<hex>`), given to the conversion as the OCI ref name.
    fn ref_name(&self) -> String {
        format!(
            "{}/{}:{}",
            self.registry,
            self.name,
            self.reference.replace(':', "-")
        )
    }
}

/// Whether `r` is `host[:port]`: dot-separated labels of letters, digits and inner `-`, or a
/// bracketed IPv6 address; the port digits.
fn registry_ok(r: &str) -> bool {
    let (host, port) = if let Some(rest) = r.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, tail)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                ("", tail.strip_prefix(':'))
            }
            None => return false,
        }
    } else {
        match r.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (r, None),
        }
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    (r.starts_with('[') || host.split('.').all(label_ok))
        && port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `d` is `sha256:` and 64 lower-case hex digits.
fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A `WWW-Authenticate` challenge: the scheme (lower case) and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `bearer` or `basic`.
    pub scheme: String,
    /// `realm`, `service`, `scope`, ... (names lower case).
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// Parses one challenge (`Bearer realm="...",service="...",scope="..."`); quoted values may
    /// hold commas and `\"`.
    pub fn parse(h: &str) -> Option<Challenge> {
        let h = h.trim();
        let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
        if scheme.is_empty() {
            return None;
        }
        let mut params = Vec::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
                chars.next();
            }
            let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
            if key.trim().is_empty() {
                break;
            }
            let mut val = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => val.extend(chars.next()),
                        '"' => break,
                        c => val.push(c),
                    }
                }
            } else {
                val = chars.by_ref().take_while(|c| *c != ',').collect();
            }
            params.push((key.trim().to_ascii_lowercase(), val.trim().to_string()));
        }
        Some(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }

    fn param(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// One registry conversation: the client, the scheme, and the `Authorization` value once a
/// challenge was answered.
struct Session<'a> {
    client: Client,
    base: String,
    r: &'a DockerRef,
    opts: &'a FetchOptions,
    auth: Option<String>,
    /// The warning about credentials over plain http was printed.
    warned_http_creds: bool,
}

/// `host[:port]` of `u` with the scheme's default port left out, lower case.
fn authority(u: &reqwest::Url) -> String {
    let host = u.host_str().unwrap_or_default().to_ascii_lowercase();
    match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

/// `(host, port)` of `host[:port]` (`[v6]:port` too), the port defaulting to `default`.
fn split_authority(a: &str, default: u16) -> (String, u16) {
    let a = a.to_ascii_lowercase();
    let (h, p) = match a.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') && (!h.contains(':') || h.ends_with(']')) => {
            (h.to_string(), p.parse().unwrap_or(default))
        }
        _ => (a.clone(), default),
    };
    (h, p)
}

/// Whether hosts `a` and `b` are DNS names sharing their last two labels (`auth.docker.io`
/// and `registry-1.docker.io`); IP addresses share nothing.
fn same_domain(a: &str, b: &str) -> bool {
    let dns = |h: &str| {
        h.parse::<std::net::IpAddr>().is_err()
            && !h.starts_with('[')
            && h.split('.').count() >= 2
            && h.split('.').all(|l| !l.is_empty())
    };
    let suffix = |h: &str| {
        let mut l: Vec<&str> = h.rsplit('.').take(2).collect();
        l.reverse();
        l.join(".")
    };
    dns(a) && dns(b) && suffix(a) == suffix(b)
}

/// Why the registry's credentials may not go to token `realm`, or None when they may: the
/// realm must be https (or http with `--insecure-options=http`) and be the registry itself,
/// a host of the registry's domain on the same port, or a host its `dockerAuth` entry lists.
fn realm_refusal(realm: &reqwest::Url, registry: &str, opts: &FetchOptions) -> Option<String> {
    let host = authority(realm);
    let scheme_ok = realm.scheme() == "https" || (realm.scheme() == "http" && opts.insecure.http);
    if !scheme_ok {
        return Some(format!("its token service {host} is not https"));
    }
    let (rh, rp) = split_authority(registry, 443);
    let th = realm.host_str().unwrap_or_default().to_ascii_lowercase();
    let tp = realm.port_or_known_default().unwrap_or(443);
    let ours = (tp == rp && (th == rh || same_domain(&th, &rh)))
        || opts.config.docker_auth_shared(registry, &host);
    (!ours).then(|| {
        format!(
            "its token service {host} is not the registry's host or domain, nor listed in its dockerAuth entry"
        )
    })
}

impl Session<'_> {
    /// GET `url` (with `accept`), answering one authentication challenge.
    fn get(&mut self, url: &str, accept: Option<&str>) -> Result<Response, FetchError> {
        let mut challenged = false;
        loop {
            let mut req = self.client.get(url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if let Some(a) = &self.auth {
                req = req.header(AUTHORIZATION, a);
            }
            if self.opts.debug {
                eprintln!("rkt: fetching {}", crate::format::escape_control(url));
            }
            let resp = req.send().map_err(|e| super::http::request_error(url, e))?;
            // Only the registry's own challenges are answered: a 401 from where it redirected
            // (blob storage) is an error like any other status.
            let from_registry = reqwest::Url::parse(&self.base)
                .is_ok_and(|b| authority(&b) == authority(resp.url()));
            if resp.status() == StatusCode::UNAUTHORIZED && !challenged && from_registry {
                challenged = true;
                let c = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(Challenge::parse);
                self.auth = Some(self.answer(url, c)?);
                continue;
            }
            if !resp.status().is_success() {
                return Err(FetchError::HttpStatus {
                    url: url.to_string(),
                    status: resp.status().as_u16(),
                });
            }
            return Ok(resp);
        }
    }

    /// The `Authorization` value answering challenge `c` of a request to `url`.
    fn answer(&mut self, url: &str, c: Option<Challenge>) -> Result<String, FetchError> {
        let creds = self.opts.config.docker_authorization(&self.r.registry);
        let needs = |why: &str| FetchError::DockerAuth {
            registry: self.r.registry.clone(),
            why: why.to_string(),
        };
        let c =
            c.ok_or_else(|| needs("it answered 401 without a usable WWW-Authenticate challenge"))?;
        let plain_http = self.base.starts_with("http://");
        match c.scheme.as_str() {
            "basic" => {
                let a = creds.ok_or_else(|| {
                    needs(
                        "it asks for a user and password: add a dockerAuth entry for it in auth.d",
                    )
                })?;
                if plain_http {
                    self.warn_http_creds(&self.r.registry.clone());
                }
                Ok(a)
            }
            "bearer" => {
                let realm = c
                    .param("realm")
                    .ok_or_else(|| needs("its Bearer challenge names no realm"))?;
                if realm.starts_with("http://") && !self.opts.insecure.http {
                    return Err(FetchError::HttpNotAllowed(realm.to_string()));
                }
                if !realm.starts_with("http://") && !realm.starts_with("https://") {
                    return Err(needs("its token realm is no http(s) URL"));
                }
                let scope = c
                    .param("scope")
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("repository:{}:pull", self.r.name));
                let mut q = vec![("scope", scope)];
                if let Some(s) = c.param("service") {
                    q.push(("service", s.to_string()));
                }
                let realm_url = reqwest::Url::parse(realm)
                    .map_err(|_| needs("its token realm is no valid URL"))?;
                let refusal = creds
                    .as_ref()
                    .and_then(|_| realm_refusal(&realm_url, &self.r.registry, self.opts));
                let mut req = self.client.get(realm_url.clone()).query(&q);
                if let (Some(a), None) = (&creds, &refusal) {
                    if realm_url.scheme() == "http" {
                        self.warn_http_creds(&authority(&realm_url));
                    }
                    req = req.header(AUTHORIZATION, a);
                }
                let resp = req
                    .send()
                    .map_err(|e| super::http::request_error(realm, e))?;
                if !resp.status().is_success() {
                    let not_sent = refusal
                        .map(|r| format!("; rkt asked without the dockerAuth credentials: {r}"))
                        .unwrap_or_default();
                    return Err(needs(&format!(
                        "its token service {realm} answered HTTP {} (for {url}){not_sent}",
                        resp.status().as_u16()
                    )));
                }
                let body = read_capped(resp, TOKEN_MAX, realm)?;
                let v: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|_| needs("its token service answered no JSON"))?;
                let token = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(|t| t.as_str())
                    .filter(|t| !t.is_empty() && t.bytes().all(|b| (0x21..0x7f).contains(&b)))
                    .ok_or_else(|| needs("its token service gave no token"))?;
                Ok(format!("Bearer {token}"))
            }
            s => Err(needs(&format!("unsupported authentication scheme {s:?}"))),
        }
    }

    /// Warns, once per session, that credentials go to `host` over plain http.
    fn warn_http_creds(&mut self, host: &str) {
        if !self.warned_http_creds {
            self.warned_http_creds = true;
            eprintln!(
                "rkt: warning: sending the dockerAuth credentials of {} to {} over plain http (--insecure-options=http)",
                crate::format::escape_control(&self.r.registry),
                crate::format::escape_control(host)
            );
        }
    }

    /// The manifest `reference` names: (bytes, media type, digest), checked against a
    /// digest reference and the registry's `Docker-Content-Digest`.
    fn manifest(&mut self, reference: &str) -> Result<(Vec<u8>, String, String), FetchError> {
        let url = format!("{}/manifests/{reference}", self.base);
        let resp = self.get(&url, Some(ACCEPT_MANIFESTS))?;
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let ctype = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_string());
        let body = read_capped(resp, oci_import::Limits::default().max_json_bytes, &url)?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        let mismatch = |want: &str| {
            FetchError::Oci(oci_import::OciError::Invalid(format!(
                "the manifest {url} serves has digest {digest}, not {want}"
            )))
        };
        if is_sha256_digest(reference) && reference != digest {
            return Err(mismatch(reference));
        }
        if let Some(h) = header_digest.filter(|h| is_sha256_digest(h)) {
            if h != digest {
                return Err(mismatch(&h));
            }
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
            FetchError::Oci(oci_import::OciError::Invalid(format!(
                "the manifest at {url} is not JSON: {e}"
            )))
        })?;
        if v.get("schemaVersion").and_then(|s| s.as_u64()) != Some(2) {
            return Err(FetchError::Oci(oci_import::OciError::Invalid(format!(
                "{url}: only schema 2 manifests are supported (this registry serves an older one)"
            ))));
        }
        let media = v
            .get("mediaType")
            .and_then(|m| m.as_str())
            .map(str::to_string)
            .or(ctype)
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
        Ok((body, media, digest))
    }

    /// Downloads blob `digest` (`size` bytes) to `dest`, checking both.
    fn blob(&mut self, digest: &str, size: u64, dest: &Path) -> Result<(), FetchError> {
        if !is_sha256_digest(digest) {
            return Err(FetchError::Oci(oci_import::OciError::BadDigest(
                digest.to_string(),
            )));
        }
        let url = format!("{}/blobs/{digest}", self.base);
        let resp = self.get(&url, None)?;
        let mut bar = progress::Bar::new(self.opts.progress, &url, Some(size));
        let mut f = File::create(dest).map_err(local_error("create", dest))?;
        let mut h = Sha256::new();
        let mut left = super::http::Progress::new(resp).take(size.saturating_add(1));
        let mut buf = vec![0u8; 1 << 16];
        let mut n_total = 0u64;
        loop {
            let n = match left.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(super::http::body_error(&url, e)),
            };
            let chunk = buf.get(..n).unwrap_or_default();
            h.update(chunk);
            f.write_all(chunk).map_err(local_error("write", dest))?;
            n_total += n as u64;
            bar.update(n_total);
        }
        bar.finish();
        let got = format!("sha256:{}", hex::encode(h.finalize()));
        if n_total != size || got != digest {
            return Err(FetchError::Oci(oci_import::OciError::Invalid(format!(
                "blob {digest} from {url}: got {n_total} bytes with digest {got}, want {size} bytes"
            ))));
        }
        Ok(())
    }
}

/// A failed file operation `op` on `p` in the download directory.
fn local_error(op: &'static str, p: &Path) -> impl FnOnce(io::Error) -> FetchError + use<> {
    let io = StoreError::io(op, p.to_path_buf());
    move |e| FetchError::Store(io(e))
}

/// The body of `resp`, failing past `max` bytes.
fn read_capped(resp: Response, max: u64, url: &str) -> Result<Vec<u8>, FetchError> {
    let mut out = Vec::new();
    super::http::Progress::new(resp)
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| super::http::body_error(url, e))?;
    if out.len() as u64 > max {
        return Err(FetchError::Oci(oci_import::OciError::Invalid(format!(
            "{url}: the answer is larger than {max} bytes"
        ))));
    }
    Ok(out)
}

/// A descriptor's digest (sha256 only) and size.
fn descriptor(v: &serde_json::Value) -> Option<(String, u64)> {
    let d = v.get("digest")?.as_str()?;
    let size = v.get("size")?.as_u64()?;
    is_sha256_digest(d).then(|| (d.to_string(), size))
}

/// Whether `e` says an https connection could not be made (TCP or TLS handshake).
fn no_https(e: &FetchError) -> bool {
    match e {
        FetchError::Http(_, e) => e.is_connect(),
        FetchError::Timeout { what, .. } => *what == "connecting",
        _ => false,
    }
}

fn invalid(why: String) -> FetchError {
    FetchError::Oci(oci_import::OciError::Invalid(why))
}

/// Fetches `reference` (`docker://...`) into the store, or finds it there (see the module
/// doc for the pull policies).
pub(super) fn fetch_docker(
    store: &Store,
    reference: &str,
    opts: &FetchOptions,
) -> Result<ImageRecord, FetchError> {
    let r = DockerRef::parse(reference)?;
    let url = r.url();
    if !(opts.insecure.image || opts.trusted_location) {
        return Err(FetchError::OciUnsigned(url));
    }
    let cached = if opts.no_store {
        None
    } else {
        match store.remote(&url)? {
            Some(rem) => store.get(&rem.image_id)?.map(|rec| (rem, rec)),
            None => None,
        }
    };
    match &cached {
        Some((_, rec)) if opts.pull_policy != PullPolicy::Update => return Ok(rec.clone()),
        None if opts.pull_policy == PullPolicy::Never => {
            return Err(FetchError::NotInStore(url));
        }
        _ => {}
    }
    // https first; with `--insecure-options=http`, plain http when https cannot connect (the
    // TCP connection or the TLS handshake fails), as Docker treats an insecure registry.
    let mut s = Session {
        client: super::http::client(opts)?,
        base: format!("https://{}/v2/{}", r.registry, r.name),
        r: &r,
        opts,
        auth: None,
        warned_http_creds: false,
    };
    let first = match s.manifest(&r.reference) {
        Err(e) if opts.insecure.http && no_https(&e) => {
            eprintln!(
                "rkt: warning: {} does not answer https; using plain http (--insecure-options=http)",
                crate::format::escape_control(&r.registry)
            );
            s.base = format!("http://{}/v2/{}", r.registry, r.name);
            s.auth = None;
            s.manifest(&r.reference)
        }
        other => other,
    };
    let (mut body, mut media, mut digest) = first?;
    if media.contains("index") || media.contains("manifest.list") {
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| invalid(format!("{url}: the index is not JSON: {e}")))?;
        let entries = v
            .get("manifests")
            .and_then(|m| m.as_array())
            .cloned()
            .unwrap_or_default();
        let pick = entries.iter().find(|m| {
            let p = m.get("platform");
            p.and_then(|p| p.get("os")).and_then(|o| o.as_str()) == Some(PLATFORM.0)
                && p.and_then(|p| p.get("architecture"))
                    .and_then(|a| a.as_str())
                    == Some(PLATFORM.1)
        });
        let Some((d, _)) = pick.and_then(descriptor) else {
            return Err(invalid(format!(
                "{url} has no {}/{} image among its {} platforms",
                PLATFORM.0,
                PLATFORM.1,
                entries.len()
            )));
        };
        (body, media, digest) = s.manifest(&d)?;
        if media.contains("index") || media.contains("manifest.list") {
            return Err(invalid(format!("{url}: an index inside an index")));
        }
    }
    if let Some((rem, rec)) = &cached {
        if rem.etag.as_deref() == Some(digest.as_str()) {
            store.revalidated(&url, None)?;
            if opts.debug {
                eprintln!(
                    "rkt: {} unchanged ({})",
                    crate::format::escape_control(&url),
                    crate::format::escape_control(&digest)
                );
            }
            return Ok(rec.clone());
        }
    }
    let m: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| invalid(format!("{url}: the manifest is not JSON: {e}")))?;
    let config = m.get("config").and_then(descriptor).ok_or_else(|| {
        invalid(format!(
            "{url}: the manifest has no config with a sha256 digest"
        ))
    })?;
    let mut layers = Vec::new();
    for l in m
        .get("layers")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
    {
        let lm = l
            .get("mediaType")
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        if lm.contains("foreign") || l.get("urls").is_some() {
            return Err(invalid(format!(
                "{url}: a layer to fetch from elsewhere ({lm}) is not supported"
            )));
        }
        layers.push(
            descriptor(l)
                .ok_or_else(|| invalid(format!("{url}: a layer without digest or size")))?,
        );
    }
    // A registry's word on the sizes is checked while the blobs stream; their sum is bounded
    // before any is downloaded (compressed blobs beyond what the conversion would accept
    // decompressed cannot make an image).
    let total: u64 = std::iter::once(&config)
        .chain(&layers)
        .fold(0u64, |a, (_, n)| a.saturating_add(*n));
    let max = oci_import::Limits::default().max_uncompressed_bytes;
    if total > max {
        return Err(invalid(format!(
            "{url}: its blobs add up to {total} bytes, more than the {max} an image may have"
        )));
    }
    // The layout: made in the store's `cas/tmp`, removed whatever happens (after a killed
    // rkt, by a later import's cleanup).
    let dir = crate::store::DownloadDir::create(store.cas_dir())?;
    let blobs = dir.path().join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(local_error("create", &blobs))?;
    let hex_of = |d: &str| d.trim_start_matches("sha256:").to_string();
    let write = |p: &Path, data: &[u8]| fs::write(p, data).map_err(local_error("write", p));
    write(&blobs.join(hex_of(&digest)), &body)?;
    for (d, size) in std::iter::once(&config).chain(&layers) {
        let dest = blobs.join(hex_of(d));
        if !dest.exists() {
            s.blob(d, *size, &dest)?;
        }
    }
    write(
        &dir.path().join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": media,
            "digest": digest,
            "size": body.len(),
            "annotations": { "org.opencontainers.image.ref.name": r.ref_name() }
        }]
    });
    write(&dir.path().join("index.json"), index.to_string().as_bytes())?;
    let layout = Reference {
        format: Format::OciDir,
        path: dir.path().to_path_buf(),
        tag: Some(r.ref_name()),
    };
    let src = ImportSource {
        url: Some(url.clone()),
        etag: Some(digest),
        ..Default::default()
    };
    super::oci::import_layout(store, &layout, &url, src, opts)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn credentials_go_only_to_the_registrys_realms() {
        let opts = FetchOptions::default();
        let refused = |realm: &str, registry: &str, o: &FetchOptions| {
            realm_refusal(&reqwest::Url::parse(realm).unwrap(), registry, o).is_some()
        };
        assert!(!refused("https://auth.docker.io/token", DOCKER_HUB, &opts));
        assert!(!refused("https://quay.io/v2/auth", "quay.io", &opts));
        assert!(!refused(
            "https://r.example.com:5000/t",
            "r.example.com:5000",
            &opts
        ));
        assert!(refused("https://evil.example/token", "quay.io", &opts));
        assert!(refused(
            "https://auth.docker.io:8443/token",
            DOCKER_HUB,
            &opts
        ));
        assert!(refused("https://127.0.0.1:2/t", "127.0.0.1:1", &opts));
        assert!(refused("https://0.1:5000/t", "127.0.0.1:5000", &opts));
        // Plain http only with --insecure-options=http.
        assert!(refused("http://quay.io/v2/auth", "quay.io:80", &opts));
        let mut http = FetchOptions::default();
        http.insecure.http = true;
        assert!(!refused("http://quay.io/v2/auth", "quay.io:80", &http));
        // Listed in the same dockerAuth entry.
        let creds = crate::config::BasicCredentials {
            user: "u".into(),
            password: "p".into(),
        };
        for r in ["127.0.0.1:1", "127.0.0.1:2"] {
            http.config.docker_auth.insert(r.into(), creds.clone());
        }
        assert!(!refused("http://127.0.0.1:2/t", "127.0.0.1:1", &http));
    }

    #[test]
    fn references_parse_as_docker_reads_them() {
        let p = |s: &str| DockerRef::parse(s).unwrap();
        assert_eq!(
            p("docker://busybox"),
            DockerRef {
                registry: DOCKER_HUB.into(),
                name: "library/busybox".into(),
                reference: "latest".into()
            }
        );
        assert_eq!(p("docker://docker.io/coreos/etcd:v3").name, "coreos/etcd");
        let q = p("docker://quay.io/coreos/etcd:v2.0.0");
        assert_eq!(
            (q.registry.as_str(), q.reference.as_str()),
            ("quay.io", "v2.0.0")
        );
        assert_eq!(q.url(), "docker://quay.io/coreos/etcd:v2.0.0");
        assert_eq!(q.ref_name(), "quay.io/coreos/etcd:v2.0.0");
        assert_eq!(p("docker://[::1]:5000/app").registry, "[::1]:5000");
        let l = p("docker://127.0.0.1:5000/team/app");
        assert_eq!(
            (l.registry.as_str(), l.name.as_str()),
            ("127.0.0.1:5000", "team/app")
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let by = p(&format!("docker://localhost/app@{d}"));
        assert_eq!(by.reference, d);
        assert_eq!(by.url(), format!("docker://localhost/app@{d}"));
        assert_eq!(
            by.ref_name(),
            format!("localhost/app:sha256-{}", "a".repeat(64))
        );
        for bad in [
            "docker://",
            "docker://Busybox",
            "docker://busybox:",
            "docker://busybox@sha256:abc",
            "docker://busybox:-x",
            "docker://a//b",
            "docker://../x",
            "docker://a..b/x",
            "docker://host:port/x",
            "http://busybox",
        ] {
            assert!(DockerRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn challenges_parse_with_quoted_commas() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.example/token"));
        assert_eq!(c.param("service"), Some("registry.example"));
        assert_eq!(c.param("scope"), Some("repository:a/b:pull,push"));
        let b = Challenge::parse(r#"Basic realm="x \"y\"""#).unwrap();
        assert_eq!(
            (b.scheme.as_str(), b.param("realm")),
            ("basic", Some("x \"y\""))
        );
        assert!(Challenge::parse("").is_none());
    }
}
