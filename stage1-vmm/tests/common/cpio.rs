//! The newc cpio writer for test initramfs images: the VMM's own (`stage1_vmm::boot::newc`).
//! Shared by the guest-Linux integration tests (through initramfs.rs) and the
//! `mk_test_initramfs` example.

pub use stage1_vmm::boot::newc::entry;
