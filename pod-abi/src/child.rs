//! The one way the host runs a helper process with a deadline and capped output (CNI plugins,
//! the snapshot maker): [`run_bounded`] feeds its stdin, keeps at most [`Caps`] bytes of its
//! stdout and stderr, kills it (SIGKILL) at the limit, and never waits long on a pipe that a
//! process it left behind still holds.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long [`run_bounded`] waits for the child's pipes to close after it ended: a daemon the
/// child left behind may hold them (the output so far is kept, the reader is not waited for).
pub const PIPE_GRACE: Duration = Duration::from_secs(2);

/// Bytes of output kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Of stdout (bytes).
    pub stdout: usize,
    /// Of stderr (bytes).
    pub stderr: usize,
}

/// A child that ended by itself.
#[derive(Debug)]
pub struct Bounded {
    /// Its exit status.
    pub status: ExitStatus,
    /// The first [`Caps::stdout`] bytes of its stdout.
    pub stdout: Vec<u8>,
    /// The first [`Caps::stderr`] bytes of its stderr.
    pub stderr: Vec<u8>,
    /// Whether stdout had more (dropped).
    pub stdout_over: bool,
    /// Whether stderr had more (dropped).
    pub stderr_over: bool,
}

/// Why [`run_bounded`] has no exit status to give.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// The child could not be started.
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        /// The program.
        program: OsString,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The child ran past the limit and was killed.
    #[error("killed after {} s", limit.as_secs_f32())]
    TimedOut {
        /// The limit.
        limit: Duration,
        /// Its stdout until then (capped).
        stdout: Vec<u8>,
        /// Its stderr until then (capped).
        stderr: Vec<u8>,
    },
    /// Waiting for the child failed; it was killed.
    #[error("cannot wait for it: {source}")]
    Wait {
        /// The error.
        #[source]
        source: std::io::Error,
        /// Its stdout until then (capped).
        stdout: Vec<u8>,
        /// Its stderr until then (capped).
        stderr: Vec<u8>,
    },
}

/// Reads `r` to its end, keeping the first `cap` bytes and dropping the rest; also says
/// whether more than `cap` came. A read error ends it like the end of the stream.
pub fn read_bounded(r: impl Read, cap: usize) -> (Vec<u8>, bool) {
    let c = Capture::default();
    pump(r, cap, &c);
    let mut s = c.lock();
    (std::mem::take(&mut s.data), s.over)
}

/// Output read so far by one reader thread.
#[derive(Debug, Default)]
struct Captured {
    data: Vec<u8>,
    over: bool,
    done: bool,
    /// The caller took the output: the rest of the stream is read and dropped.
    taken: bool,
}

/// [`Captured`] shared with its reader thread, which signals the end of the stream.
#[derive(Debug, Default)]
struct Capture {
    state: Mutex<Captured>,
    ended: Condvar,
}

impl Capture {
    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads `r` into `c` (at most `cap` bytes kept) until its end, then marks `c` done.
fn pump(mut r: impl Read, cap: usize, c: &Capture) {
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let chunk = buf.get(..n).unwrap_or_default();
                let mut s = c.lock();
                if s.taken {
                    continue;
                }
                let room = cap.saturating_sub(s.data.len());
                if chunk.len() > room {
                    s.over = true;
                }
                s.data
                    .extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    c.lock().done = true;
    c.ended.notify_all();
}

/// A reader thread and what it read.
struct Reader {
    capture: Arc<Capture>,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    fn start(r: Option<impl Read + Send + 'static>, cap: usize) -> Reader {
        let capture = Arc::new(Capture::default());
        let thread = match r {
            Some(r) => {
                let c = capture.clone();
                Some(std::thread::spawn(move || pump(r, cap, &c)))
            }
            None => {
                capture.lock().done = true;
                None
            }
        };
        Reader { capture, thread }
    }

