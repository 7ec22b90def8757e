//! The snapshot port device (the protocol is `pod_abi::snapshot`'s): armed in a VM that makes a
//! snapshot (the guest's request ends the vCPU's run with [`DeviceAction::Snapshot`]), holding
//! the fresh-data record in a restored VM. A VM that neither makes nor restores a snapshot has
//! no device there: the ports float and the guest reads "cold boot".

use pod_abi::snapshot::{Fresh, ENTROPY_LEN, FRESH_LEN, REQUEST, STATUS_COLD, STATUS_RESTORED};

use super::SnapshotError;
use crate::bus::{DeviceAction, PioDevice};

/// The device.
#[derive(Debug)]
pub enum SnapshotPort {
    /// A snapshot-making VM: the request stops the vCPU.
    Armed,
    /// A restored VM: the record, and how much of it the guest has read.
    Restored {
        /// The record.
        record: [u8; FRESH_LEN],
        /// Bytes read so far.
        read: usize,
    },
}

impl SnapshotPort {
    /// A restored VM's device with `fresh`.
    pub fn restored(fresh: &Fresh) -> Self {
        SnapshotPort::Restored {
            record: fresh.encode(),
            read: 0,
        }
    }
}

impl PioDevice for SnapshotPort {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        data.fill(0);
        let v = match (self, offset) {
            (SnapshotPort::Armed, 1) => STATUS_COLD,
            (SnapshotPort::Restored { .. }, 1) => STATUS_RESTORED,
            (SnapshotPort::Restored { record, read }, 0) => {
                let b = record.get(*read).copied().unwrap_or(0);
                *read = (*read + 1).min(FRESH_LEN);
                b
            }
            _ => 0,
        };
        if let Some(d) = data.first_mut() {
            *d = v;
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> DeviceAction {
        match (&*self, offset, data.first()) {
            (SnapshotPort::Armed, 0, Some(&REQUEST)) => DeviceAction::Snapshot,
            _ => DeviceAction::None,
        }
    }
}

/// Fresh data for a restored VM: [`ENTROPY_LEN`] bytes from the host's `getrandom` and the
/// host's wall clock now.
pub fn fresh_now() -> Result<Fresh, SnapshotError> {
    let mut entropy = [0u8; ENTROPY_LEN];
    crate::random::fill(&mut entropy).map_err(|e| SnapshotError::Io("getrandom failed", e))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(Fresh {
        entropy,
        secs: now.as_secs(),
        nanos: now.subsec_nanos(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn armed_port_asks_for_a_snapshot_only_on_the_request_byte() {
        let mut p = SnapshotPort::Armed;
        assert_eq!(p.write(0, &[REQUEST]), DeviceAction::Snapshot);
        assert_eq!(p.write(0, &[0]), DeviceAction::None);
        assert_eq!(p.write(1, &[REQUEST]), DeviceAction::None);
        let mut s = [9u8];
        p.read(1, &mut s);
        assert_eq!(s, [STATUS_COLD]);
    }

    #[test]
    fn restored_port_streams_the_record_once_then_zeros() {
        let f = fresh_now().expect("fresh");
        let g = fresh_now().expect("fresh");
        assert_ne!(f.entropy, g.entropy, "two draws differ");
        let mut p = SnapshotPort::restored(&f);
        assert_eq!(
            p.write(0, &[REQUEST]),
            DeviceAction::None,
            "no second snapshot"
        );
        let mut s = [0u8];
        p.read(1, &mut s);
        assert_eq!(s, [STATUS_RESTORED]);
        let mut rec = [0u8; FRESH_LEN];
        for b in rec.iter_mut() {
            let mut d = [0u8; 1];
            p.read(0, &mut d);
            *b = d[0];
        }
        assert_eq!(Fresh::decode(&rec), Some(f));
        let mut d = [7u8; 4];
        p.read(0, &mut d);
        assert_eq!(d, [0; 4]);
    }
}
