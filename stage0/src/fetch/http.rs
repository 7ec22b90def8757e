//! HTTP(S) fetching with revalidation: a remembered URL within its `Cache-Control: max-age`
//! is not requested at all; after that it is revalidated with `If-None-Match` /
//! `If-Modified-Since`, and a `304 Not Modified` downloads nothing.

use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::header::{
    CACHE_CONTROL, CONTENT_LENGTH, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED,
};
use reqwest::StatusCode;

use super::{progress, signature, FetchError, FetchOptions, PullPolicy};
use crate::store::{now_nanos, ImageRecord, ImportSource, Store, StoreError};

/// Default TCP connect timeout, in seconds.
pub const CONNECT_TIMEOUT_SECS: u64 = 30;
/// Default read timeout, in seconds: the longest wait for the response headers, and for each
/// read of the body (a server that stalls for this long fails the fetch).
pub const READ_TIMEOUT_SECS: u64 = 60;
/// Environment variable overriding [`CONNECT_TIMEOUT_SECS`] (seconds, may be fractional).
pub const CONNECT_TIMEOUT_ENV: &str = "RKT_HTTP_CONNECT_TIMEOUT";
/// Environment variable overriding [`READ_TIMEOUT_SECS`] (seconds, may be fractional).
pub const READ_TIMEOUT_ENV: &str = "RKT_HTTP_READ_TIMEOUT";

/// Connect and read timeouts in effect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// TCP (and TLS) connect.
    pub connect: Duration,
    /// Response headers, and each read of the body.
    pub read: Duration,
}

/// A timeout from environment variable `var` (a positive number of seconds), else `default`.
fn timeout_from_env(var: &'static str, default: u64) -> Result<Duration, FetchError> {
    match std::env::var(var) {
        Err(std::env::VarError::NotPresent) => Ok(Duration::from_secs(default)),
        Ok(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
            .map(Duration::from_secs_f64)
            .ok_or(FetchError::BadTimeout { var, value: v }),
        Err(std::env::VarError::NotUnicode(v)) => Err(FetchError::BadTimeout {
            var,
            value: v.to_string_lossy().into_owned(),
        }),
    }
}

/// The timeouts: defaults, or [`CONNECT_TIMEOUT_ENV`] / [`READ_TIMEOUT_ENV`].
pub fn timeouts() -> Result<Timeouts, FetchError> {
    Ok(Timeouts {
        connect: timeout_from_env(CONNECT_TIMEOUT_ENV, CONNECT_TIMEOUT_SECS)?,
        read: timeout_from_env(READ_TIMEOUT_ENV, READ_TIMEOUT_SECS)?,
    })
}

/// Fewest bytes a peer must send per window of waiting (the window is the read timeout,
/// [`READ_TIMEOUT_ENV`]), in bytes: a slower response body fails the fetch with [`TooSlow`].
pub const MIN_BYTES_PER_WINDOW: u64 = 16 * 1024;

/// A response body that must make progress: reqwest's read timeout bounds each read, so a
/// peer sending a byte just inside it would hold a fetch forever. Counting only the time
/// spent waiting for the peer (not the reader's own work), every read-timeout window of it
/// must bring [`MIN_BYTES_PER_WINDOW`] bytes, else the read fails with [`TooSlow`] (an
/// `io::ErrorKind::TimedOut` error). Every response body rkt reads goes through one.
pub(crate) struct Progress<R> {
    inner: R,
    /// Length of a window of waiting.
    window: Duration,
    /// Waiting so far in the current window.
    waited: Duration,
    /// Bytes received in the current window.
    got: u64,
}

impl<R: std::io::Read> Progress<R> {
    /// Wraps `inner` with the read timeout in effect as the window.
    pub(crate) fn new(inner: R) -> Progress<R> {
        let window = timeouts()
            .map(|t| t.read)
            .unwrap_or(Duration::from_secs(READ_TIMEOUT_SECS));
        Progress {
            inner,
            window,
            waited: Duration::ZERO,
            got: 0,
        }
    }
}

impl<R: std::io::Read> std::io::Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let start = std::time::Instant::now();
        let n = self.inner.read(buf)?;
        self.waited += start.elapsed();
        self.got += n as u64;
        if n > 0 && self.waited >= self.window {
            if self.got < MIN_BYTES_PER_WINDOW {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    TooSlow {
                        bytes: self.got,
                        secs: self.waited.as_secs_f64(),
                    },
                ));
            }
            self.waited = Duration::ZERO;
            self.got = 0;
        }
        Ok(n)
    }
}

