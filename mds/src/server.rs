//! The two HTTP servers (`tiny_http`): the public side on TCP and the registration side on a
//! root-only unix socket, each served by a few threads over one shared [`Registry`].

use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::handler::{self, Request, Response};
use crate::registry::Registry;
use crate::MdsError;

/// Largest body of a public request (bytes): sign/verify forms.
pub const MAX_PUBLIC_BODY: u64 = 64 * 1024;
/// Largest body of a registration request (bytes): a manifest.
pub const MAX_REGISTRATION_BODY: u64 = 1024 * 1024;
/// Threads serving each side (count): a slow client holds one.
pub const THREADS: usize = 8;
/// Requests of one peer address the public side answers at once (count): beyond it a request
/// gets 429 before its body is read, so a pod stalling bodies holds at most this many of the
/// [`THREADS`] and every other pod is still answered.
pub const PER_PEER: usize = 2;
/// How long a public connection may go without delivering a byte the server waits for, or
/// without taking one it sends (seconds): a request announcing a body it never sends, or a
/// connection left open and idle, is closed then (`SO_RCVTIMEO`/`SO_SNDTIMEO` on the
/// listener, which accepted connections inherit).
pub const PUBLIC_IO_TIMEOUT_SECS: i64 = 2;
/// The most a public request may take to arrive, head and body (seconds): a peer dripping a
/// byte just inside [`PUBLIC_IO_TIMEOUT_SECS`] is cut off then.
pub const PUBLIC_REQUEST_DEADLINE_SECS: u64 = 5;
/// Largest request head (request line and headers) of a public request (bytes).
pub const MAX_PUBLIC_HEAD: usize = 16 * 1024;
/// Most headers in a public request (count).
const MAX_PUBLIC_HEADERS: usize = 64;

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
pub fn bind_public(addr: SocketAddr) -> Result<PublicServer, MdsError> {
    Ok(PublicServer {
        listener: public_listener(addr)?,
        stop: AtomicBool::new(false),
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
    use nix::sys::socket::{setsockopt, sockopt};
    let l = std::net::TcpListener::bind(addr).map_err(err)?;
    let t = nix::sys::time::TimeVal::new(PUBLIC_IO_TIMEOUT_SECS, 0);
    setsockopt(&l, sockopt::TcpNoDelay, &true)
        .and_then(|()| setsockopt(&l, sockopt::ReceiveTimeout, &t))
        .and_then(|()| setsockopt(&l, sockopt::SendTimeout, &t))
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

/// In-flight public requests per peer address.
#[derive(Default)]
struct Peers(Mutex<HashMap<IpAddr, usize>>);

/// One counted connection; uncounted on drop.
struct PeerSlot<'a>(&'a Peers, IpAddr);

impl Peers {
    /// A slot for `peer`, or None if it has [`PER_PEER`] requests in flight.
    fn take(&self, peer: IpAddr) -> Option<PeerSlot<'_>> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(peer).or_insert(0);
        if *n >= PER_PEER {
            return None;
        }
        *n += 1;
        Some(PeerSlot(self, peer))
    }
}

impl Drop for PeerSlot<'_> {
    fn drop(&mut self) {
        let mut m = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// The public side: a small HTTP/1.1 server of its own, one request per connection
/// (`Connection: close`), served by [`THREADS`] threads that accept in turn. Every pod can
/// reach it, so nothing it reads is unbounded: the head is at most [`MAX_PUBLIC_HEAD`], a body
/// over [`MAX_PUBLIC_BODY`] (by its `Content-Length`) is refused before it is read, chunked
/// bodies are refused, each read waits at most [`PUBLIC_IO_TIMEOUT_SECS`] and the whole
/// request at most [`PUBLIC_REQUEST_DEADLINE_SECS`], and one peer address holds at most
/// [`PER_PEER`] of the threads. (tiny_http, which serves the root-only registration socket,
/// drains an unread body into one buffer of the announced length: a `Content-Length` of
/// 100 GB made it abort the process.)
pub struct PublicServer {
    listener: std::net::TcpListener,
    stop: AtomicBool,
}

impl PublicServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Stops the serving threads (each ends after its current connection).
    pub fn unblock(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(mut a) = self.listener.local_addr() {
            if a.ip().is_unspecified() {
                a.set_ip(IpAddr::from([127, 0, 0, 1]));
            }
            for _ in 0..THREADS {
                let _ = std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1));
            }
        }
    }
}

