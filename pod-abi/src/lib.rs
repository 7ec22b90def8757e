//! The contract between stage0 (`rkt`), the stage1 flavors (`stage1-ns`, `stage1-vmm`) and
//! guest-init: pod directory layout, stage1 entrypoint argv, the launch plan guest-init reads,
//! guest-init's arguments and control channel, status files and exit codes. Serde types and
//! pure functions, plus the one way the host reads files a pod can write ([`podfile`]) and the
//! one way it runs a helper process with a deadline and capped output ([`child`]), and the
//! one parser of `/proc/self/mountinfo` ([`mountinfo`]) and of `/proc/<pid>/cgroup`
//! ([`proccgroup`]).
#![deny(missing_docs)]

pub mod attach;
pub mod child;
pub mod control;
pub mod entropy;
pub mod exec;
pub mod exit;
pub mod guestnet;
pub mod init;
pub mod mount_api;
pub mod mountinfo;
pub mod netinfo;
pub mod paths;
pub mod plan;
pub mod podfile;
pub mod proccgroup;
pub mod remove;
pub mod reset;
pub mod snapshot;
#[cfg(target_arch = "x86_64")]
pub mod snapshot_port;
pub mod stage1;
pub mod status;
pub mod text;
pub mod time;
pub mod trace;
pub mod userns;
pub mod vsock;
