//! PID 1 of the guest-Linux tests and of bench/boot.sh: a static binary (no crates; glibc
//! symbols declared by hand) compiled by stage1-vmm's build.rs and packed into a newc
//! initramfs by the test support code.
//!
//! It prints `RKT-TEST-INIT-MARKER` at once, then acts on `rkt_test=` from the kernel command
//! line (the kernel hands unknown `key=value` parameters to init as environment):
//! - `report` (default): mounts /proc, prints `NCPUS=<n>` and `MEMTOTAL_KB=<n>`, reboots;
//! - `quick`: reboots at once (the benchmark);
//! - `exit`: exits with status 3, so the kernel panics ("Attempted to kill init!");
//! - `dmesg`: prints the kernel log buffer (read with syslog(2), so it never went through the
//!   console), then reboots: profile a quiet boot with `initcall_debug`.

use std::ffi::{c_char, c_int, c_ulong, c_void};
use std::io::Write;

extern "C" {
    fn reboot(cmd: c_int) -> c_int;
    fn klogctl(kind: c_int, buf: *mut c_char, len: c_int) -> c_int;
    fn sync();
    fn mount(
        src: *const c_char,
        target: *const c_char,
        fstype: *const c_char,
        flags: c_ulong,
        data: *const c_void,
    ) -> c_int;
}

/// `reboot(2)` command: restart (with `reboot=k` the kernel resets through the i8042).
const RB_AUTOBOOT: c_int = 0x0123_4567;

fn do_reboot() -> ! {
    let _ = std::io::stdout().flush();
    // SAFETY: plain syscalls without pointers.
    unsafe {
        sync();
        reboot(RB_AUTOBOOT);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn main() {
    println!("RKT-TEST-INIT-MARKER");
    let mode = std::env::var("rkt_test").unwrap_or_else(|_| "report".into());
    match mode.as_str() {
        "quick" => do_reboot(),
        "dmesg" => {
            let mut buf = vec![0u8; 1 << 20];
            // SAFETY: SYSLOG_ACTION_READ_ALL (3) writes at most `len` bytes into `buf`.
            let n = unsafe { klogctl(3, buf.as_mut_ptr().cast(), buf.len() as c_int) };
            if n > 0 {
                let _ = std::io::stdout().write_all(buf.get(..n as usize).unwrap_or_default());
            }
            do_reboot()
        }
        "exit" => {
            println!("RKT-TEST-INIT-EXITING");
            let _ = std::io::stdout().flush();
            std::process::exit(3);
        }
        _ => {}
    }
    let _ = std::fs::create_dir_all("/proc");
    // SAFETY: NUL-terminated static strings; null data pointer is allowed for proc.
    let r = unsafe {
        mount(
            c"proc".as_ptr(),
            c"/proc".as_ptr(),
            c"proc".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        println!("RKT-TEST-ERROR mount /proc failed");
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let ncpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    println!("NCPUS={ncpus}");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("0");
    println!("MEMTOTAL_KB={total}");
    do_reboot()
}
