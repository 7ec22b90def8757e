//! CNI results (0.1/0.2 `ip4`/`ip6`, 0.3/0.4/1.0 `interfaces`/`ips`/`routes`), parsed into one
//! shape. Unknown fields are ignored; malformed addresses are errors.

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

/// An interface of the result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Interface {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// MAC address.
    #[serde(default)]
    pub mac: String,
    /// The netns path when the interface is inside the pod; empty on the host side.
    #[serde(default)]
    pub sandbox: String,
}

/// An address of the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
    /// Gateway.
    pub gateway: Option<IpAddr>,
    /// Index into [`CniResult::interfaces`].
    pub interface: Option<usize>,
}

/// A route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination network.
    pub dst: String,
    /// Next hop.
    pub gw: Option<IpAddr>,
}

/// DNS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Domain.
    #[serde(default)]
    pub domain: String,
    /// Search list.
    #[serde(default)]
    pub search: Vec<String>,
    /// Options.
    #[serde(default)]
    pub options: Vec<String>,
}

/// A plugin's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    /// `cniVersion` of the result.
    pub cni_version: String,
    /// Interfaces (0.3+).
    pub interfaces: Vec<Interface>,
    /// Addresses.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<Route>,
    /// DNS.
    pub dns: Dns,
    /// The result as the plugin printed it (passed on as `prevResult`).
    pub raw: Value,
}

/// A result that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    /// Not JSON, or the wrong shape.
    #[error("invalid result JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// An address or prefix that does not parse.
    #[error("invalid address {0:?} in the result")]
    Address(String),
}

/// `a.b.c.d/n` or `x::y/n`.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), ResultError> {
    let bad = || ResultError::Address(s.chars().take(64).collect());
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = a.parse().map_err(|_| bad())?;
    let prefix: u8 = p.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok((addr, prefix))
}

fn opt_ip(s: &Option<String>) -> Result<Option<IpAddr>, ResultError> {
    match s.as_deref() {
        None | Some("") => Ok(None),
        Some(g) => g
            .parse()
            .map(Some)
            .map_err(|_| ResultError::Address(g.chars().take(64).collect())),
    }
}

#[derive(Deserialize)]
struct RawRoute {
    dst: String,
    #[serde(default)]
    gw: Option<String>,
}

#[derive(Deserialize)]
struct RawIp {
    address: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Deserialize)]
struct RawOld {
    ip: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<RawIp>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    dns: Dns,
    #[serde(default)]
    ip4: Option<RawOld>,
    #[serde(default)]
    ip6: Option<RawOld>,
}

fn route(r: RawRoute) -> Result<Route, ResultError> {
    parse_cidr(&r.dst)?;
    Ok(Route {
        gw: opt_ip(&r.gw)?,
        dst: r.dst,
    })
}

impl CniResult {
    /// Parses a result of any supported version.
    pub fn parse(b: &[u8]) -> Result<Self, ResultError> {
        let raw: Value = serde_json::from_slice(b)?;
        let r: Raw = serde_json::from_value(raw.clone())?;
        let mut out = CniResult {
            cni_version: r.cni_version,
            interfaces: r.interfaces,
            dns: r.dns,
            raw,
            ..Default::default()
        };
        for ip in r.ips {
            let (addr, prefix) = parse_cidr(&ip.address)?;
            out.ips.push(IpConfig {
                addr,
                prefix,
                gateway: opt_ip(&ip.gateway)?,
                interface: ip.interface,
            });
        }
        for r in r.routes {
            out.routes.push(route(r)?);
        }
        for old in [r.ip4, r.ip6].into_iter().flatten() {
            let (addr, prefix) = parse_cidr(&old.ip)?;
            out.ips.push(IpConfig {
                addr,
                prefix,
                gateway: opt_ip(&old.gateway)?,
                interface: None,
            });
            for r in old.routes {
                out.routes.push(route(r)?);
            }
        }
        Ok(out)
    }

