//! escape-probe: an app for the pod-boundary tests (static binary). It tries what a hostile app
//! would and prints one line per observation; the tests decide from those lines (and from what
//! they find on the host afterwards) whether the boundary held. Actions, in argv order:
//!
//! * `status`: `uid=U gid=G` and `caps: CapInh=.. CapPrm=.. CapEff=.. CapBnd=.. CapAmb=..`
//!   (hex masks from `/proc/self/status`).
//! * `create PATH`: creates `PATH` exclusively; `create PATH: ok` or `create PATH: <ERRNO>`.
//! * `read PATH`: reads `PATH`; `read PATH: ok` or `read PATH: <ERRNO>`.
//! * `open-write PATH`: opens `PATH` for writing without writing anything (e.g. a host-global
//!   sysctl such as `/proc/sys/kernel/core_pattern`); `open-write PATH: ok|<ERRNO>`.
//! * `chroot-escape MARKER`: the classic double chroot, in a child process (the probe's own root
//!   stays): `mkdir .escape-probe`, `chroot .escape-probe`, `chdir ..` many times, `chroot .`;
//!   then looks for `MARKER` (a file that exists only outside the app's root, e.g. guest-init's
//!   `/rkt/plan.json`) and creates `/escape-probe-was-here` in the root it reached. Prints
//!   `chroot-escape: chroot: ok|<ERRNO>`, `chroot-escape: MARKER: absent|PRESENT` and
//!   `chroot-escape: wrote /escape-probe-was-here: ok|<ERRNO>`.
//! * `userns`: `unshare(CLONE_NEWUSER)` in a child (the door to the kernel code user
//!   namespaces open to anyone); `userns: ok|<ERRNO>`.
//! * `userns-clone`: the same through `clone(CLONE_NEWUSER | SIGCHLD)`, the door `unshare` alone
//!   does not close; `userns-clone: ok|<ERRNO>`.
//! * `thread`: starts and joins a thread (glibc tries `clone3`, then `clone`); `thread: ok`.
//! * `io-uring`: `io_uring_setup(1, {0})`; `io-uring: ok|<ERRNO>`.
//! * `seccomp-status`: `seccomp: Seccomp=S NoNewPrivs=N` (from `/proc/self/status`).
//! * `ns NAME`: the process's namespace of that kind; `ns NAME: ipc:[4026531839]|<ERRNO>`.
//! * `print PATH`: the first line of `PATH` (e.g. `/proc/self/uid_map`), spaces collapsed;
//!   `print PATH: LINE|<ERRNO>`; `print-all PATH`: every line so (`print-all PATH: LINE`).
//! * `bind PORT`: binds a TCP socket to `127.0.0.1:PORT` (a port below 1024 needs
//!   `CAP_NET_BIND_SERVICE` over the network namespace, or a low
//!   `ip_unprivileged_port_start`); `bind PORT: ok|<ERRNO>`.
//!
//! * `snoop MARKER SECS`: for SECS seconds, watches for processes that appear in the pod after
//!   it started (a `rkt enter` command on its way in, an app being launched) and reads each one's
//!   `/proc/PID/environ` as often as it can until the process is gone. A process whose environment
//!   holds `MARKER` is one the probe could read before it became the app's (its environment then
//!   was its launcher's, e.g. the host's `rkt`): `snoop: MARKER in the environment of a newcomer`.
//!   Ends with `snoop: done, N newcomers, M of them readable at some point`.
//!
//! * `reopen FD r|w`: reopens its own fd FD through `/proc/self/fd/FD` (non-blocking) for
//!   reading, then prints the first line read, or for writing, then writes `written by the
//!   pod`: `reopen FD r: LINE|<ERRNO>`, `reopen FD w: ok|<ERRNO>`.
//! * `mknod-open PATH c|b MAJOR MINOR`: makes a device node (mode 0600) and opens it for
//!   writing (non-blocking): `mknod-open PATH: made, open ok|<ERRNO>` or
//!   `mknod-open PATH: mknod <ERRNO>`.
//! * `link PATH`: `link PATH: TARGET|<ERRNO>` (e.g. `/proc/self/fd/0`).
//! * `size PATH`: the bytes a read of `PATH` gives (`size PATH: N|<ERRNO>`); `entries PATH`:
//!   the entries of directory `PATH` (`entries PATH: N|<ERRNO>`).
//! * `rdev FD|PATH`: the device number of what fd FD (or `PATH`, e.g. `/dev/console`) is
//!   (`rdev FD: MAJOR:MINOR|<ERRNO>`), e.g. to tell one terminal from another.
//! * `forks N`: a bounded fork bomb: forks up to N children that all stay alive (each waits
//!   for EOF on a pipe), stops at the first failure, then ends them all:
//!   `forks: N alive` or `forks: K alive, then <ERRNO>`.
//! * `deep N`: makes a chain of N nested directories `d/d/d/...` below the working directory,
//!   each made and entered relative to the last (a path far beyond `PATH_MAX`):
//!   `deep: N levels` or `deep: K levels, then <ERRNO>`.
//! * `fill PATH MIB`: appends up to MIB MiB to `PATH`, syncing each: `fill PATH: N MiB` or
//!   `fill PATH: K MiB, then <ERRNO>` (e.g. `EDQUOT` at a pod's disk limit).
//! * `set-project PATH ID`: sets the XFS project ID of `PATH` (made if missing) with
//!   `ioctl(FS_IOC_FSSETXATTR)`: `set-project PATH: ok|<ERRNO>`.
//! * `snoop-caps SECS`: for SECS seconds, watches for processes that appear in the pod after it
//!   started and reads each one's `CapEff` as often as it can until it is gone or holds no
//!   `CAP_SYS_ADMIN`; one seen holding it (a launcher not yet the app's: guest-init's or
//!   stage1-ns's capabilities) is attached to at once (`PTRACE_ATTACH`, detached right away):
//!   `snoop-caps: done, N newcomers, P seen privileged, A attached while privileged`.
//! * `procs MARKER`: every other process the probe sees in `/proc`, one line each:
//!   `proc PID comm=COMM capeff=HEX environ=MARKER|clean|<ERRNO> root=ok|<ERRNO>
//!   attach=ok|<ERRNO>`: whether its environment holds MARKER (e.g. a variable set only in the
//!   host's `rkt`), whether its root opens (`/proc/PID/root`) and whether `PTRACE_ATTACH` takes
//!   it (then detached at once): with `CAP_SYS_PTRACE` and `ptrace` allowed, a process the probe
//!   attaches to runs whatever the probe wants, with that process's capabilities.
//!
//! Exits 0 unless the arguments are wrong (2) or the escape child could not be run (1).

