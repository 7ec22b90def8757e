//! The kvm flavor's `enter` and graceful `stop`, over the exec channel: guest-init's exec
//! service on vsock port `pod_abi::vsock::EXEC_PORT`, reached through the pod directory's
//! `vsock.sock` (`pod_abi::vsock::connect`), speaking `pod_abi::exec`.
//!
//! - [`enter`]: sends an `exec` request (a pseudo-terminal when stdin is a terminal, which is
//!   put in raw mode with `stage1_common::terminal` and restored on every way out), then
//!   proxies: stdin -> `Stdin`/`StdinEof` frames (a thread), SIGWINCH -> `Resize`, SIGINT,
//!   SIGTERM, SIGHUP, SIGQUIT -> `Signal` (a thread taking them with `sigtimedwait`),
//!   `Stdout`/`Stderr` frames -> stdout/stderr byte for byte; returns the `Exit` code.
//! - [`stop_over_channel`]: sends a `stop` request and returns guest-init's report (which it
//!   sends once the apps ended, just before the VM powers off).

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pod_abi::exec::{encoded, read_room, Frame, FrameReader, Request, StopReport};
use pod_abi::vsock::{connect, ConnectError, EXEC_PORT, SOCKET};
use stage1_common::signals;
use stage1_common::terminal;

use super::PROG;

/// Time the guest has to accept a connection (a slow, nested host included).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Signals forwarded to the entered command.
const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Errors of the channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// No connection to the exec service.
    #[error("cannot reach guest-init's exec service")]
    Connect(#[from] ConnectError),
    /// The pod directory's socket is not a socket (a pod-planted file, a symlink).
    #[error("{0} is not the VMM's socket")]
    NotASocket(String),
    /// Reading or writing the channel failed.
    #[error("the exec channel failed")]
    Io(#[source] std::io::Error),
    /// The guest broke the protocol.
    #[error("the exec channel: {0}")]
    Protocol(String),
    /// The guest ended the session without an exit status.
    #[error("the pod closed the exec channel before the command's exit status")]
    Closed,
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

/// The window size of the terminal on `fd`, if it is one.
fn winsize(fd: libc::c_int) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the valid struct passed; result checked.
    (unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0).then_some((ws.ws_row, ws.ws_col))
}

/// Writes one frame, whole, on the shared write side.
fn put(w: &Mutex<UnixStream>, f: &Frame) -> std::io::Result<()> {
    let mut s = w.lock().unwrap_or_else(|p| p.into_inner());
    s.write_all(&encoded(f))
}

/// Runs `argv` in app `app` of the pod; returns its exit code.
pub fn enter(pod_dir: &Path, app: &str, argv: Vec<String>) -> Result<i32, ChannelError> {
    // Before any thread exists, so that only the signal thread takes them.
    let mut set = FORWARDED.to_vec();
    set.push(libc::SIGWINCH);
    signals::block(&set).map_err(ChannelError::Io)?;
    // SAFETY: isatty on fd 0; no memory involved.
    let tty = unsafe { libc::isatty(0) } == 1;
    let (rows, cols) = if tty {
        winsize(0).unwrap_or((0, 0))
    } else {
        (0, 0)
    };
    let stream = open(pod_dir)?;
    let req = Request::Exec {
        app: app.to_string(),
        argv,
        tty,
        rows,
        cols,
    };
    (&stream)
        .write_all(&req.to_line())
        .map_err(ChannelError::Io)?;
    let _raw = if tty {
        Some(terminal::RawMode::enter(std::io::stdin().as_fd()).map_err(ChannelError::Io)?)
    } else {
        None
    };
    let w = Arc::new(Mutex::new(stream.try_clone().map_err(ChannelError::Io)?));
    spawn_stdin(Arc::clone(&w)).map_err(ChannelError::Io)?;
    spawn_signals(Arc::clone(&w), set, tty).map_err(ChannelError::Io)?;
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; read_room(&reader)];
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    loop {
        while let Some(f) = reader
            .next_frame()
            .map_err(|e| ChannelError::Protocol(e.to_string()))?
        {
            match f {
                Frame::Stdout(d) => {
                    // A closed stdout (`| head`) must not stop stderr or the exit status.
                    let _ = out.write_all(&d).and_then(|()| out.flush());
                }
                Frame::Stderr(d) => {
                    let _ = err.write_all(&d);
                }
                Frame::Error(t) => {
                    let nl = if tty { "\r\n" } else { "\n" };
                    let _ = write!(err, "{PROG}: {t}{nl}");
                }
                Frame::Exit(code) => {
                    let _ = out.flush();
                    return Ok(code);
                }
                other => {
                    return Err(ChannelError::Protocol(format!(
                        "unexpected frame {other:?}"
                    )))
                }
            }
        }
        let room = read_room(&reader);
        let n = match (&stream).read(buf.get_mut(..room).unwrap_or_default()) {
            Ok(0) => return Err(ChannelError::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ChannelError::Io(e)),
        };
        reader.push(buf.get(..n).unwrap_or_default());
    }
}

