//! The signals that stop a pod and helpers to block them (a flavor then takes them with a
//! signalfd or `sigtimedwait`).

/// The signals that ask a stage1 to stop its pod gracefully.
pub const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Whether `signo` is one of [`STOP_SIGNALS`].
pub fn is_stop_signal(signo: libc::c_int) -> bool {
    STOP_SIGNALS.contains(&signo)
}

/// A signal set holding `signals`.
pub fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset initializes the zeroed set we own; sigaddset adds signal numbers
    // (an invalid one is refused with EINVAL and not added).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks `signals` in the calling thread (and so in every thread it creates later).
pub fn block(signals: &[libc::c_int]) -> std::io::Result<()> {
    let set = sigset(signals);
    // SAFETY: pthread_sigmask with a valid set and a null old-set pointer.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals() {
        assert!(is_stop_signal(libc::SIGHUP));
        assert!(!is_stop_signal(libc::SIGWINCH));
        let set = sigset(&STOP_SIGNALS);
        // SAFETY: sigismember reads the initialized set.
        assert_eq!(unsafe { libc::sigismember(&set, libc::SIGINT) }, 1);
    }
}
