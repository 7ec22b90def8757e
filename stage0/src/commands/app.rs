//! `rkt app …`: rkt 1.30's experimental commands for mutable pods (rktlet's interface), behind
//! `RKT_EXPERIMENT_APP=true`. The work is in `stage0::pod::mutable`.

use std::time::SystemTime;

use stage0::error::UsageError;
use stage0::format::{format_ago, format_time_nanos, tabwrite};
use stage0::pod::mutable::{self, AddOptions, AppStatus};
use stage0::pod::{ops, PodsDir};

use super::Globals;
use crate::outln;

/// The variable that enables the app commands, and the value it needs.
pub const EXPERIMENT_ENV: &str = "RKT_EXPERIMENT_APP";

/// Flags `rkt app sandbox` takes (rkt's pod flags; parsed like `rkt run`'s).
const SANDBOX_FLAGS: [&str; 29] = [
    "hostname",
    "uuid-file-save",
    "net",
    "dns",
    "dns-search",
    "dns-opt",
    "dns-domain",
    "hosts-entry",
    "set-env",
    "set-env-file",
    "inherit-env",
    "no-overlay",
    "stage1",
    "stage1-path",
    "stage1-name",
    "stage1-hash",
    "stage1-url",
    "pull-policy",
    "store-only",
    "no-store",
    "ipc",
    "pids-limit",
    "disk-limit",
    "private-users",
    "stage1-from-dir",
    "annotation",
    "user-annotation",
    "user-label",
    "port",
];

/// Flags `rkt app add` takes after `UUID IMAGE` (the app flags of `rkt run`, and rkt's
/// `--label`).
const ADD_FLAGS: [&str; 31] = [
    "name",
    "exec",
    "user",
    "group",
    "supplementary-gids",
    "working-dir",
    "environment",
    "set-env",
    "set-env-file",
    "inherit-env",
    "memory",
    "cpu",
    "cpu-shares",
    "caps-retain",
    "cap-retain",
    "caps-remove",
    "cap-remove",
    "readonly-rootfs",
    "oom-score-adj",
    "seccomp",
    "annotation",
    "user-annotation",
    "user-label",
    "label",
    "signature",
    "stdin",
    "stdout",
    "stderr",
    "pull-policy",
    "store-only",
    "mnt-volume",
];

fn flags_help(intro: &str, flags: &[&str]) -> String {
    let mut s = format!("{intro}\nFlags:\n");
    for f in flags {
        s.push_str(&format!("  --{f}\n"));
    }
    s
}

/// `rkt app` and its subcommand: an `Args` so that the whole group is deferred with the other
/// commands (clap registers a nested `Subcommand` enum eagerly).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: AppCommand,
}

/// `rkt app` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AppCommand {
    /// Create a mutable pod with no apps and run it (experimental: RKT_EXPERIMENT_APP=true).
    Sandbox(SandboxArgs),
    /// Add an app to a running mutable pod; it is created, not started.
    Add(AddArgs),
    /// Start an app of a mutable pod.
    Start(AppRef),
    /// Stop an app of a mutable pod (SIGTERM, SIGKILL after the grace period).
    Stop(AppRef),
    /// Remove an app from a mutable pod (stopped first if it runs).
    Rm(AppRef),
    /// List the apps of a pod with their states.
    List(ListArgs),
    /// Print the status of one app of a pod.
    Status(StatusArgs),
    /// Run a command in an app of a running pod (as rkt enter --app).
    Exec(ExecArgs),
}

/// Flags of `rkt app sandbox`.
#[derive(Debug, clap::Args)]
#[command(after_help = flags_help("Pod flags, as rkt run's:", &SANDBOX_FLAGS))]
pub struct SandboxArgs {
    /// Pod flags.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "FLAGS"
    )]
    pub rest: Vec<String>,
}

