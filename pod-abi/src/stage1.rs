//! stage0 -> stage1 interface: entrypoint annotations and the argv each entrypoint receives
//! (rkt's stage1 implementors' guide, interface version 6 subset).

/// Annotation naming the `run` entrypoint (a path inside the stage1 rootfs).
pub const ANN_RUN: &str = "coreos.com/rkt/stage1/run";
/// Annotation naming the `enter` entrypoint.
pub const ANN_ENTER: &str = "coreos.com/rkt/stage1/enter";
/// Annotation naming the `gc` entrypoint.
pub const ANN_GC: &str = "coreos.com/rkt/stage1/gc";
/// Annotation naming the optional `stop` entrypoint.
pub const ANN_STOP: &str = "coreos.com/rkt/stage1/stop";
/// Annotation naming the `app/add` entrypoint (mutable pods, interface version 5).
pub const ANN_APP_ADD: &str = "coreos.com/rkt/stage1/app/add";
/// Annotation naming the `app/start` entrypoint.
pub const ANN_APP_START: &str = "coreos.com/rkt/stage1/app/start";
/// Annotation naming the `app/stop` entrypoint.
pub const ANN_APP_STOP: &str = "coreos.com/rkt/stage1/app/stop";
/// Annotation naming the `app/rm` entrypoint.
pub const ANN_APP_RM: &str = "coreos.com/rkt/stage1/app/rm";
/// Annotation naming the `attach` entrypoint (interface version 5, `rkt attach`).
pub const ANN_ATTACH: &str = "coreos.com/rkt/stage1/attach";
/// Annotation carrying the interface version (decimal; missing means 1).
pub const ANN_INTERFACE_VERSION: &str = "coreos.com/rkt/stage1/interface-version";
/// The interface version our stage1 images declare.
pub const INTERFACE_VERSION: u32 = 5;
/// Environment variable carrying the pod lock fd from stage0 to stage1 `run`.
pub const ENV_LOCK_FD: &str = "RKT_LOCK_FD";

/// Image name of the namespace flavor's stage1 image.
pub const STAGE1_NS_NAME: &str = "coreos.com/rkt/stage1-ns";
/// Image name of the KVM flavor's stage1 image.
pub const STAGE1_KVM_NAME: &str = "coreos.com/rkt/stage1-kvm";

/// Arguments of the `run` entrypoint: `[--debug] --net=<list> [--interactive]
/// [--private-users=SHIFT:COUNT] [--hostname=H] [--mds-token=T [--mds-port=P]]
/// [--disable-capabilities-restriction] [--disable-paths] [--disable-seccomp]
/// [--ipc=auto|private|parent] <UUID>`. This project's stage1s take the three `--disable-*`,
/// `--ipc` and `--private-users` from the launch plan, which says the same; stage0 passes them
/// for other stage1s (rkt's interface versions 3 and 6; `--private-users` to every version).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunArgs {
    /// `--debug`.
    pub debug: bool,
    /// `--net=` value (`default`, `host`, `none`, or a list).
    pub net: String,
    /// `--interactive`: one app, attached to the terminal.
    pub interactive: bool,
    /// `--hostname=`; empty means `rkt-<uuid>`.
    pub hostname: String,
    /// `--mds-token=`: the pod is registered with the metadata service under this token.
    pub mds_token: Option<String>,
    /// `--mds-port=`: the metadata service's public port (default rkt's 18112).
    pub mds_port: Option<u16>,
    /// `--disable-capabilities-restriction` (`--insecure-options=capabilities`).
    pub disable_capabilities: bool,
    /// `--disable-paths` (`--insecure-options=paths`).
    pub disable_paths: bool,
    /// `--disable-seccomp` (`--insecure-options=seccomp`).
    pub disable_seccomp: bool,
    /// `--ipc=`: `auto`, `private` or `parent`; None: not given (`auto`).
    pub ipc: Option<String>,
    /// `--private-users=SHIFT:COUNT` (`crate::userns::IdRange`), as given.
    pub private_users: Option<String>,
    /// The pod UUID (last argument).
    pub uuid: String,
}

