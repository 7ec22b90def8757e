//! Command-line definition (rkt's command and flag names), dispatch, and the one place where
//! errors are printed and mapped to exit codes.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::commands::gobool::GoStyle;
use crate::commands::{self, Globals, StdoutError};

/// rkt's command name (the derived tree's and a cut tree's, see [`command_for`]).
const RKT: &str = "rkt";

#[derive(Debug, Parser)]
#[command(
    name = RKT,
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
    /// Attach to an app running within a pod (experimental: RKT_EXPERIMENT_ATTACH=true).
    Attach(GoStyle<commands::pods::AttachArgs>),
    /// Print the merged configuration (stage0) in JSON format.
    Config(GoStyle<commands::config::Args>),
    /// Export an app of an exited pod to an ACI file.
    Export(GoStyle<commands::export::Args>),
    /// Trust a key for image verification.
    Trust(GoStyle<commands::trust::Args>),
    /// Run the metadata service (AC_METADATA_URL for pods run with --mds-register).
    MetadataService(GoStyle<commands::metadata_service::Args>),
    /// Run the read-only gRPC API service (api/v1alpha).
    ApiService(GoStyle<commands::api_service::Args>),
    /// Mutable pods (experimental: RKT_EXPERIMENT_APP=true).
    App(GoStyle<commands::app::Args>),
    /// Output shell completion code for the specified shell (default bash).
    Completion(GoStyle<commands::completion::Args>),
}

/// Parses argv, runs the command, prints the error chain once, returns the exit code. A
/// closed stdout ends the process quietly by SIGPIPE.
pub fn main() -> i32 {
    let mut dir_given = false;
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let parsed = commands::gobool::go_style(command_for(&args))
        .try_get_matches_from(&args)
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
        Command::Attach(GoStyle(a)) => commands::pods::attach(g, a),
        Command::Config(GoStyle(a)) => commands::config::run(g, a),
        Command::Export(GoStyle(a)) => commands::export::run(g, a),
        Command::Trust(GoStyle(a)) => commands::trust::run(g, a),
        Command::MetadataService(GoStyle(a)) => commands::metadata_service::run(g, a),
        Command::ApiService(GoStyle(a)) => commands::api_service::run(g, a),
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
            commands::print_error(&e);
            commands::hint_if_denied(&e, &g.dir);
            stage0::error::exit_code(e.as_ref())
        }
    }
}

/// The command tree to parse `args` with: rkt's whole tree, cut down to the one subcommand
/// `args` names when they name one. clap copies every global flag into every subcommand of
/// the tree it parses with (7 flags into 19 commands), which cost each command 0.13-0.18 ms
/// of its start (`rkt run`: 0.32 -> 0.14-0.19 ms to the parsed command line); the cut tree is
/// the whole tree's top (name, about, settings, flags) with only that subcommand, so help,
/// usage and errors are the same (`tests::cut_trees_parse_and_fail_as_the_whole_tree`).
fn command_for(args: &[std::ffi::OsString]) -> clap::Command {
    let full = Cli::command();
    match subcommand_named(&full, args).and_then(|name| full.find_subcommand(name).cloned()) {
        Some(sub) => {
            let mut top = clap::Command::new(RKT)
                .disable_version_flag(full.is_disable_version_flag_set())
                .subcommand_required(full.is_subcommand_required_set())
                .arg_required_else_help(full.is_arg_required_else_help_set());
            if let Some(about) = full.get_about() {
                top = top.about(about.clone());
            }
            full.get_arguments()
                .fold(top, |top, a| top.arg(a.clone()))
                .subcommand(sub)
        }
        None => full,
    }
}

/// The subcommand `args` (argv, program name first) name before anything but the top
/// command's own flags (`--flag=value`, `--flag value`, `--bool`); `None` when anything else
/// comes first (`-h`, an unknown flag, `--`, `help`), which the whole tree then parses.
fn subcommand_named<'a>(top: &clap::Command, args: &'a [std::ffi::OsString]) -> Option<&'a str> {
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        let a = a.to_str()?;
        let Some(flag) = a.strip_prefix("--") else {
            return (!a.starts_with('-')).then_some(a);
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, _)) => (n, true),
            None => (flag, false),
        };
        let arg = top.get_arguments().find(|x| x.get_long() == Some(name))?;
        if !inline && !matches!(arg.get_action(), clap::ArgAction::SetTrue) {
            rest.next()?;
        }
    }
    None
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

    /// What parsing `argv` with `cmd` gives: the parsed command line, or the error's kind and
    /// its text as rkt prints it.
    fn outcome(cmd: clap::Command, argv: &[&str]) -> String {
        match commands::gobool::go_style(cmd).try_get_matches_from(argv) {
            Ok(m) => match Cli::from_arg_matches(&m) {
                Ok(c) => format!("ok {c:?}"),
                Err(e) => format!("err {:?} {}", e.kind(), e.render()),
            },
            Err(e) => format!("err {:?} {}", e.kind(), e.render()),
        }
    }

    fn os(argv: &[&str]) -> Vec<std::ffi::OsString> {
        argv.iter().map(std::ffi::OsString::from).collect()
    }

    /// A command line parsed with the tree cut to its subcommand gives what the whole tree
    /// gives: the same parsed command, or the same error and help text, for every command
    /// and nested command, with the top command's flags before it in each form.
    #[test]
    fn cut_trees_parse_and_fail_as_the_whole_tree() {
        let mut whole = commands::gobool::go_style(Cli::command());
        whole.build();
        let mut lines: Vec<Vec<String>> = Vec::new();
        for s in whole.get_subcommands().filter(|s| s.get_name() != "help") {
            lines.push(vec![s.get_name().to_string()]);
            for n in s.get_subcommands().filter(|n| n.get_name() != "help") {
                lines.push(vec![s.get_name().to_string(), n.get_name().to_string()]);
            }
        }
        assert!(
            lines.len() > 30,
            "the nested commands are missing: {lines:?}"
        );
        let forms: [&[&str]; 6] = [
            &["--help"],
            &[],
            &["--bogus"],
            &["x", "--debug=maybe"],
            &["--dir=/d", "x"],
            &["-h"],
        ];
        let before: [&[&str]; 4] = [
            &[],
            &["--dir", "/d", "--debug"],
            &["--insecure-options=image", "--debug=false"],
            &["--trust-keys-from-https"],
        ];
        let mut cut = 0;
        for line in &lines {
            for b in before {
                for f in forms {
                    let mut argv = vec!["rkt"];
                    argv.extend(b);
                    argv.extend(line.iter().map(String::as_str));
                    argv.extend(f);
                    let mine = command_for(&os(&argv));
                    if mine.get_subcommands().count() == 1 {
                        cut += 1;
                    }
                    assert_eq!(
                        outcome(mine, &argv),
                        outcome(Cli::command(), &argv),
                        "{argv:?}"
                    );
                }
            }
        }
        assert_eq!(
            cut,
            lines.len() * 4 * 6,
            "every line above names its command"
        );
        for argv in [
            &["rkt"][..],
            &["rkt", "-h"],
            &["rkt", "--help"],
            &["rkt", "help", "run"],
            &["rkt", "--", "run"],
            &["rkt", "--dir"],
            &["rkt", "--bogus", "run"],
            &["rkt", "nosuch"],
            &["rkt", "--debug", "true", "run"],
        ] {
            let mine = command_for(&os(argv));
            assert!(mine.get_subcommands().count() > 1, "{argv:?} was cut");
            assert_eq!(
                outcome(mine, argv),
                outcome(Cli::command(), argv),
                "{argv:?}"
            );
        }
    }
}
