//! Opening a tap inside a network namespace (on a short-lived thread that joins it), and the
//! few interface ioctls the plumbing needs.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use pod_abi::guestnet::MacAddr;

use super::NetError;
use crate::devices::virtio::net::VNET_HDR_LEN;

/// `/dev/net/tun`.
const TUN_PATH: &str = "/dev/net/tun";
/// `TUNSETIFF` (`_IOW('T', 202, int)`).
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `TUNSETVNETHDRSZ` (`_IOW('T', 216, int)`).
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
/// `TUNSETOFFLOAD` (`_IOW('T', 208, unsigned int)`).
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// `TUN_F_CSUM`: the tap takes and gives frames with a partial checksum.
const TUN_F_CSUM: libc::c_uint = 0x01;
/// `TUN_F_TSO4`: the tap takes and gives TCPv4 segments up to 64 KiB.
const TUN_F_TSO4: libc::c_uint = 0x02;
/// `IFF_TAP`: an Ethernet device.
const IFF_TAP: libc::c_short = 0x0002;
/// `IFF_NO_PI`: no packet-information prefix.
const IFF_NO_PI: libc::c_short = 0x1000;
/// `IFF_VNET_HDR`: frames carry a virtio-net header.
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// `struct ifreq`: a name and a 24-byte union (flags, MTU, hardware address...).
#[repr(C)]
#[derive(Clone, Copy)]
struct IfReq {
    name: [u8; 16],
    data: [u8; 24],
}

impl IfReq {
    fn new(name: &str) -> IfReq {
        let mut r = IfReq {
            name: [0; 16],
            data: [0; 24],
        };
        for (d, s) in r.name.iter_mut().take(15).zip(name.bytes()) {
            *d = s;
        }
        r
    }

    fn set_short(&mut self, v: libc::c_short) {
        for (d, s) in self.data.iter_mut().zip(v.to_ne_bytes()) {
            *d = s;
        }
    }

    fn short(&self) -> libc::c_short {
        let [a, b, ..] = self.data;
        libc::c_short::from_ne_bytes([a, b])
    }

    fn set_int(&mut self, v: libc::c_int) {
        for (d, s) in self.data.iter_mut().zip(v.to_ne_bytes()) {
            *d = s;
        }
    }

    fn int(&self) -> libc::c_int {
        let [a, b, c, d, ..] = self.data;
        libc::c_int::from_ne_bytes([a, b, c, d])
    }
}

/// The CNI interface as the tap copies it.
#[derive(Debug, Clone, Copy)]
pub struct TapInfo {
    /// The CNI interface's MAC (the guest's).
    pub mac: MacAddr,
    /// Its MTU (bytes), also given to the tap.
    pub mtu: u32,
}

fn ioctl_err(what: &'static str, ifname: &str) -> impl FnOnce(io::Error) -> NetError {
    let ifname = ifname.to_string();
    move |source| NetError::Ioctl {
        what,
        ifname,
        source,
    }
}

