//! virtio-rng (device ID 4), the entropy device, as Firecracker offers it: the guest's kernel
//! reads random bytes from the host's `getrandom(2)`.
//!
//! Linux's driver registers it with its hwrng core, which credits what it reads to the kernel's
//! input pool: a guest without RDRAND has a ready CRNG as soon as the device is probed, during
//! the boot and before `/init` (guest-init's own `AT_RANDOM`, stack canaries and address-space
//! randomization are drawn from it), and the hwrng thread keeps reseeding it from the host at the
//! CRNG's reseed interval while the pod runs.
//!
//! One queue (requestq); no features, no configuration space. Each chain the driver makes
//! available is filled with random bytes: its device-writable buffers, in order, up to
//! [`MAX_CHAIN_BYTES`] in all; the used length is what was written. A device-readable buffer is
//! left untouched (logged, rate-limited), a buffer outside guest memory is a corrupt queue
//! (`DEVICE_NEEDS_RESET`, as for every device). A guest that asks without pause keeps the
//! worker thread busy (there is no rate limit, as Firecracker's is optional), within the CPU
//! quota of the pod's host cgroup, which the vCPUs and every device thread share
//! (`pod::sizing::host_limits`), and takes nothing else from the host: `getrandom` draws from
//! the host's CRNG, which does not run dry.
//!
//! A restored snapshot's driver may have made a request available that the maker's device never
//! served (the driver keeps one request outstanding); the worker serves whatever is pending when
//! it starts, so the restored guest's hwrng thread does not wait for a kick that already
//! happened.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::{Address, Bytes, GuestAddress};
use vmm_sys_util::epoll::Epoll;

use super::queue::QueueError;
use super::worker::{self, DeviceError, Drain, Worker, WorkerHandle};
use super::{ActivateArgs, ActivateError, Interrupt, LogLimiter, VirtioDevice, TYPE_RNG};
use crate::memory::GuestMem;

/// Size of the request queue (entries); Linux keeps one request outstanding.
pub const QUEUE_SIZE: u16 = 64;
/// Most bytes written into one chain (bytes); Linux asks for 64 at a time.
pub const MAX_CHAIN_BYTES: u32 = 64 * 1024;
/// Bytes drawn from the host per `getrandom` call (bytes).
const CHUNK: usize = 4096;

/// Counters of the device, shared with the worker (for logs and tests).
#[derive(Debug, Default)]
pub struct RngStats {
    /// Random bytes written into guest buffers.
    pub bytes: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
}

/// The entropy device.
#[derive(Default)]
pub struct Rng {
    stats: Arc<RngStats>,
    worker: Option<WorkerHandle>,
}

impl Rng {
    /// An entropy device drawing from the host's `getrandom(2)`.
    pub fn new() -> Rng {
        Rng::default()
    }

