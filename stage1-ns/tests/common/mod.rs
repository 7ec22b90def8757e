//! Hand-built pods for stage1-ns integration tests (no stage0): a stage1 root with the static
//! guest-init as `/init`, app roots with the static `pod-check` as `/bin/pod-check` and
//! `escape-probe` as `/bin/escape-probe`, a launch
//! plan, and volumes bind-mounted the way stage0 does it (here inside a private mount
//! namespace of the `stage1-ns run` child, so nothing leaks into the host).
//!
//! The static binaries are the build's (`$RKT_TEST_BIN_DIR`, build/bin under ci/test.sh), or
//! else built once per test process with ci/static-flags.sh's `STATIC_RUSTFLAGS`
//! (`cargo build --release --target x86_64-unknown-linux-gnu`)
//! into `$INIT_STATIC_TARGET_DIR` (default `/work/tgt/init-static` when `/work/tgt` exists,
//! else `<workspace>/target/static`).

#![allow(dead_code, clippy::unwrap_used)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pod_abi::paths::PodPaths;
use pod_abi::plan::{AppPlan, MountPlan, Plan, DEFAULT_PATH};

/// Target triple of the static builds.
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// Returns `Some(reason)` when these tests cannot run here.
pub fn skip_reason() -> Option<String> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (namespaces, mounts, cgroups)".into());
    }
    if !Path::new("/proc/self/ns/pid").exists() {
        return Some("no PID namespace support".into());
    }
    None
}

/// Skips the calling test (prints the CI-greppable line) when it cannot run.
#[macro_export]
macro_rules! skip_unless_root {
    ($name:expr) => {
        if let Some(r) = common::skip_reason() {
            eprintln!("SKIP: {}: {}", $name, r);
            return;
        }
    };
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn static_target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("INIT_STATIC_TARGET_DIR") {
        return d.into();
    }
    if Path::new("/work/tgt").is_dir() {
        return "/work/tgt/init-static".into();
    }
    workspace().join("target/static")
}

/// ci/static-flags.sh's `STATIC_RUSTFLAGS` (the flags ci/build.sh builds target/static with, so
/// that neither build invalidates the other's), or plain `crt-static` without that file.
fn static_rustflags() -> String {
    std::fs::read_to_string(workspace().join("ci/static-flags.sh"))
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("STATIC_RUSTFLAGS='")?
                    .strip_suffix('\'')
                    .map(str::to_string)
            })
        })
        .unwrap_or_else(|| "-C target-feature=+crt-static".to_string())
}

/// Paths of the static guest-init, pod-check and escape-probe: those of the build
/// (`$RKT_TEST_BIN_DIR`, as ci/test.sh sets it to build/bin) when all three are there, else
/// built on first use.
pub fn static_bins() -> &'static (PathBuf, PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| {
        if let Some(d) = std::env::var_os("RKT_TEST_BIN_DIR").map(PathBuf::from) {
            let built = (
                d.join("guest-init"),
                d.join("pod-check"),
                d.join("escape-probe"),
            );
            if built.0.is_file() && built.1.is_file() && built.2.is_file() {
                return built;
            }
        }
        let dir = static_target_dir();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .current_dir(workspace())
            .env("CARGO_TARGET_DIR", &dir)
            .env("RUSTFLAGS", static_rustflags())
            .args(["build", "--release", "--target", TRIPLE])
            .args([
                "-p",
                "guest-init",
                "-p",
                "rkt-tests",
                "--bin",
                "guest-init",
                "--bin",
                "pod-check",
                "--bin",
                "escape-probe",
            ])
            .status()
            .expect("run cargo for the static binaries");
        assert!(st.success(), "static build failed");
        let out = dir.join(TRIPLE).join("release");
        (
            out.join("guest-init"),
            out.join("pod-check"),
            out.join("escape-probe"),
        )
    })
}

/// The stage1-ns binary under test.
pub fn stage1_ns() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stage1-ns"))
}

/// A plan entry for an app that runs `/bin/pod-check ARGS`.
pub fn app(name: &str, args: &[&str]) -> AppPlan {
    let mut exec = vec!["/bin/pod-check".to_string()];
    exec.extend(args.iter().map(|s| s.to_string()));
    AppPlan {
        name: name.into(),
        image_id: format!("sha512-{name}"),
        exec,
        env: vec![
            ("PATH".into(), DEFAULT_PATH.into()),
            ("AC_APP_NAME".into(), name.into()),
            ("container".into(), "rkt".into()),
        ],
        user: "0".into(),
        group: "0".into(),
        supplementary_gids: vec![],
        working_directory: "/".into(),
        pre_start: None,
        post_stop: None,
        read_only_rootfs: false,
        mounts: vec![],
        capabilities: linux_caps::DEFAULT.iter().map(|s| s.to_string()).collect(),
        capabilities_retained: false,
        no_new_privileges: false,
        insecure_paths: false,
        memory_limit: None,
        cpu_limit_millis: None,
        cpu_shares: None,
        oom_score_adj: None,
        ignored_isolators: vec![],
        seccomp: None,
        stdio: Default::default(),
    }
}

