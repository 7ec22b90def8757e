//! The appc metadata service (`rkt metadata-service`): a root-only registration side on a unix
//! socket, through which `rkt run --mds-register` registers a pod (its manifest, the image
//! manifest of each app and a random token), and the public side on TCP, which serves each pod's
//! `AC_METADATA_URL` (`http://<host IP>:<port>/<token>`) as the appc spec describes: manifests,
//! annotations, the pod UUID, image IDs and an HMAC-SHA512 identity (see docs/metadata.md).
//!
//! [`handler`] holds the request handling as pure functions, [`server`] the HTTP servers
//! (`tiny_http`), [`client`] the registration client used by stage0 and the stage1s.

pub mod client;
pub mod handler;
pub mod registry;
pub mod server;

pub use registry::{new_token, Registry};

/// rkt's public port of the metadata service (`common.MetadataServicePort`).
pub const DEFAULT_PORT: u16 = 18112;
/// rkt's registration socket.
pub const DEFAULT_SOCKET: &str = "/run/rkt/metadata-svc.sock";
/// Environment variable that overrides [`DEFAULT_SOCKET`] (tests, several services on a host).
pub const SOCKET_ENV: &str = "RKT_METADATA_SOCKET";

/// The registration socket in use: `$RKT_METADATA_SOCKET` or [`DEFAULT_SOCKET`].
pub fn socket_path() -> std::path::PathBuf {
    std::env::var_os(SOCKET_ENV)
        .filter(|v| !v.is_empty())
        .map(Into::into)
        .unwrap_or_else(|| DEFAULT_SOCKET.into())
}

/// The `AC_METADATA_URL` of a pod registered with `token`, reaching the service at `host`
/// (an IPv4 address or a bracketed IPv6 one) on `port`.
pub fn metadata_url(host: &str, port: u16, token: &str) -> String {
    format!("http://{host}:{port}/{token}")
}

/// Metadata service errors.
#[derive(Debug, thiserror::Error)]
pub enum MdsError {
    /// A request the service refuses (status 400).
    #[error("{0}")]
    BadRequest(String),
    /// An unknown pod or app (status 404).
    #[error("{0}")]
    NotFound(String),
    /// A token in use, or too many pods (status 409).
    #[error("{0}")]
    Conflict(String),
    /// The system's random source failed.
    #[error("cannot read random bytes: {0}")]
    Random(String),
    /// A socket could not be bound, connected to, read or written.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The service answered a registration request with an error.
    #[error("the metadata service refused {what}: {status} {message}")]
    Refused {
        /// The request.
        what: String,
        /// HTTP status.
        status: u16,
        /// The service's message.
        message: String,
    },
    /// The service's answer could not be parsed.
    #[error("bad answer from the metadata service to {0}")]
    BadAnswer(String),
}
