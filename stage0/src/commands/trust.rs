//! `rkt trust [--prefix=PREFIX] [--root] [--skip-fingerprint-review] [--insecure-allow-http]
//! [PUBKEY...]`: adds public keys to the local keystore (see docs/trust.md). Keys come from
//! files, URLs, or, with a prefix and no key, from appc meta discovery of the prefix. Each
//! key's fingerprint is shown and confirmed on the terminal unless review is skipped.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use stage0::error::UsageError;
use stage0::fetch::pubkeys;
use trust::Scope;

use super::Globals;

/// Flags of `rkt trust`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Image name prefix the keys are trusted for (e.g. example.com/app).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Trust the keys for every image (root.d); needs key arguments.
    #[arg(long)]
    pub root: bool,
    /// Trust without showing the fingerprint and asking for confirmation.
    #[arg(long)]
    pub skip_fingerprint_review: bool,
    /// Allow fetching keys (and key discovery) over plain http.
    #[arg(long)]
    pub insecure_allow_http: bool,
    /// Key files or URLs (armored or binary OpenPGP certificates).
    #[arg(value_name = "PUBKEY")]
    pub keys: Vec<String>,
}

/// Runs `rkt trust`.
pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let scope = match (&a.prefix, a.root) {
        (Some(_), true) => {
            return Err(UsageError("--prefix and --root are mutually exclusive".into()).into())
        }
        (None, false) => {
            return Err(UsageError(
                "--prefix=PREFIX is required (or --root to trust keys for every image)".into(),
            )
            .into())
        }
        (None, true) => {
            if a.keys.is_empty() {
                return Err(UsageError(
                    "--root needs key files or URLs (keys are discovered only for a --prefix)"
                        .into(),
                )
                .into());
            }
            Scope::Root
        }
        (Some(p), false) => {
            trust::check_prefix(p).map_err(|e| UsageError(e.to_string()))?;
            Scope::Prefix(p.clone())
        }
    };
    let opts = stage0::fetch::FetchOptions {
        insecure: stage0::fetch::InsecureOptions::parse(&g.insecure_options)?,
        debug: g.debug,
        ..Default::default()
    };
    let locations = match (&scope, a.keys.is_empty()) {
        (Scope::Prefix(p), true) => pubkeys::discover_pubkeys(p, a.insecure_allow_http, &opts)
            .with_context(|| format!("cannot discover public keys for prefix {p}"))?,
        _ => a.keys.clone(),
    };
    let ks = super::fetch::keystore(g);
    for loc in &locations {
        let (bytes, https) = read_key(loc, a.insecure_allow_http, &opts)?;
        let cert = trust::parse_cert(&bytes, loc)?;
        match &scope {
            Scope::Prefix(p) => eprintln!("Prefix: {p:?}"),
            Scope::Root => eprintln!("Root key (trusted for every image)"),
        }
        eprintln!("Key: {loc:?}");
        eprintln!(
            "GPG key fingerprint is: {}",
            trust::display_fingerprint(&cert)
        );
        for k in cert.keys().subkeys() {
            eprintln!(
                "\tSubkey fingerprint: {}",
                k.key().fingerprint().to_spaced_hex()
            );
        }
        // A user ID is whatever bytes the key's maker chose: escaped, so that a terminal
        // sequence in one cannot rewrite the fingerprint above it.
        for u in trust::user_ids(&cert) {
            eprintln!("\t{}", stage0::format::escape_control(&u));
        }
        let reviewed = if a.skip_fingerprint_review || (g.trust_keys_from_https && https) {
            false
        } else {
            if !std::io::stdin().is_terminal() {
                return Err(UsageError(format!(
                    "refusing to trust key {} from {loc} without review: stdin is not a terminal; check the fingerprint and pass --skip-fingerprint-review=true",
                    cert.fingerprint().to_hex()
                ))
                .into());
            }
            if !confirm()? {
                eprintln!("Not trusting {loc:?}");
                continue;
            }
            true
        };
        let review = if reviewed { "after" } else { "without" };
        match &scope {
            Scope::Prefix(p) => {
                eprintln!("Trusting {loc:?} for prefix {p:?} {review} fingerprint review.")
            }
            Scope::Root => eprintln!("Trusting {loc:?} as a root key {review} fingerprint review."),
        }
        let path = ks.store(&scope, &cert)?;
        match &scope {
            Scope::Prefix(p) => eprintln!(
                "Added key for prefix {p:?} at {:?}",
                path.display().to_string()
            ),
            Scope::Root => eprintln!("Added root key at {:?}", path.display().to_string()),
        }
    }
    Ok(0)
}

/// A key file's bytes, and whether it came over https.
fn read_key(
    loc: &str,
    allow_http: bool,
    opts: &stage0::fetch::FetchOptions,
) -> anyhow::Result<(Vec<u8>, bool)> {
    if loc.starts_with("https://") || loc.starts_with("http://") {
        let b = pubkeys::fetch_key(loc, allow_http, opts)
            .with_context(|| format!("cannot fetch key {loc}"))?;
        return Ok((b, loc.starts_with("https://")));
    }
    let path = loc.strip_prefix("file://").unwrap_or(loc);
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read key {path}"))?;
    if meta.len() > trust::MAX_KEY_BYTES {
        anyhow::bail!(
            "key file {path} is larger than {} bytes",
            trust::MAX_KEY_BYTES
        );
    }
    let b = std::fs::read(path).with_context(|| format!("cannot read key {path}"))?;
    Ok((b, false))
}

/// Asks on stderr, reads the answer from stdin: true for yes.
fn confirm() -> anyhow::Result<bool> {
    loop {
        eprint!("Are you sure you want to trust this key (yes/no)? ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line)? == 0 {
            return Ok(false);
        }
        match line.trim().to_ascii_lowercase().as_str() {
            "yes" | "y" => return Ok(true),
            "no" | "n" => return Ok(false),
            _ => eprintln!("Please enter 'yes' or 'no'"),
        }
    }
}
