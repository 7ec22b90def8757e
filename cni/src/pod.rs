//! A pod's networks, for either stage1 flavor: [`setup`] resolves `--net`, creates the pod's
//! network namespace and runs `ADD` for every network (`eth0`, `eth1`, ...), recording each
//! network in `net-info.json` *before* its plugins run, so that [`teardown`] (the stage1 `gc`)
//! can always run `DEL` for it, even when the launcher died in the middle. Any failure in
//! [`setup`] tears down what exists and returns the error naming network and plugin.
//!
//! `DEL` re-resolves every plugin by its type in the trusted plugin dirs: a path recorded in
//! the pod directory is reported, never executed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pod_abi::netinfo::{self, Ip4Config, NetInfo, RouteInfo, NETNS_FILE};
use pod_abi::plan::{NetPlan, PortPlan};
use serde_json::{json, Value};

use crate::config::{self, NetConfList, NetMode};
use crate::exec::{self, CniCommand, Invocation, PluginDirs};
use crate::result::{netmask, CniResult};
use crate::{netns, CniError};

/// How to set up a pod's networks.
#[derive(Debug, Clone)]
pub struct PodNetOptions<'a> {
    /// The pod directory (`net-info.json` and `netns` are written there).
    pub pod_dir: &'a Path,
    /// Pod UUID (`CNI_CONTAINERID`, the namespace's name).
    pub uuid: &'a str,
    /// rkt's `--net` value.
    pub net: &'a str,
    /// Config dirs and port forwards from the launch plan.
    pub plan: &'a NetPlan,
    /// Plugin lookup.
    pub plugin_dirs: PluginDirs,
    /// host-local state dir for the built-in networks (`None`: host-local's default).
    pub ipam_data_dir: Option<PathBuf>,
    /// Time limit of each plugin call.
    pub timeout: Duration,
}

/// rkt's plugin dir inside a stage1 image.
pub const STAGE1_PLUGIN_DIR: &str = "usr/lib/rkt/plugins/net";

impl<'a> PodNetOptions<'a> {
    /// The options a stage1 uses for the pod in `pod_dir` (`<data>/pods/<state>/<uuid>`):
    /// plugins from the stage1 image beside the running executable (stage0 runs it from the
    /// store's read-only tree; never a directory inside the pod directory), then the host's;
    /// host-local state of the built-in networks in `<data>/networks`; the default timeout.
    pub fn for_stage1(pod_dir: &'a Path, uuid: &'a str, net: &'a str, plan: &'a NetPlan) -> Self {
        PodNetOptions {
            pod_dir,
            uuid,
            net,
            plan,
            plugin_dirs: stage1_plugin_dirs(pod_dir),
            ipam_data_dir: rkt_ipam_dir(pod_dir),
            timeout: exec::DEFAULT_TIMEOUT,
        }
    }
}

/// The plugin dirs of a stage1 (see [`PodNetOptions::for_stage1`]).
pub fn stage1_plugin_dirs(pod_dir: &Path) -> PluginDirs {
    let exe = std::env::current_exe().ok();
    let pod = pod_abi::paths::canonicalize(pod_dir).unwrap_or_else(|_| pod_dir.to_path_buf());
    let own = exe
        .filter(|e| !e.starts_with(&pod))
        .and_then(|e| e.parent().map(|d| d.join(STAGE1_PLUGIN_DIR)));
    PluginDirs::with_first(own)
}

/// host-local's state dir for the built-in networks: `networks/` in rkt's data dir.
fn rkt_ipam_dir(pod_dir: &Path) -> Option<PathBuf> {
    let pod = pod_abi::paths::canonicalize(pod_dir).ok()?;
    Some(pod.parent()?.parent()?.parent()?.join("networks"))
}

/// One attached network.
#[derive(Debug, Clone)]
pub struct Attached {
    /// What `net-info.json` holds for it.
    pub info: NetInfo,
    /// The chain's final result (interfaces with MACs, addresses, routes, DNS).
    pub result: CniResult,
}

/// The pod's network after [`setup`].
#[derive(Debug, Clone)]
pub struct PodNetwork {
    /// The mode.
    pub mode: NetMode,
    /// The pod's persistent namespace; `None` for `--net=host` and `--net=none`.
    pub netns: Option<PathBuf>,
    /// Networks in attach order.
    pub attached: Vec<Attached>,
}

