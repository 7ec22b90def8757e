//! The kernel command line: our defaults, the user's additions, one `virtio_mmio.device=` entry
//! per registered virtio-mmio slot, and init arguments (after `--`) always last.

use thiserror::Error;

use crate::memory::CMDLINE_MAX_SIZE;

/// Default guest kernel command line. Each item, and why:
/// - `console=ttyS0`: the console is the 8250 on COM1, which the VMM streams to stdout.
/// - `reboot=k`: reboot through the i8042 (port 0x64 <- 0xfe), which ends the VM cleanly.
/// - `panic=1`: a panic reboots after 1 s instead of hanging; the VMM sees the panic line first.
/// - `quiet loglevel=3`: every console byte is two VM exits (THR write, LSR poll); print only
///   critical messages and worse (panics, oopses, the reboot line). Errors stay in the kernel
///   log (dmesg); a quiet boot printed three error lines (PCI without config access, KVM
///   without VMX/SVM twice), two thirds of its exits. A pod's `--debug` appends `loglevel=7`.
/// - `8250.nr_uarts=2`: COM1 and COM2 only; no probing of COM3/COM4.
/// - `noxsave`: XSAVE state is inconsistent under nested KVM (see environment.md); also skips
///   the XSAVE setup work at boot.
/// - `pci=off`: there is no PCI bus; skip probing 0xcf8/0xcfc (each probe is an exit).
/// - `acpi=off`: there are no ACPI tables; CPUs and IRQ routing come from the MP table.
/// - `i8042.nokbd i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd`: the i8042 model is only
///   there for the reset line (which `reboot=k` drives directly); register no keyboard or mouse
///   port, so no keyboard probe waits for answers (0.28 s of an L2 boot).
/// - `pty.legacy_count=0`: no BSD ptys (Unix98 ptys remain); creating 256 of them cost 1.3 s of
///   an L2 boot.
/// - `loop.max_loop=0`: create loop devices on demand only (8 upfront cost 0.4 s).
/// - `noreplace-smp`: on one CPU the kernel otherwise rewrites each of its ~6,100 `lock`
///   prefixes with a `text_poke` through a temporary mm (two CR3 writes and a TLB flush each;
///   ~0.15 s of an L2 boot under the harness's TCG). A locked instruction on one CPU is only a
///   little slower than an unlocked one.
/// - `tsc=reliable no_timer_check`: trust the TSC and skip the slow timer and TSC-watchdog
///   checks; kvmclock is the clock source.
/// - `rcupdate.rcu_expedited=1`: shortens the RCU grace periods that synchronize_rcu() waits
///   for during boot.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 quiet loglevel=3 noxsave \
     pci=off acpi=off 8250.nr_uarts=2 i8042.nokbd i8042.noaux i8042.nomux i8042.nopnp \
     i8042.dumbkbd tsc=reliable no_timer_check rcupdate.rcu_expedited=1 pty.legacy_count=0 \
     loop.max_loop=0 noreplace-smp";

/// Errors building the command line.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CmdlineError {
    /// The line (with its NUL terminator) would not fit in the kernel's buffer.
    #[error("kernel command line is too long ({0} bytes, at most {max})", max = CMDLINE_MAX_SIZE - 1)]
    TooLong(usize),
    /// The line contains a NUL or a non-printable byte.
    #[error("kernel command line contains a control character")]
    BadChar,
}

/// A kernel command line under construction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    params: Vec<String>,
    init_args: Option<String>,
}

impl Cmdline {
    /// Parses `line` into kernel parameters and (after a ` -- `) init arguments.
    pub fn parse(line: &str) -> Result<Self, CmdlineError> {
        let mut c = Cmdline::default();
        c.push_str(line)?;
        Ok(c)
    }

    /// Appends `line` (kernel parameters, optionally followed by `-- init args`).
    pub fn push_str(&mut self, line: &str) -> Result<(), CmdlineError> {
        if line
            .bytes()
            .any(|b| b.is_ascii_control() && b != b' ' && b != b'\t')
        {
            return Err(CmdlineError::BadChar);
        }
        let mut words = line.split_whitespace();
        for w in words.by_ref() {
            if w == "--" {
                let rest: Vec<&str> = words.by_ref().collect();
                let rest = rest.join(" ");
                self.init_args = match self.init_args.take() {
                    Some(prev) if !rest.is_empty() => Some(format!("{prev} {rest}")),
                    Some(prev) => Some(prev),
                    None => Some(rest),
                };
                break;
            }
            self.params.push(w.to_string());
        }
        self.check_len()
    }

