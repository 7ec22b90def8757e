//! Pod commands: status, list, cat-manifest, stop, rm, gc, enter.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use pod_abi::paths::PodDirState;
use stage0::pod::args::UsageError;
use stage0::pod::status::{format_ago, format_time, PodInfo};
use stage0::pod::{layout, Pod, PodError, PodState, PodsDir};
use stage0::stage1::Entrypoints;

use super::run::report;
use crate::cli::Globals;

/// Parses a Go duration (`30m0s`, `1h`, `500ms`, `1.5s`).
pub fn parse_duration(s: &str) -> Result<Duration, UsageError> {
    let bad = || UsageError(format!("invalid duration {s:?}"));
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(n);
        let v: f64 = num.parse().map_err(|_| bad())?;
        let u = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(u);
        let mult = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += v * mult;
        rest = tail;
    }
    Ok(Duration::from_secs_f64(total))
}

fn read_uuid_file(p: &PathBuf) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(p)
        .with_context(|| format!("cannot read {}", p.display()))?
        .trim()
        .to_string())
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
        Some(d) => Ok(Some(Some(parse_duration(d)?))),
    }
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

/// Poll interval while waiting for a pod (milliseconds).
const WAIT_POLL_MS: u64 = 50;

/// `rkt status`.
pub fn status(g: &Globals, a: StatusArgs) -> anyhow::Result<i32> {
    report((|| {
        let uuid = uuid_arg(&a.uuid, &a.uuid_file)?;
        if !matches!(a.format.as_str(), "" | "json" | "json-pretty") {
            return Err(UsageError(format!(
                "--format must be json or json-pretty, got {:?}",
                a.format
            ))
            .into());
        }
        let wait = wait_value(&a.wait)?;
        let wait_ready = wait_value(&a.wait_ready)?;
        let pods = PodsDir::open(&g.dir)?;
        let uuid = pods.resolve(&uuid)?;
        let start = std::time::Instant::now();
        let timed_out = |t: Option<Duration>| t.is_some_and(|t| start.elapsed() >= t);
        if let Some(t) = wait_ready {
            loop {
                let p = pods.open_pod(&uuid)?;
                let st = p.state();
                if st == PodState::Running && p.pid().is_some() || st.is_after_run() || timed_out(t)
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(WAIT_POLL_MS));
            }
        }
        if let Some(t) = wait {
            loop {
                let st = pods.open_pod(&uuid)?.state();
                if !matches!(
                    st,
                    PodState::Running | PodState::Preparing | PodState::Prepared | PodState::Embryo
                ) {
                    break;
                }
                if timed_out(t) {
                    return Err(anyhow::anyhow!("timed out waiting for pod {uuid} to exit"));
                }
                std::thread::sleep(Duration::from_millis(WAIT_POLL_MS));
            }
        }
        let info = PodInfo::read(&pods.open_pod(&uuid)?);
        match a.format.as_str() {
            "json" => println!("{}", info.to_json()),
            "json-pretty" => println!("{}", serde_json::to_string_pretty(&info.to_json())?),
            _ => {
                for l in info.status_lines() {
                    println!("{l}");
                }
            }
        }
        Ok(0)
    })())
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

/// Formats rows like Go's tabwriter(minwidth 0, tabwidth 8, padding 1, padchar '\t'): every
/// cell but the last is followed by tabs up to its column's width.
pub fn tab_format(rows: &[Vec<String>]) -> String {
    const TAB: usize = 8;
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i + 1 < r.len() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(c.chars().count() + 1);
                }
            }
        }
    }
    let mut out = String::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            out.push_str(c);
            if i + 1 < r.len() {
                let w = widths.get(i).copied().unwrap_or(0).div_ceil(TAB) * TAB;
                let tabs = (w - c.chars().count()).div_ceil(TAB).max(1);
                out.push_str(&"\t".repeat(tabs));
            }
        }
        out.push('\n');
    }
    out
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