/// The `portMappings` runtime config of `ports`.
fn port_mappings(ports: &[PortPlan]) -> Value {
    Value::Array(
        ports
            .iter()
            .map(|p| {
                json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": p.protocol,
                    "hostIP": p.host_ip,
                })
            })
            .collect(),
    )
}

fn wants_ports(p: &Value) -> bool {
    p.pointer("/capabilities/portMappings")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The chain as executed: `ports` go to the plugins that declare the `portMappings`
/// capability; a `portmap` plugin is appended when none does (rkt forwarded ports on the
/// pod's first network).
fn with_ports(conf: &NetConfList, ports: &[PortPlan]) -> NetConfList {
    let mut c = conf.clone();
    if ports.is_empty() {
        return c;
    }
    if !c.plugins.iter().any(wants_ports) {
        c.plugins.push(json!({
            "type": "portmap",
            "capabilities": {"portMappings": true},
            "snat": true,
        }));
    }
    for p in c.plugins.iter_mut().filter(|p| wants_ports(p)) {
        if let Some(o) = p.as_object_mut() {
            o.insert(
                "runtimeConfig".into(),
                json!({"portMappings": port_mappings(ports)}),
            );
        }
    }
    c
}

/// What `gc` needs for `DEL`, stored in [`NetInfo::conf`].
fn stored_conf(c: &NetConfList, result: Option<&Value>) -> Value {
    json!({
        "name": c.name,
        "cniVersion": c.cni_version,
        "plugins": c.plugins,
        "source": c.source,
        "prevResult": result.cloned().unwrap_or(Value::Null),
    })
}

fn from_stored(v: &Value) -> Option<(NetConfList, Option<Value>)> {
    let name = v.get("name")?.as_str()?.to_string();
    let cni_version = v.get("cniVersion")?.as_str()?.to_string();
    let plugins = v.get("plugins")?.as_array()?.clone();
    let source = v
        .get("source")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let prev = v.get("prevResult").filter(|r| !r.is_null()).cloned();
    Some((
        NetConfList {
            name,
            cni_version,
            plugins,
            source,
        },
        prev,
    ))
}

/// Whether `prevResult` is part of the spec for `version` (0.3.0 on for chains; DEL/CHECK
/// from 0.4.0).
fn version_at_least(version: &str, major: u32, minor: u32) -> bool {
    let mut it = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// Everything one chain call needs.
struct Chain<'a> {
    conf: &'a NetConfList,
    dirs: &'a PluginDirs,
    uuid: &'a str,
    netns: &'a str,
    ifname: &'a str,
    args: &'a str,
    timeout: Duration,
}

impl Chain<'_> {
    fn plugin_conf(&self, p: &Value, prev: Option<&Value>) -> Vec<u8> {
        let mut c = p.clone();
        if let Some(o) = c.as_object_mut() {
            o.insert("name".into(), json!(self.conf.name));
            o.insert("cniVersion".into(), json!(self.conf.cni_version));
            if let Some(prev) = prev {
                o.insert("prevResult".into(), prev.clone());
            }
        }
        serde_json::to_vec(&c).unwrap_or_default()
    }

    fn ty(p: &Value) -> &str {
        p.get("type").and_then(Value::as_str).unwrap_or("")
    }

    fn call(&self, p: &Value, cmd: CniCommand, prev: Option<&Value>) -> Result<Vec<u8>, CniError> {
        let ty = Self::ty(p);
        let path = self.dirs.find(ty).ok_or_else(|| CniError::PluginNotFound {
            network: self.conf.name.clone(),
            plugin: ty.to_string(),
            dirs: self.dirs.cni_path(),
        })?;
        let stdin = self.plugin_conf(p, prev);
        let cni_path = self.dirs.cni_path();
        exec::invoke(&Invocation {
            network: &self.conf.name,
            plugin: ty,
            path: &path,
            command: cmd,
            container_id: self.uuid,
            netns: self.netns,
            ifname: self.ifname,
            args: self.args,
            cni_path: &cni_path,
            stdin: &stdin,
            timeout: self.timeout,
        })
    }

    /// `ADD` through the chain; the last plugin's result.
    fn add(&self) -> Result<CniResult, CniError> {
        let mut prev: Option<CniResult> = None;
        for p in &self.conf.plugins {
            let out = self.call(p, CniCommand::Add, prev.as_ref().map(|r| &r.raw))?;
            let r = CniResult::parse(&out).map_err(|source| CniError::Result {
                network: self.conf.name.clone(),
                plugin: Self::ty(p).to_string(),
                source,
            })?;
            prev = Some(r);
        }
        prev.ok_or_else(|| CniError::Config {
            source_path: self.conf.source.clone(),
            msg: "no plugins".into(),
        })
    }

    /// `DEL` through the chain in reverse; every plugin is called even when one fails.
    fn del(&self, prev: Option<&Value>, errors: &mut Vec<String>) {
        let prev = prev.filter(|_| version_at_least(&self.conf.cni_version, 0, 4));
        for p in self.conf.plugins.iter().rev() {
            if let Err(e) = self.call(p, CniCommand::Del, prev) {
                errors.push(e.to_string());
            }
        }
    }

    /// `CHECK` through the chain (CNI 0.4.0 on).
    fn check(&self, prev: &Value) -> Result<(), CniError> {
        for p in &self.conf.plugins {
            self.call(p, CniCommand::Check, Some(prev))?;
        }
        Ok(())
    }
}

