//! The Intel MultiProcessor Specification 1.4 table: how a guest booted with `acpi=off` finds
//! its CPUs, the ISA bus, the IOAPIC and the legacy IRQ routing. Built byte by byte (no unsafe
//! casts), placed in the reserved BIOS area at 0xf0000, one of the places Linux scans for the
//! floating pointer (the EBDA's single KiB would hold only ~37 processor entries).

use thiserror::Error;
use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMem;
use crate::memory::{IOAPIC_START, LAPIC_START, MPTABLE_START};

/// Most vCPUs an MP table (8-bit APIC IDs, IOAPIC ID after them) can describe here.
pub const MAX_CPUS: u8 = 254;
/// Number of IOAPIC pins KVM's in-kernel IOAPIC has.
pub const IOAPIC_PINS: u8 = 24;
/// Local APIC version reported for each CPU.
const APIC_VERSION: u8 = 0x14;
/// IOAPIC version reported.
const IOAPIC_VERSION: u8 = 0x11;
/// CPU signature (family 6) reported in processor entries.
const CPU_STEPPING: u32 = 0x600;
/// CPUID feature flags reported in processor entries: FPU and APIC.
const CPU_FEATURES: u32 = 0x201;
/// Processor entry flag: enabled.
const CPU_ENABLED: u8 = 1;
/// Processor entry flag: bootstrap processor.
const CPU_BSP: u8 = 2;
/// MP spec revision 1.4.
const MP_SPEC_REV: u8 = 4;

/// Errors writing the MP table.
#[derive(Debug, Error)]
pub enum MptableError {
    /// Zero CPUs or more than [`MAX_CPUS`].
    #[error("cannot describe {0} vCPUs in an MP table (1 to 254)")]
    BadCpuCount(u8),
    /// The table does not fit in guest memory.
    #[error("cannot write the MP table to guest memory")]
    Write(#[source] vm_memory::GuestMemoryError),
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
}

/// The MP floating pointer plus configuration table for `cpus` vCPUs, to be placed at `addr`.
pub fn build(cpus: u8, addr: u64) -> Result<Vec<u8>, MptableError> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(MptableError::BadCpuCount(cpus));
    }
    let ioapic_id = cpus + 1;
    let table_addr = addr + 16;

    // Configuration table entries.
    let mut entries = Vec::new();
    for id in 0..cpus {
        let flags = CPU_ENABLED | if id == 0 { CPU_BSP } else { 0 };
        entries.extend_from_slice(&[0, id, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_STEPPING.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
    }
    // Bus 0: ISA.
    entries.extend_from_slice(&[1, 0]);
    entries.extend_from_slice(b"ISA   ");
    // The IOAPIC, usable.
    entries.extend_from_slice(&[2, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    // ISA IRQ i -> IOAPIC pin i (type INT, conforming polarity and trigger).
    for irq in 0..IOAPIC_PINS {
        entries.extend_from_slice(&[3, 0, 0, 0, 0, irq, ioapic_id, irq]);
    }
    // Local interrupts: ExtINT to LINT0 of the BSP, NMI to LINT1 of every CPU.
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    let entry_count = u16::from(cpus) + 1 + 1 + u16::from(IOAPIC_PINS) + 2;

    let mut table = Vec::new();
    table.extend_from_slice(b"PCMP");
    let len = 44 + entries.len();
    table.extend_from_slice(&(len as u16).to_le_bytes());
    table.push(MP_SPEC_REV);
    table.push(0); // checksum, filled below
    table.extend_from_slice(b"RKT-RS  "); // OEM id, 8 bytes
    table.extend_from_slice(b"STAGE1-VMM  "); // product id, 12 bytes
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&entry_count.to_le_bytes());
    table.extend_from_slice(&(LAPIC_START as u32).to_le_bytes());
    table.extend_from_slice(&0u32.to_le_bytes()); // extended table length + checksum + reserved
    table.extend_from_slice(&entries);
    table[7] = 0u8.wrapping_sub(checksum(&table));

    let mut mpf = Vec::with_capacity(16);
    mpf.extend_from_slice(b"_MP_");
    mpf.extend_from_slice(&(table_addr as u32).to_le_bytes());
    mpf.push(1); // length in 16-byte units
    mpf.push(MP_SPEC_REV);
    mpf.push(0); // checksum
    mpf.extend_from_slice(&[0; 5]); // feature bytes: 0 = configuration table present
    mpf[10] = 0u8.wrapping_sub(checksum(&mpf));

    mpf.extend_from_slice(&table);
    Ok(mpf)
}

/// Writes the MP table for `cpus` vCPUs at [`MPTABLE_START`].
pub fn setup(mem: &GuestMem, cpus: u8) -> Result<(), MptableError> {
    let bytes = build(cpus, MPTABLE_START)?;
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(MptableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::HIMEM_START;

    #[test]
    fn checksums_are_zero() {
        for cpus in [1u8, 2, 8, MAX_CPUS] {
            let b = build(cpus, MPTABLE_START).expect("builds");
            assert_eq!(&b[0..4], b"_MP_");
            assert_eq!(checksum(&b[0..16]), 0, "floating pointer checksum");
            let table = &b[16..];
            assert_eq!(&table[0..4], b"PCMP");
            let len = u16::from_le_bytes([table[4], table[5]]) as usize;
            assert_eq!(len, table.len());
            assert_eq!(checksum(table), 0, "table checksum");
            let count = u16::from_le_bytes([table[34], table[35]]);
            assert_eq!(count, u16::from(cpus) + 28);
        }
    }

    #[test]
    fn pointer_points_at_table_and_bsp_is_first() {
        let b = build(2, MPTABLE_START).expect("builds");
        let ptr = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        assert_eq!(u64::from(ptr), MPTABLE_START + 16);
        // First processor entry: type 0, APIC ID 0, enabled + BSP.
        assert_eq!(&b[16 + 44..16 + 44 + 4], &[0, 0, APIC_VERSION, 3]);
        assert_eq!(&b[16 + 64..16 + 64 + 4], &[0, 1, APIC_VERSION, 1]);
    }

    #[test]
    fn rejects_bad_counts() {
        assert!(build(0, MPTABLE_START).is_err());
        assert!(build(255, MPTABLE_START).is_err());
    }

    #[test]
    fn fits_in_the_bios_area() {
        let b = build(MAX_CPUS, MPTABLE_START).expect("builds");
        assert!(MPTABLE_START + b.len() as u64 <= HIMEM_START);
    }
}
