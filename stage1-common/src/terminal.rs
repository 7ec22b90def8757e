//! The user's terminal during an interactive pod: raw mode, restored on every way out (also
//! from other threads and panic hooks, through [`restore`]), the window size, and the escape:
//! `^]` pressed [`ESCAPE_PRESSES`] times within [`ESCAPE_WINDOW`] kills the pod (as
//! systemd-nspawn; any other key in between starts the count again).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The escape byte (`^]`, GS).
pub const ESCAPE_BYTE: u8 = 0x1d;
/// How many escape bytes in a row kill the pod.
pub const ESCAPE_PRESSES: usize = 3;
/// Window within which they must arrive.
pub const ESCAPE_WINDOW: Duration = Duration::from_millis(1000);
/// What the stage1 says (and records) when the escape killed the pod.
pub const ESCAPE_KILL_REASON: &str = "pod killed from the terminal (^] pressed three times)";

/// Detects `^]` pressed [`ESCAPE_PRESSES`] times within [`ESCAPE_WINDOW`].
#[derive(Debug, Default)]
pub struct EscapeDetector {
    presses: Vec<Instant>,
}

impl EscapeDetector {
    /// Feeds one input byte typed at `now`; true when the pod must be killed.
    pub fn feed(&mut self, byte: u8, now: Instant) -> bool {
        if byte != ESCAPE_BYTE {
            self.presses.clear();
            return false;
        }
        self.presses
            .retain(|t| now.saturating_duration_since(*t) <= ESCAPE_WINDOW);
        self.presses.push(now);
        self.presses.len() >= ESCAPE_PRESSES
    }
    /// Feeds bytes read at `now`; true when the pod must be killed.
    pub fn feed_all(&mut self, data: &[u8], now: Instant) -> bool {
        data.iter().any(|b| self.feed(*b, now))
    }
}

/// The terminal settings to restore, with the fd they belong to.
static SAVED: Mutex<Option<(libc::c_int, libc::termios)>> = Mutex::new(None);

/// The terminal in raw mode; dropping it (or [`restore`]) puts it back.
#[derive(Debug)]
pub struct RawMode(());

impl RawMode {
    /// Puts the terminal on `fd` in raw mode and remembers how it was; if `fd` is not a
    /// terminal nothing changes.
    pub fn enter(fd: BorrowedFd<'_>) -> std::io::Result<RawMode> {
        let fd = fd.as_raw_fd();
        // SAFETY: isatty on an fd number; no memory involved.
        if unsafe { libc::isatty(fd) } != 1 {
            return Ok(RawMode(()));
        }
        // SAFETY: an all-zero termios is a valid value for tcgetattr to overwrite.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr writes into the termios we own.
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
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some((fd, saved));
        Ok(RawMode(()))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore();
    }
}

/// Restores the terminal saved by [`RawMode::enter`] (idempotent, callable from any thread).
pub fn restore() {
    let saved = SAVED.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some((fd, t)) = saved {
        // SAFETY: tcsetattr reads the valid saved termios.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) };
    }
}

/// Copies the window size of terminal `from` to `to` (nothing if `from` is not a terminal).
pub fn copy_winsize(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the valid struct passed; result checked.
    if unsafe { libc::ioctl(from.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } == 0 {
        // SAFETY: TIOCSWINSZ reads the valid winsize struct passed.
        unsafe { libc::ioctl(to.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_presses_within_a_second() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut d = EscapeDetector::default();
        assert!(!d.feed(ESCAPE_BYTE, ms(0)));
        assert!(!d.feed(ESCAPE_BYTE, ms(300)));
        assert!(d.feed(ESCAPE_BYTE, ms(600)));
        let mut d = EscapeDetector::default();
        assert!(!d.feed(ESCAPE_BYTE, ms(0)));
        assert!(!d.feed(ESCAPE_BYTE, ms(900)));
        assert!(!d.feed(ESCAPE_BYTE, ms(1500)));
        assert!(d.feed(ESCAPE_BYTE, ms(1600)));
        let mut d = EscapeDetector::default();
        assert!(!d.feed(ESCAPE_BYTE, ms(0)));
        assert!(!d.feed(ESCAPE_BYTE, ms(10)));
        assert!(!d.feed(b'a', ms(20)));
        assert!(!d.feed(ESCAPE_BYTE, ms(30)));
        // In one read, as a pasted or fast-typed sequence arrives.
        let mut d = EscapeDetector::default();
        assert!(d.feed_all(b"\x1d\x1d\x1d", t0));
        let mut d = EscapeDetector::default();
        assert!(!d.feed_all(b"\x1d\x1da\x1d", t0));
    }

    #[test]
    fn raw_mode_on_a_non_terminal_changes_nothing() {
        let f = std::fs::File::open("/dev/null").unwrap_or_else(|e| panic!("{e}"));
        use std::os::fd::AsFd;
        let g = RawMode::enter(f.as_fd()).unwrap_or_else(|e| panic!("{e}"));
        drop(g);
        restore();
    }
}
