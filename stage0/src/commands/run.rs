//! `rkt run`, `rkt prepare`, `rkt run-prepared`: parse the command line, then let
//! `stage0::pod::launch` create the pod and exec stage1.

use stage0::fetch::InsecureOptions;
use stage0::pod::args::{Mode, RunCommand, Stage1Ref};
use stage0::pod::launch::{Notice, PrepareOptions, PreparedPod, RunOptions};
use stage0::pod::PodsDir;

use super::Globals;
use crate::outln;

/// The `--help` text listing the hand-parsed flags of `mode`, one per line.
fn flags_help(mode: Mode) -> String {
    let mut s = String::from(if mode == Mode::RunPrepared {
        "Flags (before or after the UUID):\n"
    } else {
        "Flags (before the first image: pod flags; after an image: that app's):\n"
    });
    for f in stage0::pod::args::flags_for(mode) {
        s.push_str(&format!("  --{f}\n"));
    }
    s
}

/// Flags of `rkt run` (rkt's per-image flags follow images; parsed by hand).
#[derive(Debug, clap::Args)]
#[command(after_help = flags_help(Mode::Run))]
pub struct Args {
    /// Images, per-app flags and `-- args ---` separators.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Flags of `rkt prepare`.
#[derive(Debug, clap::Args)]
#[command(after_help = flags_help(Mode::Prepare))]
pub struct PrepareArgs {
    /// Images, per-app flags and `-- args ---` separators.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Flags of `rkt run-prepared`: rkt 1.30's pod-level flags (`--net`, `--dns`,
/// `--dns-search`, `--dns-opt`, `--dns-domain`, `--hosts-entry`, `--mds-register`, `--ipc`,
/// `--interactive`, `--hostname`), parsed like `rkt run`'s, and the pod UUID.
#[derive(Debug, clap::Args)]
#[command(after_help = flags_help(Mode::RunPrepared))]
pub struct RunPreparedArgs {
    /// Pod flags and the pod UUID (or unambiguous prefix).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "FLAGS… UUID"
    )]
    pub rest: Vec<String>,
}

/// Prints launch notices: warnings always, debug lines with `--debug`.
pub(super) fn notices(debug: bool) -> impl FnMut(Notice) {
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
) -> anyhow::Result<(PreparedPod, RunCommand, bool, InsecureOptions)> {
    create_from(g, RunCommand::parse(mode, rest)?)
}

/// Creates the pod of a parsed command (`rkt app sandbox` parses its own).
pub(super) fn create_from(
    g: &Globals,
    mut cmd: RunCommand,
) -> anyhow::Result<(PreparedPod, RunCommand, bool, InsecureOptions)> {
    let config = super::config::load(g)?;
    // `paths.d`'s stage1-images directory holds `stage1-<flavor>.aci` files, and the files
    // `--stage1-from-dir` names.
    if let Some(dir) = &config.stage1_images_dir {
        if let Stage1Ref::FromDir(f) = &cmd.pod.stage1 {
            cmd.pod.stage1 = Stage1Ref::Path(std::path::Path::new(dir).join(f));
        }
        let flavor = match &cmd.pod.stage1 {
            Stage1Ref::Flavor(f) => Some(f.as_str()),
            Stage1Ref::Default if config.stage1_location.is_none() => {
                Some(stage0::stage1::DEFAULT_FLAVOR)
            }
            _ => None,
        };
        if let Some(f) = flavor {
            let p = std::path::Path::new(dir).join(format!("stage1-{f}.aci"));
            if p.is_file() {
                cmd.pod.stage1 = Stage1Ref::Path(p);
            }
        }
    }
    // The default stage1 of `stage1.d`.
    if cmd.pod.stage1 == Stage1Ref::Default {
        if let Some(loc) = &config.stage1_location {
            cmd.pod.stage1 = if loc.contains("://") {
                Stage1Ref::Url(loc.clone())
            } else {
                Stage1Ref::Path(loc.into())
            };
        } else if let Some((name, version)) = &config.stage1_name {
            cmd.pod.stage1 = Stage1Ref::Name(format!("{name}:{version}"));
        }
    }
    let (dir, debug, insecure) = globals_of(g, &cmd);
    // Absolute, so tree paths (overlay lower dirs) do not depend on the cwd.
    let _ = std::fs::create_dir_all(&dir);
    let data_dir = pod_abi::paths::canonicalize(&dir).unwrap_or(dir);
    let policy = cmd.pod.pull_policy.as_deref().unwrap_or("new");
    let mut fetch = super::fetch::options(&insecure, debug, policy)?;
    fetch.config = config;
    fetch.keystore = Some(super::fetch::keystore(g));
    fetch.quiet = cmd.pod.quiet;
    let opts = PrepareOptions { data_dir, fetch };
    pod_abi::trace::phase("rkt", "parsed");
    let pod = PreparedPod::create(&cmd, &opts, &mut notices(debug))?;
    Ok((pod, cmd, debug, opts.fetch.insecure))
}

