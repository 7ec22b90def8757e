//! The interactive console: the user's terminal in raw mode, proxied to a pty whose slave is
//! guest-init's console, and the "press ^] three times within one second to kill the pod"
//! escape (as systemd-nspawn and the seed README).

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};

/// The escape byte (`^]`, GS).
pub const ESCAPE_BYTE: u8 = 0x1d;
/// How many escape bytes in a row kill the pod.
pub const ESCAPE_PRESSES: usize = 3;
/// Window within which they must arrive, in milliseconds.
pub const ESCAPE_WINDOW_MS: u64 = 1000;

/// Detects `^]` pressed [`ESCAPE_PRESSES`] times within [`ESCAPE_WINDOW_MS`].
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
        let window = Duration::from_millis(ESCAPE_WINDOW_MS);
        self.presses
            .retain(|t| now.saturating_duration_since(*t) <= window);
        self.presses.push(now);
        self.presses.len() >= ESCAPE_PRESSES
    }
}

/// Puts a terminal in raw mode and restores it when dropped.
pub struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    /// Switches `fd` to raw mode.
    pub fn enter(fd: BorrowedFd<'a>) -> nix::Result<Self> {
        let saved = tcgetattr(fd)?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(fd, SetArg::TCSANOW, &raw)?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = tcsetattr(self.fd.as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// Copies the window size of terminal `from` to `to`.
pub fn copy_winsize(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    let mut ws: libc::winsize = libc::winsize {
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
    }
}
