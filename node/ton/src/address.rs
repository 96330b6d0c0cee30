//! TON addresses as toncenter writes them: raw (`0:<64 hex>`) or user-friendly (36
//! bytes `flags, workchain, hash, crc16` in base64 or base64url, 48 characters).
//! Parsing accepts both and checks the CRC; never panics on outside strings.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use thiserror::Error;
use tycho_types::cell::HashBytes;
use tycho_types::models::StdAddr;

/// An address string that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("bad TON address {0:?}: expected `wc:hex64` or a 48-character base64 address")]
pub struct AddressError(pub String);

/// Parses a raw or user-friendly address.
pub fn parse_address(s: &str) -> Result<StdAddr, AddressError> {
    let bad = || AddressError(s.chars().take(80).collect());
    let s = s.trim();
    if let Some((wc, hash)) = s.split_once(':') {
        let workchain: i8 = wc.parse().map_err(|_| bad())?;
        let bytes = hex::decode(hash).map_err(|_| bad())?;
        let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| bad())?;
        return Ok(StdAddr::new(workchain, HashBytes(arr)));
    }
    if s.len() != 48 {
        return Err(bad());
    }
    let engine = if s.contains(['-', '_']) {
        &URL_SAFE
    } else {
        &STANDARD
    };
    let bytes = engine.decode(s).map_err(|_| bad())?;
    if bytes.len() != 36 {
        return Err(bad());
    }
    let crc = tycho_types::crc::crc_16(&bytes[..34]);
    if bytes[34..36] != crc.to_be_bytes() {
        return Err(bad());
    }
    let arr: [u8; 32] = bytes[2..34].try_into().map_err(|_| bad())?;
    Ok(StdAddr::new(bytes[1] as i8, HashBytes(arr)))
}

/// `wc:hex`, the raw form.
pub fn raw(addr: &StdAddr) -> String {
    format!("{}:{}", addr.workchain, hex::encode(addr.address.0))
}

/// The user-friendly form (base64url), bounceable or not, mainnet flag.
pub fn friendly(addr: &StdAddr, bounceable: bool) -> String {
    let mut b = [0u8; 36];
    b[0] = if bounceable { 0x11 } else { 0x51 };
    b[1] = addr.workchain as u8;
    b[2..34].copy_from_slice(&addr.address.0);
    let crc = tycho_types::crc::crc_16(&b[..34]);
    b[34..36].copy_from_slice(&crc.to_be_bytes());
    URL_SAFE.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::any;

    #[test]
    fn raw_and_friendly_round_trip_and_bad_ones_are_refused() {
        let a = StdAddr::new(0, HashBytes([0xab; 32]));
        assert_eq!(parse_address(&raw(&a)), Ok(a.clone()));
        assert_eq!(parse_address(&friendly(&a, true)), Ok(a.clone()));
        assert_eq!(parse_address(&friendly(&a, false)), Ok(a.clone()));
        // A known mainnet address (the elector's friendly form is on -1).
        let e = parse_address("Ef8zMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM0vF").expect("elector");
        assert_eq!(raw(&e), format!("-1:{}", "33".repeat(32)));
        let mut broken = friendly(&a, true).into_bytes();
        broken[10] = if broken[10] == b'A' { b'B' } else { b'A' };
        assert!(parse_address(std::str::from_utf8(&broken).expect("ascii")).is_err());
        for s in [
            "",
            "0:",
            "0:zz",
            "x:00",
            "0:abcd",
            "é".repeat(48).as_str(),
            "ÿ:00",
        ] {
            assert!(parse_address(s).is_err(), "{s:?}");
        }
    }

    proptest::proptest! {
        /// Any string parses or is refused without a panic; raw and friendly forms of
        /// any address round-trip.
        #[test]
        fn addresses_never_panic_and_round_trip(s in "\\PC{0,70}", wc in any::<i8>(), h in any::<[u8; 32]>()) {
            let _ = parse_address(&s);
            let a = StdAddr::new(wc, HashBytes(h));
            proptest::prop_assert_eq!(parse_address(&raw(&a)), Ok(a.clone()));
            proptest::prop_assert_eq!(parse_address(&friendly(&a, true)), Ok(a));
        }
    }
}
