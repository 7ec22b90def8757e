//! Attachable app streams (`rkt run --stdin/--stdout/--stderr=stream|tty`, `rkt attach`), as
//! rkt's "logging and attaching" design: per-app modes carried by the stage2 annotations
//! [`ANN_STDIN`], [`ANN_STDOUT`], [`ANN_STDERR`] of the pod manifest and by the launch plan
//! ([`StdioPlan`]); guest-init's multiplexer for each app with a `stream` or `tty` stream
//! listens on `<`[`GUEST_MUX_DIR`]`>/<app>/`[`MUX_SOCKET`] in the stage1 root (a tmpfs of guest-init's, where
//! no app reaches) and speaks `crate::exec`: an attacher sends one
//! `Request::Attach` line, then `Stdin`/`StdinEof`/`Resize` frames, and gets `Stdout`/`Stderr`
//! frames until the app's streams close (`Exit(0)`) or a bad request (`Error`, `Exit(1)`).
//! Output nobody is attached to is dropped, as rkt's iottymux did: the app never blocks on its
//! output.

use serde::{Deserialize, Serialize};

/// Per-app annotation: the app's stdin mode (`null`, `stream`, `tty`).
pub const ANN_STDIN: &str = "coreos.com/rkt/stage2/stdin";
/// Per-app annotation: the app's stdout mode (`null`, `log`, `stream`, `tty`).
pub const ANN_STDOUT: &str = "coreos.com/rkt/stage2/stdout";
/// Per-app annotation: the app's stderr mode (`null`, `log`, `stream`, `tty`).
pub const ANN_STDERR: &str = "coreos.com/rkt/stage2/stderr";
/// Where guest-init keeps the multiplexers' sockets (a tmpfs it mounts, mode 0700).
pub const GUEST_MUX_DIR: &str = "/rkt/iottymux";
/// The multiplexer's socket in an app's directory under [`GUEST_MUX_DIR`]; connect to it
/// relative to that directory (a long app name does not fit a socket address).
pub const MUX_SOCKET: &str = "sock";
/// An app's directory under [`GUEST_MUX_DIR`].
pub fn mux_dir(app: &str) -> std::path::PathBuf {
    std::path::Path::new(GUEST_MUX_DIR).join(app)
}
/// Connects to app `app`'s multiplexer from inside the stage1 root (guest-init's view):
/// changes the working directory to [`mux_dir`] and connects to [`MUX_SOCKET`] relative to it.
pub fn connect(app: &str) -> std::io::Result<std::os::unix::net::UnixStream> {
    std::env::set_current_dir(mux_dir(app))?;
    std::os::unix::net::UnixStream::connect(MUX_SOCKET)
}
/// Attachers served at once by one app's multiplexer.
pub const MAX_ATTACHERS: usize = 8;

/// Pod annotation (`rkt app sandbox --annotation=`): `k8s-plain` makes the multiplexer of each
/// app added with a `stream` stdout or stderr also write that output to the app's log file,
/// one line each, `<RFC 3339 time, ns> <stdout|stderr> <line>` (rkt's experimental CRI logs,
/// as rktlet asked for them).
pub const ANN_LOG_MODE: &str = "coreos.com/rkt/experiment/logmode";
/// The one value of [`ANN_LOG_MODE`].
pub const LOG_MODE_K8S_PLAIN: &str = "k8s-plain";
/// Pod annotation: the host directory of the apps' log files (absolute; it must exist).
pub const ANN_K8S_LOG_DIR: &str = "coreos.com/rkt/experiment/kubernetes-log-dir";
/// App annotation (`rkt app add --annotation=`): the app's log file, relative to
/// [`ANN_K8S_LOG_DIR`] (its directories must exist; created if missing, appended to).
pub const ANN_K8S_LOG_PATH: &str = "coreos.com/rkt/experiment/kubernetes-log-path";
/// The stage1 root's directory (present in every pod) beneath which the stage1 attaches each
/// app's log file, a mount of the host file stage0 opened, at [`log_target`].
pub const GUEST_LOG_BASE: &str = "/rkt";
/// App `app`'s log file below [`GUEST_LOG_BASE`], as the stage1 makes it (missing directories
/// created on the way).
pub fn log_target(app: &str) -> String {
    format!("/logs/{app}")
}
/// App `app`'s log file in the stage1 root: [`log_target`] beneath [`GUEST_LOG_BASE`].
pub fn guest_log_file(app: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{GUEST_LOG_BASE}{}", log_target(app)))
}
/// Longest line written to a log file, in bytes; a longer one is cut there (the rest follows
/// as further lines), as kubelet's CRI logs split long lines.
pub const MAX_LOG_LINE: usize = 16 * 1024;

