//! Loading an ELF vmlinux: each PT_LOAD segment is read into guest RAM (one read per
//! segment); BSS stays the fresh mapping's zeros. The PVH entry comes from the
//! `XEN_ELFNOTE_PHYS32_ENTRY` note.
//!
//! `RKT_VMM_MMAP=1` maps each segment's whole pages from the file instead (private,
//! copy-on-write, prefaulted from the page cache with MAP_POPULATE) and copies only the partial
//! pages: VMs then share the kernel's pages through the page cache and setup skips the copy.
//! That was the default until guest RAM got transparent huge pages (`crate::memory`): the
//! mapped pages are 4 KiB file pages inside the huge-page RAM, and under nested KVM each first
//! touch of one costs an exit, so a quiet boot's guest time went from ~1.0 s (copied into huge
//! pages) to 3-4 s (mapped; docs/vmm.md, "Huge pages").
//!
//! The caller must pass fresh (all-zero, untouched) guest memory: mapped pages replace whatever
//! was there. When mapping, the kernel file should be replaced by rename, not rewritten in
//! place, while a VM runs (MAP_PRIVATE leaves untouched pages backed by the file).

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryRegion};

use super::BootError;
use crate::memory::GuestMem;
use crate::memory::HIMEM_START;

/// Page size (bytes).
const PAGE: u64 = 4096;
/// Set to `1` to map the kernel and initramfs into guest RAM instead of copying them.
pub const MMAP_ENV: &str = "RKT_VMM_MMAP";

/// Whether to map files into guest RAM ([`MMAP_ENV`]=1; copying is the default).
fn mmap_enabled() -> bool {
    std::env::var_os(MMAP_ENV).is_some_and(|v| v == "1")
}
/// ELF program header type: loadable segment.
const PT_LOAD: u32 = 1;
/// ELF program header type: notes.
const PT_NOTE: u32 = 4;
/// Note type carrying the 32-bit PVH entry point.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Most program headers we read.
const MAX_PHDRS: u16 = 64;
/// Largest note segment we scan (bytes).
const MAX_NOTES: u64 = 64 * 1024;

/// What loading an ELF kernel produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfKernel {
    /// `e_entry` (the 64-bit entry for a vmlinux).
    pub entry: u64,
    /// The PVH entry, if the kernel has the note.
    pub pvh_entry: Option<u64>,
    /// First guest address after the loaded segments (BSS included).
    pub end: u64,
}

fn bad(why: &'static str) -> BootError {
    BootError::BadElf(why)
}

/// [`crate::bytes::u16_at`], 0 past the end (a short header then fails the checks on it).
fn u16_at(b: &[u8], at: usize) -> u16 {
    crate::bytes::u16_at(b, at).unwrap_or(0)
}

/// [`crate::bytes::u32_at`], 0 past the end.
fn u32_at(b: &[u8], at: usize) -> u32 {
    crate::bytes::u32_at(b, at).unwrap_or(0)
}

/// [`crate::bytes::u64_at`], 0 past the end.
fn u64_at(b: &[u8], at: usize) -> u64 {
    crate::bytes::u64_at(b, at).unwrap_or(0)
}

fn read_at(f: &File, off: u64, len: usize) -> Result<Vec<u8>, BootError> {
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, off)
        .map_err(|source| BootError::Read {
            what: "kernel",
            source,
        })?;
    Ok(buf)
}

