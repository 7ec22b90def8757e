//! Finding and executing CNI plugins by the CNI spec: the `CNI_*` environment, the config on
//! stdin, bounded stdout/stderr, a timeout, and the spec's error object on failure.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pod_abi::child::{self, Bounded, Caps, ChildError};

use crate::CniError;

/// Host directories searched for plugins after the stage1 image's own, in order (rkt's paths
/// plus Debian's `containernetworking-plugins`). None of them is writable by a pod.
pub const HOST_PLUGIN_DIRS: [&str; 3] = ["/usr/lib/cni", "/opt/cni/bin", "/usr/libexec/cni"];
/// Largest plugin stdout read, in bytes (a result or an error object).
pub const STDOUT_MAX: usize = 1 << 20;
/// Largest plugin stderr kept (for error messages), in bytes.
pub const STDERR_MAX: usize = 16 << 10;
/// Default time a plugin may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a running plugin is looked at (whether it ended).
const POLL: Duration = Duration::from_millis(2);
/// `PATH` of plugins (they run `iptables`, `ip`, ...).
const PLUGIN_PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A CNI command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    /// `ADD`.
    Add,
    /// `DEL`.
    Del,
    /// `CHECK`.
    Check,
}

impl CniCommand {
    /// `CNI_COMMAND` value.
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
        }
    }
}

/// Where plugins are looked up, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDirs(pub Vec<PathBuf>);

impl Default for PluginDirs {
    fn default() -> Self {
        PluginDirs(HOST_PLUGIN_DIRS.iter().map(PathBuf::from).collect())
    }
}

impl PluginDirs {
    /// The host directories, after `first` (the stage1 image's plugin dir) when it exists.
    pub fn with_first(first: Option<PathBuf>) -> Self {
        let mut v: Vec<PathBuf> = first.into_iter().filter(|d| d.is_dir()).collect();
        v.extend(HOST_PLUGIN_DIRS.iter().map(PathBuf::from));
        PluginDirs(v)
    }