/// `ioctl(fd, req, &mut ifr)`.
fn ifreq_ioctl(fd: RawFd, req: libc::c_ulong, ifr: &mut IfReq) -> io::Result<()> {
    // SAFETY: every request used here reads and/or writes one `struct ifreq`, which `ifr` is
    // (repr(C), 40 bytes), valid for the duration of the call.
    let rc = unsafe { libc::ioctl(fd, req as _, ifr as *mut IfReq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An `AF_INET` datagram socket of the calling thread's network namespace (for interface
/// ioctls).
fn ctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs on the namespace thread: everything that must happen inside the namespace.
fn open_here(ifname: &str, tap_name: &str) -> Result<(OwnedFd, TapInfo), NetError> {
    let sock = ctl_socket().map_err(ioctl_err("socket", ifname))?;
    let s = sock.as_raw_fd();

    let mut r = IfReq::new(ifname);
    ifreq_ioctl(s, libc::SIOCGIFHWADDR as _, &mut r).map_err(ioctl_err("SIOCGIFHWADDR", ifname))?;
    // sockaddr: family (2 bytes), then the address.
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(r.data.iter().skip(2)) {
        *d = *s;
    }
    let mut r = IfReq::new(ifname);
    ifreq_ioctl(s, libc::SIOCGIFMTU as _, &mut r).map_err(ioctl_err("SIOCGIFMTU", ifname))?;
    let mtu = r.int();
    let tun = create_up(s, tap_name, Some(mtu))?;
    Ok((
        tun,
        TapInfo {
            mac: MacAddr(mac),
            mtu: u32::try_from(mtu).unwrap_or(1500),
        },
    ))
}

/// Creates tap `tap_name` (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, non-blocking) in the calling
/// thread's network namespace, with `mtu` if given, and brings it up; `s` is a
/// [`ctl_socket`] of that namespace.
fn create_up(s: RawFd, tap_name: &str, mtu: Option<libc::c_int>) -> Result<OwnedFd, NetError> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(TUN_PATH)
        .map_err(ioctl_err("open /dev/net/tun", tap_name))?;
    let mut r = IfReq::new(tap_name);
    r.set_short(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR);
    ifreq_ioctl(tun.as_raw_fd(), TUNSETIFF, &mut r).map_err(ioctl_err("TUNSETIFF", tap_name))?;
    let hdr: libc::c_int = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer, valid for the call.
    if unsafe {
        libc::ioctl(
            tun.as_raw_fd(),
            TUNSETVNETHDRSZ as _,
            &hdr as *const libc::c_int,
        )
    } < 0
    {
        return Err(ioctl_err("TUNSETVNETHDRSZ", tap_name)(
            io::Error::last_os_error(),
        ));
    }
    if let Some(mtu) = mtu {
        let mut r = IfReq::new(tap_name);
        r.set_int(mtu);
        ifreq_ioctl(s, libc::SIOCSIFMTU as _, &mut r).map_err(ioctl_err("SIOCSIFMTU", tap_name))?;
    }
    let mut r = IfReq::new(tap_name);
    ifreq_ioctl(s, libc::SIOCGIFFLAGS as _, &mut r).map_err(ioctl_err("SIOCGIFFLAGS", tap_name))?;
    let flags = r.short() | libc::IFF_UP as libc::c_short;
    r.set_short(flags);
    ifreq_ioctl(s, libc::SIOCSIFFLAGS as _, &mut r).map_err(ioctl_err("SIOCSIFFLAGS", tap_name))?;
    Ok(tun.into())
}

/// Creates `count` taps (`tap0`, `tap1`, ...) as [`open_tap_in`] does, joined to nothing, in a
/// new network namespace that only they hold (a tap's descriptor keeps its namespace alive):
/// the snapshot maker's cards, whose VM must have the pod's kind of card and nothing of the
/// host's network. The namespace is made by a short-lived thread (`unshare` changes only the
/// calling thread's), so the caller's stays unchanged.
pub fn open_scratch(count: usize) -> Result<Vec<OwnedFd>, NetError> {
    std::thread::scope(|scope| {
        let t = std::thread::Builder::new()
            .name("scratch-taps".into())
            .spawn_scoped(scope, move || {
                // SAFETY: unshare with a constant flag; it moves only this thread, which ends
                // right after, to a new network namespace.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(NetError::NewNetns(io::Error::last_os_error()));
                }
                (0..count)
                    .map(|i| {
                        let name = format!("tap{i}");
                        let sock = ctl_socket().map_err(ioctl_err("socket", &name))?;
                        create_up(sock.as_raw_fd(), &name, None)
                    })
                    .collect()
            })
            .map_err(NetError::Thread)?;
        t.join()
            .unwrap_or_else(|_| Err(NetError::Thread(io::Error::other("the thread panicked"))))
    })
}

/// Lets `tap` carry partial checksums and TCPv4 segments up to 64 KiB both ways
/// (`TUNSETOFFLOAD` with `TUN_F_CSUM | TUN_F_TSO4`): the virtio-net header then says what each
/// frame needs ([`crate::devices::virtio::net::Net::with_offloads`]). Called before the VMM
/// confines itself (its device threads may not make ioctls).
pub fn enable_offloads(tap: &impl AsRawFd) -> io::Result<()> {
    let flags: libc::c_uint = TUN_F_CSUM | TUN_F_TSO4;
    // SAFETY: TUNSETOFFLOAD takes its argument by value; no memory is passed.
    if unsafe { libc::ioctl(tap.as_raw_fd(), TUNSETOFFLOAD as _, flags as libc::c_ulong) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens tap `tap_name` in the namespace `ns` (opened from `path`) and copies `ifname`'s MTU
/// to it; returns the tap and `ifname`'s MAC and MTU. The namespace is joined by a short-lived
/// thread (a thread's namespace is its own), so the caller's stays unchanged.
pub fn open_tap_in(
    ns: &File,
    path: &Path,
    ifname: &str,
    tap_name: &str,
) -> Result<(OwnedFd, TapInfo), NetError> {
    let fd = ns.as_raw_fd();
    std::thread::scope(|scope| {
        let t = std::thread::Builder::new()
            .name("netns-tap".into())
            .spawn_scoped(scope, move || {
                // SAFETY: setns on a descriptor the caller keeps open; it changes only this
                // thread's network namespace, and this thread ends right after.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    return Err(NetError::Netns {
                        path: path.to_path_buf(),
                        source: io::Error::last_os_error(),
                    });
                }
                open_here(ifname, tap_name)
            })
            .map_err(NetError::Thread)?;
        t.join()
            .unwrap_or_else(|_| Err(NetError::Thread(io::Error::other("the thread panicked"))))
    })
}
