//! rkt's API service (`rkt api-service`): the read-only gRPC `PublicAPI` of rkt's
//! `api/v1alpha/api.proto`, vendored unchanged as `api-service/proto/v1alpha/api.proto` and
//! compiled at build time, so any client generated from rkt's proto talks to it.
//!
//! This crate owns the wire side: the generated types ([`v1alpha`]), rkt's list filters
//! ([`filter`]), the events derived from readings of the data directory ([`events`]), the
//! listening sockets ([`listeners`]: `--listen` or systemd socket activation) and the server
//! ([`serve`]). What it reports comes from a [`Source`] (stage0 reads the data
//! directory); each request reads it afresh on a blocking thread, so the service holds no state
//! a pod could make stale, and its start, stop or crash touches no pod or image.

pub mod events;
pub mod filter;

use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{FromRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

/// The generated v1alpha messages, the `PublicAPI` server and its client.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1alpha {
    tonic::include_proto!("v1alpha");
}

use v1alpha::public_api_server::{PublicApi, PublicApiServer};

/// The API version `GetInfo` reports (rkt's `supportedAPIVersion`).
pub const API_VERSION: &str = "1.0.0-alpha";
/// Where the service listens without `--listen` (rkt's `APIServiceListenAddr`).
pub const DEFAULT_LISTEN: &str = "localhost:15441";
/// Longest a request may take before the client gets `DEADLINE_EXCEEDED`, in seconds.
const REQUEST_TIMEOUT_SECS: u64 = 30;
/// Requests served at once on one connection.
const PER_CONNECTION_REQUESTS: usize = 16;
/// Largest request accepted, in bytes (the requests are filters and IDs).
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// First file descriptor systemd passes (`SD_LISTEN_FDS_START`).
const SD_LISTEN_FDS_START: i32 = 3;
/// Most sockets accepted from systemd.
const MAX_SYSTEMD_SOCKETS: i32 = 16;

/// What the service reports: the pods and images of one data directory, read per request.
pub trait Source: Send + Sync + 'static {
    /// rkt's versions and the global flags the service runs with.
    fn info(&self) -> v1alpha::Info;
    /// Every pod, with its manifest (the service drops it unless `detail` is asked for).
    fn pods(&self) -> Result<Vec<v1alpha::Pod>, SourceError>;
    /// The pod `id` (a UUID).
    fn pod(&self, id: &str) -> Result<v1alpha::Pod, SourceError>;
    /// Every image, with its manifest.
    fn images(&self) -> Result<Vec<v1alpha::Image>, SourceError>;
    /// The image `id` (its full image ID).
    fn image(&self, id: &str) -> Result<v1alpha::Image, SourceError>;
}

/// Why a [`Source`] could not answer; each becomes its gRPC status code.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No such pod or image (`NOT_FOUND`).
    #[error("{0}")]
    NotFound(String),
    /// The request names nothing that could exist (`INVALID_ARGUMENT`).
    #[error("{0}")]
    InvalidArgument(String),
    /// The data directory could not be read (`INTERNAL`).
    #[error("{0}")]
    Internal(String),
}

impl From<SourceError> for Status {
    fn from(e: SourceError) -> Status {
        match e {
            SourceError::NotFound(m) => Status::not_found(m),
            SourceError::InvalidArgument(m) => Status::invalid_argument(m),
            SourceError::Internal(m) => Status::internal(m),
        }
    }
}

