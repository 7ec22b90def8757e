//! `--mds-register`: registers a pod and its apps' image manifests with the metadata service
//! (`rkt metadata-service`, started on demand when its socket does not answer), and
//! unregisters pods at `rm`/`gc`. See docs/metadata.md.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mds::client::Client;

/// How long a service started on demand may take to answer on its socket.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// Metadata service registration errors.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The service could not be started on demand.
    #[error("cannot start the metadata service (rkt metadata-service)")]
    Start(#[source] std::io::Error),
    /// The service started on demand did not answer on its socket in time.
    #[error("the metadata service started on demand did not answer on {0} within {1:?}")]
    NoAnswer(String, Duration),
    /// A manifest could not be read.
    #[error("cannot read {0}")]
    Read(String, #[source] std::io::Error),
    /// The service refused or failed a registration.
    #[error("cannot register the pod with the metadata service")]
    Register(#[source] mds::MdsError),
}

/// A pod's registration: the token of its `AC_METADATA_URL` and the service's public port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Random token (hex, 256 bits).
    pub token: String,
    /// The service's public TCP port.
    pub port: u16,
}

/// Starts `rkt metadata-service --background` (this executable: it forks, its parent exits, the
/// service runs on in its own session, never a child of the stage1 that replaces this process)
/// when nothing answers on the registration socket, and waits for it to answer; `notice` hears
/// that it was started.
pub fn ensure_service(
    client: &Client,
    notice: &mut dyn FnMut(String),
) -> Result<(), MetadataError> {
    if client.is_up() {
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(MetadataError::Start)?;
    let mut cmd = Command::new(exe);
    cmd.args(["metadata-service", "--background"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Its own process group: a Ctrl-C at the pod's terminal does not reach the service.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let status = cmd.status().map_err(MetadataError::Start)?;
    if !status.success() {
        return Err(MetadataError::Start(std::io::Error::other(format!(
            "rkt metadata-service --background: {status}"
        ))));
    }
    notice(
        "started the metadata service on demand (run `rkt metadata-service` as a system service to manage it)"
            .into(),
    );
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if client.is_up() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(MetadataError::NoAnswer(
        client.socket().display().to_string(),
        START_TIMEOUT,
    ))
}

/// Registers pod `uuid` (its manifest file) and each app's image manifest (`(app name, file)`).
pub fn register(
    uuid: &str,
    pod_manifest: &Path,
    apps: &[(String, &Path)],
    notice: &mut dyn FnMut(String),
) -> Result<Registration, MetadataError> {
    let client = Client::new(mds::socket_path());
    ensure_service(&client, notice)?;
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| MetadataError::Read(p.display().to_string(), e));
    let token = mds::new_token().map_err(MetadataError::Register)?;
    let port = client
        .register_pod(uuid, &token, &read(pod_manifest)?)
        .map_err(MetadataError::Register)?;
    for (name, manifest) in apps {
        if let Err(e) = client.register_app(uuid, name, &read(manifest)?) {
            let _ = client.unregister_pod(uuid);
            return Err(MetadataError::Register(e));
        }
    }
    Ok(Registration { token, port })
}

/// Unregisters pod `uuid` if a service runs (best effort: `rm` and `gc` go on regardless);
/// a failure is returned for a warning.
pub fn unregister(uuid: &str) -> Result<(), mds::MdsError> {
    let client = Client::new(mds::socket_path());
    if !client.socket().exists() {
        return Ok(());
    }
    client.unregister_pod(uuid).map(drop)
}
