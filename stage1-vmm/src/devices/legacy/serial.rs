//! An 8250/16550 UART on the port-I/O bus (vm-superio's model), raising its IRQ through an
//! eventfd bound to a GSI of the in-kernel irqchip. Output goes to any `Write` (give it a
//! non-blocking one, see [`super::AsyncWriter`]); input is pushed in by the VMM's event loop,
//! at most what the 64-byte FIFO holds.

use std::io::Write;
use std::sync::Arc;

use vm_superio::serial::{SerialEvents, SerialState};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::{DeviceAction, PioDevice};
use crate::snapshot::state::UartState;

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
/// The input FIFO's size (bytes; vm-superio's `FIFO_SIZE`).
pub const UART_FIFO_BYTES: usize = 64;

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

    /// The UART's registers and input FIFO, for a snapshot.
    pub fn state(&self) -> UartState {
        let s = self.inner.state();
        UartState {
            regs: [
                s.baud_divisor_low,
                s.baud_divisor_high,
                s.interrupt_enable,
                s.interrupt_identification,
                s.line_control,
                s.line_status,
                s.modem_control,
                s.modem_status,
                s.scratch,
            ],
            input: s.in_buffer,
        }
    }

    /// Puts the UART in state `s` (from a snapshot), keeping its interrupt, events and output.
    pub fn set_state(&mut self, s: &UartState) -> std::io::Result<()> {
        if s.input.len() > UART_FIFO_BYTES {
            return Err(std::io::Error::other("UART state: input beyond the FIFO"));
        }
        let [dll, dlm, ier, iir, lcr, lsr, mcr, msr, scr] = s.regs;
        let state = SerialState {
            baud_divisor_low: dll,
            baud_divisor_high: dlm,
            interrupt_enable: ier,
            interrupt_identification: iir,
            line_control: lcr,
            line_status: lsr,
            modem_control: mcr,
            modem_status: msr,
            scratch: scr,
            in_buffer: s.input.clone(),
        };
        let trigger = || self.inner.interrupt_evt().0.try_clone().map(EventFdTrigger);
        let placeholder = Serial::with_events(
            trigger()?,
            InputDrained(self.inner.events().0.clone()),
            Box::new(std::io::sink()) as Box<dyn Write + Send>,
        );
        let (t, ev) = (trigger()?, InputDrained(self.inner.events().0.clone()));
        let old = std::mem::replace(&mut self.inner, placeholder);
        self.inner = Serial::from_state(&state, t, ev, old.into_writer())
            .map_err(|e| std::io::Error::other(format!("bad UART state: {e:?}")))?;
        Ok(())
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

    #[test]
    fn state_carries_over_to_a_uart_with_another_output() {
        let irq = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        let drained = Arc::new(EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"));
        let mut a = SerialDevice::new(
            irq.try_clone().expect("clone"),
            drained.clone(),
            Box::new(std::io::sink()),
        );
        a.write(3, &[0x03]); // LCR: 8N1
        a.write(1, &[0x01]); // IER: received data
        a.write(7, &[0x5a]); // scratch
        a.enqueue_input(b"q");
        let st = a.state();
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut b = SerialDevice::new(
            irq.try_clone().expect("clone"),
            drained,
            Box::new(Shared(out.clone())),
        );
        b.set_state(&st).expect("restores");
        assert_eq!(b.state(), st);
        let mut d = [0u8];
        b.read(0, &mut d);
        assert_eq!(d, *b"q", "queued input survives");
        b.write(0, b"z");
        assert_eq!(
            &*out.lock().expect("lock"),
            b"z",
            "output goes to the new sink"
        );
        let too_long = UartState {
            input: vec![0; UART_FIFO_BYTES + 1],
            ..st
        };
        assert!(b.set_state(&too_long).is_err());
    }
}
