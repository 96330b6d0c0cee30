//! TVM stack entries as toncenter v2 writes them in `runGetMethod`: top-level entries
//! are pairs (`["num","0x1f"]`, `["cell",{"bytes":b64}]`, `["slice",{"bytes":b64}]`,
//! `["tuple",{"@type":"tvm.tuple","elements":[..]}]`, `["null",null]`), elements inside
//! tuples are typed objects (`tvm.stackEntryNumber`, `tvm.stackEntryCell`, ...). The
//! server encodes from the VM's stack; the client decodes, refusing anything malformed
//! without panicking.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use thiserror::Error;
use tycho_types::boc::Boc;
use tycho_types::cell::{Cell, CellBuilder};
use tycho_vm::__export::num_bigint::{BigInt, Sign};

/// The deepest tuple nesting accepted when decoding.
const MAX_DEPTH: usize = 16;

/// A stack entry that could not be encoded or decoded.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("stack entry: {0}")]
pub struct StackError(pub String);

/// One stack entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StackEntry {
    /// An integer (257-bit on the TVM).
    Num(BigInt),
    /// A cell.
    Cell(Cell),
    /// A slice (as a cell holding exactly its bits and references).
    Slice(Cell),
    /// A tuple.
    Tuple(Vec<StackEntry>),
    /// Null.
    Null,
}

fn b64_cell(c: &Cell) -> String {
    STANDARD.encode(Boc::encode(c))
}

fn cell_from_b64(s: &str) -> Result<Cell, StackError> {
    let bytes = STANDARD
        .decode(s)
        .map_err(|e| StackError(format!("bad base64: {e}")))?;
    Boc::decode(&bytes).map_err(|e| StackError(format!("bad BoC: {e}")))
}

fn num_hex(n: &BigInt) -> String {
    let (sign, mag) = (n.sign(), n.magnitude().to_str_radix(16));
    if sign == Sign::Minus {
        format!("-0x{mag}")
    } else {
        format!("0x{mag}")
    }
}

