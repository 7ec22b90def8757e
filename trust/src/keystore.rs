//! rkt's keystore layout: trusted OpenPGP certificates under `<config>/trustedkeys/`,
//!
//! ```text
//! root.d/<fingerprint>                     trusted for every image name
//! prefix.d/<prefix path>/<fingerprint>     trusted for names equal to or under the prefix
//! ```
//!
//! in two layers: the system (vendor) directory (`/usr/lib/rkt/trustedkeys`) and the local
//! one (`/etc/rkt/trustedkeys`), read in that order so a local file overrides a system file
//! of the same name and an empty local file masks a key. `<fingerprint>` is the certificate's
//! lowercase hex fingerprint; the prefix path is the prefix's `/`-separated components (an
//! appc identifier, which cannot hold `..`). Keys are stored as 0644 files in 0755 dirs.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sequoia_openpgp as openpgp;

use openpgp::cert::CertParser;
use openpgp::parse::Parse;
use openpgp::serialize::SerializeInto;
use openpgp::Cert;

use crate::TrustError;

/// Largest key file read, in bytes.
pub const MAX_KEY_BYTES: u64 = 1 << 20;

/// Where a key is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `root.d`: every image.
    Root,
    /// `prefix.d/<prefix>`: images whose name is the prefix or lies under it.
    Prefix(String),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Root => f.write_str("root (every image)"),
            Scope::Prefix(p) => write!(f, "prefix {p:?}"),
        }
    }
}

/// A certificate trusted for an image name.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// The certificate.
    pub cert: Cert,
    /// Where it is trusted.
    pub scope: Scope,
    /// The file it came from.
    pub path: PathBuf,
}

/// The two layers of trusted keys.
#[derive(Debug, Clone)]
pub struct Keystore {
    /// `<local config>/trustedkeys` (written by `rkt trust`).
    pub local: PathBuf,
    /// `<system config>/trustedkeys` (vendor keys, read only).
    pub system: PathBuf,
}

/// A certificate's file name: its lowercase hex fingerprint.
pub fn fingerprint_name(cert: &Cert) -> String {
    cert.fingerprint().to_hex().to_ascii_lowercase()
}

/// Checks that `prefix` is an appc identifier (`example.com/app`).
pub fn check_prefix(prefix: &str) -> Result<(), TrustError> {
    let ok = appc::AcIdentifier::is_valid(prefix)
        && prefix
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(TrustError::BadPrefix(prefix.to_string()))
    }
}

/// Parses exactly one certificate (armored or binary) from `bytes`; secret key material is
/// dropped.
pub fn parse_cert(bytes: &[u8], origin: &str) -> Result<Cert, TrustError> {
    let bad = |reason: String| TrustError::BadKey {
        origin: origin.to_string(),
        reason,
    };
    let certs: Vec<Cert> = CertParser::from_bytes(bytes)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let mut it = certs.into_iter();
    match (it.next(), it.next()) {
        (Some(c), None) => Ok(c.strip_secret_key_material()),
        (None, _) => Err(bad("no OpenPGP certificate in it".into())),
        (Some(_), Some(_)) => Err(bad(
            "it holds several certificates; trust them one file at a time".into(),
        )),
    }
}

