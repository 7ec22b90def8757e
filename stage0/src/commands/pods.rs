//! Pod commands: status, list, cat-manifest, stop, rm, gc, enter. The operations are in
//! `stage0::pod::ops`; this is their flags and output.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use pod_abi::paths::PodDirState;
use stage0::duration::parse_go_duration;
use stage0::error::UsageError;
use stage0::format::{format_ago, format_time, tabwrite};
use stage0::pod::launch::read_pod_manifest;
use stage0::pod::ops::{self, GcEvent, GcOptions};
use stage0::pod::status::PodInfo;
use stage0::pod::PodsDir;
use stage0::snapshots::SnapshotGcEvent;

use super::{report, Globals};
use crate::outln;

fn read_uuid_file(p: &PathBuf) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(p)
        .with_context(|| format!("cannot read {}", p.display()))?
        .trim()
        .to_string())
}

fn uuid_arg(uuid: &Option<String>, file: &Option<PathBuf>) -> anyhow::Result<String> {
    match (uuid, file) {
        (Some(u), None) => Ok(u.clone()),
        (None, Some(f)) => read_uuid_file(f),
        (Some(_), Some(_)) => {
            Err(UsageError("give either a UUID or --uuid-file, not both".into()).into())
        }
        (None, None) => Err(UsageError("a pod UUID (or --uuid-file) is required".into()).into()),
    }
}

fn uuids_arg(uuids: &[String], file: &Option<PathBuf>) -> anyhow::Result<Vec<String>> {
    let mut v = uuids.to_vec();
    if let Some(f) = file {
        v.push(read_uuid_file(f)?);
    }
    if v.is_empty() {
        return Err(UsageError("at least one pod UUID (or --uuid-file) is required".into()).into());
    }
    Ok(v)
}

fn check_format(format: &str) -> Result<(), UsageError> {
    match format {
        "" | "json" | "json-pretty" => Ok(()),
        f => Err(UsageError(format!(
            "--format must be json or json-pretty, got {f:?}"
        ))),
    }
}

/// Flags of `rkt status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Wait for the pod to exit: `--wait`, `--wait=false` or `--wait=DURATION`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub wait: Option<String>,
    /// Wait for the pod to be running (accepted; same semantics as rkt's readiness wait).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub wait_ready: Option<String>,
    /// Output format: json or json-pretty (default key=value lines).
    #[arg(long, default_value = "")]
    pub format: String,
    /// Read the UUID from this file.
    #[arg(long)]
    pub uuid_file: Option<PathBuf>,
    /// Pod UUID (or unambiguous prefix).
    pub uuid: Option<String>,
}

/// Parses `--wait` values: None = no wait, Some(None) = forever, Some(Some(d)) = timeout.
fn wait_value(v: &Option<String>) -> Result<Option<Option<Duration>>, UsageError> {
    match v.as_deref() {
        None | Some("false") => Ok(None),
        Some("true") => Ok(Some(None)),
        Some(d) => Ok(Some(Some(parse_go_duration(d)?))),
    }
}

/// `rkt status`.
pub fn status(g: &Globals, a: StatusArgs) -> anyhow::Result<i32> {
    let uuid = uuid_arg(&a.uuid, &a.uuid_file)?;
    check_format(&a.format)?;
    let wait = wait_value(&a.wait)?;
    let wait_ready = wait_value(&a.wait_ready)?;
    let pods = PodsDir::open(&g.dir)?;
    let uuid = pods.resolve(&uuid)?;
    let start = Instant::now();
    if let Some(t) = wait_ready {
        ops::wait_ready(&pods, &uuid, start, t)?;
    }
    if let Some(t) = wait {
        ops::wait_exited(&pods, &uuid, start, t)?;
    }
    let info = PodInfo::read(&pods.open_pod(&uuid)?);
    match a.format.as_str() {
        "json" => outln!("{}", info.to_json())?,
        "json-pretty" => outln!("{}", serde_json::to_string_pretty(&info.to_json())?)?,
        _ => {
            for l in info.status_lines() {
                outln!("{l}")?;
            }
        }
    }
    Ok(0)
}

/// Flags of `rkt list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Full UUIDs and image IDs, absolute times.
    #[arg(long)]
    pub full: bool,
    /// No header line.
    #[arg(long)]
    pub no_legend: bool,
    /// Output format: json or json-pretty.
    #[arg(long, default_value = "")]
    pub format: String,
}

fn image_display(info: &PodInfo, app: &str) -> String {
    let version = info
        .manifest
        .as_ref()
        .and_then(|m| m.app(app))
        .and_then(|a| {
            a.image
                .labels
                .iter()
                .find(|l| l.name.as_str() == "version")
                .map(|l| l.value.clone())
        });
    let name = info
        .apps
        .iter()
        .find(|a| a.name == app)
        .map(|a| a.image_name.clone())
        .unwrap_or_default();
    match version {
        Some(v) => format!("{name}:{v}"),
        None => name,
    }
}

