//! The session a process that runs a command leads: the one home of `setsid` and
//! `TIOCSCTTY` for apps, event handlers and `rkt enter` commands, in both flavors.

use crate::{at, StepError};

/// Makes the caller the leader of a new session and, with `terminal`, makes the terminal on
/// its fd 0 that session's controlling terminal.
///
/// Every terminal a command is given here (an interactive pod's pseudo-terminal or `hvc0`, an
/// attachable app's pseudo-terminal, `rkt enter`'s) was opened with `O_NOCTTY`, so no other
/// session holds it and nothing is taken from anyone (`TIOCSCTTY` with 0, never the stealing
/// 1). Must run in the process that execs the command: a session leader that exits takes its
/// controlling terminal away from its session.
pub fn lead(terminal: bool) -> Result<(), StepError> {
    nix::unistd::setsid().map_err(at("setsid"))?;
    // SAFETY: TIOCSCTTY on fd 0 with an integer argument; no memory is passed.
    if terminal && unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        return Err(StepError::new(
            "controlling terminal",
            nix::errno::Errno::last(),
        ));
    }
    Ok(())
}
