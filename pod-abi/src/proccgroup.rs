//! The one parser of `/proc/<pid>/cgroup` (cgroup(7)): one `ID:CONTROLLERS:PATH` line per
//! hierarchy; cgroup v2's unified hierarchy has ID 0 and no controllers.

/// Sub-cgroup of a cgroup v2 pod cgroup that holds guest-init (cgroup v2 forbids processes in
/// inner nodes that delegate controllers; `_` cannot start an app name, so it never collides).
/// The pod's cgroup is its parent, whatever reads guest-init's cgroup.
pub const V2_INIT_CGROUP: &str = "_stage1";

/// A line of `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The hierarchy's comma-separated controllers (`cpu,cpuacct`; empty for v2's).
    pub controllers: &'a str,
    /// The cgroup's path from the hierarchy's root (`/`, `/user.slice/...`).
    pub path: &'a str,
}

impl Entry<'_> {
    /// Whether the hierarchy carries `controller` (`cpu` in `cpu,cpuacct`).
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.split(',').any(|c| c == controller)
    }
}

/// The entries of `text`; malformed lines are skipped.
pub fn entries(text: &str) -> impl Iterator<Item = Entry<'_>> {
    text.lines().filter_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_id, controllers, path) = (f.next()?, f.next()?, f.next()?);
        Some(Entry { controllers, path })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_lines() {
        let t = "12:cpu,cpuacct:/rkt-u\n0::/user.slice/x\nbroken\n3:name=systemd:/a:b\n";
        let e: Vec<Entry> = entries(t).collect();
        assert_eq!(e.len(), 3);
        assert!(e[0].has("cpu") && e[0].has("cpuacct") && !e[0].has("cp"));
        assert_eq!(e[0].path, "/rkt-u");
        assert_eq!(e[1].controllers, "");
        assert_eq!(e[1].path, "/user.slice/x");
        assert_eq!(e[2].path, "/a:b", "a path may hold ':'");
    }
}
