//! Activation payloads on the wire: the dtype (f32 or f16), the little-endian row-major
//! byte layout of an `n_tokens × d_model` tensor of hidden states, the checks a decoder
//! applies to outside bytes, and the split of a payload into chunks that each fit one
//! Noise message, with the [`Reassembler`] that puts them back together.
//!
//! Non-finite values (NaN, ±Inf) are refused in both directions. A hidden state that
//! holds one never yields a correct token, so a faulty or hostile peer that sends one
//! must be caught at the boundary (the client can re-route) instead of silently poisoning
//! the output; and an f32 value too large for f16 is an error naming the value, never a
//! silent infinity.

use half::f16;
use half::slice::HalfFloatSliceExt;

/// How activation values are laid out on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum WireDtype {
    /// IEEE 754 binary32, 4 bytes a value, exact.
    #[default]
    F32,
    /// IEEE 754 binary16, 2 bytes a value, rounded to nearest even.
    F16,
}

impl WireDtype {
    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            WireDtype::F32 => 4,
            WireDtype::F16 => 2,
        }
    }
}

/// Bounds a decoder applies to a tensor received from a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorLimits {
    /// Most tokens (rows) in one tensor.
    pub max_tokens: u32,
    /// Most bytes in one encoded tensor.
    pub max_bytes: usize,
}

/// A tensor that cannot be encoded, or bytes that are not a valid tensor.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TensorError {
    #[error("tensor has no tokens")]
    Empty,
    #[error("d_model must be at least 1")]
    ZeroWidth,
    #[error("tensor shape mismatch: expected {expected}, got {got}")]
    Shape { expected: String, got: String },
    #[error("tensor of {n_tokens} tokens exceeds the limit of {limit} tokens")]
    TooManyTokens { n_tokens: u32, limit: u32 },
    #[error("tensor of {bytes} bytes exceeds the limit of {limit} bytes")]
    TooLarge { bytes: usize, limit: usize },
    #[error("value {value} at index {index} is not finite")]
    NonFinite { index: usize, value: f32 },
    #[error("value {value} at index {index} does not fit in f16 (max ±65504); use f32")]
    F16Overflow { index: usize, value: f32 },
}

/// The byte length of an `n_tokens × d_model` tensor in `dtype`, or `None` on overflow.
pub fn tensor_bytes(n_tokens: u32, d_model: u32, dtype: WireDtype) -> Option<usize> {
    (n_tokens as usize)
        .checked_mul(d_model as usize)?
        .checked_mul(dtype.size())
}

/// Checks that `len` values form whole rows of `d_model` values and returns the number of
/// tokens (rows).
pub fn count_tokens(len: usize, d_model: u32) -> Result<u32, TensorError> {
    if d_model == 0 {
        return Err(TensorError::ZeroWidth);
    }
    let d = d_model as usize;
    if len == 0 {
        return Err(TensorError::Empty);
    }
    if !len.is_multiple_of(d) {
        return Err(TensorError::Shape {
            expected: format!("a multiple of d_model = {d_model} values"),
            got: format!("{len} values"),
        });
    }
    u32::try_from(len / d).map_err(|_| TensorError::TooManyTokens {
        n_tokens: u32::MAX,
        limit: u32::MAX,
    })
}

/// Values checked and converted per block: long enough for the compiler to vectorise the
/// loops, short enough to stay in registers and L1.
const BLOCK: usize = 256;

/// The smallest magnitude that rounds to infinity in f16 (halfway between f16's largest
/// finite value, 65504, and 65536; ties go to the even neighbour, which is infinity).
const F16_OVERFLOW: f32 = 65520.0;

/// Whether `v` is a number below `limit` in magnitude (NaN is not).
fn fits(v: f32, limit: f32) -> bool {
    v.abs() < limit
}

/// Checks that every value can travel in `dtype`: finite, and for f16 within its range.
/// The error names the first value that cannot.
pub fn check_values(values: &[f32], dtype: WireDtype) -> Result<(), TensorError> {
    // A branch-free test over each block (vectorised), then a scan for the culprit only
    // in a block that holds one.
    let limit = match dtype {
        WireDtype::F32 => f32::INFINITY,
        WireDtype::F16 => F16_OVERFLOW,
    };
    for (b, block) in values.chunks(BLOCK).enumerate() {
        let bad = block.iter().fold(false, |acc, &v| acc | !fits(v, limit));
        if !bad {
            continue;
        }
        let (i, &value) = block
            .iter()
            .enumerate()
            .find(|&(_, &v)| !fits(v, limit))
            .expect("the block holds a value out of range");
        let index = b * BLOCK + i;
        return Err(if value.is_finite() {
            TensorError::F16Overflow { index, value }
        } else {
            TensorError::NonFinite { index, value }
        });
    }
    Ok(())
}

