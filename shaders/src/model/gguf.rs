//! GGUF (v2 and v3) reading: a bounds-checked parser over `&[u8]`, memory-mapped files,
//! typed metadata, tensor views, the llama [`ModelConfig`] and the model's manifest hash.
//!
//! Every count, size and offset read from the file is checked against the bytes that
//! remain before it is used, with checked arithmetic: a truncated or corrupt file gives a
//! [`ModelError`] naming what is wrong, never a panic, an out-of-bounds read or an
//! allocation sized by a lying count.

use super::config::ModelConfig;
use super::tensor::{GgmlType, TensorRef};
use super::{ModelError, SharedTensor, WeightSource};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// `GGUF` as a little-endian u32.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// ggml tensors have at most this many dimensions.
pub const MAX_DIMS: usize = 4;

/// Metadata value type ids, as GGUF numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MetaType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl MetaType {
    fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::U8,
            1 => Self::I8,
            2 => Self::U16,
            3 => Self::I16,
            4 => Self::U32,
            5 => Self::I32,
            6 => Self::F32,
            7 => Self::Bool,
            8 => Self::String,
            9 => Self::Array,
            10 => Self::U64,
            11 => Self::I64,
            12 => Self::F64,
            _ => return None,
        })
    }

    /// The fewest bytes one value of this type takes in the file (a string: its length;
    /// an array: its element type and count). Bounds element counts by remaining bytes.
    fn min_size(self) -> usize {
        match self {
            Self::U8 | Self::I8 | Self::Bool => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 | Self::String => 8,
            Self::Array => 12,
        }
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(MetaArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array: homogeneous, stored compactly by element type. Arrays may nest.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    Array(Vec<MetaArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl MetaArray {
    pub fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::I8(v) => v.len(),
            Self::U16(v) => v.len(),
            Self::I16(v) => v.len(),
            Self::U32(v) => v.len(),
            Self::I32(v) => v.len(),
            Self::F32(v) => v.len(),
            Self::Bool(v) => v.len(),
            Self::String(v) => v.len(),
            Self::Array(v) => v.len(),
            Self::U64(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every element as an i64, when the elements are integers that fit.
    pub fn to_i64s(&self) -> Option<Vec<i64>> {
        Some(match self {
            Self::U8(v) => v.iter().map(|&x| x as i64).collect(),
            Self::I8(v) => v.iter().map(|&x| x as i64).collect(),
            Self::U16(v) => v.iter().map(|&x| x as i64).collect(),
            Self::I16(v) => v.iter().map(|&x| x as i64).collect(),
            Self::U32(v) => v.iter().map(|&x| x as i64).collect(),
            Self::I32(v) => v.iter().map(|&x| x as i64).collect(),
            Self::I64(v) => v.clone(),
            Self::U64(v) => v
                .iter()
                .map(|&x| i64::try_from(x).ok())
                .collect::<Option<Vec<_>>>()?,
            _ => return None,
        })
    }
}

impl MetaValue {
    /// The value as an unsigned integer, whatever integer type stores it (negative: None).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(x) => Some(x as u64),
            Self::U16(x) => Some(x as u64),
            Self::U32(x) => Some(x as u64),
            Self::U64(x) => Some(x),
            Self::I8(x) => u64::try_from(x).ok(),
            Self::I16(x) => u64::try_from(x).ok(),
            Self::I32(x) => u64::try_from(x).ok(),
            Self::I64(x) => u64::try_from(x).ok(),
            _ => None,
        }
    }

    /// The value as a float, from any float or integer type.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(x) => Some(x as f64),
            Self::F64(x) => Some(x),
            Self::I8(x) => Some(x as f64),
            Self::I16(x) => Some(x as f64),
            Self::I32(x) => Some(x as f64),
            Self::I64(x) => Some(x as f64),
            _ => self.as_u64().map(|x| x as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&MetaArray> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// The metadata key/value section, in file order, with lookup by key.
#[derive(Debug, Clone, Default)]
pub struct GgufMetadata {
    entries: Vec<(String, MetaValue)>,
    index: HashMap<String, usize>,
}

impl GgufMetadata {
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// All entries in file order.
    pub fn entries(&self) -> &[(String, MetaValue)] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A string value, or `MissingMetadata(key)` when absent or not a string.
    pub fn get_str(&self, key: &str) -> Result<&str, ModelError> {
        self.get(key)
            .and_then(MetaValue::as_str)
            .ok_or_else(|| ModelError::MissingMetadata(key.to_string()))
    }

    /// An unsigned integer of any width, or `MissingMetadata(key)`.
    pub fn get_u64(&self, key: &str) -> Result<u64, ModelError> {
        self.get(key)
            .and_then(MetaValue::as_u64)
            .ok_or_else(|| ModelError::MissingMetadata(key.to_string()))
    }

    /// An unsigned integer that fits a `usize`, or `MissingMetadata(key)`.
    pub fn get_usize(&self, key: &str) -> Result<usize, ModelError> {
        usize::try_from(self.get_u64(key)?)
            .map_err(|_| ModelError::Malformed(format!("metadata {key:?} does not fit usize")))
    }

    /// A `u32` (any integer type whose value fits), or `MissingMetadata(key)`.
    pub fn get_u32(&self, key: &str) -> Result<u32, ModelError> {
        u32::try_from(self.get_u64(key)?)
            .map_err(|_| ModelError::Malformed(format!("metadata {key:?} does not fit u32")))
    }

    /// A float from any numeric type, or `MissingMetadata(key)`.
    pub fn get_f32(&self, key: &str) -> Result<f32, ModelError> {
        self.get(key)
            .and_then(MetaValue::as_f64)
            .map(|x| x as f32)
            .ok_or_else(|| ModelError::MissingMetadata(key.to_string()))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, ModelError> {
        self.get(key)
            .and_then(MetaValue::as_bool)
            .ok_or_else(|| ModelError::MissingMetadata(key.to_string()))
    }

    pub fn get_array(&self, key: &str) -> Result<&MetaArray, ModelError> {
        self.get(key)
            .and_then(MetaValue::as_array)
            .ok_or_else(|| ModelError::MissingMetadata(key.to_string()))
    }

    /// An array of strings, or `MissingMetadata(key)`.
    pub fn get_str_array(&self, key: &str) -> Result<&[String], ModelError> {
        match self.get_array(key)? {
            MetaArray::String(v) => Ok(v),
            _ => Err(ModelError::MissingMetadata(key.to_string())),
        }
    }

    fn insert(&mut self, key: String, value: MetaValue) -> Result<(), ModelError> {
        if self.index.contains_key(&key) {
            return Err(ModelError::Malformed(format!(
                "metadata key {key:?} appears twice"
            )));
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        Ok(())
    }
}

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

/// The bytes a GGUF file lives in.
enum Backing {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Mmap(m) => m,
            Self::Owned(v) => v,
        }
    }
}

impl AsRef<[u8]> for Backing {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

/// A llama-architecture GGUF model: the checked header over the file's bytes (memory-mapped
/// or owned), its [`ModelConfig`], and views of its tensors. Opening checks every expected
/// tensor's presence and shape.
///
/// Tensor data lie at multiples of [`GgufFile::alignment`] from the start of the file: in
/// a memory-mapped file (page-aligned) that is their alignment in memory too; with
/// [`GgufFile::from_bytes`] only the `Vec`'s own alignment holds, so copy before casting.
pub struct GgufFile {
    /// Shared with the [`SharedTensor`]s handed out, which keep the map alive.
    backing: Arc<Backing>,
    header: GgufHeader,
    config: ModelConfig,
    manifest: OnceLock<[u8; 32]>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.header.version)
            .field("tensors", &self.header.tensors.len())
            .field("config", &self.config)
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and checks the GGUF file at `path` (see [`GgufFile::from_bytes`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let io = |source| ModelError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; the file must not be truncated or rewritten while
        // it is open, as for every memory-mapped model loader (llama.cpp does the same).
        // Every read goes through slices bounds-checked against the length at open.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::from_backing(Backing::Mmap(map)).map_err(|e| match e {
            ModelError::Malformed(m) => ModelError::Malformed(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses a whole GGUF file held in memory, builds its llama config and checks its
    /// tensors against it.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, ModelError> {
        Self::from_backing(Backing::Owned(bytes))
    }

    fn from_backing(backing: Backing) -> Result<Self, ModelError> {
        let header = GgufHeader::parse(backing.bytes())?;
        let config = super::arch::config_from_gguf(&header, backing.bytes())?;
        let file = Self {
            backing: Arc::new(backing),
            header,
            config,
            manifest: OnceLock::new(),
        };
        file.validate_llama_tensors()?;
        Ok(file)
    }

    pub fn header(&self) -> &GgufHeader {
        &self.header
    }

    pub fn metadata(&self) -> &GgufMetadata {
        &self.header.metadata
    }

    pub fn version(&self) -> u32 {
        self.header.version
    }

    pub fn alignment(&self) -> usize {
        self.header.alignment
    }

    pub fn tensor_infos(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }

    /// Checks that every tensor a llama model of this config needs exists with the
    /// right dims (ggml order), and that norms are not quantized.
    pub fn validate_llama_tensors(&self) -> Result<(), ModelError> {
        validate_llama_tensors(self, &self.config)
    }

    /// The model id the mesh uses; see [`manifest_hash`].
    pub fn manifest_hash(&self) -> [u8; 32] {
        *self.manifest.get_or_init(|| {
            // Pages are released every 64 MiB hashed, so a large file never sits whole in
            // the resident set (each tensor is hashed as the next one is pulled).
            let mut since_release = 0usize;
            let tensors = self.header.tensors.iter().map(|t| {
                if since_release >= 64 << 20 {
                    self.release_pages();
                    since_release = 0;
                }
                since_release += t.size;
                let data = &self.backing.bytes()[t.offset..t.offset + t.size];
                (t.name.as_str(), t.ty, t.dims.as_slice(), data)
            });
            let hash = manifest_hash(&self.config, tensors);
            // Hashing read every page: a worker that holds a third of the blocks should
            // not keep the whole file resident for it.
            self.release_pages();
            hash
        })
    }

    /// Drops the memory-mapped file's pages from this process's resident set (they are
    /// read again from the file if touched): after the weights are uploaded or copied,
    /// the map's pages only count against the process. Nothing for an owned buffer.
    pub fn release_pages(&self) {
        if let Backing::Mmap(m) = &*self.backing {
            // SAFETY: the map is a private, read-only view of a file that must not change
            // while open (see `open`); MADV_DONTNEED on it only discards clean pages, which
            // later reads fault in again from the same file. Slices borrowed from the map
            // stay valid: the mapping itself is untouched.
            let result = unsafe { m.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
            if let Err(e) = result {
                tracing::debug!("madvise(DONTNEED) on the model map: {e}");
            }
        }
    }
}

impl WeightSource for GgufFile {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn release_pages(&self) {
        GgufFile::release_pages(self)
    }

    fn tensor(&self, name: &str) -> Result<TensorRef<'_>, ModelError> {
        let info = self
            .header
            .tensor_info(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let data = self
            .backing
            .bytes()
            .get(info.offset..info.offset + info.size)
            .ok_or_else(|| {
                ModelError::Malformed(format!("tensor {name}: data past the end of the file"))
            })?;
        Ok(TensorRef {
            name: &info.name,
            ty: info.ty,
            dims: &info.dims,
            data,
        })
    }

    fn shared_tensor(&self, name: &str) -> Result<SharedTensor, ModelError> {
        let t = self.tensor(name)?;
        let info = self
            .header
            .tensor_info(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        SharedTensor::new(
            &t,
            self.backing.clone(),
            info.offset..info.offset + info.size,
        )
    }
}

/// Checks that the widths [`ModelConfig`]'s methods compute (q, kv, KV-cache bytes per
/// position) cannot overflow, so later code may multiply them freely.
pub fn check_config_arithmetic(config: &ModelConfig) -> Result<(), ModelError> {
    let q = config.n_heads.checked_mul(config.head_dim);
    let kv = config
        .n_kv_heads
        .checked_mul(config.head_dim)
        .and_then(|kv| kv.checked_mul(2 * std::mem::size_of::<f32>()));
    let ffn = config.d_ff.checked_mul(config.d_model);
    let embd = config.vocab_size.checked_mul(config.d_model);
    if q.is_none() || kv.is_none() || ffn.is_none() || embd.is_none() {
        return Err(ModelError::Malformed(format!(
            "model widths overflow: {} heads x {} (kv {}), d_model {}, ffn {}, vocab {}",
            config.n_heads,
            config.head_dim,
            config.n_kv_heads,
            config.d_model,
            config.d_ff,
            config.vocab_size
        )));
    }
    Ok(())
}

/// Every tensor a model of `config` needs (a Llama-style block and its architecture's
/// extras, [`super::arch`]), with its dims in ggml order.
pub fn llama_tensor_shapes(config: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    llama_tensor_shapes_iter(config).collect()
}

/// [`llama_tensor_shapes`], lazily: a lying block count costs nothing until reached.
pub fn llama_tensor_shapes_iter(
    config: &ModelConfig,
) -> impl Iterator<Item = (String, Vec<usize>)> + '_ {
    super::arch::tensor_shapes(config)
}

/// Checks that `source` has every tensor of a llama model of `config`, with the right dims,
/// and that 1-D tensors (norms) are not quantized (F32 in GGUFs, often BF16 in Hugging
/// Face checkpoints).
pub fn validate_llama_tensors(
    source: &dyn WeightSource,
    config: &ModelConfig,
) -> Result<(), ModelError> {
    check_config_arithmetic(config)?;
    for (name, dims) in llama_tensor_shapes_iter(config) {
        let t = source.tensor(&name)?;
        t.expect_dims(&dims)?;
        if dims.len() == 1 && !super::arch::is_plain_float(t.ty) {
            return Err(ModelError::UnsupportedType(format!(
                "{} for 1-D tensor {name} (expected F32, F16 or BF16)",
                t.ty.name()
            )));
        }
    }
    Ok(())
}

/// The model id: sha256 over a canonical manifest.
///
/// Manifest = `"cocoon-model-manifest/1\n"`, the architecture-defining config fields
/// (architecture, blocks, widths, heads, vocab, RoPE theta and style, eps, tying), then,
/// for each tensor in name order: name, type, dims and the sha256 of its bytes.
///
/// Why per-tensor hashes rather than one hash of the data section: the id then depends on
/// what the model computes, not on how a file lays it out (tensor order, alignment
/// padding, metadata such as the name or chat template do not change it), and a worker
/// that holds only blocks `[s, e)` can check its tensors against the per-tensor digests.
/// The cost is the same: each weight byte is hashed once. The config fields are included
/// because the same tensors with another RoPE theta or eps compute something else.
pub fn manifest_hash<'a>(
    config: &ModelConfig,
    tensors: impl Iterator<Item = (&'a str, GgmlType, &'a [usize], &'a [u8])>,
) -> [u8; 32] {
    let mut entries: Vec<(&str, GgmlType, &[usize], [u8; 32])> = tensors
        .map(|(name, ty, dims, data)| (name, ty, dims, Sha256::digest(data).into()))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    h.update(b"cocoon-model-manifest/1\n");
    let c = config;
    h.update(
        format!(
            "arch={} blocks={} d={} ff={} heads={} kv_heads={} head_dim={} vocab={} theta={:08x} rope={:?} eps={:08x} tied={}\n",
            c.architecture,
            c.n_blocks,
            c.d_model,
            c.d_ff,
            c.n_heads,
            c.n_kv_heads,
            c.head_dim,
            c.vocab_size,
            c.rope_theta.to_bits(),
            c.rope_style,
            c.rms_eps.to_bits(),
            c.tied_embeddings
        )
        .as_bytes(),
    );
    // Architectures other than the plain Llama block add what their blocks compute; the
    // plain one keeps the manifest (and so the model ids) it always had.
    if !c.features.is_plain_llama(c.head_dim) {
        h.update(format!("features={:?}\n", c.features).as_bytes());
    }
    h.update((entries.len() as u64).to_le_bytes());
    for (name, ty, dims, digest) in entries {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((ty as u32).to_le_bytes());
        h.update((dims.len() as u32).to_le_bytes());
        for &d in dims {
            h.update((d as u64).to_le_bytes());
        }
        h.update(digest);
    }
    h.finalize().into()
}
