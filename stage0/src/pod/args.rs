//! The `rkt run` / `rkt prepare` command line, parsed by hand because per-app flags follow the
//! image they apply to: `[pod flags] IMAGE [app flags] [-- args...] [--- IMAGE ...]`.
//!
//! Flags take `--flag=value` or `--flag value`; booleans take `--flag` or `--flag=BOOL` (Go's
//! `strconv.ParseBool` values, [`crate::gobool`]).
//! `--mount` before every image applies to every app. Global flags (`--dir`, `--debug`,
//! `--insecure-options`, ...) are accepted anywhere before `--`.

use std::path::{Component, Path, PathBuf};

use pod_abi::attach::{ModeError, StdioPlan, ANN_STDERR, ANN_STDIN, ANN_STDOUT};
use pod_abi::plan::DEFAULT_PIDS_LIMIT;

use crate::error::UsageError;

fn usage(msg: impl Into<String>) -> UsageError {
    UsageError(msg.into())
}

/// Which command is parsed (they accept slightly different flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `rkt run`.
    Run,
    /// `rkt prepare`.
    Prepare,
    /// `rkt run-prepared`: global flags, the pod flags of [`RUN_PREPARED_FLAGS`] and one
    /// UUID (see [`RunCommand::parse_run_prepared`]).
    RunPrepared,
}

/// The pod-level flags `rkt run-prepared` takes (rkt 1.30); they override what `prepare`
/// stored.
pub const RUN_PREPARED_FLAGS: [&str; 12] = [
    "net",
    "dns",
    "dns-search",
    "dns-opt",
    "dns-domain",
    "hosts-entry",
    "mds-register",
    "ipc",
    "pids-limit",
    "interactive",
    "hostname",
    "kvm-snapshot",
];

/// How the stage1 image is chosen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Stage1Ref {
    /// The default flavor (`ns`).
    #[default]
    Default,
    /// `--stage1=ns|kvm`.
    Flavor(String),
    /// `--stage1-path`: an ACI file.
    Path(PathBuf),
    /// `--stage1-name`: an image name in the store.
    Name(String),
    /// `--stage1-hash`: an image ID (prefix) in the store.
    Hash(String),
    /// `--stage1-url`: fetched like any image.
    Url(String),
    /// `--stage1-from-dir`: a file name in the stage1 images directory (`paths.d`'s
    /// `stage1-images`, else where the flavors' images are looked up).
    FromDir(String),
}

/// `--pids-limit=N|max`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PidsLimit {
    /// Not given: [`DEFAULT_PIDS_LIMIT`].
    #[default]
    Default,
    /// `max`: no limit.
    Unlimited,
    /// `N` tasks (at least 1).
    Tasks(u64),
}

impl PidsLimit {
    /// The limit in tasks, `None` for none.
    pub fn tasks(self) -> Option<u64> {
        match self {
            PidsLimit::Default => Some(DEFAULT_PIDS_LIMIT),
            PidsLimit::Unlimited => None,
            PidsLimit::Tasks(n) => Some(n),
        }
    }

    fn parse(v: &str) -> Result<PidsLimit, UsageError> {
        match v {
            "max" => Ok(PidsLimit::Unlimited),
            _ => match v.parse::<u64>() {
                Ok(n) if n >= 1 => Ok(PidsLimit::Tasks(n)),
                _ => Err(usage(format!(
                    "invalid --pids-limit value {v:?} (a number of tasks, at least 1, or max)"
                ))),
            },
        }
    }
}

/// `--mount volume=NAME,target=PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountArg {
    /// Volume name.
    pub volume: String,
    /// Absolute path inside the app.
    pub target: String,
}

/// Global flags that may appear among the command's arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GlobalOverrides {
    /// `--debug`.
    pub debug: bool,
    /// `--dir`.
    pub dir: Option<PathBuf>,
    /// `--insecure-options`.
    pub insecure_options: Option<String>,
    /// `--local-config` (network configs in its `net.d`).
    pub local_config: Option<PathBuf>,
    /// `--system-config`.
    pub system_config: Option<PathBuf>,
}

/// Pod-level options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodOptions {
    /// `--volume` (in order).
    pub volumes: Vec<appc::schema::Volume>,
    /// `--mount` before the first image: applies to every app.
    pub mounts: Vec<MountArg>,
    /// `--set-env K=V`.
    pub set_env: Vec<(String, String)>,
    /// `--set-env-file FILE`.
    pub set_env_file: Vec<PathBuf>,
    /// `--inherit-env`.
    pub inherit_env: bool,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `--uuid-file-save`.
    pub uuid_file_save: Option<PathBuf>,
    /// `--interactive` (run only).
    pub interactive: bool,
    /// `--net` (default `default`).
    pub net: String,
    /// stage1 selection.
    pub stage1: Stage1Ref,
    /// `--quiet` (prepare only).
    pub quiet: bool,
    /// `--pull-policy`.
    pub pull_policy: Option<String>,
    /// `--no-overlay`: copy the image trees into the pod instead of overlay mounts.
    pub no_overlay: bool,
    /// `--port NAME:[HOSTIP:]HOSTPORT`: (name, host IP, host port).
    pub ports: Vec<(String, Option<String>, u32)>,
    /// `rkt app sandbox --port NAME:PROTO:PODPORT:HOSTIP:HOSTPORT`: ports given with their pod
    /// side (appc's `podPort`), for apps not added yet ([`parse_pod_port`]).
    pub pod_ports: Vec<appc::schema::ExposedPort>,
    /// `--dns`, `--dns-search`, `--dns-opt`, `--dns-domain`, `--hosts-entry` (see
    /// [`super::netopts`]).
    pub dns: super::netopts::DnsFlags,
    /// Flags accepted for compatibility whose feature is not implemented (`--ipc`, ...);
    /// reported as warnings.
    pub ignored: Vec<String>,
    /// `--mds-register`: register the pod with the metadata service.
    pub mds_register: bool,
    /// `--kvm-snapshot` (run only, experimental): start a KVM pod from a snapshot.
    pub kvm_snapshot: bool,
    /// `--ipc=parent` (run and run-prepared): the pod stays in the host's IPC namespace
    /// (`auto` and `private`, the default, give it its own).
    pub host_ipc: bool,
    /// `--pids-limit` (run, run-prepared, app sandbox): the pod's task limit, on the host for
    /// an ns pod.
    pub pids_limit: PidsLimit,
    /// `--disk-limit` (run, prepare; not rkt's): the most bytes the pod may write below its
    /// directory, an XFS project quota (`super::quota`).
    pub disk_limit: Option<u64>,
    /// `--private-users`: the apps run in a user namespace mapping the pod's IDs to a host
    /// range of their own (`pod_abi::userns`); the trees are copied into the pod with their
    /// owners shifted into that range.
    pub private_users: bool,
    /// A mutable pod (`rkt app sandbox`; `pod_abi::plan::MUTABLE_ANNOTATION`).
    pub mutable: bool,
    /// `rkt app sandbox --annotation K=V`: the pod manifest's own annotations.
    pub annotations: Vec<(String, String)>,
    /// `rkt app sandbox --user-annotation K=V`: the pod manifest's `userAnnotations`.
    pub user_annotations: Vec<(String, String)>,
    /// `rkt app sandbox --user-label K=V`: the pod manifest's `userLabels`.
    pub user_labels: Vec<(String, String)>,
    /// `--pod-manifest FILE` (run and prepare): the pod is this appc pod manifest, its images
    /// named by ID and already in the store; no images or app flags on the command line.
    pub pod_manifest: Option<PathBuf>,
}

