//! The guest the device targets that check guest memory share (`virtio_blk`, `virtio_net`):
//! two RAM regions with a 64 KiB hole between them, filled with a pattern and mirrored in a
//! [`Shadow`] of what memory must hold, and the model of the descriptor chains a target
//! publishes ([`Desc`], [`Break`], [`Chain`]).

use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

use stage1_vmm::devices::virtio::test_utils::guest_memory_with;
use stage1_vmm::memory::GuestMem;
use vm_memory::{Bytes, GuestAddress};

/// Region A of guest RAM `(start, end)` (bytes): the rings from `RINGS_BASE`, then buffers.
pub const A: (u64, u64) = (0, 0x20_0000);
/// Region B, after a 64 KiB hole (bytes).
pub const B: (u64, u64) = (0x21_0000, 0x25_0000);
/// End of the rings the handshake lays out from `RINGS_BASE` (bytes).
pub const RINGS_END: u64 = 0x1_0000;

/// `RKT_FUZZ_DEBUG=1`: the targets print each step's outcome (for checking seeds).
pub fn debug() -> bool {
    static D: OnceLock<bool> = OnceLock::new();
    *D.get_or_init(|| std::env::var_os("RKT_FUZZ_DEBUG").is_some())
}

/// The pattern byte at guest address `a` (`salt` tells one target's pattern from another's).
pub fn pattern(a: u64, salt: u8) -> u8 {
    (a as u8) ^ ((a >> 8) as u8).rotate_left(3) ^ salt
}

/// Guest memory of regions [`A`] and [`B`].
pub fn memory() -> GuestMem {
    guest_memory_with(&[(A.0, (A.1 - A.0) as usize), (B.0, (B.1 - B.0) as usize)])
}

/// Whether `[addr, addr + len)` lies inside one region (an empty buffer: `addr` inside one),
/// as the devices' chain validation requires.
pub fn in_memory(addr: u64, len: u32) -> bool {
    [A, B].iter().any(|&(s, e)| {
        addr >= s && addr < e && addr.checked_add(u64::from(len)).is_some_and(|end| end <= e)
    })
}

/// One descriptor: guest address, length, device-writable.
#[derive(Debug, Clone, Copy)]
pub struct Desc {
    /// Guest address.
    pub addr: u64,
    /// Bytes.
    pub len: u32,
    /// Device-writable.
    pub write: bool,
}

/// How a chain is broken (the device must need a reset on meeting it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// Not broken.
    None,
    /// The last descriptor says NEXT, to an index past the table.
    Link,
    /// A descriptor has the INDIRECT flag.
    Indirect,
}

/// A chain the driver made available.
#[derive(Debug)]
pub struct Chain {
    /// Its head's index in the descriptor table.
    pub head: u16,
    /// Its descriptors, in order.
    pub descs: Vec<Desc>,
    /// How it is broken.
    pub brk: Break,
}

impl Chain {
    /// Whether the device must refuse the whole queue over it.
    pub fn malformed(&self) -> bool {
        self.brk != Break::None || self.descs.iter().any(|d| !in_memory(d.addr, d.len))
    }
}

/// What guest memory `[0, B.1)` must hold (the hole's bytes unused).
#[derive(Debug, Clone)]
pub struct Shadow(Vec<u8>);

impl Shadow {
    /// The pattern of `salt` over `[0, B.1)`.
    pub fn pattern(salt: u8) -> Shadow {
        Shadow((0..B.1).map(|a| pattern(a, salt)).collect())
    }

    /// Writes the whole shadow into `mem` (both regions): a run's starting memory.
    pub fn fill(&self, mem: &GuestMem) {
        mem.write_slice(&self.0[..A.1 as usize], GuestAddress(A.0))
            .expect("fill A");
        mem.write_slice(&self.0[B.0 as usize..], GuestAddress(B.0))
            .expect("fill B");
    }

    /// Writes `data` to `mem` and the shadow (skipping what is outside memory).
    pub fn put(&mut self, mem: &GuestMem, addr: u64, data: &[u8]) {
        if data.is_empty() || !in_memory(addr, data.len() as u32) {
            return;
        }
        mem.write_slice(data, GuestAddress(addr))
            .expect("write guest memory");
        let at = addr as usize;
        self.0[at..at + data.len()].copy_from_slice(data);
    }

    /// Compares `mem` with the shadow over `[addr, addr + len)`; panics naming `what`.
    pub fn check(&self, mem: &GuestMem, addr: u64, len: u64, what: &str) {
        if len == 0 {
            return;
        }
        let mut got = vec![0u8; len as usize];
        mem.read_slice(&mut got, GuestAddress(addr))
            .expect("read guest memory");
        let want = &self.0[addr as usize..(addr + len) as usize];
        if got != want {
            let i = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
            panic!(
                "{what}: guest memory at {:#x} is {:#x}, expected {:#x}",
                addr + i as u64,
                got[i],
                want[i]
            );
        }
    }
}

impl Deref for Shadow {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for Shadow {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}
