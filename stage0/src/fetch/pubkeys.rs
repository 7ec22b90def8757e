//! Public keys for `rkt trust`: fetched from a URL, or found by appc meta discovery of a
//! prefix (`<meta name="ac-discovery-pubkeys" content="PREFIX KEY-URL">`, walking up the
//! prefix's path like image discovery). https only unless `--insecure-allow-http`.

use std::io::Read;

use super::discovery::first_discovered;
use super::{http, FetchError, FetchOptions};

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
    http::Progress::new(resp)
        .take(trust::MAX_KEY_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| http::body_error(url, e))?;
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
    first_discovered(
        &client,
        prefix,
        allow_http,
        opts,
        "key discovery",
        "ac-discovery-pubkeys",
        |tags| {
            tags.into_iter()
                .filter_map(|(_, c)| {
                    let mut it = c.split_whitespace();
                    let p = it.next()?;
                    let key_url = it.next()?;
                    covers(p, prefix).then(|| key_url.to_string())
                })
                .filter(|u| u.starts_with("https://") || (allow_http && u.starts_with("http://")))
                .collect()
        },
    )
    .map_err(|tried| FetchError::Discovery {
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
