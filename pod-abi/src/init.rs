//! stage1 host side -> guest-init: the arguments guest-init is started with and the channels
//! between them.
//!
//! The ns flavor execs `/init --flavor=ns [--debug] --start-fd=N` as PID 1 of the pod's
//! namespaces (fd N is a socket: guest-init sends [`READY_BYTE`] once the apps' environments
//! are set up and starts no app before it reads [`START_BYTE`]); the kvm
//! flavor passes the same arguments on the kernel command line after `--`. In the kvm flavor
//! the channels are fixed devices ([`Channel`]): two virtio consoles for the apps' output, COM1
//! for the kernel and guest-init's own messages, COM2 for control messages
//! ([`crate::control`]).

use crate::plan::Flavor;

/// Error parsing guest-init's arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitArgsError {
    /// An argument this contract does not define.
    #[error("unknown argument {0:?}")]
    Unknown(String),
    /// No `--flavor=`.
    #[error("missing --flavor=ns|kvm")]
    MissingFlavor,
    /// `--start-fd=` is not a descriptor number.
    #[error("bad --start-fd {0:?}")]
    BadStartFd(String),
    /// `--exec-fd=` is not a descriptor number.
    #[error("bad --exec-fd {0:?}")]
    BadExecFd(String),
}

/// The byte guest-init writes on its `--start-fd` once every app's environment is set up
/// (mounts, users, cgroups) and before any app process starts: from then on `enter` finds each
/// app root complete. The launcher then writes the pod's `pid` file and answers
/// [`START_BYTE`].
pub const READY_BYTE: u8 = b'r';

/// The byte the launcher writes on guest-init's `--start-fd` once the pod's `pid` file exists;
/// EOF instead means the launcher died, and guest-init starts no app.
pub const START_BYTE: u8 = b's';

impl Flavor {
    /// The flavor's name as it appears in `--flavor=`.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Ns => "ns",
            Flavor::Kvm => "kvm",
        }
    }
    /// The flavor named `s`.
    pub fn from_name(s: &str) -> Option<Self> {
        [Flavor::Ns, Flavor::Kvm]
            .into_iter()
            .find(|f| f.name() == s)
    }
}

/// guest-init's arguments: `--flavor=ns|kvm [--debug] [--control=PATH] [--start-fd=N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitArgs {
    /// Which stage1 runs guest-init (decides how it ends).
    pub flavor: Flavor,
    /// Verbose logging on the console.
    pub debug: bool,
    /// kvm flavor: the control channel instead of [`Channel::Control`]'s device (tests use a
    /// FIFO).
    pub control: Option<String>,
    /// ns flavor: an inherited socket to the launcher: guest-init sends [`READY_BYTE`] when the
    /// apps' environments are set up, then waits for [`START_BYTE`] before it starts any app
    /// (the launcher sends it once `pid` is written).
    pub start_fd: Option<i32>,
    /// The pod's `AC_METADATA_URL` (`http://<host IP>:<port>/<token>`), given to every app, when
    /// the pod is registered with the metadata service.
    pub metadata_url: Option<String>,
    /// ns flavor, mutable pods: an inherited listening socket (the pod directory's
    /// `crate::paths::EXEC_SOCKET`) that guest-init's exec service serves, as the kvm flavor
    /// serves vsock.
    pub exec_fd: Option<i32>,
    /// Start-up phase lines on the console ([`crate::trace`]): the kvm flavor's guest-init does
    /// not inherit the host's environment, so the VMM passes `--trace-phases` when its own
    /// `RKT_TRACE_PHASES` is on.
    pub trace_phases: bool,
}

/// The usage line printed on bad arguments.
pub const INIT_USAGE: &str =
    "init --flavor=ns|kvm [--debug] [--control=PATH] [--start-fd=N] [--exec-fd=N] [--metadata-url=URL] [--trace-phases]";

impl InitArgs {
    /// Arguments for `flavor`, without debug or control override.
    pub fn new(flavor: Flavor) -> Self {
        InitArgs {
            flavor,
            debug: false,
            control: None,
            start_fd: None,
            metadata_url: None,
            exec_fd: None,
            trace_phases: false,
        }
    }

    /// The control channel to open: `--control=`, else [`Channel::Control`]'s device.
    pub fn control_path(&self) -> &str {
        self.control
            .as_deref()
            .unwrap_or(Channel::Control.guest_device())
    }

