//! Snapshot start of a pod (`rkt run --kvm-snapshot`, experimental; docs/snapshot.md): the pod
//! is restored from a snapshot of guest-init's snapshot stage instead of booting its kernel.
//!
//! [`prepare`] runs in `pod::run` before the jail: it decides whether the pod may be restored
//! ([`crate::snapshot::pod::decide`]: a pod with more network cards than a snapshot holds boots
//! cold), builds the cache key (kernel and guest-init identities, memory, vCPUs, network cards,
//! the device layout),
//! and gets the snapshot from the cache ([`crate::snapshot::cache`], outside every pod
//! directory, root-only), making it first if needed. The maker is never the pod's VM: it is a
//! child `stage1-vmm make-pod-snapshot` process ([`make`]) that boots the snapshot stage's
//! initramfs (the stage1 image's guest-init) with the pod's memory, vCPUs and network cards in
//! the pod's device layout with empty backends (an empty private share, consoles to nothing, a
//! private vsock directory, taps in a network namespace of its own) and saves the VM when
//! guest-init asks. Then [`prepare`] checks the snapshot (state checksum, memory file size: a
//! damaged entry means a cold boot with a warning, and one found in the cache is removed) and
//! writes guest-init's arguments into the stage1 root (`rkt/init-args`); the pod's VM restores
//! it with its real devices, in the same order ([`super::run::add_pod_devices`]).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pod_abi::child::{self, Bounded, Caps, ChildError};
use pod_abi::paths::PodPaths;
use pod_abi::plan::Plan;
use pod_abi::snapshot::{Source, CACHE_IN_DATA_DIR, SOURCE_FILE};

use super::run::{add_pod_devices, PodDevices, POD_DEVICES};
use super::{sizing, PodError, PROG};
use crate::device_manager::SerialBackend;
use crate::devices::virtio::fs::{Fs, FsConfig};
use crate::devices::virtio::vsock::{Vsock, VsockConfig};
use crate::snapshot::cache::{Cache, Removal, SnapshotKey, DEFAULT_ROOT};
use crate::snapshot::pod::{decide, write_init_args, PodShape, Start};
use crate::snapshot::{self, SnapshotMode};
use crate::vmm::{VmConfig, VmOutcome, Vmm};

/// The hidden `stage1-vmm` subcommand that makes a pod snapshot ([`make`]).
pub const MAKE_SUBCOMMAND: &str = "make-pod-snapshot";
/// The snapshot stage's kernel command line (after the VMM's defaults).
pub const MAKE_CMDLINE: &str = "-- --snapshot-stage";
/// The maker VM ends after this long at the latest (seconds; `rkt gc` reads it too).
pub use pod_abi::snapshot::MAKE_TIMEOUT_SECS;
/// The maker's scratch directory inside the snapshot directory being made (removed after).
const WORK_DIR: &str = ".work";
/// The parent's limit on the maker child (seconds): its VM ends after [`MAKE_TIMEOUT_SECS`];
/// this covers a child stuck outside its VM, which would hold the key's lock and so stall every
/// pod of that shape.
const MAKE_CHILD_LIMIT_SECS: u64 = MAKE_TIMEOUT_SECS + 60;
/// How often the parent looks whether the maker child ended (ms).
const MAKE_POLL_MS: u64 = 20;
/// Bytes of the maker's stdout (the guest's console: a kernel boot log is ~30 KiB) and of its
/// stderr kept; more is dropped.
const MAKE_OUTPUT_MAX: usize = 1 << 20;
/// Bytes of the maker's output shown in an error message (the end of what was kept).
const OUTPUT_TAIL: usize = 4096;

/// The snapshot cache of the pod in `pod_dir`: `<data dir>/cache/snapshots` when the pod
/// directory is `<data dir>/pods/<state>/<uuid>` (so `rkt --dir=D` keeps its snapshots under
/// D, outside every pod directory), else [`DEFAULT_ROOT`].
pub fn cache_root(pod_dir: &Path) -> PathBuf {
    let pods = pod_dir.parent().and_then(Path::parent);
    match pods {
        Some(p) if p.file_name().is_some_and(|n| n == "pods") => p
            .parent()
            .map(|d| d.join(CACHE_IN_DATA_DIR))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT)),
        _ => PathBuf::from(DEFAULT_ROOT),
    }
}

