//! A virtio-mmio transport's state in a snapshot ([`TransportState`]) and its restore: the
//! registers the driver wrote (status, features, selectors, each queue's size, readiness and
//! ring addresses), the interrupt status and configuration generation, and each live queue's
//! next available and used index. A restored transport whose driver had reached `DRIVER_OK` is
//! activated again at once, with the device's fresh backend (the device object the restoring
//! VMM created: a share, a socket, a tap of the same kind, never the snapshot's).
//!
//! The next indices come from the used ring in guest memory (`used.idx`): a snapshot is taken
//! at a point the guest chose, with every queue idle, so the device has returned every buffer
//! it took (next avail = next used = `used.idx`). Buffers the driver made available and the
//! device has not taken (a console's or vsock's receive buffers) stay available after it.

use vm_memory::{Bytes, GuestAddress};

use super::{DeviceStatus, MmioTransport};
use crate::snapshot::state::{QueueState, TransportState};

/// Why a transport state cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestoreError {
    /// The snapshot's device in this slot is of another type.
    #[error("virtio slot holds device type {found}, the snapshot has type {want}")]
    DeviceType {
        /// This VM's device.
        found: u32,
        /// The snapshot's.
        want: u32,
    },
    /// Another number of queues.
    #[error("device type {0}: the snapshot has another number of queues")]
    QueueCount(u32),
    /// A queue larger than the device allows, or a status no driver can reach.
    #[error("device type {0}: bad queue or status in the snapshot")]
    BadValue(u32),
    /// The snapshot's driver accepted features this device does not offer (bits).
    #[error(
        "device type {0}: the snapshot's driver uses features {1:#x} this device does not offer"
    )]
    Features(u32, u64),
    /// Re-activating the device failed.
    #[error("device type {0}: activation after restore failed: {1}")]
    Activate(u32, String),
}

/// `used.idx` of the used ring at `used` (the u16 after the flags).
fn used_idx(t: &MmioTransport, used: u64) -> u16 {
    t.mem
        .read_obj::<u16>(GuestAddress(used.wrapping_add(2)))
        .unwrap_or(0)
}

impl MmioTransport {
    /// The transport's state (see the module docs for the queue indices).
    pub fn snapshot_state(&self) -> TransportState {
        let live = self.status == DeviceStatus::DriverOk;
        TransportState {
            device_type: self.device.device_type(),
            status_reg: self.status_reg,
            driver_features: self.driver_features,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            queue_sel: self.queue_sel,
            interrupt_status: self.interrupt.status(),
            config_generation: self.interrupt.config_generation(),
            queues: self
                .queues
                .iter()
                .map(|q| {
                    let next = if live && q.ready {
                        used_idx(self, q.used)
                    } else {
                        0
                    };
                    QueueState {
                        size: q.size,
                        ready: q.ready,
                        desc: q.desc,
                        avail: q.avail,
                        used: q.used,
                        next_avail: next,
                        next_used: next,
                    }
                })
                .collect(),
        }
    }

    /// Stops the device's worker (it finishes the request at hand first) and leaves the
    /// transport's registers as they are: a snapshot reads the queues and guest memory after
    /// this, so no worker writes to either meanwhile (the workers run on threads of their own,
    /// beside the stopped vCPUs).
    pub fn quiesce(&mut self) {
        if self.active {
            self.device.reset();
        }
    }