use std::io::Write;

/// Directory the double chroot starts from (created in the current directory).
const ESCAPE_DIR: &str = ".escape-probe";
/// `chdir("..")` steps after the first chroot: more than any real depth.
const CLIMB_STEPS: usize = 64;
/// File the escape child creates in the root it reached.
const ESCAPE_WITNESS: &str = "/escape-probe-was-here";
/// The capability lines of `/proc/self/status`, in print order.
const CAP_FIELDS: [&str; 5] = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"];

fn errno_name(e: nix::errno::Errno) -> String {
    format!("{e:?}")
}

fn io_name(e: &std::io::Error) -> String {
    e.raw_os_error()
        .map(|n| errno_name(nix::errno::Errno::from_raw(n)))
        .unwrap_or_else(|| e.to_string())
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn status() {
    say(&format!(
        "uid={} gid={}",
        nix::unistd::getuid(),
        nix::unistd::getgid()
    ));
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps: Vec<String> = CAP_FIELDS
        .iter()
        .map(|f| {
            let v = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{f}:")))
                .map(str::trim)
                .unwrap_or("?");
            format!("{f}={v}")
        })
        .collect();
    say(&format!("caps: {}", caps.join(" ")));
}

fn create(path: &str) {
    let r = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path);
    match r {
        Ok(_) => say(&format!("create {path}: ok")),
        Err(e) => say(&format!("create {path}: {}", io_name(&e))),
    }
}

fn read(path: &str) {
    match std::fs::read(path) {
        Ok(_) => say(&format!("read {path}: ok")),
        Err(e) => say(&format!("read {path}: {}", io_name(&e))),
    }
}

fn open_write(path: &str) {
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(_) => say(&format!("open-write {path}: ok")),
        Err(e) => say(&format!("open-write {path}: {}", io_name(&e))),
    }
}

