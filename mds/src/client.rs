//! The registration client: one HTTP/1.1 request per connection over the unix socket
//! (`Connection: close`), the answer parsed with `httparse`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::MdsError;

/// Longest answer read (bytes).
const MAX_ANSWER: u64 = 64 * 1024;
/// Timeout of each socket read and write.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of the registration socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client of the service listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether a service answers on the socket (a connection succeeds).
    pub fn is_up(&self) -> bool {
        UnixStream::connect(&self.socket).is_ok()
    }

    /// Registers pod `uuid` with `token` and its pod manifest (JSON); returns the service's
    /// public port.
    pub fn register_pod(&self, uuid: &str, token: &str, manifest: &[u8]) -> Result<u16, MdsError> {
        let what = "PUT /pods".to_string();
        let body = self.request("PUT", &format!("/pods/{uuid}?token={token}"), manifest)?;
        String::from_utf8_lossy(&body)
            .trim()
            .parse()
            .map_err(|_| MdsError::BadAnswer(what))
    }

    /// Registers the image manifest (JSON) of app `app` of pod `uuid`.
    pub fn register_app(
        &self,
        uuid: &str,
        app: &str,
        image_manifest: &[u8],
    ) -> Result<(), MdsError> {
        self.request("PUT", &format!("/pods/{uuid}/{app}"), image_manifest)
            .map(drop)
    }

    /// Unregisters pod `uuid`; `Ok(false)` when it was not registered.
    pub fn unregister_pod(&self, uuid: &str) -> Result<bool, MdsError> {
        match self.request("DELETE", &format!("/pods/{uuid}"), b"") {
            Ok(_) => Ok(true),
            Err(MdsError::Refused { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// One request; the answer's body on a 2xx status.
    fn request(&self, method: &str, path: &str, body: &[u8]) -> Result<Vec<u8>, MdsError> {
        let what = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let io = |source| MdsError::Io {
            what: format!("{what} on {}", self.socket.display()),
            source,
        };
        let mut s = UnixStream::connect(&self.socket).map_err(io)?;
        s.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        s.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).map_err(io)?;
        s.write_all(body).map_err(io)?;
        let mut answer = Vec::new();
        s.take(MAX_ANSWER).read_to_end(&mut answer).map_err(io)?;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let body_at = match resp.parse(&answer) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => return Err(MdsError::BadAnswer(what)),
        };
        let status = resp.code.ok_or_else(|| MdsError::BadAnswer(what.clone()))?;
        if (200..300).contains(&status) {
            return Ok(answer[body_at..].to_vec());
        }
        let message = String::from_utf8_lossy(&answer[body_at..])
            .trim()
            .to_string();
        Err(MdsError::Refused {
            what,
            status,
            message,
        })
    }
}
