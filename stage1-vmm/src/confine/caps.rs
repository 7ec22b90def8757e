//! Capabilities per thread (Linux capability sets are per thread).
//!
//! The virtio-fs worker keeps what `fuse_backend_rs::passthrough` needs to serve a guest that
//! runs as root over files owned by anyone ([`FS_WORKER`]); every other thread keeps nothing.
//! The bounding set is first reduced process-wide to [`PROCESS_BOUNDING`] (before any thread
//! exists, so every thread inherits it), then each thread empties the bounding, inheritable and
//! ambient sets except what it keeps, and sets its effective and permitted sets to its list.

use caps::{CapSet, Capability, CapsHashSet};

use super::ConfineError;

/// What the virtio-fs worker keeps, and why (fuse-backend-rs 0.14 `passthrough`):
/// - `CAP_CHOWN`: `fchownat` for the guest's `chown` and for files created as another user;
/// - `CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`: a root guest reads and writes files it does not
///   own (the server runs as root and switches only the effective ids per request);
/// - `CAP_FOWNER`: `chmod`, `utimensat` and sticky-directory operations on others' files;
/// - `CAP_FSETID`: keep setuid/setgid bits across writes and `chown` (the server drops and
///   raises it itself around writes, `capset`);
/// - `CAP_SETUID`, `CAP_SETGID`: `setresuid`/`setresgid` of the effective ids to the
///   requesting guest user for creations (`set_creds`), and back;
///
/// Not kept: `CAP_MKNOD` (FIFOs and sockets need none; without it the kernel refuses every
/// device node, whatever a guest rewriting its request between the device's check and the
/// server's read gets past the check), `CAP_SETFCAP` (the share has no xattr support, so no `security.capability`),
/// `CAP_SYS_ADMIN`, `CAP_LINUX_IMMUTABLE` and the rest.
pub const FS_WORKER: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
];

/// Every other thread (vCPUs, other device workers, console writers, signals, stdin, and the
/// main thread once the VM runs).
pub const NONE: &[Capability] = &[];

/// The process-wide bounding set: the union of what any thread keeps.
pub const PROCESS_BOUNDING: &[Capability] = FS_WORKER;

fn set_of(list: &[Capability]) -> CapsHashSet {
    list.iter().copied().collect()
}

fn err(what: &'static str) -> impl FnOnce(caps::errors::CapsError) -> ConfineError {
    move |e| ConfineError::Caps(what, e.to_string())
}

/// Drops from the calling thread's bounding set every capability not in `keep` (needs
/// `CAP_SETPCAP`, which the threads still hold from the process's start when they call this).
pub fn reduce_bounding(keep: &[Capability]) -> Result<(), ConfineError> {
    let keep = set_of(keep);
    let bounding = caps::read(None, CapSet::Bounding).map_err(err("read the bounding set"))?;
    for cap in bounding.difference(&keep) {
        caps::drop(None, CapSet::Bounding, *cap).map_err(err("drop from the bounding set"))?;
    }
    Ok(())
}

/// Confines the calling thread's capabilities to `keep`: bounding reduced, ambient and
/// inheritable emptied, effective and permitted set to `keep`.
pub fn apply(keep: &[Capability]) -> Result<(), ConfineError> {
    reduce_bounding(keep)?;
    caps::clear(None, CapSet::Ambient).map_err(err("clear the ambient set"))?;
    let keep = set_of(keep);
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new())
        .map_err(err("clear the inheritable set"))?;
    caps::set(None, CapSet::Effective, &keep).map_err(err("set the effective set"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(err("set the permitted set"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a fresh plain thread (capability sets are per thread).
    fn on_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(f)
            .join()
            .unwrap_or_else(|_| panic!("thread"))
    }

    fn is_root_with_setpcap() -> bool {
        caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false)
    }

    #[test]
    fn each_profile_keeps_exactly_its_list() {
        if !is_root_with_setpcap() {
            println!("SKIP: each_profile_keeps_exactly_its_list: needs CAP_SETPCAP (root)");
            return;
        }
        for profile in super::super::Profile::ALL {
            let keep = profile.caps();
            let got = on_thread(move || {
                apply(keep).map_err(|e| e.to_string())?;
                let read = |s| caps::read(None, s).map_err(|e| e.to_string());
                Ok::<_, String>((
                    read(CapSet::Effective)?,
                    read(CapSet::Permitted)?,
                    read(CapSet::Bounding)?,
                    read(CapSet::Ambient)?,
                ))
            })
            .unwrap_or_else(|e| panic!("{}: {e}", profile.name()));
            let want = set_of(keep);
            assert_eq!(got.0, want, "{}: effective", profile.name());
            assert_eq!(got.1, want, "{}: permitted", profile.name());
            assert_eq!(got.2, want, "{}: bounding", profile.name());
            assert!(got.3.is_empty(), "{}: ambient", profile.name());
        }
        // The test thread itself is untouched (capability sets are per thread).
        assert!(is_root_with_setpcap());
    }
}
