//! Network configurations: rkt's `--net` syntax, its built-in `default` and
//! `default-restricted` networks, and named networks from `net.d/` below the local and system
//! config dirs (`*.conf` single plugins, `*.conflist` chains).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::CniError;

/// Name of rkt's default network.
pub const DEFAULT_NET: &str = "default";
/// Name of rkt's restricted default network.
pub const DEFAULT_RESTRICTED_NET: &str = "default-restricted";
/// `netConf` reported for the built-in networks.
pub const BUILTIN_SOURCE: &str = "<builtin>";
/// CNI version of the built-in networks (and the one added plugins speak).
pub const BUILTIN_CNI_VERSION: &str = "0.4.0";
/// Subnet of rkt's default network.
pub const DEFAULT_SUBNET: &str = "172.16.28.0/24";
/// Subnet of rkt's restricted default network.
pub const DEFAULT_RESTRICTED_SUBNET: &str = "172.17.0.0/16";
/// Largest network config file read, in bytes.
pub const CONF_MAX: u64 = 1 << 20;

/// One network requested with `--net`: name and its `CNI_ARGS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetRequest {
    /// Network name.
    pub name: String,
    /// `K=V;K=V` (rkt's `--net=name:K=V;K=V`).
    pub args: String,
}

/// What `--net` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetMode {
    /// `host`: the host's network namespace.
    Host,
    /// `none`: a private namespace with loopback only.
    None,
    /// Private namespace with these networks (eth0, eth1, ... in this order).
    Networks(Vec<NetRequest>),
}

impl NetMode {
    /// Parses rkt's `--net` value: `host`, `none`, or a comma-separated list of
    /// `name[:K=V;K=V]` (empty means `default`).
    pub fn parse(s: &str) -> Result<Self, CniError> {
        let bad = |why: &str| CniError::Usage(format!("--net={s}: {why}"));
        let s = s.trim();
        if s.is_empty() {
            return Ok(NetMode::Networks(vec![NetRequest {
                name: DEFAULT_NET.into(),
                args: String::new(),
            }]));
        }
        let mut nets: Vec<NetRequest> = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, args) = item.split_once(':').unwrap_or((item, ""));
            if !valid_name(name) {
                return Err(bad(&format!("invalid network name {name:?}")));
            }
            for kv in args.split(';').filter(|kv| !kv.is_empty()) {
                let ok = kv.split_once('=').is_some_and(|(k, v)| {
                    !k.is_empty()
                        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        && !v.bytes().any(|b| b == 0 || b == b'\n')
                });
                if !ok {
                    return Err(bad(&format!("invalid argument {kv:?} (want K=V)")));
                }
            }
            if nets.iter().any(|n| n.name == name) {
                return Err(bad(&format!("network {name} given twice")));
            }
            nets.push(NetRequest {
                name: name.to_string(),
                args: args.to_string(),
            });
        }
        match nets.as_slice() {
            [] => Err(bad("empty")),
            [one] if one.name == "host" || one.name == "none" => {
                if !one.args.is_empty() {
                    return Err(bad("host and none take no arguments"));
                }
                Ok(if one.name == "host" {
                    NetMode::Host
                } else {
                    NetMode::None
                })
            }
            many if many.iter().any(|n| n.name == "host" || n.name == "none") => {
                Err(bad("host and none cannot be combined with other networks"))
            }
            _ => Ok(NetMode::Networks(nets)),
        }
    }
}

/// A network name: what a file name and an iptables comment can hold.
pub fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !n.starts_with('.')
}

/// A network: its name, CNI version and plugin chain.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfList {
    /// Network name.
    pub name: String,
    /// `cniVersion`.
    pub cni_version: String,
    /// Plugin configs in chain order (each has `type`).
    pub plugins: Vec<Value>,
    /// Where it came from (file path, or [`BUILTIN_SOURCE`]).
    pub source: String,
}

impl NetConfList {
    /// The main (first) plugin's type.
    pub fn main_type(&self) -> &str {
        self.plugins
            .first()
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// Parses a `.conflist` (`plugins` array) or a single-plugin `.conf`.
    pub fn from_json(b: &[u8], source: &str) -> Result<Self, CniError> {
        let bad = |why: String| CniError::Config {
            source_path: source.to_string(),
            msg: why,
        };
        let v: Value = serde_json::from_slice(b).map_err(|e| bad(e.to_string()))?;
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| valid_name(n))
            .ok_or_else(|| bad("missing or invalid \"name\"".into()))?
            .to_string();
        let cni_version = v
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("0.1.0")
            .to_string();
        let plugins = match v.get("plugins") {
            Some(Value::Array(ps)) => ps.clone(),
            Some(_) => return Err(bad("\"plugins\" is not an array".into())),
            None => vec![v.clone()],
        };
        if plugins.is_empty() {
            return Err(bad("no plugins".into()));
        }
        for p in &plugins {
            let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
            if ty.is_empty() || ty.contains('/') {
                return Err(bad(format!("invalid plugin \"type\" {ty:?}")));
            }
        }
        Ok(NetConfList {
            name,
            cni_version,
            plugins,
            source: source.to_string(),
        })
    }
}

