//! Pod networking with the real CNI plugins, shared by both stage1 flavors: rkt's `--net`
//! syntax and network configs ([`config`]), plugin lookup and execution by the CNI spec
//! ([`exec`]), results ([`result`]), the pod's persistent network namespace ([`netns`]), and
//! the whole setup/teardown of a pod's networks with `net-info.json` ([`pod`]).
#![deny(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod config;
pub mod exec;
pub mod netns;
pub mod pod;
pub mod result;

pub use config::{NetConfList, NetMode, NetRequest};
pub use exec::{CniCommand, PluginDirs};
pub use pod::{setup, teardown, Attached, PodNetOptions, PodNetwork};
pub use result::CniResult;

/// A networking failure; every plugin error names the network and the plugin.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// A bad `--net` value.
    #[error("{0}")]
    Usage(String),
    /// A network config file that cannot be used.
    #[error("network config {source_path}: {msg}")]
    Config {
        /// The file.
        source_path: String,
        /// What is wrong.
        msg: String,
    },
    /// No config and no built-in network of that name.
    #[error("network {0:?} not found (no net.d config and not a built-in network)")]
    UnknownNetwork(String),
    /// No plugin executable of that type in the plugin dirs.
    #[error("network {network}: plugin {plugin:?} not found in {dirs}")]
    PluginNotFound {
        /// Network name.
        network: String,
        /// Plugin type.
        plugin: String,
        /// The searched directories.
        dirs: String,
    },
    /// A plugin failed (non-zero exit, timeout, oversized output).
    #[error("network {network}: plugin {plugin} {command} failed: {msg}")]
    Plugin {
        /// Network name.
        network: String,
        /// Plugin type.
        plugin: String,
        /// `ADD`, `DEL` or `CHECK`.
        command: &'static str,
        /// The plugin's error message.
        msg: String,
    },
    /// A plugin's result that does not parse.
    #[error("network {network}: plugin {plugin} returned an invalid result")]
    Result {
        /// Network name.
        network: String,
        /// Plugin type.
        plugin: String,
        /// Cause.
        #[source]
        source: result::ResultError,
    },
    /// Creating, entering or removing the pod's network namespace.
    #[error("network namespace {path}: {step}")]
    Netns {
        /// The namespace path.
        path: String,
        /// What was being done.
        step: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing `net-info.json`.
    #[error("net-info.json")]
    NetInfo(#[source] std::io::Error),
    /// Several teardown steps failed (each is listed).
    #[error("teardown: {}", .0.join("; "))]
    Teardown(Vec<String>),
}
