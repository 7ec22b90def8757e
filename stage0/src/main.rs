//! `rkt`: the App Container runtime's stage0 command line (argument handling and printing
//! over the `stage0` library).

mod cli;
mod commands;

use std::process::ExitCode;

fn main() -> ExitCode {
    pod_abi::trace::phase("rkt", "main");
    let code = cli::main();
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