/// One line of a `k8s-plain` log (ending in `\n`): `time` in Unix nanoseconds, `stream`
/// `stdout` or `stderr`, `line` without its newline.
pub fn log_line(time_ns: i64, stream: &str, line: &[u8]) -> Vec<u8> {
    let mut out = crate::time::rfc3339_nanos(time_ns).into_bytes();
    out.push(b' ');
    out.extend_from_slice(stream.as_bytes());
    out.push(b' ');
    out.extend_from_slice(line);
    out.push(b'\n');
    out
}

/// How one of an app's standard streams is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// `/dev/null` (stdin's default).
    Null,
    /// The pod's log: the console or stage1's stdout/stderr (stdout's and stderr's default;
    /// not valid for stdin).
    Log,
    /// A pipe to guest-init's multiplexer, attachable with `rkt attach --mode=<stream>`.
    Stream,
    /// A pseudo-terminal of the app's own (all three streams), attachable with
    /// `rkt attach --mode=tty`.
    Tty,
}

impl IoMode {
    /// Parses a mode as the flags and annotations spell it.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "null" => Some(IoMode::Null),
            "log" => Some(IoMode::Log),
            "stream" => Some(IoMode::Stream),
            "tty" => Some(IoMode::Tty),
            _ => None,
        }
    }

    /// The mode as the flags and annotations spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            IoMode::Null => "null",
            IoMode::Log => "log",
            IoMode::Stream => "stream",
            IoMode::Tty => "tty",
        }
    }
}

/// An app's three stream modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdioPlan {
    /// stdin.
    pub stdin: IoMode,
    /// stdout.
    pub stdout: IoMode,
    /// stderr.
    pub stderr: IoMode,
    /// The `stream` outputs also go to the app's log file ([`ANN_LOG_MODE`],
    /// [`guest_log_file`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log_file: bool,
}

impl Default for StdioPlan {
    fn default() -> Self {
        StdioPlan {
            stdin: IoMode::Null,
            stdout: IoMode::Log,
            stderr: IoMode::Log,
            log_file: false,
        }
    }
}

/// Why a set of modes is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModeError {
    /// Not a mode, or `log` for stdin.
    #[error("--{stream}: invalid mode {value:?} (want {want})")]
    Invalid {
        /// `stdin`, `stdout` or `stderr`.
        stream: &'static str,
        /// The value given.
        value: String,
        /// The valid values.
        want: &'static str,
    },
    /// `tty` for some streams of an app but not all.
    #[error("--stdin, --stdout and --stderr: tty gives the app one terminal for all three streams; set all three to tty (got {0})")]
    PartialTty(String),
}

