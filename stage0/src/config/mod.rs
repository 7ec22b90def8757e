//! rkt's stage0 configuration: JSON files of kind `auth`/`dockerAuth` (`auth.d`), `paths`
//! (`paths.d`) and `stage1` (`stage1.d`), read from the system directory (`--system-config`,
//! `/usr/lib/rkt`), then the local one (`--local-config`, `/etc/rkt`), then the user one
//! (`--user-config`); a later directory overrides an earlier one per domain, registry or
//! setting. Files are `*.json` regular files directly in a kind's directory (symlinks and
//! subdirectories are skipped, as rkt did), read in name order, each at most
//! [`MAX_CONFIG_BYTES`]. A malformed file is an error naming it.
//!
//! `rkt config` prints the merged result as rkt 1.30 did: `{"stage0": [auth entries,
//! dockerAuth entries, paths, stage1]}`. `auth` credentials become an `Authorization`
//! header for requests whose host is one of the entry's domains ([`Config::authorization`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

/// Largest configuration file read, in bytes.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The subdirectories of a configuration directory and the kinds each may hold.
const SUBDIRS: [(&str, &[&str]); 3] = [
    ("auth.d", &["auth", "dockerAuth"]),
    ("paths.d", &["paths"]),
    ("stage1.d", &["stage1"]),
];

/// Errors of reading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or directory cannot be read.
    #[error("cannot read configuration {0}")]
    Io(PathBuf, #[source] std::io::Error),
    /// A file is malformed or invalid.
    #[error("invalid configuration file {0}: {1}")]
    Invalid(PathBuf, String),
}

/// Credentials for one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// HTTP basic authentication.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// OAuth bearer token.
    OAuth {
        /// The token.
        token: String,
    },
}

impl Auth {
    /// The value of the `Authorization` header.
    pub fn header(&self) -> String {
        match self {
            Auth::Basic { user, password } => {
                format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
            }
            Auth::OAuth { token } => format!("Bearer {token}"),
        }
    }
}

/// User and password (`dockerAuth`, and `auth` of type `basic`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct BasicCredentials {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

/// The merged configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// `auth` entries per domain (`host` or `host:port`, lower case).
    pub auth: BTreeMap<String, Auth>,
    /// `dockerAuth` entries per registry.
    pub docker_auth: BTreeMap<String, BasicCredentials>,
    /// `paths.data`: the data directory used when `--dir` is not given.
    pub data_dir: Option<String>,
    /// `paths.stage1-images`: where `stage1-<flavor>.aci` files are looked up.
    pub stage1_images_dir: Option<String>,
    /// `stage1.name` and `stage1.version`: the default stage1 image by name.
    pub stage1_name: Option<(String, String)>,
    /// `stage1.location`: the default stage1 image file or URL.
    pub stage1_location: Option<String>,
}

/// The header every configuration file starts with.
#[derive(Deserialize)]
struct Header {
    #[serde(rename = "rktKind", default)]
    kind: String,
    #[serde(rename = "rktVersion", default)]
    version: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthV1 {
    #[serde(rename = "rktKind")]
    _kind: String,
    #[serde(rename = "rktVersion")]
    _version: String,
    domains: Vec<String>,
    #[serde(rename = "type")]
    typ: String,
    credentials: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DockerAuthV1 {
    #[serde(rename = "rktKind")]
    _kind: String,
    #[serde(rename = "rktVersion")]
    _version: String,
    registries: Vec<String>,
    credentials: BasicCredentials,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PathsV1 {
    #[serde(rename = "rktKind")]
    _kind: String,
    #[serde(rename = "rktVersion")]
    _version: String,
    #[serde(default)]
    data: String,
    #[serde(rename = "stage1-images", default)]
    stage1_images: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Stage1V1 {
    #[serde(rename = "rktKind")]
    _kind: String,
    #[serde(rename = "rktVersion")]
    _version: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    location: String,
}

impl Config {
    /// Reads and merges the configuration directories in order (missing ones are skipped).
    pub fn load(dirs: &[&Path]) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        for d in dirs {
            c.merge(Config::load_dir(d)?);
        }
        Ok(c)
    }

    /// Reads one configuration directory.
    pub fn load_dir(dir: &Path) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        for (sub, kinds) in SUBDIRS {
            let d = dir.join(sub);
            let rd = match std::fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ConfigError::Io(d, e)),
            };
            let mut files: Vec<PathBuf> = rd
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            for f in files {
                let raw = crate::util::read_bounded(&f, MAX_CONFIG_BYTES)
                    .map_err(|e| ConfigError::Io(f.clone(), e))?;
                c.parse_file(&f, &raw, kinds)
                    .map_err(|e| ConfigError::Invalid(f.clone(), e))?;
            }
        }
        Ok(c)
    }

