//! A download progress bar on stderr, drawn only when stderr is a terminal.

use std::io::Write;
use std::time::{Duration, Instant};

/// Minimum time between redraws, in milliseconds.
const REDRAW_MS: u64 = 100;

/// Width of the bar, in characters.
const WIDTH: u64 = 30;

/// A progress bar (a no-op when disabled or stderr is not a tty).
pub(crate) struct Bar {
    enabled: bool,
    label: String,
    total: Option<u64>,
    last: Option<Instant>,
    current: u64,
}

fn stderr_is_tty() -> bool {
    // SAFETY: isatty only inspects the fd number.
    unsafe { libc::isatty(libc::STDERR_FILENO) == 1 }
}

fn mib(n: u64) -> f64 {
    n as f64 / (1024.0 * 1024.0)
}

impl Bar {
    /// A bar for `label`; `total` is the expected byte count if known.
    pub(crate) fn new(want: bool, label: &str, total: Option<u64>) -> Bar {
        let label = &*crate::format::escape_control(label);
        let label = if label.len() > 40 {
            format!(
                "...{}",
                label.get(label.len().saturating_sub(37)..).unwrap_or(label)
            )
        } else {
            label.to_string()
        };
        Bar {
            enabled: want && stderr_is_tty(),
            label,
            total: total.filter(|t| *t > 0),
            last: None,
            current: 0,
        }
    }

    /// `n` bytes done so far.
    pub(crate) fn update(&mut self, n: u64) {
        self.current = n;
        if !self.enabled {
            return;
        }
        if self
            .last
            .is_some_and(|l| l.elapsed() < Duration::from_millis(REDRAW_MS))
        {
            return;
        }
        self.last = Some(Instant::now());
        self.draw();
    }

    fn draw(&self) {
        let line = match self.total {
            Some(t) => {
                let filled = (self.current.min(t) * WIDTH) / t;
                format!(
                    "\r{} [{}{}] {:.1} / {:.1} MiB",
                    self.label,
                    "=".repeat(usize::try_from(filled).unwrap_or(0)),
                    " ".repeat(usize::try_from(WIDTH - filled).unwrap_or(0)),
                    mib(self.current),
                    mib(t)
                )
            }
            None => format!("\r{} {:.1} MiB", self.label, mib(self.current)),
        };
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(line.as_bytes());
        let _ = e.flush();
    }

    /// Draws the final state and ends the line.
    pub(crate) fn finish(&mut self) {
        if self.enabled && self.last.is_some() {
            self.draw();
            eprintln!();
        }
        self.enabled = false;
    }
}
