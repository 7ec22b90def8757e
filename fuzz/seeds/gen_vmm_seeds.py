#!/usr/bin/env python3
"""Writes the committed seeds of the VMM fuzz targets (virtio_queue, virtio_mmio, virtio_fs,
virtio_net, virtio_blk).

Each seed follows the input format documented at the top of its target in fuzz/fuzz_targets/.
Run from anywhere: python3 fuzz/seeds/gen_vmm_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
u8 = lambda v: struct.pack("<B", v)
u16 = lambda v: struct.pack("<H", v)
u32 = lambda v: struct.pack("<I", v)
u64 = lambda v: struct.pack("<Q", v)
NEXT, WRITE, INDIRECT = 1, 2, 4


def save(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- virtio_queue: size exp, next_avail, mode, n_avail, heads, [idx], n_desc, descs, n_ind, descs, data
def qdesc(addr=None, length=0, flags=0, nxt=0, raw_addr=None, ind=None, len_mode=0):
    """Descriptor with address mode 0 (u16 in region A), 6 (raw u64) or 4 (indirect area)."""
    if raw_addr is not None:
        sel, a = 6, u64(raw_addr)
    elif ind is not None:
        sel, a = 4, u8(ind)
    else:
        sel, a = 0, u16(addr)
    sel |= len_mode << 3
    ln = {0: u16, 1: u8, 2: u32}[len_mode](length) if len_mode < 3 else u8(length // 16 - 1)
    return u8(sel) + a + ln + u8(flags) + u8(nxt)


def queue_seed(exp, heads, descs, ind=(), data=b"", next_avail=0, idx=None):
    out = u8(exp) + u16(next_avail) + u8(0 if idx is None else 1) + u8(len(heads))
    out += b"".join(u16(h) for h in heads)
    if idx is not None:
        out += u16(idx)
    out += u8(len(descs)) + b"".join(descs) + u8(len(ind)) + b"".join(ind)
    return out + data


def blk_hdr(ty, sector):
    return u32(ty) + u32(0) + u64(sector)


BLK_CHAIN = [
    qdesc(0x4000, 16, NEXT, 1),
    qdesc(0x8000, 512, NEXT | WRITE, 2),
    qdesc(0x9000, 1, WRITE, 0),
]
save("virtio_queue", "blk_read", queue_seed(3, [0], BLK_CHAIN, data=blk_hdr(0, 1)))
save("virtio_queue", "blk_get_id", queue_seed(3, [0], [
    qdesc(0x4000, 16, NEXT, 1), qdesc(0x8000, 20, NEXT | WRITE, 2), qdesc(0x9000, 1, WRITE, 0),
], data=blk_hdr(8, 0)))
save("virtio_queue", "indirect", queue_seed(2, [0], [
    qdesc(ind=0, length=48, flags=INDIRECT, len_mode=3),
], ind=BLK_CHAIN, data=blk_hdr(0, 0)))
save("virtio_queue", "loop", queue_seed(2, [0], [
    qdesc(0x4000, 16, NEXT, 1), qdesc(0x8000, 16, NEXT | WRITE, 0),
]))
save("virtio_queue", "outside_memory", queue_seed(2, [0], [
    qdesc(0x4000, 16, NEXT, 1), qdesc(raw_addr=0xd000_0000, length=512, flags=WRITE),
]))
save("virtio_queue", "three_chains_wrapping", queue_seed(3, [0, 3, 0], BLK_CHAIN + [
    qdesc(0x4000, 16, NEXT, 4), qdesc(0x9000, 1, WRITE, 0),
], next_avail=0xfffe, data=blk_hdr(0, 2)))
save("virtio_queue", "bad_avail_idx", queue_seed(3, [0], BLK_CHAIN, idx=0x4000))

# ---- virtio_mmio: operations
def w32(off, v):
    return u8(0) + u8(off // 4) + u32(v)


def r32(off):
    return u8(2) + u8(off // 4)


def memw(addr, data):  # address mode 0: u16 * 8
    assert addr % 8 == 0 and len(data) <= 64
    return u8(4) + u8(0) + u16(addr // 8) + u8(len(data)) + data


def handshake(exp, page):
    return u8(5 | (exp << 3)) + u8(page)


def add_chain(bufs):  # [(addr, len, writable)]
    out = u8(7 | ((len(bufs) - 1) << 3))
    for a, ln, w in bufs:
        out += u8(0) + u16(a // 8) + u16(ln) + u8(1 if w else 0)
    return out


def notify(q=0):
    return u8(6 | (q << 3))


BLK_BUFS = [(0x8000, 16, False), (0x9000, 512, True), (0xA000, 1, True)]
save("virtio_mmio", "blk_request", handshake(3, 0) + memw(0x8000, blk_hdr(0, 1))
     + add_chain(BLK_BUFS) + notify() + r32(0x60) + w32(0x64, 1))
regs = (w32(0x70, 1) + w32(0x70, 3) + w32(0x24, 1) + w32(0x20, 1) + w32(0x70, 0xB)
        + w32(0x30, 0) + r32(0x34) + w32(0x38, 8) + w32(0x80, 0x1000) + w32(0x84, 0)
        + w32(0x90, 0x1080) + w32(0x94, 0) + w32(0xA0, 0x1100) + w32(0xA4, 0)
        + w32(0x44, 1) + r32(0x44) + w32(0x70, 0xF) + r32(0x70))
save("virtio_mmio", "register_handshake", regs + notify())
save("virtio_mmio", "config_space", u8(3 | (3 << 3)) + u16(0x100) + u64(0)
     + u8(3 | (0 << 3)) + u16(0x10f) + u64(0) + u8(3 | (3 << 3) | 0x20) + u16(0x100) + u64(7)
     + u8(3 | (2 << 3)) + u16(0x71) + u64(0) + r32(0xfc))
save("virtio_mmio", "reset_while_active", handshake(3, 0) + memw(0x8000, blk_hdr(0, 0))
     + add_chain(BLK_BUFS) + w32(0x70, 0) + notify() + handshake(4, 2) + notify())
save("virtio_mmio", "failed", handshake(3, 0) + w32(0x70, 0x8F) + r32(0x70) + notify())
save("virtio_mmio", "rings_in_the_hole", w32(0x70, 1) + w32(0x70, 3) + w32(0x24, 1)
     + w32(0x20, 1) + w32(0x70, 0xB) + w32(0x38, 8) + w32(0x80, 0x8_0000)
     + w32(0x90, 0x1080) + w32(0xA0, 0x1100) + w32(0x44, 1) + w32(0x70, 0xF) + r32(0x70))
save("virtio_mmio", "chain_loop", handshake(2, 0) + memw(0x8000, blk_hdr(0, 0))
     + memw(0x1000, u64(0x8000) + u32(16) + u16(NEXT) + u16(1)
            + u64(0x9000) + u32(16) + u16(NEXT | WRITE) + u16(0))
     + memw(0x1040, u16(0) + u16(1) + u16(0)) + notify())

# ---- virtio_fs: ctl [init flags] then requests
def fuse(op, node, body, reply=5, ctl=0, reply2=None):
    """A request; `node` 1 is the root, other small IDs are the share's (Vfs slot 1)."""
    node = node if node <= 1 else 0x80 | node
    rsel = reply | ((reply2 << 3) | 0x40 if reply2 is not None else 0)
    out = u8(ctl) + u8(op) + u8(node) + u8(rsel)
    if len(body) > 255:
        ctl |= 0x20
        out = u8(ctl) + out[1:] + u16(len(body))
    else:
        out += u8(len(body))
    return out + body


