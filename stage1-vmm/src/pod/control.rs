//! Stopping the pod from the host and the interactive terminal.
//!
//! Signals: `stage1_common::signals::STOP_SIGNALS` are blocked in every thread
//! ([`block_stop_signals`], called before the first thread exists) and taken by one thread
//! ([`spawn_signal_thread`]) with `sigtimedwait`. What happens is a table ([`next`]): the first
//! signal sends the `stop` control line (`pod_abi::control::ControlMsg::Stop`) on COM2,
//! which guest-init reads on /dev/ttyS1 and answers like SIGTERM (forward to the apps, grace
//! period, SIGKILL, post-stop handlers, statuses, reboot); the line is repeated every
//! [`RESEND_EVERY`] in case it arrived before guest-init opened the port. A second signal, or no
//! end within the grace period plus [`STOP_MARGIN`], ends the VMM at once ([`force_end`]).
//!
//! Interactive pods: the terminal is put in raw mode ([`enter_raw_mode`], undone by
//! [`restore_terminal`] on every way out) and stdin is copied to the app's console by a thread
//! that watches for the escape (`stage1_common::terminal::EscapeDetector`: `^]` three times
//! within a second kills the VM).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use pod_abi::control::ControlMsg;
use stage1_common::signals::{self, STOP_SIGNALS};
use stage1_common::terminal::{self, EscapeDetector, ESCAPE_KILL_REASON};

use crate::threads::{self, ThreadKind};

use super::PROG;
/// Time the guest gets beyond the plan's grace period to reboot after a stop request (seconds):
/// post-stop handlers, status writes and the sync, with room for a slow (nested, emulated) host.
pub const STOP_MARGIN: Duration = Duration::from_secs(20);
/// Interval at which an unanswered `stop` line is sent again.
pub const RESEND_EVERY: Duration = Duration::from_secs(2);
/// How long `sigtimedwait` sleeps between checks (milliseconds).
const TICK_MS: i64 = 250;

/// The stop state machine's states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopState {
    /// No stop requested.
    Running,
    /// `stop` was sent; the VM must end by `deadline`.
    Stopping {
        /// When the VMM gives up waiting.
        deadline: Instant,
        /// When the line is sent again.
        resend_at: Instant,
    },
}

/// Inputs of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopEvent {
    /// A stop signal arrived.
    Signal,
    /// Time passed.
    Tick,
}

/// What to do on a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopAction {
    /// Nothing.
    None,
    /// Send (or resend) the `stop` line on COM2.
    SendStop,
    /// End the VM now, for this reason.
    Force(&'static str),
}

/// The transition table: `(state, event, now, grace) -> (state, action)`.
pub fn next(
    state: StopState,
    event: StopEvent,
    now: Instant,
    grace: Duration,
) -> (StopState, StopAction) {
    match (state, event) {
        (StopState::Running, StopEvent::Signal) => (
            StopState::Stopping {
                deadline: now + grace + STOP_MARGIN,
                resend_at: now + RESEND_EVERY,
            },
            StopAction::SendStop,
        ),
        (StopState::Running, StopEvent::Tick) => (state, StopAction::None),
        (StopState::Stopping { .. }, StopEvent::Signal) => {
            (state, StopAction::Force("stopped by a second signal"))
        }
        (StopState::Stopping { deadline, .. }, StopEvent::Tick) if now >= deadline => (
            state,
            StopAction::Force("the guest did not stop within the grace period"),
        ),
        (
            StopState::Stopping {
                deadline,
                resend_at,
            },
            StopEvent::Tick,
        ) if now >= resend_at => (
            StopState::Stopping {
                deadline,
                resend_at: now + RESEND_EVERY,
            },
            StopAction::SendStop,
        ),
        (StopState::Stopping { .. }, StopEvent::Tick) => (state, StopAction::None),
    }
}

/// Blocks [`STOP_SIGNALS`] in the calling thread (and so in every thread it creates later).
pub fn block_stop_signals() -> std::io::Result<()> {
    signals::block(&STOP_SIGNALS)
}