/// rkt's built-in networks. `ipam_data_dir` is host-local's state directory (rkt keeps it
/// under its data dir); `None` leaves host-local's default (`/var/lib/cni/networks`).
pub fn builtin(name: &str, ipam_data_dir: Option<&Path>) -> Option<NetConfList> {
    let mut ipam = match name {
        DEFAULT_NET => json!({
            "type": "host-local",
            "subnet": DEFAULT_SUBNET,
            "routes": [{"dst": "0.0.0.0/0"}],
        }),
        DEFAULT_RESTRICTED_NET => json!({
            "type": "host-local",
            "subnet": DEFAULT_RESTRICTED_SUBNET,
        }),
        _ => return None,
    };
    if let (Some(d), Some(o)) = (ipam_data_dir, ipam.as_object_mut()) {
        o.insert("dataDir".into(), json!(d.display().to_string()));
    }
    let plugin = json!({
        "type": "ptp",
        "ipMasq": name == DEFAULT_NET,
        "ipam": ipam,
    });
    Some(NetConfList {
        name: name.to_string(),
        cni_version: BUILTIN_CNI_VERSION.into(),
        plugins: vec![plugin],
        source: BUILTIN_SOURCE.into(),
    })
}

/// The `net.d` directories searched, highest precedence first.
pub fn net_dirs(local_config: &Path, system_config: &Path) -> Vec<PathBuf> {
    vec![local_config.join("net.d"), system_config.join("net.d")]
}

/// Reads every network in `dirs` (`*.conf`, `*.conflist`, `*.json`, in name order per dir; the
/// first definition of a name wins). Unreadable or malformed files are errors only for the
/// networks that are asked for, so they are returned as `Err` entries keyed by file.
pub fn load_dir_networks(dirs: &[PathBuf]) -> Vec<Result<NetConfList, CniError>> {
    let mut out = Vec::new();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conf" | "conflist" | "json")
                )
            })
            .collect();
        files.sort();
        for f in files {
            out.push(read_conf(&f));
        }
    }
    out
}

fn read_conf(f: &Path) -> Result<NetConfList, CniError> {
    use std::io::Read;
    let src = f.display().to_string();
    let mut b = Vec::new();
    let file = std::fs::File::open(f).map_err(|e| CniError::Config {
        source_path: src.clone(),
        msg: e.to_string(),
    })?;
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(CniError::Config {
            source_path: src,
            msg: "not a regular file".into(),
        });
    }
    file.take(CONF_MAX + 1)
        .read_to_end(&mut b)
        .map_err(|e| CniError::Config {
            source_path: src.clone(),
            msg: e.to_string(),
        })?;
    if b.len() as u64 > CONF_MAX {
        return Err(CniError::Config {
            source_path: src,
            msg: format!("larger than {CONF_MAX} bytes"),
        });
    }
    NetConfList::from_json(&b, &src)
}