INIT = u8(0) + u32(0)
LOOKUP, FORGET, GETATTR, SETATTR, READLINK, SYMLINK, MKNOD, MKDIR = 1, 2, 3, 4, 5, 6, 8, 9
UNLINK, RENAME, LINK, OPEN, READ, WRITE_, STATFS, OPENDIR, READDIR = 10, 12, 13, 14, 15, 16, 17, 27, 28
CREATE, READDIRPLUS, RENAME2, LSEEK = 35, 44, 45, 46
z = lambda s: s + b"\0"
save("virtio_fs", "lookup_open_read", INIT + fuse(LOOKUP, 1, z(b"hello.txt"))
     + fuse(OPEN, 2, u32(0) + u32(0)) + fuse(READ, 2, u64(1) + u64(0) + u32(4096) + u32(0)
                                                  + u64(0) + u32(0) + u32(0), 6))
save("virtio_fs", "escape_links", INIT + fuse(LOOKUP, 1, z(b"up-link"))
     + fuse(LOOKUP, 2, z(b"sentinel")) + fuse(READLINK, 2, b"")
     + fuse(LOOKUP, 1, z(b"secret-link")) + fuse(OPEN, 3, u32(2) + u32(0))
     + fuse(SETATTR, 3, u32(0x9) + u32(0) + u64(0) + u64(0) + u64(0) + u64(0) * 3 + u32(0) * 3
            + u32(0o100777) + u32(0) * 3 + u32(0))
     + fuse(LOOKUP, 1, z(b"..")) + fuse(LOOKUP, 1, z(b"../outside"))
     + fuse(LINK, 1, u64(1 << 56 | 3) + z(b"hard")))
