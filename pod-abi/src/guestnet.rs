//! What guest-init configures in a KVM guest's network: one entry per virtio-net card (found by
//! MAC) with its addresses and MTU, and the routes. Written by the host side of the kvm stage1
//! before boot at [`crate::paths::NET_IN_STAGE1`] (guest view [`crate::paths::GUEST_NET`]), from
//! the CNI-made interfaces of the pod's network namespace; read by guest-init, bounded
//! ([`GUEST_NET_MAX`]) and validated ([`GuestNetConfig::from_json`]).
//!
//! Loopback is not listed: guest-init brings `lo` up in every pod, with or without this file.
//!
//! JSON form:
//! ```json
//! {"interfaces": [{"mac": "02:42:ac:10:1c:05", "addresses": ["172.16.28.5/24"], "mtu": 1500}],
//!  "routes": [{"dst": "0.0.0.0/0", "gateway": "172.16.28.1"}]}
//! ```

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Largest accepted file (bytes).
pub const GUEST_NET_MAX: usize = 64 * 1024;
/// Most interfaces accepted (count; each is one virtio-mmio slot).
pub const MAX_INTERFACES: usize = 8;
/// Most addresses per interface (count).
pub const MAX_ADDRESSES: usize = 32;
/// Most routes (count).
pub const MAX_ROUTES: usize = 128;
/// MTU bounds (bytes): the IPv4 minimum and the largest frame virtio-net moves.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

/// Errors parsing or validating a [`GuestNetConfig`].
#[derive(Debug, thiserror::Error)]
pub enum GuestNetError {
    /// Not valid JSON of this shape.
    #[error("invalid guest network config: {0}")]
    Json(#[from] serde_json::Error),
    /// Larger than [`GUEST_NET_MAX`].
    #[error("guest network config is {0} bytes, more than {GUEST_NET_MAX}")]
    TooLarge(usize),
    /// A list is longer than its bound.
    #[error("too many {what}: {got} (at most {max})")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// Its length.
        got: usize,
        /// The bound.
        max: usize,
    },
    /// An MTU outside [`MTU_RANGE`].
    #[error("MTU {0} out of range")]
    Mtu(u32),
    /// Two interfaces with the same MAC.
    #[error("duplicate interface {0}")]
    DuplicateMac(MacAddr),
    /// A route through an interface that is not listed.
    #[error("route to {0} names an unknown interface")]
    UnknownInterface(IpCidr),
    /// A route whose gateway is not of its destination's family.
    #[error("route to {0}: gateway of another address family")]
    GatewayFamily(IpCidr),
}

/// A MAC address; JSON `"02:42:ac:10:1c:05"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts.next().filter(|p| p.len() == 2);
            *b = p
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| format!("invalid MAC address {s:?}"))?;
        }
        if parts.next().is_some() {
            return Err(format!("invalid MAC address {s:?}"));
        }
        Ok(MacAddr(out))
    }
}

impl TryFrom<String> for MacAddr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<MacAddr> for String {
    fn from(m: MacAddr) -> String {
        m.to_string()
    }
}

/// An address with its prefix length; JSON `"172.16.28.5/24"`, `"fd00::5/64"`. A bare address
/// parses as a host prefix (/32, /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpCidr {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length (bits; at most 32 for IPv4, 128 for IPv6).
    pub prefix: u8,
}

impl IpCidr {
    /// `addr/prefix` if the prefix fits the family.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpCidr> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(IpCidr { addr, prefix })
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpCidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid address/prefix {s:?}");
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix = match p {
            Some(p) => p.parse::<u8>().map_err(|_| bad())?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        IpCidr::new(addr, prefix).ok_or_else(bad)
    }
}

impl TryFrom<String> for IpCidr {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<IpCidr> for String {
    fn from(c: IpCidr) -> String {
        c.to_string()
    }
}

/// One guest interface (a virtio-net card).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestInterface {
    /// The card's MAC (the CNI interface's): how guest-init finds it.
    pub mac: MacAddr,
    /// Addresses to add.
    #[serde(default)]
    pub addresses: Vec<IpCidr>,
    /// MTU (bytes); the driver's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestRoute {
    /// Destination (`0.0.0.0/0`, `::/0` for a default route).
    pub dst: IpCidr,
    /// Next hop; absent for a route on the link (scope link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// The interface (by MAC); needed for on-link routes, else the kernel picks the interface
    /// that reaches the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
}

/// The guest's network (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestNetConfig {
    /// One entry per virtio-net card.
    #[serde(default)]
    pub interfaces: Vec<GuestInterface>,
    /// Routes, added in order after every interface is configured: on-link routes first, so a
    /// gateway is reachable before a route names it.
    #[serde(default)]
    pub routes: Vec<GuestRoute>,
}

fn bounded(what: &'static str, got: usize, max: usize) -> Result<(), GuestNetError> {
    if got > max {
        return Err(GuestNetError::TooMany { what, got, max });
    }
    Ok(())
}