/// Serves the public side on [`THREADS`] threads until [`PublicServer::unblock`].
pub fn serve_public(
    server: Arc<PublicServer>,
    registry: Arc<Registry>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let peers = Arc::new(Peers::default());
    (0..THREADS)
        .map(|i| {
            let server = server.clone();
            let registry = registry.clone();
            let peers = peers.clone();
            std::thread::Builder::new()
                .name(format!("mds-public-{i}"))
                .spawn(move || loop {
                    let accepted = server.listener.accept();
                    if server.stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok((mut conn, peer)) = accepted else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let resp = match peers.take(peer.ip()) {
                        None => Response::text(429, "too many requests"),
                        Some(_slot) => match read_request(&mut conn) {
                            Ok(req) => {
                                let r = Request {
                                    method: &req.method,
                                    url: &req.url,
                                    flavor: req.flavor.as_deref(),
                                    body: &req.body,
                                };
                                handler::public(&registry, &r)
                            }
                            Err(Some(resp)) => {
                                // Unread request bytes would make the close a reset, which
                                // can lose the answer: end our side, then drain a little.
                                let _ = write_response(&mut conn, &resp);
                                let _ = conn.shutdown(std::net::Shutdown::Write);
                                drain(&mut conn);
                                continue;
                            }
                            Err(None) => continue,
                        },
                    };
                    log::debug!("Public {peer} -> {}", resp.status);
                    let _ = write_response(&mut conn, &resp);
                })
        })
        .collect()
}

/// A public request as read.
struct OwnedRequest {
    method: String,
    url: String,
    flavor: Option<String>,
    body: Vec<u8>,
}

