//! App requests of a mutable pod in an exec session: the session hands the request line to
//! PID 1 over the stop channel (`SOCK_SEQPACKET`) and relays its `AppReply` to the host as
//! `Exit(0)`, or `Error` and `Exit(1)`. PID 1 does the work (`crate::supervisor`), since the
//! apps are its children. The host runs one app request per pod at a time (stage0 holds the
//! pod's app lock), so the reply on the shared channel is this session's; a reply for another
//! app is skipped.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::MsgFlags;
use pod_abi::exec::{AppReply, Frame, Request};

use super::{linger, send, Ctx, HANGUP_GRACE};
use crate::info;

/// Relays one app request to PID 1 and its answer to the host.
pub(super) fn app_session(stream: &UnixStream, ctx: &Ctx<'_>, req: &Request) {
    let app = req.app_op().unwrap_or_default();
    let answer = match ask_pid1(stream, ctx, req, app) {
        Ok(None) => vec![Frame::Exit(0)],
        Ok(Some(why)) | Err(why) => vec![Frame::Error(why), Frame::Exit(1)],
    };
    send(stream, &answer);
    linger(stream, HANGUP_GRACE);
}

/// `Ok(None)`: done; `Ok(Some(reason))`: PID 1 refused; `Err`: the channel failed.
fn ask_pid1(
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
    nix::sys::socket::send(ctl.as_raw_fd(), &req.to_line(), MsgFlags::empty())
        .map_err(|e| format!("ask PID 1: {}", e.desc()))?;
    info!("app {app}: {} requested on the exec channel", op_name(req));
    let mut buf = vec![0u8; 4096];
    loop {
        let mut fds = [
            PollFd::new(ctl, PollFlags::POLLIN),
            PollFd::new(stream.as_fd(), PollFlags::POLLIN),
        ];
        if poll(&mut fds, PollTimeout::NONE).is_err() {
            continue;
        }
        let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
        if ready(&fds[1]) && !ready(&fds[0]) {
            // The host may only wait; EOF or anything else ends the session (PID 1 still
            // completes the request).
            return Err("the host went away".into());
        }
        if !ready(&fds[0]) {
            continue;
        }
        let n = match nix::sys::socket::recv(ctl.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) | Err(_) => return Err("PID 1 closed the channel".into()),
            Ok(n) => n,
        };
        match serde_json::from_slice::<AppReply>(buf.get(..n).unwrap_or_default()) {
            Ok(r) if r.app == app => return Ok(r.error),
            // A stop report: the pod is going down.
            Err(_) if n > 0 => return Err("the pod is stopping".into()),
            _ => {}
        }
    }
}

fn op_name(req: &Request) -> &'static str {
    match req {
        Request::AppAdd { .. } => "add",
        Request::AppStart { .. } => "start",
        Request::AppStop { .. } => "stop",
        Request::AppRm { .. } => "rm",
        Request::Exec { .. } | Request::Stop { .. } => "?",
    }
}

/// PID 1: sends `r` to the session waiting on `ctl`.
pub fn send_app_reply(ctl: &OwnedFd, r: &AppReply) {
    let bytes = serde_json::to_vec(r).unwrap_or_default();
    if let Err(e) = nix::sys::socket::send(ctl.as_fd().as_raw_fd(), &bytes, MsgFlags::empty()) {
        info!("app {}: cannot answer the request: {}", r.app, e.desc());
    }
}