save("virtio_fs", "create_write_rename", INIT
     + fuse(CREATE, 1, u32(0o102) + u32(0o100644) + u32(0) + u32(0) + z(b"new"))
     + fuse(WRITE_, 2, u64(1) + u64(0) + u32(5) + u32(0) + u64(0) + u32(0) + u32(0) + b"data!")
     + fuse(RENAME, 1, u64(1) + z(b"new") + z(b"renamed"))
     + fuse(RENAME2, 1, u64(1) + u32(2) + u32(0) + z(b"renamed") + z(b"hello.txt"))
     + fuse(MKDIR, 1, u32(0o755) + u32(0) + z(b"d"))
     + fuse(SYMLINK, 1, z(b"sl") + z(b"/"))
     + fuse(UNLINK, 1, z(b"hello.txt")))
save("virtio_fs", "readdir", INIT + fuse(OPENDIR, 1, u32(0) + u32(0))
     + fuse(READDIR, 1, u64(1) + u64(0) + u32(4096) + u32(0) + u64(0) + u32(0) + u32(0))
     + fuse(READDIRPLUS, 1, u64(1) + u64(0) + u32(4096) + u32(0) + u64(0) + u32(0) + u32(0), 6)
     + fuse(STATFS, 1, b"") + fuse(GETATTR, 1, u32(0) + u32(0) + u64(0)))
save("virtio_fs", "mknod_and_forget", INIT
     + fuse(MKNOD, 1, u32(0o20666) + u32(0x103) + u32(0) + u32(0) + z(b"null"))
     + fuse(MKNOD, 1, u32(0o10666) + u32(0) + u32(0) + u32(0) + z(b"fifo"))
     + fuse(LOOKUP, 1, z(b"a"), reply=2, reply2=6)
     + fuse(FORGET, 2, u64(1), ctl=0x80)
     + fuse(42, 0, u32(1) + u32(0) + u64(2) + u64(1), ctl=0x80))
save("virtio_fs", "split_buffers", INIT + fuse(LOOKUP, 1, z(b"a"), ctl=2, reply=1, reply2=5)
     + fuse(LOOKUP, 2, z(b"b"), ctl=1, reply=3))


# ---- virtio_net: opts, accepted features, then steps (op, fields)
OFFER, MTU = 1, 2
CSUM, GUEST_CSUM, GUEST_TSO4, HOST_TSO4 = 1, 2, 4, 8
FLUSH = 0x80


def nframe(eth=None, total=None, big=None, flags=0, gso=0, csum=None, seg=None, nb=None, seed=0):
    """A header + frame: `eth` Ethernet bytes (raw u16 length mode), a short `total`, or `big`
    (MAX_FRAME - 8 + big bytes); `csum` (start, offset) and `seg` (hdr_len, gso_size) raw, or
    canonical when None."""
    if big is not None:
        lsel, ln = 3 | (big << 2), b""
    elif total is not None:
        lsel, ln = total << 2, b""
    else:
        lsel, ln = 2, u16(eth)
    fsel = (2 if csum is not None else 0) | ((2 if seg is not None else 0) << 2)
    fsel |= 0x10 if nb is not None else 0
    out = u8(lsel) + u8(fsel) + ln + u8(flags) + u8(gso)
    if csum is not None:
        out += u16(csum[0]) + u16(csum[1])
    if seg is not None:
        out += u16(seg[0]) + u16(seg[1])
    if nb is not None:
        out += u16(nb)
    return out + u8(seed)


