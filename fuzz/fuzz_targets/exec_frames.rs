//! The exec channel's framing (`pod_abi::exec`), which the host side of `rkt enter`, `rkt
//! attach`, `rkt stop` and the `rkt app` commands reads from a KVM guest: the request line and
//! the frames after it, fed in pieces of guest-chosen sizes as a reader bounded by `read_room`
//! takes them. Decoding must return a frame, "need more" or a typed error, never panic; the
//! reader never holds more than one frame's worth; every frame decoded encodes back to the same
//! frame; a request parsed renders to a line that parses to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pod_abi::exec::{decode, encoded, read_room, Frame, FrameReader, Request, HEADER, MAX_PAYLOAD};

fuzz_target!(|data: &[u8]| {
    let (line, rest) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => data.split_at(i + 1),
        None => (data, &[][..]),
    };
    if let Ok(r) = Request::parse(line) {
        assert_eq!(Request::parse(&r.to_line()).ok(), Some(r));
    }
    let mut reader = FrameReader::default();
    let mut at = 0usize;
    while at < rest.len() {
        // The first byte of each piece says how much the guest sent at once.
        let want = usize::from(rest[at]) * 97 + 1;
        let n = want.min(read_room(&reader)).min(rest.len() - at);
        reader.push(&rest[at..at + n]);
        at += n;
        loop {
            match reader.next_frame() {
                Ok(Some(f)) => check(&f),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(reader.pending() <= HEADER + MAX_PAYLOAD);
    }
});

fn check(f: &Frame) {
    // An error text decodes lossily and a report re-serializes: the rest round-trip exactly.
    if matches!(f, Frame::Error(_) | Frame::StopReport(_)) {
        return;
    }
    let bytes = encoded(f);
    let (back, n) = decode(&bytes)
        .expect("a frame we encode decodes")
        .expect("complete");
    assert_eq!(n, bytes.len());
    assert_eq!(&back, f);
}
