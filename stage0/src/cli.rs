//! Command-line definition (rkt's command and flag names), dispatch, and the one place where
//! errors are printed and mapped to exit codes.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::commands::gobool::GoStyle;
use crate::commands::{self, Globals, StdoutError};

#[derive(Debug, Parser)]
#[command(
    name = "rkt",
    about = "rkt - App Container runtime",
    disable_version_flag = true
)]
struct Cli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: Command,
}

/// Deferred (`defer`): a subcommand's arguments are added only when clap builds that
/// subcommand, so a run pays for its own command's flags, not for every command's.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
enum Command {
    /// Fetch image(s) and store them in the local store.
    Fetch(GoStyle<commands::fetch::Args>),
    /// Operate on images in the local store.
    Image(GoStyle<commands::image::Args>),
    /// Print the version and exit.
    Version(GoStyle<commands::version::Args>),
    /// Run image(s) in a pod.
    Run(GoStyle<commands::run::Args>),
    /// Prepare a pod to run later with run-prepared; prints the UUID.
    Prepare(GoStyle<commands::run::PrepareArgs>),
    /// Run a prepared pod.
    RunPrepared(GoStyle<commands::run::RunPreparedArgs>),
    /// Check the status of a pod.
    Status(GoStyle<commands::pods::StatusArgs>),
    /// List pods.
    List(GoStyle<commands::pods::ListArgs>),
    /// Inspect and print the pod manifest.
    CatManifest(GoStyle<commands::pods::CatManifestArgs>),
    /// Stop running pods.
    Stop(GoStyle<commands::pods::StopArgs>),
    /// Remove pods.
    Rm(GoStyle<commands::pods::RmArgs>),
    /// Garbage-collect exited pods.
    Gc(GoStyle<commands::pods::GcArgs>),
    /// Enter the namespaces of an app within a pod.
    Enter(GoStyle<commands::pods::EnterArgs>),
    /// Print the merged configuration (stage0) in JSON format.
    Config(GoStyle<commands::config::Args>),
    /// Export an app of an exited pod to an ACI file.
    Export(GoStyle<commands::export::Args>),
    /// Trust a key for image verification.
    Trust(GoStyle<commands::trust::Args>),
    /// Run the metadata service (AC_METADATA_URL for pods run with --mds-register).
    MetadataService(GoStyle<commands::metadata_service::Args>),
    /// Mutable pods (experimental: RKT_EXPERIMENT_APP=true).
    App(GoStyle<commands::app::Args>),
    /// Output shell completion code for the specified shell (default bash).
    Completion(GoStyle<commands::completion::Args>),
}

/// Parses argv, runs the command, prints the error chain once, returns the exit code. A
/// closed stdout ends the process quietly by SIGPIPE.
pub fn main() -> i32 {
    let mut dir_given = false;
    let parsed = commands::gobool::go_style(Cli::command())
        .try_get_matches()
        .and_then(|m| {
            dir_given = given(&m, "dir");
            Cli::from_arg_matches(&m)
        });
    let mut cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                pod_abi::exit::USAGE
            } else {
                0
            };
            if e.print().is_err() && !e.use_stderr() {
                commands::exit_on_broken_pipe();
            }
            return code;
        }
    };
    // The data directory of `paths.d` when `--dir` is not given.
    if !dir_given && !matches!(cli.command, Command::Version(_) | Command::Completion(_)) {
        match commands::config::load(&cli.globals) {
            Ok(c) => {
                if let Some(d) = c.data_dir {
                    cli.globals.dir = d.into();
                }
            }
            Err(e) => return commands::report(e),
        }
    }
    if cli.globals.trust_keys_from_https && !matches!(cli.command, Command::Trust(_)) {
        commands::warn(
            "--trust-keys-from-https only applies to rkt trust (keys are never trusted implicitly while fetching)",
        );
    }
    let g = &cli.globals;
    let res = match cli.command {
        Command::Fetch(GoStyle(a)) => commands::fetch::run(g, a),
        Command::Image(GoStyle(c)) => commands::image::run(g, c.command),
        Command::Version(GoStyle(a)) => commands::version::run(g, a),
        Command::Run(GoStyle(a)) => commands::run::run(g, a),
        Command::Prepare(GoStyle(a)) => commands::run::prepare(g, a),
        Command::RunPrepared(GoStyle(a)) => commands::run::run_prepared(g, a),
        Command::Status(GoStyle(a)) => commands::pods::status(g, a),
        Command::List(GoStyle(a)) => commands::pods::list(g, a),
        Command::CatManifest(GoStyle(a)) => commands::pods::cat_manifest(g, a),
        Command::Stop(GoStyle(a)) => commands::pods::stop(g, a),
        Command::Rm(GoStyle(a)) => commands::pods::rm(g, a),
        Command::Gc(GoStyle(a)) => commands::pods::gc(g, a),
        Command::Enter(GoStyle(a)) => commands::pods::enter(g, a),
        Command::Config(GoStyle(a)) => commands::config::run(g, a),
        Command::Export(GoStyle(a)) => commands::export::run(g, a),
        Command::Trust(GoStyle(a)) => commands::trust::run(g, a),
        Command::MetadataService(GoStyle(a)) => commands::metadata_service::run(g, a),
        Command::App(GoStyle(c)) => commands::app::run(g, c.command),
        Command::Completion(GoStyle(a)) => commands::completion::run(g, a, Cli::command()),
    };
    let res = res.and_then(|code| Ok(commands::flush_stdout().map(|()| code)?));
    match res {
        Ok(code) => code,
        Err(e) => {
            let broken = e
                .downcast_ref::<StdoutError>()
                .is_some_and(StdoutError::is_broken_pipe);
            if broken {
                commands::exit_on_broken_pipe();
            }
            commands::report(e)
        }
    }
}

/// Whether the global flag `id` was given on the command line (at the top or after a
/// subcommand).
fn given(m: &clap::ArgMatches, id: &str) -> bool {
    let mut cur = Some(m);
    while let Some(m) = cur {
        if m.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
            return true;
        }
        cur = m.subcommand().map(|(_, sub)| sub);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag of every command, built as `--help` builds them, is Go-style (no plain
    /// presence flag is left), and the tree passes clap's own consistency checks.
    #[test]
    fn every_command_built_has_go_style_booleans() {
        fn walk(c: &clap::Command, path: &str, bools: &mut usize) {
            for a in c.get_arguments() {
                assert!(
                    !matches!(a.get_action(), clap::ArgAction::SetTrue),
                    "{path} --{}: a presence flag, not Go-style",
                    a.get_id()
                );
                if a.get_value_names().is_some_and(|v| v == ["BOOL"]) {
                    *bools += 1;
                }
            }
            for s in c.get_subcommands() {
                walk(s, &format!("{path} {}", s.get_name()), bools);
            }
        }
        let mut cmd = commands::gobool::go_style(Cli::command());
        cmd.build();
        let mut bools = 0;
        walk(&cmd, "rkt", &mut bools);
        assert!(
            bools > 30,
            "only {bools} Go-style flags found: the tree was not built"
        );
        Cli::command().debug_assert();
    }
}
