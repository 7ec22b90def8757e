//! `--private-users`: the range of host user and group IDs a pod's IDs map to. Pod ID `n`
//! (`0 <= n < count`) is host ID `shift + n`; the apps run in a user namespace with this
//! mapping, so root in an app is `shift` on the host and holds no capability over the host.
//! stage0 records the range in the pod directory (`private-users-prepared`, rkt's name, as
//! `SHIFT:COUNT`) and in the launch plan, and shifts the owners of the pod's copies of the app
//! trees by it.

use serde::{Deserialize, Serialize};

/// IDs per pod (rkt's `DefaultRangeCount`): the 16-bit IDs images use.
pub const DEFAULT_COUNT: u32 = 0x10000;

/// A pod's ID range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    /// Host ID of pod ID 0.
    pub shift: u32,
    /// Number of IDs mapped.
    pub count: u32,
}

/// A malformed or unusable range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid ID range {0:?}: expected SHIFT:COUNT with 0 < SHIFT, 0 < COUNT, SHIFT + COUNT <= 2^31"
)]
pub struct BadRange(pub String);

impl IdRange {
    /// A range of [`DEFAULT_COUNT`] IDs starting at a multiple of it chosen by `pick` (taken
    /// modulo 32767, as rkt: shifts 2^16 to 2^31 - 2^16, the top bit clear because devpts
    /// parses its `uid=` and `gid=` options as signed).
    pub fn from_pick(pick: u16) -> IdRange {
        IdRange {
            shift: (u32::from(pick) % 0x7fff + 1) << 16,
            count: DEFAULT_COUNT,
        }
    }

    /// Parses `SHIFT:COUNT`.
    pub fn parse(s: &str) -> Result<IdRange, BadRange> {
        let bad = || BadRange(s.to_string());
        let (a, b) = s.trim().split_once(':').ok_or_else(bad)?;
        let r = IdRange {
            shift: a.parse().map_err(|_| bad())?,
            count: b.parse().map_err(|_| bad())?,
        };
        let end = u64::from(r.shift) + u64::from(r.count);
        if r.shift == 0 || r.count == 0 || end > 1 << 31 {
            return Err(bad());
        }
        Ok(r)
    }

    /// Whether the two ranges share a host ID.
    pub fn overlaps(&self, other: &IdRange) -> bool {
        let end = |r: &IdRange| u64::from(r.shift) + u64::from(r.count);
        u64::from(self.shift) < end(other) && u64::from(other.shift) < end(self)
    }

    /// The host ID of pod ID `id`, if the range holds it.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        (id < self.count)
            .then(|| self.shift.checked_add(id))
            .flatten()
    }

    /// The line of `/proc/PID/uid_map` and `gid_map`: `0 SHIFT COUNT`.
    pub fn map_line(&self) -> String {
        format!("0 {} {}\n", self.shift, self.count)
    }
}

impl std::fmt::Display for IdRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.shift, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_parse_and_map() {
        assert_eq!(IdRange::from_pick(0).shift, 0x10000);
        assert_eq!(
            IdRange::from_pick(u16::MAX).shift,
            (0xffff % 0x7fff + 1) << 16
        );
        for p in [0, 1, 0x7ffe, 0x7fff, u16::MAX] {
            let r = IdRange::from_pick(p);
            assert!(r.shift >= 0x10000 && u64::from(r.shift) + u64::from(r.count) <= 1 << 31);
            assert_eq!(IdRange::parse(&r.to_string()), Ok(r));
        }
        let r = IdRange::parse("65536:65536").unwrap_or(IdRange { shift: 0, count: 0 });
        assert_eq!(r.to_host(0), Some(65536));
        assert_eq!(r.to_host(65535), Some(131071));
        assert_eq!(r.to_host(65536), None);
        assert_eq!(r.map_line(), "0 65536 65536\n");
        let next = IdRange::from_pick(1);
        assert!(r.overlaps(&r) && !r.overlaps(&next) && !next.overlaps(&r));
        assert!(r.overlaps(&IdRange {
            shift: 131071,
            count: 1
        }));
        for bad in ["", "1", "0:10", "10:0", "x:1", "2147483647:2", "-1:5"] {
            assert!(IdRange::parse(bad).is_err(), "{bad}");
        }
    }
}
