//! Test support: locating the built binaries and stage1 images, building test ACIs with
//! `appc::aci::AciBuilder`, running `rkt` against a private data directory, and marking the
//! tests that boot guests.
//!
//! End-to-end tests use these environment variables (set by `ci/test.sh`; defaults in
//! parentheses, relative to the workspace root):
//!
//! * `RKT_BIN`: the `rkt` binary (`build/bin/rkt`, else `target/{debug,release}/rkt`).
//! * `RKT_STAGE1_NS_ACI`: the namespace stage1 image (`build/stage1-ns.aci`).
//! * `RKT_STAGE1_KVM_ACI`: the KVM stage1 image (`build/stage1-kvm.aci`).
//! * `RKT_TEST_BIN_DIR`: directory with the static test binaries `hello` and `pod-check`
//!   (`build/bin`).
//!
//! `make build` (ci/build.sh) produces all of them. A test whose inputs are missing, or that
//! needs root and is not, prints `SKIP: <test>: <reason>` on stderr and returns.
//!
//! A test that boots a guest calls [`guest_kvm_or_skip`] first (through [`E2e::require_kvm`]):
//! that mark, not the test's name, is how `ci/test.sh` knows to run it inside ci/nested-kvm.

#![allow(clippy::unwrap_used)]

pub mod attach;
pub mod hostns;
pub mod mutable;
pub mod nomad;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use appc::aci::{AciBuilder, Compression};
use appc::schema::{App, EnvVar, EventHandler, Label, MountPoint};
use appc::{AcIdentifier, AcName, ImageManifest};

/// Time limit of one `rkt` invocation in namespace tests, in seconds.
pub const RUN_TIMEOUT_SECS: u64 = 60;
/// Time limit of one `rkt` invocation in KVM tests (nested, emulated KVM), in seconds.
pub const KVM_RUN_TIMEOUT_SECS: u64 = 300;
/// The PVM module's sysfs directory (as `stage1_vmm::pvm` checks it).
const KVM_PVM_MODULE: &str = "/sys/module/kvm_pvm";
/// Env var that lets the VMM use a PVM `/dev/kvm` (`1`), as `stage1_vmm::pvm` reads it.
const ENV_ALLOW_PVM: &str = "RKT_VMM_ALLOW_PVM";
/// Stdout longer than this (bytes) is shown abridged in a test's log.
const SHOWN_STDOUT_MAX: usize = 4000;
/// Env var naming the `rkt` binary.
pub const ENV_RKT_BIN: &str = "RKT_BIN";
/// Env var naming the namespace stage1 ACI.
pub const ENV_STAGE1_NS_ACI: &str = "RKT_STAGE1_NS_ACI";
/// Env var naming the KVM stage1 ACI.
pub const ENV_STAGE1_KVM_ACI: &str = "RKT_STAGE1_KVM_ACI";
/// Env var naming the directory of static test binaries (hello, pod-check).
pub const ENV_TEST_BIN_DIR: &str = "RKT_TEST_BIN_DIR";

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn env_or(var: &str, candidates: &[PathBuf]) -> Option<PathBuf> {
    if let Some(v) = std::env::var_os(var) {
        let p = PathBuf::from(v);
        return p.exists().then_some(p);
    }
    candidates.iter().find(|p| p.exists()).cloned()
}

/// The `rkt` binary to test.
pub fn rkt_bin() -> Option<PathBuf> {
    let r = workspace_root();
    env_or(
        ENV_RKT_BIN,
        &[
            r.join("build/bin/rkt"),
            r.join("target/debug/rkt"),
            r.join("target/release/rkt"),
        ],
    )
}

/// The namespace stage1 image.
pub fn stage1_ns_aci() -> Option<PathBuf> {
    env_or(
        ENV_STAGE1_NS_ACI,
        &[workspace_root().join("build/stage1-ns.aci")],
    )
}

/// The KVM stage1 image.
pub fn stage1_kvm_aci() -> Option<PathBuf> {
    env_or(
        ENV_STAGE1_KVM_ACI,
        &[workspace_root().join("build/stage1-kvm.aci")],
    )
}

/// The directory holding the static `hello` and `pod-check` binaries.
pub fn test_bin_dir() -> Option<PathBuf> {
    env_or(ENV_TEST_BIN_DIR, &[workspace_root().join("build/bin")])
        .filter(|d| d.join("hello").is_file() && d.join("pod-check").is_file())
}

