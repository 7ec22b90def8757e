//! rkt's API service (`rkt api-service`): the read-only gRPC `PublicAPI` of rkt's
//! `api/v1alpha/api.proto`, vendored unchanged as `api-service/proto/v1alpha/api.proto` and
//! compiled at build time, so any client generated from rkt's proto talks to it.
//!
//! This crate owns the wire side: the generated types ([`v1alpha`]), rkt's list filters
//! ([`filter`]), the events derived from readings of the data directory ([`events`]), the
//! listening sockets ([`listeners`]: `--listen`, a TCP address or `unix:PATH`, or systemd socket
//! activation) and the server ([`serve`]). What it reports comes from a [`Source`] (stage0 reads the data
//! directory); each request reads it afresh on a blocking thread, so the service holds no state
//! a pod could make stale, and its start, stop or crash touches no pod or image.

pub mod events;
pub mod filter;
mod listen;
mod slot;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

/// The generated v1alpha messages, the `PublicAPI` server and its client.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1alpha {
    tonic::include_proto!("v1alpha");
}

pub use listen::{listeners, Listener};
use v1alpha::public_api_server::{PublicApi, PublicApiServer};

/// The API version `GetInfo` reports (rkt's `supportedAPIVersion`).
pub const API_VERSION: &str = "1.0.0-alpha";
/// Where the service listens without `--listen` (rkt's `APIServiceListenAddr`).
pub const DEFAULT_LISTEN: &str = "localhost:15441";
/// Longest a request may take before the client gets `DEADLINE_EXCEEDED`, in seconds.
const REQUEST_TIMEOUT_SECS: u64 = 30;
/// Requests served at once on one connection.
const PER_CONNECTION_REQUESTS: usize = 16;
/// Connections served at once, over all listeners; more wait in the listen backlog (well under
/// the process's descriptor limit, which an accept loop must never reach).
const MAX_CONNECTIONS: usize = 256;
/// Idle time after which the server pings a client, and how long the answer may take before
/// the connection is closed, in seconds.
const KEEPALIVE_SECS: (u64, u64) = (60, 20);
/// Largest request accepted, in bytes (the requests are filters and IDs).
const MAX_REQUEST_BYTES: usize = 64 * 1024;

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
    #[error("LISTEN_FDS={0:?}: expected 1 to {max} sockets", max = listen::MAX_SYSTEMD_SOCKETS)]
    BadListenFds(String),
    /// A descriptor systemd passed is not a listening stream socket (TCP or unix).
    #[error("descriptor {0} from systemd is not a listening TCP or unix stream socket")]
    NotListener(i32),
    /// `--listen=unix:PATH` names something that is not a socket, or a socket a service
    /// still answers on.
    #[error("{0} exists and is {1}")]
    PathTaken(PathBuf, &'static str),
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

/// Serves `source` on `listeners` until SIGINT or SIGTERM, then finishes the requests under
/// way, removes the unix sockets it made and returns. `ready` gets the listeners' addresses
/// once the service accepts connections.
pub fn serve<S: Source>(
    listeners: Vec<Listener>,
    source: S,
    ready: impl FnOnce(&[String]),
) -> Result<(), ApiError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_io()
        .enable_time()
        .build()
        .map_err(ApiError::Runtime)?;
    let made: Vec<PathBuf> = listeners.iter().filter_map(Listener::made_path).collect();
    let served = rt.block_on(async move {
        let addrs: Vec<String> = listeners.iter().map(Listener::describe).collect();
        let mut tcp: Option<Incoming<tokio::net::TcpStream>> = None;
        let mut unix: Option<Incoming<tokio::net::UnixStream>> = None;
        for l in listeners {
            match l {
                Listener::Tcp(l) => {
                    l.set_nonblocking(true).map_err(ApiError::Runtime)?;
                    let l = tokio::net::TcpListener::from_std(l).map_err(ApiError::Runtime)?;
                    // Without TCP_NODELAY a response written in parts waits for the
                    // client's delayed ACK: 44 ms a ListPods, against 0.2 ms a GetInfo.
                    let accepted = TcpListenerStream::new(l).map(|c| {
                        c.and_then(|s| {
                            s.set_nodelay(true)?;
                            Ok(s)
                        })
                    });
                    tcp = Some(merged(tcp, accepted));
                }
                Listener::Unix(l, _) => {
                    l.set_nonblocking(true).map_err(ApiError::Runtime)?;
                    let l = tokio::net::UnixListener::from_std(l).map_err(ApiError::Runtime)?;
                    unix = Some(merged(unix, UnixListenerStream::new(l)));
                }
            }
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(ApiError::Runtime)?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(ApiError::Runtime)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let _ = stop_tx.send(true);
        });
        let svc = PublicApiServer::new(Api {
            source: Arc::new(source),
            events: Arc::new(events::Hub::default()),
        })
        .max_decoding_message_size(MAX_REQUEST_BYTES);
        let server = || {
            tonic::transport::Server::builder()
                .timeout(Duration::from_secs(REQUEST_TIMEOUT_SECS))
                .concurrency_limit_per_connection(PER_CONNECTION_REQUESTS)
                .http2_keepalive_interval(Some(Duration::from_secs(KEEPALIVE_SECS.0)))
                .http2_keepalive_timeout(Some(Duration::from_secs(KEEPALIVE_SECS.1)))
                .add_service(svc.clone())
        };
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        ready(&addrs);
        tokio::try_join!(
            serve_on(server(), tcp, &slots, stop_rx.clone()),
            serve_on(server(), unix, &slots, stop_rx.clone()),
        )
        .map(|_| ())
        .map_err(ApiError::Serve)
    });
    for p in made {
        let _ = std::fs::remove_file(p);
    }
    served
}

/// Accepted connections of one kind, from all listeners of that kind.
type Incoming<T> = Pin<Box<dyn Stream<Item = std::io::Result<T>> + Send>>;

/// `all` with the connections of `more` added.
fn merged<T: 'static>(
    all: Option<Incoming<T>>,
    more: impl Stream<Item = std::io::Result<T>> + Send + 'static,
) -> Incoming<T> {
    match all {
        Some(all) => Box::pin(all.merge(more)),
        None => Box::pin(more),
    }
}

/// Serves `router` on `incoming` (nothing when there is no listener of that kind), each
/// connection holding one of `slots`, until `stop` turns true.
async fn serve_on<T>(
    router: tonic::transport::server::Router,
    incoming: Option<Incoming<T>>,
    slots: &Arc<tokio::sync::Semaphore>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error>
where
    T: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
{
    let Some(incoming) = incoming else {
        return Ok(());
    };
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    router
        .serve_with_incoming_shutdown(slot::limit(incoming, slots), stopped)
        .await
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
        read_blocking(&self.source, f).await
    }
}

/// Runs `f` on `source` on a blocking thread: every reading of the data directory, a request's
/// or the event poller's.
async fn read_blocking<S: Source, T: Send + 'static>(
    source: &Arc<S>,
    f: impl FnOnce(&S) -> Result<T, SourceError> + Send + 'static,
) -> Result<T, Status> {
    let s = source.clone();
    match tokio::task::spawn_blocking(move || f(&s)).await {
        Ok(r) => r.map_err(Status::from),
        Err(e) => Err(Status::internal(format!(
            "the data directory's reader failed: {e}"
        ))),
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
