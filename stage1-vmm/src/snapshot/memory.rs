//! Guest memory in a snapshot: one file holding the RAM ranges of [`crate::memory::ram_ranges`]
//! back to back. Saving skips all-zero pages (they stay holes of a sparse file); restoring maps
//! the file `MAP_PRIVATE`: nothing is read up front, pages fault in from the page cache when the
//! guest touches them, and the guest's writes go to private copies, so one file serves any
//! number of VMs and none of them can change it.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use vm_memory::{
    mmap::MmapRegionBuilder, Bytes, FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap,
};

use super::SnapshotError;
use crate::memory::{ram_ranges, GuestMem};

/// Bytes copied out of guest memory per step.
const CHUNK: usize = 1 << 20;
/// The unit of "all zero, leave a hole" (bytes).
const PAGE: usize = 4096;

/// Writes `mem` (of `size` bytes) to `file`, leaving all-zero pages as holes.
pub fn save(mem: &GuestMem, size: u64, file: &mut File) -> Result<(), SnapshotError> {
    let io = |e| SnapshotError::Io("cannot write the memory file", e);
    file.set_len(0).map_err(io)?;
    let mut buf = vec![0u8; CHUNK];
    let mut file_off = 0u64;
    for (start, len) in ram_ranges(size) {
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(CHUNK as u64) as usize;
            let chunk = buf.get_mut(..n).unwrap_or_default();
            mem.read_slice(chunk, GuestAddress(start + done))
                .map_err(|_| SnapshotError::Corrupt("guest memory read"))?;
            for (i, page) in chunk.chunks(PAGE).enumerate() {
                if page.iter().any(|&b| b != 0) {
                    file.write_all_at(page, file_off + done + (i * PAGE) as u64)
                        .map_err(io)?;
                }
            }
            done += n as u64;
        }
        file_off += len;
    }
    file.set_len(file_off).map_err(io)?;
    file.flush().map_err(io)
}

/// Checks that the memory file holds exactly `size` bytes (a shorter one would fault the VMM
/// with SIGBUS where the guest reads past its end).
pub fn check_len(file: &File, size: u64) -> Result<(), SnapshotError> {
    let len = file
        .metadata()
        .map_err(|e| SnapshotError::Io("cannot stat the memory file", e))?
        .len();
    if len != size {
        return Err(SnapshotError::MemoryFileSize { len, want: size });
    }
    Ok(())
}

/// Maps the memory file `MAP_PRIVATE` as guest memory of `size` bytes (its length must be
/// exactly that: [`check_len`]).
pub fn map_private(file: File, size: u64) -> Result<GuestMem, SnapshotError> {
    check_len(&file, size)?;
    let file = std::sync::Arc::new(file);
    let mut regions = Vec::new();
    let mut off = 0u64;
    for (start, rlen) in ram_ranges(size) {
        let region = MmapRegionBuilder::new(rlen as usize)
            .with_file_offset(FileOffset::from_arc(file.clone(), off))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(|_| SnapshotError::Corrupt("memory file mapping"))?;
        let region = GuestRegionMmap::new(region, GuestAddress(start))
            .ok_or(SnapshotError::Corrupt("memory file mapping"))?;
        regions.push(region);
        off += rlen;
    }
    GuestMemoryMmap::from_regions(regions).map_err(|_| SnapshotError::Corrupt("memory layout"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use vm_memory::Bytes;

    use super::*;
    use crate::memory::{create_guest_memory, MIB};

    #[test]
    fn save_is_sparse_and_map_private_reads_it_back_without_writing_it() {
        let size = 16 * MIB;
        let mem = create_guest_memory(size).expect("memory");
        mem.write_slice(b"first page", GuestAddress(0))
            .expect("write");
        mem.write_slice(b"last page", GuestAddress(size - 9))
            .expect("write");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("memory");
        let mut f = File::create(&path).expect("create");
        save(&mem, size, &mut f).expect("saves");
        let meta = std::fs::metadata(&path).expect("stat");
        assert_eq!(meta.len(), size);
        assert!(
            meta.blocks() * 512 < MIB,
            "not sparse: {} blocks",
            meta.blocks()
        );

        let m = map_private(File::open(&path).expect("open"), size).expect("maps");
        let mut b = [0u8; 10];
        m.read_slice(&mut b, GuestAddress(0)).expect("read");
        assert_eq!(&b, b"first page");
        let mut b = [0u8; 9];
        m.read_slice(&mut b, GuestAddress(size - 9)).expect("read");
        assert_eq!(&b, b"last page");
        // A guest write stays private to the mapping.
        m.write_slice(b"changed", GuestAddress(0)).expect("write");
        let on_disk = std::fs::read(&path).expect("read file");
        assert_eq!(&on_disk[..10], b"first page");

        assert!(matches!(
            map_private(File::open(&path).expect("open"), 32 * MIB),
            Err(SnapshotError::MemoryFileSize { .. })
        ));
    }
}
