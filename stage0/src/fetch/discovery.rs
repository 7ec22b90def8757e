//! appc meta discovery (spec/discovery.md, appc 0.8.11): GET `https://{name}?ac-discovery=1`,
//! read `<meta name="ac-discovery" content="PREFIX TEMPLATE">` tags, expand the template with
//! `{name}`, `{version}` (default `latest`), `{os}`, `{arch}`, `{ext}` and any other label,
//! walking up the name's path prefixes on failure. Plain http is tried (after https) only with
//! `--insecure-options=http`.

use std::collections::BTreeMap;

use super::http::{self, Fetched};
use super::{FetchError, FetchOptions};
use crate::error::error_chain;
use crate::store::{ImageRecord, NameRef, Store};

/// Environment variable that overrides the port of discovery requests (like the `port`
/// parameter of appc's discovery library; used by tests against a local server).
pub const DISCOVERY_PORT_ENV: &str = "RKT_DISCOVERY_PORT";

/// Timeout of one discovery request (the pages are small), in seconds.
const DISCOVERY_TIMEOUT_SECS: u64 = 30;

/// The host's appc os label.
const HOST_OS: &str = "linux";

/// The host's appc arch label.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "aarch64",
        "x86" => "i386",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        other => other,
    }
}

/// Discovery URLs to try, in order: for each prefix of the name (longest first), https, then
/// http if allowed.
pub fn discovery_urls(name: &str, allow_http: bool, port: Option<u16>) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = name.trim_end_matches('/').to_string();
    loop {
        let (host, path) = match cur.split_once('/') {
            Some((h, p)) => (h.to_string(), format!("/{p}")),
            None => (cur.clone(), String::new()),
        };
        let hostport = match port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        out.push(format!("https://{hostport}{path}?ac-discovery=1"));
        if allow_http {
            out.push(format!("http://{hostport}{path}?ac-discovery=1"));
        }
        match cur.rsplit_once('/') {
            Some((parent, _)) => cur = parent.to_string(),
            None => break,
        }
    }
    out
}

/// `(name, content)` of every `<meta>` tag in `html` (attribute order and quoting free).
pub fn parse_meta_tags(html: &str) -> Vec<(String, String)> {
    let lower = html.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(i) = lower.get(pos..).and_then(|s| s.find("<meta")) {
        let start = pos + i + 5;
        let end = lower
            .get(start..)
            .and_then(|s| s.find('>'))
            .map_or(html.len(), |e| start + e);
        let attrs = parse_attrs(html.get(start..end).unwrap_or(""));
        if let (Some(n), Some(c)) = (attrs.get("name"), attrs.get("content")) {
            out.push((n.clone(), c.clone()));
        }
        pos = end;
    }
    out
}

/// Attributes of one tag body: `key="v"`, `key='v'` or `key=v`; keys lower-cased.
fn parse_attrs(s: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len()
            && (b
                .get(i)
                .is_some_and(|c| c.is_ascii_whitespace() || *c == b'/'))
        {
            i += 1;
        }
        let ks = i;
        while i < b.len()
            && b.get(i)
                .is_some_and(|c| !c.is_ascii_whitespace() && *c != b'=')
        {
            i += 1;
        }
        let key = s.get(ks..i).unwrap_or("").to_ascii_lowercase();
        while i < b.len() && b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        if b.get(i) != Some(&b'=') {
            if key.is_empty() {
                i += 1;
            }
            continue;
        }
        i += 1;
        while i < b.len() && b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
            i += 1;
        }
        let val = match b.get(i) {
            Some(&q) if q == b'"' || q == b'\'' => {
                let vs = i + 1;
                let ve = s
                    .get(vs..)
                    .and_then(|r| r.find(q as char))
                    .map_or(s.len(), |e| vs + e);
                i = ve + 1;
                s.get(vs..ve).unwrap_or("")
            }
            _ => {
                let vs = i;
                while i < b.len() && b.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    i += 1;
                }
                s.get(vs..i).unwrap_or("")
            }
        };
        if !key.is_empty() {
            m.insert(key, html_unescape(val));
        }
    }
    m
}

