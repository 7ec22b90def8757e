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
use stage1_vmm::devices::virtio::blk::Block;
use stage1_vmm::devices::virtio::fs::{Fs, FsConfig, TAG_LEN};
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
    /// Internal (`rkt run --kvm-snapshot`): make a pod snapshot with no pod
    /// (`stage1_vmm::pod::snapshot_start::make`).
    #[command(name = "make-pod-snapshot", hide = true)]
    MakePodSnapshot(MakePodSnapshotArgs),
}

#[derive(clap::Args)]
struct MakePodSnapshotArgs {
    /// The pod kernel.
    #[arg(long)]
    kernel: PathBuf,
    /// The stage1 image's guest-init (the snapshot stage's `/init`).
    #[arg(long)]
    guest_init: PathBuf,
    /// Guest memory (MiB): the pod's.
    #[arg(long)]
    mem: u64,
    /// vCPUs: the pod's.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// A tap for one of the pod's network cards, an inherited descriptor (made by the parent
    /// in a network namespace of their own); repeated per card, in card order.
    #[arg(long = "tap-fd")]
    tap_fds: Vec<i32>,
    /// The (empty) directory to save the snapshot into.
    #[arg(long)]
    out: PathBuf,
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
    /// Share host directory DIR with the guest as virtio-fs tag TAG (the in-process device a
    /// pod's root uses; the guest mounts it with `mount -t virtiofs TAG /mnt`). Repeatable.
    #[arg(long, value_name = "TAG=DIR", value_parser = parse_share)]
    share: Vec<Share>,
    /// Attach raw image FILE as a read-only virtio-blk disk (/dev/vda, /dev/vdb, ... in the
    /// order given; `,ro` may be stated, writable disks are not supported). Repeatable.
    #[arg(long, value_name = "FILE[,ro]", value_parser = parse_disk)]
    disk: Vec<PathBuf>,
    /// When the guest asks (the snapshot port), save the VM into DIR and end it (1 vCPU).
    #[arg(long, value_name = "DIR", conflicts_with = "restore")]
    snapshot_out: Option<PathBuf>,
    /// Restore the VM saved in DIR by --snapshot-out instead of booting a kernel.
    #[arg(long, value_name = "DIR")]
    restore: Option<PathBuf>,
}

/// A `--share TAG=DIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Share {
    tag: String,
    dir: PathBuf,
}

/// Parses `TAG=DIR`: TAG 1 to 36 bytes without `=`, DIR not empty.
fn parse_share(s: &str) -> Result<Share, String> {
    let (tag, dir) = s
        .split_once('=')
        .ok_or_else(|| format!("expected TAG=DIR, got {s:?}"))?;
    if tag.is_empty() || tag.len() > TAG_LEN {
        return Err(format!("the tag must be 1 to {TAG_LEN} bytes, got {tag:?}"));
    }
    if dir.is_empty() {
        return Err(format!("no directory after {tag}="));
    }
    Ok(Share {
        tag: tag.to_string(),
        dir: PathBuf::from(dir),
    })
}

/// Parses `FILE[,ro]` (the last comma separates the option).
fn parse_disk(s: &str) -> Result<PathBuf, String> {
    let file = match s.rsplit_once(',') {
        Some((file, "ro")) => file,
        Some((_, "rw")) => {
            return Err("writable disks are not supported (virtio-blk is read-only)".into())
        }
        Some((_, opt)) => return Err(format!("unknown disk option {opt:?} (only `ro`)")),
        None => s,
    };
    if file.is_empty() {
        return Err("no disk image file given".into());
    }
    Ok(PathBuf::from(file))
}

/// Adds the `--share` and `--disk` devices to `vmm`, shares first, in the order given.
fn attach(vmm: &mut Vmm, shares: &[Share], disks: &[PathBuf]) -> Result<()> {
    for (i, s) in shares.iter().enumerate() {
        if shares[..i].iter().any(|o| o.tag == s.tag) {
            anyhow::bail!("--share: tag {:?} given twice", s.tag);
        }
        let dir = std::fs::canonicalize(&s.dir)
            .with_context(|| format!("--share {}={}", s.tag, s.dir.display()))?;
        let mut cfg = FsConfig::new(dir);
        cfg.tag = s.tag.clone();
        let fs = Fs::new(cfg).with_context(|| format!("--share {}={}", s.tag, s.dir.display()))?;
        vmm.add_virtio(Box::new(fs))?;
    }
    for (i, d) in disks.iter().enumerate() {
        let blk = Block::new(d, &format!("disk{i}"))
            .with_context(|| format!("--disk {}", d.display()))?;
        vmm.add_virtio(Box::new(blk))?;
    }
    Ok(())
}

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
    let mut vmm = Vmm::new(&cfg, console)?;
    attach(&mut vmm, &a.share, &a.disk)?;
    let (outcome, report) = vmm.run_report()?;
    if report.console.dropped > 0 {
        eprintln!(
            "stage1-vmm: {} console bytes dropped (stdout too slow)",
            report.console.dropped
        );
    }
    let stats = stage1_vmm::exit_stats::timings_enabled();
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

