//! The device through its queues, with this test as the guest driver (no KVM): handshakes in
//! both directions, data with credit, shutdowns, refusals, bad packets, the connection limit and
//! descriptor hygiene.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use pod_abi::vsock::{listener_name, GUEST_CID, HOST_CID};
use vm_memory::{Bytes, GuestAddress};

use super::conn::{SHUTDOWN_RCV, SHUTDOWN_SEND};
use super::muxer::{CONN_BUF, MAX_CONNS};
use super::packet::*;
use super::*;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::test_utils::*;

/// Receive buffers: 4 KiB each (header + data), as Linux posts them.
const RX_BUF: u32 = 4096;
const RX_AREA: u64 = DATA_BASE;
/// Transmit buffers: header + up to 64 KiB.
const TX_AREA: u64 = DATA_BASE + 0x10_0000;
const TX_SLOT: u64 = 0x1_1000;
const GUEST_PORT: u32 = 1234;

struct Guest {
    mem: GuestMem,
    t: MmioTransport,
    q: Vec<GuestQueue>,
    dir: tempfile::TempDir,
    counters: Arc<VsockCounters>,
    rx_addr: HashMap<u32, u64>,
    rx_slot: u64,
    rx_posted: usize,
    tx_slot: u64,
    /// The guest's `buf_alloc` in its RESPONSEs (bytes).
    resp_buf_alloc: u32,
}

fn header(op: u16, src_port: u32, dst_port: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port,
        dst_port,
        len: 0,
        type_: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 1 << 20,
        fwd_cnt: 0,
    }
}

fn encode(h: &Header) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0..8].copy_from_slice(&h.src_cid.to_le_bytes());
    b[8..16].copy_from_slice(&h.dst_cid.to_le_bytes());
    b[16..20].copy_from_slice(&h.src_port.to_le_bytes());
    b[20..24].copy_from_slice(&h.dst_port.to_le_bytes());
    b[24..28].copy_from_slice(&h.len.to_le_bytes());
    b[28..30].copy_from_slice(&h.type_.to_le_bytes());
    b[30..32].copy_from_slice(&h.op.to_le_bytes());
    b[32..36].copy_from_slice(&h.flags.to_le_bytes());
    b[36..40].copy_from_slice(&h.buf_alloc.to_le_bytes());
    b[40..44].copy_from_slice(&h.fwd_cnt.to_le_bytes());
    b
}

fn decode(b: &[u8]) -> Header {
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u16_at = |o: usize| u16::from_le_bytes(b[o..o + 2].try_into().unwrap());
    Header {
        src_cid: u64::from_le_bytes(b[0..8].try_into().unwrap()),
        dst_cid: u64::from_le_bytes(b[8..16].try_into().unwrap()),
        src_port: u32_at(16),
        dst_port: u32_at(20),
        len: u32_at(24),
        type_: u16_at(28),
        op: u16_at(30),
        flags: u32_at(32),
        buf_alloc: u32_at(36),
        fwd_cnt: u32_at(40),
    }
}

impl Guest {
    fn new() -> Guest {
        let dir = tempfile::tempdir().unwrap();
        let dev = Vsock::new(&VsockConfig {
            socket_dir: dir.path().to_path_buf(),
        })
        .unwrap();
        let counters = dev.counters();
        let mem = guest_memory();
        let (t, q, _irq) = activated(&mem, Box::new(dev), &[QUEUE_SIZE; 3]);
        let mut g = Guest {
            mem,
            t,
            q,
            dir,
            counters,
            rx_addr: HashMap::new(),
            rx_slot: 0,
            rx_posted: 0,
            tx_slot: 0,
            resp_buf_alloc: 1 << 20,
        };
        g.post_rx(64);
        g
    }

    fn post_rx(&mut self, n: usize) {
        for _ in 0..n {
            let addr = RX_AREA + (self.rx_slot % 256) * u64::from(RX_BUF);
            self.rx_slot += 1;
            let head = self.q[0].add_chain(&self.mem, &[(addr, RX_BUF, true)]);
            self.rx_addr.insert(u32::from(head), addr);
            self.rx_posted += 1;
        }
        notify(&mut self.t, 0);
    }

