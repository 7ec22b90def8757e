//! vsock packets on the queues, parsed and built with the `virtio-vsock` crate: a 44-byte
//! header (virtio 1.2, 5.10.6) and, for RW, data. [`Header`] is the plain-data copy the muxer
//! works with; [`read_tx`] takes one from a guest transmit chain, [`RxPacket`] fills a guest
//! receive chain.

use virtio_queue::DescriptorChain;
use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};
use vm_memory::Bytes;

use crate::memory::GuestMem;

/// Header size (bytes).
pub const HEADER_LEN: usize = PKT_HEADER_SIZE;
/// Largest data part of a packet in either direction (bytes; Linux sends at most 64 KiB).
pub const MAX_DATA: usize = 64 * 1024;

/// Socket type: stream (the only one offered).
pub const TYPE_STREAM: u16 = 1;
/// Operation: connect.
pub const OP_REQUEST: u16 = 1;
/// Operation: connection accepted.
pub const OP_RESPONSE: u16 = 2;
/// Operation: reset (refused, or closed).
pub const OP_RST: u16 = 3;
/// Operation: half or full close (`flags`: `SHUTDOWN_RCV`, `SHUTDOWN_SEND`).
pub const OP_SHUTDOWN: u16 = 4;
/// Operation: data.
pub const OP_RW: u16 = 5;
/// Operation: credit information (no reply).
pub const OP_CREDIT_UPDATE: u16 = 6;
/// Operation: asks for a CREDIT_UPDATE.
pub const OP_CREDIT_REQUEST: u16 = 7;

/// A packet header as plain data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Source context ID.
    pub src_cid: u64,
    /// Destination context ID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Data length (bytes).
    pub len: u32,
    /// Socket type (`TYPE_STREAM`).
    pub type_: u16,
    /// Operation (`OP_*`).
    pub op: u16,
    /// Operation flags.
    pub flags: u32,
    /// The sender's receive buffer (bytes).
    pub buf_alloc: u32,
    /// Bytes the sender has consumed of what it received.
    pub fwd_cnt: u32,
}

/// A guest chain the device cannot use.
#[derive(Debug, thiserror::Error)]
#[error("bad vsock packet: {0}")]
pub struct PacketError(pub String);

/// Reads a transmit chain: its header, and its data (at most [`MAX_DATA`] bytes, checked by
/// the crate against the header's `len` and the descriptors) into the start of `data`; returns
/// the header and the data length (bytes).
pub fn read_tx(
    mem: &GuestMem,
    chain: &mut DescriptorChain<&GuestMem>,
    data: &mut [u8],
) -> Result<(Header, usize), PacketError> {
    let pkt = VsockPacket::from_tx_virtq_chain(mem, chain, MAX_DATA as u32)
        .map_err(|e| PacketError(e.to_string()))?;
    let h = Header {
        src_cid: pkt.src_cid(),
        dst_cid: pkt.dst_cid(),
        src_port: pkt.src_port(),
        dst_port: pkt.dst_port(),
        len: pkt.len(),
        type_: pkt.type_(),
        op: pkt.op(),
        flags: pkt.flags(),
        buf_alloc: pkt.buf_alloc(),
        fwd_cnt: pkt.fwd_cnt(),
    };
    let n = match pkt.data_slice() {
        Some(slice) => slice.copy_to(data),
        None => 0,
    };
    Ok((h, n))
}

/// A guest receive chain being filled.
pub struct RxPacket<'a> {
    pkt: VsockPacket<'a, ()>,
}

impl<'a> RxPacket<'a> {
    /// Parses a receive chain (header, then a data area of at most [`MAX_DATA`] bytes).
    pub fn parse(
        mem: &'a GuestMem,
        chain: &mut DescriptorChain<&GuestMem>,
    ) -> Result<RxPacket<'a>, PacketError> {
        let pkt = VsockPacket::from_rx_virtq_chain(mem, chain, MAX_DATA as u32)
            .map_err(|e| PacketError(e.to_string()))?;
        Ok(RxPacket { pkt })
    }

    /// Room for data (bytes).
    pub fn capacity(&self) -> usize {
        self.pkt.data_slice().map_or(0, |s| s.len()).min(MAX_DATA)
    }

    /// Writes `h` and `data` (at most [`RxPacket::capacity`] bytes; `h.len` is set to what was
    /// written); returns the used length (bytes).
    pub fn fill(mut self, h: &Header, data: &[u8]) -> Result<u32, PacketError> {
        let n = data.len().min(self.capacity());
        if let (Some(slice), Some(d)) = (self.pkt.data_slice(), data.get(..n)) {
            slice
                .write_slice(d, 0)
                .map_err(|e| PacketError(e.to_string()))?;
        }
        let len = u32::try_from(n).unwrap_or(0);
        self.pkt
            .set_src_cid(h.src_cid)
            .set_dst_cid(h.dst_cid)
            .set_src_port(h.src_port)
            .set_dst_port(h.dst_port)
            .set_len(len)
            .set_type(h.type_)
            .set_op(h.op)
            .set_flags(h.flags)
            .set_buf_alloc(h.buf_alloc)
            .set_fwd_cnt(h.fwd_cnt);
        Ok(HEADER_LEN as u32 + len)
    }
}
