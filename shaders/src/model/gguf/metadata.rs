//! The metadata section: value types ([`MetaType`]), values and arrays ([`MetaValue`],
//! [`MetaArray`]) and the key/value table with typed lookups ([`GgufMetadata`]).

use std::collections::HashMap;

use crate::model::ModelError;

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
    pub(super) fn from_id(id: u32) -> Option<Self> {
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
    pub(super) fn min_size(self) -> usize {
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

    pub(super) fn insert(&mut self, key: String, value: MetaValue) -> Result<(), ModelError> {
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
