//! `--private-users`: a forked app process enters a user namespace whose IDs map to the pod's
//! host range (`pod_abi::userns::IdRange`) before it confines itself. Only a process holding
//! `CAP_SETUID`/`CAP_SETGID` over the host's IDs may write such a map, and the child loses
//! them when it unshares, so its parent (guest-init, or `stage1-ns enter`) writes the maps:
//!
//! 1. [`Handshake::new`] before the fork (two close-on-exec pipes);
//! 2. the child: [`Handshake::child`] unshares `CLONE_NEWUSER`, tells the parent and waits;
//! 3. the parent: [`Handshake::parent`] writes `uid_map` and `gid_map` of the child
//!    (`0 SHIFT COUNT`) and releases it;
//! 4. the child becomes the namespace's root (`setresgid`/`setresuid` 0: host ID `SHIFT`) and
//!    goes on: [`crate::root::confine`] makes its mount namespace inside the new user
//!    namespace (the pod's mounts come along locked), then the app's identity is assumed
//!    within the namespace.
//!
//! Either side ending early closes its pipe ends, so the other never waits forever.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sched::{unshare, CloneFlags};
use nix::unistd::Pid;
use pod_abi::userns::IdRange;

use crate::{at, StepError};

/// The pipes of one handshake.
#[derive(Debug)]
pub struct Handshake {
    /// Child -> parent: "I unshared".
    ready: (OwnedFd, OwnedFd),
    /// Parent -> child: "your maps are written".
    go: (OwnedFd, OwnedFd),
}

impl Handshake {
    /// Creates the pipes (before the fork).
    pub fn new() -> nix::Result<Self> {
        Ok(Handshake {
            ready: nix::unistd::pipe2(OFlag::O_CLOEXEC)?,
            go: nix::unistd::pipe2(OFlag::O_CLOEXEC)?,
        })
    }

    /// In the child: unshares the user namespace, waits until the parent wrote its maps, and
    /// becomes the namespace's root.
    pub fn child(self) -> Result<(), StepError> {
        let Handshake {
            ready: (ready_r, ready_w),
            go: (go_r, go_w),
        } = self;
        drop((ready_r, go_w));
        unshare(CloneFlags::CLONE_NEWUSER).map_err(at("unshare user namespace"))?;
        write_byte(&ready_w).map_err(at("tell the parent the user namespace exists"))?;
        drop(ready_w);
        if !read_byte(&go_r).map_err(at("wait for the user namespace's ID maps"))? {
            return Err(StepError::new(
                "the parent did not map the pod's user IDs",
                nix::errno::Errno::EPERM,
            ));
        }
        nix::unistd::setresgid(0.into(), 0.into(), 0.into())
            .map_err(at("become group 0 of the pod's user namespace"))?;
        nix::unistd::setresuid(0.into(), 0.into(), 0.into())
            .map_err(at("become user 0 of the pod's user namespace"))
    }

    /// In the parent: waits for `child` to unshare, writes its `gid_map` and `uid_map` for
    /// `range` through `proc_dir` (a `/proc` of a PID namespace in which `child` is the pid
    /// fork returned), then releases it. An error leaves the child to fail on its own (its
    /// `go` pipe closes when this returns).
    pub fn parent(
        self,
        proc_dir: BorrowedFd<'_>,
        child: Pid,
        range: IdRange,
    ) -> Result<(), StepError> {
        let Handshake {
            ready: (ready_r, ready_w),
            go: (go_r, go_w),
        } = self;
        drop((ready_w, go_r));
        if !read_byte(&ready_r).map_err(at("wait for the child's user namespace"))? {
            return Err(StepError::new(
                "the child ended before it made its user namespace",
                nix::errno::Errno::ECHILD,
            ));
        }
        for file in ["gid_map", "uid_map"] {
            let rel = format!("{child}/{file}");
            write_map(proc_dir, &rel, range.map_line().as_bytes())
                .map_err(|e| StepError::new(format!("write /proc/{rel}"), e))?;
        }
        write_byte(&go_w).map_err(at("release the child"))
    }
}

/// Writes `line` to `rel` beneath `proc_dir` in one `write` (the kernel takes a map whole).
fn write_map(proc_dir: BorrowedFd<'_>, rel: &str, line: &[u8]) -> nix::Result<()> {
    let c = std::ffi::CString::new(rel).map_err(|_| nix::errno::Errno::EINVAL)?;
    // SAFETY: openat with a valid directory fd and a NUL-terminated path; the result is
    // checked and owned below.
    let fd = unsafe {
        libc::openat(
            proc_dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        return Err(nix::errno::Errno::last());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let n = nix::unistd::write(&fd, line)?;
    if n != line.len() {
        return Err(nix::errno::Errno::EIO);
    }
    Ok(())
}

fn write_byte(fd: &OwnedFd) -> nix::Result<()> {
    loop {
        match nix::unistd::write(fd.as_fd(), b"1") {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Whether a byte came (false: the other side closed its end first).
fn read_byte(fd: &OwnedFd) -> nix::Result<bool> {
    let mut b = [0u8; 1];
    loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut b) {
            Ok(n) => return Ok(n == 1),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}
