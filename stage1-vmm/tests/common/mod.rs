//! Test support: hand-made PVH ELF guests, a shared output buffer, the guest-test mark with
//! its skip rules, and (for guest-Linux tests) the kernel path and the test initramfs.

#![allow(dead_code)]

pub mod guest;
pub mod initramfs;
pub mod vm;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Guest physical address where tiny guests are loaded and entered.
pub const TINY_LOAD: u64 = 0x10_0000;

/// An ELF64 executable with one PT_LOAD of `code` at [`TINY_LOAD`] and a PT_NOTE carrying
/// `XEN_ELFNOTE_PHYS32_ENTRY` = [`TINY_LOAD`]: entered through the VMM's PVH path, in 32-bit
/// protected mode with paging off.
pub fn pvh_elf(code: &[u8]) -> Vec<u8> {
    const EHDR: usize = 64;
    const PHDR: usize = 56;
    let note_off = EHDR + 2 * PHDR;
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes()); // namesz
    note.extend_from_slice(&4u32.to_le_bytes()); // descsz
    note.extend_from_slice(&18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&(TINY_LOAD as u32).to_le_bytes());
    let code_off = 0x1000usize;

    let mut f = Vec::new();
    f.extend_from_slice(b"\x7fELF");
    f.extend_from_slice(&[2, 1, 1, 0]);
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&TINY_LOAD.to_le_bytes()); // e_entry
    f.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&(EHDR as u16).to_le_bytes());
    f.extend_from_slice(&(PHDR as u16).to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&64u16.to_le_bytes());
    f.extend_from_slice(&0u16.to_le_bytes());
    f.extend_from_slice(&0u16.to_le_bytes());
    assert_eq!(f.len(), EHDR);
    let phdr =
        |f: &mut Vec<u8>, ty: u32, flags: u32, off: usize, addr: u64, size: usize, align: u64| {
            f.extend_from_slice(&ty.to_le_bytes());
            f.extend_from_slice(&flags.to_le_bytes());
            f.extend_from_slice(&(off as u64).to_le_bytes());
            f.extend_from_slice(&addr.to_le_bytes());
            f.extend_from_slice(&addr.to_le_bytes());
            f.extend_from_slice(&(size as u64).to_le_bytes());
            f.extend_from_slice(&(size as u64).to_le_bytes());
            f.extend_from_slice(&align.to_le_bytes());
        };
    phdr(&mut f, 1, 7, code_off, TINY_LOAD, code.len(), 0x1000);
    phdr(&mut f, 4, 4, note_off, 0, note.len(), 4);
    f.extend_from_slice(&note);
    f.resize(code_off, 0);
    f.extend_from_slice(code);
    f
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The guest kernel for guest-Linux tests: `$RKT_TEST_KERNEL`, else `<repo>/build/kernel/vmlinux`.
/// Panics (fails the test) when it is missing, saying how to build it.
pub fn test_kernel() -> PathBuf {
    let p = std::env::var_os("RKT_TEST_KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("build/kernel/vmlinux"));
    assert!(
        p.is_file(),
        "guest kernel {} is missing: run kernel-config/build.sh (or set RKT_TEST_KERNEL)",
        p.display()
    );
    p
}

/// Marks `name` as a guest-Linux test ([`guest::mark`]); where this host's KVM cannot boot
/// Linux (no /dev/kvm, or PVM) prints the SKIP line and returns false.
pub fn linux_kvm_or_skip(name: &str) -> bool {
    let unusable = if !Path::new("/dev/kvm").exists() {
        Some("no /dev/kvm; run under ci/nested-kvm")
    } else if !stage1_vmm::pvm::host_can_boot_linux() {
        Some("host KVM is PVM; run under ci/nested-kvm")
    } else {
        None
    };
    mark_or_skip(name, unusable)
}

/// Marks `name` as a tiny-guest test ([`guest::mark`]), which any /dev/kvm runs, PVM included;
/// without /dev/kvm prints the SKIP line and returns false.
pub fn kvm_or_skip(name: &str) -> bool {
    let unusable =
        (!Path::new("/dev/kvm").exists()).then_some("no /dev/kvm; run under ci/nested-kvm");
    mark_or_skip(name, unusable)
}

fn mark_or_skip(name: &str, unusable: Option<&str>) -> bool {
    match guest::mark(name, unusable.map(String::from)) {
        Ok(()) => true,
        Err(why) => {
            let _ = std::io::stderr().write_all(format!("SKIP: {name}: {why}\n").as_bytes());
            false
        }
    }
}

/// Writes `bytes` to a new file in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write test file");
    p
}

/// A `Write` into a shared buffer, to capture console output.
#[derive(Clone, Default)]
pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    /// Everything written so far, lossily as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, d: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(d);
        Ok(d.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Tiny-guest code snippets (32-bit protected mode).
pub mod asm {
    /// `mov dx, port`
    pub fn mov_dx(port: u16) -> Vec<u8> {
        let p = port.to_le_bytes();
        vec![0x66, 0xba, p[0], p[1]]
    }
    /// `mov al, v`
    pub fn mov_al(v: u8) -> Vec<u8> {
        vec![0xb0, v]
    }
    /// `out dx, al`
    pub const OUT_DX_AL: u8 = 0xee;
    /// `in al, dx`
    pub const IN_AL_DX: u8 = 0xec;
    /// Prints `s` on the UART at `port`.
    pub fn print(port: u16, s: &[u8]) -> Vec<u8> {
        let mut c = mov_dx(port);
        for &b in s {
            c.extend(mov_al(b));
            c.push(OUT_DX_AL);
        }
        c
    }
    /// i8042 reset: `mov al, 0xfe; out 0x64, al`, then `hlt; jmp hlt`.
    pub fn reset() -> Vec<u8> {
        vec![0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd]
    }
    /// `jmp $`
    pub fn spin() -> Vec<u8> {
        vec![0xeb, 0xfe]
    }
}
