//! The guest's physical memory map (e820), shared by the PVH memmap and the bzImage zero page.

use crate::memory::{ram_ranges, EBDA_START, HIMEM_START};

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;
/// Start of the reserved legacy BIOS ROM area (bytes).
const BIOS_ROM_START: u64 = 0xf_0000;
/// End (exclusive) of base memory / start of the VGA hole (bytes).
const VGA_HOLE_START: u64 = 0xa_0000;

/// One e820 entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address (bytes).
    pub addr: u64,
    /// Length (bytes).
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// The e820 map for `mem_size` bytes of guest RAM laid out by [`ram_ranges`]: base memory below
/// the EBDA, the EBDA (MP table) and BIOS area reserved, RAM from 1 MiB up to the MMIO gap, and
/// RAM above 4 GiB when there is any. Sorted, non-overlapping.
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: EBDA_START,
            size: VGA_HOLE_START - EBDA_START,
            kind: E820_RESERVED,
        },
        E820Entry {
            addr: BIOS_ROM_START,
            size: HIMEM_START - BIOS_ROM_START,
            kind: E820_RESERVED,
        },
    ];
    for (start, len) in ram_ranges(mem_size) {
        let (start, end) = (start.max(HIMEM_START), start + len);
        if end > start {
            map.push(E820Entry {
                addr: start,
                size: end - start,
                kind: E820_RAM,
            });
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{GIB, MIB, MMIO_GAP_END, MMIO_GAP_START};

    fn ram_total(map: &[E820Entry]) -> u64 {
        map.iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum()
    }

    #[test]
    fn small_guest() {
        let map = e820_map(128 * MIB);
        assert_eq!(map.len(), 4);
        assert_eq!(
            map[3],
            E820Entry {
                addr: MIB,
                size: 127 * MIB,
                kind: E820_RAM
            }
        );
        assert_eq!(ram_total(&map), 128 * MIB - (MIB - EBDA_START));
    }

    #[test]
    fn large_guest_has_ram_above_4g_and_none_in_the_gap() {
        let map = e820_map(6 * GIB);
        let last = map.last().copied().expect("non-empty");
        assert_eq!(last.addr, MMIO_GAP_END);
        assert_eq!(last.size, 6 * GIB - MMIO_GAP_START);
        for e in &map {
            let end = e.addr + e.size;
            assert!(
                end <= MMIO_GAP_START || e.addr >= MMIO_GAP_END,
                "{e:?} overlaps the gap"
            );
        }
    }

    #[test]
    fn sorted_and_disjoint() {
        for size in [16 * MIB, GIB, 3 * GIB + 256 * MIB, 8 * GIB] {
            let map = e820_map(size);
            for w in map.windows(2) {
                assert!(w[0].addr + w[0].size <= w[1].addr, "{:?}", w);
            }
        }
    }
}
