//! The host <-> guest vsock channel of a kvm pod (the "hybrid" vsock of Firecracker and
//! cloud-hypervisor: a userspace virtio-vsock device in the VMM, unix sockets on the host side).
//!
//! - The guest has CID [`GUEST_CID`]; the host side is CID [`HOST_CID`].
//! - **Host -> guest**: connect to the pod directory's [`SOCKET`] (created by the VMM, mode 0600,
//!   so only root on the host), write `CONNECT <port>\n` ([`connect_line`]); the VMM answers
//!   `OK <host port>\n` ([`parse_ok`]) once the guest accepted, and closes the connection if the
//!   guest refused or did not answer in time. After that line the stream carries the guest
//!   connection's bytes. [`connect`] does all of it.
//! - **Guest -> host**: a guest connection to host port `P` is accepted only if a host process
//!   listens on the unix socket `SOCKET_P` in the pod directory ([`listener_name`]); otherwise
//!   the guest gets a reset. Nothing listens by default.
//! - Ports: [`EXEC_PORT`] is guest-init's exec service (enter, stop).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The guest's context ID (the first one a guest may have).
pub const GUEST_CID: u64 = 3;
/// The host's context ID, as the guest addresses it.
pub const HOST_CID: u64 = 2;
/// The VMM's unix socket in the pod directory (and, in the VMM's jail, under `/pod`).
pub const SOCKET: &str = "vsock.sock";
/// guest-init's exec service (below 1024, so only root in the guest can bind it; rkt's kvm
/// flavor used port 122 for the ssh daemon this channel replaces).
pub const EXEC_PORT: u32 = 122;
/// Longest handshake line either side sends, in bytes (`CONNECT 4294967295\n` is 19).
pub const MAX_HANDSHAKE: usize = 32;

/// The request line a host client writes first.
pub fn connect_line(port: u32) -> String {
    format!("CONNECT {port}\n")
}

/// The port of a `CONNECT <port>` line (without its newline), if well formed.
pub fn parse_connect(line: &str) -> Option<u32> {
    port_after(line, "CONNECT ")
}

/// The VMM's answer once the guest accepted (`OK <host port>\n`).
pub fn ok_line(host_port: u32) -> String {
    format!("OK {host_port}\n")
}

/// The host port of an `OK <port>` line (without its newline), if well formed.
pub fn parse_ok(line: &str) -> Option<u32> {
    port_after(line, "OK ")
}

/// The port that follows `word` in a handshake line: decimal digits only (no sign, no space),
/// fitting a `u32`.
fn port_after(line: &str, word: &str) -> Option<u32> {
    let rest = line.strip_prefix(word)?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// The name of the unix socket a host process listens on for guest connections to host `port`.
pub fn listener_name(port: u32) -> String {
    format!("{SOCKET}_{port}")
}

/// Errors connecting to a guest port.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The VMM's socket is missing or refuses connections (the pod is not running).
    #[error("cannot reach the pod's vsock socket {path}")]
    Socket {
        /// The socket.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The guest refused, or did not accept within the timeout.
    #[error("the guest did not accept a connection to vsock port {0}")]
    Refused(u32),
    /// The handshake went wrong.
    #[error("vsock handshake: {0}")]
    Handshake(String),
}

/// Connects to guest `port` through the pod directory's [`SOCKET`]: the handshake, bounded by
/// `timeout`. Returns the stream positioned after the `OK` line, with no timeouts set.
pub fn connect(pod_dir: &Path, port: u32, timeout: Duration) -> Result<UnixStream, ConnectError> {
    let path = pod_dir.join(SOCKET);
    let sock_err = |source| ConnectError::Socket {
        path: path.display().to_string(),
        source,
    };
    let mut s = UnixStream::connect(&path).map_err(sock_err)?;
    let hs = |e: io::Error| ConnectError::Handshake(e.to_string());
    s.set_read_timeout(Some(timeout)).map_err(hs)?;
    s.set_write_timeout(Some(timeout)).map_err(hs)?;
    s.write_all(connect_line(port).as_bytes()).map_err(hs)?;
    // Byte by byte: nothing after the newline may be consumed here.
    let mut line = Vec::with_capacity(MAX_HANDSHAKE);
    loop {
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(0) => return Err(ConnectError::Refused(port)),
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) if line.len() >= MAX_HANDSHAKE => {
                return Err(ConnectError::Handshake("answer line too long".into()))
            }
            Ok(_) => line.push(b[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                return Err(ConnectError::Refused(port))
            }
            Err(e) => return Err(hs(e)),
        }
    }
    let text = String::from_utf8_lossy(&line);
    if parse_ok(&text).is_none() {
        return Err(ConnectError::Handshake(format!(
            "unexpected answer {text:?}"
        )));
    }
    s.set_read_timeout(None).map_err(hs)?;
    s.set_write_timeout(None).map_err(hs)?;
    Ok(s)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    #[test]
    fn lines_round_trip() {
        assert_eq!(parse_connect(connect_line(122).trim_end()), Some(122));
        assert_eq!(
            parse_ok(ok_line(1_073_741_824).trim_end()),
            Some(1_073_741_824)
        );
        for bad in [
            "CONNECT",
            "CONNECT ",
            "CONNECT -1",
            "CONNECT 1 2",
            "CONNECT 99999999999",
            "connect 1",
        ] {
            assert_eq!(parse_connect(bad), None, "{bad}");
        }
        assert_eq!(parse_ok("OK"), None);
        assert_eq!(listener_name(52), "vsock.sock_52");
    }

    fn fake_vmm(answer: &'static [u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let l = UnixListener::bind(dir.path().join(SOCKET)).unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = io::BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert_eq!(line, connect_line(EXEC_PORT));
            let mut w = s;
            w.write_all(answer).unwrap();
            std::thread::sleep(Duration::from_millis(200));
        });
        dir
    }

    #[test]
    fn connect_keeps_the_bytes_after_ok() {
        let dir = fake_vmm(b"OK 1024\nhello");
        let mut s = connect(dir.path(), EXEC_PORT, Duration::from_secs(5)).unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
    }

    #[test]
    fn refusal_and_garbage_are_errors() {
        let dir = fake_vmm(b"");
        assert!(matches!(
            connect(dir.path(), EXEC_PORT, Duration::from_secs(5)),
            Err(ConnectError::Refused(EXEC_PORT))
        ));
        let dir = fake_vmm(b"NO\n");
        assert!(matches!(
            connect(dir.path(), EXEC_PORT, Duration::from_secs(5)),
            Err(ConnectError::Handshake(_))
        ));
        let missing = tempfile::tempdir().unwrap();
        assert!(matches!(
            connect(missing.path(), EXEC_PORT, Duration::from_secs(1)),
            Err(ConnectError::Socket { .. })
        ));
    }
}