/// Arguments of `rkt app add`.
#[derive(Debug, clap::Args)]
#[command(after_help = flags_help(
    "Usage: rkt app add UUID IMAGE [flags] [-- ARGS...]; IMAGE is in the store (an ID or a name) or an ACI file.",
    &ADD_FLAGS
))]
pub struct AddArgs {
    /// UUID, IMAGE, app flags and `-- ARGS`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "UUID IMAGE FLAGS"
    )]
    pub rest: Vec<String>,
}

/// A pod and one of its apps.
#[derive(Debug, clap::Args)]
pub struct AppRef {
    /// Pod UUID (or unambiguous prefix).
    pub uuid: String,
    /// The app's name.
    #[arg(long)]
    pub app: String,
}

/// Flags of `rkt app list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Pod UUID (or unambiguous prefix).
    pub uuid: String,
    /// No header line.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true,
          value_name = "BOOL", value_parser = super::gobool::value, default_value_t = false)]
    pub no_legend: bool,
    /// Absolute times and image IDs.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true,
          value_name = "BOOL", value_parser = super::gobool::value, default_value_t = false)]
    pub full: bool,
    /// Output format: json or json-pretty (default a table).
    #[arg(long, default_value = "")]
    pub format: String,
}

/// Flags of `rkt app status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Pod UUID (or unambiguous prefix).
    pub uuid: String,
    /// The app's name.
    #[arg(long)]
    pub app: String,
    /// Output format: json or json-pretty (default key=value lines).
    #[arg(long, default_value = "")]
    pub format: String,
}

/// Arguments of `rkt app exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The app to run the command in.
    #[arg(long)]
    pub app: String,
    /// Pod UUID (or unambiguous prefix).
    pub uuid: String,
    /// Command and arguments (after `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub cmd: Vec<String>,
}

/// Runs `rkt app …`.
pub fn run(g: &Globals, c: AppCommand) -> anyhow::Result<i32> {
    if !super::experiment(EXPERIMENT_ENV) {
        return Err(UsageError(format!(
            "rkt app is experimental: set {EXPERIMENT_ENV}=true to use it"
        ))
        .into());
    }
    match c {
        AppCommand::Sandbox(a) => sandbox(g, a),
        AppCommand::Add(a) => add(g, a),
        AppCommand::Start(a) => {
            mutable::start(&PodsDir::open(&g.dir)?, &a.uuid, &a.app, g.debug)?;
            Ok(0)
        }
        AppCommand::Stop(a) => {
            mutable::stop(&PodsDir::open(&g.dir)?, &a.uuid, &a.app, g.debug)?;
            Ok(0)
        }
        AppCommand::Rm(a) => {
            mutable::remove(&PodsDir::open(&g.dir)?, &a.uuid, &a.app, g.debug)?;
            Ok(0)
        }
        AppCommand::List(a) => list(g, a),
        AppCommand::Status(a) => status(g, a),
        AppCommand::Exec(a) => {
            let pods = PodsDir::open(&g.dir)?;
            Err(ops::enter(&pods, &a.uuid, Some(&a.app), a.cmd).into())
        }
    }
}

/// `rkt app sandbox`: returns only on failure (stage1 replaces this process).
fn sandbox(g: &Globals, a: SandboxArgs) -> anyhow::Result<i32> {
    let cmd = mutable::parse_sandbox(&a.rest)?;
    let (pod, cmd, debug, insecure) = super::run::create_from(g, cmd)?;
    let opts = super::run::run_options(g, &cmd, debug, insecure)?;
    Err(pod.run(&opts, &mut super::run::notices(debug)).into())
}

