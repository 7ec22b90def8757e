//! Applying the layers: the top layer is read first and the first version of a path wins;
//! a whiteout (`.wh.NAME`) hides NAME and an opaque marker (`.wh..wh..opq`) hides a
//! directory's contents in the layers below (never in its own layer), as do a non-directory
//! or a whiteout over any parent. Every layer is streamed once (hardlinks whose targets a
//! higher layer replaced make their layer be read one second time, after the rest of it,
//! to copy the old contents; both passes count toward the limits).
//! Output headers are rebuilt from the parsed fields (type, mode, uid, gid, mtime, size,
//! names), so two archives of the same layers give the same bytes.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use appc::aci::TarGuard;
use tar::{EntryType, Header};

use crate::blobs::{Blobs, Layer};
use crate::verify::{Bounded, Verified};
use crate::{lift, Limits, OciError};

/// Largest `/etc/passwd` kept to resolve the user's primary group (bytes).
const PASSWD_MAX: u64 = 1 << 20;
/// Read buffer of a layer (bytes).
const LAYER_BUFFER: usize = 256 << 10;

/// What writing the rootfs produced.
pub(crate) struct Flat {
    pub(crate) warnings: Vec<String>,
    /// The final `/etc/passwd`, if it is a regular file of at most [`PASSWD_MAX`] bytes.
    pub(crate) passwd: Option<Vec<u8>>,
    /// Entries written (count).
    pub(crate) entries: u64,
}

/// A path decided by a higher layer (or earlier in the same one).
#[derive(Clone, Copy)]
struct Decided {
    dir: bool,
    layer: usize,
    /// Written to the output (false: dropped, e.g. a device node).
    written: bool,
}

/// Counts bytes read (the compressed side of the ratio limit).
struct Counting<R> {
    inner: R,
    n: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n.set(self.n.get() + n as u64);
        Ok(n)
    }
}

/// A layer's decompressed stream: bounded, digest-checked and guarded against oversized
/// extension entries.
type LayerTar = TarGuard<Verified<Bounded<Box<dyn Read>>>>;

/// One layer's tar stream and the flags saying its digests matched.
struct LayerStream {
    tar: tar::Archive<LayerTar>,
    diff_ok: Rc<Cell<bool>>,
    blob_ok: Option<Rc<Cell<bool>>>,
    compressed: Rc<Cell<u64>>,
}

/// Shared counters of decompressed and compressed bytes (all layers so far).
struct Totals {
    uncompressed: Rc<Cell<u64>>,
    compressed_before: u64,
}

fn open_layer(
    blobs: &Blobs,
    layer: &Layer,
    li: usize,
    limits: &Limits,
    totals: &Totals,
) -> Result<LayerStream, OciError> {
    let what = format!("layer {li} ({})", layer.path);
    let (raw, blob_ok): (Box<dyn Read>, _) = match &layer.blob {
        Some((digest, size)) => {
            let v = blobs.open_blob(digest, *size, &what)?;
            let ok = v.ok_flag();
            (Box::new(v), Some(ok))
        }
        None => (blobs.open_layer(layer, &what)?, None),
    };
    let compressed = Rc::new(Cell::new(0));
    let mut buf = BufReader::with_capacity(
        LAYER_BUFFER,
        Counting {
            inner: raw,
            n: compressed.clone(),
        },
    );
    let head = buf
        .fill_buf()
        .map_err(|e| lift(e, |e| OciError::CorruptLayer(li, e)))?;
    let decoded: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buf))
    } else if head.starts_with(&crate::zstd::MAGIC) || is_skippable(head) {
        Box::new(crate::zstd::ZstdFrames::new(buf))
    } else if head.starts_with(b"BZh") {
        return Err(OciError::Compression(li, "bzip2"));
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err(OciError::Compression(li, "xz"));
    } else {
        Box::new(buf)
    };
    let bounded = Bounded {
        inner: decoded,
        total: totals.uncompressed.clone(),
        compressed: compressed.clone(),
        base_compressed: totals.compressed_before,
        limits: limits.clone(),
    };
    let diff = Verified::new(bounded, format!("{what} diff_id"), &layer.diff_id, None)?;
    let diff_ok = diff.ok_flag();
    Ok(LayerStream {
        tar: tar::Archive::new(TarGuard::new(diff)),
        diff_ok,
        blob_ok,
        compressed,
    })
}

