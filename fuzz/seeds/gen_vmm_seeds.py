#!/usr/bin/env python3
"""Writes the committed seeds of the VMM fuzz targets (virtio_queue, virtio_mmio, virtio_fs).

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
