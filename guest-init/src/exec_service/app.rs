//! App requests of a mutable pod in an exec session: the session hands the request line to
//! PID 1 over the stop channel (`SOCK_SEQPACKET`) and relays its `AppReply` to the host as
//! `Exit(0)`, or `Error` and `Exit(1)`. PID 1 does the work (`crate::supervisor`), since the
//! apps are its children. The host runs one app request per pod at a time (stage0 holds the
//! pod's app lock), so the reply on the shared channel is this session's; a reply for another
//! app is skipped.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::MsgFlags;
use pod_abi::exec::{AppReply, Frame, Request};

use super::{ask_pid1, linger, send, Ctx, HostReady, Pid1Answer, HANGUP_GRACE};
use crate::info;

/// Relays one app request to PID 1 and its answer to the host.
pub(super) fn app_session(stream: &UnixStream, ctx: &Ctx<'_>, req: &Request) {
    let app = req.app_op().unwrap_or_default();
    let answer = match ask_app_op(stream, ctx, req, app) {
        Ok(None) => vec![Frame::Exit(0)],
        Ok(Some(why)) | Err(why) => vec![Frame::Error(why), Frame::Exit(1)],
    };
    send(stream, &answer);
    linger(stream, HANGUP_GRACE);
}

/// `Ok(None)`: done; `Ok(Some(reason))`: PID 1 refused; `Err`: the channel failed.
fn ask_app_op(
    stream: &UnixStream,
    ctx: &Ctx<'_>,
    req: &Request,
    app: &str,
) -> Result<Option<String>, String> {
    let Some(ctl) = ctx.ctl else {
        return Err("no supervisor for app requests".into());
    };
    // SAFETY: `ctl` stays open for the session's life (inherited from the server).
    let ctl = unsafe { BorrowedFd::borrow_raw(ctl) };
    let mut buf = vec![0u8; 4096];
    info!("app {app}: {} requested on the exec channel", op_name(req));
    // PID 1 completes a request even when the host went away, so its answer is read first.
    let asked = ask_pid1(
        ctl,
        stream,
        &req.to_line(),
        &mut buf,
        HostReady::Yields,
        |d| {
            match serde_json::from_slice::<AppReply>(d) {
                Ok(r) if r.app == app => Some(Ok(r.error)),
                Ok(_) => None,
                // A stop report: the pod is going down.
                Err(_) if !d.is_empty() => Some(Err("the pod is stopping".to_string())),
                Err(_) => None,
            }
        },
    );
    match asked {
        Err(e) => Err(format!("ask PID 1: {}", e.desc())),
        Ok(Pid1Answer::Answer(answer)) => answer,
        Ok(Pid1Answer::HostGone) => Err("the host went away".into()),
        Ok(Pid1Answer::Pid1Gone) => Err("PID 1 closed the channel".into()),
    }
}

fn op_name(req: &Request) -> &'static str {
    match req {
        Request::AppAdd { .. } => "add",
        Request::AppStart { .. } => "start",
        Request::AppStop { .. } => "stop",
        Request::AppRm { .. } => "rm",
        Request::Exec { .. } | Request::Stop { .. } | Request::Attach { .. } => "?",
    }
}

/// PID 1: sends `r` to the session waiting on `ctl`.
pub fn send_app_reply(ctl: &OwnedFd, r: &AppReply) {
    let bytes = serde_json::to_vec(r).unwrap_or_default();
    if let Err(e) = nix::sys::socket::send(ctl.as_fd().as_raw_fd(), &bytes, MsgFlags::empty()) {
        info!("app {}: cannot answer the request: {}", r.app, e.desc());
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use pod_abi::exec::{AppReply, Frame, FrameReader, Request};
    use pod_abi::plan::Plan;

    use super::super::{read_ctl_request, serve_session, Confinement, Ctx};
    use super::send_app_reply;

    fn frames(bytes: &[u8]) -> Vec<Frame> {
        let mut r = FrameReader::default();
        r.push(bytes);
        let mut out = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            out.push(f);
        }
        out
    }

    /// One app request through a session: PID 1 gets the request, its answer reaches the host.
    fn round_trip(req: &Request, error: Option<&str>) -> Vec<Frame> {
        let p = Plan::from_json(
            br#"{"version":1,"uuid":"u","hostname":"h","stopGraceSecs":1,"apps":[],"mutable":true}"#,
        )
        .unwrap();
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
        std::thread::scope(|s| {
            s.spawn(move || serve_session(server, &ctx));
            (&client).write_all(&req.to_line()).unwrap();
            let mut got = None;
            for _ in 0..200 {
                if let Ok(Some(r)) = read_ctl_request(&pid1) {
                    got = Some(r);
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(got.as_ref(), Some(req));
            // A reply for another app is not this session's.
            send_app_reply(
                &pid1,
                &AppReply {
                    app: "other".into(),
                    error: None,
                },
            );
            send_app_reply(
                &pid1,
                &AppReply {
                    app: req.app_op().unwrap().into(),
                    error: error.map(String::from),
                },
            );
            let mut all = Vec::new();
            (&client).read_to_end(&mut all).unwrap();
            drop(client);
            frames(&all)
        })
    }

    #[test]
    fn app_requests_reach_pid1_and_its_answer_the_host() {
        let start = Request::AppStart { app: "web".into() };
        assert_eq!(round_trip(&start, None), vec![Frame::Exit(0)]);
        let rm = Request::AppRm { app: "web".into() };
        assert_eq!(
            round_trip(&rm, Some("app \"web\" is running; stop it first")),
            vec![
                Frame::Error("app \"web\" is running; stop it first".into()),
                Frame::Exit(1)
            ]
        );
    }
}
