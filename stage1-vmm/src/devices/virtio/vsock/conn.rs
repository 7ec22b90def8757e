//! One connection's state machine and credit accounting, as plain data: [`step`] maps a
//! [`State`] and an [`Event`] to the next state and the [`Actions`] the muxer carries out;
//! [`Credit`] is the virtio flow control of one connection (virtio 1.2, 5.10.6.3). Nothing here
//! touches a socket or guest memory, so all of it is unit-tested without KVM.
//!
//! Phases: a host-initiated connection starts `Connecting` (we sent REQUEST, the guest has
//! [`super::muxer::CONNECT_TIMEOUT`] to answer RESPONSE); a guest-initiated one starts `Established`
//! (we connected the host listener and answer RESPONSE). `Draining` waits for the bytes the
//! guest sent to reach the host before the final RST; `Closed` is terminal (the connection is
//! removed). Any protocol error from the guest (a second REQUEST, data beyond its credit, data
//! after it said it would send no more, a RESPONSE out of turn) resets the connection.

use std::num::Wrapping;

/// SHUTDOWN flag: the sender will receive no more data (virtio 1.2, 5.10.6.5).
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Host-initiated: REQUEST sent to the guest, waiting for RESPONSE or RST.
    Connecting,
    /// Data flows (each direction until its side shuts it down).
    Established,
    /// Both sides are done (or the guest closed): flushing to the host, then RST.
    Draining,
    /// Gone: the muxer removes it.
    Closed,
}

/// A connection's state: its phase and which directions have ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// The phase.
    pub phase: Phase,
    /// The guest said it sends no more (SHUTDOWN with `SEND`).
    pub guest_no_send: bool,
    /// The guest said it receives no more (SHUTDOWN with `RCV`).
    pub guest_no_recv: bool,
    /// The host side reached end of file (we told the guest with SHUTDOWN `SEND`).
    pub host_no_send: bool,
}

impl State {
    /// A connection in `phase` with both directions open.
    pub const fn new(phase: Phase) -> State {
        State {
            phase,
            guest_no_send: false,
            guest_no_recv: false,
            host_no_send: false,
        }
    }

    const fn closed(self) -> State {
        State {
            phase: Phase::Closed,
            ..self
        }
    }

    /// Whether the host stream should be read (and its data sent to the guest).
    pub fn reads_host(&self) -> bool {
        self.phase == Phase::Established && !self.host_no_send && !self.guest_no_recv
    }

    /// Whether the connection waits for a deadline (`Connecting`, `Draining`).
    pub fn has_deadline(&self) -> bool {
        matches!(self.phase, Phase::Connecting | Phase::Draining)
    }
}

/// What happened to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The guest sent RESPONSE.
    Response,
    /// The guest sent RST.
    Rst,
    /// The guest sent SHUTDOWN with these flags.
    Shutdown {
        /// `SHUTDOWN_RCV` was set.
        rcv: bool,
        /// `SHUTDOWN_SEND` was set.
        send: bool,
    },
    /// The guest sent data (RW) within its credit.
    Rw,
    /// The guest sent data beyond the credit we gave it.
    Overflow,
    /// The guest sent CREDIT_UPDATE.
    CreditUpdate,
    /// The guest sent CREDIT_REQUEST.
    CreditRequest,
    /// The guest sent REQUEST for a connection that exists.
    Request,
    /// The guest sent an operation that is not a stream operation.
    BadOp,
    /// The host stream reached end of file.
    HostEof,
    /// Reading or writing the host stream failed.
    HostError,
    /// Everything the guest sent has been written to the host.
    Flushed,
    /// The phase's deadline passed.
    Timeout,
}

/// What the muxer does after a transition (a set; see the constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions(u16);

