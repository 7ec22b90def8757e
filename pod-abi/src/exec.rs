//! The exec channel's protocol (kvm flavor: `rkt enter` and `rkt stop` over vsock port
//! [`crate::vsock::EXEC_PORT`], served by guest-init).
//!
//! 1. The host sends one [`Request`] as a JSON line of at most [`MAX_REQUEST`] bytes
//!    (newline included): `{"op":"exec",...}`, `{"op":"stop",...}`, or an app request of a
//!    mutable pod (`app_add`, `app_start`, `app_stop`, `app_rm`; answered by `Exit(0)`, or
//!    `Error` and `Exit(1)`).
//! 2. Then both directions carry [`Frame`]s: `[type u8][len u32 BE][payload]`, payload at most
//!    [`MAX_PAYLOAD`] bytes. Host -> guest: [`Frame::Stdin`], [`Frame::StdinEof`],
//!    [`Frame::Resize`], [`Frame::Signal`]. Guest -> host: [`Frame::Stdout`], [`Frame::Stderr`],
//!    [`Frame::Error`], [`Frame::Exit`] (the last frame of an exec session), and
//!    [`Frame::StopReport`] (the answer to a stop, sent before the VM powers off).
//!
//! Exit codes follow rkt's convention: the command's status, 128+signal when a signal ended it,
//! 126/127 when it could not be executed, 125 when it could not be confined (after an
//! [`Frame::Error`] with the reason). [`encode`] and [`decode`] are pure; [`FrameReader`]
//! buffers a byte stream into frames.

use serde::{Deserialize, Serialize};

/// Longest request line, newline included, in bytes.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Largest frame payload, in bytes.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Size of a frame header (`type` and `len`), in bytes.
pub const HEADER: usize = 5;

/// What the host asks for, the first line on a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Run `argv` in app `app` (the only app when empty), confined as the app's processes.
    Exec {
        /// App name; empty: the pod's only app.
        app: String,
        /// Command and arguments (not empty).
        argv: Vec<String>,
        /// Give the command a pseudo-terminal (stdin, stdout and stderr) instead of pipes.
        tty: bool,
        /// Terminal rows (with `tty`; 0: leave the default).
        #[serde(default)]
        rows: u16,
        /// Terminal columns (with `tty`; 0: leave the default).
        #[serde(default)]
        cols: u16,
    },
    /// Stop the pod gracefully (SIGTERM to the apps, the grace period, SIGKILL, post-stop
    /// handlers, statuses, poweroff), answered by a [`Frame::StopReport`].
    Stop {
        /// Grace period in seconds; `None`: the launch plan's.
        #[serde(default)]
        grace_secs: Option<u32>,
    },
    /// Attach to app `app`'s streams (`crate::attach`): sent by `rkt attach` to the exec
    /// service (kvm) or to the app's multiplexer (ns, and the exec service's relay); answered by
    /// `Stdout`/`Stderr` frames until the app's streams close (`Exit(0)`).
    Attach {
        /// App name (ACName).
        app: String,
        /// What to attach.
        attach: crate::attach::Attach,
        /// Terminal rows (with a tty; 0: leave the size).
        #[serde(default)]
        rows: u16,
        /// Terminal columns (with a tty; 0: leave the size).
        #[serde(default)]
        cols: u16,
    },
    /// Mutable pods (`rkt app add`): the host has put the app's tree at
    /// `/opt/stage2/<app>/rootfs` and its entry in the launch plan; guest-init reads the plan
    /// again and sets the app's environment up, without starting it. Answered by `Exit(0)`, or
    /// `Error` and `Exit(1)`, as every app request.
    AppAdd {
        /// App name (ACName).
        app: String,
    },
    /// Start an added (or exited) app, supervised like the apps of `rkt run`.
    AppStart {
        /// App name (ACName).
        app: String,
    },
    /// Stop a running app: SIGTERM, SIGKILL after the grace period; answered once it exited
    /// (its status file written).
    AppStop {
        /// App name (ACName).
        app: String,
        /// Grace period in seconds; `None`: the launch plan's.
        #[serde(default)]
        grace_secs: Option<u32>,
    },
    /// Forget a stopped app: its mounts in the pod are detached and its status files removed
    /// (the host then removes its tree and its plan entry).
    AppRm {
        /// App name (ACName).
        app: String,
    },
}

