//! The snapshot stage: guest-init as the kernel's `/init` in the snapshot initramfs
//! (`pod_abi::snapshot::INIT_STAGE_ARG`). It asks for a snapshot on the snapshot port before
//! the pod's root exists (so a snapshot holds nothing of any pod); a VM restored from it reads
//! the fresh entropy and wall clock from the port and applies them; a VM booted cold without a
//! snapshot finds no port and goes on. Either way it then mounts the pod's root share, moves it
//! over `/`, and hands over to guest-init proper in this same process ([`crate::init`]) with
//! the arguments the host wrote into the share (`pod_abi::snapshot::INIT_ARGS_IN_STAGE1`), so
//! the pod's own arguments never come from the snapshot's command line. The share's `/init` is
//! this very binary (the snapshot's key holds the stage1 image's `init`), so it is not executed
//! again: a restored VM keeps the code it already holds instead of reading a second copy over
//! virtio-fs. The initramfs provides `/dev/console`, `/dev/port` (used only when `ioperm`
//! fails: `pod_abi::snapshot_port`), `/dev/urandom`, `/dev/hwrng` and an empty `/root`.

use std::io::Read;

use nix::mount::{mount, MsFlags};
use pod_abi::snapshot::{
    Fresh, FRESH_LEN, INIT_ARGS_IN_STAGE1, INIT_ARGS_MAX, PORTS, PORT_DATA, PORT_STATUS, REQUEST,
    STATUS_RESTORED,
};
use pod_abi::snapshot_port::Ports;

/// The pod's root share's mount tag (stage1-vmm's `pod::run::ROOT_TAG`).
const ROOT_TAG: &str = "rkt";
/// Where the share is mounted before it moves over `/`.
const NEW_ROOT: &str = "/root";

/// Runs the stage: the pod's root is `/` once it returns `Ok` with guest-init's arguments for
/// the pod; `Err` is the reason it could not get there.
pub fn run() -> Result<Vec<String>, String> {
    match restore_point() {
        Ok(true) => crate::debug!("snapshot stage: restored"),
        Ok(false) => crate::debug!("snapshot stage: cold boot"),
        Err(e) => crate::info!("snapshot stage: {e}"),
    }
    switch_root()
}

/// Asks for the snapshot; on a restore applies the fresh data. Whether this VM was restored.
fn restore_point() -> Result<bool, String> {
    let port = Ports::open(PORT_DATA, PORTS).map_err(|e| format!("snapshot port: {e}"))?;
    crate::debug!("snapshot stage: port via {:?}", port.via());
    let io = |e: std::io::Error| format!("snapshot port: {e}");
    port.outb(PORT_DATA, REQUEST).map_err(io)?;
    if port.inb(PORT_STATUS).map_err(io)? != STATUS_RESTORED {
        return Ok(false);
    }
    let mut rec = [0u8; FRESH_LEN];
    for byte in rec.iter_mut() {
        *byte = port.inb(PORT_DATA).map_err(io)?;
    }
    let fresh = Fresh::decode(&rec).ok_or("bad fresh-data record")?;
    pod_abi::entropy::reseed(&fresh.entropy)
        .map_err(|(step, e)| format!("fresh entropy: {step}: {e}"))?;
    let ts = libc::timespec {
        tv_sec: fresh.secs as libc::time_t,
        tv_nsec: libc::c_long::from(fresh.nanos as i32),
    };
    // SAFETY: `ts` is a valid timespec for the call.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(format!(
            "clock_settime: {}",
            std::io::Error::last_os_error()
        ));
    }
    drain_hwrng()?;
    Ok(true)
}

/// The hwrng device node of the initramfs.
const HWRNG: &str = "/dev/hwrng";
/// Most bytes [`drain_hwrng`] reads: what the driver and the hwrng core can hold (64 each).
const HWRNG_DRAIN_MAX: usize = 256;

/// Reads and drops what the entropy device's driver holds: Linux's virtio-rng driver keeps the
/// bytes of its last request for the next reader, so every VM restored from one snapshot holds
/// the same bytes its maker's device served, and the first read of `/dev/hwrng` in each (a root
/// app can make the node) would return them alike. Non-blocking: what is held comes at once,
/// nothing held (`EAGAIN`) or no such device is no error; the reads make the driver ask this
/// VM's own device for its next bytes.
fn drain_hwrng() -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(HWRNG)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{HWRNG}: {e}")),
    };
    let mut buf = [0u8; 64];
    let mut drained = 0;
    while drained < HWRNG_DRAIN_MAX {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => drained += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("{HWRNG}: {e}")),
        }
    }
    crate::debug!("snapshot stage: {drained} held hwrng bytes dropped");
    Ok(())
}

/// The arguments in `text`: one per line, empty lines skipped.
fn parse_args(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Mounts the share and moves it over `/`; returns the arguments the host wrote for the pod.
fn switch_root() -> Result<Vec<String>, String> {
    let _ = std::fs::create_dir_all(NEW_ROOT);
    mount(
        Some(ROOT_TAG),
        NEW_ROOT,
        Some("virtiofs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| format!("mount the root share: {}", e.desc()))?;
    let path = format!("{NEW_ROOT}/{INIT_ARGS_IN_STAGE1}");
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open(&path) {
        f.take(INIT_ARGS_MAX as u64)
            .read_to_string(&mut text)
            .map_err(|e| format!("{path}: {e}"))?;
    }
    nix::unistd::chdir(NEW_ROOT).map_err(|e| format!("chdir: {}", e.desc()))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| format!("move the root share over /: {}", e.desc()))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot: {}", e.desc()))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir: {}", e.desc()))?;
    Ok(parse_args(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_lines() {
        assert_eq!(
            parse_args("--flavor=kvm\n\n--debug\n"),
            vec!["--flavor=kvm".to_string(), "--debug".to_string()]
        );
        assert!(parse_args("").is_empty());
    }
}
