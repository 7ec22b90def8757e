//! The pod's networks in the ns flavor, through the shared `cni` crate: before the pod starts,
//! `run` creates the pod's network namespace and attaches its networks (guest-init then
//! joins that namespace); `gc` runs `DEL` for every network recorded in `net-info.json` and
//! removes the namespace, whether or not the launcher lived to the end.

use std::path::{Path, PathBuf};

use anyhow::Context;
use cni::{PluginDirs, PodNetOptions, PodNetwork};
use pod_abi::plan::Plan;

/// rkt's plugin dir inside a stage1 image.
const STAGE1_PLUGIN_DIR: &str = "usr/lib/rkt/plugins/net";
/// Time each plugin call may take.
const PLUGIN_TIMEOUT: std::time::Duration = cni::exec::DEFAULT_TIMEOUT;

/// The plugin dirs: the stage1 image's own (beside this executable, which stage0 runs from
/// the store's read-only tree; never one inside the pod directory), then the host's.
pub fn plugin_dirs(pod_dir: &Path) -> PluginDirs {
    let exe = std::env::current_exe().ok();
    let pod = std::fs::canonicalize(pod_dir).unwrap_or_else(|_| pod_dir.to_path_buf());
    let own = exe
        .filter(|e| !e.starts_with(&pod))
        .and_then(|e| e.parent().map(|d| d.join(STAGE1_PLUGIN_DIR)));
    PluginDirs::with_first(own)
}

/// host-local's state dir for the built-in networks: `networks/` in rkt's data dir
/// (`<data>/pods/<state>/<uuid>` is the pod directory).
fn ipam_data_dir(pod_dir: &Path) -> Option<PathBuf> {
    let pod = std::fs::canonicalize(pod_dir).ok()?;
    let data = pod.parent()?.parent()?.parent()?;
    Some(data.join("networks"))
}

/// Sets up the pod's networks for `--net=<net>`; `plan` gets the DNS settings the plugins
/// returned when the user gave none (written back before guest-init reads it).
pub fn setup(pod_dir: &Path, uuid: &str, net: &str, plan: &mut Plan) -> anyhow::Result<PodNetwork> {
    let pn = cni::setup(&PodNetOptions {
        pod_dir,
        uuid,
        net,
        plan: &plan.net,
        plugin_dirs: plugin_dirs(pod_dir),
        ipam_data_dir: ipam_data_dir(pod_dir),
        timeout: PLUGIN_TIMEOUT,
    })?;
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
        let b = serde_json::to_vec_pretty(plan).context("plan JSON")?;
        pod_abi::podfile::write_atomic(&path, &b).context("rewrite the plan with the DNS")?;
    }
    Ok(pn)
}

/// Tears the pod's networks down (the `gc` entrypoint).
pub fn gc(pod_dir: &Path, uuid: &str) -> Result<(), cni::CniError> {
    cni::teardown(pod_dir, uuid, &plugin_dirs(pod_dir), PLUGIN_TIMEOUT)
}
