//! Linux capabilities of an app process. The sets are data ([`app_sets`]): the bounding set
//! is the plan's list; a root app also holds it (permitted, effective, inheritable); a
//! non-root app holds nothing unless the list came from `os/linux/capabilities-retain-set`,
//! and then holds it in every set, ambient included (rkt's rule). They are applied in the
//! forked child right before `execve`: [`drop_bounding`] as root, then [`apply_sets`] after
//! the uid change. Names and numbers come from the shared `linux-caps` table.

pub use linux_caps::CapMask;

/// An unknown capability name in the plan.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown capability {0:?}")]
pub struct UnknownCap(pub String);

/// Parses `CAP_X` / `x` names into a mask.
pub fn parse_caps(names: &[String]) -> Result<CapMask, UnknownCap> {
    linux_caps::mask(names).map_err(UnknownCap)
}

/// The capability sets of one app process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapSets {
    /// Bounding set: the most the process (and anything it execs) can ever hold.
    pub bounding: CapMask,
    /// Permitted, effective and inheritable sets.
    pub held: CapMask,
    /// Ambient set (kept across `execve` by a non-root process).
    pub ambient: CapMask,
}

/// The sets for an app running as `uid` with the plan's capability list `caps`; `retained`:
/// the list came from a retain-set isolator.
pub fn app_sets(caps: CapMask, uid: u32, retained: bool) -> CapSets {
    let root = uid == 0;
    CapSets {
        bounding: caps,
        held: if root || retained { caps } else { 0 },
        ambient: if !root && retained { caps } else { 0 },
    }
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

/// Whether capability number `cap` is in this thread's effective set (false if it cannot be
/// read).
pub fn effective_has(cap: u32) -> bool {
    let Ok(cur) = capget() else { return false };
    let eff = u64::from(cur[0].effective) | (u64::from(cur[1].effective) << 32);
    cap < 64 && eff & (1u64 << cap) != 0
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

/// Step 2 (after setuid/setgid): set permitted = effective = inheritable = `sets.held`
/// (limited to what the process still has), the ambient set to exactly `sets.ambient`, drop
/// `keepcaps`, and set `no_new_privs` if asked.
pub fn apply_sets(sets: CapSets, no_new_privs: bool) -> std::io::Result<()> {
    let cur = capget()?;
    let permitted = u64::from(cur[0].permitted) | (u64::from(cur[1].permitted) << 32);
    let held = sets.held & permitted;
    capset(held, held, held)?;
    let ambient_op =
        |op: libc::c_int, cap: libc::c_ulong| prctl(libc::PR_CAP_AMBIENT, op as libc::c_ulong, cap);
    match ambient_op(libc::PR_CAP_AMBIENT_CLEAR_ALL, 0) {
        // Linux < 4.3 has no ambient set: nothing to clear, nothing can be raised.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => return Err(e),
        Ok(()) => {
            for cap in 0..=last_cap().min(63) {
                if sets.ambient & held & (1u64 << cap) != 0 {
                    ambient_op(libc::PR_CAP_AMBIENT_RAISE, cap.into())?;
                }
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
    }

    #[test]
    fn sets_by_user_and_retain() {
        let caps = parse_caps(&["CAP_DAC_OVERRIDE".into(), "CAP_KILL".into()]).unwrap();
        let root = app_sets(caps, 0, false);
        assert_eq!((root.bounding, root.held, root.ambient), (caps, caps, 0));
        assert_eq!(
            app_sets(caps, 0, true),
            root,
            "root ignores the retain flag"
        );
        let nobody = app_sets(caps, 65534, false);
        assert_eq!((nobody.bounding, nobody.held, nobody.ambient), (caps, 0, 0));
        let kept = app_sets(caps, 65534, true);
        assert_eq!((kept.bounding, kept.held, kept.ambient), (caps, caps, caps));
    }
}
