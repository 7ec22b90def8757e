//! An app's system call filter, resolved from its `os/linux/seccomp-retain-set` or
//! `-remove-set` isolator (or `--seccomp`, which replaces the image's) into the plan's
//! [`SeccompPlan`]: names and groups to x86_64 numbers ([`super::syscalls`]), the errno name to
//! its number. guest-init installs it (`app_confine::seccomp`).
//!
//! Groups: appc's `@appc.io/all` and `@appc.io/empty`; rkt's `@rkt/default-blacklist`
//! ([`DEFAULT_BLACKLIST`]) and `@rkt/default-whitelist` (every call of the table but those),
//! which `@docker/default-blacklist` and `@docker/default-whitelist` name too (rkt defined its
//! lists as Docker's); and the eight `@systemd/*` groups rkt passed on to systemd
//! ([`super::syscall_groups`]).
//! An app without a seccomp isolator gets [`default_plan`]: the blacklist, answered with
//! `EPERM`. rkt 1.x gave such apps its whitelist and `SIGSYS` instead; a whitelist written
//! before `rseq`, `clone3` or `openat2` kills today's glibc programs at their start, which a
//! blacklist of privileged and rarely needed calls cannot.

use appc::types::SeccompSet;
use pod_abi::plan::SeccompPlan;

use super::syscall_groups::SYSTEMD_GROUPS;
use super::syscalls::SYSCALLS;

/// Calls no app needs that reach privileged or attack-prone kernel code: the module, kexec,
/// mount and namespace calls, keyrings, BPF, perf, `userfaultfd`, io_uring, `ptrace` and the
/// cross-process memory calls, file handles (the "shocker" escape), clock setting, swap,
/// quotas, `reboot`, `syslog`, and obsolete or unimplemented ones. Most also need a
/// capability a default app does not hold; the filter keeps their code out of reach even of an
/// app that was given one.
pub const DEFAULT_BLACKLIST: &[&str] = &[
    "_sysctl",
    "acct",
    "add_key",
    "afs_syscall",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "fanotify_init",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "getpmsg",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "open_tree_attr",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "putpmsg",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "security",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "sysfs",
    "syslog",
    "tuxcall",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vhangup",
    "vserver",
];

/// appc's group of every call.
pub const ALL: &str = "@appc.io/all";
/// appc's empty group.
pub const EMPTY: &str = "@appc.io/empty";
/// rkt's blacklist group: [`DEFAULT_BLACKLIST`].
pub const RKT_BLACKLIST: &str = "@rkt/default-blacklist";
/// rkt's whitelist group: every call of the table but [`DEFAULT_BLACKLIST`].
pub const RKT_WHITELIST: &str = "@rkt/default-whitelist";
/// Docker's blacklist group: rkt's ([`RKT_BLACKLIST`]), as in rkt.
pub const DOCKER_BLACKLIST: &str = "@docker/default-blacklist";
/// Docker's whitelist group: rkt's ([`RKT_WHITELIST`]), as in rkt.
pub const DOCKER_WHITELIST: &str = "@docker/default-whitelist";

/// The errno of a default filter's denied calls.
pub const DEFAULT_ERRNO: &str = "EPERM";