/// The double chroot, in the calling (forked) process; returns its exit code.
fn escape(marker: &str) -> i32 {
    let _ = std::fs::create_dir(ESCAPE_DIR);
    if let Err(e) = nix::unistd::chroot(ESCAPE_DIR) {
        say(&format!("chroot-escape: chroot: {}", errno_name(e)));
        return 0;
    }
    for _ in 0..CLIMB_STEPS {
        let _ = nix::unistd::chdir("..");
    }
    if let Err(e) = nix::unistd::chroot(".") {
        say(&format!("chroot-escape: chroot: {}", errno_name(e)));
        return 0;
    }
    let _ = nix::unistd::chdir("/");
    say("chroot-escape: chroot: ok");
    let seen = std::fs::symlink_metadata(marker).is_ok();
    say(&format!(
        "chroot-escape: {marker}: {}",
        if seen { "PRESENT" } else { "absent" }
    ));
    let w = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(ESCAPE_WITNESS);
    let res = match w {
        Ok(_) => "ok".to_string(),
        Err(e) => io_name(&e),
    };
    say(&format!("chroot-escape: wrote {ESCAPE_WITNESS}: {res}"));
    0
}

fn chroot_escape(marker: &str) -> Result<(), String> {
    // SAFETY: single-threaded program; the child only makes plain system calls and exits.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => {
            let code = escape(marker);
            // SAFETY: _exit after fork is always safe.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            nix::sys::wait::waitpid(child, None).map_err(|e| format!("wait: {e}"))?;
            Ok(())
        }
    }
}

/// `unshare(CLONE_NEWUSER)` in a forked child, so the probe's own namespaces stay.
fn userns() {
    // SAFETY: single-threaded program; the child only makes plain system calls and exits.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let line = match nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER) {
                Ok(()) => "userns: ok".to_string(),
                Err(e) => format!("userns: {}", errno_name(e)),
            };
            say(&line);
            // SAFETY: _exit after fork is always safe.
            unsafe { libc::_exit(0) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let _ = nix::sys::wait::waitpid(child, None);
        }
        Err(e) => say(&format!("userns: fork: {}", errno_name(e))),
    }
}

/// `clone(CLONE_NEWUSER | SIGCHLD)` without a new stack (the child returns from the call on a
/// copy of this stack, as after `fork`) and exits at once.
fn userns_clone() {
    let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: a fork-like clone (no CLONE_VM): the child gets a copy of the address space and
    // only calls _exit.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match pid {
        0 => {
            // SAFETY: _exit in the child.
            unsafe { libc::_exit(0) }
        }
        -1 => say(&format!(
            "userns-clone: {}",
            errno_name(nix::errno::Errno::last())
        )),
        child => {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child as i32), None);
            say("userns-clone: ok");
        }
    }
}

/// A thread, started and joined.
fn thread() {
    match std::thread::spawn(|| 7).join() {
        Ok(7) => say("thread: ok"),
        _ => say("thread: failed"),
    }
}

/// `io_uring_setup(1, params)` with zeroed parameters.
fn io_uring() {
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes the 120-byte `struct io_uring_params` we own.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        say(&format!(
            "io-uring: {}",
            errno_name(nix::errno::Errno::last())
        ));
    } else {
        say("io-uring: ok");
        // SAFETY: closing the descriptor the call just returned.
        unsafe { libc::close(fd as i32) };
    }
}

/// The numeric entries of `/proc`.
fn pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// See the module documentation (`snoop`).
fn forks(n: &str) {
    let Ok(n) = n.parse::<usize>() else {
        eprintln!("escape-probe: forks needs a count, got {n:?}");
        std::process::exit(2)
    };
    let (hold, release) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => return say(&format!("forks: pipe {}", errno_name(e))),
    };
    let mut alive = Vec::new();
    let mut failure = None;
    while alive.len() < n {
        // SAFETY: the child only reads a pipe and calls _exit, both async-signal-safe.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                // Only the parent holds the write end, so its drop is EOF here.
                let _ = nix::unistd::close(std::os::fd::AsRawFd::as_raw_fd(&release));
                let mut b = [0u8; 1];
                let _ = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&hold), &mut b);
                // SAFETY: _exit after fork is always safe.
                unsafe { libc::_exit(0) }
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => alive.push(child),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(release);
    for c in &alive {
        let _ = nix::sys::wait::waitpid(*c, None);
    }
    match failure {
        None => say(&format!("forks: {} alive", alive.len())),
        Some(e) => say(&format!(
            "forks: {} alive, then {}",
            alive.len(),
            errno_name(e)
        )),
    }
}