/// The host-side address of a network: the gateway of the pod's address.
fn info_from_result(info: &mut NetInfo, r: &CniResult) {
    let Some(ip) = r.pod_ip() else {
        return;
    };
    info.ip = ip.addr.to_string();
    info.mask = netmask(ip.addr.is_ipv4(), ip.prefix);
    info.host_ip = ip.gateway.map(|g| g.to_string()).unwrap_or_default();
    if ip.addr.is_ipv4() {
        info.ip4 = Some(Ip4Config {
            ip: format!("{}/{}", ip.addr, ip.prefix),
            gateway: info.host_ip.clone(),
            routes: r
                .routes
                .iter()
                .map(|rt| RouteInfo {
                    dst: rt.dst.clone(),
                    gw: rt.gw.map(|g| g.to_string()).unwrap_or_default(),
                })
                .collect(),
        });
    }
    let d = &r.dns;
    if !(d.nameservers.is_empty() && d.domain.is_empty() && d.search.is_empty()) {
        info.dns = Some(netinfo::DnsInfo {
            nameservers: d.nameservers.clone(),
            domain: d.domain.clone(),
            search: d.search.clone(),
            options: d.options.clone(),
        });
    }
}

/// `CNI_ARGS` for the user's per-network arguments: `IgnoreUnknown=1` first (the CNI
/// convention), so that a plugin of the chain that does not know an argument (`IP` is
/// host-local's) does not fail.
fn cni_args(user: &str) -> String {
    if user.is_empty() || user.split(';').any(|kv| kv.starts_with("IgnoreUnknown=")) {
        user.to_string()
    } else {
        format!("IgnoreUnknown=1;{user}")
    }
}

/// Resolves the networks and their plugins without creating anything.
fn plan_networks(o: &PodNetOptions<'_>, mode: &NetMode) -> Result<Vec<NetConfList>, CniError> {
    let NetMode::Networks(reqs) = mode else {
        if !o.plan.ports.is_empty() {
            return Err(CniError::Usage(
                "--port needs a pod network (not --net=host or --net=none)".into(),
            ));
        }
        return Ok(Vec::new());
    };
    let dir = |s: &str, d: &str| PathBuf::from(if s.is_empty() { d } else { s });
    let dirs = config::net_dirs(
        &dir(&o.plan.local_config, "/etc/rkt"),
        &dir(&o.plan.system_config, "/usr/lib/rkt"),
    );
    let mut confs = config::resolve(reqs, &dirs, o.ipam_data_dir.as_deref())?;
    if let Some(first) = confs.first_mut() {
        *first = with_ports(first, &o.plan.ports);
    }
    for c in &confs {
        for p in &c.plugins {
            let ty = Chain::ty(p);
            if o.plugin_dirs.find(ty).is_none() {
                return Err(CniError::PluginNotFound {
                    network: c.name.clone(),
                    plugin: ty.to_string(),
                    dirs: o.plugin_dirs.cni_path(),
                });
            }
        }
    }
    Ok(confs)
}

