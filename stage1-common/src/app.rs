//! The app entrypoints' client side (mutable pods, `rkt app add|start|stop|rm`): one app
//! request over the pod's exec channel (`pod_abi::exec`), answered by an `Exit` frame (0: done)
//! after any `Error` frames. The flavor supplies the connected stream (ns: the pod directory's
//! `exec.sock`; kvm: the exec service over vsock).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use pod_abi::exec::{read_by, read_room, Frame, FrameReader, Request};
use pod_abi::stage1::{AppArgs, Entrypoint};

/// Attaches `app/add`'s volumes (`args.mounts`: detached mount trees stage0 passed open) at
/// their targets beneath `app_root`, after setting the mount attributes `attrs` on each, and its
/// log file (`args.log_fd`) at `pod_abi::attach::guest_log_file` in `stage1_root`; both
/// paths in the mount namespace of `pid` (the flavor has checked that `pid` is its pod's;
/// `pod_abi::mount_api::attach_in_namespace`). Nothing to do without either.
pub fn attach_mounts(
    pid: i32,
    stage1_root: &std::path::Path,
    app_root: &std::path::Path,
    args: &AppArgs,
    attrs: u64,
) -> Result<(), AppError> {
    use std::os::fd::{AsFd, BorrowedFd};
    if !args.has_trees() {
        return Ok(());
    }
    let inherited = |fd: i32, flag: &str| -> Result<BorrowedFd<'static>, AppError> {
        // SAFETY: fcntl(F_GETFD) only asks whether the descriptor is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(AppError::Protocol(format!(
                "{flag}={fd}: no such open descriptor"
            )));
        }
        // SAFETY: the descriptor is open (checked above), inherited for this purpose and never
        // closed while this process runs.
        Ok(unsafe { BorrowedFd::borrow_raw(fd) })
    };
    let mut trees = Vec::new();
    for m in &args.mounts {
        trees.push(pod_abi::mount_api::Attach {
            tree: inherited(m.fd, "--mount-fd")?,
            target: &m.target,
        });
    }
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt")).map_err(AppError::Io)?;
    if !trees.is_empty() {
        pod_abi::mount_api::attach_in_namespace(ns.as_fd(), app_root, &trees, attrs)
            .map_err(|e| AppError::Refused(format!("app {}: volumes: {e}", args.app)))?;
    }
    if let Some(fd) = args.log_fd {
        let base = stage1_root.join(pod_abi::attach::GUEST_LOG_BASE.trim_start_matches('/'));
        let target = pod_abi::attach::log_target(&args.app);
        let tree = [pod_abi::mount_api::Attach {
            tree: inherited(fd, "--log-fd")?,
            target: &target,
        }];
        pod_abi::mount_api::attach_in_namespace(ns.as_fd(), &base, &tree, attrs)
            .map_err(|e| AppError::Refused(format!("app {}: log file: {e}", args.app)))?;
    }
    Ok(())
}

/// How long guest-init may take in all to answer an app request, however the answer trickles
/// in; a stop waits for the app's grace period (the plan's, at most a few minutes in
/// practice) before its answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(600);

/// A failed app request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Reading or writing the channel failed.
    #[error("the exec channel failed")]
    Io(#[source] std::io::Error),
    /// guest-init refused or failed the request (its reason).
    #[error("{0}")]
    Refused(String),
    /// The channel broke the protocol or closed without an answer.
    #[error("the exec channel: {0}")]
    Protocol(String),
}

/// The request entrypoint `entry` sends for `args`; `None` for entrypoints that are not app
/// entrypoints.
pub fn request_for(entry: Entrypoint, args: &AppArgs) -> Option<Request> {
    let app = args.app.clone();
    Some(match entry {
        Entrypoint::AppAdd => Request::AppAdd { app },
        Entrypoint::AppStart => Request::AppStart { app },
        Entrypoint::AppStop => Request::AppStop {
            app,
            grace_secs: None,
        },
        Entrypoint::AppRm => Request::AppRm { app },
        _ => return None,
    })
}