/// Errno names (`man 3 errno`) and their numbers.
const ERRNOS: &[(&str, i32)] = &[
    ("EPERM", libc::EPERM),
    ("ENOENT", libc::ENOENT),
    ("ESRCH", libc::ESRCH),
    ("EINTR", libc::EINTR),
    ("EIO", libc::EIO),
    ("ENXIO", libc::ENXIO),
    ("E2BIG", libc::E2BIG),
    ("ENOEXEC", libc::ENOEXEC),
    ("EBADF", libc::EBADF),
    ("ECHILD", libc::ECHILD),
    ("EAGAIN", libc::EAGAIN),
    ("ENOMEM", libc::ENOMEM),
    ("EACCES", libc::EACCES),
    ("EFAULT", libc::EFAULT),
    ("ENOTBLK", libc::ENOTBLK),
    ("EBUSY", libc::EBUSY),
    ("EEXIST", libc::EEXIST),
    ("EXDEV", libc::EXDEV),
    ("ENODEV", libc::ENODEV),
    ("ENOTDIR", libc::ENOTDIR),
    ("EISDIR", libc::EISDIR),
    ("EINVAL", libc::EINVAL),
    ("ENFILE", libc::ENFILE),
    ("EMFILE", libc::EMFILE),
    ("ENOTTY", libc::ENOTTY),
    ("ETXTBSY", libc::ETXTBSY),
    ("EFBIG", libc::EFBIG),
    ("ENOSPC", libc::ENOSPC),
    ("ESPIPE", libc::ESPIPE),
    ("EROFS", libc::EROFS),
    ("EMLINK", libc::EMLINK),
    ("EPIPE", libc::EPIPE),
    ("EDOM", libc::EDOM),
    ("ERANGE", libc::ERANGE),
    ("EDEADLK", libc::EDEADLK),
    ("ENAMETOOLONG", libc::ENAMETOOLONG),
    ("ENOLCK", libc::ENOLCK),
    ("ENOSYS", libc::ENOSYS),
    ("ENOTEMPTY", libc::ENOTEMPTY),
    ("ELOOP", libc::ELOOP),
    ("EWOULDBLOCK", libc::EWOULDBLOCK),
    ("ENOMSG", libc::ENOMSG),
    ("EIDRM", libc::EIDRM),
    ("ECHRNG", libc::ECHRNG),
    ("EL2NSYNC", libc::EL2NSYNC),
    ("EL3HLT", libc::EL3HLT),
    ("EL3RST", libc::EL3RST),
    ("ELNRNG", libc::ELNRNG),
    ("EUNATCH", libc::EUNATCH),
    ("ENOCSI", libc::ENOCSI),
    ("EL2HLT", libc::EL2HLT),
    ("EBADE", libc::EBADE),
    ("EBADR", libc::EBADR),
    ("EXFULL", libc::EXFULL),
    ("ENOANO", libc::ENOANO),
    ("EBADRQC", libc::EBADRQC),
    ("EBADSLT", libc::EBADSLT),
    ("EDEADLOCK", libc::EDEADLOCK),
    ("EBFONT", libc::EBFONT),
    ("ENOSTR", libc::ENOSTR),
    ("ENODATA", libc::ENODATA),
    ("ETIME", libc::ETIME),
    ("ENOSR", libc::ENOSR),
    ("ENONET", libc::ENONET),
    ("ENOPKG", libc::ENOPKG),
    ("EREMOTE", libc::EREMOTE),
    ("ENOLINK", libc::ENOLINK),
    ("EADV", libc::EADV),
    ("ESRMNT", libc::ESRMNT),
    ("ECOMM", libc::ECOMM),
    ("EPROTO", libc::EPROTO),
    ("EMULTIHOP", libc::EMULTIHOP),
    ("EDOTDOT", libc::EDOTDOT),
    ("EBADMSG", libc::EBADMSG),
    ("EOVERFLOW", libc::EOVERFLOW),
    ("ENOTUNIQ", libc::ENOTUNIQ),
    ("EBADFD", libc::EBADFD),
    ("EREMCHG", libc::EREMCHG),
    ("ELIBACC", libc::ELIBACC),
    ("ELIBBAD", libc::ELIBBAD),
    ("ELIBSCN", libc::ELIBSCN),
    ("ELIBMAX", libc::ELIBMAX),
    ("ELIBEXEC", libc::ELIBEXEC),
    ("EILSEQ", libc::EILSEQ),
    ("ERESTART", libc::ERESTART),
    ("ESTRPIPE", libc::ESTRPIPE),
    ("EUSERS", libc::EUSERS),
    ("ENOTSOCK", libc::ENOTSOCK),
    ("EDESTADDRREQ", libc::EDESTADDRREQ),
    ("EMSGSIZE", libc::EMSGSIZE),
    ("EPROTOTYPE", libc::EPROTOTYPE),
    ("ENOPROTOOPT", libc::ENOPROTOOPT),
    ("EPROTONOSUPPORT", libc::EPROTONOSUPPORT),
    ("ESOCKTNOSUPPORT", libc::ESOCKTNOSUPPORT),
    ("EOPNOTSUPP", libc::EOPNOTSUPP),
    ("EPFNOSUPPORT", libc::EPFNOSUPPORT),
    ("EAFNOSUPPORT", libc::EAFNOSUPPORT),
    ("EADDRINUSE", libc::EADDRINUSE),
    ("EADDRNOTAVAIL", libc::EADDRNOTAVAIL),
    ("ENETDOWN", libc::ENETDOWN),
    ("ENETUNREACH", libc::ENETUNREACH),
    ("ENETRESET", libc::ENETRESET),
    ("ECONNABORTED", libc::ECONNABORTED),
    ("ECONNRESET", libc::ECONNRESET),
    ("ENOBUFS", libc::ENOBUFS),
    ("EISCONN", libc::EISCONN),
    ("ENOTCONN", libc::ENOTCONN),
    ("ESHUTDOWN", libc::ESHUTDOWN),
    ("ETOOMANYREFS", libc::ETOOMANYREFS),
    ("ETIMEDOUT", libc::ETIMEDOUT),
    ("ECONNREFUSED", libc::ECONNREFUSED),
    ("EHOSTDOWN", libc::EHOSTDOWN),
    ("EHOSTUNREACH", libc::EHOSTUNREACH),
    ("EALREADY", libc::EALREADY),
    ("EINPROGRESS", libc::EINPROGRESS),
    ("ESTALE", libc::ESTALE),
    ("EUCLEAN", libc::EUCLEAN),
    ("ENOTNAM", libc::ENOTNAM),
    ("ENAVAIL", libc::ENAVAIL),
    ("EISNAM", libc::EISNAM),
    ("EREMOTEIO", libc::EREMOTEIO),
    ("EDQUOT", libc::EDQUOT),
    ("ENOMEDIUM", libc::ENOMEDIUM),
    ("EMEDIUMTYPE", libc::EMEDIUMTYPE),
    ("ECANCELED", libc::ECANCELED),
    ("ENOKEY", libc::ENOKEY),
    ("EKEYEXPIRED", libc::EKEYEXPIRED),
    ("EKEYREVOKED", libc::EKEYREVOKED),
    ("EKEYREJECTED", libc::EKEYREJECTED),
    ("EOWNERDEAD", libc::EOWNERDEAD),
    ("ENOTRECOVERABLE", libc::ENOTRECOVERABLE),
    ("ERFKILL", libc::ERFKILL),
    ("EHWPOISON", libc::EHWPOISON),
    ("ENOTSUP", libc::ENOTSUP),
];

