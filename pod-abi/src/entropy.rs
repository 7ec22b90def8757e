//! A restored guest's kernel random number generator, reseeded from the host: guest-init
//! credits the fresh entropy a restored VM reads from the snapshot port (`pod_abi::snapshot`),
//! then reseeds the CRNG. (A cold guest's CRNG is fed by the entropy device, virtio-rng.)
//!
//! This file uses std only: guest-init reaches it as `pod_abi::entropy`, and stage1-vmm's
//! crate-free test init (`stage1-vmm/tests/guest/init.rs`) includes it with `#[path]`.

use std::ffi::{c_int, c_ulong};
use std::fs::File;
use std::io;

extern "C" {
    fn ioctl(fd: c_int, req: c_ulong, ...) -> c_int;
}

/// The device the ioctls go to.
pub const RANDOM_DEVICE: &str = "/dev/urandom";
/// `RNDADDENTROPY` (`_IOW('R', 3, int[2])`).
const RNDADDENTROPY: c_ulong = 0x4008_5203;
/// `RNDRESEEDCRNG` (`_IO('R', 7)`).
const RNDRESEEDCRNG: c_ulong = 0x5207;

/// Mixes `entropy` into the kernel's input pool through [`RANDOM_DEVICE`], credited at 8 bits
/// a byte (`RNDADDENTROPY`), then reseeds the kernel's CRNG from that pool at
/// once (`RNDRESEEDCRNG`; both need `CAP_SYS_ADMIN`). A CRNG that was not ready becomes ready
/// from the credited bytes themselves (32 bytes or more). For a ready CRNG the explicit reseed
/// is what counts: the pool's new bytes alone change nothing that `getrandom(2)`, `AT_RANDOM` or
/// address-space randomization hand out until the CRNG's next scheduled reseed (1 s after the
/// last one early in a boot, 60 s later on), so every VM restored from one snapshot taken with
/// a ready CRNG (RDRAND seeds it at boot) would draw the same numbers until then.
/// An error names the step ([`RANDOM_DEVICE`], `RNDADDENTROPY` or `RNDRESEEDCRNG`) with the
/// system's error.
pub fn reseed(entropy: &[u8]) -> Result<(), (&'static str, io::Error)> {
    use std::os::fd::AsRawFd;
    let random = File::open(RANDOM_DEVICE).map_err(|e| (RANDOM_DEVICE, e))?;
    let bad = || {
        (
            "RNDADDENTROPY",
            io::Error::from(io::ErrorKind::InvalidInput),
        )
    };
    let len = i32::try_from(entropy.len()).map_err(|_| bad())?;
    let bits = len.checked_mul(8).ok_or_else(bad)?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + entropy.len());
    info.extend_from_slice(&bits.to_ne_bytes());
    info.extend_from_slice(&len.to_ne_bytes());
    info.extend_from_slice(entropy);
    // SAFETY: RNDADDENTROPY reads `8 + buf_size` bytes from `info`, which holds them.
    if unsafe { ioctl(random.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) } != 0 {
        return Err(("RNDADDENTROPY", io::Error::last_os_error()));
    }
    // SAFETY: RNDRESEEDCRNG takes no argument and touches no memory of this process.
    if unsafe { ioctl(random.as_raw_fd(), RNDRESEEDCRNG) } != 0 {
        return Err(("RNDRESEEDCRNG", io::Error::last_os_error()));
    }
    Ok(())
}
