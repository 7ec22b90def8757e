//! The pod's network as guest-init sets it up: `lo` up in both flavors (whatever `--net` is),
//! and in the kvm flavor the virtio-net cards by MAC (up, MTU, addresses) and the routes of
//! [`pod_abi::guestnet`] (`/rkt/net.json`, written by the host before boot; absent: loopback
//! only).
//!
//! Over rtnetlink with a small encoder on a raw `NETLINK_ROUTE` socket: every request asks for
//! an acknowledgement, so each error is reported with what failed. Failures are logged and the
//! pod starts anyway with what could be configured (a pod without its network is visible to
//! its apps at once; a guest-init that refuses to start hides why).

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use pod_abi::guestnet::{GuestInterface, GuestNetConfig, GuestRoute, MacAddr, GUEST_NET_MAX};
use pod_abi::plan::Flavor;

use crate::info;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RT_SCOPE_LINK: u8 = 253;
const RTN_UNICAST: u8 = 1;
const IFF_UP: u32 = 0x1;
/// Receive buffer for replies (bytes): a link dump of a handful of interfaces fits many times.
const RECV_BUF: usize = 64 * 1024;

/// Sets up the network for `flavor` (see the module docs); never fails the pod.
pub fn setup(flavor: Flavor) {
    let mut nl = match Netlink::open() {
        Ok(nl) => nl,
        Err(e) => {
            info!("network: cannot open a netlink socket: {e}");
            return;
        }
    };
    if let Err(e) = nl.loopback_up() {
        info!("network: cannot bring lo up: {e}");
    }
    if flavor != Flavor::Kvm {
        return;
    }
    match read_config(Path::new(pod_abi::paths::GUEST_NET)) {
        Ok(None) => {}
        Ok(Some(cfg)) => {
            for e in configure(&mut nl, &cfg) {
                info!("network: {e}");
            }
        }
        Err(e) => info!("network: {e}"),
    }
}

/// Reads and validates the config (at most [`GUEST_NET_MAX`] bytes); `None` when absent.
pub fn read_config(path: &Path) -> Result<Option<GuestNetConfig>, String> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut buf = Vec::new();
    f.take(GUEST_NET_MAX as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    GuestNetConfig::from_json(&buf)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Applies `cfg`: each interface (found by MAC) up with its MTU and addresses, then the routes
/// in order. Returns the errors (each names what failed); the rest is applied regardless.
///
/// A VM restored from a pod snapshot has the maker's cards, whose interfaces keep the MACs
/// their driver read then ([`pod_abi::snapshot::maker_mac`], by card order, which is
/// `cfg.interfaces`' order): an interface no card has the MAC of takes the card with the
/// maker's MAC for its position, which is given the pod's MAC first (while it is down).
pub fn configure(nl: &mut Netlink, cfg: &GuestNetConfig) -> Vec<String> {
    let mut errors = Vec::new();
    let links = match nl.links() {
        Ok(l) => l,
        Err(e) => return vec![format!("cannot list interfaces: {e}")],
    };
    let by_mac = |mac: MacAddr| links.iter().find(|l| l.mac == Some(mac)).map(|l| l.index);
    // The pod's MAC of each interface and the link that has (or now takes) it.
    let mut found: Vec<(MacAddr, i32)> = Vec::new();
    for (card, itf) in cfg.interfaces.iter().enumerate() {
        let index = match by_mac(itf.mac) {
            Some(index) => index,
            None => match pod_abi::snapshot::maker_mac(card).and_then(|m| by_mac(MacAddr(m))) {
                Some(index) => match nl.set_mac(index, itf.mac) {
                    Ok(()) => index,
                    Err(e) => {
                        errors.push(format!("interface {}: cannot set its MAC: {e}", itf.mac));
                        continue;
                    }
                },
                None => {
                    errors.push(format!("no interface with MAC {}", itf.mac));
                    continue;
                }
            },
        };
        found.push((itf.mac, index));
        if let Err(e) = nl.configure_link(index, itf) {
            errors.push(format!("interface {}: {e}", itf.mac));
        }
    }
    let index_of = |mac: MacAddr| {
        found
            .iter()
            .find(|(m, _)| *m == mac)
            .map(|&(_, i)| i)
            .or_else(|| by_mac(mac))
    };
    for r in &cfg.routes {
        let oif = match r.mac {
            Some(mac) => match index_of(mac) {
                Some(i) => Some(i),
                None => {
                    errors.push(format!("route to {}: no interface with MAC {mac}", r.dst));
                    continue;
                }
            },
            None => None,
        };
        if let Err(e) = nl.add_route(r, oif) {
            errors.push(format!("route to {}: {e}", r.dst));
        }
    }
    errors
}

/// One interface of a link dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: i32,
    /// Name.
    pub name: String,
    /// Hardware address, if it is an Ethernet one.
    pub mac: Option<MacAddr>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
}

