//! The VM exit profile: each vCPU thread counts its exits by [`ExitKind`] into a private map
//! ([`crate::vcpu::run_loop`]: no shared cache line on the exit path), merged when the thread
//! ends, and printed at the VM's end as a table (`RKT_VMM_EXIT_STATS=1`, or the debug log) with the port or
//! device each exit went to. See docs/vmm.md ("Exit profile").

use crate::devices::legacy::i8042::I8042_DATA_PORT;
use crate::devices::legacy::serial::{COM1_PORT, COM2_PORT, UART_PORTS};
use crate::vcpu::{ExitCounts, ExitKind};

/// Set to `1` to print the exit table on stderr when the VM ends (pods and `boot`).
pub const EXIT_STATS_ENV: &str = "RKT_VMM_EXIT_STATS";

/// Set to `1` to print timings and the exit table on stderr after `stage1-vmm boot`.
pub const STATS_ENV: &str = "RKT_VMM_STATS";

/// Whether [`EXIT_STATS_ENV`] asks for the table.
pub fn enabled() -> bool {
    std::env::var_os(EXIT_STATS_ENV).is_some_and(|v| v == "1")
}

/// Whether [`STATS_ENV`] asks for the timings and the table.
pub fn timings_enabled() -> bool {
    std::env::var_os(STATS_ENV).is_some_and(|v| v == "1")
}

/// Whether anything will print the exit table: [`EXIT_STATS_ENV`], [`STATS_ENV`] or the debug
/// log.
pub fn wanted() -> bool {
    enabled() || timings_enabled() || log::log_enabled!(log::Level::Debug)
}

/// Adds `more` into `all`.
pub fn merge(all: &mut ExitCounts, more: &ExitCounts) {
    for (k, n) in more {
        *all.entry(*k).or_insert(0) += n;
    }
}

/// What sits at `port` on a PC (ours, or what the guest probes for).
pub fn port_name(port: u16) -> &'static str {
    let uart = |base: u16| (base..base + UART_PORTS).contains(&port);
    match port {
        _ if uart(COM1_PORT) => "COM1 (console)",
        _ if uart(COM2_PORT) => "COM2 (control)",
        _ if uart(0x3e8) => "COM3 probe",
        _ if uart(0x2e8) => "COM4 probe",
        p if p == I8042_DATA_PORT || p == I8042_DATA_PORT + 4 => "i8042",
        0x61 => "PC speaker / PIT gate",
        0x40..=0x43 => "PIT",
        0x70 | 0x71 => "RTC/CMOS",
        0x80 => "POST / io delay",
        0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1 => "PIC",
        0xcf8..=0xcff => "PCI config",
        0x3c0..=0x3df => "VGA",
        0x1f0..=0x1f7 | 0x170..=0x177 | 0x3f6 | 0x376 => "IDE probe",
        0x278..=0x27f | 0x378..=0x37f | 0x3bc..=0x3be => "parallel port probe",
        _ => "",
    }
}

/// The entries of a count map, most frequent first (ties in key order).
pub fn most_frequent_first<K: Ord>(counts: &std::collections::BTreeMap<K, u64>) -> Vec<(&K, &u64)> {
    let mut by: Vec<(&K, &u64)> = counts.iter().collect();
    by.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    by
}

/// The exit table: a total line, then one line per kind, most frequent first:
/// `count  kind  target  (what)`. `mmio_devices` names the virtio-mmio slots (base, device).
pub fn table(counts: &ExitCounts, mmio_devices: &[(u64, &'static str)]) -> Vec<String> {
    let total: u64 = counts.values().sum();
    let by = most_frequent_first(counts);
    let device = |page: u64| {
        mmio_devices
            .iter()
            .find(|(base, _)| *base == page)
            .map_or("", |(_, name)| *name)
    };
    let mut out = vec![format!("{total} VM exits")];
    for (kind, n) in by {
        let (what, target, name) = match *kind {
            ExitKind::PioIn(p) => ("pio-in", format!("{p:#x}"), port_name(p)),
            ExitKind::PioOut(p) => ("pio-out", format!("{p:#x}"), port_name(p)),
            ExitKind::MmioRead(a) => ("mmio-read", format!("{a:#x}"), device(a)),
            ExitKind::MmioWrite(a) => ("mmio-write", format!("{a:#x}"), device(a)),
            ExitKind::Hlt => ("hlt", String::new(), ""),
            ExitKind::Shutdown => ("shutdown", String::new(), "triple fault"),
            ExitKind::SystemEvent(t) => ("system-event", t.to_string(), ""),
            ExitKind::Interrupted => ("interrupted", String::new(), "kick"),
            ExitKind::Spurious => ("spurious", String::new(), ""),
            ExitKind::Other => ("other", String::new(), ""),
        };
        let name = if name.is_empty() {
            String::new()
        } else {
            format!("  ({name})")
        };
        out.push(format!("{n:>8}  {what:<12} {target:<12}{name}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_sorts_and_names() {
        let mut a = ExitCounts::from([(ExitKind::PioOut(0x3f8), 3)]);
        let b = ExitCounts::from([
            (ExitKind::MmioWrite(0xd000_0000), 1),
            (ExitKind::PioIn(0x3f8 + 5), 1),
        ]);
        merge(&mut a, &b);
        let t = table(&a, &[(0xd000_0000, "virtio-fs")]);
        assert_eq!(t[0], "5 VM exits");
        assert!(t[1].contains("pio-out") && t[1].contains("0x3f8") && t[1].contains("COM1"));
        assert!(t[1].trim_start().starts_with('3'));
        assert!(t
            .iter()
            .any(|l| l.contains("mmio-write") && l.contains("virtio-fs")));
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn ports_have_names() {
        assert_eq!(port_name(0x2fd), "COM2 (control)");
        assert_eq!(port_name(0x64), "i8042");
        assert_eq!(port_name(0x71), "RTC/CMOS");
        assert_eq!(port_name(0x1234), "");
    }
}
