//! `rkt completion [SHELL]`: the shell completion script for rkt (bash by default, as rkt's;
//! also zsh, fish, elvish and powershell), generated from the same command tree that parses
//! the arguments. `run`, `prepare` and `run-prepared` parse their flags by hand
//! (`stage0::pod::args`); their flag table is added here so that those complete too.

use clap_complete::Shell;
use stage0::pod::args::{flags_for, Mode};

use super::Globals;

/// Flags of `rkt completion`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to print the completion script of.
    #[arg(value_enum, default_value_t = Shell::Bash)]
    pub shell: Shell,
}

/// `cmd` with the hand-parsed flags of `run`, `prepare` and `run-prepared` declared, for
/// completion only.
fn with_hand_parsed_flags(cmd: clap::Command) -> clap::Command {
    [
        ("run", Mode::Run),
        ("prepare", Mode::Prepare),
        ("run-prepared", Mode::RunPrepared),
    ]
    .into_iter()
    .fold(cmd, |cmd, (name, mode)| {
        cmd.mut_subcommand(name, |sub| {
            flags_for(mode).into_iter().fold(sub, |sub, f| {
                sub.arg(clap::Arg::new(f).long(f).action(clap::ArgAction::Append))
            })
        })
    })
}

/// Prints the completion script for `a.shell`, built from `cmd` (the whole command tree).
pub fn run(_g: &Globals, a: Args, cmd: clap::Command) -> anyhow::Result<i32> {
    let mut cmd = with_hand_parsed_flags(cmd);
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "rkt", &mut out);
    super::out(&out)?;
    Ok(0)
}