/// The identity of a file of the stage1 image, for the cache key: device, inode, size, and
/// modification and change times (ns). Hashing the kernel's contents at every pod start would
/// cost more than the restore saves (seconds under emulation); the image's files are not
/// rewritten in place, and any write changes the change time.
fn file_id(path: &Path) -> Result<String, PodError> {
    pod_abi::snapshot::file_id_of(path).map_err(|e| PodError::io("cannot stat", path, e))
}

/// The stage1 image's guest-init: `init` beside the kernel's directory (the image's root, as
/// [`super::run::kernel_path`] finds the kernel), else the pod's `stage1/rootfs/init`.
fn guest_init_path(host: &PodPaths, kernel: &Path) -> PathBuf {
    let in_image = kernel
        .parent()
        .and_then(Path::parent)
        .map(|root| root.join(pod_abi::paths::GUEST_INIT_IN_STAGE1))
        .filter(|p| p.is_file());
    in_image.unwrap_or_else(|| {
        host.stage1_rootfs()
            .join(pod_abi::paths::GUEST_INIT_IN_STAGE1)
    })
}

/// Whether `dir` holds a snapshot a VM of `mem_mib` can restore: the state parses (checksum,
/// lengths) and the memory file has the state's size.
fn check(dir: &Path, mem_mib: u64) -> Result<(), String> {
    let state = snapshot::read_state(dir).map_err(|e| e.to_string())?;
    if state.mem_size != mem_mib << 20 {
        return Err(format!(
            "it holds {} MiB of memory, the pod has {mem_mib} MiB",
            state.mem_size >> 20
        ));
    }
    let mem = snapshot::open_memory(dir).map_err(|e| e.to_string())?;
    let len = mem
        .metadata()
        .map_err(|e| format!("cannot stat the memory file: {e}"))?
        .len();
    if len != state.mem_size {
        return Err(format!(
            "the memory file is {len} bytes, the state says {}",
            state.mem_size
        ));
    }
    Ok(())
}

/// The last [`OUTPUT_TAIL`] bytes of `b`, as text.
fn tail(b: &[u8]) -> String {
    let from = b.len().saturating_sub(OUTPUT_TAIL);
    String::from_utf8_lossy(&b[from..]).trim().to_string()
}

/// The entry of `key` in `cache`, made first by `make` if missing, with `source` recorded in it
/// ([`SOURCE_FILE`], written before the entry is renamed into place, so a complete entry always
/// has it; `rkt gc` reads it). Returns the directory and whether it was made here; the error is
/// why making it failed (a failed make leaves no entry: `Cache::get_or_make` removes the
/// `.tmp`), for the warning of the cold boot that follows.
fn get_or_make_entry<F>(
    cache: &Cache,
    key: &SnapshotKey,
    source: &Source,
    make: F,
) -> Result<(PathBuf, bool), String>
where
    F: FnOnce(&Path) -> Result<(), String>,
{
    cache
        .get_or_make(key, |out| {
            make(out)?;
            let record = source.encode().map_err(|e| e.to_string())?;
            let path = out.join(SOURCE_FILE);
            pod_abi::podfile::write_atomic(&path, &record)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        })
        .map_err(|e| e.to_string())
}

/// Removes the entry of `key` from `cache` if [`check`] still refuses it under the key's lock
/// ([`Cache::remove_if`]: a held lock leaves it); says what became of it, for the warning.
fn remove_damaged(cache: &Cache, key: &SnapshotKey, mem_mib: u64) -> String {
    match cache.remove_if(key, |dir| check(dir, mem_mib).is_err()) {
        Ok(Removal::Removed) => "removed it: the next pod makes it again".into(),
        Ok(Removal::Kept) => "it was made afresh meanwhile".into(),
        Ok(Removal::Busy) => "left it: its lock is held".into(),
        Ok(Removal::Absent) => "it is gone already".into(),
        Ok(Removal::NotADirectory) => "left it: not a directory; remove it by hand".into(),
        Err(e) => format!("{e}; remove it to make it again"),
    }
}