/// `rkt list`.
pub fn list(g: &Globals, a: ListArgs) -> anyhow::Result<i32> {
    report((|| {
        let pods = PodsDir::open(&g.dir)?;
        let mut infos = Vec::new();
        for u in pods.list_uuids()? {
            if let Ok(p) = pods.open_pod(&u) {
                if p.dir_state() != PodDirState::Embryo {
                    infos.push(PodInfo::read(&p));
                }
            }
        }
        match a.format.as_str() {
            "json" | "json-pretty" => {
                let v: Vec<serde_json::Value> = infos.iter().map(PodInfo::to_json).collect();
                let s = if a.format == "json" {
                    serde_json::to_string(&v)?
                } else {
                    serde_json::to_string_pretty(&v)?
                };
                println!("{s}");
                return Ok(0);
            }
            "" => {}
            f => {
                return Err(
                    UsageError(format!("--format must be json or json-pretty, got {f:?}")).into(),
                )
            }
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
            let short: String = if a.full {
                info.uuid.clone()
            } else {
                info.uuid.chars().take(8).collect()
            };
            let apps: Vec<_> = if info.apps.is_empty() {
                vec![None]
            } else {
                info.apps.iter().map(Some).collect()
            };
            for (i, app) in apps.into_iter().enumerate() {
                let (name, img, id) = match app {
                    Some(ap) => {
                        let id = if a.full {
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
                if a.full {
                    r.push(id);
                }
                if i == 0 {
                    r.extend([
                        info.state.to_string(),
                        when(info.created),
                        when(info.started),
                        String::new(),
                    ]);
                } else {
                    r.extend([String::new(), String::new(), String::new(), String::new()]);
                }
                rows.push(r);
            }
        }
        print!("{}", tab_format(&rows));
        Ok(0)
    })())
}

/// Flags of `rkt cat-manifest`.
#[derive(Debug, clap::Args)]
pub struct CatManifestArgs {
    /// Pretty-print the JSON (default true).
    #[arg(long, num_args = 0..=1, default_value = "true", default_missing_value = "true", require_equals = true)]
    pub pretty_print: String,
    /// Read the UUID from this file.
    #[arg(long)]
    pub uuid_file: Option<PathBuf>,
    /// Pod UUID (or unambiguous prefix).
    pub uuid: Option<String>,
}

/// `rkt cat-manifest`.
pub fn cat_manifest(g: &Globals, a: CatManifestArgs) -> anyhow::Result<i32> {
    report((|| {
        let uuid = uuid_arg(&a.uuid, &a.uuid_file)?;
        let pods = PodsDir::open(&g.dir)?;
        let pod = pods.open_pod(&uuid)?;
        let path = pod.paths().manifest();
        let b = std::fs::read(&path).map_err(|e| PodError::io("read", &path, e))?;
        let pm =
            appc::PodManifest::from_json(&b).map_err(|e| PodError::Manifest { path, source: e })?;
        let out = if a.pretty_print == "false" {
            pm.to_json()
        } else {
            pm.to_json_pretty()
        };
        println!("{}", String::from_utf8_lossy(&out));
        Ok(0)
    })())
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

fn stop_one(pods: &PodsDir, r: &str, force: bool) -> anyhow::Result<String> {
    let pod = pods.open_pod(r)?;
    let st = pod.state();
    if st != PodState::Running {
        return Err(PodError::WrongState {
            uuid: pod.uuid().to_string(),
            state: st,
            wanted: "not running",
        }
        .into());
    }
    let ep = Entrypoints::read(&pod.paths().stage1_manifest())?;
    if ep.has(pod_abi::stage1::ANN_STOP) {
        let entry = ep.entrypoint(pod_abi::stage1::ANN_STOP)?;
        let argv = pod_abi::stage1::StopArgs {
            force,
            uuid: pod.uuid().to_string(),
        }
        .to_argv();
        let s = stage0::stage1::run_entrypoint(&pod.path(), &entry, &argv)?;
        if !s.success() {
            anyhow::bail!("stage1 stop entrypoint failed ({s})");
        }
    } else {
        let pid = pod
            .pid()
            .ok_or_else(|| anyhow::anyhow!("pod {} has no pid file", pod.uuid()))?;
        let sig = if force {
            nix::sys::signal::Signal::SIGKILL
        } else {
            nix::sys::signal::Signal::SIGTERM
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
            .context("cannot signal stage1")?;
    }
    Ok(pod.uuid().to_string())
}

/// `rkt stop`.
pub fn stop(g: &Globals, a: StopArgs) -> anyhow::Result<i32> {
    report((|| {
        let pods = PodsDir::open(&g.dir)?;
        let mut code = 0;
        for r in uuids_arg(&a.uuids, &a.uuid_file)? {
            match stop_one(&pods, &r, a.force) {
                Ok(u) => println!("{u:?}"),
                Err(e) => {
                    super::print_error(&e);
                    code = super::run::code_for(&e);
                }
            }
        }
        Ok(code)
    })())
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

/// Deletes a pod: lock, move to a garbage state, run the stage1 gc entrypoint, unmount
/// everything, remove the directory. Fails on running pods.
pub fn delete_pod(pod: &mut Pod, debug: bool) -> anyhow::Result<()> {
    pod.lock(false).map_err(|e| match e {
        PodError::Locked(u) => PodError::WrongState {
            uuid: u,
            state: PodState::Running,
            wanted: "cannot remove a running pod",
        },
        e => e,
    })?;
    match pod.dir_state() {
        PodDirState::Run => pod.transition(PodDirState::ExitedGarbage)?,
        PodDirState::Prepare | PodDirState::Prepared => pod.transition(PodDirState::Garbage)?,
        PodDirState::ExitedGarbage | PodDirState::Garbage => {}
        PodDirState::Embryo => {}
    }
    let paths = pod.paths();
    if let Ok(ep) = Entrypoints::read(&paths.stage1_manifest()) {
        if let Ok(entry) = ep.entrypoint(pod_abi::stage1::ANN_GC) {
            if paths.stage1_rootfs().join(&entry).exists() {
                let argv = pod_abi::stage1::GcArgs {
                    debug,
                    uuid: pod.uuid().to_string(),
                }
                .to_argv();
                match stage0::stage1::run_entrypoint(&pod.path(), &entry, &argv) {
                    Ok(s) if s.success() => {}
                    Ok(s) => {
                        eprintln!("rkt: warning: stage1 gc of pod {} failed ({s})", pod.uuid())
                    }
                    Err(e) => eprintln!("rkt: warning: stage1 gc of pod {}: {e}", pod.uuid()),
                }
            }
        }
    }
    layout::remove_pod_dir(&pod.path())?;
    Ok(())
}

/// `rkt rm`.
pub fn rm(g: &Globals, a: RmArgs) -> anyhow::Result<i32> {
    report((|| {
        let pods = PodsDir::open(&g.dir)?;
        let mut code = 0;
        for r in uuids_arg(&a.uuids, &a.uuid_file)? {
            let res = pods
                .open_pod(&r)
                .map_err(anyhow::Error::from)
                .and_then(|mut p| {
                    delete_pod(&mut p, g.debug)?;
                    Ok(p.uuid().to_string())
                });
            match res {
                Ok(u) => println!("{u:?}"),
                Err(e) => {
                    super::print_error(&e);
                    code = super::run::code_for(&e);
                }
            }
        }
        Ok(code)
    })())
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
    report((|| {
        let grace = parse_duration(&a.grace_period)?;
        let expire = parse_duration(&a.expire_prepared)?;
        let pods = PodsDir::open(&g.dir)?;
        let now = SystemTime::now();
        let age = |t: Option<SystemTime>| {
            t.and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default()
        };
        // Mark.
        for u in pods.list_uuids()? {
            let Ok(mut p) = pods.open_pod(&u) else {
                continue;
            };
            let to = match p.state() {
                PodState::Exited => PodDirState::ExitedGarbage,
                PodState::AbortedPrepare => PodDirState::Garbage,
                PodState::Prepared if age(p.created()) >= expire => PodDirState::Garbage,
                _ => continue,
            };
            if p.lock(false).is_err() {
                continue;
            }
            if p.dir_state().can_move_to(to) {
                println!("Moving pod {u:?} to garbage");
                p.transition(to)?;
            }
            p.unlock();
        }
        if a.mark_only {
            return Ok(0);
        }
        // Sweep.
        let mut code = 0;
        for u in pods.list_uuids()? {
            let Ok(mut p) = pods.open_pod(&u) else {
                continue;
            };
            let due = match p.state() {
                PodState::ExitedGarbage => age(p.gc_marked()) >= grace,
                PodState::Garbage => true,
                _ => false,
            };
            if !due {
                if p.state() == PodState::ExitedGarbage {
                    println!(
                        "Pod {u:?} not removed: still within grace period ({})",
                        a.grace_period
                    );
                }
                continue;
            }
            println!("Garbage collecting pod {u:?}");
            if let Err(e) = delete_pod(&mut p, g.debug) {
                super::print_error(&e);
                code = pod_abi::exit::FAILURE;
            }
        }
        Ok(code)
    })())
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

/// Default command of `rkt enter`.
pub const DEFAULT_ENTER_CMD: &str = "/bin/bash";

/// `rkt enter`.
pub fn enter(g: &Globals, a: EnterArgs) -> anyhow::Result<i32> {
    report((|| {
        let pods = PodsDir::open(&g.dir)?;
        let pod = pods.open_pod(&a.uuid)?;
        let st = pod.state();
        if st != PodState::Running {
            return Err(PodError::WrongState {
                uuid: pod.uuid().to_string(),
                state: st,
                wanted: "not running",
            }
            .into());
        }
        let info = PodInfo::read(&pod);
        let app = match (&a.app, info.apps.as_slice()) {
            (Some(n), apps) => {
                if !apps.iter().any(|x| &x.name == n) {
                    return Err(UsageError(format!("pod {} has no app {n:?}", pod.uuid())).into());
                }
                n.clone()
            }
            (None, [one]) => one.name.clone(),
            (None, _) => {
                let names: Vec<_> = info.apps.iter().map(|x| x.name.as_str()).collect();
                return Err(UsageError(format!(
                    "pod has several apps ({}); choose one with --app",
                    names.join(", ")
                ))
                .into());
            }
        };
        // The pid file appears shortly after the pod starts.
        let mut pid = pod.pid();
        for _ in 0..100 {
            if pid.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(WAIT_POLL_MS));
            pid = pod.pid();
        }
        let pid = pid.ok_or_else(|| anyhow::anyhow!("pod {} has no pid file yet", pod.uuid()))?;
        let cmd = if a.cmd.is_empty() {
            vec![DEFAULT_ENTER_CMD.to_string()]
        } else {
            a.cmd.clone()
        };
        let ep = Entrypoints::read(&pod.paths().stage1_manifest())?;
        let entry = ep.entrypoint(pod_abi::stage1::ANN_ENTER)?;
        let argv = pod_abi::stage1::EnterArgs { pid, app, cmd }.to_argv();
        let err = stage0::stage1::exec_entrypoint(&pod.path(), &entry, &argv);
        Err(err.into())
    })())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("30m0s").unwrap(), Duration::from_secs(1800));
        assert_eq!(
            parse_duration("24h0m0s").unwrap(),
            Duration::from_secs(86_400)
        );
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn tabwriter_like_go() {
        let rows = vec![
            vec!["UUID".to_string(), "APP".into(), "X".into()],
            vec!["0123abcd".to_string(), "hello".into(), "y".into()],
        ];
        assert_eq!(tab_format(&rows), "UUID\t\tAPP\tX\n0123abcd\thello\ty\n");
    }
}
