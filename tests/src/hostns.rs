//! A test-made "host" network namespace: every `rkt` of a namespace test runs in one, so that
//! the pods' veths, routes and iptables rules (real CNI plugins) never touch the machine's
//! own. Created with `ip netns add` (a bind mount under `/var/run/netns`), removed on drop.

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A network namespace the test owns.
#[derive(Debug)]
pub struct HostNs {
    /// Its name (`ip netns` name).
    pub name: String,
    /// Its path.
    pub path: PathBuf,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl HostNs {
    /// Creates a namespace with `lo` up; `None` when `ip` is missing or fails.
    pub fn create() -> Option<HostNs> {
        let name = format!(
            "rkt-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
        let ns = HostNs {
            path: PathBuf::from("/var/run/netns").join(&name),
            name,
        };
        ns.ip(&["link", "set", "lo", "up"]);
        Some(ns)
    }

    /// Makes `cmd` run in this namespace (network namespace only: the mount namespace stays
    /// the machine's, so `/var/run/netns` bind mounts of pods stay visible to later commands).
    pub fn enter(&self, cmd: &mut Command) {
        let path = self.path.clone();
        // SAFETY: the closure only opens a file and calls setns between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let f = std::fs::File::open(&path)?;
                nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
    }

    /// Runs `cmd args` in the namespace.
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Output {
        let mut c = Command::new(cmd);
        c.args(args);
        self.enter(&mut c);
        c.output().unwrap_or_else(|e| panic!("{cmd}: {e}"))
    }

    /// `ip ARGS` in the namespace; panics on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let o = self.exec("ip", args);
        assert!(
            o.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// What must be identical before pods and after their gc (rkt #1163, #2565, #3114): this
    /// namespace's normalized `iptables-save`, its interface names, and the host-local IPAM
    /// reservations in `ipam_dirs` (sorted; `lock` and `last_reserved_ip*` are bookkeeping).
    pub fn net_snapshot(&self, ipam_dirs: &[PathBuf]) -> NetSnapshot {
        let o = self.exec("iptables-save", &[]);
        let iptables = normalize_iptables(&String::from_utf8_lossy(&o.stdout));
        let links = self
            .ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect();
        let mut ipam = Vec::new();
        for d in ipam_dirs {
            for f in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let n = f.file_name().to_string_lossy().into_owned();
                if n != "lock" && !n.starts_with("last_reserved_ip") {
                    ipam.push(format!("{}/{n}", d.display()));
                }
            }
        }
        ipam.sort();
        NetSnapshot {
            iptables,
            links,
            ipam,
        }
    }

    /// Runs `f` on a thread inside the namespace (sockets it creates live there).
    pub fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = self.path.clone();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
    }
}

impl Drop for HostNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// `iptables-save` without comments and counters, and without tables that hold nothing but
/// their built-in chains with ACCEPT policies (a table appears once anything touched it).
pub fn normalize_iptables(save: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut table: Vec<String> = Vec::new();
    for l in save.lines().filter(|l| !l.starts_with('#')) {
        let l = match l.find(" [") {
            Some(i) if l.starts_with(':') => l[..i].to_string(),
            _ => l.to_string(),
        };
        if l == "COMMIT" {
            let empty = table
                .iter()
                .skip(1)
                .all(|c| c.starts_with(':') && c.ends_with(" ACCEPT"));
            if !empty {
                out.append(&mut table);
                out.push(l);
            }
            table.clear();
        } else {
            table.push(l);
        }
    }
    out
}

/// A network state to compare before a pod and after its gc ([`HostNs::net_snapshot`]).
#[derive(Debug, PartialEq, Eq)]
pub struct NetSnapshot {
    /// `iptables-save`, normalized ([`normalize_iptables`]).
    pub iptables: Vec<String>,
    /// Interface names.
    pub links: Vec<String>,
    /// IPAM reservations (host-local files).
    pub ipam: Vec<String>,
}
