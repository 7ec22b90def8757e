//! One module per command family. Commands return `anyhow::Result<i32>` (the exit code on
//! success paths, e.g. `rkt run` returns the pod's exit code).

pub mod fetch;
pub mod image;
pub mod pods;
pub mod run;
pub mod version;

/// Prints `rkt: <error>: <cause>: <cause>` once on stderr.
pub fn print_error(e: &anyhow::Error) {
    let mut msg = format!("rkt: {e}");
    for cause in e.chain().skip(1) {
        msg.push_str(&format!(": {cause}"));
    }
    eprintln!("{msg}");
}

/// Maps an error to rkt's documented exit codes (see `pod_abi::exit`).
pub fn exit_code_for(_e: &anyhow::Error) -> i32 {
    pod_abi::exit::FAILURE
}
