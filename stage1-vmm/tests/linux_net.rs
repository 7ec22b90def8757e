//! Guest-Linux networking, end to end at the VMM level: in a test-made "host" namespace and a
//! "pod" namespace joined by a veth pair (made by hand, and by the real CNI `ptp` plugin), `stage1_vmm::net::attach`
//! puts a tap in the pod namespace and redirects it to and from `eth0` with tc; a VM with that
//! tap as its virtio-net card (`VmConfig.net`, the CNI interface's MAC) boots the project's kernel
//! with a busybox initramfs. The guest brings `lo` up and shows 127.0.0.1 answering, configures
//! its card (found by the MAC the device offers) with the CNI address, pings the host
//! namespace and fetches a line over TCP from a server there; the host namespace pings the guest
//! and fetches a line from the guest's TCP server. The VMM runs confined (seccomp and
//! capabilities per thread, the virtio-net worker on its own profile), `attach` before
//! `confine::init` as documented, when built without debug assertions (std's debug check of
//! every closed descriptor, `fcntl(F_GETFD)`, is in no worker's filter):
//! `cargo test --config 'profile.dev.debug-assertions=false' -p stage1-vmm --test linux_net
//! --no-run`, then run the binary under ci/nested-kvm.
//!
//! Needs a KVM that boots Linux (else `SKIP`, runs under ci/nested-kvm), root, busybox, `ip`
//! and `tc`, and an L1/host kernel with veth, tun and the tc ingress/u32/mirred options.
//! Guest configuration by guest-init (`rkt/net.json`) is tested separately (guest-init's
//! `net::tests`, in a namespace); this test covers the device, the tap and the redirects.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::vm::{spawn_vm, wait_for};
use common::{linux_kvm_or_skip, test_kernel, SharedBuf};
use stage1_vmm::{NetConfig, VmConfig, VmOutcome};

use common::initramfs::cpio;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;
const BUSYBOX: &str = "/bin/busybox";
const HOST_IP: &str = "10.99.0.1";
const POD_IP: &str = "10.99.0.2";

/// The guest's init: loopback, the card by MAC, then traffic both ways.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
ip link set lo up
ping -c 1 -W 5 127.0.0.1 >/dev/null 2>&1 && echo GUEST-LO-OK
IF=
for d in /sys/class/net/*; do
  [ "$(cat $d/address)" = "$rkt_mac" ] && IF=${d##*/}
done
echo "GUEST-IF=$IF"
echo "GUEST-MTU=$(cat /sys/class/net/$IF/mtu)"
ip link set "$IF" up
ip addr add "$rkt_addr" dev "$IF"
ip route add default via "$rkt_gw"
ping -c 1 -W 10 "$rkt_gw" >/dev/null 2>&1 && echo GUEST-PING-HOST-OK
echo "GUEST-GOT=$(nc -w 10 "$rkt_gw" 7778 </dev/null)"
echo GUEST-READY
nc -l -p 7777 -e /hello.sh
echo GUEST-DONE
reboot -f
"#;

fn initramfs(dir: &Path) -> PathBuf {
    let busybox = std::fs::read(BUSYBOX).expect("busybox");
    let mut out = Vec::new();
    let mut ino = 0;
    let mut e = |out: &mut Vec<u8>, name: &str, mode: u32, rdev, data: &[u8]| {
        ino += 1;
        cpio::entry(out, ino, name, mode, rdev, data);
    };
    for d in ["dev", "proc", "sys", "bin"] {
        e(&mut out, d, S_IFDIR | 0o755, (0, 0), &[]);
    }
    e(&mut out, "dev/console", S_IFCHR | 0o600, (5, 1), &[]);
    e(&mut out, "bin/busybox", S_IFREG | 0o755, (0, 0), &busybox);
    e(&mut out, "init", S_IFREG | 0o755, (0, 0), INIT.as_bytes());
    e(
        &mut out,
        "hello.sh",
        S_IFREG | 0o755,
        (0, 0),
        b"#!/bin/busybox sh\necho hello-from-guest\n",
    );
    cpio::entry(&mut out, 0, "TRAILER!!!", 0, (0, 0), &[]);
    let p = dir.join("initramfs.cpio");
    std::fs::write(&p, out).expect("write initramfs");
    p
}

/// A network namespace held by an `unshare --net sleep` child; killed on drop.
struct Netns(Child);