/// Per-app options (flags following an image).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppOptions {
    /// The image reference (file, URL, name, ID).
    pub image: String,
    /// `--name`.
    pub name: Option<String>,
    /// `--exec`.
    pub exec: Option<String>,
    /// `--user`.
    pub user: Option<String>,
    /// `--group`.
    pub group: Option<String>,
    /// `--supplementary-gids`.
    pub supplementary_gids: Option<Vec<u32>>,
    /// `--working-dir`.
    pub working_dir: Option<String>,
    /// `--environment K=V`.
    pub environment: Vec<(String, String)>,
    /// `--memory` (quantity).
    pub memory: Option<String>,
    /// `--cpu` (quantity).
    pub cpu: Option<String>,
    /// `--caps-retain`.
    pub caps_retain: Option<Vec<String>>,
    /// `--caps-remove`.
    pub caps_remove: Option<Vec<String>>,
    /// `--readonly-rootfs`.
    pub readonly_rootfs: bool,
    /// `--mount` after this image.
    pub mounts: Vec<MountArg>,
    /// Arguments after `--`.
    pub args: Option<Vec<String>>,
    /// `--cpu-shares` (os/linux/cpu-shares).
    pub cpu_shares: Option<u32>,
    /// `--oom-score-adj` (os/linux/oom-score-adj).
    pub oom_score_adj: Option<i32>,
    /// `--seccomp mode=retain|remove[,errno=E],syscall,...`: (retain?, errno, syscalls).
    pub seccomp: Option<(bool, Option<String>, Vec<String>)>,
    /// `--annotation K=V`.
    pub annotations: Vec<(String, String)>,
    /// `--user-annotation K=V`.
    pub user_annotations: Vec<(String, String)>,
    /// `--user-label K=V`.
    pub user_labels: Vec<(String, String)>,
    /// `--signature FILE`: the detached signature of this (file) image.
    pub signature: Option<PathBuf>,
}

/// The parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunCommand {
    /// Global flags found among the arguments.
    pub globals: GlobalOverrides,
    /// Pod-level options.
    pub pod: PodOptions,
    /// Apps in order.
    pub apps: Vec<AppOptions>,
}

/// What `cmd` gives besides `--pod-manifest` that the manifest itself would say (rkt refuses
/// the same): images and their flags, `--volume`, `--mount`, `--port`, the environment flags
/// and a pull policy (a pod manifest's images come from the store only).
fn pod_manifest_conflicts(cmd: &RunCommand) -> Vec<&'static str> {
    let p = &cmd.pod;
    [
        (!cmd.apps.is_empty(), "images"),
        (!p.volumes.is_empty(), "--volume"),
        (!p.mounts.is_empty(), "--mount"),
        (!p.ports.is_empty(), "--port"),
        (!p.set_env.is_empty(), "--set-env"),
        (!p.set_env_file.is_empty(), "--set-env-file"),
        (p.inherit_env, "--inherit-env"),
        (
            p.pull_policy.is_some(),
            "--pull-policy (or --store-only, --no-store)",
        ),
    ]
    .into_iter()
    .filter_map(|(set, flag)| set.then_some(flag))
    .collect()
}

/// Flag arity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Value,
}

/// Where a flag may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Global,
    Pod,
    App,
    /// `--mount`: pod-wide before images, per app after one.
    Mount,
}

/// The flag table: name, arity, scope.
const FLAGS: &[(&str, Kind, Scope)] = &[
    ("debug", Kind::Bool, Scope::Global),
    ("dir", Kind::Value, Scope::Global),
    ("insecure-options", Kind::Value, Scope::Global),
    ("local-config", Kind::Value, Scope::Global),
    ("system-config", Kind::Value, Scope::Global),
    ("user-config", Kind::Value, Scope::Global),
    ("trust-keys-from-https", Kind::Bool, Scope::Global),
    ("volume", Kind::Value, Scope::Pod),
    ("set-env", Kind::Value, Scope::Pod),
    ("set-env-file", Kind::Value, Scope::Pod),
    ("inherit-env", Kind::Bool, Scope::Pod),
    ("hostname", Kind::Value, Scope::Pod),
    ("uuid-file-save", Kind::Value, Scope::Pod),
    ("interactive", Kind::Bool, Scope::Pod),
    ("kvm-snapshot", Kind::Bool, Scope::Pod),
    ("net", Kind::Value, Scope::Pod),
    ("stage1", Kind::Value, Scope::Pod),
    ("stage1-path", Kind::Value, Scope::Pod),
    ("stage1-name", Kind::Value, Scope::Pod),
    ("stage1-hash", Kind::Value, Scope::Pod),
    ("stage1-url", Kind::Value, Scope::Pod),
    ("stage1-from-dir", Kind::Value, Scope::Pod),
    ("quiet", Kind::Bool, Scope::Pod),
    ("pull-policy", Kind::Value, Scope::Pod),
    ("no-overlay", Kind::Bool, Scope::Pod),
    ("port", Kind::Value, Scope::Pod),
    ("dns", Kind::Value, Scope::Pod),
    ("dns-search", Kind::Value, Scope::Pod),
    ("dns-opt", Kind::Value, Scope::Pod),
    ("dns-domain", Kind::Value, Scope::Pod),
    ("hosts-entry", Kind::Value, Scope::Pod),
    ("mds-register", Kind::Bool, Scope::Pod),
    ("private-users", Kind::Bool, Scope::Pod),
    ("ipc", Kind::Value, Scope::Pod),
    ("pids-limit", Kind::Value, Scope::Pod),
    ("disk-limit", Kind::Value, Scope::Pod),
    ("store-only", Kind::Bool, Scope::Pod),
    ("pod-manifest", Kind::Value, Scope::Pod),
    ("no-store", Kind::Bool, Scope::Pod),
    ("mount", Kind::Value, Scope::Mount),
    ("exec", Kind::Value, Scope::App),
    ("name", Kind::Value, Scope::App),
    ("user", Kind::Value, Scope::App),
    ("group", Kind::Value, Scope::App),
    ("supplementary-gids", Kind::Value, Scope::App),
    ("working-dir", Kind::Value, Scope::App),
    ("environment", Kind::Value, Scope::App),
    ("memory", Kind::Value, Scope::App),
    ("cpu", Kind::Value, Scope::App),
    ("caps-retain", Kind::Value, Scope::App),
    ("cap-retain", Kind::Value, Scope::App),
    ("caps-remove", Kind::Value, Scope::App),
    ("cap-remove", Kind::Value, Scope::App),
    ("readonly-rootfs", Kind::Bool, Scope::App),
    ("signature", Kind::Value, Scope::App),
    ("cpu-shares", Kind::Value, Scope::App),
    ("oom-score-adj", Kind::Value, Scope::App),
    ("seccomp", Kind::Value, Scope::App),
    ("annotation", Kind::Value, Scope::App),
    ("user-annotation", Kind::Value, Scope::App),
    ("user-label", Kind::Value, Scope::App),
    ("stdin", Kind::Value, Scope::App),
    ("stdout", Kind::Value, Scope::App),
    ("stderr", Kind::Value, Scope::App),
];

