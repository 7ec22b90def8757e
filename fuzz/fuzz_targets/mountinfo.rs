//! The host's reading of its mount table (`pod_abi::mountinfo`), whose mount points a pod names:
//! `rkt rm`, `rkt gc` and the volume code list what to unmount beneath a pod from it. Any text
//! parses without a panic; the mounts listed under a directory are exactly those at or below
//! it, deepest first, stacked mounts as often as they are stacked; and a mount point of any
//! bytes (a name a pod chose: spaces, newlines, backslashes, text that looks like an escape),
//! written as the kernel writes it (`\ooo` for space, tab, newline and backslash), reads back
//! as exactly those bytes.
#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use pod_abi::mountinfo::{mount_points, MountTable};

fuzz_target!(|data: &[u8]| {
    // Any text: listing never panics and keeps to the directory asked about.
    let table = MountTable::parse(data);
    for dir in mount_points(data).iter().take(4) {
        check_under(&table, &mount_points(data), dir);
    }

    // Pod-chosen names, as the kernel escapes them.
    let names: Vec<Vec<u8>> = data
        .split(|b| *b == 0xff)
        .take(64)
        .map(|n| {
            let mut p = vec![b'/'];
            p.extend(n.iter().filter(|b| **b != 0));
            p
        })
        .collect();
    let mut text = Vec::new();
    for (i, n) in names.iter().enumerate() {
        text.extend_from_slice(format!("{} 1 0:{i} / ", 100 + i).as_bytes());
        text.extend_from_slice(&kernel_escape(n));
        text.extend_from_slice(b" rw,relatime shared:1 - tmpfs tmpfs rw\n");
    }
    let read = mount_points(&text);
    assert_eq!(read.len(), names.len(), "one mount point per line");
    for (got, want) in read.iter().zip(&names) {
        assert_eq!(
            got.as_os_str().as_bytes(),
            &want[..],
            "a name reads back as written"
        );
    }
    let table = MountTable::parse(&text);
    for dir in read.iter().take(4) {
        check_under(&table, &read, dir);
    }
});

/// The kernel's mountinfo escaping of a path (`seq_path_root(..., " \t\n\\")`).
fn kernel_escape(p: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len());
    for &b in p {
        if matches!(b, b' ' | b'\t' | b'\n' | b'\\') {
            out.extend_from_slice(format!("\\{b:03o}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

/// `under(dir)` lists every mount at or below `dir` (counted in `all`) and nothing else,
/// deepest first; `points_under` the same points once each.
fn check_under(table: &MountTable, all: &[PathBuf], dir: &Path) {
    let under = table.under(dir);
    let want = all.iter().filter(|p| p.starts_with(dir)).count();
    assert_eq!(
        under.len(),
        want,
        "every mount under {dir:?}, stacked ones each time"
    );
    assert!(
        under.iter().all(|p| p.starts_with(dir)),
        "only mounts under {dir:?}"
    );
    let depth = |p: &PathBuf| p.components().count();
    assert!(
        under.windows(2).all(|w| depth(&w[0]) >= depth(&w[1])),
        "deepest first"
    );
    let points = table.points_under(dir);
    let mut unique: Vec<&OsStr> = points.iter().map(|p| p.as_os_str()).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), points.len(), "each point once");
}
