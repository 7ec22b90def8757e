//! Guest physical memory: the x86 layout (low RAM, the 32-bit MMIO gap, RAM above 4 GiB) and
//! the fixed addresses the boot code uses.
//!
//! ```text
//! 0x0000_0000  real-mode IVT/BDA, boot GDT (0x500), IDT (0x520)
//! 0x0000_6000  PVH hvm_start_info, followed by its memory map
//! 0x0000_7000  bzImage zero page (boot_params)
//! 0x0000_9000  identity page tables for the 64-bit bzImage entry (PML4, PDPT, PD)
//! 0x0002_0000  kernel command line (up to CMDLINE_MAX_SIZE)
//! 0x0009_fc00  EBDA (reserved)
//! 0x000f_0000  MP table (reserved BIOS area, where Linux scans for it)
//! 0x0010_0000  kernel (HIMEM_START); initramfs at the top of low RAM
//! 0xd000_0000  MMIO gap: virtio-mmio slots from here, IOAPIC, LAPIC; RAM resumes at 4 GiB
//! ```

use thiserror::Error;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

/// Guest memory as the VMM, the boot code and every device see it.
pub type GuestMem = GuestMemoryMmap<()>;

/// Bytes per KiB.
pub const KIB: u64 = 1 << 10;
/// Bytes per MiB.
pub const MIB: u64 = 1 << 20;
/// Bytes per GiB.
pub const GIB: u64 = 1 << 30;

/// Guest physical address of the boot GDT (bytes).
pub const BOOT_GDT_START: u64 = 0x500;
/// Guest physical address of the (empty) boot IDT (bytes).
pub const BOOT_IDT_START: u64 = 0x520;
/// Guest physical address of the PVH `hvm_start_info` structure.
pub const PVH_INFO_START: u64 = 0x6000;
/// Guest physical address of the bzImage zero page (`boot_params`, 4 KiB).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for the 64-bit bzImage entry.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Guest physical address of the PML4 page for the 64-bit bzImage entry.
pub const PML4_START: u64 = 0x9000;
/// Guest physical address of the PDPT page for the 64-bit bzImage entry.
pub const PDPTE_START: u64 = 0xa000;
/// Guest physical address of the page directory for the 64-bit bzImage entry.
pub const PDE_START: u64 = 0xb000;
/// Guest physical address of the kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Maximum kernel command line size, NUL included (bytes; Linux's x86 COMMAND_LINE_SIZE).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the EBDA (reserved); RAM below it is usable (bytes).
pub const EBDA_START: u64 = 0x9fc00;
/// Guest physical address of the MP table (in the reserved BIOS area, scanned by Linux).
pub const MPTABLE_START: u64 = 0xf_0000;
/// Guest physical address where the kernel is loaded and high memory starts (1 MiB).
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO gap (bytes): 4 GiB - 768 MiB.
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// End (exclusive) of the 32-bit MMIO gap: 4 GiB.
pub const MMIO_GAP_END: u64 = 4 * GIB;
/// Base of the IOAPIC's MMIO window (inside the gap; handled by KVM's in-kernel irqchip).
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Base of the local APIC's MMIO window (inside the gap; handled by KVM).
pub const LAPIC_START: u64 = 0xfee0_0000;
/// Where KVM's TSS (3 pages) lives on Intel hosts: just below the BIOS area at the top of 4 GiB.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// First virtio-mmio slot; slots are [`VIRTIO_MMIO_SLOT_SIZE`] apart, up to [`VIRTIO_MMIO_END`].
pub const VIRTIO_MMIO_START: u64 = MMIO_GAP_START;
/// Size of one virtio-mmio slot (bytes, 4 KiB).
pub const VIRTIO_MMIO_SLOT_SIZE: u64 = 4 * KIB;
/// End (exclusive) of the virtio-mmio slot area: 1 MiB worth of slots (256 devices).
pub const VIRTIO_MMIO_END: u64 = VIRTIO_MMIO_START + MIB;
/// Smallest guest RAM we accept (bytes): the kernel, its initramfs and page tables need room.
pub const MIN_MEM_SIZE: u64 = 16 * MIB;
/// Largest guest RAM we accept (bytes).
pub const MAX_MEM_SIZE: u64 = 256 * GIB;
/// Alignment of guest RAM in the VMM's address space (bytes, 2 MiB: an x86 huge page).
const RAM_ALIGN: usize = 2 << 20;
/// Protection of the guest RAM mappings.
const RAM_PROT: i32 = libc::PROT_READ | libc::PROT_WRITE;
/// Flags of the guest RAM mappings: private, anonymous, no swap reservation.
const RAM_FLAGS: i32 = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;

