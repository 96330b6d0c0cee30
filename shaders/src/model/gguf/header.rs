//! The header parser: a bounds-checked little-endian cursor over the file's bytes, the
//! metadata and tensor-info sections, and the checks that every tensor lies inside the
//! file, aligned and without overlap ([`GgufHeader::parse`]).

use std::collections::HashMap;

use super::{
    DEFAULT_ALIGNMENT, GGUF_MAGIC, GgufMetadata, MAX_DIMS, MetaArray, MetaType, MetaValue,
};
use crate::model::ModelError;
use crate::model::tensor::GgmlType;

/// Where one tensor lies in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub ty: GgmlType,
    /// ggml order: `dims[0]` is the contiguous row length.
    pub dims: Vec<usize>,
    /// Absolute byte offset of the tensor's data in the file.
    pub offset: usize,
    /// Bytes of data.
    pub size: usize,
}

/// The parsed header of a GGUF file: everything but the tensor bytes, all checked against
/// the length of the file it came from.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: GgufMetadata,
    pub tensors: Vec<TensorInfo>,
    pub alignment: usize,
    /// Absolute offset of the data section.
    pub data_offset: usize,
    /// Length of the file the header was checked against.
    pub file_len: usize,
    by_name: HashMap<String, usize>,
}

/// A little-endian cursor over the file's bytes that never reads past the end.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8], ModelError> {
        if n > self.remaining() {
            return Err(ModelError::Malformed(format!(
                "{}: needs {n} bytes at 0x{:x}, only {} left in the file (0x{:x} bytes)",
                what(),
                self.pos,
                self.remaining(),
                self.bytes.len()
            )));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], ModelError> {
        let s = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, ModelError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, ModelError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count or length, checked to fit `usize`.
    fn len64(&mut self, what: &dyn Fn() -> String) -> Result<usize, ModelError> {
        let n = self.u64(what)?;
        usize::try_from(n)
            .map_err(|_| ModelError::Malformed(format!("{}: count {n} does not fit usize", what())))
    }

    /// `n` elements of at least `min_size` bytes each must fit in what remains.
    fn check_count(
        &self,
        n: usize,
        min_size: usize,
        what: &dyn Fn() -> String,
    ) -> Result<(), ModelError> {
        match n.checked_mul(min_size) {
            Some(bytes) if bytes <= self.remaining() => Ok(()),
            _ => Err(ModelError::Malformed(format!(
                "{}: count {n} cannot fit in the {} bytes left after 0x{:x}",
                what(),
                self.remaining(),
                self.pos
            ))),
        }
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, ModelError> {
        let len = self.len64(what)?;
        let start = self.pos;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            ModelError::Malformed(format!(
                "{}: string at 0x{start:x} is not valid UTF-8",
                what()
            ))
        })
    }
}

/// Deepest nesting of metadata arrays accepted (real files use one level).
const MAX_ARRAY_DEPTH: usize = 8;

fn read_value(
    c: &mut Cursor<'_>,
    ty: MetaType,
    what: &dyn Fn() -> String,
    depth: usize,
) -> Result<MetaValue, ModelError> {
    Ok(match ty {
        MetaType::U8 => MetaValue::U8(c.array::<1>(what)?[0]),
        MetaType::I8 => MetaValue::I8(c.array::<1>(what)?[0] as i8),
        MetaType::U16 => MetaValue::U16(u16::from_le_bytes(c.array(what)?)),
        MetaType::I16 => MetaValue::I16(i16::from_le_bytes(c.array(what)?)),
        MetaType::U32 => MetaValue::U32(c.u32(what)?),
        MetaType::I32 => MetaValue::I32(i32::from_le_bytes(c.array(what)?)),
        MetaType::F32 => MetaValue::F32(f32::from_le_bytes(c.array(what)?)),
        MetaType::Bool => MetaValue::Bool(read_bool(c, what)?),
        MetaType::String => MetaValue::String(c.string(what)?),
        MetaType::U64 => MetaValue::U64(c.u64(what)?),
        MetaType::I64 => MetaValue::I64(i64::from_le_bytes(c.array(what)?)),
        MetaType::F64 => MetaValue::F64(f64::from_le_bytes(c.array(what)?)),
        MetaType::Array => MetaValue::Array(read_array(c, what, depth + 1)?),
    })
}

