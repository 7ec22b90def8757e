//! Guest-Linux vsock, end to end at the VMM level: a VM with the virtio-vsock device
//! (`VmConfig.vsock`, its sockets in a temporary directory standing in for the pod directory)
//! boots the project's kernel with the test init in `rkt_test=vsock-echo` mode (echo server on
//! vsock port 1234, see tests/guest/init.rs). The host side:
//! - connects through `vsock.sock` with `pod_abi::vsock::connect`, sends 64 MiB and reads it
//!   back byte-exact (prints `VSOCK_THROUGHPUT_MBPS <x>`, both directions at once);
//! - serves the guest's connection to host port 5678 on `vsock.sock_5678`;
//! - sees the guest's connection to port 5679, where nobody listens, refused;
//! - makes 100 connections in a row and checks that the VMM (this process) holds no more
//!   descriptors than before.
//!
//! A flood of malformed packets is covered without a guest, through the queues
//! (`devices::virtio::vsock::tests::random_garbage_never_panics`, `bad_packets_...`).
//!
//! The VMM runs confined (seccomp and capabilities per thread, the vsock worker on its own
//! profile) when built without debug assertions, as linux_net.rs documents:
//! `cargo test --config 'profile.dev.debug-assertions=false' -p stage1-vmm --test linux_vsock
//! --no-run`, then run the binary under ci/nested-kvm. Needs a KVM that boots Linux (else
//! `SKIP`) and root (for the confinement).

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use common::vm::{spawn_vm, wait_for};
use common::{linux_kvm_or_skip, test_kernel, SharedBuf};
use pod_abi::vsock::connect;
use stage1_vmm::{VmConfig, VmOutcome, VsockConfig};

/// Bytes sent through the echo and back.
const BULK: usize = 64 << 20;

fn can_run(name: &str) -> bool {
    if !linux_kvm_or_skip(name) {
        return false;
    }
    // SAFETY: geteuid takes no arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: {name}: needs root");
        return false;
    }
    true
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// 64 MiB through the echo: a writer thread and this thread reading, byte-exact. Returns MB/s
/// (10^6 bytes per second, counting the bytes once).
fn bulk_echo(dir: &Path) -> f64 {
    let s = connect(dir, 1234, Duration::from_secs(30)).expect("connect to the echo port");
    let mut w = s.try_clone().expect("clone");
    let pattern = |i: usize| (i as u8).wrapping_mul(151) ^ (i >> 13) as u8;
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut chunk = vec![0u8; 1 << 20];
        let mut off = 0;
        while off < BULK {
            for (k, b) in chunk.iter_mut().enumerate() {
                *b = pattern(off + k);
            }
            w.write_all(&chunk).expect("write to the guest");
            off += chunk.len();
        }
    });
    let mut r = s;
    r.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0usize;
    while got < BULK {
        let n = r.read(&mut buf).expect("read the echo");
        assert!(n > 0, "echo ended after {got} bytes");
        for (k, b) in buf[..n].iter().enumerate() {
            assert_eq!(*b, pattern(got + k), "byte {} differs", got + k);
        }
        got += n;
    }
    let secs = start.elapsed().as_secs_f64();
    writer.join().expect("writer");
    BULK as f64 / secs / 1e6
}

#[test]
fn guest_vsock_echo_host_listener_refusal_and_no_descriptor_growth() {
    let name = "guest_vsock_echo_host_listener_refusal_and_no_descriptor_growth";
    if !can_run(name) {
        return;
    }
    let kernel = test_kernel();
    let dir = tempfile::tempdir().expect("tempdir");
    let sockets = dir.path().join("pod");
    std::fs::create_dir(&sockets).expect("socket dir");

    // The host's listener for the guest's connection to host port 5678.
    let host_server = common::vm::answer_guest_greeting(&sockets);

    let mut cfg = VmConfig::new(&kernel);
    cfg.initramfs = Some(common::initramfs::write_to(dir.path()));
    cfg.mem_mib = 256;
    cfg.timeout = Some(Duration::from_secs(600));
    cfg.cmdline = "rkt_test=vsock-echo".into();
    cfg.vsock = Some(VsockConfig {
        socket_dir: sockets.clone(),
    });
    let console = SharedBuf::default();
    let out = console.clone();
    let vm = spawn_vm(cfg, out);

    let ready = wait_for(
        &console,
        "VSOCK-READY",
        Instant::now() + Duration::from_secs(300),
    );
    assert!(ready, "the guest never got ready:\n{}", console.text());
    let text = console.text();
    assert!(
        text.contains("VSOCK-HOST-GOT=hello-from-host"),
        "guest -> host:\n{text}"
    );
    assert_eq!(
        host_server.join().expect("host server"),
        "hello-from-guest\n"
    );
    let refused = text
        .lines()
        .find_map(|l| l.strip_prefix("VSOCK-REFUSED errno="))
        .unwrap_or_else(|| panic!("no refusal line:\n{text}"));
    // ECONNRESET (104) or ECONNREFUSED (111), as Linux reports an RST to a connect.
    assert!(["104", "111"].contains(&refused.trim()), "errno {refused}");

    let mbps = bulk_echo(&sockets);
    // 64 MiB each way at once: every byte crosses the device twice.
    println!(
        "VSOCK_THROUGHPUT_MBPS {mbps:.1} (echo of {} MiB)",
        BULK >> 20
    );

    // 100 connections in a row: no descriptor growth in the VMM (this process).
    let one = |i: u32| {
        let mut s = connect(&sockets, 1234, Duration::from_secs(30)).expect("connect");
        s.write_all(&i.to_le_bytes()).expect("write");
        let mut b = [0u8; 4];
        s.read_exact(&mut b).expect("echo");
        assert_eq!(u32::from_le_bytes(b), i);
    };
    one(0);
    std::thread::sleep(Duration::from_secs(1));
    let before = open_fds();
    for i in 1..=100 {
        one(i);
    }
    // Closing is asynchronous (SHUTDOWN, the guest's close, RST): give it a moment.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut after = open_fds();
    while after > before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = open_fds();
    }
    println!("VSOCK_FDS before={before} after={after}");
    assert!(after <= before, "descriptors grew from {before} to {after}");

    // A connection to port 1235 reboots the guest (it may reset before the device has handed
    // the host its `OK`, so the answer is not checked).
    let _quit = connect(&sockets, 1235, Duration::from_secs(30));
    let (outcome, failure) = vm.join().expect("vm thread");
    assert_eq!(
        outcome,
        Ok(VmOutcome::Reset),
        "failure: {failure}\n{}",
        console.text()
    );
    assert!(failure.is_empty(), "{failure}");
    assert!(
        !sockets.join(pod_abi::vsock::SOCKET).exists(),
        "the socket goes with the VM"
    );
}