/// Error parsing entrypoint argv.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    /// A flag this interface does not define.
    #[error("unknown stage1 flag {0:?}")]
    UnknownFlag(String),
    /// No UUID argument.
    #[error("missing pod UUID argument")]
    MissingUuid,
    /// More than one positional argument, or a bad value.
    #[error("unexpected argument {0:?}")]
    Unexpected(String),
    /// No `--app=` (app entrypoints).
    #[error("missing --app=NAME")]
    MissingApp,
}

impl RunArgs {
    /// Renders the argv (without argv\[0\]) in rkt's order.
    pub fn to_argv(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.debug {
            v.push("--debug".to_string());
        }
        v.push(format!(
            "--net={}",
            if self.net.is_empty() {
                "default"
            } else {
                &self.net
            }
        ));
        if self.interactive {
            v.push("--interactive".to_string());
        }
        if let Some(r) = &self.private_users {
            v.push(format!("--private-users={r}"));
        }
        if !self.hostname.is_empty() {
            v.push(format!("--hostname={}", self.hostname));
        }
        if let Some(t) = &self.mds_token {
            v.push(format!("--mds-token={t}"));
        }
        if let Some(p) = self.mds_port {
            v.push(format!("--mds-port={p}"));
        }
        for (on, flag) in [
            (
                self.disable_capabilities,
                "--disable-capabilities-restriction",
            ),
            (self.disable_paths, "--disable-paths"),
            (self.disable_seccomp, "--disable-seccomp"),
        ] {
            if on {
                v.push(flag.to_string());
            }
        }
        if let Some(ipc) = &self.ipc {
            v.push(format!("--ipc={ipc}"));
        }
        v.push(self.uuid.clone());
        v
    }

    /// Parses argv (without argv\[0\]). rkt's flags this project's stage0 never passes
    /// (`--local-config=`, `--dns-conf-mode=`) are accepted and ignored; other unknown flags
    /// are errors.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Self, ArgsError> {
        const IGNORED: [&str; 2] = ["--local-config=", "--dns-conf-mode="];
        let mut out = RunArgs {
            net: "default".into(),
            ..Default::default()
        };
        out.uuid = flags_then_uuid(args, |a| {
            if a == "--debug" {
                out.debug = true;
            } else if a == "--interactive" {
                out.interactive = true;
            } else if let Some(v) = a.strip_prefix("--net=") {
                out.net = v.to_string();
            } else if let Some(v) = a.strip_prefix("--hostname=") {
                out.hostname = v.to_string();
            } else if let Some(v) = a.strip_prefix("--mds-token=") {
                out.mds_token = Some(v.to_string());
            } else if let Some(v) = a.strip_prefix("--mds-port=") {
                // A bad port is dropped (the default applies), like other unknown values.
                out.mds_port = v.parse().ok();
            } else if a == "--disable-capabilities-restriction" {
                out.disable_capabilities = true;
            } else if a == "--disable-paths" {
                out.disable_paths = true;
            } else if a == "--disable-seccomp" {
                out.disable_seccomp = true;
            } else if let Some(v) = a.strip_prefix("--ipc=") {
                out.ipc = Some(v.to_string());
            } else if let Some(v) = a.strip_prefix("--private-users=") {
                out.private_users = Some(v.to_string());
            } else {
                return IGNORED.iter().any(|p| a.starts_with(p));
            }
            true
        })?;
        Ok(out)
    }
}

/// The one positional UUID among `args`; every `--flag` goes to `flag`, which returns whether
/// it knows it (unknown flags are errors).
fn flags_then_uuid<I: IntoIterator<Item = String>>(
    args: I,
    mut flag: impl FnMut(&str) -> bool,
) -> Result<String, ArgsError> {
    let mut uuid = None;
    for a in args {
        if a.starts_with("--") {
            if !flag(&a) {
                return Err(ArgsError::UnknownFlag(a));
            }
        } else if uuid.is_none() {
            uuid = Some(a);
        } else {
            return Err(ArgsError::Unexpected(a));
        }
    }
    uuid.filter(|u| !u.is_empty()).ok_or(ArgsError::MissingUuid)
}

/// Arguments of the `stop` entrypoint: `[--force] <UUID>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopArgs {
    /// `--force`: kill instead of a graceful stop.
    pub force: bool,
    /// The pod UUID.
    pub uuid: String,
}

