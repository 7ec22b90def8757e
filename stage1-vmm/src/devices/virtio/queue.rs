//! Queue helpers shared by the transport and the device workers: validation of the queue layout
//! the driver configured, and validated popping of descriptor chains.
//!
//! Everything here reads guest-controlled data, so nothing indexes, unwraps or trusts a length.
//! A chain is accepted only if it ends properly (the last descriptor has no `NEXT` flag within
//! the queue-size budget, which also catches loops) and every buffer lies inside one guest memory
//! region (so nothing touches the MMIO gap). No device offers `VIRTIO_RING_F_INDIRECT_DESC`, so
//! a chain that uses an indirect table is malformed: each chain has at most queue-size buffers.

use std::num::Wrapping;
use std::sync::atomic::Ordering;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryRegion};

use crate::memory::GuestMem;

/// Size of one descriptor-table entry (bytes).
const DESC_SIZE: u64 = 16;
/// Avail ring: flags + idx + used_event (bytes), plus 2 bytes per entry.
const AVAIL_FIXED: u64 = 6;
/// Bytes per avail ring entry.
const AVAIL_ELEM: u64 = 2;
/// Used ring: flags + idx + avail_event (bytes), plus 8 bytes per entry.
const USED_FIXED: u64 = 6;
/// Bytes per used ring entry.
const USED_ELEM: u64 = 8;
/// Required alignment of the descriptor table (bytes).
const DESC_ALIGN: u64 = 16;
/// Required alignment of the avail ring (bytes).
const AVAIL_ALIGN: u64 = 2;
/// Required alignment of the used ring (bytes).
const USED_ALIGN: u64 = 4;

