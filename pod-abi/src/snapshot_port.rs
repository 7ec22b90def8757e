//! Guest side of the snapshot port (`pod_abi::snapshot`) and of the reset line
//! (`pod_abi::reset`): one-byte port I/O with `ioperm(2)`
//! and the `in`/`out` instructions, falling back to `/dev/port` when `ioperm` fails (a kernel
//! without `CONFIG_X86_IOPL_IOPERM`). A guest-only kernel without PCI has no `/dev/port`
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
