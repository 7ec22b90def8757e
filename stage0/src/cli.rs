//! Command-line definition (rkt's command and flag names) and dispatch.

use clap::{Parser, Subcommand};

use crate::commands;

/// Global flags shared by every command.
#[derive(Debug, Clone, clap::Args)]
pub struct Globals {
    /// rkt data directory.
    #[arg(long, global = true, default_value = "/var/lib/rkt")]
    pub dir: std::path::PathBuf,
    /// Print out more debug information to stderr.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Comma-separated list of security features to disable:
    /// none,http,image,tls,pubkey,capabilities,paths,seccomp,all-fetch,all-run,all.
    #[arg(long, global = true, default_value = "none")]
    pub insecure_options: String,
    /// Local configuration directory.
    #[arg(long, global = true, default_value = "/etc/rkt")]
    pub local_config: std::path::PathBuf,
    /// System configuration directory.
    #[arg(long, global = true, default_value = "/usr/lib/rkt")]
    pub system_config: std::path::PathBuf,
    /// Trust keys fetched over https (accepted for compatibility).
    #[arg(long, global = true)]
    pub trust_keys_from_https: bool,
}

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
}

/// Parses argv, runs the command, prints the error chain once, returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                pod_abi::exit::USAGE
            } else {
                0
            };
            let _ = e.print();
            return code;
        }
    };
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
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            commands::print_error(&e);
            commands::exit_code_for(&e)
        }
    }
}
