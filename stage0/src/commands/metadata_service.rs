//! `rkt metadata-service [--listen-port=PORT]`: the appc metadata service, as rkt ran it: the
//! registration side on the root-only unix socket (`/run/rkt/metadata-svc.sock`, or
//! `$RKT_METADATA_SOCKET`), the public side on every address at `--listen-port` (18112).
//! Runs until killed; `--background` (used by `rkt run --mds-register` to start it on demand)
//! detaches first.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context as _;
use mds::server::{self, Side};
use mds::Registry;

use super::Globals;

/// Flags of `rkt metadata-service`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TCP port of the public side.
    #[arg(long, default_value_t = mds::DEFAULT_PORT)]
    pub listen_port: u16,
    /// Detach: fork, let the parent exit at once, serve in a new session (stdio to /dev/null).
    #[arg(long, hide = true)]
    pub background: bool,
}

/// Runs `rkt metadata-service`.
pub fn run(_g: &Globals, a: Args) -> anyhow::Result<i32> {
    if a.background {
        // SAFETY: no other thread exists yet (nothing is bound or spawned before this point), so
        // the child may run arbitrary code after fork.
        match unsafe { nix::unistd::fork() }.context("cannot fork the metadata service")? {
            nix::unistd::ForkResult::Parent { .. } => return Ok(0),
            nix::unistd::ForkResult::Child => {
                let _ = nix::unistd::setsid();
            }
        }
    }
    let socket = mds::socket_path();
    let public = Arc::new(
        server::bind_public(SocketAddr::from((Ipv4Addr::UNSPECIFIED, a.listen_port)))
            .context("metadata service: public side")?,
    );
    let registration = Arc::new(
        server::bind_registration(&socket).context("metadata service: registration side")?,
    );
    let registry = Arc::new(Registry::new(a.listen_port));
    let mut threads = server::serve_public(public, registry.clone())?;
    threads.extend(server::serve(registration, registry, Side::Registration)?);
    eprintln!(
        "rkt: metadata service listening on port {} (registration on {})",
        a.listen_port,
        socket.display()
    );
    for t in threads {
        let _ = t.join();
    }
    Ok(0)
}