/// Errors creating guest memory.
#[derive(Debug, Error)]
pub enum MemoryError {
    /// The requested size is outside [`MIN_MEM_SIZE`, `MAX_MEM_SIZE`].
    #[error("guest memory size {0} bytes is out of range (16 MiB to 256 GiB)")]
    BadSize(u64),
    /// mmap of the guest RAM failed.
    #[error("cannot map {len} bytes of guest memory")]
    Mmap {
        /// Bytes asked for.
        len: usize,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// vm-memory refused the mapping or the layout.
    #[error("cannot set up guest memory: {0}")]
    Layout(String),
}

/// The RAM ranges `(start, length)` for `size` bytes of guest memory: one range below the MMIO
/// gap, and a second one from 4 GiB when `size` does not fit below the gap.
pub fn ram_ranges(size: u64) -> Vec<(u64, u64)> {
    if size <= MMIO_GAP_START {
        vec![(0, size)]
    } else {
        vec![(0, MMIO_GAP_START), (MMIO_GAP_END, size - MMIO_GAP_START)]
    }
}

/// Maps `size` bytes of anonymous, lazily populated guest RAM laid out by [`ram_ranges`].
///
/// Each range starts on a `RAM_ALIGN` boundary of the VMM's address space and is marked
/// `MADV_HUGEPAGE`: where the host has transparent huge pages, a guest's first touch of a
/// 2 MiB stretch then costs one fault (and one KVM mapping) instead of 512, which is most of a
/// small guest's boot under nested virtualization (docs/vmm.md, "Huge pages"). The mappings
/// last as long as the process (one VM per VMM process; vm-memory does not own a mapping it
/// did not place itself).
pub fn create_guest_memory(size: u64) -> Result<GuestMem, MemoryError> {
    if !(MIN_MEM_SIZE..=MAX_MEM_SIZE).contains(&size) {
        return Err(MemoryError::BadSize(size));
    }
    let mut regions = Vec::new();
    for (start, len) in ram_ranges(size) {
        let len = len as usize;
        let addr = map_aligned(len).map_err(|source| MemoryError::Mmap { len, source })?;
        // SAFETY: `addr` is a fresh private anonymous mapping of `len` bytes, readable and
        // writable, that nothing else refers to and that is never unmapped.
        let region = unsafe { MmapRegion::build_raw(addr, len, RAM_PROT, RAM_FLAGS) }
            .map_err(|e| MemoryError::Layout(e.to_string()))?;
        let region = GuestRegionMmap::new(region, GuestAddress(start))
            .ok_or_else(|| MemoryError::Layout("region wraps the address space".into()))?;
        regions.push(region);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Layout(e.to_string()))
}

/// Maps `len` bytes of private anonymous memory at a `RAM_ALIGN`-aligned address, marked
/// `MADV_HUGEPAGE` (ignored where the host has no transparent huge pages).
fn map_aligned(len: usize) -> std::io::Result<*mut u8> {
    let span = len
        .checked_add(RAM_ALIGN)
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOMEM))?;
    // SAFETY: a new anonymous mapping at an address the kernel picks; no existing memory is
    // affected.
    let base = unsafe { libc::mmap(std::ptr::null_mut(), span, RAM_PROT, RAM_FLAGS, -1, 0) };
    if base == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let base = base as usize;
    let start = base.next_multiple_of(RAM_ALIGN);
    let (head, tail) = (start - base, base + span - (start + len));
    // SAFETY: the head and tail are parts of the mapping made above that no one uses; what is
    // left is [start, start + len). The madvise only sets a hint on that range.
    unsafe {
        if head > 0 {
            libc::munmap(base as *mut libc::c_void, head);
        }
        if tail > 0 {
            libc::munmap((start + len) as *mut libc::c_void, tail);
        }
        libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
    Ok(start as *mut u8)
}