/// The number of system call `name`, if the x86_64 table has it.
pub fn syscall_number(name: &str) -> Option<u32> {
    SYSCALLS.iter().find(|(n, _)| *n == name).map(|(_, nr)| *nr)
}

/// The number of errno `name` (`EPERM`, `ENOSYS`, ...).
pub fn errno_number(name: &str) -> Option<u16> {
    ERRNOS
        .iter()
        .find(|(n, _)| *n == name)
        .and_then(|(_, e)| u16::try_from(*e).ok())
}

fn blacklist() -> impl Iterator<Item = u32> {
    DEFAULT_BLACKLIST.iter().filter_map(|n| syscall_number(n))
}

/// The error of a group name no table knows, listing the known ones.
fn unknown_group(group: &str) -> String {
    let mut known = vec![
        ALL,
        EMPTY,
        RKT_BLACKLIST,
        RKT_WHITELIST,
        DOCKER_BLACKLIST,
        DOCKER_WHITELIST,
    ];
    known.extend(SYSTEMD_GROUPS.iter().map(|(g, _)| *g));
    format!(
        "unknown system call group {group:?} (known: {})",
        known.join(", ")
    )
}

/// The filter of a seccomp isolator: `retain` for a retain-set. Errors name the unknown
/// call, group or errno.
pub fn resolve(retain: bool, set: &SeccompSet) -> Result<SeccompPlan, String> {
    let mut calls: Vec<u32> = Vec::new();
    for entry in &set.set {
        match entry.as_str() {
            ALL => calls.extend(SYSCALLS.iter().map(|(_, nr)| *nr)),
            EMPTY => {}
            RKT_BLACKLIST | DOCKER_BLACKLIST => calls.extend(blacklist()),
            RKT_WHITELIST | DOCKER_WHITELIST => {
                let deny: Vec<u32> = blacklist().collect();
                calls.extend(
                    SYSCALLS
                        .iter()
                        .map(|(_, nr)| *nr)
                        .filter(|nr| !deny.contains(nr)),
                );
            }
            group if group.starts_with('@') => {
                let (_, names) = SYSTEMD_GROUPS
                    .iter()
                    .find(|(g, _)| *g == group)
                    .ok_or_else(|| unknown_group(group))?;
                for name in *names {
                    calls.push(syscall_number(name).ok_or_else(|| {
                        format!("system call {name:?} of {group} is not in the x86_64 table")
                    })?);
                }
            }
            name => calls.push(
                syscall_number(name)
                    .ok_or_else(|| format!("unknown system call {name:?} (x86_64)"))?,
            ),
        }
    }
    calls.sort_unstable();
    calls.dedup();
    let errno = match &set.errno {
        None => None,
        Some(name) => Some(errno_number(name).ok_or_else(|| format!("unknown errno {name:?}"))?),
    };
    Ok(SeccompPlan {
        retain,
        errno,
        syscalls: calls,
        no_new_namespaces: false,
        fixed_projects: false,
    })
}

