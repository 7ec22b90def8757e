//! PID 1 of the guest-Linux tests and of bench/boot.sh: a static binary (no crates; glibc
//! symbols declared by hand) compiled by stage1-vmm's build.rs and packed into a newc
//! initramfs by the test support code.
//!
//! It prints `RKT-TEST-INIT-MARKER` at once (and `INIT-ARGS=<args>` when it has arguments),
//! then acts on `rkt_test=` from the kernel command
//! line (the kernel hands unknown `key=value` parameters to init as environment):
//! - `report` (default): mounts /proc, prints `NCPUS=<n>` and `MEMTOTAL_KB=<n>`, reboots;
//! - `quick`: reboots at once (the benchmark);
//! - `hold`: prints `RKT-TEST-HOLDING` and sleeps until the VMM is killed (bench/vmm-rss.sh
//!   samples a running VMM's memory; bench/density.sh:
//!   the memory of an idle booted guest);
//! - `exit`: exits with status 3, so the kernel panics ("Attempted to kill init!");
//! - `dmesg`: prints the kernel log buffer (read with syslog(2), so it never went through the
//!   console), then reboots: profile a quiet boot with `initcall_debug`;
//! - `vsock-echo` (tests/linux_vsock.rs): echoes every connection to AF_VSOCK port 1234;
//!   connects to host port 5678 and prints `VSOCK-HOST-GOT=<line>` with the host's answer to
//!   its `hello-from-guest` line; connects to host port 5679 (nobody listens) and prints
//!   `VSOCK-REFUSED errno=<n>`; prints `VSOCK-READY`; reboots on a connection to port 1235.
//! - `snapshot` (tests/linux_snapshot.rs, bench/snapshot.sh): prints `SNAPSHOT-POINT`, asks
//!   for a snapshot on the snapshot port (`pod_abi::snapshot`, numbers copied below; with
//!   `ioperm` and `in`/`out`, else through /dev/port: `pod_abi::snapshot_port`); when it
//!   runs on (restored), reads the fresh-data record, reseeds the CRNG from its entropy
//!   (`pod_abi::entropy::reseed`, as guest-init does), sets the wall clock, reads 16
//!   bytes of /dev/urandom, runs a thread pinned to each CPU, prints `RESTORED ENTROPY=<hex>
//!   CLOCK=<secs> RESEED=<0|errno> SETTIME=<0|errno> URANDOM=<hex> CPUS=<n> RAN-ON=<cpu,...>`
//!   and reboots; on a cold boot prints
//!   `SNAPSHOT-COLD STATUS=<n>` and reboots.
//! - `snapshot-seeded` (tests/linux_snapshot.rs): as `snapshot`, but first seeds and reseeds
//!   the kernel's CRNG (as RDRAND has on hardware) and prints `SNAPSHOT-SEEDED RESEED=<0|errno>`.
//! - `snapshot-vsock` (tests/linux_snapshot.rs): as `snapshot`, and after the restore connects
//!   to vsock host port 5678 (the restored VM's fresh vsock backend), sends `hello-from-guest`
//!   and prints `VSOCK-HOST-GOT=<line>` with the answer before the `RESTORED` line.

use std::ffi::{c_char, c_int, c_ulong, c_void};
use std::io::Write;

extern "C" {
    fn socket(domain: c_int, ty: c_int, proto: c_int) -> c_int;
    fn bind(fd: c_int, addr: *const SockaddrVm, len: u32) -> c_int;
    fn listen(fd: c_int, backlog: c_int) -> c_int;
    fn accept(fd: c_int, addr: *mut c_void, len: *mut u32) -> c_int;
    fn connect(fd: c_int, addr: *const SockaddrVm, len: u32) -> c_int;
    fn reboot(cmd: c_int) -> c_int;
    fn klogctl(kind: c_int, buf: *mut c_char, len: c_int) -> c_int;
    fn sync();
    fn clock_settime(clock: c_int, tp: *const Timespec) -> c_int;
    fn sched_setaffinity(pid: c_int, size: usize, mask: *const u64) -> c_int;
    fn sched_getcpu() -> c_int;
    fn mount(
        src: *const c_char,
        target: *const c_char,
        fstype: *const c_char,
        flags: c_ulong,
        data: *const c_void,
    ) -> c_int;
}

/// `struct sockaddr_vm` (linux/vm_sockets.h).
#[repr(C)]
struct SockaddrVm {
    family: u16,
    reserved1: u16,
    port: u32,
    cid: u32,
    zero: [u8; 4],
}

/// `struct timespec`.
#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

/// The snapshot port (`pod_abi::snapshot`; this binary uses no crates).
const SNAP_PORT_DATA: u16 = 0x5e0;
/// Its status port.
const SNAP_PORT_STATUS: u16 = 0x5e1;
/// The request byte.
const SNAP_REQUEST: u8 = 0x53;
/// Status: restored.
const SNAP_RESTORED: u8 = 1;
/// The fresh-data record: 32 bytes of entropy, u64 seconds, u32 nanoseconds, 4 zero bytes.
const SNAP_FRESH_LEN: usize = 48;
/// `CLOCK_REALTIME`.
const CLOCK_REALTIME: c_int = 0;

