//! Writes the guest-Linux test initramfs (static init that prints a marker and reboots) to the
//! path given as the only argument. Used by bench/boot.sh.

#[path = "../tests/common/initramfs.rs"]
#[allow(dead_code)]
mod initramfs;

fn main() -> std::process::ExitCode {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: mk_test_initramfs OUT.cpio");
        return std::process::ExitCode::from(2);
    };
    match std::fs::write(&out, initramfs::build()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mk_test_initramfs: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