/// The filter of an app without a seccomp isolator: [`DEFAULT_BLACKLIST`] answered with
/// [`DEFAULT_ERRNO`], and no `clone` into a new namespace
/// ([`SeccompPlan::no_new_namespaces`]: `unshare` alone would leave that door open).
pub fn default_plan() -> SeccompPlan {
    let mut calls: Vec<u32> = blacklist().collect();
    calls.sort_unstable();
    SeccompPlan {
        retain: false,
        errno: errno_number(DEFAULT_ERRNO),
        syscalls: calls,
        no_new_namespaces: true,
        fixed_projects: false,
    }
}

/// Narrows an image's own filter to what [`default_plan`] allows too: an image may tighten
/// its app's filter but not loosen it (its remove-set is joined by the blacklist, its
/// retain-set loses the blacklisted calls, and `clone` into a new namespace stays denied).
/// Returns the names of the calls the image's filter allowed and the blacklist denies.
pub fn within_default(plan: &mut SeccompPlan) -> Vec<&'static str> {
    let denied: Vec<u32> = blacklist().collect();
    let widened: Vec<u32> = if plan.retain {
        plan.syscalls
            .iter()
            .copied()
            .filter(|c| denied.contains(c))
            .collect()
    } else {
        denied
            .iter()
            .copied()
            .filter(|c| !plan.syscalls.contains(c))
            .collect()
    };
    if plan.retain {
        plan.syscalls.retain(|c| !denied.contains(c));
    } else {
        plan.syscalls.extend(denied);
        plan.syscalls.sort_unstable();
        plan.syscalls.dedup();
    }
    plan.no_new_namespaces = true;
    SYSCALLS
        .iter()
        .filter(|(_, nr)| widened.contains(nr))
        .map(|(n, _)| *n)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn set(names: &[&str], errno: Option<&str>) -> SeccompSet {
        SeccompSet {
            set: names.iter().map(|s| s.to_string()).collect(),
            errno: errno.map(str::to_string),
        }
    }

    #[test]
    fn names_and_groups_resolve_to_numbers() {
        let p = resolve(false, &set(&["reboot", "swapon", "reboot"], Some("ENOSYS"))).unwrap();
        assert_eq!(p.syscalls, vec![167, 169]);
        assert_eq!(p.errno, Some(libc::ENOSYS as u16));
        assert!(!p.retain);
        let all = resolve(true, &set(&[ALL], None)).unwrap();
        assert_eq!(all.syscalls.len(), SYSCALLS.len());
        assert_eq!(all.errno, None);
        assert!(resolve(true, &set(&[EMPTY], None))
            .unwrap()
            .syscalls
            .is_empty());
        let white = resolve(true, &set(&[RKT_WHITELIST], None)).unwrap();
        assert_eq!(
            white.syscalls.len(),
            SYSCALLS.len() - DEFAULT_BLACKLIST.len()
        );
        assert!(!white.syscalls.contains(&165), "mount is not whitelisted");
        assert!(white.syscalls.contains(&334), "rseq is");
    }

    #[test]
    fn an_image_filter_is_narrowed_to_the_default() {
        let mount = libc::SYS_mount as u32;
        let reboot = libc::SYS_reboot as u32;
        // A remove-set of one call: the blacklist joins it.
        let mut p = resolve(false, &set(&["chmod"], Some("EACCES"))).unwrap();
        let widened = within_default(&mut p);
        assert!(
            widened.contains(&"mount") && widened.contains(&"unshare"),
            "{widened:?}"
        );
        assert!(p.syscalls.contains(&mount) && p.syscalls.contains(&reboot));
        assert!(p.syscalls.contains(&(libc::SYS_chmod as u32)));
        assert!(p.no_new_namespaces);
        assert_eq!(p.errno, Some(libc::EACCES as u16));
        // A retain-set naming mount: mount leaves it.
        let mut p = resolve(true, &set(&["read", "mount", "exit_group"], None)).unwrap();
        assert_eq!(within_default(&mut p), vec!["mount"]);
        assert!(!p.syscalls.contains(&mount));
        assert!(p.syscalls.contains(&(libc::SYS_read as u32)));
        // A remove-set holding the whole blacklist widens nothing.
        let mut p = resolve(false, &set(&[RKT_BLACKLIST], None)).unwrap();
        assert!(within_default(&mut p).is_empty());
    }

    #[test]
    fn docker_groups_are_rkts() {
        for (docker, rkt) in [
            (DOCKER_BLACKLIST, RKT_BLACKLIST),
            (DOCKER_WHITELIST, RKT_WHITELIST),
        ] {
            assert_eq!(
                resolve(true, &set(&[docker], None)).unwrap(),
                resolve(true, &set(&[rkt], None)).unwrap()
            );
        }
    }

    #[test]
    fn systemd_groups_resolve_in_full() {
        assert_eq!(SYSTEMD_GROUPS.len(), 8, "the eight groups rkt offered");
        for (group, names) in SYSTEMD_GROUPS {
            let p = resolve(false, &set(&[group], None)).unwrap();
            assert_eq!(p.syscalls.len(), names.len(), "{group}: no name twice");
        }
        let nr = |group: &str| resolve(false, &set(&[group], None)).unwrap().syscalls;
        // libc's numbers, so that the generated lists are checked against another source.
        assert!(nr("@systemd/mount").contains(&(libc::SYS_mount as u32)));
        assert!(nr("@systemd/mount").contains(&(libc::SYS_pivot_root as u32)));
        assert!(nr("@systemd/process").contains(&(libc::SYS_unshare as u32)));
        assert!(nr("@systemd/process").contains(&(libc::SYS_clone3 as u32)));
        assert!(nr("@systemd/clock").contains(&(libc::SYS_settimeofday as u32)));
        assert!(nr("@systemd/network-io").contains(&(libc::SYS_socket as u32)));
        assert!(nr("@systemd/raw-io").contains(&(libc::SYS_iopl as u32)));
        assert!(nr("@systemd/obsolete").contains(&(libc::SYS_uselib as u32)));
        assert!(nr("@systemd/default-whitelist").contains(&(libc::SYS_rseq as u32)));
        // @privileged holds systemd's nested groups (@chown, @clock, @module, @raw-io,
        // @reboot, @swap).
        let privileged = nr("@systemd/privileged");
        for call in [
            libc::SYS_chown,
            libc::SYS_adjtimex,
            libc::SYS_init_module,
            libc::SYS_ioperm,
            libc::SYS_kexec_load,
            libc::SYS_swapoff,
            libc::SYS_bpf,
        ] {
            assert!(privileged.contains(&(call as u32)), "{call}");
        }
        assert!(!privileged.contains(&(libc::SYS_read as u32)));
    }

    #[test]
    fn every_blacklisted_name_is_in_the_table() {
        for n in DEFAULT_BLACKLIST {
            assert!(syscall_number(n).is_some(), "{n}");
        }
        let d = default_plan();
        assert_eq!(d.syscalls.len(), DEFAULT_BLACKLIST.len());
        assert_eq!(d.errno, Some(libc::EPERM as u16));
        for nr in SeccompPlan::ALWAYS_ALLOWED {
            assert!(!d.syscalls.contains(&nr), "{nr}");
        }
    }

    #[test]
    fn unknown_names_groups_and_errnos_are_errors() {
        let e = resolve(false, &set(&["frobnicate"], None)).unwrap_err();
        assert!(e.contains("unknown system call \"frobnicate\""), "{e}");
        let e = resolve(false, &set(&["@docker/seccomp-default"], None)).unwrap_err();
        assert!(e.contains("unknown system call group"), "{e}");
        assert!(
            e.contains("@systemd/raw-io"),
            "the error lists the known groups: {e}"
        );
        let e = resolve(false, &set(&["reboot"], Some("EBOGUS"))).unwrap_err();
        assert!(e.contains("unknown errno \"EBOGUS\""), "{e}");
        assert_eq!(errno_number("ENOTSUP"), Some(libc::EOPNOTSUPP as u16));
    }

    #[test]
    fn the_table_matches_libc() {
        for (name, nr) in [
            ("read", libc::SYS_read),
            ("mount", libc::SYS_mount),
            ("rseq", libc::SYS_rseq),
            ("futex_waitv", libc::SYS_futex_waitv),
            ("set_mempolicy_home_node", libc::SYS_set_mempolicy_home_node),
            ("fchmodat2", libc::SYS_fchmodat2),
            ("mseal", libc::SYS_mseal),
        ] {
            assert_eq!(syscall_number(name), Some(nr as u32), "{name}");
        }
    }
}