impl GuestNetConfig {
    /// Parses and validates (bounds, MTUs, distinct MACs, routes naming listed interfaces,
    /// gateways of the destination's family).
    pub fn from_json(bytes: &[u8]) -> Result<GuestNetConfig, GuestNetError> {
        if bytes.len() > GUEST_NET_MAX {
            return Err(GuestNetError::TooLarge(bytes.len()));
        }
        let cfg: GuestNetConfig = serde_json::from_slice(bytes)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Serialises (after validating).
    pub fn to_json(&self) -> Result<Vec<u8>, GuestNetError> {
        self.validate()?;
        let v = serde_json::to_vec_pretty(self)?;
        if v.len() > GUEST_NET_MAX {
            return Err(GuestNetError::TooLarge(v.len()));
        }
        Ok(v)
    }

    /// Checks the bounds and consistency rules of [`GuestNetConfig::from_json`].
    pub fn validate(&self) -> Result<(), GuestNetError> {
        bounded("interfaces", self.interfaces.len(), MAX_INTERFACES)?;
        bounded("routes", self.routes.len(), MAX_ROUTES)?;
        for (i, itf) in self.interfaces.iter().enumerate() {
            bounded("addresses", itf.addresses.len(), MAX_ADDRESSES)?;
            if let Some(m) = itf.mtu.filter(|m| !MTU_RANGE.contains(m)) {
                return Err(GuestNetError::Mtu(m));
            }
            if self.interfaces.iter().skip(i + 1).any(|o| o.mac == itf.mac) {
                return Err(GuestNetError::DuplicateMac(itf.mac));
            }
        }
        for r in &self.routes {
            if let Some(m) = r.mac {
                if !self.interfaces.iter().any(|i| i.mac == m) {
                    return Err(GuestNetError::UnknownInterface(r.dst));
                }
            }
            if r.gateway
                .is_some_and(|g| g.is_ipv4() != r.dst.addr.is_ipv4())
            {
                return Err(GuestNetError::GatewayFamily(r.dst));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GuestNetConfig {
        let mac: MacAddr = "02:42:ac:10:1c:05"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        GuestNetConfig {
            interfaces: vec![GuestInterface {
                mac,
                addresses: vec!["172.16.28.5/24".parse().unwrap_or_else(|e| panic!("{e}"))],
                mtu: Some(1500),
            }],
            routes: vec![
                GuestRoute {
                    dst: "172.16.28.1".parse().unwrap_or_else(|e| panic!("{e}")),
                    gateway: None,
                    mac: Some(mac),
                },
                GuestRoute {
                    dst: "0.0.0.0/0".parse().unwrap_or_else(|e| panic!("{e}")),
                    gateway: Some("172.16.28.1".parse().unwrap_or_else(|e| panic!("{e}"))),
                    mac: None,
                },
            ],
        }
    }

    #[test]
    fn round_trips_in_the_documented_form() {
        let cfg = sample();
        let json = cfg.to_json().unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8_lossy(&json);
        assert!(text.contains("\"02:42:ac:10:1c:05\""), "{text}");
        assert!(text.contains("\"172.16.28.5/24\""), "{text}");
        assert!(text.contains("\"172.16.28.1/32\""), "{text}");
        assert_eq!(GuestNetConfig::from_json(&json).ok(), Some(cfg));
        let doc = br#"{"interfaces": [{"mac": "02:42:ac:10:1c:05", "addresses": ["172.16.28.5/24"], "mtu": 1500}],
            "routes": [{"dst": "0.0.0.0/0", "gateway": "172.16.28.1"}]}"#;
        assert!(GuestNetConfig::from_json(doc).is_ok());
        assert_eq!(
            GuestNetConfig::from_json(b"{}").ok(),
            Some(GuestNetConfig::default())
        );
    }

    #[test]
    fn refuses_what_guest_init_must_not_apply() {
        let bad = [
            r#"{"interfaces": [{"mac": "02:42:ac:10:1c"}]}"#,
            r#"{"interfaces": [{"mac": "02:42:ac:10:1c:05:06"}]}"#,
            r#"{"interfaces": [{"mac": "02:42:ac:10:1c:zz"}]}"#,
            r#"{"interfaces": [{"mac": "02:42:ac:10:1c:05", "addresses": ["10.0.0.1/33"]}]}"#,
            r#"{"interfaces": [{"mac": "02:42:ac:10:1c:05", "addresses": ["fd00::1/129"]}]}"#,
            r#"{"interfaces": [{"mac": "02:42:ac:10:1c:05", "mtu": 20}]}"#,
            r#"{"interfaces": [{"mac": "02:42:ac:10:1c:05"}, {"mac": "02:42:ac:10:1c:05"}]}"#,
            r#"{"routes": [{"dst": "0.0.0.0/0", "mac": "02:42:ac:10:1c:05"}]}"#,
            r#"{"routes": [{"dst": "0.0.0.0/0", "gateway": "fd00::1"}]}"#,
            r#"{"routes": [], "extra": 1}"#,
        ];
        for b in bad {
            assert!(GuestNetConfig::from_json(b.as_bytes()).is_err(), "{b}");
        }
        let many = format!(
            r#"{{"routes": [{}]}}"#,
            vec![r#"{"dst": "10.0.0.0/8"}"#; MAX_ROUTES + 1].join(",")
        );
        assert!(matches!(
            GuestNetConfig::from_json(many.as_bytes()),
            Err(GuestNetError::TooMany { .. })
        ));
        let huge = vec![b' '; GUEST_NET_MAX + 1];
        assert!(matches!(
            GuestNetConfig::from_json(&huge),
            Err(GuestNetError::TooLarge(_))
        ));
    }
}