def ntx(frame, descs=1, split=False, write=False, place=0, cuts=(), special=None, flush=False):
    shape = (descs - 1) | (4 if split else 0) | (8 if write else 0) | (place << 4)
    out = u8(FLUSH if flush else 0) + u8(shape) + frame + b"".join(u16(c) for c in cuts)
    return out + (u8(special) if place == 3 else b"")


def nrx(frame, flush=False):
    return u8(2 | (FLUSH if flush else 0)) + frame


RX_LEN = {0: 0, 12: 3, 26: 5, 60: 6, 100: 8, 1526: 9, 2048: 10, 4096: 11, 65562: 13}


def nbufs(chains, flush=False):
    """Receive chains: each (lens, place, readable index or None, special)."""
    out = u8(3 | ((len(chains) - 1) << 2) | (FLUSH if flush else 0))
    for lens, place, readable, special in chains:
        shape = (len(lens) - 1) | (place << 2) | ((0x10 | (readable << 5)) if readable is not None else 0)
        out += u8(shape) + b"".join(u8(RX_LEN[n]) for n in lens)
        out += u8(special) if place == 3 else b""
    return out


buf2k = ([2048], 0, None, 0)
save("virtio_net", "plain_both_ways", u8(0) + u8(0)
     + nbufs([buf2k] * 4) + nrx(nframe(eth=60, seed=1)) + nrx(nframe(eth=1514, seed=2), flush=True)
     + ntx(nframe(eth=1514, flags=1, gso=1, seed=3), descs=3, split=True, cuts=(12, 112), flush=True)
     # Frames that arrive for posted buffers without a kick come from the tap's event.
     + nrx(nframe(eth=600, seed=4), flush=True))
save("virtio_net", "offloads_tso_and_csum", u8(OFFER | MTU) + u8(CSUM | GUEST_CSUM | GUEST_TSO4 | HOST_TSO4)
     + ntx(nframe(eth=30000, flags=1, gso=1, seed=5))
     + ntx(nframe(eth=1514, flags=1, csum=(34, 16), seed=6), descs=2, split=True, cuts=(12,))
     + ntx(nframe(eth=1514, flags=1, csum=(1500, 13), seed=7), flush=True)
     + nbufs([([65562], 0, None, 0), ([12, 4096], 0, None, 0)])
     + nrx(nframe(eth=30000, flags=1, gso=1, seed=8)) + nrx(nframe(eth=1514, flags=3, seed=9), flush=True))
save("virtio_net", "csum_only_driver", u8(OFFER) + u8(CSUM | GUEST_CSUM)
     + ntx(nframe(eth=30000, flags=1, gso=1, seed=10))
     + ntx(nframe(eth=200, flags=1, csum=(34, 16), seed=11), flush=True)
     + nbufs([([65562], 0, None, 0)] * 2)
     + nrx(nframe(eth=30000, flags=1, gso=1)) + nrx(nframe(eth=200, flags=1, csum=(34, 16)), flush=True))
save("virtio_net", "no_guest_csum_completes", u8(OFFER) + u8(CSUM)
     + nbufs([buf2k] * 2) + nrx(nframe(eth=200, flags=3, csum=(34, 16), seed=12))
     + nrx(nframe(eth=200, flags=0xfd, csum=(34, 16), seed=13), flush=True))
save("virtio_net", "drops", u8(OFFER) + u8(0xf)
     + ntx(nframe(total=20))
     + ntx(nframe(eth=100), descs=2, write=True, cuts=(12,))
     + ntx(nframe(big=10), descs=2, cuts=(0x8000,), flush=True)
     + nbufs([([100], 0, None, 0), ([60, 2048], 0, 0, 0)])
     + nrx(nframe(total=25)) + nrx(nframe(eth=1000)) + nrx(nframe(eth=1000), flush=True))