fn deep(n: &str) {
    let Ok(n) = n.parse::<usize>() else {
        eprintln!("escape-probe: deep needs a count, got {n:?}");
        std::process::exit(2)
    };
    for made in 0..n {
        let step = nix::unistd::mkdir("d", nix::sys::stat::Mode::from_bits_truncate(0o755))
            .and_then(|()| nix::unistd::chdir("d"));
        if let Err(e) = step {
            return say(&format!("deep: {made} levels, then {}", errno_name(e)));
        }
    }
    say(&format!("deep: {n} levels"));
}

/// `fill PATH MIB`: appends up to MIB MiB to `PATH` (made if missing), 1 MiB a write, then
/// `fsync`s: `fill PATH: N MiB` or `fill PATH: K MiB, then <ERRNO>`.
fn fill(path: &str, mib: &str) {
    use std::io::Write as _;
    let Ok(mib) = mib.parse::<usize>() else {
        eprintln!("escape-probe: fill needs a size in MiB, got {mib:?}");
        std::process::exit(2)
    };
    let mut f = match std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => return say(&format!("fill {path}: 0 MiB, then {}", io_name(&e))),
    };
    let chunk = vec![0x5au8; 1 << 20];
    for done in 0..mib {
        if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_data()) {
            return say(&format!("fill {path}: {done} MiB, then {}", io_name(&e)));
        }
    }
    say(&format!("fill {path}: {mib} MiB"));
}

/// `set-project PATH ID`: sets the XFS project ID of `PATH` (made if missing) to ID with
/// `ioctl(FS_IOC_FSSETXATTR)`, which a file's owner may do: `set-project PATH: ok|<ERRNO>`.
fn set_project(path: &str, id: &str) {
    use std::os::fd::AsRawFd;
    /// `struct fsxattr`.
    #[repr(C)]
    #[derive(Default)]
    struct FsXattr {
        xflags: u32,
        extsize: u32,
        nextents: u32,
        projid: u32,
        cowextsize: u32,
        pad: [u8; 8],
    }
    let id: u32 = id.parse().unwrap_or(0);
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => return say(&format!("set-project {path}: {}", io_name(&e))),
    };
    let mut fa = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR fills the struct fsxattr we own.
    if unsafe { libc::ioctl(f.as_raw_fd(), 0x801c_581f, &mut fa as *mut FsXattr) } != 0 {
        let e = std::io::Error::last_os_error();
        return say(&format!("set-project {path}: get {}", io_name(&e)));
    }
    fa.projid = id;
    // SAFETY: FS_IOC_FSSETXATTR reads the struct fsxattr we own.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), 0x401c_5820, &fa as *const FsXattr) };
    if r == 0 {
        say(&format!("set-project {path}: ok"));
    } else {
        let e = std::io::Error::last_os_error();
        say(&format!("set-project {path}: {}", io_name(&e)));
    }
}

fn snoop(marker: &str, secs: &str) {
    let secs: u64 = secs.parse().unwrap_or(10);
    let me = std::process::id() as i32;
    let old: std::collections::HashSet<i32> = pids().into_iter().collect();
    let mut seen = std::collections::HashSet::new();
    let (mut readable, mut hit) = (0usize, false);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        for pid in pids() {
            if pid == me || old.contains(&pid) || !seen.insert(pid) {
                continue;
            }
            // Read it as often as possible while it lives: the window is between the
            // launcher dropping to the app's identity and its execve.
            let path = format!("/proc/{pid}/environ");
            let mut was_readable = false;
            loop {
                match std::fs::read(&path) {
                    Ok(env) => {
                        was_readable = true;
                        if !hit && env.windows(marker.len()).any(|w| w == marker.as_bytes()) {
                            hit = true;
                            say("snoop: MARKER in the environment of a newcomer");
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => break,
                    Err(_) => {}
                }
                if std::fs::symlink_metadata(format!("/proc/{pid}")).is_err()
                    || std::time::Instant::now() >= end
                {
                    break;
                }
                // A process that runs its own program is of no further interest once
                // readable: stop after a few reads to watch the next one.
                if was_readable && !hit {
                    break;
                }
            }
            readable += usize::from(was_readable);
        }
    }
    say(&format!(
        "snoop: done, {} newcomers, {readable} of them readable at some point",
        seen.len()
    ));
}

/// `CAP_SYS_ADMIN`'s bit in a capability mask.
const CAP_SYS_ADMIN_BIT: u32 = 21;

/// The effective capabilities of `pid` (from its `status`), if it is still there.
fn cap_eff(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hex = text.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
}

fn snoop_caps(secs: &str) {
    let secs: u64 = secs.parse().unwrap_or(10);
    let me = std::process::id() as i32;
    let old: std::collections::HashSet<i32> = pids().into_iter().collect();
    let mut seen = std::collections::HashSet::new();
    let (mut privileged, mut attached) = (0usize, 0usize);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        for pid in pids() {
            if pid == me || old.contains(&pid) || !seen.insert(pid) {
                continue;
            }
            let mut was_privileged = false;
            while let Some(cap) = cap_eff(pid) {
                if cap & (1 << CAP_SYS_ADMIN_BIT) == 0 || std::time::Instant::now() >= end {
                    break;
                }
                if !was_privileged {
                    was_privileged = true;
                    privileged += 1;
                    if attach(pid as u32) == "ok" {
                        attached += 1;
                    }
                }
            }
        }
    }
    say(&format!(
        "snoop-caps: done, {} newcomers, {privileged} seen privileged, {attached} attached while privileged",
        seen.len()
    ));
}