impl StopArgs {
    /// Renders the argv (without argv\[0\]).
    pub fn to_argv(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.force {
            v.push("--force".into());
        }
        v.push(self.uuid.clone());
        v
    }
    /// Parses argv (without argv\[0\]).
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Self, ArgsError> {
        let mut force = false;
        let uuid = flags_then_uuid(args, |a| {
            force |= a == "--force";
            a == "--force"
        })?;
        Ok(StopArgs { force, uuid })
    }
}

/// Arguments of the `enter` entrypoint: `--pid=<PID> --appname=<NAME> -- cmd [args]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnterArgs {
    /// PID from the pod's `pid` file.
    pub pid: i32,
    /// App to enter.
    pub app: String,
    /// Command and arguments.
    pub cmd: Vec<String>,
}

impl EnterArgs {
    /// Renders the argv (without argv\[0\]).
    pub fn to_argv(&self) -> Vec<String> {
        let mut v = vec![
            format!("--pid={}", self.pid),
            format!("--appname={}", self.app),
            "--".into(),
        ];
        v.extend(self.cmd.iter().cloned());
        v
    }
    /// Parses argv (without argv\[0\]).
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Self, ArgsError> {
        let mut out = EnterArgs::default();
        let mut it = args.into_iter();
        for a in it.by_ref() {
            if a == "--" {
                break;
            } else if let Some(v) = a.strip_prefix("--pid=") {
                out.pid = v.parse().map_err(|_| ArgsError::Unexpected(a.clone()))?;
            } else if let Some(v) = a.strip_prefix("--appname=") {
                out.app = v.to_string();
            } else {
                return Err(ArgsError::UnknownFlag(a));
            }
        }
        out.cmd = it.collect();
        Ok(out)
    }
}

/// Arguments of the `attach` entrypoint, rkt's flags: `--action=custom-attach --app=<NAME>
/// [--debug] --tty-in=B --tty-out=B --stdin=B --stdout=B --stderr=B`, and `--pid=<PID>` (the
/// pod's, which rkt passed in `RKT_STAGE1_ENTERPID`). stage0 resolves `--mode=auto` and prints
/// `--mode=list` itself, so only `custom-attach` reaches a stage1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachArgs {
    /// PID from the pod's `pid` file.
    pub pid: i32,
    /// App to attach to.
    pub app: String,
    /// The endpoints.
    pub attach: crate::attach::Attach,
    /// `--debug`.
    pub debug: bool,
}

impl AttachArgs {
    /// Renders the argv (without argv\[0\]).
    pub fn to_argv(&self) -> Vec<String> {
        let a = &self.attach;
        let mut v = vec![
            "--action=custom-attach".to_string(),
            format!("--app={}", self.app),
            format!("--pid={}", self.pid),
        ];
        if self.debug {
            v.push("--debug".into());
        }
        for (flag, on) in [
            ("tty-in", a.tty_in),
            ("tty-out", a.tty_out),
            ("stdin", a.stdin),
            ("stdout", a.stdout),
            ("stderr", a.stderr),
        ] {
            v.push(format!("--{flag}={on}"));
        }
        v
    }
    /// Parses argv (without argv\[0\]).
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Self, ArgsError> {
        let mut out = AttachArgs::default();
        let bool_of = |a: &str, v: &str| match v {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(ArgsError::Unexpected(a.to_string())),
        };
        for a in args {
            let (k, v) = a.split_once('=').unwrap_or((a.as_str(), ""));
            match k {
                "--action" if v == "custom-attach" => {}
                "--app" => out.app = v.to_string(),
                "--pid" => out.pid = v.parse().map_err(|_| ArgsError::Unexpected(a.clone()))?,
                "--debug" => out.debug = v.is_empty() || bool_of(&a, v)?,
                "--tty-in" => out.attach.tty_in = bool_of(&a, v)?,
                "--tty-out" => out.attach.tty_out = bool_of(&a, v)?,
                "--stdin" => out.attach.stdin = bool_of(&a, v)?,
                "--stdout" => out.attach.stdout = bool_of(&a, v)?,
                "--stderr" => out.attach.stderr = bool_of(&a, v)?,
                "--action" => return Err(ArgsError::Unexpected(a.clone())),
                _ => return Err(ArgsError::UnknownFlag(a.clone())),
            }
        }
        if out.app.is_empty() {
            return Err(ArgsError::MissingApp);
        }
        // The name becomes part of a path in the pod.
        if !crate::exec::is_app_name(&out.app) {
            return Err(ArgsError::Unexpected(format!("--app={}", out.app)));
        }
        Ok(out)
    }
}