/// The flags `mode` takes besides the global ones, in table order (for `--help`).
pub fn flags_for(mode: Mode) -> Vec<&'static str> {
    FLAGS
        .iter()
        .filter(|(n, _, scope)| {
            *scope != Scope::Global
                && match mode {
                    Mode::Run => *n != "quiet",
                    Mode::Prepare => !matches!(*n, "interactive" | "kvm-snapshot"),
                    Mode::RunPrepared => RUN_PREPARED_FLAGS.contains(n),
                }
        })
        .map(|(n, _, _)| *n)
        .collect()
}

fn parse_bool(flag: &str, v: &str) -> Result<bool, UsageError> {
    crate::gobool::parse_flag(flag, v)
}

/// Parses `K=V`.
pub fn parse_kv(flag: &str, s: &str) -> Result<(String, String), UsageError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(usage(format!("--{flag} wants NAME=VALUE, got {s:?}"))),
    }
}

/// An app's stream modes from its annotations (`--stdin`, `--stdout`, `--stderr`, or a pod
/// manifest's `coreos.com/rkt/stage2/*`), checked together.
pub fn stdio_of<'a, I>(annotations: I) -> Result<StdioPlan, ModeError>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let (mut i, mut o, mut e) = (None, None, None);
    for (k, v) in annotations {
        match k {
            ANN_STDIN => i = Some(v),
            ANN_STDOUT => o = Some(v),
            ANN_STDERR => e = Some(v),
            _ => {}
        }
    }
    StdioPlan::from_values(i, o, e)
}

/// Parses rkt's `--volume NAME,kind=host,source=PATH[,readOnly=BOOL][,recursive=BOOL]` or
/// `NAME,kind=empty[,mode=0755][,uid=0][,gid=0]`.
pub fn parse_volume(s: &str) -> Result<appc::schema::Volume, UsageError> {
    let mut parts = s.split(',');
    let name = parts.next().unwrap_or_default();
    volume_from("--volume", name, parts)
}

/// Parses `rkt app add`'s `--mnt-volume name=NAME,kind=...,target=PATH[,...]` (rkt's per-app
/// volume, for the CRI: a volume and its mount in one flag; the keys of `--volume` besides
/// `target`, in any order): the volume and the target.
pub fn parse_mnt_volume(s: &str) -> Result<(appc::schema::Volume, String), UsageError> {
    let (mut name, mut target) = (None, None);
    let mut rest = Vec::new();
    for p in s.split(',') {
        match p.split_once('=') {
            Some(("name", v)) if name.is_none() => name = Some(v),
            Some(("target", v)) if target.is_none() => target = Some(v),
            Some(("name" | "target", _)) => {
                return Err(usage(format!("--mnt-volume: {p:?} given twice")))
            }
            _ => rest.push(p),
        }
    }
    let name = name.ok_or_else(|| usage("--mnt-volume: missing name=NAME"))?;
    let target = target.ok_or_else(|| usage("--mnt-volume: missing target=PATH"))?;
    if !target.starts_with('/') {
        return Err(usage(format!(
            "--mnt-volume {name}: target must be an absolute path, got {target:?}"
        )));
    }
    let v = volume_from("--mnt-volume", name, rest.into_iter())?;
    Ok((v, target.to_string()))
}

/// A volume `name` from `key=value` parts; `flag` names the flag in messages.
fn volume_from<'a>(
    flag: &str,
    name: &str,
    parts: impl Iterator<Item = &'a str>,
) -> Result<appc::schema::Volume, UsageError> {
    let name = appc::AcName::new(name).map_err(|_| {
        usage(format!(
            "{flag}: invalid volume name {name:?} (want an ACName)"
        ))
    })?;
    let mut v = appc::schema::Volume {
        name,
        kind: String::new(),
        source: None,
        read_only: None,
        recursive: None,
        mode: None,
        uid: None,
        gid: None,
    };
    for p in parts {
        let (k, val) = p
            .split_once('=')
            .ok_or_else(|| usage(format!("{flag}: expected key=value, got {p:?}")))?;
        let num = |val: &str| {
            val.parse::<u32>()
                .map_err(|_| usage(format!("{flag}: invalid number {val:?} for {k}")))
        };
        match k {
            "kind" => v.kind = val.to_string(),
            "source" => v.source = Some(val.to_string()),
            "readOnly" => v.read_only = Some(parse_bool("volume readOnly", val)?),
            "recursive" => v.recursive = Some(parse_bool("volume recursive", val)?),
            "mode" => v.mode = Some(val.to_string()),
            "uid" => v.uid = Some(num(val)?),
            "gid" => v.gid = Some(num(val)?),
            _ => return Err(usage(format!("{flag}: unknown key {k:?}"))),
        }
    }
    match v.kind.as_str() {
        "host" => {
            match &v.source {
                Some(src) if src.starts_with('/') => {}
                Some(src) => {
                    return Err(usage(format!(
                        "{flag} {}: source must be an absolute path, got {src:?}",
                        v.name
                    )))
                }
                None => return Err(usage(format!("{flag} {}: kind=host needs source=", v.name))),
            }
            if v.mode.is_some() || v.uid.is_some() || v.gid.is_some() {
                return Err(usage(format!(
                    "{flag} {}: mode/uid/gid apply to kind=empty only",
                    v.name
                )));
            }
        }
        "empty" => {
            if v.source.is_some() || v.recursive.is_some() {
                return Err(usage(format!(
                    "{flag} {}: source/recursive apply to kind=host only",
                    v.name
                )));
            }
        }
        "" => return Err(usage(format!("{flag} {}: missing kind=host|empty", v.name))),
        k => return Err(usage(format!("{flag} {}: unknown kind {k:?}", v.name))),
    }
    v.validate_at("volume")
        .map_err(|e| usage(format!("{flag}: {e}")))?;
    Ok(v)
}

/// Parses `--mount volume=NAME,target=PATH`.
pub fn parse_mount(s: &str) -> Result<MountArg, UsageError> {
    let (mut volume, mut target) = (None, None);
    for p in s.split(',') {
        match p.split_once('=') {
            Some(("volume", v)) => volume = Some(v.to_string()),
            Some(("target", t)) => target = Some(t.to_string()),
            _ => {
                return Err(usage(format!(
                    "--mount: unexpected {p:?} (want volume=NAME,target=PATH)"
                )))
            }
        }
    }
    match (volume, target) {
        (Some(v), Some(t)) if t.starts_with('/') && !v.is_empty() => Ok(MountArg {
            volume: v,
            target: t,
        }),
        (Some(_), Some(t)) => Err(usage(format!(
            "--mount: target must be absolute, got {t:?}"
        ))),
        _ => Err(usage("--mount wants volume=NAME,target=PATH")),
    }
}

