//! The pod's networks in the ns flavor, through the shared `cni` crate: before the pod starts,
//! `run` creates the pod's network namespace and attaches its networks (guest-init then
//! joins that namespace); `gc` runs `DEL` for every network recorded in `net-info.json` and
//! removes the namespace, whether or not the launcher lived to the end.

use std::path::Path;

use anyhow::Context;
use cni::{PodNetOptions, PodNetwork};
use pod_abi::plan::Plan;

/// Sets up the pod's networks for `--net=<net>`; `plan` gets the DNS settings the plugins
/// returned when the user gave none (written back before guest-init reads it).
pub fn setup(pod_dir: &Path, uuid: &str, net: &str, plan: &mut Plan) -> anyhow::Result<PodNetwork> {
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
        let b = serde_json::to_vec_pretty(plan).context("plan JSON")?;
        pod_abi::podfile::write_atomic(&path, &b).context("rewrite the plan with the DNS")?;
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
