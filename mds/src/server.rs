//! The two HTTP servers (`tiny_http`): the public side on TCP and the registration side on a
//! root-only unix socket, each served by a few threads over one shared [`Registry`].

use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::handler::{self, Request, Response};
use crate::registry::Registry;
use crate::MdsError;

/// Largest body of a public request (bytes): sign/verify forms.
pub const MAX_PUBLIC_BODY: u64 = 64 * 1024;
/// Largest body of a registration request (bytes): a manifest.
pub const MAX_REGISTRATION_BODY: u64 = 1024 * 1024;
/// Threads serving each side (count): a slow client holds one.
pub const THREADS: usize = 8;

/// Which API a server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `/{token}/acMetadata/v1/…` on TCP.
    Public,
    /// `/pods/…` on the unix socket.
    Registration,
}

impl Side {
    fn max_body(self) -> u64 {
        match self {
            Side::Public => MAX_PUBLIC_BODY,
            Side::Registration => MAX_REGISTRATION_BODY,
        }
    }
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> MdsError {
    move |source| MdsError::Io { what, source }
}

/// Binds the public side on `addr` (rkt listens on every address, port 18112).
pub fn bind_public(addr: SocketAddr) -> Result<tiny_http::Server, MdsError> {
    let l = public_listener(addr)?;
    tiny_http::Server::from_listener(l, None).map_err(|e| MdsError::Io {
        what: format!("cannot listen on {addr}"),
        source: std::io::Error::other(e.to_string()),
    })
}

/// The public side's listening socket, with `TCP_NODELAY`, which the connections it accepts
/// inherit: tiny_http writes a response as two writes (its 1 KiB of buffered headers, then
/// the body), and with Nagle's algorithm a body not filling a segment waited for the pod's ACK
/// of the headers, one more round trip per answer (under the nested harness's emulation
/// enough for appc's ACE validator to miss its 100 ms timeout on a pod manifest).
fn public_listener(addr: SocketAddr) -> Result<std::net::TcpListener, MdsError> {
    let err = |source| MdsError::Io {
        what: format!("cannot listen on {addr}"),
        source,
    };
    let l = std::net::TcpListener::bind(addr).map_err(err)?;
    nix::sys::socket::setsockopt(&l, nix::sys::socket::sockopt::TcpNoDelay, &true)
        .map_err(|e| err(std::io::Error::from(e)))?;
    Ok(l)
}

/// Binds the registration socket at `path`, reachable by root only (the socket is created 0600
/// under a umask of 0177; a missing parent directory is created 0700). A stale socket left by a
/// dead service is replaced; a live one is an error.
pub fn bind_registration(path: &Path) -> Result<tiny_http::Server, MdsError> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io(format!("cannot create {}", dir.display())))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io(format!("cannot restrict {}", dir.display())))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(MdsError::Conflict(format!(
                    "a metadata service is already running on {}",
                    path.display()
                )));
            }
            std::fs::remove_file(path)
                .map_err(io(format!("cannot remove stale {}", path.display())))?;
        }
        Ok(_) => {
            return Err(MdsError::Conflict(format!(
                "{} exists and is not a socket",
                path.display()
            )))
        }
        Err(_) => {}
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let server = tiny_http::Server::http_unix(path);
    nix::sys::stat::umask(old);
    let server = server.map_err(|e| MdsError::Io {
        what: format!("cannot listen on {}", path.display()),
        source: std::io::Error::other(e.to_string()),
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io(format!("cannot restrict {}", path.display())))?;
    Ok(server)
}

/// Answers one request: reads its body (bounded), runs the handler, sends the response.
pub fn answer(registry: &Registry, side: Side, mut req: tiny_http::Request) {
    let mut body = Vec::new();
    let limit = side.max_body();
    let resp = match req.as_reader().take(limit + 1).read_to_end(&mut body) {
        Err(_) => None,
        Ok(_) if body.len() as u64 > limit => Some(Response {
            status: 413,
            content_type: handler::TEXT,
            body: b"request body too large\n".to_vec(),
        }),
        Ok(_) => {
            let flavor = req
                .headers()
                .iter()
                .find(|h| h.field.equiv(handler::FLAVOR_HEADER.0))
                .map(|h| h.value.as_str().to_string());
            let method = req.method().as_str().to_string();
            let r = Request {
                method: &method,
                url: req.url(),
                flavor: flavor.as_deref(),
                body: &body,
            };
            Some(match side {
                Side::Public => handler::public(registry, &r),
                Side::Registration => handler::registration(registry, &r),
            })
        }
    };
    let Some(resp) = resp else { return };
    log::debug!("{side:?} {} {} -> {}", req.method(), req.url(), resp.status);
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], resp.content_type.as_bytes())
        .unwrap_or_else(|()| unreachable!("a constant header is valid"));
    let _ = req.respond(
        tiny_http::Response::from_data(resp.body)
            .with_status_code(resp.status)
            .with_header(header),
    );
}

/// Serves `server` on [`THREADS`] threads until it is unblocked (`Server::unblock`).
pub fn serve(
    server: Arc<tiny_http::Server>,
    registry: Arc<Registry>,
    side: Side,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..THREADS)
        .map(|i| {
            let server = server.clone();
            let registry = registry.clone();
            std::thread::Builder::new()
                .name(format!("mds-{side:?}-{i}").to_lowercase())
                .spawn(move || {
                    for req in server.incoming_requests() {
                        answer(&registry, side, req);
                    }
                })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn public_connections_do_not_wait_on_nagle() {
        use nix::sys::socket::{getsockopt, sockopt::TcpNoDelay};
        use std::net::{Ipv4Addr, TcpStream};
        let l = public_listener(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (accepted, _) = l.accept().unwrap();
        assert!(getsockopt(&accepted, TcpNoDelay).unwrap());
    }
}