/// Runs `cmd` (stdin from /dev/null) and collects its output ([`MAKE_OUTPUT_MAX`] bytes of
/// each stream); kills it (SIGKILL) after `limit`. The error says why it could not run or that
/// it was killed, with its output's tail.
fn output_within(cmd: &mut Command, limit: Duration) -> Result<Bounded, String> {
    let caps = Caps {
        stdout: MAKE_OUTPUT_MAX,
        stderr: MAKE_OUTPUT_MAX,
    };
    let poll = Duration::from_millis(MAKE_POLL_MS);
    child::run_bounded(cmd, b"", limit, caps, poll).map_err(|e| match &e {
        ChildError::Spawn { .. } => e.to_string(),
        ChildError::TimedOut { stdout, stderr, .. } | ChildError::Wait { stdout, stderr, .. } => {
            format!(
                "{:?} {e}: {} {}",
                cmd.get_program(),
                tail(stdout),
                tail(stderr)
            )
        }
    })
}

/// Makes the snapshot into `out` by a child `stage1-vmm` ([`MAKE_SUBCOMMAND`]) in a VM of the
/// pod's `size` with `net_cards` network cards, killed after [`MAKE_CHILD_LIMIT_SECS`].
fn make_in_child(
    kernel: &Path,
    guest_init: &Path,
    size: sizing::VmSize,
    net_cards: usize,
    out: &Path,
) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find stage1-vmm: {e}"))?;
    // The maker's cards: taps made here, where the capabilities to make them still are (the
    // child's bounding set lacks them), handed down as inherited descriptors.
    let taps = if net_cards == 0 {
        Vec::new()
    } else {
        crate::net::open_scratch(net_cards)
            .map_err(|e| format!("the maker's taps: {}", stage1_common::error::chain(&e)))?
    };
    let mut cmd = Command::new(&exe);
    cmd.arg(MAKE_SUBCOMMAND)
        .arg("--kernel")
        .arg(kernel)
        .arg("--guest-init")
        .arg(guest_init)
        .arg("--mem")
        .arg(size.mem_mib.to_string())
        .arg("--cpus")
        .arg(size.cpus.to_string())
        .arg("--out")
        .arg(out);
    for t in &taps {
        cmd.arg("--tap-fd").arg(t.as_raw_fd().to_string());
    }
    let fds: Vec<RawFd> = taps.iter().map(AsRawFd::as_raw_fd).collect();
    // SAFETY: the closure runs in the child between fork and exec and makes only fcntl calls,
    // which are async-signal-safe, on descriptors this process holds open (`taps`).
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let o = output_within(&mut cmd, Duration::from_secs(MAKE_CHILD_LIMIT_SECS));
    drop(taps);
    let _ = std::fs::remove_dir_all(out.join(WORK_DIR));
    let o = o?;
    if o.status.success() {
        return Ok(());
    }
    Err(format!(
        "{} {MAKE_SUBCOMMAND} failed ({}): {} {}",
        exe.display(),
        o.status,
        tail(&o.stdout),
        tail(&o.stderr)
    ))
}

