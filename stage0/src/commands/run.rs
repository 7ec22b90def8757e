//! `rkt run`, `rkt prepare`, `rkt run-prepared`: parse the command line, then let
//! `stage0::pod::launch` create the pod and exec stage1.

use stage0::pod::args::{Mode, RunCommand};
use stage0::pod::launch::{Notice, PrepareOptions, PreparedPod, RunOptions};
use stage0::pod::PodsDir;

use super::Globals;
use crate::outln;

/// Flags of `rkt run` (rkt's per-image flags follow images; parsed by hand).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Images, per-app flags and `-- args ---` separators.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Flags of `rkt prepare`.
#[derive(Debug, clap::Args)]
pub struct PrepareArgs {
    /// Images, per-app flags and `-- args ---` separators.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Flags of `rkt run-prepared`.
#[derive(Debug, clap::Args)]
pub struct RunPreparedArgs {
    /// Network configuration (default, host, none, ...).
    #[arg(long, default_value = "default")]
    pub net: String,
    /// Attach the app to the terminal (single-app pods).
    #[arg(long)]
    pub interactive: bool,
    /// Pod hostname (default rkt-<uuid>).
    #[arg(long, default_value = "")]
    pub hostname: String,
    /// Register the pod with the metadata service (started on demand).
    #[arg(long)]
    pub mds_register: bool,
    /// Pod UUID (or unambiguous prefix).
    pub uuid: String,
}

/// Prints launch notices: warnings always, debug lines with `--debug`.
fn notices(debug: bool) -> impl FnMut(Notice) {
    move |n| match n {
        Notice::Warning(w) => super::warn(&w),
        Notice::Debug(d) if debug => eprintln!("rkt: {d}"),
        Notice::Debug(_) => {}
    }
}

/// Parses the command line and creates the pod (locked, in `prepare/`).
fn create(
    g: &Globals,
    mode: Mode,
    rest: &[String],
) -> anyhow::Result<(PreparedPod, RunCommand, bool, bool)> {
    let cmd = RunCommand::parse(mode, rest)?;
    // Global flags may also appear among the run arguments.
    let dir = cmd.globals.dir.clone().unwrap_or_else(|| g.dir.clone());
    // Absolute, so tree paths (overlay lower dirs) do not depend on the cwd.
    let _ = std::fs::create_dir_all(&dir);
    let data_dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let debug = g.debug || cmd.globals.debug;
    let insecure = cmd
        .globals
        .insecure_options
        .as_ref()
        .unwrap_or(&g.insecure_options);
    let policy = cmd.pod.pull_policy.as_deref().unwrap_or("new");
    let opts = PrepareOptions {
        data_dir,
        fetch: super::fetch::options(insecure, debug, policy)?,
    };
    let pod = PreparedPod::create(&cmd, &opts, &mut notices(debug))?;
    Ok((pod, cmd, debug, opts.fetch.insecure.paths))
}

/// Runs `rkt run`: returns only on failure (stage1 replaces this process).
pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let (pod, cmd, debug, insecure_paths) = create(g, Mode::Run, &a.rest)?;
    let opts = RunOptions {
        hostname: cmd.pod.hostname.clone().unwrap_or_default(),
        interactive: cmd.pod.interactive,
        debug,
        net: cmd.pod.net.clone(),
        insecure_paths,
        mds_register: cmd.pod.mds_register,
    };
    Err(pod.run(&opts, &mut notices(debug)).into())
}

/// Runs `rkt prepare`: prints the UUID only on stdout.
pub fn prepare(g: &Globals, a: PrepareArgs) -> anyhow::Result<i32> {
    let (pod, cmd, _, _) = create(g, Mode::Prepare, &a.rest)?;
    let uuid = pod.into_prepared()?;
    if !cmd.pod.quiet {
        eprintln!("rkt: pod {uuid} prepared");
    }
    outln!("{uuid}")?;
    Ok(0)
}

/// Runs `rkt run-prepared`: returns only on failure.
pub fn run_prepared(g: &Globals, a: RunPreparedArgs) -> anyhow::Result<i32> {
    if !a.hostname.is_empty() {
        stage0::pod::args::validate_hostname(&a.hostname)?;
    }
    let pods = PodsDir::open(&g.dir)?;
    let pod = PreparedPod::open(&pods, &a.uuid, a.interactive)?;
    let opts = RunOptions {
        hostname: a.hostname,
        interactive: a.interactive,
        debug: g.debug,
        net: a.net,
        insecure_paths: stage0::fetch::InsecureOptions::parse(&g.insecure_options)?.paths,
        mds_register: a.mds_register,
    };
    Err(pod.run(&opts, &mut notices(g.debug)).into())
}