/// Bytes `values` take in `dtype`.
pub fn encoded_len(values: usize, dtype: WireDtype) -> usize {
    values * dtype.size()
}

/// Writes `values` as little-endian `dtype` into `out`, which must be exactly
/// [`encoded_len`] bytes. The values must have passed [`check_values`]: an f32 too large
/// for f16 would become infinity here.
pub fn write_values(values: &[f32], dtype: WireDtype, out: &mut [u8]) {
    assert_eq!(
        out.len(),
        encoded_len(values.len(), dtype),
        "output sized for the values"
    );
    match dtype {
        WireDtype::F32 => {
            for (dst, v) in out.chunks_exact_mut(4).zip(values) {
                dst.copy_from_slice(&v.to_le_bytes());
            }
        }
        WireDtype::F16 => {
            let mut halves = [f16::ZERO; BLOCK];
            for (dst, block) in out.chunks_mut(2 * BLOCK).zip(values.chunks(BLOCK)) {
                let halves = &mut halves[..block.len()];
                halves.convert_from_f32_slice(block);
                for (d, h) in dst.chunks_exact_mut(2).zip(halves.iter()) {
                    d.copy_from_slice(&h.to_le_bytes());
                }
            }
        }
    }
}

/// Encodes values as little-endian bytes in `dtype`. Refuses non-finite values, and
/// values outside f16's range when `dtype` is f16.
pub fn encode_values(values: &[f32], dtype: WireDtype) -> Result<Vec<u8>, TensorError> {
    check_values(values, dtype)?;
    let mut out = vec![0u8; encoded_len(values.len(), dtype)];
    write_values(values, dtype, &mut out);
    Ok(out)
}

/// Decodes the bytes of an `n_tokens × d_model` tensor in `dtype`, checking the token and
/// byte limits, that the length is exactly `n_tokens × d_model × size`, and that every
/// value is finite.
pub fn decode_values(
    bytes: &[u8],
    n_tokens: u32,
    d_model: u32,
    dtype: WireDtype,
    limits: &TensorLimits,
) -> Result<Vec<f32>, TensorError> {
    check_header(n_tokens, d_model, dtype, limits)?;
    let expected = tensor_bytes(n_tokens, d_model, dtype).ok_or(TensorError::TooLarge {
        bytes: usize::MAX,
        limit: limits.max_bytes,
    })?;
    if bytes.len() != expected {
        return Err(TensorError::Shape {
            expected: format!("{n_tokens} × {d_model} {dtype:?} = {expected} bytes"),
            got: format!("{} bytes", bytes.len()),
        });
    }
    let mut values = vec![0f32; bytes.len() / dtype.size()];
    match dtype {
        WireDtype::F32 => {
            for (v, c) in values.iter_mut().zip(bytes.chunks_exact(4)) {
                *v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        WireDtype::F16 => {
            let mut halves = [f16::ZERO; BLOCK];
            for (dst, src) in values.chunks_mut(BLOCK).zip(bytes.chunks(2 * BLOCK)) {
                let halves = &mut halves[..dst.len()];
                for (h, c) in halves.iter_mut().zip(src.chunks_exact(2)) {
                    *h = f16::from_le_bytes([c[0], c[1]]);
                }
                halves.convert_to_f32_slice(dst);
            }
        }
    }
    // Every f16 is within f32's range, so finiteness is the one check left for both.
    check_values(&values, WireDtype::F32)?;
    Ok(values)
}

/// Checks a tensor's announced shape against the limits before any of its bytes arrive.
pub fn check_header(
    n_tokens: u32,
    d_model: u32,
    dtype: WireDtype,
    limits: &TensorLimits,
) -> Result<(), TensorError> {
    if n_tokens == 0 {
        return Err(TensorError::Empty);
    }
    if d_model == 0 {
        return Err(TensorError::ZeroWidth);
    }
    if n_tokens > limits.max_tokens {
        return Err(TensorError::TooManyTokens {
            n_tokens,
            limit: limits.max_tokens,
        });
    }
    match tensor_bytes(n_tokens, d_model, dtype) {
        Some(b) if b <= limits.max_bytes => Ok(()),
        other => Err(TensorError::TooLarge {
            bytes: other.unwrap_or(usize::MAX),
            limit: limits.max_bytes,
        }),
    }
}

/// Splits `payload` into chunks of at most `max_chunk` bytes (at least one chunk, even
/// for an empty payload). `max_chunk` must be at least 1.
pub fn split_chunks(payload: &[u8], max_chunk: usize) -> Vec<&[u8]> {
    let max_chunk = max_chunk.max(1);
    if payload.is_empty() {
        return vec![payload];
    }
    payload.chunks(max_chunk).collect()
}

/// What every chunk of one tensor repeats: which tensor it is and how many chunks it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Client-chosen id of the request.
    pub request_id: u64,
    /// Position of the tensor's first token.
    pub start_pos: u32,
    /// Tokens in the whole tensor.
    pub n_tokens: u32,
    /// Layout of the tensor's bytes.
    pub dtype: WireDtype,
    /// Number of chunks of the whole tensor.
    pub chunk_count: u32,
}

/// A chunk that does not continue the tensor being reassembled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReassemblyError {
    #[error("chunk_count is 0")]
    NoChunks,
    #[error("chunk {index} is outside a tensor of {count} chunks")]
    IndexOutOfRange { index: u32, count: u32 },
    #[error("chunk {got} is a duplicate: chunk {expected} was expected next")]
    Duplicate { expected: u32, got: u32 },
    #[error("chunk {got} leaves a gap: chunk {expected} was expected next")]
    Gap { expected: u32, got: u32 },
    #[error("chunk header {got:?} does not match the tensor in progress {expected:?}")]
    HeaderMismatch {
        expected: Box<ChunkHeader>,
        got: Box<ChunkHeader>,
    },
    #[error("chunk {index} is empty")]
    EmptyChunk { index: u32 },
    #[error("reassembled tensor would reach {bytes} bytes, over the limit of {limit}")]
    Oversize { bytes: usize, limit: usize },
}

