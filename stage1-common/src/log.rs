//! The program name every message starts with, and a stderr logger for the `log` facade
//! (warn and above; debug with `--debug`).

use std::sync::OnceLock;

static PROG: OnceLock<&'static str> = OnceLock::new();

/// The program name set by [`init`] (`stage1` before).
pub fn prog() -> &'static str {
    PROG.get().copied().unwrap_or("stage1")
}

struct StderrLog(::log::LevelFilter);

impl ::log::Log for StderrLog {
    fn enabled(&self, m: &::log::Metadata<'_>) -> bool {
        m.level() <= self.0
    }
    fn log(&self, r: &::log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("{}: {}", prog(), r.args());
        }
    }
    fn flush(&self) {}
}

/// Sets the program name and installs the logger (once; later calls only change the level).
pub fn init(prog: &'static str, debug: bool) {
    let _ = PROG.set(prog);
    let level = if debug {
        ::log::LevelFilter::Debug
    } else {
        ::log::LevelFilter::Warn
    };
    static LOGGER: OnceLock<StderrLog> = OnceLock::new();
    let logger = LOGGER.get_or_init(|| StderrLog(level));
    let _ = ::log::set_logger(logger);
    ::log::set_max_level(level);
}
