#![allow(clippy::unwrap_used)]

use std::process::Command;

use super::*;

#[test]
fn messages_are_encoded_aligned() {
    let m = Msg::new(RTM_NEWLINK, NLM_F_ACK, &ifinfomsg(7, IFF_UP, IFF_UP))
        .attr(IFLA_MTU, &1400u32.to_ne_bytes())
        .attr(IFLA_IFNAME, b"eth0\0")
        .finish(42);
    assert_eq!(m.len(), 16 + 16 + 8 + 12);
    assert_eq!(u32_at(&m, 0), Some(m.len() as u32));
    assert_eq!(u16_at(&m, 4), Some(RTM_NEWLINK));
    assert_eq!(u16_at(&m, 6), Some(NLM_F_ACK | NLM_F_REQUEST));
    assert_eq!(u32_at(&m, 8), Some(42));
    assert_eq!(u32_at(&m, 16 + 4), Some(7));
    let msgs = messages(&m);
    assert_eq!(msgs.len(), 1);
    let a = attrs(msgs[0].2, 16);
    assert_eq!(
        a,
        vec![
            (IFLA_MTU, &1400u32.to_ne_bytes()[..]),
            (IFLA_IFNAME, &b"eth0\0"[..])
        ]
    );
    // Truncated or lying lengths end parsing instead of panicking.
    assert!(messages(&m[..20]).is_empty());
    let mut bad = m.clone();
    bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
    assert!(messages(&bad).is_empty());
    assert_eq!(attrs(&[8, 0, 1, 0, 1], 0), vec![]);
}

#[test]
fn a_missing_config_is_loopback_only_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(read_config(&dir.path().join("net.json")), Ok(None));
    let p = dir.path().join("bad.json");
    std::fs::write(&p, b"{\"interfaces\": [{\"mac\": \"zz\"}]}").unwrap();
    assert!(read_config(&p).is_err());
    std::fs::write(&p, vec![b' '; GUEST_NET_MAX + 10]).unwrap();
    assert!(read_config(&p).is_err());
}

fn ip(args: &str) -> String {
    let out = Command::new("ip").args(args.split(' ')).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// In a network namespace of its own (this test's thread only): `lo` comes up, an interface
/// found by MAC gets its MTU and addresses, the routes follow (on-link first), and 127.0.0.1
/// takes TCP connections; an interface of a restored pod is found by the maker's MAC for its
/// position and given the pod's.
#[test]
fn configures_loopback_interfaces_and_routes_in_a_fresh_namespace() {
    // SAFETY: geteuid takes no arguments.
    if unsafe { libc::geteuid() } != 0 {
        println!(
            "SKIP: configures_loopback_interfaces_and_routes_in_a_fresh_namespace: needs root"
        );
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: unshare with a constant flag; it moves only this thread to a new namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        // Children forked from this thread share its namespace.
        ip("link add e0 address 02:42:ac:10:1c:05 type veth peer name e1");
        assert!(!ip("-o link show lo").contains(",UP"), "lo starts down");

        let cfg = GuestNetConfig::from_json(
            br#"{"interfaces": [{"mac": "02:42:ac:10:1c:05",
                                 "addresses": ["172.16.28.5/24", "fd00::5/64"], "mtu": 1400}],
                 "routes": [{"dst": "172.16.28.1/32", "mac": "02:42:ac:10:1c:05"},
                            {"dst": "172.16.28.0/24", "gateway": "172.16.28.1"},
                            {"dst": "0.0.0.0/0", "gateway": "172.16.28.1"},
                            {"dst": "10.1.0.0/16", "gateway": "172.16.28.1",
                             "mac": "02:42:ac:10:1c:05"}]}"#,
        )
        .unwrap();
        let mut nl = Netlink::open().unwrap();
        assert!(nl.links().unwrap().iter().any(|l| l.name == "lo" && !l.up));
        nl.loopback_up().unwrap();
        assert!(nl.links().unwrap().iter().any(|l| l.name == "lo" && l.up));
        nl.loopback_up().unwrap();
        let errors = configure(&mut nl, &cfg);
        assert!(errors.is_empty(), "{errors:?}");

        let lo = ip("-o link show lo");
        assert!(lo.contains("UP"), "{lo}");
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();

        let e0 = ip("-o link show e0");
        assert!(e0.contains("mtu 1400") && e0.contains(",UP"), "{e0}");
        let addrs = ip("-o addr show dev e0");
        assert!(addrs.contains("inet 172.16.28.5/24"), "{addrs}");
        assert!(addrs.contains("inet6 fd00::5/64"), "{addrs}");
        let routes = ip("-4 route show");
        for want in [
            "default via 172.16.28.1 dev e0",
            "172.16.28.0/24 via 172.16.28.1 dev e0",
            "172.16.28.1 dev e0",
            "10.1.0.0/16 via 172.16.28.1 dev e0",
        ] {
            assert!(routes.contains(want), "{want:?} not in\n{routes}");
        }

        // Idempotent (a guest-init restart would re-apply); an unknown MAC is reported.
        assert!(configure(&mut nl, &cfg).is_empty());
        let other = GuestNetConfig::from_json(br#"{"interfaces": [{"mac": "02:00:00:00:00:99"}]}"#)
            .unwrap();
        let errors = configure(&mut nl, &other);
        assert_eq!(
            errors,
            vec!["no interface with MAC 02:00:00:00:00:99".to_string()]
        );

        // A restored pod's cards have the snapshot maker's MACs: the second interface of the
        // config takes the card with the maker's second MAC and gets the pod's MAC; its
        // routes follow it.
        let maker = MacAddr(pod_abi::snapshot::maker_mac(1).unwrap());
        ip(&format!(
            "link add m1 address {maker} type veth peer name m2"
        ));
        let restored = GuestNetConfig::from_json(
            br#"{"interfaces": [{"mac": "02:42:ac:10:1c:05"},
                                {"mac": "02:42:ac:10:1d:07", "addresses": ["172.16.29.7/24"]}],
                 "routes": [{"dst": "10.2.0.0/16", "gateway": "172.16.29.1",
                             "mac": "02:42:ac:10:1d:07"}]}"#,
        )
        .unwrap();
        let errors = configure(&mut nl, &restored);
        assert!(errors.is_empty(), "{errors:?}");
        let m1 = ip("-o link show m1");
        assert!(
            m1.contains("link/ether 02:42:ac:10:1d:07") && m1.contains(",UP"),
            "{m1}"
        );
        assert!(ip("-o addr show dev m1").contains("inet 172.16.29.7/24"));
        let routes = ip("-4 route show");
        assert!(
            routes.contains("10.2.0.0/16 via 172.16.29.1 dev m1"),
            "{routes}"
        );
        // Without a card of the maker's MAC at that position it is still an error.
        let none = GuestNetConfig::from_json(
            br#"{"interfaces": [{"mac": "02:00:00:00:00:99"}, {"mac": "02:00:00:00:00:98"}]}"#,
        )
        .unwrap();
        assert_eq!(configure(&mut nl, &none).len(), 2);
    })
    .join()
    .unwrap();
}
