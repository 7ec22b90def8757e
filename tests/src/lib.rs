//! Test support: locating the built binaries and stage1 images, building test ACIs with
//! `appc::aci::AciBuilder`, and running `rkt` against a private data directory.
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

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use appc::aci::{AciBuilder, Compression};
use appc::schema::{App, EnvVar, EventHandler, Label, MountPoint};
use appc::{AcIdentifier, AcName, ImageManifest};

/// Time limit of one `rkt` invocation in tests, in seconds.
pub const RUN_TIMEOUT_SECS: u64 = 60;
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

/// Prints the skip line CI collects. Written straight to stderr (not `eprintln!`), so the
/// test harness's output capture does not swallow it.
pub fn skip(test: &str, reason: &str) {
    use std::io::Write;
    // One write(2), so parallel tests cannot split the line.
    let line = format!("SKIP: {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
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

    /// Adds an event handler (`pre-start` / `post-stop`).
    pub fn event_handler(mut self, name: &str, exec: &[&str]) -> Self {
        self.app().event_handlers.push(EventHandler {
            name: name.into(),
            exec: exec.iter().map(|s| s.to_string()).collect(),
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

/// Everything an end-to-end `rkt run --stage1=ns` test needs, with a private `--dir`.
#[derive(Debug)]
pub struct E2e {
    /// The `rkt` binary.
    pub rkt: PathBuf,
    /// The stage1-ns image.
    pub stage1: PathBuf,
    /// Directory with the static `hello` and `pod-check`.
    pub bins: PathBuf,
    /// Private data directory (`--dir`) and scratch space.
    pub tmp: tempfile::TempDir,
}

impl E2e {
    /// Checks the prerequisites (root, binaries, stage1 image); prints a SKIP line and returns
    /// None when one is missing.
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
        let tmp = tempfile::Builder::new()
            .prefix("rkt-e2e-")
            .tempdir()
            .unwrap();
        Some(E2e {
            rkt,
            stage1,
            bins,
            tmp,
        })
    }

    /// The private `--dir`.
    pub fn dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// A scratch path.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `rkt --dir=<private> --insecure-options=image ARGS...`
    pub fn rkt(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.rkt);
        c.arg(format!("--dir={}", self.dir().display()))
            .arg("--insecure-options=image")
            .args(args);
        c
    }

    /// `--stage1-path=<stage1-ns.aci>`.
    pub fn stage1_flag(&self) -> String {
        format!("--stage1-path={}", self.stage1.display())
    }

    /// Runs `rkt` (killed after [`RUN_TIMEOUT_SECS`]) and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut c = self.rkt(args);
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(RUN_TIMEOUT_SECS);
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                eprintln!("rkt {} timed out after {RUN_TIMEOUT_SECS}s", args.join(" "));
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        eprintln!(
            "$ rkt {}\n[exit {:?}]\n--- stdout\n{}--- stderr\n{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
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
}

/// The pods' mounts still present under `dir` (from /proc/self/mountinfo).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
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