/// Whether `head` starts with a zstd skippable frame's magic (0x184D2A50-5F, little-endian).
fn is_skippable(head: &[u8]) -> bool {
    matches!(head, [b0, 0x2a, 0x4d, 0x18, ..] if b0 & 0xf0 == 0x50)
}

/// `a/b/c` -> (`a/b`, `c`); (``, `c`) at the top.
fn split(p: &[u8]) -> (&[u8], &[u8]) {
    match p.iter().rposition(|&b| b == b'/') {
        Some(i) => (
            p.get(..i).unwrap_or_default(),
            p.get(i + 1..).unwrap_or_default(),
        ),
        None => (b"", p),
    }
}

/// `parent/name` (or `name` at the top).
fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = parent.to_vec();
    if !v.is_empty() {
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

/// Clean a layer path: drop `.`, empty components and a leading `/`; None for `..`.
fn clean(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return None,
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Some(out)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Bytes a path-tree node costs besides its name (map slot at the table's lowest load,
/// key allocation and node; an estimate on the high side).
const NODE_OVERHEAD: u64 = 96;

/// What is known about one path.
#[derive(Default)]
struct Node {
    /// Decided by a higher layer or earlier in this one.
    decided: Option<Decided>,
    /// A parent of a written entry: it must stay a directory.
    implied: bool,
    /// The highest layer with a whiteout of this path (it hides it in the layers below).
    hidden_by: Option<usize>,
    /// The highest layer with an opaque marker in this directory (it hides its contents in
    /// the layers below).
    opaque_by: Option<usize>,
}

/// The decisions so far, as a tree keyed by (parent node, component): each entry costs time
/// and memory in proportion to its path's length, never to its square.
struct State {
    /// Node 0 is the root (the empty path).
    nodes: Vec<Node>,
    /// Parent node id (4 bytes, little-endian) + component name -> node id.
    children: HashMap<Box<[u8]>, u32>,
    /// Bytes charged so far (nodes and remembered paths).
    bytes: u64,
    /// The limit on `bytes`.
    max_bytes: u64,
    /// Scratch key for lookups.
    key: Vec<u8>,
}

impl State {
    fn new(limits: &Limits) -> Self {
        Self {
            nodes: vec![Node::default()],
            children: HashMap::new(),
            bytes: 0,
            max_bytes: limits.max_path_tree_bytes,
            key: Vec::new(),
        }
    }

    /// Charges `n` bytes of remembered paths to the limit.
    fn charge(&mut self, n: u64) -> Result<(), OciError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.max_bytes {
            return Err(OciError::TooBig {
                what: "memory for the layers' paths",
                limit: format!("{} bytes", self.max_bytes),
            });
        }
        Ok(())
    }

    fn node(&self, id: u32) -> &Node {
        // Ids come from `children` or are 0; both index `nodes`.
        self.nodes.get(id as usize).unwrap_or(&EMPTY)
    }

    fn child(&mut self, id: u32, name: &[u8]) -> Option<u32> {
        self.key.clear();
        self.key.extend_from_slice(&id.to_le_bytes());
        self.key.extend_from_slice(name);
        self.children.get(&self.key[..]).copied()
    }

    /// The node of `p` (a clean path), created with its parents if missing.
    fn make(&mut self, p: &[u8]) -> Result<u32, OciError> {
        let mut id = 0u32;
        if p.is_empty() {
            return Ok(id);
        }
        for c in p.split(|&b| b == b'/') {
            id = match self.child(id, c) {
                Some(n) => n,
                None => self.make_child(c)?,
            };
        }
        Ok(id)
    }

    /// The node of `p`, if anything was recorded at or below it.
    fn find(&mut self, p: &[u8]) -> Option<u32> {
        let mut id = 0u32;
        if p.is_empty() {
            return Some(id);
        }
        for c in p.split(|&b| b == b'/') {
            id = self.child(id, c)?;
        }
        Some(id)
    }

    /// Whether a higher layer (or an earlier entry) already decided `p` (an entry of layer
    /// `li`) or hides it.
    fn shadowed(&mut self, p: &[u8], dir: bool, li: usize) -> bool {
        let above = |by: Option<usize>| by.is_some_and(|l| l > li);
        // The root's opaque marker hides everything below.
        if above(self.node(0).opaque_by) {
            return true;
        }
        let mut id = 0u32;
        let mut comps = p.split(|&b| b == b'/').peekable();
        while let Some(c) = comps.next() {
            let Some(n) = self.child(id, c) else {
                return false;
            };
            id = n;
            let node = self.node(id);
            if comps.peek().is_none() {
                return node.decided.is_some() || above(node.hidden_by) || (!dir && node.implied);
            }
            if above(node.hidden_by)
                || above(node.opaque_by)
                || node.decided.is_some_and(|d| !d.dir)
            {
                return true;
            }
        }
        false
    }

    /// Records that `p` was written: its parents must be directories.
    fn imply_parents(&mut self, p: &[u8]) -> Result<(), OciError> {
        let (parent, _) = split(p);
        if parent.is_empty() {
            return Ok(());
        }
        let mut id = 0u32;
        for c in parent.split(|&b| b == b'/') {
            id = match self.child(id, c) {
                Some(n) => n,
                None => self.make_child(c)?,
            };
            if let Some(n) = self.nodes.get_mut(id as usize) {
                if n.decided.is_none() {
                    n.implied = true;
                }
            }
        }
        Ok(())
    }

    /// A new node for `name`, whose key `child` just looked up in vain (it is in `self.key`).
    fn make_child(&mut self, name: &[u8]) -> Result<u32, OciError> {
        self.charge(name.len() as u64 + NODE_OVERHEAD)?;
        let n = u32::try_from(self.nodes.len()).map_err(|_| OciError::TooBig {
            what: "memory for the layers' paths",
            limit: format!("{} bytes", self.max_bytes),
        })?;
        self.nodes.push(Node::default());
        self.children.insert(Box::from(&self.key[..]), n);
        Ok(n)
    }

    fn decided(&mut self, p: &[u8]) -> Option<Decided> {
        let id = self.find(p)?;
        self.node(id).decided
    }

    fn decide(&mut self, p: &[u8], d: Decided) -> Result<(), OciError> {
        let id = self.make(p)?;
        if let Some(n) = self.nodes.get_mut(id as usize) {
            n.decided = Some(d);
        }
        Ok(())
    }

    /// A whiteout of layer `li` hides `p` in the layers below.
    fn hide(&mut self, p: &[u8], li: usize) -> Result<(), OciError> {
        let id = self.make(p)?;
        if let Some(n) = self.nodes.get_mut(id as usize) {
            n.hidden_by.get_or_insert(li);
        }
        Ok(())
    }

    /// An opaque marker of layer `li` hides the contents of `p` in the layers below.
    fn make_opaque(&mut self, p: &[u8], li: usize) -> Result<(), OciError> {
        let id = self.make(p)?;
        if let Some(n) = self.nodes.get_mut(id as usize) {
            n.opaque_by.get_or_insert(li);
        }
        Ok(())
    }
}

/// What an unknown node id reads as (never used: ids always index `State::nodes`).
static EMPTY: Node = Node {
    decided: None,
    implied: false,
    hidden_by: None,
    opaque_by: None,
};

/// The first bytes of a path, for error messages about overlong ones.
fn shown(p: &[u8]) -> String {
    let mut s = lossy(p.get(..64).unwrap_or(p));
    if p.len() > 64 {
        s.push_str("...");
    }
    s
}

/// Refuses a layer path (or link target) longer or deeper than an ACI may hold, before any
/// per-component work: in the ACI it gets `rootfs/` in front.
fn check_path(li: usize, what: &str, p: &[u8]) -> Result<(), OciError> {
    let max = appc::aci::MAX_PATH_BYTES - b"rootfs/".len();
    if p.len() > max {
        return Err(OciError::Invalid(format!(
            "layer {li}: {what} {:?} is {} bytes long, more than {max}",
            shown(p),
            p.len()
        )));
    }
    let depth = p.iter().filter(|&&b| b == b'/').count() + 1;
    if depth >= appc::aci::MAX_PATH_DEPTH {
        return Err(OciError::Invalid(format!(
            "layer {li}: {what} {:?} has {depth} components, more than {}",
            shown(p),
            appc::aci::MAX_PATH_DEPTH - 1
        )));
    }
    Ok(())
}

/// A fresh header with the fields that matter.
fn header<R: Read>(e: &tar::Entry<'_, R>, t: EntryType, size: u64) -> Header {
    let src = e.header();
    let mut h = Header::new_gnu();
    h.set_entry_type(t);
    h.set_mode(src.mode().unwrap_or(0o644) & 0o7777);
    h.set_uid(src.uid().unwrap_or(0));
    h.set_gid(src.gid().unwrap_or(0));
    h.set_mtime(src.mtime().unwrap_or(0));
    h.set_size(size);
    h
}

fn out_path(p: &[u8]) -> std::path::PathBuf {
    let mut v = b"rootfs/".to_vec();
    v.extend_from_slice(p);
    Path::new(OsStr::from_bytes(&v)).to_path_buf()
}

/// Warnings, each printed once.
#[derive(Default)]
struct Warnings(Vec<String>);

impl Warnings {
    fn once(&mut self, w: &str) {
        if !self.0.iter().any(|x| x == w) {
            self.0.push(w.to_string());
        }
    }
}

/// Writes `rootfs` and the flattened layers to `out`.
pub(crate) fn write_rootfs<W: Write>(
    blobs: &Blobs,
    layers: &[Layer],
    limits: &Limits,
    out: &mut tar::Builder<W>,
) -> Result<Flat, OciError> {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Directory);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_size(0);
    out.append_data(&mut h, "rootfs", io::empty())
        .map_err(OciError::Write)?;
    let mut st = State::new(limits);
    let mut warn = Warnings::default();
    let mut passwd = None;
    let mut entries = 0u64;
    let mut written = 0u64;
    let mut totals = Totals {
        uncompressed: Rc::new(Cell::new(0)),
        compressed_before: 0,
    };
    for (li, layer) in layers.iter().enumerate().rev() {
        let mut ls = open_layer(blobs, layer, li, limits, &totals)?;
        let corrupt = |e: io::Error| lift(e, |e| OciError::CorruptLayer(li, e));
        // Regular files of this layer that a higher layer replaced: path -> ordinal.
        let mut skipped: HashMap<Vec<u8>, u64> = HashMap::new();
        // Hardlinks naming a file of this layer a higher layer replaced, in order; written
        // after the layer, from one more pass over it.
        let mut deferred: Vec<DeferredLink> = Vec::new();
        // Their paths -> the ordinal of the old file they name (a link to one of them names
        // the same file).
        let mut deferred_at: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut ordinal = 0u64;
        for e in ls.tar.entries().map_err(corrupt)? {
            let mut e = e.map_err(corrupt)?;
            ordinal += 1;
            entries += 1;
            if entries > limits.max_entries {
                return Err(OciError::TooBig {
                    what: "entry count",
                    limit: format!("{} entries", limits.max_entries),
                });
            }
            let raw = e.path_bytes().into_owned();
            let p = clean(&raw).ok_or_else(|| OciError::PathEscape {
                layer: li,
                path: lossy(&raw),
            })?;
            if p.is_empty() || p.contains(&0) {
                continue;
            }
            check_path(li, "entry", &p)?;
            let (parent, base) = split(&p);
            if let Some(name) = base.strip_prefix(b".wh.") {
                if name == b".wh..opq" {
                    st.make_opaque(parent, li)?;
                } else if name.starts_with(b".wh.") || name.is_empty() || name == b"." {
                    warn.once("aufs metadata files (.wh..wh.*) ignored");
                } else {
                    st.hide(&join(parent, name), li)?;
                }
                continue;
            }
            let t = e.header().entry_type();
            if st.shadowed(&p, t == EntryType::Directory, li) {
                if matches!(t, EntryType::Regular | EntryType::Continuous) {
                    st.charge(p.len() as u64 + NODE_OVERHEAD)?;
                    skipped.insert(p, ordinal);
                }
                continue;
            }
            if e.pax_extensions().ok().flatten().is_some_and(|x| {
                x.flatten()
                    .any(|x| x.key_bytes().starts_with(b"SCHILY.xattr."))
            }) {
                warn.once("extended attributes (xattrs, file capabilities) in layers are dropped");
            }
            let mut dir = false;
            let mut wrote = true;
            match t {
                EntryType::Directory => {
                    dir = true;
                    let mut h = header(&e, t, 0);
                    out.append_data(&mut h, out_path(&p), io::empty())
                        .map_err(OciError::Write)?;
                }
                EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                    let size = e.size();
                    let mut h = header(&e, EntryType::Regular, size);
                    if p == b"etc/passwd" && size <= PASSWD_MAX {
                        let mut data = Vec::new();
                        e.read_to_end(&mut data).map_err(corrupt)?;
                        out.append_data(&mut h, out_path(&p), &data[..])
                            .map_err(OciError::Write)?;
                        passwd = Some(data);
                    } else {
                        copy_entry(out, &mut h, &p, &mut e, size).map_err(corrupt)?;
                    }
                }
                EntryType::Symlink => {
                    let target = e
                        .link_name_bytes()
                        .map(|c| c.into_owned())
                        .unwrap_or_default();
                    if target.len() > appc::aci::MAX_PATH_BYTES {
                        return Err(OciError::Invalid(format!(
                            "layer {li}: symlink {:?} has a target of {} bytes, more than {}",
                            shown(&p),
                            target.len(),
                            appc::aci::MAX_PATH_BYTES
                        )));
                    }
                    let mut h = header(&e, t, 0);
                    out.append_link(&mut h, out_path(&p), Path::new(OsStr::from_bytes(&target)))
                        .map_err(OciError::Write)?;
                }
                EntryType::Link => {
                    let raw_t = e
                        .link_name_bytes()
                        .map(|c| c.into_owned())
                        .unwrap_or_default();
                    let target = clean(&raw_t).ok_or_else(|| OciError::PathEscape {
                        layer: li,
                        path: lossy(&raw_t),
                    })?;
                    check_path(li, "hardlink target", &target)?;
                    let bad = || OciError::Hardlink {
                        layer: li,
                        path: lossy(&p),
                        target: lossy(&target),
                    };
                    let here = st
                        .decided(&target)
                        .is_some_and(|d| d.layer == li && d.written && !d.dir);
                    let old = deferred_at
                        .get(&target)
                        .or_else(|| skipped.get(&target).filter(|_| !here))
                        .copied();
                    if let Some(k) = old {
                        st.charge(2 * p.len() as u64 + (BLOCK as u64) + NODE_OVERHEAD)?;
                        deferred.push(DeferredLink {
                            path: p.clone(),
                            header: header(&e, t, 0),
                            old: k,
                        });
                        deferred_at.insert(p.clone(), k);
                    } else if here {
                        let mut h = header(&e, t, 0);
                        out.append_link(&mut h, out_path(&p), out_path(&target))
                            .map_err(OciError::Write)?;
                    } else {
                        return Err(bad());
                    }
                }
                EntryType::Char | EntryType::Block | EntryType::Fifo => {
                    warn.once(
                        "device nodes and FIFOs in layers are dropped (the stage1 provides /dev)",
                    );
                    wrote = false;
                }
                EntryType::XGlobalHeader => continue,
                other => {
                    return Err(OciError::Invalid(format!(
                        "layer {li}: entry {:?} has unsupported type {:?}",
                        lossy(&p),
                        char::from(other.as_byte())
                    )))
                }
            }
            if wrote {
                written += 1;
                st.imply_parents(&p)?;
            }
            st.decide(
                &p,
                Decided {
                    dir,
                    layer: li,
                    written: wrote,
                },
            )?;
        }
        // Read to the end so the digests are checked, whatever follows the tar's end marker.
        let mut rest = ls.tar.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(corrupt)?;
        if !ls.diff_ok.get() || ls.blob_ok.as_ref().is_some_and(|f| !f.get()) {
            return Err(OciError::Invalid(format!(
                "layer {li} was not read to its end"
            )));
        }
        totals.compressed_before += ls.compressed.get();
        if !deferred.is_empty() {
            copy_old(blobs, layer, li, limits, &mut totals, &deferred, out)?;
        }
    }
    Ok(Flat {
        warnings: warn.0,
        passwd,
        entries: written,
    })
}

