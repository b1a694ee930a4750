//! Length-prefixed frames: a u32 little-endian length, then a postcard body.
//!
//! The reader checks the length against a maximum before it allocates or waits for the body,
//! and keeps the ways a stream can end apart: a clean close at a frame boundary (the peer
//! exited), a close inside a frame (the peer died mid-write), an oversized length (garbage)
//! and an undecodable body (a broken or mismatched peer). The supervisor tells "the worker
//! died" from "the worker is broken" by exactly these.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

/// The largest frame body either side accepts, checked before allocating.
pub const MAX_FRAME: u32 = 16 << 20;

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Why a stream of frames could not yield the next message.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the stream at a frame boundary.
    #[error("connection closed")]
    Closed,
    /// The peer closed the stream inside a frame.
    #[error("connection closed inside a frame ({got} of {expected} bytes)")]
    Truncated {
        /// Bytes the frame should have had, header included.
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },
    /// A length prefix above the maximum: garbage, or a peer gone wrong.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The length the prefix announced.
        len: u32,
        /// The limit in force.
        max: u32,
    },
    /// A complete frame whose body is not a valid message.
    #[error("undecodable frame body")]
    Decode(#[source] postcard::Error),
    /// The stream itself failed.
    #[error("socket error")]
    Io(#[source] io::Error),
}

/// Appends one frame holding `msg` to `buf`.
pub fn encode_into<T: Serialize + ?Sized>(msg: &T, buf: &mut Vec<u8>) -> Result<(), postcard::Error> {
    let start = buf.len();
    buf.extend_from_slice(&[0; HEADER_LEN]);
    append(msg, buf)?;
    finish_frame(buf, start);
    Ok(())
}

/// Appends the postcard encoding of `value` (no frame header) to `buf`.
pub fn append<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<(), postcard::Error> {
    postcard::serialize_with_flavor(value, Append(buf))
}

/// A postcard flavor that appends to a borrowed `Vec`, so one buffer collects many messages
/// without a copy.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Encodes one frame holding `msg` into a new buffer.
pub fn encode<T: Serialize + ?Sized>(msg: &T) -> Result<Vec<u8>, postcard::Error> {
    let mut buf = Vec::new();
    encode_into(msg, &mut buf)?;
    Ok(buf)
}

/// Writes the length prefix of a frame whose header starts at `start` and whose body runs to
/// the end of `buf`. Used by encoders that write a body piece by piece.
pub fn finish_frame(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start - HEADER_LEN) as u32;
    buf[start..start + HEADER_LEN].copy_from_slice(&len.to_le_bytes());
}

/// Decodes one frame body.
pub fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, FrameError> {
    postcard::from_bytes(body).map_err(FrameError::Decode)
}

/// Accumulates bytes from a stream and cuts them into frames, for blocking and non-blocking
/// readers alike.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: u32,
}

