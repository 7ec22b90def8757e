//! Console logging for PID 1: every line goes to stderr (the pod console) with a fixed prefix.
//! No `log` facade backend is pulled in to keep the static binary small.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether `--debug` (or the plan's `debug`) asked for verbose output.
static DEBUG: AtomicBool = AtomicBool::new(false);

/// Enables or disables debug lines.
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

/// Whether debug lines are printed.
pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

/// Prints an informational line on the console.
#[macro_export]
macro_rules! info {
    ($($a:tt)*) => { eprintln!("[guest-init] {}", format_args!($($a)*)) };
}

/// Prints a debug line on the console when debugging is on.
#[macro_export]
macro_rules! debug {
    ($($a:tt)*) => { if $crate::log::debug_enabled() { eprintln!("[guest-init] debug: {}", format_args!($($a)*)) } };
}
