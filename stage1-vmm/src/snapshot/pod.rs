//! Pods restored from a snapshot, the parts that need no VM (docs/snapshot.md; `pod::run` uses
//! them through `pod::snapshot_start`): whether a pod may be restored ([`decide`]), the cache
//! key of its VM shape ([`PodShape::key`]), and guest-init's arguments written into the stage1
//! root ([`write_init_args`]), since a restored kernel's command line is the snapshot maker's.

use std::path::Path;

use pod_abi::snapshot::{INIT_ARGS_IN_STAGE1, INIT_ARGS_MAX, MAX_NET_CARDS};
use thiserror::Error;

use super::cache::SnapshotKey;

/// Bumped when what a snapshot holds changes in a way the other key parts do not show.
pub const KEY_VERSION: u32 = 1;

/// Errors writing guest-init's arguments.
#[derive(Debug, Error)]
pub enum InitArgsError {
    /// An argument holds a newline or NUL (the file has one argument per line).
    #[error("guest-init argument {0:?} holds a newline or NUL")]
    BadArg(String),
    /// The arguments exceed what guest-init reads.
    #[error("guest-init arguments are {0} bytes, more than {INIT_ARGS_MAX}")]
    TooLong(usize),
    /// Writing the file failed.
    #[error("writing {INIT_ARGS_IN_STAGE1}: {0}")]
    Io(#[from] std::io::Error),
}

/// What a pod's VM looks like, as far as its snapshot depends on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodShape {
    /// Identity of the stage1 image's guest-init (the snapshot stage's `/init`): a content
    /// hash or a file identity that changes whenever the file does.
    pub guest_init_id: String,
    /// Identity of the guest kernel (as `guest_init_id`).
    pub kernel_id: String,
    /// Guest memory (MiB).
    pub mem_mib: u64,
    /// vCPUs.
    pub cpus: u32,
    /// The virtio devices in slot order, e.g. `["fs", "vsock"]`.
    pub devices: Vec<&'static str>,
    /// Network cards: the maker's VM has as many, on scratch taps of its own with
    /// [`pod_abi::snapshot::maker_mac`] MACs; the restored pod's cards get its taps and
    /// guest-init gives the interfaces the pod's MACs.
    pub net_cards: usize,
    /// Whether the guest is offered the TSC-deadline timer
    /// ([`crate::vcpu::tsc_deadline_offered`]): a restored guest keeps the timer mode it
    /// was made with.
    pub tsc_deadline: bool,
}

/// Why a pod boots cold although snapshots were asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColdReason {
    /// More network cards than [`MAX_NET_CARDS`].
    NetworkCards,
}

impl std::fmt::Display for ColdReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColdReason::NetworkCards => write!(
                f,
                "the pod has more than {MAX_NET_CARDS} network cards (a snapshot holds at most {MAX_NET_CARDS})"
            ),
        }
    }
}

/// How a pod with snapshots asked for starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Restore from (or first make) the snapshot with this key.
    Restore(SnapshotKey),
    /// Boot cold, for this reason (logged at debug level).
    Cold(ColdReason),
}

impl PodShape {
    /// The cache key: every part of the shape, the VMM's default kernel command line (the
    /// guest booted with it), and [`KEY_VERSION`].
    pub fn key(&self) -> SnapshotKey {
        let mut k = SnapshotKey::new();
        k.set("version", KEY_VERSION)
            .set("cmdline", crate::boot::cmdline::DEFAULT_CMDLINE)
            .set("guest-init", &self.guest_init_id)
            .set("kernel", &self.kernel_id)
            .set("mem-mib", self.mem_mib)
            .set("cpus", self.cpus)
            .set("devices", self.devices.join(","))
            .set("net-cards", self.net_cards)
            .set(
                "lapic-timer",
                if self.tsc_deadline {
                    "tsc-deadline"
                } else {
                    "one-shot"
                },
            );
        k
    }
}