impl Actions {
    /// Nothing.
    pub const NONE: Actions = Actions(0);
    /// Write `OK <local port>\n` to the host stream and start reading it.
    pub const SEND_OK: Actions = Actions(1);
    /// Write the packet's data to the host stream.
    pub const FORWARD: Actions = Actions(1 << 1);
    /// Send CREDIT_UPDATE to the guest.
    pub const CREDIT_UPDATE: Actions = Actions(1 << 2);
    /// Send SHUTDOWN `SEND` to the guest (the host sends no more).
    pub const SHUTDOWN_GUEST: Actions = Actions(1 << 3);
    /// Shut the host stream's write side once everything buffered is written.
    pub const SHUT_HOST_WRITE: Actions = Actions(1 << 4);
    /// Send RST to the guest.
    pub const RST: Actions = Actions(1 << 5);
    /// Remove the connection and close the host stream.
    pub const CLOSE: Actions = Actions(1 << 6);
    /// Start the phase's deadline.
    pub const ARM_DEADLINE: Actions = Actions(1 << 7);
    /// Check at once whether the buffer is empty (then [`Event::Flushed`]).
    pub const CHECK_FLUSHED: Actions = Actions(1 << 8);

    /// Whether every action of `other` is in the set.
    pub const fn has(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Actions {
    type Output = Actions;
    fn bitor(self, rhs: Actions) -> Actions {
        Actions(self.0 | rhs.0)
    }
}

/// The transition function: the next state and what to do.
pub fn step(s: State, ev: Event) -> (State, Actions) {
    use Event as E;
    use Phase as P;
    let reset = (s.closed(), Actions::RST | Actions::CLOSE);
    match (s.phase, ev) {
        (P::Closed, _) => (s, Actions::NONE),
        // The guest closed it: no answer to an RST.
        (_, E::Rst) => (s.closed(), Actions::CLOSE),
        (_, E::HostError | E::Overflow | E::Request | E::BadOp) => reset,

        (P::Connecting, E::Response) => (
            State {
                phase: P::Established,
                ..s
            },
            Actions::SEND_OK,
        ),
        (P::Connecting, _) => reset,

        (P::Established, E::Response) => reset,
        (P::Established, E::Rw) if s.guest_no_send => reset,
        (P::Established, E::Rw) => (s, Actions::FORWARD),
        (P::Established | P::Draining, E::CreditUpdate) => (s, Actions::NONE),
        (P::Established | P::Draining, E::CreditRequest) => (s, Actions::CREDIT_UPDATE),
        (P::Established, E::Shutdown { rcv, send }) => {
            let n = State {
                guest_no_send: s.guest_no_send || send,
                guest_no_recv: s.guest_no_recv || rcv,
                ..s
            };
            let done = n.guest_no_send && (n.guest_no_recv || n.host_no_send);
            if done {
                (
                    State {
                        phase: P::Draining,
                        ..n
                    },
                    Actions::ARM_DEADLINE | Actions::CHECK_FLUSHED,
                )
            } else if send && !s.guest_no_send {
                (n, Actions::SHUT_HOST_WRITE)
            } else {
                (n, Actions::NONE)
            }
        }
        (P::Established, E::HostEof) => {
            let n = State {
                host_no_send: true,
                ..s
            };
            if n.guest_no_send {
                (
                    State {
                        phase: P::Draining,
                        ..n
                    },
                    Actions::SHUTDOWN_GUEST | Actions::ARM_DEADLINE | Actions::CHECK_FLUSHED,
                )
            } else {
                (n, Actions::SHUTDOWN_GUEST)
            }
        }
        (P::Established, E::Flushed | E::Timeout) => (s, Actions::NONE),

        (P::Draining, E::Flushed | E::Timeout) => reset,
        (P::Draining, E::HostEof) => (s, Actions::NONE),
        (P::Draining, E::Shutdown { .. }) => (s, Actions::NONE),
        (P::Draining, E::Rw | E::Response) => reset,
    }
}

/// Flow control of one connection (wrapping 32-bit counters, as on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credit {
    /// Our receive buffer for guest data (bytes), advertised as `buf_alloc`.
    pub buf_alloc: u32,
    /// Guest bytes received.
    pub rx_cnt: Wrapping<u32>,
    /// Guest bytes written to the host (advertised as `fwd_cnt`).
    pub fwd_cnt: Wrapping<u32>,
    /// The `fwd_cnt` last sent to the guest.
    pub last_fwd_sent: Wrapping<u32>,
    /// The guest's receive buffer (bytes), from its latest packet.
    pub peer_buf_alloc: u32,
    /// The guest's `fwd_cnt`, from its latest packet.
    pub peer_fwd_cnt: Wrapping<u32>,
    /// Bytes sent to the guest.
    pub tx_cnt: Wrapping<u32>,
}

impl Credit {
    /// A connection advertising `buf_alloc` bytes.
    pub fn new(buf_alloc: u32) -> Credit {
        Credit {
            buf_alloc,
            rx_cnt: Wrapping(0),
            fwd_cnt: Wrapping(0),
            last_fwd_sent: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            tx_cnt: Wrapping(0),
        }
    }

