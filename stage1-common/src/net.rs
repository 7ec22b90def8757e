//! The pod's networks, for both flavors, through the shared `cni` crate: before the pod
//! starts, `run` creates the pod's network namespace and attaches its networks (the ns flavor's
//! guest-init joins that namespace; the kvm flavor joins a tap to each interface); `gc` runs
//! `DEL` for every network recorded in `net-info.json` and removes the namespace, whether or
//! not the launcher lived to the end. The host side of the first network is where apps reach
//! host services (the metadata service).

use std::path::Path;

use cni::{PodNetOptions, PodNetwork};
use pod_abi::plan::Plan;

/// Why the pod's networks could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetSetupError {
    /// A plugin, a configuration or the namespace failed.
    #[error(transparent)]
    Cni(#[from] cni::CniError),
    /// The plan could not be rewritten with the plugins' DNS settings.
    #[error("cannot rewrite the launch plan with the networks' DNS settings")]
    Plan(#[source] std::io::Error),
}

/// The address at which the pod's apps reach the host's services: the host side of its first
/// network that has one (its gateway, as rkt did), `127.0.0.1` with `--net=host`, else `None`.
pub fn host_address(net: &PodNetwork) -> Option<String> {
    match &net.mode {
        cni::NetMode::Host => Some(crate::metadata::HOST_NET_ADDRESS.to_string()),
        _ => net
            .attached
            .iter()
            .map(|a| a.info.host_ip.clone())
            .find(|h| !h.is_empty()),
    }
}

/// Sets up the pod's networks for `--net=<net>`; `plan` gets the DNS settings the plugins
/// returned when the user gave none (written back before guest-init reads it).
pub fn setup(
    pod_dir: &Path,
    uuid: &str,
    net: &str,
    plan: &mut Plan,
) -> Result<PodNetwork, NetSetupError> {
    let pn = cni::setup(&PodNetOptions::for_stage1(pod_dir, uuid, net, &plan.net))?;
    let dns = pn
        .attached
        .iter()
        .map(|a| &a.result.dns)
        .find(|d| !d.nameservers.is_empty());
    let user_dns = !plan.net.dns.is_empty() || plan.net.resolv_conf.is_some();
    if let (Some(d), false) = (dns, user_dns) {
        plan.net.dns = d.nameservers.clone();
        if plan.net.dns_search.is_empty() {
            plan.net.dns_search = d.search.clone();
        }
        if plan.net.dns_opt.is_empty() {
            plan.net.dns_opt = d.options.clone();
        }
        if plan.net.dns_domain.is_empty() {
            plan.net.dns_domain = d.domain.clone();
        }
        let path = pod_abi::paths::PodPaths::new(pod_dir).plan();
        let b = serde_json::to_vec_pretty(plan).map_err(|e| NetSetupError::Plan(e.into()))?;
        pod_abi::podfile::write_atomic(&path, &b).map_err(NetSetupError::Plan)?;
    }
    Ok(pn)
}

/// Tears the pod's networks down (the `gc` entrypoint).
pub fn gc(pod_dir: &Path, uuid: &str) -> Result<(), cni::CniError> {
    cni::teardown(
        pod_dir,
        uuid,
        &cni::pod::stage1_plugin_dirs(pod_dir),
        cni::exec::DEFAULT_TIMEOUT,
    )
}