impl StdioPlan {
    /// The modes from the three values given (`None`: the stream's default), checked.
    pub fn from_values(
        stdin: Option<&str>,
        stdout: Option<&str>,
        stderr: Option<&str>,
    ) -> Result<Self, ModeError> {
        let d = StdioPlan::default();
        let one = |stream: &'static str, v: Option<&str>, default: IoMode| match v {
            None => Ok(default),
            Some(v) => match IoMode::parse(v) {
                Some(IoMode::Log) if stream == "stdin" => Err(()),
                Some(m) => Ok(m),
                None => Err(()),
            }
            .map_err(|()| ModeError::Invalid {
                stream,
                value: v.to_string(),
                want: if stream == "stdin" {
                    "null, stream or tty"
                } else {
                    "null, log, stream or tty"
                },
            }),
        };
        let p = StdioPlan {
            stdin: one("stdin", stdin, d.stdin)?,
            stdout: one("stdout", stdout, d.stdout)?,
            stderr: one("stderr", stderr, d.stderr)?,
            log_file: false,
        };
        let ttys = [p.stdin, p.stdout, p.stderr]
            .iter()
            .filter(|m| **m == IoMode::Tty)
            .count();
        if ttys != 0 && ttys != 3 {
            return Err(ModeError::PartialTty(format!(
                "stdin={} stdout={} stderr={}",
                p.stdin.as_str(),
                p.stdout.as_str(),
                p.stderr.as_str()
            )));
        }
        Ok(p)
    }

    /// The app has a terminal of its own.
    pub fn tty(&self) -> bool {
        self.stdin == IoMode::Tty
    }

    /// Some stream of the app can be attached to (it has a multiplexer).
    pub fn attachable(&self) -> bool {
        [self.stdin, self.stdout, self.stderr]
            .iter()
            .any(|m| matches!(m, IoMode::Stream | IoMode::Tty))
    }

    /// stdout or stderr is a `stream` (what a log file would get).
    pub fn streams_output(&self) -> bool {
        self.stdout == IoMode::Stream || self.stderr == IoMode::Stream
    }

    /// The endpoints `rkt attach --mode=list` prints: `tty`, or the streams in `stream` mode.
    pub fn endpoints(&self) -> Vec<&'static str> {
        if self.tty() {
            return vec!["tty"];
        }
        [
            ("stdin", self.stdin),
            ("stdout", self.stdout),
            ("stderr", self.stderr),
        ]
        .into_iter()
        .filter(|(_, m)| *m == IoMode::Stream)
        .map(|(n, _)| n)
        .collect()
    }

    /// The annotations carrying these modes (name, value), as rkt wrote them.
    pub fn annotations(&self) -> [(&'static str, &'static str); 3] {
        [
            (ANN_STDIN, self.stdin.as_str()),
            (ANN_STDOUT, self.stdout.as_str()),
            (ANN_STDERR, self.stderr.as_str()),
        ]
    }
}

/// What an attacher asks for (`rkt attach --mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attach {
    /// Write to the terminal.
    #[serde(default)]
    pub tty_in: bool,
    /// Read from the terminal.
    #[serde(default)]
    pub tty_out: bool,
    /// Write to stdin.
    #[serde(default)]
    pub stdin: bool,
    /// Read stdout.
    #[serde(default)]
    pub stdout: bool,
    /// Read stderr.
    #[serde(default)]
    pub stderr: bool,
}

/// Why an attach mode is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachModeError {
    /// An unknown endpoint name.
    #[error("unknown endpoint {0:?} (want list, auto, tty, tty-in, tty-out, or some of stdin,stdout,stderr)")]
    Unknown(String),
    /// Terminal and streams together.
    #[error("cannot attach a terminal and streams together ({0:?})")]
    Mixed(String),
    /// The app has no such endpoint.
    #[error("app {app} has no {endpoint} to attach to (its endpoints: {have})")]
    Missing {
        /// The app.
        app: String,
        /// The endpoint asked for.
        endpoint: &'static str,
        /// What it has.
        have: String,
    },
}

/// An app's endpoints as an error names them.
fn have_text(plan: &StdioPlan) -> String {
    let have = plan.endpoints();
    if have.is_empty() {
        "none".into()
    } else {
        have.join(", ")
    }
}

impl Attach {
    /// Parses rkt's `--mode` values other than `list`: `auto` (every endpoint of `app`),
    /// `tty`, `tty-in`, `tty-out`, or a comma-separated subset of `stdin,stdout,stderr`; checked
    /// against the app's endpoints.
    pub fn from_mode(mode: &str, app: &str, plan: &StdioPlan) -> Result<Self, AttachModeError> {
        let mut a = Attach::default();
        if mode == "auto" || mode.is_empty() {
            if plan.tty() {
                a.tty_in = true;
                a.tty_out = true;
            } else {
                a.stdin = plan.stdin == IoMode::Stream;
                a.stdout = plan.stdout == IoMode::Stream;
                a.stderr = plan.stderr == IoMode::Stream;
            }
        } else {
            for e in mode.split(',') {
                match e {
                    "stdin" => a.stdin = true,
                    "stdout" => a.stdout = true,
                    "stderr" => a.stderr = true,
                    "tty" => {
                        a.tty_in = true;
                        a.tty_out = true;
                    }
                    "tty-in" => a.tty_in = true,
                    "tty-out" => a.tty_out = true,
                    other => return Err(AttachModeError::Unknown(other.to_string())),
                }
            }
            if (a.tty_in || a.tty_out) && (a.stdin || a.stdout || a.stderr) {
                return Err(AttachModeError::Mixed(mode.to_string()));
            }
        }
        if a == Attach::default() {
            return Err(AttachModeError::Missing {
                app: app.to_string(),
                endpoint: "endpoint",
                have: have_text(plan),
            });
        }
        a.check(app, plan)?;
        Ok(a)
    }