/// Sets up the pod's networks (see the module doc). `--net=host` and `--net=none` create
/// nothing: the caller keeps the host's namespace, or gives the pod a fresh one with only `lo`
/// (nothing to tear down, nothing persisted).
pub fn setup(o: &PodNetOptions<'_>) -> Result<PodNetwork, CniError> {
    let mode = NetMode::parse(o.net)?;
    let confs = plan_networks(o, &mode)?;
    if matches!(mode, NetMode::Host | NetMode::None) {
        return Ok(PodNetwork {
            mode,
            netns: None,
            attached: Vec::new(),
        });
    }
    let ns = netns::path_for(o.uuid);
    // Recorded first: a launcher killed from here on still gets its namespace removed by gc.
    pod_abi::podfile::write_atomic(
        &o.pod_dir.join(NETNS_FILE),
        format!("{}\n", ns.display()).as_bytes(),
    )
    .map_err(CniError::NetInfo)?;
    netns::create(&ns)?;
    match add_all(o, &confs, &ns) {
        Ok(attached) => Ok(PodNetwork {
            mode,
            netns: Some(ns),
            attached,
        }),
        Err(e) => {
            if let Err(t) = teardown(o.pod_dir, o.uuid, &o.plugin_dirs, o.timeout) {
                log::warn!("cleaning up after the failed network setup: {t}");
            }
            Err(e)
        }
    }
}

fn add_all(
    o: &PodNetOptions<'_>,
    confs: &[NetConfList],
    ns: &Path,
) -> Result<Vec<Attached>, CniError> {
    let NetMode::Networks(reqs) = NetMode::parse(o.net)? else {
        return Ok(Vec::new());
    };
    let ns_str = ns.display().to_string();
    let mut infos: Vec<NetInfo> = Vec::new();
    let mut attached = Vec::new();
    for (i, (c, req)) in confs.iter().zip(&reqs).enumerate() {
        let ifname = format!("eth{i}");
        let main = o.plugin_dirs.find(c.main_type()).unwrap_or_default();
        infos.push(NetInfo {
            net_name: c.name.clone(),
            net_conf: c.source.clone(),
            plugin_path: main.display().to_string(),
            if_name: ifname.clone(),
            args: req.args.clone(),
            conf: Some(stored_conf(c, None)),
            ..Default::default()
        });
        netinfo::write(o.pod_dir, &infos).map_err(CniError::NetInfo)?;
        let args = cni_args(&req.args);
        let chain = Chain {
            conf: c,
            dirs: &o.plugin_dirs,
            uuid: o.uuid,
            netns: &ns_str,
            ifname: &ifname,
            args: &args,
            timeout: o.timeout,
        };
        let r = chain.add()?;
        if let Some(info) = infos.last_mut() {
            info_from_result(info, &r);
            info.conf = Some(stored_conf(c, Some(&r.raw)));
            attached.push(Attached {
                info: info.clone(),
                result: r,
            });
        }
        netinfo::write(o.pod_dir, &infos).map_err(CniError::NetInfo)?;
    }
    Ok(attached)
}

/// Tears down the networks of the pod in `pod_dir`: `DEL` for every network in
/// `net-info.json` (last first, every plugin even when one fails), then removes the pod's
/// network namespace. Idempotent; a pod without networks is a no-op.
pub fn teardown(
    pod_dir: &Path,
    uuid: &str,
    dirs: &PluginDirs,
    timeout: Duration,
) -> Result<(), CniError> {
    let mut errors = Vec::new();
    let ns = netns::path_for(uuid);
    let ns_str = if ns.exists() {
        ns.display().to_string()
    } else {
        String::new()
    };
    let nets = match netinfo::read(pod_dir) {
        Ok(n) => n.unwrap_or_default(),
        Err(e) => {
            errors.push(format!("{e}: {}", error_chain(&e)));
            Vec::new()
        }
    };
    for n in nets.iter().rev() {
        let Some((conf, prev)) = n.conf.as_ref().and_then(from_stored) else {
            errors.push(format!(
                "network {}: no stored config, DEL skipped",
                n.net_name
            ));
            continue;
        };
        Chain {
            conf: &conf,
            dirs,
            uuid,
            netns: &ns_str,
            ifname: &n.if_name,
            args: &cni_args(&n.args),
            timeout,
        }
        .del(prev.as_ref(), &mut errors);
    }
    if let Err(e) = netns::remove(&ns) {
        errors.push(format!("{e}: {}", error_chain(&e)));
    }
    let _ = std::fs::remove_file(pod_dir.join(NETNS_FILE));
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::Teardown(errors))
    }
}