    /// Adds one file's settings; a domain, registry or setting given twice in the same
    /// directory is an error (as in rkt).
    fn parse_file(&mut self, path: &Path, raw: &[u8], kinds: &[&str]) -> Result<(), String> {
        let h: Header = serde_json::from_slice(raw).map_err(|e| e.to_string())?;
        if h.kind.is_empty() {
            return Err("no rktKind specified".into());
        }
        if h.version.is_empty() {
            return Err("no rktVersion specified".into());
        }
        if !kinds.contains(&h.kind.as_str()) {
            let dir = path.parent().unwrap_or(path).display();
            return Err(format!(
                "the configuration directory {dir} holds files of kind {}, not {:?}",
                kinds.join(" or "),
                h.kind
            ));
        }
        if h.version != "v1" {
            return Err(format!(
                "no parser for kind {:?} version {:?}",
                h.kind, h.version
            ));
        }
        let bad = |e: serde_json::Error| e.to_string();
        match h.kind.as_str() {
            "auth" => {
                let a: AuthV1 = serde_json::from_slice(raw).map_err(bad)?;
                let cred = |k: &str| -> Result<String, String> {
                    match a.credentials.get(k).and_then(Value::as_str) {
                        Some(v) if !v.is_empty() => Ok(v.to_string()),
                        _ => Err(format!("credentials need a non-empty {k:?}")),
                    }
                };
                let auth = match a.typ.as_str() {
                    "basic" => Auth::Basic {
                        user: cred("user")?,
                        password: cred("password")?,
                    },
                    "oauth" => Auth::OAuth {
                        token: cred("token")?,
                    },
                    t => return Err(format!("unknown auth type {t:?} (want basic or oauth)")),
                };
                if a.domains.is_empty() {
                    return Err("no domains specified".into());
                }
                for d in a.domains {
                    let d = d.to_ascii_lowercase();
                    if d.is_empty() || d.contains(['/', ' ']) {
                        return Err(format!("invalid domain {d:?}"));
                    }
                    if self.auth.insert(d.clone(), auth.clone()).is_some() {
                        return Err(format!("auth for domain {d:?} is already specified"));
                    }
                }
            }
            "dockerAuth" => {
                let a: DockerAuthV1 = serde_json::from_slice(raw).map_err(bad)?;
                if a.registries.is_empty() {
                    return Err("no registries specified".into());
                }
                if a.credentials.user.is_empty() || a.credentials.password.is_empty() {
                    return Err("credentials need a non-empty user and password".into());
                }
                for r in a.registries {
                    if self
                        .docker_auth
                        .insert(r.clone(), a.credentials.clone())
                        .is_some()
                    {
                        return Err(format!("auth for registry {r:?} is already specified"));
                    }
                }
            }
            "paths" => {
                let p: PathsV1 = serde_json::from_slice(raw).map_err(bad)?;
                for (v, slot, what) in [
                    (p.data, &mut self.data_dir, "data"),
                    (
                        p.stage1_images,
                        &mut self.stage1_images_dir,
                        "stage1-images",
                    ),
                ] {
                    if v.is_empty() {
                        continue;
                    }
                    if !v.starts_with('/') {
                        return Err(format!("{what} must be an absolute path, got {v:?}"));
                    }
                    if slot.replace(v).is_some() {
                        return Err(format!("{what} directory is already specified"));
                    }
                }
            }
            _ => {
                let s: Stage1V1 = serde_json::from_slice(raw).map_err(bad)?;
                if s.name.is_empty() != s.version.is_empty() {
                    return Err("stage1 name and version go together".into());
                }
                if !s.name.is_empty() && self.stage1_name.replace((s.name, s.version)).is_some() {
                    return Err("default stage1 image name is already specified".into());
                }
                if !s.location.is_empty() && self.stage1_location.replace(s.location).is_some() {
                    return Err("default stage1 image location is already specified".into());
                }
            }
        }
        Ok(())
    }

