//! The host end of a `pod_abi::exec` session, shared by the kvm flavor's `enter` (over the
//! exec channel) and both flavors' `attach` (to an app's multiplexer, directly or relayed):
//! sends the request line, puts a terminal in raw mode when asked (restored on every way
//! out), copies stdin into `Stdin` frames and `StdinEof` (a thread), turns SIGWINCH into
//! `Resize` and, when asked, SIGINT, SIGTERM, SIGHUP and SIGQUIT into `Signal` frames (a
//! thread taking them with `sigwaitinfo`), writes `Stdout`/`Stderr` frames byte for byte, and
//! returns the `Exit` code.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pod_abi::exec::{encoded, read_room, Frame, FrameReader, Request};

use crate::{signals, terminal};

/// Signals an `enter` forwards to its command; an attacher instead detaches on them.
const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// What the session does besides copying frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Our stdin is a terminal the remote end shares: raw mode, window sizes.
    pub tty: bool,
    /// Copy our stdin into `Stdin` frames.
    pub send_stdin: bool,
    /// Forward SIGINT, SIGTERM, SIGHUP, SIGQUIT as `Signal` frames (`enter`); else they end
    /// the session, leaving the remote end running (`attach`: detach), as does `^]` typed
    /// three times on a raw terminal.
    pub forward_signals: bool,
}

/// Errors of a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Reading or writing the connection failed.
    #[error("the exec channel failed")]
    Io(#[source] std::io::Error),
    /// The remote end broke the protocol.
    #[error("the exec channel: {0}")]
    Protocol(String),
    /// The remote end ended the session without an exit status.
    #[error("the pod closed the exec channel before the command's exit status")]
    Closed,
}

/// What a detaching attacher prints (on a raw terminal with `\r\n`).
const DETACHED: &str = "detached; the app goes on";

/// Writes one frame, whole, on the shared write side.
fn put(w: &Mutex<UnixStream>, f: &Frame) -> std::io::Result<()> {
    let mut s = w.lock().unwrap_or_else(|p| p.into_inner());
    s.write_all(&encoded(f))
}

/// The window size of the terminal on `fd`, if it is one.
pub fn winsize(fd: libc::c_int) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the valid struct passed; result checked.
    (unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0).then_some((ws.ws_row, ws.ws_col))
}

/// Whether our stdin is a terminal to share (`want` and a terminal), and its size (rows,
/// columns; 0 when unknown).
pub fn terminal(want: bool) -> (bool, u16, u16) {
    // SAFETY: isatty on fd 0; no memory involved.
    let tty = want && unsafe { libc::isatty(0) } == 1;
    let (rows, cols) = if tty {
        winsize(0).unwrap_or((0, 0))
    } else {
        (0, 0)
    };
    (tty, rows, cols)
}

/// The signals a session's signal thread takes.
fn taken() -> Vec<libc::c_int> {
    let mut set = FORWARDED.to_vec();
    set.push(libc::SIGWINCH);
    set
}

/// Blocks the signals a session takes in its signal thread; call before any thread exists.
pub fn block_signals() -> std::io::Result<()> {
    signals::block(&taken())
}

/// Attaches to app `app`'s streams over `stream` (an app's multiplexer, or the exec channel
/// that relays to it; signals blocked with [`block_signals`]): the terminal shared when the
/// attacher writes to the app's; signals detach. Returns 0 once the app's streams closed.
pub fn attach(
    stream: UnixStream,
    app: &str,
    attach: pod_abi::attach::Attach,
) -> Result<i32, SessionError> {
    let (tty, rows, cols) = terminal(attach.tty_in);
    let req = Request::Attach {
        app: app.to_string(),
        attach,
        rows,
        cols,
    };
    let opts = Options {
        tty,
        send_stdin: attach.input(),
        forward_signals: false,
    };
    run(stream, &req, opts)
}

/// Runs a session on `stream` (already connected, signals blocked with [`block_signals`]):
/// sends `req`, then proxies; returns the remote `Exit` code.
pub fn run(stream: UnixStream, req: &Request, opts: Options) -> Result<i32, SessionError> {
    let prog = crate::log::prog();
    (&stream)
        .write_all(&req.to_line())
        .map_err(SessionError::Io)?;
    let _raw = if opts.tty {
        Some(terminal::RawMode::enter(std::io::stdin().as_fd()).map_err(SessionError::Io)?)
    } else {
        None
    };
    let w = Arc::new(Mutex::new(stream.try_clone().map_err(SessionError::Io)?));
    if opts.send_stdin {
        spawn_stdin(Arc::clone(&w), opts).map_err(SessionError::Io)?;
    }
    spawn_signals(Arc::clone(&w), opts).map_err(SessionError::Io)?;
    let mut reader = FrameReader::default();
    let mut buf = vec![0u8; read_room(&reader)];
    let (mut out, mut err) = (std::io::stdout().lock(), std::io::stderr().lock());
    loop {
        while let Some(f) = reader
            .next_frame()
            .map_err(|e| SessionError::Protocol(e.to_string()))?
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
                    let nl = if opts.tty { "\r\n" } else { "\n" };
                    let _ = write!(err, "{prog}: {t}{nl}");
                }
                Frame::Exit(code) => {
                    let _ = out.flush();
                    return Ok(code);
                }
                other => {
                    return Err(SessionError::Protocol(format!(
                        "unexpected frame {other:?}"
                    )))
                }
            }
        }
        let room = read_room(&reader);
        let n = match (&stream).read(buf.get_mut(..room).unwrap_or_default()) {
            Ok(0) => return Err(SessionError::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SessionError::Io(e)),
        };
        reader.push(buf.get(..n).unwrap_or_default());
    }
}

/// Ends the process after a detach: the terminal restored, a line on stderr, status 0.
fn detach(tty: bool) -> ! {
    terminal::restore();
    let nl = if tty { "\r\n" } else { "\n" };
    let _ = write!(
        std::io::stderr(),
        "{nl}{}: {DETACHED}{nl}",
        crate::log::prog()
    );
    std::process::exit(0)
}

/// Copies stdin into `Stdin` frames, then `StdinEof`; on a raw terminal of an attacher, `^]`
/// three times detaches.
fn spawn_stdin(w: Arc<Mutex<UnixStream>>, opts: Options) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut buf = vec![0u8; pod_abi::exec::MAX_PAYLOAD];
            let mut stdin = std::io::stdin().lock();
            let mut esc = terminal::EscapeDetector::default();
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let d = buf.get(..n).unwrap_or_default().to_vec();
                        if opts.tty && !opts.forward_signals && esc.feed_all(&d, Instant::now()) {
                            detach(true);
                        }
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

/// Turns the blocked signals into `Resize` (SIGWINCH, with a terminal) and `Signal` frames,
/// or a detach.
fn spawn_signals(w: Arc<Mutex<UnixStream>>, opts: Options) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let sigset = signals::sigset(&taken());
            loop {
                // SAFETY: a valid set and a null siginfo pointer.
                let sig = unsafe { libc::sigwaitinfo(&sigset, std::ptr::null_mut()) };
                let f = match sig {
                    libc::SIGWINCH if opts.tty => match winsize(0) {
                        Some((rows, cols)) => Frame::Resize { rows, cols },
                        None => continue,
                    },
                    libc::SIGWINCH => continue,
                    s if s > 0 && opts.forward_signals => Frame::Signal(s),
                    s if s > 0 => detach(opts.tty),
                    _ => continue,
                };
                if put(&w, &f).is_err() {
                    return;
                }
            }
        })
        .map(|_| ())
}
