//! Linux capability names and numbers, and rkt's default capability set for apps: the one
//! table shared by the manifest validator (`appc`) and PID 1 of a pod (`guest-init`).
//! No dependencies, so a static PID 1 can use it.

#![cfg_attr(test, allow(clippy::unwrap_used))]

/// A set of capabilities as a 64-bit mask (bit N = capability number N).
pub type CapMask = u64;

/// Every capability name, in kernel number order (`CAP_CHOWN` = 0 ...
/// `CAP_CHECKPOINT_RESTORE` = 40).
pub const NAMES: [&str; 41] = [
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

/// rkt's default capability bounding set for apps (what `os/linux/capabilities-remove-set`
/// removes from, and what a root app holds when no isolator says otherwise).
pub const DEFAULT: [&str; 14] = [
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETFCAP",
    "CAP_SYS_CHROOT",
];

/// The number of a canonical name (`CAP_CHOWN` -> 0).
pub fn number(name: &str) -> Option<u32> {
    NAMES
        .iter()
        .position(|n| *n == name)
        .and_then(|i| u32::try_from(i).ok())
}

/// The canonical name of `name`, accepting any case and an optional `CAP_` prefix
/// (`net_admin` -> `CAP_NET_ADMIN`); `None` for an unknown capability.
pub fn canonical(name: &str) -> Option<&'static str> {
    let up = name.to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    NAMES.iter().find(|n| **n == full).copied()
}

/// The mask of `names` (canonical or not, see [`canonical`]); the first unknown name is the
/// error.
pub fn mask<S: AsRef<str>>(names: &[S]) -> Result<CapMask, String> {
    let mut m: CapMask = 0;
    for n in names {
        let n = n.as_ref();
        let num = canonical(n).and_then(number).ok_or_else(|| n.to_string())?;
        m |= 1 << num;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_names_and_masks() {
        assert_eq!(number("CAP_CHOWN"), Some(0));
        assert_eq!(number("CAP_SYS_CHROOT"), Some(18));
        assert_eq!(number("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(number("cap_chown"), None);
        assert_eq!(canonical("net_admin"), Some("CAP_NET_ADMIN"));
        assert_eq!(canonical("Cap_Sys_Admin"), Some("CAP_SYS_ADMIN"));
        assert_eq!(canonical("CAP_FLY"), None);
        assert_eq!(
            mask(&["CAP_CHOWN", "net_raw", "CAP_SYS_ADMIN"]),
            Ok(1 | (1 << 13) | (1 << 21))
        );
        assert_eq!(mask(&["CAP_BOGUS"]), Err("CAP_BOGUS".to_string()));
        assert!(DEFAULT.iter().all(|c| number(c).is_some()));
    }
}