/// `rkt app add`.
fn add(g: &Globals, a: AddArgs) -> anyhow::Result<i32> {
    let add = mutable::parse_add(&a.rest)?;
    let (uuid, cmd) = (&add.uuid, &add.cmd);
    let (dir, debug, insecure) = super::run::globals_of(g, cmd);
    let data_dir = pod_abi::paths::canonicalize(&dir).unwrap_or(dir);
    // rkt's app add takes images from the store (rktlet fetched them first); a file is
    // imported.
    let policy = cmd.pod.pull_policy.as_deref().unwrap_or("never");
    let mut fetch = super::fetch::options(&insecure, debug, policy)?;
    fetch.config = super::config::load(g)?;
    fetch.keystore = Some(super::fetch::keystore(g));
    fetch.quiet = true;
    let pods = PodsDir::open(&data_dir)?;
    let o = AddOptions {
        data_dir,
        fetch,
        debug,
    };
    let name = mutable::add(&pods, uuid, &add, &o, &mut |w| super::warn(&w))?;
    if debug {
        eprintln!("rkt: app {name} added to pod {uuid}");
    }
    Ok(0)
}

fn check_format(f: &str) -> Result<(), UsageError> {
    match f {
        "" | "json" | "json-pretty" => Ok(()),
        f => Err(UsageError(format!(
            "--format must be json or json-pretty, got {f:?}"
        ))),
    }
}

fn json(format: &str, v: &impl serde::Serialize) -> anyhow::Result<String> {
    Ok(if format == "json" {
        serde_json::to_string(v)?
    } else {
        serde_json::to_string_pretty(v)?
    })
}

/// `rkt app list`: `NAME STATE CREATED STARTED FINISHED EXIT CODE` (`IMAGE ID` too with
/// `--full`).
fn list(g: &Globals, a: ListArgs) -> anyhow::Result<i32> {
    check_format(&a.format)?;
    let pods = PodsDir::open(&g.dir)?;
    let apps = mutable::app_statuses(&pods.open_pod(&a.uuid)?)?;
    if !a.format.is_empty() {
        outln!("{}", json(&a.format, &apps)?)?;
        return Ok(0);
    }
    let now = stage0::pod::status::unix_nanos(SystemTime::now());
    let when = |t: Option<i64>| match t {
        Some(t) if a.full => format_time_nanos(t),
        Some(t) => format_ago(
            SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(t.max(0) as u64),
            SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(now.max(0) as u64),
        ),
        None => String::new(),
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    if !a.no_legend {
        let mut h = vec!["NAME"];
        if a.full {
            h.push("IMAGE ID");
        }
        h.extend(["STATE", "CREATED", "STARTED", "FINISHED", "EXIT CODE"]);
        rows.push(h.into_iter().map(String::from).collect());
    }
    for app in &apps {
        let mut r = vec![app.name.clone()];
        if a.full {
            r.push(app.image_id.clone());
        }
        r.extend([
            app.state.clone(),
            when(app.created_at),
            when(app.started_at),
            when(app.finished_at),
            app.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        ]);
        rows.push(r);
    }
    super::out(tabwrite(&rows))?;
    Ok(0)
}

/// `rkt app status`: `key=value` lines (`name`, `state`, `created`, `started`, `finished`,
/// `exit_code`), or rkt's `lib.App` object as JSON.
fn status(g: &Globals, a: StatusArgs) -> anyhow::Result<i32> {
    check_format(&a.format)?;
    let pods = PodsDir::open(&g.dir)?;
    let pod = pods.open_pod(&a.uuid)?;
    let apps = mutable::app_statuses(&pod)?;
    let Some(app) = apps.iter().find(|x| x.name == a.app) else {
        return Err(UsageError(format!("pod {} has no app {:?}", pod.uuid(), a.app)).into());
    };
    if !a.format.is_empty() {
        outln!("{}", json(&a.format, app)?)?;
        return Ok(0);
    }
    super::out(status_lines(app))?;
    Ok(0)
}

fn status_lines(app: &AppStatus) -> String {
    let mut s = format!("name={}\nstate={}\n", app.name, app.state);
    for (k, t) in [
        ("created", app.created_at),
        ("started", app.started_at),
        ("finished", app.finished_at),
    ] {
        if let Some(t) = t {
            s.push_str(&format!("{k}={}\n", format_time_nanos(t)));
        }
    }
    if let Some(c) = app.exit_code {
        s.push_str(&format!("exit_code={c}\n"));
    }
    s
}