    /// The device's counters (live while it runs).
    pub fn stats(&self) -> Arc<RngStats> {
        self.stats.clone()
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        TYPE_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&[], offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    fn activate(&mut self, args: ActivateArgs) -> Result<(), ActivateError> {
        let queues = self.queue_max_sizes().len();
        worker::activate(
            &mut self.worker,
            args,
            queues,
            "virtio-rng",
            |mem, queues, interrupt| RngWorker {
                mem,
                queues,
                interrupt,
                stats: self.stats.clone(),
                log_limit: LogLimiter::default(),
                buf: vec![0u8; CHUNK],
            },
        )
    }

    fn reset(&mut self) {
        // Dropping the handle stops the worker's loop and waits for it.
        self.worker = None;
    }
}

struct RngWorker {
    mem: GuestMem,
    queues: Vec<Queue>,
    interrupt: Interrupt,
    stats: Arc<RngStats>,
    log_limit: LogLimiter,
    /// Staging buffer for the host's random bytes ([`CHUNK`] bytes).
    buf: Vec<u8>,
}

impl RngWorker {
    /// Answers up to one queue's worth of requests.
    fn drain(&mut self) -> Result<Drain, QueueError> {
        let RngWorker {
            mem,
            queues,
            interrupt,
            stats,
            log_limit,
            buf,
        } = self;
        let Some(q) = queues.first_mut() else {
            return Ok(Drain::Done);
        };
        worker::serve_queue(q, mem, interrupt, |chain| {
            let head = chain.head_index();
            let mut written: u32 = 0;
            for desc in chain {
                if !desc.is_write_only() {
                    guest_warn!(
                        log_limit,
                        "virtio-rng: device-readable buffer at {:#x} left untouched",
                        desc.addr().raw_value()
                    );
                    continue;
                }
                let want = desc.len().min(MAX_CHAIN_BYTES - written);
                match fill(buf, mem, desc.addr(), want) {
                    Ok(()) => written += want,
                    Err(FillError::Host(e)) => {
                        guest_warn!(log_limit, "virtio-rng: host getrandom failed: {e}");
                        break;
                    }
                    Err(FillError::Guest) => return Err(QueueError::BufferOutOfRange(head)),
                }
                if written == MAX_CHAIN_BYTES {
                    break;
                }
            }
            stats.bytes.fetch_add(u64::from(written), Ordering::Relaxed);
            stats.requests.fetch_add(1, Ordering::Relaxed);
            Ok(written)
        })
    }
}

/// Writes `len` random bytes at `addr` (inside guest memory: the chain was validated), staged
/// through `buf`.
fn fill(buf: &mut [u8], mem: &GuestMem, addr: GuestAddress, len: u32) -> Result<(), FillError> {
    let mut done = 0usize;
    let len = len as usize;
    while done < len {
        let n = (len - done).min(buf.len());
        let chunk = buf.get_mut(..n).unwrap_or_default();
        crate::random::fill(chunk).map_err(FillError::Host)?;
        let at = addr.checked_add(done as u64).ok_or(FillError::Guest)?;
        mem.write_slice(chunk, at).map_err(|_| FillError::Guest)?;
        done += n;
    }
    Ok(())
}

/// Why a buffer was not filled.
enum FillError {
    /// The host's `getrandom` failed: the request is answered with what was written so far.
    Host(std::io::Error),
    /// The buffer is not guest memory (a validated chain never is).
    Guest,
}

impl Worker for RngWorker {
    /// Serves what was made available before the device started (a restored snapshot's request).
    fn init(&mut self, _epoll: &Epoll) -> Result<(), DeviceError> {
        self.drain()
            .map(|_| ())
            .map_err(|source| DeviceError::Queue { queue: 0, source })
    }