/// Resolves the requested networks: a `net.d` network of that name first (so `default` can be
/// overridden, as in rkt), then the built-ins.
pub fn resolve(
    reqs: &[NetRequest],
    dirs: &[PathBuf],
    ipam_data_dir: Option<&Path>,
) -> Result<Vec<NetConfList>, CniError> {
    let loaded = load_dir_networks(dirs);
    let mut out = Vec::new();
    for r in reqs {
        let found = loaded.iter().find_map(|c| match c {
            Ok(c) if c.name == r.name => Some(Ok(c.clone())),
            // A broken file named like the network: report it.
            Err(CniError::Config { source_path, msg })
                if Path::new(source_path)
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(|s| {
                        s.trim_start_matches(|c: char| c.is_ascii_digit() || c == '-') == r.name
                    }) =>
            {
                Some(Err(CniError::Config {
                    source_path: source_path.clone(),
                    msg: msg.clone(),
                }))
            }
            _ => None,
        });
        match found {
            Some(c) => out.push(c?),
            None => out.push(
                builtin(&r.name, ipam_data_dir)
                    .ok_or_else(|| CniError::UnknownNetwork(r.name.clone()))?,
            ),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn net_flag() {
        assert_eq!(NetMode::parse("host").unwrap(), NetMode::Host);
        assert_eq!(NetMode::parse("none").unwrap(), NetMode::None);
        let NetMode::Networks(n) = NetMode::parse("default,foo:IP=10.1.1.5;K=V").unwrap() else {
            panic!()
        };
        assert_eq!(n[0].name, "default");
        assert_eq!(n[1].name, "foo");
        assert_eq!(n[1].args, "IP=10.1.1.5;K=V");
        assert_eq!(
            NetMode::parse("").unwrap(),
            NetMode::Networks(vec![NetRequest {
                name: "default".into(),
                args: String::new()
            }])
        );
        for bad in [
            "host,default",
            "none:X=1",
            "a,a",
            "../x",
            "foo:novalue",
            "foo:=v",
            ",",
        ] {
            assert!(NetMode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn builtins_are_rkts() {
        let d = builtin("default", None).unwrap();
        assert_eq!(d.main_type(), "ptp");
        assert_eq!(d.plugins[0]["ipMasq"], true);
        assert_eq!(d.plugins[0]["ipam"]["subnet"], DEFAULT_SUBNET);
        assert_eq!(d.plugins[0]["ipam"]["routes"][0]["dst"], "0.0.0.0/0");
        let r = builtin("default-restricted", Some(Path::new("/d"))).unwrap();
        assert_eq!(r.plugins[0]["ipMasq"], false);
        assert_eq!(r.plugins[0]["ipam"]["subnet"], DEFAULT_RESTRICTED_SUBNET);
        assert!(r.plugins[0]["ipam"].get("routes").is_none());
        assert_eq!(r.plugins[0]["ipam"]["dataDir"], "/d");
        assert!(builtin("other", None).is_none());
    }

    #[test]
    fn net_d_loading_and_precedence() {
        let local = tempfile::tempdir().unwrap();
        let system = tempfile::tempdir().unwrap();
        let ln = local.path().join("net.d");
        let sn = system.path().join("net.d");
        std::fs::create_dir_all(&ln).unwrap();
        std::fs::create_dir_all(&sn).unwrap();
        std::fs::write(
            ln.join("10-br.conf"),
            r#"{"cniVersion":"0.3.1","name":"br","type":"bridge","ipam":{"type":"host-local","subnet":"10.5.0.0/16"}}"#,
        )
        .unwrap();
        std::fs::write(sn.join("10-br.conf"), r#"{"name":"br","type":"macvlan"}"#).unwrap();
        std::fs::write(
            sn.join("20-chain.conflist"),
            r#"{"cniVersion":"1.0.0","name":"chain","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        std::fs::write(sn.join("30-broken.conf"), "{nope").unwrap();
        std::fs::write(
            sn.join("default.conf"),
            r#"{"name":"default","type":"bridge"}"#,
        )
        .unwrap();
        let dirs = net_dirs(local.path(), system.path());
        let req = |n: &str| NetRequest {
            name: n.into(),
            args: String::new(),
        };
        let r = resolve(
            &[req("br"), req("chain"), req("default-restricted")],
            &dirs,
            None,
        )
        .unwrap();
        assert_eq!(r[0].main_type(), "bridge");
        assert_eq!(r[0].cni_version, "0.3.1");
        assert_eq!(r[1].plugins.len(), 2);
        assert_eq!(r[2].source, BUILTIN_SOURCE);
        // net.d may override the built-in default.
        assert_eq!(
            resolve(&[req("default")], &dirs, None).unwrap()[0].main_type(),
            "bridge"
        );
        let e = resolve(&[req("broken")], &dirs, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("30-broken.conf"), "{e}");
        let e = resolve(&[req("nosuch")], &dirs, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nosuch"), "{e}");
    }

    #[test]
    fn conf_validation() {
        assert!(NetConfList::from_json(br#"{"type":"ptp"}"#, "x").is_err());
        assert!(NetConfList::from_json(br#"{"name":"a","type":"../../bin/sh"}"#, "x").is_err());
        assert!(NetConfList::from_json(br#"{"name":"a","plugins":[]}"#, "x").is_err());
        assert!(NetConfList::from_json(br#"{"name":"a","plugins":{}}"#, "x").is_err());
        assert!(NetConfList::from_json(br#"{"name":"a b","type":"ptp"}"#, "x").is_err());
    }
}
