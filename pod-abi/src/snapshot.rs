//! The snapshot port: how a guest (the test init, guest-init) asks the KVM stage1 for a
//! snapshot at a point of its choosing, and how, after a restore, it reads the fresh per-VM data
//! that must not come from the snapshot (entropy, the wall clock; see docs/snapshot.md).
//!
//! Protocol (x86 port I/O, one byte per access):
//! - `out` [`REQUEST`] to [`PORT_DATA`]: snapshot here. The vCPU stops before the next
//!   instruction; the VMM saves the VM and ends it. A VMM that takes no snapshot ignores it.
//! - `in` [`PORT_STATUS`]: [`STATUS_RESTORED`] when this VM was restored from a snapshot and
//!   [`FRESH_LEN`] bytes of fresh data wait at [`PORT_DATA`]; anything else (0, or 0xff where no
//!   device answers) means a cold boot: carry on.
//! - `in` [`PORT_DATA`], [`FRESH_LEN`] times: the record [`Fresh::encode`] describes.

/// guest-init's first argument when the kernel starts it from the snapshot initramfs: stop at
/// the snapshot port, then mount the pod's root share and continue as the pod's init.
pub const INIT_STAGE_ARG: &str = "--snapshot-stage";
/// Where the host puts guest-init's arguments for a restored pod, relative to the stage1 root
/// (one argument per line): a snapshot's kernel command line is the snapshot maker's, so pod
/// arguments cannot come from it.
pub const INIT_ARGS_IN_STAGE1: &str = "rkt/init-args";
/// Largest [`INIT_ARGS_IN_STAGE1`] guest-init reads (bytes).
pub const INIT_ARGS_MAX: usize = 64 << 10;

/// The data/command port.
pub const PORT_DATA: u16 = 0x5e0;
/// The status port.
pub const PORT_STATUS: u16 = 0x5e1;
/// Number of ports the device decodes.
pub const PORTS: u16 = 2;
/// The byte written to [`PORT_DATA`] to ask for a snapshot ('S').
pub const REQUEST: u8 = 0x53;
/// [`PORT_STATUS`]: restored, fresh data waiting.
pub const STATUS_RESTORED: u8 = 1;
/// [`PORT_STATUS`]: not restored (cold boot).
pub const STATUS_COLD: u8 = 0;
/// Bytes of entropy in the record.
pub const ENTROPY_LEN: usize = 32;
/// Length of the fresh-data record (bytes).
pub const FRESH_LEN: usize = ENTROPY_LEN + 16;

/// The fresh per-VM data a restored guest reads: host entropy (from `getrandom`) for the
/// guest's pool (`RNDADDENTROPY`) and the host's wall clock for `clock_settime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fresh {
    /// Random bytes from the host.
    pub entropy: [u8; ENTROPY_LEN],
    /// CLOCK_REALTIME seconds at restore.
    pub secs: u64,
    /// CLOCK_REALTIME nanoseconds (below 1e9).
    pub nanos: u32,
}

impl Fresh {
    /// The record: entropy, then `secs` (u64 LE), `nanos` (u32 LE), 4 zero bytes.
    pub fn encode(&self) -> [u8; FRESH_LEN] {
        let mut out = [0u8; FRESH_LEN];
        out[..ENTROPY_LEN].copy_from_slice(&self.entropy);
        out[ENTROPY_LEN..ENTROPY_LEN + 8].copy_from_slice(&self.secs.to_le_bytes());
        out[ENTROPY_LEN + 8..ENTROPY_LEN + 12].copy_from_slice(&self.nanos.to_le_bytes());
        out
    }

    /// Parses a record; `None` when `nanos` is out of range.
    pub fn decode(b: &[u8; FRESH_LEN]) -> Option<Fresh> {
        let mut entropy = [0u8; ENTROPY_LEN];
        entropy.copy_from_slice(&b[..ENTROPY_LEN]);
        let mut secs = [0u8; 8];
        secs.copy_from_slice(&b[ENTROPY_LEN..ENTROPY_LEN + 8]);
        let mut nanos = [0u8; 4];
        nanos.copy_from_slice(&b[ENTROPY_LEN + 8..ENTROPY_LEN + 12]);
        let nanos = u32::from_le_bytes(nanos);
        (nanos < 1_000_000_000).then_some(Fresh {
            entropy,
            secs: u64::from_le_bytes(secs),
            nanos,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_rejects_bad_nanos() {
        let f = Fresh {
            entropy: [7; ENTROPY_LEN],
            secs: 1_800_000_000,
            nanos: 999_999_999,
        };
        assert_eq!(Fresh::decode(&f.encode()), Some(f));
        let mut bad = f.encode();
        bad[ENTROPY_LEN + 8..ENTROPY_LEN + 12].copy_from_slice(&1_000_000_000u32.to_le_bytes());
        assert_eq!(Fresh::decode(&bad), None);
    }
}
