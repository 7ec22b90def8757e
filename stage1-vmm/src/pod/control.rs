//! Stopping the pod from the host and the interactive terminal.
//!
//! Signals: SIGTERM, SIGINT and SIGHUP are blocked in every thread ([`block_stop_signals`], called
//! before the first thread exists) and taken by one thread ([`spawn_signal_thread`]) with
//! `sigtimedwait`. What happens is a table ([`next`]): the first signal sends `stop\n` on COM2,
//! which guest-init reads on /dev/ttyS1 and answers like SIGTERM (forward to the apps, grace
//! period, SIGKILL, post-stop handlers, statuses, reboot); the line is repeated every
//! [`RESEND_EVERY`] in case it arrived before guest-init opened the port. A second signal, or no
//! end within the grace period plus [`STOP_MARGIN`], ends the VMM at once ([`force_end`]).
//!
//! Interactive pods: the terminal is put in raw mode ([`enter_raw_mode`], undone by
//! [`restore_terminal`] on every way out) and stdin is copied to the app's console by a thread
//! that watches for the escape: `^]` three times within [`ESCAPE_WINDOW`] kills the VM.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{record_failure, PROG};
use crate::threads::{self, ThreadKind};

/// The signals that stop a pod.
pub const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];
/// Time the guest gets beyond the plan's grace period to reboot after a stop request (seconds):
/// post-stop handlers, status writes and the sync, with room for a slow (nested, emulated) host.
pub const STOP_MARGIN: Duration = Duration::from_secs(20);
/// Interval at which an unanswered `stop` line is sent again.
pub const RESEND_EVERY: Duration = Duration::from_secs(2);
/// The escape key, `^]` (GS, 0x1d), as telnet and QEMU use it.
pub const ESCAPE_BYTE: u8 = 0x1d;
/// How many escape presses kill the VM.
pub const ESCAPE_PRESSES: usize = 3;
/// Window in which the escape presses must fall.
pub const ESCAPE_WINDOW: Duration = Duration::from_secs(1);
/// The control line that asks guest-init for a graceful stop.
pub const STOP_LINE: &[u8] = b"stop\n";
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

fn stop_sigset() -> libc::sigset_t {
    // SAFETY: sigemptyset initializes the zeroed set we own; sigaddset adds valid signals.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in STOP_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks [`STOP_SIGNALS`] in the calling thread (and so in every thread it creates later).
pub fn block_stop_signals() -> std::io::Result<()> {
    let set = stop_sigset();
    // SAFETY: pthread_sigmask with a valid set and a null old-set pointer.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Restores the terminal, records `reason` as the pod's failure and exits with
/// `STAGE1_FAILED`; the kernel closes the pod lock and the VM with the process.
pub fn force_end(reason: &str) -> ! {
    restore_terminal();
    record_failure(reason);
    std::process::exit(pod_abi::exit::STAGE1_FAILED)
}

/// Starts the thread that turns stop signals into `stop` lines on `com2_tx` (the write end of
/// COM2's input pipe), and ends the VMM if the guest does not stop in time.
pub fn spawn_signal_thread(com2_tx: OwnedFd, grace: Duration) -> std::io::Result<()> {
    let mut tx = File::from(com2_tx);
    threads::spawn(ThreadKind::Signals, "signals", move || {
        let set = stop_sigset();
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
                    if let Err(e) = tx.write_all(STOP_LINE) {
                        log::warn!("cannot send stop on COM2: {e}");
                    }
                }
                StopAction::Force(why) => force_end(why),
            }
        }
    })
    .map(|_| ())
}

/// The terminal settings to restore, with the fd they belong to.
static SAVED_TERMIOS: Mutex<Option<(libc::c_int, libc::termios)>> = Mutex::new(None);

/// Puts the terminal on `fd` in raw mode (if it is one) and remembers how it was.
pub fn enter_raw_mode(fd: libc::c_int) -> std::io::Result<()> {
    // SAFETY: isatty on an fd number; no memory involved.
    if unsafe { libc::isatty(fd) } != 1 {
        return Ok(());
    }
    // SAFETY: tcgetattr writes into the zeroed termios we own.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let saved = t;
    // SAFETY: cfmakeraw edits the termios we own.
    unsafe { libc::cfmakeraw(&mut t) };
    // SAFETY: tcsetattr reads the valid termios.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    *SAVED_TERMIOS.lock().unwrap_or_else(|p| p.into_inner()) = Some((fd, saved));
    Ok(())
}

/// Restores the terminal saved by [`enter_raw_mode`] (idempotent).
pub fn restore_terminal() {
    let saved = SAVED_TERMIOS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some((fd, t)) = saved {
        // SAFETY: tcsetattr reads the valid saved termios.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) };
    }
}

/// Counts escape presses; `true` once [`ESCAPE_PRESSES`] fall within [`ESCAPE_WINDOW`].
#[derive(Debug, Default)]
pub struct EscapeWatch {
    presses: VecDeque<Instant>,
}

impl EscapeWatch {
    /// Feeds `data` read at `now`; returns whether the kill sequence is complete.
    pub fn feed(&mut self, data: &[u8], now: Instant) -> bool {
        for _ in data.iter().filter(|b| **b == ESCAPE_BYTE) {
            self.presses.push_back(now);
        }
        while self
            .presses
            .front()
            .is_some_and(|t| now.duration_since(*t) > ESCAPE_WINDOW)
        {
            self.presses.pop_front();
        }
        self.presses.len() >= ESCAPE_PRESSES
    }
}

/// Starts the thread copying `input` (stdin) to `to_guest` (the write end of the console's
/// input pipe), killing the VM on the escape sequence. Ends at EOF.
pub fn spawn_stdin_thread(input: OwnedFd, to_guest: OwnedFd) -> std::io::Result<()> {
    let mut input = File::from(input);
    let mut out = File::from(to_guest);
    threads::spawn(ThreadKind::Stdin, "stdin", move || {
        let mut watch = EscapeWatch::default();
        let mut buf = [0u8; 4096];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let data = buf.get(..n).unwrap_or_default();
            if watch.feed(data, Instant::now()) {
                restore_terminal();
                eprintln!("\r");
                force_end("killed from the terminal (^] pressed three times)");
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

    #[test]
    fn escape_needs_three_presses_within_a_second() {
        let t0 = Instant::now();
        let mut w = EscapeWatch::default();
        assert!(!w.feed(b"a\x1db", t0));
        assert!(!w.feed(b"\x1d", t0 + Duration::from_millis(300)));
        // The first press is now too old.
        assert!(!w.feed(b"\x1d", t0 + Duration::from_millis(1500)));
        assert!(!w.feed(b"\x1d", t0 + Duration::from_millis(1600)));
        assert!(w.feed(b"\x1d", t0 + Duration::from_millis(2400)));
        let mut w = EscapeWatch::default();
        assert!(w.feed(b"\x1d\x1d\x1d", t0));
    }
}
