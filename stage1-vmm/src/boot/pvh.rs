//! The PVH boot protocol (xenbits.xen.org/docs/unstable/misc/pvh.html): the kernel's
//! `XEN_ELFNOTE_PHYS32_ENTRY` is entered in 32-bit protected mode, paging off, with `ebx`
//! pointing at an `hvm_start_info` that carries the memory map, the command line and the
//! initramfs as module 0.

use vm_memory::{ByteValued, Bytes, GuestAddress};

use super::e820::E820Entry;
use super::BootError;
use crate::memory::GuestMem;
use crate::memory::PVH_INFO_START;

/// `hvm_start_info.magic` ("xEn3" with the high bit set).
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
/// Version of `hvm_start_info` we write (1: has the memmap fields).
const START_INFO_VERSION: u32 = 1;
/// Offset of the module list from [`PVH_INFO_START`] (bytes).
const MODLIST_OFFSET: u64 = 0x40;
/// Offset of the memory map from [`PVH_INFO_START`] (bytes).
const MEMMAP_OFFSET: u64 = 0x80;
/// Most memory map entries that fit between the memmap and the zero page.
const MAX_MEMMAP_ENTRIES: usize = (0x1000 - MEMMAP_OFFSET as usize) / 24;

/// `struct hvm_start_info` (xen/include/public/arch-x86/hvm/start_info.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}
// SAFETY: plain old data: integer fields only, repr(C) with no padding (56 bytes).
unsafe impl ByteValued for StartInfo {}

/// `struct hvm_modlist_entry`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct ModlistEntry {
    paddr: u64,
    size: u64,
    cmdline_paddr: u64,
    reserved: u64,
}
// SAFETY: plain old data: integer fields only, repr(C) with no padding (32 bytes).
unsafe impl ByteValued for ModlistEntry {}

/// `struct hvm_memmap_table_entry`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    type_: u32,
    reserved: u32,
}
// SAFETY: plain old data: integer fields only, repr(C) with no padding (24 bytes).
unsafe impl ByteValued for MemmapEntry {}

/// Writes `hvm_start_info`, its memory map and module list; returns the address for `ebx`.
pub fn write_start_info(
    mem: &GuestMem,
    e820: &[E820Entry],
    cmdline_addr: u64,
    initramfs: Option<(u64, u64)>,
) -> Result<u64, BootError> {
    if e820.len() > MAX_MEMMAP_ENTRIES {
        return Err(BootError::TooManyMemmapEntries(e820.len()));
    }
    let memmap_addr = PVH_INFO_START + MEMMAP_OFFSET;
    for (i, e) in e820.iter().enumerate() {
        let entry = MemmapEntry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        };
        mem.write_obj(entry, GuestAddress(memmap_addr + 24 * i as u64))
            .map_err(BootError::WriteBootInfo)?;
    }
    let mut info = StartInfo {
        magic: XEN_HVM_START_MAGIC,
        version: START_INFO_VERSION,
        cmdline_paddr: cmdline_addr,
        memmap_paddr: memmap_addr,
        memmap_entries: e820.len() as u32,
        ..Default::default()
    };
    if let Some((addr, size)) = initramfs {
        let modlist_addr = PVH_INFO_START + MODLIST_OFFSET;
        let m = ModlistEntry {
            paddr: addr,
            size,
            ..Default::default()
        };
        mem.write_obj(m, GuestAddress(modlist_addr))
            .map_err(BootError::WriteBootInfo)?;
        info.nr_modules = 1;
        info.modlist_paddr = modlist_addr;
    }
    mem.write_obj(info, GuestAddress(PVH_INFO_START))
        .map_err(BootError::WriteBootInfo)?;
    Ok(PVH_INFO_START)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::e820::e820_map;
    use crate::memory::{create_guest_memory, MIB};

    #[test]
    fn layout_sizes() {
        assert_eq!(std::mem::size_of::<StartInfo>(), 56);
        assert_eq!(std::mem::size_of::<ModlistEntry>(), 32);
        assert_eq!(std::mem::size_of::<MemmapEntry>(), 24);
        const { assert!(MODLIST_OFFSET >= 56 && MEMMAP_OFFSET >= MODLIST_OFFSET + 32) };
    }

    #[test]
    fn writes_start_info() {
        let mem = create_guest_memory(64 * MIB).expect("memory");
        let map = e820_map(64 * MIB);
        let at = write_start_info(&mem, &map, 0x20000, Some((0x300_0000, 0x1234))).expect("writes");
        let info: StartInfo = mem.read_obj(GuestAddress(at)).expect("reads");
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(info.memmap_entries as usize, map.len());
        assert_eq!(info.nr_modules, 1);
        let m: ModlistEntry = mem
            .read_obj(GuestAddress(info.modlist_paddr))
            .expect("reads");
        assert_eq!((m.paddr, m.size), (0x300_0000, 0x1234));
        let last: MemmapEntry = mem
            .read_obj(GuestAddress(
                info.memmap_paddr + 24 * (map.len() as u64 - 1),
            ))
            .expect("reads");
        assert_eq!(last.addr + last.size, 64 * MIB);
    }
}
