//! An i8042 keyboard controller with no keyboard: enough of the controller protocol that
//! Linux's driver probes it in a handful of port accesses (self-test, command byte, interface
//! test), and the reset line: command 0xfe on port 0x64 resets the machine, which is how a
//! guest booted with `reboot=k` reboots, and for us ends the VM.

use std::collections::VecDeque;

use crate::bus::{DeviceAction, PioDevice};
use crate::snapshot::state::I8042State;

/// Data port.
pub const I8042_DATA_PORT: u16 = 0x60;
/// The device spans 0x60..=0x64 (data at offset 0, status/command at offset 4).
pub const I8042_PORTS: u16 = 5;
/// Offset of the status/command port from [`I8042_DATA_PORT`].
const CMD_OFFSET: u16 = 4;

/// Status bit: output buffer full (data for the guest at port 0x60).
const SB_OUT_FULL: u8 = 0x01;
/// Status bit: system flag (self-test passed).
const SB_SYSTEM: u8 = 0x04;
/// Status bit: last write was a command.
const SB_CMD: u8 = 0x08;
/// Status bit: keyboard not inhibited.
const SB_KBD_ENABLED: u8 = 0x10;

/// Controller commands.
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_OUTP: u8 = 0xd0;
const CMD_WRITE_OUTP: u8 = 0xd1;
const CMD_WRITE_KBD_OUT: u8 = 0xd2;
const CMD_WRITE_AUX_OUT: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_RESET_CPU: u8 = pod_abi::reset::COMMAND;

/// Self-test passed.
const SELF_TEST_OK: u8 = 0x55;
/// Interface test passed.
const IFACE_TEST_OK: u8 = 0x00;
/// Keyboard command acknowledged.
const KBD_ACK: u8 = 0xfa;
/// Default controller configuration byte: keyboard interrupt on, system flag, translation.
const DEFAULT_CTR: u8 = 0x45;
/// Most bytes we queue for the guest.
const MAX_QUEUE: usize = 16;

/// The controller.
pub struct I8042 {
    ctr: u8,
    outp: u8,
    cmd_pending: Option<u8>,
    out: VecDeque<u8>,
    last_was_cmd: bool,
}

impl Default for I8042 {
    fn default() -> Self {
        I8042 {
            ctr: DEFAULT_CTR,
            outp: 0x01,
            cmd_pending: None,
            out: VecDeque::new(),
            last_was_cmd: false,
        }
    }
}

impl I8042 {
    /// A controller in its power-on state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The controller's state, for a snapshot.
    pub fn state(&self) -> I8042State {
        I8042State {
            ctr: self.ctr,
            outp: self.outp,
            cmd_pending: self.cmd_pending,
            out: self.out.iter().copied().collect(),
            last_was_cmd: self.last_was_cmd,
        }
    }

    /// Puts the controller in state `s` (from a snapshot; the queue is cut to its bound).
    pub fn set_state(&mut self, s: &I8042State) {
        self.ctr = s.ctr;
        self.outp = s.outp;
        self.cmd_pending = s.cmd_pending;
        self.out = s.out.iter().copied().take(MAX_QUEUE).collect();
        self.last_was_cmd = s.last_was_cmd;
    }

    fn push(&mut self, b: u8) {
        if self.out.len() < MAX_QUEUE {
            self.out.push_back(b);
        }
    }

    fn status(&self) -> u8 {
        let mut s = SB_SYSTEM | SB_KBD_ENABLED;
        if !self.out.is_empty() {
            s |= SB_OUT_FULL;
        }
        if self.last_was_cmd {
            s |= SB_CMD;
        }
        s
    }

    fn command(&mut self, cmd: u8) -> DeviceAction {
        self.last_was_cmd = true;
        match cmd {
            CMD_RESET_CPU => return DeviceAction::Reset,
            CMD_READ_CTR => self.push(self.ctr),
            CMD_READ_OUTP => self.push(self.outp),
            CMD_SELF_TEST => self.push(SELF_TEST_OK),
            CMD_KBD_TEST | CMD_AUX_TEST => self.push(IFACE_TEST_OK),
            CMD_WRITE_CTR | CMD_WRITE_OUTP | CMD_WRITE_KBD_OUT | CMD_WRITE_AUX_OUT
            | CMD_WRITE_AUX => self.cmd_pending = Some(cmd),
            CMD_KBD_DISABLE | CMD_KBD_ENABLE | CMD_AUX_DISABLE | CMD_AUX_ENABLE => {}
            _ => {}
        }
        DeviceAction::None
    }