impl Netns {
    fn new() -> Netns {
        let child = Command::new("unshare")
            .args(["--net", "--", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let ns = Netns(child);
        let me = std::fs::read_link("/proc/self/ns/net").expect("own netns");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(ns.path())
            .ok()
            .as_ref()
            .is_none_or(|l| *l == me)
        {
            assert!(
                Instant::now() < deadline,
                "unshare did not make a namespace"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        ns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.0.id()))
    }

    fn sh(&self, cmd: &str) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.path().display()))
            .args(["sh", "-c", cmd])
            .output()
            .expect("nsenter")
    }

    fn must(&self, cmd: &str) -> String {
        let o = self.sh(cmd);
        assert!(
            o.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs `f` on a thread inside this namespace.
    fn on_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let ns = std::fs::File::open(self.path()).expect("open netns");
        std::thread::spawn(move || {
            // SAFETY: setns on an open namespace descriptor; changes only this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether this test can run here (marks it as a guest test; prints SKIP otherwise).
fn can_run(name: &str) -> bool {
    if !linux_kvm_or_skip(name) {
        return false;
    }
    // SAFETY: geteuid takes no arguments.
    if unsafe { libc::geteuid() } != 0 || !Path::new(BUSYBOX).exists() {
        eprintln!("SKIP: {name}: needs root and {BUSYBOX}");
        return false;
    }
    true
}

/// A veth pair made by hand, as CNI's ptp plugin would: `vh0` 10.99.0.1/24 in the host
/// namespace, `eth0` 10.99.0.2/24 with a default route in the pod one, both MTU 1400.
#[test]
fn guest_and_host_namespace_talk_over_virtio_net_and_tc_redirects() {
    let name = "guest_and_host_namespace_talk_over_virtio_net_and_tc_redirects";
    if !can_run(name) {
        return;
    }
    let host = Netns::new();
    let pod = Netns::new();
    host.must(&format!(
        "ip link add vh0 type veth peer name eth0 netns {} && ip addr add {HOST_IP}/24 dev vh0 \
         && ip link set vh0 mtu 1400 up && ip link set lo up",
        pod.0.id()
    ));
    pod.must(&format!(
        "ip addr add {POD_IP}/24 dev eth0 && ip link set eth0 mtu 1400 up && \
         ip route add default via {HOST_IP}"
    ));
    talk(&host, &pod, HOST_IP, 1400);
}

/// The real CNI `ptp` plugin (with host-local IPAM and IP masquerade, rkt's default network)
/// makes the pod's interface; its ADD result's address and gateway are what the guest uses.
#[test]
fn guest_on_a_cni_ptp_network_talks_to_the_host_namespace() {
    let name = "guest_on_a_cni_ptp_network_talks_to_the_host_namespace";
    if !can_run(name) {
        return;
    }
    let plugins = Path::new("/usr/lib/cni");
    if !plugins.join("ptp").exists() || !plugins.join("host-local").exists() {
        eprintln!("SKIP: {name}: no CNI ptp/host-local plugins in /usr/lib/cni");
        return;
    }
    let host = Netns::new();
    let pod = Netns::new();
    host.must("ip link set lo up");
    let ipam = tempfile::tempdir().expect("ipam dir");
    let conf = format!(
        r#"{{"cniVersion":"0.4.0","name":"rkt-vnet-test","type":"ptp","ipMasq":true,"mtu":1400,
            "ipam":{{"type":"host-local","subnet":"10.98.0.0/24","dataDir":"{}",
                     "routes":[{{"dst":"0.0.0.0/0"}}]}}}}"#,
        ipam.path().display()
    );
    let cni = |cmd: &str| {
        let mut c = Command::new("nsenter")
            .arg(format!("--net={}", host.path().display()))
            .arg(plugins.join("ptp"))
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", "rkt-vnet-test")
            .env("CNI_NETNS", pod.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", plugins)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ptp");
        c.stdin
            .take()
            .expect("stdin")
            .write_all(conf.as_bytes())
            .expect("conf");
        let out = c.wait_with_output().expect("ptp");
        assert!(
            out.status.success(),
            "ptp {cmd}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    cni("ADD");
    // host-local hands out .2 first; the gateway is the host side, .1.
    talk(&host, &pod, "10.98.0.1", 1400);
    cni("DEL");
}

/// Attaches a tap to the pod namespace's `eth0`, boots the guest with it and checks the traffic
/// both ways with `host_ip` in the host namespace (see the module docs).
fn talk(host: &Netns, pod: &Netns, host_ip: &'static str, mtu: u32) {
    let kernel = test_kernel();
    let attached = stage1_vmm::net::attach(&pod.path(), "eth0", "tap0").expect("attach");
    let mac = attached.interface.mac;
    let pod_cidr = attached
        .interface
        .addresses
        .first()
        .map(|a| a.to_string())
        .expect("the pod interface has an address");
    let pod_ip = pod_cidr.split('/').next().unwrap_or_default().to_string();
    assert_eq!(attached.interface.mtu, Some(mtu));
    assert!(
        attached
            .routes
            .iter()
            .any(|r| r.dst.prefix == 0
                && r.gateway.map(|g| g.to_string()).as_deref() == Some(host_ip)),
        "default route via {host_ip} in {:?}",
        attached.routes
    );

    // The host namespace's TCP server (one connection) and, once the guest is ready, its
    // client and ping.
    let server = host.on_thread(move || {
        let l = TcpListener::bind((host_ip, 7778)).expect("bind in the host namespace");
        let (mut s, peer) = l.accept().expect("accept");
        s.write_all(b"hello-from-host\n").expect("write");
        peer
    });

    let dir = tempfile::tempdir().expect("tempdir");
    let initrd = initramfs(dir.path());
    let mut cfg = VmConfig::new(&kernel);
    cfg.initramfs = Some(initrd);
    cfg.mem_mib = 256;
    cfg.timeout = Some(Duration::from_secs(240));
    cfg.cmdline = format!("rkt_mac={mac} rkt_addr={pod_cidr} rkt_gw={host_ip}");
    cfg.net = vec![NetConfig {
        tap: Arc::new(attached.tap),
        mac: mac.0,
        mtu: attached.interface.mtu.and_then(|m| u16::try_from(m).ok()),
    }];
    let console = SharedBuf::default();
    let out = console.clone();

    // The VM on its own thread, confined as in a pod (attach ran before; see the module docs).
    let vm = spawn_vm(cfg, out);

    let deadline = Instant::now() + Duration::from_secs(240);
    let ready = wait_for(&console, "GUEST-READY", deadline);
    let text = console.text();
    assert!(ready, "the guest never got ready; console:\n{text}");
    let ping = host.sh(&format!("{BUSYBOX} ping -c 1 -W 10 {pod_ip}"));
    let guest_ip: Ipv4Addr = pod_ip.parse().expect("ip");
    let fetched = host
        .on_thread(move || {
            let addr = SocketAddr::from((guest_ip, 7777));
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(20))?;
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            let mut got = String::new();
            s.read_to_string(&mut got)?;
            Ok::<_, std::io::Error>(got)
        })
        .join()
        .expect("client thread");
    let (outcome, failure) = vm.join().expect("vm thread");
    let text = console.text();
    let peer = server.join().expect("server thread");
    for l in text.lines().filter(|l| l.starts_with("GUEST-")) {
        println!("guest: {l}");
    }

    assert!(text.contains("GUEST-LO-OK"), "lo does not answer:\n{text}");
    assert!(
        !text.contains("GUEST-IF=\n"),
        "no card with MAC {mac}:\n{text}"
    );
    assert!(
        text.contains("GUEST-PING-HOST-OK"),
        "guest -> host ping:\n{text}"
    );
    assert!(
        text.contains("GUEST-GOT=hello-from-host"),
        "guest -> host TCP:\n{text}"
    );
    assert_eq!(
        peer.ip().to_string(),
        pod_ip,
        "the host saw the guest's address"
    );
    assert!(
        ping.status.success(),
        "host -> guest ping: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    assert_eq!(
        fetched.as_deref().ok(),
        Some("hello-from-guest\n"),
        "host -> guest TCP: {fetched:?}\n{text}"
    );
    assert!(text.contains("GUEST-DONE"), "{text}");
    assert_eq!(outcome, Ok(VmOutcome::Reset), "failure: {failure}\n{text}");
    assert!(failure.is_empty(), "{failure}");

    stage1_vmm::net::detach(&pod.path(), "eth0").expect("detach");
    assert!(!pod.must("tc qdisc show dev eth0").contains("ingress"));
}