/// PID 1's answer to an app request, from PID 1 to the exec session (one `SOCK_SEQPACKET`
/// message, JSON); the session turns it into `Exit(0)` or `Error` and `Exit(1)` frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppReply {
    /// The app the request named.
    pub app: String,
    /// Why the request failed; `None`: done.
    #[serde(default)]
    pub error: Option<String>,
}

/// Whether `s` is an appc ACName (`[a-z0-9]+(-[a-z0-9]+)*`, at most 512 bytes): the form of
/// every app name, checked before a name becomes part of a path.
pub fn is_app_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 512
        && s.split('-').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// Errors reading a request or a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The request line is longer than [`MAX_REQUEST`].
    #[error("request longer than {MAX_REQUEST} bytes")]
    RequestTooLong,
    /// The request line is not a valid request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A frame's length exceeds [`MAX_PAYLOAD`].
    #[error("frame of {0} bytes exceeds {MAX_PAYLOAD}")]
    TooLong(u32),
    /// Unknown frame type.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// A frame whose payload does not fit its type.
    #[error("malformed frame of type {0}")]
    Malformed(u8),
}

impl Request {
    /// The request as its line (JSON and `\n`).
    pub fn to_line(&self) -> Vec<u8> {
        // Serializing these plain types cannot fail.
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parses a request line (with or without its newline).
    pub fn parse(line: &[u8]) -> Result<Self, ProtoError> {
        if line.len() > MAX_REQUEST {
            return Err(ProtoError::RequestTooLong);
        }
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let r: Request =
            serde_json::from_slice(line).map_err(|e| ProtoError::BadRequest(e.to_string()))?;
        if let Request::Exec { argv, .. } = &r {
            if argv.is_empty() {
                return Err(ProtoError::BadRequest("empty argv".into()));
            }
        }
        if let Some(app) = r.app_op().or(match &r {
            Request::Attach { app, .. } => Some(app.as_str()),
            _ => None,
        }) {
            if !is_app_name(app) {
                return Err(ProtoError::BadRequest(format!("invalid app name {app:?}")));
            }
        }
        Ok(r)
    }

    /// The app an app request (`app_add`, `app_start`, `app_stop`, `app_rm`) names; `None`
    /// for `exec` and `stop`.
    pub fn app_op(&self) -> Option<&str> {
        match self {
            Request::AppAdd { app }
            | Request::AppStart { app }
            | Request::AppStop { app, .. }
            | Request::AppRm { app } => Some(app),
            Request::Exec { .. } | Request::Stop { .. } | Request::Attach { .. } => None,
        }
    }
}

/// What happened to one app during a stop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoppedApp {
    /// App name.
    pub name: String,
    /// It was running and got SIGTERM.
    pub sigterm: bool,
    /// It was still running at the end of the grace period and got SIGKILL.
    pub sigkill: bool,
    /// Its exit status (`None`: unknown).
    pub status: Option<i32>,
}

/// The answer to [`Request::Stop`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopReport {
    /// The grace period applied, in seconds.
    pub grace_secs: u32,
    /// Every app of the pod, in plan order.
    pub apps: Vec<StoppedApp>,
}