/// Parses `--port NAME:[HOSTIP:]HOSTPORT`.
pub fn parse_port(s: &str) -> Result<(String, Option<String>, u32), UsageError> {
    let bad = || usage(format!("--port wants NAME:[HOSTIP:]HOSTPORT, got {s:?}"));
    let (name, rest) = s.split_once(':').ok_or_else(bad)?;
    let (ip, port) = match rest.rsplit_once(':') {
        Some((ip, p)) => (Some(ip.to_string()), p),
        None => (None, rest),
    };
    let port: u32 = port
        .parse()
        .ok()
        .filter(|p| (1..=65_535).contains(p))
        .ok_or_else(bad)?;
    if !appc::AcName::is_valid(name) {
        return Err(bad());
    }
    Ok((name.to_string(), ip, port))
}

/// Parses `rkt app sandbox`'s `--port NAME:PROTO:PODPORT:HOSTIP:HOSTPORT` (rkt's form for the
/// CRI, e.g. `http:tcp:8080:0.0.0.0:80`): a port forwarded to the pod directly rather than to
/// an app's declared port. A host IP of `0.0.0.0` or `::` means every address.
pub fn parse_pod_port(s: &str) -> Result<appc::schema::ExposedPort, UsageError> {
    let bad = |why: &str| {
        usage(format!(
            "--port wants NAME:PROTO:PODPORT:HOSTIP:HOSTPORT (e.g. http:tcp:8080:0.0.0.0:80), got {s:?}: {why}"
        ))
    };
    let parts: Vec<&str> = s.splitn(5, ':').collect();
    let [name, proto, pod_port, ip, host_port] = parts[..] else {
        return Err(bad("five fields"));
    };
    let name = appc::AcName::new(name).map_err(|_| bad("the name is no ACName"))?;
    if !matches!(proto, "tcp" | "udp") {
        return Err(bad("the protocol is tcp or udp"));
    }
    let port = |v: &str, what: &str| {
        v.parse::<u32>()
            .ok()
            .filter(|p| (1..=65_535).contains(p))
            .ok_or_else(|| bad(what))
    };
    let pod_port = port(pod_port, "the pod port is 1 to 65535")?;
    let host_port = port(host_port, "the host port is 1 to 65535")?;
    let ip: std::net::IpAddr = ip.parse().map_err(|_| bad("the host IP is no address"))?;
    Ok(appc::schema::ExposedPort {
        name: name.clone(),
        host_port,
        host_ip: (!ip.is_unspecified()).then(|| ip.to_string()),
        pod_port: Some(appc::schema::Port {
            name,
            protocol: proto.to_string(),
            port: pod_port,
            count: 1,
            socket_activated: false,
        }),
    })
}

/// Longest hostname Linux accepts (`HOST_NAME_MAX`), in bytes.
pub const MAX_HOSTNAME_BYTES: usize = 64;
/// Longest DNS label, in bytes.
const MAX_LABEL_BYTES: usize = 63;

/// Checks `--hostname`: dot-separated DNS labels (letters, digits, inner `-`; 1 to 63 bytes
/// each), at most [`MAX_HOSTNAME_BYTES`] in all. Newlines, spaces and escapes never reach
/// the pod's `/etc/hostname` or `/etc/hosts`.
pub fn validate_hostname(h: &str) -> Result<(), UsageError> {
    let bad = |why: &str| usage(format!("--hostname {h:?}: {why}"));
    if h.is_empty() {
        return Err(bad("must not be empty"));
    }
    if h.len() > MAX_HOSTNAME_BYTES {
        return Err(bad(&format!("longer than {MAX_HOSTNAME_BYTES} bytes")));
    }
    for label in h.split('.') {
        let b = label.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= MAX_LABEL_BYTES
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            && b.first() != Some(&b'-')
            && b.last() != Some(&b'-');
        if !ok {
            return Err(bad(
                "want DNS labels (letters, digits and inner '-', 1 to 63 characters) separated by '.'",
            ));
        }
    }
    Ok(())
}

/// Smallest `--memory` accepted, in bytes (one page: below it nothing can run).
pub const MIN_MEMORY_BYTES: u64 = 4096;
/// Largest `--memory` accepted, in bytes (what the cgroup files take: `i64::MAX`).
pub const MAX_MEMORY_BYTES: u64 = i64::MAX as u64;
/// Largest `--cpu` accepted, in cores (Linux's largest `NR_CPUS`; a larger CFS quota is
/// refused by the kernel inside the pod).
pub const MAX_CPU_CORES: u64 = 8192;

/// Checks `--memory`: a quantity of at least [`MIN_MEMORY_BYTES`].
pub fn validate_memory(v: &str) -> Result<(), UsageError> {
    let q = appc::types::parse_quantity(v)
        .map_err(|e| usage(format!("--memory: invalid quantity {v:?} ({e})")))?;
    let bytes = q.as_units();
    if bytes < MIN_MEMORY_BYTES {
        return Err(usage(format!(
            "--memory={v}: want at least {MIN_MEMORY_BYTES} bytes"
        )));
    }
    if bytes > MAX_MEMORY_BYTES {
        return Err(usage(format!("--memory={v}: too large")));
    }
    Ok(())
}

/// Checks `--cpu`: a quantity of cores above 0 and at most [`MAX_CPU_CORES`].
pub fn validate_cpu(v: &str) -> Result<(), UsageError> {
    let q = appc::types::parse_quantity(v)
        .map_err(|e| usage(format!("--cpu: invalid quantity {v:?} ({e})")))?;
    let millis = q.as_millis();
    if millis == 0 {
        return Err(usage(format!("--cpu={v}: must be more than 0")));
    }
    if millis > MAX_CPU_CORES * 1000 {
        return Err(usage(format!("--cpu={v}: more than {MAX_CPU_CORES} cores")));
    }
    Ok(())
}

/// Parses `--seccomp mode=retain|remove[,errno=ENAME],syscall,...`.
pub fn parse_seccomp(s: &str) -> Result<(bool, Option<String>, Vec<String>), UsageError> {
    let (mut mode, mut errno, mut calls) = (None, None, Vec::new());
    for p in s.split(',').filter(|p| !p.is_empty()) {
        match p.split_once('=') {
            Some(("mode", "retain")) => mode = Some(true),
            Some(("mode", "remove")) => mode = Some(false),
            Some(("errno", e)) => errno = Some(e.to_string()),
            Some(_) => return Err(usage(format!("--seccomp: unexpected {p:?}"))),
            None => calls.push(p.to_string()),
        }
    }
    let mode = mode.ok_or_else(|| usage("--seccomp needs mode=retain or mode=remove"))?;
    Ok((mode, errno, calls))
}

fn parse_list(s: &str) -> Vec<String> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_stage1_flavor(v: &str) -> Result<Stage1Ref, UsageError> {
    match v {
        "ns" | "kvm" => Ok(Stage1Ref::Flavor(v.to_string())),
        _ => Err(usage(format!(
            "--stage1: unknown flavor {v:?} (want ns or kvm)"
        ))),
    }
}