/// Reads at most [`MAX_KEY_BYTES`] of a regular file (symlinks are followed: the keystore is
/// root's configuration, not pod-writable).
fn read_bounded(path: &Path) -> Result<Vec<u8>, TrustError> {
    let f = fs::File::open(path).map_err(TrustError::io("open", path))?;
    let mut buf = Vec::new();
    f.take(MAX_KEY_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(TrustError::io("read", path))?;
    if buf.len() as u64 > MAX_KEY_BYTES {
        return Err(TrustError::BadKey {
            origin: path.display().to_string(),
            reason: format!("larger than {MAX_KEY_BYTES} bytes"),
        });
    }
    Ok(buf)
}

impl Keystore {
    /// The keystore of rkt's `--local-config` (e.g. `/etc/rkt`) and `--system-config`
    /// (e.g. `/usr/lib/rkt`) directories.
    pub fn new(local_config: &Path, system_config: &Path) -> Keystore {
        Keystore {
            local: local_config.join("trustedkeys"),
            system: system_config.join("trustedkeys"),
        }
    }

    /// The local directory keys of `scope` are stored in.
    pub fn local_dir(&self, scope: &Scope) -> PathBuf {
        match scope {
            Scope::Root => self.local.join("root.d"),
            Scope::Prefix(p) => self.local.join("prefix.d").join(p),
        }
    }

    /// Keys trusted for image `name`: root keys, then the keys of each prefix of the name from
    /// the shortest (`example.com`) to the name itself, each level system then local. A file
    /// read later replaces an earlier one of the same name; an empty file removes it.
    pub fn keys_for(&self, name: &str) -> Result<Vec<TrustedKey>, TrustError> {
        let mut found: BTreeMap<String, TrustedKey> = BTreeMap::new();
        let mut levels = vec![(Scope::Root, PathBuf::from("root.d"))];
        let mut prefix = String::new();
        for comp in name.split('/') {
            if comp.is_empty() || comp == "." || comp == ".." {
                return Err(TrustError::BadPrefix(name.to_string()));
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            levels.push((
                Scope::Prefix(prefix.clone()),
                Path::new("prefix.d").join(&prefix),
            ));
        }
        for (scope, rel) in levels {
            for base in [&self.system, &self.local] {
                self.read_level(&base.join(&rel), &scope, &mut found)?;
            }
        }
        Ok(found.into_values().collect())
    }

    fn read_level(
        &self,
        dir: &Path,
        scope: &Scope,
        found: &mut BTreeMap<String, TrustedKey>,
    ) -> Result<(), TrustError> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(TrustError::io("read directory", dir)(e)),
        };
        let mut names = Vec::new();
        for ent in rd {
            let ent = ent.map_err(TrustError::io("read directory", dir))?;
            let ft = ent
                .file_type()
                .map_err(TrustError::io("stat", ent.path()))?;
            if ft.is_dir() {
                continue;
            }
            names.push(ent.file_name());
        }
        names.sort();
        for n in names {
            let Some(name) = n.to_str().map(str::to_string) else {
                continue;
            };
            if name.starts_with('.') {
                continue; // temporary files of write_atomic
            }
            let path = dir.join(&name);
            let bytes = read_bounded(&path)?;
            if bytes.is_empty() {
                found.remove(&name);
                continue;
            }
            let cert = parse_cert(&bytes, &path.display().to_string())?;
            let fpr = fingerprint_name(&cert);
            if fpr != name {
                return Err(TrustError::FingerprintMismatch { path, found: fpr });
            }
            found.insert(
                name,
                TrustedKey {
                    cert,
                    scope: scope.clone(),
                    path,
                },
            );
        }
        Ok(())
    }

    /// Stores `cert` (public parts, armored) as `<local>/<scope dir>/<fingerprint>`
    /// atomically, mode 0644 in 0755 directories; returns the path.
    pub fn store(&self, scope: &Scope, cert: &Cert) -> Result<PathBuf, TrustError> {
        if let Scope::Prefix(p) = scope {
            check_prefix(p)?;
        }
        let dir = self.local_dir(scope);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(TrustError::io("create directory", &dir))?;
        let path = dir.join(fingerprint_name(cert));
        let armored = cert
            .clone()
            .strip_secret_key_material()
            .armored()
            .to_vec()
            .map_err(|e| TrustError::BadKey {
                origin: path.display().to_string(),
                reason: e.to_string(),
            })?;
        pod_abi::podfile::write_atomic(&path, &armored).map_err(TrustError::io("write", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
            .map_err(TrustError::io("chmod", &path))?;
        Ok(path)
    }
}