/// Puts the chunks of one tensor at a time back together. Chunks must come in order
/// 0, 1, …, n-1 with equal headers; a tensor starts only after the previous one is
/// complete.
#[derive(Debug)]
pub struct Reassembler {
    max_bytes: usize,
    /// The tensor in progress and the index of the chunk it expects next.
    current: Option<(ChunkHeader, u32)>,
    /// Bytes of the tensor in progress (or of the last one handed out), kept between
    /// tensors so that a session does not allocate one buffer per tensor.
    buf: Vec<u8>,
}

/// Capacity the reassembly buffer keeps between tensors; a larger one (after a long
/// prompt) is given back when the next tensor starts.
const KEEP_CAPACITY: usize = 1 << 20;

impl Reassembler {
    /// A reassembler that refuses tensors larger than `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Reassembler {
            max_bytes,
            current: None,
            buf: Vec::new(),
        }
    }

    /// Whether a tensor is partly received.
    pub fn in_progress(&self) -> bool {
        self.current.is_some()
    }

    /// Accepts chunk `index` of the tensor described by `header`. Returns the whole
    /// tensor's bytes once its last chunk is in: `data` itself for a one-chunk tensor,
    /// else the reassembler's buffer, valid until the next call. On error the partial
    /// tensor is dropped.
    pub fn push<'a>(
        &'a mut self,
        header: ChunkHeader,
        index: u32,
        data: &'a [u8],
    ) -> Result<Option<&'a [u8]>, ReassemblyError> {
        match self.push_inner(header, index, data) {
            Err(e) => {
                self.current = None;
                Err(e)
            }
            Ok(Progress::Partial) => Ok(None),
            Ok(Progress::Single) => Ok(Some(data)),
            Ok(Progress::Joined) => Ok(Some(&self.buf)),
        }
    }

    fn push_inner(
        &mut self,
        header: ChunkHeader,
        index: u32,
        data: &[u8],
    ) -> Result<Progress, ReassemblyError> {
        if header.chunk_count == 0 {
            return Err(ReassemblyError::NoChunks);
        }
        if index >= header.chunk_count {
            return Err(ReassemblyError::IndexOutOfRange {
                index,
                count: header.chunk_count,
            });
        }
        if data.is_empty() {
            return Err(ReassemblyError::EmptyChunk { index });
        }
        let expected_index = match &self.current {
            Some((h, next)) => {
                if *h != header {
                    return Err(ReassemblyError::HeaderMismatch {
                        expected: Box::new(*h),
                        got: Box::new(header),
                    });
                }
                *next
            }
            None => 0,
        };
        if index < expected_index {
            return Err(ReassemblyError::Duplicate {
                expected: expected_index,
                got: index,
            });
        }
        if index > expected_index {
            return Err(ReassemblyError::Gap {
                expected: expected_index,
                got: index,
            });
        }
        let so_far = if self.current.is_some() {
            self.buf.len()
        } else {
            0
        };
        let total = so_far.saturating_add(data.len());
        if total > self.max_bytes {
            return Err(ReassemblyError::Oversize {
                bytes: total,
                limit: self.max_bytes,
            });
        }
        if header.chunk_count == 1 {
            return Ok(Progress::Single);
        }
        if self.current.is_none() {
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf = Vec::new();
            }
            self.buf.clear();
            // Every chunk but the last is as long as the first in what this crate sends:
            // reserve for that much (within the limit) so the buffer grows once.
            let estimate = data
                .len()
                .saturating_mul(header.chunk_count as usize)
                .min(self.max_bytes);
            self.buf.reserve(estimate);
            self.current = Some((header, 0));
        }
        self.buf.extend_from_slice(data);
        let (_, next) = self.current.as_mut().expect("a tensor is in progress");
        *next += 1;
        if *next == header.chunk_count {
            self.current = None;
            return Ok(Progress::Joined);
        }
        Ok(Progress::Partial)
    }
}