/// The snapshot port's access code, shared with guest-init (`ioperm`, else /dev/port).
#[allow(dead_code)]
#[path = "../../../pod-abi/src/snapshot_port.rs"]
mod snapshot_port;

/// Seeding and reseeding the guest's CRNG, shared with guest-init.
#[allow(dead_code)]
#[path = "../../../pod-abi/src/entropy.rs"]
mod entropy;

/// One byte out to `port`.
fn outb(ports: &snapshot_port::Ports, port: u16, v: u8) {
    if let Err(e) = ports.outb(port, v) {
        println!("RKT-TEST-ERROR snapshot port write: {e}");
    }
}

/// One byte in from `port` (0 after an error).
fn inb(ports: &snapshot_port::Ports, port: u16) -> u8 {
    ports.inb(port).unwrap_or_else(|e| {
        println!("RKT-TEST-ERROR snapshot port read: {e}");
        0
    })
}

fn snapshot_point(vsock: bool, seeded: bool) -> ! {
    let dev = match snapshot_port::Ports::open(SNAP_PORT_DATA, 2) {
        Ok(p) => p,
        Err(e) => {
            println!("RKT-TEST-ERROR snapshot port: {e}");
            do_reboot()
        }
    };
    if seeded {
        // Make the CRNG ready and freshly seeded just before the snapshot, as a guest on
        // hardware is (RDRAND seeds it at boot, well under a second before a snapshot):
        // restored VMs then start inside the CRNG's reseed interval, where only an explicit
        // reseed after the restore sets them apart. Under the nested harness the guest has no
        // RDRAND and its CRNG is not ready yet, so the first credited entropy after a restore
        // would reseed it by itself. The seed's bytes do not matter (every restore gets fresh
        // ones); reading /dev/urandom for them would run the kernel's jitter-entropy loop.
        let pre = os_err(entropy::reseed(b"rkt test init: the CRNG is ready"));
        println!("SNAPSHOT-SEEDED RESEED={pre}");
    }
    println!("SNAPSHOT-POINT");
    let _ = std::io::stdout().flush();
    outb(&dev, SNAP_PORT_DATA, SNAP_REQUEST);
    let status = inb(&dev, SNAP_PORT_STATUS);
    if status != SNAP_RESTORED {
        println!("SNAPSHOT-COLD STATUS={status}");
        do_reboot()
    }
    let mut rec = [0u8; SNAP_FRESH_LEN];
    for b in rec.iter_mut() {
        *b = inb(&dev, SNAP_PORT_DATA);
    }
    let entropy = &rec[..32];
    let secs = u64::from_le_bytes(rec[32..40].try_into().unwrap_or_default());
    let nanos = u32::from_le_bytes(rec[40..44].try_into().unwrap_or_default());
    let reseed = os_err(entropy::reseed(entropy));
    let ts = Timespec {
        sec: secs as i64,
        nsec: i64::from(nanos),
    };
    // SAFETY: `ts` is a valid timespec for the call's duration.
    let set = match unsafe { clock_settime(CLOCK_REALTIME, &ts) } {
        0 => 0,
        _ => errno(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if vsock {
        greet_host();
    }
    let hex = |b: &[u8]| -> String { b.iter().map(|b| format!("{b:02x}")).collect() };
    let mut drawn = [0u8; 16];
    let got = std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut drawn)
    });
    let drawn = match got {
        Ok(()) => hex(&drawn),
        Err(e) => format!("error:{e}"),
    };
    let (cpus, ran_on) = run_on_every_cpu();
    println!(
        "RESTORED ENTROPY={} CLOCK={now} RESEED={reseed} SETTIME={set} URANDOM={drawn} CPUS={cpus} RAN-ON={ran_on}",
        hex(entropy)
    );
    do_reboot()
}

/// The guest's CPU count and, for each CPU, where a thread pinned to it found itself running
/// (`sched_getcpu`; `x` when pinning failed): every vCPU of a restored VM runs guest code.
fn run_on_every_cpu() -> (usize, String) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get()).min(64);
    let ran: Vec<String> = (0..n)
        .map(|cpu| {
            std::thread::spawn(move || {
                let mask: u64 = 1 << cpu;
                // SAFETY: an 8-byte mask, valid for the call; pins only this thread.
                if unsafe { sched_setaffinity(0, 8, &mask) } != 0 {
                    return "x".to_string();
                }
                // SAFETY: no arguments.
                unsafe { sched_getcpu() }.to_string()
            })
            .join()
            .unwrap_or_else(|_| "x".to_string())
        })
        .collect();
    (n, ran.join(","))
}