    /// `CNI_PATH`: the directories joined with `:`.
    pub fn cni_path(&self) -> String {
        self.0
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The first regular executable file named `ty` in the directories. `ty` must be a plain
    /// file name (a config cannot name a path).
    pub fn find(&self, ty: &str) -> Option<PathBuf> {
        if ty.is_empty() || ty.contains('/') || ty == "." || ty == ".." {
            return None;
        }
        self.0.iter().map(|d| d.join(ty)).find(|p| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    }
}

/// One plugin invocation.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    /// Network name (for errors).
    pub network: &'a str,
    /// Plugin type (for errors).
    pub plugin: &'a str,
    /// The plugin's executable.
    pub path: &'a Path,
    /// Command.
    pub command: CniCommand,
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_NETNS` (may be empty for DEL when the namespace is gone).
    pub netns: &'a str,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
    /// `CNI_ARGS`.
    pub args: &'a str,
    /// `CNI_PATH`.
    pub cni_path: &'a str,
    /// Config on stdin.
    pub stdin: &'a [u8],
    /// Time limit.
    pub timeout: Duration,
}

/// The spec's error object.
#[derive(Debug, serde::Deserialize)]
struct ErrorObject {
    #[serde(default)]
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// Runs one plugin; returns its stdout on success (exit 0). A non-zero exit becomes
/// [`CniError::Plugin`] with the spec's error object (or stderr) in the message. No thread of
/// the call outlives it ([`child::run_bounded`]) but one blocked on a pipe that a daemon the
/// plugin left behind holds (stage1-ns forks after it).
pub fn invoke(inv: &Invocation<'_>) -> Result<Vec<u8>, CniError> {
    let fail = |what: String| CniError::Plugin {
        network: inv.network.to_string(),
        plugin: inv.plugin.to_string(),
        command: inv.command.as_str(),
        msg: what,
    };
    let run = child::run_bounded(
        Command::new(inv.path)
            .env_clear()
            .env("PATH", PLUGIN_PATH_ENV)
            .env("CNI_COMMAND", inv.command.as_str())
            .env("CNI_CONTAINERID", inv.container_id)
            .env("CNI_NETNS", inv.netns)
            .env("CNI_IFNAME", inv.ifname)
            .env("CNI_ARGS", inv.args)
            .env("CNI_PATH", inv.cni_path)
            .current_dir("/"),
        inv.stdin,
        inv.timeout,
        Caps {
            stdout: STDOUT_MAX,
            stderr: STDERR_MAX,
        },
        POLL,
    );
    let Bounded {
        status,
        stdout: out,
        stderr: err,
        stdout_over: out_over,
        ..
    } = run.map_err(|e| {
        fail(match e {
            ChildError::Spawn { source, .. } => {
                format!("cannot execute {}: {source}", inv.path.display())
            }
            ChildError::TimedOut { limit, .. } => {
                format!("timed out after {} s", limit.as_secs_f32())
            }
            ChildError::Wait { source, .. } => format!("wait: {source}"),
        })
    })?;
    if out_over {
        return Err(fail(format!(
            "output larger than {STDOUT_MAX} bytes (exit status {status})"
        )));
    }
    if status.success() {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&err);
    let stderr = stderr.trim();
    let msg = match serde_json::from_slice::<ErrorObject>(&out) {
        Ok(e) if !e.msg.is_empty() => {
            let mut m = format!("{} (code {})", e.msg, e.code);
            if !e.details.is_empty() {
                m.push_str(&format!(": {}", e.details));
            }
            m
        }
        _ if !stderr.is_empty() => format!("{status}: {stderr}"),
        _ => format!(
            "{status}: {}",
            String::from_utf8_lossy(out.get(..512.min(out.len())).unwrap_or_default()).trim()
        ),
    };
    Err(fail(msg))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn inv<'a>(p: &'a Path, timeout: Duration) -> Invocation<'a> {
        Invocation {
            network: "net1",
            plugin: "fake",
            path: p,
            command: CniCommand::Add,
            container_id: "c",
            netns: "/x",
            ifname: "eth0",
            args: "IP=1.2.3.4",
            cni_path: "/usr/lib/cni",
            stdin: b"{\"name\":\"net1\"}",
            timeout,
        }
    }

    #[test]
    fn env_stdin_and_output() {
        let d = tempfile::tempdir().unwrap();
        let p = script(
            d.path(),
            "fake",
            "read -r l; echo \"$CNI_COMMAND $CNI_IFNAME $CNI_ARGS $l\"",
        );
        let out = invoke(&inv(&p, DEFAULT_TIMEOUT)).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap().trim(),
            "ADD eth0 IP=1.2.3.4 {\"name\":\"net1\"}"
        );
    }

    #[test]
    fn error_object_names_network_and_plugin() {
        let d = tempfile::tempdir().unwrap();
        let p = script(
            d.path(),
            "fake",
            r#"echo '{"cniVersion":"0.4.0","code":11,"msg":"no IP left","details":"x"}'; exit 1"#,
        );
        let e = invoke(&inv(&p, DEFAULT_TIMEOUT)).unwrap_err().to_string();
        assert!(
            e.contains("net1") && e.contains("fake") && e.contains("no IP left"),
            "{e}"
        );
        let p = script(d.path(), "fake2", "echo not json; echo oops >&2; exit 3");
        let e = invoke(&inv(&p, DEFAULT_TIMEOUT)).unwrap_err().to_string();
        assert!(e.contains("oops"), "{e}");
    }

    #[test]
    fn huge_output_and_timeout() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "big", "head -c 3000000 /dev/zero");
        let e = invoke(&inv(&p, DEFAULT_TIMEOUT)).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
        let p = script(d.path(), "slow", "sleep 5");
        let t = Instant::now();
        let e = invoke(&inv(&p, Duration::from_millis(300)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("timed out"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn lookup_refuses_paths() {
        let d = tempfile::tempdir().unwrap();
        script(d.path(), "ptp", "true");
        std::fs::write(d.path().join("noexec"), "x").unwrap();
        let dirs = PluginDirs(vec![d.path().to_path_buf()]);
        assert!(dirs.find("ptp").is_some());
        assert!(dirs.find("noexec").is_none());
        assert!(dirs.find("../ptp").is_none());
        assert!(dirs.find("/bin/sh").is_none());
        assert!(dirs.find("").is_none());
    }
}