impl StopReport {
    /// Human-readable lines, one per app (`app web: stopped by SIGTERM, status 143`). The
    /// report comes from the guest: control characters in names are escaped.
    pub fn lines(&self) -> Vec<String> {
        self.apps
            .iter()
            .map(|a| {
                let how = match (a.sigterm, a.sigkill) {
                    (_, true) => "killed with SIGKILL after the grace period",
                    (true, false) => "stopped by SIGTERM",
                    (false, false) => "had already exited",
                };
                let status = a
                    .status
                    .map_or_else(|| "unknown status".to_string(), |s| format!("status {s}"));
                let name = crate::text::escape_control(&a.name);
                format!("app {name}: {how}, {status}")
            })
            .collect()
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Host -> guest: bytes for the command's stdin (or terminal).
    Stdin(Vec<u8>),
    /// Host -> guest: the host's stdin ended; the command's stdin is closed (with a tty, the
    /// terminal's EOF character is sent instead).
    StdinEof,
    /// Host -> guest: the terminal's new size.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Host -> guest: deliver signal `n` to the command (its process group).
    Signal(i32),
    /// Guest -> host: the command's stdout (with a tty: the terminal's output).
    Stdout(Vec<u8>),
    /// Guest -> host: the command's stderr.
    Stderr(Vec<u8>),
    /// Guest -> host: the command ended with this exit code (the session's last frame).
    Exit(i32),
    /// Guest -> host: why the request failed (then [`Frame::Exit`] or the end of the stream).
    Error(String),
    /// Guest -> host: the outcome of a stop.
    StopReport(StopReport),
}

const T_STDIN: u8 = 1;
const T_STDIN_EOF: u8 = 2;
const T_RESIZE: u8 = 3;
const T_SIGNAL: u8 = 4;
const T_STDOUT: u8 = 16;
const T_STDERR: u8 = 17;
const T_EXIT: u8 = 18;
const T_ERROR: u8 = 19;
const T_STOP_REPORT: u8 = 20;

impl Frame {
    /// Whether the host sends this frame (else the guest does).
    pub fn from_host(&self) -> bool {
        matches!(
            self,
            Frame::Stdin(_) | Frame::StdinEof | Frame::Resize { .. } | Frame::Signal(_)
        )
    }
}

/// Appends `f` to `out`. Data frames longer than [`MAX_PAYLOAD`] are split into several;
/// an error text or report is truncated to it.
pub fn encode(f: &Frame, out: &mut Vec<u8>) {
    let mut put = |t: u8, p: &[u8]| {
        let p = p.get(..MAX_PAYLOAD).unwrap_or(p);
        out.push(t);
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    };
    let mut data = |t: u8, d: &[u8]| {
        if d.is_empty() {
            put(t, d);
        }
        for c in d.chunks(MAX_PAYLOAD) {
            put(t, c);
        }
    };
    match f {
        Frame::Stdin(d) => data(T_STDIN, d),
        Frame::Stdout(d) => data(T_STDOUT, d),
        Frame::Stderr(d) => data(T_STDERR, d),
        Frame::StdinEof => put(T_STDIN_EOF, &[]),
        Frame::Resize { rows, cols } => {
            let mut p = rows.to_be_bytes().to_vec();
            p.extend_from_slice(&cols.to_be_bytes());
            put(T_RESIZE, &p);
        }
        Frame::Signal(n) => put(T_SIGNAL, &n.to_be_bytes()),
        Frame::Exit(c) => put(T_EXIT, &c.to_be_bytes()),
        Frame::Error(t) => put(T_ERROR, t.as_bytes()),
        Frame::StopReport(r) => put(T_STOP_REPORT, &serde_json::to_vec(r).unwrap_or_default()),
    }
}

/// `f` encoded on its own.
pub fn encoded(f: &Frame) -> Vec<u8> {
    let mut v = Vec::new();
    encode(f, &mut v);
    v
}

fn be_i32(t: u8, p: &[u8]) -> Result<i32, ProtoError> {
    let b: [u8; 4] = p.try_into().map_err(|_| ProtoError::Malformed(t))?;
    Ok(i32::from_be_bytes(b))
}

/// Decodes the frame at the start of `buf`: `Ok(None)` if `buf` holds only part of one,
/// else the frame and the number of bytes it took. An oversize length or an unknown type is an
/// error as soon as the header is complete (the stream cannot be resynchronised).
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, ProtoError> {
    let Some(head) = buf.get(..HEADER) else {
        return Ok(None);
    };
    let t = head[0];
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if len as usize > MAX_PAYLOAD {
        return Err(ProtoError::TooLong(len));
    }
    if !matches!(
        t,
        T_STDIN
            | T_STDIN_EOF
            | T_RESIZE
            | T_SIGNAL
            | T_STDOUT
            | T_STDERR
            | T_EXIT
            | T_ERROR
            | T_STOP_REPORT
    ) {
        return Err(ProtoError::UnknownType(t));
    }
    let end = HEADER + len as usize;
    let Some(p) = buf.get(HEADER..end) else {
        return Ok(None);
    };
    let f = match t {
        T_STDIN => Frame::Stdin(p.to_vec()),
        T_STDOUT => Frame::Stdout(p.to_vec()),
        T_STDERR => Frame::Stderr(p.to_vec()),
        T_STDIN_EOF if p.is_empty() => Frame::StdinEof,
        T_RESIZE if p.len() == 4 => Frame::Resize {
            rows: u16::from_be_bytes([p[0], p[1]]),
            cols: u16::from_be_bytes([p[2], p[3]]),
        },
        T_SIGNAL => Frame::Signal(be_i32(t, p)?),
        T_EXIT => Frame::Exit(be_i32(t, p)?),
        T_ERROR => Frame::Error(String::from_utf8_lossy(p).into_owned()),
        T_STOP_REPORT => {
            Frame::StopReport(serde_json::from_slice(p).map_err(|_| ProtoError::Malformed(t))?)
        }
        _ => return Err(ProtoError::Malformed(t)),
    };
    Ok(Some((f, end)))
}

/// Splits a byte stream into frames; holds at most one frame's worth of unread bytes
/// ([`HEADER`] + [`MAX_PAYLOAD`]) as long as the caller drains [`FrameReader::next_frame`]
/// after every [`FrameReader::push`].
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// Adds bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }
    /// The next complete frame, if any.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ProtoError> {
        match decode(&self.buf)? {
            Some((f, n)) => {
                self.buf.drain(..n);
                Ok(Some(f))
            }
            None => Ok(None),
        }
    }
    /// Bytes of an incomplete frame held.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Room for the bytes a [`FrameReader`] may hold before it yields a frame: read at most