/// `CHECK` for every network of the pod (CNI 0.4.0 and later networks).
pub fn check(
    pod_dir: &Path,
    uuid: &str,
    dirs: &PluginDirs,
    timeout: Duration,
) -> Result<(), CniError> {
    let ns = netns::path_for(uuid).display().to_string();
    let nets = netinfo::read(pod_dir)
        .map_err(|e| CniError::NetInfo(std::io::Error::other(e.to_string())))?
        .unwrap_or_default();
    for n in &nets {
        let Some((conf, Some(prev))) = n.conf.as_ref().and_then(from_stored) else {
            continue;
        };
        if !version_at_least(&conf.cni_version, 0, 4) {
            continue;
        }
        Chain {
            conf: &conf,
            dirs,
            uuid,
            netns: &ns,
            ifname: &n.if_name,
            args: &cni_args(&n.args),
            timeout,
        }
        .check(&prev)?;
    }
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push(c.to_string());
        cur = c.source();
    }
    s.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port() -> PortPlan {
        PortPlan {
            name: "http".into(),
            protocol: "tcp".into(),
            container_port: 80,
            host_port: 8080,
            host_ip: String::new(),
        }
    }

    #[test]
    fn ports_append_portmap_with_runtime_config() {
        let d = config::builtin("default", None).unwrap();
        let c = with_ports(&d, &[port()]);
        assert_eq!(c.plugins.len(), 2);
        assert_eq!(c.plugins[1]["type"], "portmap");
        assert_eq!(
            c.plugins[1]["runtimeConfig"]["portMappings"][0]["hostPort"],
            8080
        );
        assert!(c.plugins[0].get("runtimeConfig").is_none());
        assert_eq!(with_ports(&d, &[]), d);
    }

    #[test]
    fn stored_conf_round_trips() {
        let d = config::builtin("default", None).unwrap();
        let v = stored_conf(&d, Some(&json!({"cniVersion": "0.4.0"})));
        let (c, prev) = from_stored(&v).unwrap();
        assert_eq!(c, d);
        assert_eq!(prev.unwrap()["cniVersion"], "0.4.0");
        let (_, prev) = from_stored(&stored_conf(&d, None)).unwrap();
        assert!(prev.is_none());
    }

    #[test]
    fn user_args_ignore_unknown() {
        assert_eq!(cni_args(""), "");
        assert_eq!(cni_args("IP=10.1.1.5"), "IgnoreUnknown=1;IP=10.1.1.5");
        assert_eq!(cni_args("IgnoreUnknown=0;IP=1"), "IgnoreUnknown=0;IP=1");
    }

    #[test]
    fn versions() {
        assert!(version_at_least("0.4.0", 0, 4));
        assert!(version_at_least("1.0.0", 0, 4));
        assert!(!version_at_least("0.3.1", 0, 4));
        assert!(!version_at_least("garbage", 0, 3));
    }

    #[test]
    fn missing_plugin_fails_before_anything_exists() {
        let pod = tempfile::tempdir().unwrap();
        let plan = NetPlan::default();
        let o = PodNetOptions {
            pod_dir: pod.path(),
            uuid: "u-test-missing",
            net: "default",
            plan: &plan,
            plugin_dirs: PluginDirs(vec![pod.path().join("nothing")]),
            ipam_data_dir: None,
            timeout: exec::DEFAULT_TIMEOUT,
        };
        let e = setup(&o).unwrap_err().to_string();
        assert!(e.contains("default") && e.contains("ptp"), "{e}");
        assert!(!pod.path().join(NETNS_FILE).exists());
        assert!(!netns::path_for("u-test-missing").exists());
    }
}
