//! End-to-end networking of the ns flavor with the real CNI plugins (Debian's
//! `containernetworking-plugins`), each test inside its own test-made "host" network namespace
//! (`E2e::host_ns`): what each `--net` mode looks like from the app (busybox `ip`), reaching a
//! server in the "host" namespace, `--port` via the host's address and 127.0.0.1, two pods on
//! `default`, named bridge and macvlan networks from a test `net.d` (`--local-config`), DNS and
//! hosts flags, failing and missing plugins, and no leaks (iptables, interfaces, namespaces,
//! IPAM state) after `gc`, also when the launcher was SIGKILLed.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rkt_tests::hostns::NetSnapshot;
use rkt_tests::{skip, stderr, stdout, uuid_of, wait_output, E2e, ImageSpec, BUSYBOX};

/// The test "host" namespace's own address (on a veth standing for the uplink), the pods' way out.
const HOST_ADDR: &str = "10.99.0.1";
/// Port of the test server in the "host" namespace.
const SERVER_PORT: u16 = 7777;

/// Everything a network test needs; `None` (after a SKIP line) when something is missing.
fn require(test: &str) -> Option<E2e> {
    let e = E2e::require(test)?;
    if e.host_ns.is_none() {
        skip(
            test,
            "cannot create a test network namespace (ip netns add)",
        );
        return None;
    }
    for p in [
        "/usr/lib/cni/ptp",
        "/usr/lib/cni/host-local",
        "/usr/lib/cni/portmap",
    ] {
        if !Path::new(p).exists() {
            skip(
                test,
                &format!("no {p} (ci/deps.sh installs containernetworking-plugins)"),
            );
            return None;
        }
    }
    if !Path::new(BUSYBOX).exists() || which("iptables-save").is_none() {
        skip(test, "no static busybox or iptables-save (ci/deps.sh)");
        return None;
    }
    let ns = e.host_ns.as_ref().unwrap();
    // A veth pair stands for the host's uplink (kernels without the dummy driver).
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d0p"]);
    ns.ip(&["addr", "add", &format!("{HOST_ADDR}/32"), "dev", "d0"]);
    ns.ip(&["link", "set", "d0p", "up"]);
    ns.ip(&["link", "set", "d0", "up"]);
    Some(e)
}

fn which(b: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(b))
        .find(|p| p.exists())
}

/// A busybox image whose app runs `sh -c <first app argument>`.
fn busybox_image(e: &E2e, ports: &[(&str, u32)]) -> PathBuf {
    let out = e.path("busybox.aci");
    if out.exists() {
        return out;
    }
    let mut img = ImageSpec::new("example.com/netcheck", &["/bin/sh", "-c"])
        .file("/bin/busybox", Path::new(BUSYBOX), 0o755)
        .dir("/etc");
    for a in ["sh", "ip", "nc", "cat", "sleep", "echo", "true"] {
        img = img.symlink(&format!("/bin/{a}"), "busybox");
    }
    for (n, p) in ports {
        img = img.port(n, "tcp", *p);
    }
    img.build(&out)
}

/// `rkt run --net=<net> [extra] busybox -- <script>`; returns (output, uuid).
fn run_pod(e: &E2e, net: &str, extra: &[&str], script: &str) -> (std::process::Output, String) {
    let img = busybox_image(e, &[]);
    let uf = e.path(&format!("uuid-{}", rand_suffix()));
    let mut args = vec![
        "run".to_string(),
        e.stage1_flag(),
        format!("--net={net}"),
        format!("--uuid-file-save={}", uf.display()),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend([img.display().to_string(), "--".into(), script.into()]);
    let o = e.run(&args);
    let uuid = std::fs::read_to_string(&uf)
        .unwrap_or_default()
        .trim()
        .to_string();
    (o, uuid)
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed).to_string()
}

/// The leak check's network state of the test's "host" namespace.
fn snapshot(e: &E2e, ipam_dirs: &[PathBuf]) -> NetSnapshot {
    e.host_ns.as_ref().unwrap().net_snapshot(ipam_dirs)
}

