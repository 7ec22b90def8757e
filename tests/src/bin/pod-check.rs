//! pod-check: an app for end-to-end tests (static binary) that verifies the appc execution
//! environment from the inside and exits non-zero with a list of what is wrong.
//!
//! Checks (unless `--no-check`): `PATH` is the appc default (unless `--expect-env PATH=...`),
//! `AC_APP_NAME` and `container` are set, `/proc` is procfs, `/sys` is sysfs, the device nodes
//! are character devices with the right numbers, `/dev/console` exists, `/dev/pts` is devpts,
//! `/dev/ptmx` exists, `/dev/shm` is a writable tmpfs; plus every `--expect-*` option
//! (`--expect-tty`: stdin/stdout are a terminal that is the controlling terminal;
//! `--expect-only-std-fds`: no descriptor besides 0-2 was inherited; `--expect-only-lo`: the
//! network namespace has only `lo`, and it is up; `--expect-oom-score-adj N`).
//! Prints `pod-check OK`, or `pod-check FAIL` and one `==> problem` line per problem.
//!
//! Then, in this order, the actions: `--ignore-sigterm`, `--print-cgroup` (`cgroup LINE` per
//! line of `/proc/self/cgroup`), `--print-env`, `--write FILE`, `--append FILE TEXT`,
//! `--winsize` (prints `winsize ROWSxCOLS` of stdin's terminal), `--wait-winsize ROWSxCOLS`
//! (waits for SIGWINCH, up to `--timeout-ms`, until stdin's terminal has that size, then prints
//! it), `--cat` (copies stdin to stdout until EOF, then prints `pod-check: cat N bytes` on
//! stderr),
//! `--wait-for FILE [--timeout-ms N]`, `--alloc-free MIB` (maps MIB MiB, writes every page, prints
//! `pod-check: touched MIB MiB`, unmaps it: memory the guest then frees), `--then-write FILE`
//! (written after `--alloc-free`), `--sleep-ms N`, `--exit N`.

