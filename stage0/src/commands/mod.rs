//! One module per command family: argument handling and printing over the `stage0` library.
//! Commands return `anyhow::Result<i32>` (the exit code on success paths, e.g. `rkt stop`
//! returns the code of the last failed pod); errors are printed and mapped once in `cli`.

pub mod api_service;
pub mod app;
pub mod completion;
pub mod config;
pub mod export;
pub mod fetch;
pub mod gobool;
pub mod image;
pub mod metadata_service;
pub mod pods;
pub mod run;
pub mod trust;
pub mod version;

use std::io::{self, Write};

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
    /// User configuration directory (read after the local one).
    #[arg(long, global = true)]
    pub user_config: Option<std::path::PathBuf>,
    /// Trust keys fetched over https (accepted for compatibility).
    #[arg(long, global = true)]
    pub trust_keys_from_https: bool,
}

/// Writing to stdout failed (a closed pipe ends `rkt` quietly, see [`exit_on_broken_pipe`]).
#[derive(Debug, thiserror::Error)]
#[error("cannot write to stdout")]
pub struct StdoutError(#[source] pub io::Error);

impl StdoutError {
    /// Whether the reader of stdout is gone (EPIPE).
    pub fn is_broken_pipe(&self) -> bool {
        self.0.kind() == io::ErrorKind::BrokenPipe
    }
}

/// Writes to stdout; fails with [`StdoutError`] instead of panicking as `print!` does.
pub fn out(s: impl AsRef<[u8]>) -> Result<(), StdoutError> {
    io::stdout()
        .lock()
        .write_all(s.as_ref())
        .map_err(StdoutError)
}

/// `println!` that fails with [`StdoutError`].
#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::commands::out(format!("{}\n", format_args!($($t)*)))
    };
}

/// Flushes stdout (buffered output can still meet a closed pipe).
pub fn flush_stdout() -> Result<(), StdoutError> {
    io::stdout().lock().flush().map_err(StdoutError)
}

/// Ends the process as rkt (a Go program) did when stdout's reader is gone: killed by
/// SIGPIPE, printing nothing.
pub fn exit_on_broken_pipe() -> ! {
    // SAFETY: resets SIGPIPE's disposition to the default and raises it in this process;
    // no memory is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    std::process::exit(128 + libc::SIGPIPE)
}

/// Prints `rkt: <error>: <cause>: <cause>` once on stderr (a closed stderr is ignored).
/// Messages carry image-, URL- and peer-derived text, so control characters are escaped
/// ([`stage0::format::escape_control`]).
pub fn print_error(e: &anyhow::Error) {
    let mut msg = format!("{e}");
    for cause in e.chain().skip(1) {
        msg.push_str(&format!(": {cause}"));
    }
    let _ = writeln!(
        io::stderr(),
        "rkt: {}",
        stage0::format::escape_control(&msg)
    );
}

/// Prints what a user other than root may do with a data directory `dir` that is not theirs,
/// when `e` is a permission error such a user met.
pub fn hint_if_denied(e: &anyhow::Error, dir: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid();
    let denied = e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::PermissionDenied)
    });
    let theirs = std::fs::metadata(dir).is_ok_and(|m| m.uid() == me.as_raw());
    if denied && !me.is_root() && !theirs {
        let _ = writeln!(
            io::stderr(),
            "rkt: only root may change the data directory {}; members of the `rkt` group may read it (`rkt list`, `rkt status`, `rkt image list`, `rkt image cat-manifest`, `rkt image export`)",
            dir.display()
        );
    }
}

/// Whether the environment variable `var` enables an experimental command, as rkt's
/// `RKT_EXPERIMENT_*` did (`true`, or Go's other true spellings).
pub fn experiment(var: &str) -> bool {
    std::env::var(var)
        .ok()
        .and_then(|v| gobool::value(&v).ok())
        .unwrap_or(false)
}

/// Prints `rkt: warning: <msg>` on stderr.
pub fn warn(msg: &str) {
    let _ = writeln!(io::stderr(), "rkt: warning: {msg}");
}

/// Prints an error that does not end the command and returns its exit code.
pub fn report(e: impl Into<anyhow::Error>) -> i32 {
    let e = e.into();
    print_error(&e);
    stage0::error::exit_code(e.as_ref())
}