    /// Sends one packet (header and data in separate descriptors, as Linux does) and waits
    /// until the device returned the chain.
    fn send(&mut self, h: Header, data: &[u8]) {
        let addr = TX_AREA + (self.tx_slot % 16) * TX_SLOT;
        self.tx_slot += 1;
        let h = Header {
            len: data.len() as u32,
            ..h
        };
        self.mem
            .write_slice(&encode(&h), GuestAddress(addr))
            .unwrap();
        if data.is_empty() {
            self.q[1].add_chain(&self.mem, &[(addr, HEADER_LEN as u32, false)]);
        } else {
            self.mem
                .write_slice(data, GuestAddress(addr + 0x100))
                .unwrap();
            self.q[1].add_chain(
                &self.mem,
                &[
                    (addr, HEADER_LEN as u32, false),
                    (addr + 0x100, data.len() as u32, false),
                ],
            );
        }
        notify(&mut self.t, 1);
        self.q[1].wait_used(&self.mem);
    }

    /// The next packet for the guest (re-posting its buffer).
    fn recv(&mut self) -> (Header, Vec<u8>) {
        let (id, len) = self.q[0].wait_used(&self.mem);
        let addr = self.rx_addr.remove(&id).unwrap();
        self.rx_posted -= 1;
        let mut buf = vec![0u8; len as usize];
        self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        if self.rx_posted < 32 {
            self.post_rx(32);
        }
        let h = decode(&buf);
        assert_eq!(h.len as usize + HEADER_LEN, len as usize, "{h:?}");
        (h, buf[HEADER_LEN..].to_vec())
    }

    /// The next packet that is not a credit update.
    fn recv_not_credit(&mut self) -> (Header, Vec<u8>) {
        loop {
            let p = self.recv();
            if p.0.op != OP_CREDIT_UPDATE {
                return p;
            }
        }
    }

    fn no_packet_for(&mut self, d: Duration) {
        std::thread::sleep(d);
        assert!(self.q[0].pop_used(&self.mem).is_none());
    }

    /// A host client through the device's socket, the guest accepting: (client, host port).
    fn host_connect(&mut self, port: u32) -> (UnixStream, u32) {
        let dir = self.dir.path().to_path_buf();
        let client = std::thread::spawn(move || {
            pod_abi::vsock::connect(&dir, port, Duration::from_secs(10))
        });
        let (h, _) = self.recv();
        assert_eq!(h.op, OP_REQUEST);
        assert_eq!(
            (h.src_cid, h.dst_cid, h.dst_port),
            (HOST_CID, GUEST_CID, port)
        );
        assert_eq!(h.buf_alloc, CONN_BUF);
        let resp = Header {
            buf_alloc: self.resp_buf_alloc,
            ..header(OP_RESPONSE, port, h.src_port)
        };
        self.send(resp, &[]);
        (client.join().unwrap().unwrap(), h.src_port)
    }
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn config_space_and_queues() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Vsock::new(&VsockConfig {
        socket_dir: dir.path().to_path_buf(),
    })
    .unwrap();
    let mut cid = [0u8; 8];
    dev.read_config(0, &mut cid);
    assert_eq!(u64::from_le_bytes(cid), GUEST_CID);
    assert_eq!(dev.device_type(), 19);
    assert_eq!(dev.queue_max_sizes().len(), 3);
    let path = dev.socket_path().to_path_buf();
    assert!(path.exists());
    drop(dev);
    assert!(!path.exists(), "the socket goes with the device");
}