    /// Whether app `app` with `plan` has every endpoint this asks for (the multiplexer checks
    /// a request with it, `rkt attach` a mode).
    pub fn check(&self, app: &str, plan: &StdioPlan) -> Result<(), AttachModeError> {
        let have = plan.endpoints();
        for (wanted, name) in [
            (self.tty(), "tty"),
            (self.stdin, "stdin"),
            (self.stdout, "stdout"),
            (self.stderr, "stderr"),
        ] {
            if wanted && !have.contains(&name) {
                return Err(AttachModeError::Missing {
                    app: app.to_string(),
                    endpoint: name,
                    have: have_text(plan),
                });
            }
        }
        Ok(())
    }

    /// The attacher's terminal is the app's (raw mode, resizes).
    pub fn tty(&self) -> bool {
        self.tty_in || self.tty_out
    }

    /// The attacher sends input.
    pub fn input(&self) -> bool {
        self.tty_in || self.stdin
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn log_files_lie_below_the_base_every_pod_has() {
        assert_eq!(guest_log_file("web"), std::path::Path::new("/rkt/logs/web"));
        assert_eq!(
            std::path::Path::new(GUEST_LOG_BASE).join(log_target("web").trim_start_matches('/')),
            guest_log_file("web")
        );
    }

    #[test]
    fn modes_are_checked() {
        assert_eq!(
            StdioPlan::from_values(None, None, None).unwrap(),
            StdioPlan::default()
        );
        let s = StdioPlan::from_values(Some("stream"), Some("stream"), None).unwrap();
        assert_eq!(s.endpoints(), ["stdin", "stdout"]);
        assert!(s.attachable() && !s.tty());
        let t = StdioPlan::from_values(Some("tty"), Some("tty"), Some("tty")).unwrap();
        assert_eq!(t.endpoints(), ["tty"]);
        assert!(matches!(
            StdioPlan::from_values(Some("log"), None, None),
            Err(ModeError::Invalid {
                stream: "stdin",
                ..
            })
        ));
        assert!(matches!(
            StdioPlan::from_values(None, Some("file"), None),
            Err(ModeError::Invalid { .. })
        ));
        assert!(matches!(
            StdioPlan::from_values(Some("tty"), Some("log"), None),
            Err(ModeError::PartialTty(_))
        ));
        assert!(!StdioPlan::default().attachable());
    }

    #[test]
    fn attach_modes_match_the_apps_endpoints() {
        let s = StdioPlan::from_values(Some("stream"), Some("stream"), Some("log")).unwrap();
        let a = Attach::from_mode("auto", "a", &s).unwrap();
        assert!(a.stdin && a.stdout && !a.stderr && !a.tty());
        let a = Attach::from_mode("stdout", "a", &s).unwrap();
        assert!(a.stdout && !a.input());
        assert!(matches!(
            Attach::from_mode("stderr", "a", &s),
            Err(AttachModeError::Missing {
                endpoint: "stderr",
                ..
            })
        ));
        assert!(matches!(
            Attach::from_mode("tty", "a", &s),
            Err(AttachModeError::Missing {
                endpoint: "tty",
                ..
            })
        ));
        assert!(matches!(
            Attach::from_mode("tty,stdin", "a", &s),
            Err(AttachModeError::Mixed(_))
        ));
        assert!(matches!(
            Attach::from_mode("stdio", "a", &s),
            Err(AttachModeError::Unknown(_))
        ));
        let t = StdioPlan::from_values(Some("tty"), Some("tty"), Some("tty")).unwrap();
        let a = Attach::from_mode("auto", "a", &t).unwrap();
        assert!(a.tty_in && a.tty_out && a.tty());
        let a = Attach::from_mode("tty-out", "a", &t).unwrap();
        assert!(a.tty() && !a.input());
        assert!(matches!(
            Attach::from_mode("auto", "a", &StdioPlan::default()),
            Err(AttachModeError::Missing { .. })
        ));
    }
}