    /// Appends the entry that tells the kernel about one virtio-mmio device.
    pub fn add_virtio_mmio_device(
        &mut self,
        size: u64,
        base: u64,
        irq: u32,
    ) -> Result<(), CmdlineError> {
        let size = if size.is_multiple_of(1 << 10) {
            format!("{}K", size >> 10)
        } else {
            size.to_string()
        };
        self.params
            .push(format!("virtio_mmio.device={size}@{base:#x}:{irq}"));
        self.check_len()
    }

    /// Whether a parameter with exactly this key (`key` or `key=...`) is present.
    pub fn has_param(&self, key: &str) -> bool {
        self.params
            .iter()
            .any(|p| p == key || p.strip_prefix(key).is_some_and(|r| r.starts_with('=')))
    }

    /// The line as the kernel will see it (without the NUL terminator).
    pub fn as_string(&self) -> String {
        let mut s = self.params.join(" ");
        if let Some(init) = &self.init_args {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str("--");
            if !init.is_empty() {
                s.push(' ');
                s.push_str(init);
            }
        }
        s
    }

    /// The line NUL-terminated, as written to guest memory.
    pub fn to_bytes_with_nul(&self) -> Vec<u8> {
        let mut v = self.as_string().into_bytes();
        v.push(0);
        v
    }

    fn check_len(&self) -> Result<(), CmdlineError> {
        let len = self.as_string().len();
        if len + 1 > CMDLINE_MAX_SIZE {
            return Err(CmdlineError::TooLong(len));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bench/lib.sh's `BENCH_GUEST_CMDLINE` is [`DEFAULT_CMDLINE`] without `reboot=k`.
    #[test]
    fn the_benches_boot_with_the_default_line() {
        let lib = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/lib.sh"));
        let bench = lib
            .lines()
            .find_map(|l| l.strip_prefix("BENCH_GUEST_CMDLINE=\""))
            .and_then(|l| l.strip_suffix('"'))
            .expect("bench/lib.sh sets BENCH_GUEST_CMDLINE");
        let default: Vec<&str> = DEFAULT_CMDLINE
            .split_whitespace()
            .filter(|w| *w != "reboot=k")
            .collect();
        assert_eq!(bench.split_whitespace().collect::<Vec<_>>(), default);
    }

    #[test]
    fn default_line_parses_and_is_quiet() {
        let c = Cmdline::parse(DEFAULT_CMDLINE).expect("default parses");
        assert!(c.has_param("console"));
        assert!(c.has_param("quiet"));
        assert!(c.as_string().contains("quiet loglevel=3 "));
        assert!(c.has_param("reboot"));
        assert!(!c.has_param("cons"));
        assert!(c
            .as_string()
            .starts_with("console=ttyS0 reboot=k panic=1 quiet"));
    }

    #[test]
    fn virtio_entries_go_before_init_args() {
        let mut c = Cmdline::parse("console=ttyS0 -- --flag x").expect("parses");
        c.add_virtio_mmio_device(4096, 0xd000_0000, 5)
            .expect("fits");
        c.push_str("loglevel=3").expect("fits");
        assert_eq!(
            c.as_string(),
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 loglevel=3 -- --flag x"
        );
        assert_eq!(c.to_bytes_with_nul().last(), Some(&0));
    }

    #[test]
    fn odd_sizes_are_in_bytes() {
        let mut c = Cmdline::default();
        c.add_virtio_mmio_device(512, 0xfeb0_0e00, 12)
            .expect("fits");
        assert_eq!(c.as_string(), "virtio_mmio.device=512@0xfeb00e00:12");
    }

    #[test]
    fn rejects_too_long_and_control_chars() {
        let long = "a".repeat(CMDLINE_MAX_SIZE);
        assert!(matches!(
            Cmdline::parse(&long),
            Err(CmdlineError::TooLong(_))
        ));
        assert_eq!(Cmdline::parse("a\0b"), Err(CmdlineError::BadChar));
        assert_eq!(Cmdline::parse("a\nb"), Err(CmdlineError::BadChar));
        let ok = "a".repeat(CMDLINE_MAX_SIZE - 1);
        assert!(Cmdline::parse(&ok).is_ok());
    }
}
