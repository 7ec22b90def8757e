//! Pod lifecycle through the real `rkt` binary on real pod directories, with a small shell
//! stage1 (an ACI whose entrypoints are `/bin/sh` scripts) so no real stage1 is needed:
//! prepare/list/status/cat-manifest/rm/gc, run with exit-code propagation, run-prepared,
//! stop, mounts and the launch plan, error exit codes.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use appc::aci::{AciBuilder, Compression};
use appc::schema::App;
use appc::{AcIdentifier, ImageManifest};
use pod_abi::paths::PodPaths;

mod stage1_util;
use stage1_util::script_stage1_version;

const RUN_SCRIPT: &str = r#"#!/bin/sh
# Fake stage1 run: check the contract, record it, write statuses.
uuid=""
for a in "$@"; do uuid="$a"; done
echo "$@" > args
[ -n "$RKT_LOCK_FD" ] || { echo "no RKT_LOCK_FD" >&2; exit 125; }
[ -e "/proc/self/fd/$RKT_LOCK_FD" ] || { echo "lock fd not open" >&2; exit 125; }
readlink "/proc/self/fd/$RKT_LOCK_FD" > lockfd-target
pwd > cwd
echo $$ > pid
mountpoint -q stage1/rootfs && echo yes > stage1-mounted
if [ -f stage1/rootfs/rkt/sleep ]; then exec sleep 60; fi
code=0
for d in stage1/rootfs/opt/stage2/*; do
  app=$(basename "$d")
  c=$(tr -d ' \n' < stage1/rootfs/rkt/plan.json | grep -o '"--exit","[0-9]*"' | grep -o '[0-9]*' | head -1)
  [ -n "$c" ] || c=0
  echo "$c" > "stage1/rootfs/@STATUS_DIR@/$app"
  [ "$code" = 0 ] && code=$c
done
exit $code
"#;

const STOP_SCRIPT: &str = "#!/bin/sh\necho \"$@\" > stop-args\nkill -9 $(cat pid)\n";
const GC_SCRIPT: &str = "#!/bin/sh\necho \"$@\" > ../../gc-ran-$1\n";

struct Env {
    tmp: tempfile::TempDir,
}

/// A test's pods leave no mounts behind (a pod left exited keeps its overlays until gc).
impl Drop for Env {
    fn drop(&mut self) {
        if self.dir().join("pods").exists() {
            let _ = self.rkt(&["gc", "--grace-period=0s"]);
        }
    }
}

impl Env {
    fn new() -> Self {
        Env {
            tmp: tempfile::tempdir().unwrap(),
        }
    }
    fn dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }
    /// A host directory `name` in the test's scratch space holding `files` (name, content).
    fn host_dir(&self, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let d = self.tmp.path().join(name);
        std::fs::create_dir(&d).unwrap();
        for (f, content) in files {
            std::fs::write(d.join(f), content).unwrap();
        }
        d
    }
    fn rkt(&self, args: &[&str]) -> Output {
        stage1_util::rkt(&self.dir(), args)
    }
    fn stage1(&self) -> PathBuf {
        self.stage1_version(5)
    }
    /// The script stage1 declaring interface version `version`.
    fn stage1_version(&self, version: u32) -> PathBuf {
        let p = self.tmp.path().join(format!("stage1-sh-v{version}.aci"));
        if p.exists() {
            return p;
        }
        let run = RUN_SCRIPT.replace("@STATUS_DIR@", pod_abi::paths::STATUS_DIR_IN_STAGE1);
        script_stage1_version(
            &p,
            &format!("example.com/stage1-sh-v{version}"),
            version,
            &[
                ("run", run.as_bytes()),
                ("stop", STOP_SCRIPT.as_bytes()),
                ("gc", GC_SCRIPT.as_bytes()),
                ("enter", b"#!/bin/sh\nexit 0\n"),
            ],
        );
        p
    }
    fn image(&self, name: &str) -> PathBuf {
        let p = self
            .tmp
            .path()
            .join(format!("{}.aci", name.replace('/', "_")));
        let mut m = ImageManifest::new(AcIdentifier::new(name).unwrap());
        m.app = Some(App {
            exec: vec!["/bin/app".into()],
            user: "0".into(),
            group: "0".into(),
            ..Default::default()
        });
        let f = std::fs::File::create(&p).unwrap();
        let mut b = AciBuilder::new(f, Compression::Gzip, &m).unwrap();
        b.add_dir("/bin", 0o755).unwrap();
        b.add_file("/bin/app", 0o755, b"#!/bin/sh\nexit 0\n")
            .unwrap();
        b.add_dir("/etc", 0o755).unwrap();
        b.add_file("/etc/in-image", 0o644, b"lower").unwrap();
        b.finish().unwrap();
        p
    }
    fn s1flag(&self) -> String {
        format!("--stage1-path={}", self.stage1().display())
    }
    fn pod_dir(&self, state: &str, uuid: &str) -> PathBuf {
        self.dir().join("pods").join(state).join(uuid)
    }
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn mounts_under(dir: &Path) -> usize {
    let d = dir.to_string_lossy().to_string();
    String::from_utf8_lossy(&std::fs::read("/proc/self/mountinfo").unwrap())
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&d))
        .count()
}

/// Prints a SKIP line past the harness's output capture.
fn skip(test: &str, reason: &str) {
    use std::io::Write;
    // One write(2), so parallel tests cannot split the line.
    let line = format!("SKIP: {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn prepare_list_status_cat_manifest_rm() {
    let e = Env::new();
    let img = e.image("example.com/tools/app");
    let o = e.rkt(&[
        "prepare",
        &e.s1flag(),
        "--set-env=FOO=bar",
        img.to_str().unwrap(),
        "--user=7",
        "--",
        "a1",
    ]);
    assert_eq!(o.status.code(), Some(0));
    let uuid = out(&o).trim().to_string();
    assert!(
        uuid::Uuid::parse_str(&uuid).is_ok(),
        "stdout must be the UUID only: {:?}",
        out(&o)
    );
    let pd = e.pod_dir("prepared", &uuid);
    for f in [
        "pod",
        "pod-created",
        "stage1TreeStoreID",
        "stage1/manifest",
        "appsinfo/app/manifest",
        "appsinfo/app/treeStoreID",
    ] {
        assert!(pd.join(f).exists(), "{f} missing");
    }
    // No mounts at prepare time.
    assert_eq!(mounts_under(&pd), 0);
    let pm: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pd.join("pod")).unwrap()).unwrap();
    assert_eq!(pm["acVersion"], "0.8.11");
    assert_eq!(pm["apps"][0]["name"], "app");
    assert!(pm["apps"][0]["image"]["id"]
        .as_str()
        .unwrap()
        .starts_with("sha512-"));
    assert_eq!(pm["apps"][0]["app"]["user"], "7");
    assert_eq!(
        pm["apps"][0]["app"]["exec"],
        serde_json::json!(["/bin/app", "a1"])
    );
    assert!(pm["apps"][0]["app"]["environment"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "FOO" && v["value"] == "bar"));

    let o = e.rkt(&["status", &uuid[..8]]);
    assert_eq!(o.status.code(), Some(0));
    let s = out(&o);
    assert!(s.contains("state=prepared\n"), "{s}");
    assert!(s.contains("created="), "{s}");
    let o = e.rkt(&["status", "--format=json", &uuid]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["name"], uuid.as_str());
    assert_eq!(j["state"], "prepared");
    assert_eq!(j["app_names"], serde_json::json!(["app"]));

    let o = e.rkt(&["list"]);
    let l = out(&o);
    assert!(l.starts_with("UUID\t"), "{l}");
    assert!(
        l.contains(&uuid[..8]) && l.contains("prepared") && l.contains("example.com/tools/app"),
        "{l}"
    );
    let o = e.rkt(&["list", "--no-legend", "--full"]);
    assert!(out(&o).starts_with(&uuid), "{}", out(&o));
    let o = e.rkt(&["list", "--format=json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j[0]["name"], uuid.as_str());

    let o = e.rkt(&["cat-manifest", &uuid]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["acKind"], "PodManifest");

    let o = e.rkt(&["rm", &uuid]);
    assert_eq!(o.status.code(), Some(0));
    assert!(!pd.exists());
    let o = e.rkt(&["status", &uuid]);
    assert_eq!(o.status.code(), Some(pod_abi::exit::POD_STATE));
}

#[test]
fn usage_and_unknown_pod_exit_codes() {
    let e = Env::new();
    let o = e.rkt(&["run", "--no-such-flag", "x.aci"]);
    assert_eq!(o.status.code(), Some(pod_abi::exit::USAGE));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--no-such-flag"));
    let o = e.rkt(&["run", "x.aci", "--exec"]);
    assert_eq!(o.status.code(), Some(pod_abi::exit::USAGE));
    let o = e.rkt(&["prepare", "--interactive", "x.aci"]);
    assert_eq!(o.status.code(), Some(pod_abi::exit::USAGE));
    let o = e.rkt(&["status", "01234567-89ab-4cde-8f01-23456789abcd"]);
    assert_eq!(o.status.code(), Some(pod_abi::exit::POD_STATE));
    let o = e.rkt(&["rm", "0123"]);
    assert_eq!(o.status.code(), Some(pod_abi::exit::POD_STATE));
    let o = e.rkt(&["run-prepared", "0123"]);
    assert_eq!(o.status.code(), Some(pod_abi::exit::POD_STATE));
    let o = e.rkt(&["run", &e.s1flag(), "/no/such/image.aci"]);
    assert_eq!(o.status.code(), Some(pod_abi::exit::IMAGE_NOT_FOUND));
    let img = e.image("example.com/app");
    let o = e.rkt(&[
        "run",
        "--stage1-path=/no/such/stage1.aci",
        img.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(pod_abi::exit::IMAGE_NOT_FOUND));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/no/such/stage1.aci"));
    // A missing host volume source is a clear error, before any pod exists.
    let o = e.rkt(&[
        "prepare",
        &e.s1flag(),
        "--volume=v,kind=host,source=/no/such/dir",
        "--mount=volume=v,target=/v",
        img.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(pod_abi::exit::FAILURE));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
    assert!(std::fs::read_dir(e.dir().join("pods/prepared"))
        .unwrap()
        .next()
        .is_none());
    // A source that disappears after prepare is checked again when the pod starts.
    let gone = e.tmp.path().join("gone");
    std::fs::create_dir(&gone).unwrap();
    let o = e.rkt(&[
        "prepare",
        &e.s1flag(),
        &format!("--volume=v,kind=host,source={}", gone.display()),
        "--mount=volume=v,target=/v",
        img.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0));
    std::fs::remove_dir(&gone).unwrap();
    if !is_root() {
        skip(
            "usage_and_unknown_pod_exit_codes (volume part)",
            "needs root",
        );
        return;
    }
    // Starting it fails clearly; the pod ends exited, with the reason recorded.
    let uuid = out(&o).trim().to_string();
    let o = e.rkt(&["run-prepared", &uuid]);
    assert_eq!(o.status.code(), Some(pod_abi::exit::FAILURE));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        err.contains(gone.to_str().unwrap()) && err.contains("does not exist"),
        "{err}"
    );
    assert!(out(&e.rkt(&["status", &uuid])).contains("state=exited"));
    let failure = std::fs::read_to_string(e.pod_dir("run", &uuid).join("failure")).unwrap();
    assert!(failure.contains(gone.to_str().unwrap()), "{failure}");
    // A symlinked source is refused too.
    let link = e.tmp.path().join("link");
    std::os::unix::fs::symlink("/tmp", &link).unwrap();
    let o = e.rkt(&[
        "run",
        &e.s1flag(),
        &format!("--volume=v,kind=host,source={}", link.display()),
        "--mount=volume=v,target=/v",
        img.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(pod_abi::exit::FAILURE));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is a symlink"));
    assert_eq!(e.rkt(&["gc", "--grace-period=0s"]).status.code(), Some(0));
    assert_eq!(mounts_under(&e.dir()), 0);
}

/// rkt's stage1 contract: `--insecure-options` reaches the stage1 as `--disable-*` flags from
/// interface version 3 on, and `--ipc` from version 6 on (this project's stage1s read both
/// from the plan too).
#[test]
fn insecure_options_and_ipc_reach_the_stage1_by_interface_version() {
    let test = "insecure_options_and_ipc_reach_the_stage1_by_interface_version";
    if !is_root() {
        skip(test, "needs root");
        return;
    }
    let e = Env::new();
    let img = e.image("example.com/app");
    let uuid_file = e.tmp.path().join("uuid");
    let args_of = |version: u32, insecure: &str| {
        let o = e.rkt(&[
            "run",
            &format!("--stage1-path={}", e.stage1_version(version).display()),
            insecure,
            "--ipc=parent",
            "--hostname=h",
            &format!("--uuid-file-save={}", uuid_file.display()),
            img.to_str().unwrap(),
        ]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let uuid = std::fs::read_to_string(&uuid_file).unwrap();
        let args = std::fs::read_to_string(e.pod_dir("run", &uuid).join("args")).unwrap();
        (args.trim().to_string(), uuid)
    };
    let (args, uuid) = args_of(5, "--insecure-options=image,seccomp,paths");
    assert_eq!(
        args,
        format!("--net=default --hostname=h --disable-paths --disable-seccomp {uuid}")
    );
    let (args, uuid) = args_of(6, "--insecure-options=image,capabilities");
    assert_eq!(
        args,
        format!(
            "--net=default --hostname=h --disable-capabilities-restriction --ipc=parent {uuid}"
        )
    );
}

#[test]
fn run_mounts_overlays_writes_plan_and_propagates_exit_code() {
    if !is_root() {
        skip(
            "run_mounts_overlays_writes_plan_and_propagates_exit_code",
            "needs root",
        );
        return;
    }
    let e = Env::new();
    let img = e.image("example.com/app");
    let host = e.host_dir("hostvol", &[("from-host", b"x")]);
    let uuid_file = e.tmp.path().join("uuid");
    let o = e.rkt(&[
        "run",
        &e.s1flag(),
        &format!("--uuid-file-save={}", uuid_file.display()),
        "--volume=hv,kind=host,source=".to_string().as_str(),
    ]);
    assert_eq!(o.status.code(), Some(pod_abi::exit::USAGE));
    let o = e.rkt(&[
        "run",
        &e.s1flag(),
        &format!("--uuid-file-save={}", uuid_file.display()),
        &format!(
            "--volume=hv,kind=host,source={},readOnly=true",
            host.display()
        ),
        "--volume=ev,kind=empty,mode=0700,uid=5",
        "--mount=volume=hv,target=/mnt/host",
        "--hostname=podhost",
        img.to_str().unwrap(),
        "--mount=volume=ev,target=/shared",
        "--",
        "--exit",
        "3",
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "rkt run must exit with the pod's status"
    );
    let uuid = std::fs::read_to_string(&uuid_file).unwrap();
    let pd = e.pod_dir("run", &uuid);
    assert_eq!(
        std::fs::read_to_string(pd.join("cwd")).unwrap().trim(),
        pd.to_str().unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(pd.join("args")).unwrap().trim(),
        format!("--net=default --hostname=podhost {uuid}")
    );
    assert_eq!(
        std::fs::read_to_string(pd.join("lockfd-target"))
            .unwrap()
            .trim(),
        pd.to_str().unwrap()
    );
    assert!(pd.join("stage1-mounted").exists());
    // Overlays: app rootfs shows the image, writes go to the pod's upper dir.
    let rootfs = PodPaths::new(&pd).app_rootfs("app");
    assert_eq!(
        std::fs::read(rootfs.join("etc/in-image")).unwrap(),
        b"lower"
    );
    assert!(PodPaths::new(&pd).app_manifest("app").exists());
    // Volumes are bind-mounted into the app rootfs by stage0.
    assert!(rootfs.join("mnt/host/from-host").exists());
    assert!(
        std::fs::write(rootfs.join("mnt/host/nope"), b"x").is_err(),
        "read-only volume"
    );
    std::fs::write(rootfs.join("shared/f"), b"x").unwrap();
    assert!(pd.join("sharedVolumes/ev/f").exists());
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(pd.join("sharedVolumes/ev")).unwrap();
    assert_eq!((md.mode() & 0o777, md.uid()), (0o700, 5));
    // The plan.
    let plan = pod_abi::plan::Plan::read(&PodPaths::new(&pd).plan()).unwrap();
    assert_eq!(plan.hostname, "podhost");
    assert_eq!(plan.apps[0].exec, vec!["/bin/app", "--exit", "3"]);
    assert_eq!(
        plan.apps[0].env[1],
        ("AC_APP_NAME".to_string(), "app".to_string())
    );
    assert_eq!(plan.apps[0].capabilities.len(), 14);
    assert_eq!(plan.apps[0].mounts.len(), 2);
    // Status after exit.
    let o = e.rkt(&["status", &uuid]);
    let s = out(&o);
    assert!(
        s.contains("state=exited\n") && s.contains("exited=true") && s.contains("app-app=3"),
        "{s}"
    );
    assert!(mounts_under(&pd) >= 4);
    // gc: mark, then sweep with no grace period; mounts and directory gone; gc entrypoint ran.
    let o = e.rkt(&["gc", "--mark-only"]);
    assert_eq!(o.status.code(), Some(0));
    let eg = e.pod_dir("exited-garbage", &uuid);
    assert!(eg.exists());
    let o = e.rkt(&["status", &uuid]);
    assert!(out(&o).contains("state=exited garbage"), "{}", out(&o));
    let o = e.rkt(&["gc", "--grace-period=0s"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(!eg.exists());
    assert_eq!(mounts_under(&e.dir().join("pods")), 0);
    assert!(e.dir().join("pods").join(format!("gc-ran-{uuid}")).exists());
}

/// `rkt gc` of several pods at once (one batch): every pod's mounts go, stacked ones too, and
/// the removal never reaches through a mount: a writable host volume's files survive, as does
/// a directory the attacker stacked on a pod's volume mount point after the pod ran.
#[test]
fn gc_of_many_pods_unmounts_before_removing_and_spares_volume_sources() {
    if !is_root() {
        skip(
            "gc_of_many_pods_unmounts_before_removing_and_spares_volume_sources",
            "needs root",
        );
        return;
    }
    let e = Env::new();
    let img = e.image("example.com/app");
    let host = e.host_dir("hostvol", &[("keep", b"host data")]);
    let other = e.host_dir("other", &[("keep-too", b"more")]);
    let mut pods = Vec::new();
    for i in 0..3 {
        let uuid_file = e.tmp.path().join(format!("uuid{i}"));
        let o = e.rkt(&[
            "run",
            &e.s1flag(),
            &format!("--uuid-file-save={}", uuid_file.display()),
            &format!("--volume=hv,kind=host,source={}", host.display()),
            "--mount=volume=hv,target=/mnt/host",
            img.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", out(&o));
        pods.push(std::fs::read_to_string(&uuid_file).unwrap());
    }
    // Stack a second bind mount on the first pod's volume mount point.
    let target = PodPaths::new(e.pod_dir("run", &pods[0]))
        .app_rootfs("app")
        .join("mnt/host");
    assert!(target.join("keep").exists());
    nix::mount::mount(
        Some(&other),
        &target,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    assert!(target.join("keep-too").exists());
    assert!(mounts_under(&e.dir().join("pods")) >= 10);
    let o = e.rkt(&["gc", "--grace-period=0s"]);
    assert_eq!(o.status.code(), Some(0), "{}", out(&o));
    assert_eq!(mounts_under(&e.dir().join("pods")), 0);
    for u in &pods {
        assert!(!e.pod_dir("exited-garbage", u).exists(), "pod {u} left");
    }
    assert_eq!(std::fs::read(host.join("keep")).unwrap(), b"host data");
    assert_eq!(std::fs::read(other.join("keep-too")).unwrap(), b"more");
}

#[test]
fn run_prepared_and_stop_a_running_pod() {
    if !is_root() {
        skip("run_prepared_and_stop_a_running_pod", "needs root");
        return;
    }
    let e = Env::new();
    let img = e.image("example.com/app");
    let o = e.rkt(&["prepare", "--quiet", &e.s1flag(), img.to_str().unwrap()]);
    let uuid = out(&o).trim().to_string();
    assert!(
        o.stderr.is_empty(),
        "--quiet: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Make the fake stage1 keep running: the marker lives in the stage1 rootfs, which only
    // exists once run-prepared mounts it, so ask for it through the stage1 upper dir.
    let pd = e.pod_dir("prepared", &uuid);
    let tree = std::fs::read_to_string(pd.join("stage1TreeStoreID")).unwrap();
    let upper = pd.join("overlay").join(tree.trim()).join("upper/rkt");
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::write(upper.join("sleep"), b"").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rkt"))
        .arg(format!("--dir={}", e.dir().display()))
        .args(["run-prepared", "--hostname=h", &uuid])
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let o = e.rkt(&["status", &uuid]);
        if out(&o).contains("state=running")
            && out(&o).contains("pid=")
            && !out(&o).contains("pid=-1")
        {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "pod never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A running pod cannot be removed or run again.
    assert_eq!(
        e.rkt(&["rm", &uuid]).status.code(),
        Some(pod_abi::exit::POD_STATE)
    );
    assert_eq!(
        e.rkt(&["run-prepared", &uuid]).status.code(),
        Some(pod_abi::exit::POD_STATE)
    );
    let o = e.rkt(&["stop", &uuid]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(out(&o).trim(), format!("{uuid:?}"));
    let _ = child.wait().unwrap();
    let o = e.rkt(&["status", "--wait=5s", &uuid]);
    assert!(out(&o).contains("state=exited"), "{}", out(&o));
    let pd = e.pod_dir("run", &uuid);
    assert_eq!(
        std::fs::read_to_string(pd.join("stop-args"))
            .unwrap()
            .trim(),
        uuid
    );
    let o = e.rkt(&["rm", &uuid]);
    assert_eq!(o.status.code(), Some(0));
    assert!(!pd.exists());
    assert_eq!(mounts_under(&e.dir().join("pods")), 0);
}

#[test]
fn relative_data_dir_works() {
    if !is_root() {
        skip("relative_data_dir_works", "needs root");
        return;
    }
    let e = Env::new();
    let img = e.image("example.com/app");
    let o = Command::new(env!("CARGO_BIN_EXE_rkt"))
        .current_dir(e.tmp.path())
        .args([
            "--dir=data",
            "--insecure-options=image",
            "run",
            &e.s1flag(),
            img.to_str().unwrap(),
            "--",
            "--exit",
            "5",
        ])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = e.rkt(&["gc", "--grace-period=0s"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(mounts_under(&e.dir()), 0);
}

/// Bytes of regular files under `dir` (not following symlinks, not crossing mounts).
fn file_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::symlink_metadata(dir).map(|m| m.dev()).unwrap_or(0);
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.dev() != dev {
                continue;
            }
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() {
                total += m.len();
            }
        }
    }
    total
}

#[test]
fn image_contents_are_not_copied_into_the_pod() {
    if !is_root() {
        skip("image_contents_are_not_copied_into_the_pod", "needs root");
        return;
    }
    const BIG: usize = 8 << 20;
    let e = Env::new();
    let p = e.tmp.path().join("big.aci");
    let mut m = ImageManifest::new(AcIdentifier::new("example.com/big").unwrap());
    m.app = Some(App {
        exec: vec!["/bin/app".into()],
        user: "0".into(),
        group: "0".into(),
        ..Default::default()
    });
    let f = std::fs::File::create(&p).unwrap();
    let mut b = AciBuilder::new(f, Compression::Gzip, &m).unwrap();
    b.add_dir("/data", 0o755).unwrap();
    b.add_file("/data/blob", 0o644, &vec![7u8; BIG]).unwrap();
    b.finish().unwrap();
    let uuid_file = e.tmp.path().join("uuid");
    let o = e.rkt(&[
        "run",
        &e.s1flag(),
        &format!("--uuid-file-save={}", uuid_file.display()),
        p.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let uuid = std::fs::read_to_string(&uuid_file).unwrap();
    let pd = e.pod_dir("run", &uuid);
    let blob = PodPaths::new(&pd).app_rootfs("big").join("data/blob");
    assert_eq!(std::fs::metadata(&blob).unwrap().len(), BIG as u64);
    // The pod directory itself (overlay upper dirs, manifests) holds a few KiB, not the image.
    let own = file_bytes(&pd);
    assert!(own < 1 << 20, "pod directory holds {own} bytes of files");
    assert_eq!(e.rkt(&["gc", "--grace-period=0s"]).status.code(), Some(0));
}

impl Env {
    /// Runs rkt with stdout a pipe whose reader is already closed (as `rkt ... | head -0`);
    /// returns the exit status and stderr.
    fn rkt_closed_stdout(&self, args: &[&str]) -> (std::process::ExitStatus, String) {
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(r);
        let o = Command::new(env!("CARGO_BIN_EXE_rkt"))
            .arg(format!("--dir={}", self.dir().display()))
            .arg("--insecure-options=image")
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::from(w))
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        (o.status, String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

#[test]
fn closed_stdout_ends_rkt_quietly_by_sigpipe() {
    use std::os::unix::process::ExitStatusExt;
    let e = Env::new();
    let img = e.image("example.com/epipe");
    let o = e.rkt(&["prepare", &e.s1flag(), img.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let uuid = out(&o).trim().to_string();
    let img = img.to_str().unwrap();
    for args in [
        vec!["status", uuid.as_str()],
        vec!["list"],
        vec!["version"],
        vec!["fetch", img],
        vec!["cat-manifest", uuid.as_str()],
        vec!["image", "list"],
    ] {
        let (status, err) = e.rkt_closed_stdout(&args);
        assert_eq!(
            status.signal(),
            Some(libc::SIGPIPE),
            "rkt {args:?}: {status:?}, stderr: {err}"
        );
        assert!(!err.contains("panicked"), "rkt {args:?}: {err}");
        assert!(!err.contains("Broken pipe"), "rkt {args:?}: {err}");
    }
}

#[test]
fn duration_overflow_is_a_usage_error() {
    let e = Env::new();
    let big = "18446744073709551615s";
    for args in [
        vec!["gc".to_string(), format!("--grace-period={big}")],
        vec!["gc".to_string(), format!("--expire-prepared={big}")],
        vec!["gc".to_string(), "--grace-period=2562048h".to_string()],
        vec![
            "status".to_string(),
            format!("--wait={big}"),
            "0123abcd".to_string(),
        ],
        vec![
            "image".to_string(),
            "gc".to_string(),
            format!("--grace-period={big}"),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = e.rkt(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(pod_abi::exit::USAGE),
            "rkt {args:?}: {err}"
        );
        assert!(err.contains("invalid duration"), "rkt {args:?}: {err}");
        assert!(!err.contains("panicked"), "rkt {args:?}: {err}");
    }
    // The largest Go duration still works.
    let o = e.rkt(&["gc", "--grace-period=2562047h47m16.854775807s"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
