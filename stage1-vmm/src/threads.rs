//! The one way the VMM starts a thread: [`spawn`] with a [`ThreadKind`].
//!
//! Every thread of the VMM process besides the main one is started here (vCPUs, device workers,
//! console writers, the signal thread and the interactive stdin thread), so this is the single
//! place where per-thread confinement goes: [`on_thread_start`] runs first on the new thread,
//! before its body, and installs the kind's capability sets and seccomp filter
//! ([`crate::confine`]); [`on_main_ready`] does the same for the main thread once it has started
//! every other thread.
//!
//! It is also where the panic policy is enforced (see docs/vmm.md, "Panics"): a panic on any
//! spawned thread ends the whole process with `abort`, as the release profile's
//! `panic = "abort"` does. Under unwinding builds (tests, debug) [`spawn`] catches the unwind
//! and aborts, so tests observe what release does: the panic hook runs, then SIGABRT.

use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::thread::{Builder, JoinHandle};

/// What a thread does; selects its confinement (seccomp filter, capabilities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    /// Runs `KVM_RUN` for one vCPU and the device accesses of its exits.
    Vcpu,
    /// A vCPU of a snapshot-making VM (`SnapshotMode::Make`, never a pod's): as `Vcpu`, and it
    /// reads its own KVM state when the guest asks for the snapshot.
    SnapshotVcpu,
    /// The worker of one virtio device, by virtio device type (`TYPE_FS`, `TYPE_CONSOLE`, ...):
    /// virtio-fs needs file-system calls the others must not have.
    DeviceWorker(u32),
    /// Drains a serial port's output queue into its host sink (COM1 console, COM2 channel).
    Console,
    /// Turns the pod's stop signals into `stop` lines on COM2 and ends an overdue VM.
    Signals,
    /// Copies an interactive pod's stdin to the guest and watches for the escape sequence.
    Stdin,
    /// Kicks the vCPU threads to sample their guests (`RKT_VMM_PROFILE`, [`crate::profile`]).
    Sampler,
}

/// Starts `f` on a new thread named `name` (visible in `ps -L` and panic messages) of `kind`.
///
/// The thread first runs [`on_thread_start`], then `f`. A panic in `f` aborts the process.
pub fn spawn<F, T>(kind: ThreadKind, name: impl Into<String>, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Builder::new().name(name.into()).spawn(move || {
        on_thread_start(kind);
        match panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(v) => v,
            // The panic hook has already reported it (and, in a pod, recorded the failure).
            Err(_) => std::process::abort(),
        }
    })
}

/// Runs on every new thread before its body: confines it as a thread of `kind` (capability sets,
/// then the seccomp filter; see [`crate::confine`]; nothing when confinement is off). A thread
/// whose confinement cannot be installed ends the process, never runs unconfined.
pub fn on_thread_start(kind: ThreadKind) {
    // SAFETY: gettid takes no arguments.
    let tid = unsafe { libc::gettid() };
    log::debug!("thread start: {kind:?} tid {tid}");
    crate::confine::thread(kind);
}

/// Runs on the main thread once it has started every other thread (a seccomp filter is
/// inherited by the threads its owner creates later): confines it with the main profile.
pub fn on_main_ready() {
    crate::confine::main_thread();
}

/// As [`on_main_ready`], for the main thread of a snapshot-making VM (it saves the VM).
pub fn on_main_ready_snapshot() {
    crate::confine::snapshot_main_thread();
}

/// Runs test `test` (full path) of this test binary in a child process with `env`=1 set;
/// returns its output. For tests that must observe a process dying (the panic policy).
#[cfg(test)]
pub(crate) fn run_test_in_child(test: &str, env: &str) -> std::process::Output {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    std::process::Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(env, "1")
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts that a child from [`run_test_in_child`] died of SIGABRT, printed `message` (the
/// panic) on stderr and never printed `survivor` on stdout.
#[cfg(test)]
pub(crate) fn assert_aborted(out: &std::process::Output, message: &str, survivor: &str) {
    use std::os::unix::process::ExitStatusExt;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "status {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert!(stderr.contains(message), "{stderr}");
    assert!(!stdout.contains(survivor), "{stdout}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the child process of [`a_panicking_thread_aborts_the_process`].
    const CHILD_ENV: &str = "RKT_VMM_TEST_PANIC_CHILD";

    #[test]
    fn spawn_runs_the_body_and_returns_its_value() {
        let h = spawn(ThreadKind::Console, "test-thread", || {
            std::thread::current().name().map(str::to_string)
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            h.join().unwrap_or_else(|_| panic!("joined")),
            Some("test-thread".into())
        );
    }

    /// The child: a thread panics while the main thread waits for it. Under the abort policy
    /// the main thread never gets to print its marker.
    #[test]
    fn panicking_thread_child() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        let h = spawn(ThreadKind::Vcpu, "panicky", || {
            panic!("thread bug");
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let _ = h.join();
        println!("MAIN THREAD SURVIVED");
    }

    #[test]
    fn a_panicking_thread_aborts_the_process() {
        let out = run_test_in_child("threads::tests::panicking_thread_child", CHILD_ENV);
        assert_aborted(&out, "thread bug", "MAIN THREAD SURVIVED");
    }
}