/// A peer sent fewer than [`MIN_BYTES_PER_WINDOW`] bytes in a window of waiting for it.
#[derive(Debug, thiserror::Error)]
#[error(
    "the server sent {bytes} bytes in {secs:.1} s of waiting (fewer than {MIN_BYTES_PER_WINDOW})"
)]
pub struct TooSlow {
    /// Bytes received in the window.
    pub bytes: u64,
    /// Time waited, in seconds.
    pub secs: f64,
}

/// Maximum number of redirects followed.
const MAX_REDIRECTS: usize = 10;

/// Outcome of [`fetch_url`].
#[derive(Debug)]
pub(crate) enum Fetched {
    /// Served from the store (fresh, 304, or pull policy).
    Cached(ImageRecord),
    /// Downloaded and imported.
    Downloaded(ImageRecord),
}

/// An HTTP client honouring the insecure options (plain http, TLS verification, redirects
/// to plain http).
pub(crate) fn client(opts: &FetchOptions) -> Result<Client, FetchError> {
    let allow_http = opts.insecure.http;
    let policy = reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if attempt.url().scheme() == "http" && !allow_http {
            attempt
                .error("redirect to plain http refused (pass --insecure-options=http to allow it)")
        } else {
            attempt.follow()
        }
    });
    let t = timeouts()?;
    // The blocking client's `timeout` bounds sending the request and receiving the headers,
    // then each read of the body separately: an idle timeout, not a deadline for the download.
    Client::builder()
        .user_agent(concat!("rkt/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(t.connect)
        .timeout(t.read)
        .redirect(policy)
        .danger_accept_invalid_certs(opts.insecure.tls)
        .build()
        .map_err(|e| FetchError::Http("(client setup)".into(), e))
}

/// `Cache-Control` → max-age seconds (`no-cache`/`no-store` → 0; absent → None).
pub(crate) fn max_age(resp: &Response) -> Option<u64> {
    let cc = resp
        .headers()
        .get(CACHE_CONTROL)?
        .to_str()
        .ok()?
        .to_ascii_lowercase();
    let mut age = None;
    for d in cc.split(',').map(str::trim) {
        if d == "no-cache" || d == "no-store" {
            return Some(0);
        }
        if let Some(v) = d.strip_prefix("max-age=") {
            age = v.trim_matches('"').parse().ok();
        }
    }
    age
}

fn header(resp: &Response, name: reqwest::header::HeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Whether a remembered download is still within its max-age.
fn fresh(max_age: Option<u64>, download_time: i64) -> bool {
    let Some(m) = max_age.filter(|m| *m > 0) else {
        return false;
    };
    let age_ns = now_nanos().saturating_sub(download_time);
    age_ns >= 0 && u128::try_from(age_ns).unwrap_or(u128::MAX) < u128::from(m) * 1_000_000_000
}

/// Fetches `url` into the store (see module docs). `check` may reject the manifest before the
/// image becomes visible. Unless `--insecure-options=image`, the detached signature at
/// `sig_url` is downloaded first and verified as the image streams in (see `signature`).
pub(crate) fn fetch_url(
    store: &Store,
    url: &str,
    opts: &FetchOptions,
    check: &mut dyn FnMut(&appc::ImageManifest) -> Result<(), String>,
    sig_url: &str,
) -> Result<Fetched, FetchError> {
    if url.starts_with("http://") && !opts.insecure.http {
        return Err(FetchError::HttpNotAllowed(url.to_string()));
    }
    let cached = if opts.no_store {
        None
    } else {
        match store.remote(url)? {
            Some(r) => store.get(&r.image_id)?.map(|rec| (r, rec)),
            None => None,
        }
    };
    if let Some((remote, rec)) = &cached {
        if opts.pull_policy != PullPolicy::Update || fresh(remote.max_age, remote.download_time) {
            check_cached(store, rec, check)?;
            if opts.debug {
                eprintln!(
                    "rkt: using {} from the store ({})",
                    crate::format::escape_control(url),
                    rec.sha256_id
                );
            }
            return Ok(Fetched::Cached(rec.clone()));
        }
    } else if opts.pull_policy == PullPolicy::Never {
        return Err(FetchError::NotInStore(url.to_string()));
    }
    let client = client(opts)?;
    let verification = signature::for_download(&client, url, sig_url, opts)?;
    let mut req = client.get(url);
    // Only for the host the credentials name: reqwest drops the header on a redirect to
    // another host (or port).
    if let Some(auth) = opts.config.authorization(url) {
        req = req.header(reqwest::header::AUTHORIZATION, auth);
    }
    if let Some((remote, _)) = &cached {
        if let Some(e) = &remote.etag {
            req = req.header(IF_NONE_MATCH, e);
        }
        if let Some(lm) = &remote.last_modified {
            req = req.header(IF_MODIFIED_SINCE, lm);
        }
    }
    if opts.debug {
        eprintln!("rkt: fetching {}", crate::format::escape_control(url));
    }
    let resp = req.send().map_err(|e| request_error(url, e))?;
    if resp.status() == StatusCode::NOT_MODIFIED {
        if let Some((_, rec)) = cached {
            check_cached(store, &rec, check)?;
            store.revalidated(url, max_age(&resp))?;
            if opts.debug {
                eprintln!(
                    "rkt: {} not modified ({})",
                    crate::format::escape_control(url),
                    rec.sha256_id
                );
            }
            return Ok(Fetched::Cached(rec));
        }
    }
    if !resp.status().is_success() {
        return Err(FetchError::HttpStatus {
            url: url.to_string(),
            status: resp.status().as_u16(),
        });
    }
    let src = ImportSource {
        url: Some(url.to_string()),
        etag: header(&resp, ETAG),
        last_modified: header(&resp, LAST_MODIFIED),
        max_age: max_age(&resp),
    };
    let total = header(&resp, CONTENT_LENGTH).and_then(|v| v.parse().ok());
    let mut bar = progress::Bar::new(opts.progress, url, total);
    let v = verification.as_ref();
    let body = Progress::new(resp);
    let (rec, verified) = signature::import(store, body, &src, &mut |n| bar.update(n), check, v)
        .map_err(|e| match e {
            StoreError::Read(io) if is_timeout(&io) => body_error(url, io),
            e => signature::map_import_error(e, v),
        })?;
    bar.finish();
    signature::finished(&rec, verified.as_ref(), opts);
    Ok(Fetched::Downloaded(rec))
}

/// Runs `check` on a stored image about to be served for a URL, as a download would have
/// been checked (a discovered URL may lead to an image stored under another name).
fn check_cached(
    store: &Store,
    rec: &ImageRecord,
    check: &mut dyn FnMut(&appc::ImageManifest) -> Result<(), String>,
) -> Result<(), FetchError> {
    let m = store.manifest(rec)?;
    check(&m).map_err(|why| FetchError::Store(StoreError::Rejected(why)))
}

/// A failed request to `url`: [`FetchError::Timeout`] for a timeout, else the HTTP error.
pub(crate) fn request_error(url: &str, e: reqwest::Error) -> FetchError {
    if e.is_timeout() {
        timed_out(url, e.is_connect())
    } else {
        FetchError::Http(url.to_string(), e.without_url())
    }
}

/// A failed read of `url`'s response body: [`FetchError::Timeout`] for reqwest's read timeout.
pub(crate) fn body_error(url: &str, e: std::io::Error) -> FetchError {
    if let Some(s) = e.get_ref().and_then(|r| r.downcast_ref::<TooSlow>()) {
        return FetchError::TooSlow {
            url: url.to_string(),
            bytes: s.bytes,
            secs: s.secs,
            var: READ_TIMEOUT_ENV,
        };
    }
    if is_timeout(&e) {
        timed_out(url, false)
    } else {
        FetchError::Store(StoreError::Read(e))
    }
}

/// Whether an I/O error from a response body is reqwest's read timeout.
fn is_timeout(e: &std::io::Error) -> bool {
    if e.kind() == std::io::ErrorKind::TimedOut {
        return true;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|r| r as _);
    while let Some(c) = cur {
        if let Some(r) = c.downcast_ref::<reqwest::Error>() {
            if r.is_timeout() {
                return true;
            }
        }
        cur = c.source();
    }
    false
}

/// [`FetchError::Timeout`] for `url` with the timeout in effect.
fn timed_out(url: &str, connect: bool) -> FetchError {
    let t = timeouts().unwrap_or(Timeouts {
        connect: Duration::from_secs(CONNECT_TIMEOUT_SECS),
        read: Duration::from_secs(READ_TIMEOUT_SECS),
    });
    let (what, d, var) = if connect {
        ("connecting", t.connect, CONNECT_TIMEOUT_ENV)
    } else {
        ("waiting for data", t.read, READ_TIMEOUT_ENV)
    };
    FetchError::Timeout {
        url: url.to_string(),
        what,
        secs: d.as_secs_f64(),
        var,
    }
}
