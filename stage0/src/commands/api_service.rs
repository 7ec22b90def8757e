//! `rkt api-service [--listen=ADDR]`: rkt's read-only gRPC API (docs/api-service.md) on
//! `--listen` (default `localhost:15441`, or `unix:PATH`) or on the sockets systemd passes, until SIGINT or
//! SIGTERM. Root or a member of the `rkt` group may run it; it changes nothing.

use anyhow::Context as _;
use api_service::v1alpha;

use super::version::{APPC_VERSION, RKT_CLI_VERSION};
use super::Globals;

/// Flags of `rkt api-service`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen for client API requests: HOST:PORT (default localhost:15441) or
    /// unix:PATH (a socket only root and the rkt group reach); not with systemd's sockets.
    #[arg(long)]
    pub listen: Option<String>,
}

/// Runs `rkt api-service`.
pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    eprintln!("rkt: API service starting...");
    let listeners = api_service::listeners(a.listen.as_deref()).context("API service")?;
    // A unix socket it made is the rkt group's to reach (mode 0660), as the data directory is
    // theirs to read.
    if let Some(gid) = stage0::store::datadir::lookup_group(stage0::store::datadir::GROUP) {
        for p in listeners
            .iter()
            .filter_map(api_service::Listener::made_path)
        {
            std::os::unix::fs::chown(&p, None, Some(gid))
                .with_context(|| format!("give {} to the rkt group", p.display()))?;
        }
    }
    let dir = pod_abi::paths::canonicalize(&g.dir).unwrap_or_else(|_| g.dir.clone());
    let info = v1alpha::Info {
        rkt_version: RKT_CLI_VERSION.to_string(),
        appc_version: APPC_VERSION.to_string(),
        api_version: api_service::API_VERSION.to_string(),
        global_flags: Some(v1alpha::GlobalFlags {
            dir: dir.display().to_string(),
            system_config_dir: g.system_config.display().to_string(),
            local_config_dir: g.local_config.display().to_string(),
            user_config_dir: g
                .user_config
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            insecure_flags: g.insecure_options.clone(),
            trust_keys_from_https: g.trust_keys_from_https,
        }),
    };
    let source = stage0::api::DataDirSource::new(&dir, info);
    api_service::serve(listeners, source, |addrs| {
        for a in addrs {
            eprintln!("rkt: API service listening on {a}");
        }
        eprintln!("rkt: API service running");
    })
    .context("API service")?;
    eprintln!("rkt: API service exiting...");
    Ok(0)
}
