//! The muxer: maps (host port, guest port) to connections, turns guest packets into
//! [`conn::Event`]s and carries out the [`conn::Actions`], and produces the packets for the
//! guest (orphan RSTs first, then each connection's pending control packets, then data).
//!
//! Host side: the listener's clients go through a bounded handshake ([`Handshake`],
//! [`HANDSHAKE_TIMEOUT`]) before they become host-initiated connections; guest REQUESTs connect
//! to `vsock.sock_<port>` ([`backend::connect_host`]) or get an RST. Every host stream is in
//! the worker's epoll set only while there is something to do with it: readable interest while
//! the guest has credit and wants data, writable interest while guest data waits in the
//! connection's buffer (at most `buf_alloc` bytes: the guest is never given more credit).
//!
//! Bounds: [`MAX_CONNS`] connections, [`MAX_HANDSHAKES`] clients in the handshake,
//! [`MAX_ORPHAN_RSTS`] queued resets for packets that match no connection (more are dropped:
//! a guest that does not read its receive queue cannot grow the VMM), one pending control
//! packet of each kind per connection.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pod_abi::vsock::{ok_line, GUEST_CID, HOST_CID};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use super::backend::{self, connect_host, Handshake, HandshakeStep, Listener};
use super::conn::{self, Actions, Credit, Event, Phase, State, SHUTDOWN_RCV, SHUTDOWN_SEND};
use super::packet::{
    Header, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW,
    OP_SHUTDOWN, TYPE_STREAM,
};
use crate::devices::virtio::worker::FIRST_DEVICE_TOKEN;

/// Connections at once (count); a further REQUEST or host client is refused.
pub const MAX_CONNS: usize = 64;
/// Host clients in the `CONNECT` handshake at once (count); more are closed at once.
pub const MAX_HANDSHAKES: usize = 16;
/// Queued RSTs for packets matching no connection (count).
pub const MAX_ORPHAN_RSTS: usize = 256;
/// Per-connection buffer for guest data the host has not read yet (bytes), advertised as
/// `buf_alloc`.
pub const CONN_BUF: u32 = 256 * 1024;
/// How long a host client has to send its `CONNECT` line.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the guest has to answer a host-initiated REQUEST.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closing connection may take to hand its last guest bytes to the host.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// First local (host-side) port of host-initiated connections, as Firecracker does.
const FIRST_LOCAL_PORT: u32 = 1 << 30;

/// Epoll token of the listener.
pub const TOKEN_LISTENER: u64 = FIRST_DEVICE_TOKEN;
/// Epoll token of the worker's timer.
pub const TOKEN_TIMER: u64 = FIRST_DEVICE_TOKEN + 1;
/// First token of a host stream.
const FIRST_STREAM_TOKEN: u64 = FIRST_DEVICE_TOKEN + 2;

/// Pending control packets of a connection (bits).
const CTL_REQUEST: u8 = 1;
const CTL_RESPONSE: u8 = 1 << 1;
const CTL_CREDIT: u8 = 1 << 2;
const CTL_SHUTDOWN: u8 = 1 << 3;

/// Counters of one device (tests and debugging; monotonic except `open`).
#[derive(Debug, Default)]
pub struct VsockCounters {
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections established (either direction).
    pub established: AtomicU64,
    /// RSTs sent to the guest.
    pub rsts: AtomicU64,
    /// Guest packets dropped as malformed (bad chain, CID, type).
    pub bad_packets: AtomicU64,
}

/// (host port, guest port).
type Key = (u32, u32);

struct Conn {
    state: State,
    credit: Credit,
    stream: UnixStream,
    token: u64,
    /// The epoll interest registered now (`None`: not in the set).
    registered: Option<EventSet>,
    /// Guest data the host has not taken yet (at most `credit.buf_alloc` bytes).
    tx_buf: VecDeque<u8>,
    /// The guest stopped sending: shut the host's write side once `tx_buf` is empty.
    shut_write_pending: bool,
    /// Epoll said readable and the stream has not been drained since.
    host_readable: bool,
    /// Pending control packets (`CTL_*`).
    ctl: u8,
    in_ctl_queue: bool,
    in_data_queue: bool,
    deadline: Option<Instant>,
}

