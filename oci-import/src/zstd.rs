//! Zstandard layers (`application/vnd.oci.image.layer.v1.tar+zstd`, and `zstd:chunked`,
//! whose table of contents rides in skippable frames): every frame of a stream in turn, in
//! Rust (ruzstd), with the window a frame may ask for bounded.

use std::io::{self, BufRead, Read};

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

/// The largest window a frame may declare, bytes: zstd's own default limit for decoding
/// (`--long` streams use 128 MiB); the decoder's buffer grows to it at most.
pub const MAX_WINDOW: u64 = 128 << 20;

/// The largest skippable frame skipped, bytes (zstd:chunked's table of contents and footer
/// are well below it).
pub const MAX_SKIPPABLE: u64 = 64 << 20;

/// The first four bytes of a zstd frame.
pub const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A reader of the concatenated frames of a zstd stream (RFC 8878 3: a stream is one or more
/// frames; skippable frames are skipped wherever they stand). The stream must end at a frame
/// boundary; each frame's content checksum, where it has one, is checked.
pub struct ZstdFrames<R: BufRead> {
    src: R,
    dec: FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdFrames<R> {
    /// A reader of `src`'s frames.
    pub fn new(src: R) -> Self {
        let mut dec = FrameDecoder::new();
        dec.set_max_window_size(MAX_WINDOW);
        ZstdFrames {
            src,
            dec,
            in_frame: false,
        }
    }

    /// Starts the next frame, skipping skippable ones; false at the stream's end.
    fn next_frame(&mut self) -> io::Result<bool> {
        loop {
            if self.src.fill_buf()?.is_empty() {
                return Ok(false);
            }
            match self.dec.reset(&mut self.src) {
                Ok(()) => return Ok(true),
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let length = u64::from(length);
                    if length > MAX_SKIPPABLE {
                        return Err(bad(format!(
                            "a skippable frame of {length} bytes (at most {MAX_SKIPPABLE})"
                        )));
                    }
                    let skipped = io::copy(&mut (&mut self.src).take(length), &mut io::sink())?;
                    if skipped != length {
                        return Err(bad("the stream ends inside a skippable frame".into()));
                    }
                }
                Err(e) => return Err(bad(e.to_string())),
            }
        }
    }

    /// Checks a finished frame's content checksum against what was decoded.
    fn check_sum(&self) -> io::Result<()> {
        match (
            self.dec.get_checksum_from_data(),
            self.dec.get_calculated_checksum(),
        ) {
            (Some(want), Some(got)) if want != got => Err(bad(format!(
                "a frame's checksum is {want:08x}, its content's {got:08x}"
            ))),
            _ => Ok(()),
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if !self.next_frame()? {
                    return Ok(0);
                }
                self.in_frame = true;
            }
            while self.dec.can_collect() == 0 && !self.dec.is_finished() {
                self.dec
                    .decode_blocks(&mut self.src, BlockDecodingStrategy::UptoBlocks(1))
                    .map_err(|e| bad(e.to_string()))?;
            }
            let n = self.dec.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.dec.is_finished() {
                self.check_sum()?;
                self.in_frame = false;
            }
        }
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {msg}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ruzstd::encoding::{compress_to_vec, CompressionLevel};

    fn frame(data: &[u8]) -> Vec<u8> {
        compress_to_vec(data, CompressionLevel::Fastest)
    }

    fn skippable(payload: &[u8]) -> Vec<u8> {
        let mut v = 0x184D_2A5Eu32.to_le_bytes().to_vec();
        v.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
        v.extend_from_slice(payload);
        v
    }

    fn decode(stream: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        ZstdFrames::new(io::BufReader::with_capacity(7, stream)).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn frames_and_skippable_frames_decode_in_turn() {
        let a: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let b = b"second frame".repeat(1000);
        let mut s = skippable(b"leading");
        s.extend(frame(&a));
        s.extend(skippable(&[0; 300]));
        s.extend(frame(&b));
        s.extend(skippable(b"zstd:chunked footer"));
        let mut want = a.clone();
        want.extend_from_slice(&b);
        assert_eq!(decode(&s).unwrap(), want);
        assert_eq!(decode(&frame(b"")).unwrap(), b"");
        assert_eq!(decode(b"").unwrap(), b"");
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let good = frame(&b"layer content ".repeat(5000));
        // Cut anywhere, or trailing garbage after the last frame.
        for cut in [1, 4, 5, 9, good.len() / 2, good.len() - 1] {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"garbage!");
        assert!(decode(&trailing).is_err());
        // A skippable frame that claims more than the stream holds, or more than the bound.
        let mut short = skippable(b"abc");
        short.truncate(short.len() - 1);
        assert!(decode(&short).is_err());
        let mut huge = 0x184D_2A50u32.to_le_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let e = decode(&huge).unwrap_err();
        assert!(e.to_string().contains("skippable frame"), "{e}");
    }

    #[test]
    fn a_frame_asking_for_a_huge_window_is_refused() {
        // Frame header: magic, descriptor 0 (no single segment, no checksum), window
        // descriptor 0xF8 (exponent 31: a 2 GiB window), then a raw last block.
        let mut s = MAGIC.to_vec();
        s.extend_from_slice(&[0x00, 0xF8, 0x01, 0x00, 0x00]);
        assert!(decode(&s).is_err());
    }
}
