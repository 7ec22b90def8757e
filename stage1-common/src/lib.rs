//! What every stage1's host side shares (see docs/stage1-common.md): entrypoint dispatch on
//! argv\[0\] or the first argument ([`entry`]), the logger and the program name ([`log`]),
//! one error type mapped to one exit code ([`error`]), the pod context: lock fd, pid file,
//! failure file and the pod's exit code from the apps' statuses ([`pod`]), the terminal in raw
//! mode and the `^]^]^]` escape ([`terminal`]), stop-signal helpers ([`signals`]) and the
//! verified `stop` ([`stop`]), the pod's CNI networks ([`net`]), its cgroups on the host
//! ([`cgroup`]) and its metadata service URL ([`metadata`]), the app entrypoints' requests
//! to guest-init ([`app`]), and the host end of an exec or attach session ([`session`]).
//!
//! A flavor implements [`entry::Stage1`] (its own launch, process check and gc) and calls
//! [`entry::main`]. Contract strings and file formats live in `pod-abi`, not here.
#![deny(missing_docs)]

pub mod app;
pub mod cgroup;
pub mod entry;
pub mod error;
pub mod log;
pub mod metadata;
pub mod net;
pub mod pod;
pub mod session;
pub mod signals;
pub mod stop;
pub mod terminal;

pub use entry::Stage1;
pub use error::Stage1Error;
pub use pod::PodContext;
/// The one atomic write (it lives in `pod-abi` so that guest-init shares it).
pub use pod_abi::podfile::write_atomic;
