//! The pod's DNS and hosts flags (`--dns`, `--dns-search`, `--dns-opt`, `--dns-domain`,
//! `--hosts-entry`, rkt's `host` values included) and the network part of the launch plan
//! ([`pod_abi::plan::NetPlan`]) built from them.

use std::path::Path;

use pod_abi::plan::{HostsEntry, NetPlan};

use crate::error::UsageError;

/// Largest host `/etc/resolv.conf` or `/etc/hosts` copied into a pod (`host` values), in bytes.
pub const HOST_FILE_MAX: u64 = 64 << 10;

/// The DNS and hosts flags as given, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsFlags {
    /// `--dns` servers (may contain `host`).
    pub dns: Vec<String>,
    /// `--dns-search`.
    pub search: Vec<String>,
    /// `--dns-opt`.
    pub opts: Vec<String>,
    /// `--dns-domain`.
    pub domain: String,
    /// `--hosts-entry` values (`IP=HOST[,HOST]` or `host`).
    pub hosts: Vec<String>,
}

fn usage(msg: String) -> UsageError {
    UsageError(msg)
}

fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
}

/// Splits a comma-separated flag value (rkt's flags are string slices).
fn items(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

impl DnsFlags {
    /// Records one flag (`name` without dashes); values are checked here, so that nothing
    /// that would break a line of `/etc/resolv.conf` or `/etc/hosts` reaches the pod.
    pub fn push(&mut self, name: &str, value: &str) -> Result<(), UsageError> {
        let bad = || usage(format!("--{name}: invalid value {value:?}"));
        match name {
            "dns" => {
                for s in items(value) {
                    if s != "host" && s.parse::<std::net::IpAddr>().is_err() {
                        return Err(bad());
                    }
                    self.dns.push(s.to_string());
                }
            }
            "dns-search" => {
                for s in items(value) {
                    if !is_word(s) {
                        return Err(bad());
                    }
                    self.search.push(s.to_string());
                }
            }
            "dns-opt" => {
                for s in items(value) {
                    if !is_word(s) {
                        return Err(bad());
                    }
                    self.opts.push(s.to_string());
                }
            }
            "dns-domain" => {
                if !is_word(value) {
                    return Err(bad());
                }
                self.domain = value.to_string();
            }
            "hosts-entry" => {
                for s in items(value) {
                    if s != "host" {
                        parse_hosts_entry(s).ok_or_else(bad)?;
                    }
                    self.hosts.push(s.to_string());
                }
            }
            _ => return Err(bad()),
        }
        Ok(())
    }

    /// Whether no flag was given.
    pub fn is_empty(&self) -> bool {
        *self == DnsFlags::default()
    }
}

/// `IP=HOST` (rkt's form) into an entry.
pub fn parse_hosts_entry(s: &str) -> Option<HostsEntry> {
    let (ip, host) = s.split_once('=')?;
    ip.parse::<std::net::IpAddr>().ok()?;
    if !is_word(host) {
        return None;
    }
    Some(HostsEntry {
        ip: ip.to_string(),
        names: vec![host.to_string()],
    })
}

/// A host file for a `host` value, bounded.
fn host_file(path: &Path) -> Result<String, UsageError> {
    use std::io::Read;
    let mut s = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(HOST_FILE_MAX).read_to_string(&mut s))
        .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    Ok(s)
}

/// The plan's network section: config dirs and the DNS/hosts flags (`host` values read from
/// the host's `/etc/resolv.conf` and `/etc/hosts`). Ports are added from the pod manifest by
/// [`super::plan::build_plan`].
pub fn net_plan(
    flags: &DnsFlags,
    local_config: &Path,
    system_config: &Path,
) -> Result<NetPlan, UsageError> {
    let mut p = NetPlan {
        local_config: local_config.display().to_string(),
        system_config: system_config.display().to_string(),
        dns_search: flags.search.clone(),
        dns_opt: flags.opts.clone(),
        dns_domain: flags.domain.clone(),
        ..Default::default()
    };
    for d in &flags.dns {
        if d == "host" {
            p.resolv_conf = Some(host_file(Path::new("/etc/resolv.conf"))?);
        } else {
            p.dns.push(d.clone());
        }
    }
    for h in &flags.hosts {
        if h == "host" {
            p.hosts_file = Some(host_file(Path::new("/etc/hosts"))?);
        } else if let Some(e) = parse_hosts_entry(h) {
            p.hosts_entries.push(e);
        }
    }
    Ok(p)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        let mut f = DnsFlags::default();
        f.push("dns", "8.8.8.8,::1").unwrap();
        f.push("dns-search", "a.example,b").unwrap();
        f.push("dns-opt", "ndots:2").unwrap();
        f.push("dns-domain", "example.org").unwrap();
        f.push("hosts-entry", "10.0.0.1=db").unwrap();
        assert!(f.push("dns", "nope").is_err());
        assert!(f.push("dns-search", "a\nnameserver 1.2.3.4").is_err());
        assert!(f.push("hosts-entry", "10.0.0.1").is_err());
        assert!(f.push("hosts-entry", "x=db").is_err());
        let p = net_plan(&f, Path::new("/l"), Path::new("/s")).unwrap();
        assert_eq!(p.dns, vec!["8.8.8.8", "::1"]);
        assert_eq!(p.hosts_entries[0].names, vec!["db"]);
        assert_eq!(p.local_config, "/l");
        assert!(p.resolv_conf.is_none());
    }
}