    /// Overrides this configuration with `later`'s settings.
    pub fn merge(&mut self, later: Config) {
        self.auth.extend(later.auth);
        self.docker_auth.extend(later.docker_auth);
        if later.data_dir.is_some() {
            self.data_dir = later.data_dir;
        }
        if later.stage1_images_dir.is_some() {
            self.stage1_images_dir = later.stage1_images_dir;
        }
        if later.stage1_name.is_some() {
            self.stage1_name = later.stage1_name;
        }
        if later.stage1_location.is_some() {
            self.stage1_location = later.stage1_location;
        }
    }

    /// The `Authorization` header value for a request to `url`, when an `auth` entry names
    /// its host (`host` or `host:port`).
    pub fn authorization(&self, url: &str) -> Option<String> {
        let u = reqwest::Url::parse(url).ok()?;
        let host = u.host_str()?.to_ascii_lowercase();
        let with_port = u.port().map(|p| format!("{host}:{p}"));
        with_port
            .and_then(|hp| self.auth.get(&hp))
            .or_else(|| self.auth.get(&host))
            .map(Auth::header)
    }

    /// The `Authorization` value (`Basic`) of the `dockerAuth` entry for `registry`
    /// (`host[:port]`; Docker Hub under any of its names).
    pub fn docker_authorization(&self, registry: &str) -> Option<String> {
        let hub = ["docker.io", "index.docker.io", "registry-1.docker.io"];
        let names: Vec<&str> = if hub.contains(&registry) {
            hub.to_vec()
        } else {
            vec![registry]
        };
        names
            .iter()
            .find_map(|n| {
                self.docker_auth
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(n))
                    .map(|(_, c)| c)
            })
            .map(|c| {
                Auth::Basic {
                    user: c.user.clone(),
                    password: c.password.clone(),
                }
                .header()
            })
    }

    /// Whether `dockerAuth` gives `other` (`host[:port]`) the same credentials as `registry`
    /// (one entry listing both, as a registry and its token service).
    pub fn docker_auth_shared(&self, registry: &str, other: &str) -> bool {
        let creds = |n: &str| {
            self.docker_auth
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, c)| c)
        };
        let hub = ["docker.io", "index.docker.io", "registry-1.docker.io"];
        let mine = if hub.contains(&registry) {
            hub.iter().find_map(|n| creds(n))
        } else {
            creds(registry)
        };
        mine.is_some() && mine == creds(other)
    }

    /// The output of `rkt config`: `data_dir` and `stage1` are the effective values.
    pub fn to_json(&self, data_dir: &str, stage1_default_location: &str) -> Value {
        let mut stage0: Vec<Value> = Vec::new();
        for (domain, a) in &self.auth {
            let (typ, cred) = match a {
                Auth::Basic { user, password } => {
                    ("basic", json!({"user": user, "password": password}))
                }
                Auth::OAuth { token } => ("oauth", json!({"token": token})),
            };
            stage0.push(json!({
                "rktVersion": "v1", "rktKind": "auth", "domains": [domain],
                "type": typ, "credentials": cred,
            }));
        }
        for (registry, c) in &self.docker_auth {
            stage0.push(json!({
                "rktVersion": "v1", "rktKind": "dockerAuth", "registries": [registry],
                "credentials": c,
            }));
        }
        stage0.push(json!({
            "rktVersion": "v1", "rktKind": "paths", "data": data_dir,
            "stage1-images": self.stage1_images_dir.clone().unwrap_or_default(),
        }));
        let (name, version) = self.stage1_name.clone().unwrap_or_default();
        stage0.push(json!({
            "rktVersion": "v1", "rktKind": "stage1", "name": name, "version": version,
            "location": self.stage1_location.clone().unwrap_or_else(|| stage1_default_location.to_string()),
        }));
        json!({ "stage0": stage0 })
    }
}

