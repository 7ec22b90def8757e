//! `stage1-vmm`: the KVM stage1 binary. The pod entrypoints (`run`, `stop`, `gc`, `enter`) are
//! dispatched by `stage1-common` on argv\[0\]'s basename or the first argument
//! (`stage1_vmm::pod::Kvm`); anything else is a debug subcommand: `boot` boots a kernel and
//! streams its console.
//!
//! Exit status of `boot`: 0 when the guest rebooted (or powered off) normally; 125
//! (`pod_abi::exit::STAGE1_FAILED`) with a one-line reason on stderr when the guest panicked,
//! triple-faulted, KVM failed or the timeout expired; 1 for bad arguments/files/host.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use stage1_vmm::snapshot::SnapshotMode;
use stage1_vmm::{SerialBackend, VmConfig, Vmm};

#[derive(Parser)]
#[command(name = "stage1-vmm", about = "rkt KVM stage1: a mini-VMM")]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a kernel, stream its console to stdout, exit 0 when the guest reboots.
    Boot(BootArgs),
}

#[derive(clap::Args)]
struct BootArgs {
    /// Kernel: ELF vmlinux (PVH entry) or bzImage (not with --restore).
    #[arg(long, required_unless_present = "restore", conflicts_with = "restore")]
    kernel: Option<PathBuf>,
    /// Initramfs (newc cpio, optionally compressed).
    #[arg(long)]
    initramfs: Option<PathBuf>,
    /// Extra kernel command line, appended to the default one.
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Use --cmdline instead of the default command line.
    #[arg(long)]
    replace_cmdline: bool,
    /// Guest memory (MiB).
    #[arg(long, default_value_t = 512)]
    mem: u64,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Fail if the guest has not ended after this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
    /// Do not forward stdin to the guest console.
    #[arg(long)]
    no_stdin: bool,
    /// When the guest asks (the snapshot port), save the VM into DIR and end it (1 vCPU).
    #[arg(long, value_name = "DIR", conflicts_with = "restore")]
    snapshot_out: Option<PathBuf>,
    /// Restore the VM saved in DIR by --snapshot-out instead of booting a kernel.
    #[arg(long, value_name = "DIR")]
    restore: Option<PathBuf>,
}

/// Set to `1` to print timings and the VM exit profile on stderr after the run (the exit
/// profile alone: `RKT_VMM_EXIT_STATS=1`).
const STATS_ENV: &str = "RKT_VMM_STATS";

fn print_report(r: &stage1_vmm::RunReport) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "stats: setup {:.1} ms, guest {:.1} ms, teardown {:.1} ms, console {} bytes",
        ms(r.setup),
        ms(r.guest),
        ms(r.teardown),
        r.console.written
    );
}

fn print_exits(r: &stage1_vmm::RunReport) {
    for line in r.exit_table() {
        eprintln!("exits: {line}");
    }
}

fn boot(a: BootArgs) -> Result<ExitCode> {
    let mut cfg = VmConfig::new(a.kernel.unwrap_or_default());
    cfg.snapshot = match (a.snapshot_out, a.restore) {
        (Some(dir), _) => SnapshotMode::Make(dir),
        (None, Some(dir)) => SnapshotMode::Restore(dir),
        (None, None) => SnapshotMode::Off,
    };
    cfg.initramfs = a.initramfs;
    cfg.cmdline = a.cmdline;
    cfg.replace_cmdline = a.replace_cmdline;
    cfg.mem_mib = a.mem;
    cfg.cpus = a.cpus;
    cfg.timeout = match a.timeout {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(_) => anyhow::bail!("--timeout must be a positive number of seconds"),
        None => None,
    };
    let mut console = SerialBackend::stdout();
    if !a.no_stdin {
        let fd: OwnedFd = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .context("stdin")?;
        console.input = Some(fd);
    }
    let vmm = Vmm::new(&cfg, console)?;
    let (outcome, report) = vmm.run_report()?;
    if report.console.dropped > 0 {
        eprintln!(
            "stage1-vmm: {} console bytes dropped (stdout too slow)",
            report.console.dropped
        );
    }
    let stats = std::env::var_os(STATS_ENV).is_some_and(|v| v == "1");
    if stats {
        print_report(&report);
    }
    if stats || stage1_vmm::exit_stats::enabled() {
        print_exits(&report);
    }
    if outcome.is_success() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("stage1-vmm: {}", outcome.reason());
        Ok(ExitCode::from(pod_abi::exit::STAGE1_FAILED as u8))
    }
}

fn main() -> ExitCode {
    stage1_vmm::malloc::limit_arenas();
    if let Some((entry, args)) = stage1_common::entry::select(std::env::args().collect()) {
        let code = stage1_common::entry::dispatch(&stage1_vmm::pod::Kvm, entry, args);
        return stage1_common::entry::exit_code(code);
    }
    stage1_common::log::init(stage1_vmm::pod::PROG, false);
    let cli = Cli::parse();
    let res = match cli.cmd {
        Command::Boot(a) => boot(a),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}: {e:#}", stage1_vmm::pod::PROG);
            stage1_common::entry::exit_code(pod_abi::exit::FAILURE)
        }
    }
}