/// Restores the terminal, records `reason` as the pod's failure and exits with
/// `STAGE1_FAILED`; the kernel closes the pod lock and the VM with the process.
pub fn force_end(reason: &str) -> ! {
    restore_terminal();
    crate::confine::record_failure(reason);
    std::process::exit(pod_abi::exit::STAGE1_FAILED)
}

/// Starts the thread that turns stop signals into `stop` lines on `com2_tx` (the write end of
/// COM2's input pipe), and ends the VMM if the guest does not stop in time.
pub fn spawn_signal_thread(com2_tx: OwnedFd, grace: Duration) -> std::io::Result<()> {
    let mut tx = File::from(com2_tx);
    threads::spawn(ThreadKind::Signals, "signals", move || {
        let set = signals::sigset(&STOP_SIGNALS);
        let stop_line = ControlMsg::Stop.line();
        let mut state = StopState::Running;
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: TICK_MS * 1_000_000,
        };
        loop {
            // SAFETY: a valid set, a null siginfo pointer and a valid timeout.
            let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
            let event = if sig > 0 {
                log::info!("signal {sig}: stopping the pod");
                StopEvent::Signal
            } else {
                StopEvent::Tick
            };
            let (s, action) = next(state, event, Instant::now(), grace);
            state = s;
            match action {
                StopAction::None => {}
                StopAction::SendStop => {
                    if let Err(e) = tx.write_all(&stop_line) {
                        log::warn!("cannot send stop on COM2: {e}");
                    }
                }
                StopAction::Force(why) => force_end(why),
            }
        }
    })
    .map(|_| ())
}

/// Puts the terminal on `fd` (stdin) in raw mode, if it is one; [`restore_terminal`] undoes it.
pub fn enter_raw_mode(fd: libc::c_int) -> std::io::Result<()> {
    // SAFETY: the caller passes an fd that stays open for the process's life (stdin).
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    // Restored explicitly (also from other threads and the panic hook), not by a guard.
    std::mem::forget(terminal::RawMode::enter(fd)?);
    Ok(())
}

/// Restores the terminal saved by [`enter_raw_mode`] (idempotent).
pub fn restore_terminal() {
    terminal::restore();
}

/// Starts the thread copying `input` (stdin) to `to_guest` (the write end of the console's
/// input pipe), killing the VM on the escape sequence. Ends at EOF.
pub fn spawn_stdin_thread(input: OwnedFd, to_guest: OwnedFd) -> std::io::Result<()> {
    let mut input = File::from(input);
    let mut out = File::from(to_guest);
    threads::spawn(ThreadKind::Stdin, "stdin", move || {
        let mut watch = EscapeDetector::default();
        let mut buf = [0u8; 4096];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let data = buf.get(..n).unwrap_or_default();
            if watch.feed_all(data, Instant::now()) {
                restore_terminal();
                eprintln!("\r");
                force_end(ESCAPE_KILL_REASON);
            }
            if out.write_all(data).is_err() {
                break;
            }
        }
        log::debug!("{PROG}: stdin closed (fd {})", input.as_raw_fd());
    })
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_table() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(10);
        let (s, a) = next(StopState::Running, StopEvent::Tick, t0, grace);
        assert_eq!((s, a), (StopState::Running, StopAction::None));
        let (s, a) = next(StopState::Running, StopEvent::Signal, t0, grace);
        assert_eq!(a, StopAction::SendStop);
        let StopState::Stopping { deadline, .. } = s else {
            panic!("not stopping")
        };
        assert_eq!(deadline, t0 + grace + STOP_MARGIN);
        // Resent after RESEND_EVERY, not before.
        let (s2, a) = next(s, StopEvent::Tick, t0 + Duration::from_millis(500), grace);
        assert_eq!((s2, a), (s, StopAction::None));
        let (_, a) = next(s, StopEvent::Tick, t0 + RESEND_EVERY, grace);
        assert_eq!(a, StopAction::SendStop);
        // Past the deadline, or a second signal: force.
        let (_, a) = next(s, StopEvent::Tick, deadline, grace);
        assert!(matches!(a, StopAction::Force(_)));
        let (_, a) = next(s, StopEvent::Signal, t0, grace);
        assert!(matches!(a, StopAction::Force(_)));
    }
}
