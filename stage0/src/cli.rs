//! Command-line definition (rkt's command and flag names), dispatch, and the one place where
//! errors are printed and mapped to exit codes.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

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

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetch image(s) and store them in the local store.
    Fetch(commands::fetch::Args),
    /// Operate on images in the local store.
    #[command(subcommand)]
    Image(commands::image::ImageCommand),
    /// Print the version and exit.
    Version(commands::version::Args),
    /// Run image(s) in a pod.
    Run(commands::run::Args),
    /// Prepare a pod to run later with run-prepared; prints the UUID.
    Prepare(commands::run::PrepareArgs),
    /// Run a prepared pod.
    RunPrepared(commands::run::RunPreparedArgs),
    /// Check the status of a pod.
    Status(commands::pods::StatusArgs),
    /// List pods.
    List(commands::pods::ListArgs),
    /// Inspect and print the pod manifest.
    CatManifest(commands::pods::CatManifestArgs),
    /// Stop running pods.
    Stop(commands::pods::StopArgs),
    /// Remove pods.
    Rm(commands::pods::RmArgs),
    /// Garbage-collect exited pods.
    Gc(commands::pods::GcArgs),
    /// Enter the namespaces of an app within a pod.
    Enter(commands::pods::EnterArgs),
    /// Print the merged configuration (stage0) in JSON format.
    Config(commands::config::Args),
    /// Export an app of an exited pod to an ACI file.
    Export(commands::export::Args),
    /// Trust a key for image verification.
    Trust(commands::trust::Args),
    /// Run the metadata service (AC_METADATA_URL for pods run with --mds-register).
    MetadataService(commands::metadata_service::Args),
    /// Mutable pods (experimental: RKT_EXPERIMENT_APP=true).
    #[command(subcommand)]
    App(commands::app::AppCommand),
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
    if !dir_given && !matches!(cli.command, Command::Version(_)) {
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
        Command::Fetch(a) => commands::fetch::run(g, a),
        Command::Image(c) => commands::image::run(g, c),
        Command::Version(a) => commands::version::run(g, a),
        Command::Run(a) => commands::run::run(g, a),
        Command::Prepare(a) => commands::run::prepare(g, a),
        Command::RunPrepared(a) => commands::run::run_prepared(g, a),
        Command::Status(a) => commands::pods::status(g, a),
        Command::List(a) => commands::pods::list(g, a),
        Command::CatManifest(a) => commands::pods::cat_manifest(g, a),
        Command::Stop(a) => commands::pods::stop(g, a),
        Command::Rm(a) => commands::pods::rm(g, a),
        Command::Gc(a) => commands::pods::gc(g, a),
        Command::Enter(a) => commands::pods::enter(g, a),
        Command::Config(a) => commands::config::run(g, a),
        Command::Export(a) => commands::export::run(g, a),
        Command::Trust(a) => commands::trust::run(g, a),
        Command::MetadataService(a) => commands::metadata_service::run(g, a),
        Command::App(c) => commands::app::run(g, c),
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
