//! Where the service listens ([`listeners`]): the sockets systemd passes (socket activation,
//! sd_listen_fds(3)), else `--listen`: a TCP address (rkt's default `localhost:15441`, bound
//! on its first address that binds, IPv4 first, as Go's `net.Listen`) or `unix:PATH`, a unix
//! socket of mode 0660, so that only its owner and group reach the API (a loopback port is
//! open to every local user).

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::{ApiError, DEFAULT_LISTEN};

/// First file descriptor systemd passes (`SD_LISTEN_FDS_START`).
const SD_LISTEN_FDS_START: i32 = 3;
/// Most sockets accepted from systemd.
pub(crate) const MAX_SYSTEMD_SOCKETS: i32 = 16;
/// `--listen` prefix of a unix socket path.
const UNIX_PREFIX: &str = "unix:";
/// Mode of a unix socket the service makes (owner and group may connect).
const UNIX_SOCKET_MODE: u32 = 0o660;

/// One listening socket.
#[derive(Debug)]
pub enum Listener {
    /// A TCP socket.
    Tcp(TcpListener),
    /// A unix stream socket, with its path when this service made it (removed at exit).
    Unix(UnixListener, Option<PathBuf>),
}

impl Listener {
    /// `ADDR:PORT`, `unix:PATH`, or `unix` for a socket systemd passed.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map_or_else(|_| "tcp".to_string(), |a| a.to_string()),
            Listener::Unix(_, Some(p)) => format!("{UNIX_PREFIX}{}", p.display()),
            Listener::Unix(l, None) => l
                .local_addr()
                .ok()
                .and_then(|a| {
                    a.as_pathname()
                        .map(|p| format!("{UNIX_PREFIX}{}", p.display()))
                })
                .unwrap_or_else(|| "unix".to_string()),
        }
    }

    /// The path of a unix socket this service made.
    pub fn made_path(&self) -> Option<PathBuf> {
        match self {
            Listener::Unix(_, p) => p.clone(),
            Listener::Tcp(_) => None,
        }
    }
}

/// The service's listening sockets: systemd's (`LISTEN_PID`/`LISTEN_FDS`), which `listen`
/// must then not name, else `listen` (default [`DEFAULT_LISTEN`]).
pub fn listeners(listen: Option<&str>) -> Result<Vec<Listener>, ApiError> {
    if let Some(n) = systemd_fds()? {
        if listen.is_some() {
            return Err(ApiError::ListenUnderSystemd(n));
        }
        return (SD_LISTEN_FDS_START..SD_LISTEN_FDS_START + n)
            .map(systemd_listener)
            .collect();
    }
    let addr = listen.unwrap_or(DEFAULT_LISTEN);
    if let Some(path) = addr.strip_prefix(UNIX_PREFIX) {
        return Ok(vec![unix_listener(Path::new(path))?]);
    }
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| ApiError::Resolve(addr.to_string(), e))?
        .collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    // IPv4 first, as Go's resolver orders `localhost`.
    let (v4, v6): (Vec<_>, Vec<_>) = addrs.into_iter().partition(SocketAddr::is_ipv4);
    for a in v4.into_iter().chain(v6) {
        match TcpListener::bind(a) {
            Ok(l) => return Ok(vec![Listener::Tcp(l)]),
            Err(e) => last = e,
        }
    }
    Err(ApiError::Bind(addr.to_string(), last))
}

/// A unix socket at `path`, mode [`UNIX_SOCKET_MODE`]. A socket file left there by a service
/// that is gone is replaced; anything else there is refused.
fn unix_listener(path: &Path) -> Result<Listener, ApiError> {
    let bind_err = |e| ApiError::Bind(format!("{UNIX_PREFIX}{}", path.display()), e);
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(ApiError::PathTaken(path.to_path_buf(), "not a socket"));
        }
        Ok(_) => {
            if UnixStream::connect(path).is_ok() {
                return Err(ApiError::PathTaken(
                    path.to_path_buf(),
                    "a socket a service answers on",
                ));
            }
            std::fs::remove_file(path).map_err(bind_err)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let l = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(UNIX_SOCKET_MODE))
        .map_err(bind_err)?;
    Ok(Listener::Unix(l, Some(path.to_path_buf())))
}

/// The number of sockets systemd passed this process, if it did; unsets the variables so no
/// child inherits them.
fn systemd_fds() -> Result<Option<i32>, ApiError> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None);
    }
    // Before the runtime or any other thread of this process starts (`listeners` runs
    // first in `rkt api-service`), so nothing reads the environment meanwhile.
    for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(v);
    }
    match fds.trim().parse::<i32>() {
        Ok(n) if (1..=MAX_SYSTEMD_SOCKETS).contains(&n) => Ok(Some(n)),
        _ => Err(ApiError::BadListenFds(fds)),
    }
}

/// Takes descriptor `fd` from systemd as a listener, after checking it is a listening stream
/// socket, TCP or unix (a wrong unit file must not make the service accept on, or close,
/// something else).
fn systemd_listener(fd: i32) -> Result<Listener, ApiError> {
    let int_opt = |opt: libc::c_int| -> Option<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `v`, an int of that size; a
        // descriptor that is not a socket makes it fail with ENOTSOCK.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        (r == 0).then_some(v)
    };
    if int_opt(libc::SO_TYPE) != Some(libc::SOCK_STREAM) || int_opt(libc::SO_ACCEPTCONN) != Some(1)
    {
        return Err(ApiError::NotListener(fd));
    }
    let domain = int_opt(libc::SO_DOMAIN);
    if !matches!(domain, Some(libc::AF_INET | libc::AF_INET6 | libc::AF_UNIX)) {
        return Err(ApiError::NotListener(fd));
    }
    // SAFETY: systemd passed `fd` to this process for it to own (sd_listen_fds(3)); nothing
    // else in the process uses it, and it was just checked to be a listening stream socket.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(if domain == Some(libc::AF_UNIX) {
        Listener::Unix(UnixListener::from(owned), None)
    } else {
        Listener::Tcp(TcpListener::from(owned))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unix_socket_is_made_0660_and_never_over_something_else() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("api.sock");
        let l = unix_listener(&p).expect("bind");
        let mode = std::fs::metadata(&p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        assert_eq!(l.describe(), format!("unix:{}", p.display()));
        // A live service keeps its socket.
        assert!(matches!(unix_listener(&p), Err(ApiError::PathTaken(..))));
        drop(l);
        // A stale socket is replaced.
        assert!(unix_listener(&p).is_ok());
        let f = d.path().join("file");
        std::fs::write(&f, b"x").expect("write");
        assert!(matches!(unix_listener(&f), Err(ApiError::PathTaken(..))));
        assert_eq!(std::fs::read(&f).expect("read"), b"x");
    }
}
