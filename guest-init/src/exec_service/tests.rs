//! The service over a unix socket pair, commands unconfined (the test runs unprivileged).

use super::*;
use pod_abi::exec::{decode, StoppedApp};
use pod_abi::plan::AppPlan;

fn plan(apps: &[&str]) -> Plan {
    let app = |name: &str| {
        let mut a: AppPlan = crate::mounts::tests::app(name);
        a.env = vec![("PATH".into(), "/usr/bin:/bin".into())];
        a
    };
    Plan {
        stop_grace_secs: 1,
        ..Plan::new(
            "u".into(),
            "h".into(),
            apps.iter().map(|n| app(n)).collect(),
        )
    }
}

#[derive(Debug, Default)]
struct Outcome {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    errors: Vec<String>,
    exit: Option<i32>,
    report: Option<StopReport>,
}

fn frames_of(bytes: &[u8]) -> Outcome {
    let mut o = Outcome::default();
    let mut at = 0;
    while let Some((f, n)) = decode(bytes.get(at..).unwrap_or_default()).unwrap() {
        at += n;
        match f {
            Frame::Stdout(d) => o.stdout.extend_from_slice(&d),
            Frame::Stderr(d) => o.stderr.extend_from_slice(&d),
            Frame::Error(e) => o.errors.push(e),
            Frame::Exit(c) => o.exit = Some(c),
            Frame::StopReport(r) => o.report = Some(r),
            f => panic!("host frame from the guest: {f:?}"),
        }
    }
    assert_eq!(at, bytes.len(), "trailing bytes");
    o
}

/// Serves one session on a socket pair; the client writes `input` (then keeps its side open
/// unless `close`) and reads everything.
fn session(plan: &Plan, first: &[u8], then: Vec<(Duration, Vec<u8>)>) -> Outcome {
    let (client, server) = UnixStream::pair().unwrap();
    let ctx = Ctx {
        plan,
        ctl: None,
        confinement: Confinement::Unconfined,
    };
    std::thread::scope(|s| {
        s.spawn(move || serve_session(server, &ctx));
        let mut w = client.try_clone().unwrap();
        let first = first.to_vec();
        s.spawn(move || {
            w.write_all(&first).unwrap();
            for (pause, bytes) in then {
                std::thread::sleep(pause);
                if w.write_all(&bytes).is_err() {
                    return;
                }
            }
        });
        let mut all = Vec::new();
        (&client).read_to_end(&mut all).unwrap();
        frames_of(&all)
    })
}