fn html_unescape(s: &str) -> String {
    s.replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
}

/// Expands `{var}`s of `template`; None if a variable stays unexpanded.
pub fn render_template(template: &str, vars: &BTreeMap<String, String>) -> Option<String> {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    if out.contains('{') && out.contains('}') {
        return None;
    }
    Some(out)
}

/// Template variables for a name reference with the spec's defaults.
fn template_vars(nr: &NameRef, ext: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    vars.insert("version".to_string(), "latest".to_string());
    vars.insert("os".to_string(), HOST_OS.to_string());
    vars.insert("arch".to_string(), host_arch().to_string());
    for (k, v) in &nr.labels {
        vars.insert(k.clone(), v.clone());
    }
    vars.insert("name".to_string(), nr.name.clone());
    vars.insert("ext".to_string(), ext.to_string());
    vars
}

/// Largest discovery page read, in bytes (appc discovery pages are a few meta tags).
pub const MAX_DISCOVERY_PAGE_BYTES: u64 = 256 * 1024;

/// The body of a discovery page, at most [`MAX_DISCOVERY_PAGE_BYTES`] (a longer one is an
/// error, read no further); invalid UTF-8 is replaced.
fn read_page(r: impl std::io::Read) -> Result<String, String> {
    use std::io::Read;
    let mut buf = Vec::new();
    http::Progress::new(r)
        .take(MAX_DISCOVERY_PAGE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| error_chain(&e))?;
    if buf.len() as u64 > MAX_DISCOVERY_PAGE_BYTES {
        return Err(format!("page larger than {MAX_DISCOVERY_PAGE_BYTES} bytes"));
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Port override from [`DISCOVERY_PORT_ENV`].
pub(crate) fn port_override() -> Option<u16> {
    std::env::var(DISCOVERY_PORT_ENV)
        .ok()
        .and_then(|p| p.parse().ok())
}

/// Walks the discovery pages of `name` (see [`discovery_urls`]) with `client` and returns what
/// `found` makes of the first page whose meta tags give something; otherwise one line per page
/// tried saying why it gave nothing (`tag`: the meta tag looked for). `label` prefixes the debug
/// lines.
pub(crate) fn first_discovered<T>(
    client: &reqwest::blocking::Client,
    name: &str,
    allow_http: bool,
    opts: &FetchOptions,
    label: &str,
    tag: &str,
    mut found: impl FnMut(Vec<(String, String)>) -> Vec<T>,
) -> Result<Vec<T>, Vec<String>> {
    let mut tried = Vec::new();
    for url in discovery_urls(name, allow_http, port_override()) {
        if opts.debug {
            eprintln!("rkt: {label}: GET {}", crate::format::escape_control(&url));
        }
        let req = client
            .get(&url)
            .timeout(std::time::Duration::from_secs(DISCOVERY_TIMEOUT_SECS));
        let body = match req.send() {
            Ok(r) if r.status().is_success() => match read_page(r) {
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
                tried.push(format!("{url}: {}", error_chain(&e.without_url())));
                continue;
            }
        };
        let tags = parse_meta_tags(&body)
            .into_iter()
            .filter(|(n, _)| n == tag)
            .collect();
        let got = found(tags);
        if got.is_empty() {
            tried.push(format!("{url}: no matching {tag} meta tag"));
            continue;
        }
        return Ok(got);
    }
    // URLs come from the name and the lines from peers: printable either way.
    Err(tried
        .iter()
        .map(|t| crate::format::escape_control(t).into_owned())
        .collect())
}

/// `(ACI URL, signature URL)` pairs discovered for `nr`, best first (https before http).
pub(crate) fn discover(
    nr: &NameRef,
    opts: &FetchOptions,
) -> Result<Vec<(String, String)>, FetchError> {
    let client = http::client(opts)?;
    let vars = template_vars(nr, "aci");
    let sig_vars = template_vars(nr, "aci.asc");
    let http_ok = opts.insecure.http;
    first_discovered(
        &client,
        &nr.name,
        http_ok,
        opts,
        "discovery",
        "ac-discovery",
        |tags| {
            let mut found: Vec<(String, String)> = tags
                .into_iter()
                .filter_map(|(_, c)| {
                    let mut it = c.split_whitespace();
                    let prefix = it.next()?;
                    let template = it.next()?;
                    if !nr.name.starts_with(prefix) {
                        return None;
                    }
                    Some((
                        render_template(template, &vars)?,
                        render_template(template, &sig_vars)?,
                    ))
                })
                .filter(|(u, _)| http_ok || u.starts_with("https://"))
                .collect();
            found.sort_by_key(|(u, _)| !u.starts_with("https://"));
            found
        },
    )
    .map_err(|tried| FetchError::Discovery {
        name: nr.to_string(),
        reason: format!("tried {}", tried.join("; ")),
    })
}

/// Discovers and fetches `nr`; the fetched manifest must carry the requested name and labels.
pub(crate) fn fetch_by_name(
    store: &Store,
    nr: &NameRef,
    opts: &FetchOptions,
) -> Result<ImageRecord, FetchError> {
    let urls = discover(nr, opts)?;
    let mut last_err = None;
    for (url, sig_url) in urls {
        let mut check = |m: &appc::ImageManifest| -> Result<(), String> {
            if m.name.as_str() != nr.name {
                return Err(format!(
                    "{url} holds image {:?}, not {:?}",
                    m.name.as_str(),
                    nr.name
                ));
            }
            for (k, v) in &nr.labels {
                if k == "version" && v == "latest" {
                    continue;
                }
                if m.label(k) != Some(v.as_str()) {
                    return Err(format!("{url} holds an image whose label {k} is not {v:?}"));
                }
            }
            Ok(())
        };
        match http::fetch_url(store, &url, opts, &mut check, &sig_url) {
            Ok(Fetched::Cached(r)) | Ok(Fetched::Downloaded(r)) => return Ok(r),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or(FetchError::Discovery {
        name: nr.to_string(),
        reason: "no URL".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_walk_up() {
        let u = discovery_urls("example.com/a/b", true, Some(8080));
        assert_eq!(
            u,
            vec![
                "https://example.com:8080/a/b?ac-discovery=1",
                "http://example.com:8080/a/b?ac-discovery=1",
                "https://example.com:8080/a?ac-discovery=1",
                "http://example.com:8080/a?ac-discovery=1",
                "https://example.com:8080?ac-discovery=1",
                "http://example.com:8080?ac-discovery=1",
            ]
        );
        assert_eq!(
            discovery_urls("example.com", false, None),
            vec!["https://example.com?ac-discovery=1"]
        );
    }

    #[test]
    fn meta_and_templates() {
        let html = r#"<html><head>
            <META content='example.com https://example.com/{name}-{version}-{os}-{arch}.{ext}' name=ac-discovery>
            <meta name="ac-discovery-pubkeys" content="example.com https://example.com/pubkeys.gpg"/>
            </head></html>"#;
        let tags = parse_meta_tags(html);
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0].0, "ac-discovery");
        let nr = NameRef::parse("example.com/app:1.0").expect("valid");
        let vars = template_vars(&nr, "aci");
        let t = tags[0].1.split_whitespace().nth(1).expect("template");
        assert_eq!(
            render_template(t, &vars).as_deref(),
            Some(
                format!(
                    "https://example.com/example.com/app-1.0-linux-{}.aci",
                    host_arch()
                )
                .as_str()
            )
        );
        assert_eq!(
            render_template("https://x/{name}-{flavor}.{ext}", &vars),
            None
        );
    }
}
