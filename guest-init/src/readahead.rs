//! kvm flavor: the page-cache readahead of the pod's virtio-fs share. FUSE starts a mount at
//! the kernel's 128 KiB (`VM_READAHEAD_PAGES`, and a server's `max_readahead` can only lower
//! it), so a 1.3 MiB binary arrives in 13 READ requests, each a round trip to the VMM. Raised
//! through the share's backing-device file in sysfs to [`SHARE_READAHEAD_KB`], one FUSE request
//! of stage1-vmm's server (256 pages), an app's binary takes two or three.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Readahead of the pod's share (KiB): one READ of 256 pages.
pub const SHARE_READAHEAD_KB: u32 = 1024;

/// The sysfs file that holds the readahead of the file system on device `dev`
/// (`/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`; FUSE names its backing device so).
pub fn bdi_file(sys: &Path, dev: u64) -> PathBuf {
    sys.join(format!(
        "class/bdi/{}:{}/read_ahead_kb",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    ))
}

/// Sets the readahead of the file system that holds `path` to `kb`, through `sys` (sysfs).
pub fn set(sys: &Path, path: &Path, kb: u32) -> Result<(), String> {
    let dev = std::fs::metadata(path)
        .map_err(|e| format!("readahead: {}: {e}", path.display()))?
        .dev();
    let file = bdi_file(sys, dev);
    std::fs::write(&file, format!("{kb}\n"))
        .map_err(|e| format!("readahead: {}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdi_file_names_the_device() {
        let dev = nix::sys::stat::makedev(0, 27);
        assert_eq!(
            bdi_file(Path::new("/sys"), dev),
            PathBuf::from("/sys/class/bdi/0:27/read_ahead_kb")
        );
        let dev = nix::sys::stat::makedev(259, 1 << 12);
        assert_eq!(
            bdi_file(Path::new("/s"), dev),
            PathBuf::from("/s/class/bdi/259:4096/read_ahead_kb")
        );
    }

    #[test]
    fn set_reports_a_missing_device_file() {
        let d = tempfile::tempdir().unwrap();
        let e = set(d.path(), d.path(), 1024).unwrap_err();
        assert!(e.contains("class/bdi/"), "{e}");
    }

    #[test]
    fn set_writes_the_device_file() {
        let d = tempfile::tempdir().unwrap();
        let dev = std::fs::metadata(d.path()).unwrap().dev();
        let f = bdi_file(d.path(), dev);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        set(d.path(), d.path(), 1024).unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "1024\n");
    }
}
