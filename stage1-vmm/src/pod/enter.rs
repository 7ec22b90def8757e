//! The kvm flavor's `enter` and graceful `stop`, over the exec channel: guest-init's exec
//! service on vsock port `pod_abi::vsock::EXEC_PORT`, reached through the pod directory's
//! `vsock.sock` (`pod_abi::vsock::connect`), speaking `pod_abi::exec`.
//!
//! - [`enter`]: sends an `exec` request (a pseudo-terminal when stdin is a terminal), then
//!   proxies as `stage1_common::session` does (raw mode, stdin, resizes, forwarded signals,
//!   output byte for byte); returns the `Exit` code.
//! - [`attach`]: sends an `attach` request, which guest-init's exec service relays to the app's
//!   multiplexer, and proxies the same way (signals detach instead of being forwarded).
//! - [`stop_over_channel`]: sends a `stop` request and returns guest-init's report (which it
//!   sends once the apps ended, just before the VM powers off).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use pod_abi::attach::Attach;
use pod_abi::exec::{read_by, read_room, Frame, FrameReader, Request, StopReport};
use pod_abi::vsock::{connect, ConnectError, EXEC_PORT, SOCKET};
use stage1_common::session::{self, SessionError};

/// Time the guest has to accept a connection (a slow, nested host included).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Errors of the channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// No connection to the exec service.
    #[error("cannot reach guest-init's exec service")]
    Connect(#[from] ConnectError),
    /// The pod directory's socket is not a socket (a pod-planted file, a symlink).
    #[error("{0} is not the VMM's socket")]
    NotASocket(String),
    /// The session on the channel failed (I/O, protocol, an early end).
    #[error(transparent)]
    Session(#[from] SessionError),
}

impl ChannelError {
    fn io(e: std::io::Error) -> Self {
        ChannelError::Session(SessionError::Io(e))
    }
    fn protocol(t: String) -> Self {
        ChannelError::Session(SessionError::Protocol(t))
    }
}

/// Connects to the exec service; refuses anything but a socket at `vsock.sock`.
pub fn open(pod_dir: &Path) -> Result<UnixStream, ChannelError> {
    use std::os::unix::fs::FileTypeExt;
    let path = pod_dir.join(SOCKET);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_socket() => {}
        Ok(_) => return Err(ChannelError::NotASocket(path.display().to_string())),
        // Missing: let connect say so.
        Err(_) => {}
    }
    Ok(connect(pod_dir, EXEC_PORT, CONNECT_TIMEOUT)?)
}

/// [`open`], retried while the guest refuses (it is still booting: a pod counts as running
/// from its VMM's start, and rktlet adds apps right after `rkt app sandbox`) until
/// [`CONNECT_TIMEOUT`]. For `enter`, `attach` and the app requests; `stop` falls back to the
/// control line at once instead.
pub fn open_when_up(pod_dir: &Path) -> Result<UnixStream, ChannelError> {
    let deadline = std::time::Instant::now() + CONNECT_TIMEOUT;
    loop {
        match open(pod_dir) {
            Err(ChannelError::Connect(ConnectError::Refused(_)))
                if std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            r => return r,
        }
    }
}

/// Runs `argv` in app `app` of the pod; returns its exit code.
pub fn enter(pod_dir: &Path, app: &str, argv: Vec<String>) -> Result<i32, ChannelError> {
    // Before any thread exists, so that only the session's signal thread takes them.
    session::block_signals().map_err(ChannelError::io)?;
    let (tty, rows, cols) = session::terminal(true);
    let stream = open_when_up(pod_dir)?;
    let req = Request::Exec {
        app: app.to_string(),
        argv,
        tty,
        rows,
        cols,
    };
    let opts = session::Options {
        tty,
        send_stdin: true,
        forward_signals: true,
    };
    Ok(session::run(stream, &req, opts)?)
}

/// Attaches to app `app`'s streams through the exec channel (guest-init's exec service relays
/// to the app's multiplexer); returns 0 once the app's streams closed.
pub fn attach(pod_dir: &Path, app: &str, attach: Attach) -> Result<i32, ChannelError> {
    session::block_signals().map_err(ChannelError::io)?;
    let stream = open_when_up(pod_dir)?;
    Ok(session::attach(stream, app, attach)?)
}

