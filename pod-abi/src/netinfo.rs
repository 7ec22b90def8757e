//! The pod's networks as stage1 set them up: `net-info.json` in the pod directory (rkt's
//! `networking/netinfo` shape, read by `rkt status`/`rkt list` and by the stage1 `gc`), and the
//! path of the pod's persistent network namespace (`netns` in the pod directory).
//!
//! stage1 writes both atomically (`podfile::write_atomic`) under the pod lock; the host reads
//! them with `podfile::read_beneath` and [`NET_INFO_MAX`].

use serde::{Deserialize, Serialize};

/// File in the pod directory: a JSON array of [`NetInfo`], one per network, in attach order.
pub const NET_INFO_FILE: &str = "net-info.json";
/// File in the pod directory: the absolute path of the pod's network namespace bind mount
/// (one line), written before the first plugin runs.
pub const NETNS_FILE: &str = "netns";
/// Where stage1 persists pod network namespaces (`rkt-<uuid>` below it), as rkt and
/// `ip netns` do.
pub const NETNS_DIR: &str = "/var/run/netns";
/// Largest `net-info.json` the host reads, in bytes.
pub const NET_INFO_MAX: usize = 1 << 20;

/// One network of the pod (rkt 1.30's `NetInfo`; the JSON keys are rkt's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetInfo {
    /// Network name (`default`, `default-restricted`, or a `net.d` name).
    #[serde(rename = "netName")]
    pub net_name: String,
    /// The configuration file the network came from (`<builtin>` for rkt's built-ins).
    #[serde(rename = "netConf")]
    pub net_conf: String,
    /// The main plugin's path.
    #[serde(rename = "pluginPath")]
    pub plugin_path: String,
    /// Interface inside the pod (`eth0`, `eth1`, ...).
    #[serde(rename = "ifName")]
    pub if_name: String,
    /// The pod's IPv4 (or first) address, without prefix; empty until the plugin answered.
    #[serde(default)]
    pub ip: String,
    /// Per-network arguments (`CNI_ARGS`, `K=V;K=V`).
    #[serde(default)]
    pub args: String,
    /// Netmask of `ip` in dotted form (`255.255.255.0`).
    #[serde(default)]
    pub mask: String,
    /// The host side's address on this network (ptp/bridge gateway), if any.
    #[serde(rename = "hostIP", default)]
    pub host_ip: String,
    /// rkt's `IP4`: address with prefix, gateway and routes.
    #[serde(rename = "IP4", default)]
    pub ip4: Option<Ip4Config>,
    /// DNS settings the plugin returned.
    #[serde(rename = "DNS", default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsInfo>,
    /// What the stage1 `gc` needs to run `DEL`: the network's CNI version and plugin chain as
    /// executed (names, `prevResult` excluded). Not part of rkt's output (`rkt status` omits it).
    #[serde(rename = "rktRsConf", default, skip_serializing_if = "Option::is_none")]
    pub conf: Option<serde_json::Value>,
}

/// IPv4 configuration (CNI 0.2's `ip4` object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ip4Config {
    /// Address with prefix length (`172.16.28.2/24`).
    pub ip: String,
    /// Gateway, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// Routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteInfo>,
}

/// One route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteInfo {
    /// Destination with prefix length.
    pub dst: String,
    /// Next hop, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gw: String,
}

/// DNS settings (CNI's `dns` object).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsInfo {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolv.conf options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// Error reading `net-info.json`.
#[derive(Debug, thiserror::Error)]
pub enum NetInfoError {
    /// The file could not be read safely.
    #[error("cannot read {NET_INFO_FILE}")]
    PodFile(#[from] crate::podfile::PodFileError),
    /// JSON syntax or shape.
    #[error("malformed {NET_INFO_FILE}")]
    Json(#[from] serde_json::Error),
}

impl NetInfo {
    /// This entry as `rkt status --format=json` prints it (without [`NetInfo::conf`]).
    pub fn public(&self) -> NetInfo {
        NetInfo {
            conf: None,
            ..self.clone()
        }
    }
}

/// Parses `net-info.json`.
pub fn from_json(b: &[u8]) -> Result<Vec<NetInfo>, serde_json::Error> {
    serde_json::from_slice(b)
}

/// Reads the pod's `net-info.json` (bounded, no symlinks); `Ok(None)` when the pod has none.
pub fn read(pod_dir: &std::path::Path) -> Result<Option<Vec<NetInfo>>, NetInfoError> {
    match crate::podfile::read_beneath(pod_dir, std::path::Path::new(NET_INFO_FILE), NET_INFO_MAX) {
        Ok(b) => Ok(Some(from_json(&b)?)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Writes the pod's `net-info.json` atomically.
pub fn write(pod_dir: &std::path::Path, nets: &[NetInfo]) -> std::io::Result<()> {
    let b = serde_json::to_vec_pretty(nets).map_err(std::io::Error::other)?;
    crate::podfile::write_atomic(&pod_dir.join(NET_INFO_FILE), &b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rkt_keys_and_round_trip() {
        let n = NetInfo {
            net_name: "default".into(),
            net_conf: "<builtin>".into(),
            plugin_path: "/usr/lib/cni/ptp".into(),
            if_name: "eth0".into(),
            ip: "172.16.28.2".into(),
            mask: "255.255.255.0".into(),
            host_ip: "172.16.28.1".into(),
            ip4: Some(Ip4Config {
                ip: "172.16.28.2/24".into(),
                gateway: "172.16.28.1".into(),
                routes: vec![],
            }),
            conf: Some(serde_json::json!({"x": 1})),
            ..Default::default()
        };
        let d = tempfile::tempdir().unwrap();
        write(d.path(), std::slice::from_ref(&n)).unwrap();
        assert_eq!(read(d.path()).unwrap().unwrap(), vec![n.clone()]);
        let v = serde_json::to_value(n.public()).unwrap();
        for k in [
            "netName",
            "netConf",
            "pluginPath",
            "ifName",
            "ip",
            "args",
            "mask",
            "hostIP",
            "IP4",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert!(v.get("rktRsConf").is_none());
    }

    #[test]
    fn missing_is_none() {
        let d = tempfile::tempdir().unwrap();
        assert!(read(d.path()).unwrap().is_none());
    }
}