impl FrameReader {
    /// A reader that refuses frames longer than `max` bytes.
    pub fn new(max: u32) -> Self {
        Self { buf: vec![0; 8 << 10], start: 0, end: 0, max }
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Reads once from `r` into the buffer. Returns the number of bytes read; 0 means EOF.
    pub fn fill_from<R: Read + ?Sized>(&mut self, r: &mut R) -> io::Result<usize> {
        self.make_room();
        let n = r.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Gives the reader bytes obtained some other way (the first read of a worker, which
    /// comes with a file descriptor attached).
    pub fn push(&mut self, bytes: &[u8]) {
        self.make_room();
        while self.buf.len() - self.end < bytes.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// The next complete frame body, `Ok(None)` if more bytes are needed, or `TooLarge` as soon
    /// as a length prefix exceeds the maximum.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let avail = self.end - self.start;
        if avail < HEADER_LEN {
            return Ok(None);
        }
        let header: [u8; HEADER_LEN] = self.buf[self.start..self.start + HEADER_LEN].try_into().expect("4 bytes");
        let len = u32::from_le_bytes(header);
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        let total = HEADER_LEN + len as usize;
        if avail < total {
            return Ok(None);
        }
        let body = self.start + HEADER_LEN..self.start + total;
        self.start += total;
        Ok(Some(&self.buf[body]))
    }

    /// What the end of the stream means, given what is left in the buffer: a clean close or a
    /// frame cut short.
    pub fn at_eof(&self) -> FrameError {
        let got = self.end - self.start;
        if got == 0 {
            return FrameError::Closed;
        }
        let expected = if got >= HEADER_LEN {
            let header: [u8; HEADER_LEN] = self.buf[self.start..self.start + HEADER_LEN].try_into().expect("4 bytes");
            HEADER_LEN + u32::from_le_bytes(header) as usize
        } else {
            HEADER_LEN
        };
        FrameError::Truncated { expected, got }
    }

    /// Makes sure there is space to read into: compacts consumed bytes away, and grows the
    /// buffer when a partial frame (never above the maximum) needs more room.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let free = self.buf.len() - self.end;
        if free >= 4096 {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let needed = self.pending_frame_len().max(self.end + 4096);
        if needed > self.buf.len() {
            let cap = needed.next_power_of_two().min(self.max as usize + HEADER_LEN).max(needed);
            self.buf.resize(cap, 0);
        }
    }

    fn pending_frame_len(&self) -> usize {
        if self.end - self.start >= HEADER_LEN {
            let header: [u8; HEADER_LEN] = self.buf[self.start..self.start + HEADER_LEN].try_into().expect("4 bytes");
            HEADER_LEN + (u32::from_le_bytes(header).min(self.max)) as usize
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames_of(bytes: &[u8], chunk: usize) -> (Vec<Vec<u8>>, Option<FrameError>) {
        let mut r = FrameReader::new(1024);
        let mut out = Vec::new();
        let mut src = bytes;
        loop {
            loop {
                match r.next_frame() {
                    Ok(Some(f)) => out.push(f.to_vec()),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
            let take = chunk.min(src.len());
            if take == 0 {
                return (out, Some(r.at_eof()));
            }
            r.push(&src[..take]);
            src = &src[take..];
        }
    }

    #[test]
    fn clean_close_and_truncation_are_told_apart() {
        let mut bytes = encode(&(1u32, "hello")).unwrap();
        let (frames, end) = frames_of(&bytes, 3);
        assert_eq!(frames.len(), 1);
        assert!(matches!(end, Some(FrameError::Closed)));
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        let (_, end) = frames_of(&bytes, 5);
        assert!(matches!(end, Some(FrameError::Truncated { expected: 13, got: 6 })), "{end:?}");
    }

    #[test]
    fn oversized_length_is_refused_before_the_body_arrives() {
        let (_, end) = frames_of(&[0xff, 0xff, 0xff, 0xff], 4);
        assert!(matches!(end, Some(FrameError::TooLarge { len: u32::MAX, max: 1024 })));
    }

    #[test]
    fn a_whole_frame_that_is_not_the_message_is_a_decode_error() {
        // A well-framed body of the wrong shape: a variant index no enum of ours has.
        let bytes = encode(&200u32).unwrap();
        let (frames, _) = frames_of(&bytes, 64);
        let err = decode::<crate::proto::FromWorker>(&frames[0]).unwrap_err();
        assert!(matches!(err, FrameError::Decode(_)), "{err:?}");
    }

    proptest! {
        /// Any byte stream, cut anywhere, never panics the reader, and well-formed frames
        /// always come back intact whatever the read sizes.
        #[test]
        fn reader_survives_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096), chunk in 1usize..300) {
            let _ = frames_of(&bytes, chunk);
        }

        #[test]
        fn frames_round_trip(msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 0..20), chunk in 1usize..700) {
            let mut bytes = Vec::new();
            for m in &msgs {
                encode_into(&serde_bytes::Bytes::new(m), &mut bytes).unwrap();
            }
            let (frames, end) = frames_of(&bytes, chunk);
            prop_assert!(matches!(end, Some(FrameError::Closed)));
            let decoded: Vec<Vec<u8>> = frames.iter().map(|f| decode::<&serde_bytes::Bytes>(f).unwrap().to_vec()).collect();
            prop_assert_eq!(decoded, msgs);
        }
    }
}