    /// Takes the guest's view from a packet header.
    pub fn update_peer(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = Wrapping(fwd_cnt);
    }

    /// Bytes we may still send to the guest (0 if its counters make no sense).
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Guest bytes received and not yet written to the host.
    pub fn buffered(&self) -> u32 {
        (self.rx_cnt - self.fwd_cnt).0
    }

    /// Accounts `len` guest bytes; `false` (nothing accounted) if they exceed our buffer.
    pub fn receive(&mut self, len: u32) -> bool {
        match self.buffered().checked_add(len) {
            Some(total) if total <= self.buf_alloc => {
                self.rx_cnt += Wrapping(len);
                true
            }
            _ => false,
        }
    }

    /// `n` guest bytes were written to the host.
    pub fn forwarded(&mut self, n: u32) {
        self.fwd_cnt += Wrapping(n);
    }

    /// `n` bytes were sent to the guest.
    pub fn sent(&mut self, n: u32) {
        self.tx_cnt += Wrapping(n);
    }

    /// Whether the guest should be told about freed buffer space: a quarter of the buffer
    /// freed since the last packet we sent it (every packet carries `fwd_cnt`).
    pub fn needs_update(&self) -> bool {
        (self.fwd_cnt - self.last_fwd_sent).0 >= self.buf_alloc / 4
    }

