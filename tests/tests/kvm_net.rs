//! Networking of KVM pods, end to end through `rkt run --stage1=kvm`: loopback works in the guest
//! (guest-init brings `lo` up; before, 127.0.0.1 was "Network is unreachable" inside a KVM pod).
//!
//! Marked as a guest test (`E2e::require_kvm`): where this host's KVM cannot boot Linux it prints
//! `SKIP: <name>: ...; runs under ci/nested-kvm` and ci/test.sh runs it inside ci/nested-kvm.
//! The virtio-net device, the tap and the tc redirects are tested at the VMM level by
//! `stage1-vmm/tests/linux_net.rs`; wiring `--net` into the kvm pod is the CNI step's.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use rkt_tests::{skip, stderr, stdout, E2e, ImageSpec};

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
    let src = e.path("lo.c");
    let bin = e.path("lo");
    std::fs::write(&src, LO_C).unwrap();
    match Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
    {
        Ok(o) if o.status.success() => Some(bin),
        Ok(o) => {
            skip(
                test,
                &format!("cc -static failed: {}", String::from_utf8_lossy(&o.stderr)),
            );
            None
        }
        Err(err) => {
            skip(test, &format!("no cc: {err}"));
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

/// The static busybox of Debian's `busybox-static` (ci/deps.sh).
const BUSYBOX: &str = "/bin/busybox";

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
    let Some(e) = E2e::require_kvm(name) else {
        return;
    };
    let Some(ns) = e.host_ns.as_ref() else {
        skip(
            name,
            "cannot create a test network namespace (ip netns add)",
        );
        return;
    };
    if !Path::new(BUSYBOX).exists() {
        skip(
            name,
            "no static busybox (ci/deps.sh installs busybox-static)",
        );
        return;
    }
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
    for a in ["sh", "ip", "nc", "cat", "echo"] {
        img = img.symlink(&format!("/bin/{a}"), "busybox");
    }
    img.build(&out);
    out
}

#[test]
fn kvm_net_none_dns_hosts_and_port() {
    let name = "kvm_net_none_dns_hosts_and_port";
    let Some(e) = E2e::require_kvm(name) else {
        return;
    };
    let Some(ns) = e.host_ns.as_ref() else {
        skip(
            name,
            "cannot create a test network namespace (ip netns add)",
        );
        return;
    };
    if !Path::new(BUSYBOX).exists() {
        skip(
            name,
            "no static busybox (ci/deps.sh installs busybox-static)",
        );
        return;
    }
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
    let got = ns
        .thread(|| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            loop {
                if let Ok(mut c) = std::net::TcpStream::connect("127.0.0.1:8080") {
                    let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(20)));
                    let mut s = String::new();
                    if std::io::Read::read_to_string(&mut c, &mut s).is_ok() && !s.is_empty() {
                        return Ok(s);
                    }
                }
                if std::time::Instant::now() > deadline {
                    return Err("nothing answered on 127.0.0.1:8080 within 120 s".to_string());
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        })
        .join()
        .unwrap();
    let uuid = rkt_tests::uuid_of(&uf);
    let o = e.run(&["stop", &uuid]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = rkt_tests::wait_output(child, e.timeout());
    assert_eq!(got.as_deref(), Ok("port-ok\n"));
    let o = e.run(&["gc", "--grace-period=0s"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}