/// Decides how the pod starts when its plan asks for a snapshot (see the module docs). Returns
/// the snapshot directory to restore, or `None` for a cold boot (snapshots not asked for, the
/// pod cannot be restored, making the snapshot failed or the cache entry is damaged: a warning
/// says so for the last two). `init_args` are
/// guest-init's arguments, which a cold pod gets on its kernel command line.
pub fn prepare(
    pod_dir: &Path,
    plan: &Plan,
    size: sizing::VmSize,
    net_cards: usize,
    init_args: &[String],
) -> Result<Option<PathBuf>, PodError> {
    if !plan.kvm_snapshot {
        return Ok(None);
    }
    let host = PodPaths::new(pod_dir);
    let kernel = super::run::kernel_path(&host);
    let guest_init = guest_init_path(&host, &kernel);
    // The key's timer mode comes from the decider the VM's vCPUs use, KVM's capability included;
    // this /dev/kvm descriptor is closed at once, not held while a snapshot is made.
    let tsc_deadline = kvm_ioctls::Kvm::new()
        .map(|kvm| crate::vcpu::tsc_deadline_offered(&kvm))
        .map_err(|e| PodError::Snapshot(format!("cannot open /dev/kvm: {e}")))?;
    let shape = PodShape {
        guest_init_id: file_id(&guest_init)?,
        kernel_id: file_id(&kernel)?,
        mem_mib: size.mem_mib,
        cpus: size.cpus,
        devices: POD_DEVICES.to_vec(),
        net_cards,
        tsc_deadline,
    };
    let key = match decide(&shape) {
        Start::Restore(key) => key,
        Start::Cold(why) => {
            log::debug!("--kvm-snapshot: booting cold: {why}");
            return Ok(None);
        }
    };
    let root = cache_root(pod_dir);
    let cache = Cache::open(&root).map_err(|e| PodError::Snapshot(e.to_string()))?;
    let source = Source {
        kernel: kernel.clone(),
        kernel_id: shape.kernel_id.clone(),
        guest_init: guest_init.clone(),
        guest_init_id: shape.guest_init_id.clone(),
    };
    let got = get_or_make_entry(&cache, &key, &source, |out| {
        make_in_child(&kernel, &guest_init, size, net_cards, out)
    });
    let (dir, made) = match got {
        Ok(got) => got,
        Err(why) => {
            eprintln!("{PROG}: WARNING: no snapshot for this pod ({why}); booting cold");
            return Ok(None);
        }
    };
    log::debug!(
        "--kvm-snapshot: {} snapshot {}",
        if made { "made" } else { "found" },
        dir.display()
    );
    if let Err(why) = check(&dir, size.mem_mib) {
        // A damaged entry found in the cache goes, so the next pod makes it afresh; one just
        // made stays (making it again for every pod would not mend it).
        let fate = if made {
            "remove it to make it again".to_string()
        } else {
            remove_damaged(&cache, &key, size.mem_mib)
        };
        eprintln!(
            "{PROG}: WARNING: snapshot {} is unusable ({why}); booting cold ({fate})",
            dir.display()
        );
        return Ok(None);
    }
    write_init_args(&host.stage1_rootfs(), init_args)
        .map_err(|e| PodError::Snapshot(e.to_string()))?;
    Ok(Some(dir))
}

/// The maker's network cards on `taps` (made by the parent, [`crate::net::open_scratch`]: in a
/// network namespace of their own, so nothing of the host's network is reachable from the
/// maker's VM), with the MACs of [`pod_abi::snapshot::maker_mac`] and no MTU offered
/// (guest-init sets the pod's).
fn scratch_cards(taps: Vec<OwnedFd>) -> Result<Vec<crate::vmm::NetConfig>, PodError> {
    let n = taps.len();
    taps.into_iter()
        .enumerate()
        .map(|(i, tap)| {
            let mac = pod_abi::snapshot::maker_mac(i)
                .ok_or_else(|| PodError::Snapshot(format!("{n} network cards is too many")))?;
            Ok(crate::vmm::NetConfig {
                tap: std::sync::Arc::new(tap),
                mac,
                mtu: None,
            })
        })
        .collect()
}