fn gc(e: &E2e) {
    let o = e.run(&["gc", "--grace-period=0s"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

fn netns_of(uuid: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/netns/rkt-{uuid}"))
}

/// A one-shot TCP server in the "host" namespace that greets the first client.
fn host_server(e: &E2e) -> std::thread::JoinHandle<bool> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = e.host_ns.as_ref().unwrap().thread(move || {
        let l = TcpListener::bind(("0.0.0.0", SERVER_PORT)).unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            if let Ok((mut s, _)) = l.accept() {
                let _ = s.write_all(b"host-says-hi\n");
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    });
    rx.recv().unwrap();
    h
}

fn ipam_dir(e: &E2e, net: &str) -> PathBuf {
    e.dir().join("networks").join(net)
}

#[test]
fn ns_net_default_reaches_host_and_leaves_nothing() {
    let Some(e) = require("ns_net_default_reaches_host_and_leaves_nothing") else {
        return;
    };
    let ipam = [ipam_dir(&e, "default")];
    let before = snapshot(&e, &ipam);
    let srv = host_server(&e);
    let (o, uuid) = run_pod(
        &e,
        "default",
        &[],
        &format!("ip -4 -o addr; ip route; nc {HOST_ADDR} {SERVER_PORT} </dev/null"),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("eth0") && out.contains("inet 172.16.28."),
        "{out}"
    );
    assert!(out.contains("default via 172.16.28.1"), "{out}");
    assert!(
        out.contains("host-says-hi"),
        "the pod reached the host: {out}"
    );
    assert!(srv.join().unwrap());
    // rkt status: networks= and JSON objects in rkt's shape.
    let st = e.status(&uuid);
    assert!(st.contains("networks=default:ip4=172.16.28."), "{st}");
    let j: serde_json::Value =
        serde_json::from_str(&stdout(&e.run(&["status", "--format=json", &uuid]))).unwrap();
    let n = &j["networks"][0];
    assert_eq!(n["netName"], "default");
    assert_eq!(n["ifName"], "eth0");
    assert_eq!(n["mask"], "255.255.255.0");
    assert_eq!(n["hostIP"], "172.16.28.1");
    assert!(n["pluginPath"].as_str().unwrap().ends_with("/ptp"), "{n}");
    assert!(n["ip"].as_str().unwrap().starts_with("172.16.28."), "{n}");
    assert!(n.get("rktRsConf").is_none());
    let list = stdout(&e.run(&["list", "--no-legend"]));
    assert!(list.contains("default:ip4=172.16.28."), "{list}");
    assert!(netns_of(&uuid).exists(), "the netns lives until gc");
    gc(&e);
    assert!(!netns_of(&uuid).exists());
    assert_eq!(snapshot(&e, &ipam), before);
}

#[test]
fn ns_net_restricted_cannot_route_out() {
    let Some(e) = require("ns_net_restricted_cannot_route_out") else {
        return;
    };
    let ipam = [ipam_dir(&e, "default-restricted")];
    let before = snapshot(&e, &ipam);
    let (o, _) = run_pod(
        &e,
        "default-restricted",
        &[],
        &format!(
            "ip -4 -o addr; ip route; nc -w 2 {HOST_ADDR} {SERVER_PORT} </dev/null && echo REACHED || echo UNREACHABLE"
        ),
    );
    let out = stdout(&o);
    assert!(out.contains("inet 172.17."), "{out}");
    assert!(!out.contains("default via"), "{out}");
    assert!(
        out.contains("UNREACHABLE") && !out.contains("REACHED\n"),
        "{out}"
    );
    gc(&e);
    assert_eq!(snapshot(&e, &ipam), before);
}

#[test]
fn ns_net_none_has_loopback_only_and_host_is_the_host() {
    let Some(e) = require("ns_net_none_has_loopback_only_and_host_is_the_host") else {
        return;
    };
    let (o, uuid) = run_pod(&e, "none", &[], "ip -o link; ip -4 -o addr");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let links: Vec<&str> = out.lines().filter(|l| l.contains(": <")).collect();
    assert_eq!(links.len(), 1, "{out}");
    assert!(
        links[0].contains(": lo:") && out.contains("inet 127.0.0.1"),
        "{out}"
    );
    assert!(e.status(&uuid).contains("networks=\n"));
    let (o, _) = run_pod(&e, "host", &[], "ip -4 -o addr");
    assert!(
        stdout(&o).contains(HOST_ADDR),
        "the host's d0: {}",
        stdout(&o)
    );
    gc(&e);
    assert!(!netns_of(&uuid).exists());
}

#[test]
fn ns_net_named_bridge_and_macvlan_from_net_d() {
    let Some(e) = require("ns_net_named_bridge_and_macvlan_from_net_d") else {
        return;
    };
    let ns = e.host_ns.as_ref().unwrap();
    ns.ip(&["link", "add", "m0", "type", "veth", "peer", "name", "m0p"]);
    ns.ip(&["link", "set", "m0p", "up"]);
    ns.ip(&["link", "set", "m0", "up"]);
    let conf = e.path("conf");
    let netd = conf.join("net.d");
    std::fs::create_dir_all(&netd).unwrap();
    let ipam_br = e.path("ipam-br");
    let ipam_mv = e.path("ipam-mv");
    std::fs::write(
        netd.join("10-br.conf"),
        serde_json::json!({"cniVersion": "0.4.0", "name": "br", "type": "bridge",
            "bridge": "rktbr0", "isGateway": true, "ipMasq": true,
            "ipam": {"type": "host-local", "subnet": "10.77.0.0/24",
                     "dataDir": ipam_br, "routes": [{"dst": "0.0.0.0/0"}]}})
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
    let ipam = [ipam_br.join("br"), ipam_mv.join("mv")];
    let before_links = snapshot(&e, &ipam);
    let img = busybox_image(&e, &[]);
    let uf = e.path("uuid-brmv");
    let o = e.run(&[
        &format!("--local-config={}", conf.display()),
        "run",
        &e.stage1_flag(),
        "--net=br,mv:IP=10.88.0.42",
        &format!("--uuid-file-save={}", uf.display()),
        img.to_str().unwrap(),
        "--",
        "ip -4 -o addr; ip route",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("eth0") && out.contains("inet 10.77.0."),
        "{out}"
    );
    assert!(
        out.contains("eth1") && out.contains("inet 10.88.0.42/24"),
        "CNI_ARGS IP: {out}"
    );
    let st = e.status(&uuid_of(&uf));
    assert!(
        st.contains("br:ip4=10.77.0.") && st.contains("mv:ip4=10.88.0.42"),
        "{st}"
    );
    gc(&e);
    let after = snapshot(&e, &ipam);
    assert_eq!(after.iptables, before_links.iptables);
    assert_eq!(after.ipam, before_links.ipam);
    // The bridge itself stays (as with every CNI runtime); nothing else is new.
    let extra: Vec<_> = after
        .links
        .iter()
        .filter(|l| !before_links.links.contains(l))
        .collect();
    assert!(extra.iter().all(|l| *l == "rktbr0"), "{extra:?}");
}

fn connect_read(addr: &str, port: u16, limit: Duration) -> Result<String, String> {
    let end = Instant::now() + limit;
    let mut last = String::new();
    while Instant::now() < end {
        match TcpStream::connect_timeout(
            &format!("{addr}:{port}").parse().unwrap(),
            Duration::from_secs(2),
        ) {
            Ok(s) => {
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                let mut line = String::new();
                if BufReader::new(s).read_line(&mut line).is_ok() && !line.is_empty() {
                    return Ok(line);
                }
                last = "empty read".into();
            }
            Err(err) => last = err.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last)
}

#[test]
fn ns_net_port_reachable_via_host_ip_and_localhost() {
    let Some(e) = require("ns_net_port_reachable_via_host_ip_and_localhost") else {
        return;
    };
    let img = busybox_image(&e, &[("http", 80)]);
    // portmap's shared chains (CNI-HOSTPORT-DNAT, -MASQ, -SETMARK and their jumps) are made
    // once per host namespace and stay, as with every CNI runtime: a first pod makes them.
    let o = e.run(&[
        "run",
        &e.stage1_flag(),
        "--port=http:8081",
        img.to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    gc(&e);
    let before = snapshot(&e, &[ipam_dir(&e, "default")]);
    let uf = e.path("uuid-port");
    let child = e.spawn(&[
        "run",
        &e.stage1_flag(),
        "--net=default",
        "--port=http:8080",
        &format!("--uuid-file-save={}", uf.display()),
        img.to_str().unwrap(),
        "--",
        "while true; do echo port-ok | nc -l -p 80; done",
    ]);
    let r = e
        .host_ns
        .as_ref()
        .unwrap()
        .thread(|| {
            (
                connect_read(HOST_ADDR, 8080, Duration::from_secs(30)),
                connect_read("127.0.0.1", 8080, Duration::from_secs(10)),
            )
        })
        .join()
        .unwrap();
    let uuid = uuid_of(&uf);
    let o = e.run(&["stop", &uuid]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = wait_output(child, e.timeout());
    assert_eq!(r.0.as_deref(), Ok("port-ok\n"), "via the host's address");
    assert_eq!(r.1.as_deref(), Ok("port-ok\n"), "via 127.0.0.1 (rkt #3251)");
    gc(&e);
    assert_eq!(snapshot(&e, &[ipam_dir(&e, "default")]), before);
}

/// `rkt app sandbox --port NAME:PROTO:PODPORT:HOSTIP:HOSTPORT` (rktlet's hostPort mappings):
/// the sandbox has no app when its network and ports are set up; an app added later that
/// listens on the pod port is reached through the host port, and `rkt gc` leaves the host's
/// network as it was.
#[test]
fn ns_net_sandbox_port_reaches_an_added_app() {
    let Some(e) = require("ns_net_sandbox_port_reaches_an_added_app") else {
        return;
    };
    let img = busybox_image(&e, &[]);
    let limit = Duration::from_secs(30);
    // portmap's shared chains are made once per host namespace by a first pod with a port.
    let (mut first, uuid) = rkt_tests::mutable::start_sandbox(
        &e,
        &["--net=default", "--port=web:tcp:8080:0.0.0.0:8084"],
        limit,
    );
    rkt_tests::mutable::stop_sandbox(&e, &mut first, &uuid, limit);
    gc(&e);
    let before = snapshot(&e, &[ipam_dir(&e, "default")]);
    let (mut sandbox, uuid) = rkt_tests::mutable::start_sandbox(
        &e,
        &["--net=default", "--port=web:tcp:8080:0.0.0.0:8083"],
        limit,
    );
    let m: serde_json::Value =
        serde_json::from_str(&stdout(&e.run(&["cat-manifest", &uuid]))).unwrap();
    assert_eq!(m["ports"][0]["podPort"]["port"], 8080, "{m}");
    for args in [
        vec![
            "app",
            "add",
            &uuid,
            img.to_str().unwrap(),
            "--name=web",
            "--",
            "while true; do echo sandbox-port-ok | nc -l -p 8080; done",
        ],
        vec!["app", "start", &uuid, "--app=web"],
    ] {
        let o = rkt_tests::mutable::app_cmd(&e, &args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    }
    let r = e
        .host_ns
        .as_ref()
        .unwrap()
        .thread(|| {
            (
                connect_read(HOST_ADDR, 8083, Duration::from_secs(30)),
                connect_read("127.0.0.1", 8083, Duration::from_secs(10)),
            )
        })
        .join()
        .unwrap();
    rkt_tests::mutable::stop_sandbox(&e, &mut sandbox, &uuid, limit);
    assert_eq!(
        r.0.as_deref(),
        Ok("sandbox-port-ok\n"),
        "via the host's address"
    );
    assert_eq!(r.1.as_deref(), Ok("sandbox-port-ok\n"), "via 127.0.0.1");
    gc(&e);
    assert_eq!(snapshot(&e, &[ipam_dir(&e, "default")]), before);
}

#[test]
fn ns_net_two_pods_on_default_reach_each_other() {
    let Some(e) = require("ns_net_two_pods_on_default_reach_each_other") else {
        return;
    };
    let img = busybox_image(&e, &[]);
    let uf = e.path("uuid-a");
    let a = e.spawn(&[
        "run",
        &e.stage1_flag(),
        "--net=default",
        &format!("--uuid-file-save={}", uf.display()),
        img.to_str().unwrap(),
        "--",
        "echo from-a | nc -l -p 9000",
    ]);
    // Pod A's address, once its network is up.
    let end = Instant::now() + Duration::from_secs(30);
    let ip = loop {
        if let Ok(u) = std::fs::read_to_string(&uf) {
            let st = e.status(u.trim());
            if let Some(ip) = st
                .lines()
                .find_map(|l| l.strip_prefix("networks=default:ip4="))
            {
                break ip.to_string();
            }
        }
        assert!(Instant::now() < end, "pod A got no address");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (o, _) = run_pod(
        &e,
        "default",
        &[],
        &format!(
            "for i in 1 2 3 4 5 6 7 8 9 10; do nc {ip} 9000 </dev/null && break; sleep 0.5; done"
        ),
    );
    assert!(stdout(&o).contains("from-a"), "{}", stdout(&o));
    let _ = wait_output(a, e.timeout());
    gc(&e);
}

#[test]
fn ns_net_dns_and_hosts_entries_in_the_app() {
    let Some(e) = require("ns_net_dns_and_hosts_entries_in_the_app") else {
        return;
    };
    let (o, _) = run_pod(
        &e,
        "none",
        &[
            "--dns=10.1.1.1",
            "--dns=10.1.1.2",
            "--dns-search=example.org",
            "--dns-opt=ndots:3",
            "--dns-domain=corp.example",
            "--hosts-entry=10.2.2.2=dbhost",
            "--hostname=podhost",
        ],
        "cat /etc/resolv.conf /etc/hosts",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        "nameserver 10.1.1.1\n",
        "nameserver 10.1.1.2\n",
        "search example.org\n",
        "options ndots:3\n",
        "domain corp.example\n",
        "10.2.2.2 dbhost\n",
        "127.0.0.1 localhost",
        "podhost",
    ] {
        assert!(out.contains(want), "{want:?} in {out}");
    }
    let (o, _) = run_pod(&e, "none", &["--dns=host"], "cat /etc/resolv.conf");
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert_eq!(stdout(&o), host);
    gc(&e);
}

#[test]
fn ns_net_sigkilled_launcher_leaves_nothing_after_gc() {
    let Some(e) = require("ns_net_sigkilled_launcher_leaves_nothing_after_gc") else {
        return;
    };
    let ipam = [ipam_dir(&e, "default")];
    let before = snapshot(&e, &ipam);
    let img = busybox_image(&e, &[]);
    let uf = e.path("uuid-kill");
    let mut child = e.spawn(&[
        "run",
        &e.stage1_flag(),
        "--net=default",
        &format!("--uuid-file-save={}", uf.display()),
        img.to_str().unwrap(),
        "--",
        "sleep 600",
    ]);
    let end = Instant::now() + Duration::from_secs(30);
    while !(uf.exists() && e.status(&uuid_of(&uf)).contains("networks=default:ip4=")) {
        assert!(Instant::now() < end, "the pod never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    let uuid = uuid_of(&uf);
    assert!(netns_of(&uuid).exists());
    // The launcher is the rkt process (exec'd into stage1-ns run).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = child.wait();
    let mut buf = String::new();
    let _ = child.stderr.take().map(|mut s| s.read_to_string(&mut buf));
    let end = Instant::now() + Duration::from_secs(20);
    while !e.status(&uuid).contains("state=exited") {
        assert!(
            Instant::now() < end,
            "the pod did not end with its launcher"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_ne!(snapshot(&e, &ipam), before, "the network was there");
    gc(&e);
    assert!(!netns_of(&uuid).exists());
    assert_eq!(snapshot(&e, &ipam), before);
}

#[test]
fn ns_net_failing_or_missing_plugin_is_clear_and_leaves_nothing() {
    let Some(e) = require("ns_net_failing_or_missing_plugin_is_clear_and_leaves_nothing") else {
        return;
    };
    let conf = e.path("conf");
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
    let img = busybox_image(&e, &[]);
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
            "true",
        ]);
        assert_ne!(o.status.code(), Some(0));
        let err = stderr(&o);
        let name = net.rsplit(',').next().unwrap();
        assert!(
            err.contains(&format!("network {name}")) && err.contains(plugin),
            "{err}"
        );
        if uf.exists() {
            assert!(!netns_of(&uuid_of(&uf)).exists(), "{net}: netns left");
        }
        let mut after = snapshot(&e, &ipam);
        after.links.retain(|l| l != "rktbad0");
        assert_eq!(after, before, "{net}: left something behind");
    }
    gc(&e);
}

#[test]
fn ns_net_rm_tears_down_like_gc() {
    let Some(e) = require("ns_net_rm_tears_down_like_gc") else {
        return;
    };
    let ipam = [ipam_dir(&e, "default")];
    let before = snapshot(&e, &ipam);
    let (o, uuid) = run_pod(&e, "default", &[], "true");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(netns_of(&uuid).exists());
    assert_ne!(snapshot(&e, &ipam), before);
    let o = e.run(&["rm", &uuid]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!netns_of(&uuid).exists());
    assert_eq!(snapshot(&e, &ipam), before);
}