/// How a pod of `shape` starts when snapshots are asked for.
pub fn decide(shape: &PodShape) -> Start {
    if shape.net_cards > MAX_NET_CARDS {
        Start::Cold(ColdReason::NetworkCards)
    } else {
        Start::Restore(shape.key())
    }
}

/// The contents of [`INIT_ARGS_IN_STAGE1`]: one argument per line.
pub fn init_args_text(args: &[String]) -> Result<Vec<u8>, InitArgsError> {
    let mut out = Vec::new();
    for a in args {
        if a.is_empty() || a.contains(['\n', '\0']) {
            return Err(InitArgsError::BadArg(a.clone()));
        }
        out.extend_from_slice(a.as_bytes());
        out.push(b'\n');
    }
    if out.len() > INIT_ARGS_MAX {
        return Err(InitArgsError::TooLong(out.len()));
    }
    Ok(out)
}

/// Writes `args` to [`INIT_ARGS_IN_STAGE1`] under `stage1_root` (host-written, atomic; the
/// `rkt` directory exists in every stage1 root).
pub fn write_init_args(stage1_root: &Path, args: &[String]) -> Result<(), InitArgsError> {
    let text = init_args_text(args)?;
    pod_abi::podfile::write_atomic(&stage1_root.join(INIT_ARGS_IN_STAGE1), &text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> PodShape {
        PodShape {
            guest_init_id: "aa".into(),
            kernel_id: "bb".into(),
            mem_mib: 256,
            cpus: 1,
            devices: vec!["fs", "vsock"],
            net_cards: 0,
            tsc_deadline: true,
        }
    }

    #[test]
    fn pods_with_cards_and_several_cpus_restore_until_too_many_cards() {
        assert_eq!(decide(&shape()), Start::Restore(shape().key()));
        let mut s = shape();
        s.net_cards = 2;
        s.cpus = 4;
        assert_eq!(decide(&s), Start::Restore(s.key()));
        s.net_cards = MAX_NET_CARDS;
        assert_eq!(decide(&s), Start::Restore(s.key()));
        s.net_cards = MAX_NET_CARDS + 1;
        assert_eq!(decide(&s), Start::Cold(ColdReason::NetworkCards));
    }

    #[test]
    fn every_part_of_the_shape_changes_the_key() {
        let base = shape().key().id();
        let variants: [fn(&mut PodShape); 7] = [
            |s| s.guest_init_id = "ab".into(),
            |s| s.kernel_id = "bc".into(),
            |s| s.mem_mib = 512,
            |s| s.cpus = 2,
            |s| s.devices = vec!["vsock", "fs"],
            |s| s.tsc_deadline = false,
            |s| s.net_cards = 1,
        ];
        for change in variants {
            let mut s = shape();
            change(&mut s);
            assert_ne!(s.key().id(), base);
        }
        assert_eq!(shape().key().id(), base);
    }

    #[test]
    fn init_args_are_one_per_line_and_refuse_line_breaks() {
        let args = vec!["--flavor=kvm".to_string(), "--debug".to_string()];
        assert_eq!(
            init_args_text(&args).expect("text"),
            b"--flavor=kvm\n--debug\n"
        );
        for bad in ["a\nb", "a\0b", ""] {
            assert!(matches!(
                init_args_text(&[bad.to_string()]),
                Err(InitArgsError::BadArg(_))
            ));
        }
        let long = vec!["x".repeat(INIT_ARGS_MAX)];
        assert!(matches!(
            init_args_text(&long),
            Err(InitArgsError::TooLong(_))
        ));
    }

    #[test]
    fn init_args_land_in_the_stage1_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("rkt")).expect("mkdir");
        write_init_args(dir.path(), &["--debug".to_string()]).expect("writes");
        let got = std::fs::read(dir.path().join(INIT_ARGS_IN_STAGE1)).expect("reads");
        assert_eq!(got, b"--debug\n");
    }
}
