//! Go-style boolean flags for every command: rkt (Go's pflag) took `--flag`, and
//! `--flag=BOOL` with any of `strconv.ParseBool`'s values, which orchestrators rely on
//! (Nomad passes `--debug=false`, `--no-overlay=true`). Applied once to the whole clap
//! command tree, so a new `bool` flag is Go-style without further attributes.

use clap::{Arg, ArgAction, Command};

/// Value parser of Go booleans (see [`stage0::gobool`]).
pub fn value(v: &str) -> Result<bool, String> {
    stage0::gobool::parse(v).ok_or_else(|| {
        format!("invalid boolean {v:?} (want true, false, 1, 0, t, f, TRUE, FALSE, True or False)")
    })
}

/// Makes a presence flag (`ArgAction::SetTrue`) take an optional `=BOOL`; other args are
/// returned as they are.
fn arg(a: Arg) -> Arg {
    if !matches!(a.get_action(), ArgAction::SetTrue) {
        return a;
    }
    a.action(ArgAction::Set)
        .num_args(0..=1)
        .require_equals(true)
        .default_missing_value("true")
        .default_value("false")
        .hide_default_value(true)
        .value_name("BOOL")
        .value_parser(value)
}

/// Applies [`arg`] to every argument of `cmd` and of its subcommands, recursively.
pub fn go_style(cmd: Command) -> Command {
    let cmd = cmd.mut_args(arg);
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    names
        .iter()
        .fold(cmd, |c, n| c.mut_subcommand(n.as_str(), go_style))
}
