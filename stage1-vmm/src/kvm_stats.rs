//! KVM's own counters of a vCPU (`KVM_GET_STATS_FD`, Linux 5.14 and later): the exits KVM
//! handles without returning to the VMM (nested page faults, MSRs and CPUID, `hlt`, the
//! in-kernel LAPIC and IO-APIC, interrupt windows), which the exit profile of
//! [`crate::exit_stats`] (the exits that reach the VMM) cannot see. A vCPU's statistics file
//! is opened when the vCPU is made (before any confinement) and read once when the VM ends,
//! only when the exit profile is asked for. See docs/vmm.md ("Exit profile").

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};

use kvm_ioctls::VcpuFd;

use crate::bytes::{u16_at, u32_at, u64_at};

/// `KVM_GET_STATS_FD`, `_IO(KVMIO, 0xce)`: a vCPU's (or VM's) binary statistics file.
const KVM_GET_STATS_FD: libc::c_ulong = 0xae_ce;
/// Largest statistics file read, in bytes (Linux 6.1's x86 vCPU file is about 3 KiB).
const MAX_FILE: u64 = 64 << 10;
/// `kvm_stats_header`: flags, name_size, num_desc, id_offset, desc_offset, data_offset (u32s).
const HEADER_LEN: usize = 24;
/// `kvm_stats_desc` before its name: flags (u32), exponent (i16), size (u16), offset (u32),
/// bucket_size (u32).
const DESC_FIXED_LEN: usize = 16;
/// The low four bits of a descriptor's flags: the statistic's type.
const TYPE_MASK: u32 = 0xf;
/// A counter that only grows (`KVM_STATS_TYPE_CUMULATIVE`); instant values, peaks and
/// histograms are left out.
const TYPE_CUMULATIVE: u32 = 0;

/// Counters by KVM's name (`exits`, `halt_exits`, `pf_taken`, `insn_emulation`, ...): the
/// non-zero cumulative ones, summed over vCPUs.
pub type KvmCounters = BTreeMap<String, u64>;

/// Opens `vcpu`'s statistics file. Fails on kernels before 5.14 (the caller goes without).
pub fn open(vcpu: &VcpuFd) -> std::io::Result<File> {
    // SAFETY: KVM_GET_STATS_FD takes no argument; it returns a new descriptor or -1.
    let fd = unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_GET_STATS_FD as _) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor the ioctl just made for this process and nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Reads a statistics file from its start (a file freshly opened by [`open`]) and adds its
/// counters into `into`.
pub fn read_into(file: &mut File, into: &mut KvmCounters) -> std::io::Result<()> {
    let mut buf = Vec::new();
    file.take(MAX_FILE).read_to_end(&mut buf)?;
    let counters = parse(&buf).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "malformed KVM statistics file",
        )
    })?;
    for (name, n) in counters {
        *into.entry(name).or_insert(0) += n;
    }
    Ok(())
}

/// The non-zero single-value cumulative counters of a statistics file's bytes; `None` when a
/// header, descriptor or value lies outside `buf`.
pub fn parse(buf: &[u8]) -> Option<KvmCounters> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    let name_size = u32_at(buf, 4)? as usize;
    let num_desc = u32_at(buf, 8)? as usize;
    let desc_offset = u32_at(buf, 16)? as usize;
    let data_offset = u32_at(buf, 20)? as usize;
    let stride = DESC_FIXED_LEN.checked_add(name_size)?;
    let mut out = KvmCounters::new();
    for i in 0..num_desc {
        let d = desc_offset.checked_add(i.checked_mul(stride)?)?;
        let flags = u32_at(buf, d)?;
        let size = u16_at(buf, d.checked_add(6)?)?;
        let offset = u32_at(buf, d.checked_add(8)?)? as usize;
        let raw = buf.get(d.checked_add(DESC_FIXED_LEN)?..d.checked_add(stride)?)?;
        if flags & TYPE_MASK != TYPE_CUMULATIVE || size != 1 {
            continue;
        }
        let name = raw.split(|b| *b == 0).next().unwrap_or_default();
        let value = u64_at(buf, data_offset.checked_add(offset)?)?;
        if value > 0 {
            out.insert(String::from_utf8_lossy(name).into_owned(), value);
        }
    }
    Some(out)
}

/// The counters as table lines, most frequent first: `count  name`.
pub fn table(counters: &KvmCounters) -> Vec<String> {
    crate::exit_stats::most_frequent_first(counters)
        .into_iter()
        .map(|(name, n)| format!("{n:>8}  kvm {name}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A statistics file as KVM lays it out: header, id, descriptors, data.
    fn file(stats: &[(&str, u32, u16, &[u64])]) -> Vec<u8> {
        let name_size = 48usize;
        let desc_offset = HEADER_LEN + 16;
        let data_offset = desc_offset + stats.len() * (DESC_FIXED_LEN + name_size);
        let mut buf = Vec::new();
        for v in [
            0u32,
            name_size as u32,
            stats.len() as u32,
            HEADER_LEN as u32,
            desc_offset as u32,
            data_offset as u32,
        ] {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        buf.resize(desc_offset, 0);
        let mut data = Vec::new();
        for (name, flags, size, values) in stats {
            buf.extend_from_slice(&flags.to_le_bytes());
            buf.extend_from_slice(&0i16.to_le_bytes());
            buf.extend_from_slice(&size.to_le_bytes());
            buf.extend_from_slice(&((data.len() * 8) as u32).to_le_bytes());
            buf.extend_from_slice(&0u32.to_le_bytes());
            let mut n = name.as_bytes().to_vec();
            n.resize(name_size, 0);
            buf.extend_from_slice(&n);
            data.extend_from_slice(values);
        }
        for v in data {
            buf.extend_from_slice(&v.to_le_bytes());
        }
        buf
    }

    #[test]
    fn keeps_non_zero_cumulative_counters() {
        let buf = file(&[
            ("exits", TYPE_CUMULATIVE, 1, &[1200]),
            ("halt_exits", TYPE_CUMULATIVE, 1, &[0]),
            ("guest_mode", 1, 1, &[1]),        // instant
            ("halt_poll_hist", 4, 2, &[3, 4]), // histogram
            ("pf_taken", TYPE_CUMULATIVE, 1, &[77]),
        ]);
        let c = parse(&buf).expect("parses");
        assert_eq!(
            c,
            KvmCounters::from([("exits".into(), 1200), ("pf_taken".into(), 77)])
        );
        let t = table(&c);
        assert!(t[0].trim_start().starts_with("1200") && t[0].ends_with("kvm exits"));
    }

    #[test]
    fn refuses_a_file_cut_short() {
        let buf = file(&[("exits", TYPE_CUMULATIVE, 1, &[5])]);
        for cut in [0, HEADER_LEN - 1, HEADER_LEN + 20, buf.len() - 1] {
            assert_eq!(parse(&buf[..cut]), None, "cut at {cut}");
        }
    }
}