#[test]
fn host_to_guest_round_trip_with_credit() {
    let mut g = Guest::new();
    let credit = 10_000u32;
    g.resp_buf_alloc = credit;
    let (mut client, host_port) = g.host_connect(GUEST_PORT);
    assert!(host_port >= 1 << 30);

    // Host -> guest: the device sends as much as the guest's credit allows, no more.
    let payload = pattern(20_000, 7);
    client.write_all(&payload).unwrap();
    g.send(
        Header {
            buf_alloc: credit,
            ..header(OP_CREDIT_UPDATE, GUEST_PORT, host_port)
        },
        &[],
    );
    let mut got = Vec::new();
    while got.len() < credit as usize {
        let (h, d) = g.recv_not_credit();
        assert_eq!(h.op, OP_RW);
        got.extend(d);
    }
    assert_eq!(got.len(), credit as usize);
    g.no_packet_for(Duration::from_millis(100));
    // The guest consumed it: the rest follows.
    g.send(
        Header {
            buf_alloc: credit,
            fwd_cnt: credit,
            ..header(OP_CREDIT_UPDATE, GUEST_PORT, host_port)
        },
        &[],
    );
    while got.len() < payload.len() {
        let (h, d) = g.recv_not_credit();
        assert_eq!(h.op, OP_RW);
        got.extend(d);
    }
    assert_eq!(got, payload);

    // Guest -> host, in 64 KiB packets up to the device's buffer.
    let big = pattern(CONN_BUF as usize, 3);
    for chunk in big.chunks(MAX_DATA) {
        g.send(header(OP_RW, GUEST_PORT, host_port), chunk);
    }
    let mut back = vec![0u8; big.len()];
    client.read_exact(&mut back).unwrap();
    assert_eq!(back, big);
    // The guest is told it may send again.
    let (h, _) = g.recv();
    assert_eq!(h.op, OP_CREDIT_UPDATE);
    assert!(h.fwd_cnt >= CONN_BUF / 4);

    // The host closes: the guest is told, closes too, and gets the final RST.
    drop(client);
    let (h, _) = g.recv_not_credit();
    assert_eq!((h.op, h.flags), (OP_SHUTDOWN, SHUTDOWN_SEND));
    g.send(
        Header {
            flags: SHUTDOWN_RCV | SHUTDOWN_SEND,
            ..header(OP_SHUTDOWN, GUEST_PORT, host_port)
        },
        &[],
    );
    let (h, _) = g.recv_not_credit();
    assert_eq!(h.op, OP_RST);
    wait_for("closed", || g.counters.open.load(Ordering::Relaxed) == 0);
}

#[test]
fn guest_refusal_and_silence_close_the_client() {
    let mut g = Guest::new();
    let dir = g.dir.path().to_path_buf();
    let client =
        std::thread::spawn(move || pod_abi::vsock::connect(&dir, 99, Duration::from_secs(10)));
    let (h, _) = g.recv();
    g.send(header(OP_RST, 99, h.src_port), &[]);
    assert!(matches!(
        client.join().unwrap(),
        Err(pod_abi::vsock::ConnectError::Refused(99))
    ));

    // Nobody answers: closed after the connect timeout.
    let dir = g.dir.path().to_path_buf();
    let start = Instant::now();
    let client =
        std::thread::spawn(move || pod_abi::vsock::connect(&dir, 98, Duration::from_secs(20)));
    let (h, _) = g.recv();
    assert_eq!(h.op, OP_REQUEST);
    assert!(client.join().unwrap().is_err());
    assert!(start.elapsed() >= muxer::CONNECT_TIMEOUT);
    let (h, _) = g.recv();
    assert_eq!(h.op, OP_RST, "the guest learns the request is gone");

    // A client that never finishes its line is closed too; one sending garbage at once.
    let mut slow = UnixStream::connect(g.dir.path().join(pod_abi::vsock::SOCKET)).unwrap();
    slow.write_all(b"CONNECT 1").unwrap();
    let mut bad = UnixStream::connect(g.dir.path().join(pod_abi::vsock::SOCKET)).unwrap();
    bad.write_all(b"HELLO WORLD\n").unwrap();
    let mut b = [0u8; 1];
    assert_eq!(bad.read(&mut b).unwrap(), 0);
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    assert_eq!(slow.read(&mut b).unwrap(), 0);
}