use std::ffi::CString;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// The appc default PATH.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Default `--wait-for` timeout, in milliseconds.
const DEFAULT_WAIT_MS: u64 = 5000;
/// Poll interval while waiting for a file, in milliseconds.
const WAIT_POLL_MS: u64 = 10;
/// Filesystem magic numbers (statfs f_type).
const PROC_MAGIC: i64 = 0x9fa0;
/// sysfs.
const SYSFS_MAGIC: i64 = 0x6265_6572;
/// devpts.
const DEVPTS_MAGIC: i64 = 0x1cd1;
/// tmpfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;
/// Required devices: (path, major, minor).
const DEVICES: [(&str, u32, u32); 6] = [
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

#[derive(Debug, Default)]
struct Opts {
    check: bool,
    env: Vec<(String, String)>,
    cwd: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    groups: Option<Vec<u32>>,
    mounts: Vec<(String, String)>,
    files: Vec<String>,
    no_files: Vec<String>,
    hostname: Option<String>,
    oom_score_adj: Option<String>,
    print_cgroup: bool,
    caps: Vec<u32>,
    no_caps: Vec<u32>,
    no_new_privs: Option<bool>,
    ro_root: bool,
    tty: bool,
    only_std_fds: bool,
    only_lo: bool,
    print_env: bool,
    winsize: bool,
    wait_winsize: Option<String>,
    cat: bool,
    write: Vec<String>,
    append: Vec<(String, String)>,
    wait_for: Vec<String>,
    timeout_ms: u64,
    ignore_sigterm: bool,
    sleep_ms: u64,
    alloc_free_mib: u64,
    then_write: Vec<String>,
    exit: i32,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        check: true,
        timeout_ms: DEFAULT_WAIT_MS,
        ..Default::default()
    };
    let mut it = args.iter();
    let num = |v: Option<&String>, f: &str| -> Result<u64, String> {
        v.ok_or(format!("{f} needs a value"))?
            .parse()
            .map_err(|_| format!("{f}: not a number"))
    };
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut val = || -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it.next().cloned().ok_or(format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "--no-check" => o.check = false,
            "--expect-env" => {
                let v = val()?;
                let (k, x) = v.split_once('=').ok_or("--expect-env K=V")?;
                o.env.push((k.into(), x.into()));
            }
            "--expect-cwd" => o.cwd = Some(val()?),
            "--expect-uid" => o.uid = Some(num(Some(&val()?), "--expect-uid")? as u32),
            "--expect-gid" => o.gid = Some(num(Some(&val()?), "--expect-gid")? as u32),
            "--expect-groups" => {
                let v = val()?;
                let mut g = Vec::new();
                for x in v.split(',').filter(|x| !x.is_empty()) {
                    g.push(x.parse().map_err(|_| "--expect-groups: not a number")?);
                }
                o.groups = Some(g);
            }
            "--expect-mount" => {
                let v = val()?;
                let (p, m) = v.rsplit_once(':').ok_or("--expect-mount PATH:rw|ro")?;
                o.mounts.push((p.into(), m.into()));
            }
            "--expect-file" => o.files.push(val()?),
            "--expect-no-file" => o.no_files.push(val()?),
            "--expect-hostname" => o.hostname = Some(val()?),
            "--expect-oom-score-adj" => o.oom_score_adj = Some(val()?),
            "--print-cgroup" => o.print_cgroup = true,
            "--expect-cap" => o.caps.push(num(Some(&val()?), "--expect-cap")? as u32),
            "--expect-no-cap" => o
                .no_caps
                .push(num(Some(&val()?), "--expect-no-cap")? as u32),
            "--expect-no-new-privs" => o.no_new_privs = Some(val()? == "1"),
            "--expect-ro-root" => o.ro_root = true,
            "--expect-tty" => o.tty = true,
            "--expect-only-std-fds" => o.only_std_fds = true,
            "--expect-only-lo" => o.only_lo = true,
            "--print-env" => o.print_env = true,
            "--winsize" => o.winsize = true,
            "--wait-winsize" => o.wait_winsize = Some(val()?),
            "--cat" => o.cat = true,
            "--write" => o.write.push(val()?),
            "--append" => {
                let f = val()?;
                let t = it.next().cloned().ok_or("--append FILE TEXT")?;
                o.append.push((f, t));
            }
            "--wait-for" => o.wait_for.push(val()?),
            "--timeout-ms" => o.timeout_ms = num(Some(&val()?), "--timeout-ms")?,
            "--ignore-sigterm" => o.ignore_sigterm = true,
            "--sleep-ms" => o.sleep_ms = num(Some(&val()?), "--sleep-ms")?,
            "--alloc-free" => o.alloc_free_mib = num(Some(&val()?), "--alloc-free")?,
            "--then-write" => o.then_write.push(val()?),
            "--exit" => o.exit = num(Some(&val()?), "--exit")? as i32,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(o)
}

fn statfs_type(p: &str) -> Option<i64> {
    let c = CString::new(p).ok()?;
    // SAFETY: an all-zero statfs is a valid value for the kernel to overwrite.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string and s a valid statfs buffer.
    if unsafe { libc::statfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    Some(s.f_type as i64)
}

fn status_field(name: &str) -> Option<String> {
    let t = std::fs::read_to_string("/proc/self/status").ok()?;
    t.lines().find_map(|l| {
        l.strip_prefix(name)
            .map(|v| v.trim_start_matches(':').trim().to_string())
    })
}

fn check(o: &Opts) -> Vec<String> {
    let mut bad = Vec::new();
    let env: Vec<(String, String)> = std::env::vars().collect();
    let get = |k: &str| env.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
    if !o.env.iter().any(|(k, _)| k == "PATH") && get("PATH").as_deref() != Some(DEFAULT_PATH) {
        bad.push(format!("PATH is {:?}, want {DEFAULT_PATH:?}", get("PATH")));
    }
    for k in ["AC_APP_NAME", "container"] {
        if get(k).is_none_or(|v| v.is_empty()) {
            bad.push(format!("{k} is not set"));
        }
    }
    for (k, v) in &o.env {
        if get(k).as_deref() != Some(v.as_str()) {
            bad.push(format!("env {k} is {:?}, want {v:?}", get(k)));
        }
    }
    for (p, magic, what) in [
        ("/proc", PROC_MAGIC, "procfs"),
        ("/sys", SYSFS_MAGIC, "sysfs"),
        ("/dev/pts", DEVPTS_MAGIC, "devpts"),
        ("/dev/shm", TMPFS_MAGIC, "tmpfs"),
    ] {
        if statfs_type(p) != Some(magic) {
            bad.push(format!("{p} is not {what}"));
        }
    }
    for (p, maj, min) in DEVICES {
        match std::fs::metadata(p) {
            Ok(m) if m.file_type().is_char_device() => {
                let rdev = m.rdev();
                let (a, b) = (libc::major(rdev), libc::minor(rdev));
                if (a, b) != (maj, min) {
                    bad.push(format!("{p} is {a}:{b}, want {maj}:{min}"));
                }
            }
            Ok(_) => bad.push(format!("{p} is not a character device")),
            Err(e) => bad.push(format!("{p}: {e}")),
        }
    }
    for p in ["/dev/console", "/dev/ptmx"] {
        if std::fs::metadata(p).is_err() {
            bad.push(format!("{p} does not exist"));
        }
    }
    let probe = format!("/dev/shm/pod-check-{}", std::process::id());
    match std::fs::write(&probe, "x") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
        }
        Err(e) => bad.push(format!("/dev/shm is not writable: {e}")),
    }
    if let Some(c) = &o.cwd {
        let cwd = std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if &cwd != c {
            bad.push(format!("cwd is {cwd:?}, want {c:?}"));
        }
    }
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if o.uid.is_some_and(|u| u != uid) {
        bad.push(format!("uid is {uid}, want {:?}", o.uid));
    }
    if o.gid.is_some_and(|g| g != gid) {
        bad.push(format!("gid is {gid}, want {:?}", o.gid));
    }
    if let Some(want) = &o.groups {
        let mut buf = [0 as libc::gid_t; 256];
        // SAFETY: buf has room for 256 gids, the size passed.
        let n = unsafe { libc::getgroups(256, buf.as_mut_ptr()) };
        let mut have: Vec<u32> = buf
            .get(..usize::try_from(n).unwrap_or(0))
            .unwrap_or_default()
            .to_vec();
        let mut want = want.clone();
        have.sort_unstable();
        want.sort_unstable();
        if have != want {
            bad.push(format!("supplementary groups are {have:?}, want {want:?}"));
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for (p, mode) in &o.mounts {
        let found = mountinfo
            .lines()
            .rfind(|l| l.split(' ').nth(4) == Some(p.as_str()));
        match found {
            None => bad.push(format!("{p} is not a mount point")),
            Some(l) => {
                let opts = l.split(' ').nth(5).unwrap_or_default();
                if !opts.split(',').any(|x| x == mode) {
                    bad.push(format!("{p} is mounted {opts}, want {mode}"));
                }
            }
        }
    }
    for f in &o.files {
        if std::fs::symlink_metadata(f).is_err() {
            bad.push(format!("{f} does not exist"));
        }
    }
    for f in &o.no_files {
        if std::fs::symlink_metadata(f).is_ok() {
            bad.push(format!("{f} exists"));
        }
    }
    if let Some(want) = &o.oom_score_adj {
        let have = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap_or_default();
        if have.trim() != want {
            bad.push(format!("oom_score_adj is {:?}, want {want:?}", have.trim()));
        }
    }
    if let Some(h) = &o.hostname {
        let have = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        if have.trim() != h {
            bad.push(format!("hostname is {:?}, want {h:?}", have.trim()));
        }
    }
    let eff = status_field("CapEff")
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or(0);
    for c in &o.caps {
        if eff & (1u64 << c) == 0 {
            bad.push(format!("capability {c} is not effective (CapEff {eff:x})"));
        }
    }
    for c in &o.no_caps {
        if eff & (1u64 << c) != 0 {
            bad.push(format!("capability {c} is effective (CapEff {eff:x})"));
        }
    }
    if let Some(want) = o.no_new_privs {
        let have = status_field("NoNewPrivs").as_deref() == Some("1");
        if have != want {
            bad.push(format!("NoNewPrivs is {have}, want {want}"));
        }
    }
    if o.tty {
        // SAFETY: isatty only inspects the fd.
        let (i, out) = unsafe { (libc::isatty(0), libc::isatty(1)) };
        if i != 1 || out != 1 {
            bad.push("stdin/stdout are not a terminal".into());
        }
        if let Err(e) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
        {
            bad.push(format!("no controlling terminal: open /dev/tty: {e}"));
        }
    }
    if o.only_std_fds {
        // The directory handle read_dir itself holds shows up too; it is the only extra one.
        let fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let extra: Vec<String> = fds
            .iter()
            .filter(|f| !["0", "1", "2"].contains(&f.as_str()))
            .filter(|f| {
                std::fs::read_link(format!("/proc/self/fd/{f}"))
                    .is_ok_and(|t| !t.starts_with("/proc"))
            })
            .cloned()
            .collect();
        if !extra.is_empty() {
            let targets: Vec<String> = extra
                .iter()
                .map(|f| {
                    format!(
                        "{f}->{:?}",
                        std::fs::read_link(format!("/proc/self/fd/{f}")).ok()
                    )
                })
                .collect();
            bad.push(format!(
                "inherited file descriptors: {}",
                targets.join(", ")
            ));
        }
    }
    if o.only_lo {
        let mut ifaces: Vec<String> = std::fs::read_dir("/sys/class/net")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        ifaces.sort();
        if ifaces != ["lo"] {
            bad.push(format!("network interfaces are {ifaces:?}, want only lo"));
        }
        let flags = std::fs::read_to_string("/sys/class/net/lo/flags").unwrap_or_default();
        let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0);
        if flags & 1 == 0 {
            bad.push("lo is not up".into());
        }
    }
    if o.ro_root {
        let probe = format!("/pod-check-ro-{}", std::process::id());
        match std::fs::write(&probe, "x") {
            Ok(()) => {
                let _ = std::fs::remove_file(&probe);
                bad.push("the root filesystem is writable".into());
            }
            Err(e) if e.raw_os_error() == Some(libc::EROFS) => {}
            Err(e) => bad.push(format!("writing to / failed with {e}, want EROFS")),
        }
    }
    bad
}

/// Stdin's terminal size as `ROWSxCOLS` (`none` if it is not a terminal).
fn winsize() -> String {
    // SAFETY: an all-zero winsize is valid for TIOCGWINSZ to overwrite.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes into the valid winsize passed.
    if unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } != 0 {
        return "none".into();
    }
    format!("{}x{}", ws.ws_row, ws.ws_col)
}