/// Whether we run as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Writes `line` (newline included) to stderr in one write(2), so parallel tests cannot split
/// it and the test harness's output capture does not swallow it (unlike `eprintln!`).
fn say(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Prints the skip line CI collects: `SKIP: <test>: <reason>`.
pub fn skip(test: &str, reason: &str) {
    say(&format!("SKIP: {test}: {reason}\n"));
}

/// The static busybox of Debian's `busybox-static` (ci/deps.sh installs it), for test images.
pub const BUSYBOX: &str = "/bin/busybox";

/// [`BUSYBOX`] if it is there; otherwise prints `test`'s SKIP saying so and gives `None`.
pub fn static_busybox_or_skip(test: &str) -> Option<&'static Path> {
    let p = Path::new(BUSYBOX);
    if p.exists() {
        return Some(p);
    }
    skip(
        test,
        "no static busybox (ci/deps.sh installs busybox-static)",
    );
    None
}

/// Compiles the C program `src` with `cc -static -O2` into `dir/<name>` (its source beside it,
/// `dir/<name>.c`) for a test image. The error says why (no `cc`, or its diagnostics); the
/// caller SKIPs with it.
pub fn cc_static(src: &str, dir: &Path, name: &str) -> Result<PathBuf, String> {
    let c = dir.join(format!("{name}.c"));
    let bin = dir.join(name);
    std::fs::write(&c, src).map_err(|e| format!("cannot write {}: {e}", c.display()))?;
    let o = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&c)
        .output()
        .map_err(|e| format!("no cc: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "cc -static failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(bin)
}

/// Why this host's KVM cannot boot a Linux guest, if it cannot (the VMM's PVM rule: the
/// kvm_pvm module loaded and no vmx/svm CPU flag, unless `RKT_VMM_ALLOW_PVM=1`).
pub fn kvm_unusable() -> Option<&'static str> {
    if !Path::new("/dev/kvm").exists() {
        return Some("host KVM cannot boot Linux (no /dev/kvm); runs under ci/nested-kvm");
    }
    let hw = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("flags"))
        .flat_map(|l| l.split_whitespace())
        .any(|f| f == "vmx" || f == "svm");
    let allow = std::env::var(ENV_ALLOW_PVM).is_ok_and(|v| v == "1");
    if Path::new(KVM_PVM_MODULE).exists() && !hw && !allow {
        return Some("host KVM cannot boot Linux; runs under ci/nested-kvm");
    }
    None
}

/// Marks `test` (its libtest name) as a guest-booting test and says whether it can run here.
///
/// Prints `GUEST-TEST: here <binary> <test>` when this host's KVM can boot Linux, else
/// `GUEST-TEST: nested <binary> <test>` and the test's SKIP line, and returns false. `ci/test.sh`
/// runs every `nested` test inside ci/nested-kvm and fails unless it passes there, printing
/// `here`; the stage1-vmm tests print the same lines (`stage1-vmm/tests/common/guest.rs`).
pub fn guest_kvm_or_skip(test: &str) -> bool {
    let bin = std::env::current_exe().unwrap_or_default();
    let unusable = kvm_unusable();
    let verdict = if unusable.is_some() { "nested" } else { "here" };
    say(&format!("GUEST-TEST: {verdict} {} {test}\n", bin.display()));
    if let Some(why) = unusable {
        skip(test, why);
    }
    unusable.is_none()
}

/// Where tests put scratch space: `$NESTED_KVM_TMP` when set (inside ci/nested-kvm: a plain
/// tmpfs, since overlayfs cannot use an overlay as upper), else the system temp directory.
pub fn scratch_base() -> PathBuf {
    std::env::var_os("NESTED_KVM_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

/// A fresh temporary directory under [`scratch_base`] named `prefix...`.
fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(scratch_base())
        .unwrap()
}

/// Reads `pipe` to its end on a thread of its own.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut v);
        }
        v
    })
}

