//! Host tests (root; network namespaces made by the test, nothing touches the machine's own):
//! a "host" namespace and a "pod" namespace joined by a veth pair, as CNI's ptp plugin makes
//! them; [`attach`] in the pod namespace; frames through the tap, and through a virtio-net
//! device over it, reach the host namespace and come back.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

/// A network namespace held by an `unshare --net sleep` child; killed and reaped on drop.
pub(crate) struct TestNetns {
    child: Child,
}

impl TestNetns {
    pub(crate) fn new() -> Option<TestNetns> {
        let child = Command::new("unshare")
            .args(["--net", "--", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .ok()?;
        let ns = TestNetns { child };
        let me = std::fs::read_link("/proc/self/ns/net").ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(ns.path()).ok().as_ref() == Some(&me) || !ns.path().exists() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Some(ns)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid()))
    }

    /// MAC of `dev` in this namespace (not from /sys: that is the mounting namespace's view).
    pub(crate) fn mac(&self, dev: &str) -> MacAddr {
        let s = self.sh(&format!("ip -o link show dev {dev}"));
        let mut words = s.split_whitespace();
        let _ = words.by_ref().find(|w| *w == "link/ether");
        words.next().unwrap().parse().unwrap()
    }

    /// Runs `ip`/`tc` (by name, from PATH: test only) inside this namespace.
    pub(crate) fn sh(&self, cmd: &str) -> String {
        let out = Command::new("nsenter")
            .args(["--net=".to_string() + &self.path().display().to_string()])
            .args(["sh", "-c", cmd])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Skips (prints `SKIP`) unless root with the tools and `/dev/net/tun`.
pub(crate) fn can_run(test: &str) -> bool {
    // SAFETY: geteuid takes no arguments.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = trusted_tool("tc", TC_PATHS).is_ok() && trusted_tool("ip", IP_PATHS).is_ok();
    if !root || !tools || !Path::new("/dev/net/tun").exists() {
        println!("SKIP: {test}: needs root, /dev/net/tun, ip and tc");
        return false;
    }
    true
}

/// The "host" and "pod" namespaces joined by a veth pair: `vh0` 10.99.0.1/24 in the host one,
/// `eth0` 10.99.0.2/24 with a default route via .1 in the pod one (what CNI's ptp makes).
pub(crate) struct Plumbing {
    pub host: TestNetns,
    pub pod: TestNetns,
}

pub(crate) const HOST_IP: [u8; 4] = [10, 99, 0, 1];
pub(crate) const POD_IP: [u8; 4] = [10, 99, 0, 2];

impl Plumbing {
    pub(crate) fn new() -> Plumbing {
        let host = TestNetns::new().unwrap();
        let pod = TestNetns::new().unwrap();
        host.sh(&format!(
            "ip link add vh0 type veth peer name eth0 netns {} && \
             ip addr add 10.99.0.1/24 dev vh0 && ip link set vh0 up && ip link set lo up",
            pod.pid()
        ));
        pod.sh(
            "ip addr add 10.99.0.2/24 dev eth0 && ip link set eth0 up && ip link set lo up && \
             ip route add default via 10.99.0.1",
        );
        Plumbing { host, pod }
    }

    /// MAC of `vh0`.
    pub(crate) fn host_mac(&self) -> [u8; 6] {
        self.host.mac("vh0").0
    }
}

fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame with an ICMP echo request `src` -> `dst`, id `id`.
pub(crate) fn icmp_echo(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
    id: u16,
) -> Vec<u8> {
    let mut icmp = vec![8u8, 0, 0, 0];
    icmp.extend_from_slice(&id.to_be_bytes());
    icmp.extend_from_slice(&1u16.to_be_bytes());
    icmp.extend_from_slice(b"rkt-rs virtio-net test payload..");
    let c = csum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let total = 20 + icmp.len();
    let mut ip = vec![0x45u8, 0];
    ip.extend_from_slice(&(total as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 1, 0, 0]);
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

/// Whether `frame` is an ICMP echo reply with id `id` from `src`.
pub(crate) fn is_echo_reply(frame: &[u8], src: [u8; 4], id: u16) -> bool {
    frame.len() >= 14 + 20 + 8
        && frame[12..14] == [0x08, 0x00]
        && frame[14 + 9] == 1
        && frame[14 + 12..14 + 16] == src
        && frame[14 + 20] == 0
        && frame[14 + 24..14 + 26] == id.to_be_bytes()
}

#[test]
fn attach_joins_a_tap_to_the_cni_interface_both_ways() {
    if !can_run("attach_joins_a_tap_to_the_cni_interface_both_ways") {
        return;
    }
    let p = Plumbing::new();
    let eth0_mac = p.pod.mac("eth0");
    let a = attach(&p.pod.path(), "eth0", "tap0").unwrap();
    assert_eq!(a.interface.mac, eth0_mac);
    assert_eq!(a.interface.mtu, Some(1500));
    assert_eq!(
        a.interface.addresses,
        vec!["10.99.0.2/24".parse::<IpCidr>().unwrap()]
    );
    let default = a
        .routes
        .iter()
        .find(|r| r.dst.prefix == 0)
        .unwrap_or_else(|| panic!("no default route in {:?}", a.routes));
    assert_eq!(default.gateway, Some("10.99.0.1".parse().unwrap()));
    // On-link routes come first.
    let first_via = a.routes.iter().position(|r| r.gateway.is_some()).unwrap();
    assert!(a.routes[..first_via].iter().all(|r| r.gateway.is_none()));
    assert!(p
        .pod
        .sh("tc filter show dev eth0 ingress")
        .contains("Egress Redirect to device tap0"));
    assert!(p
        .pod
        .sh("tc filter show dev tap0 ingress")
        .contains("Egress Redirect to device eth0"));

    // A ping written into the tap leaves through eth0; the reply comes back through the tap.
    p.host.sh(&format!(
        "ip neigh replace 10.99.0.2 lladdr {eth0_mac} dev vh0"
    ));
    let mut tap = File::from(a.tap.try_clone().unwrap());
    let mut msg = vec![0u8; crate::devices::virtio::net::VNET_HDR_LEN];
    msg.extend(icmp_echo(eth0_mac.0, p.host_mac(), POD_IP, HOST_IP, 0x5151));
    tap.write_all(&msg).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 65562];
    loop {
        assert!(Instant::now() < deadline, "no echo reply through the tap");
        match tap.read(&mut buf) {
            Ok(n) if is_echo_reply(&buf[12..n], HOST_IP, 0x5151) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("{e}"),
        }
    }

    let cfg = guest_config([&a]);
    assert_eq!(cfg.interfaces, vec![a.interface.clone()]);
    assert_eq!(cfg.routes, a.routes);
    assert!(cfg.to_json().is_ok());

    detach(&p.pod.path(), "eth0").unwrap();
    assert!(!p.pod.sh("tc qdisc show dev eth0").contains("ingress"));
    // Idempotent, and a vanished namespace is fine.
    detach(&p.pod.path(), "eth0").unwrap();
    detach(Path::new("/proc/0/ns/net"), "eth0").unwrap();
}

#[test]
fn bad_names_and_namespaces_are_refused() {
    for n in ["", "a/b", "waytoolonginterfacename", "a b", "a:1"] {
        assert!(matches!(check_name(n), Err(NetError::BadName(_))), "{n:?}");
    }
    assert!(matches!(
        attach(Path::new("/nonexistent/netns"), "eth0", "tap0"),
        Err(NetError::Netns { .. })
    ));
}

#[test]
fn routes_from_ip_json() {
    let mac = MacAddr([2, 0, 0, 0, 0, 1]);
    let v: serde_json::Value = serde_json::from_str(
        r#"[{"dst":"default","gateway":"10.99.0.1","flags":[]},
            {"dst":"10.99.0.0/24","protocol":"kernel","scope":"link","prefsrc":"10.99.0.2","flags":[]},
            {"dst":"10.99.0.1","scope":"link","flags":[]},
            {"type":"broadcast","dst":"10.99.0.255","flags":[]},
            {"dst":"fe80::/64","flags":[]},
            {"dst":"ff00::/8","flags":[]}]"#,
    )
    .unwrap();
    let arr = v.as_array().unwrap();
    let got: Vec<_> = arr
        .iter()
        .filter_map(|r| parse_route(r, false, mac))
        .collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].dst.to_string(), "0.0.0.0/0");
    assert_eq!(got[2].dst.to_string(), "10.99.0.1/32");
    let v6 = parse_route(
        &serde_json::json!({"dst": "default", "gateway": "fd00::1"}),
        true,
        mac,
    );
    assert_eq!(v6.map(|r| r.dst.to_string()), Some("::/0".to_string()));
}