/// Program header fields we use.
#[derive(Debug, Clone, Copy)]
struct Phdr {
    kind: u32,
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

/// Maps (or copies) the segments of the ELF kernel `f` into `mem`.
pub fn load(mem: &GuestMem, f: &File) -> Result<ElfKernel, BootError> {
    let ehdr = read_at(f, 0, 64)?;
    if ehdr.get(0..4) != Some(b"\x7fELF".as_slice()) {
        return Err(bad("not an ELF file"));
    }
    if ehdr.get(4) != Some(&2) || ehdr.get(5) != Some(&1) {
        return Err(bad("not a little-endian 64-bit ELF file"));
    }
    let entry = u64_at(&ehdr, 24);
    let phoff = u64_at(&ehdr, 32);
    let phentsize = u16_at(&ehdr, 54);
    let phnum = u16_at(&ehdr, 56);
    if phentsize != 56 || phnum == 0 || phnum > MAX_PHDRS {
        return Err(bad("unexpected program header table"));
    }
    let table = read_at(f, phoff, usize::from(phnum) * 56)?;
    let phdrs: Vec<Phdr> = table
        .chunks_exact(56)
        .map(|p| Phdr {
            kind: u32_at(p, 0),
            offset: u64_at(p, 8),
            paddr: u64_at(p, 24),
            filesz: u64_at(p, 32),
            memsz: u64_at(p, 40),
        })
        .collect();

    let mut end = 0u64;
    let mut pvh_entry = None;
    for p in &phdrs {
        match p.kind {
            PT_LOAD if p.memsz > 0 => {
                load_segment(mem, f, p)?;
                end = end.max(p.paddr.saturating_add(p.memsz));
            }
            PT_NOTE if pvh_entry.is_none() => pvh_entry = find_pvh_note(f, p)?,
            _ => {}
        }
    }
    if end == 0 {
        return Err(bad("no loadable segment"));
    }
    Ok(ElfKernel {
        entry,
        pvh_entry,
        end,
    })
}

fn load_segment(mem: &GuestMem, f: &File, p: &Phdr) -> Result<(), BootError> {
    if p.filesz > p.memsz {
        return Err(bad("segment file size exceeds its memory size"));
    }
    let seg_end = p
        .paddr
        .checked_add(p.memsz)
        .ok_or(bad("segment address overflow"))?;
    if p.paddr < HIMEM_START {
        return Err(bad("segment below 1 MiB"));
    }
    // The whole segment must lie in one RAM region.
    let region = mem
        .find_region(GuestAddress(p.paddr))
        .ok_or(bad("segment outside guest RAM"))?;
    let region_end = region.start_addr().0 + region.len();
    if seg_end > region_end {
        return Err(bad("segment outside guest RAM"));
    }
    if p.filesz == 0 {
        return Ok(()); // BSS only: the memory is already zero.
    }
    map_file(mem, f, "kernel", p.offset, p.paddr, p.filesz)
}

/// Puts `len` bytes of `f` from `offset` at guest `addr` (which must be fresh, zero RAM inside
/// one region): read straight into guest memory; with `RKT_VMM_MMAP=1`, whole pages are mapped
/// from the file when offset and address agree modulo the page size (and the file can be
/// mapped) and only the partial pages are copied.
pub fn map_file(
    mem: &GuestMem,
    f: &File,
    what: &'static str,
    offset: u64,
    addr: u64,
    len: u64,
) -> Result<(), BootError> {
    place(mem, f, what, offset, addr, len, mmap_enabled())
}

fn place(
    mem: &GuestMem,
    f: &File,
    what: &'static str,
    offset: u64,
    addr: u64,
    len: u64,
    map: bool,
) -> Result<(), BootError> {
    let data_end = addr.checked_add(len).ok_or(bad("address overflow"))?;
    // Copy: one read straight from the file into guest memory.
    let copy = |from: u64, to: u64| -> Result<(), BootError> {
        if to <= from {
            return Ok(());
        }
        let n = usize::try_from(to - from).map_err(|_| bad("segment too large"))?;
        let read_err = |source| BootError::Read { what, source };
        let mut src = f.try_clone().map_err(read_err)?;
        src.seek(SeekFrom::Start(offset + (from - addr)))
            .map_err(read_err)?;
        mem.read_exact_volatile_from(GuestAddress(from), &mut src, n)
            .map_err(|source| BootError::CopyImage { what, source })
    };
    if !map {
        return copy(addr, data_end);
    }
    let map_from = addr.div_ceil(PAGE) * PAGE;
    let map_to = data_end / PAGE * PAGE;
    if offset % PAGE != addr % PAGE || map_to <= map_from {
        return copy(addr, data_end);
    }
    // The mapped range must be inside one region (mmap must not cross into another mapping).
    let region = mem
        .find_region(GuestAddress(map_from))
        .ok_or(bad("segment outside guest RAM"))?;
    if map_to > region.start_addr().0 + region.len() {
        return Err(bad("segment outside guest RAM"));
    }
    copy(addr, map_from)?;
    let host = mem
        .get_host_address(GuestAddress(map_from))
        .map_err(|_| bad("segment outside guest RAM"))?;
    let map_len = usize::try_from(map_to - map_from).map_err(|_| bad("segment too large"))?;
    let file_off = libc::off_t::try_from(offset + (map_from - addr))
        .map_err(|_| bad("segment offset too large"))?;
    // SAFETY: `host..host+map_len` lies inside one live guest RAM mapping owned by `mem`
    // (checked above). MAP_FIXED replaces those pages with a private mapping of the file with
    // the same protection; nothing holds references into that memory at this point (the VM has
    // not run), and the pages are unmapped with the region.
    let r = unsafe {
        libc::mmap(
            host.cast(),
            map_len,
            libc::PROT_READ | libc::PROT_WRITE,
            // POPULATE: fault the pages in now (from the page cache), so the guest never waits
            // on file I/O inside KVM_RUN (where KVM may use asynchronous page faults).
            libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_POPULATE,
            f.as_raw_fd(),
            file_off,
        )
    };
    if r == libc::MAP_FAILED {
        // Not mappable (a file system without mmap): copy instead.
        return copy(map_from, data_end);
    }
    copy(map_to, data_end)
}

fn find_pvh_note(f: &File, p: &Phdr) -> Result<Option<u64>, BootError> {
    if p.filesz > MAX_NOTES {
        return Ok(None);
    }
    let notes = read_at(f, p.offset, p.filesz as usize)?;
    let mut at = 0usize;
    while at + 12 <= notes.len() {
        let namesz = u32_at(&notes, at) as usize;
        let descsz = u32_at(&notes, at + 4) as usize;
        let kind = u32_at(&notes, at + 8);
        let name_at = at + 12;
        let desc_at = name_at + namesz.div_ceil(4) * 4;
        let next = desc_at + descsz.div_ceil(4) * 4;
        if next > notes.len() {
            break;
        }
        if kind == XEN_ELFNOTE_PHYS32_ENTRY
            && notes.get(name_at..name_at + namesz) == Some(b"Xen\0")
        {
            let entry = match descsz {
                4 => u64::from(u32_at(&notes, desc_at)),
                8 => u64_at(&notes, desc_at),
                _ => return Err(bad("malformed PVH note")),
            };
            return Ok(Some(entry));
        }
        at = next;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::memory::{create_guest_memory, MIB};

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    fn file_with(data: &[u8]) -> File {
        let mut f = tempfile::tempfile().expect("tempfile");
        f.write_all(data).expect("write");
        f
    }

    #[test]
    fn maps_whole_pages_and_copies_ends() {
        let data = pattern(3 * 4096 + 100);
        let f = file_with(&data);
        let mem = create_guest_memory(16 * MIB).expect("memory");
        place(&mem, &f, "kernel", 0, 0x20_0000, data.len() as u64, true).expect("maps");
        let mut back = vec![0u8; data.len() + 4096];
        mem.read_slice(&mut back, GuestAddress(0x20_0000))
            .expect("reads");
        assert_eq!(&back[..data.len()], &data[..]);
        assert!(
            back[data.len()..].iter().all(|b| *b == 0),
            "bytes after the data are zero"
        );
        // Private: a guest write does not reach the file.
        mem.write_slice(&[0xaa], GuestAddress(0x20_0000))
            .expect("writes");
        let mut first = [0u8];
        f.read_exact_at(&mut first, 0).expect("reads file");
        assert_eq!(first[0], data[0]);
    }

    #[test]
    fn copies_by_default() {
        let data = pattern(3 * 4096 + 100);
        let f = file_with(&data);
        let mem = create_guest_memory(16 * MIB).expect("memory");
        place(&mem, &f, "kernel", 0, 0x20_0000, data.len() as u64, false).expect("copies");
        let mut back = vec![0u8; data.len() + 100];
        mem.read_slice(&mut back, GuestAddress(0x20_0000))
            .expect("reads");
        assert_eq!(&back[..data.len()], &data[..]);
        assert!(back[data.len()..].iter().all(|b| *b == 0));
    }

    #[test]
    fn unaligned_offsets_are_copied() {
        let data = pattern(2 * 4096);
        let f = file_with(&data);
        let mem = create_guest_memory(16 * MIB).expect("memory");
        place(&mem, &f, "kernel", 100, 0x20_0000, 4096, true).expect("copies");
        let mem = create_guest_memory(16 * MIB).expect("memory");
        place(&mem, &f, "kernel", 100, 0x20_0000, 4096, false).expect("copies");
        let mut back = vec![0u8; 4096];
        mem.read_slice(&mut back, GuestAddress(0x20_0000))
            .expect("reads");
        assert_eq!(&back[..], &data[100..4196]);
        let mut back = vec![0u8; 4096];
        mem.read_slice(&mut back, GuestAddress(0x20_0000))
            .expect("reads");
        assert_eq!(&back[..], &data[100..4196]);
    }

    #[test]
    fn rejects_non_elf_and_segments_outside_ram() {
        let mem = create_guest_memory(16 * MIB).expect("memory");
        assert!(matches!(
            load(&mem, &file_with(b"MZ not elf")),
            Err(BootError::BadElf(_)) | Err(BootError::Read { .. })
        ));
        assert!(matches!(
            load(&mem, &file_with(&[0u8; 64])),
            Err(BootError::BadElf(_))
        ));
        let p = Phdr {
            kind: PT_LOAD,
            offset: 0,
            paddr: 15 * MIB,
            filesz: 0,
            memsz: 2 * MIB,
        };
        assert!(matches!(
            load_segment(&mem, &file_with(b""), &p),
            Err(BootError::BadElf(_))
        ));
        let p = Phdr {
            kind: PT_LOAD,
            offset: 0,
            paddr: 0x1000,
            filesz: 0,
            memsz: 16,
        };
        assert!(matches!(
            load_segment(&mem, &file_with(b""), &p),
            Err(BootError::BadElf(_))
        ));
    }
}