/// this much from the stream at a time to keep the buffer bounded.
pub fn read_room(r: &FrameReader) -> usize {
    (HEADER + MAX_PAYLOAD).saturating_sub(r.pending()).max(1)
}

/// Reads from `stream` into `buf`, waiting no later than `deadline`: the deadline of a whole
/// exchange, so a peer that trickles a byte at a time cannot stretch it (a per-read timeout
/// restarts with every byte). Fails with `TimedOut` once the deadline has passed.
pub fn read_by(
    stream: &mut std::os::unix::net::UnixStream,
    buf: &mut [u8],
    deadline: std::time::Instant,
) -> std::io::Result<usize> {
    use std::io::{ErrorKind, Read};
    let timed_out = || std::io::Error::new(ErrorKind::TimedOut, "no answer in time");
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    if left.is_zero() {
        return Err(timed_out());
    }
    stream.set_read_timeout(Some(left))?;
    match stream.read(buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => Err(timed_out()),
        r => r,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let e = Request::Exec {
            app: "web".into(),
            argv: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
            tty: true,
            rows: 24,
            cols: 80,
        };
        let line = e.to_line();
        assert!(line.ends_with(b"\n") && !line[..line.len() - 1].contains(&b'\n'));
        assert_eq!(Request::parse(&line).unwrap(), e);
        let s = Request::Stop {
            grace_secs: Some(3),
        };
        assert_eq!(Request::parse(&s.to_line()).unwrap(), s);
        assert_eq!(
            Request::parse(br#"{"op":"stop"}"#).unwrap(),
            Request::Stop { grace_secs: None }
        );
        for bad in [
            &br#"{"op":"exec","app":"","argv":[],"tty":false}"#[..],
            br#"{"op":"reboot"}"#,
            br#"{"op":"stop","extra":1}"#,
            b"garbage",
        ] {
            assert!(matches!(
                Request::parse(bad),
                Err(ProtoError::BadRequest(_))
            ));
        }
        assert_eq!(
            Request::parse(&vec![b' '; MAX_REQUEST + 1]),
            Err(ProtoError::RequestTooLong)
        );
    }

    #[test]
    fn app_requests_round_trip_and_names_are_checked() {
        for r in [
            Request::AppAdd { app: "web".into() },
            Request::AppStart { app: "a-1".into() },
            Request::AppStop {
                app: "web".into(),
                grace_secs: Some(2),
            },
            Request::AppRm { app: "web".into() },
        ] {
            assert_eq!(Request::parse(&r.to_line()).unwrap(), r);
            assert!(r.app_op().is_some());
        }
        assert_eq!(
            Request::parse(br#"{"op":"app_stop","app":"x"}"#).unwrap(),
            Request::AppStop {
                app: "x".into(),
                grace_secs: None
            }
        );
        for bad in ["", "../x", "A", "a--b", "-a", "a/b", "a b"] {
            let line = Request::AppStart { app: bad.into() }.to_line();
            assert!(Request::parse(&line).is_err(), "{bad:?}");
        }
        let reply = AppReply {
            app: "web".into(),
            error: Some("no app".into()),
        };
        let j = serde_json::to_vec(&reply).unwrap();
        assert_eq!(serde_json::from_slice::<AppReply>(&j).unwrap(), reply);
        assert!(serde_json::from_slice::<StopReport>(&j).is_err());
    }

    #[test]
    fn frames_round_trip_in_any_pieces() {
        let report = StopReport {
            grace_secs: 5,
            apps: vec![StoppedApp {
                name: "a".into(),
                sigterm: true,
                sigkill: false,
                status: Some(143),
            }],
        };
        let frames = vec![
            Frame::Stdin(b"abc".to_vec()),
            Frame::StdinEof,
            Frame::Resize {
                rows: 50,
                cols: 132,
            },
            Frame::Signal(15),
            Frame::Stdout(Vec::new()),
            Frame::Stderr(b"x".to_vec()),
            Frame::Error("no app \"b\"".into()),
            Frame::StopReport(report.clone()),
            Frame::Exit(-1),
        ];
        let mut bytes = Vec::new();
        for f in &frames {
            encode(f, &mut bytes);
        }
        for piece in [1, 2, 3, 7, bytes.len()] {
            let mut r = FrameReader::default();
            let mut got = Vec::new();
            for c in bytes.chunks(piece) {
                r.push(c);
                while let Some(f) = r.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "pieces of {piece}");
            assert_eq!(r.pending(), 0);
        }
        assert_eq!(
            report.lines(),
            vec!["app a: stopped by SIGTERM, status 143".to_string()]
        );
        assert!(Frame::Signal(2).from_host() && !Frame::Exit(0).from_host());
    }

    #[test]
    fn big_data_is_split_and_partial_frames_wait() {
        let big = vec![7u8; MAX_PAYLOAD * 2 + 1];
        let bytes = encoded(&Frame::Stdout(big.clone()));
        assert_eq!(bytes.len(), big.len() + 3 * HEADER);
        let mut r = FrameReader::default();
        let mut out = Vec::new();
        for c in bytes.chunks(1000) {
            assert!(r.pending() <= HEADER + MAX_PAYLOAD + 1000);
            r.push(c);
            while let Some(Frame::Stdout(d)) = r.next_frame().unwrap() {
                out.extend_from_slice(&d);
            }
        }
        assert_eq!(out, big);
        assert_eq!(decode(&[T_STDOUT, 0, 0, 0]).unwrap(), None);
        assert_eq!(decode(&[T_STDOUT, 0, 0, 0, 2, b'a']).unwrap(), None);
    }

    #[test]
    fn bad_frames_are_errors() {
        let over = (MAX_PAYLOAD as u32 + 1).to_be_bytes();
        assert_eq!(
            decode(&[T_STDIN, over[0], over[1], over[2], over[3]]),
            Err(ProtoError::TooLong(MAX_PAYLOAD as u32 + 1))
        );
        assert_eq!(
            decode(&[0xee, 0, 0, 0, 0]),
            Err(ProtoError::UnknownType(0xee))
        );
        assert_eq!(
            decode(&[T_EXIT, 0, 0, 0, 1, 0]),
            Err(ProtoError::Malformed(T_EXIT))
        );
        assert_eq!(
            decode(&[T_STDIN_EOF, 0, 0, 0, 1, 0]),
            Err(ProtoError::Malformed(T_STDIN_EOF))
        );
        assert_eq!(
            decode(&[T_STOP_REPORT, 0, 0, 0, 1, b'{']),
            Err(ProtoError::Malformed(T_STOP_REPORT))
        );
        assert!(read_room(&FrameReader::default()) == HEADER + MAX_PAYLOAD);
    }
}