/// argv for a pod-check handler.
pub fn handler(args: &[&str]) -> Option<Vec<String>> {
    let mut v = vec!["/bin/pod-check".to_string()];
    v.extend(args.iter().map(|s| s.to_string()));
    Some(v)
}

/// A host directory bind-mounted into an app (as stage0 does for volumes).
#[derive(Debug, Clone)]
struct Bind {
    source: PathBuf,
    target: PathBuf,
    read_only: bool,
}

/// A pod directory built by hand.
pub struct Pod {
    /// Temporary directory holding the pod directory.
    pub tmp: tempfile::TempDir,
    /// The pod directory (cwd of the entrypoints).
    pub dir: PathBuf,
    /// Pod UUID.
    pub uuid: String,
    /// The plan written.
    pub plan: Plan,
    binds: Vec<Bind>,
    lock: Option<OwnedFd>,
}

/// Result of a finished `run`.
#[derive(Debug)]
pub struct RunOutcome {
    /// Exit code of stage1-ns.
    pub code: i32,
    /// Its stdout (the apps' output).
    pub stdout: String,
    /// Its stderr (guest-init's console lines).
    pub stderr: String,
}

impl Pod {
    /// Builds the pod: stage1 root, app roots, plan; `volumes` are shared host directories
    /// (created under the pod's `sharedVolumes/`) bound at each app's mount targets.
    pub fn new(apps: Vec<AppPlan>, stop_grace_secs: u32) -> Pod {
        let (init, check, probe) = static_bins();
        let tmp = tempfile::Builder::new()
            .prefix("stage1-ns-test")
            .tempdir_in("/tmp")
            .unwrap();
        let dir = tmp.path().join("pod");
        let uuid = format!(
            "0000{:04x}-1111-2222-3333-{:012x}",
            std::process::id() & 0xffff,
            rand_u64() & 0xffff_ffff_ffff
        );
        let s1 = PodPaths::new(&dir).stage1_rootfs();
        for d in [
            "dev",
            "proc",
            "sys",
            "tmp",
            pod_abi::paths::STATUS_DIR_IN_STAGE1,
            pod_abi::paths::ERRORS_DIR_IN_STAGE1,
            "opt/stage2",
        ] {
            std::fs::create_dir_all(s1.join(d)).unwrap();
        }
        std::fs::copy(init, s1.join("init")).unwrap();
        let mut binds = Vec::new();
        for a in &apps {
            let r = s1.join("opt/stage2").join(&a.name).join("rootfs");
            std::fs::create_dir_all(r.join("bin")).unwrap();
            std::fs::create_dir_all(r.join("etc")).unwrap();
            std::fs::copy(check, r.join("bin/pod-check")).unwrap();
            std::fs::copy(probe, r.join("bin/escape-probe")).unwrap();
            std::fs::write(
                r.join("etc/passwd"),
                "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
            )
            .unwrap();
            std::fs::write(r.join("etc/group"), "root:x:0:\nstaff:x:50:user\n").unwrap();
            for m in &a.mounts {
                let src = dir.join("sharedVolumes").join(&m.volume);
                std::fs::create_dir_all(&src).unwrap();
                let target = r.join(m.target.trim_start_matches('/'));
                std::fs::create_dir_all(&target).unwrap();
                binds.push(Bind {
                    source: src,
                    target,
                    read_only: m.read_only,
                });
            }
        }
        let plan = Plan {
            stop_grace_secs,
            ..Plan::new(uuid.clone(), format!("rkt-{uuid}"), apps)
        };
        std::fs::write(
            s1.join("rkt/plan.json"),
            serde_json::to_vec_pretty(&plan).unwrap(),
        )
        .unwrap();
        Pod {
            tmp,
            dir,
            uuid,
            plan,
            binds,
            lock: None,
        }
    }

    /// Rewrites `rkt/plan.json` from `self.plan` (after a test changed it).
    pub fn write_plan(&self) {
        let p = PodPaths::new(&self.dir).plan();
        std::fs::write(p, serde_json::to_vec_pretty(&self.plan).unwrap()).unwrap();
    }

    /// A volume's host directory.
    pub fn volume(&self, name: &str) -> PathBuf {
        self.dir.join("sharedVolumes").join(name)
    }

    /// The app's rootfs on the host.
    pub fn app_rootfs(&self, app: &str) -> PathBuf {
        PodPaths::new(&self.dir).app_rootfs(app)
    }