fn read_bool(c: &mut Cursor<'_>, what: &dyn Fn() -> String) -> Result<bool, ModelError> {
    match c.array::<1>(what)?[0] {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(ModelError::Malformed(format!(
            "{}: bool byte {b} is neither 0 nor 1",
            what()
        ))),
    }
}

fn read_array(
    c: &mut Cursor<'_>,
    what: &dyn Fn() -> String,
    depth: usize,
) -> Result<MetaArray, ModelError> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(ModelError::Malformed(format!(
            "{}: arrays nested deeper than {MAX_ARRAY_DEPTH}",
            what()
        )));
    }
    let ty_id = c.u32(what)?;
    let ty = MetaType::from_id(ty_id).ok_or_else(|| {
        ModelError::Malformed(format!("{}: unknown array element type {ty_id}", what()))
    })?;
    let n = c.len64(what)?;
    c.check_count(n, ty.min_size(), what)?;
    macro_rules! fixed {
        ($variant:ident, $t:ty, $size:expr) => {{
            let bytes = c.take(n * $size, what)?;
            MetaArray::$variant(
                bytes
                    .chunks_exact($size)
                    .map(|b| {
                        let mut a = [0u8; $size];
                        a.copy_from_slice(b);
                        <$t>::from_le_bytes(a)
                    })
                    .collect(),
            )
        }};
    }
    Ok(match ty {
        MetaType::U8 => MetaArray::U8(c.take(n, what)?.to_vec()),
        MetaType::I8 => MetaArray::I8(c.take(n, what)?.iter().map(|&b| b as i8).collect()),
        MetaType::U16 => fixed!(U16, u16, 2),
        MetaType::I16 => fixed!(I16, i16, 2),
        MetaType::U32 => fixed!(U32, u32, 4),
        MetaType::I32 => fixed!(I32, i32, 4),
        MetaType::F32 => fixed!(F32, f32, 4),
        MetaType::U64 => fixed!(U64, u64, 8),
        MetaType::I64 => fixed!(I64, i64, 8),
        MetaType::F64 => fixed!(F64, f64, 8),
        MetaType::Bool => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(read_bool(c, what)?);
            }
            MetaArray::Bool(v)
        }
        MetaType::String => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(c.string(&|| format!("{} element {i}", what()))?);
            }
            MetaArray::String(v)
        }
        MetaType::Array => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(read_array(c, &|| format!("{} element {i}", what()), depth)?);
            }
            MetaArray::Array(v)
        }
    })
}

impl GgufHeader {
    /// Parses and checks the header of a whole GGUF file held in `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, ModelError> {
        let mut c = Cursor { bytes, pos: 0 };
        let magic = c.array::<4>(&|| "magic".to_string())?;
        if magic != GGUF_MAGIC {
            return Err(ModelError::Malformed(format!(
                "bad magic {magic:02x?}: not a GGUF file (expected \"GGUF\")"
            )));
        }
        let version = c.u32(&|| "version".to_string())?;
        if version != 2 && version != 3 {
            return Err(ModelError::Malformed(format!(
                "unsupported GGUF version {version} (supported: 2, 3)"
            )));
        }
        let n_tensors = c.len64(&|| "tensor count".to_string())?;
        let n_kv = c.len64(&|| "metadata count".to_string())?;
        // A key/value takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor info
        // at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset).
        c.check_count(n_kv, 13, &|| "metadata count".to_string())?;
        c.check_count(n_tensors, 24, &|| "tensor count".to_string())?;

        let mut metadata = GgufMetadata::default();
        for i in 0..n_kv {
            let key = c.string(&|| format!("metadata key {i}"))?;
            let what = || format!("metadata {key:?}");
            let ty_id = c.u32(&what)?;
            let ty = MetaType::from_id(ty_id).ok_or_else(|| {
                ModelError::Malformed(format!("metadata {key:?}: unknown value type {ty_id}"))
            })?;
            let value = read_value(&mut c, ty, &what, 0)?;
            metadata.insert(key, value)?;
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => {
                let a = v.as_u64().unwrap_or(0);
                if a == 0 || !a.is_power_of_two() || a > 1 << 30 {
                    return Err(ModelError::Malformed(format!(
                        "general.alignment {v:?} is not a power of two up to 2^30"
                    )));
                }
                a as usize
            }
        };

