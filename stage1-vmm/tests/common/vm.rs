//! A guest-Linux VM on its own thread, confined as in a pod, and waiting for its console.

use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stage1_vmm::{SerialBackend, VmConfig, VmOutcome, Vmm};

use super::SharedBuf;

/// `confine::init` once per process (its filters and report descriptor are process-wide);
/// returns the report directory. Kept: a confined thread may not list a directory to remove it.
pub fn confine_once() -> PathBuf {
    static REPORT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    REPORT
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("report dir").keep();
            stage1_vmm::confine::init(&dir).expect("confine");
            dir
        })
        .clone()
}

/// Runs `cfg` on its own thread with COM1 into `console`, confined as in a pod (seccomp and
/// capabilities per thread) in builds without debug assertions: with them, std checks every
/// descriptor it closes with fcntl(F_GETFD), which no worker or vCPU filter allows (pods run
/// release builds). The thread returns the VM's outcome and the confinement's failure report.
pub fn spawn_vm(
    cfg: VmConfig,
    console: SharedBuf,
) -> JoinHandle<(Result<VmOutcome, String>, String)> {
    let confined = !cfg!(debug_assertions);
    std::thread::spawn(move || {
        let report = if confined {
            confine_once()
        } else {
            tempfile::tempdir().expect("report dir").keep()
        };
        let vmm = Vmm::new(
            &cfg,
            SerialBackend {
                out: Box::new(console),
                input: None,
            },
        )
        .expect("vmm");
        let outcome = vmm.run().map(|(o, _)| o);
        let failure = std::fs::read_to_string(report.join("failure")).unwrap_or_default();
        (outcome.map_err(|e| e.to_string()), failure)
    })
}

/// Whether `what` appears on `buf` before `deadline` (checked every 20 ms).
pub fn wait_for(buf: &SharedBuf, what: &str, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        if buf.text().contains(what) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The test init's vsock greeting port on the host.
pub const GREETING_PORT: u32 = 5678;

/// The host end of the test init's greeting: listens for host port [`GREETING_PORT`] in the
/// vsock socket directory `dir`, reads the guest's line, answers `hello-from-host`, and returns
/// the line it read.
pub fn answer_guest_greeting(dir: &std::path::Path) -> JoinHandle<String> {
    use std::io::{BufRead, BufReader, Write};
    let l = std::os::unix::net::UnixListener::bind(
        dir.join(pod_abi::vsock::listener_name(GREETING_PORT)),
    )
    .expect("bind the greeting port");
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept the guest");
        let mut line = String::new();
        BufReader::new(s.try_clone().expect("clone"))
            .read_line(&mut line)
            .expect("read");
        s.write_all(b"hello-from-host\n").expect("write");
        line
    })
}