/// Connects to host port 5678, says `hello-from-guest` and prints the host's answer
/// (`VSOCK-HOST-GOT=...`, or `VSOCK-HOST-ERROR errno=...`).
fn greet_host() {
    use std::io::BufRead;
    match vsock_connect(CID_HOST, 5678) {
        Ok(mut c) => {
            let _ = c.write_all(b"hello-from-guest\n");
            let mut line = String::new();
            let _ = std::io::BufReader::new(c).read_line(&mut line);
            println!("VSOCK-HOST-GOT={}", line.trim_end());
        }
        Err(e) => println!("VSOCK-HOST-ERROR errno={e}"),
    }
}

/// `AF_VSOCK`.
const AF_VSOCK: c_int = 40;
/// `SOCK_STREAM | SOCK_CLOEXEC`.
const SOCK_STREAM_CLOEXEC: c_int = 1 | 0o2000000;
/// `VMADDR_CID_ANY`.
const CID_ANY: u32 = u32::MAX;
/// The host's CID.
const CID_HOST: u32 = 2;

fn vm_addr(cid: u32, port: u32) -> SockaddrVm {
    SockaddrVm {
        family: AF_VSOCK as u16,
        reserved1: 0,
        port,
        cid,
        zero: [0; 4],
    }
}

/// A listening AF_VSOCK socket on `port`, or the errno.
fn vsock_listen(port: u32) -> Result<std::fs::File, i32> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls; the address outlives the call.
    unsafe {
        let fd = socket(AF_VSOCK, SOCK_STREAM_CLOEXEC, 0);
        if fd < 0 {
            return Err(errno());
        }
        let a = vm_addr(CID_ANY, port);
        if bind(fd, &a, std::mem::size_of::<SockaddrVm>() as u32) != 0 || listen(fd, 64) != 0 {
            return Err(errno());
        }
        Ok(std::fs::File::from_raw_fd(fd))
    }
}

fn vsock_accept(l: &std::fs::File) -> Result<std::fs::File, i32> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: accept without an address.
    let fd = unsafe { accept(l.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut()) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a fresh descriptor.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

fn vsock_connect(cid: u32, port: u32) -> Result<std::fs::File, i32> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls; the address outlives the call.
    unsafe {
        let fd = socket(AF_VSOCK, SOCK_STREAM_CLOEXEC, 0);
        if fd < 0 {
            return Err(errno());
        }
        let a = vm_addr(cid, port);
        if connect(fd, &a, std::mem::size_of::<SockaddrVm>() as u32) != 0 {
            let e = errno();
            let _ = std::fs::File::from_raw_fd(fd);
            return Err(e);
        }
        Ok(std::fs::File::from_raw_fd(fd))
    }
}

/// 0 for `Ok`, else the error's errno (-1 without one).
fn os_err<T>(r: Result<(), (T, std::io::Error)>) -> i32 {
    match r {
        Ok(()) => 0,
        Err((_, e)) => e.raw_os_error().unwrap_or(-1),
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn vsock_echo() -> ! {
    use std::io::{BufRead, Read};
    let l = match vsock_listen(1234) {
        Ok(l) => l,
        Err(e) => {
            println!("RKT-TEST-ERROR vsock listen errno={e}");
            do_reboot()
        }
    };
    std::thread::spawn(move || loop {
        let Ok(c) = vsock_accept(&l) else { continue };
        std::thread::spawn(move || {
            let mut c = c;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    });
    greet_host();
    match vsock_connect(CID_HOST, 5679) {
        Ok(_) => println!("VSOCK-UNEXPECTED-CONNECT"),
        Err(e) => println!("VSOCK-REFUSED errno={e}"),
    }
    let quit = vsock_listen(1235);
    println!("VSOCK-READY");
    let _ = std::io::stdout().flush();
    if let Ok(q) = quit {
        let _ = vsock_accept(&q);
    }
    do_reboot()
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        println!("INIT-ARGS={}", args.join(" "));
    }
    let mode = std::env::var("rkt_test").unwrap_or_else(|_| "report".into());
    match mode.as_str() {
        "quick" => do_reboot(),
        "hold" => {
            println!("RKT-TEST-HOLDING");
            let _ = std::io::stdout().flush();
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        "dmesg" => {
            let mut buf = vec![0u8; 1 << 20];
            // SAFETY: SYSLOG_ACTION_READ_ALL (3) writes at most `len` bytes into `buf`.
            let n = unsafe { klogctl(3, buf.as_mut_ptr().cast(), buf.len() as c_int) };
            if n > 0 {
                let _ = std::io::stdout().write_all(buf.get(..n as usize).unwrap_or_default());
            }
            do_reboot()
        }
        "vsock-echo" => vsock_echo(),
        "snapshot" => snapshot_point(false, false),
        "snapshot-seeded" => snapshot_point(false, true),
        "snapshot-vsock" => snapshot_point(true, false),
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
