//! Free page reports from the input against guest memory with a hole: `discard_range` with
//! addresses steered at region edges, the hole, unaligned and wrapping values, and lengths of
//! every shape. It must never touch memory outside the reported range: after each report, every
//! page of both regions holds its pattern, except the pages of a range it accepted, which read
//! zero (and it accepts only aligned power-of-two page counts inside one region).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rkt_fuzz::Input;
use stage1_vmm::devices::virtio::balloon::{discard_range, PAGE_SIZE};
use stage1_vmm::devices::virtio::test_utils::guest_memory_with;
use stage1_vmm::memory::GuestMem;
use vm_memory::{Bytes, GuestAddress};

/// Region A (bytes).
const A: (u64, usize) = (0, 0x8_0000);
/// Region B, after a 64 KiB hole (bytes).
const B: (u64, usize) = (0x9_0000, 0x2_0000);
/// Reports per run (count).
const MAX_REPORTS: usize = 16;

fn mem() -> &'static GuestMem {
    static M: OnceLock<GuestMem> = OnceLock::new();
    M.get_or_init(|| guest_memory_with(&[A, B]))
}

/// The pattern byte of the page at `addr`.
fn pattern(addr: u64) -> u8 {
    (addr / PAGE_SIZE) as u8 | 1
}

fn fill(mem: &GuestMem) {
    for (start, len) in [A, B] {
        for page in (start..start + len as u64).step_by(PAGE_SIZE as usize) {
            mem.write_slice(&[pattern(page); PAGE_SIZE as usize], GuestAddress(page))
                .expect("fill");
        }
    }
}

fn address(inp: &mut Input) -> u64 {
    match inp.u8() & 7 {
        0 | 1 => u64::from(inp.u16()) * PAGE_SIZE % A.1 as u64,
        2 => B.0 + u64::from(inp.u8()) * PAGE_SIZE,
        3 => A.1 as u64 - u64::from(inp.u8()) * PAGE_SIZE,
        4 => B.0 + B.1 as u64 - u64::from(inp.u8()) * PAGE_SIZE,
        5 => u64::from(inp.u32()),
        _ => inp.u64(),
    }
}

fn length(inp: &mut Input) -> u64 {
    match inp.u8() & 3 {
        0 => PAGE_SIZE << (inp.u8() % 24),
        1 => u64::from(inp.u8()) * PAGE_SIZE,
        _ => u64::from(inp.u32()),
    }
}

fuzz_target!(|data: &[u8]| {
    let mem = mem();
    fill(mem);
    let mut inp = Input::new(data);
    let mut zeroed: Vec<(u64, u64)> = Vec::new();
    for _ in 0..MAX_REPORTS {
        if inp.is_empty() {
            break;
        }
        let (addr, len) = (address(&mut inp), length(&mut inp));
        if discard_range(mem, GuestAddress(addr), len).is_ok() {
            assert!(addr % PAGE_SIZE == 0 && len % PAGE_SIZE == 0);
            assert!((len / PAGE_SIZE).is_power_of_two());
            let inside = |(s, l): (u64, usize)| addr >= s && addr + len <= s + l as u64;
            assert!(inside(A) || inside(B), "{addr:#x}+{len:#x} accepted");
            zeroed.push((addr, len));
        }
    }
    let mut page = [0u8; PAGE_SIZE as usize];
    for (start, len) in [A, B] {
        for p in (start..start + len as u64).step_by(PAGE_SIZE as usize) {
            mem.read_slice(&mut page, GuestAddress(p)).expect("read");
            let want = if zeroed.iter().any(|(a, l)| p >= *a && p < a + l) {
                0
            } else {
                pattern(p)
            };
            assert!(page.iter().all(|b| *b == want), "page {p:#x}");
        }
    }
});