impl RunCommand {
    /// Parses the arguments after `run`/`prepare`.
    pub fn parse(mode: Mode, argv: &[String]) -> Result<Self, UsageError> {
        let mut cmd = RunCommand::default();
        cmd.pod.net = "default".to_string();
        let mut stage1_set = false;
        let mut i = 0;
        while let Some(tok) = argv.get(i) {
            i += 1;
            if tok == "--" {
                let app = cmd
                    .apps
                    .last_mut()
                    .ok_or_else(|| usage("\"--\" must follow an image"))?;
                if app.args.is_some() {
                    return Err(usage(format!("arguments for {} given twice", app.image)));
                }
                let mut args = Vec::new();
                while let Some(a) = argv.get(i) {
                    i += 1;
                    if a == "---" {
                        break;
                    }
                    args.push(a.clone());
                }
                app.args = Some(args);
                continue;
            }
            if tok == "---" {
                if cmd.apps.is_empty() {
                    return Err(usage("\"---\" must follow an image"));
                }
                continue;
            }
            let Some(body) = tok.strip_prefix("--") else {
                if tok.starts_with('-') && tok.len() > 1 {
                    return Err(usage(format!("unknown flag {tok:?}")));
                }
                cmd.apps.push(AppOptions {
                    image: tok.clone(),
                    ..Default::default()
                });
                continue;
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let Some(&(_, kind, scope)) = FLAGS.iter().find(|(n, _, _)| *n == name) else {
                return Err(usage(format!("unknown flag --{name}")));
            };
            if mode == Mode::RunPrepared
                && scope != Scope::Global
                && !RUN_PREPARED_FLAGS.contains(&name)
            {
                return Err(usage(format!("unknown flag --{name} for run-prepared")));
            }
            let value = match kind {
                Kind::Bool => match &inline {
                    Some(v) => parse_bool(name, v)?.to_string(),
                    None => "true".to_string(),
                },
                Kind::Value => match inline {
                    Some(v) => v,
                    None => {
                        let v = argv
                            .get(i)
                            .ok_or_else(|| usage(format!("flag --{name} needs a value")))?;
                        i += 1;
                        v.clone()
                    }
                },
            };
            let on = value == "true";
            match scope {
                Scope::Global => match name {
                    "debug" => cmd.globals.debug = on,
                    "dir" => cmd.globals.dir = Some(PathBuf::from(value)),
                    "insecure-options" => cmd.globals.insecure_options = Some(value),
                    "local-config" => cmd.globals.local_config = Some(PathBuf::from(value)),
                    "system-config" => cmd.globals.system_config = Some(PathBuf::from(value)),
                    _ => {}
                },
                Scope::Pod => {
                    let stage1 = |r: Stage1Ref, set: &mut bool| -> Result<Stage1Ref, UsageError> {
                        if std::mem::replace(set, true) {
                            return Err(usage("only one of --stage1, --stage1-path, --stage1-name, --stage1-hash, --stage1-url, --stage1-from-dir may be given"));
                        }
                        Ok(r)
                    };
                    match name {
                        "volume" => cmd.pod.volumes.push(parse_volume(&value)?),
                        "set-env" => cmd.pod.set_env.push(parse_kv(name, &value)?),
                        "set-env-file" => cmd.pod.set_env_file.push(PathBuf::from(value)),
                        "inherit-env" => cmd.pod.inherit_env = on,
                        "hostname" => {
                            validate_hostname(&value)?;
                            cmd.pod.hostname = Some(value)
                        }
                        "uuid-file-save" => cmd.pod.uuid_file_save = Some(PathBuf::from(value)),
                        "interactive" => {
                            if mode == Mode::Prepare {
                                return Err(usage("--interactive is not supported by prepare"));
                            }
                            cmd.pod.interactive = on;
                        }
                        "kvm-snapshot" => {
                            if mode == Mode::Prepare {
                                return Err(usage(
                                    "--kvm-snapshot is not supported by prepare (give it to run-prepared)",
                                ));
                            }
                            cmd.pod.kvm_snapshot = on;
                        }
                        "quiet" => {
                            if mode == Mode::Run {
                                return Err(usage("unknown flag --quiet"));
                            }
                            cmd.pod.quiet = on;
                        }
                        "net" => {
                            if value.is_empty() {
                                return Err(usage("--net needs a value"));
                            }
                            cmd.pod.net = value;
                        }
                        "stage1" => {
                            cmd.pod.stage1 = stage1(parse_stage1_flavor(&value)?, &mut stage1_set)?
                        }
                        "stage1-path" => {
                            cmd.pod.stage1 =
                                stage1(Stage1Ref::Path(PathBuf::from(value)), &mut stage1_set)?
                        }
                        "stage1-name" => {
                            cmd.pod.stage1 = stage1(Stage1Ref::Name(value), &mut stage1_set)?
                        }
                        "stage1-hash" => {
                            cmd.pod.stage1 = stage1(Stage1Ref::Hash(value), &mut stage1_set)?
                        }
                        "stage1-url" => {
                            cmd.pod.stage1 = stage1(Stage1Ref::Url(value), &mut stage1_set)?
                        }
                        "stage1-from-dir" => {
                            let mut c = Path::new(&value).components();
                            if !matches!((c.next(), c.next()), (Some(Component::Normal(_)), None)) {
                                return Err(usage(format!(
                                    "--stage1-from-dir wants the name of a file in the stage1 images directory, got {value:?}"
                                )));
                            }
                            cmd.pod.stage1 = stage1(Stage1Ref::FromDir(value), &mut stage1_set)?
                        }
                        "pull-policy" => cmd.pod.pull_policy = Some(value),
                        // rkt's older spellings of --pull-policy=never / --no-store.
                        "store-only" if on => cmd.pod.pull_policy = Some("never".into()),
                        "no-store" if on => cmd.pod.pull_policy = Some("update".into()),
                        "no-overlay" => cmd.pod.no_overlay = on,
                        "port" => cmd.pod.ports.push(parse_port(&value)?),
                        "dns" | "dns-search" | "dns-opt" | "dns-domain" | "hosts-entry" => {
                            cmd.pod.dns.push(name, &value)?
                        }
                        "ipc" => {
                            let host = match value.as_str() {
                                "auto" | "private" => false,
                                "parent" => true,
                                v => {
                                    return Err(usage(format!(
                                        "invalid --ipc value {v:?} (auto, private or parent)"
                                    )))
                                }
                            };
                            if mode == Mode::Prepare {
                                // The plan is written when the pod runs.
                                cmd.pod
                                    .ignored
                                    .push(format!("--{name}={value} (give it to run-prepared)"));
                            } else {
                                cmd.pod.host_ipc = host;
                            }
                        }
                        "pids-limit" => {
                            let limit = PidsLimit::parse(&value)?;
                            if mode == Mode::Prepare {
                                // The plan is written when the pod runs.
                                cmd.pod
                                    .ignored
                                    .push(format!("--{name}={value} (give it to run-prepared)"));
                            } else {
                                cmd.pod.pids_limit = limit;
                            }
                        }
                        "disk-limit" => {
                            let bytes = super::quota::parse_limit(&value)
                                .map_err(|e| usage(format!("--disk-limit: {e}")))?;
                            cmd.pod.disk_limit = Some(bytes);
                        }
                        "mds-register" => cmd.pod.mds_register = on,
                        "private-users" => cmd.pod.private_users = on,
                        "pod-manifest" => {
                            if value.is_empty() {
                                return Err(usage("--pod-manifest needs a file"));
                            }
                            cmd.pod.pod_manifest = Some(PathBuf::from(value))
                        }
                        _ => {}
                    }
                }
                Scope::Mount => {
                    let m = parse_mount(&value)?;
                    match cmd.apps.last_mut() {
                        Some(app) => app.mounts.push(m),
                        None => cmd.pod.mounts.push(m),
                    }
                }
                Scope::App => {
                    let app = cmd
                        .apps
                        .last_mut()
                        .ok_or_else(|| usage(format!("flag --{name} must follow an image")))?;
                    match name {
                        "exec" => app.exec = Some(value),
                        "name" => {
                            if !appc::AcName::is_valid(&value) {
                                return Err(usage(format!(
                                    "--name: invalid app name {value:?} (want an ACName)"
                                )));
                            }
                            app.name = Some(value)
                        }
                        "user" => app.user = Some(value),
                        "group" => app.group = Some(value),
                        "supplementary-gids" => {
                            let gids = parse_list(&value)
                                .iter()
                                .map(|g| g.parse::<u32>())
                                .collect::<Result<Vec<_>, _>>()
                                .map_err(|_| {
                                    usage(format!("--supplementary-gids: invalid list {value:?}"))
                                })?;
                            app.supplementary_gids = Some(gids);
                        }
                        "working-dir" => {
                            if !value.starts_with('/') {
                                return Err(usage(format!(
                                    "--working-dir must be absolute, got {value:?}"
                                )));
                            }
                            app.working_dir = Some(value)
                        }
                        "environment" => app.environment.push(parse_kv(name, &value)?),
                        "memory" => {
                            validate_memory(&value)?;
                            app.memory = Some(value)
                        }
                        "cpu" => {
                            validate_cpu(&value)?;
                            app.cpu = Some(value)
                        }
                        "caps-retain" | "cap-retain" => {
                            app.caps_retain = Some(normalize_caps(&value)?)
                        }
                        "caps-remove" | "cap-remove" => {
                            app.caps_remove = Some(normalize_caps(&value)?)
                        }
                        "readonly-rootfs" => app.readonly_rootfs = on,
                        "cpu-shares" => {
                            let v = value.parse::<u32>().map_err(|_| {
                                usage(format!("--cpu-shares: invalid number {value:?}"))
                            })?;
                            app.cpu_shares = Some(v)
                        }
                        "oom-score-adj" => {
                            let v = value
                                .parse::<i32>()
                                .ok()
                                .filter(|v| (-1000..=1000).contains(v))
                                .ok_or_else(|| {
                                    usage(format!(
                                        "--oom-score-adj: want -1000..1000, got {value:?}"
                                    ))
                                })?;
                            app.oom_score_adj = Some(v)
                        }
                        "seccomp" => app.seccomp = Some(parse_seccomp(&value)?),
                        "annotation" => app.annotations.push(parse_kv(name, &value)?),
                        "user-annotation" => app.user_annotations.push(parse_kv(name, &value)?),
                        "user-label" => app.user_labels.push(parse_kv(name, &value)?),
                        "signature" => app.signature = Some(PathBuf::from(value)),
                        "stdin" | "stdout" | "stderr" => {
                            // Checked alone here, together once the app's flags are all read.
                            let v = Some(value.as_str());
                            let (ann, checked) = match name {
                                "stdin" => (ANN_STDIN, StdioPlan::from_values(v, None, None)),
                                "stdout" => (ANN_STDOUT, StdioPlan::from_values(None, v, None)),
                                _ => (ANN_STDERR, StdioPlan::from_values(None, None, v)),
                            };
                            match checked {
                                Ok(_) | Err(ModeError::PartialTty(_)) => {}
                                Err(e) => return Err(usage(e.to_string())),
                            }
                            app.annotations.retain(|(k, _)| k != ann);
                            app.annotations.push((ann.to_string(), value));
                        }
                        _ => {}
                    }
                }
            }
        }
        if mode == Mode::RunPrepared && (cmd.apps.len() != 1 || cmd.apps[0].args.is_some()) {
            return Err(usage("run-prepared takes flags and exactly one pod UUID"));
        }
        if cmd.pod.pod_manifest.is_some() {
            let conflicts = pod_manifest_conflicts(&cmd);
            if !conflicts.is_empty() {
                return Err(usage(format!(
                    "conflicting flags set with --pod-manifest: {} (the pod manifest names the apps, their images, volumes and ports)",
                    conflicts.join(", ")
                )));
            }
            return Ok(cmd);
        }
        if cmd.apps.is_empty() {
            return Err(usage("at least one image is required"));
        }
        if cmd.pod.interactive && cmd.apps.len() > 1 {
            return Err(usage("--interactive works with a single image only"));
        }
        for app in &cmd.apps {
            let stdio = stdio_of(
                app.annotations
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .map_err(|e| usage(e.to_string()))?;
            if stdio.attachable() && cmd.pod.interactive {
                return Err(usage(
                    "--interactive gives the app rkt's terminal; --stdin, --stdout and --stderr of stream or tty make it attachable with rkt attach instead: choose one",
                ));
            }
        }
        Ok(cmd)
    }

    /// Parses the arguments after `run-prepared`: global flags and [`RUN_PREPARED_FLAGS`]
    /// before or after one pod UUID (Nomad passes `--net=… --debug=B UUID`). Returns the
    /// options given (`apps` empty) and the UUID.
    pub fn parse_run_prepared(argv: &[String]) -> Result<(Self, String), UsageError> {
        let mut cmd = Self::parse(Mode::RunPrepared, argv)?;
        let uuid = cmd.apps.remove(0).image;
        Ok((cmd, uuid))
    }
}

/// Parses a capability list (`CAP_NET_ADMIN,sys_admin`), returning canonical `CAP_*` names.
pub fn normalize_caps(s: &str) -> Result<Vec<String>, UsageError> {
    parse_list(s)
        .iter()
        .map(|c| {
            let up = c.to_ascii_uppercase();
            let full = if up.starts_with("CAP_") {
                up
            } else {
                format!("CAP_{up}")
            };
            if appc::types::KNOWN_CAPABILITIES.contains(&full.as_str()) {
                Ok(full)
            } else {
                Err(usage(format!("unknown capability {c:?}")))
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(mode: Mode, s: &[&str]) -> Result<RunCommand, UsageError> {
        let v: Vec<String> = s.iter().map(|x| x.to_string()).collect();
        RunCommand::parse(mode, &v)
    }

    #[test]
    fn stage1_from_dir_takes_a_file_name() {
        let c = p(Mode::Run, &["--stage1-from-dir=stage1-kvm.aci", "img"]).unwrap();
        assert_eq!(c.pod.stage1, Stage1Ref::FromDir("stage1-kvm.aci".into()));
        for bad in ["../stage1.aci", "/abs/stage1.aci", "a/b.aci", "..", "."] {
            let e = p(Mode::Run, &[&format!("--stage1-from-dir={bad}"), "img"]).unwrap_err();
            assert!(e.to_string().contains("--stage1-from-dir"), "{bad}: {e}");
        }
        let e = p(
            Mode::Run,
            &["--stage1=kvm", "--stage1-from-dir=x.aci", "img"],
        )
        .unwrap_err();
        assert!(e.to_string().contains("only one of"), "{e}");
    }

    #[test]
    fn pod_manifest_stands_alone() {
        let c = p(
            Mode::Run,
            &["--pod-manifest=/p.json", "--net=none", "--hostname=h"],
        )
        .unwrap();
        assert_eq!(c.pod.pod_manifest, Some(PathBuf::from("/p.json")));
        assert!(c.apps.is_empty());
        let c = p(Mode::Prepare, &["--pod-manifest", "/p.json", "--quiet"]).unwrap();
        assert_eq!(c.pod.pod_manifest, Some(PathBuf::from("/p.json")));
        // What the manifest says itself is refused beside it, each named.
        let e = p(
            Mode::Run,
            &[
                "--pod-manifest=/p.json",
                "--volume=v,kind=empty",
                "--set-env=A=B",
                "--pull-policy=never",
                "img",
            ],
        )
        .unwrap_err()
        .to_string();
        for f in ["images", "--volume", "--set-env", "--pull-policy"] {
            assert!(e.contains(f), "{e}");
        }
        assert!(p(Mode::Run, &["--pod-manifest=", "img"]).is_err());
        assert!(p(Mode::RunPrepared, &["--pod-manifest=/p.json", "uuid"]).is_err());
    }

    #[test]
    fn per_app_flags_follow_their_image() {
        let c = p(
            Mode::Run,
            &[
                "--volume=data,kind=empty,mode=0700",
                "--mount",
                "volume=data,target=/data",
                "--set-env=A=1",
                "a.aci",
                "--exec=/bin/a",
                "--name",
                "first",
                "--memory=64Mi",
                "--",
                "x",
                "--not-a-flag",
                "---",
                "b.aci",
                "--user=1000",
                "--mount=volume=data,target=/b",
                "--caps-retain=net_admin,CAP_CHOWN",
                "--debug",
            ],
        )
        .unwrap();
        assert_eq!(c.apps.len(), 2);
        assert_eq!(c.apps[0].image, "a.aci");
        assert_eq!(c.apps[0].exec.as_deref(), Some("/bin/a"));
        assert_eq!(c.apps[0].name.as_deref(), Some("first"));
        assert_eq!(
            c.apps[0].args,
            Some(vec!["x".to_string(), "--not-a-flag".to_string()])
        );
        assert_eq!(c.apps[1].user.as_deref(), Some("1000"));
        assert_eq!(c.apps[1].mounts[0].target, "/b");
        assert_eq!(
            c.apps[1].caps_retain,
            Some(vec!["CAP_NET_ADMIN".to_string(), "CAP_CHOWN".to_string()])
        );
        assert_eq!(c.pod.mounts[0].target, "/data");
        assert_eq!(c.pod.volumes[0].mode.as_deref(), Some("0700"));
        assert_eq!(c.pod.set_env, vec![("A".to_string(), "1".to_string())]);
        assert!(c.globals.debug);
        assert_eq!(c.pod.net, "default");
    }

    #[test]
    fn args_without_triple_dash_run_to_the_end() {
        let c = p(Mode::Run, &["a.aci", "--", "--exit", "3"]).unwrap();
        assert_eq!(c.apps.len(), 1);
        assert_eq!(
            c.apps[0].args,
            Some(vec!["--exit".to_string(), "3".to_string()])
        );
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        assert!(p(Mode::Run, &["--bogus", "a.aci"])
            .unwrap_err()
            .0
            .contains("--bogus"));
        assert!(p(Mode::Run, &["--exec=/x", "a.aci"])
            .unwrap_err()
            .0
            .contains("must follow"));
        assert!(p(Mode::Run, &[]).is_err());
        assert!(p(Mode::Run, &["a.aci", "--memory=12Q"]).is_err());
        assert!(p(Mode::Run, &["a.aci", "--name=Bad_Name"]).is_err());
        assert!(p(Mode::Run, &["--interactive", "a.aci", "b.aci"]).is_err());
        assert!(p(Mode::Prepare, &["--interactive", "a.aci"]).is_err());
        assert!(p(Mode::Run, &["--quiet", "a.aci"]).is_err());
        assert!(p(Mode::Prepare, &["--quiet", "a.aci"]).unwrap().pod.quiet);
        assert!(p(Mode::Run, &["--stage1=xen", "a.aci"]).is_err());
        assert!(p(Mode::Run, &["--stage1=ns", "--stage1-name=x", "a.aci"]).is_err());
        assert!(p(Mode::Run, &["--volume=v,kind=host", "a.aci"]).is_err());
        assert!(p(Mode::Run, &["--volume=v,kind=host,source=rel", "a.aci"]).is_err());
        assert!(p(Mode::Run, &["--mount=volume=v", "a.aci"]).is_err());
        assert!(p(Mode::Run, &["a.aci", "--working-dir=rel"]).is_err());
        assert!(p(Mode::Run, &["a.aci", "--caps-remove=CAP_NOPE"]).is_err());
        assert!(p(Mode::Run, &["a.aci", "--hostname"]).is_err());
    }

    #[test]
    fn nomad_style_prepare() {
        let c = p(
            Mode::Prepare,
            &[
                "--volume=a-t-alloc,kind=host,source=/tmp",
                "--mount=volume=a-t-alloc,target=/alloc",
                "--set-env=K=V",
                "--dns=8.8.8.8",
                "--port=http:8080",
                "img",
                "--exec=/bin/x",
                "--memory=268435456",
                "--cpu-shares=512",
                "--oom-score-adj=10",
                "--seccomp=mode=remove,errno=EPERM,reboot,swapon",
                "--user-label=k=v",
                "--stdout=log",
                "--",
                "arg",
            ],
        )
        .unwrap();
        assert_eq!(c.pod.ports, vec![("http".to_string(), None, 8080)]);
        assert_eq!(c.pod.dns.dns, vec!["8.8.8.8".to_string()]);
        assert!(c.pod.ignored.is_empty());
        let a = &c.apps[0];
        assert_eq!(a.cpu_shares, Some(512));
        assert_eq!(a.oom_score_adj, Some(10));
        assert_eq!(
            a.seccomp,
            Some((
                false,
                Some("EPERM".into()),
                vec!["reboot".into(), "swapon".into()]
            ))
        );
        assert_eq!(
            parse_port("p:127.0.0.1:80").unwrap(),
            ("p".into(), Some("127.0.0.1".into()), 80)
        );
        assert!(parse_port("p:0").is_err());
        assert!(p(Mode::Run, &["a", "--stdin=log"]).is_err());
        assert!(p(Mode::Run, &["a", "--oom-score-adj=5000"]).is_err());
        assert!(p(Mode::Run, &["a", "--seccomp=reboot"]).is_err());
    }

    #[test]
    fn late_validation_moves_to_parsing() {
        for h in ["podhost", "a.b-c.example", "x1", &"a".repeat(63)] {
            assert!(
                p(Mode::Run, &[&format!("--hostname={h}"), "a"]).is_ok(),
                "{h}"
            );
        }
        for h in [
            "a\nb",
            "a b",
            "\u{1b}[31m",
            "-a",
            "a-",
            "a..b",
            ".",
            "",
            "a_b",
            &"a".repeat(64),
            &format!("{}.{}", "a".repeat(40), "b".repeat(40)),
        ] {
            let e = p(Mode::Run, &[&format!("--hostname={h}"), "a"]).unwrap_err();
            assert!(e.0.contains("--hostname"), "{h:?}: {e}");
        }
        for ok in [
            "--memory=64Mi",
            "--memory=4096",
            "--cpu=250m",
            "--cpu=1",
            "--cpu=8192",
        ] {
            assert!(p(Mode::Run, &["a", ok]).is_ok(), "{ok}");
        }
        for bad in [
            "--memory=0",
            "--memory=4095",
            "--memory=1e30",
            "--cpu=0",
            "--cpu=1e9",
            "--cpu=8193",
            "--cpu=-1",
        ] {
            assert!(p(Mode::Run, &["a", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn run_prepared_takes_pod_flags_and_one_uuid() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (c, uuid) = RunCommand::parse_run_prepared(&v(&[
            "--dns=10.0.0.1",
            "--dns-search=example.com",
            "--net=none",
            "--hostname=web",
            "--interactive=false",
            "--mds-register=false",
            "--debug=false",
            "1234abcd",
        ]))
        .unwrap();
        assert_eq!(uuid, "1234abcd");
        assert!(c.apps.is_empty());
        assert_eq!(c.pod.net, "none");
        assert_eq!(c.pod.hostname.as_deref(), Some("web"));
        assert!(!c.pod.interactive && !c.globals.debug);
        // Flags may also follow the UUID.
        let (c, _) =
            RunCommand::parse_run_prepared(&v(&["u", "--interactive", "--ipc=private"])).unwrap();
        assert!(c.pod.interactive);
        assert!(!c.pod.kvm_snapshot);
        let (c, _) = RunCommand::parse_run_prepared(&v(&["u", "--kvm-snapshot"])).unwrap();
        assert!(c.pod.kvm_snapshot);
        assert!(
            p(Mode::Run, &["--kvm-snapshot", "a.aci"])
                .unwrap()
                .pod
                .kvm_snapshot
        );
        assert!(p(Mode::Prepare, &["--kvm-snapshot", "a.aci"]).is_err());
        // --ipc: parent shares the host's namespace; prepare records nothing (with a warning).
        assert!(!c.pod.host_ipc);
        let (c, _) = RunCommand::parse_run_prepared(&v(&["u", "--ipc=parent"])).unwrap();
        assert!(c.pod.host_ipc && c.pod.ignored.is_empty());
        for (ipc, host) in [("auto", false), ("private", false), ("parent", true)] {
            let c = p(Mode::Run, &[&format!("--ipc={ipc}"), "a.aci"]).unwrap();
            assert_eq!(c.pod.host_ipc, host, "{ipc}");
        }
        let c = p(Mode::Prepare, &["--ipc=parent", "a.aci"]).unwrap();
        assert!(!c.pod.host_ipc);
        assert_eq!(c.pod.ignored, ["--ipc=parent (give it to run-prepared)"]);
        assert!(p(Mode::Run, &["--ipc=host", "a.aci"]).is_err());
        // --pids-limit: a pod's task limit, the default unless given; prepare records nothing.
        assert_eq!(c.pod.pids_limit.tasks(), Some(DEFAULT_PIDS_LIMIT));
        for (v, tasks) in [("64", Some(64)), ("max", None)] {
            let c = p(Mode::Run, &[&format!("--pids-limit={v}"), "a.aci"]).unwrap();
            assert_eq!(c.pod.pids_limit.tasks(), tasks, "{v}");
        }
        let (c, _) = RunCommand::parse_run_prepared(&v(&["u", "--pids-limit=9"])).unwrap();
        assert_eq!(c.pod.pids_limit.tasks(), Some(9));
        let c = p(Mode::Prepare, &["--pids-limit=9", "a.aci"]).unwrap();
        assert_eq!(c.pod.ignored, ["--pids-limit=9 (give it to run-prepared)"]);
        for bad in ["0", "-1", "", "lots"] {
            assert!(
                p(Mode::Run, &[&format!("--pids-limit={bad}"), "a.aci"]).is_err(),
                "{bad}"
            );
        }
        // --disk-limit: run and prepare (the pod's directory is made then), not run-prepared.
        for mode in [Mode::Run, Mode::Prepare] {
            let c = p(mode, &["--disk-limit=64Mi", "a.aci"]).unwrap();
            assert_eq!(c.pod.disk_limit, Some(64 << 20));
            assert!(p(mode, &["--disk-limit=1k", "a.aci"]).is_err());
        }
        assert!(RunCommand::parse_run_prepared(&v(&["u", "--disk-limit=1G"])).is_err());
        for bad in [
            &["--exec=/x", "u"][..],
            &["--volume=v,kind=empty", "u"],
            &["u", "--memory=1G"],
            &["u", "--", "arg"],
            &["u", "v"],
            &[],
            &["--hostname=a b", "u"],
        ] {
            assert!(RunCommand::parse_run_prepared(&v(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn volumes_parse_like_rkt() {
        let v = parse_volume("src,kind=host,source=/tmp,readOnly=true,recursive=false").unwrap();
        assert_eq!(v.source.as_deref(), Some("/tmp"));
        assert_eq!(v.read_only, Some(true));
        assert_eq!(v.recursive, Some(false));
        let e = parse_volume("db,kind=empty,uid=7,gid=8").unwrap();
        assert_eq!((e.uid, e.gid), (Some(7), Some(8)));
        assert!(parse_volume("db,kind=empty,source=/x").is_err());
        assert!(parse_volume("db,kind=tmpfs").is_err());
        // rkt app add's per-app form: name= and target= among the keys, in any order.
        let (v, t) =
            parse_mnt_volume("kind=host,name=data,source=/srv,target=/var/data,readOnly=true")
                .unwrap();
        assert_eq!((v.name.as_str(), t.as_str()), ("data", "/var/data"));
        assert_eq!(
            (v.source.as_deref(), v.read_only),
            (Some("/srv"), Some(true))
        );
        let (e, _) = parse_mnt_volume("name=scratch,kind=empty,mode=0700,target=/s").unwrap();
        assert_eq!(e.mode.as_deref(), Some("0700"));
        for bad in [
            "kind=host,source=/srv,target=/d",
            "name=d,kind=host,source=/srv",
            "name=d,kind=host,source=/srv,target=rel",
            "name=d,name=e,kind=empty,target=/d",
            "name=D!,kind=empty,target=/d",
            "name=d,kind=host,target=/d",
        ] {
            let e = parse_mnt_volume(bad).unwrap_err();
            assert!(e.0.contains("--mnt-volume"), "{bad}: {}", e.0);
        }
    }

    #[test]
    fn stage1_selection() {
        assert_eq!(p(Mode::Run, &["a"]).unwrap().pod.stage1, Stage1Ref::Default);
        assert_eq!(
            p(Mode::Run, &["--stage1", "kvm", "a"]).unwrap().pod.stage1,
            Stage1Ref::Flavor("kvm".into())
        );
        assert_eq!(
            p(Mode::Run, &["--stage1-path=/x/s1.aci", "a"])
                .unwrap()
                .pod
                .stage1,
            Stage1Ref::Path("/x/s1.aci".into())
        );
    }
}