/// Copies a regular file's data, failing unless exactly `size` bytes come.
fn copy_entry<W: Write, R: Read>(
    out: &mut tar::Builder<W>,
    h: &mut Header,
    p: &[u8],
    data: &mut R,
    size: u64,
) -> io::Result<()> {
    let mut exact = ExactReader {
        inner: data.take(size),
        left: size,
    };
    out.append_data(h, out_path(p), &mut exact)
}

/// Yields exactly `left` bytes or fails (so a short entry never pads the output wrongly).
struct ExactReader<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Tar block size (bytes).
const BLOCK: usize = 512;

/// A hardlink of a layer naming a file of the same layer that a higher layer replaced.
struct DeferredLink {
    /// The link's path.
    path: Vec<u8>,
    /// Its output header.
    header: Header,
    /// The ordinal of the old file in its layer.
    old: u64,
}

/// Writes the hardlinks of layer `li` that name files a higher layer replaced, after the
/// layer's other entries: one more pass over the layer (charged to the same totals) writes
/// each old file once, as a regular file at the first link's path; the other links name
/// that path.
fn copy_old<W: Write>(
    blobs: &Blobs,
    layer: &Layer,
    li: usize,
    limits: &Limits,
    totals: &mut Totals,
    links: &[DeferredLink],
    out: &mut tar::Builder<W>,
) -> Result<(), OciError> {
    // Old file ordinal -> the first link's path.
    let mut first: HashMap<u64, &[u8]> = HashMap::new();
    for l in links {
        first.entry(l.old).or_insert(&l.path);
    }
    let mut ls = open_layer(blobs, layer, li, limits, totals)?;
    let corrupt = |e: io::Error| lift(e, |e| OciError::CorruptLayer(li, e));
    let mut found = 0usize;
    for (i, e) in ls.tar.entries().map_err(corrupt)?.enumerate() {
        let mut e = e.map_err(corrupt)?;
        if let Some(p) = first.get(&(i as u64 + 1)) {
            let size = e.size();
            let mut h = header(&e, EntryType::Regular, size);
            copy_entry(out, &mut h, p, &mut e, size).map_err(corrupt)?;
            found += 1;
            if found == first.len() {
                break;
            }
        }
    }
    let mut rest = ls.tar.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(corrupt)?;
    totals.compressed_before += ls.compressed.get();
    if found != first.len() || !ls.diff_ok.get() || ls.blob_ok.as_ref().is_some_and(|f| !f.get()) {
        return Err(OciError::Invalid(format!(
            "layer {li} changed while it was read"
        )));
    }
    for l in links {
        match first.get(&l.old) {
            Some(p) if *p != &l.path[..] => {
                let mut h = l.header.clone();
                out.append_link(&mut h, out_path(&l.path), out_path(p))
                    .map_err(OciError::Write)?;
            }
            _ => {}
        }
    }
    Ok(())
}
