//! `rkt`: the App Container runtime's stage0 command line.

mod cli;
mod commands;

use std::process::ExitCode;

fn main() -> ExitCode {
    let code = cli::main();
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