/// Arguments of the `gc` entrypoint: `[--debug] <UUID>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcArgs {
    /// `--debug`.
    pub debug: bool,
    /// The pod UUID.
    pub uuid: String,
}

impl GcArgs {
    /// Renders the argv (without argv\[0\]).
    pub fn to_argv(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.debug {
            v.push("--debug".into());
        }
        v.push(self.uuid.clone());
        v
    }
    /// Parses argv (without argv\[0\]): one UUID; `--local-config=` (rkt's) is ignored.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Self, ArgsError> {
        let mut debug = false;
        let uuid = flags_then_uuid(args, |a| {
            debug |= a == "--debug";
            a == "--debug" || a.starts_with("--local-config=")
        })?;
        Ok(GcArgs { debug, uuid })
    }
}

/// Arguments of the app entrypoints (`app/add`, `app/start`, `app/stop`, `app/rm`), as rkt 1.30
/// passed them: `[--debug] [--uuid=<UUID>] --app=<NAME>`; rkt's `--local-config=`,
/// `--disable-*` and `--private-users=` flags are accepted and ignored. Ours add
/// `--mount-fd=<FD>:<TARGET>` to `app/add` (`rkt app add --mnt-volume`, [`MountFd`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppArgs {
    /// `--debug`.
    pub debug: bool,
    /// The pod UUID.
    pub uuid: String,
    /// The app (an ACName, `crate::exec::is_app_name`).
    pub app: String,
    /// `app/add`: the app's volumes, as detached mount trees stage0 made and passed open.
    pub mounts: Vec<MountFd>,
    /// `app/add`, `--log-fd=<FD>`: the app's log file (`crate::attach::ANN_LOG_MODE`), an
    /// inherited detached mount of the host file stage0 opened, which the stage1 attaches at
    /// `crate::attach::guest_log_file` in the stage1 root. Our addition to rkt's arguments.
    pub log_fd: Option<i32>,
}

/// One volume of an app added to a running pod: `fd` is an inherited descriptor of a detached
/// mount tree (open_tree(2) with `OPEN_TREE_CLONE`, read-only already where the volume is),
/// which the stage1 attaches at `target`, a path in the app's root (symlinks resolved inside
/// that root, missing directories created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountFd {
    /// The inherited descriptor.
    pub fd: i32,
    /// Absolute path in the app's root.
    pub target: String,
}

impl AppArgs {
    /// Volumes or a log file to attach (`app/add`).
    pub fn has_trees(&self) -> bool {
        !self.mounts.is_empty() || self.log_fd.is_some()
    }