#[test]
fn a_virtio_net_device_over_the_tap_pings_the_host_namespace() {
    use vm_memory::{Bytes, GuestAddress};

    use crate::devices::virtio::net::{Net, QUEUE_SIZE, VNET_HDR_LEN};
    use crate::devices::virtio::test_utils::*;

    if !can_run("a_virtio_net_device_over_the_tap_pings_the_host_namespace") {
        return;
    }
    let p = Plumbing::new();
    let a = attach(&p.pod.path(), "eth0", "tap0").unwrap();
    let mac = a.interface.mac;
    p.host
        .sh(&format!("ip neigh replace 10.99.0.2 lladdr {mac} dev vh0"));
    let mem = guest_memory();
    let (mut t, mut q, _irq) = activated(
        &mem,
        Box::new(Net::new(a.tap, mac.0)),
        &[QUEUE_SIZE, QUEUE_SIZE],
    );
    for k in 0..16u64 {
        q[0].add_chain(&mem, &[(DATA_BASE + 0x10_0000 + k * 0x1000, 0x1000, true)]);
    }
    notify(&mut t, 0);
    let mut frame = vec![0u8; VNET_HDR_LEN];
    frame.extend(icmp_echo(mac.0, p.host_mac(), POD_IP, HOST_IP, 0x7a7a));
    mem.write_slice(&frame, GuestAddress(DATA_BASE)).unwrap();
    q[1].add_chain(&mem, &[(DATA_BASE, frame.len() as u32, false)]);
    notify(&mut t, 1);
    q[1].wait_used(&mem);
    // The reply (possibly after other frames, e.g. IPv6 neighbour solicitations).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            Instant::now() < deadline,
            "no echo reply in the receive queue"
        );
        let Some((id, len)) = q[0].pop_used(&mem) else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let mut got = vec![0u8; len as usize];
        let at = DATA_BASE + 0x10_0000 + u64::from(id) * 0x1000;
        mem.read_slice(&mut got, GuestAddress(at)).unwrap();
        if is_echo_reply(&got[VNET_HDR_LEN..], HOST_IP, 0x7a7a) {
            break;
        }
    }
    assert!(!t.needs_reset());
    drop(t);
    detach(&p.pod.path(), "eth0").unwrap();
}