    /// A packet carrying the current `fwd_cnt` goes to the guest.
    pub fn advertised(&mut self) {
        self.last_fwd_sent = self.fwd_cnt;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est() -> State {
        State::new(Phase::Established)
    }

    #[test]
    fn host_initiated_handshake() {
        let s = State::new(Phase::Connecting);
        let (n, a) = step(s, Event::Response);
        assert_eq!(n.phase, Phase::Established);
        assert_eq!(a, Actions::SEND_OK);
        // Refused, or no answer in time, or anything else first.
        assert_eq!(step(s, Event::Rst), (s.closed(), Actions::CLOSE));
        for ev in [
            Event::Timeout,
            Event::Rw,
            Event::HostEof,
            Event::CreditUpdate,
        ] {
            let (n, a) = step(s, ev);
            assert_eq!(n.phase, Phase::Closed, "{ev:?}");
            assert!(a.has(Actions::RST | Actions::CLOSE), "{ev:?}");
        }
    }

    #[test]
    fn protocol_errors_reset() {
        for ev in [
            Event::Request,
            Event::Overflow,
            Event::BadOp,
            Event::HostError,
            Event::Response,
        ] {
            let (n, a) = step(est(), ev);
            assert_eq!(n.phase, Phase::Closed, "{ev:?}");
            assert!(a.has(Actions::RST | Actions::CLOSE), "{ev:?}");
        }
        // Data after the guest's SHUTDOWN(SEND).
        let (s, _) = step(
            est(),
            Event::Shutdown {
                rcv: false,
                send: true,
            },
        );
        assert_eq!(step(s, Event::Rw).0.phase, Phase::Closed);
        // A closed connection ignores everything.
        let c = est().closed();
        assert_eq!(step(c, Event::Rw), (c, Actions::NONE));
    }

    #[test]
    fn guest_closes_fully_then_rst_after_flush() {
        let (s, a) = step(
            est(),
            Event::Shutdown {
                rcv: true,
                send: true,
            },
        );
        assert_eq!(s.phase, Phase::Draining);
        assert!(a.has(Actions::ARM_DEADLINE | Actions::CHECK_FLUSHED));
        assert!(!s.reads_host());
        let (n, a) = step(s, Event::Flushed);
        assert_eq!(n.phase, Phase::Closed);
        assert!(a.has(Actions::RST | Actions::CLOSE));
        // A host that never reads: the deadline ends it the same way.
        assert!(step(s, Event::Timeout).1.has(Actions::RST));
    }

    #[test]
    fn half_closes_in_either_order() {
        // Guest stops sending first: the host's write side is shut, reading goes on.
        let (s, a) = step(
            est(),
            Event::Shutdown {
                rcv: false,
                send: true,
            },
        );
        assert_eq!(a, Actions::SHUT_HOST_WRITE);
        assert!(s.reads_host());
        // A repeated SHUTDOWN does nothing more.
        assert_eq!(
            step(
                s,
                Event::Shutdown {
                    rcv: false,
                    send: true
                }
            )
            .1,
            Actions::NONE
        );
        let (s, a) = step(s, Event::HostEof);
        assert_eq!(s.phase, Phase::Draining);
        assert!(a.has(Actions::SHUTDOWN_GUEST));

        // Host stops first: the guest is told, and may still send.
        let (s, a) = step(est(), Event::HostEof);
        assert_eq!(a, Actions::SHUTDOWN_GUEST);
        assert_eq!(s.phase, Phase::Established);
        assert!(!s.reads_host());
        assert_eq!(step(s, Event::Rw).1, Actions::FORWARD);
        let (s, _) = step(
            s,
            Event::Shutdown {
                rcv: false,
                send: true,
            },
        );
        assert_eq!(s.phase, Phase::Draining);
    }

    #[test]
    fn credit_request_is_answered() {
        assert_eq!(step(est(), Event::CreditRequest).1, Actions::CREDIT_UPDATE);
        assert_eq!(step(est(), Event::CreditUpdate).1, Actions::NONE);
    }

    #[test]
    fn credit_accounting() {
        let mut c = Credit::new(1000);
        assert_eq!(
            c.peer_credit(),
            0,
            "no credit before the guest's first packet"
        );
        c.update_peer(4096, 0);
        assert_eq!(c.peer_credit(), 4096);
        c.sent(4000);
        assert_eq!(c.peer_credit(), 96);
        c.update_peer(4096, 4000);
        assert_eq!(c.peer_credit(), 4096);
        // A guest whose counters make no sense gets no credit, never a wrap-around.
        c.update_peer(10, 0);
        assert_eq!(c.peer_credit(), 0);

        // Our buffer: the guest may fill it, never overfill it.
        assert!(c.receive(600));
        assert!(!c.receive(401));
        assert!(c.receive(400));
        assert_eq!(c.buffered(), 1000);
        assert!(!c.receive(1));
        assert!(!c.needs_update());
        c.forwarded(250);
        assert!(c.needs_update());
        c.advertised();
        assert!(!c.needs_update());
        assert!(c.receive(250));
        assert!(!c.receive(u32::MAX));
    }

    #[test]
    fn counters_wrap() {
        let mut c = Credit::new(1 << 18);
        c.rx_cnt = Wrapping(u32::MAX - 10);
        c.fwd_cnt = Wrapping(u32::MAX - 10);
        assert!(c.receive(100));
        assert_eq!(c.buffered(), 100);
        c.forwarded(100);
        assert_eq!(c.buffered(), 0);
        c.tx_cnt = Wrapping(5);
        c.update_peer(1000, u32::MAX - 4);
        assert_eq!(c.peer_credit(), 990);
    }
}
