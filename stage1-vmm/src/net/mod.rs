//! A KVM pod's host-side network plumbing: a tap in the pod's network namespace joined to the
//! CNI-made interface there, as Kata Containers does it ("tcfilter" mode), so any CNI plugin
//! works unchanged.
//!
//! [`attach`], given the persisted namespace (e.g. `/var/run/netns/NAME`), the CNI interface
//! (`eth0`) and a tap name:
//! 1. on a short-lived thread that joins the namespace (`setns`), opens `/dev/net/tun` as
//!    `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR` with a 12-byte vnet header (`TUNSETVNETHDRSZ`),
//!    non-blocking, reads the CNI interface's MAC and MTU and gives the tap the same MTU and
//!    brings it up (ioctls on a socket of that namespace);
//! 2. runs the host's `tc` (a fixed absolute path, root-owned, never a pod-writable file) in the
//!    namespace: an ingress qdisc on both interfaces and a u32 match-all filter on each with
//!    `action mirred egress redirect` to the other: what arrives on the CNI interface leaves
//!    through the tap (to the VMM, hence the guest) and what the guest sends leaves through the
//!    CNI interface. The CNI interface keeps its addresses (CNI's CHECK and DEL expect them); its
//!    own IP stack never sees a frame;
//! 3. reads the interface's addresses and routes (`ip -json`, the same way) for the guest
//!    ([`pod_abi::guestnet`]).
//!
//! [`detach`] removes the qdiscs (and with them the filters); the tap itself disappears when
//! its last descriptor closes (the VMM's exit), and with the namespace.
//!
//! When to call: before [`crate::confine::init`]. `tc` and `ip` are executed, and an executed
//! program gets at most the process's capability bounding set, which `init` reduces to what the
//! virtio-fs worker keeps (no `CAP_NET_ADMIN`); the namespace switch needs `CAP_SYS_ADMIN`.

mod tap;

use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use pod_abi::guestnet::{GuestInterface, GuestNetConfig, GuestRoute, IpCidr, MacAddr};

pub use tap::{enable_offloads, open_scratch, open_tap_in, TapInfo};

/// Where `tc` may be (first existing, root-owned, not group/other-writable wins).
const TC_PATHS: &[&str] = &["/usr/sbin/tc", "/sbin/tc"];
/// Where `ip` may be (same rule).
const IP_PATHS: &[&str] = &["/usr/sbin/ip", "/usr/bin/ip", "/sbin/ip", "/bin/ip"];
/// Largest `ip -json` output read (bytes).
const IP_OUTPUT_MAX: usize = 1 << 20;
/// Longest interface name (bytes, without the NUL).
pub const IFNAMSIZ_MAX: usize = 15;

