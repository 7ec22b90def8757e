//! Guest side of the snapshot port (`pod_abi::snapshot`) and of the reset line
//! (`pod_abi::reset`): one-byte port I/O with `ioperm(2)`
//! and the `in`/`out` instructions, falling back to `/dev/port` when `ioperm` fails (a kernel
//! without `CONFIG_X86_IOPL_IOPERM`); and what a restored guest does with the fresh entropy it
//! reads there ([`reseed`]). A guest-only kernel without PCI has no `/dev/port`
//! (`CONFIG_DEVPORT` needs `ISA || PCI`), so it needs `ioperm`; either kernel works.
//!
//! This file uses std only: guest-init reaches it as `pod_abi::snapshot_port`, and stage1-vmm's
//! crate-free test init (`stage1-vmm/tests/guest/init.rs`) includes it with `#[path]`.

use std::ffi::{c_int, c_ulong};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

extern "C" {
    fn ioperm(from: c_ulong, num: c_ulong, turn_on: c_int) -> c_int;
    fn ioctl(fd: c_int, req: c_ulong, ...) -> c_int;
}

/// `RNDADDENTROPY` (`_IOW('R', 3, int[2])`).
const RNDADDENTROPY: c_ulong = 0x4008_5203;
/// `RNDRESEEDCRNG` (`_IO('R', 7)`).
const RNDRESEEDCRNG: c_ulong = 0x5207;

/// Makes a restored guest's random numbers its own: mixes `entropy` into the kernel's input
/// pool through `random` (an open `/dev/urandom`), credited at 8 bits a byte
/// (`RNDADDENTROPY`), then reseeds the kernel's CRNG from that pool at once (`RNDRESEEDCRNG`;
/// both need `CAP_SYS_ADMIN`). The pool's new bytes alone change nothing that `getrandom(2)`,
/// `AT_RANDOM` or address-space randomization hand out until the CRNG's next scheduled reseed
/// (1 s after the last one early in a boot, 60 s later on): a CRNG that was ready when the
/// snapshot was taken (RDRAND seeds it at boot) would give every VM restored from one snapshot
/// the same numbers until then. A CRNG that was not ready becomes ready from the credited
/// bytes themselves (32 bytes or more), and the explicit reseed then finds it ready too.
/// An error names the step (`RNDADDENTROPY` or `RNDRESEEDCRNG`) with the system's error.
pub fn reseed(random: &File, entropy: &[u8]) -> Result<(), (&'static str, io::Error)> {
    use std::os::fd::AsRawFd;
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

/// How a guest reaches the ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `ioperm` granted the ports: `in`/`out` instructions.
    Ioperm,
    /// `ioperm` failed but `/dev/port` opened.
    DevPort,
    /// Neither: no port access (the caller reports it).
    Neither,
}

/// The access to use, given whether `ioperm` succeeded and whether `/dev/port` opened
/// (`ioperm` first: it needs no device node).
pub fn choose(ioperm_ok: bool, dev_port_ok: bool) -> Via {
    match (ioperm_ok, dev_port_ok) {
        (true, _) => Via::Ioperm,
        (false, true) => Via::DevPort,
        (false, false) => Via::Neither,
    }
}

/// Open access to `count` ports from `first`. Dropping it gives up `ioperm`'s grant: a
/// process's I/O permission bitmap passes to the children it forks and survives `execve`, so
/// guest-init must not start apps still holding the snapshot port.
#[derive(Debug)]
pub struct Ports {
    first: u16,
    count: u16,
    dev: Option<File>,
}

impl Ports {
    /// Access to ports `first..first + count`: `ioperm`, else `/dev/port` (read-write). The
    /// error is `/dev/port`'s when both fail.
    pub fn open(first: u16, count: u16) -> io::Result<Ports> {
        // SAFETY: ioperm only changes this thread's I/O permission bitmap.
        let ioperm_ok = unsafe { ioperm(c_ulong::from(first), c_ulong::from(count), 1) } == 0;
        let dev = if ioperm_ok {
            None
        } else {
            Some(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/port"),
            )
        };
        match choose(ioperm_ok, matches!(dev, Some(Ok(_)))) {
            Via::Ioperm => Ok(Ports {
                first,
                count,
                dev: None,
            }),
            Via::DevPort | Via::Neither => match dev {
                Some(Ok(f)) => Ok(Ports {
                    first,
                    count,
                    dev: Some(f),
                }),
                Some(Err(e)) => Err(e),
                None => Err(io::Error::from(io::ErrorKind::Unsupported)),
            },
        }
    }

    /// How these ports are reached.
    pub fn via(&self) -> Via {
        if self.dev.is_some() {
            Via::DevPort
        } else {
            Via::Ioperm
        }
    }

    fn check(&self, port: u16) -> io::Result<()> {
        if port >= self.first && port - self.first < self.count {
            Ok(())
        } else {
            Err(io::Error::from(io::ErrorKind::InvalidInput))
        }
    }

    /// Writes `v` to `port` (one of the opened ports).
    pub fn outb(&self, port: u16, v: u8) -> io::Result<()> {
        self.check(port)?;
        match &self.dev {
            Some(f) => f.write_at(&[v], u64::from(port)).map(|_| ()),
            None => {
                // SAFETY: `ioperm` granted this thread `port` (checked above); a port write
                // touches no memory of this process.
                unsafe {
                    std::arch::asm!("out dx, al", in("dx") port, in("al") v,
                        options(nomem, nostack, preserves_flags));
                }
                Ok(())
            }
        }
    }

    /// Reads one byte from `port` (one of the opened ports).
    pub fn inb(&self, port: u16) -> io::Result<u8> {
        self.check(port)?;
        match &self.dev {
            Some(f) => {
                let mut b = [0u8];
                f.read_exact_at(&mut b, u64::from(port))?;
                Ok(b[0])
            }
            None => {
                let v: u8;
                // SAFETY: `ioperm` granted this thread `port` (checked above); a port read
                // writes only the `al` register.
                unsafe {
                    std::arch::asm!("in al, dx", in("dx") port, out("al") v,
                        options(nomem, nostack, preserves_flags));
                }
                Ok(v)
            }
        }
    }
}

impl Drop for Ports {
    fn drop(&mut self) {
        if self.dev.is_none() {
            // SAFETY: ioperm only changes this thread's I/O permission bitmap; turning ports
            // off cannot fail in a way that matters here.
            unsafe { ioperm(c_ulong::from(self.first), c_ulong::from(self.count), 0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioperm_first_then_dev_port() {
        assert_eq!(choose(true, true), Via::Ioperm);
        assert_eq!(choose(true, false), Via::Ioperm);
        assert_eq!(choose(false, true), Via::DevPort);
        assert_eq!(choose(false, false), Via::Neither);
    }

    #[test]
    fn ports_outside_the_range_are_refused() {
        let p = Ports {
            first: 0x5e0,
            count: 2,
            dev: None,
        };
        assert!(p.check(0x5e0).is_ok());
        assert!(p.check(0x5e1).is_ok());
        assert!(p.check(0x5e2).is_err());
        assert!(p.check(0x5df).is_err());
    }
}
