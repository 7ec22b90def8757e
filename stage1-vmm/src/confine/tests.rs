//! One test per thread kind (and the main thread): a thread started through
//! [`crate::threads::spawn`] with confinement on makes a system call its filter forbids; the
//! process must die at that call with status 125 and the reason on stderr and in the `failure`
//! file of the report directory. Each runs in a child process (this test binary), as the panic
//! policy tests do.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use super::*;
use crate::devices::virtio::{
    TYPE_BALLOON, TYPE_BLOCK, TYPE_CONSOLE, TYPE_FS, TYPE_NET, TYPE_RNG, TYPE_VSOCK,
};

/// Names the case the child runs.
const CASE_ENV: &str = "RKT_VMM_TEST_SECCOMP_CASE";
/// The child's report directory.
const DIR_ENV: &str = "RKT_VMM_TEST_SECCOMP_DIR";

/// The forbidden calls the cases make.
#[derive(Debug, Clone, Copy)]
enum Forbidden {
    /// `openat(AT_FDCWD, "/etc/hostname", O_RDONLY)`: a file by name.
    OpenByName,
    /// `socket(AF_INET, SOCK_STREAM, 0)`.
    Socket,
    /// `ioctl(0, TIOCSTI, ..)`: an ioctl outside the allowed requests.
    Ioctl,
    /// `execve("/bin/true", ..)`.
    Exec,
}

impl Forbidden {
    fn nr(self) -> i64 {
        match self {
            Forbidden::OpenByName => libc::SYS_openat,
            Forbidden::Socket => libc::SYS_socket,
            Forbidden::Ioctl => libc::SYS_ioctl,
            Forbidden::Exec => libc::SYS_execve,
        }
    }

    fn call(self) {
        // SAFETY: each call gets valid arguments (a NUL-terminated path, a byte to push); none
        // of them is expected to return under the filter.
        unsafe {
            match self {
                Forbidden::OpenByName => {
                    libc::syscall(
                        libc::SYS_openat,
                        libc::AT_FDCWD,
                        c"/etc/hostname".as_ptr(),
                        libc::O_RDONLY,
                    );
                }
                Forbidden::Socket => {
                    libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0);
                }
                Forbidden::Ioctl => {
                    let b: u8 = 0;
                    libc::syscall(libc::SYS_ioctl, 0, libc::TIOCSTI, &b as *const u8);
                }
                Forbidden::Exec => {
                    let argv = [c"true".as_ptr(), std::ptr::null()];
                    let envp = [std::ptr::null::<libc::c_char>()];
                    libc::syscall(
                        libc::SYS_execve,
                        c"/bin/true".as_ptr(),
                        argv.as_ptr(),
                        envp.as_ptr(),
                    );
                }
            }
        }
    }
}

/// The main thread's two profiles.
#[derive(Debug, Clone, Copy)]
enum Main {
    /// A pod's (or any VM's).
    Plain,
    /// A snapshot-making VM's.
    Snapshot,
}

impl Main {
    fn profile(self) -> Profile {
        match self {
            Main::Plain => Profile::Main,
            Main::Snapshot => Profile::SnapshotMain,
        }
    }
}

/// The cases: (name, thread kind or `Err(main thread profile)`, forbidden call).
const CASES: [(&str, Result<ThreadKind, Main>, Forbidden); 15] = [
    ("vcpu", Ok(ThreadKind::Vcpu), Forbidden::Ioctl),
    // TIOCSTI: the save ioctls are KVM's only.
    (
        "snapshot-vcpu",
        Ok(ThreadKind::SnapshotVcpu),
        Forbidden::Ioctl,
    ),
    (
        "fs",
        Ok(ThreadKind::DeviceWorker(TYPE_FS)),
        Forbidden::Socket,
    ),
    (
        "console-worker",
        Ok(ThreadKind::DeviceWorker(TYPE_CONSOLE)),
        Forbidden::OpenByName,
    ),
    (
        "blk",
        Ok(ThreadKind::DeviceWorker(TYPE_BLOCK)),
        Forbidden::OpenByName,
    ),
    (
        "net",
        Ok(ThreadKind::DeviceWorker(TYPE_NET)),
        Forbidden::Socket,
    ),
    // AF_INET: the vsock worker may create AF_UNIX sockets only.
    (
        "vsock",
        Ok(ThreadKind::DeviceWorker(TYPE_VSOCK)),
        Forbidden::Socket,
    ),
    (
        "balloon",
        Ok(ThreadKind::DeviceWorker(TYPE_BALLOON)),
        Forbidden::OpenByName,
    ),
    (
        "rng",
        Ok(ThreadKind::DeviceWorker(TYPE_RNG)),
        Forbidden::OpenByName,
    ),
    ("console", Ok(ThreadKind::Console), Forbidden::OpenByName),
    ("signals", Ok(ThreadKind::Signals), Forbidden::Socket),
    ("stdin", Ok(ThreadKind::Stdin), Forbidden::OpenByName),
    ("sampler", Ok(ThreadKind::Sampler), Forbidden::Ioctl),
    ("main", Err(Main::Plain), Forbidden::Exec),
    // A file by name outside the snapshot directory's calls: openat is allowed, so a socket.
    ("snapshot-main", Err(Main::Snapshot), Forbidden::Socket),
];

fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments.
    unsafe { libc::geteuid() == 0 }
}

/// The child: confines this process (report directory from [`DIR_ENV`]), then makes the case's
/// forbidden call on a thread of its kind (or on this thread, confined as the main thread).
#[test]
fn seccomp_child() {
    let Some(case) = std::env::var_os(CASE_ENV) else {
        return;
    };
    let Some(&(_, kind, forbidden)) = CASES.iter().find(|c| case == c.0) else {
        panic!("unknown case {case:?}");
    };
    let dir = std::env::var_os(DIR_ENV).unwrap_or_else(|| panic!("{DIR_ENV} unset"));
    let mode = init(Path::new(&dir)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mode, Mode::On);
    match kind {
        Ok(kind) => {
            let h = crate::threads::spawn(kind, "confined", move || {
                forbidden.call();
                println!("THREAD SURVIVED");
            })
            .unwrap_or_else(|e| panic!("{e}"));
            let _ = h.join();
        }
        Err(main) => {
            match main {
                Main::Plain => crate::threads::on_main_ready(),
                Main::Snapshot => crate::threads::on_main_ready_snapshot(),
            }
            forbidden.call();
        }
    }
    println!("PROCESS SURVIVED");
}

/// Runs case `name` in a child and checks that it died at the forbidden call with the reason.
fn expect_killed(name: &str) {
    if !is_root() {
        println!("SKIP: seccomp case {name}: dropping capabilities needs root");
        return;
    }
    let Some(&(_, kind, forbidden)) = CASES.iter().find(|c| c.0 == name) else {
        panic!("unknown case {name}");
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(exe)
        .args([
            "confine::tests::seccomp_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CASE_ENV, name)
        .env(DIR_ENV, dir.path())
        .env_remove(SECCOMP_ENV)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let profile = kind.map_or_else(Main::profile, profile_of);
    let nr = forbidden.nr();
    let name_part = filters::syscall_name(nr).map_or(String::new(), |n| format!(" ({n})"));
    let want = format!(
        "seccomp: thread {} made forbidden syscall {nr}{name_part}",
        profile.name()
    );
    assert_eq!(
        (out.status.code(), out.status.signal()),
        (Some(pod_abi::exit::STAGE1_FAILED), None),
        "{name}: status {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert!(
        stderr.contains(&format!("stage1-vmm: {want}\n")),
        "{stderr}"
    );
    assert!(!stdout.contains("SURVIVED"), "{stdout}");
    let failure = std::fs::read_to_string(dir.path().join("failure")).unwrap_or_default();
    assert_eq!(failure, format!("{want}\n"));
}

#[test]
fn a_vcpu_thread_dies_on_a_forbidden_ioctl() {
    expect_killed("vcpu");
}

#[test]
fn the_virtio_fs_worker_dies_on_socket() {
    expect_killed("fs");
}

#[test]
fn the_virtio_console_worker_dies_on_open_by_name() {
    expect_killed("console-worker");
}

#[test]
fn the_virtio_blk_worker_dies_on_open_by_name() {
    expect_killed("blk");
}

#[test]
fn the_virtio_net_worker_dies_on_socket() {
    expect_killed("net");
}

#[test]
fn the_virtio_vsock_worker_dies_on_an_inet_socket() {
    expect_killed("vsock");
}

#[test]
fn the_profile_sampler_dies_on_an_ioctl() {
    expect_killed("sampler");
}

#[test]
fn a_console_writer_dies_on_open_by_name() {
    expect_killed("console");
}

#[test]
fn the_signal_thread_dies_on_socket() {
    expect_killed("signals");
}

#[test]
fn the_stdin_thread_dies_on_open_by_name() {
    expect_killed("stdin");
}

#[test]
fn the_balloon_worker_dies_on_open_by_name() {
    expect_killed("balloon");
}

#[test]
fn the_rng_worker_dies_on_open_by_name() {
    expect_killed("rng");
}

#[test]
fn the_main_thread_dies_on_exec() {
    expect_killed("main");
}

#[test]
fn a_snapshot_vcpu_thread_dies_on_a_forbidden_ioctl() {
    expect_killed("snapshot-vcpu");
}

#[test]
fn a_snapshot_main_thread_dies_on_socket() {
    expect_killed("snapshot-main");
}

#[test]
fn every_thread_kind_has_a_case() {
    let kinds: Vec<Profile> = CASES
        .iter()
        .map(|c| c.1.map_or_else(Main::profile, profile_of))
        .collect();
    for p in Profile::ALL {
        assert!(kinds.contains(&p), "no case for {p:?}");
    }
}

/// Executable memory is refused to every confined thread (checked on a vCPU).
#[test]
fn a_vcpu_thread_dies_on_executable_mmap() {
    if !is_root() {
        println!("SKIP: a_vcpu_thread_dies_on_executable_mmap: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(exe)
        .args([
            "confine::tests::exec_mmap_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CASE_ENV, "mmap")
        .env(DIR_ENV, dir.path())
        .env_remove(SECCOMP_ENV)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(pod_abi::exit::STAGE1_FAILED),
        "{stderr}"
    );
    let failure = std::fs::read_to_string(dir.path().join("failure")).unwrap_or_default();
    assert_eq!(
        failure,
        format!(
            "seccomp: thread vcpu made forbidden syscall {} (mmap)\n",
            libc::SYS_mmap
        )
    );
}

#[test]
fn exec_mmap_child() {
    if std::env::var_os(CASE_ENV).is_none_or(|c| c != "mmap") {
        return;
    }
    let dir = std::env::var_os(DIR_ENV).unwrap_or_else(|| panic!("{DIR_ENV} unset"));
    init(Path::new(&dir)).unwrap_or_else(|e| panic!("{e}"));
    let h = crate::threads::spawn(ThreadKind::Vcpu, "confined", || {
        // SAFETY: an anonymous mapping request; the filter stops it before the kernel sees it.
        unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        println!("THREAD SURVIVED");
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let _ = h.join();
    println!("PROCESS SURVIVED");
}

/// Filter cost per system call (run by hand: `cargo test -p stage1-vmm --release --lib
/// filter_overhead -- --ignored --nocapture`): a vCPU-profile thread writes an eventfd (a call
/// that thread makes) 200 000 times, with and without its filter; prints ns per call.
#[test]
#[ignore]
fn filter_overhead() {
    if std::env::var_os(CASE_ENV).is_none_or(|c| c != "overhead") {
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
        for filtered in ["0", "1"] {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let out = std::process::Command::new(&exe)
                .args([
                    "confine::tests::filter_overhead",
                    "--exact",
                    "--nocapture",
                    "--ignored",
                    "--test-threads=1",
                ])
                .env(CASE_ENV, "overhead")
                .env(DIR_ENV, dir.path())
                .env(SECCOMP_ENV, if filtered == "1" { "1" } else { "0" })
                .output()
                .unwrap_or_else(|e| panic!("{e}"));
            let so = String::from_utf8_lossy(&out.stdout);
            for l in so
                .lines()
                .filter_map(|l| l.find("OVERHEAD").and_then(|i| l.get(i..)))
            {
                println!("{l}");
            }
        }
        return;
    }
    let dir = std::env::var_os(DIR_ENV).unwrap_or_else(|| panic!("{DIR_ENV} unset"));
    let mode = init(Path::new(&dir)).unwrap_or_else(|e| panic!("{e}"));
    let h = crate::threads::spawn(ThreadKind::Vcpu, "bench", move || {
        let evt = vmm_sys_util::eventfd::EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK)
            .unwrap_or_else(|e| panic!("{e}"));
        const N: u32 = 200_000;
        let t = std::time::Instant::now();
        for _ in 0..N {
            let _ = evt.write(1);
        }
        let ns = t.elapsed().as_nanos() / u128::from(N);
        println!("OVERHEAD mode {mode:?}: {ns} ns per eventfd write on a vcpu thread");
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let _ = h.join();
}
