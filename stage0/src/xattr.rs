//! Extended attributes of a path itself, never of a symlink's target: the one reader that the
//! `--no-overlay` tree copy and the tree digest share.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Largest list of names, and largest value, read (Linux's `XATTR_SIZE_MAX`), in bytes.
pub const XATTR_SIZE_MAX: usize = 65_536;

/// Every extended attribute of `path` (`llistxattr`, `lgetxattr`), sorted by name; none on a
/// file system without them (`ENOTSUP`). A value that cannot be read (removed meanwhile,
/// say) is left out.
pub fn read_all(path: &Path) -> io::Result<Vec<(CString, Vec<u8>)>> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))?;
    let mut names = vec![0u8; XATTR_SIZE_MAX];
    // SAFETY: `c` is a valid C string and `names` a writable buffer of the length passed.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(Vec::new()),
            _ => Err(e),
        };
    }
    names.truncate(usize::try_from(n).unwrap_or(0));
    let mut out = Vec::new();
    let mut value = vec![0u8; XATTR_SIZE_MAX];
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        // SAFETY: valid C strings and a writable buffer of the length passed.
        let m = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        let Ok(len) = usize::try_from(m) else {
            continue;
        };
        out.push((cname, value.get(..len).unwrap_or_default().to_vec()));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_attributes_sorted_and_none_of_a_symlinks_target() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        std::fs::write(&f, b"").unwrap();
        let set = |name: &str, v: &[u8]| {
            let (p, n) = (
                CString::new(f.as_os_str().as_bytes()).unwrap(),
                CString::new(name).unwrap(),
            );
            // SAFETY: valid C strings and a value of the length passed.
            unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) }
        };
        if set("user.b", b"2") != 0 {
            eprintln!("SKIP: xattr test: this file system has no user xattrs");
            return;
        }
        assert_eq!(set("user.a", b"1"), 0);
        let all = read_all(&f).unwrap();
        let user: Vec<_> = all
            .iter()
            .filter(|(n, _)| n.as_bytes().starts_with(b"user."))
            .map(|(n, v)| (n.to_str().unwrap(), v.as_slice()))
            .collect();
        assert_eq!(user, [("user.a", &b"1"[..]), ("user.b", &b"2"[..])]);
        let link = t.path().join("l");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(read_all(&link)
            .unwrap()
            .iter()
            .all(|(n, _)| !n.as_bytes().starts_with(b"user.")));
    }
}
