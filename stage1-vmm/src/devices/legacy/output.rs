//! Where UART output goes without ever blocking a vCPU thread: [`AsyncWriter`] queues bytes in a
//! bounded buffer drained by its own thread (bytes beyond the bound are dropped and counted),
//! and [`PanicWatch`] spots the kernel's panic line on the way.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::threads::{self, ThreadKind};

/// Default bound of an [`AsyncWriter`]'s queue (bytes, 1 MiB).
pub const DEFAULT_QUEUE_BYTES: usize = 1 << 20;
/// Most bytes of one line [`PanicWatch`] keeps (longer lines are truncated).
const MAX_LINE: usize = 512;
/// The line the kernel prints when it panics (see kernel/panic.c).
pub const PANIC_MARKER: &str = "Kernel panic - not syncing";

/// Counters of an output channel.
#[derive(Debug, Default)]
pub struct OutputStats {
    /// Bytes handed to the backend.
    pub written: AtomicU64,
    /// Bytes dropped because the queue was full or the backend failed.
    pub dropped: AtomicU64,
}

struct Queue {
    buf: VecDeque<u8>,
    closed: bool,
}

struct Shared {
    q: Mutex<Queue>,
    cv: Condvar,
    cap: usize,
    stats: Arc<OutputStats>,
}

/// A `Write` that never blocks: bytes go into a bounded queue that a thread writes to the
/// backend. When the queue is full, bytes are dropped and counted in [`OutputStats::dropped`].
pub struct AsyncWriter {
    shared: Arc<Shared>,
}

/// Handle that flushes and stops the writer thread of an [`AsyncWriter`].
pub struct AsyncWriterHandle {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AsyncWriter {
    /// Starts a thread named `name` that writes queued bytes to `backend`.
    pub fn spawn(
        name: &str,
        mut backend: Box<dyn Write + Send>,
        cap: usize,
    ) -> io::Result<(AsyncWriter, AsyncWriterHandle, Arc<OutputStats>)> {
        let stats = Arc::new(OutputStats::default());
        let shared = Arc::new(Shared {
            q: Mutex::new(Queue {
                buf: VecDeque::new(),
                closed: false,
            }),
            cv: Condvar::new(),
            cap,
            stats: stats.clone(),
        });
        let s = shared.clone();
        let thread = threads::spawn(ThreadKind::Console, name, move || {
            let mut chunk = Vec::with_capacity(4096);
            loop {
                {
                    let mut q = lock(&s.q);
                    while q.buf.is_empty() && !q.closed {
                        q = s.cv.wait(q).unwrap_or_else(|p| p.into_inner());
                    }
                    if q.buf.is_empty() && q.closed {
                        break;
                    }
                    let n = q.buf.len().min(4096);
                    chunk.clear();
                    chunk.extend(q.buf.drain(..n));
                }
                let ok = backend.write_all(&chunk).and_then(|_| backend.flush());
                match ok {
                    Ok(()) => s
                        .stats
                        .written
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed),
                    Err(_) => s
                        .stats
                        .dropped
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed),
                };
            }
        })?;
        Ok((
            AsyncWriter {
                shared: shared.clone(),
            },
            AsyncWriterHandle {
                shared,
                thread: Some(thread),
            },
            stats,
        ))
    }
}

impl Write for AsyncWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut q = lock(&self.shared.q);
        let room = self.shared.cap.saturating_sub(q.buf.len());
        let take = room.min(data.len());
        q.buf.extend(data.iter().take(take));
        drop(q);
        if take < data.len() {
            self.shared
                .stats
                .dropped
                .fetch_add((data.len() - take) as u64, Ordering::Relaxed);
        }
        if take > 0 {
            self.shared.cv.notify_one();
        }
        // Report everything as written: dropping is the policy, not an error for the UART.
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncWriterHandle {
    /// Lets the thread write what is queued, then stops it.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        lock(&self.shared.q).closed = true;
        self.shared.cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AsyncWriterHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `Write` that forwards everything and records the first kernel panic line it sees.
pub struct PanicWatch<W: Write> {
    inner: W,
    line: Vec<u8>,
    found: Arc<Mutex<Option<String>>>,
    on_panic: Option<Box<dyn Fn() + Send>>,
}

impl<W: Write> PanicWatch<W> {
    /// Watches `inner`; the panic line lands in `found`, and `on_panic` runs once when it does.
    pub fn new(
        inner: W,
        found: Arc<Mutex<Option<String>>>,
        on_panic: Option<Box<dyn Fn() + Send>>,
    ) -> Self {
        PanicWatch {
            inner,
            line: Vec::new(),
            found,
            on_panic,
        }
    }

    fn end_line(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        if let Some(pos) = text.find(PANIC_MARKER) {
            let mut f = lock(&self.found);
            if f.is_none() {
                *f = Some(text[pos..].trim_end().to_string());
                drop(f);
                if let Some(cb) = &self.on_panic {
                    cb();
                }
            }
        }
        self.line.clear();
    }
}

impl<W: Write> Write for PanicWatch<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        for &b in data {
            if b == b'\n' {
                self.end_line();
            } else if b != b'\r' && self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
        self.inner.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend that blocks until released, to prove writers never block.
    struct Gate(Arc<(Mutex<bool>, Condvar)>, Arc<Mutex<Vec<u8>>>);
    impl Write for Gate {
        fn write(&mut self, d: &[u8]) -> io::Result<usize> {
            let (m, cv) = &*self.0;
            let mut open = lock(m);
            while !*open {
                open = cv.wait(open).unwrap_or_else(|p| p.into_inner());
            }
            lock(&self.1).extend_from_slice(d);
            Ok(d.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn never_blocks_and_counts_drops() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let out = Arc::new(Mutex::new(Vec::new()));
        let (mut w, h, stats) =
            AsyncWriter::spawn("test-out", Box::new(Gate(gate.clone(), out.clone())), 8)
                .expect("spawns");
        // The thread takes the first chunk and blocks in the backend; then the queue fills.
        w.write_all(b"abcd").expect("queued");
        std::thread::sleep(std::time::Duration::from_millis(50));
        w.write_all(b"0123456789").expect("never fails");
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 2);
        *lock(&gate.0) = true;
        gate.1.notify_all();
        h.finish();
        assert_eq!(&*lock(&out), b"abcd01234567");
        assert_eq!(stats.written.load(Ordering::Relaxed), 12);
    }

    #[test]
    fn spots_the_panic_line() {
        let found = Arc::new(Mutex::new(None));
        let hits = Arc::new(AtomicU64::new(0));
        let h = hits.clone();
        let mut w = PanicWatch::new(
            Vec::new(),
            found.clone(),
            Some(Box::new(move || {
                h.fetch_add(1, Ordering::Relaxed);
            })),
        );
        w.write_all(
            b"[    1.0] Run /init\r\n[    1.2] Kernel panic - not syncing: Attempted to ki",
        )
        .expect("writes");
        assert!(lock(&found).is_none(), "not before the end of the line");
        w.write_all(b"ll init! exitcode=0x00000100\r\n")
            .expect("writes");
        w.write_all(b"Kernel panic - not syncing: again\n")
            .expect("writes");
        assert_eq!(
            lock(&found).as_deref(),
            Some("Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100")
        );
        assert_eq!(hits.load(Ordering::Relaxed), 1);
        assert!(w.inner.starts_with(b"[    1.0] Run /init"));
    }
}