/// See the module documentation (`reopen`).
fn reopen(fd: &str, mode: &str) {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = format!("/proc/self/fd/{fd}");
    let mut o = std::fs::OpenOptions::new();
    o.custom_flags(libc::O_NONBLOCK);
    if mode == "w" {
        o.write(true);
    } else {
        o.read(true);
    }
    let line = match o.open(&path) {
        Err(e) => io_name(&e),
        Ok(mut f) if mode == "w" => match f.write_all(b"written by the pod\n") {
            Ok(()) => "ok".to_string(),
            Err(e) => io_name(&e),
        },
        Ok(mut f) => {
            let mut buf = vec![0u8; 4096];
            match f.read(&mut buf) {
                Ok(n) => String::from_utf8_lossy(buf.get(..n).unwrap_or_default())
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                Err(e) => io_name(&e),
            }
        }
    };
    say(&format!("reopen {fd} {mode}: {line}"));
}

fn procs(marker: &str) {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        say("procs: /proc unreadable");
        return;
    };
    let mut pids: Vec<u32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|p| *p != me)
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let capeff = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(str::trim)
            .unwrap_or("?")
            .to_string();
        let environ = match std::fs::read(format!("/proc/{pid}/environ")) {
            Ok(b) if b.windows(marker.len()).any(|w| w == marker.as_bytes()) => marker.to_string(),
            Ok(_) => "clean".to_string(),
            Err(e) => io_name(&e),
        };
        let root = match std::fs::read_dir(format!("/proc/{pid}/root/")) {
            Ok(_) => "ok".to_string(),
            Err(e) => io_name(&e),
        };
        say(&format!(
            "proc {pid} comm={} capeff={capeff} environ={environ} root={root} attach={}",
            comm.trim(),
            attach(pid)
        ));
    }
}

/// `PTRACE_ATTACH`, wait for the stop, `PTRACE_DETACH`: `ok` or the attach's errno.
fn attach(pid: u32) -> String {
    let pid = pid as libc::pid_t;
    let none = std::ptr::null_mut::<libc::c_void>();
    // SAFETY: PTRACE_ATTACH takes no addresses; its failure is reported by errno.
    if unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, none, none) } != 0 {
        return errno_name(nix::errno::Errno::last());
    }
    // SAFETY: waits for the stop the attach sent; a null status pointer is allowed.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL) };
    // SAFETY: detaches the stopped tracee, signal 0: it goes on as before.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, none, none) };
    "ok".to_string()
}