/// Reads one request within the bounds of [`PublicServer`]; `Err(Some(response))` for a
/// request to refuse, `Err(None)` when the peer went away or stalled (nothing to answer).
fn read_request(conn: &mut std::net::TcpStream) -> Result<OwnedRequest, Option<Response>> {
    let deadline = Instant::now() + Duration::from_secs(PUBLIC_REQUEST_DEADLINE_SECS);
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let mut searched = 0usize;
    let head_len = loop {
        // Only the bytes new since the last look (and the 3 before them) are searched.
        let from = searched.saturating_sub(3);
        if let Some(i) = buf
            .get(from..)
            .and_then(|b| b.windows(4).position(|w| w == b"\r\n\r\n"))
        {
            break from + i + 4;
        }
        searched = buf.len();
        if buf.len() > MAX_PUBLIC_HEAD {
            return Err(Some(Response::text(431, "request head too large")));
        }
        let n = read_by(conn, &mut chunk, deadline).ok_or(None)?;
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    };
    let (method, url, flavor, chunked, length) = {
        let mut headers = [httparse::EMPTY_HEADER; MAX_PUBLIC_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(buf.get(..head_len).unwrap_or_default()) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(Some(Response::text(400, "bad request"))),
        }
        let header = |name: &str| {
            parsed
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
        };
        (
            parsed.method.unwrap_or_default().to_string(),
            parsed.path.unwrap_or_default().to_string(),
            header(handler::FLAVOR_HEADER.0),
            header("transfer-encoding").is_some(),
            header("content-length"),
        )
    };
    if chunked {
        return Err(Some(Response::text(411, "a body needs a Content-Length")));
    }
    let len = match length.map(|v| v.trim().parse::<u64>()) {
        None => 0,
        Some(Ok(n)) if n <= MAX_PUBLIC_BODY => n,
        Some(Ok(_)) => return Err(Some(Response::text(413, "request body too large"))),
        Some(Err(_)) => return Err(Some(Response::text(400, "bad Content-Length"))),
    };
    let len = usize::try_from(len).map_err(|_| None)?;
    let mut body = buf.split_off(head_len);
    while body.len() < len {
        let n = read_by(conn, &mut chunk, deadline).ok_or(None)?;
        body.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    body.truncate(len);
    Ok(OwnedRequest {
        method,
        url,
        flavor,
        body,
    })
}

/// One read of at least a byte before `deadline` (None: the peer closed, failed or stalled).
fn read_by(conn: &mut std::net::TcpStream, buf: &mut [u8], deadline: Instant) -> Option<usize> {
    let left = deadline.checked_duration_since(Instant::now())?;
    let per_read = Duration::from_secs(u64::try_from(PUBLIC_IO_TIMEOUT_SECS).unwrap_or(2));
    conn.set_read_timeout(Some(left.min(per_read).max(Duration::from_millis(1))))
        .ok()?;
    match conn.read(buf) {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}

/// Reads and drops what a refused request still sends: at most [`MAX_PUBLIC_BODY`] and
/// [`MAX_PUBLIC_HEAD`] more, for at most a second.
fn drain(conn: &mut std::net::TcpStream) {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut left = usize::try_from(MAX_PUBLIC_BODY).unwrap_or(0) + MAX_PUBLIC_HEAD;
    let mut chunk = [0u8; 4096];
    while left > 0 {
        match read_by(conn, &mut chunk, deadline) {
            Some(n) => left = left.saturating_sub(n),
            None => return,
        }
    }
}

/// Writes `resp` and closes the request (`Connection: close`).
fn write_response(conn: &mut std::net::TcpStream, resp: &Response) -> std::io::Result<()> {
    use std::io::Write;
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(&resp.body);
    conn.write_all(&out)?;
    conn.flush()
}

/// The reason phrase of the statuses the service sends.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

/// Serves `server` (the registration side) on [`THREADS`] threads until it is unblocked
/// (`Server::unblock`).
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

    /// The attack: a pod opens connections announcing request bodies it never sends (and
    /// one it leaves idle). Another peer is still answered at once, and each stalled
    /// connection is closed after [`PUBLIC_IO_TIMEOUT_SECS`].
    #[test]
    fn stalled_bodies_neither_block_other_peers_nor_stay_open() {
        use std::io::Write;
        use std::net::{Ipv4Addr, TcpStream};
        use std::time::{Duration, Instant};
        let server = Arc::new(bind_public(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap());
        let addr = server.local_addr().unwrap();
        let registry = Arc::new(Registry::new(addr.port()));
        let threads = serve_public(server.clone(), registry).unwrap();
        // A body announced as 100 GB: refused from its header (tiny_http aborted the process
        // allocating a buffer of that size), and the service goes on.
        let mut huge = TcpStream::connect(addr).unwrap();
        huge.write_all(b"POST /x/acMetadata/v1/pod/hmac/sign HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000000\r\n\r\nabc")
            .unwrap();
        let mut answer = String::new();
        huge.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 413 "), "{answer:?}");
        let mut stalled = Vec::new();
        for _ in 0..(THREADS + 2) {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"POST /x/acMetadata/v1/pod/hmac/sign HTTP/1.1\r\nHost: a\r\nContent-Length: 60000\r\n\r\n")
                .unwrap();
            stalled.push(c);
        }
        stalled.push(TcpStream::connect(addr).unwrap()); // Idle: not even headers.
        std::thread::sleep(Duration::from_millis(300));
        // Another peer (127.0.0.2 is loopback too).
        let t0 = Instant::now();
        let sock = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Stream,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let from = nix::sys::socket::SockaddrIn::new(127, 0, 0, 2, 0);
        nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&sock), &from).unwrap();
        let to = nix::sys::socket::SockaddrIn::from(match addr {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!("bound to 127.0.0.1"),
        });
        nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&sock), &to).unwrap();
        let mut good = TcpStream::from(sock);
        good.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        good.write_all(b"GET /nosuchtoken/acMetadata/v1/pod/uuid HTTP/1.1\r\nHost: a\r\nMetadata-Flavor: AppContainer\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        good.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 "), "{answer:?}");
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        // The stalled connections end (EOF or a reset): [`PER_PEER`] at a time, each by the
        // request deadline, the others at once with 429.
        let t0 = Instant::now();
        for mut c in stalled {
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = Vec::new();
            let _ = c.read_to_end(&mut buf);
        }
        let limit = Duration::from_secs(PUBLIC_REQUEST_DEADLINE_SECS + 3);
        assert!(t0.elapsed() < limit, "{:?}", t0.elapsed());
        server.unblock();
        for t in threads {
            let _ = t.join();
        }
    }
}