fn exec(app: &str, argv: &[&str], tty: bool) -> Vec<u8> {
    Request::Exec {
        app: app.into(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        tty,
        rows: 30,
        cols: 100,
    }
    .to_line()
}

fn sh(script: &str) -> Vec<u8> {
    exec("", &["sh", "-c", script], false)
}

#[test]
fn exit_codes_and_both_streams() {
    let p = plan(&["a"]);
    let o = session(&p, &sh("echo out; echo err >&2; exit 7"), vec![]);
    assert_eq!(
        (o.stdout.as_slice(), o.stderr.as_slice()),
        (&b"out\n"[..], &b"err\n"[..])
    );
    assert_eq!(o.exit, Some(7));
    let o = session(&p, &sh("kill -9 $$"), vec![]);
    assert_eq!(o.exit, Some(SIGNAL_BASE + 9));
    let o = session(&p, &exec("", &["/no/such/binary"], false), vec![]);
    assert_eq!(o.exit, Some(pod_abi::exit::APP_NOT_FOUND));
    assert!(
        o.errors.iter().any(|e| e.contains("/no/such/binary")),
        "{o:?}"
    );
}

#[test]
fn apps_are_picked_by_name() {
    let p = plan(&["a", "b"]);
    let o = session(&p, &sh("true"), vec![]);
    assert_eq!(o.exit, Some(STAGE1_FAILED));
    assert!(o.errors[0].contains("several apps"), "{o:?}");
    let o = session(&p, &exec("b", &["sh", "-c", "exit 3"], false), vec![]);
    assert_eq!(o.exit, Some(3));
    let o = session(&p, &exec("c", &["true"], false), vec![]);
    assert_eq!(o.errors, vec!["no app \"c\" in the pod".to_string()]);
    assert_eq!(o.exit, Some(STAGE1_FAILED));
}

#[test]
fn stdin_to_eof_byte_exact() {
    let p = plan(&["a"]);
    let data: Vec<u8> = (0..3 * MAX_PAYLOAD + 17)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut input = encoded(&Frame::Stdin(data.clone()));
    input.extend(encoded(&Frame::StdinEof));
    let mut first = exec("", &["cat"], false);
    first.extend_from_slice(&input);
    let o = session(&p, &first, vec![]);
    assert_eq!(o.exit, Some(0));
    assert!(o.stdout == data, "{} bytes back", o.stdout.len());
}

#[test]
fn a_tty_with_a_resize_and_a_signal() {
    let p = plan(&["a"]);
    let script = "stty size; read x; stty size; exec sleep 30";
    let o = session(
        &p,
        &exec("", &["sh", "-c", script], true),
        vec![
            (
                Duration::from_millis(300),
                encoded(&Frame::Resize {
                    rows: 40,
                    cols: 120,
                }),
            ),
            (Duration::ZERO, encoded(&Frame::Stdin(b"\n".to_vec()))),
            (Duration::from_millis(300), encoded(&Frame::Signal(15))),
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("30 100\r\n") && out.contains("40 120\r\n"),
        "{out:?}"
    );
    assert_eq!(o.exit, Some(SIGNAL_BASE + 15), "{o:?}");
}

#[test]
fn hostile_clients_get_an_error() {
    let p = plan(&["a"]);
    let o = session(&p, b"not json\n", vec![]);
    assert_eq!(o.exit, Some(STAGE1_FAILED));
    assert!(o.errors[0].starts_with("bad request"), "{o:?}");
    let mut first = exec("", &["sleep", "30"], false);
    first.extend_from_slice(&[0xee, 0, 0, 0, 0]);
    let t = Instant::now();
    let o = session(&p, &first, vec![]);
    assert!(o.errors[0].contains("unknown frame type"), "{o:?}");
    assert_eq!(
        o.exit,
        Some(SIGNAL_BASE + 1),
        "SIGHUP ends the command: {o:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    let mut huge = exec("", &["true"], false);
    huge.pop();
    huge.extend(vec![b' '; MAX_REQUEST + 10]);
    let o = session(&p, &huge, vec![]);
    assert!(o.errors[0].contains("longer than"), "{o:?}");
}

#[test]
fn stop_relays_pid1s_report() {
    let p = plan(&["a"]);
    let (pid1, theirs) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        None,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let ctx = Ctx {
        plan: &p,
        ctl: Some(theirs.as_raw_fd()),
        confinement: Confinement::Unconfined,
    };
    let (client, server) = UnixStream::pair().unwrap();
    let report = StopReport {
        grace_secs: 4,
        apps: vec![StoppedApp {
            name: "a".into(),
            sigterm: true,
            sigkill: true,
            status: Some(137),
        }],
    };
    std::thread::scope(|s| {
        s.spawn(move || serve_session(server, &ctx));
        (&client)
            .write_all(
                &Request::Stop {
                    grace_secs: Some(4),
                }
                .to_line(),
            )
            .unwrap();
        // PID 1's side.
        let mut got = None;
        for _ in 0..100 {
            if let Ok(Some(Request::Stop { grace_secs })) = read_ctl_request(&pid1) {
                got = Some(grace_secs);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(got, Some(Some(4)));
        let r = report.clone();
        let pid1 = &pid1;
        let done = s.spawn(move || {
            let t = Instant::now();
            deliver_report(pid1, &r);
            t.elapsed()
        });
        let mut all = Vec::new();
        (&client).read_to_end(&mut all).unwrap();
        drop(client);
        assert_eq!(frames_of(&all).report, Some(report.clone()));
        assert!(done.join().unwrap() < REPORT_WAIT, "acknowledged");
    });
}

/// PID 1's end and the session's end of a stop channel, and the host's and the session's ends
/// of an exec stream.
fn channels() -> ((OwnedFd, OwnedFd), (UnixStream, UnixStream)) {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let ctl = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    (ctl, UnixStream::pair().unwrap())
}

fn datagram(fd: &OwnedFd, bytes: &[u8]) {
    nix::sys::socket::send(fd.as_raw_fd(), bytes, nix::sys::socket::MsgFlags::empty()).unwrap();
}

#[test]
fn ask_pid1_sends_the_line_and_skips_what_it_does_not_accept() {
    let ((pid1, session), (_host, stream)) = channels();
    datagram(&pid1, b"other");
    datagram(&pid1, b"mine");
    let mut buf = [0u8; 64];
    let got = ask_pid1(
        session.as_fd(),
        &stream,
        b"req",
        &mut buf,
        HostReady::Wins,
        |d| (d == b"mine").then_some(d.len()),
    );
    assert_eq!(got.unwrap(), Pid1Answer::Answer(4));
    let mut req = [0u8; 16];
    let n = nix::sys::socket::recv(
        pid1.as_raw_fd(),
        &mut req,
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    assert_eq!(&req[..n], b"req");
}

#[test]
fn ask_pid1_host_readiness_wins_or_yields_as_asked() {
    for (host, want) in [
        (HostReady::Wins, Pid1Answer::HostGone),
        (HostReady::Yields, Pid1Answer::Answer(())),
    ] {
        let ((pid1, session), (host_end, stream)) = channels();
        datagram(&pid1, b"answer");
        drop(host_end); // EOF on the host's side, and PID 1 has answered: both are ready.
        let mut buf = [0u8; 64];
        let got = ask_pid1(session.as_fd(), &stream, b"req", &mut buf, host, |_| {
            Some(())
        });
        assert_eq!(got.unwrap(), want, "{host:?}");
    }
}

#[test]
fn ask_pid1_ends_when_either_side_goes_away() {
    let ((pid1, session), (_host, stream)) = channels();
    datagram(&pid1, b"not this");
    drop(pid1);
    let mut buf = [0u8; 64];
    let got = ask_pid1(
        session.as_fd(),
        &stream,
        b"req",
        &mut buf,
        HostReady::Yields,
        |_| None::<()>,
    );
    // The send fails (no reader) or the wait sees the close.
    assert!(matches!(got, Err(_) | Ok(Pid1Answer::Pid1Gone)), "{got:?}");

    let ((_pid1, session), (host_end, stream)) = channels();
    drop(host_end);
    let got = ask_pid1(
        session.as_fd(),
        &stream,
        b"req",
        &mut buf,
        HostReady::Yields,
        |_| Some(()),
    );
    assert_eq!(got.unwrap(), Pid1Answer::HostGone);
}