/// A queue the driver configured wrongly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueueConfigError {
    /// The size is zero, not a power of two, or above the maximum.
    #[error("invalid queue size {size} (max {max})")]
    Size {
        /// Size the driver wrote.
        size: u16,
        /// The device's maximum.
        max: u16,
    },
    /// A ring is misaligned.
    #[error("misaligned {0}")]
    Align(&'static str),
    /// A ring is not inside one guest memory region.
    #[error("{0} outside guest memory")]
    Range(&'static str),
}

/// A queue the driver corrupted while the device was running (device-fatal).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Reading the avail ring failed or its index is further ahead than the queue size.
    #[error("invalid avail ring")]
    Avail(#[source] virtio_queue::Error),
    /// A chain does not terminate within the queue size, has a bad index or indirect table.
    #[error("malformed descriptor chain at head {0}")]
    MalformedChain(u16),
    /// A chain uses an indirect descriptor table, which no device offers
    /// (`VIRTIO_RING_F_INDIRECT_DESC` is never negotiated).
    #[error("descriptor chain at head {0} uses an indirect table, which was not negotiated")]
    IndirectNotNegotiated(u16),
    /// A chain's buffer is not inside one guest memory region.
    #[error("descriptor chain at head {0} points outside guest memory")]
    BufferOutOfRange(u16),
    /// Writing the used ring failed.
    #[error("cannot write the used ring")]
    AddUsed(#[source] virtio_queue::Error),
}

/// Whether `[addr, addr + len)` lies entirely inside one guest memory region.
pub(crate) fn range_in_memory(mem: &GuestMem, addr: GuestAddress, len: u64) -> bool {
    let Some(region) = mem.find_region(addr) else {
        return false;
    };
    if len == 0 {
        return true;
    }
    match addr.checked_add(len - 1) {
        Some(last) => last <= region.last_addr(),
        None => false,
    }
}

/// Checks a queue layout: size, alignment, and every ring inside one guest memory region.
pub(crate) fn validate_layout(
    mem: &GuestMem,
    size: u16,
    max: u16,
    desc: u64,
    avail: u64,
    used: u64,
) -> Result<(), QueueConfigError> {
    if size == 0 || size > max || !size.is_power_of_two() {
        return Err(QueueConfigError::Size { size, max });
    }
    let n = u64::from(size);
    let rings = [
        ("descriptor table", desc, DESC_ALIGN, DESC_SIZE * n),
        (
            "avail ring",
            avail,
            AVAIL_ALIGN,
            AVAIL_FIXED + AVAIL_ELEM * n,
        ),
        ("used ring", used, USED_ALIGN, USED_FIXED + USED_ELEM * n),
    ];
    for (name, addr, align, len) in rings {
        if !addr.is_multiple_of(align) {
            return Err(QueueConfigError::Align(name));
        }
        if !range_in_memory(mem, GuestAddress(addr), len) {
            return Err(QueueConfigError::Range(name));
        }
    }
    Ok(())
}

/// Whether the chain starting at `head` of `queue`'s descriptor table has a descriptor with
/// `VIRTQ_DESC_F_INDIRECT`. virtio-queue follows such tables (up to 65 535 entries) whether or
/// not the feature was negotiated, so this walks the direct table itself. Stops quietly on a bad
/// index or unreadable entry: [`validate_chain`] reports those.
fn uses_indirect_table(mem: &GuestMem, queue: &Queue, head: u16) -> bool {
    let table = GuestAddress(queue.desc_table());
    let size = queue.size();
    let mut index = head;
    for _ in 0..size {
        if index >= size {
            return false;
        }
        let Some(addr) = table.checked_add(u64::from(index) * DESC_SIZE) else {
            return false;
        };
        let Ok(desc) = mem.read_obj::<Descriptor>(addr) else {
            return false;
        };
        if desc.refers_to_indirect_table() {
            return true;
        }
        if !desc.has_next() {
            return false;
        }
        index = desc.next();
    }
    false
}

/// Checks that a chain terminates within its budget, uses no indirect table and that all its
/// buffers are in guest memory.
fn validate_chain(
    mem: &GuestMem,
    queue: &Queue,
    chain: &DescriptorChain<&GuestMem>,
) -> Result<(), QueueError> {
    let head = chain.head_index();
    if uses_indirect_table(mem, queue, head) {
        return Err(QueueError::IndirectNotNegotiated(head));
    }
    let mut count = 0usize;
    let mut last_has_next = true;
    for desc in chain.clone() {
        count += 1;
        last_has_next = desc.has_next();
        if !range_in_memory(mem, desc.addr(), u64::from(desc.len())) {
            return Err(QueueError::BufferOutOfRange(head));
        }
    }
    // The iterator stops early (without error) on a loop, a bad next index, an unreadable
    // descriptor or a bad indirect table: the last descriptor it yielded then still says NEXT.
    if count == 0 || last_has_next {
        return Err(QueueError::MalformedChain(head));
    }
    Ok(())
}

/// Pops the next available descriptor chain, validated. `Ok(None)` when the queue is empty.
pub(crate) fn pop_chain<'m>(
    queue: &mut Queue,
    mem: &'m GuestMem,
) -> Result<Option<DescriptorChain<&'m GuestMem>>, QueueError> {
    if !has_pending(queue, mem)? {
        return Ok(None);
    }
    let next_avail = queue.next_avail();
    let chain = queue.iter(mem).map_err(QueueError::Avail)?.next();
    // The driver published an entry, so `next` yields nothing only if it cannot be read.
    let chain = chain.ok_or(QueueError::MalformedChain(next_avail))?;
    validate_chain(mem, queue, &chain)?;
    Ok(Some(chain))
}

/// Whether the driver made more chains available than the device consumed.
pub(crate) fn has_pending(queue: &Queue, mem: &GuestMem) -> Result<bool, QueueError> {
    let idx = queue
        .avail_idx(mem, Ordering::Acquire)
        .map_err(QueueError::Avail)?;
    Ok(idx != Wrapping(queue.next_avail()))
}

/// Returns a chain to the driver with `len` bytes written.
pub(crate) fn add_used(
    queue: &mut Queue,
    mem: &GuestMem,
    head: u16,
    len: u32,
) -> Result<(), QueueError> {
    queue.add_used(mem, head, len).map_err(QueueError::AddUsed)
}