/// What one accepted chunk completed.
enum Progress {
    /// More chunks are expected.
    Partial,
    /// A one-chunk tensor: the chunk is the whole of it.
    Single,
    /// The last chunk: the buffer holds the whole tensor.
    Joined,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(count: u32) -> ChunkHeader {
        ChunkHeader {
            request_id: 7,
            start_pos: 3,
            n_tokens: 2,
            dtype: WireDtype::F32,
            chunk_count: count,
        }
    }

    const LIMITS: TensorLimits = TensorLimits {
        max_tokens: 16,
        max_bytes: 1 << 20,
    };

    #[test]
    fn f32_round_trips_exactly() {
        let v: Vec<f32> = (0..24).map(|i| i as f32 * 0.37 - 3.1).collect();
        let b = encode_values(&v, WireDtype::F32).unwrap();
        assert_eq!(b.len(), 96);
        assert_eq!(&b[..4], &v[0].to_le_bytes());
        assert_eq!(decode_values(&b, 4, 6, WireDtype::F32, &LIMITS).unwrap(), v);
    }

    #[test]
    fn f16_round_trips_within_precision() {
        let v: Vec<f32> = (0..24).map(|i| i as f32 * 0.37 - 3.1).collect();
        let b = encode_values(&v, WireDtype::F16).unwrap();
        assert_eq!(b.len(), 48);
        let back = decode_values(&b, 4, 6, WireDtype::F16, &LIMITS).unwrap();
        for (a, b) in v.iter().zip(&back) {
            assert!((a - b).abs() <= a.abs() * 1e-3 + 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn decode_rejects_bad_shapes_and_limits() {
        let b = encode_values(&[1.0; 12], WireDtype::F32).unwrap();
        let err = decode_values(&b, 2, 5, WireDtype::F32, &LIMITS).unwrap_err();
        assert!(
            err.to_string().contains("expected 2 × 5 F32 = 40 bytes"),
            "{err}"
        );
        assert!(err.to_string().contains("got 48 bytes"), "{err}");
        assert_eq!(
            decode_values(&b, 17, 1, WireDtype::F32, &LIMITS),
            Err(TensorError::TooManyTokens {
                n_tokens: 17,
                limit: 16
            })
        );
        let small = TensorLimits {
            max_tokens: 16,
            max_bytes: 40,
        };
        assert!(matches!(
            decode_values(&b, 2, 6, WireDtype::F32, &small),
            Err(TensorError::TooLarge { bytes: 48, .. })
        ));
        assert_eq!(
            decode_values(&[], 0, 6, WireDtype::F32, &LIMITS),
            Err(TensorError::Empty)
        );
        assert!(matches!(
            decode_values(&b, u32::MAX, u32::MAX, WireDtype::F32, &LIMITS),
            Err(TensorError::TooManyTokens { .. })
        ));
    }

    #[test]
    fn non_finite_values_are_refused_both_ways() {
        assert_eq!(
            encode_values(&[1.0, f32::NAN], WireDtype::F32)
                .unwrap_err()
                .to_string(),
            "value NaN at index 1 is not finite"
        );
        assert!(matches!(
            encode_values(&[70000.0], WireDtype::F16),
            Err(TensorError::F16Overflow { index: 0, .. })
        ));
        let mut b = encode_values(&[1.0, 2.0], WireDtype::F32).unwrap();
        b[4..8].copy_from_slice(&f32::INFINITY.to_le_bytes());
        assert!(matches!(
            decode_values(&b, 1, 2, WireDtype::F32, &LIMITS),
            Err(TensorError::NonFinite { index: 1, .. })
        ));
        let h = f16::NAN.to_le_bytes();
        assert!(matches!(
            decode_values(&h, 1, 1, WireDtype::F16, &LIMITS),
            Err(TensorError::NonFinite { index: 0, .. })
        ));
    }

    #[test]
    fn f16_range_check_agrees_with_the_conversion() {
        // Around the overflow threshold (65520), and a spread of ordinary values.
        let mut probes = vec![
            65504.0, 65519.996, 65520.0, 65535.0, 65536.0, 1e30, 6e-8, 0.0, -0.0,
        ];
        let mut x = 1.0f32;
        while x < 1e6 {
            probes.push(x);
            probes.push(f32::from_bits(x.to_bits() + 1));
            x *= 1.37;
        }
        for &v in &probes {
            for v in [v, -v] {
                let fits = !f16::from_f32(v).is_infinite();
                assert_eq!(
                    check_values(&[v], WireDtype::F16).is_ok(),
                    fits,
                    "{v} (f16 {})",
                    f16::from_f32(v)
                );
            }
        }
    }

    #[test]
    fn checks_name_the_first_bad_value_in_any_block() {
        let mut v = vec![0.5f32; 3 * BLOCK + 17];
        for (at, bad) in [
            (0, f32::INFINITY),
            (BLOCK, f32::NAN),
            (3 * BLOCK + 15, -1e9),
        ] {
            let mut w = v.clone();
            w[at] = bad;
            let last = w.len() - 1;
            w[last] = f32::NEG_INFINITY;
            let err = check_values(&w, WireDtype::F16).unwrap_err();
            match err {
                TensorError::NonFinite { index, .. } | TensorError::F16Overflow { index, .. } => {
                    assert_eq!(index, at, "{err}")
                }
                other => panic!("{other}"),
            }
            assert_eq!(
                matches!(err, TensorError::F16Overflow { .. }),
                bad.is_finite()
            );
        }
        v[2 * BLOCK + 3] = 1e9;
        assert_eq!(check_values(&v, WireDtype::F32), Ok(()));
    }

    proptest::proptest! {
        #[test]
        fn bulk_codecs_match_value_by_value(
            v in proptest::collection::vec(-60000f32..60000f32, 1..700),
        ) {
            let f32_bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            let f16_bytes: Vec<u8> = v.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect();
            proptest::prop_assert_eq!(&encode_values(&v, WireDtype::F32).unwrap(), &f32_bytes);
            proptest::prop_assert_eq!(&encode_values(&v, WireDtype::F16).unwrap(), &f16_bytes);
            let limits = TensorLimits { max_tokens: 1000, max_bytes: 1 << 20 };
            let n = v.len() as u32;
            proptest::prop_assert_eq!(
                &decode_values(&f32_bytes, n, 1, WireDtype::F32, &limits).unwrap(),
                &v
            );
            let halves: Vec<f32> = v.iter().map(|x| f16::from_f32(*x).to_f32()).collect();
            proptest::prop_assert_eq!(
                &decode_values(&f16_bytes, 1, n, WireDtype::F16, &limits).unwrap(),
                &halves
            );
        }
    }

    #[test]
    fn reassembler_reuses_its_buffer_without_leftovers() {
        let mut r = Reassembler::new(KEEP_CAPACITY * 4);
        let big = vec![7u8; KEEP_CAPACITY + 10];
        r.push(header(2), 0, &big).unwrap();
        assert_eq!(
            r.push(header(2), 1, b"x").unwrap().map(<[u8]>::len),
            Some(big.len() + 1)
        );
        // The next tensor holds only its own bytes, whatever the buffer held before.
        for _ in 0..2 {
            assert_eq!(r.push(header(3), 0, b"ab").unwrap(), None);
            assert_eq!(r.push(header(3), 1, b"c").unwrap(), None);
            assert_eq!(r.push(header(3), 2, b"d").unwrap(), Some(&b"abcd"[..]));
        }
        // An error mid-tensor leaves nothing behind either.
        r.push(header(3), 0, b"zz").unwrap();
        assert!(r.push(header(3), 2, b"zz").is_err());
        r.push(header(2), 0, b"e").unwrap();
        assert_eq!(r.push(header(2), 1, b"f").unwrap(), Some(&b"ef"[..]));
    }

    #[test]
    fn count_tokens_checks_whole_rows() {
        assert_eq!(count_tokens(12, 4), Ok(3));
        assert_eq!(count_tokens(0, 4), Err(TensorError::Empty));
        assert_eq!(count_tokens(4, 0), Err(TensorError::ZeroWidth));
        let err = count_tokens(10, 4).unwrap_err().to_string();
        assert!(err.contains("expected a multiple of d_model = 4"), "{err}");
        assert!(err.contains("got 10 values"), "{err}");
    }

    #[test]
    fn split_covers_the_payload() {
        let p: Vec<u8> = (0..=250).collect();
        let chunks = split_chunks(&p, 100);
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [100, 100, 51]
        );
        assert_eq!(chunks.concat(), p);
        assert_eq!(split_chunks(&p, 251).len(), 1);
        assert_eq!(split_chunks(&[], 10), vec![&[][..]]);
    }

    #[test]
    fn reassembler_joins_in_order() {
        let mut r = Reassembler::new(100);
        assert_eq!(r.push(header(3), 0, b"ab").unwrap(), None);
        assert!(r.in_progress());
        assert_eq!(r.push(header(3), 1, b"cd").unwrap(), None);
        assert_eq!(r.push(header(3), 2, b"e").unwrap(), Some(&b"abcde"[..]));
        assert!(!r.in_progress());
        assert_eq!(r.push(header(1), 0, b"xyz").unwrap(), Some(&b"xyz"[..]));
    }

    #[test]
    fn reassembler_rejects_gaps_duplicates_and_mismatches() {
        let mut r = Reassembler::new(100);
        assert_eq!(
            r.push(header(3), 1, b"a"),
            Err(ReassemblyError::Gap {
                expected: 0,
                got: 1
            })
        );
        r.push(header(3), 0, b"a").unwrap();
        assert_eq!(
            r.push(header(3), 0, b"a"),
            Err(ReassemblyError::Duplicate {
                expected: 1,
                got: 0
            })
        );
        // The error dropped the partial tensor: chunk 0 starts afresh.
        assert!(!r.in_progress());
        r.push(header(3), 0, b"a").unwrap();
        let mut other = header(3);
        other.request_id = 8;
        let err = r.push(other, 1, b"b").unwrap_err();
        assert!(matches!(err, ReassemblyError::HeaderMismatch { .. }));
        assert!(err.to_string().contains("request_id: 8"), "{err}");
        r.push(header(3), 0, b"a").unwrap();
        assert_eq!(
            r.push(header(3), 2, b"c"),
            Err(ReassemblyError::Gap {
                expected: 1,
                got: 2
            })
        );
    }

    #[test]
    fn reassembler_rejects_bad_counts_empties_and_oversize() {
        let mut r = Reassembler::new(4);
        assert_eq!(r.push(header(0), 0, b"a"), Err(ReassemblyError::NoChunks));
        assert_eq!(
            r.push(header(2), 2, b"a"),
            Err(ReassemblyError::IndexOutOfRange { index: 2, count: 2 })
        );
        assert_eq!(
            r.push(header(2), 0, b""),
            Err(ReassemblyError::EmptyChunk { index: 0 })
        );
        r.push(header(2), 0, b"abc").unwrap();
        assert_eq!(
            r.push(header(2), 1, b"de"),
            Err(ReassemblyError::Oversize { bytes: 5, limit: 4 })
        );
        assert_eq!(
            r.push(header(1), 0, b"abcde"),
            Err(ReassemblyError::Oversize { bytes: 5, limit: 4 })
        );
    }
}