/// Copies stdin into `Stdin` frames, then `StdinEof`.
fn spawn_stdin(w: Arc<Mutex<UnixStream>>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut buf = vec![0u8; pod_abi::exec::MAX_PAYLOAD];
            let mut stdin = std::io::stdin().lock();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let d = buf.get(..n).unwrap_or_default().to_vec();
                        if put(&w, &Frame::Stdin(d)).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = put(&w, &Frame::StdinEof);
        })
        .map(|_| ())
}

/// Turns the blocked signals `set` into `Resize` (SIGWINCH, with a terminal) and `Signal`
/// frames.
fn spawn_signals(
    w: Arc<Mutex<UnixStream>>,
    set: Vec<libc::c_int>,
    tty: bool,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let sigset = signals::sigset(&set);
            loop {
                // SAFETY: a valid set and a null siginfo pointer.
                let sig = unsafe { libc::sigwaitinfo(&sigset, std::ptr::null_mut()) };
                let f = match sig {
                    libc::SIGWINCH if tty => match winsize(0) {
                        Some((rows, cols)) => Frame::Resize { rows, cols },
                        None => continue,
                    },
                    libc::SIGWINCH => continue,
                    s if s > 0 => Frame::Signal(s),
                    _ => continue,
                };
                if put(&w, &f).is_err() {
                    return;
                }
            }
        })
        .map(|_| ())
}

/// Asks guest-init to stop the pod (`grace_secs`: `None` for the plan's) and waits at most
/// `wait` for its report.
pub fn stop_over_channel(
    pod_dir: &Path,
    grace_secs: Option<u32>,
    wait: Duration,
) -> Result<Option<StopReport>, ChannelError> {
    let mut stream = open(pod_dir)?;
    stream
        .write_all(&Request::Stop { grace_secs }.to_line())
        .map_err(ChannelError::Io)?;
    stream
        .set_read_timeout(Some(wait))
        .map_err(ChannelError::Io)?;
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; read_room(&reader)];
    loop {
        match reader
            .next_frame()
            .map_err(|e| ChannelError::Protocol(e.to_string()))?
        {
            Some(Frame::StopReport(r)) => return Ok(Some(r)),
            Some(Frame::Error(t)) => return Err(ChannelError::Protocol(t)),
            Some(other) => {
                return Err(ChannelError::Protocol(format!(
                    "unexpected frame {other:?}"
                )))
            }
            None => {}
        }
        let room = read_room(&reader);
        match stream.read(buf.get_mut(..room).unwrap_or_default()) {
            // The VM went down before the report reached us.
            Ok(0) => return Ok(None),
            Ok(n) => reader.push(buf.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ChannelError::Io(e)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use pod_abi::exec::StoppedApp;
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
            Err(ChannelError::Protocol(t)) if t == "no"
        ));
        let (dir, _h) = fake(Vec::new());
        assert_eq!(
            stop_over_channel(dir.path(), None, Duration::from_secs(5)).unwrap(),
            None
        );
    }

    #[test]
    fn a_planted_file_is_not_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/run/elsewhere.sock", dir.path().join(SOCKET)).unwrap();
        assert!(matches!(open(dir.path()), Err(ChannelError::NotASocket(_))));
    }
}