    /// Renders the argv (without argv\[0\]).
    pub fn to_argv(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.debug {
            v.push("--debug".into());
        }
        if !self.uuid.is_empty() {
            v.push(format!("--uuid={}", self.uuid));
        }
        v.push(format!("--app={}", self.app));
        for m in &self.mounts {
            v.push(format!("--mount-fd={}:{}", m.fd, m.target));
        }
        if let Some(fd) = self.log_fd {
            v.push(format!("--log-fd={fd}"));
        }
        v
    }
    /// Parses argv (without argv\[0\]); the app name must be an ACName.
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Self, ArgsError> {
        const IGNORED: [&str; 5] = [
            "--local-config=",
            "--private-users=",
            "--disable-capabilities-restriction",
            "--disable-paths",
            "--disable-seccomp",
        ];
        let mut out = AppArgs::default();
        for a in args {
            if a == "--debug" {
                out.debug = true;
            } else if let Some(v) = a.strip_prefix("--uuid=") {
                out.uuid = v.to_string();
            } else if let Some(v) = a.strip_prefix("--app=") {
                if !crate::exec::is_app_name(v) {
                    return Err(ArgsError::Unexpected(a));
                }
                out.app = v.to_string();
            } else if let Some(v) = a.strip_prefix("--mount-fd=") {
                let parsed = v.split_once(':').and_then(|(fd, target)| {
                    let fd = fd.parse::<i32>().ok().filter(|fd| *fd > 2)?;
                    target.starts_with('/').then(|| MountFd {
                        fd,
                        target: target.to_string(),
                    })
                });
                match parsed {
                    Some(m) => out.mounts.push(m),
                    None => return Err(ArgsError::Unexpected(a)),
                }
            } else if let Some(v) = a.strip_prefix("--log-fd=") {
                match v.parse::<i32>().ok().filter(|fd| *fd > 2) {
                    Some(fd) if out.log_fd.is_none() => out.log_fd = Some(fd),
                    _ => return Err(ArgsError::Unexpected(a)),
                }
            } else if IGNORED.iter().any(|p| a.starts_with(p)) {
            } else if a.starts_with("--") {
                return Err(ArgsError::UnknownFlag(a));
            } else {
                return Err(ArgsError::Unexpected(a));
            }
        }
        // rkt passed `--uuid=` to `app/add` only (the cwd is the pod directory).
        if out.app.is_empty() {
            return Err(ArgsError::MissingApp);
        }
        Ok(out)
    }
}

/// The stage1 entrypoints; each is a file in the stage1 image named by an annotation (our
/// images link `/run`, `/stop`, `/gc`, `/enter` to one binary that dispatches on the name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entrypoint {
    /// `run` ([`RunArgs`]).
    Run,
    /// `stop` ([`StopArgs`]).
    Stop,
    /// `gc` ([`GcArgs`]).
    Gc,
    /// `enter` ([`EnterArgs`]).
    Enter,
    /// `attach` ([`AttachArgs`]).
    Attach,
    /// `app/add` ([`AppArgs`]; file `app_add` in our images, as rkt's).
    AppAdd,
    /// `app/start` ([`AppArgs`]).
    AppStart,
    /// `app/stop` ([`AppArgs`]).
    AppStop,
    /// `app/rm` ([`AppArgs`]).
    AppRm,
}