/// Standard base64 with padding (RFC 4648), for basic credentials.
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let idx = ((n >> (18 - 6 * i)) & 63) as usize;
                out.push(char::from(T.get(idx).copied().unwrap_or(b'=')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn put(dir: &Path, sub: &str, name: &str, body: &str) {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        std::fs::write(dir.join(sub).join(name), body).unwrap();
    }

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn later_directories_override_earlier_ones() {
        let t = tempfile::tempdir().unwrap();
        let (sys, local) = (t.path().join("sys"), t.path().join("local"));
        put(
            &sys,
            "auth.d",
            "a.json",
            r#"{"rktKind":"auth","rktVersion":"v1","domains":["example.com","other.org"],
                "type":"basic","credentials":{"user":"u","password":"p"}}"#,
        );
        put(
            &sys,
            "paths.d",
            "p.json",
            r#"{"rktKind":"paths","rktVersion":"v1","data":"/sys/data","stage1-images":"/s1"}"#,
        );
        put(
            &sys,
            "stage1.d",
            "s.json",
            r#"{"rktKind":"stage1","rktVersion":"v1","name":"example.com/s1","version":"1","location":"/s1.aci"}"#,
        );
        put(
            &local,
            "auth.d",
            "b.json",
            r#"{"rktKind":"auth","rktVersion":"v1","domains":["EXAMPLE.com"],"type":"oauth","credentials":{"token":"tok"}}"#,
        );
        put(
            &local,
            "auth.d",
            "d.json",
            r#"{"rktKind":"dockerAuth","rktVersion":"v1","registries":["index.docker.io"],"credentials":{"user":"du","password":"dp"}}"#,
        );
        put(
            &local,
            "paths.d",
            "p.json",
            r#"{"rktKind":"paths","rktVersion":"v1","data":"/local/data"}"#,
        );
        put(&local, "auth.d", "ignored.txt", "not json");
        let c = Config::load(&[&sys, &local, &t.path().join("missing")]).unwrap();
        assert_eq!(
            c.authorization("https://example.com/x.aci").as_deref(),
            Some("Bearer tok")
        );
        assert_eq!(
            c.authorization("http://other.org:8080/x").as_deref(),
            Some("Basic dTpw")
        );
        assert_eq!(c.authorization("https://evil.example.com/x"), None);
        assert_eq!(c.data_dir.as_deref(), Some("/local/data"));
        assert_eq!(c.stage1_images_dir.as_deref(), Some("/s1"));
        let v = c.to_json("/local/data", "");
        let kinds: Vec<&str> = v["stage0"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["rktKind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["auth", "auth", "dockerAuth", "paths", "stage1"]);
        assert_eq!(v["stage0"][3]["data"], "/local/data");
        assert_eq!(v["stage0"][4]["location"], "/s1.aci");
        assert_eq!(v["stage0"][0]["credentials"]["token"], "tok");
    }

    #[test]
    fn malformed_files_are_errors_naming_the_file() {
        let cases = [
            ("auth.d", "{not json"),
            ("auth.d", r#"{"rktVersion":"v1"}"#),
            ("auth.d", r#"{"rktKind":"auth"}"#),
            (
                "auth.d",
                r#"{"rktKind":"paths","rktVersion":"v1","data":"/d"}"#,
            ),
            ("auth.d", r#"{"rktKind":"auth","rktVersion":"v2"}"#),
            (
                "auth.d",
                r#"{"rktKind":"auth","rktVersion":"v1","domains":["a"],"type":"digest","credentials":{}}"#,
            ),
            (
                "auth.d",
                r#"{"rktKind":"auth","rktVersion":"v1","domains":["a"],"type":"basic","credentials":{"user":"u"}}"#,
            ),
            (
                "auth.d",
                r#"{"rktKind":"auth","rktVersion":"v1","domains":[],"type":"oauth","credentials":{"token":"t"}}"#,
            ),
            (
                "paths.d",
                r#"{"rktKind":"paths","rktVersion":"v1","data":"rel"}"#,
            ),
            (
                "paths.d",
                r#"{"rktKind":"paths","rktVersion":"v1","bogus":1}"#,
            ),
            (
                "stage1.d",
                r#"{"rktKind":"stage1","rktVersion":"v1","name":"n"}"#,
            ),
        ];
        for (sub, body) in cases {
            let t = tempfile::tempdir().unwrap();
            put(t.path(), sub, "bad.json", body);
            let e = Config::load(&[t.path()]).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("bad.json"), "{body}: {msg}");
        }
        // The same domain twice in one directory.
        let t = tempfile::tempdir().unwrap();
        let a = r#"{"rktKind":"auth","rktVersion":"v1","domains":["a.com"],"type":"oauth","credentials":{"token":"t"}}"#;
        put(t.path(), "auth.d", "1.json", a);
        put(t.path(), "auth.d", "2.json", a);
        assert!(Config::load(&[t.path()])
            .unwrap_err()
            .to_string()
            .contains("already specified"));
    }
}