    /// Puts a freshly created transport (status `Init`) in state `s` and, if the driver had
    /// reached `DRIVER_OK`, activates the device with the saved queue positions.
    pub fn restore_state(&mut self, s: &TransportState) -> Result<(), RestoreError> {
        let ty = self.device.device_type();
        if s.device_type != ty {
            return Err(RestoreError::DeviceType {
                found: ty,
                want: s.device_type,
            });
        }
        if s.queues.len() != self.queues.len() {
            return Err(RestoreError::QueueCount(ty));
        }
        let missing = s.driver_features & !self.device_features();
        if missing != 0 {
            return Err(RestoreError::Features(ty, missing));
        }
        let status = match s.status_reg {
            0 => DeviceStatus::Init,
            v => DeviceStatus::from_write(v).ok_or(RestoreError::BadValue(ty))?,
        };
        for (q, saved) in self.queues.iter_mut().zip(&s.queues) {
            if saved.size > q.max_size {
                return Err(RestoreError::BadValue(ty));
            }
            q.size = saved.size;
            q.ready = saved.ready;
            q.desc = saved.desc;
            q.avail = saved.avail;
            q.used = saved.used;
        }
        self.status_reg = s.status_reg;
        self.driver_features = s.driver_features;
        self.device_features_sel = s.device_features_sel;
        self.driver_features_sel = s.driver_features_sel;
        self.queue_sel = s.queue_sel;
        self.interrupt
            .restore(s.interrupt_status, s.config_generation);
        if status == DeviceStatus::DriverOk {
            let mut args = self
                .build_activate_args()
                .map_err(|e| RestoreError::Activate(ty, e))?;
            for (q, saved) in args.queues.iter_mut().zip(&s.queues) {
                use virtio_queue::QueueT;
                q.set_next_avail(saved.next_avail);
                q.set_next_used(saved.next_used);
            }
            self.device.activate(args).map_err(|e| {
                RestoreError::Activate(ty, crate::devices::virtio::worker::error_chain(&e))
            })?;
            self.active = true;
        }
        self.status = status;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::*;
    use crate::devices::virtio::console::Console;
    use crate::devices::virtio::mmio::STATUS_DRIVER_OK;
    use crate::devices::virtio::test_utils::*;
    use crate::devices::virtio::TYPE_CONSOLE;

    #[test]
    fn a_live_transport_restores_into_a_fresh_one_and_runs() {
        let mem = guest_memory();
        let (t, mut queues, _irq) =
            activated(&mem, Box::new(Console::new(None, None)), &[256, 256]);
        // Some traffic first, so the positions are not all zero: two transmitted buffers.
        let mut t = t;
        for _ in 0..2 {
            queues[1].add_chain(&mem, &[(0x8000, 4, false)]);
            notify(&mut t, 1);
            queues[1].wait_used(&mem);
        }
        let s = t.snapshot_state();
        assert_eq!(s.device_type, TYPE_CONSOLE);
        assert_eq!(s.status_reg & STATUS_DRIVER_OK, STATUS_DRIVER_OK);
        assert_eq!((s.queues[1].next_avail, s.queues[1].next_used), (2, 2));
        drop(t);

        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut fresh =
            MmioTransport::new(mem.clone(), Box::new(Console::new(None, None)), irq).unwrap();
        fresh.restore_state(&s).unwrap();
        assert_eq!(fresh.status(), DeviceStatus::DriverOk);
        assert_eq!(fresh.snapshot_state(), s);
        // The restored device carries on from the saved position.
        queues[1].add_chain(&mem, &[(0x8000, 4, false)]);
        notify(&mut fresh, 1);
        queues[1].wait_used(&mem);
        assert_eq!(fresh.snapshot_state().queues[1].next_used, 3);
    }

    #[test]
    fn a_quiesced_device_takes_no_more_requests() {
        let mem = guest_memory();
        let (mut t, mut queues, _irq) =
            activated(&mem, Box::new(Console::new(None, None)), &[256, 256]);
        queues[1].add_chain(&mem, &[(0x8000, 4, false)]);
        notify(&mut t, 1);
        queues[1].wait_used(&mem);
        t.quiesce();
        let before = t.snapshot_state();
        // A request made after the quiesce stays in the avail ring: nothing serves it.
        queues[1].add_chain(&mem, &[(0x8000, 4, false)]);
        notify(&mut t, 1);
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(t.snapshot_state(), before);
        assert_eq!(before.queues[1].next_used, 1);
    }

    #[test]
    fn a_snapshot_of_another_device_is_refused() {
        let mem = guest_memory();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut t =
            MmioTransport::new(mem.clone(), Box::new(Console::new(None, None)), irq).unwrap();
        let mut s = t.snapshot_state();
        s.device_type = 26;
        assert!(matches!(
            t.restore_state(&s),
            Err(RestoreError::DeviceType { .. })
        ));
        let mut s = t.snapshot_state();
        s.queues.pop();
        assert_eq!(
            t.restore_state(&s),
            Err(RestoreError::QueueCount(TYPE_CONSOLE))
        );
        let mut s = t.snapshot_state();
        s.queues[0].size = 4096;
        assert_eq!(
            t.restore_state(&s),
            Err(RestoreError::BadValue(TYPE_CONSOLE))
        );
        // A driver that took a feature this device does not offer (a network card whose tap
        // takes no offloads, say) is refused, not silently given less.
        let mut s = t.snapshot_state();
        let extra = 1u64 << 40;
        assert_eq!(t.device_features() & extra, 0);
        s.driver_features |= extra;
        assert_eq!(
            t.restore_state(&s),
            Err(RestoreError::Features(TYPE_CONSOLE, extra))
        );
    }
}
