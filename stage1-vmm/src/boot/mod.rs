//! Loading the guest kernel and writing what it reads at boot: the command line, the e820 map,
//! the MP table, and either the PVH start info (ELF vmlinux with a PVH note, preferred) or the
//! Linux zero page (bzImage, or a vmlinux without the note, entered in 64-bit mode).

pub mod cmdline;
pub mod e820;
pub mod elf;
pub mod mptable;
pub mod newc;
pub mod pvh;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::{BzImage, KernelLoader};
use thiserror::Error;
use vm_memory::{ByteValued, Bytes, GuestAddress};

use self::cmdline::Cmdline;
use self::e820::E820Entry;
use crate::memory::GuestMem;
use crate::memory::{low_ram_end, CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, ZERO_PAGE_START};

/// Page size (bytes).
const PAGE_SIZE: u64 = 4096;
/// Offset of the 64-bit entry point (`startup_64`) from a bzImage's protected-mode load address.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// `setup_header.boot_flag` magic.
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// `setup_header.header` magic ("HdrS").
const HDRS_MAGIC: u32 = 0x5372_6448;
/// `setup_header.type_of_loader`: undefined boot loader.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// `setup_header.loadflags` bit: the kernel is loaded high (at 1 MiB).
const LOADED_HIGH: u8 = 0x01;
/// Kernel alignment we declare for a vmlinux without a setup header (bytes, 16 MiB).
const DEFAULT_KERNEL_ALIGNMENT: u32 = 0x100_0000;
/// ELF magic bytes.
const ELF_MAGIC: [u8; 4] = *b"\x7fELF";