/// Errors plumbing a pod's network.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A new network namespace cannot be made (`unshare`).
    #[error("cannot make a network namespace")]
    NewNetns(#[source] io::Error),
    /// The namespace file cannot be opened or joined.
    #[error("cannot enter network namespace {path:?}")]
    Netns {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An interface name is empty, too long or has a `/`, NUL or whitespace.
    #[error("invalid interface name {0:?}")]
    BadName(String),
    /// A tap or interface ioctl failed.
    #[error("{what} on {ifname}")]
    Ioctl {
        /// The operation.
        what: &'static str,
        /// The interface.
        ifname: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No trustworthy `tc` or `ip` binary.
    #[error("no usable {0} (looked in {1:?}; must be root-owned and not group/other-writable)")]
    NoTool(&'static str, &'static [&'static str]),
    /// `tc` or `ip` failed.
    #[error("`{cmd}` failed: {detail}")]
    Command {
        /// The command line.
        cmd: String,
        /// Exit status and stderr.
        detail: String,
    },
    /// `ip -json` printed something unexpected.
    #[error("cannot parse the output of `{0}`")]
    Parse(String),
    /// The helper thread could not run.
    #[error("namespace helper thread")]
    Thread(#[source] io::Error),
}

/// A tap joined to a CNI interface, and what the guest's interface should look like.
#[derive(Debug)]
pub struct Attached {
    /// The tap (non-blocking, vnet header of 12 bytes): give it to [`crate::vmm::NetConfig`].
    pub tap: OwnedFd,
    /// The guest interface: the CNI interface's MAC, its global addresses and MTU.
    pub interface: GuestInterface,
    /// The CNI interface's routes (main table), on-link ones first.
    pub routes: Vec<GuestRoute>,
}

/// What guest-init configures for these attached interfaces (`rkt/net.json`, see
/// [`pod_abi::guestnet`]): every interface, then every interface's on-link routes, then the
/// routes through gateways (so a gateway is reachable before a route names it), duplicates
/// dropped.
pub fn guest_config<'a>(attached: impl IntoIterator<Item = &'a Attached>) -> GuestNetConfig {
    let mut cfg = GuestNetConfig::default();
    let mut via = Vec::new();
    for a in attached {
        cfg.interfaces.push(a.interface.clone());
        for r in &a.routes {
            let list = if r.gateway.is_some() {
                &mut via
            } else {
                &mut cfg.routes
            };
            if !list.contains(r) {
                list.push(r.clone());
            }
        }
    }
    for r in via {
        if !cfg.routes.contains(&r) {
            cfg.routes.push(r);
        }
    }
    cfg
}

fn check_name(name: &str) -> Result<(), NetError> {
    let bad = name.is_empty()
        || name.len() > IFNAMSIZ_MAX
        || name
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace() || b == b':');
    if bad {
        return Err(NetError::BadName(name.to_string()));
    }
    Ok(())
}

fn open_netns(netns: &Path) -> Result<File, NetError> {
    File::open(netns).map_err(|source| NetError::Netns {
        path: netns.to_path_buf(),
        source,
    })
}

/// Opens a tap named `tap_name` in the network namespace `netns`, joins it to `ifname` there
/// with tc redirects both ways and returns it with the interface's MAC, addresses, MTU and
/// routes (see the module docs). On error nothing is left behind but what the namespace's
/// deletion removes anyway (the redirects are removed by [`detach`]).
pub fn attach(netns: &Path, ifname: &str, tap_name: &str) -> Result<Attached, NetError> {
    check_name(ifname)?;
    check_name(tap_name)?;
    let ns = open_netns(netns)?;
    let (tap, info) = open_tap_in(&ns, netns, ifname, tap_name)?;
    let tc = trusted_tool("tc", TC_PATHS)?;
    let joined = (|| {
        for dev in [ifname, tap_name] {
            run(&ns, &tc, &["qdisc", "add", "dev", dev, "ingress"])?;
        }
        for (from, to) in [(ifname, tap_name), (tap_name, ifname)] {
            run(
                &ns,
                &tc,
                &[
                    "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32",
                    "match", "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
                ],
            )?;
        }
        Ok(())
    })();
    if let Err(e) = joined {
        let _ = detach(netns, ifname);
        return Err(e);
    }
    let (addresses, routes) = match read_config(&ns, ifname, info.mac) {
        Ok(v) => v,
        Err(e) => {
            let _ = detach(netns, ifname);
            return Err(e);
        }
    };
    Ok(Attached {
        tap,
        interface: GuestInterface {
            mac: info.mac,
            addresses,
            mtu: Some(info.mtu),
        },
        routes,
    })
}

/// Undoes [`attach`]'s redirects: deletes the ingress qdisc of `ifname` (its filter goes with
/// it). The tap's own qdisc goes with the tap. A missing namespace or qdisc is not an error.
pub fn detach(netns: &Path, ifname: &str) -> Result<(), NetError> {
    check_name(ifname)?;
    let ns = match File::open(netns) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(NetError::Netns {
                path: netns.to_path_buf(),
                source,
            })
        }
    };
    let tc = trusted_tool("tc", TC_PATHS)?;
    match run(&ns, &tc, &["qdisc", "del", "dev", ifname, "ingress"]) {
        Ok(_) => Ok(()),
        // "Cannot find device" / "Invalid handle": already gone.
        Err(NetError::Command { detail, .. })
            if detail.contains("Cannot find")
                || detail.contains("Invalid handle")
                || detail.contains("No such") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The first of `paths` that is a root-owned regular file nobody else can write.
fn trusted_tool(name: &'static str, paths: &'static [&'static str]) -> Result<PathBuf, NetError> {
    paths
        .iter()
        .map(Path::new)
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.uid() == 0 && m.mode() & 0o022 == 0)
        })
        .map(Path::to_path_buf)
        .ok_or(NetError::NoTool(name, paths))
}

/// Runs `tool args` inside the namespace `ns` (the child joins it before exec); returns stdout.
fn run(ns: &File, tool: &Path, args: &[&str]) -> Result<Vec<u8>, NetError> {
    let cmdline = format!("{} {}", tool.display(), args.join(" "));
    let fd = ns.as_raw_fd();
    let mut cmd = Command::new(tool);
    cmd.args(args).env_clear().env("LC_ALL", "C");
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // async-signal-safe setns system call on a descriptor the parent keeps open.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().map_err(|e| NetError::Command {
        cmd: cmdline.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(NetError::Command {
            cmd: cmdline,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out.stdout)
}

/// `ip -json` output as an array of objects.
fn ip_json(ns: &File, ip: &Path, args: &[&str]) -> Result<Vec<serde_json::Value>, NetError> {
    let out = run(ns, ip, args)?;
    let what = || NetError::Parse(format!("ip {}", args.join(" ")));
    if out.len() > IP_OUTPUT_MAX {
        return Err(what());
    }
    // `ip -json` prints nothing (not `[]`) for an empty route list on some versions.
    if out.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    match serde_json::from_slice(&out) {
        Ok(serde_json::Value::Array(v)) => Ok(v),
        _ => Err(what()),
    }
}

/// The interface's global addresses and its routes, on-link routes first.
fn read_config(
    ns: &File,
    ifname: &str,
    mac: MacAddr,
) -> Result<(Vec<IpCidr>, Vec<GuestRoute>), NetError> {
    let ip = trusted_tool("ip", IP_PATHS)?;
    let mut addresses = Vec::new();
    for link in ip_json(ns, &ip, &["-json", "addr", "show", "dev", ifname])? {
        let infos = link.get("addr_info").and_then(|a| a.as_array());
        for a in infos.into_iter().flatten() {
            if a.get("scope").and_then(|s| s.as_str()) != Some("global") {
                continue;
            }
            let local = a.get("local").and_then(|l| l.as_str());
            let prefix = a.get("prefixlen").and_then(|p| p.as_u64());
            let cidr = local
                .and_then(|l| l.parse::<IpAddr>().ok())
                .zip(prefix.and_then(|p| u8::try_from(p).ok()))
                .and_then(|(addr, p)| IpCidr::new(addr, p))
                .ok_or_else(|| NetError::Parse(format!("ip -json addr show dev {ifname}")))?;
            addresses.push(cidr);
        }
    }
    let mut on_link = Vec::new();
    let mut via = Vec::new();
    for family in ["-4", "-6"] {
        let routes = ip_json(
            ns,
            &ip,
            &[
                family, "-json", "route", "show", "table", "main", "dev", ifname,
            ],
        )?;
        for r in routes {
            let Some(route) = parse_route(&r, family == "-6", mac) else {
                continue;
            };
            if route.gateway.is_some() {
                via.push(route);
            } else {
                on_link.push(route);
            }
        }
    }
    on_link.extend(via);
    Ok((addresses, on_link))
}

/// One route of `ip -json route show dev X` (skips link-local and multicast destinations and
/// unicast types other than plain routes).
fn parse_route(r: &serde_json::Value, v6: bool, mac: MacAddr) -> Option<GuestRoute> {
    if r.get("type")
        .and_then(|t| t.as_str())
        .is_some_and(|t| t != "unicast")
    {
        return None;
    }
    let dst = r.get("dst")?.as_str()?;
    let dst: IpCidr = if dst == "default" {
        if v6 { "::/0" } else { "0.0.0.0/0" }.parse().ok()?
    } else {
        dst.parse().ok()?
    };
    let skip = match dst.addr {
        IpAddr::V4(a) => a.is_multicast() || a.is_link_local(),
        IpAddr::V6(a) => a.is_multicast() || (a.segments()[0] & 0xffc0) == 0xfe80,
    };
    if skip {
        return None;
    }
    let gateway = match r.get("gateway").and_then(|g| g.as_str()) {
        Some(g) => Some(g.parse::<IpAddr>().ok()?),
        None => None,
    };
    Some(GuestRoute {
        dst,
        gateway,
        mac: Some(mac),
    })
}

#[cfg(test)]
mod tests;