/// End (exclusive) of the RAM below the MMIO gap for `size` bytes of guest memory.
pub fn low_ram_end(size: u64) -> u64 {
    size.min(MMIO_GAP_START)
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestMemory;

    use super::*;

    #[test]
    fn small_memory_is_one_range() {
        assert_eq!(ram_ranges(512 * MIB), vec![(0, 512 * MIB)]);
        assert_eq!(ram_ranges(MMIO_GAP_START), vec![(0, MMIO_GAP_START)]);
    }

    #[test]
    fn large_memory_skips_the_gap() {
        let r = ram_ranges(4 * GIB);
        assert_eq!(
            r,
            vec![(0, MMIO_GAP_START), (4 * GIB, 4 * GIB - MMIO_GAP_START)]
        );
        let total: u64 = r.iter().map(|(_, l)| l).sum();
        assert_eq!(total, 4 * GIB);
        // No RAM overlaps the gap.
        for (s, l) in r {
            assert!(s + l <= MMIO_GAP_START || s >= MMIO_GAP_END);
        }
    }

    // The fixed boot addresses must not overlap (checked at compile time).
    const _: () = {
        assert!(BOOT_IDT_START > BOOT_GDT_START);
        assert!(PVH_INFO_START < ZERO_PAGE_START && ZERO_PAGE_START + 4096 <= PML4_START);
        assert!(PDE_START + 4096 <= CMDLINE_START);
        assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
        assert!(VIRTIO_MMIO_END <= IOAPIC_START);
    };

    #[test]
    fn create_rejects_bad_sizes_and_maps_good_ones() {
        assert!(matches!(
            create_guest_memory(MIB),
            Err(MemoryError::BadSize(_))
        ));
        let m = create_guest_memory(64 * MIB).expect("64 MiB maps");
        assert_eq!(m.last_addr(), GuestAddress(64 * MIB - 1));
        // Above-gap memory is mapped lazily: 5 GiB costs nothing until touched.
        let m = create_guest_memory(5 * GIB).expect("5 GiB maps");
        assert_eq!(m.num_regions(), 2);
    }

    #[test]
    fn ram_is_huge_page_aligned_and_marked() {
        use vm_memory::GuestMemoryRegion;
        let m = create_guest_memory(5 * GIB).expect("5 GiB maps");
        for r in m.iter() {
            let host = r
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .expect("host");
            assert_eq!(
                host as usize % RAM_ALIGN,
                0,
                "region at {:?}",
                r.start_addr()
            );
        }
        // The kernel records the hint as the `hg` flag of the mapping.
        let host = m.get_host_address(GuestAddress(0)).expect("host") as usize;
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let starts_at_host = |l: &&str| {
            l.split('-')
                .next()
                .and_then(|a| usize::from_str_radix(a, 16).ok())
                == Some(host)
        };
        let mut lines = smaps.lines().skip_while(|l| !starts_at_host(l));
        assert!(lines.next().is_some(), "mapping at {host:#x} not in smaps");
        let flags = lines
            .find(|l| l.starts_with("VmFlags:"))
            .expect("VmFlags line");
        if std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            assert!(flags.contains(" hg"), "{flags}");
        }
    }
}
