//! Networking of KVM pods, end to end through `rkt run --stage1=kvm`: loopback works in the guest
//! (guest-init brings `lo` up; before, 127.0.0.1 was "Network is unreachable" inside a KVM pod).
//!
//! Marked as a guest test (`E2e::require_kvm`): where this host's KVM cannot boot Linux it prints
//! `SKIP: <name>: ...; runs under ci/nested-kvm` and ci/test.sh runs it inside ci/nested-kvm.
//! The virtio-net device, the tap and the tc redirects are tested at the VMM level by
//! `stage1-vmm/tests/linux_net.rs`; wiring `--net` into the kvm pod is the CNI step's.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use rkt_tests::hostns::NetSnapshot;
use rkt_tests::{cc_static, skip, stderr, stdout, E2e, ImageSpec, BUSYBOX};

/// A static app: TCP over 127.0.0.1 and ::1 inside the pod (listen, connect, accept, one
/// message each way); prints `LO4-OK` / `LO6-OK` or the failing call.
const LO_C: &str = r#"
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
static int try(int fam, const char *name) {
    struct sockaddr_storage ss; socklen_t len;
    memset(&ss, 0, sizeof ss);
    if (fam == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET; a->sin_addr.s_addr = htonl(INADDR_LOOPBACK); len = sizeof *a;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6; a->sin6_addr = in6addr_loopback; len = sizeof *a;
    }
    int l = socket(fam, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&ss, len) || listen(l, 1)) { printf("%s-FAIL listen: %m\n", name); return 1; }
    if (getsockname(l, (struct sockaddr *)&ss, &len)) { printf("%s-FAIL getsockname: %m\n", name); return 1; }
    int c = socket(fam, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&ss, len)) { printf("%s-FAIL connect: %m\n", name); return 1; }
    int s = accept(l, NULL, NULL);
    char buf[8] = {0};
    if (s < 0 || write(c, "ping", 4) != 4 || read(s, buf, 4) != 4 || strcmp(buf, "ping")) {
        printf("%s-FAIL transfer: %m\n", name); return 1;
    }
    printf("%s-OK\n", name);
    return 0;
}
int main(void) {
    int bad = try(AF_INET, "LO4") + try(AF_INET6, "LO6");
    fflush(stdout);
    return bad;
}
"#;

/// Compiles [`LO_C`] with `cc -static` into the test's directory; `None` after a SKIP.
fn lo_helper(e: &E2e, test: &str) -> Option<PathBuf> {
    let dir = e.path("lo-src");
    std::fs::create_dir_all(&dir).unwrap();
    match cc_static(LO_C, &dir, "lo") {
        Ok(bin) => Some(bin),
        Err(why) => {
            skip(test, &why);
            None
        }
    }
}

fn lo_image(e: &E2e, helper: &Path) -> PathBuf {
    let p = e.path("lo.aci");
    ImageSpec::new("example.com/lo", &["/bin/lo"])
        .file("/bin/lo", helper, 0o755)
        .dir("/proc")
        .build(&p);
    p
}

