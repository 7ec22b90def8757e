//! An 8250/16550 UART on the port-I/O bus (vm-superio's model), raising its IRQ through an
//! eventfd bound to a GSI of the in-kernel irqchip. Output goes to any `Write` (give it a
//! non-blocking one, see [`super::AsyncWriter`]); input is pushed in by the VMM's event loop,
//! at most what the 64-byte FIFO holds.

use std::io::Write;
use std::sync::Arc;

use vm_superio::serial::SerialEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{DeviceAction, PioDevice};

/// COM1 base port.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1 IRQ (ISA IRQ = IOAPIC pin = GSI).
pub const COM1_IRQ: u32 = 4;
/// COM2 base port.
pub const COM2_PORT: u16 = 0x2f8;
/// COM2 IRQ.
pub const COM2_IRQ: u32 = 3;
/// Number of ports a UART decodes.
pub const UART_PORTS: u16 = 8;

/// An eventfd used as an interrupt line.
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Serial events we care about: the guest drained the input FIFO (wake the event loop so it
/// reads more input).
pub struct InputDrained(pub Arc<EventFd>);

impl SerialEvents for InputDrained {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        // Best effort: a lost wakeup only delays input until the next poll timeout.
        let _ = self.0.write(1);
    }
}

/// One UART.
pub struct SerialDevice {
    inner: Serial<EventFdTrigger, InputDrained, Box<dyn Write + Send>>,
}

impl SerialDevice {
    /// A UART raising `irq` and writing output to `out`; `drained` is signalled when the guest
    /// has read all queued input.
    pub fn new(irq: EventFd, drained: Arc<EventFd>, out: Box<dyn Write + Send>) -> Self {
        SerialDevice {
            inner: Serial::with_events(EventFdTrigger(irq), InputDrained(drained), out),
        }
    }

    /// Free space in the input FIFO (bytes).
    pub fn input_room(&self) -> usize {
        self.inner.fifo_capacity()
    }

    /// Queues guest input; returns how many bytes fit.
    pub fn enqueue_input(&mut self, data: &[u8]) -> usize {
        self.inner.enqueue_raw_bytes(data).unwrap_or(0)
    }
}

impl PioDevice for SerialDevice {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        let v = self.inner.read(offset as u8);
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> DeviceAction {
        if let Some(&b) = data.first() {
            // An output error only loses the byte (the writer never blocks).
            let _ = self.inner.write(offset as u8, b);
        }
        DeviceAction::None
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, d: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(d);
            Ok(d.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_input_and_interrupts() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        let drained = Arc::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"));
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut s = SerialDevice::new(
            irq.try_clone().expect("clone"),
            drained.clone(),
            Box::new(Shared(out.clone())),
        );
        for b in b"hi" {
            s.write(0, &[*b]);
        }
        assert_eq!(&*out.lock().expect("lock"), b"hi");
        // Enable the received-data interrupt (IER bit 0), queue input, read it back.
        s.write(1, &[1]);
        assert_eq!(s.enqueue_input(b"x"), 1);
        assert_eq!(irq.read().expect("irq raised"), 1);
        let mut lsr = [0u8];
        s.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut rbr = [0u8];
        s.read(0, &mut rbr);
        assert_eq!(rbr, *b"x");
        assert_eq!(drained.read().expect("drained signalled"), 1);
        assert_eq!(s.input_room(), 64);
    }
}