/// Blocks SIGWINCH (ignored by default, so it is lost unless blocked) and returns its set.
fn block_sigwinch() -> libc::sigset_t {
    // SAFETY: an all-zero sigset is valid storage for sigemptyset to initialise.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid; SIGWINCH is a valid signal; a null old set is allowed.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGWINCH);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    set
}

/// Waits up to `max` for a SIGWINCH: woken by the signal itself, not by a polling timer (a KVM
/// guest under nested TCG gets almost no timer interrupts, see docs/nested-kvm.md).
fn wait_sigwinch(set: &libc::sigset_t, max: Duration) {
    let ts = libc::timespec {
        tv_sec: max.as_secs().try_into().unwrap_or(libc::time_t::MAX),
        tv_nsec: max.subsec_nanos().into(),
    };
    // SAFETY: valid set and timespec; a null siginfo is allowed.
    unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
}

/// Maps `mib` MiB of anonymous memory, writes every page (so the guest really backs it), then
/// unmaps it: the pages go back to the guest kernel's free lists.
fn alloc_touch_free(mib: u64) -> std::io::Result<()> {
    const PAGE: usize = 4096;
    let len = usize::try_from(mib << 20).map_err(std::io::Error::other)?;
    // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    let base = p.cast::<u8>();
    for i in (0..len).step_by(PAGE) {
        // SAFETY: `i < len`, inside the mapping made above, which nothing else references.
        unsafe { base.add(i).write_volatile((i / PAGE) as u8 | 1) };
    }
    println!("pod-check: touched {mib} MiB");
    // SAFETY: unmaps exactly the mapping made above; no reference into it survives.
    if unsafe { libc::munmap(p, len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            println!("pod-check FAIL");
            println!("==> {e}");
            std::process::exit(64);
        }
    };
    let mut bad = if o.check { check(&o) } else { Vec::new() };
    if o.check {
        if bad.is_empty() {
            println!("pod-check OK");
        } else {
            println!("pod-check FAIL");
            for b in &bad {
                println!("==> {b}");
            }
        }
    }
    if o.ignore_sigterm {
        // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
        unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    }
    if o.print_cgroup {
        let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        for l in cg.lines() {
            println!("cgroup {l}");
        }
    }
    if o.print_env {
        for (k, v) in std::env::vars() {
            println!("{k}={v}");
        }
    }
    for f in &o.write {
        if let Err(e) = std::fs::write(f, "pod-check\n") {
            bad.push(format!("write {f}: {e}"));
            println!("==> write {f}: {e}");
        }
    }
    for (f, t) in &o.append {
        use std::io::Write;
        let r = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
            .and_then(|mut h| h.write_all(format!("{t}\n").as_bytes()));
        if let Err(e) = r {
            bad.push(format!("append to {f}: {e}"));
            println!("==> append to {f}: {e}");
        }
    }
    // Blocked before the first size is read, so a resize after it stays pending.
    let winch = o.wait_winsize.as_ref().map(|_| block_sigwinch());
    if o.winsize {
        println!("winsize {}", winsize());
    }
    if let (Some(want), Some(winch)) = (&o.wait_winsize, winch) {
        let deadline = Instant::now() + Duration::from_millis(o.timeout_ms);
        while winsize() != *want && Instant::now() < deadline {
            // Also polls (100 ms), in case this process is not the terminal's foreground.
            let left = deadline.saturating_duration_since(Instant::now());
            wait_sigwinch(&winch, left.min(Duration::from_millis(100)));
        }
        println!("winsize {}", winsize());
    }
    if o.cat {
        let mut n = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        let (mut i, mut out) = (std::io::stdin().lock(), std::io::stdout().lock());
        use std::io::{Read, Write};
        loop {
            match i.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => {
                    n += k as u64;
                    if out.write_all(&buf[..k]).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = out.flush();
        eprintln!("pod-check: cat {n} bytes");
    }
    for f in &o.wait_for {
        let deadline = Instant::now() + Duration::from_millis(o.timeout_ms);
        while !Path::new(f).exists() {
            if Instant::now() >= deadline {
                bad.push(format!("timed out waiting for {f}"));
                println!("==> timed out waiting for {f}");
                break;
            }
            std::thread::sleep(Duration::from_millis(WAIT_POLL_MS));
        }
    }
    if o.alloc_free_mib > 0 {
        if let Err(e) = alloc_touch_free(o.alloc_free_mib) {
            bad.push(format!("alloc-free: {e}"));
            println!("==> alloc-free: {e}");
        }
    }
    for f in &o.then_write {
        if let Err(e) = std::fs::write(f, "pod-check\n") {
            bad.push(format!("write {f}: {e}"));
            println!("==> write {f}: {e}");
        }
    }
    if o.sleep_ms > 0 {
        std::thread::sleep(Duration::from_millis(o.sleep_ms));
    }
    if !bad.is_empty() {
        std::process::exit(1);
    }
    std::process::exit(o.exit);
}