impl Conn {
    fn new(stream: UnixStream, token: u64, state: State) -> Conn {
        Conn {
            state,
            credit: Credit::new(CONN_BUF),
            stream,
            token,
            registered: None,
            tx_buf: VecDeque::new(),
            shut_write_pending: false,
            host_readable: false,
            ctl: 0,
            in_ctl_queue: false,
            in_data_queue: false,
            deadline: None,
        }
    }

    fn wanted(&self) -> EventSet {
        let mut e = EventSet::empty();
        if self.state.reads_host() && !self.host_readable && self.credit.peer_credit() > 0 {
            e |= EventSet::IN;
        }
        if !self.tx_buf.is_empty() {
            e |= EventSet::OUT;
        }
        e
    }

    /// Writes guest data to the host (what does not fit now waits in `tx_buf`).
    fn forward(&mut self, data: &[u8]) -> io::Result<()> {
        let mut done = 0;
        if self.tx_buf.is_empty() {
            done = backend::send(&self.stream, data)?;
            self.credit.forwarded(done as u32);
        }
        self.tx_buf.extend(data.get(done..).unwrap_or_default());
        Ok(())
    }

    /// Writes what `tx_buf` holds; shuts the write side if the guest asked and it is empty.
    fn flush(&mut self) -> io::Result<()> {
        while !self.tx_buf.is_empty() {
            let (a, _) = self.tx_buf.as_slices();
            let n = backend::send(&self.stream, a)?;
            if n == 0 {
                break;
            }
            self.tx_buf.drain(..n);
            self.credit.forwarded(n as u32);
        }
        if self.tx_buf.is_empty() && self.shut_write_pending {
            self.shut_write_pending = false;
            // A peer that is gone already: nothing left to shut.
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
        }
        Ok(())
    }

    fn header(&self, key: Key, op: u16, flags: u32) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: GUEST_CID,
            src_port: key.0,
            dst_port: key.1,
            len: 0,
            type_: TYPE_STREAM,
            op,
            flags,
            buf_alloc: self.credit.buf_alloc,
            fwd_cnt: self.credit.fwd_cnt.0,
        }
    }
}

/// A host client before its `CONNECT` line.
struct Pending {
    stream: UnixStream,
    handshake: Handshake,
    deadline: Instant,
}

/// The connections of one device activation.
pub struct Muxer {
    dir: PathBuf,
    listener: Arc<Listener>,
    conns: HashMap<Key, Conn>,
    by_token: HashMap<u64, Key>,
    pending: HashMap<u64, Pending>,
    ctl_queue: VecDeque<Key>,
    data_queue: VecDeque<Key>,
    orphan_rsts: VecDeque<Header>,
    next_token: u64,
    next_local_port: u32,
    counters: Arc<VsockCounters>,
}

fn rst_for(h: &Header) -> Header {
    Header {
        src_cid: HOST_CID,
        dst_cid: GUEST_CID,
        src_port: h.dst_port,
        dst_port: h.src_port,
        len: 0,
        type_: TYPE_STREAM,
        op: OP_RST,
        flags: 0,
        buf_alloc: 0,
        fwd_cnt: 0,
    }
}

fn epoll_del(epoll: &Epoll, fd: i32) {
    // The fd leaves the set when it is closed anyway.
    let _ = epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default());
}

impl Muxer {
    /// A muxer for guest connections to listeners in `dir` and host clients of `listener`.
    pub fn new(dir: PathBuf, listener: Arc<Listener>, counters: Arc<VsockCounters>) -> Muxer {
        Muxer {
            dir,
            listener,
            conns: HashMap::new(),
            by_token: HashMap::new(),
            pending: HashMap::new(),
            ctl_queue: VecDeque::new(),
            data_queue: VecDeque::new(),
            orphan_rsts: VecDeque::new(),
            next_token: FIRST_STREAM_TOKEN,
            next_local_port: FIRST_LOCAL_PORT,
            counters,
        }
    }