/// The table rows of one pod: the first app's row carries the pod columns.
fn pod_rows(
    info: &PodInfo,
    full: bool,
    when: &dyn Fn(Option<SystemTime>) -> String,
) -> Vec<Vec<String>> {
    let short: String = if full {
        info.uuid.clone()
    } else {
        info.uuid.chars().take(8).collect()
    };
    let apps: Vec<_> = if info.apps.is_empty() {
        vec![None]
    } else {
        info.apps.iter().map(Some).collect()
    };
    let mut rows = Vec::new();
    for (i, app) in apps.into_iter().enumerate() {
        let (name, img, id) = match app {
            Some(ap) => {
                let id = if full {
                    ap.image_id.clone()
                } else {
                    ap.image_id.chars().take(19).collect()
                };
                (ap.name.clone(), image_display(info, &ap.name), id)
            }
            None => ("-".into(), "-".into(), "-".into()),
        };
        let mut r = vec![
            if i == 0 { short.clone() } else { String::new() },
            name,
            img,
        ];
        if full {
            r.push(id);
        }
        if i == 0 {
            r.extend([
                info.state.to_string(),
                when(info.created),
                when(info.started),
                info.networks_summary(),
            ]);
        } else {
            r.extend([String::new(), String::new(), String::new(), String::new()]);
        }
        rows.push(r);
    }
    rows
}

/// `rkt list`.
pub fn list(g: &Globals, a: ListArgs) -> anyhow::Result<i32> {
    let pods = PodsDir::open(&g.dir)?;
    let infos: Vec<PodInfo> = pods
        .pods()?
        .filter(|p| p.dir_state() != PodDirState::Embryo)
        .map(|p| PodInfo::read(&p))
        .collect();
    check_format(&a.format)?;
    if !a.format.is_empty() {
        let v: Vec<serde_json::Value> = infos.iter().map(PodInfo::to_json).collect();
        let s = if a.format == "json" {
            serde_json::to_string(&v)?
        } else {
            serde_json::to_string_pretty(&v)?
        };
        outln!("{s}")?;
        return Ok(0);
    }
    let now = SystemTime::now();
    let when = |t: Option<SystemTime>| match t {
        Some(t) if a.full => format_time(t),
        Some(t) => format_ago(t, now),
        None => String::new(),
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    if !a.no_legend {
        let mut h = vec!["UUID", "APP", "IMAGE NAME"];
        if a.full {
            h.push("IMAGE ID");
        }
        h.extend(["STATE", "CREATED", "STARTED", "NETWORKS"]);
        rows.push(h.into_iter().map(String::from).collect());
    }
    for info in &infos {
        rows.extend(pod_rows(info, a.full, &when));
    }
    super::out(tabwrite(&rows))?;
    Ok(0)
}

/// Flags of `rkt cat-manifest`.
#[derive(Debug, clap::Args)]
pub struct CatManifestArgs {
    /// Pretty-print the JSON (default true).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", require_equals = true, value_name = "BOOL",
          value_parser = super::gobool::value)]
    pub pretty_print: bool,
    /// Read the UUID from this file.
    #[arg(long)]
    pub uuid_file: Option<PathBuf>,
    /// Pod UUID (or unambiguous prefix).
    pub uuid: Option<String>,
}

/// `rkt cat-manifest`.
pub fn cat_manifest(g: &Globals, a: CatManifestArgs) -> anyhow::Result<i32> {
    let uuid = uuid_arg(&a.uuid, &a.uuid_file)?;
    let pods = PodsDir::open(&g.dir)?;
    let pm = read_pod_manifest(&pods.open_pod(&uuid)?)?;
    let out = if a.pretty_print {
        pm.to_json_pretty()
    } else {
        pm.to_json()
    };
    outln!("{}", String::from_utf8_lossy(&out))?;
    Ok(0)
}

/// Flags of `rkt stop`.
#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// Kill instead of stopping gracefully.
    #[arg(long)]
    pub force: bool,
    /// Read the UUID from this file.
    #[arg(long)]
    pub uuid_file: Option<PathBuf>,
    /// Pod UUIDs (or unambiguous prefixes).
    pub uuids: Vec<String>,
}

/// `rkt stop`.
pub fn stop(g: &Globals, a: StopArgs) -> anyhow::Result<i32> {
    let pods = PodsDir::open(&g.dir)?;
    let mut code = 0;
    for r in uuids_arg(&a.uuids, &a.uuid_file)? {
        match ops::stop(&pods, &r, a.force) {
            Ok(u) => outln!("{u:?}")?,
            Err(e) => code = report(e),
        }
    }
    Ok(code)
}

/// Flags of `rkt rm`.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Read the UUID from this file.
    #[arg(long)]
    pub uuid_file: Option<PathBuf>,
    /// Pod UUIDs (or unambiguous prefixes).
    pub uuids: Vec<String>,
}

/// `rkt rm`.
pub fn rm(g: &Globals, a: RmArgs) -> anyhow::Result<i32> {
    let pods = PodsDir::open(&g.dir)?;
    let mut code = 0;
    for r in uuids_arg(&a.uuids, &a.uuid_file)? {
        match ops::remove_by_ref(&pods, &r, g.debug, &mut |w| super::warn(&w)) {
            Ok(u) => outln!("{u:?}")?,
            Err(e) => code = report(e),
        }
    }
    Ok(code)
}

