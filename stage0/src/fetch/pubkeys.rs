//! Public keys for `rkt trust`: fetched from a URL, or found by appc meta discovery of a
//! prefix (`<meta name="ac-discovery-pubkeys" content="PREFIX KEY-URL">`, walking up the
//! prefix's path like image discovery). https only unless `--insecure-allow-http`.

use std::io::Read;

use super::discovery::{discovery_urls, parse_meta_tags, port_override};
use super::{http, FetchError, FetchOptions};
use crate::store::StoreError;

/// Timeout of one discovery request, in seconds.
const DISCOVERY_TIMEOUT_SECS: u64 = 30;

/// Downloads a key file (at most [`trust::MAX_KEY_BYTES`]).
pub fn fetch_key(url: &str, allow_http: bool, opts: &FetchOptions) -> Result<Vec<u8>, FetchError> {
    if url.starts_with("http://") && !allow_http {
        return Err(FetchError::HttpNotAllowed(format!(
            "{url} (keys: pass --insecure-allow-http to allow it)"
        )));
    }
    let mut o = opts.clone();
    o.insecure.http |= allow_http;
    let resp = http::client(&o)?
        .get(url)
        .send()
        .map_err(|e| FetchError::Http(url.to_string(), e.without_url()))?;
    if !resp.status().is_success() {
        return Err(FetchError::HttpStatus {
            url: url.to_string(),
            status: resp.status().as_u16(),
        });
    }
    let mut buf = Vec::new();
    resp.take(trust::MAX_KEY_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| FetchError::Store(StoreError::Read(e)))?;
    Ok(buf)
}

/// Key URLs that meta discovery of `prefix` announces for it (the first discovery page
/// with a matching `ac-discovery-pubkeys` tag wins).
pub fn discover_pubkeys(
    prefix: &str,
    allow_http: bool,
    opts: &FetchOptions,
) -> Result<Vec<String>, FetchError> {
    let mut o = opts.clone();
    o.insecure.http |= allow_http;
    let client = http::client(&o)?;
    let mut tried = Vec::new();
    for url in discovery_urls(prefix, allow_http, port_override()) {
        if opts.debug {
            eprintln!("rkt: key discovery: GET {url}");
        }
        let req = client
            .get(&url)
            .timeout(std::time::Duration::from_secs(DISCOVERY_TIMEOUT_SECS));
        let body = match req.send() {
            Ok(r) if r.status().is_success() => match r.text() {
                Ok(t) => t,
                Err(e) => {
                    tried.push(format!("{url}: {e}"));
                    continue;
                }
            },
            Ok(r) => {
                tried.push(format!("{url}: HTTP {}", r.status().as_u16()));
                continue;
            }
            Err(e) => {
                tried.push(format!("{url}: {}", e.without_url()));
                continue;
            }
        };
        let found: Vec<String> = parse_meta_tags(&body)
            .into_iter()
            .filter(|(n, _)| n == "ac-discovery-pubkeys")
            .filter_map(|(_, c)| {
                let mut it = c.split_whitespace();
                let p = it.next()?;
                let key_url = it.next()?;
                covers(p, prefix).then(|| key_url.to_string())
            })
            .filter(|u| u.starts_with("https://") || (allow_http && u.starts_with("http://")))
            .collect();
        if found.is_empty() {
            tried.push(format!("{url}: no matching ac-discovery-pubkeys meta tag"));
            continue;
        }
        return Ok(found);
    }
    Err(FetchError::Discovery {
        name: prefix.to_string(),
        reason: format!("no public keys discovered; tried {}", tried.join("; ")),
    })
}

/// Whether a discovery tag for `tag_prefix` applies to `name` (equal, or a path prefix).
fn covers(tag_prefix: &str, name: &str) -> bool {
    let p = tag_prefix.trim_end_matches('/');
    name == p || name.strip_prefix(p).is_some_and(|r| r.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn tag_prefixes() {
        assert!(covers("example.com", "example.com/foo"));
        assert!(covers("example.com/foo", "example.com/foo"));
        assert!(!covers("example.com/foo", "example.com/foobar"));
        assert!(!covers("example.com/foo/bar", "example.com/foo"));
    }
}