/// The body of [`MAKE_SUBCOMMAND`]: boots the snapshot stage (`guest_init` as the initramfs's
/// `/init`) on `kernel` with `mem_mib` MiB and `cpus` vCPUs in the pod's device layout with
/// empty backends (a network card on each of `taps`, `scratch_cards`), and saves the VM into
/// `out` when guest-init asks. Nothing of any pod is reachable from this VM.
pub fn make(
    kernel: &Path,
    guest_init: &Path,
    mem_mib: u64,
    cpus: u32,
    taps: Vec<OwnedFd>,
    out: &Path,
) -> Result<(), PodError> {
    let work = out.join(WORK_DIR);
    let share = work.join("share");
    let vsock_dir = work.join("vsock");
    for d in [&share, &vsock_dir] {
        std::fs::create_dir_all(d).map_err(|e| PodError::io("cannot create", d, e))?;
    }
    let gi = std::fs::read(guest_init).map_err(|e| PodError::io("cannot read", guest_init, e))?;
    let initramfs = work.join("initramfs.cpio");
    std::fs::write(&initramfs, snapshot::initramfs::snapshot_stage(&gi))
        .map_err(|e| PodError::io("cannot write", &initramfs, e))?;

    let mut cfg = VmConfig::new(kernel);
    cfg.initramfs = Some(initramfs);
    cfg.cmdline = MAKE_CMDLINE.to_string();
    cfg.mem_mib = mem_mib;
    cfg.cpus = cpus;
    cfg.net = scratch_cards(taps)?;
    cfg.timeout = Some(Duration::from_secs(MAKE_TIMEOUT_SECS));
    cfg.snapshot = SnapshotMode::Make(out.to_path_buf());
    let mut vmm = Vmm::new(&cfg, SerialBackend::stdout())?;
    let mut fs_cfg = FsConfig::new(&share);
    fs_cfg.tag = super::run::ROOT_TAG.to_string();
    // The socket's path must fit `sun_path` (108 bytes) and the cache's may not: bind it
    // relative to the vsock directory, made the working directory of this process.
    std::env::set_current_dir(&vsock_dir)
        .map_err(|e| PodError::io("cannot enter", &vsock_dir, e))?;
    let vsock = Vsock::new(&VsockConfig {
        socket_dir: PathBuf::from("."),
    })
    .map_err(|e| PodError::Host("cannot create the maker's vsock socket", e))?;
    add_pod_devices(
        &mut vmm,
        PodDevices {
            out: None,
            err: None,
            console_in: None,
            fs: Fs::new(fs_cfg)?,
            vsock,
            com2: SerialBackend {
                out: Box::new(std::io::sink()),
                input: None,
            },
        },
    )?;
    let (outcome, _) = vmm.run()?;
    let _ = std::fs::remove_dir_all(&work);
    match outcome {
        VmOutcome::Snapshot => Ok(()),
        o => Err(PodError::Snapshot(format!(
            "the snapshot stage ended without a snapshot: {}",
            o.reason()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_lives_beside_the_pods_of_the_data_dir() {
        assert_eq!(
            cache_root(Path::new("/d/pods/run/0000-11")),
            PathBuf::from("/d/cache/snapshots")
        );
        assert_eq!(
            cache_root(Path::new("/var/lib/rkt/pods/run/u")),
            PathBuf::from(DEFAULT_ROOT)
        );
        assert_eq!(
            cache_root(Path::new("/tmp/x/u")),
            PathBuf::from(DEFAULT_ROOT)
        );
        assert_eq!(cache_root(Path::new("u")), PathBuf::from(DEFAULT_ROOT));
    }

    fn key() -> SnapshotKey {
        let mut k = SnapshotKey::new();
        k.set("test", "failed-make");
        k
    }

    fn source() -> Source {
        Source {
            kernel: "/img/kernel/vmlinux".into(),
            kernel_id: "1:2:3:4.0:5.0".into(),
            guest_init: "/img/init".into(),
            guest_init_id: "1:3:3:4.0:5.0".into(),
        }
    }

    #[test]
    fn a_damaged_snapshot_is_refused_by_check() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(check(dir.path(), 128).is_err());
        std::fs::write(dir.path().join(snapshot::STATE_FILE), b"RKTSNAP\0junk").expect("write");
        let e = check(dir.path(), 128).expect_err("refused");
        assert!(e.contains("snapshot state"), "{e}");
    }

    #[test]
    fn a_failed_make_is_a_reason_to_boot_cold_and_leaves_no_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(dir.path().join("s")).expect("opens");
        let why = get_or_make_entry(&cache, &key(), &source(), |out| {
            // Half a snapshot, then the maker dies.
            std::fs::write(out.join(snapshot::STATE_FILE), b"partial").expect("write");
            Err("stage1-vmm make-pod-snapshot failed (signal: 9 (SIGKILL))".into())
        })
        .expect_err("fails");
        assert!(why.contains("SIGKILL"), "{why}");
        assert_eq!(cache.lookup(&key()), None);
        let left: Vec<_> = std::fs::read_dir(dir.path().join("s"))
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(pod_abi::snapshot::LOCK_SUFFIX))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_made_entry_holds_its_source_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(dir.path().join("s")).expect("opens");
        let (d, made) = get_or_make_entry(&cache, &key(), &source(), |out| {
            std::fs::write(out.join(snapshot::STATE_FILE), b"s").map_err(|e| e.to_string())
        })
        .expect("makes");
        assert!(made);
        let b = pod_abi::podfile::read_beneath(
            &d,
            Path::new(SOURCE_FILE),
            pod_abi::snapshot::SOURCE_MAX,
        )
        .expect("record");
        assert_eq!(Source::parse(&b).expect("parses"), source());
        // A record that cannot be written fails the make like the maker would.
        let mut bad = source();
        bad.kernel = "relative".into();
        let mut k = key();
        k.set("other", 1);
        assert!(get_or_make_entry(&cache, &k, &bad, |out| {
            std::fs::write(out.join(snapshot::STATE_FILE), b"s").map_err(|e| e.to_string())
        })
        .is_err());
        assert_eq!(cache.lookup(&k), None);
    }

    /// A maker of a sound snapshot of `mem_mib` MiB (a default state, a sparse memory file),
    /// counting its calls.
    fn sound_maker(
        mem_mib: u64,
        calls: &std::cell::Cell<u32>,
    ) -> impl FnOnce(&Path) -> Result<(), String> + '_ {
        move |out| {
            calls.set(calls.get() + 1);
            let state = snapshot::SnapshotState {
                mem_size: mem_mib << 20,
                vcpus: vec![Default::default()],
                ..Default::default()
            };
            let mem = std::fs::File::create(out.join(snapshot::MEMORY_FILE))
                .map_err(|e| e.to_string())?;
            mem.set_len(mem_mib << 20).map_err(|e| e.to_string())?;
            std::fs::write(out.join(snapshot::STATE_FILE), state.encode())
                .map_err(|e| e.to_string())
        }
    }

    #[test]
    fn a_damaged_entry_found_in_the_cache_is_removed_and_made_again() {
        type Damage = fn(&Path);
        let truncate_memory: Damage = |d| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(d.join(snapshot::MEMORY_FILE))
                .expect("open");
            f.set_len(4096).expect("truncate");
        };
        let flip_a_state_byte: Damage = |d| {
            let p = d.join(snapshot::STATE_FILE);
            let mut b = std::fs::read(&p).expect("read");
            let mid = b.len() / 2;
            b[mid] ^= 0x5a;
            std::fs::write(&p, b).expect("write");
        };
        for damage in [truncate_memory, flip_a_state_byte] {
            let root = tempfile::tempdir().expect("tempdir");
            let cache = Cache::open(root.path().join("s")).expect("opens");
            let calls = std::cell::Cell::new(0);
            let (d, made) = get_or_make_entry(&cache, &key(), &source(), sound_maker(32, &calls))
                .expect("makes");
            assert!(made && check(&d, 32).is_ok());
            damage(&d);
            let (found, made) =
                get_or_make_entry(&cache, &key(), &source(), sound_maker(32, &calls))
                    .expect("finds");
            assert!(!made && found == d && calls.get() == 1);
            assert!(check(&found, 32).is_err());
            let fate = remove_damaged(&cache, &key(), 32);
            assert!(fate.contains("removed"), "{fate}");
            assert!(
                std::fs::symlink_metadata(&d).is_err(),
                "{} is left",
                d.display()
            );
            let (again, made) =
                get_or_make_entry(&cache, &key(), &source(), sound_maker(32, &calls))
                    .expect("makes");
            assert!(made && again == d && calls.get() == 2);
            assert!(check(&again, 32).is_ok());
            // A sound entry is not removed.
            assert!(remove_damaged(&cache, &key(), 32).contains("afresh"));
            assert!(check(&again, 32).is_ok());
        }
    }

    #[test]
    fn a_stuck_maker_is_killed_at_its_limit() {
        let start = std::time::Instant::now();
        let e = output_within(
            Command::new("sh").args(["-c", "echo started; exec sleep 30"]),
            Duration::from_millis(300),
        )
        .expect_err("killed");
        assert!(start.elapsed() < Duration::from_secs(10), "{e}");
        assert!(e.contains("killed after") && e.contains("started"), "{e}");
        let o = output_within(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(30),
        )
        .expect("runs");
        assert_eq!(o.status.code(), Some(3));
        assert_eq!(
            (&o.stdout[..], &o.stderr[..]),
            (&b"out\n"[..], &b"err\n"[..])
        );
    }
}