/// Asks guest-init to stop the pod (`grace_secs`: `None` for the plan's) and waits at most
/// `wait` in all for its report (an error then, `TimedOut`).
pub fn stop_over_channel(
    pod_dir: &Path,
    grace_secs: Option<u32>,
    wait: Duration,
) -> Result<Option<StopReport>, ChannelError> {
    let mut stream = open(pod_dir)?;
    stream
        .write_all(&Request::Stop { grace_secs }.to_line())
        .map_err(ChannelError::io)?;
    let deadline = Instant::now() + wait;
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; read_room(&reader)];
    loop {
        match reader
            .next_frame()
            .map_err(|e| ChannelError::protocol(e.to_string()))?
        {
            Some(Frame::StopReport(r)) => return Ok(Some(r)),
            Some(Frame::Error(t)) => {
                return Err(ChannelError::protocol(pod_abi::text::error_line(&t)))
            }
            Some(other) => {
                return Err(ChannelError::protocol(format!(
                    "unexpected frame {other:?}"
                )))
            }
            None => {}
        }
        let room = read_room(&reader);
        match read_by(
            &mut stream,
            buf.get_mut(..room).unwrap_or_default(),
            deadline,
        ) {
            // The VM went down before the report reached us.
            Ok(0) => return Ok(None),
            Ok(n) => reader.push(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ChannelError::io(e)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use pod_abi::exec::{encoded, StoppedApp};
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    /// A fake VMM + guest: answers the handshake, reads the request line, writes `answer`.
    fn fake(answer: Vec<u8>) -> (tempfile::TempDir, std::thread::JoinHandle<String>) {
        let dir = tempfile::tempdir().unwrap();
        let l = UnixListener::bind(dir.path().join(SOCKET)).unwrap();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = std::io::BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            (&s).write_all(b"OK 1024\n").unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            (&s).write_all(&answer).unwrap();
            line
        });
        (dir, h)
    }

    #[test]
    fn stop_returns_the_report() {
        let report = StopReport {
            grace_secs: 1,
            apps: vec![StoppedApp {
                name: "a".into(),
                sigterm: true,
                sigkill: false,
                status: Some(0),
            }],
        };
        let (dir, h) = fake(encoded(&Frame::StopReport(report.clone())));
        let got = stop_over_channel(dir.path(), Some(1), Duration::from_secs(5)).unwrap();
        assert_eq!(got, Some(report));
        assert_eq!(
            Request::parse(h.join().unwrap().as_bytes()).unwrap(),
            Request::Stop {
                grace_secs: Some(1)
            }
        );
        let (dir, _h) = fake(encoded(&Frame::Error("no".into())));
        assert!(matches!(
            stop_over_channel(dir.path(), None, Duration::from_secs(5)),
            Err(ChannelError::Session(SessionError::Protocol(t))) if t == "no"
        ));
        let (dir, _h) = fake(Vec::new());
        assert_eq!(
            stop_over_channel(dir.path(), None, Duration::from_secs(5)).unwrap(),
            None
        );
    }

    /// Attack (audit host F5): a guest's error text and the app names in its stop report carry
    /// terminal escapes; what `rkt stop` prints has them escaped.
    #[test]
    fn guest_text_is_escaped() {
        let (dir, _h) = fake(encoded(&Frame::Error("\u{1b}]0;x\u{7}owned\nmore".into())));
        assert!(matches!(
            stop_over_channel(dir.path(), None, Duration::from_secs(5)),
            Err(ChannelError::Session(SessionError::Protocol(t))) if t == "\\x1b]0;x\\x07owned"
        ));
        let report = StopReport {
            grace_secs: 1,
            apps: vec![StoppedApp {
                name: "a\u{1b}[2J\rrkt: fake".into(),
                sigterm: true,
                sigkill: false,
                status: Some(0),
            }],
        };
        let (dir, _h) = fake(encoded(&Frame::StopReport(report)));
        let got = stop_over_channel(dir.path(), None, Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert_eq!(
            got.lines(),
            ["app a\\x1b[2J\\rrkt: fake: stopped by SIGTERM, status 0"]
        );
    }

    /// Attack (audit host F4): after the handshake the guest sends a stop report one byte at
    /// a time, each within the per-read timeout `rkt stop` used to set. It now gets `wait` in
    /// all, then an error (so `stop` falls back to SIGTERM).
    #[test]
    fn a_trickled_report_ends_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let l = UnixListener::bind(dir.path().join(SOCKET)).unwrap();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = std::io::BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            (&s).write_all(b"OK 1024\n").unwrap();
            r.read_line(&mut line).unwrap();
            let frame = encoded(&Frame::Error("x".repeat(1000)));
            for byte in frame.chunks(1) {
                std::thread::sleep(Duration::from_millis(100));
                if (&s).write_all(byte).is_err() {
                    return;
                }
            }
        });
        let start = Instant::now();
        let e = stop_over_channel(dir.path(), None, Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(&e, ChannelError::Session(SessionError::Io(io))
                if io.kind() == std::io::ErrorKind::TimedOut),
            "{e:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        h.join().unwrap();
    }

    #[test]
    fn a_planted_file_is_not_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/run/elsewhere.sock", dir.path().join(SOCKET)).unwrap();
        assert!(matches!(open(dir.path()), Err(ChannelError::NotASocket(_))));
    }
}
