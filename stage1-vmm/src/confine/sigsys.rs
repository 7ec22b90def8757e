//! The violation report: the SIGSYS handler that a trapped system call runs, and the one way a
//! confined thread writes the pod's `failure` file.
//!
//! Confined threads cannot open files by path. Every filter allows exactly one `openat`: on the
//! report directory descriptor ([`report_fd`], the pod directory, inside the jail once
//! [`super::jailed`] ran) with the report's flags ([`REPORT_FLAGS`], write-only, create,
//! truncate, no symlinks). [`record`] and the handler use that call and nothing else to write.

use std::cell::Cell;
use std::sync::atomic::{AtomicI32, Ordering};

use super::filters::Profile;
use super::ConfineError;

/// Flags of the report's `openat` (the only flags the filters allow it with).
pub const REPORT_FLAGS: libc::c_int =
    libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_CLOEXEC;
/// The report file, in the report directory (the pod's `failure`).
const REPORT_NAME: &std::ffi::CStr = c"failure";
/// Prefix of every message on stderr.
const PREFIX: &[u8] = b"stage1-vmm: ";

static REPORT_FD: AtomicI32 = AtomicI32::new(-1);

thread_local! {
    /// The calling thread's profile (index into [`Profile::ALL`]), for the handler's message.
    static PROFILE: Cell<u8> = const { Cell::new(u8::MAX) };
}

/// The report directory descriptor (-1 before [`super::init`]).
pub fn report_fd() -> i32 {
    REPORT_FD.load(Ordering::SeqCst)
}

pub(super) fn set_report_fd(fd: i32) {
    REPORT_FD.store(fd, Ordering::SeqCst);
}

pub(super) fn set_thread_profile(p: Profile) {
    PROFILE.with(|c| c.set(p as u8));
}

/// Writes `line` (its first line) on stderr with the program prefix and, through the report
/// directory, as the pod's `failure` file.
pub fn record(reason: &str) {
    let line = reason.lines().next().unwrap_or("unknown failure").trim();
    let mut msg = Vec::with_capacity(line.len() + 1);
    msg.extend_from_slice(line.as_bytes());
    msg.push(b'\n');
    write_all(2, PREFIX);
    write_all(2, &msg);
    write_report(&msg);
}

/// Opens the report file with the one allowed `openat` and writes `msg` (async-signal-safe).
fn write_report(msg: &[u8]) {
    let dir = report_fd();
    if dir < 0 {
        return;
    }
    // SAFETY: a raw openat with a valid NUL-terminated name; the flags are the allowed ones.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            dir,
            REPORT_NAME.as_ptr(),
            REPORT_FLAGS,
            0o644,
        )
    };
    if let Ok(fd) = i32::try_from(fd) {
        if fd >= 0 {
            write_all(fd, msg);
            // SAFETY: closes the descriptor opened above.
            unsafe { libc::close(fd) };
        }
    }
}

/// `write(2)` until done or an error (async-signal-safe).
fn write_all(fd: i32, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: writes from a valid buffer of the given length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        match usize::try_from(n) {
            Ok(n) if n > 0 => buf = buf.get(n..).unwrap_or_default(),
            _ => return,
        }
    }
}

/// A fixed buffer formatted without allocating (the handler runs in signal context).
struct Msg {
    buf: [u8; 192],
    len: usize,
}

impl Msg {
    fn push(&mut self, s: &[u8]) {
        for &b in s {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
    }
    fn push_num(&mut self, n: i64) {
        if n < 0 {
            self.push(b"-");
        }
        let mut v = n.unsigned_abs();
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            if let Some(d) = digits.get_mut(i) {
                *d = b'0' + (v % 10) as u8;
            }
            v /= 10;
            if v == 0 || i == 0 {
                break;
            }
        }
        self.push(digits.get(i..).unwrap_or_default());
    }
    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// `siginfo_t` for SIGSYS on x86_64/aarch64 Linux: the three ints, padding, then `_sigsys`.
#[repr(C)]
struct SigsysInfo {
    signo: i32,
    errno: i32,
    code: i32,
    _pad: i32,
    call_addr: *mut libc::c_void,
    syscall: i32,
    arch: u32,
}

/// The message for a forbidden call `nr` made by a thread of profile index `profile`.
fn violation(profile: u8, nr: i64) -> Msg {
    let mut m = Msg {
        buf: [0; 192],
        len: 0,
    };
    let kind = Profile::ALL
        .get(usize::from(profile))
        .map_or("unconfined", |p| p.name());
    m.push(b"seccomp: thread ");
    m.push(kind.as_bytes());
    m.push(b" made forbidden syscall ");
    m.push_num(nr);
    if let Some(name) = super::filters::syscall_name(nr) {
        m.push(b" (");
        m.push(name.as_bytes());
        m.push(b")");
    }
    m.push(b"\n");
    m
}

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SIGSYS with SA_SIGINFO; its layout is
    // `SigsysInfo` (include/uapi/asm-generic/siginfo.h).
    let nr = unsafe { (*info.cast::<SigsysInfo>()).syscall };
    let profile = PROFILE.with(Cell::get);
    let msg = violation(profile, i64::from(nr));
    write_all(2, PREFIX);
    write_all(2, msg.bytes());
    write_report(msg.bytes());
    // SAFETY: ends the whole process at once; no Rust state is touched after this.
    unsafe { libc::syscall(libc::SYS_exit_group, pod_abi::exit::STAGE1_FAILED) };
}

/// Installs [`on_sigsys`] for SIGSYS, process-wide.
pub(super) fn install_handler() -> Result<(), ConfineError> {
    // SAFETY: a zeroed sigaction is valid; we fill the handler, flags and an empty mask.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_sigsys as *const () as usize;
    sa.sa_flags = libc::SA_SIGINFO;
    // SAFETY: sigemptyset on our own struct; sigaction with valid pointers.
    let rc = unsafe {
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(ConfineError::Sys(
            "sigaction(SIGSYS)",
            std::io::Error::last_os_error(),
        ));
    }
    // SIGSYS must reach the handler: a blocked SIGSYS makes the kernel kill without a report.
    // SAFETY: a valid set built on the stack.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGSYS);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violation_message() {
        let m = violation(Profile::Vcpu as u8, 41);
        assert_eq!(
            std::str::from_utf8(m.bytes()).ok(),
            Some("seccomp: thread vcpu made forbidden syscall 41 (socket)\n")
        );
        let m = violation(u8::MAX, 100_000);
        assert_eq!(
            std::str::from_utf8(m.bytes()).ok(),
            Some("seccomp: thread unconfined made forbidden syscall 100000\n")
        );
    }
}
