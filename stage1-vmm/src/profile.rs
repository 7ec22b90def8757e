//! Guest sampling profiler, a debugging aid: with `RKT_VMM_PROFILE=<µs>` ([`PROFILE_ENV`]) a
//! sampler thread kicks every vCPU thread each interval; the kicked vCPU reads its guest's
//! instruction pointer (`KVM_GET_REGS`) and goes on. At the VM's end [`Samples::print`] writes
//! one line per sample to stderr, `rkt-vmm-sample <µs since the vCPUs started> <vcpu> <rip>`,
//! for `bench/guest-profile.py` to resolve against the kernel's symbols (docs/vmm.md, "Where
//! the time goes"). Each sample is one more exit, so an interval of a few ms disturbs little.
//!
//! Profiled vCPUs run with the snapshot vCPU's seccomp profile (it allows reading their own
//! registers); the sampler is a [`ThreadKind::Sampler`] thread (sleeps and signals only).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::threads::{self, ThreadKind};

/// Environment knob: the sampling interval in µs (unset, `0` or not a number: no profiling).
pub const PROFILE_ENV: &str = "RKT_VMM_PROFILE";

/// The shortest interval taken, µs (a sample is an exit).
const MIN_INTERVAL_US: u64 = 100;

/// The interval `value` asks for, if any.
pub fn parse_interval(value: Option<&str>) -> Option<Duration> {
    let us: u64 = value?.trim().parse().ok()?;
    (us > 0).then(|| Duration::from_micros(us.max(MIN_INTERVAL_US)))
}

/// The interval this process's environment asks for.
pub fn interval() -> Option<Duration> {
    parse_interval(std::env::var(PROFILE_ENV).ok().as_deref())
}

/// One vCPU's samples: (µs since `start`, guest RIP).
#[derive(Debug)]
pub struct Samples {
    start: Instant,
    vcpu: u8,
    taken: Vec<(u64, u64)>,
}

impl Samples {
    /// An empty record for vCPU `vcpu`, times counted from `start`.
    pub fn new(start: Instant, vcpu: u8) -> Self {
        Samples {
            start,
            vcpu,
            taken: Vec::new(),
        }
    }

    /// Records `rip` now.
    pub fn record(&mut self, rip: u64) {
        let us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.taken.push((us, rip));
    }

    /// Writes the samples to `out`, one `rkt-vmm-sample` line each.
    pub fn print(&self, out: &mut dyn Write) -> io::Result<()> {
        for (us, rip) in &self.taken {
            writeln!(out, "rkt-vmm-sample {us} {} {rip:#x}", self.vcpu)?;
        }
        Ok(())
    }
}

/// The running sampler thread.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// Starts kicking `targets` (vCPU threads) with `signal` every `every`.
pub fn start(targets: Vec<libc::pthread_t>, signal: i32, every: Duration) -> io::Result<Sampler> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = threads::spawn(ThreadKind::Sampler, "sampler", move || {
        while !flag.load(Ordering::SeqCst) {
            std::thread::sleep(every);
            for t in &targets {
                // SAFETY: `t` names a vCPU thread that is not joined before this thread is
                // (`Sampler::finish` comes first), so the handle stays valid; a thread that has
                // already returned makes pthread_kill fail with ESRCH, which is ignored.
                unsafe { libc::pthread_kill(*t, signal) };
            }
        }
    })?;
    Ok(Sampler { stop, thread })
}

impl Sampler {
    /// Stops and joins the sampler; call before joining the vCPU threads.
    pub fn finish(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval(None), None);
        assert_eq!(parse_interval(Some("0")), None);
        assert_eq!(parse_interval(Some("x")), None);
        assert_eq!(parse_interval(Some("2000")), Some(Duration::from_millis(2)));
        assert_eq!(parse_interval(Some("1")), Some(Duration::from_micros(100)));
    }

    #[test]
    fn samples_print_as_lines() {
        let mut s = Samples::new(Instant::now(), 1);
        s.record(0xffff_ffff_8100_0000);
        let mut out = Vec::new();
        s.print(&mut out).expect("writes to a Vec");
        let line = String::from_utf8(out).expect("UTF-8");
        assert!(line.starts_with("rkt-vmm-sample "), "{line}");
        assert!(line.ends_with(" 1 0xffffffff81000000\n"), "{line}");
    }
}