/// Errors of setting up or running the service.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `--listen` was given to a service started by systemd with its sockets (rkt's refusal).
    #[error("started under systemd.socket(5) with {0} socket(s), but --listen was given")]
    ListenUnderSystemd(i32),
    /// `LISTEN_FDS` is not a number of sockets this service takes.
    #[error("LISTEN_FDS={0:?}: expected 1 to {MAX_SYSTEMD_SOCKETS} sockets")]
    BadListenFds(String),
    /// A descriptor systemd passed is not a listening TCP socket.
    #[error("descriptor {0} from systemd is not a listening TCP socket")]
    NotTcpListener(i32),
    /// The `--listen` address does not resolve.
    #[error("cannot resolve --listen={0:?}")]
    Resolve(String, #[source] std::io::Error),
    /// Binding the address failed (in use, not local, not permitted).
    #[error("cannot listen on {0}")]
    Bind(String, #[source] std::io::Error),
    /// The async runtime could not start.
    #[error("cannot start the service's runtime")]
    Runtime(#[source] std::io::Error),
    /// The server stopped with an error.
    #[error("the gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
}

/// The service's listening sockets: systemd's (`LISTEN_PID`/`LISTEN_FDS`, sd_listen_fds(3)),
/// which `listen` must then not name, else `listen` (default [`DEFAULT_LISTEN`]) bound on its
/// first address that binds, as rkt (Go's `net.Listen`) does.
pub fn listeners(listen: Option<&str>) -> Result<Vec<TcpListener>, ApiError> {
    if let Some(n) = systemd_fds()? {
        if listen.is_some() {
            return Err(ApiError::ListenUnderSystemd(n));
        }
        return (SD_LISTEN_FDS_START..SD_LISTEN_FDS_START + n)
            .map(systemd_listener)
            .collect();
    }
    let addr = listen.unwrap_or(DEFAULT_LISTEN);
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| ApiError::Resolve(addr.to_string(), e))?
        .collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    // IPv4 first, as Go's resolver orders `localhost`.
    let (v4, v6): (Vec<_>, Vec<_>) = addrs.into_iter().partition(SocketAddr::is_ipv4);
    for a in v4.into_iter().chain(v6) {
        match TcpListener::bind(a) {
            Ok(l) => return Ok(vec![l]),
            Err(e) => last = e,
        }
    }
    Err(ApiError::Bind(addr.to_string(), last))
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

/// Takes descriptor `fd` from systemd as a listener, after checking it is a listening TCP
/// socket (a wrong unit file must not make the service accept on, or close, something else).
fn systemd_listener(fd: i32) -> Result<TcpListener, ApiError> {
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
    let tcp = int_opt(libc::SO_TYPE) == Some(libc::SOCK_STREAM)
        && int_opt(libc::SO_ACCEPTCONN) == Some(1)
        && matches!(
            int_opt(libc::SO_DOMAIN),
            Some(libc::AF_INET) | Some(libc::AF_INET6)
        );
    if !tcp {
        return Err(ApiError::NotTcpListener(fd));
    }
    // SAFETY: systemd passed `fd` to this process for it to own (sd_listen_fds(3)); nothing
    // else in the process uses it, and it was just checked to be a listening TCP socket.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(TcpListener::from(owned))
}

/// Serves `source` on `listeners` until SIGINT or SIGTERM, then finishes the requests under
/// way and returns. `ready` gets the bound addresses once the service accepts connections.
pub fn serve<S: Source>(
    listeners: Vec<TcpListener>,
    source: S,
    ready: impl FnOnce(&[SocketAddr]),
) -> Result<(), ApiError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_io()
        .enable_time()
        .build()
        .map_err(ApiError::Runtime)?;
    rt.block_on(async move {
        let mut addrs = Vec::new();
        let mut incoming: Pin<
            Box<dyn Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send>,
        > = Box::pin(tokio_stream::empty());
        for l in listeners {
            l.set_nonblocking(true).map_err(ApiError::Runtime)?;
            if let Ok(a) = l.local_addr() {
                addrs.push(a);
            }
            let l = tokio::net::TcpListener::from_std(l).map_err(ApiError::Runtime)?;
            incoming = Box::pin(incoming.merge(TcpListenerStream::new(l)));
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(ApiError::Runtime)?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(ApiError::Runtime)?;
        let stop = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        let svc = PublicApiServer::new(Api {
            source: Arc::new(source),
            events: Arc::new(events::Hub::default()),
        })
        .max_decoding_message_size(MAX_REQUEST_BYTES);
        ready(&addrs);
        tonic::transport::Server::builder()
            .timeout(Duration::from_secs(REQUEST_TIMEOUT_SECS))
            .concurrency_limit_per_connection(PER_CONNECTION_REQUESTS)
            .add_service(svc)
            .serve_with_incoming_shutdown(incoming, stop)
            .await
            .map_err(ApiError::Serve)
    })
}

/// The `PublicAPI` over a [`Source`].
struct Api<S> {
    source: Arc<S>,
    events: Arc<events::Hub>,
}

impl<S: Source> Api<S> {
    /// Runs `f` on the source on a blocking thread (it reads files and the store's index).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&S) -> Result<T, SourceError> + Send + 'static,
    ) -> Result<T, Status> {
        let s = self.source.clone();
        match tokio::task::spawn_blocking(move || f(&s)).await {
            Ok(r) => r.map_err(Status::from),
            Err(e) => Err(Status::internal(format!(
                "the request's reader failed: {e}"
            ))),
        }
    }
}

/// A stream of one message type, as the streaming RPCs return.
type Streamed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Source> PublicApi for Api<S> {
    async fn get_info(
        &self,
        _: Request<v1alpha::GetInfoRequest>,
    ) -> Result<Response<v1alpha::GetInfoResponse>, Status> {
        Ok(Response::new(v1alpha::GetInfoResponse {
            info: Some(self.source.info()),
        }))
    }

    async fn list_pods(
        &self,
        req: Request<v1alpha::ListPodsRequest>,
    ) -> Result<Response<v1alpha::ListPodsResponse>, Status> {
        let req = req.into_inner();
        let mut pods = self.read(|s| s.pods()).await?;
        pods.retain(|p| filter::pod_matches_any(p, &req.filters));
        if !req.detail {
            for p in &mut pods {
                p.manifest.clear();
            }
        }
        Ok(Response::new(v1alpha::ListPodsResponse { pods }))
    }

    async fn inspect_pod(
        &self,
        req: Request<v1alpha::InspectPodRequest>,
    ) -> Result<Response<v1alpha::InspectPodResponse>, Status> {
        let id = req.into_inner().id;
        let pod = self.read(move |s| s.pod(&id)).await?;
        Ok(Response::new(v1alpha::InspectPodResponse {
            pod: Some(pod),
        }))
    }

    async fn list_images(
        &self,
        req: Request<v1alpha::ListImagesRequest>,
    ) -> Result<Response<v1alpha::ListImagesResponse>, Status> {
        let req = req.into_inner();
        let mut images = self.read(|s| s.images()).await?;
        images.retain(|i| filter::image_matches_any(i, &req.filters));
        if !req.detail {
            for i in &mut images {
                i.manifest.clear();
            }
        }
        Ok(Response::new(v1alpha::ListImagesResponse { images }))
    }

    async fn inspect_image(
        &self,
        req: Request<v1alpha::InspectImageRequest>,
    ) -> Result<Response<v1alpha::InspectImageResponse>, Status> {
        let id = req.into_inner().id;
        let image = self.read(move |s| s.image(&id)).await?;
        Ok(Response::new(v1alpha::InspectImageResponse {
            image: Some(image),
        }))
    }

    type ListenEventsStream = Streamed<v1alpha::ListenEventsResponse>;

    async fn listen_events(
        &self,
        req: Request<v1alpha::ListenEventsRequest>,
    ) -> Result<Response<Self::ListenEventsStream>, Status> {
        let window = events::Window::new(req.into_inner().filter);
        let rx = self.events.listen(&self.source, window).await?;
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type GetLogsStream = Streamed<v1alpha::GetLogsResponse>;

    async fn get_logs(
        &self,
        _: Request<v1alpha::GetLogsRequest>,
    ) -> Result<Response<Self::GetLogsStream>, Status> {
        Err(Status::unimplemented(
            "GetLogs is not implemented: rkt read the apps' logs from the host's journal, and \
             this rkt keeps none (an app's output is the pod's output, or `rkt attach`'s)",
        ))
    }
}
