//! stage1-ns: the host side of the namespace stage1 flavor. One binary, dispatched on the
//! basename of argv\[0\] (`run`, `stop`, `gc`, `enter` are symlinks to it in the stage1 image)
//! or on its first argument (`stage1-ns run ...`, for tests).

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cgroup;
mod enter;
mod ns;
mod run;
mod stop;
mod tty;

use std::process::ExitCode;

use anyhow::Context;
use pod_abi::stage1::{ArgsError, EnterArgs, RunArgs, StopArgs};

/// Prints the error chain once and picks the exit code.
fn report(cmd: &str, r: anyhow::Result<i32>) -> ExitCode {
    match r {
        Ok(c) => ExitCode::from(u8::try_from(c).unwrap_or(u8::MAX)),
        Err(e) => {
            eprintln!("stage1-ns {cmd}: {e:#}");
            let code = if e.downcast_ref::<ArgsError>().is_some() {
                pod_abi::exit::USAGE
            } else {
                pod_abi::exit::STAGE1_FAILED
            };
            ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
        }
    }
}

fn gc(args: Vec<String>) -> anyhow::Result<i32> {
    let mut uuid = None;
    for a in args {
        if a == "--debug" || a.starts_with("--local-config=") {
            continue;
        }
        if a.starts_with("--") {
            return Err(ArgsError::UnknownFlag(a).into());
        }
        uuid = Some(a);
    }
    uuid.ok_or(ArgsError::MissingUuid)?;
    let dir = std::env::current_dir().context("current directory")?;
    cgroup::gc(&dir).context("remove the pod cgroups")?;
    Ok(0)
}

fn main() -> ExitCode {
    let mut argv: Vec<String> = std::env::args().collect();
    let base = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut cmd = base;
    if !["run", "stop", "gc", "enter"].contains(&cmd.as_str()) {
        if argv.len() < 2 {
            eprintln!("usage: stage1-ns run|stop|gc|enter ARGS...");
            return ExitCode::from(pod_abi::exit::USAGE as u8);
        }
        cmd = argv.remove(1);
    }
    let rest: Vec<String> = argv.into_iter().skip(1).collect();
    let debug = rest.iter().any(|a| a == "--debug");
    log_init(debug);
    let r = match cmd.as_str() {
        "run" => RunArgs::parse(rest)
            .map_err(Into::into)
            .and_then(|a| run::run(&a)),
        "stop" => StopArgs::parse(rest)
            .map_err(Into::into)
            .and_then(|a| stop::stop(&a)),
        "enter" => EnterArgs::parse(rest)
            .map_err(Into::into)
            .and_then(|a| enter::enter(&a)),
        "gc" => gc(rest),
        other => Err(anyhow::anyhow!("unknown entrypoint {other:?}")),
    };
    report(&cmd, r)
}

/// A minimal stderr logger for the `log` facade (warn and above; info with --debug).
struct StderrLog(log::LevelFilter);

impl log::Log for StderrLog {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= self.0
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("stage1-ns: {}", r.args());
        }
    }
    fn flush(&self) {}
}

fn log_init(debug: bool) {
    let level = if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Warn
    };
    let logger: &'static StderrLog = Box::leak(Box::new(StderrLog(level)));
    let _ = log::set_logger(logger);
    log::set_max_level(level);
}