    /// What was read, once the stream ended or at `until`; the thread is joined if it ended
    /// (else it ends with the process holding the pipe, writing only into its own capture).
    fn finish(self, until: Instant) -> (Vec<u8>, bool) {
        let done = {
            let mut s = self.capture.lock();
            while !s.done {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                s = self
                    .capture
                    .ended
                    .wait_timeout(s, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            s.done
        };
        if let (true, Some(t)) = (done, self.thread) {
            let _ = t.join();
        }
        let mut s = self.capture.lock();
        s.taken = true;
        (std::mem::take(&mut s.data), s.over)
    }
}

/// Runs `cmd` (its stdin, stdout and stderr are set here) to its end: writes `stdin` to it
/// (empty: stdin is /dev/null), keeps the first `caps` bytes of its output, looks every `poll`
/// whether it ended, and kills it (SIGKILL) once `limit` has passed. After it ended, its pipes
/// get [`PIPE_GRACE`] to close; a reader or writer thread still blocked then (a process the
/// child left behind holds the pipe) is not waited for and ends with that process. Every other
/// thread of the call is joined before it returns, so a caller that forks after it has no
/// thread of ours but those.
pub fn run_bounded(
    cmd: &mut Command,
    stdin: &[u8],
    limit: Duration,
    caps: Caps,
    poll: Duration,
) -> Result<Bounded, ChildError> {
    let mut child = cmd
        .stdin(if stdin.is_empty() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ChildError::Spawn {
            program: cmd.get_program().to_os_string(),
            source,
        })?;
    let out = Reader::start(child.stdout.take(), caps.stdout);
    let err = Reader::start(child.stderr.take(), caps.stderr);
    let (wtx, wrx) = mpsc::channel();
    let writer = child.stdin.take().map(|mut i| {
        let data = stdin.to_vec();
        std::thread::spawn(move || {
            let _ = i.write_all(&data);
            drop(i);
            let _ = wtx.send(());
        })
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(None);
            }
            Ok(None) => std::thread::sleep(poll),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                break Err(Some(e));
            }
        }
    };
    let grace_end = Instant::now() + PIPE_GRACE;
    let (stdout, stdout_over) = out.finish(grace_end);
    let (stderr, stderr_over) = err.finish(grace_end);
    if let Some(w) = writer {
        let left = grace_end.saturating_duration_since(Instant::now());
        if wrx.recv_timeout(left).is_ok() {
            let _ = w.join();
        }
    }
    match status {
        Ok(status) => Ok(Bounded {
            status,
            stdout,
            stderr,
            stdout_over,
            stderr_over,
        }),
        Err(None) => Err(ChildError::TimedOut {
            limit,
            stdout,
            stderr,
        }),
        Err(Some(source)) => Err(ChildError::Wait {
            source,
            stdout,
            stderr,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps {
        stdout: 1 << 20,
        stderr: 1 << 20,
    };
    const POLL: Duration = Duration::from_millis(2);

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    }

    /// `sh -c script` through [`run_bounded`] with [`CAPS`] and [`POLL`].
    fn run_sh(script: &str, stdin: &[u8], limit: Duration) -> Result<Bounded, ChildError> {
        run_bounded(&mut sh(script), stdin, limit, CAPS, POLL)
    }

    #[test]
    fn status_and_output() {
        let b = run_sh(
            "echo out; echo err >&2; exit 3",
            b"",
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(b.status.code(), Some(3));
        assert_eq!(
            (&b.stdout[..], &b.stderr[..]),
            (&b"out\n"[..], &b"err\n"[..])
        );
        assert!(!b.stdout_over && !b.stderr_over);
    }

    #[test]
    fn stdin_is_delivered_and_empty_stdin_is_dev_null() {
        let b = run_sh("cat; echo done", b"config\n", Duration::from_secs(30)).unwrap();
        assert_eq!(b.stdout, b"config\ndone\n");
        let b = run_sh("readlink /proc/self/fd/0", b"", Duration::from_secs(30)).unwrap();
        assert_eq!(b.stdout, b"/dev/null\n");
    }

    #[test]
    fn a_child_past_its_limit_is_killed_with_its_output_so_far() {
        let start = Instant::now();
        let e = run_bounded(
            &mut sh("echo started; echo e >&2; sleep 30"),
            b"",
            Duration::from_millis(300),
            CAPS,
            Duration::from_millis(20),
        )
        .unwrap_err();
        // The shell is killed; its `sleep` holds the pipes until the grace period ends.
        assert!(
            start.elapsed() < Duration::from_millis(1300) + PIPE_GRACE,
            "{:?}",
            start.elapsed()
        );
        match e {
            ChildError::TimedOut {
                limit,
                stdout,
                stderr,
            } => {
                assert_eq!(limit, Duration::from_millis(300));
                assert_eq!((&stdout[..], &stderr[..]), (&b"started\n"[..], &b"e\n"[..]));
            }
            e => panic!("{e}"),
        }
        let start = Instant::now();
        let e = run_sh("exec sleep 30", b"", Duration::from_millis(300)).unwrap_err();
        assert!(start.elapsed() < Duration::from_millis(1300));
        assert_eq!(e.to_string(), "killed after 0.3 s");
    }

    #[test]
    fn output_past_the_cap_is_dropped_and_flagged() {
        let b = run_bounded(
            &mut sh("head -c 3000000 /dev/zero; head -c 100 /dev/zero >&2; echo end >&2"),
            b"",
            Duration::from_secs(30),
            Caps {
                stdout: 1000,
                stderr: 104,
            },
            POLL,
        )
        .unwrap();
        assert!(b.status.success());
        assert_eq!(b.stdout.len(), 1000);
        assert!(b.stdout_over);
        assert_eq!(b.stderr.len(), 104);
        assert!(!b.stderr_over);
        assert!(b.stderr.ends_with(b"end\n"));
    }

    #[test]
    fn a_daemon_holding_the_pipes_is_not_waited_for() {
        let start = Instant::now();
        let b = run_sh("sleep 30 & echo hi", b"x", Duration::from_secs(30)).unwrap();
        assert!(start.elapsed() < PIPE_GRACE + Duration::from_secs(1));
        assert!(b.status.success());
        assert_eq!(b.stdout, b"hi\n");
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let e = run_bounded(
            &mut Command::new("/nonexistent/prog"),
            b"",
            Duration::from_secs(1),
            CAPS,
            POLL,
        )
        .unwrap_err();
        assert!(matches!(e, ChildError::Spawn { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/prog"), "{e}");
    }

    #[test]
    fn read_bounded_keeps_the_head() {
        let (v, over) = read_bounded(&b"abcdef"[..], 4);
        assert_eq!((&v[..], over), (&b"abcd"[..], true));
        let (v, over) = read_bounded(&b"ab"[..], 4);
        assert_eq!((&v[..], over), (&b"ab"[..], false));
    }
}