        struct RawInfo {
            name: String,
            ty: GgmlType,
            dims: Vec<usize>,
            rel_offset: usize,
            size: usize,
        }
        let mut raw = Vec::with_capacity(n_tensors);
        let mut by_name = HashMap::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let name = c.string(&|| format!("tensor info {i} name"))?;
            let what = || format!("tensor {name}");
            let n_dims = c.u32(&what)? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(ModelError::Malformed(format!(
                    "tensor {name}: {n_dims} dimensions (expected 1..={MAX_DIMS})"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(c.len64(&what)?);
            }
            let ty_id = c.u32(&what)?;
            let ty = GgmlType::from_id(ty_id).map_err(|e| match e {
                ModelError::UnsupportedType(t) => {
                    ModelError::UnsupportedType(format!("{t} of tensor {name}"))
                }
                other => other,
            })?;
            let rel_offset = c.len64(&what)?;
            if rel_offset % alignment != 0 {
                return Err(ModelError::Malformed(format!(
                    "tensor {name}: data offset 0x{rel_offset:x} is not a multiple of the alignment {alignment}"
                )));
            }
            let elems = dims
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| {
                    ModelError::Malformed(format!(
                        "tensor {name}: dims {dims:?} overflow the element count"
                    ))
                })?;
            if dims[0] % ty.block_elems() != 0 {
                return Err(ModelError::Malformed(format!(
                    "tensor {name}: row length {} is not a multiple of the {} block size {}",
                    dims[0],
                    ty.name(),
                    ty.block_elems()
                )));
            }
            let size = ty.bytes_for(elems).ok_or_else(|| {
                ModelError::Malformed(format!(
                    "tensor {name}: dims {dims:?} of {} overflow the byte size",
                    ty.name()
                ))
            })?;
            if by_name.insert(name.clone(), i).is_some() {
                return Err(ModelError::Malformed(format!(
                    "tensor {name} appears twice"
                )));
            }
            raw.push(RawInfo {
                name,
                ty,
                dims,
                rel_offset,
                size,
            });
        }

        let data_offset = align_up(c.pos, alignment)
            .ok_or_else(|| ModelError::Malformed("data section offset overflows".to_string()))?;
        let file_len = bytes.len();
        if data_offset > file_len && !raw.is_empty() {
            return Err(ModelError::Malformed(format!(
                "data section starts at 0x{data_offset:x}, past the end of the file (0x{file_len:x} bytes)"
            )));
        }
        let mut tensors = Vec::with_capacity(raw.len());
        for r in raw {
            let range = data_offset
                .checked_add(r.rel_offset)
                .and_then(|start| start.checked_add(r.size).map(|end| (start, end)));
            let start = match range {
                Some((s, e)) if e <= file_len => s,
                Some((s, e)) => {
                    return Err(ModelError::Malformed(format!(
                        "tensor {}: data 0x{s:x}..0x{e:x} past the end of the file (0x{file_len:x} bytes)",
                        r.name
                    )));
                }
                None => {
                    return Err(ModelError::Malformed(format!(
                        "tensor {}: data offset 0x{:x} + size 0x{:x} overflows",
                        r.name, r.rel_offset, r.size
                    )));
                }
            };
            tensors.push(TensorInfo {
                name: r.name,
                ty: r.ty,
                dims: r.dims,
                offset: start,
                size: r.size,
            });
        }
        check_no_overlap(&tensors)?;
        Ok(Self {
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
            file_len,
            by_name,
        })
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name
            .get(name)
            .and_then(|&i| self.tensors.get(i))
            .filter(|t| t.name == name)
    }
}

fn check_no_overlap(tensors: &[TensorInfo]) -> Result<(), ModelError> {
    let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| t.size > 0).collect();
    order.sort_by_key(|t| t.offset);
    for pair in order.windows(2) {
        // Sorted by offset and each range checked to lie in the file: no overflow here.
        if pair[0].offset + pair[0].size > pair[1].offset {
            return Err(ModelError::Malformed(format!(
                "tensors {} and {} overlap at 0x{:x}",
                pair[0].name, pair[1].name, pair[1].offset
            )));
        }
    }
    Ok(())
}

fn align_up(x: usize, alignment: usize) -> Option<usize> {
    x.checked_add(alignment - 1)
        .map(|y| y / alignment * alignment)
}