#[test]
fn guest_to_host_connections() {
    let mut g = Guest::new();
    // Nobody listens: RST.
    g.send(header(OP_REQUEST, 40_000, 5678), &[]);
    let (h, _) = g.recv();
    assert_eq!((h.op, h.src_port, h.dst_port), (OP_RST, 5678, 40_000));

    // A symlink to a listener is not a listener.
    let real = g.dir.path().join("elsewhere.sock");
    let _l = UnixListener::bind(&real).unwrap();
    std::os::unix::fs::symlink(&real, g.dir.path().join(listener_name(5678))).unwrap();
    g.send(header(OP_REQUEST, 40_001, 5678), &[]);
    assert_eq!(g.recv().0.op, OP_RST);
    std::fs::remove_file(g.dir.path().join(listener_name(5678))).unwrap();

    let l = UnixListener::bind(g.dir.path().join(listener_name(5678))).unwrap();
    g.send(header(OP_REQUEST, 40_002, 5678), &[]);
    let (h, _) = g.recv();
    assert_eq!((h.op, h.src_port, h.dst_port), (OP_RESPONSE, 5678, 40_002));
    let (mut s, _) = l.accept().unwrap();
    g.send(header(OP_RW, 40_002, 5678), b"ping");
    let mut b = [0u8; 4];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping");
    s.write_all(b"pong").unwrap();
    let (h, d) = g.recv_not_credit();
    assert_eq!((h.op, &d[..]), (OP_RW, &b"pong"[..]));

    // The guest stops sending: the host reads end of file, and can still answer.
    g.send(
        Header {
            flags: SHUTDOWN_SEND,
            ..header(OP_SHUTDOWN, 40_002, 5678)
        },
        &[],
    );
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    s.write_all(b"bye").unwrap();
    drop(s);
    let (h, d) = g.recv_not_credit();
    assert_eq!((h.op, &d[..]), (OP_RW, &b"bye"[..]));
    let (h, _) = g.recv_not_credit();
    assert_eq!(h.op, OP_SHUTDOWN);
    let (h, _) = g.recv_not_credit();
    assert_eq!(h.op, OP_RST, "both sides done");
}

#[test]
fn bad_packets_reset_or_drop_never_crash() {
    let mut g = Guest::new();
    let l = UnixListener::bind(g.dir.path().join(listener_name(7))).unwrap();
    g.send(header(OP_REQUEST, 50, 7), &[]);
    assert_eq!(g.recv().0.op, OP_RESPONSE);
    let _s = l.accept().unwrap();

    // Wrong CIDs: dropped silently.
    g.send(
        Header {
            src_cid: 99,
            ..header(OP_RW, 50, 7)
        },
        b"x",
    );
    g.send(
        Header {
            dst_cid: 3,
            ..header(OP_RW, 50, 7)
        },
        b"x",
    );
    assert_eq!(g.counters.bad_packets.load(Ordering::Relaxed), 2);
    // Unknown op, wrong type, data for no connection: RST each.
    for h in [
        header(99, 51, 7),
        Header {
            type_: 2,
            ..header(OP_REQUEST, 52, 7)
        },
        header(OP_RW, 53, 7),
    ] {
        g.send(h, b"");
        let (r, _) = g.recv();
        assert_eq!((r.op, r.dst_port), (OP_RST, h.src_port));
    }
    // A header claiming more data than the chain holds, or more than 64 KiB: dropped.
    let addr = TX_AREA;
    let h = Header {
        len: 1000,
        ..header(OP_RW, 50, 7)
    };
    g.mem.write_slice(&encode(&h), GuestAddress(addr)).unwrap();
    g.q[1].add_chain(
        &g.mem,
        &[(addr, HEADER_LEN as u32, false), (addr + 0x100, 10, false)],
    );
    notify(&mut g.t, 1);
    g.q[1].wait_used(&g.mem);
    assert_eq!(g.counters.bad_packets.load(Ordering::Relaxed), 3);
    // A second REQUEST on a live connection resets it.
    g.send(header(OP_REQUEST, 50, 7), &[]);
    assert_eq!(g.recv_not_credit().0.op, OP_RST);
    wait_for("closed", || g.counters.open.load(Ordering::Relaxed) == 0);

    // Data beyond the credit resets the connection (the host reads nothing meanwhile).
    g.send(header(OP_REQUEST, 60, 7), &[]);
    assert_eq!(g.recv().0.op, OP_RESPONSE);
    let (_s2, _) = l.accept().unwrap();
    let chunk = vec![1u8; MAX_DATA];
    let mut sent = 0usize;
    loop {
        g.send(header(OP_RW, 60, 7), &chunk);
        sent += chunk.len();
        if g.counters.open.load(Ordering::Relaxed) == 0 {
            break;
        }
        assert!(sent < 64 << 20, "never reset");
    }
    assert_eq!(g.recv_not_credit().0.op, OP_RST);
    assert!(!g.t.needs_reset());
}

