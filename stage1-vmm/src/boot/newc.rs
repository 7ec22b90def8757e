//! A newc (`070701`) cpio writer: what the kernel unpacks as an initramfs. Used for the snapshot
//! stage's initramfs ([`crate::snapshot::initramfs`]) and by the tests' initramfs images.

/// Mode bits: directory.
pub const S_IFDIR: u32 = 0o040000;
/// Mode bits: regular file.
pub const S_IFREG: u32 = 0o100000;
/// Mode bits: character device.
pub const S_IFCHR: u32 = 0o020000;

/// Appends one newc entry (`mode` includes the file type bits; `rdev` = (major, minor)); the
/// archive ends with an entry named `TRAILER!!!` ([`trailer`]).
pub fn entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
    let namesize = name.len() + 1;
    let fields = [
        ino,
        mode,
        0,
        0,
        1,
        0,
        data.len() as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        namesize as u32,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Appends the end-of-archive entry.
pub fn trailer(out: &mut Vec<u8>) {
    entry(out, 0, "TRAILER!!!", 0, (0, 0), &[]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_newc() {
        let mut out = Vec::new();
        entry(&mut out, 1, "init", S_IFREG | 0o755, (0, 0), b"abc");
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        // Header (110) + "init\0" padded to 116, then the data padded to 4.
        assert_eq!(&out[110..115], b"init\0");
        assert_eq!(&out[116..119], b"abc");
        assert_eq!(out.len(), 120);
    }
}
