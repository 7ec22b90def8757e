//! The pod's persistent network namespace: created by a short-lived thread that unshares its
//! network namespace, brings `lo` up and bind-mounts `/proc/thread-self/ns/net` onto
//! `/var/run/netns/rkt-<uuid>` (as rkt and `ip netns add` do), so that plugins, the pod and the
//! stage1 `gc` can name it by path.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use pod_abi::netinfo::NETNS_DIR;

use crate::CniError;

/// The namespace path of pod `uuid`.
pub fn path_for(uuid: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(format!("rkt-{uuid}"))
}

fn err(path: &Path, step: &str) -> impl FnOnce(std::io::Error) -> CniError {
    let (path, step) = (path.display().to_string(), step.to_string());
    move |source| CniError::Netns { path, step, source }
}

fn nix_io(e: nix::Error) -> std::io::Error {
    std::io::Error::from_raw_os_error(e as i32)
}

/// Creates the namespace at `path` with `lo` up. Fails if `path` exists.
pub fn create(path: &Path) -> Result<(), CniError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err(path, "create the directory"))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(err(path, "create the mount point"))?;
    let target = path.to_path_buf();
    let r = std::thread::spawn(move || -> Result<(), (String, std::io::Error)> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| ("unshare".to_string(), nix_io(e)))?;
        loopback_up().map_err(|e| ("bring up lo".to_string(), nix_io(e)))?;
        let none: Option<&str> = None;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            none,
            MsFlags::MS_BIND,
            none,
        )
        .map_err(|e| ("bind mount".to_string(), nix_io(e)))
    })
    .join()
    .unwrap_or_else(|_| Err(("thread".into(), std::io::Error::other("panicked"))));
    if let Err((step, source)) = r {
        let _ = std::fs::remove_file(path);
        return Err(CniError::Netns {
            path: path.display().to_string(),
            step,
            source,
        });
    }
    Ok(())
}

/// Unmounts and removes the namespace at `path`; a missing one is not an error.
pub fn remove(path: &Path) -> Result<(), CniError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(err(path, "unmount")(nix_io(e))),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(path, "remove")(e)),
    }
}

/// `struct ifreq` with the flags member (40 bytes on Linux).
#[repr(C)]
struct IfReqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    pad: [u8; 22],
}

/// Sets `lo` up in the calling thread's network namespace.
pub fn loopback_up() -> nix::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsRawFd;
    let s = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let mut req = IfReqFlags {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        pad: [0; 22],
    };
    if let Some(dst) = req.name.get_mut(..2) {
        dst.copy_from_slice(b"lo");
    }
    // SAFETY: SIOCGIFFLAGS fills the flags of the valid, correctly sized ifreq passed.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(nix::Error::last());
    }
    req.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the valid ifreq passed.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}