    /// The pod-side address to report: the first IPv4 on an interface inside the pod (or
    /// without interface), else the first address.
    pub fn pod_ip(&self) -> Option<&IpConfig> {
        let in_pod = |ip: &&IpConfig| match ip.interface {
            None => true,
            Some(i) => self
                .interfaces
                .get(i)
                .is_none_or(|itf| !itf.sandbox.is_empty()),
        };
        self.ips
            .iter()
            .filter(in_pod)
            .find(|ip| ip.addr.is_ipv4())
            .or_else(|| self.ips.iter().find(in_pod))
    }
}

/// Dotted netmask of an IPv4 prefix length (`24` → `255.255.255.0`); IPv6 as an address.
pub fn netmask(v4: bool, prefix: u8) -> String {
    if v4 {
        let m = u32::MAX
            .checked_shl(32 - u32::from(prefix.min(32)))
            .unwrap_or(0);
        std::net::Ipv4Addr::from(m).to_string()
    } else {
        let m = u128::MAX
            .checked_shl(128 - u32::from(prefix.min(128)))
            .unwrap_or(0);
        std::net::Ipv6Addr::from(m).to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn v1_0_result() {
        let r = CniResult::parse(
            br#"{"cniVersion":"1.0.0","interfaces":[{"name":"veth1","mac":"aa:bb:cc:dd:ee:ff"},
            {"name":"eth0","mac":"11:22:33:44:55:66","sandbox":"/var/run/netns/x"}],
            "ips":[{"address":"172.16.28.5/24","gateway":"172.16.28.1","interface":1}],
            "routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["9.9.9.9"]},"extra":1}"#,
        )
        .unwrap();
        let ip = r.pod_ip().unwrap();
        assert_eq!(ip.addr.to_string(), "172.16.28.5");
        assert_eq!(ip.prefix, 24);
        assert_eq!(ip.gateway.unwrap().to_string(), "172.16.28.1");
        assert_eq!(r.routes[0].dst, "0.0.0.0/0");
        assert_eq!(r.dns.nameservers, vec!["9.9.9.9"]);
    }

    #[test]
    fn v0_3_and_v0_4_versioned_ips() {
        let r = CniResult::parse(
            br#"{"cniVersion":"0.3.1","interfaces":[{"name":"eth0","sandbox":"/n"}],
            "ips":[{"version":"6","address":"fd00::2/64","interface":0},
                   {"version":"4","address":"10.0.0.2/16","interface":0}]}"#,
        )
        .unwrap();
        assert_eq!(r.pod_ip().unwrap().addr.to_string(), "10.0.0.2");
    }

    #[test]
    fn v0_2_ip4() {
        let r = CniResult::parse(
            br#"{"cniVersion":"0.2.0","ip4":{"ip":"10.1.1.5/8","gateway":"10.0.0.1",
            "routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1"}]},"dns":{}}"#,
        )
        .unwrap();
        assert_eq!(r.pod_ip().unwrap().addr.to_string(), "10.1.1.5");
        assert_eq!(r.routes[0].gw.unwrap().to_string(), "10.0.0.1");
    }

    #[test]
    fn hostile_results() {
        for b in [
            &b"not json"[..],
            br#"{"ips":[{"address":"300.1.1.1/24"}]}"#,
            br#"{"ips":[{"address":"10.0.0.1/33"}]}"#,
            br#"{"ips":[{"address":"10.0.0.1"}]}"#,
            br#"{"ips":"x"}"#,
            br#"{"routes":[{"dst":"nope"}]}"#,
            br#"[1,2]"#,
        ] {
            assert!(
                CniResult::parse(b).is_err(),
                "{}",
                String::from_utf8_lossy(b)
            );
        }
        // An index past the interfaces does not panic.
        let r = CniResult::parse(br#"{"ips":[{"address":"10.0.0.1/8","interface":99}]}"#).unwrap();
        assert!(r.pod_ip().is_some());
        let deep = "[".repeat(100_000);
        assert!(CniResult::parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn masks() {
        assert_eq!(netmask(true, 24), "255.255.255.0");
        assert_eq!(netmask(true, 0), "0.0.0.0");
        assert_eq!(netmask(true, 32), "255.255.255.255");
        assert_eq!(netmask(false, 64), "ffff:ffff:ffff:ffff::");
    }
}