    /// The app's status file parsed (read as the host reads it).
    pub fn status(&self, app: &str) -> Option<i32> {
        pod_abi::status::read_app_status(
            &pod_abi::paths::PodPaths::new(&self.dir).status_dir(),
            app,
        )
    }

    /// The app's setup error file.
    pub fn error(&self, app: &str) -> Option<String> {
        std::fs::read_to_string(pod_abi::paths::PodPaths::new(&self.dir).app_error(app)).ok()
    }

    /// Starts `stage1-ns run` with the pod lock held in `RKT_LOCK_FD`.
    pub fn spawn(&mut self) -> Child {
        self.spawn_with(None)
    }

    /// Like [`Pod::spawn`]; with `tty`, stage1-ns gets that terminal as stdin/stdout/stderr and
    /// `--interactive`.
    pub fn spawn_with(&mut self, tty: Option<&OwnedFd>) -> Child {
        let lock = nix::fcntl::open(
            &self.dir,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        // SAFETY: fd was just opened and is owned here.
        let lock: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(lock) };
        // SAFETY: flock on an fd owned here.
        let r = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(r, 0, "lock the pod");
        let lock_fd = lock.as_raw_fd();
        let binds: Vec<(CString, CString, bool)> = self
            .binds
            .iter()
            .map(|b| {
                (
                    CString::new(b.source.to_str().unwrap()).unwrap(),
                    CString::new(b.target.to_str().unwrap()).unwrap(),
                    b.read_only,
                )
            })
            .collect();
        let mut cmd = Command::new(stage1_ns());
        cmd.current_dir(&self.dir)
            .env("RKT_LOCK_FD", lock_fd.to_string());
        match tty {
            Some(t) => {
                cmd.args(["run", "--net=none", "--interactive", &self.uuid])
                    .stdin(Stdio::from(t.try_clone().unwrap()))
                    .stdout(Stdio::from(t.try_clone().unwrap()))
                    .stderr(Stdio::from(t.try_clone().unwrap()));
            }
            None => {
                cmd.args(["run", "--net=none", &self.uuid])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
            }
        }
        // SAFETY: the closure only makes async-signal-safe system calls on data prepared
        // before fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(lock_fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if binds.is_empty() {
                    return Ok(());
                }
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let root = c"/";
                let none = std::ptr::null();
                if libc::mount(
                    none,
                    root.as_ptr(),
                    none,
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                for (s, t, ro) in &binds {
                    if libc::mount(
                        s.as_ptr(),
                        t.as_ptr(),
                        none,
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    if *ro
                        && libc::mount(
                            none,
                            t.as_ptr(),
                            none,
                            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                            std::ptr::null(),
                        ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        self.lock = Some(lock);
        child
    }

    /// Drops the test's own copy of the lock fd (stage1-ns keeps its inherited copy).
    pub fn release_test_lock(&mut self) {
        self.lock = None;
    }

    /// Whether someone holds the pod lock (a shared non-blocking flock fails).
    pub fn is_locked(&self) -> bool {
        let f = std::fs::File::open(&self.dir).unwrap();
        // SAFETY: flock on an fd owned here.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) != 0 }
    }

    /// Runs the pod to completion.
    pub fn run(&mut self) -> RunOutcome {
        let child = self.spawn();
        self.release_test_lock();
        finish(child)
    }

    /// Runs another entrypoint (`stop`, `gc`, `enter`) with cwd = the pod directory.
    pub fn entrypoint(&self, args: &[&str]) -> Output {
        Command::new(stage1_ns())
            .current_dir(&self.dir)
            .args(args)
            .output()
            .unwrap()
    }

    /// guest-init's host pid from the `pid` file, waiting for it to appear.
    pub fn pid(&self) -> i32 {
        let p = self.dir.join("pid");
        wait_for(&p, Duration::from_secs(10));
        std::fs::read_to_string(p).unwrap().trim().parse().unwrap()
    }
}

/// Waits for a child and collects its output.
pub fn finish(child: Child) -> RunOutcome {
    let out = child.wait_with_output().unwrap();
    let r = RunOutcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "--- stage1-ns exit {}\n--- stdout:\n{}--- stderr:\n{}",
        r.code, r.stdout, r.stderr
    );
    r
}

/// Waits until `path` exists; panics after `timeout`.
pub fn wait_for(path: &Path, timeout: Duration) {
    let end = Instant::now() + timeout;
    while !path.exists() {
        assert!(
            Instant::now() < end,
            "timed out waiting for {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    u64::from_le_bytes(b)
}

/// A mount of volume `volume` at `target`.
pub fn mount(volume: &str, target: &str, read_only: bool) -> MountPlan {
    MountPlan {
        volume: volume.into(),
        target: target.into(),
        read_only,
    }
}
