//! The frame codec of `/cocoon/infer/1`: a 2-byte big-endian length, then one Noise
//! message of 1..=65535 bytes. [`FrameDecoder`] takes the stream's bytes in any split and
//! hands back whole frames; [`encode_frame`] writes one.

use super::{MAX_NOISE_MESSAGE, SessionError};

/// Bytes of the length prefix.
pub const FRAME_HEADER: usize = 2;

/// A frame that cannot be written or read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame length 0: a frame carries 1..={max} bytes")]
    Empty { max: usize },
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversize { len: usize, max: usize },
}

/// Appends one frame holding `message` to `out`.
pub fn encode_frame_into(message: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    check_len(message.len(), MAX_NOISE_MESSAGE)?;
    out.extend_from_slice(&(message.len() as u16).to_be_bytes());
    out.extend_from_slice(message);
    Ok(())
}

/// One frame holding `message`.
pub fn encode_frame(message: &[u8]) -> Result<Vec<u8>, SessionError> {
    let mut out = Vec::with_capacity(FRAME_HEADER + message.len());
    encode_frame_into(message, &mut out)?;
    Ok(out)
}

fn check_len(len: usize, max: usize) -> Result<(), FrameError> {
    if len == 0 {
        return Err(FrameError::Empty { max });
    }
    if len > max {
        return Err(FrameError::Oversize { len, max });
    }
    Ok(())
}

/// Splits a byte stream into frames. Bytes may arrive in any split; a frame is handed
/// out once all its bytes are in. A bad length is an error, and the stream cannot be
/// resynchronised after it: drop the decoder.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    read: usize,
    max_frame: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    /// A decoder for frames of up to [`MAX_NOISE_MESSAGE`] bytes.
    pub fn new() -> Self {
        FrameDecoder::with_max_frame(MAX_NOISE_MESSAGE)
    }

    /// A decoder that also refuses frames longer than `max_frame` (at most
    /// [`MAX_NOISE_MESSAGE`]).
    pub fn with_max_frame(max_frame: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            read: 0,
            max_frame: max_frame.min(MAX_NOISE_MESSAGE),
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.read > 0 && self.read == self.buf.len() {
            self.buf.clear();
            self.read = 0;
        } else if self.read > 64 * 1024 && self.read * 2 > self.buf.len() {
            self.buf.drain(..self.read);
            self.read = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.read
    }

    /// The next whole frame's message, `None` until all of its bytes are in.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, SessionError> {
        Ok(self.next_frame_slice()?.map(<[u8]>::to_vec))
    }

    /// Like [`FrameDecoder::next_frame`], borrowing the message from the decoder.
    pub fn next_frame_slice(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let unread = &self.buf[self.read..];
        if unread.len() < FRAME_HEADER {
            return Ok(None);
        }
        let len = u16::from_be_bytes([unread[0], unread[1]]) as usize;
        check_len(len, self.max_frame)?;
        if unread.len() < FRAME_HEADER + len {
            return Ok(None);
        }
        let start = self.read + FRAME_HEADER;
        self.read = start + len;
        Ok(Some(&self.buf[start..start + len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frame_layout_is_big_endian_length_then_message() {
        let f = encode_frame(&[9; 300]).unwrap();
        assert_eq!(&f[..2], &[0x01, 0x2c]);
        assert_eq!(f.len(), 302);
        assert!(encode_frame(&vec![1; MAX_NOISE_MESSAGE]).is_ok());
    }

    #[test]
    fn encode_refuses_empty_and_oversize() {
        let err = encode_frame(&[]).unwrap_err().to_string();
        assert!(err.contains("frame length 0"), "{err}");
        let err = encode_frame(&vec![0; MAX_NOISE_MESSAGE + 1])
            .unwrap_err()
            .to_string();
        assert!(err.contains("65536 bytes exceeds the limit of 65535"), "{err}");
    }

    #[test]
    fn truncated_frames_wait_for_more_bytes() {
        let f = encode_frame(b"hello").unwrap();
        let mut d = FrameDecoder::new();
        d.push(&f[..1]);
        assert_eq!(d.next_frame().unwrap(), None);
        d.push(&f[1..4]);
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.buffered(), 4);
        d.push(&f[4..]);
        assert_eq!(d.next_frame().unwrap(), Some(b"hello".to_vec()));
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn decoder_rejects_zero_and_oversize_lengths() {
        let mut d = FrameDecoder::new();
        d.push(&[0, 0, 1]);
        let err = d.next_frame().unwrap_err().to_string();
        assert!(err.contains("frame length 0"), "{err}");

        let mut d = FrameDecoder::with_max_frame(1000);
        d.push(&1001u16.to_be_bytes());
        let err = d.next_frame().unwrap_err().to_string();
        assert!(err.contains("1001 bytes exceeds the limit of 1000"), "{err}");
    }

    proptest! {
        #[test]
        fn frames_round_trip_under_any_split(
            messages in proptest::collection::vec(
                proptest::collection::vec(any::<u8>(), 1..2000), 1..12),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..40),
        ) {
            let mut stream = Vec::new();
            for m in &messages {
                encode_frame_into(m, &mut stream).unwrap();
            }
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            points.push(0);
            points.push(stream.len());
            points.sort_unstable();
            let mut d = FrameDecoder::new();
            let mut got = Vec::new();
            for w in points.windows(2) {
                d.push(&stream[w[0]..w[1]]);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            prop_assert_eq!(got, messages);
            prop_assert_eq!(d.buffered(), 0);
        }
    }
}