save("virtio_net", "tx_in_the_hole", u8(0) + u8(0)
     + ntx(nframe(eth=100), descs=2, cuts=(12,), place=2)
     + ntx(nframe(eth=100), place=3, special=0, flush=True))
save("virtio_net", "rx_broken_link", u8(0) + u8(0)
     + nbufs([buf2k, ([2048], 3, None, 3)]) + nrx(nframe(eth=60)) + nrx(nframe(eth=60), flush=True))

# ---- virtio_blk: requests (ctl, shape, fields)
B_IN, B_OUT, B_FLUSH, B_GET_ID = 0, 1, 2, 3
BLK_LEN = {0: 0, 1: 1, 19: 2, 20: 3, 21: 4, 511: 5, 512: 6, 513: 7, 1024: 8, 4096: 9, 0x10000: 10,
           0x10001: 11, 0x20000: 12}


def breq(ty, sector_mode, sector_arg=None, lens=(), hdr=0, hdr_arg=None, status=0, status_len=None,
         flip=False, place=None, flush=False, raw_type=None):
    ctl = ty | (sector_mode << 3) | (0x40 if flush else 0)
    shape = hdr | (len(lens) << 2) | (status << 4) | (0x40 if flip else 0) | (0x80 if place is not None else 0)
    out = u8(ctl) + u8(shape)
    if ty == 4:
        out += u32(raw_type)
    elif ty == 7:
        out += u8(raw_type)
    if sector_arg is not None:
        out += u64(sector_arg) if sector_mode == 5 else u8(sector_arg)
    out += b"".join(u8(BLK_LEN[n]) for n in lens)
    if hdr in (1, 2):
        out += u8(hdr_arg)
    if status == 3:
        out += u8(status_len)
    if place is not None:
        out += u8(place)
    return out


save("virtio_blk", "read_write_flush_id",
     breq(B_IN, 1, 3, lens=(4096,)) + breq(B_IN, 0, lens=(512, 512, 0x10000))
     + breq(B_OUT, 0, lens=(512,)) + breq(B_FLUSH, 0) + breq(B_GET_ID, 0, lens=(20,))
     + breq(7, 0, lens=(512,), raw_type=11, flush=True))
save("virtio_blk", "near_the_end", breq(B_IN, 2, 0, lens=(512,)) + breq(B_IN, 3, 1, lens=(1024,))
     + breq(B_IN, 3, 2, lens=(0,)) + breq(B_IN, 4, 0, lens=(512,)) + breq(B_IN, 6, 2, lens=(512,))
     + breq(B_IN, 7, 0, lens=(512,)) + breq(B_IN, 5, 1 << 55, lens=(512,)))
save("virtio_blk", "odd_shapes", breq(B_IN, 0, lens=(513, 19)) + breq(B_GET_ID, 0, lens=(19,))
     + breq(B_IN, 0, lens=(512,), hdr=1, hdr_arg=5) + breq(B_IN, 0, lens=(512,), hdr=2, hdr_arg=9)
     + breq(B_IN, 0, lens=(512,), hdr=3) + breq(B_IN, 0, lens=(512,), status=1)
     + breq(B_IN, 0, lens=(512,), status=2) + breq(B_IN, 0, lens=(512,), status=3, status_len=7)
     + breq(B_OUT, 0, lens=(512,), flip=True) + breq(B_IN, 0, lens=(512,), flip=True))
save("virtio_blk", "edges", breq(B_IN, 1, 9, lens=(4096,), place=0 | (0 << 2))
     + breq(B_IN, 1, 9, lens=(4096,), place=1 | (1 << 2) | (2 << 5))
     + breq(B_IN, 1, 9, lens=(512,), place=2 | (7 << 2), flush=True)
     + breq(B_IN, 1, 9, lens=(512,), place=1 | (1 << 2) | (7 << 5)))
save("virtio_blk", "broken_link", breq(B_IN, 0, lens=(512,)) + breq(B_IN, 0, lens=(512,), place=5 << 2))