    fn data(&mut self, b: u8) -> DeviceAction {
        self.last_was_cmd = false;
        match self.cmd_pending.take() {
            Some(CMD_WRITE_CTR) => self.ctr = b,
            Some(CMD_WRITE_OUTP) => {
                self.outp = b;
                // Output port bit 0 low pulses the CPU reset line.
                if b & 1 == 0 {
                    return DeviceAction::Reset;
                }
            }
            // Echo "from keyboard/aux" bytes back, as a real controller does.
            Some(CMD_WRITE_KBD_OUT) | Some(CMD_WRITE_AUX_OUT) => self.push(b),
            // No mouse: drop what is sent to it.
            Some(CMD_WRITE_AUX) => {}
            // A byte for the keyboard itself: there is none, but acknowledge it so probes end.
            _ => self.push(KBD_ACK),
        }
        DeviceAction::None
    }
}

impl PioDevice for I8042 {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        let v = match offset {
            0 => self.out.pop_front().unwrap_or(0),
            CMD_OFFSET => self.status(),
            _ => 0xff,
        };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) -> DeviceAction {
        let Some(&b) = data.first() else {
            return DeviceAction::None;
        };
        match offset {
            0 => self.data(b),
            CMD_OFFSET => self.command(b),
            _ => DeviceAction::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd(d: &mut I8042, off: u16) -> u8 {
        let mut b = [0u8];
        d.read(off, &mut b);
        b[0]
    }

    #[test]
    fn reset_command_resets() {
        let mut d = I8042::new();
        assert_eq!(
            rd(&mut d, 4) & 0x02,
            0,
            "input buffer never full, so kb_wait ends at once"
        );
        assert_eq!(d.write(4, &[CMD_RESET_CPU]), DeviceAction::Reset);
    }

    #[test]
    fn guest_init_reset_lands_on_the_command_port() {
        assert_eq!(I8042_DATA_PORT + CMD_OFFSET, pod_abi::reset::PORT);
        let mut d = I8042::new();
        let off = pod_abi::reset::PORT - I8042_DATA_PORT;
        assert_eq!(
            d.write(off, &[pod_abi::reset::COMMAND]),
            DeviceAction::Reset
        );
    }

    #[test]
    fn state_round_trips() {
        let mut d = I8042::new();
        d.write(4, &[CMD_WRITE_CTR]); // a command waiting for its byte
        d.write(4, &[CMD_SELF_TEST]);
        let st = d.state();
        let mut e = I8042::new();
        e.set_state(&st);
        assert_eq!(e.state(), st);
        assert_eq!(rd(&mut e, 0), SELF_TEST_OK);
    }

    #[test]
    fn probe_sequence() {
        let mut d = I8042::new();
        assert_eq!(d.write(4, &[CMD_SELF_TEST]), DeviceAction::None);
        assert_eq!(rd(&mut d, 4) & SB_OUT_FULL, SB_OUT_FULL);
        assert_eq!(rd(&mut d, 0), SELF_TEST_OK);
        assert_eq!(rd(&mut d, 4) & SB_OUT_FULL, 0);
        d.write(4, &[CMD_READ_CTR]);
        assert_eq!(rd(&mut d, 0), DEFAULT_CTR);
        d.write(4, &[CMD_WRITE_CTR]);
        d.write(0, &[0x47]);
        d.write(4, &[CMD_READ_CTR]);
        assert_eq!(rd(&mut d, 0), 0x47);
        d.write(4, &[CMD_WRITE_KBD_OUT]);
        d.write(0, &[0x5a]);
        assert_eq!(rd(&mut d, 0), 0x5a);
        d.write(0, &[0xff]);
        assert_eq!(rd(&mut d, 0), KBD_ACK);
        d.write(4, &[CMD_WRITE_OUTP]);
        assert_eq!(d.write(0, &[0xfe]), DeviceAction::Reset);
    }

    #[test]
    fn queue_is_bounded() {
        let mut d = I8042::new();
        for _ in 0..1000 {
            d.write(4, &[CMD_SELF_TEST]);
        }
        assert_eq!(d.out.len(), MAX_QUEUE);
    }
}
