//! Go-style boolean flags for every command: rkt (Go's pflag) took `--flag`, and
//! `--flag=BOOL` with any of `strconv.ParseBool`'s values, which orchestrators rely on
//! (Nomad passes `--debug=false`, `--no-overlay=true`). Applied to the top command and, through
//! [`GoStyle`], to each subcommand when clap builds it (subcommands are deferred: a run builds
//! only the command it runs), so a new `bool` flag is Go-style without further attributes.

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};

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

/// A subcommand's arguments with Go-style booleans: [`go_style`] runs when clap adds them, which a deferred subcommand does only when it
/// is the one being parsed (or its help is built). The subcommand keeps the description its
/// enum variant gave it (an `Args` struct's own doc comment would replace it when deferred).
#[derive(Debug)]
pub struct GoStyle<T>(pub T);

/// `add` applied to `cmd`, then [`go_style`], keeping `cmd`'s `about` and `long_about`.
fn keep_about(cmd: Command, add: impl FnOnce(Command) -> Command) -> Command {
    let about = cmd.get_about().cloned();
    let long_about = cmd.get_long_about().cloned();
    let mut cmd = go_style(add(cmd));
    if let Some(a) = about {
        cmd = cmd.about(a);
    }
    if let Some(a) = long_about {
        cmd = cmd.long_about(a);
    }
    cmd
}

impl<T: FromArgMatches> FromArgMatches for GoStyle<T> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(m).map(GoStyle)
    }
    fn from_arg_matches_mut(m: &mut ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches_mut(m).map(GoStyle)
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(m)
    }
    fn update_from_arg_matches_mut(&mut self, m: &mut ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches_mut(m)
    }
}

impl<T: Args> Args for GoStyle<T> {
    fn augment_args(cmd: Command) -> Command {
        keep_about(cmd, T::augment_args)
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        keep_about(cmd, T::augment_args_for_update)
    }
}