impl Entrypoint {
    /// Every entrypoint.
    pub const ALL: [Entrypoint; 9] = [
        Entrypoint::Run,
        Entrypoint::Stop,
        Entrypoint::Gc,
        Entrypoint::Enter,
        Entrypoint::Attach,
        Entrypoint::AppAdd,
        Entrypoint::AppStart,
        Entrypoint::AppStop,
        Entrypoint::AppRm,
    ];
    /// The entrypoint's name (also its file name in our stage1 images).
    pub fn name(self) -> &'static str {
        match self {
            Entrypoint::Run => "run",
            Entrypoint::Stop => "stop",
            Entrypoint::Gc => "gc",
            Entrypoint::Enter => "enter",
            Entrypoint::Attach => "attach",
            Entrypoint::AppAdd => "app_add",
            Entrypoint::AppStart => "app_start",
            Entrypoint::AppStop => "app_stop",
            Entrypoint::AppRm => "app_rm",
        }
    }
    /// The entrypoint named `s`.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == s)
    }
    /// The annotation naming this entrypoint in a stage1 image manifest.
    pub fn annotation(self) -> &'static str {
        match self {
            Entrypoint::Run => ANN_RUN,
            Entrypoint::Stop => ANN_STOP,
            Entrypoint::Gc => ANN_GC,
            Entrypoint::Enter => ANN_ENTER,
            Entrypoint::Attach => ANN_ATTACH,
            Entrypoint::AppAdd => ANN_APP_ADD,
            Entrypoint::AppStart => ANN_APP_START,
            Entrypoint::AppStop => ANN_APP_STOP,
            Entrypoint::AppRm => ANN_APP_RM,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_args_round_trip() {
        let a = AttachArgs {
            pid: 42,
            app: "web".into(),
            attach: crate::attach::Attach {
                stdin: true,
                stdout: true,
                ..Default::default()
            },
            debug: true,
        };
        assert_eq!(AttachArgs::parse(a.to_argv()), Ok(a));
        assert_eq!(
            AttachArgs::parse(["--action=list".to_string(), "--app=a".into()]),
            Err(ArgsError::Unexpected("--action=list".into()))
        );
        assert_eq!(
            AttachArgs::parse(["--stdin=true".to_string()]),
            Err(ArgsError::MissingApp)
        );
        assert_eq!(
            AttachArgs::parse(["--app=../x".to_string()]),
            Err(ArgsError::Unexpected("--app=../x".into()))
        );
    }

    #[test]
    fn run_args_round_trip() {
        let a = RunArgs {
            debug: true,
            net: "host".into(),
            interactive: true,
            hostname: "h".into(),
            mds_token: Some("ab12".into()),
            mds_port: Some(18113),
            disable_capabilities: true,
            disable_paths: true,
            disable_seccomp: true,
            ipc: Some("parent".into()),
            private_users: Some("65536:65536".into()),
            uuid: "u".into(),
        };
        assert_eq!(RunArgs::parse(a.to_argv()), Ok(a));
        // rkt's order: the flags, the UUID last.
        let minimal = RunArgs {
            net: "none".into(),
            disable_seccomp: true,
            uuid: "u".into(),
            ..Default::default()
        };
        assert_eq!(minimal.to_argv(), ["--net=none", "--disable-seccomp", "u"]);
        assert_eq!(
            RunArgs::parse(vec!["--bogus".to_string(), "u".into()]),
            Err(ArgsError::UnknownFlag("--bogus".into()))
        );
        assert_eq!(
            RunArgs::parse(Vec::<String>::new()),
            Err(ArgsError::MissingUuid)
        );
    }

    #[test]
    fn gc_args_one_parser() {
        let a = GcArgs {
            debug: true,
            uuid: "u".into(),
        };
        assert_eq!(GcArgs::parse(a.to_argv()), Ok(a));
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            GcArgs::parse(v(&["--local-config=/etc/rkt", "u"])).map(|a| a.uuid),
            Ok("u".into())
        );
        assert_eq!(GcArgs::parse(v(&[])), Err(ArgsError::MissingUuid));
        assert_eq!(
            GcArgs::parse(v(&["u", "v"])),
            Err(ArgsError::Unexpected("v".into()))
        );
        assert!(GcArgs::parse(v(&["--bogus", "u"])).is_err());
        for e in Entrypoint::ALL {
            assert_eq!(Entrypoint::from_name(e.name()), Some(e));
        }
    }

    #[test]
    fn app_args_round_trip() {
        let a = AppArgs {
            debug: true,
            uuid: "u".into(),
            app: "web-1".into(),
            mounts: vec![MountFd {
                fd: 5,
                target: "/var/a:b,c".into(),
            }],
            log_fd: Some(6),
        };
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(AppArgs::parse(a.to_argv()), Ok(a));
        for bad in [
            "--mount-fd=1:/x",
            "--mount-fd=x:/x",
            "--mount-fd=5:x",
            "--mount-fd=5",
            "--log-fd=2",
            "--log-fd=x",
        ] {
            assert!(AppArgs::parse(v(&["--app=a", bad])).is_err(), "{bad}");
        }
        assert_eq!(AppArgs::parse(v(&["--uuid=u"])), Err(ArgsError::MissingApp));
        assert_eq!(
            AppArgs::parse(v(&["--app=a", "--debug"])).map(|a| a.uuid),
            Ok(String::new())
        );
        assert!(AppArgs::parse(v(&["--uuid=u", "--app=../x"])).is_err());
        assert!(AppArgs::parse(v(&["--uuid=u", "--app=a", "--bogus"])).is_err());
        assert_eq!(
            AppArgs::parse(v(&["--app=a", "--disable-seccomp", "--uuid=u"])).map(|a| a.app),
            Ok("a".into())
        );
        assert_eq!(Entrypoint::from_name("app_rm"), Some(Entrypoint::AppRm));
    }

    #[test]
    fn enter_args_round_trip() {
        let a = EnterArgs {
            pid: 7,
            app: "x".into(),
            cmd: vec!["/bin/sh".into(), "-c".into()],
        };
        assert_eq!(EnterArgs::parse(a.to_argv()), Ok(a));
    }
}