/// The global flags in effect: those given among the command's own arguments win over those
/// before the command. `(--dir, --debug, --insecure-options)`.
pub(super) fn globals_of(g: &Globals, cmd: &RunCommand) -> (std::path::PathBuf, bool, String) {
    let dir = cmd.globals.dir.clone().unwrap_or_else(|| g.dir.clone());
    let debug = g.debug || cmd.globals.debug;
    let insecure = cmd
        .globals
        .insecure_options
        .clone()
        .unwrap_or_else(|| g.insecure_options.clone());
    (dir, debug, insecure)
}

/// The launch options of `run` and `run-prepared` from their pod flags.
pub(super) fn run_options(
    g: &Globals,
    cmd: &RunCommand,
    debug: bool,
    insecure: InsecureOptions,
) -> anyhow::Result<RunOptions> {
    let pod = &cmd.pod;
    Ok(RunOptions {
        hostname: pod.hostname.clone().unwrap_or_default(),
        interactive: pod.interactive,
        debug,
        net: pod.net.clone(),
        insecure,
        mds_register: pod.mds_register,
        kvm_snapshot: pod.kvm_snapshot,
        host_ipc: pod.host_ipc,
        pids_limit: pod.pids_limit.tasks(),
        net_plan: stage0::pod::netopts::net_plan(
            &pod.dns,
            cmd.globals.local_config.as_ref().unwrap_or(&g.local_config),
            cmd.globals
                .system_config
                .as_ref()
                .unwrap_or(&g.system_config),
        )?,
    })
}

/// Runs `rkt run`: returns only on failure (stage1 replaces this process).
pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let (pod, cmd, debug, insecure) = create(g, Mode::Run, &a.rest)?;
    let opts = run_options(g, &cmd, debug, insecure)?;
    Err(pod.run(&opts, &mut notices(debug)).into())
}

/// Runs `rkt prepare`: prints the UUID only on stdout.
pub fn prepare(g: &Globals, a: PrepareArgs) -> anyhow::Result<i32> {
    let (pod, cmd, _, _) = create(g, Mode::Prepare, &a.rest)?;
    // Launch-time flags: a prepared pod keeps none of them (as in rkt, run-prepared takes them).
    let dns = &cmd.pod.dns;
    let dns_given = !(dns.dns.is_empty()
        && dns.search.is_empty()
        && dns.opts.is_empty()
        && dns.domain.is_empty()
        && dns.hosts.is_empty());
    if dns_given || cmd.pod.mds_register {
        super::warn(
            "--dns*, --hosts-entry and --mds-register apply when the pod runs: give them to rkt run-prepared",
        );
    }
    let uuid = pod.into_prepared()?;
    if !cmd.pod.quiet {
        eprintln!("rkt: pod {uuid} prepared");
    }
    outln!("{uuid}")?;
    Ok(0)
}

/// Runs `rkt run-prepared`: returns only on failure. Its pod flags override what
/// `prepare` stored.
pub fn run_prepared(g: &Globals, a: RunPreparedArgs) -> anyhow::Result<i32> {
    let (cmd, uuid) = RunCommand::parse_run_prepared(&a.rest)?;
    let (dir, debug, insecure) = globals_of(g, &cmd);
    let insecure = InsecureOptions::parse(&insecure)?;
    let mut notice = notices(debug);
    for f in &cmd.pod.ignored {
        notice(Notice::Warning(format!(
            "{f} is not supported by this runtime and is ignored"
        )));
    }
    let pods = PodsDir::open(&dir)?;
    let pod = PreparedPod::open(&pods, &uuid, cmd.pod.interactive)?;
    let opts = run_options(g, &cmd, debug, insecure)?;
    Err(pod.run(&opts, &mut notice).into())
}
