//! The snapshot stage's initramfs: guest-init as `/init` (started with
//! `pod_abi::snapshot::INIT_STAGE_ARG`), the device nodes it needs before any root exists
//! (`/dev/console`, `/dev/port` for the snapshot port, `/dev/urandom` for the entropy,
//! `/dev/hwrng` to drain what the entropy device's driver held at the snapshot), and the
//! empty `/root` it mounts the pod's root share on (see guest-init's `snapshot_stage`).

use crate::boot::newc::{entry, trailer, S_IFCHR, S_IFDIR, S_IFREG};

/// The newc archive with `guest_init` (the static binary's bytes) as `/init`.
pub fn snapshot_stage(guest_init: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(guest_init.len() + 1024);
    entry(&mut out, 1, "dev", S_IFDIR | 0o755, (0, 0), &[]);
    entry(&mut out, 2, "dev/console", S_IFCHR | 0o600, (5, 1), &[]);
    entry(&mut out, 3, "dev/port", S_IFCHR | 0o600, (1, 4), &[]);
    entry(&mut out, 4, "dev/urandom", S_IFCHR | 0o644, (1, 9), &[]);
    entry(&mut out, 5, "dev/hwrng", S_IFCHR | 0o600, (10, 183), &[]);
    entry(&mut out, 6, "root", S_IFDIR | 0o755, (0, 0), &[]);
    entry(&mut out, 7, "init", S_IFREG | 0o755, (0, 0), guest_init);
    trailer(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names in a newc archive, in order.
    fn names(mut a: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        while a.len() >= 110 {
            let field = |i: usize| {
                usize::from_str_radix(
                    std::str::from_utf8(&a[6 + 8 * i..14 + 8 * i]).expect("hex"),
                    16,
                )
                .expect("hex")
            };
            let (size, namesize) = (field(6), field(11));
            let name = String::from_utf8_lossy(&a[110..110 + namesize - 1]).into_owned();
            let data_at = (110 + namesize).next_multiple_of(4);
            let next = (data_at + size).next_multiple_of(4);
            out.push(name.clone());
            if name == "TRAILER!!!" {
                break;
            }
            a = &a[next..];
        }
        out
    }

    #[test]
    fn has_init_and_the_device_nodes() {
        let a = snapshot_stage(b"\x7fELF...");
        assert_eq!(
            names(&a),
            [
                "dev",
                "dev/console",
                "dev/port",
                "dev/urandom",
                "dev/hwrng",
                "root",
                "init",
                "TRAILER!!!"
            ]
        );
    }
}
