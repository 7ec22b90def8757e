//! The unix-socket side: the listener host clients connect to (`vsock.sock` in the pod
//! directory, [`pod_abi::vsock::SOCKET`]), the `CONNECT <port>` line they send first
//! ([`Handshake`]), and the connections the guest makes to host listeners
//! (`vsock.sock_<port>`, [`connect_host`]). Every socket is non-blocking and close-on-exec;
//! writes use `MSG_NOSIGNAL` (a host peer that went away is an error, never a SIGPIPE).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use pod_abi::vsock::{listener_name, parse_connect, MAX_HANDSHAKE, SOCKET};

/// Pending connections the listener's backlog holds (count).
const BACKLOG: libc::c_int = 32;

/// The host listener; the socket file is removed by [`Listener::remove`] (the device does it
/// when it is dropped).
#[derive(Debug)]
pub struct Listener {
    sock: UnixListener,
    path: PathBuf,
}

fn sockaddr(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path {} too long", path.display()),
        ));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

fn stream_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Listener {
    /// Listens on `<dir>/vsock.sock`, mode 0600: bound under a temporary name, `chmod`ed, then
    /// renamed into place, so the socket is never reachable with looser permissions. A stale
    /// socket from an earlier run is replaced.
    pub fn bind(dir: &Path) -> io::Result<Listener> {
        let path = dir.join(SOCKET);
        let tmp = dir.join(format!("{SOCKET}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let fd = stream_socket()?;
        let (addr, len) = sockaddr(&tmp)?;
        // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let placed = (|| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
            // SAFETY: listen(2) on the bound socket.
            if unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) } != 0 {
                return Err(io::Error::last_os_error());
            }
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        Ok(Listener {
            sock: UnixListener::from(fd),
            path,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts one pending client (non-blocking); `Ok(None)` when none waits.
    pub fn accept(&self) -> io::Result<Option<UnixStream>> {
        loop {
            // SAFETY: accept4 without an address; the result is checked.
            let fd = unsafe {
                libc::accept4(
                    self.sock.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd >= 0 {
                // SAFETY: a fresh descriptor owned by nobody else.
                return Ok(Some(UnixStream::from(unsafe { OwnedFd::from_raw_fd(fd) })));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(None),
                // The client went away before we accepted it.
                _ if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
                _ => return Err(e),
            }
        }
    }

    /// The listening descriptor (for epoll).
    pub fn raw_fd(&self) -> i32 {
        self.sock.as_raw_fd()
    }

    /// Removes the socket file (new clients then find no pod).
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why a guest connection to a host port was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConnectHostError {
    /// Nothing listens (`vsock.sock_<port>` is missing).
    #[error("no listener")]
    NoListener,
    /// The name exists but is not a socket (a symlink, a file, a FIFO...).
    #[error("not a socket")]
    NotASocket,
    /// The listener refused, or its backlog is full.
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
}

/// Connects to the host listener of guest connections to host `port`: `<dir>/vsock.sock_<port>`,
/// which must be a unix socket itself (`lstat`: a symlink or any other file type is refused).
/// Non-blocking: a listener whose backlog is full refuses.
pub fn connect_host(dir: &Path, port: u32) -> Result<UnixStream, ConnectHostError> {
    let path = dir.join(listener_name(port));
    let meta = std::fs::symlink_metadata(&path).map_err(|_| ConnectHostError::NoListener)?;
    if !meta.file_type().is_socket() {
        return Err(ConnectHostError::NotASocket);
    }
    let fd = stream_socket().map_err(ConnectHostError::Connect)?;
    let (addr, len) = sockaddr(&path).map_err(ConnectHostError::Connect)?;
    loop {
        // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                len,
            )
        };
        if rc == 0 {
            return Ok(UnixStream::from(fd));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(ConnectHostError::Connect(e));
        }
    }
}

/// Writes `buf` to a non-blocking stream with `MSG_NOSIGNAL`; `Ok(0)` when it would block.
pub fn send(s: &UnixStream, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: sends from a live buffer of `buf.len()` bytes.
        let n = unsafe {
            libc::send(
                s.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(0),
            _ => return Err(e),
        }
    }
}

/// What a handshake read gave.
#[derive(Debug, PartialEq, Eq)]
pub enum HandshakeStep {
    /// The line is not complete yet.
    More,
    /// A well-formed `CONNECT <port>` line.
    Port(u32),
    /// Malformed, too long, or the client went away: close it.
    Bad,
}

/// A host client's `CONNECT <port>\n` line, read byte by byte (nothing after the newline is
/// consumed: it belongs to the guest connection), at most [`MAX_HANDSHAKE`] bytes.
#[derive(Debug, Default)]
pub struct Handshake {
    line: Vec<u8>,
}

impl Handshake {
    /// Reads what `s` has of the line.
    pub fn read(&mut self, mut s: impl io::Read) -> HandshakeStep {
        loop {
            let mut b = [0u8; 1];
            match s.read(&mut b) {
                Ok(0) => return HandshakeStep::Bad,
                Ok(_) if b[0] == b'\n' => {
                    return match std::str::from_utf8(&self.line).ok().and_then(parse_connect) {
                        Some(p) => HandshakeStep::Port(p),
                        None => HandshakeStep::Bad,
                    };
                }
                Ok(_) if self.line.len() >= MAX_HANDSHAKE => return HandshakeStep::Bad,
                Ok(_) => self.line.push(b[0]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return HandshakeStep::More,
                Err(_) => return HandshakeStep::Bad,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn handshake_lines() {
        let mut h = Handshake::default();
        assert_eq!(
            h.read(&b"CONNECT 12"[..]),
            HandshakeStep::Bad,
            "EOF mid-line"
        );
        let mut h = Handshake::default();
        assert_eq!(h.read(&b"CONNECT 122\nrest"[..]), HandshakeStep::Port(122));
        for bad in [
            &b"CONNECT x\n"[..],
            b"OK 1\n",
            b"CONNECT 4294967296\n",
            b"CONNECT 000000000000000000000000000000001\n",
        ] {
            assert_eq!(Handshake::default().read(bad), HandshakeStep::Bad);
        }
        // Partial lines over a non-blocking socket.
        let (mut a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut h = Handshake::default();
        assert_eq!(h.read(&b), HandshakeStep::More);
        a.write_all(b"CONN").unwrap();
        assert_eq!(h.read(&b), HandshakeStep::More);
        a.write_all(b"ECT 5\nDATA").unwrap();
        assert_eq!(h.read(&b), HandshakeStep::Port(5));
        let mut rest = [0u8; 4];
        std::io::Read::read_exact(&mut &b, &mut rest).unwrap();
        assert_eq!(&rest, b"DATA");
    }

    #[test]
    fn listener_is_private_and_replaces_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let first = Listener::bind(dir.path()).unwrap();
        drop(first);
        let l = Listener::bind(dir.path()).unwrap_or_else(|e| panic!("stale socket: {e}"));
        let mode = std::fs::metadata(l.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(l.accept().unwrap().is_none());
        let _c = UnixStream::connect(l.path()).unwrap();
        assert!(l.accept().unwrap().is_some());
        l.remove();
        assert!(!l.path().exists());
    }

    #[test]
    fn guest_connections_reach_sockets_only() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            connect_host(dir.path(), 5678),
            Err(ConnectHostError::NoListener)
        ));
        let real = dir.path().join("real.sock");
        let _l = UnixListener::bind(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join(listener_name(1))).unwrap();
        assert!(matches!(
            connect_host(dir.path(), 1),
            Err(ConnectHostError::NotASocket)
        ));
        std::fs::write(dir.path().join(listener_name(2)), b"").unwrap();
        assert!(matches!(
            connect_host(dir.path(), 2),
            Err(ConnectHostError::NotASocket)
        ));
        let _l3 = UnixListener::bind(dir.path().join(listener_name(3))).unwrap();
        assert!(connect_host(dir.path(), 3).is_ok());
        // A socket file nobody listens on any more.
        drop(_l3);
        assert!(matches!(
            connect_host(dir.path(), 3),
            Err(ConnectHostError::Connect(_))
        ));
    }
}