    /// Renders the arguments (without argv\[0\]).
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec![format!("--flavor={}", self.flavor.name())];
        if self.debug {
            v.push("--debug".into());
        }
        if let Some(c) = &self.control {
            v.push(format!("--control={c}"));
        }
        if let Some(fd) = self.start_fd {
            v.push(format!("--start-fd={fd}"));
        }
        if let Some(u) = &self.metadata_url {
            v.push(format!("--metadata-url={u}"));
        }
        if let Some(fd) = self.exec_fd {
            v.push(format!("--exec-fd={fd}"));
        }
        if self.trace_phases {
            v.push("--trace-phases".into());
        }
        v
    }

    /// Parses the arguments (without argv\[0\]). Words without `--` are ignored: kernel command
    /// line leftovers may reach init in a VM.
    pub fn parse<I, S>(args: I) -> Result<Self, InitArgsError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut flavor = None;
        let mut debug = false;
        let mut control = None;
        let mut start_fd = None;
        let mut metadata_url = None;
        let mut exec_fd = None;
        let mut trace_phases = false;
        for a in args {
            let a = a.as_ref();
            if let Some(c) = a.strip_prefix("--control=") {
                control = Some(c.to_string());
            } else if let Some(n) = a.strip_prefix("--start-fd=") {
                let fd = n.parse().ok().filter(|fd: &i32| *fd >= 0);
                start_fd = Some(fd.ok_or_else(|| InitArgsError::BadStartFd(n.into()))?);
            } else if let Some(n) = a.strip_prefix("--exec-fd=") {
                let fd = n.parse().ok().filter(|fd: &i32| *fd >= 0);
                exec_fd = Some(fd.ok_or_else(|| InitArgsError::BadExecFd(n.into()))?);
            } else if let Some(u) = a.strip_prefix("--metadata-url=") {
                metadata_url = Some(u.to_string());
            } else if let Some(f) = a.strip_prefix("--flavor=") {
                flavor = Some(Flavor::from_name(f).ok_or(InitArgsError::Unknown(a.into()))?);
            } else if a == "--debug" {
                debug = true;
            } else if a == "--trace-phases" {
                trace_phases = true;
            } else if a.starts_with("--") {
                return Err(InitArgsError::Unknown(a.into()));
            }
        }
        Ok(InitArgs {
            flavor: flavor.ok_or(InitArgsError::MissingFlavor)?,
            debug,
            control,
            start_fd,
            metadata_url,
            exec_fd,
            trace_phases,
        })
    }
}

/// The kvm flavor's channels between the VMM and the guest, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The apps' stdout (and an interactive app's terminal): the first virtio console.
    AppStdout,
    /// The apps' stderr: the second virtio console.
    AppStderr,
    /// The kernel console and guest-init's own messages: COM1, to the host's stderr.
    Kernel,
    /// Control messages from the host to guest-init: COM2.
    Control,
}

impl Channel {
    /// The virtio consoles in the order the VMM must add them (the guest numbers them so).
    pub const VIRTIO_CONSOLES: [Channel; 2] = [Channel::AppStdout, Channel::AppStderr];

    /// The device guest-init opens for this role.
    pub const fn guest_device(self) -> &'static str {
        match self {
            Channel::AppStdout => "/dev/hvc0",
            Channel::AppStderr => "/dev/hvc1",
            Channel::Kernel => "/dev/ttyS0",
            Channel::Control => "/dev/ttyS1",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_args_round_trip() {
        for a in [
            InitArgs::new(Flavor::Ns),
            InitArgs {
                flavor: Flavor::Kvm,
                debug: true,
                control: Some("/x".into()),
                start_fd: None,
                metadata_url: Some("http://172.16.28.1:18112/ab12".into()),
                exec_fd: None,
                trace_phases: true,
            },
            InitArgs {
                flavor: Flavor::Ns,
                debug: false,
                control: None,
                start_fd: Some(7),
                metadata_url: None,
                exec_fd: Some(8),
                trace_phases: false,
            },
        ] {
            assert_eq!(InitArgs::parse(a.to_args()), Ok(a));
        }
        assert_eq!(
            InitArgs::new(Flavor::Kvm).to_args(),
            vec!["--flavor=kvm".to_string()]
        );
        assert_eq!(
            InitArgs::parse(["--flavor=ns", "--debug"]).map(|a| a.debug),
            Ok(true)
        );
        assert_eq!(
            InitArgs::parse(["--flavor=kvm", "console=ttyS0"]).map(|a| a.flavor),
            Ok(Flavor::Kvm)
        );
        assert_eq!(
            InitArgs::parse(Vec::<String>::new()),
            Err(InitArgsError::MissingFlavor)
        );
        assert!(InitArgs::parse(["--flavor=ns", "--bogus"]).is_err());
        assert!(InitArgs::parse(["--flavor=xen"]).is_err());
        assert_eq!(
            InitArgs::parse(["--flavor=ns", "--start-fd=x"]),
            Err(InitArgsError::BadStartFd("x".into()))
        );
        assert!(InitArgs::parse(["--flavor=ns", "--start-fd=-1"]).is_err());
        assert_eq!(InitArgs::new(Flavor::Kvm).control_path(), "/dev/ttyS1");
    }
}