    fn queue_event(&mut self, _epoll: &Epoll, queue: usize) -> Result<Drain, DeviceError> {
        self.drain()
            .map_err(|source| DeviceError::Queue { queue, source })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use vm_memory::Bytes;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    use super::*;
    use crate::devices::virtio::mmio::{DeviceStatus, MmioTransport};
    use crate::devices::virtio::test_utils::*;

    fn device() -> (GuestMem, MmioTransport, Vec<GuestQueue>, Arc<RngStats>) {
        let mem = guest_memory();
        let dev = Rng::new();
        let stats = dev.stats();
        let (t, q, _irq) = activated(&mem, Box::new(dev), &[QUEUE_SIZE]);
        (mem, t, q, stats)
    }

    fn read(mem: &GuestMem, addr: u64, len: usize) -> Vec<u8> {
        let mut got = vec![0u8; len];
        mem.read_slice(&mut got, GuestAddress(addr)).unwrap();
        got
    }

    /// Whether `b` looks random: not all one byte value (a 64-byte random buffer is one value
    /// with probability 2^-504).
    fn varied(b: &[u8]) -> bool {
        b.iter().any(|x| Some(x) != b.first())
    }

    #[test]
    fn offers_one_queue_and_no_features() {
        let r = Rng::new();
        assert_eq!(r.device_type(), TYPE_RNG);
        assert_eq!(r.queue_max_sizes(), &[QUEUE_SIZE]);
        assert_eq!(r.features(), 0);
        let (_mem, mut t, _q, _) = device();
        assert_eq!(rd(&mut t, 0x08), TYPE_RNG);
        assert_eq!(rd(&mut t, 0x100), 0, "no configuration space");
    }

    #[test]
    fn requests_are_filled_with_fresh_random_bytes() {
        let (mem, mut t, mut q, stats) = device();
        let mut seen = Vec::new();
        for i in 0..2u64 {
            let addr = DATA_BASE + i * 0x1000;
            let head = q[0].add_chain(&mem, &[(addr, 64, true)]);
            notify(&mut t, 0);
            assert_eq!(q[0].wait_used(&mem), (u32::from(head), 64));
            let got = read(&mem, addr, 64);
            assert!(varied(&got), "{got:?}");
            seen.push(got);
        }
        assert_ne!(seen[0], seen[1], "two requests, two draws");
        // Two writable buffers in one chain: both filled, the used length is their sum.
        let head = q[0].add_chain(
            &mem,
            &[
                (DATA_BASE + 0x4000, 16, true),
                (DATA_BASE + 0x5000, 5000, true),
            ],
        );
        notify(&mut t, 0);
        assert_eq!(q[0].wait_used(&mem), (u32::from(head), 5016));
        assert!(varied(&read(&mem, DATA_BASE + 0x5000, 5000)));
        assert_eq!(stats.bytes.load(Ordering::Relaxed), 64 + 64 + 5016);
        assert_eq!(stats.requests.load(Ordering::Relaxed), 3);
        assert!(!t.needs_reset());
    }

    #[test]
    fn a_device_readable_buffer_is_left_untouched() {
        let (mem, mut t, mut q, _) = device();
        mem.write_slice(&[0x5au8; 256], GuestAddress(DATA_BASE))
            .unwrap();
        let head = q[0].add_chain(
            &mem,
            &[(DATA_BASE, 256, false), (DATA_BASE + 0x1000, 32, true)],
        );
        notify(&mut t, 0);
        assert_eq!(q[0].wait_used(&mem), (u32::from(head), 32));
        assert_eq!(read(&mem, DATA_BASE, 256), vec![0x5au8; 256]);
        assert!(!t.needs_reset());
    }

    #[test]
    fn a_huge_request_gets_at_most_the_cap() {
        let (mem, mut t, mut q, _) = device();
        let len = 4 << 20;
        mem.write_slice(&vec![0u8; len], GuestAddress(DATA_BASE))
            .unwrap();
        let head = q[0].add_chain(
            &mem,
            &[
                (DATA_BASE, len as u32, true),
                (DATA_BASE + len as u64, 4096, true),
            ],
        );
        notify(&mut t, 0);
        assert_eq!(q[0].wait_used(&mem), (u32::from(head), MAX_CHAIN_BYTES));
        let after = read(&mem, DATA_BASE + u64::from(MAX_CHAIN_BYTES), 4096);
        assert_eq!(after, vec![0u8; 4096], "nothing written past the cap");
    }

    #[test]
    fn a_buffer_outside_guest_memory_needs_a_reset() {
        let (mem, mut t, mut q, stats) = device();
        q[0].add_chain(&mem, &[(MEM_SIZE as u64 - 0x100, 0x200, true)]);
        notify(&mut t, 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !t.needs_reset() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(t.needs_reset());
        assert_eq!(stats.bytes.load(Ordering::Relaxed), 0);
    }

    /// A snapshot taken while the driver's request was available but not yet served: the
    /// restored device answers it without a new kick.
    #[test]
    fn a_restored_device_serves_the_request_pending_at_the_snapshot() {
        let (mem, mut t, mut q, _) = device();
        let head = q[0].add_chain(&mem, &[(DATA_BASE, 64, true)]);
        notify(&mut t, 0);
        assert_eq!(q[0].wait_used(&mem), (u32::from(head), 64));
        // Made available, never kicked: the state the maker saved.
        let pending = q[0].add_chain(&mem, &[(DATA_BASE + 0x1000, 64, true)]);
        let s = t.snapshot_state();
        drop(t);
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut fresh = MmioTransport::new(mem.clone(), Box::new(Rng::new()), irq).unwrap();
        fresh.restore_state(&s).unwrap();
        assert_eq!(fresh.status(), DeviceStatus::DriverOk);
        assert_eq!(q[0].wait_used(&mem), (u32::from(pending), 64));
        assert!(varied(&read(&mem, DATA_BASE + 0x1000, 64)));
    }
}