/// Flags of `rkt gc`.
#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Time an exited pod stays marked before it is deleted.
    #[arg(long, default_value = "30m0s")]
    pub grace_period: String,
    /// Age after which prepared pods are garbage.
    #[arg(long, default_value = "24h0m0s")]
    pub expire_prepared: String,
    /// Only move exited pods to exited-garbage.
    #[arg(long)]
    pub mark_only: bool,
}

/// `rkt gc`.
pub fn gc(g: &Globals, a: GcArgs) -> anyhow::Result<i32> {
    let opts = GcOptions {
        grace_period: parse_go_duration(&a.grace_period)?,
        expire_prepared: parse_go_duration(&a.expire_prepared)?,
        mark_only: a.mark_only,
        debug: g.debug,
    };
    let pods = PodsDir::open(&g.dir)?;
    let mut printed = Ok(());
    let all_ok = ops::gc(&pods, &opts, &mut |ev| {
        let r = match ev {
            GcEvent::Marked(u) => outln!("Moving pod {u:?} to garbage"),
            GcEvent::WithinGrace(u) => outln!(
                "Pod {u:?} not removed: still within grace period ({})",
                a.grace_period
            ),
            GcEvent::Collecting(u) => outln!("Garbage collecting pod {u:?}"),
            GcEvent::Warning(w) => {
                super::warn(&w);
                Ok(())
            }
            GcEvent::Failed(_, e) => {
                super::print_error(&e.into());
                Ok(())
            }
        };
        if let Err(e) = r {
            if e.is_broken_pipe() {
                super::exit_on_broken_pipe();
            }
            printed = Err(e);
        }
    })?;
    printed?;
    let snapshots_ok = a.mark_only || gc_snapshots(g)?;
    Ok(if all_ok && snapshots_ok {
        0
    } else {
        pod_abi::exit::FAILURE
    })
}

/// The snapshot cache's part of `rkt gc` (`stage0::snapshots`): one line per removed entry,
/// kept ones only with `--debug`. Returns whether it all worked.
fn gc_snapshots(g: &Globals) -> anyhow::Result<bool> {
    let mut printed = Ok(());
    let res = stage0::snapshots::gc(&g.dir, SystemTime::now(), &mut |ev| {
        let r = match ev {
            SnapshotGcEvent::Removed { name, why } => outln!("Removed snapshot {name}: {why}"),
            SnapshotGcEvent::Kept { name, why } => {
                if g.debug {
                    eprintln!("rkt: snapshot cache: kept {name}: {why}");
                }
                Ok(())
            }
            SnapshotGcEvent::Failed { name, error } => {
                super::warn(&format!("snapshot {name}: {error}"));
                Ok(())
            }
        };
        if let Err(e) = r {
            if e.is_broken_pipe() {
                super::exit_on_broken_pipe();
            }
            printed = Err(e);
        }
    });
    printed?;
    match res {
        Ok(ok) => Ok(ok),
        Err(e) => {
            super::print_error(&e.into());
            Ok(false)
        }
    }
}

/// The variable that enables `rkt attach` (experimental in rkt too), and the value it needs.
pub const ATTACH_EXPERIMENT_ENV: &str = "RKT_EXPERIMENT_ATTACH";

/// Flags of `rkt attach`.
#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// The app to attach to (required for multi-app pods).
    #[arg(long)]
    pub app: Option<String>,
    /// list (print the endpoints), auto (all of them), tty, tty-in, tty-out, or some of
    /// stdin,stdout,stderr.
    #[arg(long, default_value = "auto")]
    pub mode: String,
    /// Pod UUID (or unambiguous prefix).
    pub uuid: String,
}

/// `rkt attach`: prints the endpoints (`--mode=list`) or returns only on failure (the stage1
/// entrypoint replaces this process).
pub fn attach(g: &Globals, a: AttachArgs) -> anyhow::Result<i32> {
    if !super::experiment(ATTACH_EXPERIMENT_ENV) {
        return Err(UsageError(format!(
            "rkt attach is experimental: set {ATTACH_EXPERIMENT_ENV}=true to use it"
        ))
        .into());
    }
    let pods = PodsDir::open(&g.dir)?;
    let endpoints = ops::attach(&pods, &a.uuid, a.app.as_deref(), &a.mode, g.debug)?;
    for e in endpoints {
        outln!("{e}")?;
    }
    Ok(0)
}

/// Flags of `rkt enter`.
#[derive(Debug, clap::Args)]
pub struct EnterArgs {
    /// The app to enter (required for multi-app pods).
    #[arg(long)]
    pub app: Option<String>,
    /// Pod UUID (or unambiguous prefix).
    pub uuid: String,
    /// Command and arguments (default /bin/bash).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

/// `rkt enter`: returns only on failure (the stage1 entrypoint replaces this process).
pub fn enter(g: &Globals, a: EnterArgs) -> anyhow::Result<i32> {
    let pods = PodsDir::open(&g.dir)?;
    Err(ops::enter(&pods, &a.uuid, a.app.as_deref(), a.cmd).into())
}