#[test]
fn kvm_loopback_works_in_the_guest() {
    let name = "kvm_loopback_works_in_the_guest";
    let Some(e) = E2e::require_kvm(name) else {
        return;
    };
    let Some(helper) = lo_helper(&e, name) else {
        return;
    };
    let img = lo_image(&e, &helper);
    let o = e.run(&["run", &e.stage1_flag(), img.to_str().unwrap()]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    assert_eq!(stdout(&o), "LO4-OK\nLO6-OK\n", "{}", stderr(&o));
}

/// The test namespace's iptables rules and links (what a pod's networks must not leave).
fn net_state(ns: &rkt_tests::hostns::HostNs) -> (Vec<String>, String) {
    let o = ns.exec("iptables-save", &[]);
    let rules = rkt_tests::hostns::normalize_iptables(&String::from_utf8_lossy(&o.stdout));
    let links: Vec<String> = ns
        .ip(&["-o", "link"])
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .collect();
    (rules, links.join(","))
}

#[test]
fn kvm_default_network_reaches_the_host_and_gc_leaves_nothing() {
    let name = "kvm_default_network_reaches_the_host_and_gc_leaves_nothing";
    let Some(e) = E2e::require_kvm_net(name) else {
        return;
    };
    let ns = e.host();
    let img = e.path("nc.aci");
    ImageSpec::new(
        "example.com/kvm-nc",
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "echo hello-from-the-guest | /bin/busybox nc -w 20 172.16.28.1 7777",
        ],
    )
    .file("/bin/busybox", Path::new(BUSYBOX), 0o755)
    .dir("/proc")
    .build(&img);
    let before = net_state(ns);
    // A TCP server in the test's "host" namespace: the pod's gateway (172.16.28.1) is its side
    // of the pod's ptp link.
    let server = ns.thread(|| {
        let l = std::net::TcpListener::bind("0.0.0.0:7777").unwrap();
        let (mut c, _) = l.accept().unwrap();
        let mut got = String::new();
        std::io::Read::read_to_string(&mut c, &mut got).unwrap();
        got
    });
    let uuid_file = e.path("uuid");
    let o = e.run(&[
        "run",
        "--net=default",
        &e.stage1_flag(),
        &format!("--uuid-file-save={}", uuid_file.display()),
        img.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(server.join().unwrap(), "hello-from-the-guest\n");
    let uuid = std::fs::read_to_string(&uuid_file).unwrap();
    let status = stdout(&e.run(&["status", "--format=json", &uuid]));
    assert!(
        status.contains("\"172.16.28."),
        "no network in status: {status}"
    );
    let o = e.run(&["gc", "--grace-period=0s"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        net_state(ns),
        before,
        "the pod's networks left something behind"
    );
    assert!(
        !Path::new(&format!("/var/run/netns/rkt-{uuid}")).exists(),
        "the pod's netns outlived gc"
    );
}

/// A busybox image whose app runs `sh -c <first app argument>`, with port `http` 80/tcp.
fn busybox_sh_image(e: &E2e) -> PathBuf {
    let out = e.path("sh.aci");
    if out.exists() {
        return out;
    }
    let mut img = ImageSpec::new("example.com/kvm-sh", &["/bin/sh", "-c"])
        .file("/bin/busybox", Path::new(BUSYBOX), 0o755)
        .dir("/etc")
        .dir("/proc")
        .port("http", "tcp", 80);
    for a in ["sh", "ip", "nc", "cat", "echo", "sleep"] {
        img = img.symlink(&format!("/bin/{a}"), "busybox");
    }
    img.build(&out);
    out
}

#[test]
fn kvm_net_none_dns_hosts_and_port() {
    let name = "kvm_net_none_dns_hosts_and_port";
    let Some(e) = E2e::require_kvm_net(name) else {
        return;
    };
    let ns = e.host();
    let img = busybox_sh_image(&e);
    let img = img.to_str().unwrap();
    // --net=none: the guest has its loopback and nothing else.
    let o = e.run(&[
        "run",
        "--net=none",
        &e.stage1_flag(),
        img,
        "--",
        "ip -o link",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let links: Vec<String> = stdout(&o)
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
        .collect();
    assert_eq!(links, ["lo"], "{}", stdout(&o));
    // --dns*, --hosts-entry and --hostname reach the KVM app's /etc files.
    let o = e.run(&[
        "run",
        "--net=default",
        "--dns=10.1.2.3",
        "--dns-search=example.test",
        "--hosts-entry=10.9.9.9=db.example.test",
        "--hostname=kvmpod",
        &e.stage1_flag(),
        img,
        "--",
        "cat /etc/resolv.conf /etc/hosts",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let files = stdout(&o);
    for want in [
        "nameserver 10.1.2.3",
        "search example.test",
        "10.9.9.9",
        "db.example.test",
        "kvmpod",
    ] {
        assert!(files.contains(want), "no {want:?} in:\n{files}");
    }
    // --port: the pod's port 80 answers on the host's 127.0.0.1:8080 (rkt #3251).
    let uf = e.path("uuid-port");
    let child = e.spawn(&[
        "run",
        "--net=default",
        "--port=http:8080",
        &e.stage1_flag(),
        &format!("--uuid-file-save={}", uf.display()),
        img,
        "--",
        "while true; do echo port-ok | nc -l -p 80; done",
    ]);
    let got = ns.thread(|| read_local_port(8080)).join().unwrap();
    let uuid = rkt_tests::uuid_of(&uf);
    let o = e.run(&["stop", &uuid]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = rkt_tests::wait_output(child, e.timeout());
    assert_eq!(got.as_deref(), Ok("port-ok\n"));
    // `rkt app sandbox --port` (rkt's sandbox form, the pod side given): an app added later
    // that listens on the pod port answers on the host port.
    let limit = std::time::Duration::from_secs(rkt_tests::KVM_RUN_TIMEOUT_SECS);
    let (mut sandbox, uuid) = rkt_tests::mutable::start_sandbox(
        &e,
        &["--net=default", "--port=web:tcp:8080:0.0.0.0:8085"],
        limit,
    );
    for args in [
        vec![
            "app",
            "add",
            &uuid,
            img,
            "--name=web",
            "--",
            "while true; do echo sandbox-port-ok | nc -l -p 8080; done",
        ],
        vec!["app", "start", &uuid, "--app=web"],
    ] {
        let o = rkt_tests::mutable::app_cmd(&e, &args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    }
    let got = ns.thread(|| read_local_port(8085)).join().unwrap();
    rkt_tests::mutable::stop_sandbox(&e, &mut sandbox, &uuid, limit);
    assert_eq!(got.as_deref(), Ok("sandbox-port-ok\n"));
    let o = e.run(&["gc", "--grace-period=0s"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// The first line a server on the (test namespace's) `127.0.0.1:PORT` sends, retried for up
/// to 120 s while the pod comes up.
fn read_local_port(port: u16) -> Result<String, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(20)));
            let mut s = String::new();
            if std::io::Read::read_to_string(&mut c, &mut s).is_ok() && !s.is_empty() {
                return Ok(s);
            }
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("nothing answered on 127.0.0.1:{port} within 120 s"));
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// The test "host" namespace's own address (on a veth standing for the uplink): outside every
/// pod network, so reaching it needs a route out.
const HOST_ADDR: &str = "10.99.0.1";
/// Port of the greeting server in the test's "host" namespace.
const GREET_PORT: u16 = 7777;

/// A KVM network test's prerequisites, with the uplink veth (`d0`, [`HOST_ADDR`]) made in the
/// test's namespace; `None` after a SKIP line.
fn require_net(test: &str) -> Option<E2e> {
    let e = E2e::require_kvm_net(test)?;
    let ns = e.host();
    for p in [
        "/usr/lib/cni/ptp",
        "/usr/lib/cni/host-local",
        "/usr/lib/cni/bridge",
        "/usr/sbin/iptables-save",
    ] {
        if !Path::new(p).exists() {
            skip(test, &format!("no {p} (ci/deps.sh)"));
            return None;
        }
    }
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d0p"]);
    ns.ip(&["addr", "add", &format!("{HOST_ADDR}/32"), "dev", "d0"]);
    ns.ip(&["link", "set", "d0p", "up"]);
    ns.ip(&["link", "set", "d0", "up"]);
    Some(e)
}

/// The leak check's network state of the test's "host" namespace. The pods' namespaces are
/// checked by name (`E2e::pod_netns`): under ci/nested-kvm `/var/run/netns` also shows the
/// host's own, coming and going over 9p.
fn snapshot(e: &E2e, ipam_dirs: &[PathBuf]) -> NetSnapshot {
    e.host().net_snapshot(ipam_dirs)
}

fn ipam_dir(e: &E2e, net: &str) -> PathBuf {
    e.dir().join("networks").join(net)
}

fn netns_of(uuid: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/netns/rkt-{uuid}"))
}

/// A TCP server on every address of the test's namespace, port [`GREET_PORT`], that greets
/// each client with `host-says-hi` until `stop` is set; it returns how many it greeted.
fn greeter(
    e: &E2e,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<usize>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let s = stop.clone();
    let h = e.host().thread(move || {
        let l = std::net::TcpListener::bind(("0.0.0.0", GREET_PORT)).unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        let mut n = 0;
        while !s.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut c, _)) => {
                    let _ = std::io::Write::write_all(&mut c, b"host-says-hi\n");
                    n += 1;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
        n
    });
    rx.recv().unwrap();
    (stop, h)
}

/// Polls `rkt status` until `uuid_file` names a pod with an address on `default`; the address.
fn default_ip_of(e: &E2e, uuid_file: &Path, limit: std::time::Duration) -> String {
    let end = std::time::Instant::now() + limit;
    loop {
        if let Ok(u) = std::fs::read_to_string(uuid_file) {
            if let Some(ip) = e
                .status(u.trim())
                .lines()
                .find_map(|l| l.strip_prefix("networks=default:ip4="))
            {
                return ip.to_string();
            }
        }
        assert!(std::time::Instant::now() < end, "the pod got no address");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// One KVM pod on `default-restricted`, a named bridge network and (when the kernel has it) a
/// named macvlan network from net.d (rkt #2811): one virtio-net card each, in order; no route
/// out, the host side of the restricted and the bridge network reachable; gc leaves nothing
/// but the bridge (as with every CNI runtime).
#[test]
fn kvm_restricted_bridge_and_macvlan_networks() {
    let name = "kvm_restricted_bridge_and_macvlan_networks";
    let Some(e) = require_net(name) else {
        return;
    };
    let ns = e.host();
    ns.ip(&["link", "add", "m0", "type", "veth", "peer", "name", "m0p"]);
    ns.ip(&["link", "set", "m0p", "up"]);
    ns.ip(&["link", "set", "m0", "up"]);
    // macvlan needs CONFIG_MACVLAN (and the plugin): probe with a throwaway link.
    let probe = ns.exec(
        "ip",
        &[
            "link", "add", "mvprobe", "link", "m0", "type", "macvlan", "mode", "bridge",
        ],
    );
    let macvlan = if !Path::new("/usr/lib/cni/macvlan").exists() {
        Err("no /usr/lib/cni/macvlan".to_string())
    } else if !probe.status.success() {
        Err(format!(
            "this kernel makes no macvlan link: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        ))
    } else {
        ns.ip(&["link", "del", "mvprobe"]);
        Ok(())
    };
    if let Err(why) = &macvlan {
        skip(&format!("{name} (macvlan part)"), why);
    }
    let conf = e.path("conf");
    let netd = conf.join("net.d");
    std::fs::create_dir_all(&netd).unwrap();
    let ipam_br = e.path("ipam-br");
    let ipam_mv = e.path("ipam-mv");
    // No default route on any network: whatever reaches HOST_ADDR was routed out wrongly.
    std::fs::write(
        netd.join("10-br.conf"),
        serde_json::json!({"cniVersion": "0.4.0", "name": "br", "type": "bridge",
            "bridge": "rktbr0", "isGateway": true,
            "ipam": {"type": "host-local", "subnet": "10.77.0.0/24", "dataDir": ipam_br}})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        netd.join("20-mv.conflist"),
        serde_json::json!({"cniVersion": "1.0.0", "name": "mv", "plugins": [
            {"type": "macvlan", "master": "m0", "mode": "bridge",
             "ipam": {"type": "host-local", "subnet": "10.88.0.0/24", "dataDir": ipam_mv}}]})
        .to_string(),
    )
    .unwrap();
    let ipam = [
        ipam_dir(&e, "default-restricted"),
        ipam_br.join("br"),
        ipam_mv.join("mv"),
    ];
    let before = snapshot(&e, &ipam);
    let (stop, server) = greeter(&e);
    let nets = if macvlan.is_ok() {
        "default-restricted,br,mv:IP=10.88.0.42"
    } else {
        "default-restricted,br"
    };
    let img = busybox_sh_image(&e);
    let uf = e.path("uuid-nets");
    let o = e.run(&[
        &format!("--local-config={}", conf.display()),
        "run",
        &e.stage1_flag(),
        &format!("--net={nets}"),
        &format!("--uuid-file-save={}", uf.display()),
        img.to_str().unwrap(),
        "--",
        &format!(
            "ip -4 -o addr; ip route; \
             nc -w 5 {HOST_ADDR} {GREET_PORT} </dev/null && echo ROUTED-OUT || echo NO-ROUTE-OUT; \
             nc -w 20 172.17.0.1 {GREET_PORT} </dev/null; nc -w 20 10.77.0.1 {GREET_PORT} </dev/null"
        ),
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let greeted = server.join().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let addr_of = |ifname: &str| {
        out.lines()
            .find(|l| l.contains(&format!(": {ifname} ")) && l.contains("inet "))
            .unwrap_or_default()
            .to_string()
    };
    assert!(addr_of("eth0").contains("inet 172.17."), "{out}");
    assert!(addr_of("eth1").contains("inet 10.77.0."), "{out}");
    if macvlan.is_ok() {
        assert!(
            addr_of("eth2").contains("inet 10.88.0.42/24"),
            "CNI_ARGS IP: {out}"
        );
    }
    assert!(!out.contains("default via"), "{out}");
    assert!(
        out.contains("NO-ROUTE-OUT") && !out.contains("ROUTED-OUT"),
        "{out}"
    );
    assert_eq!(
        out.matches("host-says-hi").count(),
        2,
        "the host sides of default-restricted and br: {out}"
    );
    assert_eq!(greeted, 2);
    let st = e.status(&rkt_tests::uuid_of(&uf));
    assert!(
        st.contains("default-restricted:ip4=172.17.") && st.contains("br:ip4=10.77.0."),
        "{st}"
    );
    let o = e.run(&["gc", "--grace-period=0s"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let mut after = snapshot(&e, &ipam);
    after.links.retain(|l| l != "rktbr0");
    assert_eq!(after, before, "the pod's networks left something behind");
}

/// Two KVM pods on `default` reach each other; then the first one's launcher (the VMM) is
/// SIGKILLed, and gc still leaves no rule, link, namespace or IPAM reservation behind.
#[test]
fn kvm_two_pods_reach_each_other_and_a_sigkilled_pod_leaves_nothing() {
    let name = "kvm_two_pods_reach_each_other_and_a_sigkilled_pod_leaves_nothing";
    let Some(e) = require_net(name) else {
        return;
    };
    let ipam = [ipam_dir(&e, "default")];
    let before = snapshot(&e, &ipam);
    let img = busybox_sh_image(&e);
    let img = img.to_str().unwrap();
    let ufa = e.path("uuid-a");
    let mut a = e.spawn(&[
        "run",
        "--net=default",
        &e.stage1_flag(),
        &format!("--uuid-file-save={}", ufa.display()),
        img,
        "--",
        "echo from-a | nc -l -p 9000; sleep 600",
    ]);
    let ip = default_ip_of(&e, &ufa, e.timeout());
    let uuid_a = rkt_tests::uuid_of(&ufa);
    // B retries while A's guest boots.
    let ufb = e.path("uuid-b");
    let o = e.run(&[
        "run",
        "--net=default",
        &e.stage1_flag(),
        &format!("--uuid-file-save={}", ufb.display()),
        img,
        "--",
        &format!(
            "i=0; while [ $i -lt 150 ]; do nc -w 5 {ip} 9000 </dev/null && exit 0; \
             i=$((i+1)); sleep 1; done; exit 1"
        ),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("from-a"), "{}", stdout(&o));
    assert!(netns_of(&uuid_a).exists());
    // A is sleeping: kill its launcher (rkt exec'd into the VMM).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = a.wait();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !e.status(&uuid_a).contains("state=exited") {
        assert!(
            std::time::Instant::now() < end,
            "the pod did not end with its launcher"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(netns_of(&uuid_a).exists(), "the netns lives until gc");
    assert_ne!(snapshot(&e, &ipam), before, "the network was there");
    let o = e.run(&["gc", "--grace-period=0s"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!netns_of(&uuid_a).exists());
    assert!(!netns_of(&rkt_tests::uuid_of(&ufb)).exists());
    assert_eq!(
        snapshot(&e, &ipam),
        before,
        "the pods' networks left something behind"
    );
}

/// A plugin that fails (after `default` was attached) or is missing stops a KVM pod before
/// its VM boots, with an error naming the network and the plugin, and leaves nothing behind.
#[test]
fn kvm_failing_or_missing_plugin_is_clear_and_leaves_nothing() {
    let name = "kvm_failing_or_missing_plugin_is_clear_and_leaves_nothing";
    let Some(e) = require_net(name) else {
        return;
    };
    let conf = e.path("conf-bad");
    let netd = conf.join("net.d");
    std::fs::create_dir_all(&netd).unwrap();
    std::fs::write(
        netd.join("10-bad.conf"),
        r#"{"cniVersion":"0.4.0","name":"bad","type":"bridge","bridge":"rktbad0","ipam":{"type":"host-local","subnet":"not-a-subnet"}}"#,
    )
    .unwrap();
    std::fs::write(
        netd.join("20-gone.conf"),
        r#"{"cniVersion":"0.4.0","name":"gone","type":"no-such-plugin"}"#,
    )
    .unwrap();
    let ipam = [ipam_dir(&e, "default")];
    let before = snapshot(&e, &ipam);
    let img = busybox_sh_image(&e);
    for (net, plugin) in [("default,bad", "bridge"), ("gone", "no-such-plugin")] {
        let uf = e.path(&format!("uuid-{plugin}"));
        let o = e.run(&[
            &format!("--local-config={}", conf.display()),
            "run",
            &e.stage1_flag(),
            &format!("--net={net}"),
            &format!("--uuid-file-save={}", uf.display()),
            img.to_str().unwrap(),
            "--",
            "echo app-ran",
        ]);
        assert_ne!(o.status.code(), Some(0));
        assert!(!stdout(&o).contains("app-ran"), "{}", stdout(&o));
        let err = stderr(&o);
        let netname = net.rsplit(',').next().unwrap();
        assert!(
            err.contains(&format!("network {netname}")) && err.contains(plugin),
            "{err}"
        );
        if uf.exists() {
            assert!(
                !netns_of(&rkt_tests::uuid_of(&uf)).exists(),
                "{net}: netns left"
            );
        }
        assert_eq!(e.pod_netns(), Vec::<PathBuf>::new(), "{net}: netns left");
        let mut after = snapshot(&e, &ipam);
        after.links.retain(|l| l != "rktbad0");
        assert_eq!(after, before, "{net}: left something behind");
    }
    let o = e.run(&["gc", "--grace-period=0s"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