/// Sends `req` on `stream` and waits (at most [`REPLY_TIMEOUT`] in all) for the answer. Frames are
/// bounded (`pod_abi::exec::MAX_PAYLOAD`); error texts are cut to one line of 512 characters,
/// control characters escaped.
pub fn send_request(stream: UnixStream, req: &Request) -> Result<(), AppError> {
    send_request_within(stream, req, REPLY_TIMEOUT)
}

/// [`send_request`] with an overall wait of `wait`.
fn send_request_within(
    mut stream: UnixStream,
    req: &Request,
    wait: Duration,
) -> Result<(), AppError> {
    let deadline = Instant::now() + wait;
    stream.write_all(&req.to_line()).map_err(AppError::Io)?;
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; read_room(&reader)];
    let mut why: Option<String> = None;
    loop {
        while let Some(f) = reader
            .next_frame()
            .map_err(|e| AppError::Protocol(e.to_string()))?
        {
            match f {
                Frame::Exit(0) if why.is_none() => return Ok(()),
                Frame::Exit(c) => {
                    return Err(AppError::Refused(
                        why.unwrap_or_else(|| format!("failed with status {c}")),
                    ))
                }
                Frame::Error(t) => why = Some(pod_abi::text::error_line(&t)),
                other => {
                    return Err(AppError::Protocol(format!("unexpected frame {other:?}")));
                }
            }
        }
        let room = read_room(&reader);
        match read_by(
            &mut stream,
            buf.get_mut(..room).unwrap_or_default(),
            deadline,
        ) {
            Ok(0) => {
                return Err(why
                    .map(AppError::Refused)
                    .unwrap_or_else(|| AppError::Protocol("closed before the answer".into())))
            }
            Ok(n) => reader.push(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(AppError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pod_abi::exec::encoded;
    use std::io::Read;

    fn serve(answer: Vec<Frame>) -> (UnixStream, std::thread::JoinHandle<Vec<u8>>) {
        let (a, mut b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            while b.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
                line.push(byte[0]);
            }
            for f in answer {
                b.write_all(&encoded(&f)).unwrap();
            }
            line
        });
        (a, t)
    }

    /// Attack (audit host F4): the guest answers one byte of a frame at a time, each well
    /// within any per-read timeout. The request still fails at its overall deadline.
    #[test]
    fn a_trickled_answer_ends_at_the_deadline() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let frame = encoded(&Frame::Error("x".repeat(1000)));
            for byte in frame.chunks(1) {
                std::thread::sleep(Duration::from_millis(100));
                if b.write_all(byte).is_err() {
                    return;
                }
            }
        });
        let req = Request::AppStart { app: "web".into() };
        let start = Instant::now();
        let e = send_request_within(a, &req, Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(&e, AppError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut),
            "{e:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        t.join().unwrap();
    }

    #[test]
    fn answers_become_results() {
        let args = AppArgs {
            debug: false,
            uuid: "u".into(),
            app: "web".into(),
            mounts: Vec::new(),
            log_fd: None,
        };
        let req = request_for(Entrypoint::AppStart, &args).unwrap();
        let (s, t) = serve(vec![Frame::Exit(0)]);
        send_request(s, &req).unwrap();
        assert_eq!(Request::parse(&t.join().unwrap()).unwrap(), req);
        let (s, _t) = serve(vec![
            Frame::Error("no app \"web\"\nmore".into()),
            Frame::Exit(1),
        ]);
        let e = send_request(s, &req).unwrap_err();
        assert_eq!(e.to_string(), "no app \"web\"");
        // Attack (audit host F5): terminal escapes in the guest's error text are escaped.
        let (s, _t) = serve(vec![
            Frame::Error("\u{1b}]0;x\u{7}\u{1b}[2Jowned".into()),
            Frame::Exit(1),
        ]);
        let e = send_request(s, &req).unwrap_err();
        assert_eq!(e.to_string(), "\\x1b]0;x\\x07\\x1b[2Jowned");
        let (s, _t) = serve(vec![]);
        assert!(matches!(send_request(s, &req), Err(AppError::Protocol(_))));
        assert!(request_for(Entrypoint::Run, &args).is_none());
    }
}