fn make_pod_snapshot(a: MakePodSnapshotArgs) -> Result<ExitCode> {
    let taps = a
        .tap_fds
        .iter()
        .map(|&fd| inherited_fd(fd))
        .collect::<Result<Vec<_>>>()?;
    stage1_vmm::pod::snapshot_start::make(&a.kernel, &a.guest_init, a.mem, a.cpus, taps, &a.out)?;
    Ok(ExitCode::SUCCESS)
}

/// Takes ownership of descriptor `fd`, inherited from the parent (`--tap-fd`): refused unless
/// it is open, and not one of stdin, stdout or stderr.
fn inherited_fd(fd: i32) -> Result<OwnedFd> {
    anyhow::ensure!(fd > 2, "--tap-fd {fd}: not an inherited descriptor");
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        anyhow::bail!("--tap-fd {fd}: {}", std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is open (checked above) and passed to this process for it alone; nothing
    // else in this process owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn main() -> ExitCode {
    stage1_vmm::malloc::limit_arenas();
    if let Some((entry, args)) = stage1_common::entry::select(std::env::args().collect()) {
        let code = stage1_common::entry::dispatch(&stage1_vmm::pod::Kvm, entry, args);
        return stage1_common::entry::exit_code(code);
    }
    stage1_common::log::init(stage1_vmm::pod::PROG, false);
    pod_abi::trace::phase(stage1_vmm::pod::PROG, "main");
    let cli = Cli::parse();
    pod_abi::trace::phase(stage1_vmm::pod::PROG, "parsed");
    let res = match cli.cmd {
        Command::Boot(a) => boot(a),
        Command::MakePodSnapshot(a) => make_pod_snapshot(a),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}: {e:#}", stage1_vmm::pod::PROG);
            stage1_common::entry::exit_code(pod_abi::exit::FAILURE)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn share_parses_tag_and_dir() {
        let s = parse_share("data=/srv/a=b").unwrap();
        assert_eq!(s.tag, "data");
        assert_eq!(s.dir, PathBuf::from("/srv/a=b"));
        assert_eq!(
            parse_share(&format!("{}=/x", "t".repeat(TAG_LEN)))
                .unwrap()
                .dir,
            PathBuf::from("/x")
        );
    }

    #[test]
    fn bad_shares_are_refused() {
        for bad in [
            "/srv",
            "=/srv",
            "data=",
            &format!("{}=/x", "t".repeat(TAG_LEN + 1)),
        ] {
            assert!(parse_share(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn disk_parses_file_and_ro() {
        assert_eq!(parse_disk("a.img").unwrap(), PathBuf::from("a.img"));
        assert_eq!(
            parse_disk("/d/a,b.img,ro").unwrap(),
            PathBuf::from("/d/a,b.img")
        );
    }

    #[test]
    fn bad_disks_are_refused() {
        assert!(parse_disk("a.img,rw").unwrap_err().contains("read-only"));
        assert!(parse_disk("a.img,cache=none")
            .unwrap_err()
            .contains("unknown disk option"));
        assert!(parse_disk("").is_err());
        assert!(parse_disk(",ro").is_err());
    }

    #[test]
    fn cli_gives_one_clear_error() {
        let err = Cli::try_parse_from(["stage1-vmm", "boot", "--kernel", "k", "--share", "nodir"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("--share") && err.contains("expected TAG=DIR"),
            "{err}"
        );
        let ok = Cli::try_parse_from([
            "stage1-vmm",
            "boot",
            "--kernel",
            "k",
            "--share",
            "a=/x",
            "--share",
            "b=/y",
            "--disk",
            "f.img,ro",
        ])
        .unwrap();
        let Command::Boot(b) = ok.cmd else {
            panic!("not boot")
        };
        assert_eq!(b.share.len(), 2);
        assert_eq!(b.disk, vec![PathBuf::from("f.img")]);
    }
}