#[test]
fn guest_config_puts_on_link_routes_first_across_interfaces() {
    let route = |dst: &str, gw: Option<&str>, mac: MacAddr| GuestRoute {
        dst: dst.parse().unwrap(),
        gateway: gw.map(|g| g.parse().unwrap()),
        mac: Some(mac),
    };
    let att = |mac: [u8; 6], addr: &str, routes: Vec<GuestRoute>| Attached {
        tap: File::open("/dev/null").unwrap().into(),
        interface: GuestInterface {
            mac: MacAddr(mac),
            addresses: vec![addr.parse().unwrap()],
            mtu: Some(1500),
        },
        routes,
    };
    let (m1, m2) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
    let a = att(
        m1.0,
        "10.1.0.2/24",
        vec![
            route("10.1.0.1/32", None, m1),
            route("0.0.0.0/0", Some("10.1.0.1"), m1),
        ],
    );
    let b = att(
        m2.0,
        "10.2.0.2/24",
        vec![
            route("10.2.0.1/32", None, m2),
            route("10.20.0.0/16", Some("10.2.0.1"), m2),
        ],
    );
    let cfg = guest_config([&a, &b]);
    assert_eq!(cfg.interfaces.len(), 2);
    let dsts: Vec<String> = cfg.routes.iter().map(|r| r.dst.to_string()).collect();
    assert_eq!(
        dsts,
        ["10.1.0.1/32", "10.2.0.1/32", "0.0.0.0/0", "10.20.0.0/16"]
    );
    cfg.validate().unwrap();
}

/// The snapshot maker's taps live on after the thread that made their namespace has ended (a
/// tap's descriptor holds its namespace), take the offloads a pod's taps take, and are not in
/// this process's namespace.
#[test]
fn scratch_taps_outlive_their_thread_and_take_offloads() {
    if !can_run("scratch_taps_outlive_their_thread_and_take_offloads") {
        return;
    }
    let taps = open_scratch(2).unwrap();
    assert_eq!(taps.len(), 2);
    for t in &taps {
        enable_offloads(t).unwrap();
    }
    let ours = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let ours = String::from_utf8_lossy(&ours.stdout);
    assert!(
        !ours.contains(" tap0:") && !ours.contains(" tap1:"),
        "a scratch tap is in this namespace: {ours}"
    );
}