#[test]
fn random_garbage_never_panics() {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut g = Guest::new();
    for _ in 0..2000 {
        let r = rnd();
        let mut h = header((r % 9) as u16, (r >> 8) as u32 % 8, (r >> 16) as u32 % 8);
        if r & (1 << 40) != 0 {
            h.type_ = (r >> 41) as u16 % 3;
        }
        h.flags = (r >> 44) as u32 % 4;
        h.buf_alloc = (r >> 20) as u32;
        h.fwd_cnt = (r >> 30) as u32;
        let data = pattern((r >> 50) as usize % 300, r as u8);
        g.send(h, if h.op == OP_RW { &data } else { &[] });
        while g.q[0].pop_used(&g.mem).is_some() {
            g.rx_posted -= 1;
        }
        if g.rx_posted < 32 {
            g.rx_addr.clear();
            g.post_rx(64);
        }
    }
    assert!(!g.t.needs_reset());
    assert!(g.counters.open.load(Ordering::Relaxed) <= MAX_CONNS as u64);
}

#[test]
fn connection_limit() {
    let mut g = Guest::new();
    let l = UnixListener::bind(g.dir.path().join(listener_name(9))).unwrap();
    let mut streams = Vec::new();
    for i in 0..MAX_CONNS as u32 {
        g.send(header(OP_REQUEST, 1000 + i, 9), &[]);
        assert_eq!(g.recv().0.op, OP_RESPONSE);
        streams.push(l.accept().unwrap());
    }
    g.send(header(OP_REQUEST, 2000, 9), &[]);
    assert_eq!(g.recv().0.op, OP_RST);
    // A host client is refused too (closed without OK).
    assert!(pod_abi::vsock::connect(g.dir.path(), 1, Duration::from_secs(5)).is_err());
    // One closes: room again.
    g.send(header(OP_RST, 1000, 9), &[]);
    wait_for("one closed", || {
        g.counters.open.load(Ordering::Relaxed) == MAX_CONNS as u64 - 1
    });
    g.send(header(OP_REQUEST, 2001, 9), &[]);
    assert_eq!(g.recv().0.op, OP_RESPONSE);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Set in the child process of [`a_hundred_connections_leave_no_descriptors_behind`].
const FD_CHILD_ENV: &str = "RKT_VMM_TEST_VSOCK_FD_CHILD";

/// Runs alone in a child process: the descriptor count is process-wide.
#[test]
fn a_hundred_connections_leave_no_descriptors_behind() {
    if std::env::var_os(FD_CHILD_ENV).is_some() {
        return hundred_connections();
    }
    let out = crate::threads::run_test_in_child(
        "devices::virtio::vsock::tests::a_hundred_connections_leave_no_descriptors_behind",
        FD_CHILD_ENV,
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("VSOCK-FDS"));
}

fn hundred_connections() {
    let mut g = Guest::new();
    // Warm up (lazily created descriptors of the test harness).
    let (c, port) = g.host_connect(GUEST_PORT);
    drop(c);
    let _ = g.recv_not_credit();
    g.send(
        Header {
            flags: 3,
            ..header(OP_SHUTDOWN, GUEST_PORT, port)
        },
        &[],
    );
    let _ = g.recv_not_credit();
    wait_for("closed", || g.counters.open.load(Ordering::Relaxed) == 0);
    let before = open_fds();
    for i in 0..100u32 {
        let (mut c, port) = g.host_connect(GUEST_PORT + i);
        g.send(header(OP_RW, GUEST_PORT + i, port), b"hi");
        let mut b = [0u8; 2];
        c.read_exact(&mut b).unwrap();
        // The guest resets it.
        g.send(header(OP_RST, GUEST_PORT + i, port), &[]);
        assert_eq!(c.read(&mut b).unwrap(), 0);
    }
    wait_for("all closed", || {
        g.counters.open.load(Ordering::Relaxed) == 0
    });
    let after = open_fds();
    println!("VSOCK-FDS before={before} after={after}");
    assert_eq!(after, before);
}