/// Errors loading the kernel or writing boot information.
#[derive(Debug, Error)]
pub enum BootError {
    /// Reading the kernel or initramfs file failed.
    #[error("cannot read {what}")]
    Read {
        /// "kernel" or "initramfs".
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The ELF kernel is malformed or does not fit.
    #[error("bad ELF kernel: {0}")]
    BadElf(&'static str),
    /// linux-loader rejected the kernel image.
    #[error("cannot load the kernel image")]
    Load(#[source] linux_loader::loader::Error),
    /// The initramfs does not fit in guest memory above the kernel.
    #[error("initramfs of {size} bytes does not fit in guest RAM above the kernel")]
    InitramfsTooBig {
        /// Size of the initramfs (bytes).
        size: u64,
    },
    /// Copying the kernel or initramfs into guest memory failed.
    #[error("cannot copy the {what} into guest memory")]
    CopyImage {
        /// "kernel" or "initramfs".
        what: &'static str,
        /// The error.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// Writing the command line, start info or zero page failed.
    #[error("cannot write boot information to guest memory")]
    WriteBootInfo(#[source] vm_memory::GuestMemoryError),
    /// More e820 entries than the boot structure holds.
    #[error("too many memory map entries ({0})")]
    TooManyMemmapEntries(usize),
    /// The command line is longer than the kernel's buffer.
    #[error("kernel command line too long")]
    CmdlineTooLong,
}

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootEntry {
    /// PVH: 32-bit protected mode, paging off, `ebx` = start info address.
    Pvh {
        /// Entry point (physical).
        entry: u64,
        /// `hvm_start_info` address.
        start_info: u64,
    },
    /// Linux 64-bit boot protocol: long mode with identity paging, `rsi` = zero page.
    Linux64 {
        /// Entry point (physical).
        entry: u64,
        /// `boot_params` address.
        zero_page: u64,
    },
}

/// Wrapper to write `boot_params` as bytes.
#[derive(Clone, Copy, Default)]
struct BootParams(boot_params);
// SAFETY: boot_params is a bindgen-generated repr(C, packed) struct of integers and arrays of
// integers: every bit pattern is valid and it has no padding.
unsafe impl ByteValued for BootParams {}

/// Loads `kernel` (ELF vmlinux or bzImage, told apart by the ELF magic) and the optional
/// `initramfs` into `mem`, writes the command line and boot structures, and returns the entry.
pub fn load(
    mem: &GuestMem,
    mem_size: u64,
    kernel: &mut File,
    initramfs: Option<&mut File>,
    cmdline: &Cmdline,
    e820: &[E820Entry],
) -> Result<BootEntry, BootError> {
    let read_err = |source| BootError::Read {
        what: "kernel",
        source,
    };
    let mut magic = [0u8; 4];
    kernel.seek(SeekFrom::Start(0)).map_err(read_err)?;
    kernel.read_exact(&mut magic).map_err(read_err)?;
    kernel.seek(SeekFrom::Start(0)).map_err(read_err)?;
    let is_elf = magic == ELF_MAGIC;

    // ELF: mapped by our loader (PVH note preferred); bzImage: linux-loader.
    let (kernel_end, pvh_entry, entry64, setup_header) = if is_elf {
        let k = elf::load(mem, kernel)?;
        (k.end, k.pvh_entry, k.entry, None)
    } else {
        let l = BzImage::load(mem, None, kernel, Some(GuestAddress(HIMEM_START)))
            .map_err(BootError::Load)?;
        let entry = l.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET;
        // linux-loader reports `kernel_end` as an absolute guest address.
        (l.kernel_end, None, entry, l.setup_header)
    };

    // Initramfs: page-aligned at the top of low RAM (and below the kernel's initrd limit).
    let mut initrd_limit = low_ram_end(mem_size);
    if let Some(hdr) = setup_header {
        let max = hdr.initrd_addr_max;
        if max != 0 {
            initrd_limit = initrd_limit.min(u64::from(max) + 1);
        }
    }
    let initramfs = match initramfs {
        Some(f) => Some(load_initramfs(mem, f, kernel_end, initrd_limit)?),
        None => None,
    };

    let line = cmdline.to_bytes_with_nul();
    if line.len() > CMDLINE_MAX_SIZE {
        return Err(BootError::CmdlineTooLong);
    }
    mem.write_slice(&line, GuestAddress(CMDLINE_START))
        .map_err(BootError::WriteBootInfo)?;

    if let Some(entry) = pvh_entry {
        let start_info = pvh::write_start_info(mem, e820, CMDLINE_START, initramfs)?;
        return Ok(BootEntry::Pvh { entry, start_info });
    }

    // Linux boot protocol: zero page with the setup header (bzImage) or a made-up one (vmlinux).
    let mut params = BootParams::default();
    match setup_header {
        Some(hdr) => params.0.hdr = hdr,
        None => {
            params.0.hdr.boot_flag = BOOT_FLAG_MAGIC;
            params.0.hdr.header = HDRS_MAGIC;
            params.0.hdr.kernel_alignment = DEFAULT_KERNEL_ALIGNMENT;
        }
    }
    params.0.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.0.hdr.loadflags |= LOADED_HIGH;
    params.0.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.0.hdr.cmdline_size = (line.len() - 1) as u32;
    if let Some((addr, size)) = initramfs {
        params.0.hdr.ramdisk_image = addr as u32;
        params.0.hdr.ramdisk_size = size as u32;
    }
    let table_len = params.0.e820_table.len();
    if e820.len() > table_len {
        return Err(BootError::TooManyMemmapEntries(e820.len()));
    }
    for (slot, e) in params.0.e820_table.iter_mut().zip(e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
        };
    }
    params.0.e820_entries = e820.len() as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(BootError::WriteBootInfo)?;

    Ok(BootEntry::Linux64 {
        entry: entry64,
        zero_page: ZERO_PAGE_START,
    })
}

/// Maps (or copies) the initramfs to the highest page-aligned address below `limit` that is
/// above `kernel_end`; returns `(address, size)`.
fn load_initramfs(
    mem: &GuestMem,
    f: &File,
    kernel_end: u64,
    limit: u64,
) -> Result<(u64, u64), BootError> {
    let read_err = |source| BootError::Read {
        what: "initramfs",
        source,
    };
    let size = f.metadata().map_err(read_err)?.len();
    let addr =
        initramfs_addr(size, kernel_end, limit).ok_or(BootError::InitramfsTooBig { size })?;
    elf::map_file(mem, f, "initramfs", 0, addr, size)?;
    Ok((addr, size))
}

/// Where an initramfs of `size` bytes goes: page-aligned, ending at or below `limit`, starting
/// at or above `kernel_end`.
pub fn initramfs_addr(size: u64, kernel_end: u64, limit: u64) -> Option<u64> {
    let addr = limit.checked_sub(size)? & !(PAGE_SIZE - 1);
    (addr >= kernel_end).then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initramfs_goes_high_and_aligned() {
        assert_eq!(
            initramfs_addr(0x1800, 0x200_0000, 0x800_0000),
            Some(0x7ffe000)
        );
        assert_eq!(
            initramfs_addr(0x1000, 0x200_0000, 0x800_0000),
            Some(0x7fff000)
        );
        assert_eq!(initramfs_addr(0x700_0000, 0x200_0000, 0x800_0000), None);
        assert_eq!(initramfs_addr(u64::MAX, 0, 0x800_0000), None);
    }

    #[test]
    fn boot_params_is_a_page() {
        assert_eq!(std::mem::size_of::<BootParams>(), 4096);
    }
}