fn parse_num(s: &str) -> Result<BigInt, StackError> {
    let bad = || {
        StackError(format!(
            "bad number {:?}",
            s.chars().take(80).collect::<String>()
        ))
    };
    let (neg, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let n = match rest.strip_prefix("0x").or_else(|| rest.strip_prefix("0X")) {
        Some(h) => BigInt::parse_bytes(h.as_bytes(), 16),
        None => BigInt::parse_bytes(rest.as_bytes(), 10),
    }
    .ok_or_else(bad)?;
    if n.bits() > 257 {
        return Err(bad());
    }
    Ok(if neg { -n } else { n })
}

impl StackEntry {
    /// Converts a VM stack value (builders and continuations are refused).
    pub fn from_vm(v: &dyn tycho_vm::StackValue) -> Result<Self, StackError> {
        Self::from_vm_depth(v, 0)
    }

    fn from_vm_depth(v: &dyn tycho_vm::StackValue, depth: usize) -> Result<Self, StackError> {
        if depth > MAX_DEPTH {
            return Err(StackError("tuple nested too deep".into()));
        }
        if v.is_null() {
            return Ok(StackEntry::Null);
        }
        if let Some(n) = v.as_int() {
            return Ok(StackEntry::Num(n.clone()));
        }
        if let Some(c) = v.as_cell() {
            return Ok(StackEntry::Cell(c.clone()));
        }
        if let Some(s) = v.as_cell_slice() {
            let cell = CellBuilder::build_from(s.apply())
                .map_err(|e| StackError(format!("slice: {e}")))?;
            return Ok(StackEntry::Slice(cell));
        }
        if let Some(t) = v.as_tuple() {
            let items = t
                .iter()
                .map(|x| Self::from_vm_depth(x.as_ref(), depth + 1))
                .collect::<Result<_, _>>()?;
            return Ok(StackEntry::Tuple(items));
        }
        Err(StackError("builder or continuation on the stack".into()))
    }

    /// The top-level toncenter form (`["num","0x.."]`, ...).
    pub fn to_toncenter(&self) -> Value {
        match self {
            StackEntry::Num(n) => json!(["num", num_hex(n)]),
            StackEntry::Cell(c) => json!(["cell", {"bytes": b64_cell(c), "object": {}}]),
            StackEntry::Slice(c) => json!(["slice", {"bytes": b64_cell(c)}]),
            StackEntry::Tuple(items) => json!(["tuple", {
                "@type": "tvm.tuple",
                "elements": items.iter().map(StackEntry::to_element).collect::<Vec<_>>(),
            }]),
            StackEntry::Null => json!(["null", null]),
        }
    }

    fn to_element(&self) -> Value {
        match self {
            StackEntry::Num(n) => json!({"@type": "tvm.stackEntryNumber",
                "number": {"@type": "tvm.numberDecimal", "number": n.to_string()}}),
            StackEntry::Cell(c) => json!({"@type": "tvm.stackEntryCell",
                "cell": {"@type": "tvm.cell", "bytes": b64_cell(c)}}),
            StackEntry::Slice(c) => json!({"@type": "tvm.stackEntrySlice",
                "slice": {"@type": "tvm.slice", "bytes": b64_cell(c)}}),
            StackEntry::Tuple(items) => json!({"@type": "tvm.stackEntryTuple",
                "tuple": {"@type": "tvm.tuple",
                    "elements": items.iter().map(StackEntry::to_element).collect::<Vec<_>>()}}),
            StackEntry::Null => json!({"@type": "tvm.stackEntryNull"}),
        }
    }

    /// Decodes a top-level toncenter entry.
    pub fn from_toncenter(v: &Value) -> Result<Self, StackError> {
        let pair = v
            .as_array()
            .filter(|a| a.len() == 2)
            .ok_or_else(|| StackError("expected a [type, value] pair".into()))?;
        let ty = pair[0].as_str().unwrap_or_default();
        let val = &pair[1];
        let bytes = |v: &Value| -> Result<Cell, StackError> {
            let s = v
                .get("bytes")
                .and_then(Value::as_str)
                .ok_or_else(|| StackError("cell without bytes".into()))?;
            cell_from_b64(s)
        };
        match ty {
            "num" | "int" => {
                let s = val
                    .as_str()
                    .ok_or_else(|| StackError("number is not a string".into()))?;
                Ok(StackEntry::Num(parse_num(s)?))
            }
            "cell" => Ok(StackEntry::Cell(bytes(val)?)),
            "slice" => Ok(StackEntry::Slice(bytes(val)?)),
            "null" => Ok(StackEntry::Null),
            "tuple" | "list" => {
                let elements = val
                    .get("elements")
                    .and_then(Value::as_array)
                    .ok_or_else(|| StackError("tuple without elements".into()))?;
                let items = elements
                    .iter()
                    .map(|e| Self::from_element(e, 1))
                    .collect::<Result<_, _>>()?;
                Ok(StackEntry::Tuple(items))
            }
            other => Err(StackError(format!(
                "unknown entry type {:?}",
                other.chars().take(40).collect::<String>()
            ))),
        }
    }

    fn from_element(v: &Value, depth: usize) -> Result<Self, StackError> {
        if depth > MAX_DEPTH {
            return Err(StackError("tuple nested too deep".into()));
        }
        let ty = v.get("@type").and_then(Value::as_str).unwrap_or_default();
        let inner_bytes = |key: &str| -> Result<Cell, StackError> {
            let s = v
                .get(key)
                .and_then(|c| c.get("bytes"))
                .and_then(Value::as_str)
                .ok_or_else(|| StackError(format!("{ty} without bytes")))?;
            cell_from_b64(s)
        };
        match ty {
            "tvm.stackEntryNumber" => {
                let s = v
                    .get("number")
                    .and_then(|n| n.get("number"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| StackError("number without value".into()))?;
                Ok(StackEntry::Num(parse_num(s)?))
            }
            "tvm.stackEntryCell" => Ok(StackEntry::Cell(inner_bytes("cell")?)),
            "tvm.stackEntrySlice" => Ok(StackEntry::Slice(inner_bytes("slice")?)),
            "tvm.stackEntryNull" => Ok(StackEntry::Null),
            "tvm.stackEntryTuple" | "tvm.stackEntryList" => {
                let key = if ty == "tvm.stackEntryTuple" {
                    "tuple"
                } else {
                    "list"
                };
                let elements = v
                    .get(key)
                    .and_then(|t| t.get("elements"))
                    .and_then(Value::as_array)
                    .ok_or_else(|| StackError("tuple without elements".into()))?;
                let items = elements
                    .iter()
                    .map(|e| Self::from_element(e, depth + 1))
                    .collect::<Result<_, _>>()?;
                Ok(StackEntry::Tuple(items))
            }
            other => Err(StackError(format!(
                "unknown element type {:?}",
                other.chars().take(40).collect::<String>()
            ))),
        }
    }

    /// The integer, if it fits a `u128` and is not negative.
    pub fn as_u128(&self) -> Option<u128> {
        match self {
            StackEntry::Num(n) => u128::try_from(n).ok(),
            _ => None,
        }
    }

    /// The integer as 32 big-endian bytes (a public key or an account id), if it fits.
    pub fn as_bytes32(&self) -> Option<[u8; 32]> {
        match self {
            StackEntry::Num(n) if n.sign() != Sign::Minus => {
                let be = n.magnitude().to_bytes_be();
                if be.len() > 32 {
                    return None;
                }
                let mut out = [0u8; 32];
                out[32 - be.len()..].copy_from_slice(&be);
                Some(out)
            }
            _ => None,
        }
    }

    /// The tuple's items.
    pub fn as_tuple(&self) -> Option<&[StackEntry]> {
        match self {
            StackEntry::Tuple(t) => Some(t),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_toncenter_json() {
        let cell = CellBuilder::build_from(0xdead_beef_u32).expect("cell");
        let e = StackEntry::Tuple(vec![
            StackEntry::Num(BigInt::from(-5)),
            StackEntry::Num(BigInt::from(u128::MAX) * 4),
            StackEntry::Cell(cell.clone()),
            StackEntry::Slice(cell),
            StackEntry::Null,
            StackEntry::Tuple(vec![StackEntry::Num(BigInt::from(7))]),
        ]);
        for x in [
            e.clone(),
            StackEntry::Num(BigInt::from(-300)),
            StackEntry::Null,
        ] {
            assert_eq!(StackEntry::from_toncenter(&x.to_toncenter()), Ok(x));
        }
        assert_eq!(
            StackEntry::Num(BigInt::from(255)).to_toncenter(),
            json!(["num", "0xff"])
        );
    }

    #[test]
    fn malformed_entries_are_refused() {
        for v in [
            json!(null),
            json!([]),
            json!(["num"]),
            json!(["num", 5]),
            json!(["num", "0xzz"]),
            json!(["num", format!("0x{}", "f".repeat(70))]),
            json!(["cell", {"bytes": "!!"}]),
            json!(["cell", {"bytes": "AAAA"}]),
            json!(["tuple", {}]),
            json!(["tuple", {"elements": [{"@type": "tvm.stackEntryWhat"}]}]),
            json!(["cont", {}]),
        ] {
            assert!(StackEntry::from_toncenter(&v).is_err(), "{v}");
        }
        // Deep nesting is refused, not recursed into without bound.
        let mut deep = json!({"@type": "tvm.stackEntryNull"});
        for _ in 0..40 {
            deep = json!({"@type": "tvm.stackEntryTuple", "tuple": {"elements": [deep]}});
        }
        assert!(StackEntry::from_toncenter(&json!(["tuple", {"elements": [deep]}])).is_err());
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-zA-Z0-9+/=@.:x-]{0,24}".prop_map(Value::String),
            prop_oneof![
                Just("num"),
                Just("cell"),
                Just("slice"),
                Just("tuple"),
                Just("list"),
                Just("null"),
                Just("tvm.stackEntryNumber"),
                Just("tvm.stackEntryTuple"),
                Just("tvm.stackEntryCell"),
                Just("te6ccgEBAQEAAgAAAA=="),
                Just("0xff"),
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("@type".to_string()),
                        Just("bytes".to_string()),
                        Just("elements".to_string()),
                        Just("number".to_string()),
                        Just("tuple".to_string()),
                        Just("cell".to_string()),
                    ],
                    inner,
                    0..4,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any JSON a server may send decodes to an entry or an error, never a panic,
        /// and what decodes re-encodes to something that decodes the same.
        #[test]
        fn decoding_outside_json_never_panics(v in arb_json()) {
            if let Ok(e) = StackEntry::from_toncenter(&v) {
                proptest::prop_assert_eq!(StackEntry::from_toncenter(&e.to_toncenter()), Ok(e));
            }
        }
    }
}