/// Waits until every path in `paths` exists (checked every 200 ms); panics with `what` after
/// `limit`.
pub fn wait_for_paths(paths: &[&Path], limit: Duration, what: &str) {
    let t0 = Instant::now();
    while !paths.iter().all(|p| p.exists()) {
        assert!(t0.elapsed() < limit, "{what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads `path` until its text satisfies `done` (checked every 50 ms) or `limit` passes;
/// returns the last text read (empty while the file is missing).
pub fn wait_for_text(path: &Path, limit: Duration, done: impl Fn(&str) -> bool) -> String {
    let t0 = Instant::now();
    loop {
        let t = std::fs::read_to_string(path).unwrap_or_default();
        if done(&t) || t0.elapsed() > limit {
            return t;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the process a pod's `pid` file names (guest-init, or the VMM) with SIGKILL, after
/// checking its name so that a reused PID is left alone. For tests that failed half-way: a pod
/// left running would hold the test binary's output pipe.
pub fn kill_pod_process(pid_file: &Path) {
    let pid = std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
        .filter(|p| *p > 1);
    let Some(pid) = pid else { return };
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if ["init", "guest-init", "stage1-vmm", "stage1-ns"].contains(&comm.trim()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Collects a child's output (reading both pipes while it runs), killing it after `limit`.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let so = drain(child.stdout.take());
    let se = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            eprintln!("timed out after {limit:?}; killing it");
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: so.join().unwrap(),
        stderr: se.join().unwrap(),
    }
}

/// The pod UUID saved by `--uuid-file-save` in `file`.
pub fn uuid_of(file: &Path) -> String {
    std::fs::read_to_string(file).unwrap().trim().to_string()
}

/// A test image under construction.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    manifest: ImageManifest,
    files: Vec<(String, PathBuf, u32)>,
    data: Vec<(String, Vec<u8>, u32)>,
    dirs: Vec<String>,
    symlinks: Vec<(String, String)>,
}

impl ImageSpec {
    /// An image named `name` whose app runs `exec` as root.
    pub fn new(name: &str, exec: &[&str]) -> Self {
        let mut manifest = ImageManifest::new(AcIdentifier::new(name).unwrap());
        manifest.labels = vec![
            Label {
                name: AcIdentifier::new("version").unwrap(),
                value: "0.0.1".into(),
            },
            Label {
                name: AcIdentifier::new("os").unwrap(),
                value: "linux".into(),
            },
            Label {
                name: AcIdentifier::new("arch").unwrap(),
                value: "amd64".into(),
            },
        ];
        manifest.app = Some(App {
            exec: exec.iter().map(|s| s.to_string()).collect(),
            user: "0".into(),
            group: "0".into(),
            ..Default::default()
        });
        Self {
            manifest,
            files: Vec::new(),
            data: Vec::new(),
            dirs: Vec::new(),
            symlinks: Vec::new(),
        }
    }

    fn app(&mut self) -> &mut App {
        self.manifest.app.get_or_insert_with(App::default)
    }

    /// Adds a host file at `path` with `mode`.
    pub fn file(mut self, path: &str, host: &Path, mode: u32) -> Self {
        self.files
            .push((path.to_string(), host.to_path_buf(), mode));
        self
    }

    /// Adds a file with the given contents.
    pub fn data(mut self, path: &str, contents: &[u8], mode: u32) -> Self {
        self.data.push((path.to_string(), contents.to_vec(), mode));
        self
    }

    /// Adds an empty directory.
    pub fn dir(mut self, path: &str) -> Self {
        self.dirs.push(path.to_string());
        self
    }

    /// Adds a symlink.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.symlinks.push((path.to_string(), target.to_string()));
        self
    }

    /// Sets an environment variable of the image.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.app().environment.push(EnvVar {
            name: k.into(),
            value: v.into(),
        });
        self
    }

    /// Sets the working directory.
    pub fn working_dir(mut self, d: &str) -> Self {
        self.app().working_directory = Some(d.into());
        self
    }

    /// Adds a mount point.
    pub fn mount_point(mut self, name: &str, path: &str, read_only: bool) -> Self {
        self.app().mount_points.push(MountPoint {
            name: AcName::new(name).unwrap(),
            path: path.into(),
            read_only,
        });
        self
    }

    /// Adds an isolator to the image's app.
    pub fn isolator(mut self, name: &str, value: serde_json::Value) -> Self {
        self.app().isolators.push(appc::types::Isolator {
            name: AcIdentifier::new(name).unwrap(),
            value,
        });
        self
    }

    /// Adds an event handler (`pre-start` / `post-stop`).
    pub fn event_handler(mut self, name: &str, exec: &[&str]) -> Self {
        self.app().event_handlers.push(EventHandler {
            name: name.into(),
            exec: exec.iter().map(|s| s.to_string()).collect(),
        });
        self
    }

    /// Declares an app port.
    pub fn port(mut self, name: &str, protocol: &str, port: u32) -> Self {
        self.app().ports.push(appc::schema::Port {
            name: AcName::new(name).unwrap(),
            protocol: protocol.into(),
            port,
            count: 1,
            socket_activated: false,
        });
        self
    }

    /// Sets user and group.
    pub fn user_group(mut self, user: &str, group: &str) -> Self {
        let a = self.app();
        a.user = user.into();
        a.group = group.into();
        self
    }

    /// Writes the ACI (gzip) to `out`.
    pub fn build(&self, out: &Path) -> PathBuf {
        let f = std::fs::File::create(out).unwrap();
        let mut b = AciBuilder::new(
            std::io::BufWriter::new(f),
            Compression::Gzip,
            &self.manifest,
        )
        .unwrap();
        let mut made = std::collections::BTreeSet::new();
        let mut parents = |b: &mut AciBuilder<_>, p: &str| {
            let comps: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
            for i in 1..comps.len() {
                let d = format!("/{}", comps[..i].join("/"));
                if made.insert(d.clone()) {
                    b.add_dir(&d, 0o755).unwrap();
                }
            }
        };
        for d in &self.dirs {
            parents(&mut b, &format!("{d}/x"));
        }
        for (p, host, mode) in &self.files {
            parents(&mut b, p);
            b.add_file(p, *mode, &std::fs::read(host).unwrap()).unwrap();
        }
        for (p, data, mode) in &self.data {
            parents(&mut b, p);
            b.add_file(p, *mode, data).unwrap();
        }
        for (p, t) in &self.symlinks {
            parents(&mut b, p);
            b.add_symlink(p, t).unwrap();
        }
        let mut w = b.finish().unwrap();
        std::io::Write::flush(&mut w).unwrap();
        out.to_path_buf()
    }
}

/// Everything an end-to-end `rkt run` test needs: the binaries, one stage1 image, a data
/// directory (`--dir`) and scratch space.
#[derive(Debug)]
pub struct E2e {
    /// The `rkt` binary.
    pub rkt: PathBuf,
    /// The stage1 image (stage1-ns or stage1-kvm).
    pub stage1: PathBuf,
    /// Directory with the static `hello` and `pod-check`.
    pub bins: PathBuf,
    /// Scratch space (the private `--dir` of namespace tests too).
    pub tmp: tempfile::TempDir,
    /// The `--dir` every `rkt` invocation gets.
    data: PathBuf,
    /// Time limit of one `rkt` invocation.
    timeout: Duration,
    /// The test's "host" network namespace every `rkt` runs in (namespace tests).
    pub host_ns: Option<hostns::HostNs>,
}

impl E2e {
    /// Checks the prerequisites of a namespace test (root, binaries, stage1-ns image); prints a
    /// SKIP line and returns None when one is missing. The data directory is private.
    pub fn require(test: &str) -> Option<E2e> {
        if !is_root() {
            skip(test, "needs root (namespaces, mounts)");
            return None;
        }
        let Some(rkt) = rkt_bin() else {
            skip(test, "no rkt binary (set RKT_BIN or run `make build`)");
            return None;
        };
        let Some(stage1) = stage1_ns_aci() else {
            skip(
                test,
                "no stage1-ns.aci (set RKT_STAGE1_NS_ACI or run `make build`)",
            );
            return None;
        };
        let Some(bins) = test_bin_dir() else {
            skip(
                test,
                "no static hello/pod-check (set RKT_TEST_BIN_DIR or run `make build`)",
            );
            return None;
        };
        let tmp = scratch("rkt-e2e-");
        let data = tmp.path().join("data");
        Some(E2e {
            rkt,
            stage1,
            bins,
            tmp,
            data,
            timeout: Duration::from_secs(RUN_TIMEOUT_SECS),
            host_ns: hostns::HostNs::create(),
        })
    }

    /// Marks `test` as guest-booting ([`guest_kvm_or_skip`]) and checks the prerequisites of a
    /// KVM test (root, binaries, stage1-kvm image); prints a SKIP line and returns None when
    /// one is missing. All KVM tests of a test binary share one data directory, so the stage1
    /// image is imported once (under emulation an import costs far more than a pod run).
    pub fn require_kvm(test: &str) -> Option<E2e> {
        if !guest_kvm_or_skip(test) {
            return None;
        }
        if !is_root() {
            skip(test, "needs root (mounts, /dev/kvm)");
            return None;
        }
        let (Some(rkt), Some(stage1), Some(bins)) = (rkt_bin(), stage1_kvm_aci(), test_bin_dir())
        else {
            skip(
                test,
                "no rkt, stage1-kvm.aci or static test binaries (set RKT_BIN, RKT_STAGE1_KVM_ACI, \
                 RKT_TEST_BIN_DIR or run `make build`)",
            );
            return None;
        };
        static SHARED: OnceLock<PathBuf> = OnceLock::new();
        let data = SHARED
            .get_or_init(|| scratch("rkt-kvm-data-").keep())
            .clone();
        Some(E2e {
            rkt,
            stage1,
            bins,
            tmp: scratch("rkt-kvm-"),
            data,
            timeout: Duration::from_secs(KVM_RUN_TIMEOUT_SECS),
            // KVM pods get CNI networks too: never in the machine's own namespace.
            host_ns: hostns::HostNs::create(),
        })
    }

    /// [`E2e::require_kvm`] for a test whose pods use networks: also the test's "host" network
    /// namespace ([`E2e::host`]) and the static busybox its apps run; prints a SKIP line and
    /// returns None when one is missing.
    pub fn require_kvm_net(test: &str) -> Option<E2e> {
        let e = E2e::require_kvm(test)?;
        if e.host_ns.is_none() {
            skip(
                test,
                "cannot create a test network namespace (ip netns add)",
            );
            return None;
        }
        static_busybox_or_skip(test)?;
        Some(e)
    }

    /// The test's "host" network namespace of an `E2e` from [`E2e::require_kvm_net`].
    pub fn host(&self) -> &hostns::HostNs {
        self.host_ns
            .as_ref()
            .expect("require_kvm_net checked the host namespace")
    }

    /// The pod network namespaces (`/var/run/netns/rkt-<uuid>`) of this test's pods.
    pub fn pod_netns(&self) -> Vec<PathBuf> {
        let mut v = Vec::new();
        for state in std::fs::read_dir(self.data.join("pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            for pod in std::fs::read_dir(state.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let ns = Path::new("/var/run/netns")
                    .join(format!("rkt-{}", pod.file_name().to_string_lossy()));
                if ns.exists() {
                    v.push(ns);
                }
            }
        }
        v
    }

    /// This `E2e` with `data` as the `--dir` of its `rkt` invocations (e.g. on a file system
    /// the test made).
    pub fn with_dir(mut self, data: PathBuf) -> E2e {
        self.data = data;
        self
    }

    /// The `--dir` of this test's `rkt` invocations.
    pub fn dir(&self) -> PathBuf {
        self.data.clone()
    }

    /// A scratch path.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `rkt --dir=<data> --insecure-options=image ARGS...`
    pub fn rkt<S: AsRef<str>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(&self.rkt);
        c.arg(format!("--dir={}", self.data.display()))
            .arg("--insecure-options=image")
            .args(args.iter().map(AsRef::as_ref));
        if let Some(ns) = &self.host_ns {
            ns.enter(&mut c);
        }
        c
    }

    /// The time limit of one `rkt` invocation.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `--stage1-path=<the stage1 image>`.
    pub fn stage1_flag(&self) -> String {
        format!("--stage1-path={}", self.stage1.display())
    }

    /// Starts `rkt ARGS` with stdin from /dev/null and piped stdout and stderr.
    pub fn spawn<S: AsRef<str>>(&self, args: &[S]) -> Child {
        self.spawn_env(&[], args)
    }

    /// [`E2e::spawn`] with `env` added to rkt's environment.
    pub fn spawn_env<S: AsRef<str>>(&self, env: &[(&str, &str)], args: &[S]) -> Child {
        self.rkt(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs `rkt ARGS` (killed after the time limit) and prints what happened.
    pub fn run<S: AsRef<str>>(&self, args: &[S]) -> Output {
        self.run_env(&[], args)
    }

    /// [`E2e::run`] with `env` added to rkt's environment.
    pub fn run_env<S: AsRef<str>>(&self, env: &[(&str, &str)], args: &[S]) -> Output {
        let started = Instant::now();
        let out = wait_output(self.spawn_env(env, args), self.timeout);
        let so = stdout(&out);
        let shown = if so.len() > SHOWN_STDOUT_MAX {
            let head: String = so.chars().take(SHOWN_STDOUT_MAX / 2).collect();
            format!("{head}... ({} bytes)\n", so.len())
        } else {
            so
        };
        eprintln!(
            "$ rkt {}\n[exit {:?} after {:.1?}]\n--- stdout\n{shown}--- stderr\n{}",
            args.iter()
                .map(AsRef::as_ref)
                .collect::<Vec<&str>>()
                .join(" "),
            out.status.code(),
            started.elapsed(),
            stderr(&out)
        );
        out
    }

    /// `rkt status UUID`'s stdout.
    pub fn status(&self, uuid: &str) -> String {
        stdout(&self.run(&["status", uuid]))
    }

    /// The pod directory of `uuid` in whatever state it is.
    pub fn pod_dir(&self, uuid: &str) -> PathBuf {
        ["run", "exited-garbage", "prepared", "garbage"]
            .iter()
            .map(|s| self.data.join("pods").join(s).join(uuid))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("no pod directory for {uuid}"))
    }

    /// The pid stage1 recorded for pod `uuid`.
    pub fn pod_pid(&self, uuid: &str) -> i32 {
        std::fs::read_to_string(self.pod_dir(uuid).join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// The static `escape-probe` (tests/src/bin/escape-probe.rs) of the test binaries, or of
    /// the static build; a missing one is a failure, not a skip: the security tests use it.
    pub fn escape_probe(&self) -> PathBuf {
        [
            self.bins.join("escape-probe"),
            workspace_root().join("target/static/x86_64-unknown-linux-gnu/release/escape-probe"),
        ]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no static escape-probe in {} (run ci/build.sh)",
                self.bins.display()
            )
        })
    }

    /// The `hello` image (`example.com/hello`, exec `/bin/hello`).
    pub fn hello_image(&self) -> PathBuf {
        let p = self.path("hello.aci");
        if !p.exists() {
            ImageSpec::new("example.com/hello", &["/bin/hello"])
                .file("/bin/hello", &self.bins.join("hello"), 0o755)
                .build(&p);
        }
        p
    }

    /// Starts a `pod-check` app (image `file`) that writes `/mark/started` into a host volume,
    /// then sleeps with `flags` (after `--no-check`); waits until it has started (up to
    /// [`KVM_RUN_TIMEOUT_SECS`]). Returns the running `rkt run` and the pod's UUID.
    pub fn start_sleeper(&self, file: &str, flags: &[&str]) -> (Child, String) {
        self.start_sleeper_with(file, &[], |s| s, flags)
    }

    /// [`E2e::start_sleeper`] with `rkt run` flags `rkt_flags` and more in the image.
    pub fn start_sleeper_with(
        &self,
        file: &str,
        rkt_flags: &[&str],
        spec: impl FnOnce(ImageSpec) -> ImageSpec,
        flags: &[&str],
    ) -> (Child, String) {
        let img = self.pod_check_image(file, |s| spec(s.mount_point("mark", "/mark", false)));
        let mark = self.path("mark");
        std::fs::create_dir(&mark).unwrap();
        // Writable by any app user (a --private-users pod's root is not the host's).
        std::fs::set_permissions(&mark, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let uuid_file = self.path("uuid");
        let mut args = vec![
            "run".to_string(),
            self.stage1_flag(),
            format!("--uuid-file-save={}", uuid_file.display()),
            format!("--volume=mark,kind=host,source={}", mark.display()),
        ];
        args.extend(rkt_flags.iter().map(|f| f.to_string()));
        args.extend([img.display().to_string(), "--".into(), "--no-check".into()]);
        args.extend(flags.iter().map(|f| f.to_string()));
        args.extend(["--write=/mark/started", "--sleep-ms=600000"].map(String::from));
        let child = self.spawn(&args);
        wait_for_paths(
            &[&mark.join("started")],
            Duration::from_secs(KVM_RUN_TIMEOUT_SECS),
            "the app never started",
        );
        (child, uuid_of(&uuid_file))
    }

    /// `--private-users`, for either flavor: root in the app is a host ID of the pod's own
    /// range. The attack: a root app reads a host file only the host's root may read and
    /// leaves a root-owned file on the host, through a host volume. Without the flag both
    /// succeed (root keeps `CAP_DAC_OVERRIDE` among rkt's default capabilities); with it the
    /// read is `EACCES` and the file belongs to the range's first ID, while the app still owns
    /// its own tree (the pod's copy, shifted) and binds port 80; `rkt export` gives the image
    /// its own IDs back; a running pod's `rkt enter` command runs in the same mapping.
    pub fn check_private_users(&self) {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let probe = self.escape_probe();
        let img = self.pod_check_image("userns.aci", |s| {
            s.file("/bin/escape-probe", &probe, 0o755)
                .dir("/rootdir")
                .mount_point("mark", "/mark", false)
        });
        let img = img.to_str().unwrap();
        let vol = self.path("host-vol");
        std::fs::create_dir_all(vol.join("drop")).unwrap();
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        mode(&vol, 0o755);
        mode(&vol.join("drop"), 0o777);
        std::fs::write(vol.join("secret"), "host root only").unwrap();
        mode(&vol.join("secret"), 0o600);
        let volume = format!("--volume=v,kind=host,source={}", vol.display());
        let uuid_file = self.path("private.uuid");
        let probe_run = |private: bool, made: &str| {
            let mut args = vec![
                "run".to_string(),
                self.stage1_flag(),
                "--net=none".into(),
                format!("--uuid-file-save={}", uuid_file.display()),
            ];
            if private {
                args.push("--private-users".into());
            }
            let made = format!("/vol/drop/{made}");
            args.extend(
                [
                    volume.as_str(),
                    img,
                    "--mount=volume=v,target=/vol",
                    "--exec=/bin/escape-probe",
                    "--",
                    "status",
                    "print",
                    "/proc/self/uid_map",
                    "read",
                    "/vol/secret",
                    "create",
                    &made,
                    "create",
                    "/rootdir/mine",
                    "bind",
                    "80",
                ]
                .map(str::to_string),
            );
            let o = self.run(&args);
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            stdout(&o)
        };

        // Without the flag: the attack works, as root's.
        let out = probe_run(false, "by-root");
        assert!(
            out.contains("print /proc/self/uid_map: 0 0 4294967295"),
            "{out}"
        );
        assert!(out.contains("read /vol/secret: ok"), "{out}");
        assert_eq!(
            std::fs::metadata(vol.join("drop/by-root")).unwrap().uid(),
            0
        );

        // With it: app root is host ID SHIFT, a multiple of 65536 above 0, 65536 IDs wide.
        let out = probe_run(true, "by-pod-root");
        assert!(out.contains("uid=0 gid=0"), "{out}");
        let map = out
            .lines()
            .find_map(|l| l.strip_prefix("print /proc/self/uid_map: "))
            .unwrap_or_else(|| panic!("{out}"));
        let shift: u32 = match map.split(' ').collect::<Vec<_>>()[..] {
            ["0", s, "65536"] => s.parse().unwrap(),
            _ => panic!("uid_map {map:?}"),
        };
        assert!(shift >= 65536 && shift.is_multiple_of(65536), "{map}");
        assert!(out.contains("read /vol/secret: EACCES"), "{out}");
        let md = std::fs::metadata(vol.join("drop/by-pod-root")).unwrap();
        assert_eq!((md.uid(), md.gid()), (shift, shift), "{out}");
        assert!(out.contains("create /rootdir/mine: ok"), "{out}");
        assert!(out.contains("bind 80: ok"), "{out}");

        // `rkt export` gives the image its own IDs back: the file app root made is root's.
        let aci = self.path("exported.aci");
        let o = self.run(&["export", &uuid_of(&uuid_file), aci.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let mut owners = std::collections::BTreeMap::new();
        let mut ar = tar::Archive::new(std::fs::File::open(&aci).unwrap());
        for ent in ar.entries().unwrap() {
            let ent = ent.unwrap();
            let h = ent.header();
            let path = ent.path().unwrap().display().to_string();
            owners.insert(path, (h.uid().unwrap(), h.gid().unwrap()));
        }
        assert_eq!(
            owners.get("rootfs/rootdir/mine"),
            Some(&(0, 0)),
            "{owners:?}"
        );
        assert!(
            owners.values().all(|(u, g)| *u < 65536 && *g < 65536),
            "{owners:?}"
        );

        // A running pod: its recorded range, its shifted tree, and `rkt enter` in the same
        // mapping.
        let (child, uuid) = self.start_sleeper_with(
            "sleeper.aci",
            &["--private-users"],
            |s| s.file("/bin/escape-probe", &probe, 0o755),
            &[],
        );
        let recorded =
            std::fs::read_to_string(self.pod_dir(&uuid).join("private-users-prepared")).unwrap();
        let (s, count) = recorded.trim().split_once(':').unwrap();
        assert_eq!(count, "65536");
        let stage2 = pod_abi::paths::PodPaths::new(self.pod_dir(&uuid)).stage2_dir();
        let app = std::fs::read_dir(&stage2).unwrap().next().unwrap().unwrap();
        let owner = std::fs::metadata(app.path().join("rootfs/tmp"))
            .unwrap()
            .uid();
        assert_eq!(
            owner.to_string(),
            s,
            "the pod's copy of the tree is shifted"
        );
        let o = self.run(&[
            "enter",
            &uuid,
            "/bin/escape-probe",
            "status",
            "print",
            "/proc/self/uid_map",
        ]);
        let out = stdout(&o);
        let _ = self.run(&["stop", "--force", &uuid]);
        let _ = wait_output(child, self.timeout());
        assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
        assert!(out.contains("uid=0 gid=0"), "{out}");
        assert!(
            out.contains(&format!("print /proc/self/uid_map: 0 {s} 65536")),
            "{out}"
        );
    }

    /// A `pod-check` image named `name` with extra configuration.
    pub fn pod_check_image(
        &self,
        file: &str,
        spec: impl FnOnce(ImageSpec) -> ImageSpec,
    ) -> PathBuf {
        let p = self.path(file);
        let base = ImageSpec::new(
            &format!("example.com/{}", file.trim_end_matches(".aci")),
            &["/bin/pod-check"],
        )
        .file("/bin/pod-check", &self.bins.join("pod-check"), 0o755)
        .dir("/tmp");
        spec(base).build(&p);
        p
    }

    /// `rkt run` arguments for the in-pod checker with every kind of override, which both
    /// stage1 flavors run: image environment, an env file, `--set-env`, a read-only host
    /// volume, the hostname, user, group, supplementary groups, working directory and app
    /// environment, plus the pod's empty volume `empty` (`--volume` options `opts`) mounted at
    /// `/<empty>`. The checker's flags end with its expectations; `more` follows them (further
    /// checker flags, `---` and more apps).
    pub fn overrides_check_args(&self, empty: &str, opts: &str, more: &[&str]) -> Vec<String> {
        let img = self.pod_check_image("check.aci", |s| {
            s.env("IMG", "image").env("OVER", "image").dir("/work")
        });
        let host = self.path("hostdir");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("from-host"), b"hi").unwrap();
        let envfile = self.path("env");
        std::fs::write(&envfile, "# comment\nFILE=file\nOVER=file\n").unwrap();
        let mut args = vec![
            "run".to_string(),
            self.stage1_flag(),
            format!(
                "--volume=data,kind=host,source={},readOnly=true",
                host.display()
            ),
            format!("--volume={empty},{opts}"),
            "--mount=volume=data,target=/data".into(),
            format!("--set-env-file={}", envfile.display()),
            "--set-env=SET=set".into(),
            "--hostname=checkhost".into(),
            img.display().to_string(),
        ];
        args.extend(
            [
                "--user=1000",
                "--group=1001",
                "--supplementary-gids=5,6",
                "--working-dir=/work",
                "--environment=OVER=app",
            ]
            .map(String::from),
        );
        args.push(format!("--mount=volume={empty},target=/{empty}"));
        args.push("--".into());
        args.extend(
            [
                "--expect-env=IMG=image",
                "--expect-env=FILE=file",
                "--expect-env=SET=set",
                "--expect-env=OVER=app",
                "--expect-env=AC_APP_NAME=check",
                "--expect-env=container=rkt",
                "--expect-uid=1000",
                "--expect-gid=1001",
                "--expect-groups=5,6",
                "--expect-cwd=/work",
                "--expect-mount=/data:ro",
                "--expect-file=/data/from-host",
                "--expect-hostname=checkhost",
            ]
            .map(String::from),
        );
        args.push(format!("--expect-mount=/{empty}:rw"));
        args.extend(more.iter().map(|m| m.to_string()));
        args
    }
}

/// The pods' mounts still present under `dir` (from /proc/self/mountinfo).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    // Bytes: a pod can put any byte in a mount point's path (a rename above it).
    let text = String::from_utf8_lossy(&std::fs::read("/proc/self/mountinfo").unwrap_or_default())
        .into_owned();
    let d = dir.to_string_lossy().to_string();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&d))
        .map(String::from)
        .collect()
}

/// Stdout as a string.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr as a string.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

impl E2e {
    /// Kills the pods still running in this test's own data directory (not the kvm tests'
    /// shared one) ([`kill_pod_process`]).
    fn kill_running_pods(&self) {
        if !self.data.starts_with(self.tmp.path()) {
            return;
        }
        let Ok(pods) = std::fs::read_dir(self.data.join("pods/run")) else {
            return;
        };
        for pod in pods.flatten() {
            kill_pod_process(&pod.path().join("pid"));
        }
    }
}

impl Drop for E2e {
    /// Kills the pods a test left running in its own data directory; then, for namespace
    /// tests, garbage-collects the test's exited pods (the stage1 `gc` tears their networks
    /// down) and removes any pod network namespace still left, so that a test that does not gc
    /// leaves nothing on the machine.
    fn drop(&mut self) {
        self.kill_running_pods();
        if self.host_ns.is_none() {
            return;
        }
        if let Ok(child) = self
            .rkt(&["gc", "--grace-period=0s"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            let _ = wait_output(child, self.timeout);
        }
        for ns in self.pod_netns() {
            let _ = nix::mount::umount2(&ns, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&ns);
        }
    }
}