/// A request under construction: header, fixed part, attributes (4-byte aligned).
struct Msg {
    buf: Vec<u8>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl Msg {
    fn new(ty: u16, flags: u16, fixed: &[u8]) -> Msg {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(fixed);
        buf.resize(align4(buf.len()), 0);
        Msg { buf }
    }

    fn attr(mut self, ty: u16, data: &[u8]) -> Msg {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// `struct ifinfomsg`.
fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

fn family(addr: &IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => libc::AF_INET as u8,
        IpAddr::V6(_) => libc::AF_INET6 as u8,
    }
}

fn octets(addr: &IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Reads a native-endian u16/u32 at `at` (None past the end).
fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The messages in one datagram: `(type, flags, payload)`.
fn messages(buf: &[u8]) -> Vec<(u16, u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(len) = u32_at(buf, at) {
        let len = len as usize;
        if len < NLMSG_HDRLEN || at + len > buf.len() {
            break;
        }
        let ty = u16_at(buf, at + 4).unwrap_or(0);
        let flags = u16_at(buf, at + 6).unwrap_or(0);
        out.push((ty, flags, &buf[at + NLMSG_HDRLEN..at + len]));
        at += align4(len);
    }
    out
}

/// The attributes after a fixed part of `fixed` bytes: `(type, data)`.
fn attrs(payload: &[u8], fixed: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = align4(fixed);
    while let (Some(len), Some(ty)) = (u16_at(payload, at), u16_at(payload, at + 2)) {
        let len = len as usize;
        if len < 4 || at + len > payload.len() {
            break;
        }
        out.push((ty & 0x3fff, &payload[at + 4..at + len]));
        at += align4(len);
    }
    out
}

/// A `NETLINK_ROUTE` socket.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: socket with constant arguments; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Netlink { fd, seq: 0 })
    }

    fn send(&mut self, msg: Msg) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let buf = msg.finish(self.seq);
        // SAFETY: sends `buf` (valid for its length) to the kernel (a zeroed sockaddr_nl is
        // the kernel's address).
        let n = unsafe {
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as u16;
            libc::sendto(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: receives into `buf`, valid for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    /// Sends `msg` with `NLM_F_ACK` and waits for the kernel's answer.
    fn request(&mut self, msg: Msg) -> io::Result<()> {
        let seq = self.send(msg)?;
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let n = self.recv(&mut buf)?;
            for (ty, _, payload) in messages(buf.get(..n).unwrap_or(&[])) {
                if ty != NLMSG_ERROR {
                    continue;
                }
                // struct nlmsgerr: error (i32), then the request's header.
                let err = u32_at(payload, 0).map(|e| e as i32).unwrap_or(-libc::EIO);
                if u32_at(payload, 4 + 8) != Some(seq) {
                    continue;
                }
                return if err == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-err))
                };
            }
        }
    }

    /// Every interface (a link dump).
    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        self.send(Msg::new(RTM_GETLINK, NLM_F_DUMP, &ifinfomsg(0, 0, 0)))?;
        let mut buf = vec![0u8; RECV_BUF];
        let mut links = Vec::new();
        loop {
            let n = self.recv(&mut buf)?;
            let msgs = messages(buf.get(..n).unwrap_or(&[]));
            if msgs.is_empty() {
                return Err(io::Error::other("empty netlink reply"));
            }
            for (ty, _, payload) in msgs {
                match ty {
                    NLMSG_DONE => return Ok(links),
                    NLMSG_ERROR => {
                        let err = u32_at(payload, 0).map(|e| e as i32).unwrap_or(-libc::EIO);
                        return Err(io::Error::from_raw_os_error(-err));
                    }
                    RTM_NEWLINK => {
                        let index = u32_at(payload, 4).map(|i| i as i32).unwrap_or(0);
                        let flags = u32_at(payload, 8).unwrap_or(0);
                        let mut link = Link {
                            index,
                            name: String::new(),
                            mac: None,
                            up: flags & IFF_UP != 0,
                        };
                        for (aty, data) in attrs(payload, 16) {
                            match aty {
                                IFLA_IFNAME => {
                                    let end =
                                        data.iter().position(|b| *b == 0).unwrap_or(data.len());
                                    link.name = String::from_utf8_lossy(&data[..end]).into_owned();
                                }
                                IFLA_ADDRESS => {
                                    if let Ok(m) = <[u8; 6]>::try_from(data) {
                                        link.mac = Some(MacAddr(m));
                                    }
                                }
                                _ => {}
                            }
                        }
                        links.push(link);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Brings interface `index` up, with `mtu` if given.
    pub fn link_up(&mut self, index: i32, mtu: Option<u32>) -> io::Result<()> {
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_ACK, &ifinfomsg(index, IFF_UP, IFF_UP));
        if let Some(mtu) = mtu {
            m = m.attr(IFLA_MTU, &mtu.to_ne_bytes());
        }
        self.request(m)
    }

    /// Gives interface `index` the MAC `mac` (`IFLA_ADDRESS`).
    pub fn set_mac(&mut self, index: i32, mac: MacAddr) -> io::Result<()> {
        let m =
            Msg::new(RTM_NEWLINK, NLM_F_ACK, &ifinfomsg(index, 0, 0)).attr(IFLA_ADDRESS, &mac.0);
        self.request(m)
    }

    /// Brings `lo` up (its kernel-made 127.0.0.1/8 and ::1 then work); nothing when it is up
    /// already (stage1-ns brought it up, or `--net=host`), so no privilege is needed then.
    pub fn loopback_up(&mut self) -> io::Result<()> {
        let links = self.links()?;
        let lo = links
            .iter()
            .find(|l| l.name == "lo")
            .ok_or_else(|| io::Error::other("no interface lo"))?;
        if lo.up {
            return Ok(());
        }
        self.link_up(lo.index, None)
    }

    /// Adds `addr/prefix` to interface `index` (replacing an equal one).
    pub fn add_address(&mut self, index: i32, addr: IpAddr, prefix: u8) -> io::Result<()> {
        let mut fixed = [0u8; 8];
        fixed[0] = family(&addr);
        fixed[1] = prefix;
        fixed[3] = RT_SCOPE_UNIVERSE;
        fixed[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
        let o = octets(&addr);
        let mut m = Msg::new(
            RTM_NEWADDR,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            &fixed,
        );
        if addr.is_ipv4() {
            m = m.attr(IFA_LOCAL, &o);
        }
        self.request(m.attr(IFA_ADDRESS, &o))
    }

    fn configure_link(&mut self, index: i32, itf: &GuestInterface) -> io::Result<()> {
        self.link_up(index, itf.mtu)?;
        for a in &itf.addresses {
            self.add_address(index, a.addr, a.prefix)
                .map_err(|e| io::Error::new(e.kind(), format!("address {a}: {e}")))?;
        }
        Ok(())
    }

    /// Adds (or replaces) a route in the main table; on the link when it has no gateway.
    pub fn add_route(&mut self, r: &GuestRoute, oif: Option<i32>) -> io::Result<()> {
        let mut fixed = [0u8; 12];
        fixed[0] = family(&r.dst.addr);
        fixed[1] = r.dst.prefix;
        fixed[4] = RT_TABLE_MAIN;
        fixed[5] = RTPROT_BOOT;
        fixed[6] = if r.gateway.is_some() {
            RT_SCOPE_UNIVERSE
        } else {
            RT_SCOPE_LINK
        };
        fixed[7] = RTN_UNICAST;
        let mut m = Msg::new(
            RTM_NEWROUTE,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            &fixed,
        );
        if r.dst.prefix > 0 {
            m = m.attr(RTA_DST, &octets(&r.dst.addr));
        }
        if let Some(g) = r.gateway {
            m = m.attr(RTA_GATEWAY, &octets(&g));
        }
        if let Some(i) = oif {
            m = m.attr(RTA_OIF, &(i as u32).to_ne_bytes());
        }
        self.request(m)
    }
}

#[cfg(test)]
mod tests;