fn seccomp_status() {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |f: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{f}:")))
            .map(str::trim)
            .unwrap_or("?")
            .to_string()
    };
    say(&format!(
        "seccomp: Seccomp={} NoNewPrivs={}",
        field("Seccomp"),
        field("NoNewPrivs")
    ));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut operand = || {
            it.next().cloned().unwrap_or_else(|| {
                eprintln!("escape-probe: {a} needs an argument");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "status" => status(),
            "create" => create(&operand()),
            "read" => read(&operand()),
            "open-write" => open_write(&operand()),
            "userns" => userns(),
            "userns-clone" => userns_clone(),
            "thread" => thread(),
            "io-uring" => io_uring(),
            "seccomp-status" => seccomp_status(),
            "ns" => {
                let name = operand();
                match std::fs::read_link(format!("/proc/self/ns/{name}")) {
                    Ok(t) => say(&format!("ns {name}: {}", t.display())),
                    Err(e) => say(&format!("ns {name}: {}", io_name(&e))),
                }
            }
            "print" | "print-all" => {
                let path = operand();
                match std::fs::read_to_string(&path) {
                    Ok(t) => {
                        let n = if a == "print" { 1 } else { usize::MAX };
                        for line in t.lines().take(n) {
                            let words: Vec<&str> = line.split_whitespace().collect();
                            say(&format!("{a} {path}: {}", words.join(" ")));
                        }
                    }
                    Err(e) => say(&format!("{a} {path}: {}", io_name(&e))),
                }
            }
            "bind" => {
                let port = operand();
                match std::net::TcpListener::bind(format!("127.0.0.1:{port}")) {
                    Ok(_) => say(&format!("bind {port}: ok")),
                    Err(e) => say(&format!("bind {port}: {}", io_name(&e))),
                }
            }
            "reopen" => {
                let fd = operand();
                reopen(&fd, &operand());
            }
            "size" => {
                let path = operand();
                match std::fs::read(&path) {
                    Ok(b) => say(&format!("size {path}: {}", b.len())),
                    Err(e) => say(&format!("size {path}: {}", io_name(&e))),
                }
            }
            "entries" => {
                let path = operand();
                match std::fs::read_dir(&path) {
                    Ok(d) => say(&format!("entries {path}: {}", d.count())),
                    Err(e) => say(&format!("entries {path}: {}", io_name(&e))),
                }
            }
            "rdev" => {
                let fd = operand();
                let st = match fd.parse::<i32>() {
                    Ok(n) => nix::sys::stat::fstat(n),
                    Err(_) => nix::sys::stat::stat(fd.as_str()),
                };
                let line = match st {
                    Ok(st) => format!(
                        "{}:{}",
                        nix::sys::stat::major(st.st_rdev),
                        nix::sys::stat::minor(st.st_rdev)
                    ),
                    Err(e) => errno_name(e),
                };
                say(&format!("rdev {fd}: {line}"));
            }
            "mknod-open" => {
                let path = operand();
                let kind = operand();
                let (major, minor) = (operand(), operand());
                let dev =
                    nix::sys::stat::makedev(major.parse().unwrap_or(0), minor.parse().unwrap_or(0));
                let sflag = if kind == "b" {
                    nix::sys::stat::SFlag::S_IFBLK
                } else {
                    nix::sys::stat::SFlag::S_IFCHR
                };
                let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
                let line = match nix::sys::stat::mknod(path.as_str(), sflag, mode, dev) {
                    Err(e) => format!("mknod {}", errno_name(e)),
                    Ok(()) => {
                        use std::os::unix::fs::OpenOptionsExt;
                        let o = std::fs::OpenOptions::new()
                            .write(true)
                            .custom_flags(libc::O_NONBLOCK)
                            .open(&path);
                        match o {
                            Ok(_) => "made, open ok".to_string(),
                            Err(e) => format!("made, open {}", io_name(&e)),
                        }
                    }
                };
                say(&format!("mknod-open {path}: {line}"));
            }
            "link" => {
                let path = operand();
                match std::fs::read_link(&path) {
                    Ok(t) => say(&format!("link {path}: {}", t.display())),
                    Err(e) => say(&format!("link {path}: {}", io_name(&e))),
                }
            }
            "forks" => forks(&operand()),
            "procs" => procs(&operand()),
            "snoop-caps" => snoop_caps(&operand()),
            "deep" => deep(&operand()),
            "fill" => {
                let path = operand();
                fill(&path, &operand());
            }
            "set-project" => {
                let path = operand();
                set_project(&path, &operand());
            }
            "snoop" => {
                let marker = operand();
                snoop(&marker, &operand());
            }
            "chroot-escape" => {
                if let Err(e) = chroot_escape(&operand()) {
                    eprintln!("escape-probe: {e}");
                    std::process::exit(1);
                }
            }
            other => {
                eprintln!("escape-probe: unknown action {other:?}");
                std::process::exit(2);
            }
        }
    }
}