    /// Watches the listener.
    pub fn init(&mut self, epoll: &Epoll) -> io::Result<()> {
        epoll.ctl(
            ControlOperation::Add,
            self.listener.raw_fd(),
            EpollEvent::new(EventSet::IN, TOKEN_LISTENER),
        )
    }

    /// Whether there is a packet for the guest.
    pub fn has_rx(&self) -> bool {
        !self.orphan_rsts.is_empty() || !self.ctl_queue.is_empty() || !self.data_queue.is_empty()
    }

    /// Whether a deadline is running (the worker's timer must tick).
    pub fn has_deadlines(&self) -> bool {
        !self.pending.is_empty() || self.conns.values().any(|c| c.deadline.is_some())
    }

    fn new_token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token = self.next_token.wrapping_add(1).max(FIRST_STREAM_TOKEN);
        t
    }

    fn queue_orphan_rst(&mut self, h: &Header) {
        if self.orphan_rsts.len() < MAX_ORPHAN_RSTS {
            self.orphan_rsts.push_back(rst_for(h));
        }
    }

    fn queue_ctl(&mut self, key: Key, bit: u8) {
        if let Some(c) = self.conns.get_mut(&key) {
            c.ctl |= bit;
            if !c.in_ctl_queue {
                c.in_ctl_queue = true;
                self.ctl_queue.push_back(key);
            }
        }
    }

    fn queue_data(&mut self, key: Key) {
        if let Some(c) = self.conns.get_mut(&key) {
            if !c.in_data_queue {
                c.in_data_queue = true;
                self.data_queue.push_back(key);
            }
        }
    }

    /// Brings a connection's epoll registration in line with what it needs.
    fn sync_interest(&mut self, epoll: &Epoll, key: Key) -> io::Result<()> {
        let Some(c) = self.conns.get_mut(&key) else {
            return Ok(());
        };
        let want = c.wanted();
        let fd = c.stream.as_raw_fd();
        match (c.registered, want.is_empty()) {
            (None, true) => {}
            (Some(_), true) => {
                epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default())?;
                c.registered = None;
            }
            (Some(have), false) if have == want => {}
            (Some(_), false) => {
                epoll.ctl(ControlOperation::Modify, fd, EpollEvent::new(want, c.token))?;
                c.registered = Some(want);
            }
            (None, false) => {
                epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(want, c.token))?;
                c.registered = Some(want);
            }
        }
        Ok(())
    }

    fn remove(&mut self, epoll: &Epoll, key: Key) {
        if let Some(c) = self.conns.remove(&key) {
            if c.registered.is_some() {
                epoll_del(epoll, c.stream.as_raw_fd());
            }
            self.by_token.remove(&c.token);
            self.counters.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Runs `ev` through the state machine and carries out the actions.
    fn apply(&mut self, epoll: &Epoll, key: Key, ev: Event, data: &[u8]) -> io::Result<()> {
        let mut ev = ev;
        loop {
            let Some(c) = self.conns.get_mut(&key) else {
                return Ok(());
            };
            let (next, acts) = conn::step(c.state, ev);
            c.state = next;
            let mut follow = None;
            if acts.has(Actions::FORWARD) && c.forward(data).is_err() {
                follow = Some(Event::HostError);
            }
            if acts.has(Actions::SEND_OK) {
                c.deadline = None;
                let line = ok_line(key.0);
                match backend::send(&c.stream, line.as_bytes()) {
                    Ok(n) if n == line.len() => {
                        self.counters.established.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => follow = Some(Event::HostError),
                }
            }
            if acts.has(Actions::SHUT_HOST_WRITE) {
                c.shut_write_pending = true;
                if c.flush().is_err() {
                    follow = Some(Event::HostError);
                }
            }
            if acts.has(Actions::ARM_DEADLINE) {
                c.deadline = Some(Instant::now() + DRAIN_TIMEOUT);
            }
            let flushed = acts.has(Actions::CHECK_FLUSHED) && c.tx_buf.is_empty();
            let needs_credit = c.credit.needs_update();
            if acts.has(Actions::CLOSE) {
                if acts.has(Actions::RST) {
                    // A SHUTDOWN still pending goes first (the guest learns the host's end
                    // of data, then the reset).
                    let mut out = Vec::with_capacity(2);
                    if c.ctl & CTL_SHUTDOWN != 0 || acts.has(Actions::SHUTDOWN_GUEST) {
                        out.push(c.header(key, OP_SHUTDOWN, SHUTDOWN_SEND));
                    }
                    out.push(c.header(key, OP_RST, 0));
                    for h in out {
                        if self.orphan_rsts.len() < MAX_ORPHAN_RSTS {
                            self.orphan_rsts.push_back(h);
                        }
                    }
                }
                self.remove(epoll, key);
                return Ok(());
            }
            if acts.has(Actions::CREDIT_UPDATE) || needs_credit {
                self.queue_ctl(key, CTL_CREDIT);
            }
            if acts.has(Actions::SHUTDOWN_GUEST) {
                self.queue_ctl(key, CTL_SHUTDOWN);
            }
            match (follow, flushed) {
                (Some(e), _) => ev = e,
                (None, true) => ev = Event::Flushed,
                (None, false) => return self.sync_interest(epoll, key),
            }
        }
    }

    /// A packet the guest sent (its data already copied out of guest memory).
    pub fn guest_packet(&mut self, epoll: &Epoll, h: &Header, data: &[u8]) -> io::Result<()> {
        if h.src_cid != GUEST_CID || h.dst_cid != HOST_CID {
            self.counters.bad_packets.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let key = (h.dst_port, h.src_port);
        if !self.conns.contains_key(&key) {
            match (h.type_, h.op) {
                (_, OP_RST) => {}
                (TYPE_STREAM, OP_REQUEST) => self.guest_connect(epoll, h)?,
                _ => self.queue_orphan_rst(h),
            }
            return Ok(());
        }
        let ev = match (h.type_, h.op) {
            (TYPE_STREAM, OP_RESPONSE) => Event::Response,
            (TYPE_STREAM, OP_RST) => Event::Rst,
            (TYPE_STREAM, OP_SHUTDOWN) => Event::Shutdown {
                rcv: h.flags & SHUTDOWN_RCV != 0,
                send: h.flags & SHUTDOWN_SEND != 0,
            },
            (TYPE_STREAM, OP_RW) => {
                let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
                let Some(c) = self.conns.get_mut(&key) else {
                    return Ok(());
                };
                if len == 0 {
                    c.credit.update_peer(h.buf_alloc, h.fwd_cnt);
                    return self.sync_interest(epoll, key);
                }
                if c.credit.receive(len) {
                    Event::Rw
                } else {
                    Event::Overflow
                }
            }
            (TYPE_STREAM, OP_CREDIT_UPDATE) => Event::CreditUpdate,
            (TYPE_STREAM, OP_CREDIT_REQUEST) => Event::CreditRequest,
            (TYPE_STREAM, OP_REQUEST) => Event::Request,
            _ => Event::BadOp,
        };
        if let Some(c) = self.conns.get_mut(&key) {
            c.credit.update_peer(h.buf_alloc, h.fwd_cnt);
        }
        self.apply(epoll, key, ev, data)
    }

    /// A guest REQUEST to host port `h.dst_port`.
    fn guest_connect(&mut self, epoll: &Epoll, h: &Header) -> io::Result<()> {
        if self.conns.len() >= MAX_CONNS {
            self.queue_orphan_rst(h);
            return Ok(());
        }
        let stream = match connect_host(&self.dir, h.dst_port) {
            Ok(s) => s,
            Err(e) => {
                log::debug!("vsock: guest connect to host port {}: {e}", h.dst_port);
                self.queue_orphan_rst(h);
                return Ok(());
            }
        };
        let key = (h.dst_port, h.src_port);
        let token = self.new_token();
        let mut c = Conn::new(stream, token, State::new(Phase::Established));
        c.credit.update_peer(h.buf_alloc, h.fwd_cnt);
        self.conns.insert(key, c);
        self.by_token.insert(token, key);
        self.counters.open.fetch_add(1, Ordering::Relaxed);
        self.counters.established.fetch_add(1, Ordering::Relaxed);
        self.queue_ctl(key, CTL_RESPONSE);
        self.sync_interest(epoll, key)
    }

    /// A host client finished its handshake: a host-initiated connection to guest `port`.
    fn host_connect(&mut self, token: u64, stream: UnixStream, port: u32) {
        if self.conns.len() >= MAX_CONNS {
            return;
        }
        let mut local = self.next_local_port;
        while self.conns.contains_key(&(local, port)) {
            local = local.wrapping_add(1).max(FIRST_LOCAL_PORT);
        }
        self.next_local_port = local.wrapping_add(1).max(FIRST_LOCAL_PORT);
        let key = (local, port);
        let mut c = Conn::new(stream, token, State::new(Phase::Connecting));
        c.deadline = Some(Instant::now() + CONNECT_TIMEOUT);
        self.conns.insert(key, c);
        self.by_token.insert(token, key);
        self.counters.open.fetch_add(1, Ordering::Relaxed);
        self.queue_ctl(key, CTL_REQUEST);
    }

    /// A registered fd is ready.
    pub fn fd_event(&mut self, epoll: &Epoll, token: u64, events: EventSet) -> io::Result<()> {
        if token == TOKEN_LISTENER {
            return self.accept(epoll);
        }
        if let Some(mut p) = self.pending.remove(&token) {
            match p.handshake.read(&p.stream) {
                HandshakeStep::More => {
                    self.pending.insert(token, p);
                }
                HandshakeStep::Bad => epoll_del(epoll, p.stream.as_raw_fd()),
                HandshakeStep::Port(port) => {
                    epoll_del(epoll, p.stream.as_raw_fd());
                    self.host_connect(token, p.stream, port);
                }
            }
            return Ok(());
        }
        let Some(&key) = self.by_token.get(&token) else {
            return Ok(());
        };
        let mut follow = None;
        if let Some(c) = self.conns.get_mut(&key) {
            if events.intersects(EventSet::OUT | EventSet::ERROR | EventSet::HANG_UP)
                && !c.tx_buf.is_empty()
            {
                if c.flush().is_err() {
                    follow = Some(Event::HostError);
                } else if c.tx_buf.is_empty() && c.state.phase == Phase::Draining {
                    follow = Some(Event::Flushed);
                }
            }
            if events.intersects(EventSet::IN | EventSet::ERROR | EventSet::HANG_UP)
                && c.state.reads_host()
            {
                c.host_readable = true;
            }
        }
        let (readable, credit) = match self.conns.get(&key) {
            Some(c) => (c.host_readable, c.credit.needs_update()),
            None => (false, false),
        };
        if readable {
            self.queue_data(key);
        }
        if credit {
            self.queue_ctl(key, CTL_CREDIT);
        }
        match follow {
            Some(ev) => self.apply(epoll, key, ev, &[]),
            None => self.sync_interest(epoll, key),
        }
    }

    fn accept(&mut self, epoll: &Epoll) -> io::Result<()> {
        while let Some(stream) = self.listener.accept()? {
            if self.pending.len() >= MAX_HANDSHAKES || self.conns.len() >= MAX_CONNS {
                // Closed at once: the client reads end of file (refused).
                continue;
            }
            let token = self.new_token();
            epoll.ctl(
                ControlOperation::Add,
                stream.as_raw_fd(),
                EpollEvent::new(EventSet::IN, token),
            )?;
            self.pending.insert(
                token,
                Pending {
                    stream,
                    handshake: Handshake::default(),
                    deadline: Instant::now() + HANDSHAKE_TIMEOUT,
                },
            );
        }
        Ok(())
    }

    /// Ends what is past its deadline.
    pub fn tick(&mut self, epoll: &Epoll, now: Instant) -> io::Result<()> {
        let late: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in late {
            if let Some(p) = self.pending.remove(&t) {
                epoll_del(epoll, p.stream.as_raw_fd());
            }
        }
        let late: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in late {
            if let Some(c) = self.conns.get_mut(&key) {
                c.deadline = None;
            }
            self.apply(epoll, key, Event::Timeout, &[])?;
        }
        Ok(())
    }

    /// The next packet for the guest: its header, and for RW its data in `buf` (at most
    /// `cap` bytes). `None` when there is nothing to send.
    pub fn next_rx(
        &mut self,
        epoll: &Epoll,
        buf: &mut [u8],
        cap: usize,
    ) -> io::Result<Option<(Header, usize)>> {
        // Reading a stream can end its connection (end of file, errors), which queues control
        // packets: look again until a packet is found or nothing is left.
        loop {
            if let Some(p) = self.next_ctl() {
                return Ok(Some(p));
            }
            if self.data_queue.is_empty() || cap == 0 {
                // (A receive buffer without a data area: data waits for a usable one.)
                return Ok(None);
            }
            if let Some(p) = self.next_data(epoll, buf, cap)? {
                return Ok(Some(p));
            }
        }
    }

    /// The next queued RST or control packet.
    fn next_ctl(&mut self) -> Option<(Header, usize)> {
        if let Some(h) = self.orphan_rsts.pop_front() {
            if h.op == OP_RST {
                self.counters.rsts.fetch_add(1, Ordering::Relaxed);
            }
            return Some((h, 0));
        }
        while let Some(&key) = self.ctl_queue.front() {
            let Some(c) = self.conns.get_mut(&key) else {
                self.ctl_queue.pop_front();
                continue;
            };
            let (bit, op, flags) = if c.ctl & CTL_REQUEST != 0 {
                (CTL_REQUEST, OP_REQUEST, 0)
            } else if c.ctl & CTL_RESPONSE != 0 {
                (CTL_RESPONSE, OP_RESPONSE, 0)
            } else if c.ctl & CTL_SHUTDOWN != 0 {
                (CTL_SHUTDOWN, OP_SHUTDOWN, SHUTDOWN_SEND)
            } else if c.ctl & CTL_CREDIT != 0 {
                (CTL_CREDIT, OP_CREDIT_UPDATE, 0)
            } else {
                c.in_ctl_queue = false;
                self.ctl_queue.pop_front();
                continue;
            };
            c.ctl &= !bit;
            c.credit.advertised();
            if c.ctl == 0 {
                c.in_ctl_queue = false;
                self.ctl_queue.pop_front();
            }
            return Some((c.header(key, op, flags), 0));
        }
        None
    }

    /// Data from the first readable stream, if it has any (one stream per call).
    fn next_data(
        &mut self,
        epoll: &Epoll,
        buf: &mut [u8],
        cap: usize,
    ) -> io::Result<Option<(Header, usize)>> {
        let room = cap.min(buf.len());
        if let Some(key) = self.data_queue.pop_front() {
            let Some(c) = self.conns.get_mut(&key) else {
                return Ok(None);
            };
            c.in_data_queue = false;
            let want = (c.credit.peer_credit() as usize).min(room);
            if !c.state.reads_host() || want == 0 {
                c.host_readable = false;
                self.sync_interest(epoll, key)?;
                return Ok(None);
            }
            let dest = buf.get_mut(..want).unwrap_or_default();
            match (&c.stream).read(dest) {
                Ok(0) => {
                    c.host_readable = false;
                    self.apply(epoll, key, Event::HostEof, &[])?;
                }
                Ok(n) => {
                    c.credit.sent(n as u32);
                    c.credit.advertised();
                    let mut h = c.header(key, OP_RW, 0);
                    h.len = n as u32;
                    self.queue_data(key);
                    return Ok(Some((h, n)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.host_readable = false;
                    self.sync_interest(epoll, key)?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    self.queue_data(key);
                }
                Err(_) => {
                    c.host_readable = false;
                    self.apply(epoll, key, Event::HostError, &[])?;
                }
            }
        }
        Ok(None)
    }
}
