//! Pod start-up phase timestamps, for profiling a `rkt run` end to end.
//!
//! With `RKT_TRACE_PHASES=1` in the environment of `rkt`, every process on the run path
//! (`rkt`, the stage1, guest-init in the ns flavor, which inherits the variable, and in the kvm
//! flavor, told by `--trace-phases` ([`enable`]); its clock is the guest's) prints one line
//! per phase on stderr: `rkt-phase <ms> <process> <phase>`, where `<ms>` is `CLOCK_MONOTONIC`
//! in milliseconds (3 decimals), comparable across the processes of one host.
//! `bench/phases.sh` turns the lines of many runs into a table of median phase durations.
//! Without the variable a phase costs one cached environment lookup. Apps never see the
//! variable (guest-init gives them the plan's environment only).
//!
//! The lines go to stderr unless a process names another descriptor ([`set_output`]): a KVM
//! guest's init sends them to the apps' stderr console (`hvc1`) once it is open, since its
//! own stderr is the serial console, where each byte costs two VM exits (~80 exits, ~16 ms
//! under ci/nested-kvm, per line: more than most of the phases they measure).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

/// The environment variable that turns the phase lines on (value `1`).
pub const ENV: &str = "RKT_TRACE_PHASES";
/// The first word of every phase line.
pub const PREFIX: &str = "rkt-phase";

/// Whether phase lines are printed: [`enable`]d, else the environment (read once per process).
static ON: OnceLock<bool> = OnceLock::new();

/// Whether phase lines are printed (read once per process).
pub fn enabled() -> bool {
    *ON.get_or_init(|| std::env::var_os(ENV).is_some_and(|v| v == "1"))
}

/// Turns phase lines on for this process whatever its environment says (a KVM guest's init is
/// told by an argument). No effect once [`enabled`] has been asked.
pub fn enable() {
    let _ = ON.set(true);
}

/// The descriptor phase lines are written to (stderr until [`set_output`]).
static OUT: AtomicI32 = AtomicI32::new(2);

/// Sends this process's later phase lines (and its forked children's, which inherit it) to
/// `fd`, which the caller keeps open for the rest of the process's life.
pub fn set_output(fd: RawFd) {
    OUT.store(fd, Ordering::Relaxed);
}

/// `CLOCK_MONOTONIC` in milliseconds.
pub fn now_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

/// The phase line for `process` reaching `phase` at `ms` (pure).
pub fn line(ms: f64, process: &str, phase: &str) -> String {
    format!("{PREFIX} {ms:.3} {process} {phase}")
}

/// Prints the phase line for `process` reaching `phase` now, if tracing is on. Safe in a
/// single-threaded child after `fork` (one `write(2)` of a preformatted line).
pub fn phase(process: &str, phase: &str) {
    if !enabled() {
        return;
    }
    let mut l = line(now_ms(), process, phase);
    l.push('\n');
    // SAFETY: writes an owned buffer to a descriptor; a failure is ignored (tracing is best
    // effort).
    let _ = unsafe { libc::write(OUT.load(Ordering::Relaxed), l.as_ptr().cast(), l.len()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        assert_eq!(
            line(1234.5678, "rkt", "main"),
            "rkt-phase 1234.568 rkt main"
        );
    }

    #[test]
    fn lines_go_to_the_chosen_descriptor() {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array it is given.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        enable();
        set_output(fds[1]);
        phase("test", "sent-elsewhere");
        set_output(2);
        let mut buf = [0u8; 128];
        // SAFETY: reads into the buffer, at most its length; both descriptors are ours.
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
        // SAFETY: closes the two descriptors made above.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        let got = std::str::from_utf8(&buf[..usize::try_from(n).expect("read")]).expect("utf-8");
        assert!(got.starts_with("rkt-phase "), "{got:?}");
        assert!(got.ends_with(" test sent-elsewhere\n"), "{got:?}");
    }

    #[test]
    fn clock_moves_forward() {
        let a = now_ms();
        let b = now_ms();
        assert!(b >= a && a > 0.0);
    }
}
