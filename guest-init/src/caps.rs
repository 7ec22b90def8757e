//! Linux capabilities of an app: names to numbers, the bounding set reduced to the plan's list,
//! then permitted/effective/inheritable (and ambient for non-root users) set with `capset`.
//! Runs in the forked child right before `execve`.

/// Capability names in kernel number order (`CAP_CHOWN` = 0 ... `CAP_CHECKPOINT_RESTORE` = 40).
pub const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// An unknown capability name in the plan.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown capability {0:?}")]
pub struct UnknownCap(pub String);

/// A set of capabilities as a 64-bit mask (bit N = capability N).
pub type CapMask = u64;

/// Parses `CAP_X` / `x` names into a mask.
pub fn parse_caps(names: &[String]) -> Result<CapMask, UnknownCap> {
    let mut mask = 0u64;
    for n in names {
        let up = n.to_ascii_uppercase();
        let full = if up.starts_with("CAP_") {
            up
        } else {
            format!("CAP_{up}")
        };
        let idx = CAP_NAMES
            .iter()
            .position(|c| *c == full)
            .ok_or_else(|| UnknownCap(n.clone()))?;
        mask |= 1u64 << idx;
    }
    Ok(mask)
}

/// The highest capability number the running kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Kernel `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// Kernel `struct __user_cap_data_struct` (two of them for version 3).
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`.
const CAP_V3: u32 = 0x2008_0522;

fn capget() -> std::io::Result<[CapData; 2]> {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: hdr and data are valid, properly sized kernel structs for version 3.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(data)
}

fn capset(eff: CapMask, perm: CapMask, inh: CapMask) -> std::io::Result<()> {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: eff as u32,
            permitted: perm as u32,
            inheritable: inh as u32,
        },
        CapData {
            effective: (eff >> 32) as u32,
            permitted: (perm >> 32) as u32,
            inheritable: (inh >> 32) as u32,
        },
    ];
    // SAFETY: hdr and data are valid kernel structs for version 3; the kernel only reads data.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn prctl(op: libc::c_int, a: libc::c_ulong, b: libc::c_ulong) -> std::io::Result<()> {
    // SAFETY: plain prctl with integer arguments; the result is checked.
    let r = unsafe { libc::prctl(op, a, b, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Step 1 (as root, before changing uid): drop every capability not in `keep` from the bounding
/// set and ask the kernel to keep permitted capabilities across the uid change.
pub fn drop_bounding(keep: CapMask) -> std::io::Result<()> {
    for cap in 0..=last_cap().min(63) {
        if keep & (1u64 << cap) == 0 {
            match prctl(libc::PR_CAPBSET_DROP, cap.into(), 0) {
                Ok(()) => {}
                // Capabilities the kernel does not know cannot be dropped and do not matter.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
    }
    prctl(libc::PR_SET_KEEPCAPS, 1, 0)
}

/// Step 2 (after setuid/setgid): set effective = permitted = inheritable = `keep` (limited to
/// what the process still has), raise ambient capabilities for non-root users, and set
/// `no_new_privs` if asked.
pub fn apply_sets(keep: CapMask, uid: u32, no_new_privs: bool) -> std::io::Result<()> {
    let cur = capget()?;
    let permitted = u64::from(cur[0].permitted) | (u64::from(cur[1].permitted) << 32);
    let set = keep & permitted;
    capset(set, set, set)?;
    if uid != 0 {
        for cap in 0..=last_cap().min(63) {
            if set & (1u64 << cap) != 0 {
                // Ambient capabilities need Linux 4.3; older kernels just lose them.
                let _ = prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as _,
                    cap.into(),
                );
            }
        }
    }
    prctl(libc::PR_SET_KEEPCAPS, 0, 0)?;
    if no_new_privs {
        prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names() {
        let m =
            parse_caps(&["CAP_CHOWN".into(), "net_raw".into(), "CAP_SYS_ADMIN".into()]).unwrap();
        assert_eq!(m, 1 | (1 << 13) | (1 << 21));
        assert_eq!(
            parse_caps(&["CAP_BOGUS".into()]),
            Err(UnknownCap("CAP_BOGUS".into()))
        );
        assert_eq!(CAP_NAMES[40], "CAP_CHECKPOINT_RESTORE");
    }
}
